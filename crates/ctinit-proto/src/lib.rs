//! The contract between the shim (host side) and `containerd-shim-proxmox-lxc-init`, the static
//! helper that LXC runs as the container's init (and that the shim forks into it for an exec).
//!
//! Why a helper: LXC 5 cannot pass an arbitrary argv (`lxc.init.cmd` is split on spaces), has no
//! key for umask or the exact five capability sets, and under Proxmox the CT is started by
//! systemd, so the shim is not the parent of the workload and cannot hand it file descriptors.
//! The helper runs inside the container, talks to the shim over a unix socket, sets up what LXC
//! cannot, and `execve`s the workload, which keeps the helper's PID (PID 1 for the init).
//!
//! Layout: the shim keeps a per-container state directory on the host (short path, under
//! `/run`), bind-mounted read-only at [`CONTAINER_DIR`] inside the container. It holds the helper
//! binary ([`HELPER_NAME`]), the process specs (`*.json`) and the control sockets (`*.sock`).
//!
//! The helper is invoked as `HELPER SOCKET SPEC_FILE` (both absolute paths inside the container;
//! they never contain spaces, so `lxc.init.cmd` can carry them).
//!
//! Control protocol: one `SOCK_SEQPACKET` connection per process, the helper connects.
//! 1. shim -> helper: [`Message::Stdio`] with the stdio descriptors attached (`SCM_RIGHTS`), in the
//!    order stdin, stdout, stderr, each present only where its flag is set. Absent ones become
//!    `/dev/null`. With `terminal: true` in the spec the message is still sent, with no
//!    descriptors (the helper checks the count against the flags).
//! 2. helper -> shim: [`Message::Ready`] once everything up to `execve` is prepared (the
//!    executable resolved, user, groups, umask, rlimits, cwd set); with a terminal the pty master
//!    is attached. The shim learns the helper's host PID from `SO_PEERCRED` on the connection.
//!    On any failure the helper sends [`Message::Error`] instead and exits with status 1.
//! 3. shim -> helper: [`Message::Start`]. On EOF instead, the helper exits with status 1.
//! 4. the helper `execve`s. The socket is close-on-exec, so a successful exec reads as EOF on the
//!    shim's side; a failed exec sends [`Message::Error`] first.

use serde::{Deserialize, Serialize};

pub mod transport;

/// The part of a container's state directory that the container's root must reach and own
/// (the helper, its specs and sockets): the state directory itself stays host root's, so
/// nothing that host root reads, runs or acts on there (LXC's config includes, seccomp
/// profile, device nodes, hooks' files, logs) can be replaced by the container's root.
pub const HELPER_DIR_NAME: &str = "helper";

/// Where the state directory's [`HELPER_DIR_NAME`] is mounted inside the container. `/dev`
/// is a tmpfs in every
/// container (LXC autodev or the spec's own `/dev` mount), so the mount point can be created
/// even when the root filesystem is read-only.
pub const CONTAINER_DIR: &str = "/dev/.ctinit";

/// File name of the helper binary inside the helper's directory.
pub const HELPER_NAME: &str = "init";

/// File names of the init process's spec and socket inside the helper's directory.
pub const INIT_SPEC_NAME: &str = "init.json";
pub const INIT_SOCKET_NAME: &str = "init.sock";

