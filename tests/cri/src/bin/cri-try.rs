//! One Kubernetes pod through containerd's CRI plugin, by hand, on the shim with a config of
//! your choosing: what the kubelet would do, step by step, printed as it goes. For trying the
//! `pve` driver without Proxmox, give it the config `pve-test-server --lxc-node DIR` writes
//! (docs/operator.md, "Trying it without Proxmox"); any shim config works.
//!
//! ```text
//! cri-try --shim-config FILE [--containerd 1.6|1.7|2.1] [--hold]
//! ```
//!
//! It starts the CRI tests' environment (a private containerd with its CRI plugin, the runtime
//! handler `proxmox-lxc` with `ConfigPath = FILE`, a CNI bridge, a local registry with a pause
//! and a busybox image; no network beyond this host), then: PullImage, RunPodSandbox,
//! CreateContainer + StartContainer of a busybox container that prints a line and sleeps, its
//! CRI log, ExecSync, ContainerStats, StopContainer, RemoveContainer, StopPodSandbox,
//! RemovePodSandbox, and tears everything down. With `--hold` it stops after the container
//! started and prints the CRI socket, so another CRI client (crictl: `crictl
//! --runtime-endpoint unix://SOCKET ps`) can look, until Enter is pressed.

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use cri::client::{container_config, ns, pod_config, sec};
use cri::env::{CriEnv, ShimOptions};
use cri::registry::Registry;
use e2e::ContainerdVersion;

struct Args {
    shim_config: PathBuf,
    version: String,
    hold: bool,
}

fn parse() -> Result<Args> {
    let mut shim_config = None;
    let mut version = "system".to_string();
    let mut hold = false;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--shim-config" => {
                shim_config = Some(PathBuf::from(
                    it.next().ok_or_else(|| anyhow!("--shim-config needs a file"))?,
                ))
            }
            "--containerd" => {
                version = it
                    .next()
                    .ok_or_else(|| anyhow!("--containerd needs a version"))?
            }
            "--hold" => hold = true,
            other => bail!(
                "unknown argument {other}; usage: cri-try --shim-config FILE [--containerd 1.6|1.7|2.1] [--hold]"
            ),
        }
    }
    let shim_config = shim_config.ok_or_else(|| {
        anyhow!("--shim-config FILE is required (e.g. the shim.toml of pve-test-server --lxc-node)")
    })?;
    // Absolute: containerd passes it to shims that run elsewhere.
    let shim_config = shim_config
        .canonicalize()
        .with_context(|| format!("--shim-config {}", shim_config.display()))?;
    Ok(Args {
        shim_config,
        version,
        hold,
    })
}

fn step(text: impl std::fmt::Display) {
    println!("cri-try: {text}");
}

