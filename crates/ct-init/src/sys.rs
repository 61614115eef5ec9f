//! Thin wrappers over the system calls the helper needs, each returning a [`Failure`] that
//! says what failed and why, in the words runc would use.

use std::ffi::CString;
use std::fmt;

use nix::errno::Errno;

/// A setup step that failed: the text goes to the shim in `Message::Error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure(pub String);

impl Failure {
    pub fn new(text: impl Into<String>) -> Failure {
        Failure(text.into())
    }

    pub fn errno(what: impl fmt::Display, errno: Errno) -> Failure {
        Failure(format!("{what}: {}", describe(errno)))
    }

    /// Prefixes what was being done: `"apply caps: capset: operation not permitted"`.
    pub fn context(self, what: impl fmt::Display) -> Failure {
        Failure(format!("{what}: {}", self.0))
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// strerror text with a lower-case first letter, as Go (and so runc) prints errno values.
pub fn describe(errno: Errno) -> String {
    let text = errno.desc();
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => format!("errno {}", errno as i32),
    }
}

pub fn cstring(what: &str, s: &str) -> Result<CString, Failure> {
    CString::new(s).map_err(|_| Failure::new(format!("{what} {s:?} contains a NUL byte")))
}

fn check(ret: libc::c_int) -> Result<libc::c_int, Errno> {
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(ret)
    }
}

/// Whether `cap` is in the bounding set; `Ok(false)` also for numbers the kernel lacks.
pub fn capbset_read(cap: u32) -> Result<bool, Failure> {
    // SAFETY: prctl with integer arguments only.
    let ret = unsafe { libc::prctl(libc::PR_CAPBSET_READ, cap as libc::c_ulong, 0, 0, 0) };
    match check(ret) {
        Ok(v) => Ok(v == 1),
        Err(Errno::EINVAL) => Ok(false),
        Err(e) => Err(Failure::errno("read bounding set", e)),
    }
}

/// The highest capability number the running kernel knows. Probed with PR_CAPBSET_READ
/// (EINVAL past the end), so it works without /proc.
pub fn last_cap() -> u32 {
    let mut last = 0;
    for cap in 0..64 {
        // SAFETY: prctl with integer arguments only.
        let ret = unsafe { libc::prctl(libc::PR_CAPBSET_READ, cap as libc::c_ulong, 0, 0, 0) };
        if ret < 0 && Errno::last() == Errno::EINVAL {
            break;
        }
        last = cap;
    }
    last
}

pub fn capbset_drop(cap: u32) -> Result<(), Failure> {
    // SAFETY: prctl with integer arguments only.
    let ret = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
    check(ret)
        .map(drop)
        .map_err(|e| Failure::errno("prctl(PR_CAPBSET_DROP)", e))
}

pub fn set_keepcaps(on: bool) -> Result<(), Failure> {
    // SAFETY: prctl with integer arguments only.
    let ret = unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, on as libc::c_ulong, 0, 0, 0) };
    check(ret)
        .map(drop)
        .map_err(|e| Failure::errno("prctl(PR_SET_KEEPCAPS)", e))
}

pub fn set_no_new_privs() -> Result<(), Failure> {
    // SAFETY: prctl with integer arguments only.
    let ret = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    check(ret)
        .map(drop)
        .map_err(|e| Failure::errno("prctl(PR_SET_NO_NEW_PRIVS)", e))
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Sets the effective, permitted and inheritable sets of this thread (the only one) exactly.
pub fn capset(effective: u64, permitted: u64, inheritable: u64) -> Result<(), Failure> {
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let split = |v: u64| (v as u32, (v >> 32) as u32);
    let (e0, e1) = split(effective);
    let (p0, p1) = split(permitted);
    let (i0, i1) = split(inheritable);
    let data = [
        CapData {
            effective: e0,
            permitted: p0,
            inheritable: i0,
        },
        CapData {
            effective: e1,
            permitted: p1,
            inheritable: i1,
        },
    ];
    // SAFETY: header and two data structs of the v3 layout, valid for the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_capset,
            &mut header as *mut CapHeader,
            data.as_ptr(),
        )
    };
    if ret < 0 {
        return Err(Failure::errno("capset", Errno::last()));
    }
    Ok(())
}

pub fn ambient_clear() -> Result<(), Failure> {
    // SAFETY: prctl with integer arguments only.
    let ret = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    match check(ret) {
        Ok(_) => Ok(()),
        // Kernels before 4.3 have no ambient set; nothing to clear.
        Err(Errno::EINVAL) => Ok(()),
        Err(e) => Err(Failure::errno("prctl(PR_CAP_AMBIENT_CLEAR_ALL)", e)),
    }
}

pub fn ambient_raise(cap: u32) -> Result<(), Failure> {
    // SAFETY: prctl with integer arguments only.
    let ret = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
            cap as libc::c_ulong,
            0,
            0,
        )
    };
    check(ret)
        .map(drop)
        .map_err(|e| Failure::errno("prctl(PR_CAP_AMBIENT_RAISE)", e))
}

