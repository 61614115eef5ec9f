//! Benchmarks (not tests): this shim against runc's shims, side by side, in one run on the same
//! private containerd, printed as markdown tables.
//!
//! - start-to-exit latency of `ctr run --rm IMAGE ID true` (median, p90 of N runs; the
//!   runtimes alternate run by run so drift hits all alike);
//! - `ctr task exec` latency of `true` in a running container;
//! - host-side memory per running container: RSS and PSS of every host process that exists
//!   because of that container (its shim, LXC's monitor `lxc-start`; not the workload itself,
//!   which lives in the container's pid namespace and is the same under every runtime), over K
//!   containers per runtime;
//! - where that memory goes: `/proc/PID/smaps` of each counted process of one container, split
//!   into the process's own binary, libc, other shared libraries and anonymous memory, and its
//!   thread count.
//!
//! Runtimes: Go runc shim (`io.containerd.runc.v2`), this shim (`io.containerd.proxmox-lxc.v2`)
//! and, on containerd 2.x, the Rust runc shim (`io.containerd.runc-rs.v2`, crates.io
//! `containerd-runc-shim`, task API v3) when `containerd-shim-runc-rs-v2` is in the shim
//! directory (scripts/bench.sh puts it there); and a second build of this shim when
//! `containerd-shim-proxmox-lxc-baseline-v2` is there (`BENCH_BASELINE=FILE scripts/bench.sh`),
//! to compare a change before/after in the same run.
//!
//! ```text
//! e2e-bench [--runs N] [--containers K] [--shim-dir DIR] [--containerd system|1.6|1.7|2.1]
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use e2e::cmd;
use e2e::image::BUSYBOX_IMAGE;
use e2e::{host, paths, Containerd, ContainerdVersion, RUNC_RUNTIME, SHIM_RUNTIME};

/// The Rust runc shim's runtime name; containerd resolves it to `containerd-shim-runc-rs-v2`.
const RUNC_RS_RUNTIME: &str = "io.containerd.runc-rs.v2";
const RUNC_RS_BINARY: &str = "containerd-shim-runc-rs-v2";
/// An optional second build of this shim, measured as its own column.
const BASELINE_RUNTIME: &str = "io.containerd.proxmox-lxc-baseline.v2";
const BASELINE_BINARY: &str = "containerd-shim-proxmox-lxc-baseline-v2";

struct Args {
    runs: usize,
    containers: usize,
    shim_dir: PathBuf,
    version: String,
}

fn parse() -> Result<Args> {
    let mut args = Args {
        runs: 30,
        containers: 5,
        shim_dir: paths::workspace_root().join("target/release"),
        version: "system".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| anyhow!("{flag} needs a value"));
        match flag.as_str() {
            "--runs" => args.runs = value()?.parse()?,
            "--containers" => args.containers = value()?.parse()?,
            "--shim-dir" => args.shim_dir = PathBuf::from(value()?),
            "--containerd" => args.version = value()?,
            other => bail!("unknown argument {other}"),
        }
    }
    if args.runs == 0 || args.containers == 0 {
        bail!("--runs and --containers must be at least 1");
    }
    Ok(args)
}

/// One runtime under measurement.
struct Runtime {
    /// What `ctr run --runtime` takes.
    name: &'static str,
    /// Column header.
    label: &'static str,
    /// Short tag for container ids.
    tag: &'static str,
}

/// Latencies of one runtime, or why it could not be measured.
type Samples = Result<Vec<Duration>, String>;

/// Runs that failed (e.g. timed out), per runtime, with the first error.
#[derive(Default, Clone)]
struct Failures {
    count: usize,
    first: Option<String>,
}

