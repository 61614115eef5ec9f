//! containerd's Task API (v2) over ttrpc, written once over [`Driver`]. Every RPC is implemented;
//! the ones this runtime cannot do answer UNIMPLEMENTED (never the generated NOT_FOUND).
//!
//! Event order is guaranteed by construction: all events go through one queue to containerd,
//! and a process's exit is published under the same per-process lock that publishes its start,
//! after its output is drained; a container's init exit is published after its execs' exits.

use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use containerd_shim::asynchronous::publisher::RemotePublisher;
use containerd_shim::asynchronous::ExitSignal;
use containerd_shim::protos::api::{ProcessInfo, Status as ApiStatus};
use containerd_shim::protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskOOM, TaskPaused,
    TaskResumed, TaskStart,
};
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::protobuf::{MessageDyn, MessageField};
use containerd_shim::protos::shim::shim::{
    CheckpointTaskRequest, CloseIORequest, ConnectRequest, ConnectResponse, CreateTaskRequest,
    CreateTaskResponse, DeleteRequest, ExecProcessRequest, KillRequest, PauseRequest, PidsRequest,
    PidsResponse, ResizePtyRequest, ResumeRequest, ShutdownRequest, StartRequest, StartResponse,
    StateRequest, StateResponse, StatsRequest, StatsResponse, UpdateTaskRequest, WaitRequest,
    WaitResponse,
};
use containerd_shim::protos::topics;
use containerd_shim::protos::ttrpc::r#async::TtrpcContext;
use containerd_shim::protos::types::empty::Empty;
use containerd_shim::{api::DeleteResponse, Context};
use ctinit_proto::InitSpec;
use log::{debug, error, info, warn};
use tokio::sync::{mpsc, watch, Mutex};

use crate::cgroup::ContainerCgroup;
use crate::config::{self, DriverKind, ShimConfig};
use crate::driver::lxc::{log_path, LxcDriver};
use crate::driver::{namespaced_lxcpath, CreateSpec, Driver};
use crate::errors::{IoContext, Result, ShimError};
use crate::exits::ChildExits;
use crate::helper;
use crate::hooks::{self, Where};
use crate::lxcmon::{exit_status_from_wait, LxcMonitor};
use crate::private::Owner;
use crate::process::{ProcessState, Status};
use crate::stdio::{ContainerStdio, ProcessIo, StdioPaths};

type TtrpcResult<T> = containerd_shim::protos::ttrpc::Result<T>;

/// How long a container's helper may take to connect and get ready.
const HELPER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an exit waits for its output to drain before it is published anyway.
const OUTPUT_DRAIN: Duration = Duration::from_secs(2);

/// Recorded in the bundle at Create so that `shim delete` can clean up from the bundle alone.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct BundleState {
    pub namespace: String,
    pub id: String,
    pub name: String,
    pub driver: DriverKind,
    pub lxcpath: PathBuf,
    pub state_dir: PathBuf,
    pub rootfs_mounted: bool,
    pub init_pid: u32,
    /// The pve driver's CT and the `[pve]` settings it was made with (no secrets: the token
    /// secret stays in its file), so `shim delete` can remove it from the bundle alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vmid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pve: Option<config::PveSection>,
}

impl BundleState {
    fn write(&self, bundle: &Path) -> Result<()> {
        let json = serde_json::to_vec(self)
            .map_err(|e| ShimError::Internal(format!("encode bundle state: {e}")))?;
        crate::private::write_file(&bundle.join(BUNDLE_STATE_FILE), &json, Owner::ROOT)
    }
}

pub const BUNDLE_STATE_FILE: &str = "proxmox-lxc-state.json";

pub fn state_dir_for(namespace: &str, id: &str) -> PathBuf {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("{namespace}/{id}").as_bytes());
    PathBuf::from(config::STATE_ROOT).join(&hex::encode(digest)[..16])
}

struct Proc {
    exec_id: String,
    state: std::sync::Mutex<ProcessState>,
    io: Arc<ProcessIo>,
    /// The exit, once known. Set with `send_replace`: `send` stores nothing while no Wait is
    /// subscribed, and a process that exits before containerd's Wait arrives would then never
    /// be reported to it.
    exited: watch::Sender<Option<(u32, SystemTime)>>,
    /// Held while start is published and while the exit is, so exit never precedes start.
    lifecycle: Mutex<()>,
    /// The helper's control connection until the process is started.
    conn: std::sync::Mutex<Option<helper::Connection>>,
    /// For an exec not yet started: its spec and the stdio made at Exec time.
    init_spec: std::sync::Mutex<Option<InitSpec>>,
    pending_stdio: std::sync::Mutex<Option<ContainerStdio>>,
}

impl Proc {
    fn new(exec_id: &str, io: Arc<ProcessIo>) -> Arc<Proc> {
        let (exited, _) = watch::channel(None);
        Arc::new(Proc {
            exec_id: exec_id.to_string(),
            state: std::sync::Mutex::new(ProcessState::new(exec_id)),
            io,
            exited,
            lifecycle: Mutex::new(()),
            conn: std::sync::Mutex::new(None),
            init_spec: std::sync::Mutex::new(None),
            pending_stdio: std::sync::Mutex::new(None),
        })
    }

