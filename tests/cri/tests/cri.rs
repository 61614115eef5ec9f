//! Pods through containerd's CRI plugin with `runtime_handler = "proxmox-lxc"`, driven over
//! gRPC the way the kubelet drives it.
//!
//! Test names: `containerd-VERSION::CASE`. One containerd per version is shared by its cases
//! (started on first use, torn down at the end), with one local registry for all of them. Each
//! case makes its own pods and, after removing them, checks that nothing of them is left: no
//! shim process, no LXC container in the shim's lxcpath, no mount, no network namespace.
//! The run fails if the final teardown had to clean anything up by force.
//!
//! Every case runs on every containerd available. containerd 1.6 (Debian's) passes the shim its
//! options through `ConfigPath`; 1.7 and 2.1 (unpacked by scripts/setup.sh) through inline keys
//! (`config_body`). Each points the shim's lxcpath into the run's work dir, and the cases check
//! the LXC containers appear there: the proof that runtime options reach the shim.
//!
//! VERSION is the containerd's own (`containerd --version`): the system's is 1.6 on this build
//! host (Debian 12) and 1.7 in the node twin (Debian 13).
//!
//! The same cases run once more with the `pve` driver (`containerd-SYSTEM-pve::CASE`, on the
//! system's containerd: `containerd-1.6-pve` here, `containerd-1.7-pve` in the twin): the shim's
//! `ConfigPath` file says `driver = "pve"` and points at the Proxmox API test server, which plays
//! the node with real LXC (CT configs in its own copy of /etc/pve/lxc, `lxc-start -F` in
//! /var/lib/lxc as `pve-container@VMID` does). There every container is a CT: the cases find
//! it by its tag, check it is listed in `/cluster/resources` with the pod's tags, and check that
//! no CT config, LXC container, lock or `lxc-start` is left.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use cri::client::{self, container_config, ns, pod_config, res, sec, state, v1, Cri};
use cri::env::{CriEnv, ExtraRuntime, ShimOptions};
use cri::registry::{Images, Registry, APP_GREETING};
use e2e::ContainerdVersion;
use libtest_mimic::{Arguments, Failed, Trial};

// ---------------------------------------------------------------------------------------------
// Shared registry and containerd instances

struct Shared {
    registry: Registry,
    images: Images,
}

static SHARED: OnceLock<std::result::Result<Shared, String>> = OnceLock::new();

fn shared() -> Result<&'static Shared> {
    SHARED
        .get_or_init(|| {
            let dir = cri::env::work_base().join(format!("registry-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            let registry = Registry::start(&dir).map_err(|e| format!("{e:#}"))?;
            let images = registry
                .push_test_images(&dir)
                .map_err(|e| format!("{e:#}"))?;
            Ok(Shared { registry, images })
        })
        .as_ref()
        .map_err(|e| anyhow!("local registry: {e}"))
}

type Envs = Mutex<HashMap<String, std::result::Result<Arc<CriEnv>, String>>>;

fn envs() -> &'static Envs {
    static ENVS: OnceLock<Envs> = OnceLock::new();
    ENVS.get_or_init(Default::default)
}

/// This shim as a runtime handler without runtime options (its host config file, or none:
/// the default lxcpath).
const PLAIN_HANDLER: &str = "proxmox-lxc-plain";

/// The node driver a set of cases runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Driver {
    Lxc,
    Pve,
}

/// The end of the label of the environment that runs the `pve` driver (`c1.6pve`).
const PVE_LABEL_SUFFIX: &str = "pve";

fn driver_of(env: &CriEnv) -> Driver {
    if env.label.ends_with(PVE_LABEL_SUFFIX) {
        Driver::Pve
    } else {
        Driver::Lxc
    }
}

/// The name the case's tests carry for this environment (`containerd-1.7-pve`).
fn test_prefix(env: &CriEnv) -> String {
    match driver_of(env) {
        Driver::Lxc => format!("containerd-{}", env.version.name),
        Driver::Pve => format!("containerd-{}-pve", env.version.name),
    }
}

/// The shared environment of a containerd version and driver, started on first use, with the
/// test images pulled through CRI.
fn env_for(version: &ContainerdVersion, driver: Driver) -> Result<Arc<CriEnv>> {
    let shared = shared()?;
    let mut map = envs().lock().unwrap_or_else(|e| e.into_inner());
    let label = match driver {
        Driver::Lxc => format!("c{}", version.name),
        Driver::Pve => format!("c{}{PVE_LABEL_SUFFIX}", version.name),
    };
    let entry = map.entry(label.clone()).or_insert_with(|| {
        let use_config_path = version.name == "1.6";
        // This shim without runtime options too: containerd 2.x starts a hostUsers: false
        // container only with runc's options or none (see case_user_namespaces).
        let extra = match driver {
            Driver::Lxc => vec![ExtraRuntime {
                handler: PLAIN_HANDLER.into(),
                runtime_type: "io.containerd.proxmox-lxc.v2".into(),
                shim_options: false,
            }],
            Driver::Pve => Vec::new(),
        };
        CriEnv::start_with_runtimes(
            version.clone(),
            &label,
            &shared.images,
            &shared.registry.host,
            |work| {
                let lxcpath = work.join("lxc");
                if driver == Driver::Pve {
                    let file = pve::start_node(work, &lxcpath)?;
                    return Ok((ShimOptions::ConfigPath(file.display().to_string()), lxcpath));
                }
                let shim_config = format!("[lxc]\nlxcpath = \"{}\"\n", lxcpath.display());
                if use_config_path {
                    let file = work.join("shim.toml");
                    std::fs::write(&file, &shim_config)?;
                    Ok((ShimOptions::ConfigPath(file.display().to_string()), lxcpath))
                } else {
                    Ok((ShimOptions::Inline(shim_config), lxcpath))
                }
            },
            &extra,
        )
        .and_then(|env| {
            let mut c = env.cri()?;
            for image in [&env.images.busybox, &env.images.app] {
                env.block_on(c.pull(image))?;
            }
            Ok(Arc::new(env))
        })
        .map_err(|e| format!("{e:#}"))
    });
    entry
        .clone()
        .map_err(|e| anyhow!("containerd {label}: {e}"))
}

/// Whether container (or pod sandbox) `id` exists on the node: an LXC container in the
/// lxcpath from the runtime options, or a CT carrying its tag.
fn container_exists(env: &CriEnv, id: &str) -> bool {
    match driver_of(env) {
        Driver::Lxc => env.lxc_dir().join(id).is_dir(),
        Driver::Pve => !pve::cts_of(id).is_empty(),
    }
}

/// The `pve` driver's node: the Proxmox API test server with real LXC (`e2e::pve_node`).
mod pve {
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    use anyhow::{anyhow, Result};
    use e2e::pve_node::{PveNode, TAG_PREFIX};

    pub use e2e::pve_node::LXCPATH;
    /// The VMIDs of this run: 100 of 991000-999999 chosen by the pid, clear of the ranges of
    /// `e2e --test pve` (990100-990249). Every node's CTs share /var/lib/lxc (and LXC's cgroup
    /// names), so two runs at once (CI and a developer's, say) must not share VMIDs: each test
    /// server only knows its own CT configs.
    pub fn range() -> [u32; 2] {
        let start = 991_000 + (std::process::id() % 90) * 100;
        [start, start + 99]
    }
    /// containerd's CRI plugin puts every pod in this namespace.
    const NAMESPACE: &str = "k8s.io";

    static NODE: Mutex<Option<PveNode>> = Mutex::new(None);

    fn with_node<T>(f: impl FnOnce(&PveNode) -> T) -> Option<T> {
        NODE.lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(f)
    }

    /// Starts the node; returns the shim config file (`driver = "pve"`) that points at it. Its
    /// `[lxc] lxcpath` is the lxc driver's, which the pve driver must not use (checked).
    pub fn start_node(work: &Path, unused_lxcpath: &Path) -> Result<PathBuf> {
        let extra = format!("[lxc]\nlxcpath = \"{}\"\n", unused_lxcpath.display());
        let node = PveNode::start(work, range(), 60, &extra)?;
        let file = node.shim_config.clone();
        *NODE.lock().unwrap_or_else(|e| e.into_inner()) = Some(node);
        Ok(file)
    }

    /// The tag the shim gives the CT of containerd container `id`.
    pub fn tag_of(id: &str) -> String {
        shim::driver::pve::container_tag(TAG_PREFIX, NAMESPACE, id)
    }

    /// VMIDs of the CTs whose config carries container `id`'s tag.
    pub fn cts_of(id: &str) -> Vec<u32> {
        let tag = tag_of(id);
        with_node(PveNode::ct_configs)
            .unwrap_or_default()
            .into_iter()
            .filter(|(_, text)| {
                text.lines()
                    .filter_map(|l| l.strip_prefix("tags:"))
                    .any(|t| t.trim().split([';', ',', ' ']).any(|x| x == tag))
            })
            .map(|(vmid, _)| vmid)
            .collect()
    }

    /// A CT's config file (`/etc/pve/lxc/VMID.conf` on a node).
    pub fn ct_config(vmid: u32) -> Option<String> {
        with_node(PveNode::ct_configs)?
            .into_iter()
            .find_map(|(v, text)| (v == vmid).then_some(text))
    }

    /// The logs of the node's tasks that contain `needle`.
    pub fn task_logs_with(needle: &str) -> Vec<Vec<String>> {
        with_node(|n| {
            n.server
                .tasks()
                .into_iter()
                .filter_map(|upid| n.server.task_log(&upid))
                .filter(|log| log.iter().any(|l| l.contains(needle)))
                .collect()
        })
        .unwrap_or_default()
    }

    /// The name of the node the test server plays.
    pub fn node_name() -> Option<String> {
        with_node(|n| n.server.node().to_string())
    }

    /// A CT's description (its notes in the GUI).
    pub fn description(vmid: u32) -> Option<String> {
        with_node(|n| n.ct_description(vmid)).flatten()
    }

    /// `/cluster/resources?type=vm` through the API, as the Proxmox GUI lists guests.
    pub fn resources() -> Result<Vec<pve_client::ClusterResource>> {
        with_node(PveNode::resources).ok_or_else(|| anyhow!("the pve node is not running"))?
    }

    /// What the CTs of containers `ids` left: configs with their tags.
    pub fn leftovers_of(ids: &[String]) -> Vec<String> {
        ids.iter()
            .flat_map(|id| {
                cts_of(id)
                    .into_iter()
                    .map(move |vmid| format!("CT {vmid} of {id} left in the node's config dir"))
            })
            .collect()
    }

    /// Everything of the range left on the node; then stops the server.
    pub fn teardown() -> Vec<String> {
        let out = with_node(PveNode::leftovers).unwrap_or_default();
        drop(NODE.lock().unwrap_or_else(|e| e.into_inner()).take());
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Pods and what they must leave behind: nothing

/// The kubelet's defaults for `procMount: Default` (k8s.io/kubernetes securitycontext).
const KUBELET_MASKED_PATHS: [&str; 11] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];
const KUBELET_READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// A pod made by a case. `finish` removes it as the kubelet does and checks for leftovers;
/// dropping it unfinished (a failed case) still removes it.
struct Pod<'a> {
    env: &'a CriEnv,
    id: String,
    config: v1::PodSandboxConfig,
    log_dir: PathBuf,
    netns: Option<String>,
    containers: Vec<String>,
    done: bool,
}

fn run_pod<'a>(
    env: &'a CriEnv,
    name: &str,
    tweak: impl FnOnce(&mut v1::PodSandboxConfig),
) -> Result<Pod<'a>> {
    run_pod_on(env, cri::env::HANDLER, name, tweak)
}

/// The runtime handler of the reference: runc through containerd's own shim.
const RUNC_HANDLER: &str = "runc";

/// As `run_pod`, with runtime handler `handler` (`RUNC_HANDLER` for the reference).
fn run_pod_on<'a>(
    env: &'a CriEnv,
    handler: &str,
    name: &str,
    tweak: impl FnOnce(&mut v1::PodSandboxConfig),
) -> Result<Pod<'a>> {
    let log_dir = env.scratch(&format!("{name}-logs"));
    let mut config = pod_config(name, &log_dir, &env.cgroup_parent);
    tweak(&mut config);
    let mut c = env.cri()?;
    let id = env.block_on(c.run_pod_with(&config, handler))?;
    let status = env.block_on(c.pod_status(&id))?;
    Ok(Pod {
        env,
        id,
        config,
        log_dir,
        netns: client::pod_netns_path(&status),
        containers: Vec::new(),
        done: false,
    })
}

