//! Pods as the kubelet makes them (its masked and read-only paths), the checks that a removed
//! pod left nothing behind, and container configs the cases share.

use crate::harness::*;

/// The kubelet's defaults for `procMount: Default` (k8s.io/kubernetes securitycontext).
pub const KUBELET_MASKED_PATHS: [&str; 11] = [
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
pub const KUBELET_READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// A pod made by a case. `finish` removes it as the kubelet does and checks for leftovers;
/// dropping it unfinished (a failed case) still removes it.
pub struct Pod<'a> {
    pub env: &'a CriEnv,
    pub id: String,
    pub config: v1::PodSandboxConfig,
    pub log_dir: PathBuf,
    pub netns: Option<String>,
    pub containers: Vec<String>,
    pub done: bool,
}

pub fn run_pod<'a>(
    env: &'a CriEnv,
    name: &str,
    tweak: impl FnOnce(&mut v1::PodSandboxConfig),
) -> Result<Pod<'a>> {
    run_pod_on(env, cri::env::HANDLER, name, tweak)
}

/// The runtime handler of the reference: runc through containerd's own shim.
pub const RUNC_HANDLER: &str = "runc";

/// As `run_pod`, with runtime handler `handler` (`RUNC_HANDLER` for the reference).
pub fn run_pod_on<'a>(
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
    /// Starts a busybox sleeper named `main` and waits until it runs; returns its id.
    pub fn run_sleeper(&mut self, c: &mut Cri) -> Result<String> {
        let id = self.run(&sleeper("main", &self.env.images.busybox))?;
        self.env
            .block_on(c.wait_state(&id, state::RUNNING, Duration::from_secs(20)))?;
        Ok(id)
    }

    pub fn cri(&self) -> Result<Cri> {
        self.env.cri()
    }

    /// CreateContainer + StartContainer. Like the kubelet, gives the container the pod's
    /// namespace options (containerd takes the container's pid mode from them).
    pub fn run(&mut self, config: &v1::ContainerConfig) -> Result<String> {
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

    pub fn log_file(&self, container_name: &str) -> PathBuf {
        self.log_dir.join(format!("{container_name}.log"))
    }

    /// Waits until the container's CRI log holds `needle` (in any stream); returns the parsed
    /// log lines (stream, content).
    pub fn wait_log(&self, container_name: &str, needle: &str) -> Result<Vec<(String, String)>> {
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
    pub fn finish(mut self) -> Result<()> {
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
pub fn parse_cri_log(text: &str) -> Result<Vec<(String, String)>> {
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
pub fn check_pod_gone(
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
pub fn sleeper(name: &str, image: &str) -> v1::ContainerConfig {
    container_config(
        name,
        image,
        &["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done"],
    )
}

/// An exec of `sh -c SCRIPT` in container `id` with its stdout attached (add the rest).
pub fn sh_exec(id: &str, script: &str) -> v1::ExecRequest {
    v1::ExecRequest {
        container_id: id.to_string(),
        cmd: vec!["sh".into(), "-c".into(), script.into()],
        stdout: true,
        ..Default::default()
    }
}

/// (busybox 1.35 wget crashes on `-T`; `timeout` bounds each try instead.)
pub fn wget_retry(url: &str) -> String {
    format!(
        "for i in $(seq 100); do timeout 5 wget -q -O- {url} && exit 0; sleep 0.2; done; exit 1"
    )
}

/// Makes a pod privileged (it may then hold privileged containers).
pub fn privileged_pod(p: &mut v1::PodSandboxConfig) {
    p.linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
        .privileged = true;
}

pub fn log_text(lines: &[(String, String)]) -> String {
    lines
        .iter()
        .map(|(_, l)| l.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}
