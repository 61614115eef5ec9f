//! Mechanics of this host, known to no particular driver or RPC: exits of children, commands,
//! the in-container helper, stdio, OCI hooks, cgroups and their metrics, the
//! rootfs, recursive mount attributes, namespaces to join, the node's facts, LXC's monitor
//! socket, the OCI features document, and tidying LXC's traces in a container.

pub mod cgroup;
pub mod command;
pub mod exits;
pub mod features;
pub mod helper;
pub mod hooks;
pub mod idmap;
pub mod lxcmon;
pub mod metrics;
pub mod mount_attrs;
pub mod namespaces;
pub mod node;
pub mod private;
pub mod rootfs;
pub mod staged;
pub mod stdio;
pub mod subid;
pub mod tidy;
