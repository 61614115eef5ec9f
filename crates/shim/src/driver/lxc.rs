//! The plain LXC driver: the container's config is rendered into the shim's own lxcpath and
//! `lxc-start -F` runs as a child of the shim (its stdio is /dev/null: the workload's stdio
//! goes through the in-container helper).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use log::{debug, warn};

use super::{lxc_attach_command, run_command, CreateSpec, Driver};
use crate::errors::{IoContext, Result, ShimError};
use crate::exits::ChildExits;

pub struct LxcDriver {
    lxcpath: PathBuf,
    exits: ChildExits,
}

impl LxcDriver {
    pub fn new(lxcpath: PathBuf, exits: ChildExits) -> Self {
        LxcDriver { lxcpath, exits }
    }

    fn container_dir(&self, name: &str) -> PathBuf {
        self.lxcpath.join(name)
    }
}

/// Where lxc-start logs; read back to explain a failed start.
pub fn log_path(state_dir: &Path) -> PathBuf {
    state_dir.join("lxc.log")
}

#[async_trait]
impl Driver for LxcDriver {
    fn kind(&self) -> &'static str {
        "lxc"
    }

    fn lxcpath(&self) -> &Path {
        &self.lxcpath
    }

    async fn create(&self, spec: &CreateSpec<'_>) -> Result<String> {
        let name = spec.id;
        let dir = self.container_dir(name);
        if dir.join("config").exists() {
            return Err(ShimError::AlreadyExists(format!(
                "LXC container {} already exists in {}",
                name,
                self.lxcpath.display()
            )));
        }
        crate::private::make_dir(&dir, crate::private::Owner::ROOT)?;
        crate::private::write_file(
            &dir.join("config"),
            spec.plan.render_lxc().as_bytes(),
            crate::private::Owner::ROOT,
        )?;
        Ok(name.to_string())
    }

    async fn start(&self, name: &str, state_dir: &Path) -> Result<Option<u32>> {
        let mut cmd = std::process::Command::new("lxc-start");
        cmd.arg("-F")
            .arg("-n")
            .arg(name)
            .arg("-P")
            .arg(&self.lxcpath)
            .arg("-o")
            .arg(log_path(state_dir))
            .arg("-l")
            .arg("WARN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd.spawn().ctx(|| "run lxc-start".to_string())?;
        debug!("lxc-start for {name} is pid {}", child.id());
        Ok(Some(child.id()))
    }

    fn exec_command(&self, name: &str, helper_args: &[String]) -> std::process::Command {
        lxc_attach_command(&self.lxcpath, name, helper_args)
    }

    async fn destroy(&self, name: &str, _state_dir: &Path) -> Result<()> {
        let dir = self.container_dir(name);
        if !dir.exists() {
            return Ok(());
        }
        if self.is_running(name).await {
            let mut cmd = std::process::Command::new("lxc-stop");
            cmd.arg("-k")
                .arg("-n")
                .arg(name)
                .arg("-P")
                .arg(&self.lxcpath);
            let out = run_command(&self.exits, cmd, Duration::from_secs(30)).await?;
            if out.code != 0 && self.is_running(name).await {
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

    async fn is_running(&self, name: &str) -> bool {
        // liblxc's command socket answers only while the container's monitor runs.
        let mut cmd = std::process::Command::new("lxc-info");
        cmd.arg("-s")
            .arg("-H")
            .arg("-n")
            .arg(name)
            .arg("-P")
            .arg(&self.lxcpath);
        match run_command(&self.exits, cmd, Duration::from_secs(10)).await {
            Ok(out) => {
                let state = out.stdout.trim();
                !state.is_empty() && state != "STOPPED"
            }
            Err(_) => false,
        }
    }
}
