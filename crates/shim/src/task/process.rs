//! One process (a container's init or an exec): its explicit state machine
//! Created -> Running <-> Paused -> Exited -> Deleted, and the work it still has pending, under
//! one lock. Each transition is a method that fails with FailedPrecondition when it is illegal,
//! so no RPC can, say, start a process twice or exec into a stopped container.

use std::sync::{Arc, MutexGuard, PoisonError};
use std::time::SystemTime;

use ctinit_proto::InitSpec;
use log::warn;
use tokio::sync::{watch, Mutex};

use crate::errors::{Result, ShimError};
use crate::host::helper;
use crate::host::stdio::{ContainerStdio, ProcessIo};

/// A process of a container: its state, its stdio and its exit.
pub struct Process {
    /// "" for the init.
    pub exec_id: String,
    state: std::sync::Mutex<ProcessState>,
    pub io: Arc<ProcessIo>,
    /// The exit, once known. Set with `send_replace`: `send` stores nothing while no Wait is
    /// subscribed, and a process that exits before containerd's Wait arrives would then never
    /// be reported to it.
    exited: watch::Sender<Option<(u32, SystemTime)>>,
    /// Held while start is published and while the exit is, so exit never precedes start.
    pub lifecycle: Mutex<()>,
}

impl Process {
    pub fn new(exec_id: &str, io: Arc<ProcessIo>, pending: Pending) -> Arc<Process> {
        let (exited, _) = watch::channel(None);
        let mut state = ProcessState::new(exec_id);
        state.pending = pending;
        Arc::new(Process {
            exec_id: exec_id.to_string(),
            state: std::sync::Mutex::new(state),
            io,
            exited,
            lifecycle: Mutex::new(()),
        })
    }

    /// The state lock. Every transition is checked and applied in one step under it, so a
    /// panic elsewhere cannot leave it half-updated: a poisoned lock is used as it is.
    pub fn state(&self) -> MutexGuard<'_, ProcessState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned: PoisonError<_>| {
                warn!(
                    "the state lock of {} was poisoned by a panic; going on with its last state",
                    describe_process(&self.exec_id)
                );
                poisoned.into_inner()
            })
    }

    pub fn pid(&self) -> u32 {
        self.state().pid
    }

    pub fn status(&self) -> Status {
        self.state().status
    }

    /// Records the exit and wakes every Wait; false if it was already recorded.
    pub fn record_exit(&self, code: u32, at: SystemTime) -> bool {
        if !self.state().exit(code, at) {
            return false;
        }
        self.exited.send_replace(Some((code, at)));
        true
    }

    /// Resolves once the process exited.
    pub async fn wait(&self) -> Result<(u32, SystemTime)> {
        let mut rx = self.exited.subscribe();
        let value = *rx.wait_for(|v| v.is_some()).await.map_err(|_| {
            ShimError::Internal(format!("{} went away", describe_process(&self.exec_id)))
        })?;
        Ok(value.unwrap_or((255, SystemTime::now())))
    }
}

/// What a process still needs before it starts, kept under its state lock.
#[derive(Default)]
pub enum Pending {
    #[default]
    None,
    /// The init's helper connection, waiting for Start.
    Init(helper::Connection),
    /// An exec's spec and the stdio made at Exec time.
    Exec {
        spec: Box<InitSpec>,
        stdio: ContainerStdio,
    },
}

fn describe_process(exec_id: &str) -> String {
    if exec_id.is_empty() {
        "the container's init".to_string()
    } else {
        format!("exec {exec_id:?}")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Created,
    Running,
    Paused,
    Exited { code: u32, at: SystemTime },
    Deleted,
}

pub struct ProcessState {
    /// "" for the init.
    pub exec_id: String,
    pub pid: u32,
    pub status: Status,
    pub pending: Pending,
}

impl ProcessState {
    pub fn new(exec_id: &str) -> Self {
        ProcessState {
            exec_id: exec_id.to_string(),
            pid: 0,
            status: Status::Created,
            pending: Pending::None,
        }
    }

    fn what(&self) -> String {
        describe_process(&self.exec_id)
    }

    /// The pending work, taken out (a second take finds none).
    pub fn take_pending(&mut self) -> Pending {
        std::mem::take(&mut self.pending)
    }

    pub fn start(&mut self) -> Result<()> {
        self.transition(Status::Created, Status::Running, "start")
    }

    pub fn pause(&mut self) -> Result<()> {
        self.transition(Status::Running, Status::Paused, "pause")
    }

    pub fn resume(&mut self) -> Result<()> {
        self.transition(Status::Paused, Status::Running, "resume")
    }

    /// Moves `from` -> `to`; from any other state fails, naming `doing` and the state.
    fn transition(&mut self, from: Status, to: Status, doing: &str) -> Result<()> {
        if self.status != from {
            return Err(ShimError::FailedPrecondition(format!(
                "cannot {doing} {}: it is {}",
                self.what(),
                describe(self.status)
            )));
        }
        self.status = to;
        Ok(())
    }

    /// Records the exit; a second report of the same exit is ignored (first one wins).
    pub fn exit(&mut self, code: u32, at: SystemTime) -> bool {
        match self.status {
            Status::Exited { .. } | Status::Deleted => false,
            _ => {
                self.status = Status::Exited { code, at };
                true
            }
        }
    }

    /// Delete is legal for a process that exited or never started.
    pub fn delete(&mut self) -> Result<()> {
        match self.status {
            Status::Exited { .. } | Status::Created => {
                if matches!(self.status, Status::Created) {
                    self.status = Status::Exited {
                        code: 0,
                        at: SystemTime::now(),
                    };
                }
                Ok(())
            }
            other => Err(ShimError::FailedPrecondition(format!(
                "cannot delete {}: it is {}",
                self.what(),
                describe(other)
            ))),
        }
    }

    pub fn exited(&self) -> Option<(u32, SystemTime)> {
        match self.status {
            Status::Exited { code, at } => Some((code, at)),
            _ => None,
        }
    }

    pub fn is_running(&self) -> bool {
        matches!(self.status, Status::Running | Status::Paused)
    }
}

pub fn describe(status: Status) -> &'static str {
    match status {
        Status::Created => "created",
        Status::Running => "running",
        Status::Paused => "paused",
        Status::Exited { .. } => "stopped",
        Status::Deleted => "deleted",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legal_path() {
        let mut p = ProcessState::new("");
        p.start().unwrap();
        p.pause().unwrap();
        p.resume().unwrap();
        assert!(p.exit(3, SystemTime::now()));
        assert!(!p.exit(4, SystemTime::now()), "first exit wins");
        assert_eq!(p.exited().unwrap().0, 3);
        p.delete().unwrap();
    }

    #[test]
    fn illegal_transitions_name_the_state() {
        let mut p = ProcessState::new("e1");
        let err = p.resume().unwrap_err().to_string();
        assert!(
            err.contains("exec \"e1\"") && err.contains("created"),
            "{err}"
        );
        p.start().unwrap();
        assert!(p.start().unwrap_err().to_string().contains("running"));
        assert!(p.delete().is_err());
        p.exit(0, SystemTime::now());
        assert!(p.start().unwrap_err().to_string().contains("stopped"));
    }

    #[test]
    fn delete_of_never_started_process_is_allowed() {
        let mut p = ProcessState::new("");
        p.delete().unwrap();
        assert!(p.exited().is_some());
    }
}