/// The helper's host-side modes, which the shim runs on the host (never LXC, never a
/// container), with the container's init up and waiting for Start:
///
/// - `HELPER --dump-seccomp PID FILE`: writes the seccomp filters PID runs under to the
///   existing file FILE (the shim's memfd, as `/proc/self/fd/N`): per filter, oldest (first installed) first, its instruction count as a native-endian
///   u32 and then its `struct sock_filter`s, so that an exec gets exactly the filters LXC gave the init.
/// - `HELPER --attach NSFLAGS PIDFD PERSONALITY SECCOMP_FILE CGROUP_FDS SOCKET SPEC_FILE`:
///   first of all, while still the host's, non-dumpable and in no namespace of the
///   container's, joins the container's cgroups by writing "0" to each of `CGROUP_FDS`
///   (comma-separated descriptors of the init's `cgroup.procs` files, which the shim opened)
///   and sets the spec's `oom_score_adj` on itself (the host's root owns its /proc files);
///   then joins the namespaces `NSFLAGS` (`CLONE_NEW*`, decimal) of the process behind the
///   pidfd `PIDFD`, forks into them, writes the child's host pid and a newline to stdout and
///   exits 0. The child, still non-dumpable (until the workload's `execve`), takes the
///   init's execution domain `PERSONALITY` (`personality(2)`, decimal: what the init's
///   /proc/PID/personality says), loads the filters of `SECCOMP_FILE` (an empty file: none)
///   and goes on as the exec's helper with `SOCKET SPEC_FILE`. What `lxc-attach` did for an
///   exec, confined the way runc confines one, without staying around.
pub const DUMP_SECCOMP_ARG: &str = "--dump-seccomp";
pub const ATTACH_ARG: &str = "--attach";

/// Largest control message; specs travel in files, so messages stay small.
pub const MAX_MESSAGE: usize = 64 * 1024;

/// What the helper needs to become the OCI process. Built by `lxc-config` from the spec's
/// `process` (or an exec's process), consumed by the helper. Field meanings follow the OCI
/// runtime spec.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitSpec {
    /// Exact argv; `args[0]` is looked up in `PATH` (from `env`) when it has no `/`.
    pub args: Vec<String>,
    /// Exact environment, `KEY=VALUE`; it replaces the helper's environment.
    pub env: Vec<String>,
    /// Absolute working directory inside the container.
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    #[serde(default)]
    pub additional_gids: Vec<u32>,
    /// File mode creation mask; `None` leaves the inherited one (0022).
    #[serde(default)]
    pub umask: Option<u32>,
    /// The five capability sets by name (`CAP_CHOWN`, ...). `None`: leave what the helper has.
    #[serde(default)]
    pub capabilities: Option<CapabilitySets>,
    #[serde(default)]
    pub rlimits: Vec<Rlimit>,
    #[serde(default)]
    pub no_new_privileges: bool,
    #[serde(default)]
    pub oom_score_adj: Option<i32>,
    /// Give the process a new pty as its controlling terminal and stdio.
    #[serde(default)]
    pub terminal: bool,
    /// Initial terminal size.
    #[serde(default)]
    pub console_size: Option<ConsoleSize>,
    /// Which stdio descriptors the shim sends in [`Message::Stdio`].
    #[serde(default)]
    pub stdio: StdioFlags,
    /// `process.apparmorProfile`: the AppArmor profile the workload runs under. The helper asks
    /// for it on `execve` ("exec PROFILE" in `/proc/self/attr/apparmor/exec`), as runc's
    /// `apparmor.ApplyProfile` does, so its own setup runs unconfined. `None`: unconfined.
    #[serde(default)]
    pub apparmor_profile: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapabilitySets {
    #[serde(default)]
    pub bounding: Vec<String>,
    #[serde(default)]
    pub effective: Vec<String>,
    #[serde(default)]
    pub inheritable: Vec<String>,
    #[serde(default)]
    pub permitted: Vec<String>,
    #[serde(default)]
    pub ambient: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rlimit {
    /// `RLIMIT_NOFILE` and friends, as in the OCI spec.
    #[serde(rename = "type")]
    pub kind: String,
    pub soft: u64,
    pub hard: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleSize {
    pub height: u16,
    pub width: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdioFlags {
    #[serde(default)]
    pub stdin: bool,
    #[serde(default)]
    pub stdout: bool,
    #[serde(default)]
    pub stderr: bool,
}

impl StdioFlags {
    /// How many descriptors the [`Message::Stdio`] carries.
    pub fn count(&self) -> usize {
        [self.stdin, self.stdout, self.stderr]
            .iter()
            .filter(|f| **f)
            .count()
    }
}

/// One control message: a tag byte, then the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// shim -> helper; stdio descriptors attached.
    Stdio,
    /// helper -> shim; pty master attached when the spec asks for a terminal.
    Ready,
    /// shim -> helper: exec now.
    Start,
    /// helper -> shim: setup or exec failed; the text says what and why.
    Error(String),
}

const TAG_STDIO: u8 = b'I';
const TAG_READY: u8 = b'R';
const TAG_START: u8 = b'S';
const TAG_ERROR: u8 = b'E';

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bad control message: {}", self.0)
    }
}

