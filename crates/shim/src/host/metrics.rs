//! containerd's cgroup metrics, read straight from the container's cgroup files: v1
//! (`io.containerd.cgroups.v1.Metrics`) on legacy/hybrid hosts, v2
//! (`io.containerd.cgroups.v2.Metrics`) on unified ones — the types that `ctr task metrics` and
//! the CRI plugin decode. (The shim framework's collector reads v2 file formats even on v1.)

use std::collections::HashMap;
use std::path::Path;

use containerd_shim::protos::cgroups::metrics as v1;
use containerd_shim::protos::cgroups_v2::metrics as v2;
use containerd_shim::protos::protobuf::MessageField;

fn read_u64(path: &Path) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

/// "max" (no limit) reads as 0, as runc reports it.
fn read_limit(path: &Path) -> u64 {
    match std::fs::read_to_string(path) {
        Ok(t) if t.trim() == "max" => 0,
        Ok(t) => t.trim().parse().unwrap_or(0),
        Err(_) => 0,
    }
}

fn read_kv(path: &Path) -> HashMap<String, u64> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.to_string(), it.next()?.parse().ok()?))
        })
        .collect()
}

/// v1: `dirs` maps controller names to the container's directories.
pub fn collect_v1(dirs: &HashMap<String, std::path::PathBuf>) -> v1::Metrics {
    let mut m = v1::Metrics::new();
    if let Some(dir) = dirs.get("pids") {
        m.pids = MessageField::some(v1::PidsStat {
            current: read_u64(&dir.join("pids.current")),
            limit: read_limit(&dir.join("pids.max")),
            ..Default::default()
        });
    }
    let mut cpu = v1::CPUStat::new();
    if let Some(dir) = dirs.get("cpuacct") {
        // cpuacct.stat is in USER_HZ ticks; containerd reports nanoseconds.
        let ticks = read_kv(&dir.join("cpuacct.stat"));
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        let to_ns = |t: u64| t.saturating_mul(1_000_000_000 / hz);
        let per_cpu = std::fs::read_to_string(dir.join("cpuacct.usage_percpu"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        cpu.usage = MessageField::some(v1::CPUUsage {
            total: read_u64(&dir.join("cpuacct.usage")),
            user: to_ns(ticks.get("user").copied().unwrap_or(0)),
            kernel: to_ns(ticks.get("system").copied().unwrap_or(0)),
            per_cpu,
            ..Default::default()
        });
    }
    if let Some(dir) = dirs.get("cpu") {
        let stat = read_kv(&dir.join("cpu.stat"));
        cpu.throttling = MessageField::some(v1::Throttle {
            periods: stat.get("nr_periods").copied().unwrap_or(0),
            throttled_periods: stat.get("nr_throttled").copied().unwrap_or(0),
            throttled_time: stat.get("throttled_time").copied().unwrap_or(0),
            ..Default::default()
        });
    }
    m.cpu = MessageField::some(cpu);
    if let Some(dir) = dirs.get("blkio") {
        m.blkio = MessageField::some(blkio_v1(dir));
    }
    if let Some(dir) = dirs.get("memory") {
        let s = read_kv(&dir.join("memory.stat"));
        let g = |k: &str| s.get(k).copied().unwrap_or(0);
        let entry = |prefix: &str| v1::MemoryEntry {
            limit: read_u64(&dir.join(format!("{prefix}.limit_in_bytes"))),
            usage: read_u64(&dir.join(format!("{prefix}.usage_in_bytes"))),
            max: read_u64(&dir.join(format!("{prefix}.max_usage_in_bytes"))),
            failcnt: read_u64(&dir.join(format!("{prefix}.failcnt"))),
            ..Default::default()
        };
        let mut mem = v1::MemoryStat {
            cache: g("cache"),
            rss: g("rss"),
            rss_huge: g("rss_huge"),
            mapped_file: g("mapped_file"),
            dirty: g("dirty"),
            writeback: g("writeback"),
            pg_pg_in: g("pgpgin"),
            pg_pg_out: g("pgpgout"),
            pg_fault: g("pgfault"),
            pg_maj_fault: g("pgmajfault"),
            inactive_anon: g("inactive_anon"),
            active_anon: g("active_anon"),
            inactive_file: g("inactive_file"),
            active_file: g("active_file"),
            unevictable: g("unevictable"),
            hierarchical_memory_limit: g("hierarchical_memory_limit"),
            hierarchical_swap_limit: g("hierarchical_memsw_limit"),
            total_cache: g("total_cache"),
            total_rss: g("total_rss"),
            total_rss_huge: g("total_rss_huge"),
            total_mapped_file: g("total_mapped_file"),
            total_dirty: g("total_dirty"),
            total_writeback: g("total_writeback"),
            total_pg_pg_in: g("total_pgpgin"),
            total_pg_pg_out: g("total_pgpgout"),
            total_pg_fault: g("total_pgfault"),
            total_pg_maj_fault: g("total_pgmajfault"),
            total_inactive_anon: g("total_inactive_anon"),
            total_active_anon: g("total_active_anon"),
            total_inactive_file: g("total_inactive_file"),
            total_active_file: g("total_active_file"),
            total_unevictable: g("total_unevictable"),
            ..Default::default()
        };
        mem.usage = MessageField::some(entry("memory"));
        if dir.join("memory.memsw.usage_in_bytes").exists() {
            mem.swap = MessageField::some(entry("memory.memsw"));
        }
        if dir.join("memory.kmem.usage_in_bytes").exists() {
            mem.kernel = MessageField::some(entry("memory.kmem"));
        }
        m.memory = MessageField::some(mem);
        let oom = read_kv(&dir.join("memory.oom_control"));
        m.memory_oom_control = MessageField::some(v1::MemoryOomControl {
            oom_kill_disable: oom.get("oom_kill_disable").copied().unwrap_or(0),
            under_oom: oom.get("under_oom").copied().unwrap_or(0),
            oom_kill: oom.get("oom_kill").copied().unwrap_or(0),
            ..Default::default()
        });
    }
    m
}

/// Lines "MAJ:MIN Op Value" (and a "Total" line, skipped), as runc parses them.
fn blkio_entries(path: &Path) -> Option<Vec<v1::BlkIOEntry>> {
    let text = std::fs::read_to_string(path).ok()?;
    Some(
        text.lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let (dev, op, value) = match f.as_slice() {
                    [dev, op, value] => (*dev, *op, *value),
                    [dev, value] => (*dev, "", *value),
                    _ => return None,
                };
                let (major, minor) = dev.split_once(':')?;
                Some(v1::BlkIOEntry {
                    op: op.to_string(),
                    major: major.parse().ok()?,
                    minor: minor.parse().ok()?,
                    value: value.parse().ok()?,
                    ..Default::default()
                })
            })
            .collect(),
    )
}

