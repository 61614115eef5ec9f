//! Running commands with a deadline: captured stdout/stderr (split), stdin fed and closed (EOF),
//! background processes whose output can be waited for, and commands under a pty.

use std::fmt;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

/// How a process ended, in the shell's terms: exit code, or 128+N for a signal death.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Status(pub i32);

impl From<ExitStatus> for Status {
    fn from(s: ExitStatus) -> Self {
        match (s.code(), s.signal()) {
            (Some(code), _) => Status(code),
            (None, Some(sig)) => Status(128 + sig),
            _ => Status(-1),
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What a finished command printed and how it ended.
#[derive(Clone, Debug)]
pub struct Output {
    pub status: Status,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
    /// Fails with the command's output unless it exited 0.
    pub fn ok(self, what: &str) -> Result<Self> {
        if self.status.0 != 0 {
            bail!(
                "{what} failed with status {}\nstdout: {}\nstderr: {}",
                self.status,
                self.stdout_str(),
                self.stderr_str()
            );
        }
        Ok(self)
    }
}

type Buffer = Arc<Mutex<Vec<u8>>>;

fn drain(mut reader: impl Read + Send + 'static, buf: Buffer) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut chunk = [0u8; 16384];
        loop {
            match reader.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => buf
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                // EIO on a pty master once the slave side is gone: the end of output.
                Err(_) => break,
            }
        }
    })
}

