//! The helper's host-side modes (`ctinit_proto::DUMP_SECCOMP_ARG`, `ATTACH_ARG`), which the
//! shim runs under both drivers once a container's init waits for Start (the shim's
//! `driver/attach.rs`): an exec gets into the container here, the way `lxc-attach` did
//! (LXC's attach.c, `attach_child_main`), but confined as runc confines an exec and without
//! LXC's monitor, which the plain driver lets go: non-dumpable and in the container's
//! cgroups first, then the init's namespaces, root of its user namespace without
//! supplementary groups, its execution domain and its seccomp filters. Capabilities, LSM
//! label, user and everything else of the exec are set up by the helper after this (its
//! `prepare`).

use std::io::Write;
use std::os::fd::RawFd;

use nix::errno::Errno;

use crate::sys::{self, Failure};

/// include/uapi/linux/ptrace.h; the libc crate does not name it for every target.
const PTRACE_SECCOMP_GET_FILTER: libc::c_uint = 0x420c;
/// include/uapi/linux/seccomp.h.
const SECCOMP_SET_MODE_FILTER: libc::c_ulong = 1;
/// include/uapi/linux/filter.h: the most instructions a classic BPF program may have.
const BPF_MAXINSNS: usize = 4096;
/// Bytes of one `struct sock_filter` in the dump.
const INSN_BYTES: usize = 8;

type Filter = Vec<libc::sock_filter>;

/// `--dump-seccomp PID FILE`: never returns. FILE must exist (the shim passes a memfd of its
/// own as `/proc/self/fd/N`): host root creates nothing where a container could have put a
/// link.
pub fn dump_seccomp_main(args: &[String]) -> ! {
    let result = (|| {
        let [pid, file] = args else {
            return Err(Failure::new("usage: --dump-seccomp PID FILE"));
        };
        let pid: libc::pid_t = pid
            .parse()
            .map_err(|_| Failure::new(format!("not a pid: {pid:?}")))?;
        let filters = read_filters(pid)?;
        std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(file)
            .and_then(|mut f| f.write_all(&encode(&filters)))
            .map_err(|e| Failure::new(format!("write the seccomp filters to {file}: {e}")))
    })();
    match result {
        Ok(()) => std::process::exit(0),
        Err(failure) => {
            eprintln!("{failure}");
            std::process::exit(1);
        }
    }
}

/// The seccomp filters `pid` runs under, oldest first. The kernel hands them out only to a
/// tracer that holds the process stopped (kernel/seccomp.c, `seccomp_get_filter`; ptrace.c
/// `ptrace_check_attach`), so the process is seized, interrupted and let go again; the
/// shim asks while the process is its helper waiting for Start, which notices nothing.
fn read_filters(pid: libc::pid_t) -> Result<Vec<Filter>, Failure> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| Failure::new(format!("read /proc/{pid}/status: {e}")))?;
    match status
        .lines()
        .find_map(|l| l.strip_prefix("Seccomp:"))
        .map(str::trim)
    {
        // A kernel without seccomp has no such line.
        None | Some("0") => return Ok(Vec::new()),
        Some("2") => {}
        Some(mode) => {
            return Err(Failure::new(format!(
                "process {pid} is in seccomp mode {mode}, not filter mode"
            )))
        }
    }
    let tracee = Tracee::seize_stopped(pid)?;
    let mut filters = Vec::new();
    for index in 0.. {
        let count = match tracee.get_filter(index, std::ptr::null_mut()) {
            Ok(n) => n,
            // Past the oldest filter.
            Err(Errno::ENOENT) => break,
            Err(e) => {
                return Err(Failure::errno(
                    format!("read seccomp filter {index} of process {pid}"),
                    e,
                ))
            }
        };
        let mut filter = vec![
            libc::sock_filter {
                code: 0,
                jt: 0,
                jf: 0,
                k: 0,
            };
            count
        ];
        let got = tracee
            .get_filter(index, filter.as_mut_ptr())
            .map_err(|e| Failure::errno(format!("read seccomp filter {index}"), e))?;
        filter.truncate(got);
        filters.push(filter);
    }
    // Index 0 is the oldest filter (kernel/seccomp.c, `get_nth_filter`).
    Ok(filters)
}

/// A process seized with ptrace and held in a stop; let go on drop.
struct Tracee(libc::pid_t);

