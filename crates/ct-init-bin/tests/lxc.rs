//! The helper in real LXC containers (as root, on this machine): as the container's init
//! (`lxc.init.cmd`, PID 1) and as an exec through `lxc-attach`. The test plays the shim with
//! the host-side API and proves from the workload's own output what it got.

use std::fs;
use std::io::Write;
use std::ops::{Deref, DerefMut};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use ct_init_bin::{write_spec, HostError, InitConnection, InitListener, StdioFds};
use ctinit_proto::{CapabilitySets, ConsoleSize, InitSpec, Rlimit, StdioFlags};
use lxc_fixture::{busybox_rootfs, pipe, read_to_eof as read_all, require_lxc, LxcContainer};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use skip_harness::Outcome;

const T: Duration = Duration::from_secs(20);

/// The fixture's container with a plain-LXC config whose init is the helper (its rootfs in
/// the lxcpath, as `lxc-create` would put it).
struct Container(LxcContainer);

impl Deref for Container {
    type Target = LxcContainer;
    fn deref(&self) -> &LxcContainer {
        &self.0
    }
}

impl DerefMut for Container {
    fn deref_mut(&mut self) -> &mut LxcContainer {
        &mut self.0
    }
}

impl Container {
    fn new() -> Container {
        Container::with_config("")
    }

    /// `extra`: more LXC config lines.
    fn with_config(extra: &str) -> Container {
        let c = Container(LxcContainer::new("ctinit"));
        c.make_rootfs();
        c.configure(extra);
        c
    }

    fn rootfs(&self) -> PathBuf {
        self.lxcpath().join(&self.name).join("rootfs")
    }

    fn make_rootfs(&self) {
        let root = self.rootfs();
        busybox_rootfs(
            &root,
            &["etc", "dev", "proc", "sys", "root", "home/user", "work"],
        );
        fs::write(
            root.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\n",
        )
        .unwrap();
        fs::write(
            root.join("etc/group"),
            "root:x:0:\nwheel:x:10:\ndialout:x:20:\nuser:x:1000:\n",
        )
        .unwrap();
        // Only the user may enter its home: the helper's first chdir (as root) still works,
        // the user switch must keep it reachable.
        std::os::unix::fs::chown(root.join("home/user"), Some(1000), Some(1000)).unwrap();
        fs::set_permissions(root.join("home/user"), fs::Permissions::from_mode(0o700)).unwrap();
    }

    fn configure(&self, extra: &str) {
        self.write_config(&format!(
            "lxc.uts.name = {name}\n\
             lxc.rootfs.path = dir:{rootfs}\n\
             lxc.net.0.type = empty\n\
             lxc.apparmor.profile = unconfined\n\
             lxc.console.path = none\n\
             lxc.autodev = 1\n\
             lxc.pty.max = 8\n\
             lxc.mount.auto = proc:mixed sys:ro\n\
             lxc.mount.entry = {state} dev/.ctinit none bind,ro,create=dir 0 0\n\
             lxc.init.cmd = {init}\n\
             {extra}\n",
            name = self.name,
            rootfs = self.rootfs().display(),
            state = self.helper_dir().display(),
            init = ct_init_bin::init_command(),
        ));
    }

    /// Binds the init socket, writes the spec and runs `lxc-start -F` as our child.
    fn start(&mut self, spec: &InitSpec) -> InitListener {
        self.start_raw(&spec.to_json())
    }

    fn start_raw(&mut self, spec_json: &[u8]) -> InitListener {
        fs::write(
            self.helper_dir().join(ctinit_proto::INIT_SPEC_NAME),
            spec_json,
        )
        .unwrap();
        let listener =
            InitListener::bind(&self.helper_dir().join(ctinit_proto::INIT_SOCKET_NAME)).unwrap();
        self.lxc_start();
        listener
    }

    /// Runs `spec` as the init, stdio piped, until the container stopped: what it wrote to
    /// stdout.
    fn run_to_end(&mut self, spec: &InitSpec) -> String {
        let listener = self.start(spec);
        let conn = listener.accept(T).unwrap();
        let io = send_pipes(&conn, false);
        conn.wait_ready(T).unwrap();
        conn.start(T).unwrap();
        let out = read_all(&io.stdout, T);
        self.wait_stopped(T);
        out
    }

