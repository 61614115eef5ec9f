//! One container and everything later RPCs do to it (start, kill, delete, pause, resume,
//! update, stats, pids). Written once over the driver's types (`crate::driver`): what
//! differs between drivers stays behind them; host mechanics come from [`crate::host`].
//! Create and its undo are in [`create`], execs in [`exec`].

mod create;
mod exec;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU32;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use containerd_shim::protos::api::ProcessInfo;
use containerd_shim::protos::events::task::{TaskOOM, TaskStart};
use containerd_shim::protos::protobuf::MessageField;
use containerd_shim::protos::shim::shim::KillRequest;
use containerd_shim::protos::topics;
use log::{debug, warn};
use oci_spec::runtime::{Hook, Hooks, LinuxResources};
use tokio::sync::Mutex;

use super::events::Events;
use super::process::{describe, Pending, Process, Status};
use crate::driver::{ExecSpawner, InitExit, NodeContainer};
use crate::errors::{Result, ShimError};
use crate::host::cgroup::{read_oom_kills, read_oom_kills_copy, ContainerCgroup, OomLedger};
use crate::host::helper;
use crate::host::process::exits::ChildExits;
use crate::host::process::hooks::{self, RunIn};

pub use create::teardown;

/// How long a container's helper may take to connect and get ready.
const HELPER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the init's exit waits for a killed exec's exit to be published first.
const EXEC_EXIT_WAIT: Duration = Duration::from_secs(5);

/// What every container of this shim shares.
pub struct Env {
    pub namespace: String,
    pub exits: ChildExits,
    pub events: Events,
}

pub struct Container {
    pub id: String,
    pub bundle: PathBuf,
    state_dir: PathBuf,
    /// The container on the node, as its driver made it.
    node: Arc<dyn NodeContainer>,
    /// How execs get into it.
    exec_spawner: Box<dyn ExecSpawner>,
    pub init: Arc<Process>,
    execs: Mutex<HashMap<String, Arc<Process>>>,
    /// Found once the init runs; None where it cannot be found (no pids, stats, freeze).
    cgroup: Option<ContainerCgroup>,
    /// The OOM kills reported for this container (with a cgroup that has a memory controller).
    oom: Option<Arc<OomLedger>>,
    rootfs_mounted: bool,
    exec_seq: AtomicU32,
    hooks: Option<Hooks>,
    annotations: HashMap<String, String>,
    env: Arc<Env>,
}

impl Container {
    /// Runs `hooks` of `kind` with the container's state as `status`; the first failure is
    /// returned.
    async fn run_hooks(
        &self,
        kind: &str,
        hooks: &[Hook],
        status: &str,
        place: RunIn,
    ) -> Result<()> {
        if hooks.is_empty() {
            return Ok(());
        }
        // A stopped container has no pid in the runtime spec's state.
        let pid = if status == "stopped" {
            0
        } else {
            self.init.pid()
        };
        let state = hooks::state_json(&self.id, status, pid, &self.bundle, &self.annotations);
        hooks::run_all(&self.env.exits, kind, hooks, &state, place).await
    }

    /// Hooks whose failure the spec says to log, not to report (poststart, poststop).
    async fn run_hooks_logged(&self, kind: &str, hooks: Option<Vec<Hook>>, status: &str) {
        if let Err(e) = self
            .run_hooks(kind, &hooks.unwrap_or_default(), status, RunIn::Host)
            .await
        {
            warn!("{}: {e}", self.id);
        }
    }

    fn cgroup(&self) -> Result<ContainerCgroup> {
        self.cgroup.clone().ok_or_else(|| {
            ShimError::FailedPrecondition(format!("container {} has no cgroup yet", self.id))
        })
    }

    /// The init (`exec_id` empty) or exec `exec_id`.
    pub async fn process(&self, exec_id: &str) -> Result<Arc<Process>> {
        if exec_id.is_empty() {
            return Ok(self.init.clone());
        }
        self.execs
            .lock()
            .await
            .get(exec_id)
            .cloned()
            .ok_or_else(|| {
                ShimError::NotFound(format!(
                    "exec {exec_id:?} not found in container {}",
                    self.id
                ))
            })
    }

    /// Fails unless the container's init is `expected`; `doing` names the refused action.
    fn expect_init(&self, status: Status, expected: Status, doing: &str) -> Result<()> {
        if status == expected {
            return Ok(());
        }
        Err(ShimError::FailedPrecondition(format!(
            "cannot {doing} container {}: it is {}",
            self.id,
            describe(status)
        )))
    }

