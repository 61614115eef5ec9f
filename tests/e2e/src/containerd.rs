//! A private containerd: its own config, root, state, sockets and log under one work dir, with
//! the shim's directory first on its PATH so `io.containerd.proxmox-lxc.v2` resolves to the
//! binary under test.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::cmd::{self, Output};
use crate::config::{render_config, CriPlugin};
use crate::{host, image, paths, NAMESPACE};

/// A containerd build the tests can run: Debian's 1.6 from the system, or 1.7/2.x unpacked by
/// scripts/setup.sh into the cache dir.
#[derive(Clone, Debug)]
pub struct ContainerdVersion {
    /// Short name used in test names: "1.6", "1.7", "2.1" (the system's from its `--version`).
    pub name: String,
    /// Directory with `containerd` and `ctr` (and, for unpacked ones, their runc shim).
    pub bin_dir: PathBuf,
    /// The config format it takes: 2 for 1.x, 3 for 2.x.
    pub config_version: u32,
    /// Whether `bin_dir` must go on containerd's PATH (an unpacked build's own runc shim).
    pub private_bin_dir: bool,
}

impl ContainerdVersion {
    /// Debian's containerd from /usr/bin.
    pub fn system() -> Result<Self, String> {
        let bin = Path::new("/usr/bin/containerd");
        if !bin.is_file() {
            return Err(
                "containerd is not installed (/usr/bin/containerd missing; run scripts/setup.sh)"
                    .into(),
            );
        }
        let version = Command::new(bin)
            .arg("--version")
            .output()
            .map_err(|e| format!("containerd --version: {e}"))?;
        let text = String::from_utf8_lossy(&version.stdout);
        let name = text
            .split_whitespace()
            .nth(2)
            .and_then(|v| {
                let mut parts = v.split('.');
                Some(format!("{}.{}", parts.next()?, parts.next()?))
            })
            .unwrap_or_else(|| "system".into());
        let config_version = if name.starts_with("1.") { 2 } else { 3 };
        Ok(ContainerdVersion {
            name,
            bin_dir: PathBuf::from("/usr/bin"),
            config_version,
            private_bin_dir: false,
        })
    }

    /// The version a benchmark's `--containerd NAME` names: the system's own when NAME is its
    /// version (`containerd --version`, "1.6" on bookworm) or "system", otherwise one unpacked
    /// by scripts/setup.sh.
    pub fn named(name: &str) -> Result<Self, String> {
        match Self::system() {
            Ok(system) if name == "system" || system.name == name => Ok(system),
            Err(e) if name == "system" => Err(e),
            _ => Self::cached(name),
        }
    }

    /// A version unpacked by scripts/setup.sh (`name` is "2.1" or "1.7").
    pub fn cached(name: &str) -> Result<Self, String> {
        let dir = paths::cache_dir()
            .join(format!("containerd-{name}"))
            .join("usr/bin");
        if !dir.join("containerd").is_file() || !dir.join("ctr").is_file() {
            return Err(format!(
                "containerd {name} is not in {} (scripts/setup.sh could not fetch it from Debian)",
                dir.display()
            ));
        }
        Ok(ContainerdVersion {
            name: name.to_string(),
            bin_dir: dir,
            config_version: if name.starts_with("1.") { 2 } else { 3 },
            private_bin_dir: true,
        })
    }

    /// Every version the tests know, each with why it cannot run, if it cannot, labelled by its
    /// real version: the system's as `containerd --version` says (1.6 on bookworm, 1.7 on
    /// trixie; "system" when it is missing), then the unpacked 2.1 and 1.7 unless the system's
    /// is that version already (one set of test names per version).
    pub fn all() -> Vec<(String, Result<Self, String>)> {
        let system = Self::system();
        let system_name = system
            .as_ref()
            .map(|v| v.name.clone())
            .unwrap_or_else(|_| "system".into());
        let mut out = vec![(system_name.clone(), system)];
        for name in ["2.1", "1.7"] {
            if name != system_name {
                out.push((name.into(), Self::cached(name)));
            }
        }
        out
    }

    pub fn containerd(&self) -> PathBuf {
        self.bin_dir.join("containerd")
    }

    pub fn ctr(&self) -> PathBuf {
        self.bin_dir.join("ctr")
    }
}

