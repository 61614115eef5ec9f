//! The container's root filesystem from containerd's mounts, and the shim's state root.

use std::path::Path;

use log::warn;

use crate::config;
use crate::errors::{IoContext, Result, ShimError};

/// Mounts containerd's rootfs mounts onto `target`, in order. Done in-process: the shim
/// framework's helper forks and waits, which races with the reaper.
pub fn mount_rootfs(
    mounts: &[containerd_shim::protos::types::mount::Mount],
    target: &Path,
) -> Result<()> {
    use nix::mount::MsFlags;
    for m in mounts {
        let mut flags = MsFlags::empty();
        let mut data = Vec::new();
        for opt in &m.options {
            match opt.as_str() {
                "ro" => flags |= MsFlags::MS_RDONLY,
                "rw" => {}
                "bind" => flags |= MsFlags::MS_BIND,
                "rbind" => flags |= MsFlags::MS_BIND | MsFlags::MS_REC,
                "nosuid" => flags |= MsFlags::MS_NOSUID,
                "nodev" => flags |= MsFlags::MS_NODEV,
                "noexec" => flags |= MsFlags::MS_NOEXEC,
                "relatime" => flags |= MsFlags::MS_RELATIME,
                "noatime" => flags |= MsFlags::MS_NOATIME,
                "sync" => flags |= MsFlags::MS_SYNCHRONOUS,
                other => data.push(other.to_string()),
            }
        }
        let fstype = if m.type_.is_empty() {
            None
        } else {
            Some(m.type_.as_str())
        };
        let source = if m.source.is_empty() {
            None
        } else {
            Some(m.source.as_str())
        };
        let data = data.join(",");
        nix::mount::mount(
            source,
            target,
            fstype,
            flags,
            if data.is_empty() {
                None
            } else {
                Some(data.as_str())
            },
        )
        .map_err(|e| {
            ShimError::io(
                format!(
                    "mount rootfs ({} {:?}) on {}",
                    m.type_,
                    m.source,
                    target.display()
                ),
                e.into(),
            )
        })?;
    }
    Ok(())
}

pub fn unmount_rootfs(target: &Path) {
    for _ in 0..8 {
        match nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) => continue,
            Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => return,
            Err(e) => {
                warn!("unmount {}: {e}", target.display());
                return;
            }
        }
    }
}

/// Device nodes for `linux.devices` live in the state directory and are bind-mounted into the
/// container, which keeps the source's `nodev`. Where /run is a `nodev` tmpfs (stock Debian,
/// Proxmox VE), the state root gets a tmpfs of its own that allows devices (still nosuid).
pub fn ensure_state_root() -> Result<()> {
    let root = Path::new(config::STATE_ROOT);
    std::fs::create_dir_all(root).ctx(|| format!("create {}", root.display()))?;
    let stat = nix::sys::statvfs::statvfs(root)
        .map_err(|e| ShimError::io(format!("statvfs {}", root.display()), e.into()))?;
    if !stat.flags().contains(nix::sys::statvfs::FsFlags::ST_NODEV) {
        return Ok(());
    }
    nix::mount::mount(
        Some("tmpfs"),
        root,
        Some("tmpfs"),
        nix::mount::MsFlags::MS_NOSUID,
        Some("mode=0755"),
    )
    .map_err(|e| ShimError::io(format!("mount a tmpfs on {}", root.display()), e.into()))
}

/// A clone of a host mount (tree) for a spec bind mount that must stay in the host mount's
/// peer group (see `lxc_config::PeerBind`), made in the host's mount namespace before the
/// container's is entered. nix has no wrapper for the new mount API (open_tree, move_mount,
/// mount_setattr), so these three calls go through libc directly.
pub struct HostMountClone {
    tree: std::os::fd::OwnedFd,
    source: String,
}

impl HostMountClone {
    /// `open_tree(OPEN_TREE_CLONE)`: a detached copy that, like `mount --bind` of a shared
    /// mount, joins the source's peer group; with `recursive` its submounts come along.
    pub fn of(source: &str, recursive: bool) -> std::result::Result<Self, String> {
        use std::os::fd::FromRawFd;
        let path = std::ffi::CString::new(source)
            .map_err(|_| format!("bind source {source:?} contains a NUL byte"))?;
        let mut flags = libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC;
        if recursive {
            flags |= libc::AT_RECURSIVE as libc::c_uint;
        }
        // SAFETY: a valid C string; the result is checked and owned below.
        let fd =
            unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, path.as_ptr(), flags) };
        if fd < 0 {
            return Err(format!(
                "clone the host mount at {source}: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(HostMountClone {
            // SAFETY: open_tree returned a fresh descriptor nothing else owns.
            tree: unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as std::os::fd::RawFd) },
            source: source.to_string(),
        })
    }

    /// In the container's mount namespace: puts the clone where LXC mounted its entry for the
    /// same bind (a slave of the host's mount), with that entry's ro/nosuid/nodev/noexec, and
    /// detaches LXC's entry.
    pub fn replace(self, destination: &str) -> std::result::Result<(), String> {
        use nix::sys::statvfs::FsFlags;
        use std::os::fd::AsRawFd;
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
            let attr = libc::mount_attr {
                attr_set,
                attr_clr: 0,
                propagation: 0,
                userns_fd: 0,
            };
            // SAFETY: valid descriptor, empty C string, a mount_attr of the size given.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_mount_setattr,
                    self.tree.as_raw_fd(),
                    c"".as_ptr(),
                    libc::AT_EMPTY_PATH,
                    &attr as *const libc::mount_attr,
                    std::mem::size_of::<libc::mount_attr>(),
                )
            };
            if rc < 0 {
                return Err(format!(
                    "set the flags of the clone of {} for {destination}: {}",
                    self.source,
                    std::io::Error::last_os_error()
                ));
            }
        }
        match nix::mount::umount2(destination, nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) => {}
            Err(e) => return Err(format!("unmount LXC's bind at {destination}: {e}")),
        }
        let target = std::ffi::CString::new(destination)
            .map_err(|_| format!("bind destination {destination:?} contains a NUL byte"))?;
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
