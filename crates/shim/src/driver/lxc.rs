//! The plain LXC driver: the container's config is rendered into the shim's own lxcpath and
//! `lxc-start -F` runs as a child of the shim (its stdio is /dev/null: the workload's stdio
//! goes through the in-container helper).
//!
//! `lxc-start` stays only until the init (the helper) waits for Start. Then the shim reads the
//! init's seccomp filters (for execs, see below), SIGKILLs `lxc-start`, and the init, which
//! LXC was told not to kill with it (`lxc.monitor.signal.pdeath = 0`), passes to the shim (a
//! subreaper): the shim reaps it and has its exit status first-hand. A container then costs
//! no process of the host's but its own (LXC's monitor held 3.5 MiB per container). What the
//! monitor did later is the shim's: signals go straight to the init, the cgroup freezer and
//! limits were the shim's already, the container's cgroups are removed at Delete, and an
//! exec gets in without `lxc-attach` (which needs the monitor to find the container): the
//! helper's `--attach` mode joins the init's namespaces through a pidfd, forks into its pid
//! namespace and loads the init's seccomp filters, as `lxc-attach` did (ct-init's `host.rs`).
//! A container that moves `linux.netDevices` in keeps its monitor: LXC gives those back to
//! the host when it sees the container stop (`ContainerPlan::needs_monitor_at_stop`).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use log::{debug, warn};
use tokio::sync::oneshot;

use super::lxc_node::{init_exit, LxcNode};
use super::{CreateSpec, Driver, DriverRecord, ExecCommand, InitExit, StartedInit};
use crate::errors::{IoContext, Result, ShimError};
use crate::host::cgroup::ContainerCgroup;
use crate::host::private::{self, Owner};
use crate::host::process::command::run_command;
use crate::host::process::exits::ChildExits;

/// The init's seccomp filters, as the helper's `--dump-seccomp` wrote them, in the state dir.
const SECCOMP_DUMP_NAME: &str = "seccomp.bpf";
/// The init's `/proc/PID/cgroup`, kept in the state dir: `shim delete` after a crash finds
/// the container's cgroups there, with no monitor left to ask.
const INIT_CGROUP_NAME: &str = "init.cgroup";
/// How long `lxc-start` may take to die, and the seccomp dump to finish.
const STEP_LIMIT: Duration = Duration::from_secs(10);

pub struct LxcDriver {
    node: LxcNode,
    run: Mutex<Run>,
}

/// Where the container's supervision stands.
enum Run {
    /// Created: LXC's monitor will go once the init waits for Start.
    Adoptable,
    /// Supervised by LXC's monitor for its whole life (see the module doc), or not created.
    Monitored,
    /// `lxc-start` runs until the init waits for Start.
    Starting {
        lxc_start: u32,
        exit: oneshot::Receiver<i32>,
    },
    /// The init is the shim's child.
    Adopted(Adopted),
}

struct Adopted {
    init_pid: u32,
    /// Keeps the init's identity for execs, whatever happens to its pid.
    pidfd: OwnedFd,
    seccomp: PathBuf,
}

impl LxcDriver {
    pub fn new(lxcpath: PathBuf, exits: ChildExits) -> Self {
        LxcDriver {
            node: LxcNode::new(lxcpath, exits),
            run: Mutex::new(Run::Monitored),
        }
    }

    fn container_dir(&self, name: &str) -> PathBuf {
        self.node.lxcpath().join(name)
    }