/// A running private containerd.
pub struct Containerd {
    pub version: ContainerdVersion,
    /// Holds config, root, state, sockets and the log.
    pub work: PathBuf,
    pub address: PathBuf,
    pub shim_dir: PathBuf,
    /// The shim's host configuration file, passed through containerd's environment
    /// (`CONTAINERD_SHIM_PROXMOX_LXC_CONFIG`), if not the system's.
    pub shim_host_config: Option<PathBuf>,
    child: Mutex<Option<std::process::Child>>,
}

const START_TIMEOUT: Duration = Duration::from_secs(30);
const CTR_TIMEOUT: Duration = Duration::from_secs(30);

impl Containerd {
    pub fn config_path(&self) -> PathBuf {
        self.work.join("config.toml")
    }

    pub fn log_path(&self) -> PathBuf {
        self.work.join("containerd.log")
    }

    fn pid_path(&self) -> PathBuf {
        self.work.join("containerd.pid")
    }

    /// The PATH containerd runs with: the shim's directory first, then an unpacked build's own
    /// binaries (its runc shim), then the system PATH.
    pub fn containerd_path_env(&self) -> String {
        let mut dirs = vec![self.shim_dir.clone()];
        if self.version.private_bin_dir {
            dirs.push(self.version.bin_dir.clone());
        }
        let system = std::env::var("PATH").unwrap_or_else(|_| {
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()
        });
        let mut path = dirs
            .iter()
            .map(|d| d.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(":");
        path.push(':');
        path.push_str(&system);
        path
    }

    /// Writes the config and starts containerd in `work` (created; must not hold a running
    /// containerd). The process is detached (own session), so it may outlive the caller when
    /// `e2e-env start` runs it; `stop`/`teardown` end it.
    pub fn start(version: ContainerdVersion, work: &Path, shim_dir: &Path) -> Result<Self> {
        Self::start_with_shim_config(version, work, shim_dir, None)
    }

    /// [`Containerd::start`], its shims reading `shim_host_config` as their host file (the
    /// configuration a task gets where containerd passes no runtime options of the shim's).
    pub fn start_with_shim_config(
        version: ContainerdVersion,
        work: &Path,
        shim_dir: &Path,
        shim_host_config: Option<&Path>,
    ) -> Result<Self> {
        Self::start_with(
            version,
            work,
            shim_dir,
            shim_host_config,
            &CriPlugin::default(),
        )
    }

    /// [`Containerd::start_with_shim_config`], the CRI plugin set up as `cri` says.
    pub fn start_with(
        version: ContainerdVersion,
        work: &Path,
        shim_dir: &Path,
        shim_host_config: Option<&Path>,
        cri: &CriPlugin,
    ) -> Result<Self> {
        std::fs::create_dir_all(work).with_context(|| format!("create {}", work.display()))?;
        let work = work.canonicalize()?;
        let address = work.join("containerd.sock");
        if address.as_os_str().len() > 100 {
            bail!(
                "socket path {} is too long for a unix socket; use a shorter work dir",
                address.display()
            );
        }
        let cd = Containerd {
            version,
            address,
            shim_dir: shim_dir.to_path_buf(),
            shim_host_config: shim_host_config.map(Path::to_path_buf),
            child: Mutex::new(None),
            work,
        };
        std::fs::create_dir_all(cd.work.join("cni/net.d"))?;
        let config = render_config(&cd.work, &cd.version, cri);
        std::fs::write(cd.config_path(), config)?;
        cd.spawn()?;
        Ok(cd)
    }

    /// Re-attaches to a containerd that `start` left running in `work` (for `e2e-env stop`).
    pub fn attach(version: ContainerdVersion, work: &Path, shim_dir: &Path) -> Result<Self> {
        let work = work.canonicalize()?;
        Ok(Containerd {
            version,
            address: work.join("containerd.sock"),
            shim_dir: shim_dir.to_path_buf(),
            shim_host_config: None,
            child: Mutex::new(None),
            work,
        })
    }

    fn spawn(&self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let mut cmd = Command::new(self.version.containerd());
        cmd.arg("--config")
            .arg(self.config_path())
            .env("PATH", self.containerd_path_env())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if let Some(file) = &self.shim_host_config {
            cmd.env("CONTAINERD_SHIM_PROXMOX_LXC_CONFIG", file);
        }
        // SAFETY: setsid is async-signal-safe; a session of its own keeps terminal signals
        // (a ^C on the demo) from reaching containerd before the teardown does its work.
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
        std::fs::write(self.pid_path(), child.id().to_string())?;
        *self.child.lock().unwrap_or_else(|e| e.into_inner()) = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self
                .child
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!(
                    "containerd exited ({status}) at start; log: {}\n{}",
                    self.log_path().display(),
                    tail(&self.log_path(), 30)
                );
            }
            if self.address.exists() {
                let probe = cmd::run(
                    &mut self.ctr_cmd(&["version"]),
                    None,
                    Duration::from_secs(5),
                );
                if matches!(probe, Ok(ref o) if o.status.0 == 0) {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "containerd did not answer within {START_TIMEOUT:?}; log: {}\n{}",
                    self.log_path().display(),
                    tail(&self.log_path(), 30)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The pid of the running containerd (from the pid file).
    pub fn pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.pid_path())
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Stops containerd (SIGTERM, then SIGKILL after 10 s). Shims and workloads stay, as they do
    /// when an operator restarts containerd.
    pub fn stop(&self) -> Result<()> {
        let mut guard = self.child.lock().unwrap_or_else(|e| e.into_inner());
        let pid = match guard.as_ref() {
            Some(c) => Some(c.id() as i32),
            None => self.pid(),
        };
        let Some(pid) = pid else { return Ok(()) };
        let target = nix::unistd::Pid::from_raw(pid);
        let _ = nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let gone = match guard.as_mut() {
                Some(c) => c.try_wait()?.is_some(),
                None => !host::pid_alive(pid),
            };
            if gone {
                break;
            }
            if Instant::now() > deadline {
                let _ = nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGKILL);
                if let Some(c) = guard.as_mut() {
                    let _ = c.wait();
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        *guard = None;
        let _ = std::fs::remove_file(self.pid_path());
        Ok(())
    }

    /// Stops and starts containerd with the same config, root and state.
    pub fn restart(&self) -> Result<()> {
        self.stop()?;
        self.spawn()
    }

    /// `ctr --address ADDR --namespace e2e ARGS...` (the ctr of the same containerd version).
    pub fn ctr_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(self.version.ctr());
        cmd.arg("--address")
            .arg(&self.address)
            .arg("--namespace")
            .arg(NAMESPACE)
            .args(args);
        cmd
    }

    /// `ctr task exec -t --exec-id EXEC_ID ID ARGS...` on a 40x120 terminal of its own.
    pub fn exec_on_pty(
        &self,
        exec_id: &str,
        id: &str,
        args: &[&str],
        timeout: Duration,
    ) -> Result<cmd::PtyOutput> {
        let mut all = vec!["task", "exec", "-t", "--exec-id", exec_id, id];
        all.extend_from_slice(args);
        cmd::run_on_pty(&mut self.ctr_cmd(&all), 40, 120, b"", timeout)
    }

    /// `ctr task exec --exec-id EXEC_ID ID sh -c SCRIPT`, whatever its status.
    pub fn exec_sh(&self, exec_id: &str, id: &str, script: &str) -> Result<Output> {
        self.ctr(&["task", "exec", "--exec-id", exec_id, id, "sh", "-c", script])
    }

    /// Runs ctr with a deadline and returns what it printed, whatever its status.
    pub fn ctr(&self, args: &[&str]) -> Result<Output> {
        cmd::run(&mut self.ctr_cmd(args), None, CTR_TIMEOUT)
    }

    /// Runs ctr and fails unless it exited 0.
    pub fn ctr_ok(&self, args: &[&str]) -> Result<Output> {
        self.ctr(args)?.ok(&format!("ctr {}", args.join(" ")))
    }

    /// Builds the local images and imports them (no registry involved).
    pub fn import_images(&self) -> Result<()> {
        let busybox = Path::new(image::BUSYBOX_PATH);
        if !busybox.is_file() {
            bail!(
                "{} missing: install busybox-static (scripts/setup.sh)",
                busybox.display()
            );
        }
        let tarball = self.work.join("images.oci.tar");
        image::build_layout_tar(busybox, &tarball)?;
        let path = tarball.to_string_lossy().into_owned();
        self.ctr_ok(&["images", "import", &path])?;
        let listed = self.ctr_ok(&["images", "ls", "-q"])?.stdout_str();
        for name in [image::BUSYBOX_IMAGE, image::APP_IMAGE] {
            if !listed.lines().any(|l| l.trim() == name) {
                bail!("image {name} not listed after import; ctr images ls -q said:\n{listed}");
            }
        }
        Ok(())
    }

    /// Task `id`'s PID and STATUS columns in `ctr task ls`, if it is listed.
    fn task_row(&self, id: &str) -> Result<Option<(String, String)>> {
        let out = self.ctr_ok(&["task", "ls"])?.stdout_str();
        Ok(out.lines().skip(1).find_map(|l| {
            let mut cols = l.split_whitespace();
            (cols.next() == Some(id)).then(|| {
                let pid = cols.next().unwrap_or("").to_string();
                (pid, cols.next().unwrap_or("").to_string())
            })
        }))
    }

    /// The task's status as `ctr task ls` shows it ("RUNNING", "STOPPED", ...).
    pub fn task_status(&self, id: &str) -> Result<Option<String>> {
        Ok(self.task_row(id)?.map(|(_, status)| status))
    }

    /// The task's pid as `ctr task ls` shows it.
    pub fn task_pid(&self, id: &str) -> Result<Option<i32>> {
        Ok(self.task_row(id)?.and_then(|(pid, _)| pid.parse().ok()))
    }

    /// Waits until the task reaches `status` (e.g. "STOPPED"), or fails with what it was.
    pub fn wait_task_status(&self, id: &str, status: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let now = self.task_status(id)?;
            if now.as_deref() == Some(status) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("task {id}: status {now:?} after {timeout:?}, expected {status}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Best-effort removal of a container and its task (kill, delete, remove). Errors are
    /// ignored: the leftover checks say whether it worked.
    pub fn force_remove(&self, id: &str) {
        if let Ok(Some(_)) = self.task_status(id) {
            let _ = self.ctr(&["task", "kill", "--all", "--signal", "SIGKILL", id]);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                match self.task_status(id) {
                    Ok(Some(s)) if s != "STOPPED" => std::thread::sleep(Duration::from_millis(50)),
                    _ => break,
                }
            }
            let _ = self.ctr(&["task", "delete", "--force", id]);
        }
        let _ = self.ctr(&["container", "delete", id]);
    }

    /// Shim processes serving this containerd (their command line names our socket).
    pub fn shim_processes(&self) -> Vec<host::Proc> {
        let address = self.address.to_string_lossy().into_owned();
        host::processes_matching(&[&address])
            .into_iter()
            .filter(|p| p.cmdline.contains("containerd-shim"))
            .collect()
    }

    /// Removes every container, stops containerd, kills what is left, unmounts and deletes the
    /// work dir (keeping the containerd log in target/e2e-logs/LABEL-containerd.log). Returns
    /// what had to be cleaned up by force: each entry is something a runtime left behind.
    pub fn teardown(&self, label: &str) -> Vec<String> {
        let mut leftovers = Vec::new();
        if let Ok(out) = self.ctr(&["container", "ls", "-q"]) {
            for id in out.stdout_str().lines().filter(|l| !l.trim().is_empty()) {
                leftovers.push(format!("container {id} still existed at teardown"));
                self.force_remove(id.trim());
            }
        }
        // Shims exit on their own once their last container is deleted; give them a moment.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.shim_processes().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        for p in self.shim_processes() {
            leftovers.push(format!(
                "shim process {} still running after its containers were removed: {}",
                p.pid, p.cmdline
            ));
        }
        let _ = self.stop();
        for p in host::processes_under(&self.work) {
            if p.pid as u32 == std::process::id() {
                continue;
            }
            leftovers.push(format!("process {} left: {}", p.pid, p.cmdline));
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(p.pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        for m in host::unmount_all_under(&self.work) {
            leftovers.push(format!("mount left: {}", m.display()));
        }
        let logs = paths::log_dir();
        if std::fs::create_dir_all(&logs).is_ok() {
            let _ = std::fs::copy(
                self.log_path(),
                logs.join(format!("{label}-containerd.log")),
            );
        }
        if let Err(e) = std::fs::remove_dir_all(&self.work) {
            leftovers.push(format!("could not remove {}: {e}", self.work.display()));
        }
        leftovers
    }
}

/// The last `n` lines of a file, for error messages.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Removes what earlier runs that died left under `base` (work dirs named `LABEL-PID` whose
/// PID is gone): their containerd and shims are killed, mounts unmounted, dirs deleted.
pub fn reap_stale_work_dirs(base: &Path) {
    let Ok(dir) = std::fs::read_dir(base) else {
        return;
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.rsplit('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        if host::pid_alive(pid) {
            continue;
        }
        let path = entry.path();
        for p in host::processes_under(&path) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(p.pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        std::thread::sleep(Duration::from_millis(100));
        host::unmount_all_under(&path);
        let _ = std::fs::remove_dir_all(&path);
    }
}