impl Tracee {
    fn seize_stopped(pid: libc::pid_t) -> Result<Tracee, Failure> {
        // SAFETY: ptrace requests with integer arguments only.
        if unsafe { libc::ptrace(libc::PTRACE_SEIZE, pid, 0, 0) } < 0 {
            return Err(Failure::errno(
                format!("ptrace process {pid} to read its seccomp filters (kernel.yama.ptrace_scope 3 forbids it)"),
                Errno::last(),
            ));
        }
        let tracee = Tracee(pid);
        // SAFETY: as above.
        if unsafe { libc::ptrace(libc::PTRACE_INTERRUPT, pid, 0, 0) } < 0 {
            return Err(Failure::errno(
                format!("interrupt process {pid}"),
                Errno::last(),
            ));
        }
        loop {
            let mut status = 0;
            // SAFETY: waitpid writes an int we own.
            let ret = unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
            if ret < 0 {
                match Errno::last() {
                    Errno::EINTR => continue,
                    e => return Err(Failure::errno(format!("wait for process {pid}"), e)),
                }
            }
            if libc::WIFSTOPPED(status) {
                return Ok(tracee);
            }
            if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
                return Err(Failure::new(format!("process {pid} exited")));
            }
        }
    }

    /// PTRACE_SECCOMP_GET_FILTER: the number of instructions of filter `index`, copied to
    /// `into` unless it is null.
    fn get_filter(&self, index: usize, into: *mut libc::sock_filter) -> Result<usize, Errno> {
        // SAFETY: `into` is null or has room for the instruction count the kernel reported
        // for this filter just before (filters do not change while the process is stopped).
        let ret = unsafe { libc::ptrace(PTRACE_SECCOMP_GET_FILTER, self.0, index, into) };
        if ret < 0 {
            return Err(Errno::last());
        }
        Ok(ret as usize)
    }
}

impl Drop for Tracee {
    fn drop(&mut self) {
        // SAFETY: ptrace with integer arguments; the process goes on from its stop.
        unsafe { libc::ptrace(libc::PTRACE_DETACH, self.0, 0, 0) };
    }
}

fn encode(filters: &[Filter]) -> Vec<u8> {
    let mut out = Vec::new();
    for filter in filters {
        out.extend_from_slice(&(filter.len() as u32).to_ne_bytes());
        for insn in filter {
            out.extend_from_slice(&insn.code.to_ne_bytes());
            out.push(insn.jt);
            out.push(insn.jf);
            out.extend_from_slice(&insn.k.to_ne_bytes());
        }
    }
    out
}

fn decode(mut bytes: &[u8]) -> Result<Vec<Filter>, Failure> {
    let bad = || Failure::new("the seccomp filter file is damaged");
    let mut filters = Vec::new();
    while !bytes.is_empty() {
        let (count, rest) = bytes.split_first_chunk::<4>().ok_or_else(bad)?;
        let count = u32::from_ne_bytes(*count) as usize;
        if count == 0 || count > BPF_MAXINSNS || rest.len() < count * INSN_BYTES {
            return Err(bad());
        }
        let (body, rest) = rest.split_at(count * INSN_BYTES);
        let filter = body
            .chunks_exact(INSN_BYTES)
            .map(|i| libc::sock_filter {
                code: u16::from_ne_bytes([i[0], i[1]]),
                jt: i[2],
                jf: i[3],
                k: u32::from_ne_bytes([i[4], i[5], i[6], i[7]]),
            })
            .collect();
        filters.push(filter);
        bytes = rest;
    }
    Ok(filters)
}

