//! containerd's Task API (v2) over ttrpc. This file is the Task impl only: each RPC looks up
//! the container, calls one method of [`container::Container`], and publishes the events that
//! need no lock of a process. Every RPC is implemented; the ones this runtime cannot do answer
//! UNIMPLEMENTED (never the generated NOT_FOUND). Errors map to ttrpc codes in one place,
//! [`crate::errors`].
//!
//! Event order is guaranteed by construction: all events go through one queue to containerd
//! ([`events::Events`]); a process's start is published by [`container::Container::start`] and
//! its exit by [`events::Events::exit`] under the same per-process lock, and a container's
//! init exit after its execs' exits.

use std::collections::HashMap;
use std::sync::{Arc, MutexGuard, PoisonError};

use async_trait::async_trait;
use containerd_shim::api::DeleteResponse;
use containerd_shim::asynchronous::publisher::RemotePublisher;
use containerd_shim::asynchronous::ExitSignal;
use containerd_shim::protos::api::Status as ApiStatus;
use containerd_shim::protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskIO, TaskPaused, TaskResumed,
};
use containerd_shim::protos::protobuf::MessageField;
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
use log::{info, warn};

use crate::config::{self, ShimConfig};
use crate::driver::{self, Driver};
use crate::errors::{Result, ShimError};
use crate::host::process::exits::ChildExits;
use container::{Container, Env};
use events::{timestamp, Events};
use process::Status;

pub mod container;
pub mod events;
pub mod process;
pub mod record;

type TtrpcResult<T> = containerd_shim::protos::ttrpc::Result<T>;

/// The containers of this shim by id; `None` while one is being created, so that the id is
/// taken before Create's first await and a second Create of it fails at once.
#[derive(Default)]
struct Containers {
    map: std::sync::Mutex<HashMap<String, Option<Arc<Container>>>>,
}

impl Containers {
    /// Every critical section is one map operation, so a panic elsewhere cannot leave the
    /// table half-updated: a poisoned lock is used as it is.
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Option<Arc<Container>>>> {
        self.map.lock().unwrap_or_else(|poisoned: PoisonError<_>| {
            warn!("the containers table lock was poisoned by a panic; going on with it");
            poisoned.into_inner()
        })
    }

    fn get(&self, id: &str) -> Result<Arc<Container>> {
        self.lock()
            .get(id)
            .cloned()
            .flatten()
            .ok_or_else(|| ShimError::NotFound(format!("container {id} not found")))
    }

    /// Takes `id` for a Create; it is free again when the reservation drops unfilled.
    fn reserve(&self, id: &str) -> Result<Reservation<'_>> {
        let mut map = self.lock();
        if map.contains_key(id) {
            return Err(ShimError::AlreadyExists(format!(
                "container {id} already exists"
            )));
        }
        map.insert(id.to_string(), None);
        Ok(Reservation {
            table: self,
            id: id.to_string(),
            filled: false,
        })
    }

    fn remove(&self, id: &str) {
        self.lock().remove(id);
    }

    fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

struct Reservation<'a> {
    table: &'a Containers,
    id: String,
    filled: bool,
}

impl Reservation<'_> {
    fn fill(mut self, container: Arc<Container>) {
        self.table.lock().insert(self.id.clone(), Some(container));
        self.filled = true;
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.filled {
            self.table.remove(&self.id);
        }
    }
}

struct Inner {
    env: Arc<Env>,
    containers: Containers,
    exit_signal: Arc<ExitSignal>,
}

#[derive(Clone)]
pub struct TaskService {
    inner: Arc<Inner>,
}

fn api_status(s: Status) -> ApiStatus {
    match s {
        Status::Created => ApiStatus::CREATED,
        Status::Running => ApiStatus::RUNNING,
        Status::Paused => ApiStatus::PAUSED,
        Status::Exited { .. } | Status::Deleted => ApiStatus::STOPPED,
    }
}

impl TaskService {
    pub async fn new(
        namespace: &str,
        publisher: RemotePublisher,
        exit_signal: Arc<ExitSignal>,
    ) -> std::io::Result<TaskService> {
        let exits = ChildExits::start().await?;
        let events = Events::to_publisher(namespace, publisher);
        Ok(TaskService::with(namespace, events, exits, exit_signal))
    }