    /// Waits for `lxc-start -F` to return (the container stopped).
    fn wait_stopped(&mut self, timeout: Duration) -> ExitStatus {
        self.0.wait_stopped(timeout).expect("started")
    }

    /// `lxc-attach --clear-env -- HELPER SOCK SPEC` for an exec named `id`.
    fn attach(&self, id: &str, spec: &InitSpec, stdio: Stdio) -> (InitListener, Child) {
        let sock = format!("{id}.sock");
        let json = format!("{id}.json");
        write_spec(&self.helper_dir().join(&json), spec).unwrap();
        let listener = InitListener::bind(&self.helper_dir().join(&sock)).unwrap();
        let child = Command::new("lxc-attach")
            .args(["-n", &self.name, "-P"])
            .arg(self.lxcpath())
            .args(["--clear-env", "--"])
            .args(ct_init_bin::helper_command(&sock, &json))
            .stdin(stdio)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        (listener, child)
    }
}

/// Sends stdout/stderr pipes (and optionally a stdin pipe) and drives the protocol to exec.
struct Piped {
    stdin: Option<OwnedFd>,
    stdout: OwnedFd,
    stderr: OwnedFd,
}

fn send_pipes(conn: &InitConnection, with_stdin: bool) -> Piped {
    let (out_r, out_w) = pipe();
    let (err_r, err_w) = pipe();
    let (stdin_w, stdin_r) = if with_stdin {
        let (r, w) = pipe();
        (Some(w), Some(r))
    } else {
        (None, None)
    };
    conn.send_stdio(StdioFds {
        stdin: stdin_r,
        stdout: Some(out_w),
        stderr: Some(err_w),
    })
    .unwrap();
    Piped {
        stdin: stdin_w,
        stdout: out_r,
        stderr: err_r,
    }
}

fn base_spec(args: &[&str]) -> InitSpec {
    InitSpec {
        args: args.iter().map(|s| s.to_string()).collect(),
        env: vec!["PATH=/bin".into()],
        cwd: "/".into(),
        stdio: StdioFlags {
            stdin: false,
            stdout: true,
            stderr: true,
        },
        ..Default::default()
    }
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn cap_mask(list: &[&str]) -> String {
    const ORDER: [&str; 41] = ctinit_proto::CAPABILITY_NAMES;
    let mut bits = 0u64;
    for name in list {
        let n = ORDER.iter().position(|c| c == name).unwrap();
        bits |= 1 << n;
    }
    format!("{bits:016x}")
}

/// containerd's default capability list (what `ctr run` and CRI give a container).
const DEFAULT_CAPS: [&str; 14] = lxc_fixture::CONTAINERD_DEFAULT_CAPS;

/// Prints what the process got, one fact per line; `$0` is the first argument after the
/// script, as `sh -c` sets it.
const REPORT: &str = r#"printf 'arg=[%s]\n' "$0" "$@"
echo "pid=$$"
echo "cwd=$(pwd)"
echo "id=$(id)"
echo "umask=$(umask)"
grep -E '^(Cap|NoNewPrivs)' /proc/$$/status
echo "nofile=$(ulimit -n) $(ulimit -Hn)"
echo "oom=$(cat /proc/$$/oom_score_adj)"
tr '\0' '\n' < /proc/$$/environ | sed 's/^/env=/'
echo to-stderr >&2
"#;

fn lines_with<'a>(out: &'a str, prefix: &str) -> Vec<&'a str> {
    out.lines().filter_map(|l| l.strip_prefix(prefix)).collect()
}

fn field<'a>(out: &'a str, prefix: &str) -> &'a str {
    let found = lines_with(out, prefix);
    assert_eq!(found.len(), 1, "expected one {prefix:?} line in:\n{out}");
    found[0].trim()
}