    fn watch_oom(&self) {
        let (Some(cg), Some(ledger)) = (&self.cgroup, &self.oom) else {
            return;
        };
        let Some(dir) = cg.memory_dir().map(Path::to_path_buf) else {
            return;
        };
        let watch = if cg.is_v2() {
            crate::host::cgroup::watch_oom_v2
        } else {
            crate::host::cgroup::watch_oom_v1
        };
        let events = self.env.events.clone();
        let id = self.id.clone();
        if let Err(e) = watch(&dir, ledger.clone(), move || publish_oom(&events, &id)) {
            warn!("OOM notifications unavailable: {e}");
        }
    }

    /// Reports an OOM kill the live watch missed, before the init's exit is published (as
    /// runc's shim orders them). The init's own kill counts before it dies, but LXC removes
    /// the cgroup right after, often before the change notification reaches the watch: the
    /// counter is read from the cgroup if it is still there, else from the copy the
    /// `lxc.hook.stop` hook took just before LXC removed it.
    fn report_missed_oom(&self) {
        let (Some(cg), Some(ledger)) = (&self.cgroup, &self.oom) else {
            return;
        };
        let total = cg
            .oom_counter_file()
            .and_then(|live| read_oom_kills(&live))
            .or_else(|| {
                read_oom_kills_copy(&self.state_dir.join(lxc_config::OOM_COUNTER_AT_STOP_NAME))
            });
        match total {
            Some(total) if ledger.take_new_kills(total) => {
                publish_oom(&self.env.events, &self.id);
            }
            Some(_) => {}
            None => debug!("{}: no OOM kill counter left to read at exit", self.id),
        }
    }

    /// Publishes the init's exit once it comes: after the exits of its execs, which die with
    /// it (its pid namespace).
    async fn finish_when_init_exits(self: Arc<Self>, exit: InitExit) {
        let code = exit.await;
        let at = SystemTime::now();
        self.report_missed_oom();
        if crate::host::cgroup::shares_pid_namespace(&self.bundle) {
            if let Some(cg) = &self.cgroup {
                cg.kill_all();
            }
        }
        let execs: Vec<Arc<Process>> = self.execs.lock().await.values().cloned().collect();
        for exec in execs {
            if exec.state().is_running() {
                kill_pid(exec.pid());
                let _ = tokio::time::timeout(EXEC_EXIT_WAIT, exec.wait()).await;
            }
        }
        self.env.events.exit(&self.id, &self.init, code, at).await;
    }

    /// Start of the init (`exec_id` empty) or of an exec; returns its pid.
    pub async fn start(&self, exec_id: &str) -> Result<u32> {
        let process = self.process(exec_id).await?;
        if exec_id.is_empty() {
            self.start_init().await
        } else {
            self.start_exec(&process).await
        }
    }

    async fn start_init(&self) -> Result<u32> {
        let init = &self.init;
        let _guard = init.lifecycle.lock().await;
        let conn = {
            let mut state = init.state();
            self.expect_init(state.status, Status::Created, "start")?;
            match state.take_pending() {
                Pending::Init(conn) => conn,
                _ => return Err(ShimError::FailedPrecondition("init already started".into())),
            }
        };
        let pid = init.pid();
        let start_hooks = self
            .hooks
            .as_ref()
            .and_then(|h| h.start_container().clone());
        let place = RunIn::Container { pid, root: true };
        let hooked = self
            .run_hooks(
                "startContainer",
                &start_hooks.unwrap_or_default(),
                "created",
                place,
            )
            .await;
        if let Err(e) = hooked {
            // The spec: stop the container, report the error.
            drop(conn);
            kill_pid(pid);
            return Err(e);
        }
        helper::start(conn, HELPER_TIMEOUT).await?;
        init.state().start()?;
        let poststart = self.hooks.as_ref().and_then(|h| h.poststart().clone());
        self.run_hooks_logged("poststart", poststart, "running")
            .await;
        let event = TaskStart {
            container_id: self.id.clone(),
            pid,
            ..Default::default()
        };
        self.env
            .events
            .publish(topics::TASK_START_EVENT_TOPIC, Box::new(event));
        Ok(pid)
    }

