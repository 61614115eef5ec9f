//! A private containerd with its CRI plugin set up the way a Kubernetes node has it: the
//! `proxmox-lxc` runtime handler, CNI (Debian's bridge + host-local + loopback) on a bridge and
//! subnet of its own, registry hosts for the local registry, `restrict_oom_score_adj = true`
//! (root lacks CAP_SYS_RESOURCE on these machines), and the pause image from that registry.
//! AppArmor is left on (`disable_apparmor = false`, containerd's default): on a node with
//! AppArmor (Proxmox VE, the node twin) the CRI plugin gives every non-privileged container its
//! default profile `cri-containerd.apparmor.d`, as on a real node; elsewhere it does nothing.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use e2e::config::CriPlugin;
use e2e::ContainerdVersion;

use crate::client::Cri;
use crate::registry::Images;

pub use e2e::config::{ExtraRuntime, ShimOptions, CNI_BIN_DIR, HANDLER};

/// The pod network of one environment.
#[derive(Clone, Debug)]
pub struct PodNetwork {
    pub bridge: String,
    /// `10.X.Y.0/24`
    pub subnet: String,
    /// Prefix `10.X.Y.` for checks.
    pub prefix: String,
}

pub struct CriEnv {
    pub version: ContainerdVersion,
    pub label: String,
    pub work: PathBuf,
    pub address: PathBuf,
    pub net: PodNetwork,
    pub images: Images,
    /// The shim's lxcpath as configured through the runtime options (before the namespace).
    pub shim_lxcpath: PathBuf,
    /// The cgroup parent of every pod (kubelet's `/kubepods/...` in a real node).
    pub cgroup_parent: String,
    pub rt: tokio::runtime::Runtime,
    containerd: e2e::Containerd,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// The directory holding the shim binary: the one the workspace build made next to this test
/// (`E2E_SHIM_DIR` overrides), or, when `cargo test -p cri` ran without a workspace build, one
/// built on the spot into `target/cri-shim` (a target dir of its own, since cargo holds the
/// lock of the main one while tests run).
pub fn shim_dir() -> Result<PathBuf> {
    static DIR: std::sync::OnceLock<std::result::Result<PathBuf, String>> =
        std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = e2e::paths::shim_dir();
        if e2e::paths::shim_binary(&dir).is_some() {
            return Ok(dir);
        }
        let target = e2e::paths::workspace_root().join("target").join("cri-shim");
        eprintln!(
            "cri: {} not found in {}; building it into {}",
            e2e::SHIM_BINARY,
            dir.display(),
            target.display()
        );
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "-p",
                "containerd-shim-proxmox-lxc",
                "--bin",
                e2e::SHIM_BINARY,
            ])
            .env("CARGO_TARGET_DIR", &target)
            .current_dir(e2e::paths::workspace_root())
            .status()
            .map_err(|e| format!("run cargo: {e}"))?;
        if !status.success() {
            return Err(format!("building the shim failed ({status})"));
        }
        Ok(target.join("debug"))
    })
    .clone()
    .map_err(|e| anyhow::anyhow!(e))
}

/// Where the work dirs live: short (unix socket paths), not tmpfs (overlay snapshots).
pub fn work_base() -> PathBuf {
    PathBuf::from("/var/tmp/cri-e2e")
}

fn network_for(seq: u32) -> PodNetwork {
    let pid = std::process::id();
    // Private 10/8 range: second octet per environment of this run, third from the pid, so
    // concurrent runs (and the environments of one run) do not collide.
    let second = 200 + (seq % 50);
    let third = pid % 250;
    PodNetwork {
        bridge: format!("crie{}x{}", pid % 100_000, seq),
        subnet: format!("10.{second}.{third}.0/24"),
        prefix: format!("10.{second}.{third}."),
    }
}

impl CriEnv {
    /// Starts containerd `version` with the CRI plugin configured; `shim_options` builds the
    /// runtime entry's options from the work dir.
    pub fn start(
        version: ContainerdVersion,
        label: &str,
        images: &Images,
        registry_host: &str,
        shim_options: impl FnOnce(&Path) -> Result<(ShimOptions, PathBuf)>,
    ) -> Result<CriEnv> {
        Self::start_with_runtimes(version, label, images, registry_host, shim_options, &[])
    }

