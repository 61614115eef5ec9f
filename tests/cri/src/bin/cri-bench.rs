//! Benchmark (not a test): host memory per Kubernetes pod, this shim against runc's shims,
//! side by side in one run on one private containerd with its CRI plugin (the environment of
//! the CRI tests: CNI bridge, local registry, pause image).
//!
//! For each layout `PxC` (P pods, each a sandbox plus C containers running `sleep`) and each
//! runtime handler, the pods are made through CRI as the kubelet makes them, and the RSS and
//! PSS (`/proc/PID/smaps_rollup`) of every host process that exists because of them are summed
//! and divided by P: the shims (one per pod under every runtime: containerd groups a pod's
//! containers in its sandbox's shim) and, under this shim, LXC's `lxc-start` per container. The
//! pause process and the workloads run in the containers' pid namespaces under every runtime
//! and are not counted; nor is `lxc-monitord` (one per lxcpath, shared by the whole host).
//! Then the pods are removed and the next runtime runs. PSS shows how shared pages (the shim
//! binary, libc) divide as pods are added, which is what a node with many pods pays.
//!
//! Runtimes: Go runc shim (handler `runc`), this shim (`proxmox-lxc`), on containerd 2.x the
//! Rust runc shim (`runc-rs`, when `containerd-shim-runc-rs-v2` is in the shim directory) and a
//! second build of this shim (`proxmox-lxc-baseline`, when
//! `containerd-shim-proxmox-lxc-baseline-v2` is there); scripts/bench.sh sets the directory up.
//!
//! ```text
//! cri-bench [--layouts 1x1,1x3,10x1,50x1] [--shim-dir DIR] [--containerd 1.6|1.7|2.1]
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use cri::client::{container_config, pod_config, Cri};
use cri::env::{CriEnv, ExtraRuntime, ShimOptions, HANDLER};
use cri::registry::Registry;
use e2e::{host, ContainerdVersion};

const RUNC_RS_BINARY: &str = "containerd-shim-runc-rs-v2";
const BASELINE_BINARY: &str = "containerd-shim-proxmox-lxc-baseline-v2";

struct Args {
    layouts: Vec<(usize, usize)>,
    shim_dir: PathBuf,
    version: String,
}

fn parse_layouts(text: &str) -> Result<Vec<(usize, usize)>> {
    text.split(',')
        .map(|l| {
            let (pods, containers) = l
                .split_once('x')
                .ok_or_else(|| anyhow!("layout {l:?}: expected PODSxCONTAINERS, e.g. 10x1"))?;
            let pods: usize = pods.parse().with_context(|| format!("layout {l:?}"))?;
            let containers: usize = containers
                .parse()
                .with_context(|| format!("layout {l:?}"))?;
            if pods == 0 {
                bail!("layout {l:?}: at least one pod");
            }
            Ok((pods, containers))
        })
        .collect()
}