fn init_as_root_gets_exact_argv_env_caps_and_is_pid_1() -> Outcome {
    require_lxc()?;
    let mut c = Container::new();
    let mut spec = base_spec(&[
        "sh",
        "-c",
        REPORT,
        "zero",
        "a b",
        "it's \"quoted\"",
        "two\nlines",
        "",
    ]);
    spec.env = names(&[
        "PATH=/bin",
        "HOME=/root",
        "TERM=xterm",
        "EMPTY=",
        "WITH_EQ=a=b",
    ]);
    spec.cwd = "/work".into();
    spec.capabilities = Some(CapabilitySets {
        bounding: names(&DEFAULT_CAPS),
        effective: names(&DEFAULT_CAPS),
        inheritable: vec![],
        permitted: names(&DEFAULT_CAPS),
        ambient: vec![],
    });
    spec.rlimits = vec![Rlimit {
        kind: "RLIMIT_NOFILE".into(),
        soft: 1000,
        hard: 2000,
    }];
    spec.oom_score_adj = Some(123);
    let listener = c.start(&spec);
    let conn = listener.accept(T).unwrap();
    let pid = conn.peer_pid().unwrap();
    let io = send_pipes(&conn, false);
    assert_eq!(conn.wait_ready(T).unwrap().map(|_| ()), None);
    conn.start(T).unwrap();
    let out = read_all(&io.stdout, T);
    let err = read_all(&io.stderr, T);
    c.wait_stopped(T);
    println!("{out}");

    assert!(
        out.starts_with("arg=[zero]\narg=[a b]\narg=[it's \"quoted\"]\narg=[two\nlines]\narg=[]\n"),
        "{out}"
    );
    assert_eq!(field(&out, "pid="), "1");
    assert!(pid > 1, "host pid of the init: {pid}");
    assert_eq!(field(&out, "cwd="), "/work");
    assert_eq!(field(&out, "id="), "uid=0(root) gid=0(root)");
    assert_eq!(field(&out, "umask="), "0022");
    assert_eq!(
        lines_with(&out, "env="),
        vec![
            "PATH=/bin",
            "HOME=/root",
            "TERM=xterm",
            "EMPTY=",
            "WITH_EQ=a=b"
        ]
    );
    let caps = cap_mask(&DEFAULT_CAPS);
    assert_eq!(field(&out, "CapBnd:"), caps);
    // Root without SECBIT_NOROOT gets permitted = effective = bounding at execve, as under runc.
    assert_eq!(field(&out, "CapPrm:"), caps);
    assert_eq!(field(&out, "CapEff:"), caps);
    assert_eq!(field(&out, "CapInh:"), "0000000000000000");
    assert_eq!(field(&out, "CapAmb:"), "0000000000000000");
    assert_eq!(field(&out, "NoNewPrivs:"), "0");
    assert_eq!(field(&out, "nofile="), "1000 2000");
    assert_eq!(field(&out, "oom="), "123");
    assert_eq!(err, "to-stderr\n");
    Ok(())
}

fn init_as_user_gets_groups_ambient_caps_umask_and_no_new_privs() -> Outcome {
    require_lxc()?;
    let mut c = Container::new();
    let mut spec = base_spec(&["/bin/sh", "-c", REPORT, "zero"]);
    // No HOME: runc adds it from /etc/passwd.
    spec.env = names(&["PATH=/bin"]);
    spec.cwd = "/home/user".into();
    spec.uid = 1000;
    spec.gid = 1000;
    spec.additional_gids = vec![10, 20];
    spec.umask = Some(0o077);
    spec.no_new_privileges = true;
    let net = ["CAP_NET_BIND_SERVICE"];
    spec.capabilities = Some(CapabilitySets {
        bounding: names(&["CAP_NET_BIND_SERVICE", "CAP_KILL", "CAP_CHOWN"]),
        effective: names(&net),
        inheritable: names(&net),
        permitted: names(&net),
        ambient: names(&net),
    });
    spec.rlimits = vec![Rlimit {
        kind: "RLIMIT_NOFILE".into(),
        soft: 512,
        hard: 4096,
    }];
    let out = c.run_to_end(&spec);
    println!("{out}");

    assert_eq!(field(&out, "pid="), "1");
    assert_eq!(field(&out, "cwd="), "/home/user");
    assert_eq!(
        field(&out, "id="),
        "uid=1000(user) gid=1000(user) groups=10(wheel),20(dialout)"
    );
    assert_eq!(field(&out, "umask="), "0077");
    assert_eq!(
        lines_with(&out, "env="),
        vec!["PATH=/bin", "HOME=/home/user"]
    );
    assert_eq!(
        field(&out, "CapBnd:"),
        cap_mask(&["CAP_NET_BIND_SERVICE", "CAP_KILL", "CAP_CHOWN"])
    );
    let net_mask = cap_mask(&net);
    assert_eq!(field(&out, "CapPrm:"), net_mask);
    assert_eq!(field(&out, "CapEff:"), net_mask);
    assert_eq!(field(&out, "CapInh:"), net_mask);
    assert_eq!(field(&out, "CapAmb:"), net_mask);
    assert_eq!(field(&out, "NoNewPrivs:"), "1");
    assert_eq!(field(&out, "nofile="), "512 4096");
    Ok(())
}

