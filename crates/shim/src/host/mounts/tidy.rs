//! Gives the workload runc's view of its mounts and `/dev`.
//!
//! LXC leaves things in a container's mount namespace that a runc container does not have: the
//! helper's directory (`/dev/.ctinit`, needed only until the helper runs), `/dev/ptmx` as a bind
//! mount of the devpts `ptmx` (runc: a symlink to `pts/ptmx`), a tmpfs file over
//! `/proc/sys/kernel/random/boot_id` with its source `/dev/.lxc-boot-id`, and masked files
//! bound from the host's `/dev/null` (mount entries are made before `/dev` is filled), which
//! show as `devtmpfs` instead of the container's own `/dev/null`. And one thing runc adds that
//! LXC's autodev does not: `/dev/core -> /proc/kcore` where the kernel has `/proc/kcore`.
//!
//! The helper cannot undo these itself (it runs under the spec's bounding set and seccomp
//! profile), so the shim does it from the host once the init's helper reported `Ready`, before
//! the workload starts: a short-lived child (`SELF tidy-container PID MASKED...`, one thread,
//! so that it may `setns` into the container's mount namespace) makes the changes there.
//!
//! The same child does what LXC's mount entries cannot express: binds that must stay peers of
//! their host mounts (`lxc_config::PeerBind`), then recursive mount attributes
//! (`lxc_config::RecursiveAttrs`, see [`crate::host::mounts::mount_attrs`]).

use std::os::fd::AsFd;
use std::time::Duration;

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, CloneFlags};

use crate::errors::{Result, ShimError};
use crate::host::mounts::mount_attrs;
use crate::host::process::command::run_command;
use crate::host::process::exits::ChildExits;

/// The hidden subcommand of the shim binary that does the work in the container.
pub const SUBCOMMAND: &str = "tidy-container";

const HELPER_DIR: &str = ctinit_proto::CONTAINER_DIR;
const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";
const LXC_BOOT_ID: &str = "/dev/.lxc-boot-id";

/// Marks a bind mount to re-make as a peer of its host mount:
/// `--peer-bind SRC DST rbind|bind N NESTED...`, the N NESTED the container's mount points
/// below DST.
const PEER_BIND: &str = "--peer-bind";

/// What LXC's mount entries could not express, for [`tidy`] to make.
#[derive(Clone, Copy)]
pub struct MountFixes<'a> {
    pub peer_binds: &'a [lxc_config::PeerBind],
    pub recursive_attrs: &'a [lxc_config::RecursiveAttrs],
}

/// Host side: tidies the mount namespace of the container whose init has host pid `pid`,
/// re-makes the peer binds there as peers of their host mounts (LXC made them slaves), then
/// applies the recursive mount attributes.
pub async fn tidy(
    exits: &ChildExits,
    pid: u32,
    masked_paths: &[String],
    fixes: MountFixes<'_>,
) -> Result<()> {
    // The running image through /proc/self/exe, not `current_exe()`: once a package upgrade
    // has replaced the binary, `current_exe()` names "<path> (deleted)", which cannot be
    // executed, and a pod's next container (served by this shim) would fail to start.
    let mut cmd = std::process::Command::new("/proc/self/exe");
    cmd.arg(SUBCOMMAND).arg(pid.to_string());
    for b in fixes.peer_binds {
        let kind = if b.recursive { "rbind" } else { "bind" };
        let count = b.nested.len().to_string();
        cmd.args([PEER_BIND, &b.source, &b.destination, kind, &count]);
        cmd.args(&b.nested);
    }
    for r in fixes.recursive_attrs {
        cmd.args(mount_attrs::to_args(r));
    }
    cmd.args(masked_paths);
    let out = run_command(exits, cmd, Duration::from_secs(10)).await?;
    if out.code != 0 {
        return Err(ShimError::Internal(format!(
            "tidy the mounts of the container (pid {pid}): {}",
            out.stderr.trim()
        )));
    }
    Ok(())
}

