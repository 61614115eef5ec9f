//! What both drivers share, since either way the container ends as an LXC container in an
//! lxcpath of this node: asking whether it runs, and learning
//! its init's exit status from LXC's monitor, which supervises it for its whole life
//! ([`Monitored`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use async_trait::async_trait;
use log::warn;
use tokio::sync::{oneshot, Mutex};

use super::attach::HelperAttach;
use super::{InitExit, Running, Starting};
use crate::errors::{IoContext, Result};
use crate::host::process::command::run_command;
use crate::host::process::exits::ChildExits;
use crate::host::process::lxcmon::{exit_status_from_wait, LxcMonitor};

/// How long the monitor may take to deliver the exit once the supervisor (`lxc-start -F`),
/// which ends only after the exit was reported, is gone.
const MONITOR_GRACE: Duration = Duration::from_secs(2);

/// One monitor connection per lxcpath for the whole shim, whatever driver instance (one per
/// container) asks: LXC broadcasts every container's exit of an lxcpath on one socket.
fn monitors() -> &'static Mutex<HashMap<PathBuf, LxcMonitor>> {
    static MONITORS: OnceLock<Mutex<HashMap<PathBuf, LxcMonitor>>> = OnceLock::new();
    MONITORS.get_or_init(Default::default)
}

/// An lxcpath of this node and the shim's children's exits.
#[derive(Clone)]
pub struct LxcNode {
    lxcpath: PathBuf,
    exits: ChildExits,
}

impl LxcNode {
    pub fn new(lxcpath: PathBuf, exits: ChildExits) -> Self {
        LxcNode { lxcpath, exits }
    }

    pub fn lxcpath(&self) -> &Path {
        &self.lxcpath
    }

    pub fn exits(&self) -> &ChildExits {
        &self.exits
    }

    /// Whether container `name` runs: liblxc's command socket answers only while the
    /// container's monitor process runs.
    pub async fn is_running(&self, name: &str) -> bool {
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
            Err(e) => {
                warn!("lxc-info {name}: {e}");
                false
            }
        }
    }

    /// Starts watching for the exit of container `name`'s init. Call before starting it: the
    /// monitor does not replay.
    pub async fn watch_exit(&self, name: &str) -> Result<oneshot::Receiver<i32>> {
        let mut monitors = monitors().lock().await;
        let monitor = match monitors.get(&self.lxcpath) {
            Some(m) => m.clone(),
            None => {
                let m = LxcMonitor::connect(&self.lxcpath)
                    .await
                    .ctx(|| format!("connect to the LXC monitor of {}", self.lxcpath.display()))?;
                monitors.insert(self.lxcpath.clone(), m.clone());
                m
            }
        };
        monitor.forget(name);
        Ok(monitor.wait_exit(name))
    }
}

/// A container whose init LXC's monitor supervises for its whole life: the exit comes from
/// the monitor; execs get in as under the plain driver ([`HelperAttach`]).
pub struct Monitored {
    pub exits: ChildExits,
    /// `lxc-start -F`, where the shim is its parent.
    pub supervisor: Option<u32>,
    pub exit: InitExit,
}

#[async_trait]
impl Starting for Monitored {
    fn supervisor(&self) -> Option<u32> {
        self.supervisor
    }

    async fn supervise(self: Box<Self>, init_pid: u32) -> crate::errors::Result<Running> {
        Ok(Running {
            exit: self.exit,
            execs: Box::new(HelperAttach::prepare(&self.exits, init_pid).await?),
        })
    }
}

/// The init's exit status from the monitor; with a supervisor, whichever comes first, giving
/// the monitor a moment after the supervisor ended.
pub fn init_exit(
    name: &str,
    from_monitor: oneshot::Receiver<i32>,
    supervisor_exit: Option<oneshot::Receiver<i32>>,
) -> InitExit {
    let name = name.to_string();
    Box::pin(async move {
        let status = match supervisor_exit {
            Some(supervisor) => {
                tokio::pin!(from_monitor);
                tokio::select! {
                    s = &mut from_monitor => s.ok(),
                    code = supervisor => {
                        match tokio::time::timeout(MONITOR_GRACE, &mut from_monitor).await {
                            Ok(Ok(s)) => Some(s),
                            _ => {
                                warn!("{name}: no exit status from the LXC monitor; lxc-start exited with {code:?}");
                                None
                            }
                        }
                    }
                }
            }
            None => from_monitor.await.ok(),
        };
        status.map(exit_status_from_wait).unwrap_or(255)
    })
}