/// `--attach NSFLAGS PIDFD PERSONALITY SECCOMP_FILE CGROUP_FDS SOCKET SPEC_FILE`. Returns only
/// in the child, inside the container, with the helper's own arguments (`SOCKET SPEC_FILE`);
/// the parent writes the child's pid and exits, so that the child becomes the shim's (a
/// subreaper's) own child.
///
/// The order is runc's for an exec (CVE-2016-9962): nothing of the container's may reach
/// this process before it is confined. It is made non-dumpable and joins the container's
/// cgroups before it enters any of its namespaces, so the child it forks there is born
/// inside the container's cgroups (device, pids and memory limits) and its /proc files stay
/// the host root's (not listable, not ptrace-able by the container's root) until the
/// workload's `execve` makes a new, ordinary image of it (fs/exec.c, `begin_new_exec`).
pub fn attach(args: &[String]) -> Result<[String; 2], Failure> {
    let [flags, pidfd, personality, seccomp, cgroup_fds, socket, spec] = args else {
        return Err(Failure::new(
            "usage: --attach NSFLAGS PIDFD PERSONALITY SECCOMP_FILE CGROUP_FDS SOCKET SPEC_FILE",
        ));
    };
    // A helper run by host root is dumpable as long as its credentials do not change (none
    // change without a user namespace): made non-dumpable before anything else.
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } < 0 {
        return Err(Failure::errno("prctl(PR_SET_DUMPABLE, 0)", Errno::last()));
    }
    join_cgroups(cgroup_fds)?;
    let personality: libc::c_ulong = personality
        .parse()
        .map_err(|_| Failure::new(format!("not a personality: {personality:?}")))?;
    let flags: libc::c_int = flags
        .parse()
        .map_err(|_| Failure::new(format!("not namespace flags: {flags:?}")))?;
    let pidfd: RawFd = pidfd
        .parse()
        .map_err(|_| Failure::new(format!("not a descriptor: {pidfd:?}")))?;
    // The host's root writes oom_score_adj here, where it owns its /proc files (after the
    // switch to a user namespace's root it would not); the child inherits it and the helper
    // leaves a value that is already right alone (main.rs, `set_oom_score_adj`).
    if let Some(adj) = read_spec(spec)?.oom_score_adj {
        crate::set_oom_score_adj(adj)?;
    }
    // Read on the host, before the container's mount namespace hides the file.
    let filters = std::fs::read(seccomp)
        .map_err(|e| Failure::new(format!("read {seccomp}: {e}")))
        .and_then(|bytes| decode(&bytes))?;
    // One call joins them all, the user namespace first (kernel/nsproxy.c, Linux >= 5.8).
    // SAFETY: setns on a descriptor the shim passed; the result is checked.
    if unsafe { libc::setns(pidfd, flags) } < 0 {
        return Err(Failure::errno(
            "join the container's namespaces",
            Errno::last(),
        ));
    }
    // SAFETY: closing the pidfd this process owns.
    unsafe { libc::close(pidfd) };
    if flags & libc::CLONE_NEWUSER != 0 {
        // As lxc-attach: no supplementary groups of the host's (a namespace that denies
        // setgroups keeps them, EPERM), then the container's root.
        // SAFETY: an empty list.
        if unsafe { libc::setgroups(0, std::ptr::null()) } < 0 && Errno::last() != Errno::EPERM {
            return Err(Failure::errno("setgroups", Errno::last()));
        }
        sys::setresgid(0)?;
        sys::setresuid(0)?;
    }
    // Still non-dumpable, and so is the child (the flag belongs to the memory image, which
    // fork copies): the helper's own /proc/self files stay reachable to it all the same
    // (fs/proc/fd.c, `proc_fd_permission`, lets a process at its own descriptors; its
    // AppArmor attributes are mode 0666 and only ever its own), and it needs no other.
    // SAFETY: single-threaded; the child only goes on with ordinary code.
    match unsafe { libc::fork() } {
        -1 => Err(match Errno::last() {
            // kernel/pid.c: a fork in a cgroup at its pids.max (or over RLIMIT_NPROC).
            Errno::EAGAIN => Failure::errno(
                "fork into the container's pid namespace (the container is at its pids limit)",
                Errno::EAGAIN,
            ),
            errno => Failure::errno("fork into the container's pid namespace", errno),
        }),
        0 => {
            // The init's execution domain (`linux.personality`, LXC's `lxc.arch`), as runc
            // gives an exec the spec's; before the filters, which may refuse the call.
            // SAFETY: personality with an integer argument only.
            if unsafe { libc::personality(personality) } < 0 {
                return Err(Failure::errno("personality", Errno::last()));
            }
            for filter in &filters {
                load_filter(filter)?;
            }
            Ok([socket.clone(), spec.clone()])
        }
        child => {
            let mut out = std::io::stdout().lock();
            let status = match writeln!(out, "{child}").and_then(|()| out.flush()) {
                Ok(()) => 0,
                Err(_) => 1,
            };
            std::process::exit(status)
        }
    }
}

