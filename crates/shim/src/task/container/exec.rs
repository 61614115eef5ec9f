//! Execs: made (spec, stdio) by Exec, run by Start through the driver's exec spawner.

use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

use containerd_shim::protos::events::task::TaskExecStarted;
use containerd_shim::protos::shim::shim::ExecProcessRequest;
use containerd_shim::protos::topics;
use ctinit_proto::InitSpec;
use log::debug;

use super::create::stdio_flags;
use super::{kill_pid, Container, HELPER_TIMEOUT};
use crate::driver::ExecFiles;
use crate::errors::{IoContext, Result, ShimError};
use crate::host::helper;
use crate::host::private::{self, Owner};
use crate::host::stdio::{ContainerStdio, ProcessIo, StdioPaths};
use crate::task::process::{Pending, Process, Status};

impl Container {
    pub(super) async fn start_exec(&self, exec: &Arc<Process>) -> Result<u32> {
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

    /// Runs the exec's helper in the container through the driver's exec spawner and lets it
    /// start the process. Returns its pid and its exit.
    async fn attach_exec(
        &self,
        exec: &Process,
        spec: &InitSpec,
        stdio: ContainerStdio,
    ) -> Result<(u32, tokio::sync::oneshot::Receiver<i32>)> {
        let seq = self.exec_seq.fetch_add(1, Ordering::SeqCst);
        // In the helper's directory, which the container's root owns (it reads the spec and
        // connects to the socket as that root).
        let helper_dir = self.state_dir.join(ctinit_proto::HELPER_DIR_NAME);
        let spec_path = helper_dir.join(format!("exec-{seq}.json"));
        let socket = helper_dir.join(format!("exec-{seq}.sock"));
        let owner = Owner::of(&helper_dir);
        private::write_file(&spec_path, &spec.to_json(), owner)?;
        let listener = helper::Listener::bind(&socket)?;
        private::restrict(&socket, owner)?;
        let files = self.exec_files(&socket, &spec_path);
        // The spec was read into a descriptor (or never will be): the file can go.
        let _ = std::fs::remove_file(&spec_path);
        let spawned = self.exec_spawner.spawn(files?).await?;
        let helper_pid = spawned.pid;
        let result = async {
            let supervisor = helper::Supervisor::Exec(helper_pid);
            let conn = helper::accept(listener, HELPER_TIMEOUT, Some(supervisor)).await?;
            let (conn, pid, pty) = helper::handshake(conn, stdio, HELPER_TIMEOUT).await?;
            if let Some(master) = pty {
                exec.io.attach_pty(master).await?;
            }
            helper::start(conn, HELPER_TIMEOUT).await?;
            Ok::<_, ShimError>(pid)
        }
        .await;
        match result {
            Ok(pid) => {
                // The command's stderr carries only its own errors; drained so it never
                // blocks, logged once it ends.
                crate::logging::spawn(async move {
                    if let Ok(text) = spawned.diagnostics.await {
                        if !text.trim().is_empty() {
                            debug!("exec command: {}", text.trim());
                        }
                    }
                });
                Ok((pid, spawned.exit))
            }
            Err(e) => {
                kill_pid(helper_pid);
                match spawned.diagnostics.await.unwrap_or_default().trim() {
                    "" => Err(e),
                    m => Err(ShimError::Internal(format!("{e} (exec command: {m})"))),
                }
            }
        }
    }

    /// The exec's helper, socket and spec as descriptors: the helper's directory is gone from
    /// the container once its init runs (see `tidy`).
    fn exec_files(&self, socket: &Path, spec: &Path) -> Result<ExecFiles> {
        let open = |path: &Path, path_only: bool| {
            let mut opts = std::fs::OpenOptions::new();
            opts.read(true);
            if path_only {
                opts.custom_flags(libc::O_PATH);
            }
            opts.open(path)
                .map(OwnedFd::from)
                .ctx(|| format!("open {}", path.display()))
        };
        Ok(ExecFiles {
            // A sealed memfd, not the host file: nothing in the container can write it.
            helper: helper::sealed()?.into(),
            socket: open(socket, true)?,
            spec: open(spec, false)?,
        })
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
}
