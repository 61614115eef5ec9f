//! Running an exec's helper through a command (the helper's own `--attach` mode, see
//! [`super::attach`]). The command is given the helper's files as descriptors, named
//! `/proc/self/fd/N` in its arguments; it forks the helper into the container, writes the
//! helper's host pid and a newline to its stdout and exits. The helper is then the shim's
//! child (the shim is a subreaper) and its exit the exec's.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::process::{Command, Stdio};

use super::{ExecFiles, SpawnedExec};
use crate::errors::{IoContext, Result, ShimError};
use crate::host::process::exits::ChildExits;
use crate::host::process::{keep_fds_across_exec, KeptFd};

impl ExecFiles {
    /// The helper's arguments: its own file, its socket and its spec, as the command's
    /// `/proc/self/fd` names them.
    pub fn helper_args(&self) -> [String; 3] {
        [&self.helper, &self.socket, &self.spec].map(|fd| fd_path(fd.as_raw_fd()))
    }
}

/// How a process names one of its own descriptors.
pub fn fd_path(fd: RawFd) -> String {
    format!("/proc/self/fd/{fd}")
}

/// Spawns `command`, which names `files` and the `extra` descriptors (such as the init's
/// pidfd) in its arguments and is given them under the same numbers, and returns the exec's
/// helper once it runs in the container.
pub async fn spawn(
    exits: &ChildExits,
    mut command: Command,
    files: ExecFiles,
    extra: Vec<OwnedFd>,
) -> Result<SpawnedExec> {
    let ExecFiles {
        helper,
        socket,
        spec,
    } = files;
    let passed = [helper, socket, spec].into_iter().chain(extra);
    // The command owns them from here and closes them once spawned (dropped below).
    keep_fds_across_exec(&mut command, passed.map(KeptFd::same))?;
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().ctx(|| "run the exec command".to_string())?;
    drop(command);
    let command_pid = child.id();
    // Unclaimed exits are kept (host::exits): subscribing right after the spawn loses none.
    let command_exit = exits.wait(command_pid as i32);
    let stderr = child.stderr.take();
    let diagnostics = crate::logging::spawn_blocking(move || {
        let mut text = String::new();
        if let Some(mut s) = stderr {
            let _ = std::io::Read::read_to_string(&mut s, &mut text);
        }
        text
    });
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