/// The CFQ/BFQ files where the kernel has them, else the throttle layer's, like runc.
fn blkio_v1(dir: &Path) -> v1::BlkIOStat {
    let pick = |name: &str| {
        blkio_entries(&dir.join(format!("blkio.{name}")))
            .or_else(|| blkio_entries(&dir.join(format!("blkio.throttle.{name}"))))
            .unwrap_or_default()
    };
    let only = |name: &str| blkio_entries(&dir.join(format!("blkio.{name}"))).unwrap_or_default();
    v1::BlkIOStat {
        io_service_bytes_recursive: pick("io_service_bytes_recursive"),
        io_serviced_recursive: pick("io_serviced_recursive"),
        io_queued_recursive: only("io_queued_recursive"),
        io_service_time_recursive: only("io_service_time_recursive"),
        io_wait_time_recursive: only("io_wait_time_recursive"),
        io_merged_recursive: only("io_merged_recursive"),
        io_time_recursive: only("io_time_recursive"),
        ..Default::default()
    }
}

/// v2: the container's single cgroup directory.
pub fn collect_v2(dir: &Path) -> v2::Metrics {
    let mut m = v2::Metrics::new();
    m.pids = MessageField::some(v2::PidsStat {
        current: read_u64(&dir.join("pids.current")),
        limit: read_limit(&dir.join("pids.max")),
        ..Default::default()
    });
    let c = read_kv(&dir.join("cpu.stat"));
    let cg = |k: &str| c.get(k).copied().unwrap_or(0);
    m.cpu = MessageField::some(v2::CPUStat {
        usage_usec: cg("usage_usec"),
        user_usec: cg("user_usec"),
        system_usec: cg("system_usec"),
        nr_periods: cg("nr_periods"),
        nr_throttled: cg("nr_throttled"),
        throttled_usec: cg("throttled_usec"),
        ..Default::default()
    });
    let s = read_kv(&dir.join("memory.stat"));
    let g = |k: &str| s.get(k).copied().unwrap_or(0);
    m.memory = MessageField::some(v2::MemoryStat {
        anon: g("anon"),
        file: g("file"),
        kernel_stack: g("kernel_stack"),
        slab: g("slab"),
        sock: g("sock"),
        shmem: g("shmem"),
        file_mapped: g("file_mapped"),
        file_dirty: g("file_dirty"),
        file_writeback: g("file_writeback"),
        inactive_anon: g("inactive_anon"),
        active_anon: g("active_anon"),
        inactive_file: g("inactive_file"),
        active_file: g("active_file"),
        unevictable: g("unevictable"),
        pgfault: g("pgfault"),
        pgmajfault: g("pgmajfault"),
        usage: read_u64(&dir.join("memory.current")),
        usage_limit: read_limit(&dir.join("memory.max")),
        swap_usage: read_u64(&dir.join("memory.swap.current")),
        swap_limit: read_limit(&dir.join("memory.swap.max")),
        max_usage: read_u64(&dir.join("memory.peak")),
        ..Default::default()
    });
    let e = read_kv(&dir.join("memory.events"));
    let eg = |k: &str| e.get(k).copied().unwrap_or(0);
    m.memory_events = MessageField::some(v2::MemoryEvents {
        low: eg("low"),
        high: eg("high"),
        max: eg("max"),
        oom: eg("oom"),
        oom_kill: eg("oom_kill"),
        ..Default::default()
    });
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_reads_the_files_containerd_reports() {
        let dir = tempfile::tempdir().unwrap();
        let cpuacct = dir.path().join("cpuacct");
        let memory = dir.path().join("memory");
        let pids = dir.path().join("pids");
        for d in [&cpuacct, &memory, &pids] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(cpuacct.join("cpuacct.usage"), "123456789\n").unwrap();
        std::fs::write(cpuacct.join("cpuacct.usage_percpu"), "100 200 \n").unwrap();
        std::fs::write(cpuacct.join("cpuacct.stat"), "user 3\nsystem 2\n").unwrap();
        std::fs::write(memory.join("memory.usage_in_bytes"), "4096\n").unwrap();
        std::fs::write(memory.join("memory.limit_in_bytes"), "67108864\n").unwrap();
        std::fs::write(
            memory.join("memory.stat"),
            "cache 10\nrss 20\ntotal_inactive_file 5\n",
        )
        .unwrap();
        std::fs::write(pids.join("pids.current"), "2\n").unwrap();
        std::fs::write(pids.join("pids.max"), "max\n").unwrap();
        let dirs: HashMap<String, std::path::PathBuf> = [
            ("cpuacct".to_string(), cpuacct),
            ("memory".to_string(), memory),
            ("pids".to_string(), pids),
        ]
        .into_iter()
        .collect();
        let blkio = dir.path().join("blkio");
        std::fs::create_dir_all(&blkio).unwrap();
        std::fs::write(
            blkio.join("blkio.throttle.io_service_bytes_recursive"),
            "8:0 Read 4096\n8:0 Write 0\nTotal 4096\n",
        )
        .unwrap();
        let mut dirs = dirs;
        dirs.insert("blkio".to_string(), blkio);
        let m = collect_v1(&dirs);
        let io = &m.blkio.io_service_bytes_recursive;
        assert_eq!(io.len(), 2);
        assert_eq!(
            (io[0].major, io[0].minor, io[0].op.as_str(), io[0].value),
            (8, 0, "Read", 4096)
        );
        let usage = m.cpu.usage.as_ref().unwrap();
        assert_eq!(usage.total, 123456789);
        assert_eq!(usage.per_cpu, vec![100, 200]);
        assert!(usage.user > 0 && usage.kernel > 0);
        let mem = m.memory.as_ref().unwrap();
        assert_eq!(mem.usage.limit, 67108864);
        assert_eq!(mem.usage.usage, 4096);
        assert_eq!((mem.cache, mem.rss, mem.total_inactive_file), (10, 20, 5));
        assert_eq!(m.pids.current, 2);
        assert_eq!(m.pids.limit, 0);
    }
}