    fn snapshot(&self) -> ProcessState {
        match self.state.lock() {
            Ok(s) => s.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn with_state<T>(&self, f: impl FnOnce(&mut ProcessState) -> T) -> T {
        match self.state.lock() {
            Ok(mut s) => f(&mut s),
            Err(p) => f(&mut p.into_inner()),
        }
    }
}

struct Container {
    id: String,
    bundle: PathBuf,
    name: String,
    state_dir: PathBuf,
    driver: Arc<dyn Driver>,
    init: Arc<Proc>,
    execs: Mutex<HashMap<String, Arc<Proc>>>,
    cgroup: std::sync::Mutex<Option<ContainerCgroup>>,
    rootfs_mounted: bool,
    exec_seq: AtomicU32,
    hooks: Option<oci_spec::runtime::Hooks>,
    annotations: HashMap<String, String>,
    supervisor_pid: std::sync::Mutex<Option<u32>>,
}

impl Container {
    fn cgroup(&self) -> Result<ContainerCgroup> {
        let guard = self
            .cgroup
            .lock()
            .map_err(|_| ShimError::Internal("cgroup lock poisoned".into()))?;
        guard.clone().ok_or_else(|| {
            ShimError::FailedPrecondition(format!("container {} has no cgroup yet", self.id))
        })
    }

    async fn process(&self, exec_id: &str) -> Result<Arc<Proc>> {
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
}

struct Inner {
    namespace: String,
    containers: Mutex<HashMap<String, Arc<Container>>>,
    events: mpsc::UnboundedSender<(&'static str, Box<dyn MessageDyn>)>,
    exits: ChildExits,
    monitors: Mutex<HashMap<PathBuf, LxcMonitor>>,
    exit_signal: Arc<ExitSignal>,
}

#[derive(Clone)]
pub struct TaskService {
    inner: Arc<Inner>,
}

fn timestamp(t: SystemTime) -> Timestamp {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
        ..Default::default()
    }
}

fn api_status(s: Status) -> ApiStatus {
    match s {
        Status::Created => ApiStatus::CREATED,
        Status::Running => ApiStatus::RUNNING,
        Status::Paused => ApiStatus::PAUSED,
        Status::Exited { .. } | Status::Deleted => ApiStatus::STOPPED,
    }
}

/// Mounts containerd's rootfs mounts onto `target`, in order. Done in-process: the shim
/// framework's helper forks and waits, which races with the reaper.
fn mount_rootfs(
    mounts: &[containerd_shim::protos::types::mount::Mount],
    target: &Path,
) -> Result<()> {
    use nix::mount::MsFlags;
    for m in mounts {
        let mut flags = MsFlags::empty();
        let mut data = Vec::new();
        for opt in &m.options {
            match opt.as_str() {
                "ro" => flags |= MsFlags::MS_RDONLY,
                "rw" => {}
                "bind" => flags |= MsFlags::MS_BIND,
                "rbind" => flags |= MsFlags::MS_BIND | MsFlags::MS_REC,
                "nosuid" => flags |= MsFlags::MS_NOSUID,
                "nodev" => flags |= MsFlags::MS_NODEV,
                "noexec" => flags |= MsFlags::MS_NOEXEC,
                "relatime" => flags |= MsFlags::MS_RELATIME,
                "noatime" => flags |= MsFlags::MS_NOATIME,
                "sync" => flags |= MsFlags::MS_SYNCHRONOUS,
                other => data.push(other.to_string()),
            }
        }
        let fstype = if m.type_.is_empty() {
            None
        } else {
            Some(m.type_.as_str())
        };
        let source = if m.source.is_empty() {
            None
        } else {
            Some(m.source.as_str())
        };
        let data = data.join(",");
        nix::mount::mount(
            source,
            target,
            fstype,
            flags,
            if data.is_empty() {
                None
            } else {
                Some(data.as_str())
            },
        )
        .map_err(|e| {
            ShimError::io(
                format!(
                    "mount rootfs ({} {:?}) on {}",
                    m.type_,
                    m.source,
                    target.display()
                ),
                e.into(),
            )
        })?;
    }
    Ok(())
}

pub fn unmount_rootfs(target: &Path) {
    for _ in 0..8 {
        match nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) => continue,
            Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => return,
            Err(e) => {
                warn!("unmount {}: {e}", target.display());
                return;
            }
        }
    }
}

/// Device nodes for `linux.devices` live in the state directory and are bind-mounted into the
/// container, which keeps the source's `nodev`. Where /run is a `nodev` tmpfs (stock Debian,
/// Proxmox VE), the state root gets a tmpfs of its own that allows devices (still nosuid).
fn ensure_state_root() -> Result<()> {
    let root = Path::new(config::STATE_ROOT);
    std::fs::create_dir_all(root).ctx(|| format!("create {}", root.display()))?;
    let stat = nix::sys::statvfs::statvfs(root)
        .map_err(|e| ShimError::io(format!("statvfs {}", root.display()), e.into()))?;
    if !stat.flags().contains(nix::sys::statvfs::FsFlags::ST_NODEV) {
        return Ok(());
    }
    nix::mount::mount(
        Some("tmpfs"),
        root,
        Some("tmpfs"),
        nix::mount::MsFlags::MS_NOSUID,
        Some("mode=0755"),
    )
    .map_err(|e| ShimError::io(format!("mount a tmpfs on {}", root.display()), e.into()))
}

/// LXC's version decides which keys the renderer may use (LXC 6 has no cgroup v1 keys).
fn lxc_version() -> (u32, u32, u32) {
    static VERSION: std::sync::OnceLock<(u32, u32, u32)> = std::sync::OnceLock::new();
    *VERSION.get_or_init(|| {
        // Read the output, then wait; the wait may lose the race with the shim's reaper,
        // which only means the status is not ours to see.
        let mut text = String::new();
        if let Ok(mut child) = std::process::Command::new("lxc-start")
            .arg("--version")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
        {
            if let Some(mut out) = child.stdout.take() {
                let _ = std::io::Read::read_to_string(&mut out, &mut text);
            }
            let _ = child.wait();
        }
        parse_version(&text).unwrap_or((5, 0, 0))
    })
}

fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    let mut parts = text
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .filter(|p| !p.is_empty());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let patch = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    Some((major, minor, patch))
}

fn node_facts() -> lxc_config::NodeFacts {
    let unified = std::fs::read_to_string("/proc/self/mountinfo")
        .map(|t| {
            t.lines()
                .any(|l| l.contains(" /sys/fs/cgroup ") && l.contains(" - cgroup2 "))
        })
        .unwrap_or(false);
    lxc_config::NodeFacts {
        cgroup: if unified {
            lxc_config::CgroupMode::Unified
        } else {
            lxc_config::CgroupMode::Legacy
        },
        lxc_version: lxc_version(),
    }
}

