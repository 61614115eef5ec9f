//! A private containerd with its CRI plugin set up the way a Kubernetes node has it: the
//! `proxmox-lxc` runtime handler, CNI (Debian's bridge + host-local + loopback) on a bridge and
//! subnet of its own, registry hosts for the local registry, `restrict_oom_score_adj = true`
//! (root lacks CAP_SYS_RESOURCE on these machines), and the pause image from that registry.
//! AppArmor is left on (`disable_apparmor = false`, containerd's default): on a node with
//! AppArmor (Proxmox VE, the node twin) the CRI plugin gives every non-privileged container its
//! default profile `cri-containerd.apparmor.d`, as on a real node; elsewhere it does nothing.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use e2e::ContainerdVersion;

use crate::client::Cri;
use crate::registry::Images;

/// The runtime handler the tests (and examples/) use; a RuntimeClass names it.
pub const HANDLER: &str = "proxmox-lxc";
/// CNI binaries from Debian's containernetworking-plugins.
pub const CNI_BIN_DIR: &str = "/usr/lib/cni";

/// How the runtime entry passes options to the shim.
#[derive(Clone, Debug)]
pub enum ShimOptions {
    /// `ConfigPath = FILE` (every containerd).
    ConfigPath(String),
    /// Inline TOML keys in the `options` table (containerd 1.7+ sends them as `config_body`).
    /// The text is the shim config itself, nested under the options table.
    Inline(String),
}

/// A further runtime handler in the CRI config (the benchmarks' other shims): `handler` is
/// what RunPodSandbox names, `runtime_type` what containerd resolves to a shim binary.
#[derive(Clone, Debug)]
pub struct ExtraRuntime {
    pub handler: String,
    pub runtime_type: String,
    /// Whether it takes this shim's options (a second build of this shim does).
    pub shim_options: bool,
}

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
    child: Mutex<Option<Child>>,
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
        let cgroup_parent = format!("/cri-e2e-{}-{seq}", std::process::id());
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let env = CriEnv {
            version,
            label: label.to_string(),
            address: work.join("containerd.sock"),
            work,
            net,
            images: images.clone(),
            shim_lxcpath,
            cgroup_parent,
            rt,
            child: Mutex::new(None),
        };
        env.write_cni()?;
        env.write_registry_hosts(registry_host)?;
        let mut config = env.render_config(&options);
        config.push_str(&render_extra_runtimes(
            env.version.config_version,
            &options,
            extra_runtimes,
        ));
        std::fs::write(env.config_path(), config)?;
        env.spawn()?;
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

    fn write_cni(&self) -> Result<()> {
        let dir = self.work.join("cni/net.d");
        std::fs::create_dir_all(&dir)?;
        let conf = serde_json::json!({
            "cniVersion": "0.4.0",
            "name": format!("cri-e2e-{}", self.net.bridge),
            "plugins": [{
                "type": "bridge",
                "bridge": self.net.bridge,
                "isGateway": true,
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": self.net.subnet}]],
                    "dataDir": self.work.join("cni/ipam"),
                },
            }],
        });
        std::fs::write(
            dir.join("10-cri-e2e.conflist"),
            serde_json::to_vec_pretty(&conf)?,
        )?;
        Ok(())
    }

    fn write_registry_hosts(&self, registry_host: &str) -> Result<()> {
        let dir = self.work.join("certs.d").join(registry_host);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(
            dir.join("hosts.toml"),
            format!(
                "server = \"http://{registry_host}\"\n\n[host.\"http://{registry_host}\"]\n  capabilities = [\"pull\", \"resolve\", \"push\"]\n"
            ),
        )?;
        Ok(())
    }

    fn render_config(&self, options: &ShimOptions) -> String {
        render_config(
            &self.work,
            self.version.config_version,
            &self.version.name,
            &self.images.pause,
            options,
        )
    }

    fn spawn(&self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let shim_dir = shim_dir()?;
        let mut dirs = vec![shim_dir.to_string_lossy().into_owned()];
        if self.version.private_bin_dir {
            dirs.push(self.version.bin_dir.to_string_lossy().into_owned());
        }
        dirs.push(std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into()));
        let mut cmd = Command::new(self.version.containerd());
        cmd.arg("--config")
            .arg(self.config_path())
            .env("PATH", dirs.join(":"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // SAFETY: setsid is async-signal-safe; its own session keeps a ^C of the test run from
        // reaching containerd before the teardown ran.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("start {}", self.version.containerd().display()))?;
        *self.child.lock().unwrap_or_else(|e| e.into_inner()) = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self
                .child
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!(
                    "containerd {} exited ({status}) at start:\n{}",
                    self.version.name,
                    e2e::containerd::tail(&self.log_path(), 30)
                );
            }
            if self.address.exists() {
                let ok = self.rt.block_on(async {
                    match Cri::connect(&self.address).await {
                        Ok(mut c) => c.status().await.is_ok(),
                        Err(_) => false,
                    }
                });
                if ok {
                    return Ok(());
                }
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
        if let Some(mut c) = self.child.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(10);
            while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
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

/// The CRI plugin's table of runtimes for a config version.
fn runtimes_prefix(config_version: u32) -> &'static str {
    if config_version >= 3 {
        "plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes"
    } else {
        "plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes"
    }
}

/// The `options` table of runtime handler `handler`: the shim's options as `options` says.
fn options_table(runtimes_prefix: &str, handler: &str, options: &ShimOptions) -> String {
    match options {
        ShimOptions::ConfigPath(path) => {
            format!("[{runtimes_prefix}.{handler}.options]\n  ConfigPath = \"{path}\"\n")
        }
        ShimOptions::Inline(body) => {
            // Nested shim tables ([lxc]) become [...options.lxc].
            let mut out = format!("[{runtimes_prefix}.{handler}.options]\n");
            for line in body.lines() {
                let t = line.trim();
                if let Some(inner) = t.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
                    out.push_str(&format!("[{runtimes_prefix}.{handler}.options.{inner}]\n"));
                } else if !t.is_empty() {
                    out.push_str(&format!("  {t}\n"));
                }
            }
            out
        }
    }
}