/// Writes "0" to each `cgroup.procs` descriptor of `fds` ("3,4,..."), which moves this
/// process into that cgroup (kernel/cgroup/cgroup.c, `cgroup_procs_write_start`: pid 0 is
/// the writer); the descriptors are closed after.
fn join_cgroups(fds: &str) -> Result<(), Failure> {
    use std::os::fd::FromRawFd;
    for fd in fds.split(',') {
        let raw: RawFd = fd
            .parse()
            .map_err(|_| Failure::new(format!("not a descriptor: {fd:?} (of {fds:?})")))?;
        // SAFETY: the shim passed this descriptor for this process to own; it is used
        // here only, once.
        let mut procs = unsafe { std::fs::File::from_raw_fd(raw) };
        procs.write_all(b"0").map_err(|e| {
            Failure::new(format!(
                "join the container's cgroup (cgroup.procs, descriptor {raw}): {e}"
            ))
        })?;
    }
    Ok(())
}

fn read_spec(path: &str) -> Result<ctinit_proto::InitSpec, Failure> {
    let bytes =
        std::fs::read(path).map_err(|e| Failure::new(format!("read process spec {path}: {e}")))?;
    ctinit_proto::InitSpec::from_json(&bytes)
        .map_err(|e| Failure::new(format!("parse process spec {path}: {e}")))
}

/// Installs one filter. Needs no `no_new_privs`: the process holds CAP_SYS_ADMIN in its
/// (the container's) user namespace, as `lxc-attach`'s did.
fn load_filter(filter: &Filter) -> Result<(), Failure> {
    let prog = libc::sock_fprog {
        len: filter.len() as libc::c_ushort,
        filter: filter.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: seccomp reads the program, which outlives the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            SECCOMP_SET_MODE_FILTER,
            0 as libc::c_ulong,
            &prog as *const libc::sock_fprog,
        )
    };
    if ret < 0 {
        return Err(Failure::errno(
            "load the container's seccomp filter",
            Errno::last(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dumps_read_back_and_damage_is_refused() {
        let insn = |code, k| libc::sock_filter {
            code,
            jt: 1,
            jf: 2,
            k,
        };
        let filters = vec![vec![insn(0x20, 4), insn(6, 0x7fff_0000)], vec![insn(6, 0)]];
        let bytes = encode(&filters);
        let back = decode(&bytes).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].len(), 2);
        assert_eq!((back[0][1].code, back[0][1].k), (6, 0x7fff_0000));
        assert_eq!((back[0][0].jt, back[0][0].jf), (1, 2));
        assert!(decode(&[]).unwrap().is_empty());
        assert!(decode(&bytes[..bytes.len() - 1]).is_err());
        assert!(decode(&0u32.to_ne_bytes()).is_err());
    }

    /// The filters of a process, read back in the order it installed them (root: ptrace).
    #[test]
    #[ignore = "needs root: reading another process's seccomp filters (ptrace, CAP_SYS_ADMIN)"]
    fn reads_the_filters_a_process_runs_under() {
        use std::os::unix::process::CommandExt;
        // SAFETY: geteuid has no preconditions.
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "needs root: scripts/test.sh runs the ignored tests as root (--include-ignored)"
        );
        const ALLOW: u32 = 0x7fff_0000;
        let ret_allow = libc::sock_filter {
            code: 0x06,
            jt: 0,
            jf: 0,
            k: ALLOW,
        };
        let load_nr = libc::sock_filter {
            code: 0x20,
            jt: 0,
            jf: 0,
            k: 0,
        };
        let first: Filter = vec![ret_allow];
        let second: Filter = vec![load_nr, ret_allow];
        let installed = [first.clone(), second.clone()];
        let mut cmd = std::process::Command::new("sleep");
        cmd.arg("30");
        // SAFETY: prctl and seccomp only, on memory prepared before the fork.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                for f in &installed {
                    let prog = libc::sock_fprog {
                        len: f.len() as libc::c_ushort,
                        filter: f.as_ptr() as *mut libc::sock_filter,
                    };
                    if libc::syscall(libc::SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().unwrap();
        let got = read_filters(child.id() as libc::pid_t);
        // The process was let go: it still runs and ends on a signal as usual.
        child.kill().unwrap();
        let status = child.wait().unwrap();
        let got = got.unwrap();
        let shape = |fs: &[Filter]| -> Vec<Vec<(u16, u32)>> {
            fs.iter()
                .map(|f| f.iter().map(|i| (i.code, i.k)).collect())
                .collect()
        };
        assert_eq!(shape(&got), shape(&[first, second]));
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL)
        );
    }
}
