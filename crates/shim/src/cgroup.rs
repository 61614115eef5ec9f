//! A container's cgroup, found from its init's /proc/PID/cgroup, for pids, stats, freeze/thaw,
//! resource updates and OOM events, on cgroup v1 (legacy/hybrid) and v2.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use containerd_shim_protos::cgroups::metrics::Metrics;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use oci_spec::runtime::LinuxResources;

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
        let cg = containerd_shim::cgroup::get_cgroup(self.pid)
            .map_err(|e| ShimError::Internal(format!("load cgroup of pid {}: {e}", self.pid)))?;
        let mut metrics = containerd_shim::cgroup::collect_metrics(&cg)
            .map_err(|e| ShimError::Internal(format!("collect metrics: {e}")))?;
        if !self.unified_only {
            // The framework reads v2 files (cpu.stat `usage_usec`) even on v1, which leaves CPU
            // usage at 0, and sets no memory limit, so CRI computes `available_bytes` as
            // 0 - working set. Fill both from the v1 files, as runc's shim does.
            self.fill_v1_cpu(&mut metrics);
            self.fill_v1_memory(&mut metrics);
        }
        containerd_shim::util::convert_to_any(Box::new(metrics))
            .map_err(|e| ShimError::Internal(format!("encode metrics: {e}")))
    }

    fn fill_v1_cpu(&self, metrics: &mut Metrics) {
        use containerd_shim_protos::cgroups::metrics::{CPUStat, CPUUsage, Throttle};
        let Ok(acct) = self.dir("cpuacct") else {
            return;
        };
        let mut usage = CPUUsage::new();
        usage.total = read_u64(&acct.join("cpuacct.usage")).unwrap_or(0);
        usage.per_cpu = std::fs::read_to_string(acct.join("cpuacct.usage_percpu"))
            .map(|t| {
                t.split_whitespace()
                    .filter_map(|v| v.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        // cpuacct.stat counts USER_HZ ticks; the metrics carry nanoseconds.
        let tick_ns = 1_000_000_000 / clock_ticks_per_second();
        let stat = read_keyed(&acct.join("cpuacct.stat"));
        usage.user = stat.get("user").copied().unwrap_or(0) * tick_ns;
        usage.kernel = stat.get("system").copied().unwrap_or(0) * tick_ns;
        let mut throttle = Throttle::new();
        if let Ok(cpu) = self.dir("cpu") {
            let stat = read_keyed(&cpu.join("cpu.stat"));
            throttle.periods = stat.get("nr_periods").copied().unwrap_or(0);
            throttle.throttled_periods = stat.get("nr_throttled").copied().unwrap_or(0);
            throttle.throttled_time = stat.get("throttled_time").copied().unwrap_or(0);
        }
        let mut cpu = CPUStat::new();
        cpu.usage = Some(usage).into();
        cpu.throttling = Some(throttle).into();
        metrics.cpu = Some(cpu).into();
    }

    fn fill_v1_memory(&self, metrics: &mut Metrics) {
        use containerd_shim_protos::cgroups::metrics::{MemoryEntry, MemoryStat};
        let Ok(dir) = self.dir("memory") else {
            return;
        };
        let entry = |prefix: &str| -> MemoryEntry {
            let mut e = MemoryEntry::new();
            let file = |name: &str| dir.join(format!("{prefix}{name}"));
            e.usage = read_u64(&file("usage_in_bytes")).unwrap_or(0);
            e.max = read_u64(&file("max_usage_in_bytes")).unwrap_or(0);
            e.limit = read_u64(&file("limit_in_bytes")).unwrap_or(0);
            e.failcnt = read_u64(&file("failcnt")).unwrap_or(0);
            e
        };
        let stat = read_keyed(&dir.join("memory.stat"));
        let v = |k: &str| stat.get(k).copied().unwrap_or(0);
        let mut m = MemoryStat::new();
        m.cache = v("cache");
        m.rss = v("rss");
        m.rss_huge = v("rss_huge");
        m.mapped_file = v("mapped_file");
        m.dirty = v("dirty");
        m.writeback = v("writeback");
        m.pg_pg_in = v("pgpgin");
        m.pg_pg_out = v("pgpgout");
        m.pg_fault = v("pgfault");
        m.pg_maj_fault = v("pgmajfault");
        m.inactive_anon = v("inactive_anon");
        m.active_anon = v("active_anon");
        m.inactive_file = v("inactive_file");
        m.active_file = v("active_file");
        m.unevictable = v("unevictable");
        m.hierarchical_memory_limit = v("hierarchical_memory_limit");
        m.hierarchical_swap_limit = v("hierarchical_memsw_limit");
        m.total_cache = v("total_cache");
        m.total_rss = v("total_rss");
        m.total_rss_huge = v("total_rss_huge");
        m.total_mapped_file = v("total_mapped_file");
        m.total_dirty = v("total_dirty");
        m.total_writeback = v("total_writeback");
        m.total_pg_pg_in = v("total_pgpgin");
        m.total_pg_pg_out = v("total_pgpgout");
        m.total_pg_fault = v("total_pgfault");
        m.total_pg_maj_fault = v("total_pgmajfault");
        m.total_inactive_anon = v("total_inactive_anon");
        m.total_active_anon = v("total_active_anon");
        m.total_inactive_file = v("total_inactive_file");
        m.total_active_file = v("total_active_file");
        m.total_unevictable = v("total_unevictable");
        m.usage = Some(entry("memory.")).into();
        if dir.join("memory.memsw.usage_in_bytes").exists() {
            m.swap = Some(entry("memory.memsw.")).into();
        }
        m.kernel = Some(entry("memory.kmem.")).into();
        m.kernel_tcp = Some(entry("memory.kmem.tcp.")).into();
        metrics.memory = Some(m).into();
    }

    pub fn update(&self, resources: &LinuxResources) -> Result<()> {
        let cg = containerd_shim::cgroup::get_cgroup(self.pid)
            .map_err(|e| ShimError::Internal(format!("load cgroup of pid {}: {e}", self.pid)))?;
        containerd_shim::cgroup::update_resources(&cg, resources)
            .map_err(|e| ShimError::InvalidArgument(format!("update resources: {e}")))
    }

    /// The memory cgroup directory on v1, for OOM notifications.
    pub fn memory_dir(&self) -> Option<&Path> {
        self.dir("memory").ok()
    }
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// A `key value` per line file (memory.stat, cpu.stat, cpuacct.stat).
fn read_keyed(path: &Path) -> HashMap<String, u64> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no side effects.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as u64
    } else {
        100
    }
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

/// Watches a v1 memory cgroup for OOM kills through `cgroup.event_control` + an eventfd, and
/// calls `on_oom` for each. Ends when the cgroup goes away.
pub fn watch_oom_v1(memory_dir: &Path, on_oom: impl Fn() + Send + 'static) -> Result<()> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    if efd < 0 {
        return Err(ShimError::io("eventfd", std::io::Error::last_os_error()));
    }
    let efd = unsafe { OwnedFd::from_raw_fd(efd) };
    let oom_control = std::fs::File::open(memory_dir.join("memory.oom_control"))
        .ctx(|| format!("open {}/memory.oom_control", memory_dir.display()))?;
    std::fs::write(
        memory_dir.join("cgroup.event_control"),
        format!("{} {}", efd.as_raw_fd(), oom_control.as_raw_fd()),
    )
    .ctx(|| format!("write {}/cgroup.event_control", memory_dir.display()))?;
    std::thread::spawn(move || {
        let _keep = oom_control;
        let mut buf = [0u8; 8];
        loop {
            let n = unsafe { libc::read(efd.as_raw_fd(), buf.as_mut_ptr().cast(), 8) };
            if n != 8 {
                return;
            }
            // The eventfd also fires when the cgroup is removed.
            if !std::path::Path::new("/proc/self").exists() {
                return;
            }
            on_oom();
        }
    });
    Ok(())
}