/// Child side (`SELF tidy-container PID [--peer-bind SRC DST rbind|bind N NESTED...]...
/// [--rec-attrs FIELD DST SET CLR WORDS N LATER...]... MASKED...`). Must run before any thread
/// is started.
pub fn run(args: &[String]) -> std::result::Result<(), String> {
    let usage = || {
        format!(
            "usage: {SUBCOMMAND} PID [{PEER_BIND} SRC DST rbind|bind N NESTED...]... \
             [{} FIELD DST SET CLR WORDS N LATER...]... [MASKED_PATH...]",
            mount_attrs::ARG
        )
    };
    let (pid, mut masked) = match args.split_first() {
        Some((pid, masked)) => (pid, masked),
        None => return Err(usage()),
    };
    // Cloned here, in the host's mount namespace, where the sources are.
    let mut peer_binds = Vec::new();
    while masked.first().map(String::as_str) == Some(PEER_BIND) {
        let [_, src, dst, kind, count, rest @ ..] = masked else {
            return Err(usage());
        };
        let count: usize = count.parse().map_err(|_| usage())?;
        if rest.len() < count {
            return Err(usage());
        }
        let (nested, rest) = rest.split_at(count);
        let clone = crate::host::mounts::clone::MountClone::of(src, kind == "rbind")?;
        peer_binds.push((clone, dst.clone(), nested.to_vec()));
        masked = rest;
    }
    let mut recursive_attrs = Vec::new();
    while masked.first().map(String::as_str) == Some(mount_attrs::ARG) {
        let (attrs, rest) = mount_attrs::from_args(masked).ok_or_else(usage)?;
        recursive_attrs.push(attrs);
        masked = rest;
    }
    let pid: u32 = pid
        .parse()
        .map_err(|_| format!("{pid:?} is not a process id"))?;
    // Read from the host's /proc: the container's own does not show a process outside its pid
    // namespace. Paths there are relative to the init's root, the container's.
    let mounts = std::fs::read_to_string(format!("/proc/{pid}/mounts"))
        .map_err(|e| format!("read the container's mounts: {e}"))?;
    // The container's root as the host sees it: under a user namespace, files this process
    // makes in the container's /dev must belong to a mapped id (an unmapped owner, host root
    // here, is refused with EOVERFLOW), as they do under runc, which makes them as that root.
    let root_uid = read_host_id_of_root(pid, "uid_map")?;
    let root_gid = read_host_id_of_root(pid, "gid_map")?;
    // runc decides from its own (the host's) /proc, before it enters the container.
    let kernel_has_kcore = std::path::Path::new("/proc/kcore").exists();
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/mnt"))
        .map_err(|e| format!("open the mount namespace of pid {pid}: {e}"))?;
    // Also moves root and cwd to the namespace's root: the container's root after pivot_root.
    setns(ns.as_fd(), CloneFlags::CLONE_NEWNS)
        .map_err(|e| format!("enter the mount namespace of pid {pid}: {e}"))?;

    for (clone, destination, nested) in peer_binds {
        clone.replace(&destination, &nested)?;
    }
    // After the peer binds, which are new mounts; in LXC's order of the binds.
    for attrs in &recursive_attrs {
        mount_attrs::apply(attrs)?;
    }

    // Only the filesystem ids change: CAP_SYS_ADMIN (for the mounts below) stays, the file
    // capabilities go (the container's root owns what is touched here). Identity-mapped or
    // without a user namespace, both stay 0.
    nix::unistd::setfsgid(nix::unistd::Gid::from_raw(root_gid));
    nix::unistd::setfsuid(nix::unistd::Uid::from_raw(root_uid));

    let fstype_at = |target: &str| -> Option<String> {
        // The last entry for a target is the one on top.
        mounts.lines().rev().find_map(|l| {
            let mut f = l.split(' ');
            let (_src, dst, typ) = (f.next()?, f.next()?, f.next()?);
            (unescape(dst) == target).then(|| typ.to_string())
        })
    };

    // The helper is running (its binary stays mapped); nothing needs the directory any more.
    if fstype_at(HELPER_DIR).is_some() {
        detach(HELPER_DIR)?;
    }
    remove(HELPER_DIR, true)?;

    if fstype_at(BOOT_ID).is_some() {
        detach(BOOT_ID)?;
    }
    remove(LXC_BOOT_ID, false)?;

    if fstype_at("/dev/ptmx").is_some() {
        detach("/dev/ptmx")?;
        remove("/dev/ptmx", false)?;
        std::os::unix::fs::symlink("pts/ptmx", "/dev/ptmx")
            .map_err(|e| format!("link /dev/ptmx to pts/ptmx: {e}"))?;
    }

    // runc's setupDevSymlinks links /dev/core to /proc/kcore on the /dev it makes itself (the
    // tmpfs LXC's autodev also makes; a spec that binds its own /dev gets neither).
    if kernel_has_kcore
        && fstype_at("/dev").as_deref() == Some("tmpfs")
        && std::fs::symlink_metadata("/dev/core").is_err()
    {
        match std::os::unix::fs::symlink("/proc/kcore", "/dev/core") {
            // A read-only /dev (the spec's own choice) goes without it.
            Err(e) if e.raw_os_error() != Some(libc::EROFS) => {
                return Err(format!("link /dev/core to /proc/kcore: {e}"))
            }
            _ => {}
        }
    }

    // A masked file must be the container's /dev/null, as runc binds it.
    for path in masked {
        if fstype_at(path).as_deref() == Some("devtmpfs") {
            detach(path)?;
            mount(
                Some("/dev/null"),
                path.as_str(),
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| format!("mask {path} with /dev/null: {e}"))?;
        }
    }
    Ok(())
}

