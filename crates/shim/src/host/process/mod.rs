//! The shim's children and the processes it runs or watches: exits routed to whoever waits for
//! them ([`exits`], fed for containers' inits by LXC's monitor, [`lxcmon`]), short commands run
//! to completion ([`command`]), OCI hooks ([`hooks`]), the namespaces a process is in that
//! the shim is not ([`namespaces`]), and descriptors a child keeps across `exec`
//! ([`keep_fds_across_exec`]). Nothing here imports another group of [`crate::host`].

pub mod command;
pub mod exits;
pub mod hooks;
mod kept_fds;
pub mod lxcmon;
pub mod namespaces;

pub use kept_fds::{keep_fds_across_exec, KeptFd};