fn init_with_terminal_sends_pty_master_and_follows_resize() -> Outcome {
    require_lxc()?;
    terminal_init(Container::new());
    Ok(())
}

/// With LXC's own console (the Proxmox default): the init starts with the console pty as its
/// stdio (LXC 5 does not make it the controlling terminal); the new pty replaces it.
fn init_with_terminal_replaces_an_lxc_console() -> Outcome {
    require_lxc()?;
    terminal_init(Container::with_config(
        "lxc.console.path =\nlxc.console.logfile = /dev/null",
    ));
    Ok(())
}

fn terminal_init(mut c: Container) {
    let mut spec = base_spec(&[
        "sh",
        "-c",
        "echo pid=$$; echo tty=$(tty); echo size=$(stty size); read line; echo size=$(stty size); echo got=$line",
    ]);
    spec.terminal = true;
    spec.console_size = Some(ConsoleSize {
        height: 24,
        width: 80,
    });
    spec.stdio = StdioFlags::default();
    let listener = c.start(&spec);
    let conn = listener.accept(T).unwrap();
    conn.send_stdio(StdioFds::default()).unwrap();
    let master = conn.wait_ready(T).unwrap().expect("pty master");
    conn.start(T).unwrap();

    // Wait for the first size line before resizing, so the order is certain.
    let mut seen = String::new();
    let deadline = Instant::now() + T;
    while !seen.contains("size=24 80") {
        assert!(Instant::now() < deadline, "no size line in {seen:?}");
        let mut fds = [PollFd::new(master.as_fd(), PollFlags::POLLIN)];
        if poll(&mut fds, PollTimeout::from(1000u16)).unwrap() > 0 {
            let mut buf = [0u8; 1024];
            let n = nix::unistd::read(&master, &mut buf).unwrap();
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }
    let winsize = libc::winsize {
        ws_row: 30,
        ws_col: 100,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize struct.
    assert_eq!(
        unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &winsize) },
        0
    );
    fs::File::from(master.try_clone().unwrap())
        .write_all(b"hello\n")
        .unwrap();
    let rest = read_all(&master, T);
    let out = format!("{seen}{rest}").replace('\r', "");
    c.wait_stopped(T);
    println!("{out}");
    assert_eq!(field(&out, "pid="), "1");
    let tty = field(&out, "tty=");
    assert!(tty.starts_with("/dev/pts/"), "{tty}");
    assert_eq!(lines_with(&out, "size="), vec!["24 80", "30 100"]);
    assert_eq!(field(&out, "got="), "hello");
}

fn expect_helper_error(spec: InitSpec, expected: &str) {
    let mut c = Container::new();
    expect_helper_error_in(&mut c, spec, expected);
}

fn expect_helper_error_in(c: &mut Container, spec: InitSpec, expected: &str) {
    let listener = c.start(&spec);
    let conn = listener.accept(T).unwrap();
    let _io = send_pipes(&conn, false);
    match conn.wait_ready(T) {
        Err(HostError::Helper(text)) => assert_eq!(text, expected),
        other => panic!("expected a helper error, got {other:?}"),
    }
    // The helper exited, so the container stops by itself.
    c.wait_stopped(T);
}

fn init_missing_executable_is_an_error_naming_it() -> Outcome {
    require_lxc()?;
    expect_helper_error(
        base_spec(&["no-such-program", "x"]),
        "exec: \"no-such-program\": executable file not found in $PATH",
    );
    Ok(())
}

fn init_bad_cwd_is_an_error() -> Outcome {
    require_lxc()?;
    let mut spec = base_spec(&["true"]);
    spec.cwd = "/etc/passwd/sub".into();
    expect_helper_error(
        spec,
        "chdir to cwd (\"/etc/passwd/sub\") set in config.json failed: not a directory",
    );
    Ok(())
}

