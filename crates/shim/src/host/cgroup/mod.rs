//! A container's cgroup, found from its init's /proc/PID/cgroup, for pids, stats, freeze/thaw,
//! resource updates and OOM events, on cgroup v1 (legacy/hybrid) and v2; its [`metrics`] in
//! containerd's types.

pub mod metrics;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use containerd_shim_protos::protobuf::well_known_types::any::Any;
use oci_spec::runtime::LinuxResources;

use tokio::io::unix::AsyncFd;

use crate::errors::{IoContext, Result, ShimError};

#[derive(Debug, Clone)]
pub struct ContainerCgroup {
    /// v1: controller name -> absolute directory. v2: "" -> directory.
    dirs: HashMap<String, PathBuf>,
    unified_only: bool,
    pid: u32,
}

struct Mounts {
    v1: HashMap<String, PathBuf>,
    v2: Option<PathBuf>,
}

fn mounts() -> Result<Mounts> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ctx(|| "read mountinfo".into())?;
    let mut v1 = HashMap::new();
    let mut v2 = None;
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mount_point = left.split(' ').nth(4).unwrap_or_default();
        let mut r = right.split(' ');
        let fstype = r.next().unwrap_or_default();
        let _source = r.next();
        let options = r.next().unwrap_or_default();
        match fstype {
            "cgroup2" => v2 = Some(PathBuf::from(mount_point)),
            "cgroup" => {
                for opt in options.split(',') {
                    if !matches!(opt, "rw" | "ro") && !opt.contains('=') || opt.starts_with("name=")
                    {
                        v1.insert(opt.to_string(), PathBuf::from(mount_point));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(Mounts { v1, v2 })
}

impl ContainerCgroup {
    pub fn of_pid(pid: u32) -> Result<ContainerCgroup> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .ctx(|| format!("read /proc/{pid}/cgroup"))?;
        Self::from_proc_text(&text, pid)
    }

    /// The cgroups a `/proc/PID/cgroup` text names (one kept from earlier: `pid` may be gone).
    pub fn from_proc_text(text: &str, pid: u32) -> Result<ContainerCgroup> {
        let mounts = mounts()?;
        let mut dirs = HashMap::new();
        let mut unified_only = true;
        for line in text.lines() {
            let mut parts = line.splitn(3, ':');
            let (Some(_), Some(controllers), Some(path)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let rel = path.trim_start_matches('/');
            if controllers.is_empty() {
                if let Some(root) = &mounts.v2 {
                    dirs.insert(String::new(), root.join(rel));
                }
            } else {
                unified_only = false;
                for c in controllers.split(',') {
                    if let Some(root) = mounts.v1.get(c) {
                        dirs.insert(c.to_string(), root.join(rel));
                    }
                }
            }
        }
        Ok(ContainerCgroup {
            dirs,
            unified_only,
            pid,
        })
    }

    /// Moves to the level where the limits are, for a Proxmox CT named `name` (its VMID).
    /// pve-container (src/PVE/LXC.pm, update_lxc_config, LXC >= 4) sets
    /// `lxc.cgroup.dir.container = lxc/VMID` and `lxc.cgroup.dir.container.inner = ns`: LXC
    /// applies the limits to `lxc/VMID` and puts the CT's processes into `lxc/VMID/ns`, whose
    /// own limit files say "unlimited". Stats (the limits they report), Update (a new limit
    /// must replace the enforced one) and OOM events (counted where the limit is hit) belong
    /// to `lxc/VMID`; pids and the freezer cover the whole subtree from there.
    pub fn at_limit_level(mut self, name: &str) -> ContainerCgroup {
        for dir in self.dirs.values_mut() {
            if is_proxmox_inner(dir, name) {
                if let Some(parent) = dir.parent() {
                    *dir = parent.to_path_buf();
                }
            }
        }
        self
    }

    pub fn is_v2(&self) -> bool {
        self.unified_only
    }

    fn dir(&self, controller: &str) -> Result<&Path> {
        let key = if self.unified_only { "" } else { controller };
        self.dirs.get(key).map(PathBuf::as_path).ok_or_else(|| {
            ShimError::FailedPrecondition(format!(
                "cgroup controller {controller} is not available for pid {}",
                self.pid
            ))
        })
    }

    /// Every pid in the container's cgroup (the container's processes, execs included).
    pub fn procs(&self) -> Result<Vec<u32>> {
        let dir = self.dir("pids").or_else(|_| self.dir("memory"))?;
        let mut pids = Vec::new();
        collect_procs(dir, &mut pids)?;
        pids.sort_unstable();
        pids.dedup();
        Ok(pids)
    }

    pub fn freeze(&self, frozen: bool) -> Result<()> {
        if self.unified_only {
            let file = self.dir("")?.join("cgroup.freeze");
            std::fs::write(&file, if frozen { "1" } else { "0" })
                .ctx(|| format!("write {}", file.display()))?;
            return Ok(());
        }
        let file = self.dir("freezer")?.join("freezer.state");
        std::fs::write(&file, if frozen { "FROZEN" } else { "THAWED" })
            .ctx(|| format!("write {}", file.display()))?;
        // The kernel freezes asynchronously; wait until it has (or gave up).
        for _ in 0..200 {
            let state = std::fs::read_to_string(&file).unwrap_or_default();
            let want = if frozen { "FROZEN" } else { "THAWED" };
            if state.trim() == want {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        Err(ShimError::Internal(format!(
            "{} did not reach {} in 1s",
            file.display(),
            if frozen { "FROZEN" } else { "THAWED" }
        )))
    }

    /// containerd's metrics (`io.containerd.cgroups.v1.Metrics` on v1, v2's on v2) as an Any.
    pub fn metrics(&self) -> Result<Any> {
        let message: Box<dyn containerd_shim::protos::protobuf::MessageDyn> = if self.unified_only {
            Box::new(crate::host::cgroup::metrics::collect_v2(self.dir("")?))
        } else {
            Box::new(crate::host::cgroup::metrics::collect_v1(&self.dirs))
        };
        containerd_shim::util::convert_to_any(message)
            .map_err(|e| ShimError::Internal(format!("encode metrics: {e}")))
    }

    /// Applies new resources (the Update RPC) with the same mapping the config renderer uses,
    /// so a value means the same at create and at update.
    pub fn update(&self, resources: &LinuxResources) -> Result<()> {
        let mode = if self.unified_only {
            lxc_config::CgroupMode::Unified
        } else {
            lxc_config::CgroupMode::Legacy
        };
        let settings = lxc_config::cgroup_settings(resources, mode)
            .map_err(|e| ShimError::InvalidArgument(format!("update: {e}")))?;
        for (file, value) in settings {
            // v1 file names start with their controller ("memory.limit_in_bytes").
            let controller = file.split('.').next().unwrap_or_default();
            let dir = self.dir(controller)?;
            let path = dir.join(&file);
            std::fs::write(&path, &value)
                .ctx(|| format!("update: write {value:?} to {}", path.display()))?;
        }
        Ok(())
    }

    /// SIGKILLs every process left in the cgroup. For a container without a pid namespace of
    /// its own (a pod's shared one), the init's exit does not end its other processes; runc's
    /// shim kills them when the init exits, and so does this one.
    pub fn kill_all(&self) {
        for pid in self.procs().unwrap_or_default() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }

    /// Refuses cgroups not named for container `id` (see [`names_container`]): a kept
    /// `/proc/PID/cgroup` text (`init.cgroup`) must name the container's own cgroups before
    /// anything in them is killed, never a shared parent or another container's.
    pub fn check_named_for(&self, id: &str) -> Result<()> {
        match self.dirs.values().find(|d| !names_container(d, id)) {
            None => Ok(()),
            Some(dir) => Err(ShimError::FailedPrecondition(format!(
                "{} is not a cgroup of container {id}: refusing to kill what is in it",
                dir.display()
            ))),
        }
    }

    /// Kills every process of the cgroups, nested ones included, at once: `cgroup.kill`
    /// (Linux >= 5.14, cgroup v2) where the kernel has it, which leaves no process a moment
    /// to fork a child past the kill; else frozen first (v1 freezer, v2 `cgroup.freeze`),
    /// killed, thawed (a frozen process dies of SIGKILL only once thawed).
    pub fn kill_everything(&self) -> Result<()> {
        if self.unified_only {
            let kill = self.dir("")?.join("cgroup.kill");
            if kill.exists() {
                return std::fs::write(&kill, "1").ctx(|| format!("write {}", kill.display()));
            }
        }
        let frozen = self.freeze(true).is_ok();
        self.kill_all();
        if frozen {
            self.freeze(false)?;
        }
        Ok(())
    }

    /// Removes the container's (now empty) cgroup directories, nested ones first. LXC removes
    /// them when the container stops, but gives up while a process is still inside (an orphan
    /// in a shared pid namespace), and a left directory keeps the kubelet from removing the
    /// pod's cgroup. Best effort: waits briefly for killed processes to leave. Only
    /// directories named for the container are touched, never a shared parent such as a
    /// hierarchy's root: named for its `id` (`id`, `cri-containerd-id.scope`, the lxc driver's
    /// `lxc.payload.id`), or for its LXC name `name` (a Proxmox CT's VMID) the way LXC names
    /// them (`lxc.payload.VMID`, `lxc.payload.VMID-N`; Proxmox's `lxc/VMID/ns`, removed with
    /// its `VMID` parent).
    pub fn remove(&self, id: &str, name: &str) {
        for _ in 0..50 {
            if self.procs().map(|p| p.is_empty()).unwrap_or(true) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        for dir in self.dirs.values() {
            if let Some(target) = owned_cgroup_dir(dir, id, name) {
                remove_tree(&target);
            }
        }
    }

    /// Removes the cgroups of LXC's monitor of container `name` (`lxc.monitor/NAME`, or
    /// LXC's default `lxc.monitor.NAME`) once that monitor is gone: LXC removes them itself
    /// only when its monitor sees the container stop. The shared `lxc.monitor` parent stays:
    /// another container's monitor may be creating its own cgroup in it.
    pub fn remove_lxc_monitor(&self, name: &str) {
        for dir in self.dirs.values() {
            let Some(file_name) = dir.file_name().and_then(|f| f.to_str()) else {
                continue;
            };
            let in_monitor_dir = dir
                .parent()
                .and_then(Path::file_name)
                .is_some_and(|p| p == "lxc.monitor");
            let named =
                file_name == format!("lxc.monitor.{name}") || (file_name == name && in_monitor_dir);
            if named && !name.is_empty() {
                remove_tree(dir);
            }
        }
    }

    /// The `cgroup.procs` files of the cgroups the init is in now (read afresh: a workload may
    /// have moved itself), one per hierarchy, open for writing: an exec's helper writes "0"
    /// to each before it does anything else (ct-init's `--attach`), as runc's exec joins the
    /// container's cgroups first. Opened here, by the shim: the kernel checks a migration
    /// against whoever opened the file (kernel/cgroup/cgroup.c, `cgroup_procs_write`). A
    /// fork in a cgroup at its `pids.max` then fails, so an exec into a container at its pids
    /// limit fails as under runc.
    pub fn procs_files_to_join(init_pid: u32) -> Result<Vec<std::os::fd::OwnedFd>> {
        let now = ContainerCgroup::of_pid(init_pid)?;
        let mut dirs: Vec<&PathBuf> = now.dirs.values().collect();
        dirs.sort();
        dirs.dedup();
        dirs.into_iter()
            .map(|dir| {
                let procs = dir.join("cgroup.procs");
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&procs)
                    .map(std::os::fd::OwnedFd::from)
                    .ctx(|| format!("open {} to join it", procs.display()))
            })
            .collect()
    }

    /// The memory cgroup directory (v1) or the container's cgroup (v2), for OOM notifications.
    pub fn memory_dir(&self) -> Option<&Path> {
        self.dir("memory").ok()
    }

    /// The file whose `oom_kill` line counts the container's OOM kills: v2 `memory.events`,
    /// v1 `memory.oom_control` (Linux >= 4.13 has the line there).
    pub fn oom_counter_file(&self) -> Option<PathBuf> {
        let name = if self.unified_only {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        self.memory_dir().map(|d| d.join(name))
    }
}

/// The OOM kills of one container: what its cgroup had counted when the shim began to watch
/// it, and how many the shim has reported since. The live watch and the init's exit share it,
/// so that a kill is reported once, by whichever sees it first.
#[derive(Debug)]
pub struct OomLedger {
    baseline: u64,
    reported: AtomicU64,
}

impl OomLedger {
    /// Starts counting from what `counter_file` says now (0 if it cannot say).
    pub fn starting_at(counter_file: &Path) -> OomLedger {
        OomLedger {
            baseline: read_oom_kills(counter_file).unwrap_or(0),
            reported: AtomicU64::new(0),
        }
    }

    /// Takes note that the counter stands at `total`; true if that shows kills not reported
    /// yet (they count as reported from now on).
    pub fn take_new_kills(&self, total: u64) -> bool {
        let kills = total.saturating_sub(self.baseline);
        self.reported.fetch_max(kills, Ordering::SeqCst) < kills
    }

    /// Takes note of one OOM reported from a v1 notification, which may come before the
    /// kernel counts the kill.
    pub fn note_reported(&self) {
        self.reported.fetch_add(1, Ordering::SeqCst);
    }
}

/// The `oom_kill` counter in `file` (see [`ContainerCgroup::oom_counter_file`]); `None` if the
/// file cannot be read or has no such line (an empty copy: the stop hook did not run).
pub fn read_oom_kills(file: &Path) -> Option<u64> {
    oom_kills(&std::fs::read_to_string(file).ok()?)
}

/// The `oom_kill` counter of a copy in a container's state directory (the stop hook's):
/// read only as a root-owned regular file (`private::read_root_owned`).
pub fn read_oom_kills_copy(file: &Path) -> Option<u64> {
    oom_kills(&crate::host::private::read_root_owned(file, 4096)?)
}

/// Whether cgroup `dir` is named for container `id` the way the shim's containers are:
/// `id` itself (a cgroups path `/NS/ID`), `lxc.payload.ID` (LXC's default, `-N` when taken),
/// or a systemd scope `PREFIX-ID.scope` (`slice:prefix:ID`, as runc names it).
fn names_container(dir: &Path, id: &str) -> bool {
    let Some(file_name) = dir.file_name().map(|f| f.to_string_lossy()) else {
        return false;
    };
    if id.is_empty() {
        return false;
    }
    file_name == id
        || is_lxc_payload(&file_name, id)
        || file_name == format!("{id}.scope")
        || file_name.ends_with(&format!("-{id}.scope"))
}

/// Whether `file_name` is LXC's cgroup for container `name`: `lxc.payload.NAME`, or
/// `lxc.payload.NAME-N` where that was taken.
fn is_lxc_payload(file_name: &str, name: &str) -> bool {
    let payload = format!("lxc.payload.{name}");
    file_name == payload
        || file_name
            .strip_prefix(&format!("{payload}-"))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The directory to remove for a container's cgroup `dir`, if `dir` is named for it (see
/// [`ContainerCgroup::remove`]).
fn owned_cgroup_dir(dir: &Path, id: &str, name: &str) -> Option<PathBuf> {
    let file_name = dir.file_name()?.to_string_lossy();
    if !id.is_empty() && file_name.contains(id) {
        return Some(dir.to_path_buf());
    }
    if name.is_empty() {
        return None;
    }
    if is_lxc_payload(&file_name, name) {
        return Some(dir.to_path_buf());
    }
    if is_proxmox_inner(dir, name) {
        return dir.parent().map(Path::to_path_buf);
    }
    // Proxmox's limit level `lxc/VMID` (see ContainerCgroup::at_limit_level).
    let proxmox_outer = file_name == name
        && dir
            .parent()
            .and_then(Path::file_name)
            .is_some_and(|p| p == "lxc");
    proxmox_outer.then(|| dir.to_path_buf())
}

/// Whether `dir` is `.../lxc/NAME/ns`, the inner cgroup of Proxmox CT `name`.
fn is_proxmox_inner(dir: &Path, name: &str) -> bool {
    let Some(parent) = dir.parent() else {
        return false;
    };
    !name.is_empty()
        && dir.file_name().is_some_and(|f| f == "ns")
        && parent.file_name().is_some_and(|p| p == name)
        && parent
            .parent()
            .and_then(Path::file_name)
            .is_some_and(|g| g == "lxc")
}

fn remove_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_tree(&e.path());
            }
        }
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => log::warn!("remove cgroup {}: {e}", dir.display()),
    }
}

/// Whether the bundle's spec gives the container no pid namespace of its own (it joins one by
/// path, or stays in the host's): then its processes must be killed when its init exits, as
/// runc's shim does (`ShouldKillAllOnExit`).
pub fn shares_pid_namespace(bundle: &Path) -> bool {
    let Ok(spec) = oci_spec::runtime::Spec::load(bundle.join("config.json")) else {
        return false;
    };
    let own = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default()
        .iter()
        .any(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::Pid && n.path().is_none());
    !own
}

fn collect_procs(dir: &Path, out: &mut Vec<u32>) -> Result<()> {
    let procs = dir.join("cgroup.procs");
    let text = std::fs::read_to_string(&procs).ctx(|| format!("read {}", procs.display()))?;
    out.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
    // Nested cgroups (a container that makes its own) belong to it too.
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                let _ = collect_procs(&e.path(), out);
            }
        }
    }
    Ok(())
}