impl Pod<'_> {
    fn cri(&self) -> Result<Cri> {
        self.env.cri()
    }

    /// CreateContainer + StartContainer. Like the kubelet, gives the container the pod's
    /// namespace options (containerd takes the container's pid mode from them).
    fn run(&mut self, config: &v1::ContainerConfig) -> Result<String> {
        let mut c = self.cri()?;
        let mut config = config.clone();
        let pod_ns = self
            .config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.clone());
        let s = sec(&mut config);
        if s.namespace_options.is_none() {
            s.namespace_options = pod_ns;
        }
        // The kubelet sends the default masked and read-only paths for every non-privileged
        // container (procMount: Default); containerd's CRI plugin adds none of its own.
        if !s.privileged && s.masked_paths.is_empty() && s.readonly_paths.is_empty() {
            s.masked_paths = KUBELET_MASKED_PATHS.iter().map(|p| p.to_string()).collect();
            s.readonly_paths = KUBELET_READONLY_PATHS
                .iter()
                .map(|p| p.to_string())
                .collect();
        }
        let config = &config;
        let id = self
            .env
            .block_on(c.create_container(&self.id, config, &self.config))?;
        self.containers.push(id.clone());
        self.env.block_on(c.start_container(&id))?;
        Ok(id)
    }

    fn log_file(&self, container_name: &str) -> PathBuf {
        self.log_dir.join(format!("{container_name}.log"))
    }

    /// Waits until the container's CRI log holds `needle` (in any stream); returns the parsed
    /// log lines (stream, content).
    fn wait_log(&self, container_name: &str, needle: &str) -> Result<Vec<(String, String)>> {
        let path = self.log_file(container_name);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let lines = parse_cri_log(&text)?;
            if lines.iter().any(|(_, l)| l.contains(needle)) {
                return Ok(lines);
            }
            if Instant::now() > deadline {
                bail!(
                    "log {} did not show {needle:?} within 20 s; it holds:\n{text}",
                    path.display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// StopPodSandbox + RemovePodSandbox, then the leftover checks.
    fn finish(mut self) -> Result<()> {
        self.done = true;
        let mut c = self.cri()?;
        self.env.block_on(c.remove_pod(&self.id))?;
        let parent = self
            .config
            .linux
            .as_ref()
            .map(|l| l.cgroup_parent.clone())
            .unwrap_or_default();
        check_pod_gone(
            self.env,
            &self.id,
            &self.containers,
            self.netns.as_deref(),
            &parent,
        )
    }
}

impl Drop for Pod<'_> {
    fn drop(&mut self) {
        if !self.done {
            if let Ok(mut c) = self.env.cri() {
                let _ = self.env.block_on(c.remove_pod(&self.id));
            }
        }
    }
}

/// Parses the CRI log format: `TIMESTAMP STREAM TAG CONTENT` per line (TAG `F` full, `P`
/// partial). Every line must be well formed.
fn parse_cri_log(text: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut parts = line.splitn(4, ' ');
        let (Some(ts), Some(stream), Some(tag), content) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            bail!("malformed CRI log line {line:?}");
        };
        ensure!(
            ts.len() >= 20 && ts.contains('T') && (ts.ends_with('Z') || ts.contains('+')),
            "CRI log line without an RFC 3339 timestamp: {line:?}"
        );
        ensure!(
            stream == "stdout" || stream == "stderr",
            "CRI log line with stream {stream:?}: {line:?}"
        );
        ensure!(
            tag == "F" || tag == "P",
            "CRI log line with tag {tag:?}: {line:?}"
        );
        out.push((stream.to_string(), content.unwrap_or("").to_string()));
    }
    Ok(out)
}

/// After RemovePodSandbox: the pod's shim exits, its LXC containers, mounts and network
/// namespace are gone.
fn check_pod_gone(
    env: &CriEnv,
    pod: &str,
    containers: &[String],
    netns: Option<&str>,
    cgroup_parent: &str,
) -> Result<()> {
    let mut problems = Vec::new();
    let id_flag = format!("-id {pod}");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let shims: Vec<_> = env
            .shim_processes()
            .into_iter()
            .filter(|p| p.cmdline.contains(&id_flag))
            .collect();
        if shims.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            for p in shims {
                problems.push(format!(
                    "shim {} of the pod still runs: {}",
                    p.pid, p.cmdline
                ));
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for id in std::iter::once(pod.to_string()).chain(containers.iter().cloned()) {
        if container_exists(env, &id) {
            problems.push(format!("LXC container (or CT) of {id} left"));
        }
        for m in e2e::host::mounts_containing(&id) {
            problems.push(format!("mount left: {}", m.display()));
        }
        for p in e2e::host::processes_matching(&[&id]) {
            problems.push(format!("process left: {} {}", p.pid, p.cmdline));
        }
        for root in e2e::host::cgroup_hierarchies() {
            let dir = root.join(cgroup_parent.trim_start_matches('/')).join(&id);
            if dir.exists() {
                problems.push(format!("cgroup left: {}", dir.display()));
            }
        }
    }
    if driver_of(env) == Driver::Pve {
        let ids: Vec<String> = std::iter::once(pod.to_string())
            .chain(containers.iter().cloned())
            .collect();
        problems.extend(pve::leftovers_of(&ids));
        // The pve driver must not have used the lxc driver's lxcpath.
        if env.lxc_dir().exists() {
            problems.push(format!(
                "the pve driver made {} (the lxc driver's lxcpath)",
                env.lxc_dir().display()
            ));
        }
    }
    if let Some(ns) = netns {
        if Path::new(ns).exists() {
            problems.push(format!("network namespace left: {ns}"));
        }
    }
    ensure!(
        problems.is_empty(),
        "pod {pod} (containers {containers:?}) left things behind:\n{}",
        problems.join("\n")
    );
    Ok(())
}

/// A container that runs until stopped.
fn sleeper(name: &str, image: &str) -> v1::ContainerConfig {
    container_config(
        name,
        image,
        &["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done"],
    )
}

/// Whether the node has the cgroup v2 hierarchy alone at /sys/fs/cgroup (a Proxmox VE node, the
/// node twin), rather than v1 controllers (this build host's hybrid layout).
fn cgroup_v2_only() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").is_file()
}

/// The container's cgroup directory where its limits are, from its init pid: the v1
/// controller's, or on a v2-only node the one v2 directory.
fn cgroup_dir(pid: i32, controller: &str) -> Result<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    let v2 = cgroup_v2_only();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, ctrls, path) = (
            parts.next(),
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
        );
        if v2 && ctrls.is_empty() {
            let dir = PathBuf::from("/sys/fs/cgroup").join(path.trim_start_matches('/'));
            return Ok(limit_level(dir));
        }
        if !v2 && ctrls.split(',').any(|c| c == controller) {
            let dir = PathBuf::from("/sys/fs/cgroup")
                .join(ctrls)
                .join(path.trim_start_matches('/'));
            return Ok(limit_level(dir));
        }
    }
    bail!("pid {pid} has no {controller} cgroup:\n{text}")
}

/// Where a container's limits are: its cgroup, or for a Proxmox CT (pve-container
/// update_lxc_config: processes in `lxc/VMID/ns`, limits on `lxc/VMID`) the parent.
fn limit_level(dir: PathBuf) -> PathBuf {
    let proxmox_inner = dir.file_name().is_some_and(|f| f == "ns")
        && dir
            .parent()
            .and_then(Path::parent)
            .and_then(Path::file_name)
            .is_some_and(|g| g == "lxc");
    match dir.parent() {
        Some(parent) if proxmox_inner => parent.to_path_buf(),
        _ => dir,
    }
}

/// A container's memory and CPU limits as its cgroup files hold them, on cgroup v1 or v2.
#[derive(Debug, PartialEq, Eq)]
struct Limits {
    /// `memory.limit_in_bytes` (v1) or `memory.max` (v2).
    memory: String,
    /// `cpu.cfs_quota_us` (v1) or the first field of `cpu.max` (v2).
    cpu_quota: String,
    /// `cpu.cfs_period_us` (v1) or the second field of `cpu.max` (v2).
    cpu_period: String,
    /// `cpu.shares` (v1) or `cpu.weight` (v2): the runtime converts CRI's shares to a weight
    /// on v2, so that value is compared with runc's rather than with the shares asked for.
    cpu_weight: String,
}

fn limits_of(pid: i32) -> Result<Limits> {
    let mem = cgroup_dir(pid, "memory")?;
    let cpu = cgroup_dir(pid, "cpu")?;
    if cgroup_v2_only() {
        let max = read_trim(&cpu.join("cpu.max"))?;
        let (quota, period) = max
            .split_once(' ')
            .ok_or_else(|| anyhow!("cpu.max of {}: {max:?}", cpu.display()))?;
        Ok(Limits {
            memory: read_trim(&mem.join("memory.max"))?,
            cpu_quota: quota.to_string(),
            cpu_period: period.to_string(),
            cpu_weight: read_trim(&cpu.join("cpu.weight"))?,
        })
    } else {
        Ok(Limits {
            memory: read_trim(&mem.join("memory.limit_in_bytes"))?,
            cpu_quota: read_trim(&cpu.join("cpu.cfs_quota_us"))?,
            cpu_period: read_trim(&cpu.join("cpu.cfs_period_us"))?,
            cpu_weight: read_trim(&cpu.join("cpu.shares"))?,
        })
    }
}

fn read_trim(path: &Path) -> Result<String> {
    Ok(std::fs::read_to_string(path)
        .with_context(|| format!("read {}", path.display()))?
        .trim()
        .to_string())
}

fn cap_mask(text: &str, field: &str) -> Result<u64> {
    let line = text
        .lines()
        .find(|l| l.starts_with(field))
        .ok_or_else(|| anyhow!("no {field} in {text}"))?;
    let hex = line.split_whitespace().nth(1).unwrap_or("");
    Ok(u64::from_str_radix(hex, 16)?)
}

// Capability numbers (linux/capability.h).
const CAP_CHOWN: u32 = 0;
const CAP_DAC_OVERRIDE: u32 = 1;
const CAP_FOWNER: u32 = 3;
const CAP_FSETID: u32 = 4;
const CAP_KILL: u32 = 5;
const CAP_SETGID: u32 = 6;
const CAP_SETUID: u32 = 7;
const CAP_SETPCAP: u32 = 8;
const CAP_NET_BIND_SERVICE: u32 = 10;
const CAP_NET_RAW: u32 = 13;
const CAP_SYS_CHROOT: u32 = 18;
const CAP_SYS_TIME: u32 = 25;
const CAP_MKNOD: u32 = 27;
const CAP_AUDIT_WRITE: u32 = 29;
const CAP_SETFCAP: u32 = 31;

/// containerd's default capability set for CRI containers.
fn default_caps() -> u64 {
    [
        CAP_CHOWN,
        CAP_DAC_OVERRIDE,
        CAP_FSETID,
        CAP_FOWNER,
        CAP_MKNOD,
        CAP_NET_RAW,
        CAP_SETGID,
        CAP_SETUID,
        CAP_SETFCAP,
        CAP_SETPCAP,
        CAP_NET_BIND_SERVICE,
        CAP_SYS_CHROOT,
        CAP_KILL,
        CAP_AUDIT_WRITE,
    ]
    .iter()
    .fold(0u64, |m, c| m | (1u64 << c))
}

// ---------------------------------------------------------------------------------------------
// Cases

