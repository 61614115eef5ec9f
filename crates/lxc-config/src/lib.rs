//! lxc-config (work in progress)
