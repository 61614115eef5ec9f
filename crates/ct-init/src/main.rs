//! `containerd-shim-proxmox-lxc-init`: the static helper LXC runs as the container's init
//! (and `lxc-attach`, or its own `--attach` mode, runs for an exec). Usage: `HELPER SOCKET
//! SPEC_FILE`; the host-side modes are in `host`.
//!
//! It connects to the shim's socket, takes its stdio (or makes a pty), sets up the process the
//! way runc does (rlimits, oom_score_adj, umask, AppArmor profile on exec, no_new_privs,
//! bounding set, user and groups with capabilities kept across the switch, the exact
//! capability sets, cwd, env, PATH lookup), reports `Ready`, waits for `Start` and `execve`s the workload, which keeps this
//! PID (PID 1 for the init). It never forks, but for `--attach`, to enter a pid namespace. See `ctinit-proto` for the protocol.

mod apparmor;
mod caps;
mod host;
mod lookup;
mod sealed;
mod sys;

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::DirBuilderExt;

use ctinit_proto::transport::{self, ReceiveError};
use ctinit_proto::{InitSpec, Message};
use nix::errno::Errno;
use nix::sys::socket::{connect, socket, AddressFamily, MsgFlags, SockFlag, SockType, UnixAddr};

use crate::sys::Failure;

fn main() {
    let mut args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        // The host-side modes (see `host`): the shim runs them from its own copy.
        Some(ctinit_proto::DUMP_SECCOMP_ARG) => host::dump_seccomp_main(&args[2..]),
        Some(ctinit_proto::ATTACH_ARG) => match host::attach(&args[2..]) {
            // In the container now, from the sealed memfd the shim passed.
            Ok([socket, spec]) => args = vec![args[0].clone(), socket, spec],
            Err(failure) => {
                eprintln!("containerd-shim-proxmox-lxc-init: {failure}");
                std::process::exit(1);
            }
        },
        // First of all: never run from a file a container could write (see `sealed`).
        // Failing that (seccomp, no /proc), the read-only bind mount LXC ran the helper from
        // is the guard.
        _ => {
            let _ = sealed::reexec_sealed();
        }
    }
    if args.len() != 3 {
        eprintln!(
            "usage: {} SOCKET SPEC_FILE\n(the in-container helper of containerd-shim-proxmox-lxc-v2)",
            args.first().map(String::as_str).unwrap_or("init")
        );
        std::process::exit(2);
    }
    let sock = match Control::connect(&args[1]) {
        Ok(sock) => sock,
        Err(failure) => {
            // Nobody to tell but LXC's log (the init's stderr).
            eprintln!("containerd-shim-proxmox-lxc-init: {failure}");
            std::process::exit(1);
        }
    };
    match prepare(&sock, &args[2]) {
        Ok(prepared) => run(&sock, prepared),
        Err(failure) => {
            sock.send_error(&failure);
            std::process::exit(1);
        }
    }
}

/// Everything `execve` needs, resolved before `Ready`.
struct Prepared {
    path: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
}