impl TaskService {
    pub async fn new(
        namespace: &str,
        publisher: RemotePublisher,
        exit_signal: Arc<ExitSignal>,
    ) -> std::io::Result<TaskService> {
        let exits = ChildExits::start().await?;
        let (tx, mut rx) = mpsc::unbounded_channel::<(&'static str, Box<dyn MessageDyn>)>();
        let ns = namespace.to_string();
        // One queue, one sender: containerd sees events in the order they were made.
        tokio::spawn(async move {
            while let Some((topic, event)) = rx.recv().await {
                if let Err(e) = publisher
                    .publish(Context::default(), topic, &ns, event)
                    .await
                {
                    error!("publish {topic}: {e}");
                }
            }
        });
        Ok(TaskService {
            inner: Arc::new(Inner {
                namespace: namespace.to_string(),
                containers: Mutex::new(HashMap::new()),
                events: tx,
                exits,
                monitors: Mutex::new(HashMap::new()),
                exit_signal,
            }),
        })
    }

    fn publish(&self, topic: &'static str, event: Box<dyn MessageDyn>) {
        if self.inner.events.send((topic, event)).is_err() {
            warn!("event queue closed, dropped {topic}");
        }
    }

    async fn container(&self, id: &str) -> Result<Arc<Container>> {
        self.inner
            .containers
            .lock()
            .await
            .get(id)
            .cloned()
            .ok_or_else(|| ShimError::NotFound(format!("container {id} not found")))
    }

    async fn monitor(&self, lxcpath: &Path) -> Result<LxcMonitor> {
        let mut monitors = self.inner.monitors.lock().await;
        if let Some(m) = monitors.get(lxcpath) {
            return Ok(m.clone());
        }
        let m = LxcMonitor::connect(lxcpath)
            .await
            .ctx(|| format!("connect to the LXC monitor of {}", lxcpath.display()))?;
        monitors.insert(lxcpath.to_path_buf(), m.clone());
        Ok(m)
    }

    fn make_driver(&self, config: &ShimConfig) -> Result<Arc<dyn Driver>> {
        match config.driver() {
            DriverKind::Lxc => Ok(Arc::new(LxcDriver::new(
                namespaced_lxcpath(&config.lxc.lxcpath, &self.inner.namespace),
                self.inner.exits.clone(),
            ))),
            DriverKind::Pve => {
                let section = config.pve.as_ref().ok_or_else(|| {
                    ShimError::InvalidArgument("driver \"pve\" needs a [pve] section".into())
                })?;
                Ok(Arc::new(crate::driver::pve::PveDriver::new(
                    section,
                    self.inner.exits.clone(),
                )?))
            }
        }
    }

    async fn do_create(&self, req: &CreateTaskRequest) -> Result<CreateTaskResponse> {
        let id = req.id.clone();
        if id.is_empty() || id.contains('/') || id.len() > 200 {
            return Err(ShimError::InvalidArgument(format!(
                "container id {id:?} is not valid"
            )));
        }
        if self.inner.containers.lock().await.contains_key(&id) {
            return Err(ShimError::AlreadyExists(format!(
                "container {id} already exists"
            )));
        }
        let config = config::from_create_options(req.options.as_ref())?;
        if let Some(level) = config.log_level.as_deref().and_then(|l| l.parse().ok()) {
            // The runtime options' level wins over the host file's, from this container on.
            log::set_max_level(level);
        }
        let driver = self.make_driver(&config)?;
        let bundle = PathBuf::from(&req.bundle);
        let spec = oci_spec::runtime::Spec::load(bundle.join("config.json")).map_err(|e| {
            ShimError::InvalidArgument(format!("read {}/config.json: {e}", bundle.display()))
        })?;
        let state_dir = state_dir_for(&self.inner.namespace, &id);
        let mut undo = Undo::default();

        let result = async {
            let rootfs = bundle.join("rootfs");
            if !req.rootfs.is_empty() {
                std::fs::create_dir_all(&rootfs).ctx(|| format!("create {}", rootfs.display()))?;
                mount_rootfs(&req.rootfs, &rootfs)?;
                undo.rootfs = Some(rootfs.clone());
            }
            ensure_state_root()?;
            if state_dir.exists() {
                let _ = std::fs::remove_dir_all(&state_dir);
            }
            let owner = Owner::for_spec(&spec);
            crate::private::make_dir(&state_dir, owner)?;
            undo.state_dir = Some(state_dir.clone());
            helper::install(&state_dir)?;

            let facts = node_facts();
            let plan = lxc_config::plan(&lxc_config::PlanRequest {
                name: &id,
                spec: &spec,
                bundle: &bundle,
                state_dir: &state_dir,
                facts: &facts,
            })
            .map_err(|e| ShimError::InvalidArgument(e.to_string()))?;
            for ignored in &plan.ignored {
                info!("{id}: {} ignored: {}", ignored.field, ignored.reason);
            }
            crate::devices::create_nodes(&plan.devices)?;
            let mut init_spec = plan.init.clone();
            init_spec.terminal = req.terminal || init_spec.terminal;
            init_spec.stdio = stdio_flags(init_spec.terminal, &req.stdin, &req.stdout, &req.stderr);
            let spec_path = state_dir.join(ctinit_proto::INIT_SPEC_NAME);
            crate::private::write_file(&spec_path, &init_spec.to_json(), owner)?;

            plan.write_state_files().ctx(|| {
                format!(
                    "write seccomp profile and device nodes in {}",
                    state_dir.display()
                )
            })?;
            let name = driver
                .create(&CreateSpec {
                    namespace: &self.inner.namespace,
                    id: &id,
                    plan: &plan,
                    state_dir: &state_dir,
                })
                .await?;
            undo.driver = Some((driver.clone(), name.clone()));
            crate::private::restrict_tree(&state_dir, owner, &[ctinit_proto::HELPER_NAME])?;
            let mut bundle_state = BundleState {
                namespace: self.inner.namespace.clone(),
                id: id.clone(),
                name: name.clone(),
                driver: config.driver(),
                lxcpath: driver.lxcpath().to_path_buf(),
                state_dir: state_dir.clone(),
                rootfs_mounted: !req.rootfs.is_empty(),
                init_pid: 0,
                vmid: (config.driver() == DriverKind::Pve)
                    .then(|| name.parse().ok())
                    .flatten(),
                pve: (config.driver() == DriverKind::Pve)
                    .then(|| config.pve.clone())
                    .flatten(),
            };
            // Written before the start too, so that a shim that dies from here on leaves
            // enough for `shim delete` to find what it made (a Proxmox CT outlives the shim).
            bundle_state.write(&bundle)?;

            let paths = StdioPaths {
                stdin: req.stdin.clone(),
                stdout: req.stdout.clone(),
                stderr: req.stderr.clone(),
                terminal: init_spec.terminal,
            };
            let (io, container_stdio) =
                ProcessIo::setup(&paths, &self.inner.namespace, &id, &self.inner.exits).await?;
            let listener = helper::Listener::bind(&state_dir.join(ctinit_proto::INIT_SOCKET_NAME))?;
            crate::private::restrict(&state_dir.join(ctinit_proto::INIT_SOCKET_NAME), owner)?;

            let monitor = self.monitor(driver.lxcpath()).await?;
            monitor.forget(&name);
            let init_exit = monitor.wait_exit(&name);
            let supervisor = driver.start(&name, &state_dir).await?;
            let supervisor_exit = supervisor.map(|pid| self.inner.exits.wait(pid as i32));

            let conn = helper::accept(listener, HELPER_TIMEOUT, supervisor)
                .await
                .map_err(|e| explain_start_failure(e, &state_dir))?;
            let (conn, pid, pty) = helper::handshake(conn, container_stdio, HELPER_TIMEOUT)
                .await
                .map_err(|e| explain_start_failure(e, &state_dir))?;
            let masked_paths = spec
                .linux()
                .as_ref()
                .and_then(|l| l.masked_paths().clone())
                .unwrap_or_default();
            crate::tidy::tidy(&self.inner.exits, pid, &masked_paths).await?;
            let annotations = spec.annotations().clone().unwrap_or_default();
            if let Some(h) = &plan.hooks {
                let state = hooks::state_json(&id, "created", pid, &bundle, &annotations);
                let mut create_runtime = h.prestart().clone().unwrap_or_default();
                create_runtime.extend(h.create_runtime().clone().unwrap_or_default());
                hooks::run_all(
                    &self.inner.exits,
                    "createRuntime",
                    &create_runtime,
                    &state,
                    Where::Host,
                )
                .await?;
                hooks::run_all(
                    &self.inner.exits,
                    "createContainer",
                    &h.create_container().clone().unwrap_or_default(),
                    &state,
                    Where::Container { pid, root: false },
                )
                .await?;
            }
            if let Some(master) = pty {
                io.attach_pty(master).await?;
            }
            let cgroup = ContainerCgroup::of_pid(pid).ok();

            let init = Proc::new("", io);
            init.with_state(|s| s.pid = pid);
            *init
                .conn
                .lock()
                .map_err(|_| ShimError::Internal("lock".into()))? = Some(conn);
            let container = Arc::new(Container {
                id: id.clone(),
                bundle: bundle.clone(),
                name: name.clone(),
                state_dir: state_dir.clone(),
                driver: driver.clone(),
                init: init.clone(),
                execs: Mutex::new(HashMap::new()),
                cgroup: std::sync::Mutex::new(cgroup.clone()),
                rootfs_mounted: !req.rootfs.is_empty(),
                exec_seq: AtomicU32::new(0),
                hooks: plan.hooks.clone(),
                annotations,
                supervisor_pid: std::sync::Mutex::new(supervisor),
            });
            bundle_state.init_pid = pid;
            bundle_state.write(&bundle)?;

            if let Some(cg) = &cgroup {
                self.watch_oom(&id, cg);
            }
            self.spawn_init_exit_watch(container.clone(), init_exit, supervisor_exit);
            Ok::<_, ShimError>((container, pid))
        }
        .await;

        match result {
            Ok((container, pid)) => {
                self.inner
                    .containers
                    .lock()
                    .await
                    .insert(id.clone(), container);
                self.publish(
                    topics::TASK_CREATE_EVENT_TOPIC,
                    Box::new(TaskCreate {
                        container_id: id.clone(),
                        bundle: req.bundle.clone(),
                        rootfs: req.rootfs.clone(),
                        io: MessageField::some(TaskIO {
                            stdin: req.stdin.clone(),
                            stdout: req.stdout.clone(),
                            stderr: req.stderr.clone(),
                            terminal: req.terminal,
                            ..Default::default()
                        }),
                        checkpoint: req.checkpoint.clone(),
                        pid,
                        ..Default::default()
                    }),
                );
                Ok(CreateTaskResponse {
                    pid,
                    ..Default::default()
                })
            }
            Err(e) => {
                warn!("create {id} failed: {e}; rolling back");
                undo.run().await;
                let _ = std::fs::remove_file(bundle.join(BUNDLE_STATE_FILE));
                Err(e)
            }
        }
    }

    fn watch_oom(&self, id: &str, cg: &ContainerCgroup) {
        let Some(dir) = cg.memory_dir().map(Path::to_path_buf) else {
            return;
        };
        let svc = self.clone();
        let id = id.to_string();
        let handle = tokio::runtime::Handle::current();
        let watch_dir = dir.clone();
        let watch = if cg.is_v2() {
            crate::cgroup::watch_oom_v2
        } else {
            crate::cgroup::watch_oom_v1
        };
        if let Err(e) = watch(&dir, move || {
            if !watch_dir.exists() {
                return;
            }
            let svc = svc.clone();
            let id = id.clone();
            handle.spawn(async move {
                svc.publish(
                    topics::TASK_OOM_EVENT_TOPIC,
                    Box::new(TaskOOM {
                        container_id: id,
                        ..Default::default()
                    }),
                );
            });
        }) {
            warn!("OOM notifications unavailable: {e}");
        }
    }

    fn spawn_init_exit_watch(
        &self,
        container: Arc<Container>,
        init_exit: tokio::sync::oneshot::Receiver<i32>,
        supervisor_exit: Option<tokio::sync::oneshot::Receiver<i32>>,
    ) {
        let svc = self.clone();
        tokio::spawn(async move {
            let status = match supervisor_exit {
                Some(sup) => {
                    tokio::pin!(init_exit);
                    tokio::select! {
                        s = &mut init_exit => s.ok(),
                        code = sup => {
                            // lxc-start ends after it reported the exit; give the monitor a
                            // moment to deliver it.
                            match tokio::time::timeout(Duration::from_secs(2), &mut init_exit).await {
                                Ok(Ok(s)) => Some(s),
                                _ => {
                                    warn!("{}: no exit status from the LXC monitor; lxc-start exited with {:?}", container.id, code);
                                    None
                                }
                            }
                        }
                    }
                }
                None => init_exit.await.ok(),
            };
            let code = status.map(exit_status_from_wait).unwrap_or(255);
            svc.finish_init(&container, code).await;
        });
    }

    async fn finish_init(&self, container: &Arc<Container>, code: u32) {
        let at = SystemTime::now();
        let init = &container.init;
        if crate::cgroup::shares_pid_namespace(&container.bundle) {
            if let Ok(cg) = container.cgroup() {
                cg.kill_all();
            }
        }
        init.io.wait_output(OUTPUT_DRAIN).await;
        // Execs die with the container's init (its pid namespace); their exits go first.
        let execs: Vec<Arc<Proc>> = container.execs.lock().await.values().cloned().collect();
        for exec in execs {
            let mut rx = exec.exited.subscribe();
            if exec.snapshot().is_running() {
                let pid = exec.snapshot().pid;
                if pid > 0 {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid as i32),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                let _ = tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|v| v.is_some()))
                    .await;
            }
        }
        let _guard = init.lifecycle.lock().await;
        let pid = init.snapshot().pid;
        if init.with_state(|s| s.exit(code, at)) {
            init.exited.send_replace(Some((code, at)));
            info!("{}: init {pid} exited with {code}", container.id);
            self.publish(
                topics::TASK_EXIT_EVENT_TOPIC,
                Box::new(TaskExit {
                    container_id: container.id.clone(),
                    id: container.id.clone(),
                    pid,
                    exit_status: code,
                    exited_at: MessageField::some(timestamp(at)),
                    ..Default::default()
                }),
            );
        }
    }

    async fn do_start(&self, req: &StartRequest) -> Result<StartResponse> {
        let container = self.container(&req.id).await?;
        let proc = container.process(&req.exec_id).await?;
        if req.exec_id.is_empty() {
            let _guard = proc.lifecycle.lock().await;
            proc.with_state(|s| match s.status {
                Status::Created => Ok(()),
                other => Err(ShimError::FailedPrecondition(format!(
                    "cannot start container {}: it is {}",
                    req.id,
                    crate::process::describe(other)
                ))),
            })?;
            let conn = proc
                .conn
                .lock()
                .map_err(|_| ShimError::Internal("lock".into()))?
                .take()
                .ok_or_else(|| ShimError::FailedPrecondition("init already started".into()))?;
            let pid = proc.snapshot().pid;
            let start_hooks = container
                .hooks
                .as_ref()
                .and_then(|h| h.start_container().clone())
                .unwrap_or_default();
            if !start_hooks.is_empty() {
                let state = hooks::state_json(
                    &req.id,
                    "created",
                    pid,
                    &container.bundle,
                    &container.annotations,
                );
                if let Err(e) = hooks::run_all(
                    &self.inner.exits,
                    "startContainer",
                    &start_hooks,
                    &state,
                    Where::Container { pid, root: true },
                )
                .await
                {
                    // The spec: stop the container, report the error.
                    drop(conn);
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid as i32),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                    return Err(e);
                }
            }
            helper::start(conn, HELPER_TIMEOUT).await?;
            proc.with_state(|s| s.start())?;
            if let Some(post) = container.hooks.as_ref().and_then(|h| h.poststart().clone()) {
                let state = hooks::state_json(
                    &req.id,
                    "running",
                    pid,
                    &container.bundle,
                    &container.annotations,
                );
                if let Err(e) =
                    hooks::run_all(&self.inner.exits, "poststart", &post, &state, Where::Host).await
                {
                    warn!("{}: {e}", req.id);
                }
            }
            self.publish(
                topics::TASK_START_EVENT_TOPIC,
                Box::new(TaskStart {
                    container_id: req.id.clone(),
                    pid,
                    ..Default::default()
                }),
            );
            return Ok(StartResponse {
                pid,
                ..Default::default()
            });
        }
        self.start_exec(&container, &proc).await
    }

    async fn start_exec(
        &self,
        container: &Arc<Container>,
        proc: &Arc<Proc>,
    ) -> Result<StartResponse> {
        if !container.init.snapshot().is_running() {
            return Err(ShimError::FailedPrecondition(format!(
                "cannot start exec {:?}: container {} is not running",
                proc.exec_id, container.id
            )));
        }
        let guard = proc.lifecycle.lock().await;
        if proc.snapshot().status != Status::Created {
            return Err(ShimError::FailedPrecondition(format!(
                "exec {:?} was already started",
                proc.exec_id
            )));
        }
        let spec = proc
            .init_spec
            .lock()
            .map_err(|_| ShimError::Internal("lock".into()))?
            .take()
            .ok_or_else(|| ShimError::FailedPrecondition("exec has no spec".into()))?;
        let seq = container.exec_seq.fetch_add(1, Ordering::SeqCst);
        let spec_name = format!("exec-{seq}.json");
        let sock_name = format!("exec-{seq}.sock");
        let spec_path = container.state_dir.join(&spec_name);
        let owner = Owner::of(&container.state_dir);
        crate::private::write_file(&spec_path, &spec.to_json(), owner)?;
        let listener = helper::Listener::bind(&container.state_dir.join(&sock_name))?;
        crate::private::restrict(&container.state_dir.join(&sock_name), owner)?;
        let container_stdio = proc
            .pending_stdio
            .lock()
            .map_err(|_| ShimError::Internal("lock".into()))?
            .take()
            .unwrap_or_default();
        // The helper's directory is gone from the container once its init runs (see `tidy`):
        // the exec's helper, socket and spec reach it as descriptors that lxc-attach passes
        // on, named through the container's /proc/self/fd.
        let open_path = |name: &str, path_only: bool| {
            let path = container.state_dir.join(name);
            let mut opts = std::fs::OpenOptions::new();
            opts.read(true);
            if path_only {
                opts.custom_flags(libc::O_PATH);
            }
            opts.open(&path).ctx(|| format!("open {}", path.display()))
        };
        let passed = [
            helper::sealed()?,
            open_path(&sock_name, true)?,
            open_path(&spec_name, false)?,
        ];
        let fds: Vec<i32> = passed.iter().map(|f| f.as_raw_fd()).collect();
        let args: Vec<String> = fds.iter().map(|fd| format!("/proc/self/fd/{fd}")).collect();
        let mut cmd = container.driver.exec_command(&container.name, &args);
        // SAFETY: only fcntl, async-signal-safe, between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                for &fd in &fds {
                    if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        cmd.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().ctx(|| "run lxc-attach".to_string())?;
        drop(passed);
        let attach_pid = child.id();
        let attach_exit = self.inner.exits.wait(attach_pid as i32);
        let stderr = child.stderr.take();
        let cleanup = |spec_path: &Path| {
            let _ = std::fs::remove_file(spec_path);
        };
        let result = async {
            let conn = helper::accept(listener, HELPER_TIMEOUT, Some(attach_pid)).await?;
            let (conn, pid, pty) = helper::handshake(conn, container_stdio, HELPER_TIMEOUT).await?;
            if let Some(master) = pty {
                proc.io.attach_pty(master).await?;
            }
            helper::start(conn, HELPER_TIMEOUT).await?;
            Ok::<u32, ShimError>(pid)
        }
        .await;
        cleanup(&spec_path);
        let pid = match result {
            Ok(pid) => pid,
            Err(e) => {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(attach_pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
                let mut msg = String::new();
                if let Some(mut s) = stderr {
                    let _ = tokio::task::spawn_blocking(move || {
                        let mut m = String::new();
                        let _ = std::io::Read::read_to_string(&mut s, &mut m);
                        m
                    })
                    .await
                    .map(|m| msg = m);
                }
                proc.with_state(|s| s.exit(255, SystemTime::now()));
                proc.exited.send_replace(Some((255, SystemTime::now())));
                return Err(match msg.trim() {
                    "" => e,
                    m => ShimError::Internal(format!("{e} (lxc-attach: {m})")),
                });
            }
        };
        // lxc-attach's stderr carries only its own errors; drain it so it never blocks.
        if let Some(mut s) = stderr {
            tokio::task::spawn_blocking(move || {
                let mut m = String::new();
                let _ = std::io::Read::read_to_string(&mut s, &mut m);
                if !m.trim().is_empty() {
                    debug!("lxc-attach: {}", m.trim());
                }
            });
        }
        proc.with_state(|s| {
            s.pid = pid;
            s.start()
        })?;
        self.publish(
            topics::TASK_EXEC_STARTED_EVENT_TOPIC,
            Box::new(TaskExecStarted {
                container_id: container.id.clone(),
                exec_id: proc.exec_id.clone(),
                pid,
                ..Default::default()
            }),
        );
        drop(guard);
        let svc = self.clone();
        let container_id = container.id.clone();
        let proc2 = proc.clone();
        tokio::spawn(async move {
            let code = attach_exit.await.unwrap_or(255);
            let code = if code < 0 { 255 } else { code as u32 };
            let at = SystemTime::now();
            proc2.io.wait_output(OUTPUT_DRAIN).await;
            let _guard = proc2.lifecycle.lock().await;
            if proc2.with_state(|s| s.exit(code, at)) {
                proc2.exited.send_replace(Some((code, at)));
                svc.publish(
                    topics::TASK_EXIT_EVENT_TOPIC,
                    Box::new(TaskExit {
                        container_id,
                        id: proc2.exec_id.clone(),
                        pid,
                        exit_status: code,
                        exited_at: MessageField::some(timestamp(at)),
                        ..Default::default()
                    }),
                );
            }
        });
        Ok(StartResponse {
            pid,
            ..Default::default()
        })
    }

    async fn do_delete(&self, req: &DeleteRequest) -> Result<DeleteResponse> {
        let container = self.container(&req.id).await?;
        if !req.exec_id.is_empty() {
            let proc = container.process(&req.exec_id).await?;
            proc.with_state(|s| s.delete())?;
            let (code, at) = proc.snapshot().exited().unwrap_or((0, SystemTime::now()));
            proc.io.shutdown().await;
            container.execs.lock().await.remove(&req.exec_id);
            return Ok(DeleteResponse {
                pid: proc.snapshot().pid,
                exit_status: code,
                exited_at: MessageField::some(timestamp(at)),
                ..Default::default()
            });
        }
        let init = &container.init;
        let never_started = init.snapshot().status == Status::Created;
        init.with_state(|s| s.delete())?;
        if never_started {
            // Its helper still waits for Start: dropping the connection makes it exit.
            if let Ok(mut c) = init.conn.lock() {
                c.take();
            }
        }
        let (code, at) = init.snapshot().exited().unwrap_or((0, SystemTime::now()));
        let pid = init.snapshot().pid;
        teardown(
            container.driver.as_ref(),
            &container.name,
            &container.state_dir,
            &container.bundle,
            container.rootfs_mounted,
        )
        .await;
        if let Ok(cg) = container.cgroup() {
            let id = container.id.clone();
            let name = container.name.clone();
            let _ = tokio::task::spawn_blocking(move || cg.remove(&id, &name)).await;
        }
        if let Some(sup) = container.supervisor_pid.lock().ok().and_then(|g| *g) {
            debug!("{}: lxc-start was {sup}", container.id);
        }
        if let Some(post) = container.hooks.as_ref().and_then(|h| h.poststop().clone()) {
            let state = hooks::state_json(
                &req.id,
                "stopped",
                0,
                &container.bundle,
                &container.annotations,
            );
            if let Err(e) =
                hooks::run_all(&self.inner.exits, "poststop", &post, &state, Where::Host).await
            {
                warn!("{}: {e}", req.id);
            }
        }
        init.io.shutdown().await;
        for exec in container.execs.lock().await.values() {
            exec.io.shutdown().await;
        }
        self.inner.containers.lock().await.remove(&req.id);
        self.publish(
            topics::TASK_DELETE_EVENT_TOPIC,
            Box::new(TaskDelete {
                container_id: req.id.clone(),
                pid,
                exit_status: code,
                exited_at: MessageField::some(timestamp(at)),
                id: req.id.clone(),
                ..Default::default()
            }),
        );
        Ok(DeleteResponse {
            pid,
            exit_status: code,
            exited_at: MessageField::some(timestamp(at)),
            ..Default::default()
        })
    }

    async fn do_exec(&self, req: &ExecProcessRequest) -> Result<()> {
        let container = self.container(&req.id).await?;
        if req.exec_id.is_empty() {
            return Err(ShimError::InvalidArgument(
                "exec id must not be empty".into(),
            ));
        }
        if !container.init.snapshot().is_running() {
            return Err(ShimError::FailedPrecondition(format!(
                "container {} is not running",
                req.id
            )));
        }
        if container.execs.lock().await.contains_key(&req.exec_id) {
            return Err(ShimError::AlreadyExists(format!(
                "exec {:?} already exists",
                req.exec_id
            )));
        }
        let spec_any = req
            .spec
            .as_ref()
            .ok_or_else(|| ShimError::InvalidArgument("exec: no process spec".into()))?;
        let process: oci_spec::runtime::Process = serde_json::from_slice(&spec_any.value)
            .map_err(|e| ShimError::InvalidArgument(format!("exec process spec: {e}")))?;
        let mut init_spec = lxc_config::init_spec_for(&process)
            .map_err(|e| ShimError::InvalidArgument(e.to_string()))?;
        init_spec.terminal = req.terminal || init_spec.terminal;
        init_spec.stdio = stdio_flags(init_spec.terminal, &req.stdin, &req.stdout, &req.stderr);
        let paths = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: init_spec.terminal,
        };
        let (io, container_stdio) =
            ProcessIo::setup(&paths, &self.inner.namespace, &req.id, &self.inner.exits).await?;
        let proc = Proc::new(&req.exec_id, io);
        *proc
            .init_spec
            .lock()
            .map_err(|_| ShimError::Internal("lock".into()))? = Some(init_spec);
        *proc
            .pending_stdio
            .lock()
            .map_err(|_| ShimError::Internal("lock".into()))? = Some(container_stdio);
        container
            .execs
            .lock()
            .await
            .insert(req.exec_id.clone(), proc);
        self.publish(
            topics::TASK_EXEC_ADDED_EVENT_TOPIC,
            Box::new(TaskExecAdded {
                container_id: req.id.clone(),
                exec_id: req.exec_id.clone(),
                ..Default::default()
            }),
        );
        Ok(())
    }

    async fn do_kill(&self, req: &KillRequest) -> Result<()> {
        let container = self.container(&req.id).await?;
        let proc = container.process(&req.exec_id).await?;
        let state = proc.snapshot();
        let signal = nix::sys::signal::Signal::try_from(req.signal as i32).map_err(|_| {
            ShimError::InvalidArgument(format!("signal {} is not valid", req.signal))
        })?;
        if state.exited().is_some() {
            return Err(ShimError::NotFound(format!(
                "process {} already finished",
                if req.exec_id.is_empty() {
                    &req.id
                } else {
                    &req.exec_id
                }
            )));
        }
        if req.all && req.exec_id.is_empty() {
            let pids = container.cgroup()?.procs()?;
            for pid in pids {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal);
            }
            return Ok(());
        }
        if state.pid == 0 {
            return Err(ShimError::FailedPrecondition(
                "process has no pid yet".into(),
            ));
        }
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(state.pid as i32), signal).map_err(|e| {
            match e {
                nix::errno::Errno::ESRCH => {
                    ShimError::NotFound(format!("process {} already finished", state.pid))
                }
                other => ShimError::io(format!("kill {}", state.pid), other.into()),
            }
        })
    }
}

