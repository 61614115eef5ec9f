//! A container's mounts as the shim makes or fixes them from the host: containerd's rootfs
//! mounts ([`rootfs`], with [`idmap`] for `uidmap=`/`gidmap=`), bind sources staged for a
//! container with a user namespace ([`staged`]), recursive mount attributes
//! ([`mount_attrs`]) and the clean-up of LXC's traces in the container's mount namespace
//! ([`tidy`]). Each of them that clones a mount does it through [`clone`] (the new mount
//! API), which imports none of the others.

pub mod clone;
pub mod idmap;
pub mod mount_attrs;
pub mod rootfs;
pub mod staged;
pub mod tidy;
