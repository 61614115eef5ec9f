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

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use log::{debug, warn};
use tokio::sync::oneshot;

use super::attach::HelperAttach;
use super::lxc_node::{init_exit, LxcNode, Monitored};
use super::{CreateSpec, Driver, DriverRecord, InitExit, NodeContainer, Running, Starting};
use crate::errors::{IoContext, Result, ShimError};
use crate::host::cgroup::ContainerCgroup;
use crate::host::private::{self, Owner};
use crate::host::process::command::run_command;
use crate::host::process::exits::ChildExits;

/// The init's `/proc/PID/cgroup`, kept in the state dir (host root's, see
/// `private::make_state_dir`): `shim delete` after a crash finds the container's cgroups
/// there, with no monitor left to ask. Checked to name the container's own cgroups before
/// anything in them is killed.
const INIT_CGROUP_NAME: &str = "init.cgroup";
/// What the container's LXC config is renamed to once the shim took the init over: LXC's
/// tools would show the container STOPPED (no monitor answers), so `lxc-start -n` would
/// start a second one on the same rootfs and `lxc-destroy` would remove what the running
/// one uses. Without a `config`, LXC does not know the container (`lxc-ls` lists only
/// directories with one; `lxc-start`, `lxc-info`, `lxc-destroy` say it does not exist).
const ADOPTED_CONFIG_NAME: &str = "config.adopted";
/// How long `lxc-start` may take to die.
const STEP_LIMIT: Duration = Duration::from_secs(10);

/// Makes plain LXC containers in one lxcpath.
pub struct LxcDriver {
    node: LxcNode,
}

impl LxcDriver {
    pub fn new(lxcpath: PathBuf, exits: ChildExits) -> Self {
        LxcDriver {
            node: LxcNode::new(lxcpath, exits),
        }
    }
}

/// One plain LXC container (name = the container id).
#[derive(Clone)]
pub struct LxcContainer {
    node: LxcNode,
    name: String,
    state_dir: PathBuf,
    /// Whether the shim takes over the init from `lxc-start` once it waits for Start (see
    /// the module doc), or LXC's monitor supervises it for its whole life.
    adopt: bool,
    /// The adopted init's `/proc/PID/cgroup`, as read at adoption (what Delete kills).
    adopted_cgroup: std::sync::Arc<std::sync::OnceLock<String>>,
}

/// `lxc-start` runs until the init waits for Start; then the shim takes the init over.
struct Adoptable {
    container: LxcContainer,
    lxc_start: u32,
    /// Taken right after the spawn: the SIGKILL of the adoption reaches this `lxc-start`,
    /// never a process that got its pid after it ended (None: it had ended already).
    lxc_start_pidfd: Option<std::os::fd::OwnedFd>,
    lxc_start_exit: oneshot::Receiver<i32>,
}

impl LxcContainer {
    /// A container `shim delete` destroys, from the bundle's record.
    pub fn recovered(node: LxcNode, name: &str, state_dir: &Path) -> LxcContainer {
        LxcContainer {
            node,
            name: name.to_string(),
            state_dir: state_dir.to_path_buf(),
            adopt: false,
            adopted_cgroup: Default::default(),
        }
    }

    fn container_dir(&self) -> PathBuf {
        self.node.lxcpath().join(&self.name)
    }