fn percentile(samples: &[Duration], p: f64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn time_run(cd: &Containerd, runtime: &str, id: &str) -> Result<Duration> {
    let flag = format!("--runtime={runtime}");
    let start = Instant::now();
    cmd::run(
        &mut cd.ctr_cmd(&["run", "--rm", &flag, BUSYBOX_IMAGE, id, "true"]),
        None,
        Duration::from_secs(20),
    )?
    .ok(&format!("ctr run under {runtime}"))?;
    Ok(start.elapsed())
}

fn start_sleeper(cd: &Containerd, runtime: &str, id: &str) -> Result<()> {
    let flag = format!("--runtime={runtime}");
    cd.ctr_ok(&[
        "run",
        "-d",
        "--null-io",
        &flag,
        BUSYBOX_IMAGE,
        id,
        "sleep",
        "100000",
    ])?;
    cd.wait_task_status(id, "RUNNING", Duration::from_secs(30))
}

/// Alternating `ctr run --rm ... true` under each runtime. A failed run is counted and left
/// out of the latencies; a runtime whose runs fail 5 times is given up.
fn bench_run(cd: &Containerd, runtimes: &[Runtime], runs: usize) -> (Vec<Samples>, Vec<Failures>) {
    let mut results: Vec<Samples> = runtimes.iter().map(|_| Ok(Vec::new())).collect();
    let mut failures: Vec<Failures> = vec![Failures::default(); runtimes.len()];
    // Two warm-up runs each: page cache, snapshot, first shim start.
    for round in 0..runs + 2 {
        for (i, rt) in runtimes.iter().enumerate() {
            let Ok(samples) = &mut results[i] else {
                continue;
            };
            let id = format!("bench-run-{}-{round}", rt.tag);
            match time_run(cd, rt.name, &id) {
                Ok(d) if round >= 2 => samples.push(d),
                Ok(_) => {}
                Err(e) => {
                    cd.force_remove(&id);
                    let f = &mut failures[i];
                    f.count += 1;
                    let msg = format!("{e:#}");
                    eprintln!(
                        "e2e-bench: {} run {round} failed: {}",
                        rt.name,
                        msg.lines().next().unwrap_or("")
                    );
                    f.first.get_or_insert(msg);
                    if f.count >= 5 {
                        results[i] = Err(format!(
                            "gave up after 5 failed runs: {}",
                            f.first.clone().unwrap_or_default()
                        ));
                    }
                }
            }
        }
    }
    (results, failures)
}

/// `ctr task exec ... true` in one running container per runtime.
fn bench_exec(cd: &Containerd, runtimes: &[Runtime], runs: usize) -> Vec<Samples> {
    runtimes
        .iter()
        .map(|rt| {
            let id = format!("bench-exec-{}", rt.tag);
            let result = (|| -> Result<Vec<Duration>> {
                start_sleeper(cd, rt.name, &id)?;
                let mut samples = Vec::new();
                for i in 0..runs + 2 {
                    let exec_id = format!("x{i}");
                    let start = Instant::now();
                    cd.ctr_ok(&["task", "exec", "--exec-id", &exec_id, &id, "true"])?;
                    if i >= 2 {
                        samples.push(start.elapsed());
                    }
                }
                Ok(samples)
            })();
            cd.force_remove(&id);
            result.map_err(|e| format!("{e:#}"))
        })
        .collect()
}

/// `seq -s ' ' 1000000` (6.9 MB) through a TTY exec (`ctr task exec -t`, on a pty), per
/// runtime; a run whose screen lacks the last number counts as failed (bytes lost at exit).
fn bench_tty(cd: &Containerd, runtimes: &[Runtime], runs: usize) -> Vec<Samples> {
    runtimes
        .iter()
        .map(|rt| {
            let id = format!("bench-tty-{}", rt.tag);
            let result = (|| -> Result<Vec<Duration>> {
                start_sleeper(cd, rt.name, &id)?;
                let mut samples = Vec::new();
                for i in 0..runs + 1 {
                    let exec_id = format!("t{i}");
                    let start = Instant::now();
                    let out = cd.exec_on_pty(
                        &exec_id,
                        &id,
                        &["seq", "-s", " ", "1000000"],
                        Duration::from_secs(120),
                    )?;
                    let elapsed = start.elapsed();
                    let screen = String::from_utf8_lossy(&out.screen);
                    anyhow::ensure!(
                        screen.trim_end().ends_with("999999 1000000"),
                        "TTY output lost its end: ...{:?}",
                        screen.get(screen.len().saturating_sub(40)..).unwrap_or("")
                    );
                    if i >= 1 {
                        samples.push(elapsed);
                    }
                }
                Ok(samples)
            })();
            cd.force_remove(&id);
            result.map_err(|e| format!("{e:#}"))
        })
        .collect()
}

/// RSS and PSS of one class of mappings, in KiB.
#[derive(Clone, Copy, Default)]
struct Part {
    rss: u64,
    pss: u64,
}

/// `/proc/PID/smaps` of one process, split by what is mapped.
#[derive(Default)]
struct Breakdown {
    process: String,
    threads: u64,
    total: Part,
    /// The process's own executable (text, rodata, relro, data).
    own_binary: Part,
    /// Of which pages written after load (.data.rel.ro and .got by the relocations, .data):
    /// private to the process.
    own_relro_data: Part,
    libc: Part,
    other_libraries: Part,
    /// Heap, thread stacks, anonymous mappings (allocator arenas).
    anonymous: Part,
    other: Part,
}

fn breakdown_of(pid: i32) -> Option<Breakdown> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps")).ok()?;
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()?
        .to_string_lossy()
        .into_owned();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let threads = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut b = Breakdown {
        process: exe.rsplit('/').next().unwrap_or(&exe).to_string(),
        threads,
        ..Breakdown::default()
    };
    // A mapping header: "start-end perms offset dev inode [path]"; then "Key: N kB" lines.
    let mut class: Option<(bool, &str)> = None; // (own binary, path)
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            let path = line.split_whitespace().nth(5).unwrap_or("");
            class = Some((path == exe, path));
            continue;
        }
        let key = first;
        let kib: u64 = fields.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        let Some((own, path)) = class else {
            continue;
        };
        // Pages of the binary written after load (relocations, data) are private copies:
        // "Anonymous" in a file mapping; relro is read-only again by then, so perms do not say.
        if key == "Anonymous:" && own {
            b.own_relro_data.rss += kib;
            b.own_relro_data.pss += kib;
            continue;
        }
        if key != "Rss:" && key != "Pss:" {
            continue;
        }
        let add = |part: &mut Part| {
            if key == "Rss:" {
                part.rss += kib;
            } else {
                part.pss += kib;
            }
        };
        add(&mut b.total);
        if own {
            add(&mut b.own_binary);
        } else if path.contains("/libc.so") || path.contains("/libc-") {
            add(&mut b.libc);
        } else if path.contains(".so") {
            add(&mut b.other_libraries);
        } else if path.is_empty()
            || path == "[heap]"
            || path.starts_with("[stack")
            || path.starts_with("[anon")
        {
            add(&mut b.anonymous);
        } else {
            add(&mut b.other);
        }
    }
    Some(b)
}