/// The host id of the container's id 0 in `/proc/PID/{uid_map,gid_map}` (0 where 0 is not
/// mapped: no user namespace shows `0 0 4294967295`).
fn read_host_id_of_root(pid: u32, file: &str) -> std::result::Result<u32, String> {
    let map = std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .map_err(|e| format!("read the container's {file}: {e}"))?;
    Ok(host_id_of_root(&map).unwrap_or(0))
}

fn host_id_of_root(map: &str) -> Option<u32> {
    map.lines().find_map(|line| {
        let mut fields = line.split_whitespace().map(str::parse::<u32>);
        let (inside, outside, count) = (fields.next()?, fields.next()?, fields.next()?);
        (inside.ok()? == 0 && count.ok()? > 0).then_some(outside.ok()?)
    })
}

fn detach(target: &str) -> std::result::Result<(), String> {
    match umount2(target, MntFlags::MNT_DETACH) {
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(format!("unmount {target}: {e}")),
    }
}

fn remove(path: &str, dir: bool) -> std::result::Result<(), String> {
    let result = if dir {
        std::fs::remove_dir(path)
    } else {
        std::fs::remove_file(path)
    };
    match result {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        // A read-only /dev (a spec's own choice) keeps the name; it is harmless.
        Err(e) if e.raw_os_error() == Some(libc::EROFS) => Ok(()),
        Err(e) => Err(format!("remove {path}: {e}")),
    }
}

/// `/proc/mounts` escapes space, tab, newline and backslash as octal.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let oct = std::str::from_utf8(&bytes[i + 1..i + 4]).unwrap_or("");
            if let Ok(b) = u8::from_str_radix(oct, 8) {
                out.push(b);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::{host_id_of_root, unescape};

    #[test]
    fn host_id_of_root_reads_the_mapping_of_id_0() {
        assert_eq!(
            host_id_of_root("         0          0 4294967295\n"),
            Some(0)
        );
        assert_eq!(
            host_id_of_root("         0     100000      65536\n"),
            Some(100000)
        );
        assert_eq!(
            host_id_of_root("1000 5000 1\n0 200000 1000\n"),
            Some(200000)
        );
        assert_eq!(host_id_of_root("1000 5000 1\n"), None);
        assert_eq!(host_id_of_root(""), None);
    }

    #[test]
    fn unescapes_proc_mounts_fields() {
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape("/x\\134y"), "/x\\y");
        assert_eq!(unescape("/end\\04"), "/end\\04");
    }
}