fn snapshot(buf: &Buffer) -> Vec<u8> {
    buf.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// A running process whose stdout and stderr are collected as they come.
pub struct Background {
    child: Child,
    description: String,
    stdout: Buffer,
    stderr: Buffer,
    readers: Vec<JoinHandle<()>>,
    stdin_writer: Option<JoinHandle<()>>,
    held_stdin: Option<std::process::ChildStdin>,
}

impl Background {
    /// Spawns `cmd` with stdin a pipe that stays open until [`Background::send_stdin_and_close`].
    pub fn spawn_with_open_stdin(cmd: &mut Command) -> Result<Self> {
        cmd.stdin(Stdio::piped());
        let mut bg = Self::spawn_inner(cmd, None, true)?;
        bg.held_stdin = bg.child.stdin.take();
        Ok(bg)
    }

    /// Writes `data` to the held stdin pipe and closes it (EOF).
    pub fn send_stdin_and_close(&mut self, data: &[u8]) -> Result<()> {
        let mut pipe = self
            .held_stdin
            .take()
            .ok_or_else(|| anyhow!("stdin is not held open"))?;
        pipe.write_all(data)?;
        drop(pipe);
        Ok(())
    }

    /// Spawns `cmd` with piped stdio; `stdin` is written and then closed (EOF), or stdin is
    /// /dev/null when `None`.
    pub fn spawn(cmd: &mut Command, stdin: Option<Vec<u8>>) -> Result<Self> {
        Self::spawn_inner(cmd, stdin, false)
    }

    fn spawn_inner(cmd: &mut Command, stdin: Option<Vec<u8>>, hold_stdin: bool) -> Result<Self> {
        let description = describe(cmd);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        if !hold_stdin {
            cmd.stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            });
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("spawn {description}"))?;
        let stdout = Buffer::default();
        let stderr = Buffer::default();
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            readers.push(drain(out, stdout.clone()));
        }
        if let Some(err) = child.stderr.take() {
            readers.push(drain(err, stderr.clone()));
        }
        let stdin_writer = match (stdin, if hold_stdin { None } else { child.stdin.take() }) {
            (Some(data), Some(mut pipe)) => Some(std::thread::spawn(move || {
                // A workload that exits without reading gives EPIPE: not an error here.
                let _ = pipe.write_all(&data);
                drop(pipe);
            })),
            _ => None,
        };
        Ok(Background {
            child,
            description,
            stdout,
            stderr,
            readers,
            stdin_writer,
            held_stdin: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stdout_now(&self) -> String {
        String::from_utf8_lossy(&snapshot(&self.stdout)).into_owned()
    }

    /// Waits until stdout contains `needle`; fails on timeout or if the process exits first.
    pub fn wait_for_stdout(&mut self, needle: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.stdout_now().contains(needle) {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                // Give the readers a moment: the text may be in flight.
                std::thread::sleep(Duration::from_millis(50));
                if self.stdout_now().contains(needle) {
                    return Ok(());
                }
                bail!(
                    "{} exited ({}) before printing {needle:?}\nstdout: {}\nstderr: {}",
                    self.description,
                    Status::from(status),
                    self.stdout_now(),
                    String::from_utf8_lossy(&snapshot(&self.stderr))
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "timeout ({timeout:?}) waiting for {needle:?} from {}\nstdout: {}\nstderr: {}",
                    self.description,
                    self.stdout_now(),
                    String::from_utf8_lossy(&snapshot(&self.stderr))
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the process has exited yet.
    pub fn has_exited(&mut self) -> Result<bool> {
        Ok(self.child.try_wait()?.is_some())
    }

    /// Waits for the exit; on timeout kills the process and fails with what it printed.
    pub fn wait(mut self, timeout: Duration) -> Result<Output> {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait()? {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!(
                    "timeout ({timeout:?}): {}\nstdout so far: {}\nstderr so far: {}",
                    self.description,
                    self.stdout_now(),
                    String::from_utf8_lossy(&snapshot(&self.stderr))
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        // The pipes close when every holder is gone; a daemon that inherited them (a shim
        // that kept a copy by mistake) must not hang the test, so the readers get a deadline.
        let reader_deadline = Instant::now() + Duration::from_secs(10);
        for r in self.readers.drain(..) {
            while !r.is_finished() && Instant::now() < reader_deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if r.is_finished() {
                let _ = r.join();
            } else {
                bail!(
                    "{} exited but its stdout/stderr stayed open 10 s later (a leaked pipe)",
                    self.description
                );
            }
        }
        if let Some(w) = self.stdin_writer.take() {
            if w.is_finished() {
                let _ = w.join();
            }
        }
        Ok(Output {
            status: status.into(),
            stdout: snapshot(&self.stdout),
            stderr: snapshot(&self.stderr),
        })
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `cmd` to completion within `timeout`.
pub fn run(cmd: &mut Command, stdin: Option<Vec<u8>>, timeout: Duration) -> Result<Output> {
    Background::spawn(cmd, stdin)?.wait(timeout)
}

/// Output of a command run on a pty: what the terminal showed (stdout and stderr merged, as a
/// terminal merges them) and the exit status.
#[derive(Clone, Debug)]
pub struct PtyOutput {
    pub status: Status,
    pub screen: Vec<u8>,
}

impl PtyOutput {
    /// What the terminal showed, as text without the carriage returns of its line endings.
    pub fn screen_text(&self) -> String {
        String::from_utf8_lossy(&self.screen).replace('\r', "")
    }
}

/// Runs `cmd` with a fresh pty (rows x cols) as its controlling terminal and stdio, writes
/// `input` to the terminal, collects what the terminal shows until the command exits.
pub fn run_on_pty(
    cmd: &mut Command,
    rows: u16,
    cols: u16,
    input: &[u8],
    timeout: Duration,
) -> Result<PtyOutput> {
    let description = describe(cmd);
    let size = nix::pty::Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&size), None).context("openpty")?;
    let slave: OwnedFd = pty.slave;
    let master: OwnedFd = pty.master;
    cmd.stdin(Stdio::from(slave.try_clone()?))
        .stdout(Stdio::from(slave.try_clone()?))
        .stderr(Stdio::from(slave.try_clone()?));
    // SAFETY: only async-signal-safe calls (setsid, ioctl) between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("spawn {description}"))?;
    // Only the child may hold the slave, so the master reads EIO once it is gone. `cmd` keeps
    // the Stdio it was given (three slave descriptors) until it is dropped, after this returns:
    // replaced here, or the reader waited out its whole deadline after every exit (5 s of the
    // 6 s the benchmark's TTY row once showed for both runtimes).
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    drop(slave);
    let screen = Buffer::default();
    let mut master_file = std::fs::File::from(master);
    let reader = drain(master_file.try_clone()?, screen.clone());
    if !input.is_empty() {
        master_file.write_all(input)?;
    }
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(anyhow!(
                "timeout ({timeout:?}) on a pty: {description}\nscreen so far: {}",
                String::from_utf8_lossy(&snapshot(&screen))
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let reader_deadline = Instant::now() + Duration::from_secs(5);
    while !reader.is_finished() && Instant::now() < reader_deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    // The master is closed when this function returns; a reader still blocked (a process
    // that kept the slave open) ends with EIO then or stays detached.
    let _ = master_file.as_raw_fd();
    Ok(PtyOutput {
        status: status.into(),
        screen: snapshot(&screen),
    })
}

/// Builds the Rust program `source` (written to `source_path`) as a static executable at `out`,
/// for tests that need a small program of their own inside a container; `what` names it in
/// errors. `RUSTC` (cargo sets it for tests) picks the compiler.
pub fn build_static_rust(
    what: &str,
    source: &str,
    source_path: &std::path::Path,
    out: &std::path::Path,
) -> Result<()> {
    std::fs::write(source_path, source)
        .with_context(|| format!("write {}", source_path.display()))?;
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let built = Command::new(rustc)
        .args([
            "--edition",
            "2021",
            "-O",
            "-C",
            "target-feature=+crt-static",
            "-o",
        ])
        .arg(out)
        .arg(source_path)
        .output()
        .with_context(|| format!("run rustc for {what}"))?;
    if !built.status.success() {
        bail!("build {what}: {}", String::from_utf8_lossy(&built.stderr));
    }
    Ok(())
}