/// The whole lifecycle the kubelet drives, with logs, ExecSync, stats, resource updates and
/// both ways a stop ends (graceful; killed after the timeout).
fn case_lifecycle(env: &CriEnv) -> Result<()> {
    let mut c = env.cri()?;
    let mut pod = run_pod(env, "lifecycle", |_| {})?;
    let status = env.block_on(c.pod_status(&pod.id))?;
    let s = status
        .status
        .clone()
        .ok_or_else(|| anyhow!("no pod status"))?;
    ensure!(s.state == 0, "pod state {} (want SANDBOX_READY)", s.state);
    let ip = s.network.map(|n| n.ip).unwrap_or_default();
    ensure!(
        ip.starts_with(&env.net.prefix),
        "pod IP {ip:?} not in {}",
        env.net.subnet
    );
    ensure!(
        pod.netns.is_some(),
        "no netns path in the pod's verbose status"
    );

    let graceful = pod.run(&container_config(
        "graceful",
        &env.images.busybox,
        &[
            "sh",
            "-c",
            "echo out-line; echo err-line >&2; trap 'echo got-TERM; exit 0' TERM; while :; do sleep 1; done",
        ],
    ))?;
    env.block_on(c.wait_state(&graceful, state::RUNNING, Duration::from_secs(20)))?;
    let st = env.block_on(c.container_status(&graceful))?;
    let cs = st.status.ok_or_else(|| anyhow!("no container status"))?;
    ensure!(cs.started_at > 0, "started_at not set: {cs:?}");
    ensure!(
        cs.log_path == pod.log_file("graceful").display().to_string(),
        "log path {} (want {})",
        cs.log_path,
        pod.log_file("graceful").display()
    );

    // Logs in CRI format, stdout and stderr apart.
    let lines = pod.wait_log("graceful", "err-line")?;
    ensure!(
        lines.contains(&("stdout".into(), "out-line".into())),
        "stdout line missing: {lines:?}"
    );
    ensure!(
        lines.contains(&("stderr".into(), "err-line".into())),
        "stderr line missing: {lines:?}"
    );

    // ExecSync: output split, exit code kept.
    let (code, out, err) = env.block_on(c.exec_sync(
        &graceful,
        &["sh", "-c", "echo exec-out; echo exec-err >&2; exit 3"],
        10,
    ))?;
    ensure!(
        (code, out.as_str(), err.as_str()) == (3, "exec-out\n", "exec-err\n"),
        "ExecSync gave ({code}, {out:?}, {err:?})"
    );

    // Stats with real numbers after some work in the container.
    env.block_on(c.sh(
        &graceful,
        "i=0; while [ $i -lt 30000 ]; do i=$((i+1)); done; echo done",
    ))?;
    let stats = env.block_on(c.stats(&graceful))?;
    let cpu = stats
        .cpu
        .as_ref()
        .and_then(|c| c.usage_core_nano_seconds.as_ref())
        .map(|v| v.value)
        .unwrap_or(0);
    let mem = stats
        .memory
        .as_ref()
        .and_then(|m| m.working_set_bytes.as_ref())
        .map(|v| v.value)
        .unwrap_or(0);
    ensure!(
        cpu > 10_000_000,
        "ContainerStats cpu usage {cpu} ns after a busy loop: {stats:?}"
    );
    ensure!(
        mem > 0,
        "ContainerStats memory working set {mem}: {stats:?}"
    );
    let listed = env.block_on(c.list_stats(&pod.id))?;
    let mine = listed
        .iter()
        .find(|s| s.attributes.as_ref().map(|a| a.id.as_str()) == Some(graceful.as_str()))
        .ok_or_else(|| anyhow!("ListContainerStats lacks {graceful}: {listed:?}"))?;
    ensure!(
        mine.cpu
            .as_ref()
            .and_then(|c| c.usage_core_nano_seconds.as_ref())
            .map(|v| v.value)
            .unwrap_or(0)
            >= cpu,
        "ListContainerStats cpu went backwards: {mine:?}"
    );

    // UpdateContainerResources reaches the container's cgroup.
    let pid = env.block_on(c.container_pid(&graceful))?;
    env.block_on(c.update_resources(
        &graceful,
        v1::LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: 30_000,
            cpu_shares: 256,
            memory_limit_in_bytes: 96 << 20,
            ..Default::default()
        },
    ))?;
    let limits = limits_of(pid)?;
    ensure!(
        limits.memory == (96u64 << 20).to_string() && limits.cpu_quota == "30000",
        "limits after update (want memory {}, cpu quota 30000): {limits:?}",
        96u64 << 20
    );
    if driver_of(env) == Driver::Pve {
        // The Proxmox GUI shows what is enforced: the CT config follows the update.
        let vmids = pve::cts_of(&graceful);
        let conf = pve::ct_config(*vmids.first().context("no CT")?).unwrap_or_default();
        for want in ["memory: 96", "cpulimit: 0.3"] {
            ensure!(
                conf.lines().any(|l| l == want),
                "CT config after UpdateContainerResources lacks {want:?}:\n{conf}"
            );
        }
    }

    // A container that ignores SIGTERM (PID 1 without a handler).
    let stubborn = pod.run(&container_config(
        "stubborn",
        &env.images.busybox,
        &["sh", "-c", "echo started; while :; do sleep 1; done"],
    ))?;
    pod.wait_log("stubborn", "started")?;
    let t = Instant::now();
    env.block_on(c.stop_container(&graceful, 20))?;
    let took = t.elapsed();
    let (st, code) = env.block_on(c.container_state(&graceful))?;
    ensure!(
        st == state::EXITED && code == 0,
        "graceful stop: state {st} code {code}"
    );
    ensure!(
        took < Duration::from_secs(10),
        "graceful stop took {took:?}"
    );
    pod.wait_log("graceful", "got-TERM")?;

    let t = Instant::now();
    env.block_on(c.stop_container(&stubborn, 2))?;
    let took = t.elapsed();
    let (st, code) = env.block_on(c.container_state(&stubborn))?;
    ensure!(st == state::EXITED, "stubborn: state {st}");
    ensure!(
        code == 137,
        "stubborn container exit code {code} (want 137, SIGKILL)"
    );
    ensure!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(15),
        "stop with timeout 2 s took {took:?}"
    );

    for id in [&graceful, &stubborn] {
        env.block_on(c.remove_container(id))?;
        ensure!(
            !container_exists(env, id),
            "LXC container (or CT) {id} still there after RemoveContainer"
        );
    }
    pod.finish()
}

/// Exec over the streaming server (WebSocket, v4.channel.k8s.io): output, exit code, stdin.
fn case_exec_streaming(env: &CriEnv) -> Result<()> {
    let mut c = env.cri()?;
    let mut pod = run_pod(env, "streaming", |_| {})?;
    let id = pod.run(&sleeper("main", &env.images.busybox))?;
    env.block_on(c.wait_state(&id, state::RUNNING, Duration::from_secs(20)))?;
    let url = env.block_on(c.exec_url(v1::ExecRequest {
        container_id: id.clone(),
        cmd: vec![
            "sh".into(),
            "-c".into(),
            "echo streamed-out; echo streamed-err >&2; exit 5".into(),
        ],
        stdout: true,
        stderr: true,
        ..Default::default()
    }))?;
    let r = env.block_on(cri::stream::run(&url, None))?;
    ensure!(
        r.stdout == b"streamed-out\n" && r.stderr == b"streamed-err\n" && r.exit_code == 5,
        "streamed exec: stdout {:?} stderr {:?} exit {} status {}",
        String::from_utf8_lossy(&r.stdout),
        String::from_utf8_lossy(&r.stderr),
        r.exit_code,
        r.status
    );
    let url = env.block_on(c.exec_url(v1::ExecRequest {
        container_id: id.clone(),
        cmd: vec!["head".into(), "-n1".into()],
        stdin: true,
        stdout: true,
        ..Default::default()
    }))?;
    let r = env.block_on(cri::stream::run(&url, Some(b"ping-line\n")))?;
    ensure!(
        r.stdout == b"ping-line\n" && r.exit_code == 0,
        "streamed exec with stdin: stdout {:?} exit {} status {}",
        String::from_utf8_lossy(&r.stdout),
        r.exit_code,
        r.status
    );
    pod.finish()
}

const HTTP_SERVER: &str = "mkdir -p /tmp/www && echo \"pong from $(hostname)\" > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www";

/// (busybox 1.35 wget crashes on `-T`; `timeout` bounds each try instead.)
fn wget_retry(url: &str) -> String {
    format!(
        "for i in $(seq 100); do timeout 5 wget -q -O- {url} && exit 0; sleep 0.2; done; exit 1"
    )
}

/// The pod's containers share its network namespace; two pods reach each other by pod IP; the
/// IP CRI reports is the containers' own.
fn case_networking(env: &CriEnv) -> Result<()> {
    let mut c = env.cri()?;
    let mut a = run_pod(env, "net-a", |_| {})?;
    let server = a.run(&container_config(
        "server",
        &env.images.busybox,
        &["sh", "-c", HTTP_SERVER],
    ))?;
    let client_a = a.run(&sleeper("client", &env.images.busybox))?;
    env.block_on(c.wait_state(&client_a, state::RUNNING, Duration::from_secs(20)))?;
    let got = env.block_on(c.sh(&client_a, &wget_retry("http://127.0.0.1:8080/")))?;
    ensure!(
        got.trim() == "pong from net-a",
        "localhost within the pod gave {got:?}"
    );

    let ns_server = env.block_on(c.sh(&server, "readlink /proc/self/ns/net"))?;
    let ns_client = env.block_on(c.sh(&client_a, "readlink /proc/self/ns/net"))?;
    ensure!(
        ns_server == ns_client,
        "containers of one pod in different netns: {ns_server} vs {ns_client}"
    );
    let ip_a = env
        .block_on(c.pod_status(&a.id))?
        .status
        .and_then(|s| s.network)
        .map(|n| n.ip)
        .unwrap_or_default();
    ensure!(ip_a.starts_with(&env.net.prefix), "pod IP {ip_a:?}");
    for id in [&server, &client_a] {
        let addrs = env.block_on(c.sh(id, "ip -4 -o addr show dev eth0"))?;
        ensure!(
            addrs.contains(&format!("inet {ip_a}/")),
            "container {id} has eth0 {addrs:?}, CRI says {ip_a}"
        );
    }

    let mut b = run_pod(env, "net-b", |_| {})?;
    let client_b = b.run(&sleeper("client", &env.images.busybox))?;
    env.block_on(c.wait_state(&client_b, state::RUNNING, Duration::from_secs(20)))?;
    let ip_b = env
        .block_on(c.pod_status(&b.id))?
        .status
        .and_then(|s| s.network)
        .map(|n| n.ip)
        .unwrap_or_default();
    ensure!(
        ip_b != ip_a && ip_b.starts_with(&env.net.prefix),
        "pod B IP {ip_b:?}"
    );
    let ns_b = env.block_on(c.sh(&client_b, "readlink /proc/self/ns/net"))?;
    ensure!(ns_b != ns_client, "two pods share a netns");
    let got = env.block_on(c.sh(&client_b, &wget_retry(&format!("http://{ip_a}:8080/"))))?;
    ensure!(
        got.trim() == "pong from net-a",
        "pod B -> pod A by IP gave {got:?}"
    );
    b.finish()?;
    a.finish()
}

/// A hostNetwork pod's containers are in the node's network namespace.
fn case_host_network(env: &CriEnv) -> Result<()> {
    let mut c = env.cri()?;
    // The kubelet sends no hostname for a hostNetwork pod: it keeps the node's UTS namespace.
    let mut pod = run_pod(env, "hostnet", |p| {
        client::pod_ns(p).network = ns::NODE;
        p.hostname.clear();
    })?;
    let id = pod.run(&sleeper("main", &env.images.busybox))?;
    env.block_on(c.wait_state(&id, state::RUNNING, Duration::from_secs(20)))?;
    let inside = env.block_on(c.sh(&id, "readlink /proc/self/ns/net"))?;
    let host = std::fs::read_link("/proc/self/ns/net")?;
    ensure!(
        inside.trim() == host.to_string_lossy(),
        "hostNetwork container in {inside:?}, node in {host:?}"
    );
    pod.finish()
}

/// PullImage from the registry; the image config (entrypoint, cmd, env, workdir, user) reaches
/// the workload, and the container config overrides it as the kubelet does.
fn case_image_config(env: &CriEnv) -> Result<()> {
    let mut c = env.cri()?;
    let image_ref = env.block_on(c.pull(&env.images.app))?;
    ensure!(
        image_ref.starts_with("sha256:"),
        "PullImage ref {image_ref:?}"
    );
    let img = env
        .block_on(c.image_status(&env.images.app))?
        .ok_or_else(|| anyhow!("ImageStatus: image not found after pull"))?;
    ensure!(
        img.username == "app" || img.uid.as_ref().map(|u| u.value) == Some(1000),
        "ImageStatus user: {img:?}"
    );
    let mut pod = run_pod(env, "imagecfg", |_| {})?;
    let plain = pod.run(&container_config("plain", &env.images.app, &[]))?;
    let code = env.block_on(c.wait_state(&plain, state::EXITED, Duration::from_secs(20)))?;
    ensure!(code == 0, "app image exited {code}");
    let lines = pod.wait_log("plain", "args=")?;
    let text: Vec<&str> = lines.iter().map(|(_, l)| l.as_str()).collect();
    let want = [
        format!("greeting={APP_GREETING}"),
        "uid=1000(app) gid=1000(app)".to_string(),
        "/home/app".to_string(),
        "args=app-arg".to_string(),
    ];
    for w in &want {
        ensure!(
            text.iter().any(|l| l.starts_with(w.as_str())),
            "app image output lacks {w:?}: {text:?}"
        );
    }
    let mut cfg = container_config("override", &env.images.app, &[]);
    cfg.args = vec!["first".into(), "second".into()];
    cfg.envs = vec![v1::KeyValue {
        key: "GREETING".into(),
        value: "overridden".into(),
    }];
    cfg.working_dir = "/tmp".into();
    let over = pod.run(&cfg)?;
    env.block_on(c.wait_state(&over, state::EXITED, Duration::from_secs(20)))?;
    let lines = pod.wait_log("override", "args=")?;
    let text: Vec<&str> = lines.iter().map(|(_, l)| l.as_str()).collect();
    for w in ["greeting=overridden", "/tmp", "args=first second"] {
        ensure!(
            text.iter().any(|l| l.starts_with(w)),
            "overridden app output lacks {w:?}: {text:?}"
        );
    }
    pod.finish()
}