/// Which stdio descriptors the helper receives: none with a terminal (the pty is its stdio).
fn stdio_flags(
    terminal: bool,
    stdin: &str,
    stdout: &str,
    stderr: &str,
) -> ctinit_proto::StdioFlags {
    if terminal {
        return ctinit_proto::StdioFlags::default();
    }
    ctinit_proto::StdioFlags {
        stdin: !stdin.is_empty(),
        stdout: !stdout.is_empty(),
        stderr: !stderr.is_empty(),
    }
}

/// Adds the end of LXC's log to a failure of the container itself; the helper's own errors
/// (bad executable, cwd, user) already say everything.
fn explain_start_failure(e: ShimError, state_dir: &Path) -> ShimError {
    if matches!(e, ShimError::FailedPrecondition(_)) {
        return e;
    }
    let log = std::fs::read_to_string(log_path(state_dir)).unwrap_or_default();
    // The first errors name the cause; later ones are consequences ("failed to spawn").
    let mut lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" ERROR "))
        .take(4)
        .collect();
    if lines.is_empty() {
        lines = log.lines().rev().take(3).collect();
        lines.reverse();
    }
    if lines.is_empty() {
        return e;
    }
    let lines: Vec<String> = lines
        .iter()
        .map(|l| match l.find(" - ") {
            // Drop LXC's "name timestamp LEVEL file:func:line" prefix.
            Some(i) => l[i + 3..].to_string(),
            None => l.to_string(),
        })
        .collect();
    ShimError::Internal(format!("{e}; LXC said: {}", lines.join(" | ")))
}

