//! The explicit state machine of one process (a container's init or an exec):
//! Created -> Running <-> Paused -> Exited -> Deleted. Each transition is a method that fails
//! with FailedPrecondition when it is illegal, so no RPC can, say, start a process twice or
//! exec into a stopped container.

use std::time::SystemTime;

use crate::errors::{Result, ShimError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Created,
    Running,
    Paused,
    Exited { code: u32, at: SystemTime },
    Deleted,
}

#[derive(Debug, Clone)]
pub struct ProcessState {
    /// "" for the init.
    pub exec_id: String,
    pub pid: u32,
    pub status: Status,
}

impl ProcessState {
    pub fn new(exec_id: &str) -> Self {
        ProcessState {
            exec_id: exec_id.to_string(),
            pid: 0,
            status: Status::Created,
        }
    }

    fn what(&self) -> String {
        if self.exec_id.is_empty() {
            "the container's init".to_string()
        } else {
            format!("exec {:?}", self.exec_id)
        }
    }

    pub fn start(&mut self) -> Result<()> {
        match self.status {
            Status::Created => {
                self.status = Status::Running;
                Ok(())
            }
            other => Err(ShimError::FailedPrecondition(format!(
                "cannot start {}: it is {}",
                self.what(),
                describe(other)
            ))),
        }
    }

    pub fn pause(&mut self) -> Result<()> {
        match self.status {
            Status::Running => {
                self.status = Status::Paused;
                Ok(())
            }
            other => Err(ShimError::FailedPrecondition(format!(
                "cannot pause {}: it is {}",
                self.what(),
                describe(other)
            ))),
        }
    }

    pub fn resume(&mut self) -> Result<()> {
        match self.status {
            Status::Paused => {
                self.status = Status::Running;
                Ok(())
            }
            other => Err(ShimError::FailedPrecondition(format!(
                "cannot resume {}: it is {}",
                self.what(),
                describe(other)
            ))),
        }
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