fn init_missing_cwd_is_created_like_runc_does() -> Outcome {
    require_lxc()?;
    let mut c = Container::new();
    let mut spec = base_spec(&["sh", "-c", "echo cwd=$(pwd); ls -ld . | cut -c1-10"]);
    spec.cwd = "/new/dir".into();
    spec.umask = Some(0o077);
    let out = c.run_to_end(&spec);
    assert_eq!(field(&out, "cwd="), "/new/dir");
    assert!(out.contains("drwxr-xr-x"), "{out}");
    Ok(())
}

fn exec_missing_cwd_is_an_error() -> Outcome {
    require_lxc()?;
    let (c, _init_io) = running_container();
    let mut spec = base_spec(&["true"]);
    spec.cwd = "/not/there".into();
    let (listener, mut attach) = c.attach("cwd", &spec, Stdio::null());
    let conn = listener.accept(T).unwrap();
    let _io = send_pipes(&conn, false);
    match conn.wait_ready(T) {
        Err(HostError::Helper(text)) => assert_eq!(
            text,
            "chdir to cwd (\"/not/there\") set in config.json failed: no such file or directory"
        ),
        other => panic!("expected a helper error, got {other:?}"),
    }
    assert_eq!(wait_child(&mut attach, T).code(), Some(1));
    Ok(())
}

fn init_unknown_capability_is_an_error() -> Outcome {
    require_lxc()?;
    let mut spec = base_spec(&["true"]);
    spec.capabilities = Some(CapabilitySets {
        bounding: names(&["CAP_KILL", "CAP_TELEPORT"]),
        ..Default::default()
    });
    expect_helper_error(spec, "unknown capability \"CAP_TELEPORT\"");
    Ok(())
}

fn init_eof_before_start_stops_the_container() -> Outcome {
    require_lxc()?;
    let mut c = Container::new();
    let listener = c.start(&base_spec(&["sleep", "1000"]));
    let conn = listener.accept(T).unwrap();
    let _io = send_pipes(&conn, false);
    conn.wait_ready(T).unwrap();
    drop(conn);
    let started = Instant::now();
    c.wait_stopped(T);
    assert!(started.elapsed() < Duration::from_secs(10));
    Ok(())
}

fn no_connection_times_out() -> Outcome {
    require_lxc()?;
    let dir = tempfile::tempdir().unwrap();
    let listener = InitListener::bind(&dir.path().join("x.sock")).unwrap();
    let started = Instant::now();
    match listener.accept(Duration::from_millis(300)) {
        Err(HostError::Timeout { .. }) => {}
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(started.elapsed() >= Duration::from_millis(300));
    let path = listener.path().to_path_buf();
    drop(listener);
    assert!(!path.exists(), "drop unlinks the socket");
    Ok(())
}

/// Starts a container whose init sleeps, for exec tests.
fn running_container() -> (Container, Piped) {
    let mut c = Container::new();
    let listener = c.start(&base_spec(&["sleep", "1000"]));
    let conn = listener.accept(T).unwrap();
    let io = send_pipes(&conn, false);
    conn.wait_ready(T).unwrap();
    conn.start(T).unwrap();
    (c, io)
}

fn wait_child(child: &mut Child, timeout: Duration) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "child did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn exec_through_lxc_attach_gets_its_own_process_and_stdio() -> Outcome {
    require_lxc()?;
    let (c, _init_io) = running_container();
    let mut spec = base_spec(&[
        "sh",
        "-c",
        "read line; echo got=$line; echo nspid=$$; echo cwd=$(pwd); echo id=$(id); \
         tr '\\0' '\\n' < /proc/$$/environ | sed 's/^/env=/'; echo err >&2; exit 7",
        "zero",
    ]);
    spec.env = names(&["PATH=/bin", "HOME=/home/user", "X=exec one"]);
    spec.cwd = "/tmp".into();
    spec.uid = 1000;
    spec.gid = 1000;
    spec.stdio.stdin = true;
    let (listener, mut attach) = c.attach("exec1", &spec, Stdio::null());
    let conn = listener.accept(T).unwrap();
    let host_pid = conn.peer_pid().unwrap();
    let io = send_pipes(&conn, true);
    conn.wait_ready(T).unwrap();
    conn.start(T).unwrap();
    // The workload waits for its stdin, so it is alive here: its host PID maps to its PID in
    // the container.
    let status_text = fs::read_to_string(format!("/proc/{host_pid}/status")).unwrap();
    let nspid_line = status_text
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .unwrap()
        .split_whitespace()
        .map(String::from)
        .collect::<Vec<_>>();
    fs::File::from(io.stdin.unwrap())
        .write_all(b"input\n")
        .unwrap();
    let out = read_all(&io.stdout, T);
    let err = read_all(&io.stderr, T);
    let status = wait_child(&mut attach, T);
    println!("{out}");
    assert_eq!(field(&out, "got="), "input");
    assert_eq!(field(&out, "cwd="), "/tmp");
    assert_eq!(field(&out, "id="), "uid=1000(user) gid=1000(user)");
    assert_eq!(
        lines_with(&out, "env="),
        vec!["PATH=/bin", "HOME=/home/user", "X=exec one"]
    );
    assert_eq!(err, "err\n");
    let nspid: i32 = field(&out, "nspid=").parse().unwrap();
    assert!(nspid > 1);
    assert_eq!(nspid_line, vec![host_pid.to_string(), nspid.to_string()]);
    // lxc-attach exits with the attached process's status.
    assert_eq!(status.code(), Some(7), "{status:?}");
    Ok(())
}