fn parse() -> Result<Args> {
    let mut args = Args {
        layouts: parse_layouts("1x1,1x3,10x1,50x1")?,
        shim_dir: e2e::paths::workspace_root().join("target/release"),
        version: "system".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| anyhow!("{flag} needs a value"));
        match flag.as_str() {
            "--layouts" => args.layouts = parse_layouts(&value()?)?,
            "--shim-dir" => args.shim_dir = PathBuf::from(value()?),
            "--containerd" => args.version = value()?,
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(args)
}

/// One runtime handler under measurement.
struct Runtime {
    handler: &'static str,
    label: &'static str,
}

/// The handlers this run measures, and the config entries the extra ones need.
fn runtimes(args: &Args, version: &ContainerdVersion) -> (Vec<Runtime>, Vec<ExtraRuntime>) {
    let mut measured = vec![
        Runtime {
            handler: "runc",
            label: "Go runc shim",
        },
        Runtime {
            handler: HANDLER,
            label: "this shim",
        },
    ];
    let mut extra = Vec::new();
    if args.shim_dir.join(BASELINE_BINARY).is_file() {
        measured.push(Runtime {
            handler: "proxmox-lxc-baseline",
            label: "this shim, baseline build",
        });
        extra.push(ExtraRuntime {
            handler: "proxmox-lxc-baseline".into(),
            runtime_type: "io.containerd.proxmox-lxc-baseline.v2".into(),
            shim_options: true,
        });
    }
    // containerd-runc-shim 0.2 speaks task API v3 only, which containerd 1.x does not.
    if version.config_version >= 3 && args.shim_dir.join(RUNC_RS_BINARY).is_file() {
        measured.push(Runtime {
            handler: "runc-rs",
            label: "Rust runc shim",
        });
        extra.push(ExtraRuntime {
            handler: "runc-rs".into(),
            runtime_type: "io.containerd.runc-rs.v2".into(),
            shim_options: false,
        });
    }
    (measured, extra)
}

/// Makes `pods` pods of `containers` sleeping containers each with `handler`; returns their ids.
async fn make_pods(
    cri: &mut Cri,
    env: &CriEnv,
    handler: &str,
    pods: usize,
    containers: usize,
) -> Result<Vec<String>> {
    let mut ids = Vec::new();
    for p in 0..pods {
        let name = format!("bench-{}-{p}", handler.replace('-', ""));
        let config = pod_config(&name, &env.scratch(&name), &env.cgroup_parent);
        let pod = cri
            .run_pod_with(&config, handler)
            .await
            .with_context(|| format!("pod {p} with {handler}"))?;
        ids.push(pod.clone());
        for c in 0..containers {
            let container = container_config(
                &format!("sleeper{c}"),
                &env.images.busybox,
                &["sleep", "3600"],
            );
            cri.run_container(&pod, &container, &config)
                .await
                .with_context(|| format!("container {c} of pod {p} with {handler}"))?;
        }
    }
    Ok(ids)
}

/// RSS and PSS summed over the host processes that exist because of the pods: those whose
/// command line names the environment's work dir (shims by their `-address`, `lxc-start` by
/// its lxcpath), in the host's pid namespace, except containerd itself.
fn pod_memory(env: &CriEnv, containerd_pid: Option<i32>) -> Result<(host::Memory, Vec<String>)> {
    let host_ns = host::pid_ns(std::process::id() as i32).context("own pid namespace")?;
    let mut tally = host::MemoryTally::default();
    for p in host::processes_under(&env.work) {
        if Some(p.pid) == containerd_pid || p.pid as u32 == std::process::id() {
            continue;
        }
        if host::pid_ns(p.pid).as_deref() != Some(host_ns.as_str()) {
            continue;
        }
        if p.cmdline.contains("lxc-monitord") {
            continue;
        }
        tally.add(&p);
    }
    Ok((tally.total, tally.names))
}

/// Removes the pods and waits until their shims are gone.
async fn remove_pods(cri: &mut Cri, env: &CriEnv, pods: &[String]) {
    for id in pods {
        let _ = cri.stop_pod(id).await;
        let _ = cri.remove_pod(id).await;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let shims_left = || {
        host::processes_under(&env.work)
            .iter()
            .any(|p| p.cmdline.contains("containerd-shim"))
    };
    while Instant::now() < deadline && shims_left() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

struct Cell {
    per_pod: host::Memory,
    processes: Vec<String>,
}

fn measure(
    env: &CriEnv,
    containerd_pid: Option<i32>,
    handler: &str,
    pods: usize,
    containers: usize,
) -> Result<Cell, String> {
    env.block_on(async {
        let mut cri = Cri::connect(&env.address)
            .await
            .map_err(|e| format!("{e:#}"))?;
        let made = make_pods(&mut cri, env, handler, pods, containers).await;
        let result = match &made {
            Ok(_) => {
                // Let the shims settle (lazy allocations, first stats).
                tokio::time::sleep(Duration::from_secs(2)).await;
                pod_memory(env, containerd_pid)
                    .and_then(|(total, processes)| {
                        if total.rss_kib == 0 {
                            bail!("found no host process for the pods");
                        }
                        Ok(Cell {
                            per_pod: host::Memory {
                                rss_kib: total.rss_kib / pods as u64,
                                pss_kib: total.pss_kib / pods as u64,
                            },
                            processes,
                        })
                    })
                    .map_err(|e| format!("{e:#}"))
            }
            Err(e) => Err(format!("{e:#}")),
        };
        let ids = cri.list_pods().await.unwrap_or_default();
        remove_pods(&mut cri, env, &ids).await;
        result
    })
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn run() -> Result<()> {
    let args = parse()?;
    if !host::is_root() {
        bail!("run as root");
    }
    let version = ContainerdVersion::named(&args.version).map_err(|e| anyhow!(e))?;
    if e2e::paths::shim_binary(&args.shim_dir).is_none() {
        bail!(
            "{} not found in {} (cargo build --release -p containerd-shim-proxmox-lxc)",
            e2e::SHIM_BINARY,
            args.shim_dir.display()
        );
    }
    // The environment starts containerd with this directory first on its PATH.
    std::env::set_var("E2E_SHIM_DIR", &args.shim_dir);
    cri::env::reap_stale();
    let (measured, extra) = runtimes(&args, &version);
    let registry_dir = cri::env::work_base().join(format!("bench-registry-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&registry_dir);
    std::fs::create_dir_all(&registry_dir)?;
    let registry = Registry::start(&registry_dir)?;
    let outcome = (|| -> Result<String> {
        let images = registry.push_test_images()?;
        let label = format!("bench{}", version.name);
        let env = CriEnv::start_with_runtimes(
            version.clone(),
            &label,
            &images,
            &registry.host,
            |work| {
                let lxcpath = work.join("lxc");
                let file = work.join("shim.toml");
                std::fs::write(
                    &file,
                    format!("[lxc]\nlxcpath = \"{}\"\n", lxcpath.display()),
                )?;
                Ok((ShimOptions::ConfigPath(file.display().to_string()), lxcpath))
            },
            &extra,
        )?;
        let report = (|| -> Result<String> {
            let mut cri = env.cri()?;
            env.block_on(cri.pull(&images.busybox))?;
            let containerd_pid = host::processes_matching(&[&env.config_path().to_string_lossy()])
                .into_iter()
                .map(|p| p.pid)
                .find(|pid| *pid as u32 != std::process::id());
            let mut rows = Vec::new();
            for &(pods, containers) in &args.layouts {
                let mut cells = Vec::new();
                for rt in &measured {
                    eprintln!(
                        "cri-bench: {pods} pod(s) x (sandbox + {containers}) with {}",
                        rt.handler
                    );
                    cells.push(measure(&env, containerd_pid, rt.handler, pods, containers));
                }
                rows.push((pods, containers, cells));
            }
            Ok(table(&version, &measured, &rows))
        })();
        for left in env.teardown() {
            eprintln!("cri-bench: teardown: {left}");
        }
        report
    })();
    registry.stop();
    let _ = std::fs::remove_dir_all(&registry_dir);
    let report = outcome?;
    println!("{report}");
    Ok(())
}

type Row = (usize, usize, Vec<Result<Cell, String>>);

fn table(version: &ContainerdVersion, measured: &[Runtime], rows: &[Row]) -> String {
    let mut out = format!(
        "containerd {} with its CRI plugin: host memory per pod (RSS / PSS of the pod's shim and, under this shim, its `lxc-start` processes, summed over the pods and divided by their number)\n\n| pods x (sandbox + containers) |",
        version.name
    );
    for rt in measured {
        out.push_str(&format!(" {} (`{}`) |", rt.label, rt.handler));
    }
    out.push_str("\n|---|");
    out.push_str(&"---|".repeat(measured.len()));
    for (pods, containers, cells) in rows {
        for (what, pick) in [
            (
                "RSS",
                (|m: &host::Memory| m.rss_kib) as fn(&host::Memory) -> u64,
            ),
            ("PSS", |m: &host::Memory| m.pss_kib),
        ] {
            out.push_str(&format!(
                "\n| {pods} x (1 + {containers}), {what} per pod |"
            ));
            let first = cells
                .first()
                .and_then(|c| c.as_ref().ok())
                .map(|c| pick(&c.per_pod));
            for (i, cell) in cells.iter().enumerate() {
                match cell {
                    Ok(c) => {
                        let own = pick(&c.per_pod);
                        match first {
                            Some(base) if i > 0 && base > 0 => out.push_str(&format!(
                                " {} ({:.2}x) |",
                                mib(own),
                                own as f64 / base as f64
                            )),
                            _ => out.push_str(&format!(" {} |", mib(own))),
                        }
                    }
                    Err(e) => out.push_str(&format!(" failed: {} |", e.replace('|', "/"))),
                }
            }
        }
    }
    out.push_str("\n| processes counted |");
    if let Some((_, _, cells)) = rows.first() {
        for cell in cells {
            let names = cell
                .as_ref()
                .map(|c| c.processes.join(", "))
                .unwrap_or_default();
            out.push_str(&format!(" {names} |"));
        }
    }
    out.push('\n');
    out
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cri-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
