//! Device nodes from the spec's `linux.devices`. LXC has no key that creates a node, so the plan
//! lists them (`Plan::devices`) and the config bind-mounts each from the state directory; this
//! creates them there (mknod, then mode and owner, as runc sets them) before the start.

use std::path::Path;

use lxc_config::DeviceNode;
use nix::sys::stat::{mknod, Mode, SFlag};

use crate::errors::{Result, ShimError};

pub fn create_nodes(nodes: &[DeviceNode]) -> Result<()> {
    for node in nodes {
        let path: &Path = &node.host_path;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| ShimError::io(format!("create {}", dir.display()), e))?;
        }
        let kind = match node.kind {
            'b' => SFlag::S_IFBLK,
            'p' => SFlag::S_IFIFO,
            _ => SFlag::S_IFCHR,
        };
        let perm = Mode::from_bits_truncate(node.file_mode & 0o7777);
        let _ = std::fs::remove_file(path);
        mknod(
            path,
            kind,
            perm,
            nix::sys::stat::makedev(u64::from(node.major), u64::from(node.minor)),
        )
        .map_err(|e| {
            ShimError::io(
                format!("mknod {} for device {}", path.display(), node.path),
                e.into(),
            )
        })?;
        // mknod applies the umask; set the exact mode and the owner afterwards.
        nix::sys::stat::fchmodat(
            nix::fcntl::AT_FDCWD,
            path,
            perm,
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        )
        .map_err(|e| ShimError::io(format!("chmod {}", path.display()), e.into()))?;
        nix::unistd::chown(
            path,
            Some(nix::unistd::Uid::from_raw(node.uid)),
            Some(nix::unistd::Gid::from_raw(node.gid)),
        )
        .map_err(|e| ShimError::io(format!("chown {}", path.display()), e.into()))?;
    }
    Ok(())
}
