//! containerd's cgroup metrics, read straight from the container's cgroup files: v1
//! (`io.containerd.cgroups.v1.Metrics`) on legacy/hybrid hosts, v2
//! (`io.containerd.cgroups.v2.Metrics`) on unified ones — the types that `ctr task metrics` and
//! the CRI plugin decode. (The shim framework's collector reads v2 file formats even on v1.)
//!
//! The reference is what runc's shim (containerd-shim-runc-v2) reports, which reads the files with
//! containerd's cgroups library: `cgroup1` (each controller's `Stat`) and `cgroup2`
//! (`Manager.Stat`, utils.go `getStatFileContentUint64`, `readIoStats`, `readHugeTlbStats`,
//! `getStatPSIFromFile`). Notably "no limit" differs by version: v1 `pids.max` = `max` reads as 0
//! (cgroup1 pids.go), every v2 `max` reads as u64::MAX (18446744073709551615).

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

/// v1 `pids.max`: "max" (no limit) reads as 0, as containerd's cgroup1 pids controller does.
fn read_limit_v1(path: &Path) -> u64 {
    match std::fs::read_to_string(path) {
        Ok(t) if t.trim() == "max" => 0,
        Ok(t) => t.trim().parse().unwrap_or(0),
        Err(_) => 0,
    }
}

/// A v2 single-value file: "max" (no limit) reads as u64::MAX, a missing or unreadable file as
/// 0 (cgroup2 utils.go `getStatFileContentUint64`).
fn read_u64_or_max(path: &Path) -> u64 {
    match std::fs::read_to_string(path) {
        Ok(t) if t.trim() == "max" => u64::MAX,
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
            limit: read_limit_v1(&dir.join("pids.max")),
            ..Default::default()
        });
    }
    let mut cpu = v1::CPUStat::new();
    if let Some(dir) = dirs.get("cpuacct") {
        // cpuacct.stat is in USER_HZ ticks; containerd reports nanoseconds.
        let ticks = read_kv(&dir.join("cpuacct.stat"));
        // SAFETY: sysconf takes a constant name and touches no memory of the caller's.
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
        // All four entries are always there, as cgroup1 memory.go sets them (zero where the
        // kernel lacks the files).
        mem.usage = MessageField::some(entry("memory"));
        mem.swap = MessageField::some(entry("memory.memsw"));
        mem.kernel = MessageField::some(entry("memory.kmem"));
        mem.kernel_tcp = MessageField::some(entry("memory.kmem.tcp"));
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

/// v2 pressure file ("some avg10=0.00 avg60=0.00 avg300=0.00 total=0" and a "full" line);
/// absent when the kernel has no PSI (cgroup2 utils.go `getStatPSIFromFile`).
fn read_psi(path: &Path) -> MessageField<v2::PSIStats> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return MessageField::none();
    };
    let mut psi = v2::PSIStats::new();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let kind = fields.next();
        let mut data = v2::PSIData::new();
        for field in fields {
            let Some((k, v)) = field.split_once('=') else {
                continue;
            };
            match k {
                "avg10" => data.avg10 = v.parse().unwrap_or(0.0),
                "avg60" => data.avg60 = v.parse().unwrap_or(0.0),
                "avg300" => data.avg300 = v.parse().unwrap_or(0.0),
                "total" => data.total = v.parse().unwrap_or(0),
                _ => {}
            }
        }
        match kind {
            Some("some") => psi.some = MessageField::some(data),
            Some("full") => psi.full = MessageField::some(data),
            _ => {}
        }
    }
    MessageField::some(psi)
}

/// `io.stat`: "MAJ:MIN rbytes=N wbytes=N rios=N wios=N dbytes=N dios=N" per device.
fn read_io_v2(path: &Path) -> Vec<v2::IOEntry> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (major, minor) = fields.next()?.split_once(':')?;
            let mut entry = v2::IOEntry {
                major: major.parse().ok()?,
                minor: minor.parse().ok()?,
                ..Default::default()
            };
            for field in fields {
                let Some((k, v)) = field.split_once('=') else {
                    continue;
                };
                let v = v.parse().unwrap_or(0);
                match k {
                    "rbytes" => entry.rbytes = v,
                    "wbytes" => entry.wbytes = v,
                    "rios" => entry.rios = v,
                    "wios" => entry.wios = v,
                    _ => {}
                }
            }
            Some(entry)
        })
        .collect()
}