    fn with(
        namespace: &str,
        events: Events,
        exits: ChildExits,
        exit_signal: Arc<ExitSignal>,
    ) -> TaskService {
        TaskService {
            inner: Arc::new(Inner {
                env: Arc::new(Env {
                    namespace: namespace.to_string(),
                    exits,
                    events,
                }),
                containers: Containers::default(),
                exit_signal,
            }),
        }
    }

    fn publish(
        &self,
        topic: &'static str,
        event: Box<dyn containerd_shim::protos::protobuf::MessageDyn>,
    ) {
        self.inner.env.events.publish(topic, event);
    }

    fn container(&self, id: &str) -> Result<Arc<Container>> {
        self.inner.containers.get(id)
    }

    /// Create with the driver `open` gives for the runtime options.
    async fn create_task(
        &self,
        req: &CreateTaskRequest,
        open: impl FnOnce(&ShimConfig) -> Result<Arc<dyn Driver>>,
    ) -> Result<CreateTaskResponse> {
        let id = &req.id;
        if id.is_empty() || id.contains('/') || id.len() > 200 {
            return Err(ShimError::InvalidArgument(format!(
                "container id {id:?} is not valid"
            )));
        }
        let reservation = self.inner.containers.reserve(id)?;
        let config = config::from_create_options(req.options.as_ref())?;
        // The runtime options' level wins over the host file's, from this container on, but
        // never lowers containerd's `-debug` (crate::logging::effective_level).
        crate::logging::apply_configured_level(config.log_level.as_deref());
        let driver = open(&config)?;
        let container = Container::create(self.inner.env.clone(), req, driver).await?;
        let pid = container.init.pid();
        reservation.fill(container);
        let io = TaskIO {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
            ..Default::default()
        };
        let event = TaskCreate {
            container_id: id.clone(),
            bundle: req.bundle.clone(),
            rootfs: req.rootfs.clone(),
            io: MessageField::some(io),
            checkpoint: req.checkpoint.clone(),
            pid,
            ..Default::default()
        };
        self.publish(topics::TASK_CREATE_EVENT_TOPIC, Box::new(event));
        Ok(CreateTaskResponse {
            pid,
            ..Default::default()
        })
    }

    async fn delete_task(&self, req: &DeleteRequest) -> Result<DeleteResponse> {
        let container = self.container(&req.id)?;
        if !req.exec_id.is_empty() {
            let (pid, code, at) = container.delete_exec(&req.exec_id).await?;
            return Ok(DeleteResponse {
                pid,
                exit_status: code,
                exited_at: MessageField::some(timestamp(at)),
                ..Default::default()
            });
        }
        let (pid, code, at) = container.delete().await?;
        self.inner.containers.remove(&req.id);
        let event = TaskDelete {
            container_id: req.id.clone(),
            pid,
            exit_status: code,
            exited_at: MessageField::some(timestamp(at)),
            id: req.id.clone(),
            ..Default::default()
        };
        self.publish(topics::TASK_DELETE_EVENT_TOPIC, Box::new(event));
        Ok(DeleteResponse {
            pid,
            exit_status: code,
            exited_at: MessageField::some(timestamp(at)),
            ..Default::default()
        })
    }
}

