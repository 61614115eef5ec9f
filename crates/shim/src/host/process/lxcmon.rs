//! LXC's monitor: the real exit status of a container's init.
//!
//! `lxc-start -F` exits 0 whatever the init returned, and under Proxmox the CT is started by
//! systemd, so the shim learns the workload's exit status from LXC itself: the process that
//! waits for the init sends an EXITCODE message (the raw wait status) into the lxcpath's
//! monitor fifo, and `lxc-monitord` broadcasts it on the abstract socket
//! `\0lxc/<fnv64a("lxc/<lxcpath>/monitor-sock")>/<lxcpath>`. There is no replay, so the shim
//! connects before it starts a container, and starts `lxc-monitord` when none runs.

use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

use log::{debug, warn};
use tokio::io::AsyncReadExt;
use tokio::sync::oneshot;

use crate::host::process::exits::ExitTable;

/// `struct lxc_msg { int type; char name[NAME_MAX + 1]; int value; }` (LXC 3-5).
const MSG_SIZE: usize = 4 + 256 + 4;
const MSG_STATE: i32 = 0;
const MSG_EXIT_CODE: i32 = 2;
/// `lxc_state_t` STOPPED.
pub const STATE_STOPPED: i32 = 0;
const MONITORD: &str = "/usr/libexec/lxc/lxc-monitord";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MonitorEvent {
    /// Raw wait status of the container's init.
    ExitStatus(i32),
    /// The container reached a state (`lxc_state_t`).
    State(i32),
}

/// Converts a raw wait status to containerd's exit status: the code, or 128+N for a signal,
/// as runc reports it.
pub fn exit_status_from_wait(status: i32) -> u32 {
    if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status) as u32
    } else {
        libc::WEXITSTATUS(status) as u32
    }
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// The abstract socket name (without the leading NUL), cut to 105 bytes as liblxc does.
pub fn socket_name(lxcpath: &Path) -> Vec<u8> {
    let lxcpath = lxcpath.as_os_str().as_encoded_bytes();
    let mut key = b"lxc/".to_vec();
    key.extend_from_slice(lxcpath);
    key.extend_from_slice(b"/monitor-sock");
    let mut name = format!("lxc/{:016x}/", fnv1a64(&key)).into_bytes();
    name.extend_from_slice(lxcpath);
    name.truncate(105);
    name
}

/// The longest lxcpath LXC 5 can monitor: `lxc_monitor_sock_name` (src/lxc/monitor.c) writes
/// "@lxc/<16 hex>/<lxcpath>" into the 107 usable bytes of `sun_path` and fails with
/// ENAMETOOLONG past that (lxc-monitord then never listens), although the command socket
/// (commands_utils.c `lxc_make_abstract_socket_name`) hashes a long name instead.
pub const MAX_LXCPATH_LEN: usize = 107 - "@lxc/".len() - 16 - "/".len() - 1;

/// The lxcpath for a containerd namespace under `base`: `base/<namespace>` where LXC can
/// monitor it, else `base/<start of namespace>+<fnv1a64 of namespace>`, which fits ('+' is not
/// allowed in containerd namespace names, so it cannot collide with a plain one).
pub fn lxcpath_for_namespace(base: &Path, namespace: &str) -> std::path::PathBuf {
    let plain = base.join(namespace);
    if plain.as_os_str().len() <= MAX_LXCPATH_LEN {
        return plain;
    }
    let suffix = format!("+{:016x}", fnv1a64(namespace.as_bytes()));
    let room = MAX_LXCPATH_LEN
        .saturating_sub(base.as_os_str().len() + 1 + suffix.len())
        .min(namespace.len());
    // Namespace names are ASCII, so any byte offset is a char boundary; be safe anyway.
    let keep: String = namespace.chars().take(room).collect();
    base.join(format!("{keep}{suffix}"))
}

fn connect(lxcpath: &Path) -> std::io::Result<std::os::unix::net::UnixStream> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(socket_name(lxcpath))?;
    std::os::unix::net::UnixStream::connect_addr(&addr)
}