    pub async fn kill(&self, req: &KillRequest) -> Result<()> {
        let process = self.process(&req.exec_id).await?;
        let signal = nix::sys::signal::Signal::try_from(req.signal as i32).map_err(|_| {
            ShimError::InvalidArgument(format!("signal {} is not valid", req.signal))
        })?;
        let (exited, pid) = {
            let state = process.state();
            (state.exited().is_some(), state.pid)
        };
        if exited {
            let which = if req.exec_id.is_empty() {
                &req.id
            } else {
                &req.exec_id
            };
            return Err(ShimError::NotFound(format!(
                "process {which} already finished"
            )));
        }
        if req.all && req.exec_id.is_empty() {
            for pid in self.cgroup()?.procs()? {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal);
            }
            return Ok(());
        }
        if pid == 0 {
            return Err(ShimError::FailedPrecondition(
                "process has no pid yet".into(),
            ));
        }
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal).map_err(
            |e| match e {
                nix::errno::Errno::ESRCH => {
                    ShimError::NotFound(format!("process {pid} already finished"))
                }
                other => ShimError::io(format!("kill {pid}"), other.into()),
            },
        )
    }

    /// Delete of an exec: it must have exited (or never started). Returns its pid and exit.
    pub async fn delete_exec(&self, exec_id: &str) -> Result<(u32, u32, SystemTime)> {
        let exec = self.process(exec_id).await?;
        let (pid, (code, at)) = {
            let mut state = exec.state();
            state.delete()?;
            (state.pid, state.exited().unwrap_or((0, SystemTime::now())))
        };
        exec.io.shutdown().await;
        self.execs.lock().await.remove(exec_id);
        Ok((pid, code, at))
    }

    /// Delete of the container: stopped and removed with everything made for it. Returns the
    /// init's pid and exit.
    pub async fn delete(&self) -> Result<(u32, u32, SystemTime)> {
        let init = &self.init;
        let (pid, (code, at)) = {
            let mut state = init.state();
            let never_started = state.status == Status::Created;
            state.delete()?;
            if never_started {
                // Its helper still waits for Start: dropping the connection makes it exit.
                drop(state.take_pending());
            }
            (state.pid, state.exited().unwrap_or((0, SystemTime::now())))
        };
        teardown(
            std::slice::from_ref(&self.node),
            &self.state_dir,
            &self.bundle,
            self.rootfs_mounted,
        )
        .await;
        if let Some(cg) = self.cgroup.clone() {
            let (id, name) = (self.id.clone(), self.node.name().to_string());
            let _ = tokio::task::spawn_blocking(move || cg.remove(&id, &name)).await;
        }
        let poststop = self.hooks.as_ref().and_then(|h| h.poststop().clone());
        self.run_hooks_logged("poststop", poststop, "stopped").await;
        init.io.shutdown().await;
        for exec in self.execs.lock().await.values() {
            exec.io.shutdown().await;
        }
        Ok((pid, code, at))
    }

    /// Pause (`frozen`) or resume of the whole container, through its cgroup.
    pub async fn freeze(&self, frozen: bool) -> Result<()> {
        let (expected, doing) = if frozen {
            (Status::Running, "pause")
        } else {
            (Status::Paused, "resume")
        };
        self.expect_init(self.init.status(), expected, doing)?;
        let cg = self.cgroup()?;
        blocking(move || cg.freeze(frozen)).await??;
        let mut state = self.init.state();
        if frozen {
            state.pause()
        } else {
            state.resume()
        }
    }

    pub async fn update(&self, resources: LinuxResources) -> Result<()> {
        let cg = self.cgroup()?;
        // First: a Proxmox node applies its own (MiB-rounded) values to the cgroup when the
        // CT config changes; the spec's exact ones must come after.
        self.node.update_resources(&resources).await?;
        blocking(move || cg.update(&resources)).await?
    }

    pub async fn stats(
        &self,
    ) -> Result<containerd_shim::protos::protobuf::well_known_types::any::Any> {
        let cg = self.cgroup()?;
        blocking(move || cg.metrics()).await?
    }

    /// The container's processes (its cgroup's, the init first if the cgroup lacks it), execs
    /// named.
    pub async fn pids(&self) -> Vec<ProcessInfo> {
        let mut pids: Vec<u32> = self.cgroup().and_then(|c| c.procs()).unwrap_or_default();
        let (init_pid, init_running) = {
            let state = self.init.state();
            (state.pid, state.is_running())
        };
        if init_pid > 0 && !pids.contains(&init_pid) && init_running {
            pids.insert(0, init_pid);
        }
        let execs: HashMap<u32, String> = self
            .execs
            .lock()
            .await
            .values()
            .map(|p| (p.pid(), p.exec_id.clone()))
            .collect();
        pids.into_iter()
            .map(|pid| {
                let mut info = ProcessInfo {
                    pid,
                    ..Default::default()
                };
                if let Some(exec_id) = execs.get(&pid) {
                    let details = containerd_shim::protos::shim::oci::ProcessDetails {
                        exec_id: exec_id.clone(),
                        ..Default::default()
                    };
                    if let Ok(any) = containerd_shim::util::convert_to_any(Box::new(details)) {
                        info.info = MessageField::some(any);
                    }
                }
                info
            })
            .collect()
    }
}

fn publish_oom(events: &Events, id: &str) {
    let event = TaskOOM {
        container_id: id.to_string(),
        ..Default::default()
    };
    events.publish(topics::TASK_OOM_EVENT_TOPIC, Box::new(event));
}

fn kill_pid(pid: u32) {
    if pid > 0 {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// Runs blocking file work (cgroups, descriptors) off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    crate::logging::spawn_blocking(f)
        .await
        .map_err(|e| ShimError::Internal(format!("cgroup work: {e}")))
}
