//! Runs a short command to completion through the shim's reaper (a plain `wait` would race
//! with the reaper and lose the status): `lxc-info`, `lxc-stop`, `nsenter`, OCI hooks.

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use crate::errors::{IoContext, Result, ShimError};
use crate::host::process::exits::ChildExits;

/// How long output is still read after the command exited: a child it left behind may hold
/// the pipe open.
const OUTPUT_GRACE: Duration = Duration::from_secs(1);

/// The first `program` in the directories of PATH, as a shell (and LXC's `on_path`) finds it.
pub fn on_path(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// Output of a command the shim ran to completion.
pub struct CommandOutput {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` with no input, failing if it takes longer than `limit`.
pub async fn run_command(
    exits: &ChildExits,
    cmd: std::process::Command,
    limit: Duration,
) -> Result<CommandOutput> {
    run_command_with_input(exits, cmd, None, Some(limit)).await
}

/// Runs `cmd`, writes `input` to its stdin (from a thread: a command that does not read its
/// stdin must not block us), and waits for it at most `limit`, if given.
pub async fn run_command_with_input(
    exits: &ChildExits,
    mut cmd: std::process::Command,
    input: Option<Vec<u8>>,
    limit: Option<Duration>,
) -> Result<CommandOutput> {
    let program = format!("{:?}", cmd.get_program());
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().ctx(|| format!("run {program}"))?;
    let exit = exits.wait(child.id() as i32);
    if let (Some(mut stdin), Some(input)) = (child.stdin.take(), input) {
        std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
    }
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let read = tokio::task::spawn_blocking(move || {
        let mut out = String::new();
        let mut err = String::new();
        if let Some(s) = stdout.as_mut() {
            let _ = std::io::Read::read_to_string(s, &mut out);
        }
        if let Some(s) = stderr.as_mut() {
            let _ = std::io::Read::read_to_string(s, &mut err);
        }
        (out, err)
    });
    let code = match limit {
        Some(limit) => match tokio::time::timeout(limit, exit).await {
            Ok(code) => code.unwrap_or(-1),
            Err(_) => {
                let _ = child.kill();
                return Err(ShimError::Internal(format!(
                    "{program} did not finish in {}s",
                    limit.as_secs()
                )));
            }
        },
        None => exit.await.unwrap_or(-1),
    };
    let (stdout, stderr) = tokio::time::timeout(OUTPUT_GRACE, read)
        .await
        .ok()
        .and_then(|r| r.ok())
        .unwrap_or_default();
    Ok(CommandOutput {
        code,
        stdout,
        stderr,
    })
}