/// Registers `fd` (non-blocking) with the tokio reactor of the calling runtime. The OOM
/// watchers wait there instead of in a thread of their own: a blocked `read` per container
/// cost every resident shim a thread (its stack, its TLS) for as long as the container lived
/// (docs/benchmarks.md, "Where the memory goes").
fn register(fd: std::os::fd::OwnedFd) -> Result<AsyncFd<std::os::fd::OwnedFd>> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(ShimError::Internal(
            "OOM watch started outside the async runtime".into(),
        ));
    }
    // SAFETY: the AsyncFd owns the descriptor, which stays open as long as it is registered.
    unsafe { AsyncFd::register(fd) }
        .map_err(|e| ShimError::io("register an OOM watch with the reactor", e.into()))
}

/// One `read` of a registered non-blocking descriptor, waiting until it is readable.
/// `None` once it fails or reports end of file.
async fn read_when_ready(fd: &AsyncFd<std::os::fd::OwnedFd>, buf: &mut [u8]) -> Option<usize> {
    use std::os::fd::AsRawFd;
    loop {
        let mut ready = fd.readable().await.ok()?;
        let read = ready.try_io(|fd| {
            // SAFETY: buf is valid for buf.len() bytes; the descriptor is open while registered.
            let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        });
        match read {
            Ok(Ok(0)) | Ok(Err(_)) => return None,
            Ok(Ok(n)) => return Some(n),
            Err(_would_block) => continue,
        }
    }
}

