//! Descriptors a child keeps across `exec`, set up between `fork` and `exec` without
//! allocating.
//!
//! The shim is multi-threaded. A forked child has only the thread that forked, and a lock
//! another thread held at that moment (malloc's among them) stays held in the child forever,
//! so until it `exec`s the child may call only async-signal-safe functions (POSIX `fork`,
//! signal-safety(7)): no allocation, no logging, no locks. Rust opens every descriptor
//! close-on-exec, so one a child must keep needs its `FD_CLOEXEC` cleared in the child, or a
//! `dup2` to the number a protocol expects. [`keep_fds_across_exec`] decides and allocates
//! everything before the fork; its `pre_exec` closure only walks a slice built beforehand and
//! calls `fcntl` and `dup2`, both async-signal-safe.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

use crate::errors::{Result, ShimError};

/// One descriptor for [`keep_fds_across_exec`], and the number the child gets it under.
#[derive(Debug)]
pub struct KeptFd {
    fd: OwnedFd,
    /// The number in the child.
    at: RawFd,
    /// Whether it goes to another number than its own (`dup2`) or keeps it (`fcntl`).
    moves: bool,
    /// In the child: the close-on-exec copy `fd` is moved through, above every `at`.
    scratch: RawFd,
}

impl KeptFd {
    /// `fd` under its own number. Read that number (`as_raw_fd`) before handing `fd` over, to
    /// name it to the child (an argument, `/proc/self/fd/N`).
    pub fn same(fd: impl Into<OwnedFd>) -> KeptFd {
        let fd = fd.into();
        KeptFd {
            at: fd.as_raw_fd(),
            fd,
            moves: false,
            scratch: -1,
        }
    }

    /// `fd` under number `at` (a protocol's fixed descriptor, such as a logger's fd 3), which
    /// must be above stderr: 0 to 2 are the command's stdio.
    pub fn at(fd: impl Into<OwnedFd>, at: RawFd) -> KeptFd {
        KeptFd {
            fd: fd.into(),
            at,
            moves: true,
            scratch: -1,
        }
    }
}

