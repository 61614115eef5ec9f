//! Resource bounds end to end (issue 12, point 5), as root against a private containerd and
//! real LXC; each case runs against runc first (the reference) and then against this shim:
//!
//! - a workload writing to stdout as fast as it can while its reader is slow does not grow the
//!   shim's memory: the copy from the container's pipe to containerd's fifo waits for the
//!   fifo, so the workload is throttled instead (plain pipes and a terminal);
//! - 1,000 execs in one container leave the shim's open descriptors and memory flat, execs
//!   whose background child keeps stdout open and execs on a terminal included (delete of an
//!   exec releases its copies);
//! - a fork bomb in a container with `linux.resources.pids.limit` is stopped by the limit, the
//!   shim answers State, Pids and Exec while it runs (an exec inside the limit, or refused
//!   with the reason, as under runc), and kill + delete leave nothing.
//!
//! No timed assertions: the bounds are on memory and descriptor counts; the only clock is the
//! deadline of each `ctr` call, so a hang fails instead of stalling CI. Run time 2.5-4
//! minutes on 2 cores under load (most of it the 2 x 1,000 execs).

use std::collections::BTreeMap;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use e2e::cmd::{self, Output};
use e2e::image::BUSYBOX_IMAGE;
use e2e::{paths, Containerd, ContainerdVersion, NAMESPACE, RUNC_RUNTIME, SHIM_RUNTIME};

const RUN_TIMEOUT: Duration = Duration::from_secs(30);

fn root_or_skip() -> Result<(), skip_harness::Missing> {
    e2e::require_root_and_shim("LXC containers, containerd")
}

struct Env {
    cd: Containerd,
    work: PathBuf,
}

impl Env {
    fn start(label: &str) -> Result<Env> {
        let work = std::env::temp_dir().join(format!("pxlxc-bnd-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work)?;
        let version = ContainerdVersion::system().map_err(anyhow::Error::msg)?;
        let cd = Containerd::start(version, &work.join("containerd"), &paths::shim_dir())?;
        cd.import_images()?;
        Ok(Env { cd, work })
    }

    fn ctr(&self, args: &[&str]) -> Result<Output> {
        cmd::run(&mut self.cd.ctr_cmd(args), None, RUN_TIMEOUT)
    }

    /// `ctr run -d` of the busybox image; ctr copies output only until it returns, so from
    /// then on nobody reads the task's stdout fifo unless the test does.
    /// With `terminal`, `ctr run -d -t` on a pty of the test's (ctr wants a console there).
    fn run_detached(&self, runtime: &str, id: &str, terminal: bool, args: &[&str]) -> Result<()> {
        let runtime = format!("--runtime={runtime}");
        let mut all = vec!["run", "-d", runtime.as_str()];
        if terminal {
            all.push("-t");
        }
        all.push(BUSYBOX_IMAGE);
        all.push(id);
        all.extend_from_slice(args);
        let status = if terminal {
            cmd::run_on_pty(&mut self.cd.ctr_cmd(&all), 24, 80, b"", RUN_TIMEOUT)?.status
        } else {
            self.ctr(&all)?.status
        };
        ensure!(status.0 == 0, "ctr run -d {id}: status {status}");
        self.cd.wait_task_status(id, "RUNNING", RUN_TIMEOUT)
    }

    fn remove(&self, id: &str) {
        self.cd.force_remove(id);
    }

    fn finish(self, label: &str) -> Result<()> {
        let leftovers = self.cd.teardown(label);
        let _ = std::fs::remove_dir_all(&self.work);
        ensure!(leftovers.is_empty(), "leftovers: {leftovers:?}");
        Ok(())
    }
}

/// The runtimes a case runs against, the reference first, with a short label for ids.
const RUNTIMES: [(&str, &str); 2] = [(RUNC_RUNTIME, "runc"), (SHIM_RUNTIME, "shim")];

/// The shim process serving container `id` (runc's or ours: both name it with `-id ID`).
fn shim_pid(cd: &Containerd, id: &str) -> Result<i32> {
    let needle = format!("-id {id} ");
    let found: Vec<i32> = cd
        .shim_processes()
        .into_iter()
        .filter(|p| p.cmdline.contains(&needle))
        .map(|p| p.pid)
        .collect();
    match found.as_slice() {
        [pid] => Ok(*pid),
        other => bail!("expected one shim process for {id}, found {other:?}"),
    }
}

/// What the shim holds: open descriptors (by target, for messages) and anonymous memory.
#[derive(Debug, Clone)]
struct Usage {
    fds: usize,
    anon_kib: u64,
    targets: BTreeMap<String, usize>,
}

fn usage(pid: i32) -> Result<Usage> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .with_context(|| format!("read /proc/{pid}/smaps_rollup"))?;
    let anon_kib = rollup
        .lines()
        .find_map(|l| l.strip_prefix("Anonymous:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no Anonymous: line in smaps_rollup")?;
    let mut targets = BTreeMap::new();
    let mut fds = 0;
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))?.flatten() {
        fds += 1;
        let target = std::fs::read_link(entry.path())
            .map(|t| t.to_string_lossy().into_owned())
            .unwrap_or_default();
        // pipe:[123], socket:[456] -> pipe, socket; paths stay as they are.
        let kind = target.split(":[").next().unwrap_or_default().to_string();
        *targets.entry(kind).or_insert(0) += 1;
    }
    Ok(Usage {
        fds,
        anon_kib,
        targets,
    })
}