/// Host-side memory per container, the processes counted, and one container's breakdown.
struct MemoryResult {
    per_container: host::Memory,
    processes: Vec<String>,
    breakdown: Vec<Breakdown>,
}

fn bench_memory(cd: &Containerd, rt: &Runtime, count: usize) -> Result<MemoryResult, String> {
    let ids: Vec<String> = (0..count)
        .map(|i| format!("bench-mem-{}-{i}", rt.tag))
        .collect();
    let result = (|| -> Result<MemoryResult> {
        for id in &ids {
            start_sleeper(cd, rt.name, id)?;
        }
        // Let the shims settle (lazy allocations, first stats).
        std::thread::sleep(Duration::from_secs(2));
        let host_ns = host::pid_ns(std::process::id() as i32).context("own pid namespace")?;
        let mut tally = host::MemoryTally::default();
        let mut breakdown = Vec::new();
        for p in host::processes() {
            let Some(which) = ids.iter().position(|id| p.cmdline.contains(id.as_str())) else {
                continue;
            };
            // The workload itself runs in the container's pid namespace under every runtime.
            if host::pid_ns(p.pid).as_deref() != Some(host_ns.as_str()) {
                continue;
            }
            // The last container started: the others' shared pages are already resident.
            if tally.add(&p) && which == count - 1 {
                breakdown.extend(breakdown_of(p.pid));
            }
        }
        let host::MemoryTally { total, names } = tally;
        if total.rss_kib == 0 {
            bail!("found no host process for the {} containers", rt.name);
        }
        let n = count as u64;
        Ok(MemoryResult {
            per_container: host::Memory {
                rss_kib: total.rss_kib / n,
                pss_kib: total.pss_kib / n,
            },
            processes: names,
            breakdown,
        })
    })();
    for id in &ids {
        cd.force_remove(id);
    }
    result.map_err(|e| format!("{e:#}"))
}

