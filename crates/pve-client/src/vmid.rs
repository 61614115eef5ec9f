//! VMID allocation. `/cluster/nextid` reserves nothing, so an ID is only ours once an
//! operation that fails for an existing ID succeeded with it: an API create, or the
//! exclusive creation of `VMID.conf` on the cluster file system (pmxcfs refuses an ID that
//! exists on any node). Candidates come from a configured range; on "taken" the next one is
//! tried. Inside one process, concurrent allocations never try the same candidate at once.

use std::collections::BTreeSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::Error;

/// Outcome of claiming one candidate.
#[derive(Debug)]
pub enum Claim<T> {
    /// The ID is ours; `T` is whatever the claim produced (e.g. a UPID, a path).
    Claimed(T),
    /// The ID exists already; try the next one.
    Taken,
}

/// An inclusive VMID range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmidRange {
    /// First ID.
    pub start: u32,
    /// Last ID.
    pub end: u32,
}

impl VmidRange {
    /// A range within Proxmox's 100..=999999999.
    pub fn new(start: u32, end: u32) -> Result<Self, Error> {
        if start < 100 || end > 999_999_999 || start > end {
            return Err(Error::Config(format!(
                "VMID range {start}..={end} must lie within 100..=999999999"
            )));
        }
        Ok(VmidRange { start, end })
    }

    fn len(&self) -> u64 {
        u64::from(self.end - self.start) + 1
    }
}

/// Hands out VMIDs from a range. Cheap to clone; clones share state.
#[derive(Clone, Debug)]
pub struct VmidAllocator {
    range: VmidRange,
    /// Candidates being claimed right now by this process.
    in_flight: Arc<Mutex<BTreeSet<u32>>>,
    /// Where the next search starts (after the last ID claimed), so a busy range is not
    /// rescanned from the start each time; it wraps, so freed IDs are reused.
    cursor: Arc<AtomicU32>,
    max_candidates: u32,
}

impl VmidAllocator {
    /// An allocator for `range`.
    pub fn new(range: VmidRange) -> Self {
        VmidAllocator {
            range,
            in_flight: Arc::new(Mutex::new(BTreeSet::new())),
            cursor: Arc::new(AtomicU32::new(range.start)),
            max_candidates: u32::try_from(range.len()).unwrap_or(u32::MAX),
        }
    }

    /// Caps how many candidates one allocation tries (default: the whole range).
    pub fn max_candidates(mut self, n: u32) -> Self {
        self.max_candidates = n.max(1);
        self
    }

    /// The range.
    pub fn range(&self) -> VmidRange {
        self.range
    }

    /// Finds an ID and claims it with `claim`. `known_used` (e.g. from
    /// [`crate::Client::used_vmids`]) is skipped without a claim attempt; it is only a hint.
    pub async fn allocate<T, F, Fut>(
        &self,
        known_used: &BTreeSet<u32>,
        mut claim: F,
    ) -> Result<(u32, T), Error>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<Claim<T>, Error>>,
    {
        let len = self.range.len();
        let mut offset = u64::from(
            self.cursor
                .load(Ordering::SeqCst)
                .clamp(self.range.start, self.range.end)
                - self.range.start,
        );
        let mut tried = 0u32;
        let mut scanned = 0u64;
        while scanned < len && tried < self.max_candidates {
            let candidate = self.range.start + u32::try_from(offset % len).unwrap_or(0);
            offset += 1;
            scanned += 1;
            if known_used.contains(&candidate) {
                continue;
            }
            {
                let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
                if !in_flight.insert(candidate) {
                    continue;
                }
            }
            tried += 1;
            let result = claim(candidate).await;
            self.in_flight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&candidate);
            match result {
                Ok(Claim::Claimed(value)) => {
                    let next = if candidate >= self.range.end {
                        self.range.start
                    } else {
                        candidate + 1
                    };
                    self.cursor.store(next, Ordering::SeqCst);
                    tracing::debug!(vmid = candidate, tried, "VMID claimed");
                    return Ok((candidate, value));
                }
                Ok(Claim::Taken) => {
                    tracing::debug!(vmid = candidate, "VMID taken, trying the next one");
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::VmidExhausted {
            start: self.range.start,
            end: self.range.end,
            tried,
        })
    }
}

/// Claims `VMID.conf` in `config_dir` by creating it exclusively with `contents`
/// (on Proxmox: `/etc/pve/lxc`, where pmxcfs refuses an ID used anywhere in the cluster).
pub async fn claim_config_file(
    config_dir: &Path,
    vmid: u32,
    contents: &str,
) -> Result<Claim<PathBuf>, Error> {
    use tokio::io::AsyncWriteExt;
    let path = config_dir.join(format!("{vmid}.conf"));
    match tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .await
    {
        Ok(mut f) => {
            let written = async {
                f.write_all(contents.as_bytes()).await?;
                f.sync_all().await
            }
            .await;
            if let Err(e) = written {
                let _ = tokio::fs::remove_file(&path).await;
                return Err(Error::Claim {
                    vmid,
                    message: format!("writing {}: {e}", path.display()),
                });
            }
            Ok(Claim::Claimed(path))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(Claim::Taken),
        Err(e) => Err(Error::Claim {
            vmid,
            message: format!("creating {}: {e}", path.display()),
        }),
    }
}
