//! VMID allocation. `/cluster/nextid` reserves nothing, so an ID is only ours once an
//! operation that fails for an existing ID succeeded with it: an API create, or the
//! exclusive creation of `VMID.conf` on the cluster file system (pmxcfs refuses an ID that
//! exists on any node). Candidates come from a configured range; on "taken" the next one is
//! tried. Inside one process, concurrent allocations never try the same candidate at once.
//!
//! Where a search starts matters on a node: each CT start is `systemctl start
//! pve-container@VMID`, and systemd refuses a unit started more than 5 times in 10 s (its
//! defaults; `pve-container@.service` sets no `StartLimit*`). Back-to-back short-lived
//! containers that always took the lowest free VMID would hit that on the sixth. So the
//! search starts after the ID claimed last, and with [`VmidAllocator::with_cursor_file`] that
//! cursor is shared by every process on the node (each shim is its own process), so an ID
//! comes back only after the whole range was used once.

use std::collections::BTreeSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
    /// The cursor shared by all processes (a decimal VMID in a file, under `flock`).
    cursor_file: Option<PathBuf>,
    max_candidates: u32,
}

/// How long an allocation waits for another process's hold on the cursor file before it
/// goes on with its own cursor (the cursor is a hint; the claim decides).
const CURSOR_LOCK_TIMEOUT: Duration = Duration::from_secs(5);

/// The cursor file, locked for one allocation (`flock`; the lock ends when it is dropped).
struct SharedCursor {
    file: nix::fcntl::Flock<std::fs::File>,
    path: PathBuf,
}

impl SharedCursor {
    async fn lock(path: &Path) -> std::io::Result<SharedCursor> {
        use nix::fcntl::{Flock, FlockArg};
        use std::os::unix::fs::OpenOptionsExt;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)?;
        let deadline = tokio::time::Instant::now() + CURSOR_LOCK_TIMEOUT;
        loop {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(locked) => {
                    return Ok(SharedCursor {
                        file: locked,
                        path: path.to_path_buf(),
                    })
                }
                Err((back, nix::errno::Errno::EWOULDBLOCK))
                    if tokio::time::Instant::now() < deadline =>
                {
                    file = back;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "held by another process",
                    ))
                }
                Err((_, errno)) => return Err(std::io::Error::from(errno)),
            }
        }
    }

    fn read(&self) -> Option<u32> {
        use std::io::{Read, Seek};
        let mut text = String::new();
        let mut f: &std::fs::File = &self.file;
        f.rewind().ok()?;
        f.read_to_string(&mut text).ok()?;
        text.trim().parse().ok()
    }

    fn write(&self, next: u32) {
        use std::io::{Seek, Write};
        let mut f: &std::fs::File = &self.file;
        let written = f
            .rewind()
            .and_then(|()| f.set_len(0))
            .and_then(|()| f.write_all(format!("{next}\n").as_bytes()));
        if let Err(e) = written {
            tracing::warn!(path = %self.path.display(), error = %e, "VMID cursor not saved");
        }
    }
}

impl VmidAllocator {
    /// An allocator for `range`.
    pub fn new(range: VmidRange) -> Self {
        VmidAllocator {
            range,
            in_flight: Arc::new(Mutex::new(BTreeSet::new())),
            cursor: Arc::new(AtomicU32::new(range.start)),
            cursor_file: None,
            max_candidates: u32::try_from(range.len()).unwrap_or(u32::MAX),
        }
    }

    /// Shares the cursor with every process that uses the same file (created 0600; without
    /// it, the search starts at the range's start). An unreadable or busy file is only
    /// logged: the process's own cursor is used then.
    pub fn with_cursor_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.cursor_file = Some(path.into());
        self
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
        let shared = match &self.cursor_file {
            Some(path) => match SharedCursor::lock(path).await {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "VMID cursor file not used");
                    None
                }
            },
            None => None,
        };
        let start_at = shared
            .as_ref()
            .and_then(SharedCursor::read)
            .filter(|c| (self.range.start..=self.range.end).contains(c))
            .unwrap_or_else(|| self.cursor.load(Ordering::SeqCst));
        let mut offset =
            u64::from(start_at.clamp(self.range.start, self.range.end) - self.range.start);
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
                    if let Some(shared) = &shared {
                        shared.write(next);
                    }
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

/// pve-cluster `src/pmxcfs/memdb.h`, `MEMDB_MAX_FILE_SIZE` (1 MiB; 128 KiB in old releases):
/// `memdb_write` (memdb.c) refuses a larger file with EFBIG.
pub const PMXCFS_MAX_FILE_SIZE: usize = 1024 * 1024;

/// Claims `VMID.conf` in `config_dir` by creating it exclusively with `contents`
/// (on Proxmox: `/etc/pve/lxc`, where pmxcfs refuses an ID used anywhere in the cluster).
pub async fn claim_config_file(
    config_dir: &Path,
    vmid: u32,
    contents: &str,
) -> Result<Claim<PathBuf>, Error> {
    use tokio::io::AsyncWriteExt;
    let path = config_dir.join(format!("{vmid}.conf"));
    if contents.len() > PMXCFS_MAX_FILE_SIZE {
        return Err(Error::Claim {
            vmid,
            message: format!(
                "{} would be {} bytes, and pmxcfs (/etc/pve) refuses files over 1 MiB: make the container's configuration smaller (environment, mounts, annotations)",
                path.display(),
                contents.len()
            ),
        });
    }
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
        // pmxcfs turns /etc/pve read-only without quorum (pve-cluster src/pmxcfs: writes
        // fail with EACCES); say so, since the errno alone does not.
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem
            ) =>
        {
            Err(Error::Claim {
                vmid,
                message: format!(
                    "creating {}: {e}: /etc/pve is read-only when the cluster has no quorum: check `pvecm status`",
                    path.display()
                ),
            })
        }
        Err(e) => Err(Error::Claim {
            vmid,
            message: format!("creating {}: {e}", path.display()),
        }),
    }
}
