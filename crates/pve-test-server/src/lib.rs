//! An in-process HTTPS test double of the Proxmox VE API (the LXC subset the shim uses).
//!
//! It is honest to the schema and to pve-container's behaviour where the client can tell:
//! every request is validated against the Proxmox API schema (derived fixture, see
//! `fixtures/README.md`) with Proxmox's error shape (`400`, `{"data":null,"errors":{..},
//! "message":"Parameter verification failed.\n"}`); CT configs live as `VMID.conf` files in
//! Proxmox's format in a configurable directory, guarded by `flock` on
//! `<lock_dir>/pve-config-VMID.lock`; operations run as asynchronous tasks with real-format
//! UPIDs and logs; duplicate VMIDs, locks, running/stopped state and authentication
//! (API tokens, tickets with CSRF tokens) behave as on a node. Faults can be injected
//! ([`FaultRule`]) and requests are counted per method and path template.
//!
//! What a real node does with a CT (run it) is behind [`NodeBackend`]; the default
//! [`InMemoryBackend`] only records running state.
//!
//! It is a test double: permissions beyond "root@pam or not", storage content, HA, pending
//! changes, snapshots and multi-node clusters are not modelled.

#![warn(missing_docs)]

mod backend;
pub mod ctconf;
mod fault;
pub mod formats;
mod handlers;
mod log_capture;
pub mod lxc_node;
pub mod schema;
mod server;
mod tls;

/// Re-exported so that backends can implement [`NodeBackend`] without their own dependency.
pub use async_trait::async_trait;
pub use backend::{BackendResult, InMemoryBackend, NodeBackend, NodeContext, TaskLog};
pub use ctconf::{lxc_conf_key_validity, CtConfig, LxcKeyValidity};
pub use fault::{Fault, FaultRule};
pub use handlers::parse_upid;
pub use log_capture::LogCapture;
pub use lxc_node::{
    ct_unit, running_ct_units, unit_state_blocking, LxcNodeBackend, Supervisor, UnitState,
};
pub use server::{ServerError, StartLimit, TestServer, TestServerBuilder, ALL_PRIVILEGES};
pub use tls::TlsError;