/// Stops and removes a container and everything made for it. Best effort, idempotent: used by
/// Delete, by a failed Create, and by `shim delete` after a crash.
pub async fn teardown(
    driver: &dyn Driver,
    name: &str,
    state_dir: &Path,
    bundle: &Path,
    rootfs_mounted: bool,
) {
    if let Err(e) = driver.destroy(name, state_dir).await {
        warn!("destroy {name}: {e}");
    }
    if state_dir.exists() {
        if let Err(e) = std::fs::remove_dir_all(state_dir) {
            warn!("remove {}: {e}", state_dir.display());
        }
    }
    if rootfs_mounted {
        unmount_rootfs(&bundle.join("rootfs"));
    }
    let _ = std::fs::remove_file(bundle.join(BUNDLE_STATE_FILE));
}

#[cfg(test)]
mod tests {
    #[test]
    fn lxc_versions_parse() {
        assert_eq!(super::parse_version("5.0.2\n"), Some((5, 0, 2)));
        assert_eq!(super::parse_version("6.0.4-pve1"), Some((6, 0, 4)));
        assert_eq!(super::parse_version(""), None);
    }
}

#[derive(Default)]
struct Undo {
    rootfs: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    driver: Option<(Arc<dyn Driver>, String)>,
}

impl Undo {
    async fn run(self) {
        if let Some((driver, name)) = &self.driver {
            let dir = self.state_dir.clone().unwrap_or_default();
            if let Err(e) = driver.destroy(name, &dir).await {
                warn!("rollback: destroy {name}: {e}");
            }
        }
        if let Some(dir) = &self.state_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
        if let Some(rootfs) = &self.rootfs {
            unmount_rootfs(rootfs);
        }
    }
}