/// runAsUser/runAsGroup/supplemental groups, working dir, env, args, read-only root.
fn case_security_context(env: &CriEnv) -> Result<()> {
    let mut c = env.cri()?;
    let mut pod = run_pod(env, "secctx", |_| {})?;
    let mut cfg = container_config("user", &env.images.busybox, &["sh", "-c"]);
    cfg.args = vec![
        "echo uid=$(id -u) gid=$(id -g) groups=$(id -G); echo cwd=$(pwd); echo FOO=$FOO; \
         if touch /rootfs-write 2>/dev/null; then echo root=rw; else echo root=ro; fi; \
         grep CapEff /proc/self/status; echo end"
            .into(),
    ];
    cfg.working_dir = "/tmp".into();
    cfg.envs = vec![v1::KeyValue {
        key: "FOO".into(),
        value: "bar baz".into(),
    }];
    {
        let s = sec(&mut cfg);
        s.run_as_user = Some(v1::Int64Value { value: 1234 });
        s.run_as_group = Some(v1::Int64Value { value: 2345 });
        s.supplemental_groups = vec![3000, 3001];
        s.readonly_rootfs = true;
    }
    let id = pod.run(&cfg)?;
    let code = env.block_on(c.wait_state(&id, state::EXITED, Duration::from_secs(20)))?;
    let lines = pod.wait_log("user", "end")?;
    let text: Vec<&str> = lines.iter().map(|(_, l)| l.as_str()).collect();
    ensure!(code == 0, "exited {code}: {text:?}");
    let groups_line = text
        .iter()
        .find(|l| l.starts_with("uid="))
        .ok_or_else(|| anyhow!("no id line: {text:?}"))?;
    ensure!(
        groups_line.starts_with("uid=1234 gid=2345 groups=2345 "),
        "id: {groups_line}"
    );
    for g in ["3000", "3001"] {
        ensure!(
            groups_line
                .split_whitespace()
                .any(|w| w == g || w.ends_with(&format!("={g}"))),
            "supplemental group {g} missing: {groups_line}"
        );
    }
    for w in [
        "cwd=/tmp",
        "FOO=bar baz",
        "root=ro",
        "CapEff:\t0000000000000000",
    ] {
        ensure!(text.contains(&w), "missing {w:?}: {text:?}");
    }

    // Capabilities: drop and add on top of containerd's default set (root user).
    let mut cfg = container_config(
        "caps",
        &env.images.busybox,
        &[
            "sh",
            "-c",
            "grep -E '^Cap(Eff|Bnd)' /proc/self/status; echo end",
        ],
    );
    sec(&mut cfg).capabilities = Some(v1::Capability {
        add_capabilities: vec!["SYS_TIME".into()],
        drop_capabilities: vec!["CHOWN".into(), "NET_RAW".into()],
        ..Default::default()
    });
    let caps = pod.run(&cfg)?;
    env.block_on(c.wait_state(&caps, state::EXITED, Duration::from_secs(20)))?;
    let lines = pod.wait_log("caps", "end")?;
    let text = lines
        .iter()
        .map(|(_, l)| l.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    let want = (default_caps() & !(1 << CAP_CHOWN) & !(1 << CAP_NET_RAW)) | (1 << CAP_SYS_TIME);
    let eff = cap_mask(&text, "CapEff")?;
    let bnd = cap_mask(&text, "CapBnd")?;
    ensure!(eff == want, "CapEff {eff:#x}, want {want:#x}");
    ensure!(bnd == want, "CapBnd {bnd:#x}, want {want:#x}");
    pod.finish()
}

/// Makes a pod privileged (it may then hold privileged containers).
fn privileged_pod(p: &mut v1::PodSandboxConfig) {
    p.linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
        .privileged = true;
}

/// A privileged container in a privileged pod (CNI daemons, device plugins): every capability
/// of the node, the node's devices, no masked /proc paths. (/sys is not checked: the pod's
/// network namespace already has a read-only sysfs from the sandbox, and sysfs is one
/// superblock per network namespace, under runc too.)
fn case_privileged(env: &CriEnv) -> Result<()> {
    let mut c = env.cri()?;
    let mut pod = run_pod(env, "priv", privileged_pod)?;
    let masked = masked_proc_file()?;
    let probe = format!(
        "grep CapEff /proc/self/status; \
         if [ -c /dev/loop-control ]; then echo dev=host; else echo dev=default; fi; \
         if [ -c {masked} ]; then echo proc=masked; else echo proc=open; fi; echo end"
    );
    let mut cfg = container_config("priv", &env.images.busybox, &["sh", "-c", &probe]);
    sec(&mut cfg).privileged = true;
    let id = pod.run(&cfg)?;
    env.block_on(c.wait_state(&id, state::EXITED, Duration::from_secs(20)))?;
    let text = log_text(&pod.wait_log("priv", "end")?);
    let host = std::fs::read_to_string("/proc/self/status")?;
    let host_bnd = cap_mask(&host, "CapBnd")?;
    let eff = cap_mask(&text, "CapEff")?;
    ensure!(
        eff == host_bnd,
        "privileged CapEff {eff:#x}, node bounding set {host_bnd:#x}"
    );
    if Path::new("/dev/loop-control").exists() {
        ensure!(
            text.contains("dev=host"),
            "privileged: no host devices: {text}"
        );
    }
    ensure!(
        text.contains("proc=open"),
        "privileged: {masked} masked: {text}"
    );
    pod.finish()
}

/// A path containerd masks (a /dev/null bind) for non-privileged containers.
fn masked_proc_file() -> Result<&'static str> {
    ["/proc/keys", "/proc/timer_list", "/proc/sched_debug"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .ok_or_else(|| anyhow!("none of the usual masked /proc files exists on this node"))
}

fn log_text(lines: &[(String, String)]) -> String {
    lines
        .iter()
        .map(|(_, l)| l.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

/// A non-privileged pod container gets the masked and read-only paths the kubelet asks for (the
/// spec's linux.maskedPaths / readonlyPaths): a masked /proc file reads as /dev/null,
/// /proc/sys is read-only, and it sees none of the node's devices.
fn case_masked_paths(env: &CriEnv) -> Result<()> {
    let mut c = env.cri()?;
    let mut pod = run_pod(env, "masked", |_| {})?;
    let masked = masked_proc_file()?;
    let probe = format!(
        "grep CapEff /proc/self/status; \
         if [ -c /dev/loop-control ]; then echo dev=host; else echo dev=default; fi; \
         if [ -c {masked} ]; then echo proc=masked; else echo proc=open; fi; \
         if grep ' /proc/sys ' /proc/self/mountinfo | grep -q ' ro,'; then echo procsys=ro; else echo procsys=rw; fi; \
         echo end"
    );
    let id = pod.run(&container_config(
        "plain",
        &env.images.busybox,
        &["sh", "-c", &probe],
    ))?;
    env.block_on(c.wait_state(&id, state::EXITED, Duration::from_secs(20)))?;
    let text = log_text(&pod.wait_log("plain", "end")?);
    let eff = cap_mask(&text, "CapEff")?;
    ensure!(eff == default_caps(), "CapEff {eff:#x}");
    ensure!(
        text.contains("dev=default"),
        "sees the node's devices: {text}"
    );
    ensure!(
        text.contains("proc=masked"),
        "{masked} is not masked: {text}"
    );
    ensure!(
        text.contains("procsys=ro"),
        "/proc/sys is not read-only: {text}"
    );
    pod.finish()
}

/// Whether the node's kernel has AppArmor on (a Proxmox VE node does; this build host does not).
fn apparmor_enabled() -> bool {
    std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .is_ok_and(|v| v.trim() == "Y")
}

/// Whether AppArmor profile `name` is loaded on the node.
fn apparmor_profile_loaded(name: &str) -> bool {
    std::fs::read_to_string("/sys/kernel/security/apparmor/profiles").is_ok_and(|text| {
        text.lines().any(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(" ("))
        })
    })
}

/// An AppArmor label as the kernel shows it (`PROFILE (MODE)`), with a profile in the
/// `unconfined` mode shown as `unconfined`: Debian ships `runc` as such a profile, which runc's
/// workloads inherit when no profile is asked for; it confines nothing, as plain `unconfined`.
fn confinement_label(text: &str) -> String {
    let t = text.trim();
    match t.strip_suffix(" (unconfined)") {
        Some(_) => "unconfined".to_string(),
        None => t.to_string(),
    }
}

/// The AppArmor confinement of host process `pid`, read from the host side
/// (`/proc/PID/attr/apparmor/current`, or `attr/current` on kernels without the former), or
/// what reading it said where AppArmor is off.
fn confinement_of(pid: i32) -> String {
    let specific = format!("/proc/{pid}/attr/apparmor/current");
    let generic = format!("/proc/{pid}/attr/current");
    match std::fs::read_to_string(&specific).or_else(|_| std::fs::read_to_string(&generic)) {
        Ok(text) => confinement_label(&text),
        Err(e) => format!("unreadable ({})", e.kind()),
    }
}

/// Pods' AppArmor confinement is runc's. With AppArmor on (a Proxmox VE node, the node twin)
/// containerd's CRI plugin asks for its default profile (`cri-containerd.apparmor.d`) for every
/// container that asks for none, nothing for `Unconfined` nor for a privileged container, and
/// the named profile for `Localhost`; runc applies it at the workload's execve and to every
/// exec. The same pod runs under the `runc` handler and under the shim, and the confinement of
/// the sandbox, each container's workload (read on the host) and an ExecSync in it (read
/// inside) must be the same: no container of the shim's may run unconfined where runc's would
/// not. Without AppArmor (this build host) both have none, and the case proves only that they
/// agree.
fn case_apparmor_confinement(env: &CriEnv) -> Result<()> {
    const LOCALHOST_PROFILE: &str = "lxc-container-default-cgns";
    let mut c = env.cri()?;
    // (name, profile, the profile in the older string field, privileged)
    let mut containers: Vec<(&str, Option<v1::SecurityProfile>, &str, bool)> = vec![
        ("default", None, "", false),
        (
            "unconfined",
            Some(v1::SecurityProfile {
                profile_type: v1::security_profile::ProfileType::Unconfined as i32,
                localhost_ref: String::new(),
            }),
            "unconfined",
            false,
        ),
        // containerd asks for no profile for a privileged container that names none.
        ("privileged", None, "", true),
    ];
    // A profile of the node's own, by name (LXC's, loaded on every node with LXC); containerd
    // refuses a Localhost profile where AppArmor is off, under runc too.
    let localhost = apparmor_enabled() && apparmor_profile_loaded(LOCALHOST_PROFILE);
    let localhost_deprecated = format!("localhost/{LOCALHOST_PROFILE}");
    if localhost {
        containers.push((
            "localhost",
            Some(v1::SecurityProfile {
                profile_type: v1::security_profile::ProfileType::Localhost as i32,
                localhost_ref: LOCALHOST_PROFILE.to_string(),
            }),
            &localhost_deprecated,
            false,
        ));
    }
    let mut seen: Vec<BTreeMap<String, String>> = Vec::new();
    for (label, handler) in [("runc", RUNC_HANDLER), ("lxc", cri::env::HANDLER)] {
        // A privileged pod, so that it may hold the privileged container; the others are not.
        let mut pod = run_pod_on(env, handler, &format!("aa-{label}"), privileged_pod)?;
        let mut got = BTreeMap::new();
        let status = env.block_on(c.pod_status(&pod.id))?;
        let sandbox = client::pod_pid(&status).ok_or_else(|| anyhow!("no sandbox pid"))?;
        got.insert("sandbox".to_string(), confinement_of(sandbox));
        for (name, profile, deprecated, privileged) in &containers {
            let mut cfg = sleeper(name, &env.images.busybox);
            {
                let s = sec(&mut cfg);
                s.privileged = *privileged;
                s.apparmor = profile.clone();
                // containerd 1.6 reads only the older string field (the kubelet sends both).
                #[allow(deprecated)]
                {
                    s.apparmor_profile = deprecated.to_string();
                }
            }
            let id = pod.run(&cfg)?;
            env.block_on(c.wait_state(&id, state::RUNNING, Duration::from_secs(20)))?;
            let pid = env.block_on(c.container_pid(&id))?;
            got.insert(format!("{name}: workload"), confinement_of(pid));
            let (code, out, err) =
                env.block_on(c.exec_sync(&id, &["cat", "/proc/self/attr/current"], 10))?;
            let exec = if code == 0 {
                confinement_label(&out)
            } else {
                format!("exit {code}: {}", err.trim())
            };
            got.insert(format!("{name}: exec"), exec);
        }
        pod.finish()?;
        seen.push(got);
    }
    let (runc, shim) = (&seen[0], &seen[1]);
    println!(
        "{}::apparmor_confinement (AppArmor {}):",
        test_prefix(env),
        if apparmor_enabled() { "on" } else { "off" }
    );
    for (what, r) in runc {
        println!("  {what:<22} runc: {r:<40} shim: {}", shim[what]);
    }
    if apparmor_enabled() {
        // The reference itself: containerd applied its default profile under runc.
        ensure!(
            runc["default: workload"] == "cri-containerd.apparmor.d (enforce)",
            "runc's container without a profile runs as {:?}, not under containerd's default \
             profile: the CRI plugin did not apply AppArmor",
            runc["default: workload"]
        );
    }
    let differ: Vec<String> = runc
        .iter()
        .filter(|(what, r)| shim.get(*what) != Some(r))
        .map(|(what, r)| format!("{what}: runc {r:?}, shim {:?}", shim.get(what)))
        .collect();
    ensure!(
        differ.is_empty(),
        "AppArmor confinement differs from runc's:\n{}",
        differ.join("\n")
    );
    Ok(())
}

/// CPU quota/shares and memory limit land in the container's cgroup (v1 on this build host, v2
/// on a node), under the pod's cgroup parent, with the values runc's container gets from the
/// same container config (the same pod under the `runc` handler).
fn case_resources(env: &CriEnv) -> Result<()> {
    let mut c = env.cri()?;
    let mut cfg = sleeper("limited", &env.images.busybox);
    {
        let r = res(&mut cfg);
        r.cpu_period = 100_000;
        r.cpu_quota = 50_000;
        r.cpu_shares = 512;
        r.memory_limit_in_bytes = 64 << 20;
    }
    let mut reference = run_pod_on(env, RUNC_HANDLER, "res-runc", |_| {})?;
    let rid = reference.run(&cfg)?;
    env.block_on(c.wait_state(&rid, state::RUNNING, Duration::from_secs(20)))?;
    let runc_limits = limits_of(env.block_on(c.container_pid(&rid))?)?;
    reference.finish()?;

    let mut pod = run_pod(env, "res", |_| {})?;
    let parent = pod
        .config
        .linux
        .as_ref()
        .map(|l| l.cgroup_parent.clone())
        .unwrap_or_default();
    let id = pod.run(&cfg)?;
    env.block_on(c.wait_state(&id, state::RUNNING, Duration::from_secs(20)))?;
    let pid = env.block_on(c.container_pid(&id))?;
    let mem = cgroup_dir(pid, "memory")?;
    match driver_of(env) {
        Driver::Lxc => ensure!(
            mem.to_string_lossy()
                .contains(parent.trim_start_matches('/')),
            "container cgroup {} is not under the pod's cgroup parent {parent}",
            mem.display()
        ),
        // A CT lives in the cgroup Proxmox gives it (limits on `lxc/VMID`, processes in
        // `lxc/VMID/ns`), not under the kubelet's pod cgroup (docs/pve-driver.md).
        Driver::Pve => {
            let vmids = pve::cts_of(&id);
            ensure!(vmids.len() == 1, "CTs of {id}: {vmids:?}");
            let path = mem.to_string_lossy().into_owned();
            ensure!(
                path.ends_with(&format!("/lxc/{}", vmids[0])),
                "container cgroup {path} is not CT {}'s",
                vmids[0]
            );
            // Said on every run rather than passed over: the pod-level cgroup (the kubelet's
            // accounting and limits of the pod as a whole) does not hold pve CTs.
            println!(
                "NOTE {}::resources: the container's cgroup is its CT's ({path}), \
                 not under the pod's cgroup parent {parent}: the pve driver keeps Proxmox's \
                 layout and does not apply linux.cgroupsPath (docs/pve-driver.md)",
                test_prefix(env)
            );
        }
    }
    let limits = limits_of(pid)?;
    println!(
        "{}::resources: cgroup v{}: runc's {runc_limits:?}, the shim's {limits:?}",
        test_prefix(env),
        if cgroup_v2_only() { 2 } else { 1 }
    );
    let want = Limits {
        memory: (64u64 << 20).to_string(),
        cpu_quota: "50000".into(),
        cpu_period: "100000".into(),
        // v1 keeps the shares; v2's weight is the runtime's conversion (runc's is the model).
        cpu_weight: if cgroup_v2_only() {
            runc_limits.cpu_weight.clone()
        } else {
            "512".into()
        },
    };
    ensure!(
        runc_limits == want,
        "runc's container (the reference) has {runc_limits:?}, want {want:?}"
    );
    ensure!(
        limits == runc_limits,
        "the shim's container has {limits:?}, runc's {runc_limits:?}"
    );
    pod.finish()
}

/// shareProcessNamespace: containers see each other's processes and the sandbox as PID 1;
/// without it they see only their own.
fn case_share_process_namespace(env: &CriEnv) -> Result<()> {
    let mut c = env.cri()?;
    let mut shared = run_pod(env, "pidshared", |p| client::pod_ns(p).pid = ns::POD)?;
    let a = shared.run(&container_config(
        "a",
        &env.images.busybox,
        &["sh", "-c", "exec sleep 31337"],
    ))?;
    let b = shared.run(&sleeper("b", &env.images.busybox))?;
    env.block_on(c.wait_state(&a, state::RUNNING, Duration::from_secs(20)))?;
    env.block_on(c.wait_state(&b, state::RUNNING, Duration::from_secs(20)))?;
    let ps = env.block_on(c.sh(&b, "ps -o pid,args"))?;
    ensure!(
        ps.contains("sleep 31337"),
        "shared pid ns: b does not see a:\n{ps}"
    );
    let pid1 = env.block_on(c.sh(&b, "tr '\\0' ' ' < /proc/1/cmdline"))?;
    ensure!(
        pid1.contains("trap 'exit 0' TERM INT"),
        "shared pid ns: PID 1 is not the pause process: {pid1:?}"
    );
    // A container without a pid namespace of its own: when its init exits, the processes it
    // left are killed (runc's shim does the same), so nothing of it outlives it in the pod.
    let c2 = shared.run(&container_config(
        "c",
        &env.images.busybox,
        &[
            "sh",
            "-c",
            "sleep 31339 & trap 'exit 0' TERM; while :; do sleep 1; done",
        ],
    ))?;
    env.block_on(c.wait_state(&c2, state::RUNNING, Duration::from_secs(20)))?;
    let ps = env.block_on(c.sh(&a, "ps -o args"))?;
    ensure!(ps.contains("sleep 31339"), "c's child not visible:\n{ps}");
    env.block_on(c.stop_container(&c2, 10))?;
    let ps = env.block_on(c.sh(&a, "sleep 0.3; ps -o args"))?;
    ensure!(
        !ps.contains("sleep 31339"),
        "a child of stopped container c still runs in the pod:\n{ps}"
    );
    shared.finish()?;

    let mut own = run_pod(env, "pidown", |_| {})?;
    let a = own.run(&container_config(
        "a",
        &env.images.busybox,
        &["sh", "-c", "exec sleep 31338"],
    ))?;
    let b = own.run(&sleeper("b", &env.images.busybox))?;
    env.block_on(c.wait_state(&a, state::RUNNING, Duration::from_secs(20)))?;
    env.block_on(c.wait_state(&b, state::RUNNING, Duration::from_secs(20)))?;
    let ps = env.block_on(c.sh(&b, "ps -o pid,args"))?;
    ensure!(!ps.contains("sleep 31338"), "own pid ns: b sees a:\n{ps}");
    let pid1 = env.block_on(c.sh(&b, "tr '\\0' ' ' < /proc/1/cmdline"))?;
    ensure!(pid1.contains("while :"), "own pid ns: PID 1 is {pid1:?}");
    own.finish()
}

/// Pod sysctls (namespaced ones) are set in the pod, not on the node.
fn case_sysctls(env: &CriEnv) -> Result<()> {
    let mut c = env.cri()?;
    let host_before = read_trim(Path::new("/proc/sys/net/ipv4/ip_unprivileged_port_start"))?;
    let mut pod = run_pod(env, "sysctl", |p| {
        p.linux.get_or_insert_with(Default::default).sysctls = HashMap::from([
            (
                "net.ipv4.ip_unprivileged_port_start".to_string(),
                "80".to_string(),
            ),
            ("kernel.shm_rmid_forced".to_string(), "1".to_string()),
        ]);
    })?;
    let id = pod.run(&sleeper("main", &env.images.busybox))?;
    env.block_on(c.wait_state(&id, state::RUNNING, Duration::from_secs(20)))?;
    let got = env.block_on(c.sh(
        &id,
        "cat /proc/sys/net/ipv4/ip_unprivileged_port_start /proc/sys/kernel/shm_rmid_forced",
    ))?;
    ensure!(
        got.split_whitespace().collect::<Vec<_>>() == ["80", "1"],
        "sysctls in the pod: {got:?}"
    );
    let host_after = read_trim(Path::new("/proc/sys/net/ipv4/ip_unprivileged_port_start"))?;
    ensure!(
        host_before == host_after,
        "node sysctl changed: {host_before} -> {host_after}"
    );
    pod.finish()
}

/// Host path mounts (read-write and read-only) and the termination message file, which the
/// kubelet mounts from the host and reads after the container ended.
fn case_mounts_and_termination_message(env: &CriEnv) -> Result<()> {
    let mut c = env.cri()?;
    let rw = env.scratch("hostpath-rw");
    let ro = env.scratch("hostpath-ro");
    std::fs::write(rw.join("from-host"), "host data\n")?;
    std::fs::write(ro.join("keep"), "read only\n")?;
    let term = env.scratch("termination").join("termination-log");
    std::fs::write(&term, "")?;
    let mut pod = run_pod(env, "mounts", |_| {})?;
    let mut cfg = container_config(
        "mounter",
        &env.images.busybox,
        &[
            "sh",
            "-c",
            "cat /data/from-host; echo written > /data/from-container; \
             if echo x > /ro/keep 2>/dev/null; then echo ro-writable; else echo ro-refused; fi; \
             cat /ro/keep; echo 'goodbye message' > /dev/termination-log; echo end; exit 2",
        ],
    );
    cfg.mounts = vec![
        v1::Mount {
            container_path: "/data".into(),
            host_path: rw.display().to_string(),
            ..Default::default()
        },
        v1::Mount {
            container_path: "/ro".into(),
            host_path: ro.display().to_string(),
            readonly: true,
            ..Default::default()
        },
        v1::Mount {
            container_path: "/dev/termination-log".into(),
            host_path: term.display().to_string(),
            ..Default::default()
        },
    ];
    let id = pod.run(&cfg)?;
    let code = env.block_on(c.wait_state(&id, state::EXITED, Duration::from_secs(20)))?;
    let lines = pod.wait_log("mounter", "end")?;
    let text: Vec<&str> = lines.iter().map(|(_, l)| l.as_str()).collect();
    ensure!(code == 2, "exit code {code} (want 2): {text:?}");
    for w in ["host data", "ro-refused", "read only"] {
        ensure!(text.contains(&w), "missing {w:?}: {text:?}");
    }
    ensure!(
        read_trim(&rw.join("from-container"))? == "written",
        "write through the rw host path did not reach the host"
    );
    ensure!(
        read_trim(&ro.join("keep"))? == "read only",
        "read-only host path was changed"
    );
    ensure!(
        std::fs::read_to_string(&term)? == "goodbye message\n",
        "termination message on the host: {:?}",
        std::fs::read_to_string(&term)?
    );
    let st = env
        .block_on(c.container_status(&id))?
        .status
        .ok_or_else(|| anyhow!("no status"))?;
    ensure!(
        st.reason == "Error" && st.exit_code == 2,
        "status {} {}",
        st.reason,
        st.exit_code
    );
    pod.finish()
}

/// A host tmpfs made a shared mount (kubelet requires a Bidirectional volume's source to be on
/// one, containerd checks it), unmounted with everything below it when dropped.
struct SharedTmpfs(PathBuf);

impl SharedTmpfs {
    fn new(path: PathBuf) -> Result<Self> {
        std::fs::create_dir_all(&path)?;
        let p = path.to_string_lossy().into_owned();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "cri-prop", &p])
            .status()?;
        ensure!(status.success(), "mount a tmpfs at {p}");
        let dir = SharedTmpfs(path);
        let status = std::process::Command::new("mount")
            .args(["--make-shared", &p])
            .status()?;
        ensure!(status.success(), "make {p} shared");
        for sub in ["in", "fromhost"] {
            std::fs::create_dir(dir.0.join(sub))?;
        }
        Ok(dir)
    }
}

