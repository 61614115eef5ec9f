//! The `pve` driver end to end: a private containerd, `ctr run --runtime
//! io.containerd.proxmox-lxc.v2 --runtime-config-path CONFIG` with `driver = "pve"`, against the
//! in-process Proxmox API test server, which plays the node with real LXC
//! ([`pve_test_server::LxcNodeBackend`]: CT config -> LXC config as pve-container does,
//! `lxc-start -F` in `/var/lib/lxc` as `pve-container@VMID`: on a host with systemd and
//! pve-container's unit, the node twin's `pve` case, through `systemctl start`).
//!
//! The test server is a test double of a Proxmox VE node (none can be installed here): it checks
//! every request against the Proxmox API schema and behaves as pve-container where the shim can
//! tell, but it is not Proxmox.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use e2e::cmd::{self, Background, Output};
use e2e::image::BUSYBOX_IMAGE;
use e2e::pve_node::PveNode;
use e2e::{paths, Containerd, ContainerdVersion, SHIM_RUNTIME};
use pve_test_server::{Fault, FaultRule, Supervisor};

const RUN_TIMEOUT: Duration = Duration::from_secs(30);
/// Each test its own range: both share /var/lib/lxc (as CTs of one node do) but not the
/// server's copy of /etc/pve/lxc, which is what keeps VMIDs apart on a real node. The CRI
/// tests use 990300-990399, the security tests 990400-990439.
const PARITY_RANGE: [u32; 2] = [990100, 990149];
const FAULTS_RANGE: [u32; 2] = [990150, 990199];
const BENCH_RANGE: [u32; 2] = [990200, 990249];
const START_LIMIT_RANGE: [u32; 2] = [990250, 990299];
const CGROUP_RANGE: [u32; 2] = [990450, 990469];

struct Env {
    node: PveNode,
    cd: Containerd,
    work: PathBuf,
}