fn cell_latency(s: &Samples, p: f64) -> String {
    match s {
        Ok(v) if !v.is_empty() => ms(percentile(v, p)),
        Ok(_) => "no samples".into(),
        Err(e) => format!("failed: {}", e.lines().next().unwrap_or("")),
    }
}

/// `value (ratio to the first column)`.
fn with_ratio(cell: String, own: Option<f64>, first: Option<f64>, column: usize) -> String {
    match (own, first) {
        (Some(o), Some(f)) if column > 0 && f > 0.0 => format!("{cell} ({:.2}x)", o / f),
        _ => cell,
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn part(p: Part) -> String {
    format!(
        "{:.1} / {:.1}",
        p.rss as f64 / 1024.0,
        p.pss as f64 / 1024.0
    )
}

fn run() -> Result<bool> {
    let args = parse()?;
    if !host::is_root() {
        bail!("run as root");
    }
    let version = ContainerdVersion::named(&args.version).map_err(|e| anyhow!(e))?;
    let shim = paths::shim_binary(&args.shim_dir);
    let mut runtimes = vec![Runtime {
        name: RUNC_RUNTIME,
        label: "Go runc shim (`io.containerd.runc.v2`)",
        tag: "runc",
    }];
    if shim.is_some() {
        runtimes.push(Runtime {
            name: SHIM_RUNTIME,
            label: "this shim (`io.containerd.proxmox-lxc.v2`)",
            tag: "lxc",
        });
    } else {
        eprintln!(
            "e2e-bench: shim binary not built in {} (cargo build --release -p containerd-shim-proxmox-lxc); not measured",
            args.shim_dir.display()
        );
    }
    // A second build of this shim (e.g. before a change), to compare two builds in one run:
    // containerd resolves the runtime name below to that file name in the shim directory.
    if args.shim_dir.join(BASELINE_BINARY).is_file() {
        runtimes.push(Runtime {
            name: BASELINE_RUNTIME,
            label: "this shim, baseline build (`io.containerd.proxmox-lxc-baseline.v2`)",
            tag: "lxcbase",
        });
    }
    // containerd-runc-shim 0.2 speaks task API v3 only, which containerd 1.x does not.
    if version.config_version >= 3 {
        if args.shim_dir.join(RUNC_RS_BINARY).is_file() {
            runtimes.push(Runtime {
                name: RUNC_RS_RUNTIME,
                label: "Rust runc shim (`io.containerd.runc-rs.v2`)",
                tag: "runcrs",
            });
        } else {
            eprintln!(
                "e2e-bench: no {RUNC_RS_BINARY} in {} (scripts/bench.sh installs it); Rust runc shim not measured",
                args.shim_dir.display()
            );
        }
    }
    let work = std::env::temp_dir()
        .join("pxlxc-e2e")
        .join(format!("bench-{}", std::process::id()));
    let cd = Containerd::start(version, &work, &args.shim_dir)?;
    let outcome = (|| -> Result<String> {
        cd.import_images()?;
        eprintln!(
            "e2e-bench: {} x ctr run --rm ... true per runtime",
            args.runs
        );
        let (run, run_failures) = bench_run(&cd, &runtimes, args.runs);
        eprintln!(
            "e2e-bench: {} x ctr task exec ... true per runtime",
            args.runs
        );
        let exec = bench_exec(&cd, &runtimes, args.runs);
        let tty_runs = args.runs.clamp(1, 5);
        eprintln!("e2e-bench: {tty_runs} x ctr task exec -t ... seq -s ' ' 1000000 per runtime");
        let tty = bench_tty(&cd, &runtimes, tty_runs);
        eprintln!(
            "e2e-bench: memory of {} running containers per runtime",
            args.containers
        );
        let mem: Vec<Result<MemoryResult, String>> = runtimes
            .iter()
            .map(|rt| bench_memory(&cd, rt, args.containers))
            .collect();

        let mut out = String::new();
        out.push_str(&format!(
            "containerd {} ({}), {} runs each after 2 warm-up runs, {} containers for memory; shim: {}\n\n",
            cd.version.name,
            cd.version.containerd().display(),
            args.runs,
            args.containers,
            shim.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "not built".into())
        ));
        out.push_str("| measure (ratio to the Go runc shim) |");
        for rt in &runtimes {
            out.push_str(&format!(" {} |", rt.label));
        }
        out.push_str("\n|---|");
        out.push_str(&"---|".repeat(runtimes.len()));
        out.push('\n');
        let latency_row = |label: String, samples: &[Samples], p: f64| {
            let value = |s: &Samples| match s {
                Ok(v) if !v.is_empty() => Some(percentile(v, p).as_secs_f64()),
                _ => None,
            };
            let first = samples.first().and_then(value);
            let mut row = format!("| {label} |");
            for (i, s) in samples.iter().enumerate() {
                row.push_str(&format!(
                    " {} |",
                    with_ratio(cell_latency(s, p), value(s), first, i)
                ));
            }
            row.push('\n');
            row
        };
        for (label, p) in [("median", 50.0), ("p90", 90.0)] {
            out.push_str(&latency_row(
                format!("`ctr run --rm IMAGE ID true`, {label}"),
                &run,
                p,
            ));
        }
        out.push_str("| `ctr run --rm` runs that failed (left out above) |");
        for f in &run_failures {
            out.push_str(&format!(" {} |", f.count));
        }
        out.push('\n');
        for (label, p) in [("median", 50.0), ("p90", 90.0)] {
            out.push_str(&latency_row(
                format!("`ctr task exec ID true`, {label}"),
                &exec,
                p,
            ));
        }
        out.push_str(&latency_row(
            "`ctr task exec -t ID seq -s ' ' 1000000` (6.9 MB through a TTY), median".into(),
            &tty,
            50.0,
        ));
        for (label, pss) in [("RSS", false), ("PSS", true)] {
            let value = |m: &Result<MemoryResult, String>| match m {
                Ok(r) => Some(if pss {
                    r.per_container.pss_kib
                } else {
                    r.per_container.rss_kib
                }),
                Err(_) => None,
            };
            let first = mem.first().and_then(value);
            out.push_str(&format!("| host memory per running container, {label} |"));
            for (i, m) in mem.iter().enumerate() {
                let cell = match (m, value(m)) {
                    (_, Some(kib)) => mib(kib),
                    (Err(e), None) => format!("failed: {}", e.lines().next().unwrap_or("")),
                    (Ok(_), None) => "-".into(),
                };
                out.push_str(&format!(
                    " {} |",
                    with_ratio(cell, value(m).map(|v| v as f64), first.map(|v| v as f64), i)
                ));
            }
            out.push('\n');
        }
        out.push_str("| host processes counted per container |");
        for m in &mem {
            match m {
                Ok(r) => out.push_str(&format!(" {} |", r.processes.join(", "))),
                Err(_) => out.push_str(" - |"),
            }
        }
        out.push_str("\n\nWhere one container's memory goes (`/proc/PID/smaps` of each counted process of the last container started; RSS / PSS in MiB):\n\n");
        out.push_str("| runtime | process | threads | total | own binary | of which written after load (relocations, data; private) | libc | other libraries | anonymous (heap, stacks, arenas) | other |\n");
        out.push_str("|---|---|---|---|---|---|---|---|---|---|\n");
        for (rt, m) in runtimes.iter().zip(&mem) {
            let Ok(r) = m else { continue };
            for b in &r.breakdown {
                out.push_str(&format!(
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                    rt.tag,
                    b.process,
                    b.threads,
                    part(b.total),
                    part(b.own_binary),
                    part(b.own_relro_data),
                    part(b.libc),
                    part(b.other_libraries),
                    part(b.anonymous),
                    part(b.other)
                ));
            }
        }
        Ok(out)
    })();
    let leftovers = cd.teardown("bench");
    for l in &leftovers {
        eprintln!("e2e-bench: cleaned up by force: {l}");
    }
    let table = outcome?;
    println!("{table}");
    Ok(true)
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("e2e-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
