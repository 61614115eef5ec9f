//! The shim's children and the processes it runs or watches: exits routed to whoever waits for
//! them ([`exits`], fed for containers' inits by LXC's monitor, [`lxcmon`]), short commands run
//! to completion ([`command`]), OCI hooks ([`hooks`]) and the namespaces a process is in that
//! the shim is not ([`namespaces`]). Nothing here imports another group of [`crate::host`].

pub mod command;
pub mod exits;
pub mod hooks;
pub mod lxcmon;
pub mod namespaces;