impl Env {
    fn start(label: &str, task_timeout_secs: u64, range: [u32; 2]) -> Result<Env> {
        let work = std::env::temp_dir().join(format!("pxlxc-pve-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work)?;
        let node = PveNode::start(&work, range, task_timeout_secs, "")?;
        let version = ContainerdVersion::system().map_err(anyhow::Error::msg)?;
        // The shims read the node's config as their host file too: a task with a user
        // namespace reaches the shim without the runtime options (see the shim's
        // `config::HOST_CONFIG_ENV`), as on a Proxmox node whose host file selects `pve`.
        let cd = Containerd::start_with_shim_config(
            version,
            &work.join("containerd"),
            &paths::shim_dir(),
            Some(&node.shim_config),
        )?;
        cd.import_images()?;
        Ok(Env { node, cd, work })
    }

    fn run_args(&self, id: &str, flags: &[&str], args: &[&str]) -> Vec<String> {
        let mut all: Vec<String> = vec![
            "run".into(),
            format!("--runtime={SHIM_RUNTIME}"),
            format!("--runtime-config-path={}", self.node.shim_config.display()),
        ];
        all.extend(flags.iter().map(|s| s.to_string()));
        all.push(BUSYBOX_IMAGE.into());
        all.push(id.into());
        all.extend(args.iter().map(|s| s.to_string()));
        all
    }

    fn ctr_run(&self, id: &str, flags: &[&str], args: &[&str]) -> Result<Output> {
        let mut f = vec!["--rm"];
        f.extend_from_slice(flags);
        let args = self.run_args(id, &f, args);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        cmd::run(&mut self.cd.ctr_cmd(&refs), None, RUN_TIMEOUT)
    }

    /// VMIDs of CT configs in the server's copy of /etc/pve/lxc.
    fn cts(&self) -> Vec<u32> {
        self.node
            .ct_configs()
            .into_iter()
            .map(|(vmid, _)| vmid)
            .collect()
    }

    /// CT `vmid`'s config as the test node keeps it (its /etc/pve/lxc/VMID.conf).
    fn ct_config(&self, vmid: u32) -> Result<String> {
        let path = self
            .node
            .server
            .context()
            .config_dir
            .join(format!("{vmid}.conf"));
        Ok(std::fs::read_to_string(path)?)
    }

    /// `/cluster/resources?type=vm` through the API, as an operator's tool would see it.
    fn resources(&self) -> Result<Vec<pve_client::ClusterResource>> {
        self.node.resources()
    }

    fn no_leftovers(&self, what: &str) -> Result<()> {
        let left = self.node.leftovers();
        ensure!(left.is_empty(), "{what}: {left:?}");
        Ok(())
    }

    fn finish(self) -> Result<()> {
        let leftovers = self.cd.teardown("pve");
        let work = self.work.clone();
        drop(self.node);
        let _ = std::fs::remove_dir_all(&work);
        ensure!(leftovers.is_empty(), "leftovers: {leftovers:?}");
        Ok(())
    }
}

fn expect(out: &Output, code: i32, stdout: &str, what: &str) -> Result<()> {
    ensure!(
        out.status.0 == code && out.stdout_str() == stdout,
        "{what}: expected exit {code} and stdout {stdout:?}; got exit {} stdout {:?} stderr {:?}",
        out.status.0,
        out.stdout_str(),
        out.stderr_str()
    );
    Ok(())
}

fn root_or_skip() -> Result<(), skip_harness::Missing> {
    e2e::require_root_and_shim("LXC containers, containerd")
}

fn pve_driver_runc_parity_cases_and_lifecycle() -> Result<()> {
    root_or_skip()?;
    let env = Env::start("parity", 20, PARITY_RANGE)?;
    let result = (|| -> Result<()> {
        env.node.server.reset_counts();
        let started = Instant::now();
        let out = env.ctr_run(
            "pve-out",
            &[],
            &["sh", "-c", "echo hello; echo err >&2; exit 3"],
        )?;
        let lifecycle = started.elapsed();
        expect(&out, 3, "hello\n", "output and exit code")?;
        ensure!(
            out.stderr_str().contains("err"),
            "stderr: {:?}",
            out.stderr_str()
        );
        let counts = env.node.server.request_counts();
        let total = env.node.server.total_requests();
        println!(
            "API requests for one lifecycle: {total} {counts:?}; ctr run --rm took {lifecycle:?}"
        );
        // What is requested is fixed: one start, one destroy, and status polls of their
        // tasks (how many depends on how long the tasks take: the <= 8 goal is measured by
        // pve_driver_lifecycle_benchmark and the in-memory test in crates/shim, not asserted
        // here against real LXC's timing).
        let polls = env
            .node
            .server
            .requests("GET", "/nodes/{node}/tasks/{upid}/status");
        ensure!(
            env.node
                .server
                .requests("POST", "/nodes/{node}/lxc/{vmid}/status/start")
                == 1
                && env
                    .node
                    .server
                    .requests("DELETE", "/nodes/{node}/lxc/{vmid}")
                    == 1
                && total == 2 + polls
                && polls >= 2,
            "API requests per lifecycle: {counts:?}"
        );
        env.no_leftovers("after output case")?;

        let out = env.ctr_run(
            "pve-env",
            &["--env", "FOO=bar baz"],
            &["sh", "-c", "echo \"$FOO\""],
        )?;
        expect(&out, 0, "bar baz\n", "env")?;
        let out = env.ctr_run("pve-cwd", &["--cwd", "/tmp"], &["pwd"])?;
        expect(&out, 0, "/tmp\n", "cwd")?;

        // An unprivileged CT (Proxmox's own default for new CTs): a user namespace as
        // `ctr --uidmap/--gidmap` asks for it, on a remapped snapshot owned by host id 100000.
        // The CT config says `unprivileged: 1` with the spec's map as `lxc.idmap` lines
        // (pve-container's own default map would be 0 100000 65536 too, but the spec decides),
        // and the workload sees the map, is root inside and owns its rootfs, as under runc
        // (parity case `userns_uidmap` for the plain driver).
        let userns = [
            "-d",
            "--null-io",
            "--uidmap",
            "0:100000:65536",
            "--gidmap",
            "0:100000:65536",
        ];
        let args = env.run_args("pve-userns", &userns, &["sleep", "60"]);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        env.cd.ctr_ok(&refs)?;
        env.cd
            .wait_task_status("pve-userns", "RUNNING", RUN_TIMEOUT)?;
        let cts = env.cts();
        ensure!(cts.len() == 1, "one CT expected, found {cts:?}");
        let conf = env.ct_config(cts[0])?;
        ensure!(
            conf.contains("unprivileged: 1")
                && conf.contains("lxc.idmap: u 0 100000 65536")
                && conf.contains("lxc.idmap: g 0 100000 65536"),
            "unprivileged CT config:\n{conf}"
        );
        let out = env.cd.ctr(&[
            "task",
            "exec",
            "--exec-id",
            "u1",
            "pve-userns",
            "sh",
            "-c",
            "cat /proc/1/uid_map /proc/1/gid_map; id -u; stat -c %u:%g /etc/passwd",
        ])?;
        expect(
            &out,
            0,
            "         0     100000      65536\n         0     100000      65536\n0\n0:0\n",
            "unprivileged CT",
        )?;
        env.cd
            .ctr_ok(&["task", "kill", "-s", "KILL", "pve-userns"])?;
        env.cd
            .wait_task_status("pve-userns", "STOPPED", RUN_TIMEOUT)?;
        env.cd.ctr_ok(&["task", "rm", "pve-userns"])?;
        env.cd.ctr_ok(&["container", "rm", "pve-userns"])?;
        env.no_leftovers("after the unprivileged CT")?;

        // An exec is confined before it does anything in the CT (issue 21): the CT's root,
        // scanning /proc through 40 execs, sees no process outside the CT's cgroups and can
        // list no host descriptor of one (the parity case `exec_confined_from_the_start`).
        let args = env.run_args(
            "pve-scan",
            &userns,
            &["sh", "-c", e2e::confinement::SCANNER],
        );
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        env.cd.ctr_ok(&refs)?;
        env.cd
            .wait_task_status("pve-scan", "RUNNING", RUN_TIMEOUT)?;
        let report = e2e::confinement::exec_while_scanning(&env.cd, "pve-scan", 40)?;
        println!(
            "the CT's scanner walked /proc {} times during 40 execs",
            report.rounds
        );
        ensure!(
            report.rounds >= 40 && report.seen.is_empty(),
            "the CT's root saw execs before they were confined ({} rounds):\n{}",
            report.rounds,
            report.seen.join("\n")
        );
        env.cd.ctr_ok(&["task", "kill", "-s", "KILL", "pve-scan"])?;
        env.cd
            .wait_task_status("pve-scan", "STOPPED", RUN_TIMEOUT)?;
        env.cd.ctr_ok(&["task", "rm", "pve-scan"])?;
        env.cd.ctr_ok(&["container", "rm", "pve-scan"])?;
        env.no_leftovers("after the exec scanner")?;

        let args = env.run_args("pve-stdin", &["--rm"], &["sh", "-c", "cat; echo eof"]);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut bg = Background::spawn_with_open_stdin(&mut env.cd.ctr_cmd(&refs))?;
        env.cd
            .wait_task_status("pve-stdin", "RUNNING", RUN_TIMEOUT)?;
        bg.send_stdin_and_close(b"line1\nline2\n")?;
        let out = bg.wait(RUN_TIMEOUT)?;
        expect(&out, 0, "line1\nline2\neof\n", "stdin")?;

        // A detached container: visible in Proxmox with its tags, exec, kill. With ctr's
        // default seccomp profile: an exec runs under the init's filter, as under runc
        // (issue 21: `lxc-attach --elevated-privileges=LSM` left it out).
        let args = env.run_args("pve-detached", &["-d", "--seccomp"], &["sleep", "60"]);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        env.cd.ctr_ok(&refs)?;
        env.cd
            .wait_task_status("pve-detached", "RUNNING", RUN_TIMEOUT)?;
        let cts = env.cts();
        ensure!(cts.len() == 1, "one CT expected, found {cts:?}");
        let res = env.resources()?;
        let ct = res
            .iter()
            .find(|r| r.vmid == Some(cts[0]))
            .context("the CT is not in /cluster/resources")?;
        ensure!(
            ct.status.as_deref() == Some("running"),
            "CT status {:?}",
            ct.status
        );
        let tags = ct.tags.clone().unwrap_or_default();
        ensure!(tags.contains("k8s-cid-"), "CT tags {tags:?}");
        println!("CT {} running with tags {tags:?}", cts[0]);
        let conf = env.ct_config(cts[0])?;
        ensure!(
            conf.contains("ostype: unmanaged") && conf.contains("onboot: 0"),
            "CT config:\n{conf}"
        );
        ensure!(conf.contains("e2e/pve-detached"), "CT config:\n{conf}");
        let out = env.cd.exec_sh("x1", "pve-detached", "echo in-ct; exit 4")?;
        expect(&out, 4, "in-ct\n", "exec")?;
        let out = env.cd.exec_sh(
            "x2",
            "pve-detached",
            "grep Seccomp: /proc/1/status /proc/self/status | tr -s '\\t ' ' '; unshare -U true 2>/dev/null; echo unshare=$?",
        )?;
        expect(
            &out,
            0,
            "/proc/1/status:Seccomp: 2\n/proc/self/status:Seccomp: 2\nunshare=1\n",
            "an exec under the container's seccomp filter",
        )?;
        // pids, stats and the freezer read the CT's cgroup (Proxmox's lxc/VMID layout).
        let ps = env.cd.ctr_ok(&["task", "ps", "pve-detached"])?.stdout_str();
        ensure!(ps.lines().count() >= 2, "ctr task ps: {ps}");
        let metrics = env
            .cd
            .ctr_ok(&["task", "metrics", "pve-detached"])?
            .stdout_str();
        ensure!(metrics.contains("memory"), "ctr task metrics: {metrics}");
        env.cd.ctr_ok(&["task", "pause", "pve-detached"])?;
        env.cd
            .wait_task_status("pve-detached", "PAUSED", RUN_TIMEOUT)?;
        env.cd.ctr_ok(&["task", "resume", "pve-detached"])?;
        env.cd
            .wait_task_status("pve-detached", "RUNNING", RUN_TIMEOUT)?;
        env.cd
            .ctr_ok(&["task", "kill", "-s", "KILL", "pve-detached"])?;
        env.cd
            .wait_task_status("pve-detached", "STOPPED", RUN_TIMEOUT)?;
        env.cd.ctr_ok(&["task", "rm", "pve-detached"])?;
        env.cd.ctr_ok(&["container", "rm", "pve-detached"])?;
        // The shim's lines about the container name it and its CT (shim::logging) and reach
        // containerd's log (containerd copies the shim's log FIFO; it may quote the line).
        let log = std::fs::read_to_string(env.cd.log_path())?;
        let vmid = cts[0].to_string();
        let tagged = log.lines().filter(|l| {
            let l = l.replace("\\\"", "\"");
            l.contains("id=\"pve-detached\"") && l.contains(&format!("vmid=\"{vmid}\""))
        });
        ensure!(
            tagged.count() >= 2,
            "containerd's log has no shim lines with id=\"pve-detached\" vmid=\"{vmid}\""
        );
        let res = env.resources()?;
        ensure!(
            !res.iter().any(|r| r.vmid == Some(cts[0])),
            "CT {} still in /cluster/resources after delete",
            cts[0]
        );
        env.no_leftovers("after the detached case")?;

        // A shim that dies: `ctr task rm --force` runs `shim delete` from the bundle, which
        // finds the CT through the bundle's record and destroys it through the API.
        let args = env.run_args("pve-crash", &["-d", "--null-io"], &["sleep", "600"]);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        env.cd.ctr_ok(&refs)?;
        env.cd
            .wait_task_status("pve-crash", "RUNNING", RUN_TIMEOUT)?;
        let task_pid = env.cd.task_pid("pve-crash")?.context("task pid")?;
        let shims = env.cd.shim_processes();
        let shim = shims
            .iter()
            .find(|p| p.cmdline.contains("pve-crash"))
            .context("no shim process for pve-crash")?;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(shim.pid),
            nix::sys::signal::Signal::SIGKILL,
        )?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while e2e::host::pid_alive(shim.pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        ensure!(env.cts().len() == 1, "the CT should outlive its shim");
        let _ = env.cd.ctr(&["task", "delete", "--force", "pve-crash"])?;
        env.cd.ctr_ok(&["container", "delete", "pve-crash"])?;
        // containerd runs `shim delete` in the background once it sees the shim gone.
        let deadline = Instant::now() + Duration::from_secs(20);
        while !env.cts().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        // containerd unmounts the bundle's rootfs and removes the bundle only after `shim
        // delete` returned (and the CT with it), in that background job too; a slow node (the
        // twin under emulation) shows the gap.
        let bundle = env
            .cd
            .work
            .join("state/io.containerd.runtime.v2.task")
            .join(e2e::NAMESPACE)
            .join("pve-crash");
        let deadline = Instant::now() + Duration::from_secs(20);
        while bundle.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        ensure!(
            !bundle.exists(),
            "containerd did not remove {} after the CT was destroyed",
            bundle.display()
        );
        env.no_leftovers("after a crashed shim")?;
        ensure!(
            !e2e::host::pid_alive(task_pid),
            "the workload (pid {task_pid}) outlived its deleted CT"
        );
        Ok(())
    })();
    let finish = env.finish();
    result?;
    finish
}

fn pve_driver_faults_give_clear_errors_and_leave_nothing() -> Result<()> {
    root_or_skip()?;
    let env = Env::start("faults", 3, FAULTS_RANGE)?;
    let result = (|| -> Result<()> {
        let start = "/nodes/{node}/lxc/{vmid}/status/start";
        let cases: Vec<(&str, FaultRule, &str)> = vec![
            (
                "failing start task",
                FaultRule::new(Fault::FailTask(
                    "startup for container failed (injected)".into(),
                ))
                .on("POST", start),
                "injected",
            ),
            (
                "lock timeout",
                FaultRule::new(Fault::LockTimeout)
                    .on("POST", start)
                    .times(50),
                "got timeout",
            ),
            (
                "596",
                FaultRule::new(Fault::Status {
                    status: 596,
                    message: "Broken pipe".into(),
                })
                .on("POST", start)
                .times(50),
                "596",
            ),
            (
                "slow task",
                FaultRule::new(Fault::SlowTask(Duration::from_secs(8))).on("POST", start),
                "still",
            ),
        ];
        for (i, (name, rule, needle)) in cases.into_iter().enumerate() {
            env.node.server.clear_faults();
            env.node.server.inject(rule);
            let out = env.ctr_run(&format!("pve-fault-{i}"), &[], &["true"])?;
            env.node.server.clear_faults();
            let err = out.stderr_str();
            println!("{name}: ctr said: {}", err.trim());
            ensure!(out.status.0 != 0, "{name}: ctr run succeeded");
            ensure!(
                err.contains(needle),
                "{name}: error lacks {needle:?}: {err}"
            );
            // The slow task goes on in the server; wait for it before checking.
            let _ = env
                .node
                .rt
                .block_on(env.node.server.wait_idle(Duration::from_secs(15)));
            let _ = env.cd.ctr(&["container", "rm", &format!("pve-fault-{i}")]);
            let deadline = Instant::now() + Duration::from_secs(15);
            while !env.cts().is_empty() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            env.no_leftovers(name)?;
        }
        Ok(())
    })();
    let finish = env.finish();
    result?;
    finish
}

/// Lifecycle time (`ctr run --rm IMAGE true`: create, start, exit, delete) with the pve driver
/// against the test server playing the node, and with the plain lxc driver, and the API
/// requests per lifecycle. Numbers go to docs/pve-driver.md.
fn pve_driver_lifecycle_benchmark() -> Result<()> {
    root_or_skip()?;
    const RUNS: usize = 10;
    let env = Env::start("bench", 20, BENCH_RANGE)?;
    let lxc_config = env.work.join("lxc.toml");
    std::fs::write(&lxc_config, "driver = \"lxc\"\n")?;
    let result = (|| -> Result<()> {
        let mut report = Vec::new();
        for driver in ["lxc", "pve"] {
            let mut times = Vec::new();
            let mut requests = Vec::new();
            for i in 0..RUNS {
                let id = format!("bench-{driver}-{i}");
                env.node.server.reset_counts();
                let mut args = env.run_args(&id, &["--rm"], &["true"]);
                if driver == "lxc" {
                    args[2] = format!("--runtime-config-path={}", lxc_config.display());
                }
                let refs: Vec<&str> = args.iter().map(String::as_str).collect();
                // Each lifecycle on an idle node: the previous CT's lxc-start finishes its
                // cleanup (post-stop hooks) after the CT is destroyed, and the node starts the
                // reused VMID only after that (as systemd does with pve-container@VMID).
                env.node.wait_lxc_starts_gone(Duration::from_secs(10))?;
                let started = Instant::now();
                let out = cmd::run(&mut env.cd.ctr_cmd(&refs), None, RUN_TIMEOUT)?;
                times.push(started.elapsed());
                expect(&out, 0, "", &format!("{driver} run {i}"))?;
                requests.push(env.node.server.total_requests());
            }
            times.sort();
            let median = times[RUNS / 2];
            let mean = times.iter().sum::<Duration>() / RUNS as u32;
            report.push(format!(
                "{driver}: ctr run --rm true x{RUNS}: median {median:?}, mean {mean:?}, min {:?}, max {:?}; API requests per lifecycle {:?}",
                times[0],
                times[RUNS - 1],
                requests
            ));
            if driver == "pve" {
                // A benchmark: reported, not asserted (the count follows real LXC's timing).
                let worst = requests.iter().max().copied().unwrap_or(0);
                report.push(format!(
                    "pve: goal at most 8 API requests per lifecycle: {} (worst {worst})",
                    if worst <= 8 { "met" } else { "NOT met" }
                ));
            }
        }
        for line in report {
            println!("BENCH {line}");
        }
        env.no_leftovers("after the benchmark")
    })();
    let finish = env.finish();
    result?;
    finish
}

/// 20 back-to-back `ctr run --rm`, each its own shim process. A node starts every CT with
/// `systemctl start pve-container@VMID`, which systemd refuses after 5 starts in 10 s (the
/// test node enforces that): the shims must not reuse one VMID in quick succession.
fn pve_driver_twenty_back_to_back_runs_stay_under_systemds_start_limit() -> Result<()> {
    root_or_skip()?;
    let env = Env::start("startlimit", 20, START_LIMIT_RANGE)?;
    let result = (|| -> Result<()> {
        for i in 0..20 {
            let out = env.ctr_run(&format!("pve-rm-{i}"), &[], &["true"])?;
            expect(&out, 0, "", &format!("run {i}"))?;
        }
        for upid in env.node.server.tasks() {
            let log = env.node.server.task_log(&upid).unwrap_or_default();
            ensure!(
                !log.iter().any(|l| l.contains("attempted too often")),
                "{upid} hit the start limit: {log:?}"
            );
        }
        let starts: Vec<String> = env
            .node
            .server
            .tasks()
            .into_iter()
            .filter(|u| u.contains(":vzstart:"))
            .collect();
        ensure!(starts.len() == 20, "20 starts expected: {starts:?}");
        env.no_leftovers("after 20 runs")
    })();
    let finish = env.finish();
    result?;
    finish
}

/// Proxmox's cgroup layout (pve-container `update_lxc_config`: limits on `lxc/VMID`, the CT's
/// processes in `lxc/VMID/ns`, which the test node writes as a node does): the spec's limit is
/// enforced on `lxc/VMID`, stats report it from there, the CT config shows it. (ctr has no
/// `task update`: the CRI tests' UpdateContainerResources checks Update on this layout.)
fn pve_driver_limits_and_stats_use_proxmoxs_cgroup_level() -> Result<()> {
    root_or_skip()?;
    const MIB: u64 = 1024 * 1024;
    let env = Env::start("cgroup", 20, CGROUP_RANGE)?;
    let result = (|| -> Result<()> {
        let id = "pve-limits";
        let limit = (64 * MIB).to_string();
        let args = env.run_args(id, &["-d", "--memory-limit", &limit], &["sleep", "120"]);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        env.cd.ctr_ok(&refs)?;
        env.cd.wait_task_status(id, "RUNNING", RUN_TIMEOUT)?;
        let vmid = *env.cts().first().context("no CT")?;
        let lxc_conf = std::fs::read_to_string(format!("/var/lib/lxc/{vmid}/config"))?;
        ensure!(
            lxc_conf.contains(&format!("lxc.cgroup.dir.container = lxc/{vmid}\n"))
                && lxc_conf.contains("lxc.cgroup.dir.container.inner = ns\n"),
            "the test node writes Proxmox's cgroup keys:\n{lxc_conf}"
        );
        let pid = env.cd.task_pid(id)?.context("task pid")?;
        let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
        let inner = format!("/lxc/{vmid}/ns");
        let (v1, path) = match cgroups
            .lines()
            .find_map(|l| l.split_once(":memory:").map(|(_, p)| p.to_string()))
        {
            Some(p) => (true, p),
            None => (
                false,
                cgroups
                    .lines()
                    .find_map(|l| l.strip_prefix("0::").map(str::to_string))
                    .context("no cgroup")?,
            ),
        };
        ensure!(
            path == inner,
            "init's memory cgroup {path}, expected {inner}"
        );
        if env.node.backend.supervisor() == Supervisor::Systemd {
            // As on a node: the unit's main process is `lxc-start -F -n VMID`, which LXC moves
            // out of the unit's cgroup into `lxc.monitor/VMID` (update_lxc_config's
            // lxc.cgroup.dir.monitor), while the CT's init is in `lxc/VMID/ns` (above).
            let unit = pve_test_server::ct_unit(vmid);
            let st = pve_test_server::unit_state_blocking(vmid).map_err(anyhow::Error::msg)?;
            ensure!(st.active == "active" && st.main_pid > 0, "{unit}: {st:?}");
            let cmdline = std::fs::read_to_string(format!("/proc/{}/cmdline", st.main_pid))?
                .replace('\0', " ");
            ensure!(
                cmdline.trim_end() == format!("/usr/bin/lxc-start -F -n {vmid}"),
                "{unit}'s main process: {cmdline:?}"
            );
            let monitor = std::fs::read_to_string(format!("/proc/{}/cgroup", st.main_pid))?;
            ensure!(
                monitor.trim() == format!("0::/lxc.monitor/{vmid}"),
                "{unit}'s lxc-start is in {monitor:?}, expected /lxc.monitor/{vmid}"
            );
            println!(
                "{unit}: active, lxc-start pid {} in /lxc.monitor/{vmid} (unit cgroup {}), init in {inner}",
                st.main_pid, st.control_group
            );
        }
        let outer = if v1 {
            PathBuf::from(format!(
                "/sys/fs/cgroup/memory/lxc/{vmid}/memory.limit_in_bytes"
            ))
        } else {
            PathBuf::from(format!("/sys/fs/cgroup/lxc/{vmid}/memory.max"))
        };
        let enforced = || -> Result<u64> {
            Ok(std::fs::read_to_string(&outer)
                .with_context(|| outer.display().to_string())?
                .trim()
                .parse()?)
        };
        ensure!(
            enforced()? == 64 * MIB,
            "limit on lxc/{vmid}: {}",
            enforced()?
        );
        let ct_memory = || -> Result<String> {
            let conf = std::fs::read_to_string(
                env.node
                    .server
                    .context()
                    .config_dir
                    .join(format!("{vmid}.conf")),
            )?;
            Ok(conf
                .lines()
                .find_map(|l| l.strip_prefix("memory: "))
                .unwrap_or("")
                .to_string())
        };
        ensure!(ct_memory()? == "64", "CT config memory: {:?}", ct_memory()?);
        let metrics = env.cd.ctr_ok(&["task", "metrics", id])?.stdout_str();
        ensure!(
            metrics.contains(&(64 * MIB).to_string()),
            "ctr task metrics shows the limit of lxc/{vmid}:\n{metrics}"
        );

        env.cd.ctr_ok(&["task", "kill", "-s", "KILL", id])?;
        env.cd.wait_task_status(id, "STOPPED", RUN_TIMEOUT)?;
        env.cd.ctr_ok(&["task", "rm", id])?;
        env.cd.ctr_ok(&["container", "rm", id])?;
        env.no_leftovers("after the limits case")?;
        let limit_dir = outer.parent().context("cgroup dir")?;
        ensure!(!limit_dir.exists(), "{} left behind", limit_dir.display());
        Ok(())
    })();
    let finish = env.finish();
    result?;
    finish
}

skip_harness::main!(
    pve_driver_runc_parity_cases_and_lifecycle,
    pve_driver_faults_give_clear_errors_and_leave_nothing,
    pve_driver_lifecycle_benchmark,
    pve_driver_twenty_back_to_back_runs_stay_under_systemds_start_limit,
    pve_driver_limits_and_stats_use_proxmoxs_cgroup_level,
);
