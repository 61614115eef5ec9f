//! Running an exec's helper through a command, for both drivers. The command is given the
//! helper's files as descriptors, named `/proc/self/fd/N` in its arguments, and either
//! - stays the helper's parent until the exec ends, so its exit is the exec's
//!   ([`Handover::StaysParent`]: `lxc-attach`), or
//! - forks the helper into the container, writes the helper's host pid and a newline to its
//!   stdout and exits ([`Handover::PrintsPid`]: the helper's own `--attach` mode); the helper
//!   is then the shim's child (the shim is a subreaper) and its exit the exec's.

use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use super::{ExecFiles, SpawnedExec};
use crate::errors::{IoContext, Result, ShimError};
use crate::host::exits::ChildExits;

/// How the command hands over the exec's helper (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handover {
    StaysParent,
    PrintsPid,
}

/// The most descriptors a command is given: the exec's three files, the init's pidfd and its
/// seccomp filters.
const MAX_PASSED: usize = 5;

impl ExecFiles {
    /// The helper's arguments: its own file, its socket and its spec, as the command's
    /// `/proc/self/fd` names them.
    pub fn helper_args(&self) -> [String; 3] {
        [&self.helper, &self.socket, &self.spec].map(|fd| fd_path(fd.as_raw_fd()))
    }

    fn raw_fds(&self) -> [RawFd; 3] {
        [&self.helper, &self.socket, &self.spec].map(AsRawFd::as_raw_fd)
    }
}

/// How a process names one of its own descriptors.
pub fn fd_path(fd: RawFd) -> String {
    format!("/proc/self/fd/{fd}")
}

/// Lets `command` inherit `fds` (clears their close-on-exec flag in the child only). The
/// caller keeps them open until the command is spawned.
pub fn keep_fds_across_exec(command: &mut Command, fds: &[RawFd]) -> Result<()> {
    let mut kept = [-1; MAX_PASSED];
    let slots = kept
        .get_mut(..fds.len())
        .ok_or_else(|| ShimError::Internal(format!("{} descriptors for a command", fds.len())))?;
    slots.copy_from_slice(fds);
    let count = fds.len();
    // SAFETY: between fork and exec only fcntl runs (async-signal-safe), over an array that
    // was filled before the fork and is moved into the closure: nothing allocates.
    unsafe {
        command.pre_exec(move || {
            for &fd in &kept[..count] {
                if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    Ok(())
}

/// Spawns `command`, which names `files` (and the `extra` descriptors, such as the init's
/// pidfd, which the caller keeps open) in its arguments, and returns the exec's helper once
/// it runs in the container.
pub async fn spawn(
    exits: &ChildExits,
    mut command: Command,
    files: &ExecFiles,
    extra: &[RawFd],
    handover: Handover,
) -> Result<SpawnedExec> {
    let fds: Vec<RawFd> = files.raw_fds().iter().chain(extra).copied().collect();
    keep_fds_across_exec(&mut command, &fds)?;
    let stdout = match handover {
        Handover::PrintsPid => Stdio::piped(),
        Handover::StaysParent => Stdio::null(),
    };
    command
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::piped());
    let mut child = command.spawn().ctx(|| "run the exec command".to_string())?;
    let command_pid = child.id();
    // Unclaimed exits are kept (host::exits): subscribing right after the spawn loses none.
    let command_exit = exits.wait(command_pid as i32);
    let stderr = child.stderr.take();
    let diagnostics = tokio::task::spawn_blocking(move || {
        let mut text = String::new();
        if let Some(mut s) = stderr {
            let _ = std::io::Read::read_to_string(&mut s, &mut text);
        }
        text
    });
    if handover == Handover::StaysParent {
        return Ok(SpawnedExec {
            pid: command_pid,
            exit: command_exit,
            diagnostics,
        });
    }
    let stdout = child.stdout.take();
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        if let Some(out) = stdout {
            let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line);
        }
        line
    })
    .await
    .map_err(|e| ShimError::Internal(format!("read the exec command's output: {e}")))?;
    let code = command_exit.await.unwrap_or(-1);
    match line.trim().parse::<u32>() {
        Ok(pid) if code == 0 && pid > 0 => Ok(SpawnedExec {
            pid,
            exit: exits.wait(pid as i32),
            diagnostics,
        }),
        _ => {
            let said = diagnostics.await.unwrap_or_default();
            let said = said.trim();
            Err(ShimError::Internal(if said.is_empty() {
                format!("the exec command failed (exit status {code})")
            } else {
                format!("the exec command failed (exit status {code}): {said}")
            }))
        }
    }
}
