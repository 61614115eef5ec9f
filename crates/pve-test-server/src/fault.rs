//! Faults the server injects on command, to test a client's handling of Proxmox's failure modes.

use std::time::Duration;

/// One kind of failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this HTTP status and message instead of handling the request
    /// (e.g. 596 "Broken pipe", 595 "Errors during connection establishment", 599).
    Status {
        /// HTTP status.
        status: u16,
        /// Proxmox's `message`.
        message: String,
    },
    /// Answer 500 "can't lock file '<lock_dir>/pve-config-VMID.lock' - got timeout", as
    /// Proxmox does when another operation holds the CT's config lock.
    LockTimeout,
    /// Answer 500 "CT is locked (<lock>)" as when the config carries a `lock:`.
    CtLocked(String),
    /// Answer with this status and raw body (e.g. a body that does not fit the schema).
    RawResponse {
        /// HTTP status.
        status: u16,
        /// The body, sent as `application/json`.
        body: String,
    },
    /// Close the connection without answering (the request was read).
    DropConnection,
    /// The next task takes at least this long.
    SlowTask(Duration),
    /// The next task fails: `TASK ERROR: <message>`.
    FailTask(String),
    /// The next task logs these warnings and ends with `WARNINGS: n`.
    TaskWarnings(Vec<String>),
    /// The next task's status and log answer "no such task" for the first `polls` requests,
    /// as a task whose log file is not visible yet.
    HiddenTask {
        /// How many status/log requests are refused.
        polls: u32,
    },
}

impl Fault {
    pub(crate) fn is_task_fault(&self) -> bool {
        matches!(
            self,
            Fault::SlowTask(_)
                | Fault::FailTask(_)
                | Fault::TaskWarnings(_)
                | Fault::HiddenTask { .. }
        )
    }
}

/// A fault and where and how often it applies.
#[derive(Clone, Debug)]
pub struct FaultRule {
    /// The failure.
    pub fault: Fault,
    /// Only requests with this method (None: any).
    pub method: Option<String>,
    /// Only requests to this path template, e.g. `/nodes/{node}/lxc/{vmid}/status/start`
    /// (None: any). For task faults: the request that starts the task.
    pub path: Option<String>,
    /// How many times it fires (then it is removed).
    pub times: u32,
}

impl FaultRule {
    /// A rule that fires once on any request (or the next task).
    pub fn new(fault: Fault) -> Self {
        FaultRule {
            fault,
            method: None,
            path: None,
            times: 1,
        }
    }

    /// Restricts it to one method and path template.
    pub fn on(mut self, method: &str, path_template: &str) -> Self {
        self.method = Some(method.to_string());
        self.path = Some(path_template.to_string());
        self
    }

    /// Fires `n` times.
    pub fn times(mut self, n: u32) -> Self {
        self.times = n;
        self
    }

    pub(crate) fn matches(&self, method: &str, template: &str) -> bool {
        self.method.as_deref().is_none_or(|m| m == method)
            && self.path.as_deref().is_none_or(|p| p == template)
    }
}
