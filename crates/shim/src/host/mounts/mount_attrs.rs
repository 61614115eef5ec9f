//! Recursive mount attributes (`rro`, `rnosuid`, ... on a bind mount): whether this kernel can
//! apply them, and applying them in a container's mount namespace (from [`super::tidy`]) once
//! LXC has made every mount, as runc does with mount_setattr(2) and AT_RECURSIVE right after it
//! made the bind (libcontainer/rootfs_linux.go, `setRecAttr`).

use std::sync::OnceLock;

use lxc_config::{MountSetattr, RecursiveAttrs};
use nix::errno::Errno;
use nix::mount::{umount2, MntFlags};

use crate::host::mounts::clone::{mount_attr, mount_setattr, MountClone};

/// What this kernel's mount_setattr(2) can do, probed once per process.
pub fn kernel_support() -> MountSetattr {
    static SUPPORT: OnceLock<MountSetattr> = OnceLock::new();
    *SUPPORT.get_or_init(|| {
        let available = probe(libc::MOUNT_ATTR_RDONLY) == Errno::EBADF;
        MountSetattr {
            available,
            nosymfollow: available && probe(libc::MOUNT_ATTR_NOSYMFOLLOW) == Errno::EBADF,
        }
    })
}

/// mount_setattr(2) of `attr_set` on no mount (descriptor -1, empty path). The kernel checks
/// the caller's privilege and the attributes before it looks up the path (fs/namespace.c,
/// `SYSCALL_DEFINE5(mount_setattr)`: `may_mount`, `build_mount_kattr`, then `user_path_at`),
/// so EBADF means it would apply them; ENOSYS (before Linux 5.12, or a seccomp filter that
/// hides it), EINVAL (an attribute it does not know: NOSYMFOLLOW before 5.14) or EPERM (no
/// CAP_SYS_ADMIN, so nothing could be applied anyway) mean it would not.
fn probe(attr_set: u64) -> Errno {
    let attr = mount_attr(attr_set, 0, 0);
    let flags = libc::AT_RECURSIVE | libc::AT_EMPTY_PATH;
    match mount_setattr(-1, c"", flags as libc::c_uint, &attr) {
        Ok(()) => Errno::UnknownErrno,
        Err(e) => e,
    }
}

/// Marks a bind's recursive attributes in `tidy`'s arguments:
/// `--rec-attrs FIELD DST SET CLR WORDS N LATER...`, each LATER a path, prefixed with `?` for
/// an optional one.
pub const ARG: &str = "--rec-attrs";

/// `tidy`'s arguments for `r`.
pub fn to_args(r: &RecursiveAttrs) -> Vec<String> {
    let mut args = vec![
        ARG.to_string(),
        r.field.clone(),
        r.destination.clone(),
        r.attr_set.to_string(),
        r.attr_clr.to_string(),
        r.words.join(","),
        r.later.len().to_string(),
    ];
    args.extend(r.later.iter().map(|l| {
        if l.optional {
            format!("?{}", l.path)
        } else {
            l.path.clone()
        }
    }));
    args
}

/// Parses one `--rec-attrs` group at the start of `args`; the rest follows it.
pub fn from_args(args: &[String]) -> Option<(RecursiveAttrs, &[String])> {
    let [flag, field, destination, set, clr, words, count, rest @ ..] = args else {
        return None;
    };
    if flag != ARG {
        return None;
    }
    let count: usize = count.parse().ok()?;
    if rest.len() < count {
        return None;
    }
    let (later, rest) = rest.split_at(count);
    let later = later
        .iter()
        .map(|p| match p.strip_prefix('?') {
            Some(path) => lxc_config::LaterMount {
                path: path.to_string(),
                optional: true,
            },
            None => lxc_config::LaterMount {
                path: p.clone(),
                optional: false,
            },
        })
        .collect();
    let attrs = RecursiveAttrs {
        field: field.clone(),
        destination: destination.clone(),
        attr_set: set.parse().ok()?,
        attr_clr: clr.parse().ok()?,
        words: words.split(',').map(str::to_string).collect(),
        later,
    };
    Some((attrs, rest))
}

