//! The plain LXC driver: the container's config is rendered into the shim's own lxcpath and
//! `lxc-start -F` runs as a child of the shim (its stdio is /dev/null: the workload's stdio
//! goes through the in-container helper).

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use log::{debug, warn};

use super::lxc_node::{init_exit, LxcNode};
use super::{CreateSpec, Driver, DriverRecord, StartedInit};
use crate::errors::{IoContext, Result, ShimError};
use crate::host::command::run_command;
use crate::host::exits::ChildExits;

pub struct LxcDriver {
    node: LxcNode,
}

impl LxcDriver {
    pub fn new(lxcpath: PathBuf, exits: ChildExits) -> Self {
        LxcDriver {
            node: LxcNode::new(lxcpath, exits),
        }
    }

    fn container_dir(&self, name: &str) -> PathBuf {
        self.node.lxcpath().join(name)
    }
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
        crate::host::private::make_dir(&dir, crate::host::private::Owner::ROOT)?;
        crate::host::private::write_file(
            &dir.join("config"),
            spec.plan.render_lxc().as_bytes(),
            crate::host::private::Owner::ROOT,
        )?;
        Ok(name.to_string())
    }

    async fn start(&self, name: &str, state_dir: &Path) -> Result<StartedInit> {
        let from_monitor = self.node.watch_exit(name).await?;
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
        Ok(StartedInit {
            supervisor: Some(pid),
            exit: init_exit(name, from_monitor, Some(supervisor_exit)),
        })
    }

    fn exec_command(&self, name: &str, helper_args: &[String]) -> std::process::Command {
        self.node.attach_command(name, helper_args)
    }

    async fn destroy(&self, name: &str, _state_dir: &Path) -> Result<()> {
        let dir = self.container_dir(name);
        // An empty name would be the lxcpath itself.
        if name.is_empty() || !dir.exists() {
            return Ok(());
        }
        if self.node.is_running(name).await {
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
