//! The in-container helper `containerd-shim-proxmox-lxc-init`, built static and embedded
//! ([`HELPER`], [`install_helper`]), and the host (shim) side of its control protocol
//! ([`InitListener`], [`InitConnection`]). The protocol itself is described in `ctinit-proto`.
//!
//! Everything here blocks; an async caller wraps it in `spawn_blocking`. Every wait has a
//! timeout, because a helper that never connects (the container failed to start) or never
//! answers must not hang the shim.

use std::ffi::OsString;
use std::fs;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ctinit_proto::transport::{self, ReceiveError};
use ctinit_proto::{InitSpec, Message};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{
    accept4, bind, getsockopt, listen, socket, sockopt, AddressFamily, Backlog, MsgFlags, SockFlag,
    SockType, UnixAddr,
};

pub use ctinit_proto;

/// The static helper binary (x86_64 static-pie on the gnu target), built by build.rs.
pub static HELPER: &[u8] = include_bytes!(env!("CTINIT_HELPER_PATH"));

/// A hash of [`HELPER`] computed at build time: names one helper build.
pub const HELPER_ID: &str = env!("CTINIT_HELPER_ID");

/// Errors of the host side of the protocol.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// A system call failed.
    #[error("{what}: {source}")]
    Sys {
        what: String,
        #[source]
        source: Errno,
    },
    /// Nothing happened in time: the helper never connected, or never answered.
    #[error("timed out after {after:?} waiting for {waiting_for}")]
    Timeout {
        waiting_for: &'static str,
        after: Duration,
    },
    /// The caller's `keep_waiting` check said to stop (e.g. lxc-start exited).
    #[error("stopped waiting for {waiting_for}: the container process is gone")]
    Cancelled { waiting_for: &'static str },
    /// The helper reported a failure (`Message::Error`), e.g.
    /// `exec: "nope": executable file not found in $PATH`.
    #[error("{0}")]
    Helper(String),
    /// The helper closed the connection (exited) before it said why.
    #[error("the helper closed the connection while the shim waited for {0}")]
    Closed(&'static str),
    /// The helper sent something the protocol does not allow here.
    #[error("control protocol violation: {0}")]
    Protocol(String),
    /// Filesystem work around the socket.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
}

fn sys(what: impl Into<String>) -> impl FnOnce(Errno) -> HostError {
    let what = what.into();
    move |source| HostError::Sys { what, source }
}

/// Writes the helper to `state_dir/init` (mode 0755), atomically: a running container keeps
/// the old file if one is replaced.
pub fn install_helper(state_dir: &Path) -> io::Result<PathBuf> {
    let path = state_dir.join(ctinit_proto::HELPER_NAME);
    write_atomically(&path, HELPER, 0o755)?;
    Ok(path)
}

/// Writes a process spec (`init.json`, or an exec's) atomically, mode 0644: the helper may
/// read it as a user-namespaced root that is not the file's owner.
pub fn write_spec(path: &Path, spec: &InitSpec) -> io::Result<()> {
    write_atomically(path, &spec.to_json(), 0o644)
}

fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let mut tmp_name = OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(bytes)?;
        // The mode given to open is filtered by the umask; set it exactly.
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// The listening `SOCK_SEQPACKET` socket one helper connects to. Drop unlinks the file.
#[derive(Debug)]
pub struct InitListener {
    fd: OwnedFd,
    path: PathBuf,
}

impl InitListener {
    /// Listens at `path` (its parent directory must exist). A stale socket file there is
    /// replaced. The file is mode 0666 so a helper running as a user-namespaced root can
    /// connect.
    pub fn bind(path: &Path) -> Result<Self, HostError> {
        match fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_socket() => {
                fs::remove_file(path).map_err(|source| HostError::Io {
                    what: format!("remove stale socket {}", path.display()),
                    source,
                })?
            }
            _ => {}
        }
        let fd = socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(sys("socket"))?;
        let addr = UnixAddr::new(path).map_err(sys(format!("socket path {}", path.display())))?;
        bind(fd.as_raw_fd(), &addr).map_err(sys(format!("bind {}", path.display())))?;
        let listener = InitListener {
            fd,
            path: path.to_path_buf(),
        };
        fs::set_permissions(path, fs::Permissions::from_mode(0o666)).map_err(|source| {
            HostError::Io {
                what: format!("chmod {}", path.display()),
                source,
            }
        })?;
        listen(
            &listener.fd,
            Backlog::new(4).map_err(sys("listen backlog"))?,
        )
        .map_err(sys(format!("listen {}", path.display())))?;
        Ok(listener)
    }

    /// Waits for the helper to connect.
    pub fn accept(&self, timeout: Duration) -> Result<InitConnection, HostError> {
        self.accept_while(timeout, || true)
    }

    /// Waits for the helper to connect while `keep_waiting()` says so (asked about every
    /// 50 ms), e.g. while `lxc-start` or `lxc-attach` still runs: a container that fails to
    /// start then ends the wait at once with [`HostError::Cancelled`] instead of a timeout.
    pub fn accept_while(
        &self,
        timeout: Duration,
        mut keep_waiting: impl FnMut() -> bool,
    ) -> Result<InitConnection, HostError> {
        const WAITING_FOR: &str = "the helper to connect";
        const SLICE: Duration = Duration::from_millis(50);
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match wait_readable(self.fd.as_fd(), left.min(SLICE), WAITING_FOR) {
                Ok(()) => break,
                Err(HostError::Timeout { .. }) if !left.is_zero() && left > SLICE => {
                    if !keep_waiting() {
                        return Err(HostError::Cancelled {
                            waiting_for: WAITING_FOR,
                        });
                    }
                }
                Err(HostError::Timeout { .. }) => {
                    return Err(HostError::Timeout {
                        waiting_for: WAITING_FOR,
                        after: timeout,
                    })
                }
                Err(e) => return Err(e),
            }
        }
        loop {
            match accept4(self.fd.as_raw_fd(), SockFlag::SOCK_CLOEXEC) {
                // SAFETY: accept4 returned a fresh descriptor that nothing else owns.
                Ok(raw) => {
                    return Ok(InitConnection {
                        fd: unsafe { OwnedFd::from_raw_fd(raw) },
                    })
                }
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(sys(format!("accept on {}", self.path.display()))(e)),
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for InitListener {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

impl AsFd for InitListener {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// The stdio the workload gets; `None` becomes `/dev/null` inside the container. Which ones
/// are sent must match the spec's `stdio` flags (the helper checks the count).
#[derive(Debug, Default)]
pub struct StdioFds {
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

/// One helper's control connection.
#[derive(Debug)]
pub struct InitConnection {
    fd: OwnedFd,
}

impl InitConnection {
    /// The helper's PID as the shim sees it (`SO_PEERCRED`, translated into the shim's PID
    /// namespace, so the host PID). The helper `execve`s, so this is the workload's PID.
    pub fn peer_pid(&self) -> Result<i32, HostError> {
        let cred = getsockopt(&self.fd, sockopt::PeerCredentials).map_err(sys("SO_PEERCRED"))?;
        Ok(cred.pid())
    }

    /// Step 1: the stdio descriptors, in the order stdin, stdout, stderr. Always sent, also
    /// for a terminal (then with no descriptors). The descriptors are closed here after
    /// sending; the helper holds its own copies.
    pub fn send_stdio(&self, fds: StdioFds) -> Result<(), HostError> {
        let raw: Vec<RawFd> = [&fds.stdin, &fds.stdout, &fds.stderr]
            .into_iter()
            .flatten()
            .map(|fd| fd.as_raw_fd())
            .collect();
        self.send(&Message::Stdio, &raw)
    }

    /// Step 2: waits until the helper has prepared everything up to `execve`. Returns the pty
    /// master when the spec asked for a terminal.
    pub fn wait_ready(&self, timeout: Duration) -> Result<Option<OwnedFd>, HostError> {
        match self.recv(timeout, "the helper to get ready")? {
            Some((Message::Ready, mut fds)) => {
                if fds.len() > 1 {
                    return Err(HostError::Protocol(format!(
                        "Ready carried {} descriptors, at most 1 (the pty master) expected",
                        fds.len()
                    )));
                }
                Ok(fds.pop())
            }
            Some((Message::Error(text), _)) => Err(HostError::Helper(text)),
            Some((other, _)) => Err(HostError::Protocol(format!(
                "expected Ready, got {other:?}"
            ))),
            None => Err(HostError::Closed("Ready")),
        }
    }

    /// Steps 3 and 4: tells the helper to `execve`, and waits for the outcome: EOF (the
    /// socket is close-on-exec) means the workload runs; an Error message means exec failed.
    pub fn start(&self, timeout: Duration) -> Result<(), HostError> {
        self.send(&Message::Start, &[])?;
        match self.recv(timeout, "the helper to execute the workload")? {
            None => Ok(()),
            Some((Message::Error(text), _)) => Err(HostError::Helper(text)),
            Some((other, _)) => Err(HostError::Protocol(format!(
                "expected EOF or Error after Start, got {other:?}"
            ))),
        }
    }

    fn send(&self, message: &Message, fds: &[RawFd]) -> Result<(), HostError> {
        match ctinit_proto::transport::send(self.fd.as_fd(), message, fds) {
            Ok(()) => Ok(()),
            Err(Errno::EPIPE) | Err(Errno::ECONNRESET) => {
                Err(HostError::Closed("the shim's message to be taken"))
            }
            Err(e) => Err(sys(format!("send {message:?}"))(e)),
        }
    }

    /// One message with its descriptors; `None` at EOF.
    fn recv(
        &self,
        timeout: Duration,
        waiting_for: &'static str,
    ) -> Result<Option<(Message, Vec<OwnedFd>)>, HostError> {
        wait_readable(self.fd.as_fd(), timeout, waiting_for)?;
        match transport::receive(self.fd.as_fd(), MsgFlags::MSG_DONTWAIT) {
            Ok(received) => Ok(received),
            // The peer vanished with data unread on our side: same as EOF.
            Err(ReceiveError::Sys(Errno::ECONNRESET)) => Ok(None),
            Err(ReceiveError::Sys(e)) => Err(sys("receive from helper")(e)),
            Err(ReceiveError::Truncated) => Err(HostError::Protocol("message truncated".into())),
            Err(ReceiveError::Decode(e)) => Err(HostError::Protocol(e.to_string())),
        }
    }
}

impl AsFd for InitConnection {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

fn wait_readable(
    fd: std::os::fd::BorrowedFd<'_>,
    timeout: Duration,
    waiting_for: &'static str,
) -> Result<(), HostError> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        // Round up so a sub-millisecond remainder still waits instead of spinning.
        let millis = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        let poll_timeout = PollTimeout::try_from(millis).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        match poll(&mut fds, poll_timeout) {
            Ok(0) => {
                return Err(HostError::Timeout {
                    waiting_for,
                    after: timeout,
                })
            }
            // Readable, or hung up / error: recv/accept reports which.
            Ok(_) => return Ok(()),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(sys("poll")(e)),
        }
    }
}

/// The helper's command line inside the container for a socket and spec file in the state
/// directory (`/dev/.ctinit/init /dev/.ctinit/NAME.sock /dev/.ctinit/NAME.json`).
pub fn helper_command(socket_name: &str, spec_name: &str) -> [String; 3] {
    let at = |name: &str| format!("{}/{name}", ctinit_proto::CONTAINER_DIR);
    [
        at(ctinit_proto::HELPER_NAME),
        at(socket_name),
        at(spec_name),
    ]
}

/// `lxc.init.cmd` for the container's init process.
pub fn init_command() -> String {
    helper_command(ctinit_proto::INIT_SOCKET_NAME, ctinit_proto::INIT_SPEC_NAME).join(" ")
}
