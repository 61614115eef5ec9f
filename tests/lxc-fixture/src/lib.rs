//! A real LXC container for the tests of ct-init-bin and lxc-config: its own lxcpath, state
//! dir (the helper installed, 0755 so a container's mapped root can read it) and log in a short
//! temp dir (the init socket's path must stay under 108 bytes), `lxc-start -F` run as the
//! test's child, and `lxc-stop -k` on drop, also when the test panics (then with LXC's log).

use std::fs;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use skip_harness::Outcome;

/// The static busybox every rootfs is made of.
pub const BUSYBOX: &str = "/bin/busybox";

/// Root, Debian's LXC tools and busybox-static; otherwise what is missing.
pub fn require_lxc() -> Outcome {
    skip_harness::require_root("LXC containers")?;
    for tool in ["lxc-start", "lxc-attach", "lxc-stop"] {
        skip_harness::require_tool(tool, "lxc")?;
    }
    skip_harness::require(
        Path::new(BUSYBOX).exists(),
        format!("{BUSYBOX} not found (install busybox-static)"),
    )
}

/// containerd's default capability list (what `ctr run` and CRI give a container: its
/// oci.defaultCapabilities).
pub const CONTAINERD_DEFAULT_CAPS: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// One container named `PREFIX-PID-N` (see the crate doc).
pub struct LxcContainer {
    pub name: String,
    dir: tempfile::TempDir,
    lxc_start: Option<Child>,
}

impl LxcContainer {
    /// Creates the lxcpath entry and the state dir with the helper in it; no config yet.
    pub fn new(prefix: &str) -> LxcContainer {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("{prefix}-{}-{n}", std::process::id());
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in("/tmp")
            .unwrap();
        let c = LxcContainer {
            name,
            dir,
            lxc_start: None,
        };
        fs::create_dir_all(c.lxcpath().join(&c.name)).unwrap();
        fs::create_dir_all(c.helper_dir()).unwrap();
        for dir in [c.state(), c.helper_dir()] {
            fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
        }
        ct_init_bin::install_helper(&c.helper_dir()).unwrap();
        c
    }

    /// The temp dir holding everything of this container.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
    pub fn lxcpath(&self) -> PathBuf {
        self.dir().join("lxc")
    }
    /// The state dir (what lxc-config's plan is given).
    pub fn state(&self) -> PathBuf {
        self.dir().join("s")
    }
    /// The helper's dir in it (`ctinit_proto::HELPER_DIR_NAME`): its binary, spec and init
    /// socket, mounted into the container.
    pub fn helper_dir(&self) -> PathBuf {
        self.state().join(ctinit_proto::HELPER_DIR_NAME)
    }
    pub fn config_path(&self) -> PathBuf {
        self.lxcpath().join(&self.name).join("config")
    }
    pub fn log(&self) -> PathBuf {
        self.dir().join("lxc.log")
    }
    pub fn log_text(&self) -> String {
        fs::read_to_string(self.log()).unwrap_or_default()
    }

    pub fn write_config(&self, config: &str) {
        fs::write(self.config_path(), config).unwrap();
    }

    /// Runs `lxc-start -F` (debug log in [`Self::log`]) as the test's child.
    pub fn lxc_start(&mut self) {
        let child = Command::new("lxc-start")
            .args(["-F", "-n", &self.name, "-P"])
            .arg(self.lxcpath())
            .arg("-o")
            .arg(self.log())
            .args(["-l", "DEBUG"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.lxc_start = Some(child);
    }

    /// The running `lxc-start -F`, if started and not yet seen to stop.
    pub fn lxc_start_child(&mut self) -> Option<&mut Child> {
        self.lxc_start.as_mut()
    }

    /// Waits for `lxc-start -F` to return (the container stopped); `None` if it was not
    /// running. Panics, with LXC's log, when it is still running after `timeout`.
    pub fn wait_stopped(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.lxc_start.as_mut()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.lxc_start = None;
                return Some(status);
            }
            if Instant::now() > deadline {
                panic!("container {} did not stop\n{}", self.name, self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the container if it still runs (`lxc-stop -k`, then its `lxc-start`).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.lxc_start.take() {
            let _ = Command::new("lxc-stop")
                .args(["-k", "-n", &self.name, "-P"])
                .arg(self.lxcpath())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for LxcContainer {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("--- LXC log of {} ---\n{}", self.name, self.log_text());
        }
    }
}

/// A root filesystem at `root`: the directories `dirs`, `/tmp` 1777, and busybox in `/bin`
/// with a link per applet. Users, groups and other files are the caller's.
pub fn busybox_rootfs(root: &Path, dirs: &[&str]) {
    for d in ["bin", "tmp"].iter().chain(dirs) {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::copy(BUSYBOX, root.join("bin/busybox")).unwrap();
    let list = Command::new(BUSYBOX).arg("--list").output().unwrap();
    for applet in String::from_utf8(list.stdout).unwrap().lines() {
        if applet != "busybox" {
            symlink("busybox", root.join("bin").join(applet)).unwrap();
        }
    }
}

/// A pipe whose ends are closed on exec: (read, write).
pub fn pipe() -> (OwnedFd, OwnedFd) {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap()
}

/// Reads until EOF (or EIO, a pty whose slave side is gone); panics with what it read when
/// there is no EOF within `timeout`.
pub fn read_to_eof(fd: &OwnedFd, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            panic!(
                "no EOF within {timeout:?}; read so far: {:?}",
                String::from_utf8_lossy(&out)
            );
        }
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        let ms = PollTimeout::try_from(left.as_millis().min(10_000) as i32).unwrap();
        if poll(&mut fds, ms).unwrap() == 0 {
            continue;
        }
        match nix::unistd::read(fd, &mut buf) {
            Ok(0) | Err(nix::errno::Errno::EIO) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => panic!("read: {e}"),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Root's subordinate ids `root:100000:65536` in /etc/subuid and /etc/subgid, which LXC's
/// newuidmap needs for a container with a user namespace (Proxmox's `unprivileged: 1`).
pub fn require_subids() -> Outcome {
    for f in ["/etc/subuid", "/etc/subgid"] {
        let text = fs::read_to_string(f).unwrap_or_default();
        skip_harness::require(
            text.lines().any(|l| l.trim() == "root:100000:65536"),
            format!("{f} lacks root:100000:65536 (scripts/setup.sh adds it)"),
        )?;
    }
    Ok(())
}