/// Starts an exec of `spec` through lxc-attach and drives it to `execve`; returns the
/// connection's host PID, the stdio pipes and the lxc-attach child.
fn start_exec(c: &Container, id: &str, spec: &InitSpec) -> (i32, Piped, Child) {
    let (listener, attach) = c.attach(id, spec, Stdio::null());
    let conn = listener.accept(T).unwrap();
    let host_pid = conn.peer_pid().unwrap();
    let io = send_pipes(&conn, spec.stdio.stdin);
    conn.wait_ready(T).unwrap();
    conn.start(T).unwrap();
    (host_pid, io, attach)
}

fn exec_gets_only_stdio_descriptors_and_its_own_session() -> Outcome {
    require_lxc()?;
    let (c, _init_io) = running_container();
    let (host_pid, _io, mut attach) = start_exec(&c, "fds", &base_spec(&["sleep", "1000"]));
    // Looked at from the host while the workload runs, so no shell of ours opens anything.
    let mut fds: Vec<i32> = fs::read_dir(format!("/proc/{host_pid}/fd"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_str().unwrap().parse().unwrap())
        .collect();
    fds.sort();
    let stat = fs::read_to_string(format!("/proc/{host_pid}/stat")).unwrap();
    let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
    let sid: i32 = after_comm.split(' ').nth(3).unwrap().parse().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(host_pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_child(&mut attach, T);
    // lxc-attach passes its own extra descriptors into the container; the helper marks
    // everything above 2 close-on-exec, as runc does.
    assert_eq!(fds, vec![0, 1, 2]);
    assert_eq!(sid, host_pid, "the exec leads its own session");
    Ok(())
}

fn exec_killed_by_host_pid_makes_lxc_attach_exit_128_plus_signal() -> Outcome {
    require_lxc()?;
    let (c, _init_io) = running_container();
    let spec = base_spec(&["sleep", "1000"]);
    let (host_pid, _io, mut attach) = start_exec(&c, "sig", &spec);
    let pid = nix::unistd::Pid::from_raw(host_pid);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = wait_child(&mut attach, T);
    assert_eq!(status.code(), Some(128 + libc::SIGTERM), "{status:?}");
    Ok(())
}

fn lxc_attach_does_not_forward_signals_to_the_exec() -> Outcome {
    require_lxc()?;
    let (c, _init_io) = running_container();
    let spec = base_spec(&["sleep", "1000"]);
    let (host_pid, _io, mut attach) = start_exec(&c, "fwd", &spec);
    let pid = nix::unistd::Pid::from_raw(host_pid);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(attach.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = wait_child(&mut attach, T);
    // lxc-attach itself died of the signal ...
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGTERM)
    );
    // ... and the exec'd process still runs: the shim must signal the host PID itself.
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        nix::sys::signal::kill(pid, None).is_ok(),
        "exec still alive"
    );
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    Ok(())
}

