//! Create as steps with an undo, and the teardown that Delete (and `shim delete` after a
//! crash) runs: the reverse of the same steps.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU32;
use std::sync::Arc;

use containerd_shim::protos::shim::shim::CreateTaskRequest;
use ctinit_proto::InitSpec;
use log::{info, warn};
use oci_spec::runtime::Spec;
use tokio::sync::Mutex;

use super::{Container, Env, HELPER_TIMEOUT};
use crate::driver::{CreateSpec, Driver, NodeContainer, Running};
use crate::errors::{IoContext, Result, ShimError};
use crate::host::cgroup::{ContainerCgroup, OomLedger};
use crate::host::mounts::{rootfs, staged};
use crate::host::private::{self, Owner};
use crate::host::process::exits::ChildExits;
use crate::host::process::hooks::RunIn;
use crate::host::stdio::{ProcessIo, StdioPaths};
use crate::host::{helper, node};
use crate::task::process::{Pending, Process};
use crate::task::record::{state_dir_for, BundleRecord};

/// What a failed Create takes back, newest first.
#[derive(Default)]
struct Undo {
    rootfs: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    /// The state directory whose staged binds (`host::staged`) go.
    staged: Option<PathBuf>,
    container: Option<Arc<dyn NodeContainer>>,
}

impl Undo {
    /// Takes everything back; false if the container could not be destroyed.
    async fn run(self) -> bool {
        let mut destroyed = true;
        if let Some(container) = &self.container {
            if let Err(e) = container.destroy().await {
                warn!("rollback: destroy {}: {e}", container.name());
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
    running: Running,
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
        crate::host::node::subid::check_new_user_namespace(spec)?;
        prepare_dirs(req, &bundle, &state_dir, owner, &env.exits, undo)?;
        let (mut plan, init_spec) = plan(req, spec, &bundle, &state_dir, owner)?;
        undo.staged = Some(state_dir.clone());
        staged::stage(&mut plan, &state_dir, owner)?;
        let node: Arc<dyn NodeContainer> = driver
            .create(&CreateSpec {
                namespace: &env.namespace,
                id: &req.id,
                plan: &plan,
                state_dir: &state_dir,
            })
            .await?
            .into();
        undo.container = Some(node.clone());
        private::restrict_state_dir(&state_dir, owner)?;
        let mut record = BundleRecord {
            namespace: env.namespace.clone(),
            id: req.id.clone(),
            name: node.name().to_string(),
            driver: node.record(),
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
        let started = start_init(&env, &req.id, &paths, node.as_ref(), (&state_dir, owner)).await?;
        let pid = started.pid;
        let cgroup = node.cgroup(pid).ok();
        let oom = cgroup.as_ref().and_then(|cg| oom_ledger(cg, &state_dir));
        let Running { exit, execs } = started.running;
        let container = Arc::new(Container {
            id: req.id.clone(),
            bundle: bundle.clone(),
            state_dir,
            node,
            exec_spawner: execs,
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
                crate::host::mounts::tidy::MountFixes {
                    peer_binds: &plan.host_peer_binds,
                    recursive_attrs: &plan.recursive_attrs,
                },
                started.pty,
            )
            .await?;
        record.init_pid = pid;
        record.write(&bundle)?;
        container.watch_oom();
        crate::logging::spawn(container.clone().finish_when_init_exits(exit));
        Ok(container)
    }

    /// After the init is up, before Start: LXC's traces tidied, the create hooks run, the
    /// terminal attached.
    async fn set_up_started(
        &self,
        spec: &Spec,
        mount_fixes: crate::host::mounts::tidy::MountFixes<'_>,
        pty: Option<std::os::fd::OwnedFd>,
    ) -> Result<()> {
        let pid = self.init.pid();
        let masked_paths = spec
            .linux()
            .as_ref()
            .and_then(|l| l.masked_paths().clone())
            .unwrap_or_default();
        crate::host::mounts::tidy::tidy(&self.env.exits, pid, &masked_paths, mount_fixes).await?;
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
    undo.state_dir = Some(state_dir.to_path_buf());
    let helper_dir = private::make_state_dir(state_dir, owner)?;
    helper::install(&helper_dir)
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
    let mut init_spec = plan.init.clone();
    init_spec.terminal = req.terminal || init_spec.terminal;
    init_spec.stdio = stdio_flags(init_spec.terminal, &req.stdin, &req.stdout, &req.stderr);
    let spec_path = state_dir
        .join(ctinit_proto::HELPER_DIR_NAME)
        .join(ctinit_proto::INIT_SPEC_NAME);
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

/// Create's start step: stdio made, the container started by its driver, its helper
/// connected and ready (its process not yet started).
async fn start_init(
    env: &Env,
    id: &str,
    paths: &StdioPaths,
    node: &dyn NodeContainer,
    (state_dir, owner): (&Path, Owner),
) -> Result<StartedInit> {
    let (io, stdio) = ProcessIo::setup(paths, &env.namespace, id, &env.exits).await?;
    let socket = state_dir
        .join(ctinit_proto::HELPER_DIR_NAME)
        .join(ctinit_proto::INIT_SOCKET_NAME);
    let listener = helper::Listener::bind(&socket)?;
    private::restrict(&socket, owner)?;
    let starting = node.start().await?;
    let explain = |e: ShimError| explain_start_failure(e, node);
    let supervisor = starting.supervisor().map(helper::Supervisor::Container);
    let conn = helper::accept(listener, HELPER_TIMEOUT, supervisor)
        .await
        .map_err(explain)?;
    let (conn, pid, pty) = helper::handshake(conn, stdio, HELPER_TIMEOUT)
        .await
        .map_err(explain)?;
    let running = starting.supervise(pid).await.map_err(explain)?;
    Ok(StartedInit {
        io,
        conn,
        pid,
        pty,
        running,
    })
}

/// Adds what the driver's logs say to a failure of the container itself; the helper's own
/// errors (bad executable, cwd, user) already say everything.
fn explain_start_failure(e: ShimError, node: &dyn NodeContainer) -> ShimError {
    if matches!(e, ShimError::FailedPrecondition(_)) {
        return e;
    }
    match node.failure_detail() {
        Some(detail) => ShimError::Internal(format!("{e}; {detail}")),
        None => e,
    }
}

/// Which stdio descriptors the helper receives: none with a terminal (the pty is its stdio).
pub(super) fn stdio_flags(
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

/// Stops and removes a container (the `containers` its driver made: one, or none or several
/// that `shim delete` found) and everything made for it. Best effort, idempotent: used by
/// Delete and by `shim delete` after a crash.
pub async fn teardown<C: AsRef<dyn NodeContainer>>(
    containers: &[C],
    state_dir: &Path,
    bundle: &Path,
    rootfs_mounted: bool,
) {
    let mut destroyed = true;
    for container in containers {
        let container = container.as_ref();
        if let Err(e) = container.destroy().await {
            warn!("destroy {}: {e}", container.name());
            destroyed = false;
        }
    }
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
