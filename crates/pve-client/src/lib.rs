//! pve-client (work in progress)