#[async_trait]
impl containerd_shim::protos::shim_async::Task for TaskService {
    async fn state(&self, _ctx: &TtrpcContext, req: StateRequest) -> TtrpcResult<StateResponse> {
        let container = self.container(&req.id).await?;
        let proc = container.process(&req.exec_id).await?;
        let s = proc.snapshot();
        let paths = proc.io.paths().clone();
        let (code, at) = s
            .exited()
            .map(|(c, t)| (c, MessageField::some(timestamp(t))))
            .unwrap_or((0, MessageField::none()));
        Ok(StateResponse {
            id: req.id.clone(),
            bundle: container.bundle.display().to_string(),
            pid: s.pid,
            status: api_status(s.status).into(),
            stdin: paths.stdin,
            stdout: paths.stdout,
            stderr: paths.stderr,
            terminal: paths.terminal,
            exit_status: code,
            exited_at: at,
            exec_id: req.exec_id.clone(),
            ..Default::default()
        })
    }

    async fn create(
        &self,
        _ctx: &TtrpcContext,
        req: CreateTaskRequest,
    ) -> TtrpcResult<CreateTaskResponse> {
        info!("create {} (bundle {})", req.id, req.bundle);
        Ok(self.do_create(&req).await?)
    }

    async fn start(&self, _ctx: &TtrpcContext, req: StartRequest) -> TtrpcResult<StartResponse> {
        info!("start {} {}", req.id, req.exec_id);
        Ok(self.do_start(&req).await?)
    }