impl Drop for SharedTmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-R")
            .arg(&self.0)
            .status();
    }
}

/// hostPath volumes with `mountPropagation` Bidirectional, HostToContainer and None in a
/// privileged container (as CSI node plugins have them): a mount the container makes in each
/// reaches the host only through the Bidirectional one; a mount the host makes afterwards
/// reaches the container through Bidirectional and HostToContainer, as under runc.
fn case_mount_propagation(env: &CriEnv) -> Result<()> {
    use v1::MountPropagation as P;
    let mut c = env.cri()?;
    let modes = [
        ("both", P::PropagationBidirectional),
        ("tohost", P::PropagationHostToContainer),
        ("none", P::PropagationPrivate),
    ];
    let mut dirs = Vec::new();
    for (name, _) in &modes {
        dirs.push(SharedTmpfs::new(
            env.scratch(&format!("propagation-{name}")),
        )?);
    }
    let mut pod = run_pod(env, "propagation", privileged_pod)?;
    let script = "for d in both tohost none; do \
                    mount -t tmpfs cri-in /$d/in && echo made-in-container > /$d/in/f || exit 1; done; \
                  touch /both/ready; while [ ! -e /both/go ]; do sleep 0.02; done; \
                  for d in both tohost none; do \
                    if [ -e /$d/fromhost/f ]; then echo $d=host-mount-seen; else echo $d=host-mount-not-seen; fi; done; \
                  echo end";
    let mut cfg = container_config("propagation", &env.images.busybox, &["sh", "-c", script]);
    sec(&mut cfg).privileged = true;
    cfg.mounts = modes
        .iter()
        .zip(&dirs)
        .map(|((name, mode), dir)| v1::Mount {
            container_path: format!("/{name}"),
            host_path: dir.0.display().to_string(),
            propagation: *mode as i32,
            ..Default::default()
        })
        .collect();
    let id = pod.run(&cfg)?;
    let ready = dirs[0].0.join("ready");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready.exists() {
        if Instant::now() > deadline {
            bail!("the container never got to make its mounts");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut seen_on_host = Vec::new();
    for ((name, _), dir) in modes.iter().zip(&dirs) {
        if dir.0.join("in/f").exists() {
            seen_on_host.push(*name);
        }
        let fromhost = dir.0.join("fromhost");
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "cri-fromhost", &fromhost.to_string_lossy()])
            .status()?;
        ensure!(status.success(), "mount a tmpfs at {}", fromhost.display());
        std::fs::write(fromhost.join("f"), "made-on-host\n")?;
    }
    std::fs::write(dirs[0].0.join("go"), "")?;
    env.block_on(c.wait_state(&id, state::EXITED, Duration::from_secs(60)))?;
    let text = log_text(&pod.wait_log("propagation", "end")?);
    ensure!(
        seen_on_host == ["both"],
        "container mounts seen on the host through {seen_on_host:?}, expected only Bidirectional's"
    );
    for want in [
        "both=host-mount-seen",
        "tohost=host-mount-seen",
        "none=host-mount-not-seen",
    ] {
        ensure!(text.contains(want), "missing {want:?} in: {text}");
    }
    let result = pod.finish();
    drop(dirs);
    result
}