    /// As `start`, with further runtime handlers beside `runc` and `proxmox-lxc`.
    pub fn start_with_runtimes(
        version: ContainerdVersion,
        label: &str,
        images: &Images,
        registry_host: &str,
        shim_options: impl FnOnce(&Path) -> Result<(ShimOptions, PathBuf)>,
        extra_runtimes: &[ExtraRuntime],
    ) -> Result<CriEnv> {
        let seq = SEQ.fetch_add(1, Ordering::SeqCst);
        let work = work_base().join(format!("{label}-{}", std::process::id()));
        if work.exists() {
            e2e::host::unmount_all_under(&work);
            let _ = std::fs::remove_dir_all(&work);
        }
        std::fs::create_dir_all(&work)?;
        let (options, shim_lxcpath) = shim_options(&work)?;
        let net = network_for(seq);
        write_cni(&work, &net)?;
        write_registry_hosts(&work, registry_host)?;
        let cri = CriPlugin {
            apparmor: true,
            pause_image: Some(images.pause.clone()),
            shim_options: Some(options),
            extra_runtimes: extra_runtimes.to_vec(),
            one_cni_network: true,
        };
        let containerd =
            e2e::Containerd::start_with(version.clone(), &work, &shim_dir()?, None, &cri)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let env = CriEnv {
            version,
            label: label.to_string(),
            address: containerd.address.clone(),
            work: containerd.work.clone(),
            net,
            images: images.clone(),
            shim_lxcpath,
            cgroup_parent: format!("/cri-e2e-{}-{seq}", std::process::id()),
            rt,
            containerd,
        };
        if let Err(e) = env.wait_for_cri() {
            let _ = env.containerd.stop();
            return Err(e);
        }
        Ok(env)
    }

    pub fn config_path(&self) -> PathBuf {
        self.work.join("config.toml")
    }

    pub fn log_path(&self) -> PathBuf {
        self.work.join("containerd.log")
    }

    /// Pod log directories and host paths for mounts live here.
    pub fn scratch(&self, name: &str) -> PathBuf {
        let p = self.work.join("scratch").join(name);
        let _ = std::fs::create_dir_all(&p);
        p
    }