    /// Every critical section is one assignment or read: a poisoned lock is used as it is.
    fn run(&self) -> std::sync::MutexGuard<'_, Run> {
        self.run.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes over the init from `lxc-start` (see the module doc). On failure `lxc-start` may
    /// still run; Create's rollback stops the container either way (`destroy`).
    async fn adopt(
        &self,
        name: &str,
        init_pid: u32,
        state_dir: &Path,
        (lxc_start, lxc_start_exit): (u32, oneshot::Receiver<i32>),
    ) -> Result<(Adopted, InitExit)> {
        let exits = self.node.exits();
        // 1. The filters LXC loaded for the init, which execs must get too (none: an empty
        //    file, without starting the helper).
        let seccomp = state_dir.join(SECCOMP_DUMP_NAME);
        if has_seccomp_filters(init_pid)? {
            let mut dump = std::process::Command::new(state_dir.join(ctinit_proto::HELPER_NAME));
            dump.arg(ctinit_proto::DUMP_SECCOMP_ARG)
                .arg(init_pid.to_string())
                .arg(&seccomp)
                .env_clear();
            let out = run_command(exits, dump, STEP_LIMIT).await?;
            if out.code != 0 {
                return Err(ShimError::Internal(format!(
                    "read the seccomp filters of the container's init, for its execs: {}",
                    out.stderr.trim()
                )));
            }
        } else {
            private::write_file(&seccomp, b"", Owner::ROOT)?;
        }
        // 2. What Delete (or `shim delete`) needs to find the cgroups without the monitor.
        let proc_cgroup = |pid: u32| {
            std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
                .ctx(|| format!("read /proc/{pid}/cgroup"))
        };
        let init_cgroup = proc_cgroup(init_pid)?;
        let monitor_cgroup = proc_cgroup(lxc_start)?;
        private::write_file(
            &state_dir.join(INIT_CGROUP_NAME),
            init_cgroup.as_bytes(),
            Owner::ROOT,
        )?;
        // 3. lxc-start goes; its child, the init, passes to the shim. The pidfd, taken while
        //    lxc-start still holds the init (a zombie at worst), is sure to name it.
        let pidfd = pidfd_open(init_pid).ctx(|| format!("pidfd_open {init_pid}"))?;
        let init_exit = exits.wait(init_pid as i32);
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(lxc_start as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        tokio::time::timeout(STEP_LIMIT, lxc_start_exit)
            .await
            .map_err(|_| ShimError::Internal(format!("lxc-start {lxc_start} did not end")))?
            .map_err(|_| ShimError::Internal("lost lxc-start's exit".into()))?;
        if parent_of(init_pid) != Some(std::process::id()) {
            return Err(ShimError::Internal(format!(
                "the init of {name} (pid {init_pid}) did not pass to the shim when lxc-start ended"
            )));
        }
        match ContainerCgroup::from_proc_text(&monitor_cgroup, lxc_start) {
            Ok(cg) => cg.remove_lxc_monitor(name),
            Err(e) => warn!("{name}: LXC monitor's cgroup: {e}"),
        }
        debug!("{name}: init {init_pid} adopted from lxc-start {lxc_start}");
        let exit: InitExit = Box::pin(async move {
            init_exit
                .await
                .ok()
                .and_then(|code| u32::try_from(code).ok())
                .unwrap_or(255)
        });
        Ok((
            Adopted {
                init_pid,
                pidfd,
                seccomp,
            },
            exit,
        ))
    }

    /// Stops an adopted container: every process of its cgroups killed (thawed first, so
    /// that a paused one dies too), the cgroups removed.
    async fn stop_adopted(&self, name: &str, proc_cgroup: &str) -> Result<()> {
        let cg = ContainerCgroup::from_proc_text(proc_cgroup, 0)?;
        let name = name.to_string();
        tokio::task::spawn_blocking(move || {
            cg.kill_all();
            let _ = cg.freeze(false);
            cg.remove(&name, &name);
            match cg.procs() {
                Ok(left) if !left.is_empty() => Err(ShimError::Internal(format!(
                    "processes {left:?} of {name} survived SIGKILL"
                ))),
                _ => Ok(()),
            }
        })
        .await
        .map_err(|e| ShimError::Internal(format!("stop {e}")))?
    }
}

/// Whether `pid` runs under seccomp filters (`Seccomp: 2` in /proc/PID/status; a kernel
/// without seccomp has no such line).
fn has_seccomp_filters(pid: u32) -> Result<bool> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ctx(|| format!("read /proc/{pid}/status"))?;
    Ok(status
        .lines()
        .filter_map(|l| l.strip_prefix("Seccomp:"))
        .any(|mode| mode.trim() != "0"))
}

/// The parent pid of `pid`, from /proc/PID/stat (after the command name, which may hold
/// anything but ends at the last `)`).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