// ---------------------------------------------------------------------------------------------
// a) a fast writer and a slow reader

/// How much the test reads from the flood, slowly, while it samples the shim.
const FLOOD_READ: usize = 8 << 20;
/// The shim's anonymous memory may move this much while the flood runs (allocator noise);
/// an unbounded buffer grows by the producer's rate, hundreds of MiB in the same time.
const FLOOD_SLACK_KIB: u64 = 4 << 10;

/// The task's stdout fifo, as the shim holds it open (ctr made it under containerd's fifo dir).
fn stdout_fifo(shim: i32, id: &str) -> Result<PathBuf> {
    let suffix = format!("{id}-stdout");
    for entry in std::fs::read_dir(format!("/proc/{shim}/fd"))?.flatten() {
        if let Ok(target) = std::fs::read_link(entry.path()) {
            if target.to_string_lossy().ends_with(&suffix) {
                return Ok(target);
            }
        }
    }
    bail!("shim {shim} holds no fifo named {suffix}")
}

fn unread_bytes(fd: &std::fs::File) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int through a valid pointer, on a descriptor we own.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) } < 0 {
        return 0;
    }
    n.max(0) as usize
}

fn flood_case(env: &Env, runtime: &str, id: &str, terminal: bool) -> Result<()> {
    // 64-byte lines, as fast as the container can write them.
    let line = "0123456789abcdef".repeat(4);
    env.run_detached(runtime, id, terminal, &["yes", &line[..63]])?;
    let result = (|| -> Result<()> {
        let shim = shim_pid(&env.cd, id)?;
        let fifo_path = stdout_fifo(shim, id)?;
        let mut fifo = std::fs::File::open(&fifo_path)
            .with_context(|| format!("open {}", fifo_path.display()))?;
        let mut buf = vec![0u8; 4096];
        let mut total = 0;
        let mut samples = Vec::new();
        let mut most_unread = 0;
        let mut next_sample = 0;
        while total < FLOOD_READ {
            if total >= next_sample {
                samples.push(usage(shim)?.anon_kib);
                most_unread = most_unread.max(unread_bytes(&fifo));
                next_sample += FLOOD_READ / 16;
            }
            let n = fifo.read(&mut buf)?;
            ensure!(n > 0, "the flood's stdout ended after {total} bytes");
            total += n;
            // A slow reader: 4 KiB at a time with a pause, far below what `yes` writes.
            std::thread::sleep(Duration::from_millis(1));
        }
        samples.push(usage(shim)?.anon_kib);
        let first = samples[0];
        let peak = samples.iter().copied().max().unwrap_or(first);
        println!(
            "{id}: read {total} bytes slowly; shim anonymous KiB {samples:?}; \
             most unread in the fifo {most_unread}"
        );
        // The reader was the bottleneck: the fifo stayed full behind it, so the shim had
        // output it could have buffered (otherwise this case would prove nothing).
        ensure!(
            most_unread >= 16 << 10,
            "the fifo never filled ({most_unread} bytes unread at most): the reader was not slower than the writer"
        );
        ensure!(
            peak <= first + FLOOD_SLACK_KIB,
            "the shim's anonymous memory grew from {first} KiB to {peak} KiB while a slow reader \
             drained {total} bytes of a fast writer's output (bound: {FLOOD_SLACK_KIB} KiB)"
        );
        Ok(())
    })();
    env.remove(id);
    result
}

