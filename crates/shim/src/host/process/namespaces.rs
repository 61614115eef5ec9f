//! The namespaces a process is in that the shim is not: what an exec joins, and whether a
//! hook run in a container needs its user namespace.

use std::os::unix::fs::MetadataExt;

use crate::errors::{Result, ShimError};

/// The kinds of namespace, as /proc/PID/ns names them, and their `CLONE_NEW*` flags.
const KINDS: [(&str, libc::c_int); 8] = [
    ("user", libc::CLONE_NEWUSER),
    ("mnt", libc::CLONE_NEWNS),
    ("pid", libc::CLONE_NEWPID),
    ("uts", libc::CLONE_NEWUTS),
    ("ipc", libc::CLONE_NEWIPC),
    ("net", libc::CLONE_NEWNET),
    ("cgroup", libc::CLONE_NEWCGROUP),
    // CLONE_NEWTIME (Linux >= 5.6); not named by every libc crate target.
    ("time", 0x80),
];

/// Whether `pid`'s namespace of `kind` (`user`, `mnt`, ...) is another than the shim's. An
/// error when either cannot be read (`NotFound`: the process is gone, or the kernel has no
/// namespace of that kind).
pub fn differs(pid: u32, kind: &str) -> std::io::Result<bool> {
    let id = |path: String| std::fs::metadata(path).map(|m| (m.dev(), m.ino()));
    Ok(id(format!("/proc/{pid}/ns/{kind}"))? != id(format!("/proc/self/ns/{kind}"))?)
}

/// The `CLONE_NEW*` flags of the namespaces `pid` is in and the shim is not: what an exec
/// joins (`setns` refuses to re-enter the caller's own user namespace).
pub fn to_join(pid: u32) -> Result<libc::c_int> {
    let mut flags = 0;
    for (kind, flag) in KINDS {
        match differs(pid, kind) {
            Ok(true) => flags |= flag,
            Ok(false) => {}
            // A kernel without time namespaces.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && kind == "time" => {}
            Err(e) => {
                return Err(ShimError::io(
                    format!("{kind} namespace of the container's init {pid}"),
                    e,
                ))
            }
        }
    }
    Ok(flags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shims_own_namespaces_are_not_joined() {
        assert_eq!(to_join(std::process::id()).unwrap(), 0);
        assert!(!differs(std::process::id(), "mnt").unwrap());
    }
}
