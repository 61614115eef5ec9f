//! Task IDs (UPIDs) and how a task is waited for.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::error::Error;

/// A Proxmox task ID: `UPID:node:PID:PSTART:STARTTIME:TYPE:ID:USER:` (hex numbers).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Upid {
    raw: String,
    /// Node the task runs on.
    pub node: String,
    /// Worker PID.
    pub pid: u32,
    /// Worker process start (clock ticks since boot).
    pub pstart: u64,
    /// Start time (Unix seconds).
    pub starttime: u64,
    /// Task type (`vzcreate`, `vzstart`, ...).
    pub kind: String,
    /// Object ID (the VMID).
    pub id: String,
    /// Who started it (`user@realm` or `user@realm!token`).
    pub user: String,
}

impl Upid {
    /// The UPID text.
    pub fn as_str(&self) -> &str {
        &self.raw
    }
}

impl fmt::Display for Upid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl FromStr for Upid {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || Error::InvalidUpid(s.to_string());
        let rest = s.strip_prefix("UPID:").ok_or_else(bad)?;
        let rest = rest.strip_suffix(':').ok_or_else(bad)?;
        let parts: Vec<&str> = rest.split(':').collect();
        if parts.len() != 7 {
            return Err(bad());
        }
        let node_ok = !parts[0].is_empty()
            && parts[0]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !parts[0].starts_with('-')
            && !parts[0].ends_with('-');
        let hex_ok = |p: &str, min: usize, max: usize| {
            (min..=max).contains(&p.len()) && p.chars().all(|c| c.is_ascii_hexdigit())
        };
        let field_ok = |p: &str, allow_empty: bool| {
            (allow_empty || !p.is_empty()) && !p.chars().any(|c| c.is_whitespace() || c == '/')
        };
        if !node_ok
            || !hex_ok(parts[1], 8, 8)
            || !hex_ok(parts[2], 8, 9)
            || !hex_ok(parts[3], 8, 8)
            || !field_ok(parts[4], false)
            || !field_ok(parts[5], true)
            || !field_ok(parts[6], false)
        {
            return Err(bad());
        }
        let hex = |p: &str| u64::from_str_radix(p, 16).map_err(|_| bad());
        Ok(Upid {
            raw: s.to_string(),
            node: parts[0].to_string(),
            pid: u32::try_from(hex(parts[1])?).map_err(|_| bad())?,
            pstart: hex(parts[2])?,
            starttime: hex(parts[3])?,
            kind: parts[4].to_string(),
            id: parts[5].to_string(),
            user: parts[6].to_string(),
        })
    }
}

/// How to wait for a task.
#[derive(Clone, Debug)]
pub struct WaitOptions {
    /// Give up after this long (the task goes on running in Proxmox).
    pub timeout: Duration,
    /// First poll interval; it grows by half each poll up to `max_interval`.
    pub initial_interval: Duration,
    /// Longest poll interval.
    pub max_interval: Duration,
    /// Treat `WARNINGS: n` as success (the warnings are in [`TaskOutcome::warnings`]).
    /// Default false: success is only `OK`.
    pub accept_warnings: bool,
    /// How long a fresh UPID may answer "no such task" (400/404) before that counts as an
    /// error: the task's log file may not be visible yet right after the fork.
    pub not_visible_grace: Duration,
}

impl Default for WaitOptions {
    fn default() -> Self {
        WaitOptions {
            timeout: Duration::from_secs(300),
            initial_interval: Duration::from_millis(50),
            max_interval: Duration::from_secs(2),
            accept_warnings: false,
            not_visible_grace: Duration::from_secs(10),
        }
    }
}

/// A task that finished successfully.
#[derive(Clone, Debug)]
pub struct TaskOutcome {
    /// The task.
    pub upid: Upid,
    /// `OK`, or `WARNINGS: n` when warnings were accepted.
    pub exitstatus: String,
    /// Warning lines (`WARN: ...`) when the task ended with warnings.
    pub warnings: Vec<String>,
    /// Status polls it took.
    pub polls: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_upids() {
        let u: Upid = "UPID:pve1:0000A1B2:00C0FFEE:6560A1B2:vzstart:100:root@pam!shim:"
            .parse()
            .unwrap();
        assert_eq!(u.node, "pve1");
        assert_eq!(u.pid, 0xA1B2);
        assert_eq!(u.kind, "vzstart");
        assert_eq!(u.id, "100");
        assert_eq!(u.user, "root@pam!shim");
        assert_eq!(u.to_string(), u.as_str());
        assert!("UPID:pve1:zz:00C0FFEE:6560A1B2:vzstart:100:root@pam:"
            .parse::<Upid>()
            .is_err());
        assert!("UPID:pve1:0000A1B2:00C0FFEE:6560A1B2:vzstart:100:root@pam"
            .parse::<Upid>()
            .is_err());
        assert!("hello".parse::<Upid>().is_err());
    }
}
