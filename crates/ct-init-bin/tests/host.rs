//! The helper run directly on the host as a child of the test (not in a container): the
//! protocol, stdio, argv, env, cwd, user and error paths, without LXC.

use std::io::Read;
use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};
use std::time::Duration;

use ct_init_bin::{install_helper, write_spec, HostError, InitListener, StdioFds};
use ctinit_proto::InitSpec;

const T: Duration = Duration::from_secs(10);

struct Outcome {
    ready: Result<Option<OwnedFd>, HostError>,
    started: Option<Result<(), HostError>>,
    stdout: String,
    stderr: String,
    status: std::process::ExitStatus,
    peer_pid: i32,
    child_pid: u32,
}

fn run(spec: &InitSpec) -> Outcome {
    run_with(spec, false, false)
}

/// `closed_stdio`: start the helper with fds 0-2 closed; `nonblocking`: send O_NONBLOCK pipes.
fn run_with(spec: &InitSpec, closed_stdio: bool, nonblocking: bool) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let helper = install_helper(dir.path()).unwrap();
    let spec_path = dir.path().join("p.json");
    write_spec(&spec_path, spec).unwrap();
    let listener = InitListener::bind(&dir.path().join("p.sock")).unwrap();
    let mut cmd = Command::new(&helper);
    cmd.arg(listener.path())
        .arg(&spec_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if closed_stdio {
        use std::os::unix::process::CommandExt;
        // SAFETY: only async-signal-safe close() calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                for fd in 0..3 {
                    libc::close(fd);
                }
                Ok(())
            });
        }
    }
    let mut child = cmd.spawn().unwrap();
    let conn = listener.accept(T).unwrap();
    let peer_pid = conn.peer_pid().unwrap();
    let mut flags = nix::fcntl::OFlag::O_CLOEXEC;
    if nonblocking {
        flags |= nix::fcntl::OFlag::O_NONBLOCK;
    }
    let (out_r, out_w) = nix::unistd::pipe2(flags).unwrap();
    let (err_r, err_w) = nix::unistd::pipe2(flags).unwrap();
    if nonblocking {
        // Only the workload's ends should matter; our read ends block for read_to_string.
        nix::fcntl::fcntl(
            &out_r,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()),
        )
        .unwrap();
        nix::fcntl::fcntl(
            &err_r,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()),
        )
        .unwrap();
    }
    conn.send_stdio(StdioFds {
        stdin: None,
        stdout: Some(out_w),
        stderr: Some(err_w),
    })
    .unwrap();
    let ready = conn.wait_ready(T);
    let started = ready.is_ok().then(|| conn.start(T));
    drop(conn);
    let mut stdout = String::new();
    std::fs::File::from(out_r)
        .read_to_string(&mut stdout)
        .unwrap();
    let mut stderr = String::new();
    std::fs::File::from(err_r)
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    Outcome {
        ready,
        started,
        stdout,
        stderr,
        status,
        peer_pid,
        child_pid: child.id(),
    }
}

fn spec(args: &[&str]) -> InitSpec {
    InitSpec {
        args: args.iter().map(|s| s.to_string()).collect(),
        env: vec!["PATH=/usr/bin:/bin".into(), "HOME=/root".into()],
        cwd: "/".into(),
        stdio: ctinit_proto::StdioFlags {
            stdin: false,
            stdout: true,
            stderr: true,
        },
        ..Default::default()
    }
}

#[test]
fn runs_argv_env_and_cwd_exactly() {
    let mut s = spec(&[
        "sh",
        "-c",
        "printf '%s|' \"$@\"; echo; env; pwd",
        "x",
        "a b",
        "'q\"",
        "l1\nl2",
    ]);
    s.env.push("A=1".into());
    s.cwd = "/tmp".into();
    let o = run(&s);
    o.ready.unwrap();
    o.started.unwrap().unwrap();
    assert!(o.status.success(), "{:?} {}", o.status, o.stderr);
    assert_eq!(o.peer_pid as u32, o.child_pid);
    let mut lines = o.stdout.lines();
    assert_eq!(lines.next().unwrap(), "a b|'q\"|l1");
    assert_eq!(lines.next().unwrap(), "l2|");
    let mut env: Vec<&str> = lines.by_ref().take_while(|l| *l != "/tmp").collect();
    env.sort();
    // sh adds PWD and SHLVL of its own; everything else is exactly the spec's.
    env.retain(|l| !l.starts_with("PWD=") && !l.starts_with("SHLVL=") && !l.starts_with("_="));
    assert_eq!(env, vec!["A=1", "HOME=/root", "PATH=/usr/bin:/bin"]);
}

#[test]
fn missing_executable_is_reported_like_runc() {
    let o = run(&spec(&["no-such-binary-xyz"]));
    match o.ready {
        Err(HostError::Helper(text)) => assert_eq!(
            text,
            "exec: \"no-such-binary-xyz\": executable file not found in $PATH"
        ),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn bad_cwd_is_reported() {
    let mut s = spec(&["true"]);
    s.cwd = "/no/such/dir".into();
    let o = run(&s);
    match o.ready {
        Err(HostError::Helper(text)) => assert_eq!(
            text,
            "chdir to cwd (\"/no/such/dir\") set in config.json failed: no such file or directory"
        ),
        other => panic!("unexpected {other:?}"),
    }
}

/// runc refuses a profile it cannot apply; so does the helper, naming the profile and why:
/// not loaded where AppArmor is on, AppArmor off otherwise (as on a host without it).
#[test]
fn unapplicable_apparmor_profile_fails_naming_it() {
    let mut s = spec(&["true"]);
    s.apparmor_profile = Some("ct-init-test-no-such-profile".into());
    let o = run(&s);
    let apparmor_on = std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .is_ok_and(|f| f.starts_with('Y'));
    let why = if apparmor_on {
        "is not loaded on the host"
    } else {
        "AppArmor is not enabled on this host"
    };
    match o.ready {
        Err(HostError::Helper(text)) => {
            assert!(
                text.starts_with(
                    "apparmor profile \"ct-init-test-no-such-profile\" (process.apparmorProfile)"
                ),
                "{text}"
            );
            assert!(text.contains(why), "{text}");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn works_when_started_with_closed_stdio() {
    let o = run_with(
        &spec(&["sh", "-c", "echo out; echo err >&2; ls /proc/$$/fd | wc -l"]),
        true,
        false,
    );
    o.ready.unwrap();
    o.started.unwrap().unwrap();
    assert!(o.status.success(), "{:?} {}", o.status, o.stderr);
    assert_eq!(o.stderr, "err\n");
    assert!(o.stdout.starts_with("out\n"), "{}", o.stdout);
}

#[test]
fn stdio_given_nonblocking_reaches_the_workload_blocking() {
    let o = run_with(
        &spec(&["sh", "-c", "grep ^flags: /proc/$$/fdinfo/1"]),
        false,
        true,
    );
    o.ready.unwrap();
    o.started.unwrap().unwrap();
    let flags = o.stdout.trim().strip_prefix("flags:").unwrap().trim();
    let flags = u32::from_str_radix(flags, 8).unwrap();
    assert_eq!(flags & libc::O_NONBLOCK as u32, 0, "{}", o.stdout);
}