/// The pod's lifecycle through CRI, as the kubelet drives it; removes what it made even when a
/// step in between fails.
fn pod_lifecycle(env: &CriEnv, hold: bool) -> Result<()> {
    let mut cri = env.cri()?;
    let image = env.images.busybox.clone();
    env.block_on(cri.pull(&image))?;
    step(format!("PullImage {image}: ok"));
    let log_dir = env.scratch("pod-logs");
    let pod = pod_config("cri-try", &log_dir, &env.cgroup_parent);
    let pod_id = env.block_on(cri.run_pod(&pod))?;
    step(format!("RunPodSandbox (handler proxmox-lxc): {pod_id}"));
    let result = (|| -> Result<()> {
        let mut ctr = container_config(
            "hello",
            &image,
            &[
                "sh",
                "-c",
                "echo hello from a pod; echo pid $$ on $(hostname); exec sleep 3600",
            ],
        );
        // As the kubelet sends it for a pod without shareProcessNamespace: the pod's network and
        // IPC, a PID namespace of the container's own.
        sec(&mut ctr).namespace_options = Some(cri::client::v1::NamespaceOption {
            network: ns::POD,
            pid: ns::CONTAINER,
            ipc: ns::POD,
            ..Default::default()
        });
        let id = env.block_on(cri.run_container(&pod_id, &ctr, &pod))?;
        step(format!("CreateContainer + StartContainer: {id}"));
        let result = (|| -> Result<()> {
            let log = log_dir.join("hello.log");
            let lines = wait_for_log_lines(&log, 2, Duration::from_secs(20))?;
            step(format!("container log {}:", log.display()));
            for l in &lines {
                println!("    {l}");
            }
            let (code, out, _) = env.block_on(cri.exec_sync(
                &id,
                &["sh", "-c", "id; cat /proc/1/cmdline | tr '\\0' ' '"],
                20,
            ))?;
            step(format!("ExecSync `id; cat /proc/1/cmdline`: exit {code}"));
            for l in out.lines() {
                println!("    {l}");
            }
            let stats = env.block_on(cri.stats(&id))?;
            let memory = stats
                .memory
                .and_then(|m| m.working_set_bytes)
                .map(|v| v.value)
                .unwrap_or(0);
            let cpu = stats
                .cpu
                .and_then(|c| c.usage_core_nano_seconds)
                .map(|v| v.value)
                .unwrap_or(0);
            step(format!(
                "ContainerStats: memory working set {memory} bytes, CPU {cpu} ns"
            ));
            if hold {
                step(format!(
                    "holding: CRI socket {} (e.g. crictl --runtime-endpoint unix://{} ps); press Enter to tear down",
                    env.address.display(),
                    env.address.display()
                ));
                let _ = std::io::stdin().lock().lines().next();
            }
            Ok(())
        })();
        env.block_on(cri.stop_container(&id, 5))?;
        let (state, exit) = env.block_on(cri.container_state(&id))?;
        step(format!(
            "StopContainer: state {state} (2 = exited), exit code {exit}"
        ));
        env.block_on(cri.remove_container(&id))?;
        step("RemoveContainer: ok");
        result
    })();
    env.block_on(cri.stop_pod(&pod_id))?;
    env.block_on(cri.remove_pod(&pod_id))?;
    step("StopPodSandbox + RemovePodSandbox: ok");
    result
}

/// The CRI log's message parts (`TIME STREAM TAG MESSAGE`), once `want` lines are there.
fn wait_for_log_lines(path: &Path, want: usize, limit: Duration) -> Result<Vec<String>> {
    let deadline = Instant::now() + limit;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text
            .lines()
            .map(|l| l.splitn(4, ' ').nth(3).unwrap_or(l).to_string())
            .collect();
        if lines.len() >= want {
            return Ok(lines);
        }
        if Instant::now() >= deadline {
            bail!(
                "{} has {} line(s) after {limit:?}, expected {want}: {text:?}",
                path.display(),
                lines.len()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn run() -> Result<()> {
    let args = parse()?;
    let version = ContainerdVersion::named(&args.version).map_err(|e| anyhow!(e))?;
    // containerd starts the shim built next to this binary (the CRI tests' rule).
    let shim_dir = cri::env::shim_dir()?;
    std::env::set_var("E2E_SHIM_DIR", &shim_dir);
    cri::env::reap_stale();
    let registry_dir = cri::env::work_base().join(format!("try-registry-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&registry_dir);
    std::fs::create_dir_all(&registry_dir)?;
    let registry = Registry::start(&registry_dir)?;
    let outcome = (|| -> Result<()> {
        let images = registry.push_test_images()?;
        let config = args.shim_config.display().to_string();
        let env = CriEnv::start(
            version.clone(),
            &format!("try{}", version.name),
            &images,
            &registry.host,
            |work| Ok((ShimOptions::ConfigPath(config), work.join("lxc"))),
        )?;
        step(format!(
            "containerd {} with its CRI plugin at {}, shim {} with {}",
            version.name,
            env.address.display(),
            shim_dir.display(),
            args.shim_config.display()
        ));
        let result = pod_lifecycle(&env, args.hold);
        if result.is_err() {
            step(format!("containerd's log: {}", env.log_path().display()));
        }
        let leftovers = env.teardown();
        for l in &leftovers {
            eprintln!("cri-try: cleaned up by force: {l}");
        }
        result?;
        if leftovers.is_empty() {
            step("torn down, nothing left");
            Ok(())
        } else {
            bail!("{} thing(s) had to be cleaned up by force", leftovers.len())
        }
    })();
    registry.stop();
    let _ = std::fs::remove_dir_all(&registry_dir);
    outcome
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cri-try: {e:#}");
            ExitCode::FAILURE
        }
    }
}
