//! Exits routed to whoever waits for them: the shim's own children (lxc-start, lxc-attach,
//! logger binaries, hooks) by pid, and containers' inits by LXC name (see [`super::lxcmon`]).
//! An exit can arrive before anyone waits for it, so unclaimed exits are kept until claimed:
//! subscribing before spawning is then enough to never lose a status (the reaper-stealing
//! pitfall of shims).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use containerd_shim::asynchronous::monitor::monitor_subscribe;
use containerd_shim::monitor::{Subject, Topic};
use tokio::sync::oneshot;

/// Bounded: only our own children and containers end up unclaimed, and each is claimed or
/// forgotten when its container goes away; past this something is wrong, and old entries go.
const MAX_UNCLAIMED: usize = 4096;

struct Table<K> {
    waiters: HashMap<K, oneshot::Sender<i32>>,
    unclaimed: HashMap<K, i32>,
}

/// Waiters and unclaimed exits, keyed by pid or by container name.
pub struct ExitTable<K> {
    table: Arc<Mutex<Table<K>>>,
}

impl<K> Clone for ExitTable<K> {
    fn clone(&self) -> Self {
        ExitTable {
            table: self.table.clone(),
        }
    }
}

impl<K: Eq + Hash> Default for ExitTable<K> {
    fn default() -> Self {
        ExitTable {
            table: Arc::new(Mutex::new(Table {
                waiters: HashMap::new(),
                unclaimed: HashMap::new(),
            })),
        }
    }
}

impl<K: Eq + Hash> ExitTable<K> {
    /// Every critical section is one map operation, so a panic elsewhere cannot leave the
    /// table half-updated: a poisoned lock is used as it is.
    fn lock(&self) -> MutexGuard<'_, Table<K>> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Hands `code` to the waiter of `key`, or keeps it until one comes.
    pub fn report(&self, key: K, code: i32) {
        let mut t = self.lock();
        match t.waiters.remove(&key) {
            Some(tx) => {
                let _ = tx.send(code);
            }
            None => {
                if t.unclaimed.len() > MAX_UNCLAIMED {
                    t.unclaimed.clear();
                }
                t.unclaimed.insert(key, code);
            }
        }
    }

    /// Resolves with the exit of `key`; one that arrived earlier is returned at once.
    pub fn wait(&self, key: K) -> oneshot::Receiver<i32> {
        let (tx, rx) = oneshot::channel();
        let mut t = self.lock();
        match t.unclaimed.remove(&key) {
            Some(code) => {
                let _ = tx.send(code);
            }
            None => {
                t.waiters.insert(key, tx);
            }
        }
        rx
    }

    /// Drops a stale exit and waiter of `key` (a previous container of the same name).
    pub fn forget(&self, key: &K) {
        let mut t = self.lock();
        t.unclaimed.remove(key);
        t.waiters.remove(key);
    }
}

/// Exits of the shim's own children, reaped by the shim framework's SIGCHLD handler.
#[derive(Clone, Default)]
pub struct ChildExits {
    table: ExitTable<i32>,
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
                    table.report(pid, event.exit_code);
                }
            }
        });
        Ok(exits)
    }

    /// A future that resolves with the exit code (128+N for a signal) of child `pid`.
    pub fn wait(&self, pid: i32) -> oneshot::Receiver<i32> {
        self.table.wait(pid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn exits_reach_early_and_late_waiters() {
        let table = ExitTable::<i32>::default();
        let early = table.wait(1);
        table.report(1, 3);
        assert_eq!(early.await.unwrap(), 3);
        // Reported before anyone waited: kept until claimed.
        table.report(2, 4);
        assert_eq!(table.wait(2).await.unwrap(), 4);
        table.report(5, 6);
        table.forget(&5);
        let mut stale = table.wait(5);
        assert!(
            stale.try_recv().is_err(),
            "a forgotten exit is not delivered"
        );
    }
}