/// `rdma.current` / `rdma.max`: "DEVICE hca_handle=N hca_object=N" ("max" reads as u32::MAX).
fn read_rdma_v2(path: &Path) -> Vec<v2::RdmaEntry> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [device, a, b] = fields.as_slice() else {
                return None;
            };
            let mut entry = v2::RdmaEntry {
                device: device.to_string(),
                ..Default::default()
            };
            for field in [a, b] {
                let (k, v) = field.split_once('=')?;
                let v = if v == "max" {
                    u32::MAX
                } else {
                    v.parse().unwrap_or(0)
                };
                match k {
                    "hca_handle" => entry.hca_handles = v,
                    "hca_object" => entry.hca_objects = v,
                    _ => {}
                }
            }
            Some(entry)
        })
        .collect()
}

/// The host's huge page sizes as cgroup file names spell them ("2MB", "1GB"), from
/// `/sys/kernel/mm/hugepages/hugepages-<N>kB`, sorted as the directory lists them.
fn huge_page_sizes(hugepages_dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(hugepages_dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    names.sort();
    names
        .iter()
        .filter_map(|n| {
            let kb: u64 = n
                .strip_prefix("hugepages-")?
                .strip_suffix("kB")?
                .parse()
                .ok()?;
            Some(size_name(kb * 1024))
        })
        .collect()
}

/// Bytes in the kernel's hugetlb unit names: the largest of KB/MB/GB/... that divides evenly.
fn size_name(bytes: u64) -> String {
    let units = ["B", "KB", "MB", "GB", "TB", "PB"];
    let mut value = bytes;
    let mut unit = 0;
    while value >= 1024 && value.is_multiple_of(1024) && unit + 1 < units.len() {
        value /= 1024;
        unit += 1;
    }
    format!("{value}{}", units[unit])
}

/// v2: the container's single cgroup directory.
pub fn collect_v2(dir: &Path) -> v2::Metrics {
    collect_v2_with(dir, Path::new("/sys/kernel/mm/hugepages"))
}

fn collect_v2_with(dir: &Path, hugepages_dir: &Path) -> v2::Metrics {
    let mut m = v2::Metrics::new();
    m.pids = MessageField::some(v2::PidsStat {
        current: read_u64_or_max(&dir.join("pids.current")),
        limit: read_u64_or_max(&dir.join("pids.max")),
        ..Default::default()
    });
    // cpu.stat and memory.stat in one map, as cgroup2 `Manager.Stat` reads them.
    let mut s = read_kv(&dir.join("cpu.stat"));
    s.extend(read_kv(&dir.join("memory.stat")));
    let g = |k: &str| s.get(k).copied().unwrap_or(0);
    m.cpu = MessageField::some(v2::CPUStat {
        usage_usec: g("usage_usec"),
        user_usec: g("user_usec"),
        system_usec: g("system_usec"),
        nr_periods: g("nr_periods"),
        nr_throttled: g("nr_throttled"),
        throttled_usec: g("throttled_usec"),
        psi: read_psi(&dir.join("cpu.pressure")),
        ..Default::default()
    });
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
        anon_thp: g("anon_thp"),
        inactive_anon: g("inactive_anon"),
        active_anon: g("active_anon"),
        inactive_file: g("inactive_file"),
        active_file: g("active_file"),
        unevictable: g("unevictable"),
        slab_reclaimable: g("slab_reclaimable"),
        slab_unreclaimable: g("slab_unreclaimable"),
        pgfault: g("pgfault"),
        pgmajfault: g("pgmajfault"),
        workingset_refault: g("workingset_refault"),
        workingset_activate: g("workingset_activate"),
        workingset_nodereclaim: g("workingset_nodereclaim"),
        pgrefill: g("pgrefill"),
        pgscan: g("pgscan"),
        pgsteal: g("pgsteal"),
        pgactivate: g("pgactivate"),
        pgdeactivate: g("pgdeactivate"),
        pglazyfree: g("pglazyfree"),
        pglazyfreed: g("pglazyfreed"),
        thp_fault_alloc: g("thp_fault_alloc"),
        thp_collapse_alloc: g("thp_collapse_alloc"),
        usage: read_u64_or_max(&dir.join("memory.current")),
        usage_limit: read_u64_or_max(&dir.join("memory.max")),
        max_usage: read_u64_or_max(&dir.join("memory.peak")),
        swap_usage: read_u64_or_max(&dir.join("memory.swap.current")),
        swap_limit: read_u64_or_max(&dir.join("memory.swap.max")),
        swap_max_usage: read_u64_or_max(&dir.join("memory.swap.peak")),
        psi: read_psi(&dir.join("memory.pressure")),
        ..Default::default()
    });
    let e = read_kv(&dir.join("memory.events"));
    if !e.is_empty() {
        let eg = |k: &str| e.get(k).copied().unwrap_or(0);
        m.memory_events = MessageField::some(v2::MemoryEvents {
            low: eg("low"),
            high: eg("high"),
            max: eg("max"),
            oom: eg("oom"),
            oom_kill: eg("oom_kill"),
            ..Default::default()
        });
    }
    m.io = MessageField::some(v2::IOStat {
        usage: read_io_v2(&dir.join("io.stat")),
        psi: read_psi(&dir.join("io.pressure")),
        ..Default::default()
    });
    m.rdma = MessageField::some(v2::RdmaStat {
        current: read_rdma_v2(&dir.join("rdma.current")),
        limit: read_rdma_v2(&dir.join("rdma.max")),
        ..Default::default()
    });
    m.hugetlb = huge_page_sizes(hugepages_dir)
        .into_iter()
        .map(|size| v2::HugeTlbStat {
            max: read_u64_or_max(&dir.join(format!("hugetlb.{size}.max"))),
            current: read_u64_or_max(&dir.join(format!("hugetlb.{size}.current"))),
            pagesize: size,
            ..Default::default()
        })
        .collect();
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

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    #[test]
    fn v2_no_limit_reads_as_u64_max_as_runc_reports_it() {
        let dir = tempfile::tempdir().unwrap();
        let cg = dir.path();
        write(cg, "pids.current", "1\n");
        write(cg, "pids.max", "max\n");
        write(cg, "memory.current", "8192\n");
        write(cg, "memory.max", "max\n");
        write(cg, "memory.swap.current", "0\n");
        write(cg, "memory.swap.max", "max\n");
        write(cg, "memory.peak", "16384\n");
        write(
            cg,
            "memory.stat",
            "anon 4096\nfile 8192\nslab_reclaimable 7\npgscan 3\n",
        );
        write(
            cg,
            "cpu.stat",
            "usage_usec 10\nuser_usec 6\nsystem_usec 4\n",
        );
        write(
            cg,
            "memory.events",
            "low 0\nhigh 0\nmax 2\noom 1\noom_kill 1\n",
        );
        let m = collect_v2_with(cg, &cg.join("no-hugepages"));
        assert_eq!((m.pids.current, m.pids.limit), (1, u64::MAX));
        let mem = m.memory.as_ref().unwrap();
        assert_eq!(mem.usage_limit, u64::MAX);
        assert_eq!(mem.swap_limit, u64::MAX);
        assert_eq!((mem.usage, mem.max_usage, mem.swap_usage), (8192, 16384, 0));
        assert_eq!((mem.anon, mem.file), (4096, 8192));
        assert_eq!((mem.slab_reclaimable, mem.pgscan), (7, 3));
        // A file the kernel lacks reads as 0, as in containerd's cgroups library.
        assert_eq!(mem.swap_max_usage, 0);
        assert!(mem.psi.is_none());
        let cpu = m.cpu.as_ref().unwrap();
        assert_eq!((cpu.usage_usec, cpu.user_usec, cpu.system_usec), (10, 6, 4));
        let events = m.memory_events.as_ref().unwrap();
        assert_eq!((events.max, events.oom, events.oom_kill), (2, 1, 1));
        assert!(m.hugetlb.is_empty());
    }

    #[test]
    fn v2_set_limits_read_as_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let cg = dir.path();
        write(cg, "pids.max", "64\n");
        write(cg, "memory.max", "67108864\n");
        write(cg, "memory.swap.max", "0\n");
        let m = collect_v2_with(cg, &cg.join("no-hugepages"));
        assert_eq!(m.pids.limit, 64);
        let mem = m.memory.as_ref().unwrap();
        assert_eq!((mem.usage_limit, mem.swap_limit), (67108864, 0));
        // No memory.events file: no events message, as cgroup2 leaves it out.
        assert!(m.memory_events.is_none());
    }

    #[test]
    fn v2_psi_io_rdma_and_hugetlb() {
        let dir = tempfile::tempdir().unwrap();
        let cg = dir.path();
        write(
            cg,
            "cpu.pressure",
            "some avg10=1.50 avg60=0.25 avg300=0.00 total=1234\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=99\n",
        );
        write(
            cg,
            "io.stat",
            "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n",
        );
        write(cg, "rdma.max", "mlx4_0 hca_handle=2 hca_object=max\n");
        write(cg, "hugetlb.2MB.max", "max\n");
        write(cg, "hugetlb.2MB.current", "0\n");
        write(cg, "hugetlb.1GB.max", "1073741824\n");
        let hp = cg.join("hugepages");
        std::fs::create_dir_all(hp.join("hugepages-2048kB")).unwrap();
        std::fs::create_dir_all(hp.join("hugepages-1048576kB")).unwrap();
        let m = collect_v2_with(cg, &hp);
        let psi = m.cpu.psi.as_ref().unwrap();
        assert_eq!(psi.some.avg10, 1.5);
        assert_eq!(psi.some.total, 1234);
        assert_eq!(psi.full.total, 99);
        let io = &m.io.usage;
        assert_eq!(io.len(), 1);
        assert_eq!(
            (
                io[0].major,
                io[0].minor,
                io[0].rbytes,
                io[0].wbytes,
                io[0].rios,
                io[0].wios
            ),
            (8, 0, 4096, 8192, 1, 2)
        );
        let rdma = &m.rdma.limit;
        assert_eq!(rdma.len(), 1);
        assert_eq!(
            (
                rdma[0].device.as_str(),
                rdma[0].hca_handles,
                rdma[0].hca_objects
            ),
            ("mlx4_0", 2, u32::MAX)
        );
        let sizes: Vec<(&str, u64)> = m
            .hugetlb
            .iter()
            .map(|h| (h.pagesize.as_str(), h.max))
            .collect();
        assert_eq!(sizes, vec![("1GB", 1073741824), ("2MB", u64::MAX)]);
    }

    #[test]
    fn v1_reports_every_memory_entry_as_containerd_does() {
        let dir = tempfile::tempdir().unwrap();
        let memory = dir.path().join("memory");
        std::fs::create_dir_all(&memory).unwrap();
        write(&memory, "memory.stat", "cache 1\n");
        write(
            &memory,
            "memory.kmem.tcp.limit_in_bytes",
            "9223372036854771712\n",
        );
        let dirs: HashMap<String, std::path::PathBuf> =
            [("memory".to_string(), memory)].into_iter().collect();
        let m = collect_v1(&dirs);
        let mem = m.memory.as_ref().unwrap();
        assert!(mem.usage.is_some() && mem.swap.is_some() && mem.kernel.is_some());
        assert_eq!(mem.kernel_tcp.limit, 9223372036854771712);
    }
}
