//! A typed async client of the Proxmox VE API, for the endpoints the shim's `pve` driver
//! uses: version, cluster status/resources/nextid, nodes, LXC create/config/status/start/
//! stop/shutdown/destroy, and tasks.
//!
//! - Authentication by API token or by user/password (ticket + CSRF token, renewed before
//!   it expires). Secrets are [`Secret`]s: zeroized on drop, never in `Debug` or logs.
//! - TLS by system roots, a CA file (`pve-root-ca.pem`) or a pinned SHA-256 fingerprint
//!   ([`TlsTrust`]); there is no way to accept any certificate.
//! - Tasks: [`Client::wait_task`] polls with growing intervals up to a deadline; success is
//!   `exitstatus == "OK"`; failures carry the task log.
//! - Errors: one [`Error`] with status, Proxmox's message and per-parameter errors;
//!   transient failures are retried within a bound ([`RetryPolicy`]).
//! - VMIDs: [`VmidAllocator`] claims IDs from a range by an operation that fails when the ID
//!   exists (API create, or [`claim_config_file`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), pve_client::Error> {
//! use pve_client::{Client, ClientConfig, Credentials, Secret, TlsTrust};
//! let client = Client::new(ClientConfig::new(
//!     "https://127.0.0.1:8006/api2/json",
//!     TlsTrust::CaFile("/etc/pve/pve-root-ca.pem".into()),
//!     Credentials::Token { token_id: "root@pam!shim".into(), secret: Secret::new("...") },
//! ))?;
//! for ct in client.list_cts("pve1").await? {
//!     println!("{} {:?} {}", ct.vmid, ct.status, ct.name.unwrap_or_default());
//! }
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod client;
mod error;
mod props;
mod secret;
mod task;
mod tls;
mod types;
mod vmid;

pub use client::{decode_response, Client, ClientConfig, Credentials, DestroyOptions, RetryPolicy};
pub use error::Error;
pub use props::{
    parse_property_string, ConfigUpdate, CreateCt, Features, Ipv4Config, Ipv6Config, MountOption,
    MountPoint, NetConfig, OsType, Params, RootFs,
};
pub use secret::Secret;
pub use task::{TaskOutcome, Upid, WaitOptions};
pub use tls::{format_fingerprint, FingerprintMismatch, TlsTrust};
pub use types::{
    BackupJob, ClusterResource, ClusterStatusEntry, CtConfig, CtRunState, CtStatus, NodeInfo,
    NodeMemory, NodeStatus, ResourceType, TaskLogLine, TaskStatus, Version,
};
pub use vmid::{claim_config_file, Claim, VmidAllocator, VmidRange, PMXCFS_MAX_FILE_SIZE};
