//! End-to-end tests against real containerd and LXC.