/// Watches a v1 memory cgroup for OOM kills through `cgroup.event_control` + an eventfd, and
/// calls `on_oom` for each (noted in `ledger`). Ends when the cgroup goes away (the kernel
/// signals the eventfd then too). Must be called from within the shim's tokio runtime.
pub fn watch_oom_v1(
    memory_dir: &Path,
    ledger: Arc<OomLedger>,
    on_oom: impl Fn() + Send + 'static,
) -> Result<()> {
    use nix::sys::eventfd::{EfdFlags, EventFd};
    use std::os::fd::{AsRawFd, OwnedFd};
    let efd = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
        .map_err(|e| ShimError::io("eventfd", e.into()))?;
    let efd = register(OwnedFd::from(efd))?;
    let oom_control = std::fs::File::open(memory_dir.join("memory.oom_control"))
        .ctx(|| format!("open {}/memory.oom_control", memory_dir.display()))?;
    std::fs::write(
        memory_dir.join("cgroup.event_control"),
        format!("{} {}", efd.get_ref().as_raw_fd(), oom_control.as_raw_fd()),
    )
    .ctx(|| format!("write {}/cgroup.event_control", memory_dir.display()))?;
    let memory_dir = memory_dir.to_path_buf();
    tokio::spawn(async move {
        let _keep = oom_control;
        let mut buf = [0u8; 8];
        while read_when_ready(&efd, &mut buf).await == Some(8) {
            // The eventfd also fires when the cgroup is removed: that is the end, not an OOM.
            // An OOM that came together with the removal is left to the init's exit, which
            // reads the counter the stop hook kept.
            if !memory_dir.exists() {
                return;
            }
            ledger.note_reported();
            on_oom();
        }
    });
    Ok(())
}