fn prepare(sock: &Control, spec_path: &str) -> Result<Prepared, Failure> {
    let bytes = std::fs::read(spec_path)
        .map_err(|e| Failure::new(format!("read process spec {spec_path}: {e}")))?;
    let spec = InitSpec::from_json(&bytes)
        .map_err(|e| Failure::new(format!("parse process spec {spec_path}: {e}")))?;
    if spec.args.is_empty() {
        return Err(Failure::new("process spec: args must not be empty"));
    }

    // 1. stdio: the shim's descriptors, or a new pty whose master goes back in Ready.
    let fds = sock.recv_stdio(spec.stdio.count())?;
    let pty_master = if spec.terminal {
        if !fds.is_empty() {
            return Err(Failure::new(
                "stdio: descriptors sent although the spec asks for a terminal",
            ));
        }
        Some(setup_terminal(&spec)?)
    } else {
        install_stdio(&spec, fds)?;
        sys::setsid();
        None
    };

    // 2. The environment and argv, checked before anything irreversible.
    let mut env = lookup::build_env(&spec.env)?;
    let passwd = std::fs::read_to_string("/etc/passwd").ok();
    lookup::add_home(&mut env, spec.uid, passwd.as_deref());
    let envp = lookup::to_cstrings(&env)?;
    let argv = spec
        .args
        .iter()
        .map(|a| sys::cstring("argument", a))
        .collect::<Result<Vec<_>, _>>()?;
    let capabilities = match &spec.capabilities {
        Some(sets) => Some(caps::Masks::resolve(sets, sys::last_cap()).map_err(Failure::new)?),
        None => None,
    };

    // runc creates a missing cwd (root, 0755) for the container's init, not for an exec. The
    // init is the process whose spec has the init's file name. Best effort: if it cannot be
    // created (read-only rootfs), the chdir below reports the real problem.
    let is_init = std::path::Path::new(spec_path).file_name()
        == Some(std::ffi::OsStr::new(ctinit_proto::INIT_SPEC_NAME));
    if is_init && spec.cwd.starts_with('/') {
        let _ = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&spec.cwd);
    }

    // 3. What runc sets while still root: rlimits, oom_score_adj, umask, no_new_privs.
    for limit in &spec.rlimits {
        sys::setrlimit(&limit.kind, limit.soft, limit.hard)?;
    }
    if let Some(adj) = spec.oom_score_adj {
        set_oom_score_adj(adj)?;
    }
    if let Some(mask) = spec.umask {
        sys::umask(mask);
    }
    // The AppArmor profile takes hold at execve (runc: apparmor.ApplyProfile, before
    // no_new_privs and the user switch); nothing is written when the spec names none.
    if let Some(profile) = &spec.apparmor_profile {
        apparmor::apply_on_exec(profile)?;
    }
    if spec.no_new_privileges {
        sys::set_no_new_privs()?;
    }

    // 4. runc's finalizeNamespace: cwd (first try as root), bounding set, user with
    //    capabilities kept, cwd again, then the exact capability sets.
    let chdir_after_user_switch = match sys::chdir(&spec.cwd) {
        Ok(()) => false,
        Err(Errno::EACCES) | Err(Errno::EPERM) => true,
        Err(e) => return Err(chdir_failure(&spec.cwd, e)),
    };
    if let Some(masks) = &capabilities {
        masks
            .apply_bounding()
            .map_err(|f| f.context("unable to apply bounding set"))?;
    }
    sys::set_keepcaps(true).map_err(|f| f.context("unable to set keep caps"))?;
    setup_user(&spec).map_err(|f| f.context("unable to setup user"))?;
    if chdir_after_user_switch {
        sys::chdir(&spec.cwd).map_err(|e| chdir_failure(&spec.cwd, e))?;
    }
    sys::set_keepcaps(false).map_err(|f| f.context("unable to clear keep caps"))?;
    if let Some(masks) = &capabilities {
        masks
            .apply_sets()
            .map_err(|f| f.context("unable to apply caps"))?;
    }

    // 5. The executable, looked up as the workload's user with the workload's PATH.
    let path = lookup::look_path(&spec.args[0], lookup::get(&env, "PATH"))?;
    let path = sys::cstring("executable path", &path)?;

    // Nothing the helper inherited may reach the workload.
    sys::cloexec_from(3)?;
    sock.send(
        &Message::Ready,
        pty_master.as_ref().map(|fd| fd.as_raw_fd()),
    )?;
    drop(pty_master);
    Ok(Prepared { path, argv, envp })
}

/// Sets this process's `oom_score_adj`, unless it has that value already: an exec's helper
/// got it from its parent on the host (`host::attach`), and cannot write its own /proc files
/// as a user namespace's root while it is non-dumpable.
fn set_oom_score_adj(adj: i32) -> Result<(), Failure> {
    const FILE: &str = "/proc/self/oom_score_adj";
    let now = std::fs::read_to_string(FILE).unwrap_or_default();
    if now.trim() == adj.to_string() {
        return Ok(());
    }
    std::fs::write(FILE, adj.to_string())
        .map_err(|e| Failure::new(format!("set oom_score_adj to {adj}: {e}")))
}

fn chdir_failure(cwd: &str, errno: Errno) -> Failure {
    Failure::errno(
        format!("chdir to cwd ({cwd:?}) set in config.json failed"),
        errno,
    )
}

