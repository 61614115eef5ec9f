//! A [`NodeBackend`] that runs real LXC containers, as a Proxmox VE node does, for the `pve`
//! driver's end-to-end tests.
//!
//! - Start: the CT config is turned into an LXC config the way pve-container's
//!   `update_lxc_config` does (`<lxcpath>/VMID/config`; the table in DESIGN.md: arch, the
//!   ostype's common.conf, hostname, memory/swap/cpu as `lxc.cgroup2.*`, `env` as
//!   `lxc.environment.runtime`, the raw `lxc.*` lines appended verbatim, so an `lxc.include`
//!   is honoured), then `lxc-start -F -n VMID` runs as [`Supervisor`] says:
//!   - on a host booted with systemd that has `pve-container@.service` (the node twin,
//!     scripts/twin/image.sh installs pve-container's unit) and `lxcpath` `/var/lib/lxc`:
//!     `systemctl start pve-container@VMID`, as pve-container's `PVE::LXC::vm_start` does
//!     (src/PVE/LXC.pm), so systemd's start limit, stop handling and cgroup placement apply;
//!   - elsewhere (a build host without systemd) under this backend's own supervision,
//!     imitating the unit: stdin and stdout /dev/null, stderr to a file, in its own process
//!     group, and the server imitates systemd's start limit.
//!
//!   The task ends once LXC reports RUNNING (`vm_start`'s `monitor_start` waits for that).
//! - Stop: `lxc-stop --kill`; shutdown: `lxc-stop --timeout` (`PVE::LXC::vm_stop`), then
//!   the wait for `lxc-start` to end; destroy: the LXC directory.
//!
//! The cgroup layout is Proxmox's: limits on `lxc/VMID`, the CT's processes in `lxc/VMID/ns`,
//! the monitor in `lxc.monitor/VMID`.
//!
//! The root file system is bind-mounted (not recursively) at `<lxcpath>/VMID/rootfs` by a
//! pre-start hook, as pve-container's does for a directory rootfs.
//!
//! Differences from a node, said where they matter: on a cgroup v1 host the `lxc.cgroup2.*`
//! keys Proxmox emits are ignored by LXC (logged in the task log); tests check the rendered
//! keys, not their effect.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use crate::backend::{BackendResult, NodeBackend, NodeContext, TaskLog};
use crate::ctconf::CtConfig;

/// Runs CTs as LXC containers in `lxcpath` (Proxmox: `/var/lib/lxc`).
#[derive(Debug)]
pub struct LxcNodeBackend {
    lxcpath: PathBuf,
    stderr_dir: PathBuf,
    supervisor: Supervisor,
    /// `lxc-start -F` pids by VMID, while they run ([`Supervisor::Own`]).
    running: Arc<Mutex<BTreeMap<u32, u32>>>,
}

/// Who runs a CT's `lxc-start -F`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Supervisor {
    /// systemd, through `pve-container@VMID.service`, as on a node.
    Systemd,
    /// This backend itself, imitating the unit (no systemd, or no unit, on this host).
    Own,
}

/// pve-container's template unit (src/pve-container@.service).
pub const UNIT_TEMPLATE: &str = "pve-container@.service";
/// Where systemd looks for system units (systemd.unit(5), "System Unit Search Path"), the
/// ones a package or an admin installs to.
const UNIT_DIRS: &[&str] = &[
    "/etc/systemd/system",
    "/run/systemd/system",
    "/usr/local/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
];
/// The unit's `lxc-start -F -n %i` has no `-P`: LXC's default lxcpath.
const DEFAULT_LXCPATH: &str = "/var/lib/lxc";
/// The unit's `StandardError=file:/run/pve/ct-%i.stderr`.
const PVE_RUN_DIR: &str = "/run/pve";

/// The unit of a CT.
pub fn ct_unit(vmid: u32) -> String {
    format!("pve-container@{vmid}.service")
}

