//! One container: Create as steps with an undo, and everything later RPCs do to it (start,
//! exec, kill, delete, pause, resume, update, stats, pids). Written once over [`Driver`]: what
//! differs between drivers stays behind that trait; host mechanics come from [`crate::host`].

use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use containerd_shim::protos::api::ProcessInfo;
use containerd_shim::protos::events::task::{TaskExecStarted, TaskOOM, TaskStart};
use containerd_shim::protos::protobuf::MessageField;
use containerd_shim::protos::shim::shim::{CreateTaskRequest, ExecProcessRequest, KillRequest};
use containerd_shim::protos::topics;
use ctinit_proto::InitSpec;
use log::{debug, info, warn};
use oci_spec::runtime::{Hook, Hooks, LinuxResources, Spec};
use tokio::sync::Mutex;

use super::events::Events;
use super::process::{describe, Pending, Process, Status};
use super::record::{state_dir_for, BundleRecord};
use crate::driver::{CreateSpec, Driver, InitExit};
use crate::errors::{IoContext, Result, ShimError};
use crate::host::cgroup::{read_oom_kills, ContainerCgroup, OomLedger};
use crate::host::exits::ChildExits;
use crate::host::hooks::{self, RunIn};
use crate::host::private::{self, Owner};
use crate::host::stdio::{ContainerStdio, ProcessIo, StdioPaths};
use crate::host::{helper, node, rootfs, staged};

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
    /// The container's name on the node: its id under `lxc`, the VMID under `pve`.
    name: String,
    state_dir: PathBuf,
    driver: Arc<dyn Driver>,
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

/// What a failed Create takes back, newest first.
#[derive(Default)]
struct Undo {
    rootfs: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    /// The state directory whose staged binds (`host::staged`) go.
    staged: Option<PathBuf>,
    driver: Option<(Arc<dyn Driver>, String)>,
}

impl Undo {
    /// Takes everything back; false if the container could not be destroyed.
    async fn run(self) -> bool {
        let mut destroyed = true;
        if let Some((driver, name)) = &self.driver {
            let dir = self.state_dir.clone().unwrap_or_default();
            if let Err(e) = driver.destroy(name, &dir).await {
                warn!("rollback: destroy {name}: {e}");
                destroyed = false;
            }
        }
        if let Some(dir) = &self.staged {
            staged::unstage(dir);
        }
        if let Some(dir) = &self.state_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
        if let Some(rootfs) = &self.rootfs {
            rootfs::unmount_rootfs(rootfs);
        }
        destroyed
    }
}

/// The init, up and waiting for Start.
struct StartedInit {
    io: Arc<ProcessIo>,
    conn: helper::Connection,
    pid: u32,
    pty: Option<std::os::fd::OwnedFd>,
    exit: InitExit,
}

impl Container {
    /// Create: the container exists, its init waits for Start. On failure everything made so
    /// far is taken back.
    pub async fn create(
        env: Arc<Env>,
        req: &CreateTaskRequest,
        driver: Arc<dyn Driver>,
    ) -> Result<Arc<Container>> {
        let bundle = PathBuf::from(&req.bundle);
        let spec = Spec::load(bundle.join("config.json")).map_err(|e| {
            ShimError::InvalidArgument(format!("read {}/config.json: {e}", bundle.display()))
        })?;
        let mut undo = Undo::default();
        match Self::create_steps(env, req, &spec, driver, &mut undo).await {
            Ok(container) => Ok(container),
            Err(e) => {
                warn!("create {} failed: {e}; rolling back", req.id);
                BundleRecord::close(&bundle, undo.run().await);
                Err(e)
            }
        }
    }