/// Makes `cmd`'s child keep `fds` across its `exec`, each under the number its [`KeptFd`]
/// gives, and nothing else that the shim has open (the rest stays close-on-exec).
///
/// The contract:
/// - `cmd` owns the descriptors from now on: they stay open in the shim as long as `cmd`
///   lives, every `spawn` of it passes them on, and dropping `cmd` closes them. Drop `cmd`
///   right after `spawn` where the child must hold the only copy (the write end of a pipe
///   whose EOF the shim waits for).
/// - The numbers in the child must differ from each other and be above 2; otherwise an
///   error, and the descriptors are closed.
/// - In the child, before `exec`: every moved descriptor is first copied above every target
///   (close-on-exec, so the copies vanish at `exec`), then `dup2`'d to its target, so one
///   descriptor's target may be another's current number; a descriptor kept under its own
///   number has `FD_CLOEXEC` cleared. A failure fails the `spawn` with the `errno`.
/// - It adds one `pre_exec` closure, run in the order of the command's other closures. Use
///   this instead of a closure of one's own for keeping descriptors: it neither allocates
///   nor takes a lock after the fork.
pub fn keep_fds_across_exec(
    cmd: &mut Command,
    fds: impl IntoIterator<Item = KeptFd>,
) -> Result<()> {
    let mut kept: Box<[KeptFd]> = fds.into_iter().collect();
    for (i, k) in kept.iter().enumerate() {
        if k.at <= libc::STDERR_FILENO {
            return Err(ShimError::Internal(format!(
                "keep fd {} across exec as fd {}: 0 to 2 are the command's stdio",
                k.fd.as_raw_fd(),
                k.at
            )));
        }
        if let Some(other) = kept[..i].iter().find(|o| o.at == k.at) {
            return Err(ShimError::Internal(format!(
                "keep fds {} and {} across exec both as fd {}",
                other.fd.as_raw_fd(),
                k.fd.as_raw_fd(),
                k.at
            )));
        }
    }
    let floor = kept
        .iter()
        .map(|k| k.at)
        .max()
        .unwrap_or(0)
        .saturating_add(1);
    let closure = move || -> std::io::Result<()> {
        for k in kept.iter_mut().filter(|k| k.moves) {
            // SAFETY: fcntl on a descriptor this closure owns; async-signal-safe.
            k.scratch = unsafe { libc::fcntl(k.fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, floor) };
            if k.scratch < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        for k in kept.iter() {
            // SAFETY: dup2 and fcntl on descriptors this closure owns or made just above, to
            // numbers checked before the fork; both async-signal-safe.
            let rc = unsafe {
                if k.moves {
                    libc::dup2(k.scratch, k.at)
                } else {
                    libc::fcntl(k.at, libc::F_SETFD, 0)
                }
            };
            if rc < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    };
    // SAFETY: the closure runs in the forked child before exec and calls only fcntl and dup2
    // (async-signal-safe) on memory allocated before the fork; `last_os_error` reads errno
    // without allocating.
    unsafe {
        cmd.pre_exec(closure);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// For each fd number: the content of the file the child has open under it, or `closed`.
    const SHOW_FDS: &str = r#"for fd; do
        if [ -e "/proc/$$/fd/$fd" ]; then
            echo "$fd $(cat "/proc/$$/fd/$fd")"
        else
            echo "$fd closed"
        fi
    done"#;

    fn file_with(dir: &std::path::Path, content: &str) -> std::fs::File {
        let path = dir.join(content);
        std::fs::write(&path, content).expect("write a test file");
        std::fs::File::open(&path).expect("open a test file")
    }

    #[test]
    fn a_child_sees_the_kept_fds_under_their_numbers_and_no_other() {
        let dir = tempfile::tempdir().expect("tempdir");
        let own = file_with(dir.path(), "own");
        let moved = file_with(dir.path(), "moved");
        let (swap_a, swap_b) = (file_with(dir.path(), "a"), file_with(dir.path(), "b"));
        let in_place = file_with(dir.path(), "in-place");
        let not_kept = file_with(dir.path(), "not-kept");
        let n = |f: &std::fs::File| f.as_raw_fd();
        let (own_n, moved_n, a_n, b_n) = (n(&own), n(&moved), n(&swap_a), n(&swap_b));
        let (in_place_n, not_kept_n) = (n(&in_place), n(&not_kept));
        // Above every descriptor of this process: closed in the child unless made there.
        let target = [own_n, moved_n, a_n, b_n, in_place_n, not_kept_n]
            .into_iter()
            .max()
            .unwrap_or(0)
            + 10;
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(SHOW_FDS).arg("sh");
        for fd in [own_n, target, a_n, b_n, in_place_n, moved_n, not_kept_n] {
            cmd.arg(fd.to_string());
        }
        keep_fds_across_exec(
            &mut cmd,
            [
                KeptFd::same(own),
                KeptFd::at(moved, target),
                // Each to the other's number: both must be copied before either is replaced.
                KeptFd::at(swap_a, b_n),
                KeptFd::at(swap_b, a_n),
                // Its own number, through `at`: dup2 to itself would keep FD_CLOEXEC.
                KeptFd::at(in_place, in_place_n),
            ],
        )
        .expect("keep fds");
        let out = cmd.output().expect("run sh");
        assert!(out.status.success(), "{out:?}");
        let expected = format!(
            "{own_n} own\n{target} moved\n{a_n} b\n{b_n} a\n{in_place_n} in-place\n\
             {moved_n} closed\n{not_kept_n} closed\n"
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), expected);
        // The command still holds the kept descriptors, for another spawn.
        let again = cmd.output().expect("run sh again");
        assert_eq!(String::from_utf8_lossy(&again.stdout), expected);
    }

    #[test]
    fn clashing_or_stdio_numbers_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cmd = Command::new("true");
        let twice = [
            KeptFd::at(file_with(dir.path(), "x"), 40),
            KeptFd::at(file_with(dir.path(), "y"), 40),
        ];
        let e = keep_fds_across_exec(&mut cmd, twice).expect_err("two fds as 40");
        assert!(e.to_string().contains("both as fd 40"), "{e}");
        let stdio = [KeptFd::at(file_with(dir.path(), "z"), 1)];
        let e = keep_fds_across_exec(&mut cmd, stdio).expect_err("an fd as stdout");
        assert!(e.to_string().contains("as fd 1"), "{e}");
        let own = file_with(dir.path(), "own");
        let moved = file_with(dir.path(), "moved");
        let own_n = own.as_raw_fd();
        let clash = [KeptFd::same(own), KeptFd::at(moved, own_n)];
        let e = keep_fds_across_exec(&mut cmd, clash).expect_err("a move onto a kept fd");
        assert!(
            e.to_string().contains(&format!("both as fd {own_n}")),
            "{e}"
        );
        // Nothing was added: the command runs as it was.
        assert!(cmd.status().expect("run true").success());
    }
}
