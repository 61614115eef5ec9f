//! End-to-end tests of the Kubernetes path: containerd's CRI plugin driven over gRPC, as the
//! kubelet drives it, with `runtime_handler = "proxmox-lxc"` (this project's runtime), CNI pod
//! networking, images pulled from a local registry, and the examples/ checked.
//!
//! - [`registry`]: Debian's `docker-registry` on loopback and a small OCI push.
//! - [`env`]: a private containerd with the CRI plugin configured (CNI, registry hosts, the
//!   runtime entry and its options).
//! - [`client`]: the CRI calls and config builders.
//! - [`stream`]: the streaming Exec protocol (WebSocket).
//! - [`examples`]: the Kubernetes objects of examples/, parsed and turned into CRI configs.

pub mod client;
pub mod env;
pub mod examples;
pub mod registry;
pub mod stream;
