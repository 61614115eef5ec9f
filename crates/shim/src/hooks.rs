//! OCI hooks, run by the shim at the points the runtime spec gives, with the container state
//! JSON on stdin and each hook's timeout honoured.
//!
//! - `prestart` (deprecated) and `createRuntime`: runtime (host) namespace, after the
//!   container's namespaces exist and its pid is known, before the workload runs.
//! - `createContainer`: in the container's namespaces (entered with `nsenter`), after those.
//! - `startContainer`: in the container's namespaces and root, just before the workload is
//!   executed.
//! - `poststart`: host, after the workload started; a failure is logged, not fatal.
//! - `poststop`: host, after the container is deleted; a failure is logged, not fatal.
//!
//! LXC sets up the container's root before the shim can act (its mount hooks do not carry
//! OCI's state JSON), so `createRuntime`/`createContainer` run after pivot_root, not before:
//! documented in docs/shim.md.

use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use oci_spec::runtime::Hook;

use crate::errors::{IoContext, Result, ShimError};
use crate::exits::ChildExits;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Where {
    Host,
    /// The container's namespaces; with `root`, also its root directory and cwd.
    Container {
        pid: u32,
        root: bool,
    },
}

/// The OCI state of a container, as hooks read it on stdin.
pub fn state_json(
    id: &str,
    status: &str,
    pid: u32,
    bundle: &Path,
    annotations: &std::collections::HashMap<String, String>,
) -> Vec<u8> {
    let mut state = serde_json::json!({
        "ociVersion": "1.2.0",
        "id": id,
        "status": status,
        "bundle": bundle.display().to_string(),
        "annotations": annotations,
    });
    if pid > 0 {
        state["pid"] = serde_json::json!(pid);
    }
    serde_json::to_vec(&state).unwrap_or_default()
}

/// Runs hooks in order; the first failure stops the rest and is returned, naming the hook.
pub async fn run_all(
    exits: &ChildExits,
    kind: &str,
    hooks: &[Hook],
    state: &[u8],
    place: Where,
) -> Result<()> {
    for (i, hook) in hooks.iter().enumerate() {
        run_one(exits, hook, state, place).await.map_err(|e| {
            ShimError::FailedPrecondition(format!(
                "{kind} hook {i} ({}): {e}",
                hook.path().display()
            ))
        })?;
    }
    Ok(())
}

async fn run_one(exits: &ChildExits, hook: &Hook, state: &[u8], place: Where) -> Result<()> {
    let args = hook.args().clone().unwrap_or_default();
    let mut cmd = match place {
        Where::Host => {
            let mut cmd = std::process::Command::new(hook.path());
            if let Some(argv0) = args.first() {
                std::os::unix::process::CommandExt::arg0(&mut cmd, argv0);
            }
            cmd.args(args.iter().skip(1));
            cmd
        }
        Where::Container { pid, root } => {
            let mut cmd = std::process::Command::new("nsenter");
            cmd.arg("--target")
                .arg(pid.to_string())
                .args(["--mount", "--uts", "--ipc", "--net", "--pid"]);
            if root {
                cmd.args(["--root", "--wd"]);
            }
            cmd.arg("--").arg(hook.path()).args(args.iter().skip(1));
            cmd
        }
    };
    cmd.env_clear();
    for pair in hook.env().clone().unwrap_or_default() {
        if let Some((k, v)) = pair.split_once('=') {
            cmd.env(k, v);
        }
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().ctx(|| "start hook".to_string())?;
    let exit = exits.wait(child.id() as i32);
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin must not block us.
        let state = state.to_vec();
        std::thread::spawn(move || {
            let _ = stdin.write_all(&state);
        });
    }
    let stderr = child.stderr.take();
    let read_err = tokio::task::spawn_blocking(move || {
        let mut text = String::new();
        if let Some(mut s) = stderr {
            let _ = std::io::Read::read_to_string(&mut s, &mut text);
        }
        text
    });
    let limit = hook
        .timeout()
        .filter(|t| *t > 0)
        .map(|t| Duration::from_secs(t as u64));
    let code = match limit {
        Some(limit) => match tokio::time::timeout(limit, exit).await {
            Ok(code) => code.unwrap_or(-1),
            Err(_) => {
                let _ = child.kill();
                return Err(ShimError::Internal(format!(
                    "timed out after {}s",
                    limit.as_secs()
                )));
            }
        },
        None => exit.await.unwrap_or(-1),
    };
    let stderr = tokio::time::timeout(Duration::from_secs(1), read_err)
        .await
        .ok()
        .and_then(|r| r.ok())
        .unwrap_or_default();
    if code != 0 {
        return Err(ShimError::Internal(format!(
            "exited with {code}{}",
            if stderr.trim().is_empty() {
                String::new()
            } else {
                format!(": {}", stderr.trim())
            }
        )));
    }
    Ok(())
}