/// Which supervisor fits this host for CTs in `lxcpath`, and why (for the log).
pub fn detect_supervisor(lxcpath: &Path) -> (Supervisor, String) {
    // sd_booted(3): /run/systemd/system exists only when systemd is PID 1.
    let pid1 = std::fs::read_to_string("/proc/1/comm").unwrap_or_default();
    if !Path::new("/run/systemd/system").is_dir() || pid1.trim() != "systemd" {
        return (
            Supervisor::Own,
            format!(
                "PID 1 is {:?}, not systemd: the test node supervises lxc-start itself",
                pid1.trim()
            ),
        );
    }
    let Some(unit) = UNIT_DIRS
        .iter()
        .map(|d| Path::new(d).join(UNIT_TEMPLATE))
        .find(|p| p.is_file())
    else {
        return (
            Supervisor::Own,
            format!("systemd runs, but no {UNIT_TEMPLATE} is installed: the test node supervises lxc-start itself"),
        );
    };
    if lxcpath != Path::new(DEFAULT_LXCPATH) {
        return (
            Supervisor::Own,
            format!(
                "lxcpath {} is not the unit's {DEFAULT_LXCPATH}: the test node supervises lxc-start itself",
                lxcpath.display()
            ),
        );
    }
    (
        Supervisor::Systemd,
        format!(
            "CTs start through systemd: systemctl start pve-container@VMID ({})",
            unit.display()
        ),
    )
}

/// What `systemctl show` says of a CT's unit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnitState {
    /// `ActiveState`: active, activating, deactivating, inactive, failed, ...
    pub active: String,
    /// `Result`: success, exit-code, signal, start-limit-hit, ...
    pub result: String,
    /// `MainPID`: the unit's `lxc-start` while it runs, else 0.
    pub main_pid: u32,
    /// `ControlGroup`: the unit's own cgroup.
    pub control_group: String,
}

impl UnitState {
    /// Whether the unit's `lxc-start` (or its ExecStop) still runs.
    pub fn running(&self) -> bool {
        matches!(
            self.active.as_str(),
            "active" | "activating" | "deactivating" | "reloading" | "refreshing"
        )
    }

    fn parse(text: &str) -> UnitState {
        let mut st = UnitState::default();
        for line in text.lines() {
            match line.split_once('=') {
                Some(("ActiveState", v)) => st.active = v.to_string(),
                Some(("Result", v)) => st.result = v.to_string(),
                Some(("MainPID", v)) => st.main_pid = v.parse().unwrap_or(0),
                Some(("ControlGroup", v)) => st.control_group = v.to_string(),
                _ => {}
            }
        }
        st
    }
}