impl std::error::Error for DecodeError {}

impl Message {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Message::Stdio => vec![TAG_STDIO],
            Message::Ready => vec![TAG_READY],
            Message::Start => vec![TAG_START],
            Message::Error(text) => {
                let mut out = Vec::with_capacity(1 + text.len());
                out.push(TAG_ERROR);
                // Keep under MAX_MESSAGE; cut on a char boundary.
                let mut end = text.len().min(MAX_MESSAGE - 1);
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                out.extend_from_slice(&text.as_bytes()[..end]);
                out
            }
        }
    }

    pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
        let (tag, rest) = bytes
            .split_first()
            .ok_or_else(|| DecodeError("empty message".into()))?;
        let no_payload = |m: Message| {
            if rest.is_empty() {
                Ok(m)
            } else {
                Err(DecodeError(format!("unexpected payload after tag {tag}")))
            }
        };
        match *tag {
            TAG_STDIO => no_payload(Message::Stdio),
            TAG_READY => no_payload(Message::Ready),
            TAG_START => no_payload(Message::Start),
            TAG_ERROR => Ok(Message::Error(String::from_utf8_lossy(rest).into_owned())),
            other => Err(DecodeError(format!("unknown tag {other}"))),
        }
    }
}

impl InitSpec {
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing plain data with string keys cannot fail.
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    pub fn from_json(bytes: &[u8]) -> Result<InitSpec, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// OCI's capability names by number (`linux/capability.h`), for the helper (which applies
/// them) and the shim (which reports them in its features): one table for both sides.
pub const CAPABILITY_NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        for m in [
            Message::Stdio,
            Message::Ready,
            Message::Start,
            Message::Error("exec: \"nope\": not found".into()),
        ] {
            assert_eq!(Message::decode(&m.encode()).unwrap(), m);
        }
    }

    #[test]
    fn decode_rejects_garbage() {
        assert!(Message::decode(b"").is_err());
        assert!(Message::decode(b"X").is_err());
        assert!(Message::decode(b"Sextra").is_err());
    }

    #[test]
    fn long_error_is_cut_on_char_boundary() {
        let text = "é".repeat(MAX_MESSAGE);
        let encoded = Message::Error(text).encode();
        assert!(encoded.len() <= MAX_MESSAGE);
        assert!(matches!(Message::decode(&encoded), Ok(Message::Error(_))));
    }

    #[test]
    fn spec_round_trips_and_rejects_unknown_fields() {
        let spec = InitSpec {
            args: vec!["sh".into(), "-c".into(), "echo 'a b'\n".into()],
            env: vec!["PATH=/bin".into()],
            cwd: "/".into(),
            uid: 1000,
            gid: 1000,
            additional_gids: vec![10, 20],
            umask: Some(0o077),
            capabilities: Some(CapabilitySets {
                bounding: vec!["CAP_KILL".into()],
                ..Default::default()
            }),
            rlimits: vec![Rlimit {
                kind: "RLIMIT_NOFILE".into(),
                soft: 1024,
                hard: 1024,
            }],
            no_new_privileges: true,
            oom_score_adj: Some(100),
            terminal: true,
            console_size: Some(ConsoleSize {
                height: 24,
                width: 80,
            }),
            stdio: StdioFlags {
                stdin: true,
                stdout: true,
                stderr: false,
            },
            apparmor_profile: Some("docker-default".into()),
        };
        let back = InitSpec::from_json(&spec.to_json()).unwrap();
        assert_eq!(back, spec);
        assert!(InitSpec::from_json(
            br#"{"args":[],"env":[],"cwd":"/","uid":0,"gid":0,"bogus":1}"#
        )
        .is_err());
    }
}
