//! The helper never runs from a file a container could write (runc CVE-2019-5736).
//!
//! A container's root can reach the binary of any process it can see through
//! `/proc/PID/exe`, and reopen it for writing once nothing executes it any more; a helper
//! binary poisoned that way would run as the init of every later container. The shim hands
//! an exec's helper to `lxc-attach` as a sealed memfd already. The init's helper is started by
//! LXC from a path (`lxc.init.cmd`, a read-only bind mount), so before anything else it copies
//! itself into a memfd, seals it against every change (`F_SEAL_WRITE | F_SEAL_GROW |
//! F_SEAL_SHRINK | F_SEAL_SEAL`) and re-executes from there, as runc did from 1.0-rc7 on
//! (`libcontainer/nsenter/cloned_binary.c`). At that point it is the only process of a new
//! container, so no process of the container has seen the file-backed helper.

use std::ffi::{CString, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStringExt;

/// Every seal: the content, the size and the seals themselves are fixed.
pub const SEALS: libc::c_int =
    libc::F_SEAL_SEAL | libc::F_SEAL_WRITE | libc::F_SEAL_GROW | libc::F_SEAL_SHRINK;

/// Whether `file` is a memfd with all of [`SEALS`].
pub fn is_sealed(file: &File) -> bool {
    // SAFETY: fcntl on a descriptor `file` owns.
    let seals = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GET_SEALS) };
    seals >= 0 && seals & SEALS == SEALS
}

/// A sealed memfd holding what `source` reads to.
pub fn sealed_copy(mut source: impl io::Read, name: &std::ffi::CStr) -> io::Result<File> {
    // SAFETY: a valid NUL-terminated name; the result is checked and owned below.
    let fd =
        unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: memfd_create returned a fresh descriptor nothing else owns.
    let mut memfd = unsafe { File::from_raw_fd(fd) };
    io::copy(&mut source, &mut memfd)?;
    // SAFETY: fcntl on a descriptor `memfd` owns.
    if unsafe { libc::fcntl(memfd.as_raw_fd(), libc::F_ADD_SEALS, SEALS) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(memfd)
}

/// Re-executes the running helper from a sealed memfd unless it already runs from one.
/// Returns only when it could not (no /proc, or memfd_create/execveat refused by the
/// container's seccomp profile): the helper then goes on from the read-only bind mount.
pub fn reexec_sealed() -> io::Error {
    let exe = match File::open("/proc/self/exe") {
        Ok(f) => f,
        Err(e) => return e,
    };
    if is_sealed(&exe) {
        return io::Error::other("already sealed");
    }
    let memfd = match sealed_copy(&exe, c"containerd-shim-proxmox-lxc-init") {
        Ok(m) => m,
        Err(e) => return e,
    };
    drop(exe);
    let to_c = |v: Vec<u8>| CString::new(v).ok();
    let argv: Vec<CString> = std::env::args_os()
        .filter_map(|a| to_c(a.into_vec()))
        .collect();
    let envp: Vec<CString> = std::env::vars_os()
        .filter_map(|(k, v)| {
            let mut kv: OsString = k;
            kv.push("=");
            kv.push(v);
            to_c(kv.into_vec())
        })
        .collect();
    let mut argv_p: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_p.push(std::ptr::null());
    let mut envp_p: Vec<*const libc::c_char> = envp.iter().map(|a| a.as_ptr()).collect();
    envp_p.push(std::ptr::null());
    // SAFETY: NULL-terminated arrays of valid C strings that outlive the call. execveat with
    // AT_EMPTY_PATH runs the memfd itself (a static binary: no interpreter needs the path, so
    // close-on-exec on the memfd does not matter).
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            memfd.as_raw_fd(),
            c"".as_ptr(),
            argv_p.as_ptr(),
            envp_p.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    io::Error::last_os_error()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, Write};

    #[test]
    fn a_sealed_copy_cannot_be_changed() {
        let mut memfd = sealed_copy(&b"helper bytes"[..], c"test").unwrap();
        assert!(is_sealed(&memfd));
        assert!(memfd.write_all(b"x").is_err(), "write must fail");
        assert!(memfd.set_len(3).is_err(), "shrink must fail");
        assert!(memfd.set_len(100).is_err(), "grow must fail");
        // Reopened through /proc as an attacker would.
        let path = format!("/proc/self/fd/{}", memfd.as_raw_fd());
        if let Ok(mut w) = std::fs::OpenOptions::new().write(true).open(&path) {
            assert!(
                w.write_all(b"poison").is_err(),
                "write through a reopen must fail"
            );
        }
        // SAFETY: fcntl on an owned descriptor.
        let unseal = unsafe { libc::fcntl(memfd.as_raw_fd(), libc::F_ADD_SEALS, 0) };
        assert!(unseal != 0, "F_SEAL_SEAL forbids changing the seals");
        memfd.rewind().unwrap();
        let mut back = String::new();
        memfd.read_to_string(&mut back).unwrap();
        assert_eq!(back, "helper bytes");
    }

    #[test]
    fn a_plain_file_is_not_sealed() {
        let f = tempfile::tempfile().unwrap();
        assert!(!is_sealed(&f));
    }
}