/// Starts `lxc-monitord LXCPATH FD` and waits until it signals readiness on the pipe, as
/// liblxc's `lxc_monitord_spawn` does. It detaches (setsid) and outlives this shim while other
/// clients are connected.
fn spawn_monitord(lxcpath: &Path) -> std::io::Result<()> {
    use std::os::unix::process::CommandExt;
    let (read_end, write_end) = nix::unistd::pipe().map_err(std::io::Error::from)?;
    let write_fd = write_end.as_raw_fd();
    let mut cmd = std::process::Command::new(MONITORD);
    cmd.arg(lxcpath)
        .arg(write_fd.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // The pipe's write end goes with it across exec.
    super::keep_fds_across_exec(&mut cmd, [super::KeptFd::same(write_end)])
        .map_err(std::io::Error::other)?;
    // SAFETY: setsid is async-signal-safe and touches no memory; it detaches the child from
    // the shim's session.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let _child = cmd.spawn()?;
    // The command held the shim's copy of the write end: from here only lxc-monitord has one.
    drop(cmd);
    let mut file = std::fs::File::from(read_end);
    let mut byte = [0u8; 1];
    // Either a byte (ready) or EOF (it died); both end the wait.
    let _ = std::io::Read::read(&mut file, &mut byte);
    Ok(())
}

/// One connection to the lxcpath's monitor, shared by every container of this shim.
#[derive(Clone)]
pub struct LxcMonitor {
    exits: ExitTable<String>,
}

impl LxcMonitor {
    pub async fn connect(lxcpath: &Path) -> std::io::Result<LxcMonitor> {
        std::fs::create_dir_all(lxcpath)?;
        let path = lxcpath.to_path_buf();
        let stream = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
            match connect(&path) {
                Ok(s) => Ok(s),
                Err(_) => {
                    spawn_monitord(&path)?;
                    let mut last = None;
                    for _ in 0..50 {
                        match connect(&path) {
                            Ok(s) => return Ok(s),
                            Err(e) => last = Some(e),
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(last.unwrap_or_else(|| std::io::Error::other("lxc-monitord did not start")))
                }
            }
        })
        .await
        .map_err(std::io::Error::other)??;
        stream.set_nonblocking(true)?;
        let stream = tokio::net::UnixStream::from_std(stream)?;
        let monitor = LxcMonitor {
            exits: ExitTable::default(),
        };
        let exits = monitor.exits.clone();
        let lxcpath = lxcpath.to_path_buf();
        tokio::spawn(async move {
            let mut stream = stream;
            let mut buf = [0u8; MSG_SIZE];
            loop {
                if let Err(e) = stream.read_exact(&mut buf).await {
                    warn!("LXC monitor for {} closed: {e}", lxcpath.display());
                    return;
                }
                let Some((name, event)) = parse_message(&buf) else {
                    continue;
                };
                debug!("LXC monitor: {name}: {event:?}");
                if let MonitorEvent::ExitStatus(status) = event {
                    exits.report(name, status);
                }
            }
        });
        Ok(monitor)
    }

    /// Resolves with the raw wait status of container `name`'s init. Register before starting
    /// the container; a status that arrived earlier for that name is returned at once.
    pub fn wait_exit(&self, name: &str) -> oneshot::Receiver<i32> {
        self.exits.wait(name.to_string())
    }

    /// Forgets a stale status (a previous container of the same name).
    pub fn forget(&self, name: &str) {
        self.exits.forget(&name.to_string());
    }
}

pub fn parse_message(buf: &[u8; MSG_SIZE]) -> Option<(String, MonitorEvent)> {
    let kind = i32::from_ne_bytes(buf[0..4].try_into().ok()?);
    let name_bytes = &buf[4..260];
    let end = name_bytes
        .iter()
        .position(|b| *b == 0)
        .unwrap_or(name_bytes.len());
    let name = String::from_utf8_lossy(&name_bytes[..end]).into_owned();
    let value = i32::from_ne_bytes(buf[260..264].try_into().ok()?);
    match kind {
        MSG_EXIT_CODE => Some((name, MonitorEvent::ExitStatus(value))),
        MSG_STATE => Some((name, MonitorEvent::State(value))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_namespaces_get_an_lxcpath_lxc_can_monitor() {
        let base = Path::new("/var/lib/containerd-shim-proxmox-lxc");
        assert_eq!(lxcpath_for_namespace(base, "k8s.io"), base.join("k8s.io"));
        // containerd allows 76 characters.
        let long = "n".repeat(76);
        let short = lxcpath_for_namespace(base, &long);
        let len = short.as_os_str().len();
        assert_eq!(len, MAX_LXCPATH_LEN, "{}", short.display());
        assert!(short.starts_with(base));
        // LXC's "@lxc/<hash>/<lxcpath>" fits in sun_path with its NUL.
        assert!("@lxc/".len() + 16 + 1 + len < 107);
        assert!(socket_name(&short).ends_with(short.as_os_str().as_encoded_bytes()));
        // Deterministic (delete finds it again) and distinct per namespace.
        assert_eq!(short, lxcpath_for_namespace(base, &long));
        let other = format!("{}m", "n".repeat(75));
        assert_ne!(short, lxcpath_for_namespace(base, &other));
    }

    #[test]
    fn socket_name_matches_liblxc() {
        // Observed on this LXC 5.0.2 host in /proc/net/unix for `lxc-monitor -P /tmp/lxcp`.
        assert_eq!(
            socket_name(Path::new("/tmp/lxcp")),
            b"lxc/0483d65ab013da33//tmp/lxcp".to_vec()
        );
    }

    #[test]
    fn exit_status_like_runc() {
        assert_eq!(exit_status_from_wait(3 << 8), 3);
        assert_eq!(exit_status_from_wait(9), 137);
        assert_eq!(exit_status_from_wait(15), 143);
        assert_eq!(exit_status_from_wait(0), 0);
    }

    #[test]
    fn parses_exit_message() {
        let mut buf = [0u8; MSG_SIZE];
        buf[0..4].copy_from_slice(&MSG_EXIT_CODE.to_ne_bytes());
        buf[4..7].copy_from_slice(b"abc");
        buf[260..264].copy_from_slice(&(3i32 << 8).to_ne_bytes());
        assert_eq!(
            parse_message(&buf),
            Some(("abc".to_string(), MonitorEvent::ExitStatus(3 << 8)))
        );
    }
}
