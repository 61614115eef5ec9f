//! Stdio of a container process: containerd's fifos, `file://` and `binary://` log URIs, and
//! terminals. The container side always gets plain pipes (or a log file, or nothing) handed to
//! the in-container helper; the shim copies between them and containerd's fifos. The shim opens
//! every fifo read-write, so a containerd restart (which closes its ends) neither ends a copy nor
//! kills the workload with SIGPIPE: output waits in the pipe until containerd reopens it.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use log::{debug, warn};
use nix::fcntl::OFlag;
use tokio::io::unix::AsyncFd;
use tokio::sync::{watch, Mutex};
use tokio::task::JoinHandle;

use crate::errors::{IoContext, Result, ShimError};
use crate::host::process::exits::ChildExits;
use crate::host::process::{keep_fds_across_exec, KeptFd};

/// What the container process gets, in the order stdin, stdout, stderr. `None` becomes
/// /dev/null inside the container.
#[derive(Debug, Default)]
pub struct ContainerStdio {
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

/// The paths/URIs containerd gave for one process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StdioPaths {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

enum Sink {
    None,
    Fifo(String),
    File(String),
    Binary { path: String, args: Vec<String> },
}

fn parse_sink(uri: &str) -> Result<Sink> {
    if uri.is_empty() {
        return Ok(Sink::None);
    }
    let Some((scheme, rest)) = uri.split_once("://") else {
        return Ok(Sink::Fifo(uri.to_string()));
    };
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    let path = percent_decode(path);
    match scheme {
        "fifo" => Ok(Sink::Fifo(path)),
        "file" => Ok(Sink::File(path)),
        "binary" => {
            let mut args = Vec::new();
            if let Some(q) = query {
                for pair in q.split('&').filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    args.push(percent_decode(k));
                    if !v.is_empty() {
                        args.push(percent_decode(v));
                    }
                }
            }
            Ok(Sink::Binary { path, args })
        }
        other => Err(ShimError::InvalidArgument(format!(
            "stdio URI {uri:?}: unsupported scheme {other:?} (fifo path, file://, binary://)"
        ))),
    }
}

/// Decodes `%XX` escapes; a `%` not followed by two hex digits stays as it is, and bytes that
/// are not UTF-8 after decoding become U+FFFD (a path containerd gave us is UTF-8 already).
fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| ShimError::io("create pipe", e.into()))
}

/// containerd's stdin fifo, read-only: when containerd closes its end (the user's stdin ended)
/// the shim sees EOF and passes it on, as runc's shim does.
fn open_stdin_fifo(path: &str) -> Result<OwnedFd> {
    nix::fcntl::open(
        path,
        OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| ShimError::io(format!("open fifo {path}"), e.into()))
}

/// An output fifo, read-write so that writes never fail with EPIPE while containerd is away.
fn open_fifo(path: &str) -> Result<OwnedFd> {
    let fd = nix::fcntl::open(
        path,
        OFlag::O_RDWR | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| ShimError::io(format!("open fifo {path}"), e.into()))?;
    Ok(fd)
}

fn set_nonblocking(fd: &OwnedFd) -> Result<()> {
    let flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL)
        .map_err(|e| ShimError::io("fcntl F_GETFL", e.into()))?;
    let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFL(flags))
        .map_err(|e| ShimError::io("fcntl F_SETFL", e.into()))?;
    Ok(())
}