/// In the container's mount namespace, after LXC made every mount: applies `r`'s attributes
/// to its bind and every mount below it, but not to the container's own mounts LXC made after
/// the bind (runc makes those after it applied the attributes): they are set aside first (a
/// recursive clone each, then detached), the last one LXC made first so that each path shows
/// the mount it was made on, and put back in LXC's order afterwards, whatever happened.
pub fn apply(r: &RecursiveAttrs) -> std::result::Result<(), String> {
    let mut aside = Vec::new();
    let mut previous: Option<&lxc_config::LaterMount> = None;
    for later in r.later.iter().rev() {
        // A masked path is two optional entries in a row (a file's and a directory's), of
        // which LXC makes the one that fits; an optional entry whose path is missing was
        // skipped. Detaching a mount LXC did not make would take a submount of the bind out
        // of the attributes.
        let other_half =
            previous.is_some_and(|p| p.optional && later.optional && p.path == later.path);
        previous = Some(later);
        if other_half || (later.optional && std::fs::symlink_metadata(&later.path).is_err()) {
            continue;
        }
        let clone = match MountClone::of(&later.path, true) {
            Ok(clone) => clone,
            Err(e) => {
                put_back(aside)?;
                return Err(format!("{}: {e}", r.field));
            }
        };
        match umount2(later.path.as_str(), MntFlags::MNT_DETACH) {
            Ok(()) => aside.push((clone, later.path.as_str())),
            // Not the root of a mount: nothing there to keep out.
            Err(Errno::EINVAL) => {}
            Err(e) => {
                put_back(aside)?;
                return Err(format!(
                    "{}: set aside the mount at {} to apply {} to {}: {e}",
                    r.field,
                    later.path,
                    r.words.join(","),
                    r.destination
                ));
            }
        }
    }
    let applied = set_attrs(r);
    put_back(aside)?;
    applied
}

fn put_back(aside: Vec<(MountClone, &str)>) -> std::result::Result<(), String> {
    for (clone, path) in aside.into_iter().rev() {
        clone.attach(path)?;
    }
    Ok(())
}

