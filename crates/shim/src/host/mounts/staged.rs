//! Bind mount sources staged for a container with a user namespace. LXC makes its mount
//! entries inside the container's user namespace, as the container's root (an unprivileged
//! host uid), which must be able to search every directory on the way to a source; containerd
//! keeps the pod's `/etc/hosts`, `/etc/resolv.conf` and `/dev/shm` under 0700 directories of
//! its own. runc opens such sources from the host side before it enters the namespace (its
//! mount source descriptors); here the shim binds each source the container's root could not
//! reach, as host root, into a 0700 directory of the container's root beside the state
//! directory (`<state dir>.binds/N`), a slave of the source so mounts still propagate from the
//! host, and LXC binds from there.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use log::warn;
use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::errors::{IoContext, Result, ShimError};
use crate::host::private::{self, Owner};

/// Where the staged binds of the container with state directory `state_dir` live.
pub fn binds_dir(state_dir: &Path) -> PathBuf {
    let mut name = state_dir.as_os_str().to_owned();
    name.push(".binds");
    PathBuf::from(name)
}

/// Whether `owner` may search every directory above `path` (mode bits; ACLs are not read, so
/// a source reachable through an ACL alone is staged needlessly, never missed).
fn reachable_by(path: &Path, owner: Owner) -> bool {
    path.ancestors().skip(1).all(|dir| {
        let Ok(m) = std::fs::metadata(dir) else {
            return false;
        };
        let mode = m.mode();
        if m.uid() == owner.uid {
            mode & 0o100 != 0
        } else if m.gid() == owner.gid {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        }
    })
}

/// Stages the plan's bind sources the container's root cannot reach and points the entries at
/// the staged copies. Nothing to do for a container whose root is host root.
pub fn stage(plan: &mut lxc_config::ContainerPlan, state_dir: &Path, owner: Owner) -> Result<()> {
    if owner == Owner::ROOT {
        return Ok(());
    }
    let dir = binds_dir(state_dir);
    let mut n = 0usize;
    for entry in &mut plan.mounts {
        let recursive = match entry.options.first().map(String::as_str) {
            Some("bind") => false,
            Some("rbind") => true,
            _ => continue,
        };
        let source = Path::new(&entry.source);
        // Relative sources (sysctl files) and the state directory's own are reachable.
        if !source.is_absolute() || source.starts_with(state_dir) || reachable_by(source, owner) {
            continue;
        }
        if n == 0 {
            private::make_dir(&dir, owner)?;
        }
        let at = dir.join(n.to_string());
        n += 1;
        let is_dir = std::fs::metadata(source)
            .ctx(|| format!("stat bind mount source {}", source.display()))?
            .is_dir();
        // Mount points only, private as everything of the container's until covered.
        if is_dir {
            std::fs::DirBuilder::new()
                .mode(private::DIR_MODE)
                .create(&at)
                .ctx(|| format!("create {}", at.display()))?;
        } else {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(private::FILE_MODE)
                .open(&at)
                .ctx(|| format!("create {}", at.display()))?;
        }
        let mut flags = MsFlags::MS_BIND;
        if recursive {
            flags |= MsFlags::MS_REC;
        }
        mount(Some(source), &at, None::<&str>, flags, None::<&str>).map_err(|e| {
            ShimError::io(
                format!("stage bind source {} at {}", source.display(), at.display()),
                e.into(),
            )
        })?;
        // Receives the host's mounts under the source, sends none back (the container's own
        // binds that must reach the host are `PeerBind`s, cloned from the source itself).
        mount(
            None::<&str>,
            &at,
            None::<&str>,
            MsFlags::MS_SLAVE | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| ShimError::io(format!("make {} a slave", at.display()), e.into()))?;
        entry.source = at.display().to_string();
    }
    Ok(())
}

/// Unmounts and removes the staged binds of `state_dir`'s container, never recursively: a
/// staged bind still mounted is the host's data, and stays.
pub fn unstage(state_dir: &Path) {
    let dir = binds_dir(state_dir);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for e in entries.flatten() {
        let at = e.path();
        // Several mounts may be stacked there (a restarted create); all come off.
        for _ in 0..8 {
            if umount2(&at, MntFlags::MNT_DETACH).is_err() {
                break;
            }
        }
        let removed = if at.is_dir() {
            std::fs::remove_dir(&at)
        } else {
            std::fs::remove_file(&at)
        };
        if let Err(err) = removed {
            warn!("remove staged bind {}: {err}", at.display());
        }
    }
    if let Err(err) = std::fs::remove_dir(&dir) {
        warn!("remove {}: {err}", dir.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_sit_beside_the_state_dir() {
        assert_eq!(
            binds_dir(Path::new("/run/x/abc")),
            Path::new("/run/x/abc.binds")
        );
    }

    #[test]
    fn reachability_follows_the_search_bits() {
        use std::os::unix::fs::PermissionsExt;
        let top = tempfile::tempdir().unwrap();
        let closed = top.path().join("closed");
        std::fs::create_dir(&closed).unwrap();
        std::fs::write(closed.join("f"), "").unwrap();
        std::fs::set_permissions(top.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o700)).unwrap();
        let other = Owner {
            uid: 100_000,
            gid: 100_000,
        };
        let open = top.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o711)).unwrap();
        std::fs::write(open.join("f"), "").unwrap();
        // The temp dir's own ancestors (/tmp, /) are searchable on any test machine.
        assert!(reachable_by(&open.join("f"), other));
        assert!(!reachable_by(&closed.join("f"), other));
        assert!(
            reachable_by(&closed, other),
            "the source itself needs no search bit"
        );
    }
}