fn fast_stdout_slow_reader_keeps_shim_memory_flat() -> Result<()> {
    root_or_skip()?;
    let env = Env::start("flood")?;
    let mut result = Ok(());
    for (runtime, label) in RUNTIMES {
        for terminal in [false, true] {
            let id = format!("bnd-flood-{label}{}", if terminal { "-tty" } else { "" });
            result = result.and_then(|()| flood_case(&env, runtime, &id, terminal));
        }
    }
    let finish = env.finish("bounds-flood");
    result.and(finish)
}

// ---------------------------------------------------------------------------------------------
// b) 1,000 execs

const EXECS: usize = 1000;
const EXECS_BASELINE: usize = 100;
/// Every this many execs (after the baseline), one whose background child keeps the exec's
/// stdout open after the exec itself exited.
const BACKGROUND_EVERY: usize = 100;
/// Every this many execs (after the baseline, offset by half), one on a terminal.
const TERMINAL_EVERY: usize = 100;
/// Descriptors the shim may gain between the baseline and the end (a lazily opened one).
const EXEC_FD_SLACK: usize = 2;
/// Memory it may gain: allocator noise. A leaked process record, exit-table entry or copy
/// task per exec would be over 1 KiB each, 900 KiB and more for the 900 execs measured.
const EXEC_MEM_SLACK_KIB: u64 = 768;

/// Runs exec `n`; Ok(false) when its output did not arrive.
fn exec_once(env: &Env, id: &str, n: usize) -> Result<bool> {
    // Ids repeat every EXECS_BASELINE execs (same parity, so the same client): an exec
    // whose record outlived its delete makes the next one with its id fail.
    let exec_id = format!("x{}", n % EXECS_BASELINE);
    if n > EXECS_BASELINE && n % TERMINAL_EVERY == TERMINAL_EVERY / 2 {
        // On a terminal (`ctr task exec -t` wants one on its stdin): a pty and its copies.
        let args = [
            "task",
            "exec",
            "-t",
            "--exec-id",
            &exec_id,
            id,
            "sh",
            "-c",
            "echo ok",
        ];
        let out = cmd::run_on_pty(&mut env.cd.ctr_cmd(&args), 24, 80, b"", RUN_TIMEOUT)
            .with_context(|| format!("{id}: exec {n} (terminal)"))?;
        let screen = String::from_utf8_lossy(&out.screen).into_owned();
        ensure!(
            out.status.0 == 0,
            "{id}: exec {n} (terminal): status {} screen {screen:?}",
            out.status.0
        );
        return Ok(screen.contains("ok"));
    }
    let background = n > EXECS_BASELINE && n.is_multiple_of(BACKGROUND_EVERY);
    let argv: &[&str] = if background {
        &["sh", "-c", "sleep 100000 & echo started"]
    } else {
        &["sh", "-c", "echo ok"]
    };
    let mut args = vec!["task", "exec", "--exec-id", &exec_id, id];
    args.extend_from_slice(argv);
    let out = env.ctr(&args).with_context(|| {
        format!(
            "{id}: exec {n} ({})",
            if background {
                "its background child keeps stdout open"
            } else {
                "plain"
            }
        )
    })?;
    ensure!(
        out.status.0 == 0,
        "{id}: exec {n}: status {} stdout {:?} stderr {:?}",
        out.status.0,
        out.stdout_str(),
        out.stderr_str()
    );
    // ctr 1.6 now and then loses a fast exec's output, with runc as with this shim (a race
    // in ctr's copy); counted, not failed on: descriptors and memory are what is measured.
    let expected = if background { "started\n" } else { "ok\n" };
    Ok(out.stdout_str() == expected)
}

/// Execs `from..to` of container `id`, from two clients at once (as probes and `kubectl
/// exec` come), which also halves the time on 2 cores.
fn exec_range(env: &Env, id: &str, from: usize, to: usize) -> Result<()> {
    let lost = std::thread::scope(|s| {
        let workers: Vec<_> = (0..2)
            .map(|w| {
                s.spawn(move || -> Result<usize> {
                    let mut lost = 0;
                    for n in (from..to).filter(|n| n % 2 == w) {
                        if !exec_once(env, id, n)? {
                            lost += 1;
                        }
                    }
                    Ok(lost)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("exec worker panicked")))
            })
            .collect::<Result<Vec<usize>>>()
    })?;
    let lost: usize = lost.iter().sum();
    if lost > 0 {
        println!("{id}: execs {from}..{to}: {lost} outputs lost by ctr");
    }
    Ok(())
}