fn set_attrs(r: &RecursiveAttrs) -> std::result::Result<(), String> {
    let path = std::ffi::CString::new(r.destination.as_str())
        .map_err(|_| format!("{}: {:?} contains a NUL byte", r.field, r.destination))?;
    let attr = mount_attr(r.attr_set, r.attr_clr, 0);
    let flags = libc::AT_RECURSIVE as libc::c_uint;
    mount_setattr(libc::AT_FDCWD, &path, flags, &attr).map_err(|e| {
        let why = match e {
            // fs/namespace.c, `can_change_locked_flags`: a mount a user namespace got from the
            // host keeps the host's ro/nosuid/nodev/noexec/atime flags (runc fails alike).
            Errno::EPERM => {
                " (a mount of the container's user namespace keeps the flags it got from the host)"
            }
            _ => "",
        };
        format!(
            "{}: apply {} to {} and the mounts below it (mount_setattr): {e}{why}",
            r.field,
            r.words.join(","),
            r.destination
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_round_trip() {
        let r = RecursiveAttrs {
            field: "mounts[3]".into(),
            destination: "/data".into(),
            attr_set: libc::MOUNT_ATTR_RDONLY,
            attr_clr: libc::MOUNT_ATTR__ATIME,
            words: vec!["rro".into(), "ratime".into()],
            later: vec![
                lxc_config::LaterMount {
                    path: "/data/tmp".into(),
                    optional: false,
                },
                lxc_config::LaterMount {
                    path: "/data/secret".into(),
                    optional: true,
                },
            ],
        };
        let mut args = to_args(&r);
        args.push("/proc/kcore".into());
        let (back, rest) = from_args(&args).unwrap();
        assert_eq!(back, r);
        assert_eq!(rest, ["/proc/kcore"]);
        assert!(from_args(&args[..args.len() - 2]).is_none());
        assert!(from_args(rest).is_none());
    }

    /// Root only: in a mount namespace of this test's thread (unshare(CLONE_NEWNS) affects the
    /// calling thread alone), a bind with a submount and mounts made after it below it, as LXC
    /// leaves them.
    #[test]
    #[ignore = "needs root: mount namespaces, mounts"]
    fn apply_reaches_submounts_but_not_the_later_mounts() {
        use nix::mount::{mount, MsFlags};
        use nix::sys::statvfs::{statvfs, FsFlags};
        crate::assert_root();
        assert!(
            kernel_support().available,
            "mount_setattr(2) is missing: Linux 5.12 or later applies recursive attributes"
        );
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap().to_string();
        let run = std::thread::spawn(move || -> std::result::Result<Vec<String>, String> {
            let e = |what: &str| {
                let what = what.to_string();
                move |err: Errno| format!("{what}: {err}")
            };
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).map_err(e("unshare"))?;
            let none = None::<&str>;
            mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none)
                .map_err(e("make / private"))?;
            let tmpfs = |at: &str| {
                mount(Some("tmpfs"), at, Some("tmpfs"), MsFlags::empty(), none)
                    .map_err(e(&format!("tmpfs at {at}")))
            };
            let bind = |src: &str, at: &str, flags: MsFlags| {
                mount(Some(src), at, none, MsFlags::MS_BIND | flags, none)
                    .map_err(e(&format!("bind {src} at {at}")))
            };
            tmpfs(&d)?;
            for sub in ["src/sub", "b"] {
                std::fs::create_dir_all(format!("{d}/{sub}")).map_err(|x| x.to_string())?;
            }
            tmpfs(&format!("{d}/src/sub"))?;
            for sub in ["src/later", "src/hidden"] {
                std::fs::create_dir_all(format!("{d}/{sub}")).map_err(|x| x.to_string())?;
            }
            std::fs::write(format!("{d}/src/file"), "").map_err(|x| x.to_string())?;
            std::fs::write(format!("{d}/src/sub/masked"), "").map_err(|x| x.to_string())?;
            // The bind, then what LXC would mount after it: a tmpfs, a masked file (the
            // /dev/null half of the pair), a read-only path that is missing, and an
            // overmount of a directory whose first mount was made after the bind too.
            bind(&format!("{d}/src"), &format!("{d}/b"), MsFlags::MS_REC)?;
            tmpfs(&format!("{d}/b/later"))?;
            bind(
                &format!("{d}/src/file"),
                &format!("{d}/b/sub/masked"),
                MsFlags::empty(),
            )?;
            tmpfs(&format!("{d}/b/hidden"))?;
            tmpfs(&format!("{d}/b/hidden"))?;
            let later = |path: &str, optional| lxc_config::LaterMount {
                path: format!("{d}/b/{path}"),
                optional,
            };
            let r = RecursiveAttrs {
                field: "mounts[0]".into(),
                destination: format!("{d}/b"),
                attr_set: libc::MOUNT_ATTR_RDONLY | libc::MOUNT_ATTR_NOSUID,
                attr_clr: 0,
                words: vec!["rro".into(), "rnosuid".into()],
                later: vec![
                    later("later", false),
                    later("sub/masked", true),
                    later("sub/masked", true),
                    later("missing", true),
                    later("hidden", false),
                    later("hidden", false),
                ],
            };
            apply(&r)?;
            let mut seen = Vec::new();
            for path in ["b", "b/sub", "b/later", "b/sub/masked", "b/hidden"] {
                let f = statvfs(format!("{d}/{path}").as_str())
                    .map_err(e(path))?
                    .flags();
                let ro = f.contains(FsFlags::ST_RDONLY);
                let nosuid = f.contains(FsFlags::ST_NOSUID);
                seen.push(format!("{path} ro={ro} nosuid={nosuid}"));
            }
            // Both hidden tmpfs mounts are back, stacked: one unmount leaves the other.
            nix::mount::umount2(
                format!("{d}/b/hidden").as_str(),
                nix::mount::MntFlags::empty(),
            )
            .map_err(e("unmount the upper hidden"))?;
            let f = statvfs(format!("{d}/b/hidden").as_str()).map_err(e("hidden"))?;
            seen.push(format!(
                "lower hidden ro={}",
                f.flags().contains(FsFlags::ST_RDONLY)
            ));
            Ok(seen)
        });
        let seen = run.join().unwrap().unwrap();
        assert_eq!(
            seen,
            [
                "b ro=true nosuid=true",
                "b/sub ro=true nosuid=true",
                "b/later ro=false nosuid=false",
                "b/sub/masked ro=false nosuid=false",
                "b/hidden ro=false nosuid=false",
                "lower hidden ro=false",
            ]
        );
    }

    #[test]
    fn the_probe_answers_on_this_kernel() {
        // Root on Linux >= 5.14 here; elsewhere it must still answer without applying anything.
        let support = kernel_support();
        if nix::unistd::geteuid().is_root() {
            let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
            let mut parts = release.split(|c: char| !c.is_ascii_digit());
            let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
            let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
            if (major, minor) >= (5, 14) {
                assert_eq!(support, MountSetattr::ALL, "{release}");
            }
        }
        assert!(support.available || !support.nosymfollow);
    }
}