/// Copies from `src` to `dst` until EOF (or EIO from a pty whose slave side is gone). With a
/// `stop` signal, drains what is readable right now and ends when it fires (CloseIO).
async fn copy(src: OwnedFd, dst: OwnedFd, mut stop: Option<watch::Receiver<bool>>) {
    let (Ok(()), Ok(())) = (set_nonblocking(&src), set_nonblocking(&dst)) else {
        return;
    };
    // SAFETY: the descriptors are owned by the AsyncFds and stay open while registered.
    let registered = unsafe { (AsyncFd::register(src), AsyncFd::register(dst)) };
    let (Ok(src), Ok(dst)) = registered else {
        warn!("stdio copy: cannot register descriptors");
        return;
    };
    let mut buf = vec![0u8; 32 * 1024];
    let mut stopping = false;
    loop {
        let n = if stopping {
            match nix::unistd::read(src.get_ref(), &mut buf) {
                Ok(n) => n,
                Err(_) => return,
            }
        } else {
            let readable = async {
                loop {
                    let mut guard = match src.readable().await {
                        Ok(g) => g,
                        Err(_) => return Err(()),
                    };
                    match guard.try_io(|fd| {
                        nix::unistd::read(fd.get_ref(), &mut buf).map_err(std::io::Error::from)
                    }) {
                        Ok(Ok(n)) => return Ok(n),
                        Ok(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Ok(Err(e)) => {
                            if e.raw_os_error() != Some(libc::EIO) {
                                debug!("stdio copy: read: {e}");
                            }
                            return Err(());
                        }
                        Err(_would_block) => continue,
                    }
                }
            };
            match &mut stop {
                Some(stop_rx) => {
                    tokio::select! {
                        r = readable => match r { Ok(n) => n, Err(()) => return },
                        _ = stop_rx.changed() => { stopping = true; continue; }
                    }
                }
                None => match readable.await {
                    Ok(n) => n,
                    Err(()) => return,
                },
            }
        };
        if n == 0 {
            return;
        }
        let mut written = 0;
        while written < n {
            let mut guard = match dst.writable().await {
                Ok(g) => g,
                Err(_) => return,
            };
            match guard.try_io(|fd| {
                nix::unistd::write(fd.get_ref(), &buf[written..n]).map_err(std::io::Error::from)
            }) {
                Ok(Ok(w)) => written += w,
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Ok(Err(e)) => {
                    debug!("stdio copy: write: {e}");
                    return;
                }
                Err(_would_block) => {}
            }
        }
    }
}

/// The shim's side of one process's stdio.
pub struct ProcessIo {
    paths: StdioPaths,
    /// Output copies (container -> containerd): an exit waits for them to drain.
    copies: Mutex<Vec<JoinHandle<()>>>,
    /// The stdin copy (containerd -> container): ends with CloseIO, never waited for.
    input: Mutex<Option<JoinHandle<()>>>,
    close_stdin: watch::Sender<bool>,
    pty: Mutex<Option<Arc<OwnedFd>>>,
}

impl ProcessIo {
    /// Opens containerd's ends and makes the container's ends. For a terminal nothing is made
    /// here: the pty comes later with [`ProcessIo::attach_pty`].
    pub async fn setup(
        paths: &StdioPaths,
        namespace: &str,
        container_id: &str,
        exits: &ChildExits,
    ) -> Result<(Arc<ProcessIo>, ContainerStdio)> {
        let (close_stdin, _) = watch::channel(false);
        let io = Arc::new(ProcessIo {
            paths: paths.clone(),
            copies: Mutex::new(Vec::new()),
            input: Mutex::new(None),
            close_stdin,
            pty: Mutex::new(None),
        });
        let mut ours = ContainerStdio::default();
        if paths.terminal {
            return Ok((io, ours));
        }
        let mut copies = Vec::new();
        if !paths.stdin.is_empty() {
            let fifo = open_stdin_fifo(&paths.stdin)?;
            let (read_end, write_end) = pipe()?;
            ours.stdin = Some(read_end);
            let stop = io.close_stdin.subscribe();
            *io.input.lock().await = Some(tokio::spawn(copy(fifo, write_end, Some(stop))));
        }
        // A binary logger takes both streams at once.
        let out_sink = parse_sink(&paths.stdout)?;
        if let Sink::Binary { path, args } = &out_sink {
            let (out_r, out_w) = pipe()?;
            let (err_r, err_w) = pipe()?;
            start_binary_logger(path, args, namespace, container_id, out_r, err_r, exits).await?;
            ours.stdout = Some(out_w);
            ours.stderr = Some(err_w);
        } else {
            ours.stdout = Self::sink_end(out_sink, &mut copies)?;
            ours.stderr = Self::sink_end(parse_sink(&paths.stderr)?, &mut copies)?;
        }
        *io.copies.lock().await = copies;
        Ok((io, ours))
    }

    fn sink_end(sink: Sink, copies: &mut Vec<JoinHandle<()>>) -> Result<Option<OwnedFd>> {
        match sink {
            Sink::None => Ok(None),
            Sink::Fifo(path) => {
                let fifo = open_fifo(&path)?;
                let (read_end, write_end) = pipe()?;
                copies.push(tokio::spawn(copy(read_end, fifo, None)));
                Ok(Some(write_end))
            }
            Sink::File(path) => {
                if let Some(dir) = Path::new(&path).parent() {
                    std::fs::create_dir_all(dir).ctx(|| format!("create {}", dir.display()))?;
                }
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .ctx(|| format!("open log file {path}"))?;
                Ok(Some(file.into()))
            }
            Sink::Binary { .. } => Err(ShimError::InvalidArgument(
                "stderr: a binary:// logger is given as stdout and takes both streams".into(),
            )),
        }
    }

    /// Connects a terminal's master to containerd's fifos.
    pub async fn attach_pty(&self, master: OwnedFd) -> Result<()> {
        let master = Arc::new(master);
        let mut copies = self.copies.lock().await;
        if !self.paths.stdin.is_empty() {
            let fifo = open_stdin_fifo(&self.paths.stdin)?;
            let dup = dup(&master)?;
            // Input, as without a terminal: an exit must not wait for it. It ends only at
            // CloseIO, so among the output copies it held every TTY exit for the whole drain
            // limit (issue 11, item 4: 2 s of the 2.5 s of `ctr task exec -t ... seq`).
            *self.input.lock().await = Some(tokio::spawn(copy(
                fifo,
                dup,
                Some(self.close_stdin.subscribe()),
            )));
        }
        if !self.paths.stdout.is_empty() {
            match parse_sink(&self.paths.stdout)? {
                Sink::Fifo(path) => {
                    let fifo = open_fifo(&path)?;
                    copies.push(tokio::spawn(copy(dup(&master)?, fifo, None)));
                }
                _ => {
                    return Err(ShimError::InvalidArgument(format!(
                        "stdout {:?}: a terminal needs a fifo",
                        self.paths.stdout
                    )))
                }
            }
        }
        *self.pty.lock().await = Some(master);
        Ok(())
    }

    pub async fn resize(&self, width: u32, height: u32) -> Result<()> {
        let pty = self.pty.lock().await;
        let Some(master) = pty.as_ref() else {
            return Err(ShimError::FailedPrecondition(
                "resize: the process has no terminal".into(),
            ));
        };
        let ws = libc::winsize {
            ws_row: height.min(u16::MAX as u32) as u16,
            ws_col: width.min(u16::MAX as u32) as u16,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one `winsize`, which `ws` is and outlives the call; the
        // master is open while `pty` holds it.
        let rc = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        if rc < 0 {
            return Err(ShimError::io(
                "resize terminal",
                std::io::Error::last_os_error(),
            ));
        }
        Ok(())
    }

    /// CloseIO: what containerd wrote so far is delivered, then the process sees EOF.
    pub fn close_stdin(&self) {
        self.close_stdin.send_replace(true);
    }

    /// Waits until the output copies have delivered everything (they end at EOF, when every
    /// holder of the container's ends is gone), at most `limit`: a background child that keeps
    /// stdout open must not hold the exit event forever.
    pub async fn wait_output(&self, limit: Duration) {
        let handles: Vec<JoinHandle<()>> = std::mem::take(&mut *self.copies.lock().await);
        let mut remaining: Vec<JoinHandle<()>> =
            handles.into_iter().filter(|h| !h.is_finished()).collect();
        let all = async {
            for h in remaining.iter_mut() {
                let _ = h.await;
            }
        };
        let _ = tokio::time::timeout(limit, all).await;
        // A copy still running (a background child holds the output open) is kept, so that
        // delete ends it and closes containerd's fifo: dropped here it would run on, holding
        // both descriptors, and containerd's reader would never see EOF.
        remaining.retain(|h| !h.is_finished());
        self.copies.lock().await.extend(remaining);
    }

    /// Stops every copy (process deleted).
    pub async fn shutdown(&self) {
        self.close_stdin();
        for h in self.copies.lock().await.drain(..) {
            h.abort();
        }
        if let Some(h) = self.input.lock().await.take() {
            h.abort();
        }
        *self.pty.lock().await = None;
    }

    pub fn paths(&self) -> &StdioPaths {
        &self.paths
    }
}

fn dup(fd: &OwnedFd) -> Result<OwnedFd> {
    fd.try_clone().ctx(|| "dup pty master".to_string())
}

/// Starts a `binary://` logger as containerd's runc shim does: fd 3 stdout, fd 4 stderr, fd 5
/// a pipe the logger closes (or writes to) once it is ready; CONTAINER_ID and
/// CONTAINER_NAMESPACE in its environment.
async fn start_binary_logger(
    path: &str,
    args: &[String],
    namespace: &str,
    container_id: &str,
    stdout: OwnedFd,
    stderr: OwnedFd,
    exits: &ChildExits,
) -> Result<()> {
    let (ready_r, ready_w) = pipe()?;
    let mut cmd = std::process::Command::new(path);
    cmd.args(args)
        .env("CONTAINER_ID", container_id)
        .env("CONTAINER_NAMESPACE", namespace)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    keep_fds_across_exec(
        &mut cmd,
        [
            KeptFd::at(stdout, 3),
            KeptFd::at(stderr, 4),
            KeptFd::at(ready_w, 5),
        ],
    )?;
    let child = cmd.spawn().ctx(|| format!("start logging binary {path}"))?;
    // The logger runs on its own; its exit is collected by the reaper and claimed here so the
    // exit table stays small.
    let exit = exits.wait(child.id() as i32);
    tokio::spawn(async move {
        if let Ok(code) = exit.await {
            debug!("logging binary exited with {code}");
        }
    });
    // The command held the shim's copies of stdout, stderr and the ready pipe's write end:
    // from here the logger holds the only ones, so its exit or close ends the wait.
    drop(cmd);
    let wait_ready = tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::from(ready_r);
        let mut b = [0u8; 1];
        let _ = std::io::Read::read(&mut file, &mut b);
    });
    tokio::time::timeout(Duration::from_secs(10), wait_ready)
        .await
        .map_err(|_| {
            ShimError::Internal(format!("logging binary {path} did not become ready in 10s"))
        })?
        .map_err(|e| ShimError::Internal(format!("logging binary {path}: {e}")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sinks_parse() {
        assert!(matches!(parse_sink("").unwrap(), Sink::None));
        assert!(
            matches!(parse_sink("/run/x/stdout").unwrap(), Sink::Fifo(p) if p == "/run/x/stdout")
        );
        assert!(
            matches!(parse_sink("file:///var/log/a%20b.log").unwrap(), Sink::File(p) if p == "/var/log/a b.log")
        );
        match parse_sink("binary:///usr/bin/logger?id=1&x").unwrap() {
            Sink::Binary { path, args } => {
                assert_eq!(path, "/usr/bin/logger");
                assert_eq!(args, vec!["id", "1", "x"]);
            }
            _ => panic!("expected binary"),
        }
        assert!(parse_sink("http://x").is_err());
    }

    #[test]
    fn percent_decoding_handles_multibyte_and_truncated_escapes() {
        // A multi-byte character right after `%` once made the decoder slice inside it.
        assert_eq!(percent_decode("%é1"), "%é1");
        assert_eq!(percent_decode("%aé"), "%aé");
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("a%20"), "a ");
        assert_eq!(percent_decode("%C3%A9"), "é");
        assert!(matches!(parse_sink("file:///tmp/%€x").unwrap(), Sink::File(p) if p == "/tmp/%€x"));
    }

    /// A terminal's stdin copy is input: an exit waits for the output copy only (it was
    /// once among the output copies and held every TTY exec's exit for the drain limit).
    #[tokio::test]
    async fn terminal_stdin_copy_is_not_waited_for_at_exit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let stdin = dir.path().join("stdin");
        let stdout = dir.path().join("stdout");
        for fifo in [&stdin, &stdout] {
            nix::unistd::mkfifo(fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
                .expect("mkfifo");
        }
        let paths = StdioPaths {
            stdin: stdin.to_string_lossy().into_owned(),
            stdout: stdout.to_string_lossy().into_owned(),
            stderr: String::new(),
            terminal: true,
        };
        let exits = ChildExits::default();
        let (io, ours) = ProcessIo::setup(&paths, "ns", "id", &exits)
            .await
            .expect("setup");
        assert!(ours.stdin.is_none() && ours.stdout.is_none());
        let pty = nix::pty::openpty(None, None).expect("openpty");
        io.attach_pty(pty.master).await.expect("attach_pty");
        assert_eq!(io.copies.lock().await.len(), 1, "only the output copy");
        assert!(io.input.lock().await.is_some(), "stdin copied as input");
        io.shutdown().await;
    }

    /// A `binary://` logger, as containerd's runc shim starts one: stdout on fd 3, stderr on
    /// fd 4, a pipe on fd 5 it closes once ready, the container's names in its environment.
    #[tokio::test]
    async fn a_binary_logger_gets_both_streams_and_the_ready_pipe() {
        use std::os::unix::fs::PermissionsExt;
        const LOGGER: &str = r#"#!/bin/sh
[ -p "/proc/$$/fd/5" ] && ready=pipe || ready=missing
exec 5>&-
cat <&3 > "$1.out"
cat <&4 > "$1.err"
echo "$CONTAINER_NAMESPACE $CONTAINER_ID $ready" > "$1.tmp" && mv "$1.tmp" "$1.done"
"#;
        let dir = tempfile::tempdir().expect("tempdir");
        let logger = dir.path().join("logger");
        std::fs::write(&logger, LOGGER).expect("write the logger");
        std::fs::set_permissions(&logger, std::fs::Permissions::from_mode(0o755))
            .expect("make the logger executable");
        let seen = dir.path().join("seen");
        let paths = StdioPaths {
            stdin: String::new(),
            stdout: format!("binary://{}?{}", logger.display(), seen.display()),
            stderr: String::new(),
            terminal: false,
        };
        let exits = ChildExits::default();
        let (io, mut ours) = ProcessIo::setup(&paths, "ns", "id", &exits)
            .await
            .expect("setup with the logger ready");
        for (end, text) in [
            (ours.stdout.take(), "to stdout"),
            (ours.stderr.take(), "to stderr"),
        ] {
            let mut file = std::fs::File::from(end.expect("a container end"));
            std::io::Write::write_all(&mut file, text.as_bytes()).expect("write");
        }
        let done = seen.with_extension("done");
        for _ in 0..100 {
            if done.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let read =
            |ext: &str| std::fs::read_to_string(seen.with_extension(ext)).unwrap_or_default();
        assert_eq!(read("done"), "ns id pipe\n");
        assert_eq!(read("out"), "to stdout");
        assert_eq!(read("err"), "to stderr");
        io.shutdown().await;
    }

    proptest::proptest! {
        #[test]
        fn parsing_any_uri_never_panics(uri in "\\PC*", tail in "[%€é0-9a-fA-F]{0,6}") {
            let _ = parse_sink(&uri);
            let _ = parse_sink(&format!("binary:///{uri}%{tail}?{tail}=%{uri}"));
            let decoded = percent_decode(&format!("{uri}%{tail}"));
            // Nothing to decode, nothing changed.
            if !uri.contains('%') {
                proptest::prop_assert!(decoded.starts_with(&uri));
            }
        }
    }
}
