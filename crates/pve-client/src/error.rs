//! The one error type of the client.

use std::collections::BTreeMap;
use std::time::Duration;

/// Everything that can go wrong talking to Proxmox VE.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Proxmox answered with an HTTP error. `message` is Proxmox's `message` (or the status
    /// line's reason when the body has none), `errors` the per-parameter messages of a
    /// "Parameter verification failed." answer.
    #[error("{method} {path}: HTTP {status}: {}{}", message.trim_end(), format_param_errors(errors))]
    Api {
        /// HTTP status.
        status: u16,
        /// Request method.
        method: String,
        /// API path (relative to `/api2/json`).
        path: String,
        /// Proxmox's message.
        message: String,
        /// Per-parameter errors.
        errors: BTreeMap<String, String>,
    },
    /// The request did not get an answer (connect, TLS, reset, timeout).
    #[error("{method} {path}: {}", cause_chain(source))]
    Transport {
        /// Request method.
        method: String,
        /// API path.
        path: String,
        /// The underlying error.
        #[source]
        source: reqwest::Error,
    },
    /// The answer was not what the schema promises.
    #[error("{method} {path}: unexpected response: {detail}")]
    Decode {
        /// Request method.
        method: String,
        /// API path.
        path: String,
        /// What did not fit.
        detail: String,
    },
    /// A task ended with an error exit status. `log` is the task log.
    #[error("task {upid} failed: {exitstatus}")]
    TaskFailed {
        /// The task.
        upid: String,
        /// Proxmox's exit status (the error message).
        exitstatus: String,
        /// The task log.
        log: Vec<String>,
    },
    /// A task ended with `WARNINGS: n`: not "OK", so not a success unless the caller
    /// accepts warnings ([`crate::WaitOptions::accept_warnings`]).
    #[error("task {upid} finished with {} warning(s): {}", warnings.len(), warnings.join("; "))]
    TaskWarnings {
        /// The task.
        upid: String,
        /// The warning lines.
        warnings: Vec<String>,
        /// The task log.
        log: Vec<String>,
    },
    /// A task did not finish before the deadline.
    #[error("task {upid} still {last_status} after {waited:?}")]
    TaskTimeout {
        /// The task.
        upid: String,
        /// How long we waited.
        waited: Duration,
        /// The last status seen ("running", or "not visible").
        last_status: String,
    },
    /// A UPID that does not parse.
    #[error("invalid UPID '{0}'")]
    InvalidUpid(String),
    /// No free VMID in the configured range.
    #[error("no free VMID in {start}..={end} after {tried} candidates")]
    VmidExhausted {
        /// Range start.
        start: u32,
        /// Range end.
        end: u32,
        /// Candidates tried.
        tried: u32,
    },
    /// A claim closure failed for another reason than "exists".
    #[error("claiming VMID {vmid}: {message}")]
    Claim {
        /// The candidate.
        vmid: u32,
        /// Why.
        message: String,
    },
    /// TLS setup failed (CA file, system roots).
    #[error("TLS: {0}")]
    Tls(String),
    /// Invalid client configuration or builder input.
    #[error("configuration: {0}")]
    Config(String),
}

/// "a: b: c" from an error and its causes (reqwest's own text hides the reason).
fn cause_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cause = c.source();
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref() {
                let text = inner.to_string();
                if !parts.iter().any(|p| p.contains(&text)) {
                    parts.push(text);
                }
            }
        }
    }
    parts.join(": ")
}

/// The first rustls error in the cause chain, including the errors wrapped inside
/// `io::Error`s (whose `source()` skips the wrapped error itself).
fn rustls_cause<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    if let Some(tls) = e.downcast_ref::<rustls::Error>() {
        return Some(tls);
    }
    if let Some(io) = e.downcast_ref::<std::io::Error>() {
        if let Some(found) = io.get_ref().and_then(|inner| rustls_cause(inner)) {
            return Some(found);
        }
    }
    e.source().and_then(rustls_cause)
}