/// The `oom_kill` counter of a v2 `memory.events` or v1 `memory.oom_control` file.
fn oom_kills(events: &str) -> Option<u64> {
    events
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
}

/// Whether a buffer of inotify events holds `IN_IGNORED`: the watch is gone with its file.
fn watch_removed(events: &[u8]) -> bool {
    let header = std::mem::size_of::<libc::inotify_event>();
    let mut at = 0usize;
    while at + header <= events.len() {
        // SAFETY: the kernel wrote whole events; read_unaligned copes with alignment.
        let ev: libc::inotify_event =
            unsafe { std::ptr::read_unaligned(events.as_ptr().add(at).cast()) };
        if ev.mask & libc::IN_IGNORED != 0 {
            return true;
        }
        at += header + ev.len as usize;
    }
    false
}

/// Watches a v2 cgroup's `memory.events` with inotify (the kernel signals changes of the file,
/// at most one per 10 ms) and calls `on_oom` each time its `oom_kill` counter shows kills
/// `ledger` has not seen, as runc's shim reports them. Ends when the file goes away with its
/// cgroup. Must be called from within the shim's tokio runtime.
pub fn watch_oom_v2(
    cgroup_dir: &Path,
    ledger: Arc<OomLedger>,
    on_oom: impl Fn() + Send + 'static,
) -> Result<()> {
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
    use std::ffi::CString;
    use std::os::fd::OwnedFd;
    let events = cgroup_dir.join("memory.events");
    let path = CString::new(events.as_os_str().as_encoded_bytes())
        .map_err(|_| ShimError::Internal(format!("{}: NUL in path", events.display())))?;
    let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)
        .map_err(|e| ShimError::io("inotify_init1", e.into()))?;
    inotify
        .add_watch(path.as_c_str(), AddWatchFlags::IN_MODIFY)
        .map_err(|e| ShimError::io(format!("watch {}", events.display()), e.into()))?;
    let fd = register(OwnedFd::from(inotify))?;
    tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        while let Some(n) = read_when_ready(&fd, &mut buf).await {
            let gone = watch_removed(&buf[..n]);
            match std::fs::read_to_string(&events) {
                Ok(text) => {
                    if oom_kills(&text).is_some_and(|total| ledger.take_new_kills(total)) {
                        on_oom();
                    }
                }
                Err(_) => return,
            }
            if gone {
                return;
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    /// A kept `init.cgroup` is acted on only when it names the container's own cgroups: a
    /// sibling, a parent, a hierarchy root or another container's name is refused.
    #[test]
    fn kills_only_in_cgroups_named_for_the_container() {
        let m = "/sys/fs/cgroup";
        let named = |leaf: &str| names_container(&Path::new(m).join(leaf), "t1");
        for own in [
            "e2e/t1",
            "lxc.payload.t1",
            "lxc.payload.t1-2",
            "kubepods.slice/cri-containerd-t1.scope",
            "t1.scope",
        ] {
            assert!(named(own), "{own}");
        }
        for other in [
            "e2e/t12",
            "e2e/victim",
            "e2e",
            "",
            "lxc.payload.t1x",
            "system.slice/sshd.service",
            "cri-containerd-t12.scope",
        ] {
            assert!(!named(other), "{other}");
        }
        assert!(!names_container(Path::new(m), ""));
        let kept = |path: &str| {
            ContainerCgroup {
                dirs: HashMap::from([("".to_string(), PathBuf::from(m).join(path))]),
                unified_only: true,
                pid: 0,
            }
            .check_named_for("t1")
        };
        assert!(kept("e2e/t1").is_ok());
        let refused = kept("system.slice").unwrap_err().to_string();
        assert!(
            refused.contains("not a cgroup of container t1"),
            "{refused}"
        );
    }

    #[test]
    fn removes_only_directories_named_for_the_container() {
        let owned = |d: &str, id: &str, name: &str| owned_cgroup_dir(Path::new(d), id, name);
        let m = "/sys/fs/cgroup/memory";
        let some = |d: &str| Some(PathBuf::from(format!("{m}/{d}")));
        assert_eq!(
            owned(&format!("{m}/pod1/abc123"), "abc123", "abc123"),
            some("pod1/abc123")
        );
        let payload = owned(&format!("{m}/lxc.payload.990302"), "abc123", "990302");
        assert_eq!(payload, some("lxc.payload.990302"));
        let numbered = owned(&format!("{m}/lxc.payload.990302-3"), "abc123", "990302");
        assert_eq!(numbered, some("lxc.payload.990302-3"));
        let proxmox = owned(&format!("{m}/lxc/990302/ns"), "abc123", "990302");
        assert_eq!(proxmox, some("lxc/990302"));
        let limit_level = owned(&format!("{m}/lxc/990302"), "abc123", "990302");
        assert_eq!(limit_level, some("lxc/990302"));
        // Another CT's cgroup, a shared parent, a hierarchy root: never.
        for other in [
            "lxc.payload.9903021",
            "lxc.payload.990302-x",
            "other/ns",
            "lxc/1/ns",
            "lxc/1",
            "other/990302",
        ] {
            assert_eq!(
                owned(&format!("{m}/{other}"), "abc123", "990302"),
                None,
                "{other}"
            );
        }
        assert_eq!(owned(m, "abc123", "990302"), None);
    }

    #[test]
    fn proxmox_cts_use_the_level_their_limits_are_on() {
        let cg = |path: &str| ContainerCgroup {
            dirs: HashMap::from([
                ("memory".to_string(), PathBuf::from(format!("/m/{path}"))),
                ("pids".to_string(), PathBuf::from(format!("/p/{path}"))),
            ]),
            unified_only: false,
            pid: 1,
        };
        let up = cg("lxc/990302/ns").at_limit_level("990302");
        assert_eq!(up.dir("memory").unwrap(), Path::new("/m/lxc/990302"));
        assert_eq!(up.dir("pids").unwrap(), Path::new("/p/lxc/990302"));
        // Another CT's, or no Proxmox layout: unchanged.
        for path in ["lxc/990303/ns", "lxc.payload.990302", "x/990302/ns"] {
            let same = cg(path).at_limit_level("990302");
            assert_eq!(
                same.dir("memory").unwrap(),
                Path::new(&format!("/m/{path}"))
            );
        }
    }

    #[test]
    fn parses_the_oom_kill_counter() {
        assert_eq!(
            oom_kills("low 0\nhigh 0\nmax 3\noom 2\noom_kill 2\n"),
            Some(2)
        );
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 4\n";
        assert_eq!(oom_kills(v1), Some(4));
        assert_eq!(oom_kills("oom 1\n"), None);
        assert_eq!(oom_kills(""), None);
    }

    #[test]
    fn the_ledger_reports_each_kill_once_from_either_side() {
        let dir = tempfile::tempdir().unwrap();
        let events = dir.path().join("memory.events");
        std::fs::write(&events, "oom 3\noom_kill 2\n").unwrap();
        let ledger = OomLedger::starting_at(&events);
        // Kills from before the watch are not this container's news.
        assert!(!ledger.take_new_kills(2));
        assert!(ledger.take_new_kills(3));
        // The exit reading the same total again reports nothing more.
        assert!(!ledger.take_new_kills(3));
        // A v1 notification counted ahead of the kernel's counter is not reported twice.
        ledger.note_reported();
        assert!(!ledger.take_new_kills(4));
        assert!(ledger.take_new_kills(5));
        assert_eq!(read_oom_kills(&dir.path().join("missing")), None);
    }

    // The watcher runs on the runtime's worker while the test blocks in recv_timeout.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn v2_watch_reports_each_new_oom_kill_and_ends_with_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let events = dir.path().join("memory.events");
        std::fs::write(&events, "oom 0\noom_kill 0\n").unwrap();
        let (tx, rx) = mpsc::channel();
        let ledger = Arc::new(OomLedger::starting_at(&events));
        watch_oom_v2(dir.path(), ledger, move || {
            let _ = tx.send(());
        })
        .unwrap();
        // A change that is not a kill reports nothing.
        std::fs::write(&events, "oom 1\noom_kill 0\n").unwrap();
        assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
        std::fs::write(&events, "oom 1\noom_kill 1\n").unwrap();
        rx.recv_timeout(Duration::from_secs(5))
            .expect("an OOM kill is reported");
        std::fs::write(&events, "oom 2\noom_kill 2\n").unwrap();
        rx.recv_timeout(Duration::from_secs(5))
            .expect("a second OOM kill is reported");
        std::fs::remove_file(&events).unwrap();
        // The watcher ends: its sender is dropped.
        assert!(matches!(
            rx.recv_timeout(Duration::from_secs(5)),
            Err(mpsc::RecvTimeoutError::Disconnected)
        ));
    }
}