#[async_trait]
impl containerd_shim::protos::shim_async::Task for TaskService {
    async fn state(&self, _ctx: &TtrpcContext, req: StateRequest) -> TtrpcResult<StateResponse> {
        let container = self.container(&req.id)?;
        let process = container.process(&req.exec_id).await?;
        let (pid, status, exited) = {
            let s = process.state();
            (s.pid, s.status, s.exited())
        };
        let paths = process.io.paths().clone();
        let (code, at) = exited
            .map(|(c, t)| (c, MessageField::some(timestamp(t))))
            .unwrap_or((0, MessageField::none()));
        Ok(StateResponse {
            id: req.id.clone(),
            bundle: container.bundle.display().to_string(),
            pid,
            status: api_status(status).into(),
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
        let env = self.inner.env.clone();
        let open = |config: &ShimConfig| driver::open(config, &env.namespace, &env.exits);
        Ok(self.create_task(&req, open).await?)
    }

    async fn start(&self, _ctx: &TtrpcContext, req: StartRequest) -> TtrpcResult<StartResponse> {
        info!("start {} {}", req.id, req.exec_id);
        let pid = self.container(&req.id)?.start(&req.exec_id).await?;
        Ok(StartResponse {
            pid,
            ..Default::default()
        })
    }

    async fn delete(&self, _ctx: &TtrpcContext, req: DeleteRequest) -> TtrpcResult<DeleteResponse> {
        info!("delete {} {}", req.id, req.exec_id);
        Ok(self.delete_task(&req).await?)
    }

    async fn pids(&self, _ctx: &TtrpcContext, req: PidsRequest) -> TtrpcResult<PidsResponse> {
        let processes = self.container(&req.id)?.pids().await;
        Ok(PidsResponse {
            processes,
            ..Default::default()
        })
    }

    async fn pause(&self, _ctx: &TtrpcContext, req: PauseRequest) -> TtrpcResult<Empty> {
        self.container(&req.id)?.freeze(true).await?;
        let event = TaskPaused {
            container_id: req.id.clone(),
            ..Default::default()
        };
        self.publish(topics::TASK_PAUSED_EVENT_TOPIC, Box::new(event));
        Ok(Empty::new())
    }

    async fn resume(&self, _ctx: &TtrpcContext, req: ResumeRequest) -> TtrpcResult<Empty> {
        self.container(&req.id)?.freeze(false).await?;
        let event = TaskResumed {
            container_id: req.id.clone(),
            ..Default::default()
        };
        self.publish(topics::TASK_RESUMED_EVENT_TOPIC, Box::new(event));
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
        self.container(&req.id)?.kill(&req).await?;
        Ok(Empty::new())
    }

    async fn exec(&self, _ctx: &TtrpcContext, req: ExecProcessRequest) -> TtrpcResult<Empty> {
        info!("exec {} {}", req.id, req.exec_id);
        self.container(&req.id)?.exec(&req).await?;
        let event = TaskExecAdded {
            container_id: req.id.clone(),
            exec_id: req.exec_id.clone(),
            ..Default::default()
        };
        self.publish(topics::TASK_EXEC_ADDED_EVENT_TOPIC, Box::new(event));
        Ok(Empty::new())
    }

    async fn resize_pty(&self, _ctx: &TtrpcContext, req: ResizePtyRequest) -> TtrpcResult<Empty> {
        let container = self.container(&req.id)?;
        let process = container.process(&req.exec_id).await?;
        process.io.resize(req.width, req.height).await?;
        Ok(Empty::new())
    }

    async fn close_io(&self, _ctx: &TtrpcContext, req: CloseIORequest) -> TtrpcResult<Empty> {
        let container = self.container(&req.id)?;
        let process = container.process(&req.exec_id).await?;
        if req.stdin {
            process.io.close_stdin();
        }
        Ok(Empty::new())
    }

    async fn update(&self, _ctx: &TtrpcContext, req: UpdateTaskRequest) -> TtrpcResult<Empty> {
        let container = self.container(&req.id)?;
        let any = req
            .resources
            .as_ref()
            .ok_or_else(|| ShimError::InvalidArgument("update: no resources given".into()))?;
        let resources: oci_spec::runtime::LinuxResources = serde_json::from_slice(&any.value)
            .map_err(|e| ShimError::InvalidArgument(format!("update: resources: {e}")))?;
        container.update(resources).await?;
        Ok(Empty::new())
    }

    async fn wait(&self, _ctx: &TtrpcContext, req: WaitRequest) -> TtrpcResult<WaitResponse> {
        let container = self.container(&req.id)?;
        let (code, at) = container.process(&req.exec_id).await?.wait().await?;
        Ok(WaitResponse {
            exit_status: code,
            exited_at: MessageField::some(timestamp(at)),
            ..Default::default()
        })
    }

    async fn stats(&self, _ctx: &TtrpcContext, req: StatsRequest) -> TtrpcResult<StatsResponse> {
        let stats = self.container(&req.id)?.stats().await?;
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
        let task_pid = self.container(&req.id).map(|c| c.init.pid()).unwrap_or(0);
        Ok(ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            version: env!("CARGO_PKG_VERSION").to_string(),
            ..Default::default()
        })
    }

    async fn shutdown(&self, _ctx: &TtrpcContext, _req: ShutdownRequest) -> TtrpcResult<Empty> {
        if self.inner.containers.is_empty() {
            info!("no container left, shutting down");
            self.inner.exit_signal.signal();
        }
        Ok(Empty::new())
    }
}

#[cfg(test)]
mod tests;