    /// Waits until the CRI plugin answers Status (containerd answers ctr before it does).
    fn wait_for_cri(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = self.rt.block_on(async {
                match Cri::connect(&self.address).await {
                    Ok(mut c) => c.status().await.is_ok(),
                    Err(_) => false,
                }
            });
            if ok {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "containerd {} CRI did not answer within 30 s:\n{}",
                    self.version.name,
                    e2e::containerd::tail(&self.log_path(), 30)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A CRI client (a new connection; cheap).
    pub fn cri(&self) -> Result<Cri> {
        self.rt.block_on(Cri::connect(&self.address))
    }

    /// Runs a future on this environment's runtime.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// Shim processes serving this containerd.
    pub fn shim_processes(&self) -> Vec<e2e::host::Proc> {
        let address = self.address.to_string_lossy().into_owned();
        e2e::host::processes_matching(&[&address, e2e::SHIM_BINARY])
    }

    /// The namespaced lxcpath where the shim keeps LXC containers of CRI pods.
    pub fn lxc_dir(&self) -> PathBuf {
        self.shim_lxcpath.join("k8s.io")
    }

    /// Removes every pod, stops containerd and everything it left, deletes the bridge, the
    /// cgroup parent and the work dir. Returns each thing that had to be cleaned up by force.
    pub fn teardown(&self) -> Vec<String> {
        let mut leftovers = Vec::new();
        if let Ok(mut cri) = self.cri() {
            let pods = self.rt.block_on(cri.list_pods()).unwrap_or_default();
            for id in pods {
                leftovers.push(format!("pod {id} still existed at teardown"));
                let _ = self.rt.block_on(cri.remove_pod(&id));
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.shim_processes().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        for p in self.shim_processes() {
            leftovers.push(format!("shim {} still running: {}", p.pid, p.cmdline));
        }
        let _ = self.containerd.stop();
        for p in e2e::host::processes_under(&self.work) {
            if p.pid as u32 == std::process::id() {
                continue;
            }
            // LXC's monitor daemon of the lxcpath quits by itself ~30 s after its last client;
            // it is LXC's, not a workload's, so it is stopped here without counting.
            if !p.cmdline.contains("lxc-monitord") {
                leftovers.push(format!("process {} left: {}", p.pid, p.cmdline));
            }
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(p.pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        std::thread::sleep(Duration::from_millis(100));
        if let Ok(entries) = std::fs::read_dir(self.lxc_dir()) {
            for e in entries.flatten() {
                leftovers.push(format!("LXC container left: {}", e.path().display()));
            }
        }
        for m in e2e::host::unmount_all_under(&self.work) {
            leftovers.push(format!("mount left: {}", m.display()));
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.net.bridge])
            .stderr(Stdio::null())
            .status();
        remove_cgroup_tree(&self.cgroup_parent);
        let logs = e2e::paths::log_dir();
        if std::fs::create_dir_all(&logs).is_ok() {
            let _ = std::fs::copy(
                self.log_path(),
                logs.join(format!("cri-{}-containerd.log", self.label)),
            );
        }
        if let Err(e) = std::fs::remove_dir_all(&self.work) {
            leftovers.push(format!("could not remove {}: {e}", self.work.display()));
        }
        leftovers
    }
}

/// Cleans up after earlier runs that died (killed, timed out): their work dirs (containerd,
/// shims, registry, mounts), bridges and cgroup parents, found by the pid in their names.
pub fn reap_stale() {
    e2e::containerd::reap_stale_work_dirs(&work_base());
    let dead = |pid: &str| {
        pid.parse::<i32>()
            .map(|p| !e2e::host::pid_alive(p))
            .unwrap_or(false)
    };
    // Bridges are named crie<pid % 100000>x<seq>: only remove those whose pid is gone.
    if let Ok(out) = Command::new("ip")
        .args(["-o", "link", "show", "type", "bridge"])
        .output()
    {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Some(name) = line.split(": ").nth(1).map(|n| n.trim()) else {
                continue;
            };
            let Some(rest) = name.strip_prefix("crie") else {
                continue;
            };
            if let Some((pid, _)) = rest.split_once('x') {
                if dead(pid) {
                    let _ = Command::new("ip").args(["link", "del", name]).status();
                }
            }
        }
    }
    // cgroup parents /cri-e2e-<pid>-<seq> in any hierarchy.
    if let Ok(roots) = std::fs::read_dir("/sys/fs/cgroup") {
        let mut names = std::collections::BTreeSet::new();
        for root in roots.flatten() {
            if let Ok(entries) = std::fs::read_dir(root.path()) {
                for e in entries.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if let Some(rest) = name.strip_prefix("cri-e2e-") {
                        if rest.split('-').next().map(dead).unwrap_or(false) {
                            names.insert(name);
                        }
                    }
                }
            }
        }
        for name in names {
            remove_cgroup_tree(&name);
        }
    }
}

/// Removes a cgroup directory (and empty children) in every v1 hierarchy and the v2 tree.
pub fn remove_cgroup_tree(rel: &str) {
    let rel = rel.trim_start_matches('/');
    let Ok(roots) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    let mut candidates = vec![PathBuf::from("/sys/fs/cgroup").join(rel)];
    for r in roots.flatten() {
        candidates.push(r.path().join(rel));
    }
    for c in candidates {
        remove_dir_tree_bottom_up(&c);
    }
}

fn remove_dir_tree_bottom_up(dir: &Path) {
    if !dir.is_dir() {
        return;
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_dir_tree_bottom_up(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// The pod network: Debian's bridge + host-local IPAM on this environment's bridge and subnet.
fn write_cni(work: &Path, net: &PodNetwork) -> Result<()> {
    let dir = work.join("cni/net.d");
    std::fs::create_dir_all(&dir)?;
    let conf = serde_json::json!({
        "cniVersion": "0.4.0",
        "name": format!("cri-e2e-{}", net.bridge),
        "plugins": [{
            "type": "bridge",
            "bridge": net.bridge,
            "isGateway": true,
            "ipMasq": false,
            "hairpinMode": true,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": net.subnet}]],
                "dataDir": work.join("cni/ipam"),
            },
        }],
    });
    std::fs::write(
        dir.join("10-cri-e2e.conflist"),
        serde_json::to_vec_pretty(&conf)?,
    )?;
    Ok(())
}

/// The local registry over plain HTTP (`WORK/certs.d`, the CRI plugin's registry config_path).
fn write_registry_hosts(work: &Path, registry_host: &str) -> Result<()> {
    let dir = work.join("certs.d").join(registry_host);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("hosts.toml"),
        format!(
            "server = \"http://{registry_host}\"\n\n[host.\"http://{registry_host}\"]\n  capabilities = [\"pull\", \"resolve\", \"push\"]\n"
        ),
    )?;
    Ok(())
}
