//! The shim's side of the in-container helper (`ct-init-bin`'s blocking API), made async and
//! given the shim's error type. The helper runs inside the container, connects to a socket in
//! the container's state directory, receives stdio, reports ready (with the pty master for a
//! terminal), and on Start `execve`s the workload, keeping its pid.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::{Duration, Instant};

use ct_init_bin::{HostError, InitConnection, InitListener, StdioFds};

use crate::errors::{Result, ShimError};
use crate::host::stdio::ContainerStdio;

fn host_error(context: &str, e: HostError) -> ShimError {
    match e {
        // The helper's own words (e.g. `exec: "x": executable file not found in $PATH`).
        HostError::Helper(text) => ShimError::FailedPrecondition(text),
        other => ShimError::Internal(format!("{context}: {other}")),
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ShimError::Internal(format!("blocking task: {e}")))
}

/// The shared, root-owned copy of the helper under the state root (`helper-<build>/init`),
/// checked once against the embedded bytes; None where it cannot be made or is not right.
fn shared_copy(state_root: &Path) -> Option<&'static Path> {
    static SHARED: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();
    SHARED
        .get_or_init(|| {
            let dir = state_root.join(format!("helper-{}", ct_init_bin::HELPER_ID));
            let path = dir.join(ctinit_proto::HELPER_NAME);
            if !is_the_embedded_helper(&path) {
                std::fs::create_dir_all(&dir).ok()?;
                ct_init_bin::install_helper(&dir).ok()?;
            }
            is_the_embedded_helper(&path).then_some(path)
        })
        .as_deref()
}

/// Whether `path` is a root-owned file, writable by no one else, in a root-owned directory
/// writable by no one else, holding exactly the embedded helper: what host root may run or
/// copy. A container's root owns its state directory and could replace the link there.
fn is_the_embedded_helper(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let root_only = |p: &Path| {
        std::fs::symlink_metadata(p)
            .is_ok_and(|m| m.uid() == 0 && m.mode() & 0o022 == 0 && !m.file_type().is_symlink())
    };
    root_only(path)
        && path.parent().is_some_and(root_only)
        && std::fs::read(path).is_ok_and(|bytes| bytes == ct_init_bin::HELPER)
}

/// Puts the helper binary into a state directory's helper directory
/// (`STATE_ROOT/<hash>/helper`): a hard link to one shared copy per helper build under the
/// state root, written once. Writing the embedded bytes for every container would page all
/// of them into each shim's resident memory.
pub fn install(helper_dir: &Path) -> Result<()> {
    let target = helper_dir.join(ctinit_proto::HELPER_NAME);
    let state_root = helper_dir.parent().and_then(Path::parent);
    if let Some(shared) = state_root.and_then(shared_copy) {
        if std::fs::hard_link(shared, &target).is_ok() {
            return Ok(());
        }
    }
    ct_init_bin::install_helper(helper_dir)
        .map(|_| ())
        .map_err(|e| ShimError::io(format!("install helper in {}", helper_dir.display()), e))
}

/// The helper as a descriptor for host root to run (an exec's `--attach`, the seccomp dump)
/// and to pass into a container: a memfd of its own holding the helper, sealed against every
/// change (`F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL`). A process in the
/// container that reaches it through `/proc/PID/exe` cannot change a byte of it (runc
/// CVE-2019-5736); a host file under /run could be reopened for writing there once no helper
/// executes it.
///
/// One memfd per use, not one kept per shim: the exec's helper closes it when it `execve`s the
/// workload, so its 1.2 MiB of shared memory live only while the exec starts instead of for
/// the shim's life. It is filled by the kernel (`sendfile`) from the shared root-owned copy
/// under `state_root` (checked once against the embedded bytes, see [`shared_copy`]), never
/// from a container's state directory, which the container's root may own; the embedded
/// bytes are the fallback.
pub fn sealed() -> Result<std::fs::File> {
    seal_helper(Path::new(crate::config::STATE_ROOT))
        .map_err(|e| ShimError::io("make a sealed copy of the helper", e))
}

fn seal_helper(state_root: &Path) -> std::io::Result<std::fs::File> {
    let mut memfd = sealable_memfd(c"containerd-shim-proxmox-lxc-init")?;
    let copied = match shared_copy(state_root) {
        Some(shared) => {
            std::fs::File::open(shared).and_then(|mut f| std::io::copy(&mut f, &mut memfd))
        }
        None => Ok(0),
    };
    if copied.ok() != Some(ct_init_bin::HELPER.len() as u64) {
        use std::io::Write;
        memfd.set_len(0)?;
        memfd.write_all(ct_init_bin::HELPER)?;
    }
    seal(&memfd)?;
    Ok(memfd)
}

/// A memfd that can be sealed, close-on-exec.
pub fn sealable_memfd(name: &std::ffi::CStr) -> std::io::Result<std::fs::File> {
    use nix::sys::memfd::{memfd_create, MFdFlags};
    Ok(std::fs::File::from(memfd_create(
        name,
        MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
    )?))
}