    async fn create_steps(
        env: Arc<Env>,
        req: &CreateTaskRequest,
        spec: &Spec,
        driver: Arc<dyn Driver>,
        undo: &mut Undo,
    ) -> Result<Arc<Container>> {
        let bundle = PathBuf::from(&req.bundle);
        let state_dir = state_dir_for(&env.namespace, &req.id);
        // Everything of the container's is as private as containerd's own bundle (issue 12):
        // owned by the container's root (mapped under a user namespace), 0700/0600.
        let owner = Owner::for_spec(spec);
        crate::host::subid::check_new_user_namespace(spec)?;
        prepare_dirs(req, &bundle, &state_dir, owner, &env.exits, undo)?;
        let (mut plan, init_spec) = plan(req, spec, &bundle, &state_dir, owner)?;
        undo.staged = Some(state_dir.clone());
        staged::stage(&mut plan, &state_dir, owner)?;
        let name = driver
            .create(&CreateSpec {
                namespace: &env.namespace,
                id: &req.id,
                plan: &plan,
                state_dir: &state_dir,
            })
            .await?;
        undo.driver = Some((driver.clone(), name.clone()));
        private::restrict_tree(&state_dir, owner, &[ctinit_proto::HELPER_NAME])?;
        let mut record = BundleRecord {
            namespace: env.namespace.clone(),
            id: req.id.clone(),
            name: name.clone(),
            driver: driver.record(&name),
            state_dir: state_dir.clone(),
            rootfs_mounted: !req.rootfs.is_empty(),
            init_pid: 0,
        };
        // Written before the start too, so that a shim that dies from here on leaves enough
        // for `shim delete` to find what it made (a Proxmox CT outlives the shim).
        record.write(&bundle)?;
        let paths = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: init_spec.terminal,
        };
        let started = start_init(
            &env,
            &req.id,
            &paths,
            driver.as_ref(),
            &name,
            (&state_dir, owner),
        )
        .await?;
        let pid = started.pid;
        let cgroup = ContainerCgroup::of_pid(pid)
            .ok()
            .map(|c| c.at_limit_level(&name));
        let oom = cgroup.as_ref().and_then(|cg| oom_ledger(cg, &state_dir));
        let container = Arc::new(Container {
            id: req.id.clone(),
            bundle: bundle.clone(),
            name,
            state_dir,
            driver,
            init: Process::new("", started.io, Pending::Init(started.conn)),
            execs: Mutex::new(HashMap::new()),
            cgroup,
            oom,
            rootfs_mounted: !req.rootfs.is_empty(),
            exec_seq: AtomicU32::new(0),
            hooks: plan.hooks.clone(),
            annotations: spec.annotations().clone().unwrap_or_default(),
            env,
        });
        container.init.state().pid = pid;
        container
            .set_up_started(
                spec,
                crate::host::tidy::MountFixes {
                    peer_binds: &plan.host_peer_binds,
                    recursive_attrs: &plan.recursive_attrs,
                },
                started.pty,
            )
            .await?;
        record.init_pid = pid;
        record.write(&bundle)?;
        container.watch_oom();
        crate::logging::spawn(container.clone().finish_when_init_exits(started.exit));
        Ok(container)
    }

    /// After the init is up, before Start: LXC's traces tidied, the create hooks run, the
    /// terminal attached.
    async fn set_up_started(
        &self,
        spec: &Spec,
        mount_fixes: crate::host::tidy::MountFixes<'_>,
        pty: Option<std::os::fd::OwnedFd>,
    ) -> Result<()> {
        let pid = self.init.pid();
        let masked_paths = spec
            .linux()
            .as_ref()
            .and_then(|l| l.masked_paths().clone())
            .unwrap_or_default();
        crate::host::tidy::tidy(&self.env.exits, pid, &masked_paths, mount_fixes).await?;
        if let Some(h) = &self.hooks {
            let mut create_runtime = h.prestart().clone().unwrap_or_default();
            create_runtime.extend(h.create_runtime().clone().unwrap_or_default());
            self.run_hooks("createRuntime", &create_runtime, "created", RunIn::Host)
                .await?;
            let create_container = h.create_container().clone().unwrap_or_default();
            let place = RunIn::Container { pid, root: false };
            self.run_hooks("createContainer", &create_container, "created", place)
                .await?;
        }
        if let Some(master) = pty {
            self.init.io.attach_pty(master).await?;
        }
        Ok(())
    }

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
            .or_else(|| read_oom_kills(&self.state_dir.join(lxc_config::OOM_COUNTER_AT_STOP_NAME)));
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

    async fn start_exec(&self, exec: &Arc<Process>) -> Result<u32> {
        if !self.init.state().is_running() {
            return Err(ShimError::FailedPrecondition(format!(
                "cannot start exec {:?}: container {} is not running",
                exec.exec_id, self.id
            )));
        }
        let guard = exec.lifecycle.lock().await;
        let (spec, stdio) = {
            let mut state = exec.state();
            if state.status != Status::Created {
                return Err(ShimError::FailedPrecondition(format!(
                    "exec {:?} was already started",
                    exec.exec_id
                )));
            }
            match state.take_pending() {
                Pending::Exec { spec, stdio } => (spec, stdio),
                _ => return Err(ShimError::FailedPrecondition("exec has no spec".into())),
            }
        };
        let (pid, exit) = match self.attach_exec(exec, &spec, stdio).await {
            Ok(started) => started,
            Err(e) => {
                exec.record_exit(255, SystemTime::now());
                return Err(e);
            }
        };
        {
            let mut state = exec.state();
            state.pid = pid;
            state.start()?;
        }
        let event = TaskExecStarted {
            container_id: self.id.clone(),
            exec_id: exec.exec_id.clone(),
            pid,
            ..Default::default()
        };
        self.env
            .events
            .publish(topics::TASK_EXEC_STARTED_EVENT_TOPIC, Box::new(event));
        drop(guard);
        let (events, id, exec) = (self.env.events.clone(), self.id.clone(), exec.clone());
        crate::logging::spawn(async move {
            let code = exit.await.unwrap_or(255);
            let code = u32::try_from(code).unwrap_or(255);
            events.exit(&id, &exec, code, SystemTime::now()).await;
        });
        Ok(pid)
    }

    /// Runs the exec's helper in the container through the driver's exec command and lets it
    /// start the process. Returns its pid and its exit (the exec command's, where that stays
    /// its parent).
    async fn attach_exec(
        &self,
        exec: &Process,
        spec: &InitSpec,
        stdio: ContainerStdio,
    ) -> Result<(u32, tokio::sync::oneshot::Receiver<i32>)> {
        let seq = self.exec_seq.fetch_add(1, Ordering::SeqCst);
        let spec_name = format!("exec-{seq}.json");
        let sock_name = format!("exec-{seq}.sock");
        let spec_path = self.state_dir.join(&spec_name);
        let owner = Owner::of(&self.state_dir);
        private::write_file(&spec_path, &spec.to_json(), owner)?;
        let socket = self.state_dir.join(&sock_name);
        let listener = helper::Listener::bind(&socket)?;
        private::restrict(&socket, owner)?;
        let (mut child, detaches) = self.spawn_exec_command(&spec_name, &sock_name)?;
        let command_pid = child.id();
        let command_exit = self.env.exits.wait(command_pid as i32);
        let stderr = child.stderr.take();
        let stdout = child.stdout.take();
        let exits = self.env.exits.clone();
        // The exec's helper: the command's child that it handed over, or its own child.
        let helper = async {
            if !detaches {
                return Ok((command_pid, command_exit));
            }
            let line = blocking(move || {
                let mut line = String::new();
                if let Some(out) = stdout {
                    let _ =
                        std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line);
                }
                line
            })
            .await?;
            let code = command_exit.await.unwrap_or(-1);
            match line.trim().parse::<u32>() {
                Ok(pid) if code == 0 => Ok((pid, exits.wait(pid as i32))),
                _ => Err(ShimError::Internal(format!(
                    "the exec command failed (exit status {code})"
                ))),
            }
        };
        // What to kill if the exec does not start: the helper once known (a detaching
        // command is gone by then, and its pid may be another process's).
        let mut started_pid = command_pid;
        let result = async {
            let (helper_pid, helper_exit) = helper.await?;
            started_pid = helper_pid;
            let supervisor = helper::Supervisor::Exec(helper_pid);
            let conn = helper::accept(listener, HELPER_TIMEOUT, Some(supervisor)).await?;
            let (conn, pid, pty) = helper::handshake(conn, stdio, HELPER_TIMEOUT).await?;
            // The exec command leaves the helper outside the container's cgroups (`lxc-attach
            // --elevated-privileges=CGROUP`, driver/lxc_node.rs; the helper's `--attach` forks
            // in the shim's): it joins them here, before
            // the workload starts, so that an exec works in a container at its pids limit.
            let cgroup = self.cgroup()?;
            blocking(move || cgroup.enter(pid)).await??;
            if let Some(master) = pty {
                exec.io.attach_pty(master).await?;
            }
            helper::start(conn, HELPER_TIMEOUT).await?;
            Ok::<_, ShimError>((pid, helper_exit))
        }
        .await;
        let _ = std::fs::remove_file(&spec_path);
        let read_stderr = tokio::task::spawn_blocking(move || {
            let mut text = String::new();
            if let Some(mut s) = stderr {
                let _ = std::io::Read::read_to_string(&mut s, &mut text);
            }
            text
        });
        match result {
            Ok((pid, exit)) => {
                // The exec command's stderr carries only its own errors; drained so it never
                // blocks.
                crate::logging::spawn(async move {
                    if let Ok(text) = read_stderr.await {
                        if !text.trim().is_empty() {
                            debug!("exec command: {}", text.trim());
                        }
                    }
                });
                Ok((pid, exit))
            }
            Err(e) => {
                kill_pid(started_pid);
                match read_stderr.await.unwrap_or_default().trim() {
                    "" => Err(e),
                    m => Err(ShimError::Internal(format!("{e} (exec command: {m})"))),
                }
            }
        }
    }

    /// The helper's directory is gone from the container once its init runs (see `tidy`): the
    /// exec's helper, socket and spec reach it as descriptors that the exec command passes
    /// on, named through the container's /proc/self/fd.
    fn spawn_exec_command(
        &self,
        spec_name: &str,
        sock_name: &str,
    ) -> Result<(std::process::Child, bool)> {
        let open_path = |name: &str, path_only: bool| {
            let path = self.state_dir.join(name);
            let mut opts = std::fs::OpenOptions::new();
            opts.read(true);
            if path_only {
                opts.custom_flags(libc::O_PATH);
            }
            opts.open(&path).ctx(|| format!("open {}", path.display()))
        };
        let passed = [
            // A sealed memfd, not the host file: nothing in the container can write it.
            helper::sealed(&self.state_dir.join(ctinit_proto::HELPER_NAME))?,
            open_path(sock_name, true)?,
            open_path(spec_name, false)?,
        ];
        let fds: Vec<i32> = passed.iter().map(|f| f.as_raw_fd()).collect();
        let args: Vec<String> = fds.iter().map(|fd| format!("/proc/self/fd/{fd}")).collect();
        let exec = self.driver.exec_command(&self.name, &args)?;
        let mut cmd = exec.command;
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
        let stdout = if exec.detaches {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        };
        cmd.stdin(std::process::Stdio::null())
            .stdout(stdout)
            .stderr(std::process::Stdio::piped());
        let child = cmd.spawn().ctx(|| "run the exec command".to_string())?;
        Ok((child, exec.detaches))
    }

    /// Exec: the process is made (spec, stdio), not started.
    pub async fn exec(&self, req: &ExecProcessRequest) -> Result<()> {
        if req.exec_id.is_empty() {
            return Err(ShimError::InvalidArgument(
                "exec id must not be empty".into(),
            ));
        }
        if !self.init.state().is_running() {
            return Err(ShimError::FailedPrecondition(format!(
                "container {} is not running",
                self.id
            )));
        }
        if self.execs.lock().await.contains_key(&req.exec_id) {
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
        let mut spec = lxc_config::init_spec_for(&process)
            .map_err(|e| ShimError::InvalidArgument(e.to_string()))?;
        spec.terminal = req.terminal || spec.terminal;
        spec.stdio = stdio_flags(spec.terminal, &req.stdin, &req.stdout, &req.stderr);
        let paths = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: spec.terminal,
        };
        let (io, stdio) =
            ProcessIo::setup(&paths, &self.env.namespace, &self.id, &self.env.exits).await?;
        let pending = Pending::Exec {
            spec: Box::new(spec),
            stdio,
        };
        let exec = Process::new(&req.exec_id, io, pending);
        self.execs.lock().await.insert(req.exec_id.clone(), exec);
        Ok(())
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
            self.driver.as_ref(),
            &self.name,
            &self.state_dir,
            &self.bundle,
            self.rootfs_mounted,
        )
        .await;
        if let Some(cg) = self.cgroup.clone() {
            let (id, name) = (self.id.clone(), self.name.clone());
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
        self.driver.update_resources(&self.name, &resources).await?;
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

/// Create's first step: the rootfs mounted, a fresh state directory with the helper in it.
fn prepare_dirs(
    req: &CreateTaskRequest,
    bundle: &Path,
    state_dir: &Path,
    owner: Owner,
    exits: &ChildExits,
    undo: &mut Undo,
) -> Result<()> {
    let rootfs = bundle.join("rootfs");
    if !req.rootfs.is_empty() {
        std::fs::create_dir_all(&rootfs).ctx(|| format!("create {}", rootfs.display()))?;
        // Before mounting: a later mount of several (or the idmapping after one) may fail
        // with the earlier ones in place.
        undo.rootfs = Some(rootfs.clone());
        rootfs::mount_rootfs(&req.rootfs, &rootfs, exits)?;
    }
    rootfs::ensure_state_root()?;
    // Left by a shim that died: the id is ours now (reserved by the task service).
    if state_dir.exists() {
        let _ = std::fs::remove_dir_all(state_dir);
    }
    private::make_dir(state_dir, owner)?;
    undo.state_dir = Some(state_dir.to_path_buf());
    helper::install(state_dir)
}

/// Create's second step: the container planned from the spec, the init's spec and the files
/// the plan needs (seccomp profile, device nodes) written into the state directory.
fn plan(
    req: &CreateTaskRequest,
    spec: &Spec,
    bundle: &Path,
    state_dir: &Path,
    owner: Owner,
) -> Result<(lxc_config::ContainerPlan, InitSpec)> {
    let facts = node::node_facts();
    let plan = lxc_config::plan(&lxc_config::PlanRequest {
        name: &req.id,
        spec,
        bundle,
        state_dir,
        facts: &facts,
    })
    .map_err(|e| ShimError::InvalidArgument(e.to_string()))?;
    for ignored in &plan.ignored {
        info!("{}: {} ignored: {}", req.id, ignored.field, ignored.reason);
    }
    crate::host::devices::create_nodes(&plan.devices)?;
    let mut init_spec = plan.init.clone();
    init_spec.terminal = req.terminal || init_spec.terminal;
    init_spec.stdio = stdio_flags(init_spec.terminal, &req.stdin, &req.stdout, &req.stderr);
    let spec_path = state_dir.join(ctinit_proto::INIT_SPEC_NAME);
    private::write_file(&spec_path, &init_spec.to_json(), owner)?;
    plan.write_state_files().ctx(|| {
        format!(
            "write seccomp profile and device nodes in {}",
            state_dir.display()
        )
    })?;
    Ok((plan, init_spec))
}

/// Starts the OOM kill count of a container in `cg` and points the stop hook's source
/// (`lxc_config::OOM_COUNTER_LINK_NAME` in `state_dir`) at its counter file.
fn oom_ledger(cg: &ContainerCgroup, state_dir: &Path) -> Option<Arc<OomLedger>> {
    let counter = cg.oom_counter_file()?;
    let link = state_dir.join(lxc_config::OOM_COUNTER_LINK_NAME);
    // Replaced in one rename: the hook may run at any time (a container that dies now).
    let next = state_dir.join(format!("{}.next", lxc_config::OOM_COUNTER_LINK_NAME));
    let _ = std::fs::remove_file(&next);
    if let Err(e) =
        std::os::unix::fs::symlink(&counter, &next).and_then(|()| std::fs::rename(&next, &link))
    {
        warn!(
            "{}: {e}; an OOM kill of the init may go unreported",
            link.display()
        );
    }
    Some(Arc::new(OomLedger::starting_at(&counter)))
}

fn publish_oom(events: &Events, id: &str) {
    let event = TaskOOM {
        container_id: id.to_string(),
        ..Default::default()
    };
    events.publish(topics::TASK_OOM_EVENT_TOPIC, Box::new(event));
}

/// Create's start step: stdio made, the container started by its driver, its helper
/// connected and ready (its process not yet started).
async fn start_init(
    env: &Env,
    id: &str,
    paths: &StdioPaths,
    driver: &dyn Driver,
    name: &str,
    (state_dir, owner): (&Path, Owner),
) -> Result<StartedInit> {
    let (io, stdio) = ProcessIo::setup(paths, &env.namespace, id, &env.exits).await?;
    let socket = state_dir.join(ctinit_proto::INIT_SOCKET_NAME);
    let listener = helper::Listener::bind(&socket)?;
    private::restrict(&socket, owner)?;
    let started = driver.start(name, state_dir).await?;
    let explain = |e: ShimError| explain_start_failure(e, driver, state_dir);
    let supervisor = started.supervisor.map(helper::Supervisor::Container);
    let conn = helper::accept(listener, HELPER_TIMEOUT, supervisor)
        .await
        .map_err(explain)?;
    let (conn, pid, pty) = helper::handshake(conn, stdio, HELPER_TIMEOUT)
        .await
        .map_err(explain)?;
    let exit = driver
        .supervise(name, pid, state_dir, started.exit)
        .await
        .map_err(explain)?;
    Ok(StartedInit {
        io,
        conn,
        pid,
        pty,
        exit,
    })
}

/// Adds what the driver's logs say to a failure of the container itself; the helper's own
/// errors (bad executable, cwd, user) already say everything.
fn explain_start_failure(e: ShimError, driver: &dyn Driver, state_dir: &Path) -> ShimError {
    if matches!(e, ShimError::FailedPrecondition(_)) {
        return e;
    }
    match driver.failure_detail(state_dir) {
        Some(detail) => ShimError::Internal(format!("{e}; {detail}")),
        None => e,
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

fn kill_pid(pid: u32) {
    if pid > 0 {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// Runs cgroup file work off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    crate::logging::spawn_blocking(f)
        .await
        .map_err(|e| ShimError::Internal(format!("cgroup work: {e}")))
}

/// Stops and removes a container and everything made for it. Best effort, idempotent: used by
/// Delete and by `shim delete` after a crash.
pub async fn teardown(
    driver: &dyn Driver,
    name: &str,
    state_dir: &Path,
    bundle: &Path,
    rootfs_mounted: bool,
) {
    let destroyed = match driver.destroy(name, state_dir).await {
        Ok(()) => true,
        Err(e) => {
            warn!("destroy {name}: {e}");
            false
        }
    };
    staged::unstage(state_dir);
    if state_dir.exists() {
        if let Err(e) = std::fs::remove_dir_all(state_dir) {
            warn!("remove {}: {e}", state_dir.display());
        }
    }
    if rootfs_mounted {
        rootfs::unmount_rootfs(&bundle.join("rootfs"));
    }
    BundleRecord::close(bundle, destroyed);
}