fn exec_with_terminal_through_lxc_attach() -> Outcome {
    require_lxc()?;
    let (c, _init_io) = running_container();
    let mut spec = base_spec(&["sh", "-c", "echo tty=$(tty); echo size=$(stty size)"]);
    spec.terminal = true;
    spec.console_size = Some(ConsoleSize {
        height: 40,
        width: 120,
    });
    spec.stdio = StdioFlags::default();
    let (listener, mut attach) = c.attach("tty", &spec, Stdio::null());
    let conn = listener.accept(T).unwrap();
    conn.send_stdio(StdioFds::default()).unwrap();
    let master = conn.wait_ready(T).unwrap().expect("pty master");
    conn.start(T).unwrap();
    let out = read_all(&master, T).replace('\r', "");
    assert!(wait_child(&mut attach, T).success());
    println!("{out}");
    assert!(field(&out, "tty=").starts_with("/dev/pts/"), "{out}");
    assert_eq!(field(&out, "size="), "40 120");
    Ok(())
}

fn init_rlimit_above_the_hard_limit_is_an_error() -> Outcome {
    require_lxc()?;
    // Root here lacks CAP_SYS_RESOURCE (hard nofile 20000): raising fails, as under runc.
    let mut spec = base_spec(&["true"]);
    spec.rlimits = vec![Rlimit {
        kind: "RLIMIT_NOFILE".into(),
        soft: 1 << 30,
        hard: 1 << 30,
    }];
    expect_helper_error(
        spec,
        "setrlimit RLIMIT_NOFILE (soft 1073741824, hard 1073741824): operation not permitted",
    );
    Ok(())
}

fn init_cwd_only_the_user_can_enter_is_entered_after_the_user_switch() -> Outcome {
    require_lxc()?;
    // Without DAC_OVERRIDE/DAC_READ_SEARCH (dropped by LXC) root cannot enter /home/user
    // (0700, owned by 1000): the first chdir fails with EACCES, the one after the switch works.
    // It also shows that capabilities LXC dropped already need no CAP_SETPCAP to "drop".
    let mut c = Container::with_config("lxc.cap.drop = dac_override dac_read_search sys_admin");
    let mut spec = base_spec(&["sh", "-c", "echo cwd=$(pwd); grep CapBnd /proc/$$/status"]);
    spec.cwd = "/home/user".into();
    spec.uid = 1000;
    spec.gid = 1000;
    let bounding = ["CAP_KILL", "CAP_CHOWN"];
    spec.capabilities = Some(CapabilitySets {
        bounding: names(&bounding),
        ..Default::default()
    });
    let out = c.run_to_end(&spec);
    assert_eq!(field(&out, "cwd="), "/home/user");
    assert_eq!(field(&out, "CapBnd:"), cap_mask(&bounding));

    // And as root in the same kind of container it fails with the chdir error.
    let mut c = Container::with_config("lxc.cap.drop = dac_override dac_read_search sys_admin");
    let mut spec = base_spec(&["true"]);
    spec.cwd = "/home/user".into();
    expect_helper_error_in(
        &mut c,
        spec,
        "chdir to cwd (\"/home/user\") set in config.json failed: permission denied",
    );
    Ok(())
}

fn init_unreadable_spec_is_reported() -> Outcome {
    require_lxc()?;
    let mut c = Container::new();
    let listener = c.start_raw(b"{not json");
    let conn = listener.accept(T).unwrap();
    match conn.wait_ready(T) {
        Err(HostError::Helper(text)) => assert!(
            text.starts_with("parse process spec /dev/.ctinit/init.json: "),
            "{text}"
        ),
        other => panic!("expected a helper error, got {other:?}"),
    }
    c.wait_stopped(T);
    Ok(())
}

/// Shifts the ownership of everything under `dir` by `offset` (for an idmapped container).
fn shift_ownership(dir: &Path, offset: u32) {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::symlink_metadata(dir).unwrap();
    std::os::unix::fs::lchown(dir, Some(meta.uid() + offset), Some(meta.gid() + offset)).unwrap();
    if meta.is_dir() {
        for entry in fs::read_dir(dir).unwrap() {
            shift_ownership(&entry.unwrap().path(), offset);
        }
    }
}

