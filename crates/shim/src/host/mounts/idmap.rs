//! Idmapped mounts of the rootfs: a user namespace with containerd's `uidmap=`/`gidmap=`
//! mappings (the kernel takes a namespace, not the numbers), and the idmapped clones of an
//! overlay's lower directories, as containerd's mount package makes them for the runc shim
//! (core/mount/mount_idmapped_linux.go `GetUsernsFD`, mount_linux.go `prepareIDMappedOverlay`).

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use log::warn;
use nix::sched::CloneFlags;
use nix::sys::signal::{kill, Signal};

use crate::config;
use crate::errors::{IoContext, Result, ShimError};
use crate::host::mounts::clone::MountClone;
use crate::host::process::exits::ChildExits;

/// One `container:host:size` range of containerd's `uidmap=`/`gidmap=` lists.
fn parse_ranges(what: &str, list: &str) -> Result<Vec<(u32, u32, u32)>> {
    let bad = || {
        ShimError::InvalidArgument(format!(
            "rootfs mount option {what}={list}: not a list of container-id:host-id:size"
        ))
    };
    list.split(',')
        .map(|range| {
            let mut parts = range.split(':').map(str::parse::<u32>);
            match (parts.next(), parts.next(), parts.next(), parts.next()) {
                (Some(Ok(c)), Some(Ok(h)), Some(Ok(n)), None) if n > 0 => Ok((c, h, n)),
                _ => Err(bad()),
            }
        })
        .collect()
}

/// Kills the placeholder process when dropped; its exit goes to the reaper, whose report
/// finds the waiter registered at spawn and nobody listening.
struct Placeholder(nix::unistd::Pid);

impl Drop for Placeholder {
    fn drop(&mut self) {
        let _ = kill(self.0, Signal::SIGKILL);
    }
}

/// A user namespace with these mappings, held by its descriptor: a child made in a new user
/// namespace gets the maps written from here (host root: any ranges, no `setgroups` needed),
/// its namespace is opened, and it is killed.
pub fn userns(uidmap: &str, gidmap: &str, exits: &ChildExits) -> Result<OwnedFd> {
    let uid = parse_ranges("uidmap", uidmap)?;
    let gid = parse_ranges("gidmap", gidmap)?;
    let mut stack = vec![0u8; 16 * 1024];
    // SAFETY: the child runs only pause() (async-signal-safe) on its own copy of memory.
    let pid = unsafe {
        nix::sched::clone(
            Box::new(|| loop {
                libc::pause();
            }),
            &mut stack,
            CloneFlags::CLONE_NEWUSER,
            Some(libc::SIGCHLD),
        )
    }
    .map_err(|e| ShimError::io("make a user namespace for idmapped mounts", e.into()))?;
    drop(exits.wait(pid.as_raw()));
    let child = Placeholder(pid);
    for (file, ranges) in [("uid_map", &uid), ("gid_map", &gid)] {
        let text: String = ranges
            .iter()
            .map(|(c, h, n)| format!("{c} {h} {n}\n"))
            .collect();
        let path = format!("/proc/{}/{file}", child.0);
        std::fs::write(&path, text).ctx(|| format!("write {path}"))?;
    }
    let path = format!("/proc/{}/ns/user", child.0);
    let ns = std::fs::File::open(&path).ctx(|| format!("open {path}"))?;
    Ok(ns.into())
}

/// The idmapped clones of an overlay's lower directories, in a directory of the shim's state
/// root (short paths: the overlay's options must fit a page); unmounted and removed on drop,
/// when the overlay holds them.
pub struct LowerClones {
    dir: PathBuf,
    mounted: Vec<PathBuf>,
    /// The overlay's options with `lowerdir=` naming the clones.
    pub options: Vec<String>,
}

impl LowerClones {
    pub fn make(options: &[String], userns: &OwnedFd) -> Result<LowerClones> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let root = Path::new(config::STATE_ROOT);
        std::fs::create_dir_all(root).ctx(|| format!("create {}", root.display()))?;
        let dir = root.join(format!(
            "ovl-idmapped-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
            .create(&dir)
            .ctx(|| format!("create {}", dir.display()))?;
        let mut clones = LowerClones {
            dir,
            mounted: Vec::new(),
            options: Vec::new(),
        };
        let mut lower = None;
        for o in options {
            match o.strip_prefix("lowerdir=") {
                Some(dirs) => lower = Some(dirs),
                None => clones.options.push(o.clone()),
            }
        }
        let lower = lower.ok_or_else(|| {
            ShimError::InvalidArgument("an idmapped overlay rootfs without lowerdir=".into())
        })?;
        let mut new_lower = Vec::new();
        for (i, src) in lower.split(':').enumerate() {
            let at = clones.dir.join(i.to_string());
            std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
                .create(&at)
                .ctx(|| format!("create {}", at.display()))?;
            let at_s = at.display().to_string();
            MountClone::of(src, false)
                .and_then(|c| c.idmap(userns, libc::MOUNT_ATTR_RDONLY).map(|()| c))
                .and_then(|c| c.attach(&at_s))
                .map_err(|e| ShimError::Internal(format!("idmap overlay lower dir: {e}")))?;
            clones.mounted.push(at);
            new_lower.push(at_s);
        }
        clones
            .options
            .push(format!("lowerdir={}", new_lower.join(":")));
        Ok(clones)
    }
}

impl Drop for LowerClones {
    fn drop(&mut self) {
        for at in &self.mounted {
            if let Err(e) = nix::mount::umount2(at, nix::mount::MntFlags::MNT_DETACH) {
                warn!("unmount {}: {e}", at.display());
            }
        }
        // One by one, not recursively: a clone that stayed mounted is the image's layer.
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                let _ = std::fs::remove_dir(e.path());
            }
        }
        if let Err(e) = std::fs::remove_dir(&self.dir) {
            warn!("remove {}: {e}", self.dir.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_containerds_triples() {
        assert_eq!(
            parse_ranges("uidmap", "0:100000:65536").unwrap(),
            [(0, 100000, 65536)]
        );
        assert_eq!(
            parse_ranges("gidmap", "0:1:1,1:100001:65535").unwrap(),
            [(0, 1, 1), (1, 100001, 65535)]
        );
        for bad in ["", "0:1", "0:1:0", "a:1:2", "0:1:2:3", "0:-1:2"] {
            let e = parse_ranges("uidmap", bad).unwrap_err().to_string();
            assert!(e.contains("uidmap="), "{e}");
        }
    }
}