    async fn delete(&self, _ctx: &TtrpcContext, req: DeleteRequest) -> TtrpcResult<DeleteResponse> {
        info!("delete {} {}", req.id, req.exec_id);
        Ok(self.do_delete(&req).await?)
    }

    async fn pids(&self, _ctx: &TtrpcContext, req: PidsRequest) -> TtrpcResult<PidsResponse> {
        let container = self.container(&req.id).await?;
        let mut pids: Vec<u32> = container
            .cgroup()
            .and_then(|c| c.procs())
            .unwrap_or_default();
        let init_pid = container.init.snapshot().pid;
        if init_pid > 0 && !pids.contains(&init_pid) && container.init.snapshot().is_running() {
            pids.insert(0, init_pid);
        }
        let execs: HashMap<u32, String> = container
            .execs
            .lock()
            .await
            .values()
            .map(|p| (p.snapshot().pid, p.exec_id.clone()))
            .collect();
        let processes = pids
            .into_iter()
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
            .collect();
        Ok(PidsResponse {
            processes,
            ..Default::default()
        })
    }

    async fn pause(&self, _ctx: &TtrpcContext, req: PauseRequest) -> TtrpcResult<Empty> {
        let container = self.container(&req.id).await?;
        container.init.with_state(|s| {
            if s.status == Status::Running {
                Ok(())
            } else {
                Err(ShimError::FailedPrecondition(format!(
                    "cannot pause container {}: it is {}",
                    req.id,
                    crate::process::describe(s.status)
                )))
            }
        })?;
        let cg = container.cgroup()?;
        tokio::task::spawn_blocking(move || cg.freeze(true))
            .await
            .map_err(|e| ShimError::Internal(e.to_string()))??;
        container.init.with_state(|s| s.pause())?;
        self.publish(
            topics::TASK_PAUSED_EVENT_TOPIC,
            Box::new(TaskPaused {
                container_id: req.id.clone(),
                ..Default::default()
            }),
        );
        Ok(Empty::new())
    }