/// The pod user namespace's host range in `case_user_namespaces` (a multiple of 65536, as the
/// kubelet picks them).
const USERNS_HOST_ID: u32 = 31 * 65536;

/// What a `hostUsers: false` pod's container sees and leaves: its maps and ids, the owners of
/// its rootfs and volumes inside, and the host owners of the files it made in them.
fn userns_transcript(env: &CriEnv, handler: &str, idmapped_volumes: bool) -> Result<String> {
    use std::os::unix::fs::PermissionsExt;
    let tag = if handler == RUNC_HANDLER {
        "runc"
    } else {
        "shim"
    };
    // An emptyDir (the kubelet makes it 0777, root's) and a hostPath with files of root's and
    // of uid 1000's.
    let empty = env.scratch(&format!("userns-{tag}-empty"));
    let host = env.scratch(&format!("userns-{tag}-host"));
    for d in [&empty, &host] {
        let _ = std::fs::remove_dir_all(d);
        std::fs::create_dir_all(d)?;
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o777))?;
    }
    std::fs::write(host.join("root-file"), "r\n")?;
    std::fs::write(host.join("app-file"), "a\n")?;
    std::os::unix::fs::chown(host.join("app-file"), Some(1000), Some(1000))?;
    // Search permission for the container's root (an unprivileged host uid) on the way in.
    let mut dir = host.parent();
    while let Some(d) = dir {
        let mode = std::fs::metadata(d)?.permissions().mode();
        if mode & 0o001 == 0 {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(mode | 0o001))?;
        }
        dir = d.parent();
    }
    let range = |id: u32| {
        vec![v1::IdMapping {
            container_id: 0,
            host_id: id,
            length: 65536,
        }]
    };
    let userns = v1::UserNamespace {
        mode: ns::POD,
        uids: range(USERNS_HOST_ID),
        gids: range(USERNS_HOST_ID),
    };
    let mut c = env.cri()?;
    let mut pod = run_pod_on(env, handler, &format!("userns-{tag}"), |p| {
        client::pod_ns(p).userns_options = Some(userns.clone());
    })?;
    let script = "cat /proc/self/uid_map /proc/self/gid_map; id -u; id -g; \
                  stat -c 'rootfs %u:%g' /; stat -c 'etc %u:%g' /etc/passwd; \
                  stat -c 'empty %u:%g %a' /empty; \
                  stat -c 'host %u:%g' /host /host/root-file /host/app-file; \
                  touch /empty/made /host/made && echo made; echo end";
    let mut cfg = container_config("userns", &env.images.busybox, &["sh", "-c", script]);
    let maps = idmapped_volumes.then(|| (range(USERNS_HOST_ID), range(USERNS_HOST_ID)));
    cfg.mounts = [("/empty", &empty), ("/host", &host)]
        .into_iter()
        .map(|(at, dir)| v1::Mount {
            container_path: at.to_string(),
            host_path: dir.display().to_string(),
            // As the kubelet gives them for a hostUsers: false pod (KEP-127).
            uid_mappings: maps.clone().map(|m| m.0).unwrap_or_default(),
            gid_mappings: maps.clone().map(|m| m.1).unwrap_or_default(),
            ..Default::default()
        })
        .collect();
    let id = pod.run(&cfg)?;
    env.block_on(c.wait_state(&id, state::EXITED, Duration::from_secs(60)))?;
    let mut text = log_text(&pod.wait_log("userns", "end")?);
    let owner = |p: &Path| -> Result<String> {
        let m = std::fs::metadata(p)?;
        Ok(format!(
            "{}:{}",
            std::os::unix::fs::MetadataExt::uid(&m),
            std::os::unix::fs::MetadataExt::gid(&m)
        ))
    };
    text.push_str(&format!(
        "\non the host: empty/made {} host/made {}",
        owner(&empty.join("made"))?,
        owner(&host.join("made"))?
    ));
    // An exec (kubectl exec) in a second container of the pod: in the pod's user namespace,
    // as root there and as another user.
    let sleeper_id = pod.run(&sleeper("userns-exec", &env.images.busybox))?;
    env.block_on(c.wait_state(&sleeper_id, state::RUNNING, Duration::from_secs(30)))?;
    let exec = env.block_on(c.sh(
        &sleeper_id,
        "cat /proc/self/uid_map; id -u; stat -c 'rootfs %u:%g' /; su -s /bin/sh nobody -c 'id -u' 2>&1 || true",
    ))?;
    text.push_str("\nexec:\n");
    text.push_str(exec.trim_end());
    let ids: Vec<String> = std::iter::once(pod.id.clone())
        .chain(pod.containers.iter().cloned())
        .collect();
    pod.finish()?;
    // The bind sources the shim staged for the container's root (`<state dir>.binds/N`) are
    // gone with the pod.
    let dirs: Vec<String> = ids
        .iter()
        .map(|id| {
            let state = shim::task::record::state_dir_for("k8s.io", id);
            format!("{}/", shim::host::mounts::staged::binds_dir(&state).display())
        })
        .collect();
    let staged: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")?
        .lines()
        .filter(|l| dirs.iter().any(|d| l.contains(d.as_str())))
        .map(str::to_string)
        .collect();
    ensure!(staged.is_empty(), "staged binds left mounted: {staged:?}");
    Ok(text)
}

