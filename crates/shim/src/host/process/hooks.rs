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

use std::path::Path;
use std::time::Duration;

use oci_spec::runtime::Hook;

use crate::errors::{Result, ShimError};
use crate::host::process::command::run_command_with_input;
use crate::host::process::exits::ChildExits;

/// Where a hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunIn {
    /// The runtime's (host's) namespaces.
    Host,
    /// The container's namespaces; with `root`, also its root directory and cwd.
    Container { pid: u32, root: bool },
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
    place: RunIn,
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

async fn run_one(exits: &ChildExits, hook: &Hook, state: &[u8], place: RunIn) -> Result<()> {
    let args = hook.args().clone().unwrap_or_default();
    let mut cmd = match place {
        RunIn::Host => {
            let mut cmd = std::process::Command::new(hook.path());
            if let Some(argv0) = args.first() {
                std::os::unix::process::CommandExt::arg0(&mut cmd, argv0);
            }
            cmd.args(args.iter().skip(1));
            cmd
        }
        RunIn::Container { pid, root } => {
            let mut cmd = std::process::Command::new("nsenter");
            cmd.arg("--target")
                .arg(pid.to_string())
                .args(["--mount", "--uts", "--ipc", "--net", "--pid"]);
            // runc runs these hooks as the container's root: in its user namespace where it
            // has one (nsenter then becomes uid/gid 0 there); joining one's own is refused.
            if super::namespaces::differs(pid, "user").unwrap_or(false) {
                cmd.arg("--user");
            }
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
    let limit = hook
        .timeout()
        .filter(|t| *t > 0)
        .map(|t| Duration::from_secs(t as u64));
    let out = run_command_with_input(exits, cmd, Some(state.to_vec()), limit).await?;
    let (code, stderr) = (out.code, out.stderr);
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
