//! Exits of the shim's own children (lxc-start, lxc-attach, logger binaries), reaped by the shim
//! framework's SIGCHLD handler and routed here by pid. A child can exit before anyone waits for
//! it, so unclaimed exits are kept until claimed: subscribing before spawning is then enough to
//! never lose a status (the reaper-stealing pitfall of shims).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use containerd_shim::asynchronous::monitor::monitor_subscribe;
use containerd_shim::monitor::{Subject, Topic};
use tokio::sync::oneshot;

#[derive(Default)]
struct Table {
    waiters: HashMap<i32, oneshot::Sender<i32>>,
    unclaimed: HashMap<i32, i32>,
}

#[derive(Clone, Default)]
pub struct ChildExits {
    table: Arc<Mutex<Table>>,
}

impl ChildExits {
    /// Starts routing the framework's exit notifications. Call once, before any spawn.
    pub async fn start() -> std::io::Result<ChildExits> {
        let exits = ChildExits::default();
        let mut sub = monitor_subscribe(Topic::Pid)
            .await
            .map_err(|e| std::io::Error::other(format!("subscribe to exits: {e}")))?;
        let table = exits.table.clone();
        tokio::spawn(async move {
            while let Some(event) = sub.rx.recv().await {
                if let Subject::Pid(pid) = event.subject {
                    let Ok(mut t) = table.lock() else { return };
                    match t.waiters.remove(&pid) {
                        Some(tx) => {
                            let _ = tx.send(event.exit_code);
                        }
                        None => {
                            // Bounded: only our own children end up here, and each is claimed
                            // or dropped when its container goes away.
                            if t.unclaimed.len() > 4096 {
                                t.unclaimed.clear();
                            }
                            t.unclaimed.insert(pid, event.exit_code);
                        }
                    }
                }
            }
        });
        Ok(exits)
    }

    /// A future that resolves with the exit code (128+N for a signal) of child `pid`.
    pub fn wait(&self, pid: i32) -> oneshot::Receiver<i32> {
        let (tx, rx) = oneshot::channel();
        if let Ok(mut t) = self.table.lock() {
            match t.unclaimed.remove(&pid) {
                Some(code) => {
                    let _ = tx.send(code);
                }
                None => {
                    t.waiters.insert(pid, tx);
                }
            }
        }
        rx
    }
}