    async fn resume(&self, _ctx: &TtrpcContext, req: ResumeRequest) -> TtrpcResult<Empty> {
        let container = self.container(&req.id).await?;
        container.init.with_state(|s| {
            if s.status == Status::Paused {
                Ok(())
            } else {
                Err(ShimError::FailedPrecondition(format!(
                    "cannot resume container {}: it is {}",
                    req.id,
                    crate::process::describe(s.status)
                )))
            }
        })?;
        let cg = container.cgroup()?;
        tokio::task::spawn_blocking(move || cg.freeze(false))
            .await
            .map_err(|e| ShimError::Internal(e.to_string()))??;
        container.init.with_state(|s| s.resume())?;
        self.publish(
            topics::TASK_RESUMED_EVENT_TOPIC,
            Box::new(TaskResumed {
                container_id: req.id.clone(),
                ..Default::default()
            }),
        );
        Ok(Empty::new())
    }

    async fn checkpoint(
        &self,
        _ctx: &TtrpcContext,
        _req: CheckpointTaskRequest,
    ) -> TtrpcResult<Empty> {
        Err(ShimError::Unimplemented(
            "checkpoint is not supported by the proxmox-lxc runtime".into(),
        )
        .into())
    }

    async fn kill(&self, _ctx: &TtrpcContext, req: KillRequest) -> TtrpcResult<Empty> {
        info!(
            "kill {} {} signal {} all={}",
            req.id, req.exec_id, req.signal, req.all
        );
        self.do_kill(&req).await?;
        Ok(Empty::new())
    }

    async fn exec(&self, _ctx: &TtrpcContext, req: ExecProcessRequest) -> TtrpcResult<Empty> {
        info!("exec {} {}", req.id, req.exec_id);
        self.do_exec(&req).await?;
        Ok(Empty::new())
    }

    async fn resize_pty(&self, _ctx: &TtrpcContext, req: ResizePtyRequest) -> TtrpcResult<Empty> {
        let container = self.container(&req.id).await?;
        let proc = container.process(&req.exec_id).await?;
        proc.io.resize(req.width, req.height).await?;
        Ok(Empty::new())
    }

    async fn close_io(&self, _ctx: &TtrpcContext, req: CloseIORequest) -> TtrpcResult<Empty> {
        let container = self.container(&req.id).await?;
        let proc = container.process(&req.exec_id).await?;
        if req.stdin {
            proc.io.close_stdin();
        }
        Ok(Empty::new())
    }

    async fn update(&self, _ctx: &TtrpcContext, req: UpdateTaskRequest) -> TtrpcResult<Empty> {
        let container = self.container(&req.id).await?;
        let any = req
            .resources
            .as_ref()
            .ok_or_else(|| ShimError::InvalidArgument("update: no resources given".into()))?;
        let resources: oci_spec::runtime::LinuxResources = serde_json::from_slice(&any.value)
            .map_err(|e| ShimError::InvalidArgument(format!("update: resources: {e}")))?;
        let cg = container.cgroup()?;
        tokio::task::spawn_blocking(move || cg.update(&resources))
            .await
            .map_err(|e| ShimError::Internal(e.to_string()))??;
        Ok(Empty::new())
    }

    async fn wait(&self, _ctx: &TtrpcContext, req: WaitRequest) -> TtrpcResult<WaitResponse> {
        let container = self.container(&req.id).await?;
        let proc = container.process(&req.exec_id).await?;
        let mut rx = proc.exited.subscribe();
        let value = rx
            .wait_for(|v| v.is_some())
            .await
            .map_err(|_| ShimError::Internal("process went away".into()))?
            .unwrap_or((255, SystemTime::now()));
        Ok(WaitResponse {
            exit_status: value.0,
            exited_at: MessageField::some(timestamp(value.1)),
            ..Default::default()
        })
    }

    async fn stats(&self, _ctx: &TtrpcContext, req: StatsRequest) -> TtrpcResult<StatsResponse> {
        let container = self.container(&req.id).await?;
        let cg = container.cgroup()?;
        let stats = tokio::task::spawn_blocking(move || cg.metrics())
            .await
            .map_err(|e| ShimError::Internal(e.to_string()))??;
        Ok(StatsResponse {
            stats: MessageField::some(stats),
            ..Default::default()
        })
    }

    async fn connect(
        &self,
        _ctx: &TtrpcContext,
        req: ConnectRequest,
    ) -> TtrpcResult<ConnectResponse> {
        let task_pid = match self.container(&req.id).await {
            Ok(c) => c.init.snapshot().pid,
            Err(_) => 0,
        };
        Ok(ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            version: env!("CARGO_PKG_VERSION").to_string(),
            ..Default::default()
        })
    }

    async fn shutdown(&self, _ctx: &TtrpcContext, _req: ShutdownRequest) -> TtrpcResult<Empty> {
        if self.inner.containers.lock().await.is_empty() {
            info!("no container left, shutting down");
            self.inner.exit_signal.signal();
        }
        Ok(Empty::new())
    }
}