fn execs_case(env: &Env, runtime: &str, id: &str) -> Result<()> {
    env.run_detached(runtime, id, false, &["sleep", "100000"])?;
    let result = (|| -> Result<()> {
        let shim = shim_pid(&env.cd, id)?;
        exec_range(env, id, 1, EXECS_BASELINE + 1)?;
        let base = usage(shim)?;
        exec_range(env, id, EXECS_BASELINE + 1, EXECS + 1)?;
        let end = usage(shim)?;
        println!(
            "{id}: after {EXECS_BASELINE} execs {} fds, {} KiB anonymous; after {EXECS}: {} fds, \
             {} KiB\n  fds then: {:?}\n  fds now:  {:?}",
            base.fds, base.anon_kib, end.fds, end.anon_kib, base.targets, end.targets
        );
        ensure!(
            end.fds <= base.fds + EXEC_FD_SLACK,
            "the shim's open descriptors grew from {} to {} over {} execs: {:?} -> {:?}",
            base.fds,
            end.fds,
            EXECS - EXECS_BASELINE,
            base.targets,
            end.targets
        );
        ensure!(
            end.anon_kib <= base.anon_kib + EXEC_MEM_SLACK_KIB,
            "the shim's anonymous memory grew from {} KiB to {} KiB over {} execs (bound: {} KiB)",
            base.anon_kib,
            end.anon_kib,
            EXECS - EXECS_BASELINE,
            EXEC_MEM_SLACK_KIB
        );
        Ok(())
    })();
    env.remove(id);
    result
}

fn thousand_execs_keep_shim_fds_and_memory_flat() -> Result<()> {
    root_or_skip()?;
    let env = Env::start("execs")?;
    let mut result = Ok(());
    for (runtime, label) in RUNTIMES {
        let id = format!("bnd-execs-{label}");
        result = result.and_then(|()| execs_case(&env, runtime, &id));
    }
    let finish = env.finish("bounds-execs");
    result.and(finish)
}

// ---------------------------------------------------------------------------------------------
// c) a fork bomb under a pids limit

const PIDS_LIMIT: i64 = 64;

/// A fork bomb that does not die out: PID 1 forks and reaps, every child forks forever and
/// never exits, so only the pids limit stops it. Built by the test with rustc (std only,
/// static) and put into a minimal rootfs with busybox.
const BOMB_RS: &str = r#"
extern "C" {
    fn fork() -> i32;
    fn waitpid(pid: i32, status: *mut i32, options: i32) -> i32;
}
fn main() {
    println!("bomb started");
    let init = std::process::id() == 1;
    loop {
        if unsafe { fork() } == 0 {
            loop {
                unsafe { fork() };
            }
        }
        if init {
            let mut status = 0;
            // WNOHANG
            while unsafe { waitpid(-1, &mut status, 1) } > 0 {}
        }
    }
}
"#;

/// A rootfs with static busybox (sh, echo, cat, sleep) and the bomb.
fn bomb_rootfs(dir: &Path) -> Result<PathBuf> {
    let rootfs = dir.join("rootfs");
    for sub in ["bin", "proc", "dev", "sys", "tmp", "etc"] {
        std::fs::create_dir_all(rootfs.join(sub))?;
    }
    std::fs::copy(e2e::image::BUSYBOX_PATH, rootfs.join("bin/busybox"))
        .context("copy busybox into the bomb's rootfs")?;
    for applet in ["sh", "echo", "cat", "sleep", "true"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet))?;
    }
    cmd::build_static_rust(
        "the fork bomb",
        BOMB_RS,
        &dir.join("bomb.rs"),
        &rootfs.join("bin/bomb"),
    )?;
    Ok(rootfs)
}