fn setup_user(spec: &InitSpec) -> Result<(), Failure> {
    // As runc: supplementary groups first (needs CAP_SETGID), then gid, then uid. A
    // setgroups denied by a user namespace ("deny" in /proc/self/setgroups) is skipped when
    // nothing was asked for.
    let setgroups_denied = std::fs::read_to_string("/proc/self/setgroups")
        .map(|s| s.trim() == "deny")
        .unwrap_or(false);
    if !setgroups_denied || !spec.additional_gids.is_empty() {
        sys::setgroups(&spec.additional_gids)?;
    }
    sys::setresgid(spec.gid)?;
    sys::setresuid(spec.uid)?;
    Ok(())
}

fn install_stdio(spec: &InitSpec, mut fds: Vec<OwnedFd>) -> Result<(), Failure> {
    let flags = [spec.stdio.stdin, spec.stdio.stdout, spec.stdio.stderr];
    let mut received = fds.drain(..);
    for (target, wanted) in flags.into_iter().enumerate() {
        let source = if wanted {
            let fd = received
                .next()
                .ok_or_else(|| Failure::new("stdio: fewer descriptors than the spec's flags"))?;
            // The descriptors are the workload's now: a nonblocking stdout (async runtimes
            // make their pipes so) breaks ordinary programs with EAGAIN.
            clear_nonblocking(&fd)?;
            fd
        } else {
            open_dev_null(target == 0)?
        };
        install_fd(source, &[target as RawFd])?;
    }
    Ok(())
}

fn clear_nonblocking(fd: &OwnedFd) -> Result<(), Failure> {
    // SAFETY: fcntl on a live descriptor.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 {
        return Err(Failure::errno("stdio: fcntl(F_GETFL)", Errno::last()));
    }
    if flags & libc::O_NONBLOCK != 0 {
        // SAFETY: as above.
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
            return Err(Failure::errno("stdio: fcntl(F_SETFL)", Errno::last()));
        }
    }
    Ok(())
}

fn open_dev_null(read: bool) -> Result<OwnedFd, Failure> {
    let flags = if read { libc::O_RDONLY } else { libc::O_WRONLY } | libc::O_CLOEXEC;
    // SAFETY: constant C string.
    let fd = unsafe { libc::open(c"/dev/null".as_ptr(), flags) };
    if fd < 0 {
        return Err(Failure::errno("open /dev/null", Errno::last()));
    }
    // SAFETY: fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Makes `source` appear at each of `targets` (inheritable across execve) and closes it,
/// unless it already sits at one of them (possible when the helper started with closed stdio).
fn install_fd(source: OwnedFd, targets: &[RawFd]) -> Result<(), Failure> {
    let raw = source.as_raw_fd();
    for &target in targets {
        if raw == target {
            // dup2 onto itself would keep CLOEXEC; clear it instead.
            // SAFETY: fcntl on a live descriptor.
            unsafe { libc::fcntl(target, libc::F_SETFD, 0) };
            continue;
        }
        // SAFETY: both descriptors are valid; dup2 replaces `target` atomically.
        if unsafe { libc::dup2(raw, target) } < 0 {
            return Err(Failure::errno(
                format!("dup2 onto fd {target}"),
                Errno::last(),
            ));
        }
    }
    if targets.contains(&raw) {
        // It is one of the targets now: keep it open.
        let _ = std::os::fd::IntoRawFd::into_raw_fd(source);
    }
    Ok(())
}

/// A new pty from the container's devpts: the slave becomes stdio and the controlling
/// terminal of a new session, the master goes to the shim.
fn setup_terminal(spec: &InitSpec) -> Result<OwnedFd, Failure> {
    // SAFETY: constant C string.
    let fd = unsafe {
        libc::open(
            c"/dev/ptmx".as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(Failure::errno("open /dev/ptmx", Errno::last()));
    }
    // SAFETY: fresh descriptor we own.
    let master = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK takes a pointer to int.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &mut unlock) } < 0 {
        return Err(Failure::errno("unlockpt", Errno::last()));
    }
    let mut number: libc::c_uint = 0;
    // SAFETY: TIOCGPTN writes an unsigned int.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTN, &mut number) } < 0 {
        return Err(Failure::errno("ptsname", Errno::last()));
    }
    if let Some(size) = spec.console_size {
        let winsize = libc::winsize {
            ws_row: size.height,
            ws_col: size.width,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads a winsize struct.
        if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &winsize) } < 0 {
            return Err(Failure::errno("set console size", Errno::last()));
        }
    }
    let slave_path = format!("/dev/pts/{number}");
    let c_path = sys::cstring("pty path", &slave_path)?;
    // SAFETY: valid C string.
    let fd = unsafe {
        libc::open(
            c_path.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(Failure::errno(format!("open {slave_path}"), Errno::last()));
    }
    // SAFETY: fresh descriptor we own.
    let slave = unsafe { OwnedFd::from_raw_fd(fd) };
    sys::setsid();
    install_fd(slave, &[0, 1, 2])?;
    // SAFETY: TIOCSCTTY with argument 0 (do not steal).
    if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } < 0 {
        return Err(Failure::errno("set controlling terminal", Errno::last()));
    }
    Ok(master)
}

