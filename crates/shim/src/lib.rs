//! `containerd-shim-proxmox-lxc-v2`: a containerd runtime v2 shim that runs OCI containers as
//! LXC containers (and, with the `pve` driver, as Proxmox VE CTs).
//!
//! Layers, each depending only on the ones below it:
//! - [`service`]: the shim protocol (`start`, `delete`, serve) and grouping by pod.
//! - [`task`]: containerd's Task API: the Task impl, one [`task::container::Container`] per
//!   container, its processes, events and the bundle's record.
//! - [`driver`]: how a container becomes real on this node (`lxc`, `pve`), behind one trait.
//! - [`host`]: this host's mechanics (exits, commands, helper, stdio, hooks, cgroups, ...).
//!
//! Beside them: [`config`] (the host config file and containerd's runtime options), [`check`]
//! and [`gc`] (the `check` and `gc` subcommands of the pve driver), [`pve_api`] (the Proxmox API
//! client the settings describe, for the pve driver and those subcommands), [`errors`] (one
//! error type, mapped to ttrpc codes in one place), [`logging`] (the shim's log: each line's
//! container, the Proxmox client's messages, the level).

pub mod check;
pub mod config;
pub mod driver;
pub mod errors;
pub mod gc;
pub mod host;
pub mod logging;
pub mod pve_api;
pub mod service;
pub mod task;

/// The runtime name containerd resolves to this binary.
pub const RUNTIME_NAME: &str = "io.containerd.proxmox-lxc.v2";

/// First line of a test marked `#[ignore = "needs root: ..."]`: run without root anyway
/// (`--include-ignored`), it fails saying so, not somewhere in its setup.
#[cfg(test)]
pub(crate) fn assert_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "needs root: scripts/test.sh runs the ignored tests as root (--include-ignored)"
    );
}