/// The OCI spec ctr would make (`ctr oci spec`), for our rootfs, the bomb as the process, a
/// pids limit and half a CPU (the bomb spins; the machine is shared).
fn bomb_spec(env: &Env, rootfs: &Path, id: &str) -> Result<PathBuf> {
    let out = env.ctr(&["oci", "spec"])?.ok("ctr oci spec")?;
    let mut spec: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    spec["root"] = serde_json::json!({"path": rootfs, "readonly": false});
    spec["process"]["args"] = serde_json::json!(["/bin/bomb"]);
    spec["process"]["env"] = serde_json::json!(["PATH=/bin"]);
    spec["linux"]["cgroupsPath"] = serde_json::json!(format!("/{NAMESPACE}/{id}"));
    let resources = spec["linux"]["resources"]
        .as_object_mut()
        .context("ctr oci spec has no linux.resources")?;
    resources.insert("pids".into(), serde_json::json!({"limit": PIDS_LIMIT}));
    resources.insert(
        "cpu".into(),
        serde_json::json!({"quota": 50000, "period": 100000}),
    );
    let path = env.work.join(format!("{id}.json"));
    std::fs::write(&path, serde_json::to_vec_pretty(&spec)?)?;
    Ok(path)
}

/// The pids cgroup directory of `NAMESPACE/id` (v1 `pids` controller or the v2 tree).
fn pids_dir(id: &str) -> Option<PathBuf> {
    let base = Path::new("/sys/fs/cgroup");
    [base.join("pids"), base.to_path_buf()]
        .into_iter()
        .map(|h| h.join(NAMESPACE).join(id))
        .find(|d| d.join("pids.current").is_file())
}

fn read_number(path: &Path) -> Result<i64> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let value = text
        .split_whitespace()
        .last()
        .with_context(|| format!("{} is empty", path.display()))?;
    value
        .parse()
        .with_context(|| format!("{}: {text:?}", path.display()))
}