/// A pod with `hostUsers: false` (CRI `userns_options`, mode POD) and a container with an
/// emptyDir and a hostPath volume, under runc and under this shim: the same maps, ids and
/// owners. containerd 2.x idmaps the rootfs (the overlay snapshotter's `uidmap=`/`gidmap=`
/// options) and passes the kubelet's volume mappings on as idmapped mounts; 1.7 chowns a copy of
/// the image (remapped snapshot) and refuses mapped volumes; 1.6 ignores the request. runc here
/// may predate idmapped mounts (1.2), which it then ignores: the volumes' expectations are
/// checked on their own and compared with runc only where `runc features` lists idmap.
fn case_user_namespaces(env: &CriEnv) -> Result<()> {
    let v = &env.version.name;
    let supports_userns = !v.starts_with("1.6");
    let idmapped_volumes = !v.starts_with("1.6") && !v.starts_with("1.7");
    // containerd 2.x gives a hostUsers: false container's task runc's options (the stdio
    // owner, internal/cri/server/container_start_linux.go `updateContainerIOOwner`), which
    // fails for any other options type: "can't unmarshal type runtimeoptions.v1.Options".
    // Such pods need the handler without options, as would any non-runc runtime.
    let handler = if idmapped_volumes {
        PLAIN_HANDLER
    } else {
        cri::env::HANDLER
    };
    let runc_idmaps = std::process::Command::new("runc")
        .arg("features")
        .output()
        .ok()
        .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
        .is_some_and(|f| f["linux"]["mountExtensions"]["idmap"]["enabled"] == true);
    let ours = userns_transcript(env, handler, idmapped_volumes)?;
    eprintln!("user_namespaces: containerd {v}, the shim's pod:\n{ours}");
    // containerd 2.x refuses any hostUsers: false container under a runc without idmapped
    // mounts (its /etc/hosts is one): no reference then, only the expectations below.
    let runc = if idmapped_volumes && !runc_idmaps {
        eprintln!(
            "user_namespaces: runc here predates idmapped mounts (1.2), which containerd {v} \
             needs for this pod: the shim is checked against the expectations alone"
        );
        None
    } else {
        Some(userns_transcript(env, "runc", idmapped_volumes)?)
    };
    let line = |text: &str, prefix: &str| -> String {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_default()
            .to_string()
    };
    let expect = |text: &str, prefix: &str, want: &str, who: &str| -> Result<()> {
        ensure!(
            line(text, prefix) == want,
            "{who}: expected {want:?}, got {:?} in:\n{text}",
            line(text, prefix)
        );
        Ok(())
    };
    let map = if supports_userns {
        format!("0 {USERNS_HOST_ID} 65536")
    } else {
        "0 0 4294967295".to_string()
    };
    let first_line = |text: &str| -> String {
        text.lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    for (who, text) in std::iter::once(("shim", &ours)).chain(runc.iter().map(|r| ("runc", r))) {
        ensure!(
            first_line(text) == map,
            "{who}: uid_map is not {map:?}:\n{text}"
        );
        expect(text, "rootfs ", "rootfs 0:0", who)?;
        expect(text, "etc ", "etc 0:0", who)?;
        ensure!(
            text.contains("\nmade"),
            "{who}: could not write the volumes:\n{text}"
        );
        let exec = text.split("\nexec:\n").nth(1).unwrap_or_default();
        ensure!(
            first_line(exec) == map && exec.contains("\n0\nrootfs 0:0\n65534"),
            "{who}: the exec is not in the pod's user namespace as root (then nobody):\n{text}"
        );
    }
    if idmapped_volumes {
        // Idmapped: the host's root owns them inside as the container's root, what the
        // container's root makes is root's on the host (runtime-spec, runc 1.2).
        expect(&ours, "empty ", "empty 0:0 777", "shim")?;
        ensure!(
            ours.contains("host 0:0\nhost 0:0\nhost 1000:1000"),
            "shim: hostPath owners inside:\n{ours}"
        );
        ensure!(
            ours.contains("\non the host: empty/made 0:0 host/made 0:0\n"),
            "shim: owners on the host:\n{ours}"
        );
    }
    // What the kubelet is told (it refuses hostUsers: false pods on a handler without
    // `user_namespaces`): containerd 2.1-2.3 introspect only runtime type
    // io.containerd.runc.v2 (internal/cri/server/service.go `introspectRuntimeFeatures`), so
    // this shim's handlers say false whatever its features document lists; runc's says what
    // runc's features give (`user` and `mountExtensions.idmap`).
    if idmapped_volumes {
        let status = env.block_on(env.cri()?.status())?;
        let userns_of = |name: &str| {
            status
                .runtime_handlers
                .iter()
                .find(|h| h.name == name)
                .and_then(|h| h.features.as_ref())
                .is_some_and(|f| f.user_namespaces)
        };
        eprintln!(
            "user_namespaces: CRI handler features: runc {}, {} {}, {PLAIN_HANDLER} {}",
            userns_of("runc"),
            cri::env::HANDLER,
            userns_of(cri::env::HANDLER),
            userns_of(PLAIN_HANDLER)
        );
        ensure!(
            userns_of("runc") == runc_idmaps,
            "runc's handler: user_namespaces is not {runc_idmaps}"
        );
        ensure!(
            !userns_of(cri::env::HANDLER) && !userns_of(PLAIN_HANDLER),
            "containerd {v} now introspects this runtime: update README's user namespace row"
        );
    }
    // Everything as runc, where runc can run it.
    if let Some(runc) = runc {
        ensure!(
            ours == runc,
            "differs from runc:\nshim:\n{ours}\nrunc:\n{runc}"
        );
    }
    Ok(())
}

/// One shim process serves the whole pod, whatever the number of containers; the LXC
/// containers live in the lxcpath the runtime options name.
fn case_one_shim_per_pod(env: &CriEnv) -> Result<()> {
    let mut c = env.cri()?;
    let mut pod = run_pod(env, "oneshim", |_| {})?;
    let mut ids = Vec::new();
    for n in ["one", "two", "three"] {
        let id = pod.run(&sleeper(n, &env.images.busybox))?;
        env.block_on(c.wait_state(&id, state::RUNNING, Duration::from_secs(20)))?;
        ids.push(id);
    }
    let shims = env.shim_processes();
    let pod_shims: Vec<_> = shims
        .iter()
        .filter(|p| p.cmdline.contains(&format!("-id {}", pod.id)))
        .collect();
    ensure!(
        pod_shims.len() == 1,
        "{} shim processes for the pod: {pod_shims:?}",
        pod_shims.len()
    );
    for id in &ids {
        ensure!(
            !shims
                .iter()
                .any(|p| p.cmdline.contains(&format!("-id {id}"))),
            "container {id} got a shim of its own"
        );
        ensure!(
            container_exists(env, id),
            "LXC container {id} not in the lxcpath from the runtime options ({}), or no CT with its tag",
            env.lxc_dir().display()
        );
        // The container's own mounts (proc, sys, dev, ...) stay in its mount namespace: the
        // node sees only the rootfs mount the shim made.
        let leaked: Vec<_> = e2e::host::mounts_containing(id)
            .into_iter()
            .filter(|m| !m.ends_with("rootfs"))
            .collect();
        ensure!(
            leaked.is_empty(),
            "mounts of container {id} visible on the node: {leaked:?}"
        );
        ensure!(
            !Path::new(e2e::SHIM_LXCPATH)
                .join("k8s.io")
                .join(id)
                .exists(),
            "LXC container {id} in the default lxcpath: runtime options were not honoured"
        );
    }
    // Every container's processes run under that one shim's supervision: the shim's pid is
    // what containerd reports for the pod's tasks.
    let shim_pid = pod_shims[0].pid;
    let resp = env.block_on(c.container_status(&ids[0]))?;
    let info: serde_json::Value = serde_json::from_str(
        resp.info
            .get("info")
            .ok_or_else(|| anyhow!("no verbose info"))?,
    )?;
    ensure!(info.get("pid").is_some(), "no pid in info: {info}");
    ensure!(shim_pid > 0, "shim pid");
    pod.finish()
}

/// Exec with a terminal over the streaming server (`kubectl exec -it`).
fn case_exec_tty(env: &CriEnv) -> Result<()> {
    let mut c = env.cri()?;
    let mut pod = run_pod(env, "exectty", |_| {})?;
    let id = pod.run(&sleeper("main", &env.images.busybox))?;
    env.block_on(c.wait_state(&id, state::RUNNING, Duration::from_secs(20)))?;
    let url = env.block_on(c.exec_url(v1::ExecRequest {
        container_id: id.clone(),
        cmd: vec![
            "sh".into(),
            "-c".into(),
            "tty; test -t 0 && test -t 1 && echo both-tty; exit 4".into(),
        ],
        tty: true,
        stdin: true,
        stdout: true,
        ..Default::default()
    }))?;
    let r = env.block_on(cri::stream::run(&url, None))?;
    let out = String::from_utf8_lossy(&r.stdout);
    ensure!(
        out.contains("/dev/pts/") && out.contains("both-tty\r\n") && r.exit_code == 4,
        "tty exec: {out:?} exit {} status {}",
        r.exit_code,
        r.status
    );
    pod.finish()
}

/// cgroup v2: a container's pids limit through CRI's `unified` resources (`pids.max`; the
/// kubelet's pod-level pids limit is on its own pod cgroup, not the runtime's), under runc and
/// under the shim: the same `pids.max` where the container's limits are, and forks beyond it
/// refused inside the container. On cgroup v1 there is no `unified`: said, not run.
fn case_pids_limit(env: &CriEnv) -> Result<()> {
    if !cgroup_v2_only() {
        eprintln!(
            "cri: {}::pids_limit: SKIP on this cgroup v1 host (CRI's unified resources are v2 \
             files); the node twin runs it",
            test_prefix(env)
        );
        return Ok(());
    }
    const LIMIT: usize = 16;
    let mut c = env.cri()?;
    let mut cfg = sleeper("pids", &env.images.busybox);
    res(&mut cfg)
        .unified
        .insert("pids.max".into(), LIMIT.to_string());
    let view = |c: &mut Cri, id: &str| -> Result<(String, bool, bool)> {
        env.block_on(c.wait_state(id, state::RUNNING, Duration::from_secs(20)))?;
        let pid = env.block_on(c.container_pid(id))?;
        let max = read_trim(&cgroup_dir(pid, "pids")?.join("pids.max"))?;
        let (_, _, err) = env.block_on(c.exec_sync(
            id,
            &["sh", "-c", "for i in $(seq 40); do sleep 30 & done"],
            30,
        ))?;
        // Read on the host: inside, at the limit, even `ls` could not fork.
        let current: usize = read_trim(&cgroup_dir(pid, "pids")?.join("pids.current"))?
            .parse()
            .unwrap_or(usize::MAX);
        Ok((max, err.contains("fork"), current <= LIMIT))
    };
    let mut reference = run_pod_on(env, RUNC_HANDLER, "pids-runc", |_| {})?;
    let rid = reference.run(&cfg)?;
    let runc = view(&mut c, &rid)?;
    reference.finish()?;
    let mut pod = run_pod(env, "pids", |_| {})?;
    let id = pod.run(&cfg)?;
    let ours = view(&mut c, &id)?;
    println!(
        "{}::pids_limit: (pids.max, a fork refused, pids.current within the limit): runc's \
         {runc:?}, the shim's {ours:?}",
        test_prefix(env)
    );
    let want = (LIMIT.to_string(), true, true);
    ensure!(
        runc == want,
        "runc's container (the reference): {runc:?}, want {want:?}"
    );
    ensure!(
        ours == runc,
        "the shim's container: {ours:?}, runc's {runc:?}"
    );
    pod.finish()
}

/// A container that exceeds its memory limit is OOM-killed: exit 137, reason OOMKilled (the
/// kubelet's restart and event logic keys on it).
fn case_oom_killed(env: &CriEnv) -> Result<()> {
    let mut c = env.cri()?;
    let mut pod = run_pod(env, "oom", |_| {})?;
    let mut cfg = container_config(
        "hog",
        &env.images.busybox,
        &["sh", "-c", "echo start; tail /dev/zero"],
    );
    {
        let r = res(&mut cfg);
        r.memory_limit_in_bytes = 24 << 20;
        r.memory_swap_limit_in_bytes = 24 << 20;
    }
    let id = pod.run(&cfg)?;
    let code = env.block_on(c.wait_state(&id, state::EXITED, Duration::from_secs(60)))?;
    let st = env
        .block_on(c.container_status(&id))?
        .status
        .ok_or_else(|| anyhow!("no status"))?;
    ensure!(
        code == 137 && st.reason == "OOMKilled",
        "memory hog ended with {code}, reason {:?}",
        st.reason
    );
    pod.finish()
}

/// The kubelet's restart of a crashed container: a new container of the same name with the
/// next attempt number in the same pod (and shim), its own log.
fn case_restart_attempt(env: &CriEnv) -> Result<()> {
    let mut c = env.cri()?;
    let mut pod = run_pod(env, "restart", |_| {})?;
    let mut first = container_config(
        "crash",
        &env.images.busybox,
        &["sh", "-c", "echo attempt-0; exit 1"],
    );
    first.log_path = "crash/0.log".into();
    std::fs::create_dir_all(pod.log_dir.join("crash"))?;
    let id0 = pod.run(&first)?;
    let code = env.block_on(c.wait_state(&id0, state::EXITED, Duration::from_secs(20)))?;
    ensure!(code == 1, "attempt 0 exited {code}");
    let mut second = container_config(
        "crash",
        &env.images.busybox,
        &["sh", "-c", "echo attempt-1; exit 0"],
    );
    second.log_path = "crash/1.log".into();
    if let Some(m) = second.metadata.as_mut() {
        m.attempt = 1;
    }
    let id1 = pod.run(&second)?;
    let code = env.block_on(c.wait_state(&id1, state::EXITED, Duration::from_secs(20)))?;
    ensure!(code == 0, "attempt 1 exited {code}");
    for (file, want) in [("crash/0.log", "attempt-0"), ("crash/1.log", "attempt-1")] {
        let text = std::fs::read_to_string(pod.log_dir.join(file))?;
        let lines = parse_cri_log(&text)?;
        ensure!(
            lines == vec![("stdout".to_string(), want.to_string())],
            "{file}: {lines:?}"
        );
    }
    let shims: Vec<_> = env
        .shim_processes()
        .into_iter()
        .filter(|p| p.cmdline.contains(&format!("-id {}", pod.id)))
        .collect();
    ensure!(
        shims.len() == 1,
        "shims for the pod after a restart: {shims:?}"
    );
    pod.finish()
}

/// A crash loop as the kubelet drives it: each attempt a new container in the same pod (and
/// shim), the previous one removed. With the pve driver every attempt is a new CT started with
/// `systemctl start pve-container@VMID` on a node, which systemd refuses after 5 starts of one
/// VMID within 10 s (the test node enforces that, and logs each refused start task; the driver
/// would retry such a start after 10 s): no start on the node may have been refused. (containerd
/// deletes an exited container's task, and with it the CT, so the VMIDs are gone by then.)
fn case_crash_loop(env: &CriEnv) -> Result<()> {
    const ATTEMPTS: u32 = 8;
    let mut c = env.cri()?;
    let mut pod = run_pod(env, "crashloop", |_| {})?;
    std::fs::create_dir_all(pod.log_dir.join("loop"))?;
    let mut previous: Option<String> = None;
    for attempt in 0..ATTEMPTS {
        let mut config = container_config(
            "loop",
            &env.images.busybox,
            &["sh", "-c", &format!("echo attempt-{attempt}; exit 1")],
        );
        config.log_path = format!("loop/{attempt}.log");
        if let Some(m) = config.metadata.as_mut() {
            m.attempt = attempt;
        }
        let id = pod.run(&config)?;
        let code = env.block_on(c.wait_state(&id, state::EXITED, Duration::from_secs(30)))?;
        ensure!(code == 1, "attempt {attempt} exited {code}");
        if let Some(old) = previous.replace(id) {
            env.block_on(c.remove_container(&old))?;
        }
    }
    for attempt in 0..ATTEMPTS {
        let file = format!("loop/{attempt}.log");
        let lines = parse_cri_log(&std::fs::read_to_string(pod.log_dir.join(&file))?)?;
        ensure!(
            lines == vec![("stdout".to_string(), format!("attempt-{attempt}"))],
            "{file}: {lines:?}"
        );
    }
    if driver_of(env) == Driver::Pve {
        let refused = pve::task_logs_with("attempted too often");
        ensure!(
            refused.is_empty(),
            "starts refused by systemd's start limit: {refused:?}"
        );
    }
    pod.finish()
}

/// Log rotation: the kubelet renames the log file and calls ReopenContainerLog; new output goes
/// to a new file.
fn case_log_reopen(env: &CriEnv) -> Result<()> {
    let mut c = env.cri()?;
    let mut pod = run_pod(env, "logreopen", |_| {})?;
    let id = pod.run(&container_config(
        "ticker",
        &env.images.busybox,
        &[
            "sh",
            "-c",
            "trap 'exit 0' TERM; i=0; while :; do echo tick-$i; i=$((i+1)); sleep 0.1; done",
        ],
    ))?;
    pod.wait_log("ticker", "tick-3")?;
    let log = pod.log_file("ticker");
    let rotated = log.with_extension("log.1");
    std::fs::rename(&log, &rotated)?;
    env.block_on(async {
        c.rt.reopen_container_log(v1::ReopenContainerLogRequest {
            container_id: id.clone(),
        })
        .await
    })
    .map_err(|e| anyhow!("ReopenContainerLog: {}", e.message()))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if parse_cri_log(&text)?.len() >= 3 {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "no output in the reopened log: {text:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let old_len = std::fs::metadata(&rotated)?.len();
    std::thread::sleep(Duration::from_millis(400));
    ensure!(
        std::fs::metadata(&rotated)?.len() == old_len,
        "the rotated log still grows"
    );
    env.block_on(c.stop_container(&id, 10))?;
    pod.finish()
}

/// examples/pod.yaml run the way the kubelet runs it (RuntimeClass handler -> runtime_handler,
/// the container's command, args, security context and limits mapped to CRI), with the image
/// taken from the local registry: the page it serves, its user and its cgroup limits.
fn case_example_pod(env: &CriEnv) -> Result<()> {
    let rc = cri::examples::load_runtime_class()?;
    ensure!(
        rc.handler == cri::env::HANDLER,
        "RuntimeClass handler {}",
        rc.handler
    );
    let example = cri::examples::load_pod()?;
    let mut c = env.cri()?;
    let mut pod = run_pod(env, &example.metadata.name, |_| {})?;
    let mut ids = Vec::new();
    for container in &example.spec.containers {
        let cfg = cri::examples::kubelet_container_config(container, &env.images.busybox)?;
        let id = pod.run(&cfg)?;
        env.block_on(c.wait_state(&id, state::RUNNING, Duration::from_secs(20)))?;
        ids.push((id, container));
    }
    let (id, container) = &ids[0];
    let port = container
        .ports
        .first()
        .map(|p| p.container_port)
        .unwrap_or(8080);
    let page = env.block_on(c.sh(
        id,
        &wget_retry(&format!("http://127.0.0.1:{port}/index.html")),
    ))?;
    ensure!(
        page.trim() == format!("hello from {}", example.metadata.name),
        "example pod served {page:?}"
    );
    // ExecSync runs with the container's user and (dropped) capabilities, bounding set too.
    let user = env.block_on(c.sh(id, "id -u; grep -E '^Cap(Eff|Prm|Bnd)' /proc/self/status"))?;
    ensure!(
        user.starts_with("1000\n")
            && user.contains("CapEff:\t0000000000000000")
            && user.contains("CapPrm:\t0000000000000000")
            && user.contains("CapBnd:\t0000000000000000"),
        "example pod exec user/caps: {user:?}"
    );
    let pid = env.block_on(c.container_pid(id))?;
    let limits = limits_of(pid)?;
    ensure!(
        limits.cpu_quota == "50000" && limits.memory == (64u64 << 20).to_string(),
        "example pod limits: {limits:?}"
    );
    pod.finish()
}

/// Containers that exit at once, one after another in one pod: each exit must reach containerd
/// (its Wait may arrive after the exit), as the kubelet's init containers and crash loops need.
fn case_fast_exits(env: &CriEnv) -> Result<()> {
    let mut c = env.cri()?;
    let mut pod = run_pod(env, "fastexit", |_| {})?;
    for i in 0..15u32 {
        let mut cfg =
            container_config("fast", &env.images.busybox, &["sh", "-c", "echo x; exit 3"]);
        cfg.log_path = format!("fast-{i}.log");
        if let Some(m) = cfg.metadata.as_mut() {
            m.attempt = i;
        }
        let id = pod.run(&cfg)?;
        let code = env
            .block_on(c.wait_state(&id, state::EXITED, Duration::from_secs(10)))
            .map_err(|e| anyhow!("container {i}: {e}"))?;
        ensure!(code == 3, "container {i} exited {code}");
    }
    pod.finish()
}

/// A short smoke of the whole path, for the other containerd versions.
fn case_smoke(env: &CriEnv) -> Result<()> {
    let mut c = env.cri()?;
    let mut pod = run_pod(env, "smoke", |_| {})?;
    let id = pod.run(&container_config(
        "main",
        &env.images.busybox,
        &[
            "sh",
            "-c",
            "echo smoke-out; trap 'exit 0' TERM; while :; do sleep 1; done",
        ],
    ))?;
    env.block_on(c.wait_state(&id, state::RUNNING, Duration::from_secs(20)))?;
    pod.wait_log("main", "smoke-out")?;
    ensure!(
        container_exists(env, &id),
        "LXC container not in the lxcpath given in the runtime options ({}), or no CT with its tag",
        env.lxc_dir().display()
    );
    let ip = env
        .block_on(c.pod_status(&pod.id))?
        .status
        .and_then(|s| s.network)
        .map(|n| n.ip)
        .unwrap_or_default();
    let addrs = env.block_on(c.sh(&id, "ip -4 -o addr show dev eth0"))?;
    ensure!(
        addrs.contains(&format!("inet {ip}/")),
        "eth0 {addrs:?}, CRI says {ip}"
    );
    let (code, out, _) = env.block_on(c.exec_sync(&id, &["sh", "-c", "echo hi; exit 7"], 10))?;
    ensure!(code == 7 && out == "hi\n", "ExecSync: {code} {out:?}");
    let stats = env.block_on(c.stats(&id))?;
    ensure!(
        stats
            .memory
            .and_then(|m| m.working_set_bytes)
            .map(|v| v.value)
            .unwrap_or(0)
            > 0,
        "no memory stats"
    );
    env.block_on(c.stop_container(&id, 10))?;
    let (st, code) = env.block_on(c.container_state(&id))?;
    ensure!(
        st == state::EXITED && code == 0,
        "stop: state {st} code {code}"
    );
    env.block_on(c.remove_container(&id))?;
    pod.finish()
}

// ---------------------------------------------------------------------------------------------
// The harness

type Case = fn(&CriEnv) -> Result<()>;

fn skip_reason() -> Option<String> {
    if !e2e::host::is_root() {
        return Some("not root: containerd, LXC and CNI need root".into());
    }
    for (path, pkg) in [
        ("/usr/lib/cni/bridge", "containernetworking-plugins"),
        ("/usr/lib/cni/host-local", "containernetworking-plugins"),
        ("/usr/lib/cni/loopback", "containernetworking-plugins"),
        (cri::registry::REGISTRY_BINARY, "docker-registry"),
        ("/usr/bin/lxc-start", "lxc"),
        (e2e::image::BUSYBOX_PATH, "busybox-static"),
    ] {
        if !Path::new(path).exists() {
            return Some(format!("{path} missing: install {pkg} (scripts/setup.sh)"));
        }
    }
    None
}

/// pve driver: while a pod runs, each of its containers (the sandbox too) is a CT that
/// `/cluster/resources` lists on this node, running, with tags naming the Kubernetes namespace,
/// pod and container and notes saying the same, so an operator can tell in the Proxmox GUI what
/// it is; the workload is that CT's init; after removal no CT of the pod is listed (and
/// `finish` checks nothing else is left).
fn case_pve_cts_listed(env: &CriEnv) -> Result<()> {
    let mut c = env.cri()?;
    let mut pod = run_pod(env, "pve-tags", |_| {})?;
    let id = pod.run(&sleeper("web", &env.images.busybox))?;
    let sidecar = pod.run(&sleeper("sidecar", &env.images.busybox))?;
    for cid in [&id, &sidecar] {
        env.block_on(c.wait_state(cid, state::RUNNING, Duration::from_secs(20)))?;
    }
    let resources = pve::resources()?;
    let node = pve::node_name().ok_or_else(|| anyhow!("the pve node is not running"))?;
    let range = pve::range();
    let mut listed = Vec::new();
    for (what, cid, kind_tag, note) in [
        (
            "container",
            id.as_str(),
            "k8s-ctr-web",
            "Kubernetes container: web",
        ),
        (
            "sidecar",
            sidecar.as_str(),
            "k8s-ctr-sidecar",
            "Kubernetes container: sidecar",
        ),
        (
            "sandbox",
            pod.id.as_str(),
            "k8s-sandbox",
            "Kubernetes pod sandbox",
        ),
    ] {
        let vmids = pve::cts_of(cid);
        ensure!(
            vmids.len() == 1,
            "{what} {cid}: CTs with its tag: {vmids:?}"
        );
        let vmid = vmids[0];
        ensure!(
            (range[0]..=range[1]).contains(&vmid),
            "{what}: VMID {vmid} outside the configured range {range:?}"
        );
        let ct = resources
            .iter()
            .find(|r| r.vmid == Some(vmid))
            .ok_or_else(|| anyhow!("{what}: CT {vmid} not in /cluster/resources"))?;
        ensure!(
            ct.kind == "lxc" && ct.status.as_deref() == Some("running"),
            "{what}: CT {vmid} type {} status {:?}",
            ct.kind,
            ct.status
        );
        ensure!(
            ct.node.as_deref() == Some(node.as_str()),
            "{what}: CT {vmid} on node {:?}, the shim's node is {node}",
            ct.node
        );
        let tags = ct.tags.clone().unwrap_or_default();
        let tag_list: Vec<&str> = tags.split([';', ',', ' ']).collect();
        for t in ["k8s-ns-cri-e2e", "k8s-pod-pve-tags", kind_tag]
            .into_iter()
            .chain([pve::tag_of(cid).as_str()])
        {
            ensure!(
                tag_list.contains(&t),
                "{what}: CT {vmid} tags {tags:?} lack {t:?}"
            );
        }
        // The CT's notes in the GUI.
        let notes =
            pve::description(vmid).ok_or_else(|| anyhow!("CT {vmid}: no config or notes"))?;
        for want in [
            format!("OCI container {cid}"),
            "Kubernetes pod: cri-e2e/pve-tags".to_string(),
            note.to_string(),
            format!("containerd: k8s.io/{cid}"),
        ] {
            ensure!(
                notes.lines().any(|l| l == want),
                "{what}: CT {vmid} notes lack {want:?}:\n{notes}"
            );
        }
        ensure!(
            Path::new(pve::LXCPATH).join(vmid.to_string()).is_dir(),
            "{what}: CT {vmid} has no LXC container in {}",
            pve::LXCPATH
        );
        println!(
            "{}: {what} is CT {vmid} named {:?}, tags {tags}",
            test_prefix(env),
            ct.name.as_deref().unwrap_or("")
        );
        listed.push((cid.to_string(), vmid));
    }
    // The workload CRI reports is the CT's init, as LXC sees it.
    let pid = env.block_on(c.container_pid(&id))?;
    let out = std::process::Command::new("lxc-info")
        .args([
            "-p",
            "-H",
            "-n",
            &listed[0].1.to_string(),
            "-P",
            pve::LXCPATH,
        ])
        .output()?;
    let ct_pid = String::from_utf8_lossy(&out.stdout).trim().to_string();
    ensure!(
        ct_pid == pid.to_string(),
        "CT {} init pid {ct_pid:?}, CRI says the container's is {pid}",
        listed[0].1
    );
    pod.finish()?;
    let resources = pve::resources()?;
    for (cid, vmid) in &listed {
        let tag = pve::tag_of(cid);
        ensure!(
            !resources
                .iter()
                .any(|r| r.tags.as_deref().is_some_and(|t| t.contains(&tag))),
            "CT {vmid} of {cid} still in /cluster/resources after the pod was removed"
        );
    }
    Ok(())
}

fn main() {
    let args = Arguments::from_args();
    if e2e::host::is_root() {
        cri::env::reap_stale();
    }
    let mut trials = Vec::new();
    let skip = skip_reason();
    if let Some(reason) = &skip {
        eprintln!("cri: SKIPPING every CRI test: {reason}");
    }
    let main_cases: [(&str, Case); 13] = [
        ("lifecycle", case_lifecycle),
        ("exec_streaming", case_exec_streaming),
        ("networking", case_networking),
        ("host_network", case_host_network),
        ("image_config", case_image_config),
        ("security_context", case_security_context),
        ("privileged", case_privileged),
        ("masked_paths", case_masked_paths),
        ("resources", case_resources),
        ("apparmor_confinement", case_apparmor_confinement),
        ("share_process_namespace", case_share_process_namespace),
        ("sysctls", case_sysctls),
        (
            "mounts_and_termination_message",
            case_mounts_and_termination_message,
        ),
    ];
    let extra: [(&str, Case); 11] = [
        ("one_shim_per_pod", case_one_shim_per_pod),
        ("mount_propagation", case_mount_propagation),
        ("example_pod", case_example_pod),
        ("exec_tty", case_exec_tty),
        ("oom_killed", case_oom_killed),
        ("pids_limit", case_pids_limit),
        ("restart_attempt", case_restart_attempt),
        ("crash_loop", case_crash_loop),
        ("log_reopen", case_log_reopen),
        ("fast_exits", case_fast_exits),
        ("user_namespaces", case_user_namespaces),
    ];
    // Every case on every containerd with the lxc driver (1.6 passes options by ConfigPath, 1.7
    // and 2.1 inline), and on the system's containerd with the pve driver.
    let mut setups: Vec<(
        String,
        std::result::Result<ContainerdVersion, String>,
        Driver,
    )> = ContainerdVersion::all()
        .into_iter()
        .map(|(name, version)| (name, version, Driver::Lxc))
        .collect();
    let system = ContainerdVersion::system();
    let system_name = system
        .as_ref()
        .map(|v| v.name.clone())
        .unwrap_or_else(|_| "system".into());
    setups.push((format!("{system_name}-pve"), system, Driver::Pve));
    for (name, version, driver) in setups {
        let mut cases: Vec<(&str, Case)> = main_cases
            .iter()
            .chain(extra.iter())
            .cloned()
            .chain(std::iter::once(("smoke", case_smoke as Case)))
            .collect();
        if driver == Driver::Pve {
            cases.push(("proxmox_cts_listed_with_pod_tags", case_pve_cts_listed));
        }
        for (case, f) in cases {
            let test_name = format!("containerd-{name}::{case}");
            let unavailable = match (&skip, &version) {
                (Some(r), _) => Some(r.clone()),
                (None, Err(e)) => Some(e.clone()),
                (None, Ok(_)) => None,
            };
            let ignored = unavailable.is_some();
            let version = version.clone();
            let trial = Trial::test(test_name.clone(), move || {
                if let Some(reason) = unavailable {
                    eprintln!("cri: SKIP {test_name}: {reason}");
                    return Ok(());
                }
                let version = version.map_err(Failed::from)?;
                let env = env_for(&version, driver).map_err(|e| Failed::from(format!("{e:#}")))?;
                f(&env).map_err(|e| {
                    Failed::from(format!(
                        "{e:#}\n(containerd log: {})",
                        env.log_path().display()
                    ))
                })
            });
            trials.push(trial.with_ignored_flag(ignored));
        }
    }
    let conclusion = libtest_mimic::run(&args, trials);
    // Teardown of every environment that was started; leftovers fail the run.
    let mut leftovers = Vec::new();
    let started: Vec<_> = envs()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .drain()
        .filter_map(|(_, e)| e.ok())
        .collect();
    for env in started {
        for l in env.teardown() {
            leftovers.push(format!("{}: {l}", test_prefix(&env)));
        }
    }
    for l in pve::teardown() {
        leftovers.push(format!("the pve node: {l}"));
    }
    if let Some(Ok(shared)) = SHARED.get() {
        shared.registry.stop();
        let _ = std::fs::remove_dir_all(&shared.registry.dir);
    }
    if !leftovers.is_empty() {
        eprintln!("cri: teardown found leftovers:\n{}", leftovers.join("\n"));
        std::process::exit(101);
    }
    conclusion.exit();
}
