//! What the node does with a CT beyond its config: the extension point through which the
//! `pve` driver's end-to-end tests make the test server run real LXC containers.
//!
//! The server owns the API side (validation, config file, locks, tasks); a [`NodeBackend`]
//! owns the node side. Every method runs inside the CT's task (so it may take time, and
//! what it prints goes into the task log) while the server holds the CT's config lock.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use crate::ctconf::CtConfig;

/// The task log of the running operation, shared with the server.
#[derive(Clone, Debug, Default)]
pub struct TaskLog {
    pub(crate) lines: Arc<Mutex<Vec<String>>>,
    pub(crate) warnings: Arc<Mutex<u32>>,
}

impl TaskLog {
    /// Appends a line to the task log (Proxmox: what the worker prints).
    pub fn line(&self, text: impl Into<String>) {
        let text = text.into();
        let mut lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        for l in text.split('\n') {
            lines.push(l.to_string());
        }
    }

    /// Logs a warning the way Proxmox's `warn` in a worker does ("WARN: ...") and counts it,
    /// so the task ends with `WARNINGS: n`.
    pub fn warn(&self, text: impl AsRef<str>) {
        self.line(format!("WARN: {}", text.as_ref()));
        *self.warnings.lock().unwrap_or_else(|e| e.into_inner()) += 1;
    }

    /// The lines so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Facts about the node a backend may need.
#[derive(Clone, Debug)]
pub struct NodeContext {
    /// The node name.
    pub node: String,
    /// Where the CT configs live (Proxmox: `/etc/pve/lxc`), `VMID.conf` each.
    pub config_dir: PathBuf,
    /// Where the per-CT config lock files live (Proxmox: `/run/lock/lxc`).
    pub lock_dir: PathBuf,
}

impl NodeContext {
    /// Path of `VMID.conf`.
    pub fn config_path(&self, vmid: u32) -> PathBuf {
        self.config_dir.join(format!("{vmid}.conf"))
    }
}

/// An error of the node side; its message becomes the task's exit status
/// (`TASK ERROR: <message>`).
pub type BackendResult = Result<(), String>;

/// The node side of CT operations. Methods get the CT's config as the server has just
/// (re)loaded it under the config lock.
#[async_trait]
pub trait NodeBackend: Send + Sync + 'static {
    /// After the config of a new CT was written (still `lock: create`): prepare the root
    /// file system from `ostemplate` (Proxmox: allocate volumes and unpack the template).
    async fn create(
        &self,
        _ctx: &NodeContext,
        _vmid: u32,
        _ostemplate: &str,
        _config: &CtConfig,
        _log: &TaskLog,
    ) -> BackendResult {
        Ok(())
    }

    /// Starts the CT (Proxmox: `systemctl start pve-container@VMID`, i.e. `lxc-start`).
    async fn start(
        &self,
        ctx: &NodeContext,
        vmid: u32,
        config: &CtConfig,
        log: &TaskLog,
    ) -> BackendResult;

    /// Stops the CT: at once without a `timeout` (Proxmox: `lxc-stop --kill`), else asks it
    /// to shut down cleanly within `timeout` (Proxmox: `lxc-stop --timeout`), where an error
    /// means it did not stop in time.
    async fn stop(
        &self,
        ctx: &NodeContext,
        vmid: u32,
        config: &CtConfig,
        timeout: Option<Duration>,
        log: &TaskLog,
    ) -> BackendResult;

    /// Removes what `create` made (the config file itself is removed by the server).
    async fn destroy(
        &self,
        _ctx: &NodeContext,
        _vmid: u32,
        _config: &CtConfig,
        _log: &TaskLog,
    ) -> BackendResult {
        Ok(())
    }

    /// Whether the CT runs now (the source of `status: running|stopped`).
    async fn is_running(&self, ctx: &NodeContext, vmid: u32) -> bool;

    /// Whether starts go through the host's systemd, which enforces the unit's start limit
    /// itself (the server then does not imitate it).
    fn enforces_start_limit(&self) -> bool {
        false
    }

    /// `systemctl reset-failed pve-container@VMID`, where starts go through systemd.
    fn reset_failed(&self, _vmid: u32) {}

    /// The PID of the CT's init, when running and known.
    async fn init_pid(&self, _ctx: &NodeContext, _vmid: u32) -> Option<u32> {
        None
    }
}

/// The default backend: running state in memory, nothing executed.
#[derive(Debug, Default)]
pub struct InMemoryBackend {
    running: Mutex<BTreeSet<u32>>,
}

impl InMemoryBackend {
    fn set(&self, vmid: u32, running: bool) {
        let mut set = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if running {
            set.insert(vmid);
        } else {
            set.remove(&vmid);
        }
    }
}

#[async_trait]
impl NodeBackend for InMemoryBackend {
    async fn start(&self, _: &NodeContext, vmid: u32, _: &CtConfig, _: &TaskLog) -> BackendResult {
        self.set(vmid, true);
        Ok(())
    }

    async fn stop(
        &self,
        _: &NodeContext,
        vmid: u32,
        _: &CtConfig,
        _: Option<Duration>,
        _: &TaskLog,
    ) -> BackendResult {
        self.set(vmid, false);
        Ok(())
    }

    // No `destroy`: the server stops a running CT before it destroys it.

    async fn is_running(&self, _: &NodeContext, vmid: u32) -> bool {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&vmid)
    }
}
