//! `containerd-shim-proxmox-lxc-v2`: a containerd runtime v2 shim that runs OCI containers as
//! LXC containers (and, with the `pve` driver, as Proxmox VE CTs).
//!
//! Modules, one concern each:
//! - [`config`]: the host config file and containerd's runtime options.
//! - [`service`]: the shim protocol (`start`, `delete`, serve) and grouping by pod.
//! - [`task`]: containerd's Task API over ttrpc, written once over [`driver::Driver`].
//! - [`process`]: the explicit state machine of an init or exec process.
//! - [`stdio`]: fifos, `file://` and `binary://` loggers, terminals.
//! - [`lxcmon`]: LXC's monitor socket, where the real exit status of a container's init appears.
//! - [`exits`]: exits of the shim's own children, routed by pid.
//! - [`cgroup`]: pids, stats, freeze/thaw, OOM for a container's cgroup.
//! - [`driver`]: the node drivers (`lxc`, `pve`).
//! - [`tidy`]: removes LXC's traces from the workload's view of its mounts and `/dev`.

pub mod cgroup;
pub mod check;
pub mod config;
pub mod devices;
pub mod driver;
pub mod errors;
pub mod exits;
pub mod helper;
pub mod hooks;
pub mod lxcmon;
pub mod metrics;
pub mod private;
pub mod process;
pub mod service;
pub mod stdio;
pub mod task;
pub mod tidy;

/// The runtime name containerd resolves to this binary.
pub const RUNTIME_NAME: &str = "io.containerd.proxmox-lxc.v2";