pub fn setgroups(gids: &[u32]) -> Result<(), Failure> {
    let list: Vec<libc::gid_t> = gids.to_vec();
    // SAFETY: pointer and length of a live vector.
    let ret = unsafe { libc::setgroups(list.len(), list.as_ptr()) };
    check(ret)
        .map(drop)
        .map_err(|e| Failure::errno("setgroups", e))
}

pub fn setresgid(gid: u32) -> Result<(), Failure> {
    // SAFETY: plain integer arguments.
    let ret = unsafe { libc::setresgid(gid, gid, gid) };
    check(ret)
        .map(drop)
        .map_err(|e| Failure::errno(format!("setresgid({gid})"), e))
}

pub fn setresuid(uid: u32) -> Result<(), Failure> {
    // SAFETY: plain integer arguments.
    let ret = unsafe { libc::setresuid(uid, uid, uid) };
    check(ret)
        .map(drop)
        .map_err(|e| Failure::errno(format!("setresuid({uid})"), e))
}

pub fn chdir(path: &str) -> Result<(), Errno> {
    let c = CString::new(path).map_err(|_| Errno::EINVAL)?;
    // SAFETY: valid C string.
    check(unsafe { libc::chdir(c.as_ptr()) }).map(drop)
}

pub fn umask(mask: u32) {
    // SAFETY: umask cannot fail.
    unsafe { libc::umask(mask as libc::mode_t) };
}

/// The resource numbers the OCI spec names.
pub fn rlimit_resource(kind: &str) -> Option<libc::__rlimit_resource_t> {
    Some(match kind {
        "RLIMIT_CPU" => libc::RLIMIT_CPU,
        "RLIMIT_FSIZE" => libc::RLIMIT_FSIZE,
        "RLIMIT_DATA" => libc::RLIMIT_DATA,
        "RLIMIT_STACK" => libc::RLIMIT_STACK,
        "RLIMIT_CORE" => libc::RLIMIT_CORE,
        "RLIMIT_RSS" => libc::RLIMIT_RSS,
        "RLIMIT_NPROC" => libc::RLIMIT_NPROC,
        "RLIMIT_NOFILE" => libc::RLIMIT_NOFILE,
        "RLIMIT_MEMLOCK" => libc::RLIMIT_MEMLOCK,
        "RLIMIT_AS" => libc::RLIMIT_AS,
        "RLIMIT_LOCKS" => libc::RLIMIT_LOCKS,
        "RLIMIT_SIGPENDING" => libc::RLIMIT_SIGPENDING,
        "RLIMIT_MSGQUEUE" => libc::RLIMIT_MSGQUEUE,
        "RLIMIT_NICE" => libc::RLIMIT_NICE,
        "RLIMIT_RTPRIO" => libc::RLIMIT_RTPRIO,
        "RLIMIT_RTTIME" => libc::RLIMIT_RTTIME,
        _ => return None,
    })
}

pub fn setrlimit(kind: &str, soft: u64, hard: u64) -> Result<(), Failure> {
    let resource = rlimit_resource(kind)
        .ok_or_else(|| Failure::new(format!("unknown rlimit type {kind:?}")))?;
    let limit = libc::rlimit {
        rlim_cur: soft as libc::rlim_t,
        rlim_max: hard as libc::rlim_t,
    };
    // SAFETY: valid rlimit struct.
    let ret = unsafe { libc::setrlimit(resource, &limit) };
    check(ret)
        .map(drop)
        .map_err(|e| Failure::errno(format!("setrlimit {kind} (soft {soft}, hard {hard})"), e))
}

/// Marks every descriptor from `first` up close-on-exec, so nothing the helper inherited
/// reaches the workload (runc does the same).
pub fn cloexec_from(first: libc::c_uint) -> Result<(), Failure> {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: integer arguments only.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            libc::c_uint::MAX,
            CLOSE_RANGE_CLOEXEC,
        )
    };
    if ret == 0 {
        return Ok(());
    }
    // Older kernels (before 5.11): walk /proc/self/fd.
    let entries = std::fs::read_dir("/proc/self/fd").map_err(|e| {
        Failure::new(format!(
            "mark descriptors close-on-exec: close_range: {}; /proc/self/fd: {e}",
            describe(Errno::last())
        ))
    })?;
    let fds: Vec<libc::c_int> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    for fd in fds {
        if fd >= first as libc::c_int {
            // SAFETY: fcntl on a descriptor number; a stale one (the dir's own fd) gives EBADF.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
    }
    Ok(())
}

/// Default dispositions and an empty signal mask for the workload: Rust ignores SIGPIPE in
/// every program, and an ignored signal stays ignored across execve.
pub fn reset_signals() {
    for sig in 1..libc::SIGRTMAX() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: restoring the default disposition is always sound; invalid numbers (glibc's
        // internal real-time signals) just fail.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
    // SAFETY: an empty, initialised set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

pub fn setsid() {
    // SAFETY: no arguments; EPERM (already a session or group leader) is fine: LXC makes its
    // init a session leader already.
    unsafe { libc::setsid() };
}
