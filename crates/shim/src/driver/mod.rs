//! Node drivers: how a planned container becomes a running LXC container on this node. The
//! Task service, events and stdio are written once over this trait; `lxc` runs plain LXC on
//! this host, `pve` makes each container a Proxmox CT.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;

use crate::errors::{IoContext, Result, ShimError};
use crate::exits::ChildExits;

pub mod lxc;
pub mod pve;

/// What the driver needs to make a container.
pub struct CreateSpec<'a> {
    /// The containerd namespace and container id.
    pub namespace: &'a str,
    pub id: &'a str,
    /// The planned container; each driver renders it its own way (plain LXC config, or a
    /// Proxmox CT config plus include). Tags and description may still be added by the driver.
    pub plan: &'a lxc_config::ContainerPlan,
    /// The container's state directory (helper, specs, sockets, logs).
    pub state_dir: &'a Path,
}

#[async_trait]
pub trait Driver: Send + Sync {
    fn kind(&self) -> &'static str;

    /// The lxcpath the container lives in (for the LXC monitor and lxc-attach).
    fn lxcpath(&self) -> &Path;

    /// Writes everything the container needs; nothing runs yet. Returns the LXC name the
    /// container got (the container id for `lxc`, the VMID for `pve`): the name for the LXC
    /// monitor, `lxc-attach` and every later call.
    async fn create(&self, spec: &CreateSpec<'_>) -> Result<String>;

    /// Starts the container's init (the helper). Returns the pid of a child of the shim that
    /// lives as long as the container (`lxc-start -F`), if the driver has one.
    async fn start(&self, name: &str, state_dir: &Path) -> Result<Option<u32>>;

    /// The command that runs `helper_args` inside the running container as an exec.
    fn exec_command(&self, name: &str, helper_args: &[String]) -> std::process::Command;

    /// Stops the container if it runs and removes what `create` made. Idempotent: a missing
    /// container is not an error.
    async fn destroy(&self, name: &str, state_dir: &Path) -> Result<()>;

    /// Whether the container is still running (for cleanup after a crashed shim).
    async fn is_running(&self, name: &str) -> bool;
}

/// `lxc-attach` running `helper_args` in container `name` of `lxcpath` as an exec.
pub fn lxc_attach_command(
    lxcpath: &Path,
    name: &str,
    helper_args: &[String],
) -> std::process::Command {
    let mut cmd = std::process::Command::new("lxc-attach");
    cmd.arg("-n")
        .arg(name)
        .arg("-P")
        .arg(lxcpath)
        // lxc-attach would drop the capabilities the container's config does not keep from
        // the bounding set, so the helper it execs as root would start without them and
        // could not set up the exec's user (setgroups needs CAP_SETGID) when the pod drops
        // ALL. The helper applies the exec's own capability sets (bounding set included),
        // as runc does; cgroup and LSM confinement stay.
        .arg("--elevated-privileges=CAP")
        .arg("--clear-env")
        .arg("--")
        .args(helper_args);
    cmd
}

/// Output of a helper command the shim ran to completion.
pub struct CommandOutput {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs a short command and waits for it through the shim's reaper (a plain `wait` would race
/// with the reaper and lose the status).
pub async fn run_command(
    exits: &ChildExits,
    mut cmd: std::process::Command,
    limit: Duration,
) -> Result<CommandOutput> {
    let program = format!("{:?}", cmd.get_program());
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().ctx(|| format!("run {program}"))?;
    let exit = exits.wait(child.id() as i32);
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
    let code = match tokio::time::timeout(limit, exit).await {
        Ok(Ok(code)) => code,
        Ok(Err(_)) => -1,
        Err(_) => {
            let _ = child.kill();
            return Err(ShimError::Internal(format!(
                "{program} did not finish in {}s",
                limit.as_secs()
            )));
        }
    };
    let (stdout, stderr) = read.await.unwrap_or_default();
    Ok(CommandOutput {
        code,
        stdout,
        stderr,
    })
}

/// The per-namespace lxcpath: containers of different containerd namespaces may share an id.
/// Long namespaces are shortened so that LXC's monitor socket name fits.
pub fn namespaced_lxcpath(base: &Path, namespace: &str) -> PathBuf {
    crate::lxcmon::lxcpath_for_namespace(base, namespace)
}