fn run(sock: &Control, prepared: Prepared) -> ! {
    match sock.recv_message() {
        Ok(Some(Message::Start)) => {}
        // EOF: the shim gave up on this process.
        Ok(None) => std::process::exit(1),
        Ok(Some(other)) => {
            sock.send_error(&Failure::new(format!(
                "unexpected message {other:?} while waiting for start"
            )));
            std::process::exit(1);
        }
        Err(failure) => {
            sock.send_error(&failure);
            std::process::exit(1);
        }
    }
    sys::reset_signals();
    let mut argv: Vec<*const libc::c_char> = prepared.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = prepared.envp.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());
    // SAFETY: NUL-terminated arrays of valid C strings that outlive the call.
    unsafe { libc::execve(prepared.path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    let errno = Errno::last();
    sock.send_error(&Failure::errno(
        format!("exec {}", prepared.path.to_string_lossy()),
        errno,
    ));
    // As a shell reports it: 126 for a file that cannot be executed, 127 for a missing one.
    std::process::exit(if errno == Errno::ENOENT { 127 } else { 126 });
}

/// The helper's end of the control connection.
struct Control {
    fd: OwnedFd,
}

impl Control {
    fn connect(path: &str) -> Result<Control, Failure> {
        let fd = socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(|e| Failure::errno("socket", e))?;
        let addr = UnixAddr::new(path).map_err(|e| Failure::errno(format!("socket {path}"), e))?;
        connect(fd.as_raw_fd(), &addr).map_err(|e| Failure::errno(format!("connect {path}"), e))?;
        Ok(Control { fd })
    }

    fn send(&self, message: &Message, fd: Option<RawFd>) -> Result<(), Failure> {
        let fds: Vec<RawFd> = fd.into_iter().collect();
        ctinit_proto::transport::send(self.fd.as_fd(), message, &fds)
            .map_err(|e| Failure::errno("send to shim", e))
    }

    fn send_error(&self, failure: &Failure) {
        // Best effort: the shim may be gone already; then LXC's log is all that is left.
        if self.send(&Message::Error(failure.0.clone()), None).is_err() {
            eprintln!("containerd-shim-proxmox-lxc-init: {failure}");
        }
    }

    /// One message and the descriptors attached to it; `None` at EOF.
    fn recv(&self) -> Result<Option<(Message, Vec<OwnedFd>)>, Failure> {
        transport::receive(self.fd.as_fd(), MsgFlags::empty()).map_err(|e| match e {
            ReceiveError::Sys(e) => Failure::errno("receive from shim", e),
            ReceiveError::Truncated => Failure::new("receive from shim: message truncated"),
            ReceiveError::Decode(e) => Failure::new(e.to_string()),
        })
    }

    fn recv_message(&self) -> Result<Option<Message>, Failure> {
        Ok(self.recv()?.map(|(m, _)| m))
    }

    fn recv_stdio(&self, expected: usize) -> Result<Vec<OwnedFd>, Failure> {
        match self.recv()? {
            Some((Message::Stdio, fds)) => {
                if fds.len() != expected {
                    return Err(Failure::new(format!(
                        "stdio: got {} descriptors, the spec's flags ask for {expected}",
                        fds.len()
                    )));
                }
                Ok(fds)
            }
            Some((other, _)) => Err(Failure::new(format!(
                "unexpected message {other:?} while waiting for stdio"
            ))),
            None => Err(Failure::new(
                "shim closed the connection before sending stdio",
            )),
        }
    }
}