/// Seals `memfd` against every change.
pub fn seal(memfd: &std::fs::File) -> std::io::Result<()> {
    use nix::fcntl::{FcntlArg, SealFlag};
    let seals = SealFlag::F_SEAL_SEAL
        | SealFlag::F_SEAL_WRITE
        | SealFlag::F_SEAL_GROW
        | SealFlag::F_SEAL_SHRINK;
    // F_SEAL_WRITE fails with EBUSY while a page of the file has references beyond its
    // mappings (mm/memfd.c, `memfd_wait_for_pins`, which waits about 75 ms): pages just written
    // can still sit in another CPU's LRU batch, which only drains there. Seen once in a
    // thousand execs under load; a few more tries, each after a short pause, get past it.
    let mut pause = std::time::Duration::from_millis(2);
    for attempt in 0.. {
        match nix::fcntl::fcntl(memfd, FcntlArg::F_ADD_SEALS(seals)) {
            Ok(_) => break,
            Err(nix::errno::Errno::EBUSY) if attempt < 4 => {}
            Err(e) => return Err(e.into()),
        }
        std::thread::sleep(pause);
        pause *= 2;
    }
    Ok(())
}

pub struct Listener(InitListener);

impl Listener {
    pub fn bind(path: &Path) -> Result<Listener> {
        InitListener::bind(path)
            .map(Listener)
            .map_err(|e| host_error(&format!("listen on {}", path.display()), e))
    }
}

pub struct Connection(InitConnection);

fn alive(pid: u32) -> bool {
    // Reaped children are gone (ESRCH); zombies do not linger since the reaper collects them.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok()
}

/// What ended before the helper connected, for the error: the container (its supervisor is
/// lxc-start) or an exec command (lxc-attach, the container runs on).
#[derive(Clone, Copy, Debug)]
pub enum Supervisor {
    Container(u32),
    Exec(u32),
}

/// Waits for the helper to connect. Gives up early when `supervisor` (lxc-start, lxc-attach)
/// dies first: the container or the exec did not start, and its log says why.
pub async fn accept(
    listener: Listener,
    limit: Duration,
    supervisor: Option<Supervisor>,
) -> Result<Connection> {
    blocking(move || {
        let deadline = Instant::now() + limit;
        loop {
            match listener.0.accept(Duration::from_millis(100)) {
                Ok(conn) => return Ok(Connection(conn)),
                Err(HostError::Timeout { .. }) => {
                    match supervisor {
                        Some(Supervisor::Container(pid)) if !alive(pid) => {
                            return Err(ShimError::Internal(
                                "the container exited before its init helper connected".into(),
                            ));
                        }
                        Some(Supervisor::Exec(pid)) if !alive(pid) => {
                            return Err(ShimError::Internal(
                                "the exec command exited before the exec's helper connected".into(),
                            ));
                        }
                        _ => {}
                    }
                    if Instant::now() >= deadline {
                        return Err(ShimError::Internal(format!(
                            "the container's init helper did not connect within {}s",
                            limit.as_secs()
                        )));
                    }
                }
                Err(e) => return Err(host_error("accept helper connection", e)),
            }
        }
    })
    .await?
}

/// Sends stdio, waits for Ready. Returns the connection, the process's host pid, and the pty
/// master when a terminal was asked for.
pub async fn handshake(
    conn: Connection,
    stdio: ContainerStdio,
    limit: Duration,
) -> Result<(Connection, u32, Option<OwnedFd>)> {
    blocking(move || {
        let pid = conn.0.peer_pid().map_err(|e| host_error("helper pid", e))?;
        conn.0
            .send_stdio(StdioFds {
                stdin: stdio.stdin,
                stdout: stdio.stdout,
                stderr: stdio.stderr,
            })
            .map_err(|e| host_error("send stdio to helper", e))?;
        let pty = conn
            .0
            .wait_ready(limit)
            .map_err(|e| host_error("helper setup", e))?;
        Ok((conn, pid as u32, pty))
    })
    .await?
}

/// Lets the helper exec the workload; Ok once the exec succeeded.
pub async fn start(conn: Connection, limit: Duration) -> Result<()> {
    blocking(move || {
        conn.0
            .start(limit)
            .map_err(|e| host_error("start process", e))
    })
    .await?
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// Host root takes the helper only from a root-owned file no one else can write, with
    /// exactly the embedded bytes: a replaced, altered, loosened or linked copy is refused.
    #[test]
    #[ignore = "needs root: the copy must be root-owned"]
    fn only_an_unaltered_root_only_copy_is_trusted() {
        crate::assert_root();
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = dir.path().join(ctinit_proto::HELPER_NAME);
        std::fs::write(&path, ct_init_bin::HELPER).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(is_the_embedded_helper(&path));

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o775)).unwrap();
        assert!(!is_the_embedded_helper(&path), "group-writable");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();

        let mut altered = ct_init_bin::HELPER.to_vec();
        let last = altered.len() - 1;
        altered[last] ^= 1;
        std::fs::write(&path, &altered).unwrap();
        assert!(!is_the_embedded_helper(&path), "same size, other bytes");

        std::fs::write(&path, ct_init_bin::HELPER).unwrap();
        std::os::unix::fs::chown(&path, Some(100000), Some(100000)).unwrap();
        assert!(
            !is_the_embedded_helper(&path),
            "owned by a container's root"
        );

        let other = dir.path().join("real");
        std::fs::write(&other, ct_init_bin::HELPER).unwrap();
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(&other, &path).unwrap();
        assert!(!is_the_embedded_helper(&path), "a symlink");

        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(
            !is_the_embedded_helper(&other),
            "in a directory others can write"
        );
    }
}