fn caused_by_rustls(e: &(dyn std::error::Error + 'static)) -> bool {
    rustls_cause(e).is_some()
}

fn format_param_errors(errors: &BTreeMap<String, String>) -> String {
    if errors.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = errors
        .iter()
        .map(|(k, v)| format!("{k}: {}", v.trim_end()))
        .collect();
    format!(" ({})", parts.join("; "))
}

/// Messages of Proxmox failures that are worth retrying: a config lock held by another
/// operation, or a CT lock (`lock:` key) set by a running operation.
fn transient_message(message: &str) -> bool {
    (message.contains("can't lock file") && message.contains("got timeout"))
        || message.contains("CT is locked")
}

impl Error {
    /// The HTTP status, for API errors.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } => Some(*status),
            Error::Transport { source, .. } => source.status().map(|s| s.as_u16()),
            _ => None,
        }
    }

    /// Proxmox's message, for API errors and failed tasks.
    pub fn message(&self) -> Option<&str> {
        match self {
            Error::Api { message, .. } => Some(message),
            Error::TaskFailed { exitstatus, .. } => Some(exitstatus),
            _ => None,
        }
    }

    /// Per-parameter errors (empty unless "Parameter verification failed.").
    pub fn param_errors(&self) -> Option<&BTreeMap<String, String>> {
        match self {
            Error::Api { errors, .. } => Some(errors),
            _ => None,
        }
    }

    /// The task log, for task failures.
    pub fn task_log(&self) -> Option<&[String]> {
        match self {
            Error::TaskFailed { log, .. } | Error::TaskWarnings { log, .. } => Some(log),
            _ => None,
        }
    }

    /// Whether a CT start failed because systemd refused `pve-container@VMID`: started too
    /// often (more than `StartLimitBurst` times in `StartLimitIntervalSec`, by default 5 in
    /// 10 s). PVE::LXC `vm_start` runs `systemctl start`, whose message lands in the task
    /// log; the task's own error is only "command 'systemctl start ...' failed".
    pub fn is_start_limit_hit(&self) -> bool {
        match self {
            Error::TaskFailed {
                exitstatus, log, ..
            } => {
                exitstatus.contains("systemctl start pve-container")
                    && log
                        .iter()
                        .any(|l| l.contains("start of the service was attempted too often"))
            }
            _ => false,
        }
    }

    /// Whether the failure is transient and the same request may be sent again:
    /// 595/596/599 (pveproxy could not reach the node), a config lock timeout, "CT is
    /// locked", and connection-level failures (see [`Error::is_connection_failure`]).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Api {
                status, message, ..
            } => matches!(status, 595 | 596 | 599) || transient_message(message),
            Error::TaskFailed { exitstatus, .. } => transient_message(exitstatus),
            Error::Transport { .. } => self.is_connection_failure(),
            _ => false,
        }
    }

    /// Connect failures, resets and connections closed before the answer.
    pub fn is_connection_failure(&self) -> bool {
        let Error::Transport { source, .. } = self else {
            return false;
        };
        if self.is_tls_failure() {
            return false;
        }
        if source.is_connect() {
            return true;
        }
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(source);
        while let Some(e) = cause {
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                use std::io::ErrorKind::*;
                if matches!(
                    io.kind(),
                    ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof
                ) {
                    return true;
                }
            }
            let text = e.to_string();
            if text.contains("connection closed before message completed")
                || text.contains("connection reset")
                || text.contains("IncompleteMessage")
            {
                return true;
            }
            cause = e.source();
        }
        false
    }

    /// Whether the request certainly did not reach the server (connect failure, not a
    /// certificate problem): safe to repeat even for requests that are not idempotent.
    pub fn is_connect_failure(&self) -> bool {
        matches!(self, Error::Transport { source, .. } if source.is_connect())
            && !self.is_tls_failure()
    }

    /// The TLS handshake failed (certificate not trusted, pin mismatch): never transient.
    pub fn is_tls_failure(&self) -> bool {
        let Error::Transport { source, .. } = self else {
            return false;
        };
        caused_by_rustls(source)
    }

    /// With a pinned fingerprint ([`crate::TlsTrust::Fingerprint`]): the fingerprint of the
    /// certificate the server presented instead, `AB:CD:...` (also in this error's text).
    pub fn presented_fingerprint(&self) -> Option<&str> {
        let Error::Transport { source, .. } = self else {
            return None;
        };
        match rustls_cause(source)? {
            rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)) => other
                .0
                .downcast_ref::<crate::tls::FingerprintMismatch>()
                .map(|m| m.presented.as_str()),
            _ => None,
        }
    }

    /// "CT/VM N already exists" (create, nextid with vmid): the ID is taken.
    pub fn is_already_exists(&self) -> bool {
        match self {
            Error::Api {
                message, errors, ..
            } => {
                message.contains("already exists")
                    || errors.values().any(|v| v.contains("already exists"))
            }
            _ => false,
        }
    }

    /// "Configuration file ... does not exist": no such CT.
    pub fn is_not_found(&self) -> bool {
        match self {
            Error::Api {
                status, message, ..
            } => *status == 404 || message.contains("does not exist"),
            _ => false,
        }
    }

    /// 401: authentication failed or the ticket expired.
    pub fn is_unauthorized(&self) -> bool {
        self.status() == Some(401)
    }
}
