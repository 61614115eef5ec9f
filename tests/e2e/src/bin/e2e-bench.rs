//! Benchmarks (not tests): this shim against runc's shim, side by side, in one run on the same
//! private containerd, printed as a markdown table.
//!
//! - start-to-exit latency of `ctr run --rm IMAGE ID true` (median, p90 of N runs; the two
//!   runtimes alternate run by run so drift hits both alike);
//! - `ctr task exec` latency of `true` in a running container;
//! - host-side memory per running container: RSS and PSS of every host process that exists
//!   because of that container (its shim, LXC's monitor `lxc-start`; not the workload itself,
//!   which lives in the container's pid namespace and is the same under both), over K
//!   containers per runtime.
//!
//! ```text
//! e2e-bench [--runs N] [--containers K] [--shim-dir DIR] [--containerd 1.6|1.7|2.1]
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use e2e::cmd;
use e2e::image::BUSYBOX_IMAGE;
use e2e::{host, paths, Containerd, ContainerdVersion, RUNC_RUNTIME, SHIM_RUNTIME};

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
        version: "1.6".into(),
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
fn bench_run(cd: &Containerd, runtimes: &[&str], runs: usize) -> (Vec<Samples>, Vec<Failures>) {
    let mut results: Vec<Samples> = runtimes.iter().map(|_| Ok(Vec::new())).collect();
    let mut failures: Vec<Failures> = vec![Failures::default(); runtimes.len()];
    // Two warm-up runs each: page cache, snapshot, first shim start.
    for round in 0..runs + 2 {
        for (i, rt) in runtimes.iter().enumerate() {
            let Ok(samples) = &mut results[i] else {
                continue;
            };
            let id = format!(
                "bench-run-{}-{round}",
                if *rt == SHIM_RUNTIME { "lxc" } else { "runc" }
            );
            match time_run(cd, rt, &id) {
                Ok(d) if round >= 2 => samples.push(d),
                Ok(_) => {}
                Err(e) => {
                    cd.force_remove(&id);
                    let f = &mut failures[i];
                    f.count += 1;
                    let msg = format!("{e:#}");
                    eprintln!(
                        "e2e-bench: {rt} run {round} failed: {}",
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
fn bench_exec(cd: &Containerd, runtimes: &[&str], runs: usize) -> Vec<Samples> {
    runtimes
        .iter()
        .map(|rt| {
            let id = format!(
                "bench-exec-{}",
                if *rt == SHIM_RUNTIME { "lxc" } else { "runc" }
            );
            let result = (|| -> Result<Vec<Duration>> {
                start_sleeper(cd, rt, &id)?;
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
fn bench_tty(cd: &Containerd, runtimes: &[&str], runs: usize) -> Vec<Samples> {
    runtimes
        .iter()
        .map(|rt| {
            let id = format!(
                "bench-tty-{}",
                if *rt == SHIM_RUNTIME { "lxc" } else { "runc" }
            );
            let result = (|| -> Result<Vec<Duration>> {
                start_sleeper(cd, rt, &id)?;
                let mut samples = Vec::new();
                for i in 0..runs + 1 {
                    let exec_id = format!("t{i}");
                    let start = Instant::now();
                    let out = e2e::cmd::run_on_pty(
                        &mut cd.ctr_cmd(&[
                            "task",
                            "exec",
                            "-t",
                            "--exec-id",
                            &exec_id,
                            &id,
                            "seq",
                            "-s",
                            " ",
                            "1000000",
                        ]),
                        40,
                        120,
                        b"",
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

/// Host-side memory per container and the processes counted.
struct MemoryResult {
    per_container: host::Memory,
    processes: Vec<String>,
}

fn bench_memory(cd: &Containerd, runtime: &str, count: usize) -> Result<MemoryResult, String> {
    let tag = if runtime == SHIM_RUNTIME {
        "lxc"
    } else {
        "runc"
    };
    let ids: Vec<String> = (0..count).map(|i| format!("bench-mem-{tag}-{i}")).collect();
    let result = (|| -> Result<MemoryResult> {
        for id in &ids {
            start_sleeper(cd, runtime, id)?;
        }
        // Let the shims settle (lazy allocations, first stats).
        std::thread::sleep(Duration::from_secs(2));
        let host_ns = host::pid_ns(std::process::id() as i32).context("own pid namespace")?;
        let mut total = host::Memory::default();
        let mut names = Vec::new();
        for p in host::processes() {
            if !ids.iter().any(|id| p.cmdline.contains(id.as_str())) {
                continue;
            }
            // The workload itself runs in the container's pid namespace under both runtimes.
            if host::pid_ns(p.pid).as_deref() != Some(host_ns.as_str()) {
                continue;
            }
            if let Some(m) = host::memory_of(p.pid) {
                total += m;
                let exe = p.cmdline.split_whitespace().next().unwrap_or("?");
                let short = exe.rsplit('/').next().unwrap_or(exe).to_string();
                if !names.contains(&short) {
                    names.push(short);
                }
            }
        }
        if total.rss_kib == 0 {
            bail!("found no host process for the {runtime} containers");
        }
        let n = count as u64;
        Ok(MemoryResult {
            per_container: host::Memory {
                rss_kib: total.rss_kib / n,
                pss_kib: total.pss_kib / n,
            },
            processes: names,
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

fn ratio(a: &Samples, b: &Samples, p: f64) -> String {
    match (a, b) {
        (Ok(a), Ok(b)) if !a.is_empty() && !b.is_empty() => format!(
            "{:.2}x",
            percentile(b, p).as_secs_f64() / percentile(a, p).as_secs_f64()
        ),
        _ => "-".into(),
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn run() -> Result<bool> {
    let args = parse()?;
    if !host::is_root() {
        bail!("run as root");
    }
    let version = if args.version == "1.6" {
        ContainerdVersion::system()
    } else {
        ContainerdVersion::cached(&args.version)
    }
    .map_err(|e| anyhow!(e))?;
    let shim = paths::shim_binary(&args.shim_dir);
    let runtimes: Vec<&str> = if shim.is_some() {
        vec![RUNC_RUNTIME, SHIM_RUNTIME]
    } else {
        eprintln!(
            "e2e-bench: shim binary not built in {} (cargo build --release -p containerd-shim-proxmox-lxc); measuring runc only",
            args.shim_dir.display()
        );
        vec![RUNC_RUNTIME]
    };
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

        let not_built = Err::<Vec<Duration>, String>("shim binary not built".into());
        let lxc_run = run.get(1).unwrap_or(&not_built);
        let lxc_exec = exec.get(1).unwrap_or(&not_built);
        let mut out = String::new();
        out.push_str(&format!(
            "containerd {} ({}), {} runs each after 2 warm-up runs, {} containers for memory; shim: {}\n\n",
            cd.version.name,
            cd.version.containerd().display(),
            args.runs,
            args.containers,
            shim.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "not built".into())
        ));
        out.push_str("| measure | runc (`io.containerd.runc.v2`) | this shim (`io.containerd.proxmox-lxc.v2`) | shim / runc |\n");
        out.push_str("|---|---|---|---|\n");
        for (label, p) in [("median", 50.0), ("p90", 90.0)] {
            out.push_str(&format!(
                "| `ctr run --rm IMAGE ID true`, {label} | {} | {} | {} |\n",
                cell_latency(&run[0], p),
                cell_latency(lxc_run, p),
                ratio(&run[0], lxc_run, p)
            ));
        }
        let failed_cell = |i: usize| match run_failures.get(i) {
            Some(f) => f.count.to_string(),
            None => "-".into(),
        };
        out.push_str(&format!(
            "| `ctr run --rm` runs that failed (left out above) | {} | {} | |\n",
            failed_cell(0),
            failed_cell(1)
        ));
        for (label, p) in [("median", 50.0), ("p90", 90.0)] {
            out.push_str(&format!(
                "| `ctr task exec ID true`, {label} | {} | {} | {} |\n",
                cell_latency(&exec[0], p),
                cell_latency(lxc_exec, p),
                ratio(&exec[0], lxc_exec, p)
            ));
        }
        out.push_str(&format!(
            "| `ctr task exec -t ID seq -s ' ' 1000000` (6.9 MB through a TTY), median | {} | {} | {} |\n",
            cell_latency(&tty[0], 50.0),
            cell_latency(tty.get(1).unwrap_or(&not_built), 50.0),
            ratio(&tty[0], tty.get(1).unwrap_or(&not_built), 50.0)
        ));
        let mem_cell = |m: Option<&Result<MemoryResult, String>>, pss: bool| match m {
            Some(Ok(r)) => mib(if pss {
                r.per_container.pss_kib
            } else {
                r.per_container.rss_kib
            }),
            Some(Err(e)) => format!("failed: {}", e.lines().next().unwrap_or("")),
            None => "shim binary not built".into(),
        };
        let mem_ratio = |pss: bool| match (mem.first(), mem.get(1)) {
            (Some(Ok(a)), Some(Ok(b))) => {
                let (a, b) = if pss {
                    (a.per_container.pss_kib, b.per_container.pss_kib)
                } else {
                    (a.per_container.rss_kib, b.per_container.rss_kib)
                };
                format!("{:.2}x", b as f64 / a.max(1) as f64)
            }
            _ => "-".into(),
        };
        for (label, pss) in [("RSS", false), ("PSS", true)] {
            out.push_str(&format!(
                "| host memory per running container, {label} | {} | {} | {} |\n",
                mem_cell(mem.first(), pss),
                mem_cell(mem.get(1), pss),
                mem_ratio(pss)
            ));
        }
        let procs = |m: Option<&Result<MemoryResult, String>>| match m {
            Some(Ok(r)) => r.processes.join(", "),
            _ => "-".into(),
        };
        out.push_str(&format!(
            "| host processes counted per container | {} | {} | |\n",
            procs(mem.first()),
            procs(mem.get(1))
        ));
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
