//! pve-test-server (work in progress)