    /// Stops an adopted container: every process of its cgroups killed at once
    /// (`ContainerCgroup::kill_everything`; a paused one too), the cgroups removed. Only
    /// cgroups named for the container are touched.
    async fn stop_adopted(&self, proc_cgroup: &str) -> Result<()> {
        let cg = ContainerCgroup::from_proc_text(proc_cgroup, 0)?;
        cg.check_named_for(&self.name)?;
        let name = self.name.clone();
        tokio::task::spawn_blocking(move || {
            cg.kill_everything()?;
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

impl Adoptable {
    /// Takes over the init from `lxc-start` (see the module doc). On failure `lxc-start` may
    /// still run; Create's rollback stops the container either way (`destroy`).
    async fn adopt(self, init_pid: u32) -> Result<Running> {
        let LxcContainer {
            node,
            name,
            state_dir,
            adopted_cgroup,
            ..
        } = self.container;
        let container_dir = node.lxcpath().join(&name);
        let (lxc_start, lxc_start_exit) = (self.lxc_start, self.lxc_start_exit);
        let lxc_start_pidfd = self.lxc_start_pidfd;
        let exits = node.exits();
        // 1. The init's pidfd, taken while lxc-start still holds the init (a zombie at worst),
        //    so it is sure to name it, and the filters LXC loaded for it, which execs must get
        //    too.
        let attach = HelperAttach::prepare(exits, init_pid).await?;
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
        let _ = adopted_cgroup.set(init_cgroup);
        // 3. lxc-start goes; its child, the init, passes to the shim.
        let init_exit = exits.wait(init_pid as i32);
        // Through its pidfd: if lxc-start has ended already (ESRCH), nothing else is hit.
        if let Some(pidfd) = &lxc_start_pidfd {
            let _ = super::attach::pidfd_kill(pidfd);
        }
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
            Ok(cg) => cg.remove_lxc_monitor(&name),
            Err(e) => warn!("{name}: LXC monitor's cgroup: {e}"),
        }
        std::fs::rename(
            container_dir.join("config"),
            container_dir.join(ADOPTED_CONFIG_NAME),
        )
        .ctx(|| format!("hide {}/config from LXC's tools", container_dir.display()))?;
        debug!("{name}: init {init_pid} adopted from lxc-start {lxc_start}");
        let exit: InitExit = Box::pin(async move {
            init_exit
                .await
                .ok()
                .and_then(|code| u32::try_from(code).ok())
                .unwrap_or(255)
        });
        Ok(Running {
            exit,
            execs: Box::new(attach),
        })
    }
}

#[async_trait]
impl Starting for Adoptable {
    fn supervisor(&self) -> Option<u32> {
        Some(self.lxc_start)
    }

    async fn supervise(self: Box<Self>, init_pid: u32) -> Result<Running> {
        self.adopt(init_pid).await
    }
}

/// The parent pid of `pid`, from /proc/PID/stat (after the command name, which may hold
/// anything but ends at the last `)`).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Where lxc-start logs; read back to explain a failed start.
fn log_path(state_dir: &Path) -> PathBuf {
    state_dir.join("lxc.log")
}

#[async_trait]
impl Driver for LxcDriver {
    async fn create(&self, spec: &CreateSpec<'_>) -> Result<Box<dyn NodeContainer>> {
        let container = LxcContainer {
            node: self.node.clone(),
            name: spec.id.to_string(),
            state_dir: spec.state_dir.to_path_buf(),
            adopt: !spec.plan.needs_monitor_at_stop(),
            adopted_cgroup: Default::default(),
        };
        let dir = container.container_dir();
        if dir.join("config").exists() || dir.join(ADOPTED_CONFIG_NAME).exists() {
            return Err(ShimError::AlreadyExists(format!(
                "LXC container {} already exists in {}",
                container.name,
                self.node.lxcpath().display()
            )));
        }
        if spec.plan.pve.unprivileged {
            searchable_lxcpath(self.node.lxcpath())?;
        }
        let config = if container.adopt {
            spec.plan.render_lxc_without_monitor()
        } else {
            spec.plan.render_lxc()
        };
        private::make_dir(&dir, Owner::ROOT)?;
        private::write_file(&dir.join("config"), config.as_bytes(), Owner::ROOT)?;
        Ok(Box::new(container))
    }
}

#[async_trait]
impl NodeContainer for LxcContainer {
    fn name(&self) -> &str {
        &self.name
    }

    async fn start(&self) -> Result<Box<dyn Starting>> {
        let from_monitor = if self.adopt {
            None
        } else {
            Some(self.node.watch_exit(&self.name).await?)
        };
        // LXC creates its log 0640; made here first, it stays as private as the rest (0600).
        let log = log_path(&self.state_dir);
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(crate::host::private::FILE_MODE)
            .open(&log)
            .ctx(|| format!("create {}", log.display()))?;
        let mut cmd = std::process::Command::new("lxc-start");
        cmd.arg("-F")
            .arg("-n")
            .arg(&self.name)
            .arg("-P")
            .arg(self.node.lxcpath())
            .arg("-o")
            .arg(&log)
            .arg("-l")
            .arg("WARN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd.spawn().ctx(|| "run lxc-start".to_string())?;
        let pid = child.id();
        // At once: lxc-start runs until its init ends, and its init waits for the shim. One
        // that failed and was reaped already gets none (and its start fails anyway).
        let pidfd = self
            .adopt
            .then(|| super::attach::pidfd_open(pid).ok())
            .flatten();
        debug!("lxc-start for {} is pid {pid}", self.name);
        let supervisor_exit = self.node.exits().wait(pid as i32);
        Ok(match from_monitor {
            Some(from_monitor) => Box::new(Monitored {
                exits: self.node.exits().clone(),
                supervisor: Some(pid),
                exit: init_exit(&self.name, from_monitor, Some(supervisor_exit)),
            }),
            None => Box::new(Adoptable {
                container: self.clone(),
                lxc_start: pid,
                lxc_start_pidfd: pidfd,
                lxc_start_exit: supervisor_exit,
            }),
        })
    }

    async fn destroy(&self) -> Result<()> {
        let dir = self.container_dir();
        // Adopted: no monitor to ask or to stop; the cgroups read at adoption say where the
        // container is (kept in memory, and in the state dir for `shim delete`), whatever
        // became of `lxcpath/NAME` meanwhile.
        let adopted = self.adopted_cgroup.get().cloned().or_else(|| {
            private::read_root_owned(&self.state_dir.join(INIT_CGROUP_NAME), 64 * 1024)
        });
        if let Some(proc_cgroup) = adopted {
            self.stop_adopted(&proc_cgroup).await?;
        } else if dir.join("config").exists() && self.node.is_running(&self.name).await {
            let mut cmd = std::process::Command::new("lxc-stop");
            cmd.arg("-k")
                .arg("-n")
                .arg(&self.name)
                .arg("-P")
                .arg(self.node.lxcpath());
            let out = run_command(self.node.exits(), cmd, Duration::from_secs(30)).await?;
            if out.code != 0 && self.node.is_running(&self.name).await {
                return Err(ShimError::Internal(format!(
                    "lxc-stop {} failed ({}): {}",
                    self.name,
                    out.code,
                    out.stderr.trim()
                )));
            }
        }
        // Only what create wrote: the rootfs belongs to containerd's bundle.
        if !dir.exists() {
            return Ok(());
        }
        for file in ["config", ADOPTED_CONFIG_NAME, "lxc.log", "lxc_monitor.log"] {
            let _ = std::fs::remove_file(dir.join(file));
        }
        if let Err(e) = std::fs::remove_dir(&dir) {
            warn!("remove {}: {e}", dir.display());
        }
        Ok(())
    }

    fn record(&self) -> DriverRecord {
        DriverRecord::Lxc {
            lxcpath: self.node.lxcpath().to_path_buf(),
        }
    }

    /// The first errors of LXC's log name the cause; later ones are consequences ("failed to
    /// spawn"). Without errors, its last lines.
    fn failure_detail(&self) -> Option<String> {
        let log = private::read_root_owned(&log_path(&self.state_dir), 1 << 20).unwrap_or_default();
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
