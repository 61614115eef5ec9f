//! `ctr task metrics`: the shape of the stats both shims report, leaving out the counters that
//! depend on the host's load at that moment.

use crate::harness::*;

/// How a metrics value compares between runtimes: limits exactly (no limit is u64::MAX on v2,
/// as runc's shim reads `max`), other numbers by zero / non-zero / u64::MAX, arrays by length
/// class, so usage that legitimately differs still has to be present and of the same kind.
/// (ctr's JSON leaves zero fields out, so "0" and "absent" are the same here.)
/// Memory counters whose zero or non-zero says how the host's page cache, reclaim and timing
/// stood at that moment, or how each runtime's own setup touched the container's cgroup; not
/// what the stats report (both shims read the same cgroup files). The runc and shim runs of
/// one case share the image's page cache, charged to whichever container touched a page first.
/// Each family was seen flipping between runs on one runtime or the other:
/// - dirty/writeback pages: the kernel's flusher; active/inactive lists (file and anonymous):
///   the kernel's LRU choice (file pages are compared as a sum by the caller, anonymous ones
///   through `rss`/`anon`);
/// - mapped file pages and major faults: whether the busybox binary's pages were in the page
///   cache and whose cgroup they were charged to; reclaim and refault counters
///   (`pgpgout`, `workingset_*`, `pgscan*`, `pgsteal*`, ...): memory pressure on the host;
///   transparent huge pages: alignment and khugepaged;
/// - on the node twin's cgroup v2: runc's Go `runc init` runs in the container's cgroup, so the
///   init's kernel stack (forked there) is charged to it, while LXC forks the init in its
///   monitor's cgroup and moves it (a kernel stack stays charged where it was allocated); LXC's
///   setup leaves one page of shared memory there; pressure-stall figures (averages and
///   totals) depend on the host's load at that moment.
pub fn host_dependent_counter(path: &str, leaf: &str) -> bool {
    const FAMILIES: &[&str] = &[
        "dirty",
        "writeback",
        "active_file",
        "active_anon",
        "mapped_file",
        "file_mapped",
        "maj_fault",
        "pgmajfault",
        "pgpgout",
        "workingset_",
        "pgscan",
        "pgsteal",
        "pgrefill",
        "pgactivate",
        "pgdeactivate",
        "pglazyfree",
        "pgdemote",
        "pgpromote",
        "zswap",
        "thp",
        "rss_huge",
        "kernel_stack",
        "shmem",
    ];
    FAMILIES.iter().any(|f| leaf.contains(f)) || path.contains("/psi/")
}

/// Per-device block IO (v2 `io.stat`, v1 `blkio.*`): whether the container's reads missed the
/// page cache (the runtime that runs first reads the image from the disk) and whether the
/// flusher has written its dirty pages back yet; seen as runc's `io/usage` non-empty and the
/// shim's empty on the node twin.
pub fn host_dependent_io(path: &str) -> bool {
    path.starts_with("/io/usage") || path.starts_with("/blkio/")
}

pub fn metrics_shape(v: &serde_json::Value, path: &str, out: &mut Vec<(String, String)>) {
    use serde_json::Value;
    match v {
        Value::Object(o) => {
            if !path.is_empty() {
                out.push((path.to_string(), "{}".to_string()));
            }
            let mut keys: Vec<&String> = o.keys().collect();
            keys.sort();
            for k in keys {
                metrics_shape(&o[k], &format!("{path}/{k}"), out);
            }
        }
        Value::Array(a) => {
            if host_dependent_io(path) {
                return;
            }
            let class = if a.is_empty() { "[]" } else { "[..]" };
            out.push((path.to_string(), class.to_string()));
        }
        Value::Number(n) => {
            let leaf = path.rsplit('/').next().unwrap_or("");
            if host_dependent_counter(path, leaf) {
                return;
            }
            let class = match n.as_u64() {
                Some(u64::MAX) => "max".to_string(),
                Some(x) if leaf == "limit" || leaf.ends_with("_limit") => x.to_string(),
                Some(0) => "0".to_string(),
                _ => "non-zero".to_string(),
            };
            out.push((path.to_string(), class));
        }
        other => out.push((path.to_string(), other.to_string())),
    }
}

pub fn metrics(ctx: &Ctx) -> Result<Transcript> {
    // Some CPU time in user and kernel mode and some page cache, so that those counters are
    // non-zero under both runtimes; then the workload sleeps and the metrics are read.
    ctx.run_detached(
        &["--null-io"],
        "dd if=/dev/zero of=/tmp/cache bs=64k count=64 2>/dev/null; \
         dd if=/dev/zero of=/dev/null bs=1M count=3000 2>/dev/null; \
         i=0; while [ $i -lt 30000 ]; do i=$((i+1)); done; exec sleep 1000",
    )?;
    let id = ctx.id.as_str();
    let pid = ctx
        .cd
        .task_pid(id)?
        .ok_or_else(|| anyhow!("no pid for task {id}"))?;
    let comm = format!("/proc/{pid}/comm");
    // Progress, not speed: under the node twin's emulated CPU the busy work above takes longer
    // than RUN_TIMEOUT (runc's reference run as much as the shim's).
    let deadline = Instant::now() + WORKLOAD_TIMEOUT;
    while std::fs::read_to_string(&comm).unwrap_or_default().trim() != "sleep" {
        ensure!(
            Instant::now() < deadline,
            "the workload of {id} did not reach its sleep"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let table = ctx.cd.ctr_ok(&["task", "metrics", id])?.stdout_str();
    let json_out = ctx
        .cd
        .ctr_ok(&["task", "metrics", "--format", "json", id])?
        .stdout_str();
    let v: serde_json::Value = serde_json::from_str(&json_out).context("metrics JSON")?;
    let mut t = Transcript::default();
    let pids = v
        .pointer("/pids/current")
        .and_then(|x| x.as_u64())
        .unwrap_or(0);
    let mem = v
        .pointer("/memory/usage/usage")
        .or_else(|| v.pointer("/memory/usage"))
        .and_then(|x| x.as_u64())
        .unwrap_or(0);
    t.add("pids.current", pids.to_string());
    t.add("memory usage > 0", (mem > 0).to_string());
    // Every field of the JSON, by shape; and the table's rows by name.
    let mut shape = Vec::new();
    metrics_shape(&v, "", &mut shape);
    for (path, class) in shape {
        t.add(&format!("json {path}"), class);
    }
    let rows: Vec<&str> = table
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    t.add("table rows", rows.join(","));
    let file_lru: u64 = ["/memory/active_file", "/memory/inactive_file"]
        .iter()
        .filter_map(|p| v.pointer(p).and_then(|x| x.as_u64()))
        .sum();
    t.add("memory (in)active_file > 0", (file_lru > 0).to_string());
    ensure!(pids == 1, "pids.current = {pids}, expected 1:\n{json_out}");
    ensure!(mem > 0, "memory usage is 0:\n{json_out}");
    ctx.kill_task(id)?;
    Ok(t)
}
