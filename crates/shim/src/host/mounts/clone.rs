//! Detached clones of mounts, made and placed with the new mount API (open_tree(2),
//! move_mount(2), mount_setattr(2)), which nix does not wrap, so these calls go through libc
//! here and nowhere else. The other mount modules build on this one; it imports none of them.

/// A detached clone of a mount (tree), made with `open_tree(OPEN_TREE_CLONE)`: for a spec bind
/// mount that must stay in the host mount's peer group (see `lxc_config::PeerBind`), made in the
/// host's mount namespace before the container's is entered; and for the container's own
/// mounts below such a bind, kept across its replacement. nix has no wrapper for the new mount
/// API (open_tree, move_mount, mount_setattr), so these three calls go through libc directly.
pub struct MountClone {
    tree: std::os::fd::OwnedFd,
    source: String,
}

impl MountClone {
    /// Like `mount --bind` of a shared mount, the clone joins the source's peer group; with
    /// `recursive` its submounts come along.
    pub fn of(source: &str, recursive: bool) -> std::result::Result<Self, String> {
        use std::os::fd::FromRawFd;
        let path = std::ffi::CString::new(source)
            .map_err(|_| format!("mount path {source:?} contains a NUL byte"))?;
        let mut flags = libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC;
        if recursive {
            flags |= libc::AT_RECURSIVE as libc::c_uint;
        }
        // SAFETY: a valid C string; the result is checked and owned below.
        let fd =
            unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, path.as_ptr(), flags) };
        if fd < 0 {
            return Err(format!(
                "clone the mount at {source}: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(MountClone {
            // SAFETY: open_tree returned a fresh descriptor nothing else owns.
            tree: unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as std::os::fd::RawFd) },
            source: source.to_string(),
        })
    }

    /// In the container's mount namespace: puts the clone where LXC mounted its entry for the
    /// same bind (a slave of the host's mount), with that entry's ro/nosuid/nodev/noexec. LXC's
    /// entry is detached with everything below it; the container's own mounts there (later
    /// spec mounts, masked paths: `nested`) are cloned first and put back on the new mount.
    pub fn replace(self, destination: &str, nested: &[String]) -> std::result::Result<(), String> {
        use nix::sys::statvfs::FsFlags;
        let flags = nix::sys::statvfs::statvfs(destination)
            .map_err(|e| format!("read the mount flags at {destination}: {e}"))?
            .flags();
        let mut attr_set = 0;
        for (flag, attr) in [
            (FsFlags::ST_RDONLY, libc::MOUNT_ATTR_RDONLY),
            (FsFlags::ST_NOSUID, libc::MOUNT_ATTR_NOSUID),
            (FsFlags::ST_NODEV, libc::MOUNT_ATTR_NODEV),
            (FsFlags::ST_NOEXEC, libc::MOUNT_ATTR_NOEXEC),
        ] {
            if flags.contains(flag) {
                attr_set |= attr;
            }
        }
        if attr_set != 0 {
            self.set_attr(attr_set, 0).map_err(|e| {
                format!(
                    "set the flags of the clone of {} for {destination}: {e}",
                    self.source
                )
            })?;
        }
        let mut kept = Vec::new();
        for path in nested {
            // An optional entry LXC could not mount leaves nothing to keep.
            if is_mount_point(path) {
                kept.push((MountClone::of(path, true)?, path));
            }
        }
        match nix::mount::umount2(destination, nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) => {}
            Err(e) => return Err(format!("unmount LXC's bind at {destination}: {e}")),
        }
        self.attach(destination)?;
        for (clone, path) in kept {
            clone.attach(path)?;
        }
        Ok(())
    }

    /// Makes the clone an idmapped mount with user namespace `userns` (and the attributes in
    /// `also`, `MOUNT_ATTR_*`), as runc and containerd do with `mount_setattr`.
    pub fn idmap(
        &self,
        userns: &std::os::fd::OwnedFd,
        also: u64,
    ) -> std::result::Result<(), String> {
        use std::os::fd::AsRawFd;
        self.set_attr(libc::MOUNT_ATTR_IDMAP | also, userns.as_raw_fd() as u64)
            .map_err(|e| format!("idmap the clone of {}: {e}", self.source))
    }

    /// `mount_setattr` on the detached tree: `attr_set` (`MOUNT_ATTR_*`), and the user
    /// namespace descriptor with `MOUNT_ATTR_IDMAP`.
    fn set_attr(&self, attr_set: u64, userns_fd: u64) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        let attr = mount_attr(attr_set, 0, userns_fd);
        let flags = libc::AT_EMPTY_PATH as libc::c_uint;
        mount_setattr(self.tree.as_raw_fd(), c"", flags, &attr).map_err(std::io::Error::from)
    }

    /// `move_mount` of the detached clone onto `destination` in the current namespace.
    pub fn attach(self, destination: &str) -> std::result::Result<(), String> {
        use std::os::fd::AsRawFd;
        let target = std::ffi::CString::new(destination)
            .map_err(|_| format!("mount destination {destination:?} contains a NUL byte"))?;
        // SAFETY: valid descriptor and C strings.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_move_mount,
                self.tree.as_raw_fd(),
                c"".as_ptr(),
                libc::AT_FDCWD,
                target.as_ptr(),
                libc::MOVE_MOUNT_F_EMPTY_PATH,
            )
        };
        if rc < 0 {
            return Err(format!(
                "mount the clone of {} at {destination}: {}",
                self.source,
                std::io::Error::last_os_error()
            ));
        }
        Ok(())
    }
}

/// Whether `path` is the root of a mount (its mount id differs from its parent's, or it is
/// `/`), from `statx`'s mount id; a missing path is none.
fn is_mount_point(path: &str) -> bool {
    let mount_id = |p: &std::path::Path| -> Option<u64> {
        let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).ok()?;
        // SAFETY: zeroed statx is a valid out-parameter.
        let mut stx: libc::statx = unsafe { std::mem::zeroed() };
        // SAFETY: valid C string and out-pointer.
        let rc = unsafe {
            libc::statx(
                libc::AT_FDCWD,
                c.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
                libc::STATX_MNT_ID,
                &mut stx,
            )
        };
        (rc == 0 && stx.stx_mask & libc::STATX_MNT_ID != 0).then_some(stx.stx_mnt_id)
    };
    let path = std::path::Path::new(path);
    let Some(own) = mount_id(path) else {
        return false;
    };
    match path.parent() {
        Some(parent) => mount_id(parent).is_some_and(|p| p != own),
        None => true,
    }
}

/// A `struct mount_attr` without a propagation change.
pub(crate) fn mount_attr(attr_set: u64, attr_clr: u64, userns_fd: u64) -> libc::mount_attr {
    libc::mount_attr {
        attr_set,
        attr_clr,
        propagation: 0,
        userns_fd,
    }
}

/// mount_setattr(2): the shim's one call of it (for the attributes of a [`MountClone`], and the
/// recursive attributes of [`super::mount_attrs`]).
pub(crate) fn mount_setattr(
    dirfd: libc::c_int,
    path: &std::ffi::CStr,
    flags: libc::c_uint,
    attr: &libc::mount_attr,
) -> std::result::Result<(), nix::errno::Errno> {
    // SAFETY: a valid C string and a mount_attr of the size given; nothing is kept.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            dirfd,
            path.as_ptr(),
            flags,
            attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if rc < 0 {
        return Err(nix::errno::Errno::last());
    }
    Ok(())
}
