//! A [`NodeBackend`] that runs real LXC containers, as a Proxmox VE node does, for the `pve`
//! driver's end-to-end tests.
//!
//! - Start: the CT config is turned into an LXC config the way pve-container's
//!   `update_lxc_config` does (`<lxcpath>/VMID/config`; the table in DESIGN.md: arch, the
//!   ostype's common.conf, hostname, memory/swap/cpu as `lxc.cgroup2.*`, `env` as
//!   `lxc.environment.runtime`, the raw `lxc.*` lines appended verbatim, so an `lxc.include`
//!   is honoured), then `lxc-start -F -n VMID -P <lxcpath>` runs under this backend's own
//!   supervision as `pve-container@VMID` does under systemd: stdin and stdout /dev/null,
//!   stderr to a file, in its own process group. The task ends once LXC reports RUNNING.
//! - Stop: `lxc-stop --kill`; shutdown: `lxc-stop --timeout`; destroy: the LXC directory.
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
use std::os::unix::fs::PermissionsExt;
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
    /// `lxc-start -F` pids by VMID, while they run.
    running: Arc<Mutex<BTreeMap<u32, u32>>>,
}

/// How long a CT may take to reach RUNNING.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `lxc-start` may take to exit after `lxc-stop`.
const STOP_WAIT: Duration = Duration::from_secs(30);

impl LxcNodeBackend {
    /// A backend with its containers in `lxcpath` and `lxc-start`'s stderr files in
    /// `stderr_dir` (Proxmox: the journal of `pve-container@VMID`).
    pub fn new(lxcpath: impl Into<PathBuf>, stderr_dir: impl Into<PathBuf>) -> Self {
        LxcNodeBackend {
            lxcpath: lxcpath.into(),
            stderr_dir: stderr_dir.into(),
            running: Arc::default(),
        }
    }

    /// The LXC config file of a CT.
    pub fn lxc_config_path(&self, vmid: u32) -> PathBuf {
        self.lxcpath.join(vmid.to_string()).join("config")
    }

    fn stderr_path(&self, vmid: u32) -> PathBuf {
        self.stderr_dir.join(format!("pve-container@{vmid}.stderr"))
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
        while self.supervised(vmid) {
            if tokio::time::Instant::now() > deadline {
                return Err(format!(
                    "lxc-start of CT {vmid} did not exit within {}s after the CT stopped",
                    STOP_WAIT.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    fn supervised(&self, vmid: u32) -> bool {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&vmid)
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
        std::fs::create_dir_all(&self.stderr_dir)
            .map_err(|e| format!("create {}: {e}", self.stderr_dir.display()))?;
        // A destroyed CT's VMID may be reused while its lxc-start still cleans up.
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
                let err = std::fs::read_to_string(self.stderr_path(vmid)).unwrap_or_default();
                let last: Vec<&str> = err.lines().rev().take(5).collect();
                let detail: Vec<&str> = last.into_iter().rev().collect();
                // A CT whose init ended at once ran; anything else is a failed start.
                if err.trim().is_empty() {
                    return Ok(());
                }
                return Err(format!(
                    "startup for container '{vmid}' failed: {}",
                    detail.join(" | ")
                ));
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
        _log: &TaskLog,
    ) -> BackendResult {
        self.lxc_stop(vmid, None).await
    }

    async fn shutdown(
        &self,
        _ctx: &NodeContext,
        vmid: u32,
        _config: &CtConfig,
        timeout: Duration,
        _log: &TaskLog,
    ) -> BackendResult {
        self.lxc_stop(vmid, Some(timeout)).await
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
