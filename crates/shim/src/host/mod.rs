//! Mechanics of this host, known to no particular driver or RPC, grouped by subject. Imports
//! run one way, from the groups at the top of this list to those below, never back:
//!
//! - [`helper`]: the shim's side of the in-container helper, which receives a process's stdio.
//! - [`stdio`]: a container process's stdio (containerd's fifos, log URIs, terminals).
//! - [`node`]: facts about this node (LXC's version, cgroup layout, what mount_setattr(2) can
//!   do), the OCI features document, and whether LXC may write a user namespace's maps here.
//! - [`mounts`]: the rootfs, idmapped mounts, staged bind sources, recursive mount attributes,
//!   and tidying LXC's traces in a container's mount namespace, built on detached mount
//!   clones ([`mounts::clone`]).
//! - [`cgroup`]: a container's cgroup (pids, freeze, resources, OOM events) and its metrics.
//! - [`process`]: the shim's children and the processes it runs or watches: exits routed to
//!   their waiters, short commands, LXC's monitor, OCI hooks, a process's namespaces, and
//!   the one way to keep descriptors across a child's `exec` ([`process::keep_fds_across_exec`]).
//! - [`private`]: files and directories only the container's owner may reach.

pub mod cgroup;
pub mod helper;
pub mod mounts;
pub mod node;
pub mod private;
pub mod process;
pub mod stdio;