fn bomb_case(env: &Env, rootfs: &Path, runtime: &str, id: &str) -> Result<()> {
    let spec = bomb_spec(env, rootfs, id)?;
    let runtime_flag = format!("--runtime={runtime}");
    let config = spec.to_string_lossy().into_owned();
    env.ctr(&["run", "-d", &runtime_flag, "--config", &config, id])?
        .ok(&format!("ctr run -d --config {id}"))?;
    let result = (|| -> Result<()> {
        env.cd.wait_task_status(id, "RUNNING", RUN_TIMEOUT)?;
        let dir = pids_dir(id).with_context(|| format!("no pids cgroup for {id}"))?;
        ensure!(
            read_number(&dir.join("pids.max"))? == PIDS_LIMIT,
            "pids.max of {} is not {PIDS_LIMIT}",
            dir.display()
        );
        // The bomb fills its cgroup up to the limit and then only gets refusals: wait for
        // the first refusal, then the count sits at the limit and never above it.
        let events = dir.join("pids.events");
        let deadline = std::time::Instant::now() + RUN_TIMEOUT;
        while read_number(&events)? == 0 {
            ensure!(
                std::time::Instant::now() < deadline,
                "the bomb never hit the limit"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut counts = Vec::new();
        for _ in 0..5 {
            counts.push(read_number(&dir.join("pids.current"))?);
            std::thread::sleep(Duration::from_millis(100));
        }
        println!("{id}: pids.current {counts:?} (limit {PIDS_LIMIT})");
        ensure!(
            counts.iter().all(|&c| c == PIDS_LIMIT),
            "pids.current of the bombed container is not held at the limit: {counts:?}"
        );
        // The shim answers while the bomb runs: State, Pids, and an Exec.
        ensure!(
            env.cd.task_status(id)?.as_deref() == Some("RUNNING"),
            "State: {id} is not RUNNING"
        );
        let ps = env.ctr(&["task", "ps", id])?.ok("ctr task ps")?;
        let listed = ps.stdout_str().lines().skip(1).count();
        ensure!(
            listed as i64 >= PIDS_LIMIT - 1 && listed as i64 <= PIDS_LIMIT,
            "Pids listed {listed} processes, the cgroup holds {PIDS_LIMIT}"
        );
        // One process (no fork left in the container): its own cgroups, then the init's.
        let exec = env.ctr(&[
            "task",
            "exec",
            "--exec-id",
            "probe",
            id,
            "cat",
            "/proc/self/cgroup",
            "/proc/1/cgroup",
        ])?;
        println!(
            "{id}: exec during the bomb: status {} stdout {:?} stderr {:?}",
            exec.status.0,
            exec.stdout_str(),
            exec.stderr_str().trim()
        );
        // An exec joins the container's cgroups before it forks into the pid namespace
        // (runc 1.2 clones it into them; runc 1.1 forks `runc init` after the move; the
        // shim's `--attach` writes itself into them first, issue 21), and pids.max refuses
        // that fork while the bomb holds every pid: such an exec works only when the bomb
        // just lost one. Either way it must answer, and what it runs is inside the limits;
        // a refusal says why.
        if exec.status.0 == 0 {
            let text = exec.stdout_str();
            let lines: Vec<&str> = text.lines().collect();
            let (own, init) = lines.split_at(lines.len() / 2);
            ensure!(
                !own.is_empty() && own == init,
                "the exec is not in the init's cgroups (so not under its limits): {own:?} vs {init:?}"
            );
        } else {
            let said = exec.stderr_str();
            ensure!(
                runtime != SHIM_RUNTIME || said.contains("fork"),
                "the shim's exec at the pids limit failed without naming the refused fork: {said:?}"
            );
            ensure!(
                !said.trim().is_empty(),
                "{runtime}'s exec failed without saying why"
            );
        }
        let after = read_number(&dir.join("pids.current"))?;
        ensure!(
            after <= PIDS_LIMIT,
            "pids.current {after} above the limit after the exec"
        );
        // The shim's state directory (crates/shim/src/config.rs STATE_ROOT, named by a hash
        // of namespace/id) and LXC container directory: there while the container runs, gone
        // after delete.
        let state_dir = {
            use sha2::Digest;
            let digest = sha2::Sha256::digest(format!("{NAMESPACE}/{id}").as_bytes());
            Path::new("/run/containerd-shim-proxmox-lxc").join(&hex::encode(digest)[..16])
        };
        let lxc_dir = Path::new(e2e::SHIM_LXCPATH).join(NAMESPACE).join(id);
        ensure!(
            runtime != SHIM_RUNTIME || (state_dir.is_dir() && lxc_dir.is_dir()),
            "no state directory {} or LXC directory {} for the running container",
            state_dir.display(),
            lxc_dir.display()
        );
        // Kill + delete: every process of the bomb goes, and its cgroup with it.
        env.ctr(&["task", "kill", "--signal", "SIGKILL", id])?
            .ok("ctr task kill")?;
        env.cd.wait_task_status(id, "STOPPED", RUN_TIMEOUT)?;
        env.ctr(&["task", "delete", id])?.ok("ctr task delete")?;
        env.ctr(&["container", "delete", id])?
            .ok("ctr container delete")?;
        let cgroups = e2e::host::cgroups_of(NAMESPACE, id);
        ensure!(cgroups.is_empty(), "cgroups left after delete: {cgroups:?}");
        let bombs: Vec<_> = e2e::host::processes()
            .into_iter()
            .filter(|p| p.cmdline == "/bin/bomb")
            .collect();
        ensure!(bombs.is_empty(), "bomb processes left: {bombs:?}");
        // The shim's own traces: the LXC container's directory and the state directory.
        ensure!(!lxc_dir.exists(), "{} left after delete", lxc_dir.display());
        ensure!(
            !state_dir.exists(),
            "{} left after delete",
            state_dir.display()
        );
        Ok(())
    })();
    env.remove(id);
    result
}

fn fork_bomb_is_held_by_pids_limit_and_shim_answers() -> Result<()> {
    root_or_skip()?;
    let has_pids = Path::new("/sys/fs/cgroup/pids").is_dir()
        || std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers")
            .is_ok_and(|c| c.split_whitespace().any(|x| x == "pids"));
    skip_harness::require(has_pids, "no pids cgroup controller")?;
    let env = Env::start("bomb")?;
    let result = (|| -> Result<()> {
        let rootfs = bomb_rootfs(&env.work.join("bomb"))?;
        for (runtime, label) in RUNTIMES {
            bomb_case(&env, &rootfs, runtime, &format!("bnd-bomb-{label}"))?;
        }
        Ok(())
    })();
    let finish = env.finish("bounds-bomb");
    result.and(finish)
}

skip_harness::main!(
    fast_stdout_slow_reader_keeps_shim_memory_flat,
    thousand_execs_keep_shim_fds_and_memory_flat,
    fork_bomb_is_held_by_pids_limit_and_shim_answers,
);