fn init_in_a_user_namespace_as_root_and_as_user() -> Outcome {
    require_lxc()?;
    // Proxmox's `unprivileged: 1`: container root is host uid 100000. LXC maps it with
    // newuidmap, which needs root's subordinate ids (scripts/setup.sh adds them).
    lxc_fixture::require_subids()?;
    let idmap = "lxc.idmap = u 0 100000 65536\nlxc.idmap = g 0 100000 65536";
    for (uid, expected_id) in [
        (0, "uid=0(root) gid=0(root) groups=10(wheel)"),
        (1000, "uid=1000(user) gid=1000(user) groups=10(wheel)"),
    ] {
        let mut c = Container::with_config(idmap);
        shift_ownership(&c.rootfs(), 100_000);
        fs::set_permissions(c.dir(), fs::Permissions::from_mode(0o755)).unwrap();
        let mut spec = base_spec(&["sh", "-c", REPORT, "zero"]);
        spec.uid = uid;
        spec.gid = uid;
        spec.additional_gids = vec![10];
        spec.cwd = if uid == 0 { "/root" } else { "/home/user" }.into();
        spec.capabilities = Some(CapabilitySets {
            bounding: names(&DEFAULT_CAPS),
            effective: names(&DEFAULT_CAPS),
            permitted: names(&DEFAULT_CAPS),
            ..Default::default()
        });
        let listener = c.start(&spec);
        let conn = listener.accept(T).unwrap();
        let host_pid = conn.peer_pid().unwrap();
        let io = send_pipes(&conn, false);
        conn.wait_ready(T).unwrap();
        // The host sees the helper as uid 100000 + uid.
        let status = fs::read_to_string(format!("/proc/{host_pid}/status")).unwrap();
        let host_uid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .to_string();
        conn.start(T).unwrap();
        let out = read_all(&io.stdout, T);
        c.wait_stopped(T);
        println!("{out}");
        assert_eq!(host_uid, (100_000 + uid).to_string());
        assert_eq!(field(&out, "pid="), "1");
        assert_eq!(field(&out, "id="), expected_id);
        let caps = cap_mask(&DEFAULT_CAPS);
        assert_eq!(field(&out, "CapBnd:"), caps);
        if uid == 0 {
            assert_eq!(field(&out, "CapEff:"), caps);
        } else {
            assert_eq!(field(&out, "CapEff:"), "0000000000000000");
        }
    }
    Ok(())
}

fn accept_stops_waiting_when_lxc_start_fails() -> Outcome {
    require_lxc()?;
    // A rootfs path that does not exist: lxc-start fails and the helper never connects.
    let mut c = Container::with_config("lxc.rootfs.path = dir:/nonexistent-ctinit-rootfs");
    let listener = c.start(&base_spec(&["true"]));
    let started = Instant::now();
    let child = c.lxc_start_child().unwrap();
    let result = listener.accept_while(Duration::from_secs(60), || {
        child.try_wait().map(|s| s.is_none()).unwrap_or(false)
    });
    match result {
        Err(HostError::Cancelled { .. }) => {}
        other => panic!("expected Cancelled, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    let log = c.log_text();
    assert!(log.contains("ERROR"), "{log}");
    Ok(())
}

skip_harness::main!(
    init_as_root_gets_exact_argv_env_caps_and_is_pid_1,
    init_as_user_gets_groups_ambient_caps_umask_and_no_new_privs,
    init_with_terminal_sends_pty_master_and_follows_resize,
    init_with_terminal_replaces_an_lxc_console,
    init_missing_executable_is_an_error_naming_it,
    init_bad_cwd_is_an_error,
    init_missing_cwd_is_created_like_runc_does,
    exec_missing_cwd_is_an_error,
    init_unknown_capability_is_an_error,
    init_eof_before_start_stops_the_container,
    no_connection_times_out,
    exec_through_lxc_attach_gets_its_own_process_and_stdio,
    exec_gets_only_stdio_descriptors_and_its_own_session,
    exec_killed_by_host_pid_makes_lxc_attach_exit_128_plus_signal,
    lxc_attach_does_not_forward_signals_to_the_exec,
    exec_with_terminal_through_lxc_attach,
    init_rlimit_above_the_hard_limit_is_an_error,
    init_cwd_only_the_user_can_enter_is_entered_after_the_user_switch,
    init_unreadable_spec_is_reported,
    init_in_a_user_namespace_as_root_and_as_user,
    accept_stops_waiting_when_lxc_start_fails,
);