/// Runtime entries for `extra` (appended to the config: TOML tables may come in any order).
fn render_extra_runtimes(
    config_version: u32,
    options: &ShimOptions,
    extra: &[ExtraRuntime],
) -> String {
    let prefix = runtimes_prefix(config_version);
    let mut out = String::new();
    for rt in extra {
        out.push_str(&format!(
            "\n[{prefix}.{}]\n  runtime_type = \"{}\"\n",
            rt.handler, rt.runtime_type
        ));
        if rt.shim_options {
            out.push('\n');
            out.push_str(&options_table(prefix, &rt.handler, options));
        }
    }
    out
}

/// The containerd config this crate runs (also the model for examples/): version 2 for 1.6/1.7,
/// version 3 for 2.x.
pub fn render_config(
    work: &Path,
    config_version: u32,
    version_name: &str,
    pause_image: &str,
    options: &ShimOptions,
) -> String {
    let w = work.display();
    let common = format!(
        r#"root = "{w}/root"
state = "{w}/state"
oom_score = 0

[grpc]
  address = "{w}/containerd.sock"

[ttrpc]
  address = "{w}/containerd.sock.ttrpc"

[debug]
  address = "{w}/debug.sock"
  level = "debug"

[metrics]
  address = ""
"#
    );
    let plugin_runtime = if config_version >= 3 {
        "io.containerd.cri.v1.runtime"
    } else {
        "io.containerd.grpc.v1.cri"
    };
    let runtimes_prefix = runtimes_prefix(config_version);
    let options_table = options_table(runtimes_prefix, HANDLER, options);
    let runtimes = format!(
        r#"[{runtimes_prefix}.runc]
  runtime_type = "io.containerd.runc.v2"

[{runtimes_prefix}.{HANDLER}]
  runtime_type = "io.containerd.proxmox-lxc.v2"

{options_table}"#
    );
    if config_version >= 3 {
        format!(
            r#"version = 3
{common}
[plugins."io.containerd.internal.v1.opt"]
  path = "{w}/opt"

[plugins."io.containerd.nri.v1.nri"]
  disable = true

[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"

[plugins."io.containerd.cri.v1.images".pinned_images]
  sandbox = "{pause_image}"

[plugins."io.containerd.cri.v1.images".registry]
  config_path = "{w}/certs.d"

[plugins."{plugin_runtime}"]
  restrict_oom_score_adj = true
  disable_apparmor = false

[plugins."{plugin_runtime}".containerd]
  default_runtime_name = "runc"

{runtimes}
[plugins."{plugin_runtime}".cni]
  bin_dirs = ["{CNI_BIN_DIR}"]
  conf_dir = "{w}/cni/net.d"
  max_conf_num = 1
"#
        )
    } else {
        let nri = if version_name == "1.6" {
            String::new()
        } else {
            "\n[plugins.\"io.containerd.nri.v1.nri\"]\n  disable = true\n".to_string()
        };
        format!(
            r#"version = 2
{common}
[plugins."io.containerd.internal.v1.opt"]
  path = "{w}/opt"
{nri}
[plugins."io.containerd.grpc.v1.cri"]
  restrict_oom_score_adj = true
  disable_apparmor = false
  sandbox_image = "{pause_image}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

[plugins."io.containerd.grpc.v1.cri".containerd]
  default_runtime_name = "runc"
  snapshotter = "overlayfs"

{runtimes}
[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "{CNI_BIN_DIR}"
  conf_dir = "{w}/cni/net.d"
  max_conf_num = 1

[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = "{w}/certs.d"
"#
        )
    }
}
