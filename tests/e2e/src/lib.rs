//! Shared machinery for the end-to-end tests, the demo and the benchmarks: a private containerd
//! per run (its own config, root, state and sockets), a small busybox image built locally and
//! imported without a registry, helpers to run `ctr` with timeouts, pipes or a pty, and the
//! checks that nothing (process, mount, LXC container, cgroup) is left behind.
//!
//! Used by `tests/parity.rs` (the runc-vs-shim matrix), `e2e-env` (demo.sh) and `e2e-bench`
//! (bench.sh), so that the three agree on how containerd is set up.

pub mod cmd;
pub mod config;
pub mod confinement;
pub mod containerd;
pub mod host;
pub mod image;
pub mod paths;
pub mod pve_node;

pub use containerd::{Containerd, ContainerdVersion};

/// containerd namespace every test, the demo and the benchmarks use.
pub const NAMESPACE: &str = "e2e";
/// The runtime names compared.
pub const RUNC_RUNTIME: &str = "io.containerd.runc.v2";
pub const SHIM_RUNTIME: &str = "io.containerd.proxmox-lxc.v2";
/// The shim's binary name, as containerd derives it from [`SHIM_RUNTIME`].
pub const SHIM_BINARY: &str = "containerd-shim-proxmox-lxc-v2";
/// The shim's default lxcpath (DESIGN.md, configuration).
pub const SHIM_LXCPATH: &str = "/var/lib/containerd-shim-proxmox-lxc";

/// Root (`needs_root_for` says why an end-to-end test needs it) and the shim built; otherwise
/// what is missing, for the harness to report the test ignored (tests/skip-harness).
pub fn require_root_and_shim(needs_root_for: &str) -> Result<(), skip_harness::Missing> {
    skip_harness::require_root(needs_root_for)?;
    skip_harness::require(
        paths::shim_binary(&paths::shim_dir()).is_some(),
        format!(
            "{SHIM_BINARY} not built in {} (cargo build -p containerd-shim-proxmox-lxc --bins)",
            paths::shim_dir().display()
        ),
    )
}