/// `systemctl show` of a CT's unit (blocking).
pub fn unit_state_blocking(vmid: u32) -> Result<UnitState, String> {
    let out = std::process::Command::new("systemctl")
        .args([
            "show",
            "-p",
            "ActiveState",
            "-p",
            "Result",
            "-p",
            "MainPID",
            "-p",
            "ControlGroup",
            &ct_unit(vmid),
        ])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("systemctl show: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "systemctl show {}: {}",
            ct_unit(vmid),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(UnitState::parse(&String::from_utf8_lossy(&out.stdout)))
}

async fn unit_state(vmid: u32) -> Result<UnitState, String> {
    tokio::task::spawn_blocking(move || unit_state_blocking(vmid))
        .await
        .map_err(|e| format!("systemctl show: {e}"))?
}

/// `pve-container@VMID` units that still run (their `lxc-start` or ExecStop), by VMID:
/// what a CT left behind on a systemd host. Empty where systemd does not run.
pub fn running_ct_units() -> Vec<(u32, String)> {
    let Ok(out) = std::process::Command::new("systemctl")
        .args([
            "list-units",
            "--all",
            "--plain",
            "--no-legend",
            "--full",
            "pve-container@*.service",
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
    else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            // UNIT LOAD ACTIVE SUB DESCRIPTION...
            let cols: Vec<&str> = l.split_whitespace().collect();
            let vmid = cols
                .first()?
                .strip_prefix("pve-container@")?
                .strip_suffix(".service")?
                .parse()
                .ok()?;
            let st = UnitState {
                active: cols.get(2)?.to_string(),
                ..UnitState::default()
            };
            st.running().then(|| {
                (
                    vmid,
                    format!("{} {}", cols[0], cols[2..4.min(cols.len())].join(" ")),
                )
            })
        })
        .collect()
}

/// How long a CT may take to reach RUNNING.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `lxc-start` may take to exit after `lxc-stop`.
const STOP_WAIT: Duration = Duration::from_secs(30);

impl LxcNodeBackend {
    /// A backend with its containers in `lxcpath` and `lxc-start`'s stderr files in
    /// `stderr_dir` (Proxmox: the journal of `pve-container@VMID`).
    /// Where systemd runs with pve-container's unit (see [`detect_supervisor`]) CTs start
    /// through it; the choice is logged.
    pub fn new(lxcpath: impl Into<PathBuf>, stderr_dir: impl Into<PathBuf>) -> Self {
        let lxcpath = lxcpath.into();
        let (supervisor, why) = detect_supervisor(&lxcpath);
        tracing::info!(?supervisor, "test node: {why}");
        LxcNodeBackend {
            lxcpath,
            stderr_dir: stderr_dir.into(),
            supervisor,
            running: Arc::default(),
        }
    }

    /// Who runs the CTs' `lxc-start` here.
    pub fn supervisor(&self) -> Supervisor {
        self.supervisor
    }

    /// The LXC config file of a CT.
    pub fn lxc_config_path(&self, vmid: u32) -> PathBuf {
        self.lxcpath.join(vmid.to_string()).join("config")
    }

    fn stderr_path(&self, vmid: u32) -> PathBuf {
        match self.supervisor {
            Supervisor::Systemd => Path::new(PVE_RUN_DIR).join(format!("ct-{vmid}.stderr")),
            Supervisor::Own => self.stderr_dir.join(format!("pve-container@{vmid}.stderr")),
        }
    }

    async fn lxc_info(&self, vmid: u32, flag: &str) -> Option<String> {
        let out = tokio::process::Command::new("lxc-info")
            .arg(flag)
            .arg("-H")
            .arg("-n")
            .arg(vmid.to_string())
            .arg("-P")
            .arg(&self.lxcpath)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .await
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        out.status.success().then_some(text)
    }

    async fn lxc_stop(&self, vmid: u32, timeout: Option<Duration>) -> BackendResult {
        let mut cmd = tokio::process::Command::new("lxc-stop");
        cmd.arg("-n")
            .arg(vmid.to_string())
            .arg("-P")
            .arg(&self.lxcpath);
        match timeout {
            Some(t) => cmd.arg("-t").arg(t.as_secs().max(1).to_string()),
            None => cmd.arg("-k"),
        };
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| format!("lxc-stop: {e}"))?;
        if !out.status.success() && self.is_running_now(vmid).await {
            return Err(format!(
                "lxc-stop {vmid} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        self.wait_supervised_exit(vmid).await
    }

    /// Waits until the supervised `lxc-start` of a stopped CT has exited, after its own
    /// cleanup (post-stop hooks, the payload cgroup). Proxmox's vm_stop waits for that too
    /// (until the CT's command socket closes), and systemd starts `pve-container@VMID` again
    /// only once its previous run has ended: a CT started before then (a reused VMID) would
    /// collide with the old cgroup, and LXC would leave one behind.
    async fn wait_supervised_exit(&self, vmid: u32) -> BackendResult {
        let deadline = tokio::time::Instant::now() + STOP_WAIT;
        while self.supervised(vmid).await? {
            if tokio::time::Instant::now() > deadline {
                return Err(format!(
                    "lxc-start of CT {vmid} did not exit within {}s after the CT stopped",
                    STOP_WAIT.as_secs()
                ));
            }
            // systemctl is a process per look: poll it less often than the map.
            let pause = match self.supervisor {
                Supervisor::Systemd => 50,
                Supervisor::Own => 10,
            };
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
        Ok(())
    }

    /// Whether the CT's `lxc-start` (under systemd: its unit, ExecStop included) still runs.
    async fn supervised(&self, vmid: u32) -> Result<bool, String> {
        Ok(match self.supervisor {
            Supervisor::Systemd => unit_state(vmid).await?.running(),
            Supervisor::Own => self
                .running
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains_key(&vmid),
        })
    }

    /// `PVE::LXC::vm_start` from `systemctl start` on: the unit's `lxc-start -F -n VMID`
    /// (stderr to `/run/pve/ct-VMID.stderr`, which vm_start removes first since "systemd does
    /// not truncate log files"), then the wait for RUNNING or the unit's end.
    async fn start_unit(&self, vmid: u32, log: &TaskLog) -> BackendResult {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(PVE_RUN_DIR)
            .map_err(|e| format!("create {PVE_RUN_DIR}: {e}"))?;
        let stderr_path = self.stderr_path(vmid);
        let _ = std::fs::remove_file(&stderr_path);
        let unit = ct_unit(vmid);
        let before = unit_state(vmid).await?;
        if before.running() {
            // On a node too: `systemctl start` of a unit that is still active does nothing.
            log.line(format!(
                "note: {unit} is still {} from a previous run: systemctl start does nothing",
                before.active
            ));
            tracing::warn!(vmid, "{unit} still {} at start", before.active);
        }
        let out = tokio::process::Command::new("systemctl")
            .arg("start")
            .arg(&unit)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| format!("systemctl start {unit}: {e}"))?;
        if !out.status.success() {
            // PVE::Tools::run_command: the command's stderr into the task log, then dies.
            for l in String::from_utf8_lossy(&out.stderr).lines() {
                log.line(l.to_string());
            }
            return Err(format!(
                "command 'systemctl start pve-container@{vmid}' failed: exit code {}\n",
                out.status.code().unwrap_or(-1)
            ));
        }
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            if self.is_running_now(vmid).await {
                return Ok(());
            }
            let st = unit_state(vmid).await?;
            if !st.running() {
                tracing::info!(vmid, ?st, "{unit} ended during the start");
                if before.running() {
                    // The run that ended was the previous one; this start never happened.
                    return Err(format!(
                        "startup for container '{vmid}' failed: {unit} was still {} from a previous run",
                        before.active
                    ));
                }
                return start_outcome(vmid, &stderr_path);
            }
            if tokio::time::Instant::now() >= deadline {
                let _ = self.lxc_stop(vmid, None).await;
                return Err(format!("CT {vmid} did not start within {START_TIMEOUT:?}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn is_running_now(&self, vmid: u32) -> bool {
        matches!(self.lxc_info(vmid, "-s").await.as_deref(), Some(s) if s != "STOPPED")
    }
}

/// The LXC config pve-container writes for a CT (the subset of `update_lxc_config` that a
/// CT made by the shim uses), and the notes for the task log.
/// `lxc_dir` is the CT's LXC directory (Proxmox: `/var/lib/lxc/VMID`).
pub fn render_lxc_config(
    lxc_dir: &Path,
    vmid: u32,
    conf: &CtConfig,
    cgroup_v2: bool,
) -> (String, Vec<String>) {
    let mut out = String::new();
    let mut notes = Vec::new();
    let opt = |k: &str| conf.options.get(k).map(String::as_str);
    let mut line = |k: &str, v: &str| {
        let _ = writeln!(out, "{k} = {v}");
    };
    // update_lxc_config, for LXC >= 4 (this host's LXC is 5): absolute cgroup directories, the
    // monitor outside, the limits on `lxc/VMID` and the CT's processes in its `ns` child (the
    // cgroup namespace root), so a privileged CT cannot raise its own limits. LXC applies this
    // on cgroup v1 hierarchies as on v2 (checked with LXC 5.0.2 on a hybrid host: the init in
    // `lxc/VMID/ns` of every hierarchy, `lxc.cgroup.*` limits on `lxc/VMID`).
    line("lxc.cgroup.relative", "0");
    line("lxc.cgroup.dir.monitor", &format!("lxc.monitor/{vmid}"));
    line("lxc.cgroup.dir.container", &format!("lxc/{vmid}"));
    line("lxc.cgroup.dir.container.inner", "ns");
    line("lxc.arch", opt("arch").unwrap_or("amd64"));
    let ostype = opt("ostype").unwrap_or("unmanaged");
    if ostype == "unmanaged" {
        line("lxc.include", "/usr/share/lxc/config/common.conf");
    } else {
        line(
            "lxc.include",
            &format!("/usr/share/lxc/config/{ostype}.common.conf"),
        );
    }
    // What pve-container's common.conf.d/01-pve.conf adds through that include (src/lxc-pve.conf):
    // its prestart hook, here the test node's stand-in that mounts the root file system.
    line(
        "lxc.hook.pre-start",
        &lxc_dir.join(PRESTART_HOOK_NAME).display().to_string(),
    );
    line("lxc.monitor.unshare", "1");
    line("lxc.tty.max", opt("tty").unwrap_or("2"));
    // update_lxc_config: the default map only for an unprivileged CT without `lxc.idmap`
    // entries of its own (`$custom_idmap`), which come with the raw lines below.
    let custom_idmap = conf.lxc.iter().any(|(k, _)| k == "lxc.idmap");
    if opt("unprivileged") == Some("1") && !custom_idmap {
        line("lxc.idmap", "u 0 100000 65536");
        line("lxc.idmap", "g 0 100000 65536");
    }
    let hostname = opt("hostname")
        .map(str::to_string)
        .unwrap_or_else(|| format!("CT{vmid}"));
    line("lxc.uts.name", &hostname);
    // `memory || 512`, `swap // 0`: a CT config without them still gets limits.
    let mut cgroup2 = Vec::new();
    let m = opt("memory")
        .and_then(|m| m.parse::<u64>().ok())
        .unwrap_or(512);
    cgroup2.push(("memory.max", (m * 1024 * 1024).to_string()));
    // Config.pm calculate_memory_constraints.
    let high = if m >= 16384 {
        (m - 128) * 1024 * 1024
    } else {
        m * 1024 * 1016
    };
    cgroup2.push(("memory.high", high.to_string()));
    let s = opt("swap").and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    cgroup2.push(("memory.swap.max", (s * 1024 * 1024).to_string()));
    if let Some(c) = opt("cpulimit").and_then(|c| c.parse::<f64>().ok()) {
        if c > 0.0 {
            cgroup2.push(("cpu.max", format!("{} 100000", (100000.0 * c) as u64)));
        }
    }
    // Only when set; pve-common PVE::CGroup::clamp_cpu_shares caps v2's weight at 10000.
    if let Some(units) = opt("cpuunits").and_then(|u| u.parse::<u64>().ok()) {
        cgroup2.push(("cpu.weight", units.min(10000).to_string()));
    }
    for (k, v) in &cgroup2 {
        line(&format!("lxc.cgroup2.{k}"), v);
    }
    if !cgroup_v2 {
        notes.push(format!(
            "note: cgroup v1 host: LXC ignores the {} lxc.cgroup2.* key(s) Proxmox emits ({})",
            cgroup2.len(),
            cgroup2
                .iter()
                .map(|(k, _)| *k)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if opt("rootfs").is_some() {
        // The prestart hook mounts the volume there.
        line(
            "lxc.rootfs.path",
            &lxc_dir.join("rootfs").display().to_string(),
        );
    }
    if let Some(env) = &conf.env {
        for var in env.split('\0').filter(|v| !v.is_empty()) {
            line("lxc.environment.runtime", var);
        }
    }
    // Raw lines last, verbatim: they win over what came before, as on a node.
    for (k, v) in &conf.lxc {
        line(k, v);
    }
    (out, notes)
}

/// The test node's stand-in for pve-container's prestart hook (in the CT's LXC directory).
pub const PRESTART_HOOK_NAME: &str = "pve-prestart-hook";

/// The prestart hook for a directory rootfs `volume`: pve-container's `lxc-pve-prestart-hook`
/// mounts the CT's volumes with `PVE::LXC::mount_all`, a directory rootfs with `bindmount`
/// (src/PVE/LXC.pm `__bindmount_do`: `mount -o bind`, not `rbind`) at
/// `/var/lib/lxc/VMID/rootfs`. It runs in the monitor's own mount namespace
/// (`lxc.monitor.unshare = 1`), so nothing shows on the host.
/// Mounts below `volume` are not carried over, as on a node.
pub fn prestart_hook_script(volume: &Path, lxc_dir: &Path) -> Result<String, String> {
    let quoted = |p: &Path| -> Result<String, String> {
        let s = p.to_str().ok_or("rootfs path is not UTF-8")?;
        if s.contains(['\'', '\n']) {
            return Err(format!(
                "rootfs path {s:?} is not supported by the test node"
            ));
        }
        Ok(format!("'{s}'"))
    };
    Ok(format!(
        "#!/bin/sh\nexec mount --bind -- {} {}\n",
        quoted(volume)?,
        quoted(&lxc_dir.join("rootfs"))?
    ))
}

/// The first symlink on `path` (each component from `/`), which pve-container's
/// `walk_tree_nofollow` (src/PVE/LXC.pm, called by `bindmount` for a directory rootfs in the
/// prestart hook) refuses with "symlink encountered at: DIR".
pub fn first_symlink(path: &Path) -> Option<PathBuf> {
    let mut current = PathBuf::new();
    for component in path.components() {
        current.push(component);
        if std::fs::symlink_metadata(&current).is_ok_and(|m| m.file_type().is_symlink()) {
            return Some(current);
        }
    }
    None
}

/// The outcome of a start whose `lxc-start` ended before LXC reported RUNNING: a CT whose
/// init ended at once ran; anything on lxc-start's stderr means a failed start
/// (`vm_start`: "startup for container 'VMID' failed", after the stderr log).
fn start_outcome(vmid: u32, stderr_path: &Path) -> BackendResult {
    let err = std::fs::read_to_string(stderr_path).unwrap_or_default();
    if err.trim().is_empty() {
        return Ok(());
    }
    let last: Vec<&str> = err.lines().rev().take(5).collect();
    let detail: Vec<&str> = last.into_iter().rev().collect();
    Err(format!(
        "startup for container '{vmid}' failed: {}",
        detail.join(" | ")
    ))
}

fn cgroup_v2_host() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

#[async_trait]
impl NodeBackend for LxcNodeBackend {
    async fn start(
        &self,
        _ctx: &NodeContext,
        vmid: u32,
        config: &CtConfig,
        log: &TaskLog,
    ) -> BackendResult {
        let rootfs_dir = config
            .options
            .get("rootfs")
            .and_then(|r| r.split(',').next())
            .filter(|v| v.starts_with('/'));
        if let Some(link) = rootfs_dir.and_then(|dir| first_symlink(Path::new(dir))) {
            return Err(format!("symlink encountered at: {}", link.display()));
        }
        let dir = self.lxcpath.join(vmid.to_string());
        let (text, notes) = render_lxc_config(&dir, vmid, config, cgroup_v2_host());
        for n in &notes {
            log.line(n.clone());
            tracing::info!(vmid, "{n}");
        }
        // update_lxc_config: mkpath "$dir/rootfs".
        std::fs::create_dir_all(dir.join("rootfs"))
            .map_err(|e| format!("create {}/rootfs: {e}", dir.display()))?;
        let Some(volume) = rootfs_dir else {
            return Err("the test node mounts only a directory rootfs (rootfs: /DIR)".into());
        };
        {
            let hook = dir.join(PRESTART_HOOK_NAME);
            std::fs::write(&hook, prestart_hook_script(Path::new(volume), &dir)?)
                .map_err(|e| format!("write {}: {e}", hook.display()))?;
            std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| format!("chmod {}: {e}", hook.display()))?;
        }
        std::fs::write(dir.join("config"), &text)
            .map_err(|e| format!("write {}/config: {e}", dir.display()))?;
        if self.supervisor == Supervisor::Systemd {
            return self.start_unit(vmid, log).await;
        }
        std::fs::create_dir_all(&self.stderr_dir)
            .map_err(|e| format!("create {}: {e}", self.stderr_dir.display()))?;
        // A destroyed CT's VMID may be reused while its lxc-start still cleans up (systemd
        // would start the unit again only after its previous run ended).
        self.wait_supervised_exit(vmid).await?;
        let stderr = std::fs::File::create(self.stderr_path(vmid))
            .map_err(|e| format!("create stderr file: {e}"))?;
        let mut child = tokio::process::Command::new("lxc-start")
            .arg("-F")
            .arg("-n")
            .arg(vmid.to_string())
            .arg("-P")
            .arg(&self.lxcpath)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .process_group(0)
            .kill_on_drop(false)
            .spawn()
            .map_err(|e| format!("lxc-start: {e}"))?;
        let pid = child.id().unwrap_or(0);
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(vmid, pid);
        let (done_tx, mut done_rx) = tokio::sync::watch::channel(None);
        let running = self.running.clone();
        tokio::spawn(async move {
            let status = child.wait().await.ok();
            running
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&vmid);
            let _ = done_tx.send(Some(status));
        });
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            if done_rx.borrow().is_some() {
                return start_outcome(vmid, &self.stderr_path(vmid));
            }
            if self.is_running_now(vmid).await {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                let _ = self.lxc_stop(vmid, None).await;
                return Err(format!("CT {vmid} did not start within {START_TIMEOUT:?}"));
            }
            let _ = tokio::time::timeout(Duration::from_millis(10), done_rx.changed()).await;
        }
    }

    async fn stop(
        &self,
        _ctx: &NodeContext,
        vmid: u32,
        _config: &CtConfig,
        timeout: Option<Duration>,
        _log: &TaskLog,
    ) -> BackendResult {
        self.lxc_stop(vmid, timeout).await
    }

    async fn destroy(
        &self,
        _ctx: &NodeContext,
        vmid: u32,
        _config: &CtConfig,
        log: &TaskLog,
    ) -> BackendResult {
        if self.is_running_now(vmid).await {
            self.lxc_stop(vmid, None).await?;
        }
        let dir = self.lxcpath.join(vmid.to_string());
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| format!("remove {}: {e}", dir.display()))?;
            log.line(format!("removed {}", dir.display()));
        }
        let _ = std::fs::remove_file(self.stderr_path(vmid));
        Ok(())
    }

    async fn is_running(&self, _ctx: &NodeContext, vmid: u32) -> bool {
        self.is_running_now(vmid).await
    }

    fn enforces_start_limit(&self) -> bool {
        self.supervisor == Supervisor::Systemd
    }

    fn reset_failed(&self, vmid: u32) {
        if self.supervisor == Supervisor::Systemd {
            let _ = std::process::Command::new("systemctl")
                .arg("reset-failed")
                .arg(ct_unit(vmid))
                .stdin(Stdio::null())
                .status();
        }
    }

    async fn init_pid(&self, _ctx: &NodeContext, vmid: u32) -> Option<u32> {
        self.lxc_info(vmid, "-p")
            .await
            .and_then(|p| p.parse().ok())
            .filter(|p| *p > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_as_pve_container_does() {
        let conf = CtConfig::parse(
            901,
            "memory: 256\nswap: 64\ncpulimit: 1.5\nostype: unmanaged\nrootfs: /b/rootfs\n\
             lxc.init.cmd: /.ct/init\nlxc.include: /run/x/pve-include.conf\n",
        )
        .unwrap();
        let (text, notes) = render_lxc_config(Path::new("/var/lib/lxc/901"), 901, &conf, false);
        assert!(text.starts_with(
            "lxc.cgroup.relative = 0\nlxc.cgroup.dir.monitor = lxc.monitor/901\n\
             lxc.cgroup.dir.container = lxc/901\nlxc.cgroup.dir.container.inner = ns\n"
        ));
        assert!(text.contains("lxc.include = /usr/share/lxc/config/common.conf\n"));
        assert!(text.contains("lxc.uts.name = CT901\n"));
        assert!(text.contains("lxc.cgroup2.memory.max = 268435456\n"));
        assert!(text.contains(&format!(
            "lxc.cgroup2.memory.high = {}\n",
            256u64 * 1024 * 1016
        )));
        assert!(text.contains("lxc.cgroup2.memory.swap.max = 67108864\n"));
        assert!(text.contains("lxc.cgroup2.cpu.max = 150000 100000\n"));
        assert!(!text.contains("cpu.weight"), "cpuunits unset: no weight");
        assert!(text.contains("lxc.rootfs.path = /var/lib/lxc/901/rootfs\n"));
        assert!(text.contains("lxc.hook.pre-start = /var/lib/lxc/901/pve-prestart-hook\n"));
        assert_eq!(
            prestart_hook_script(Path::new("/b/rootfs"), Path::new("/var/lib/lxc/901")).unwrap(),
            "#!/bin/sh\nexec mount --bind -- '/b/rootfs' '/var/lib/lxc/901/rootfs'\n"
        );
        assert!(prestart_hook_script(Path::new("/b/it's"), Path::new("/x")).is_err());
        assert!(text.ends_with("lxc.init.cmd = /.ct/init\nlxc.include = /run/x/pve-include.conf\n"));
        assert!(notes[0].contains("ignores"), "{notes:?}");

        // Without memory/swap keys a node still limits the CT (512 MiB, no swap).
        let bare = CtConfig::parse(902, "ostype: unmanaged\ncpuunits: 20000\n").unwrap();
        let (text, _) = render_lxc_config(Path::new("/var/lib/lxc/902"), 902, &bare, true);
        assert!(
            text.contains("lxc.cgroup2.memory.max = 536870912\n"),
            "{text}"
        );
        assert!(text.contains("lxc.cgroup2.memory.swap.max = 0\n"), "{text}");
        assert!(text.contains("lxc.cgroup2.cpu.weight = 10000\n"), "{text}");
    }

    #[test]
    fn unprivileged_gets_the_default_map_unless_it_has_its_own() {
        let idmaps = |text: &str| -> Vec<String> {
            text.lines()
                .filter(|l| l.starts_with("lxc.idmap"))
                .map(str::to_string)
                .collect()
        };
        let plain = CtConfig::parse(903, "ostype: unmanaged\nunprivileged: 1\n").unwrap();
        let (text, _) = render_lxc_config(Path::new("/var/lib/lxc/903"), 903, &plain, true);
        assert_eq!(
            idmaps(&text),
            [
                "lxc.idmap = u 0 100000 65536",
                "lxc.idmap = g 0 100000 65536"
            ]
        );
        let custom = CtConfig::parse(
            904,
            "ostype: unmanaged\nunprivileged: 1\nlxc.idmap: u 0 2031616 65536\n\
             lxc.idmap: g 0 2031616 65536\n",
        )
        .unwrap();
        let (text, _) = render_lxc_config(Path::new("/var/lib/lxc/904"), 904, &custom, true);
        assert_eq!(
            idmaps(&text),
            [
                "lxc.idmap = u 0 2031616 65536",
                "lxc.idmap = g 0 2031616 65536"
            ]
        );
    }

    #[test]
    fn reads_systemctl_show_and_picks_the_supervisor() {
        let st = UnitState::parse(
            "MainPID=4242\nControlGroup=/system.slice/system-pve\\x2dcontainer.slice/pve-container@901.service\n\
             Result=success\nActiveState=deactivating\n",
        );
        assert_eq!(st.main_pid, 4242);
        assert_eq!(st.result, "success");
        assert!(st.running(), "ExecStop still runs: {st:?}");
        assert!(st.control_group.ends_with("pve-container@901.service"));
        let ended = UnitState::parse("ActiveState=failed\nResult=exit-code\nMainPID=0\n");
        assert!(!ended.running());
        // The unit's `lxc-start -n %i` has no -P: another lxcpath never goes through systemd.
        let (sup, why) = detect_supervisor(Path::new("/tmp/other-lxcpath"));
        assert_eq!(sup, Supervisor::Own, "{why}");
    }

    #[test]
    fn finds_a_symlink_in_the_rootfs_path() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real/rootfs");
        std::fs::create_dir_all(&real).unwrap();
        std::os::unix::fs::symlink(dir.path().join("real"), dir.path().join("link")).unwrap();
        assert_eq!(first_symlink(&real), None);
        assert_eq!(
            first_symlink(&dir.path().join("link/rootfs")),
            Some(dir.path().join("link"))
        );
    }
}