fn pidfd_open(pid: u32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open with a pid and no flags; the result is checked and owned below.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nothing else owns (pidfds are close-on-exec).
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Where lxc-start logs; read back to explain a failed start.
fn log_path(state_dir: &Path) -> PathBuf {
    state_dir.join("lxc.log")
}

#[async_trait]
impl Driver for LxcDriver {
    async fn create(&self, spec: &CreateSpec<'_>) -> Result<String> {
        let name = spec.id;
        let dir = self.container_dir(name);
        if dir.join("config").exists() {
            return Err(ShimError::AlreadyExists(format!(
                "LXC container {} already exists in {}",
                name,
                self.node.lxcpath().display()
            )));
        }
        if spec.plan.pve.unprivileged {
            searchable_lxcpath(self.node.lxcpath())?;
        }
        let (config, run) = if spec.plan.needs_monitor_at_stop() {
            (spec.plan.render_lxc(), Run::Monitored)
        } else {
            (spec.plan.render_lxc_without_monitor(), Run::Adoptable)
        };
        private::make_dir(&dir, Owner::ROOT)?;
        private::write_file(&dir.join("config"), config.as_bytes(), Owner::ROOT)?;
        *self.run() = run;
        Ok(name.to_string())
    }

    async fn start(&self, name: &str, state_dir: &Path) -> Result<StartedInit> {
        let adoptable = matches!(*self.run(), Run::Adoptable);
        let from_monitor = if adoptable {
            None
        } else {
            Some(self.node.watch_exit(name).await?)
        };
        // LXC creates its log 0640; made here first, it stays as private as the rest (0600).
        let log = log_path(state_dir);
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(crate::host::private::FILE_MODE)
            .open(&log)
            .ctx(|| format!("create {}", log.display()))?;
        let mut cmd = std::process::Command::new("lxc-start");
        cmd.arg("-F")
            .arg("-n")
            .arg(name)
            .arg("-P")
            .arg(self.node.lxcpath())
            .arg("-o")
            .arg(log_path(state_dir))
            .arg("-l")
            .arg("WARN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd.spawn().ctx(|| "run lxc-start".to_string())?;
        let pid = child.id();
        debug!("lxc-start for {name} is pid {pid}");
        let supervisor_exit = self.node.exits().wait(pid as i32);
        let exit = match from_monitor {
            Some(from_monitor) => Some(init_exit(name, from_monitor, Some(supervisor_exit))),
            None => {
                *self.run() = Run::Starting {
                    lxc_start: pid,
                    exit: supervisor_exit,
                };
                None
            }
        };
        Ok(StartedInit {
            supervisor: Some(pid),
            exit,
        })
    }

    async fn supervise(
        &self,
        name: &str,
        init_pid: u32,
        state_dir: &Path,
        exit: Option<InitExit>,
    ) -> Result<InitExit> {
        if let Some(exit) = exit {
            return Ok(exit);
        }
        let starting = match std::mem::replace(&mut *self.run(), Run::Monitored) {
            Run::Starting { lxc_start, exit } => (lxc_start, exit),
            _ => {
                return Err(ShimError::Internal(format!(
                    "{name}: no lxc-start to take the init from"
                )))
            }
        };
        let (adopted, exit) = self.adopt(name, init_pid, state_dir, starting).await?;
        *self.run() = Run::Adopted(adopted);
        Ok(exit)
    }

    fn exec_command(&self, name: &str, helper_args: &[String]) -> Result<ExecCommand> {
        let run = self.run();
        let Run::Adopted(adopted) = &*run else {
            return Ok(ExecCommand {
                command: self.node.attach_command(name, helper_args),
                detaches: false,
            });
        };
        let [helper, socket, spec] = helper_args else {
            return Err(ShimError::Internal(format!(
                "exec helper arguments {helper_args:?}"
            )));
        };
        let flags = crate::host::process::namespaces::to_join(adopted.init_pid)?;
        let pidfd = adopted
            .pidfd
            .try_clone()
            .map_err(|e| ShimError::io("duplicate the init's pidfd", e))?;
        let mut command = std::process::Command::new(helper);
        command
            .arg(ctinit_proto::ATTACH_ARG)
            .arg(flags.to_string())
            .arg(pidfd.as_raw_fd().to_string())
            .arg(&adopted.seccomp)
            .arg(socket)
            .arg(spec)
            .env_clear();
        // SAFETY: only fcntl, async-signal-safe, between fork and exec. The closure owns the
        // duplicate, which so lives as long as the command and goes with it.
        unsafe {
            command.pre_exec(move || {
                if libc::fcntl(pidfd.as_raw_fd(), libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Ok(ExecCommand {
            command,
            detaches: true,
        })
    }

    async fn destroy(&self, name: &str, state_dir: &Path) -> Result<()> {
        let dir = self.container_dir(name);
        // An empty name would be the lxcpath itself.
        if name.is_empty() || !dir.exists() {
            return Ok(());
        }
        // Adopted: no monitor to ask or to stop; the kept cgroups say where the container is.
        let adopted = std::fs::read_to_string(state_dir.join(INIT_CGROUP_NAME)).ok();
        if let Some(proc_cgroup) = adopted {
            self.stop_adopted(name, &proc_cgroup).await?;
        } else if self.node.is_running(name).await {
            let mut cmd = std::process::Command::new("lxc-stop");
            cmd.arg("-k")
                .arg("-n")
                .arg(name)
                .arg("-P")
                .arg(self.node.lxcpath());
            let out = run_command(self.node.exits(), cmd, Duration::from_secs(30)).await?;
            if out.code != 0 && self.node.is_running(name).await {
                return Err(ShimError::Internal(format!(
                    "lxc-stop {name} failed ({}): {}",
                    out.code,
                    out.stderr.trim()
                )));
            }
        }
        // Only what create wrote: the rootfs belongs to containerd's bundle.
        for file in ["config", "lxc.log", "lxc_monitor.log"] {
            let _ = std::fs::remove_file(dir.join(file));
        }
        if let Err(e) = std::fs::remove_dir(&dir) {
            warn!("remove {}: {e}", dir.display());
        }
        Ok(())
    }

    fn record(&self, _name: &str) -> DriverRecord {
        DriverRecord::Lxc {
            lxcpath: self.node.lxcpath().to_path_buf(),
        }
    }

    /// The first errors of LXC's log name the cause; later ones are consequences ("failed to
    /// spawn"). Without errors, its last lines.
    fn failure_detail(&self, state_dir: &Path) -> Option<String> {
        let log = std::fs::read_to_string(log_path(state_dir)).unwrap_or_default();
        let mut lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains(" ERROR "))
            .take(4)
            .collect();
        if lines.is_empty() {
            lines = log.lines().rev().take(3).collect();
            lines.reverse();
        }
        if lines.is_empty() {
            return None;
        }
        let lines: Vec<&str> = lines
            .iter()
            .map(|l| match l.find(" - ") {
                // Drop LXC's "name timestamp LEVEL file:func:line" prefix.
                Some(i) => &l[i + 3..],
                None => l,
            })
            .collect();
        Some(format!("LXC said: {}", lines.join(" | ")))
    }
}

/// LXC checks, as the container's root, that it may search the lxcpath (LXC's start.c,
/// `do_start`: `access(lxcpath, X_OK)`, else "Could not access ... Please grant it x access"):
/// for a container with a user namespace, the namespace's lxcpath and the configured one above
/// it get search permission for others (0711: listing them stays root's).
fn searchable_lxcpath(lxcpath: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if !lxcpath.is_dir() {
        crate::host::private::make_dir(lxcpath, crate::host::private::Owner::ROOT)?;
    }
    for dir in std::iter::once(lxcpath).chain(lxcpath.parent()) {
        let mode = std::fs::metadata(dir)
            .ctx(|| format!("stat {}", dir.display()))?
            .permissions()
            .mode();
        if mode & 0o001 == 0 {
            std::fs::set_permissions(
                dir,
                std::fs::Permissions::from_mode((mode & 0o7777) | 0o011),
            )
            .ctx(|| format!("chmod {}", dir.display()))?;
        }
    }
    Ok(())
}
