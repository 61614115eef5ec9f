//! The container's root filesystem from containerd's mounts, and the shim's state root.

use std::path::Path;

use log::warn;

use crate::config;
use crate::errors::{IoContext, Result, ShimError};
use crate::host::mounts::clone::MountClone;
use crate::host::mounts::idmap;
use crate::host::process::exits::ChildExits;

/// Mounts containerd's rootfs mounts onto `target`, in order. Done in-process: the shim
/// framework's helper forks and waits, which races with the reaper.
///
/// `uidmap=`/`gidmap=` options (containerd 2.x's overlay snapshotter for a `hostUsers: false`
/// pod) are done as containerd's mount package does them for the runc shim
/// (core/mount/mount_linux.go, `Mount.mount`): an overlay gets idmapped, read-only clones of
/// its lower directories, any other mount is idmapped itself once mounted.
pub fn mount_rootfs(
    mounts: &[containerd_shim::protos::types::mount::Mount],
    target: &Path,
    exits: &ChildExits,
) -> Result<()> {
    use nix::mount::MsFlags;
    for m in mounts {
        let mut flags = MsFlags::empty();
        let mut data = Vec::new();
        let (mut uidmap, mut gidmap) = (None, None);
        for opt in &m.options {
            if let Some(map) = opt.strip_prefix("uidmap=") {
                uidmap = Some(map);
                continue;
            }
            if let Some(map) = opt.strip_prefix("gidmap=") {
                gidmap = Some(map);
                continue;
            }
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
        let userns = match (uidmap, gidmap) {
            (Some(u), Some(g)) => Some(idmap::userns(u, g, exits)?),
            (None, None) => None,
            _ => {
                return Err(ShimError::InvalidArgument(format!(
                    "rootfs mount {:?}: uidmap= and gidmap= go together",
                    m.source
                )))
            }
        };
        // Unmounted again once the overlay holds them (as containerd does).
        let mut lower_clones = None;
        if let (Some(userns), "overlay") = (&userns, m.type_.as_str()) {
            let clones = idmap::LowerClones::make(&data, userns)?;
            data = clones.options.clone();
            lower_clones = Some(clones);
        }
        let data = data.join(",");
        let mounted = nix::mount::mount(
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
        });
        drop(lower_clones);
        mounted?;
        if let (Some(userns), false) = (&userns, m.type_ == "overlay") {
            let t = target.display().to_string();
            MountClone::of(&t, false)
                .and_then(|c| c.idmap(userns, 0).map(|()| c))
                .and_then(|c| c.attach(&t))
                .map_err(|e| ShimError::Internal(format!("idmap the rootfs mount: {e}")))?;
        }
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
