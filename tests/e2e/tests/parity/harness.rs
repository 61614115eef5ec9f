//! The machinery every case shares: the containerds (one per version, shared; private ones for
//! cases that restart containerd), a case's context and transcript, the expectations, and the
//! check that a container left nothing behind.

// What every case module uses (each imports `crate::harness::*`).
pub use std::path::{Path, PathBuf};
pub use std::process::Command;
pub use std::time::{Duration, Instant};

pub use anyhow::{anyhow, bail, ensure, Context, Result};
pub use e2e::cmd::{self, Background, Output, PtyOutput};
pub use e2e::image::{APP_GREETING, APP_IMAGE, BUSYBOX_IMAGE};
pub use e2e::{
    host, paths, Containerd, ContainerdVersion, RUNC_RUNTIME, SHIM_LXCPATH, SHIM_RUNTIME,
};

pub use crate::Case;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

pub const RUN_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a workload may take to get through busy work it must finish before a check.
pub const WORKLOAD_TIMEOUT: Duration = Duration::from_secs(180);

// Shared containerd instances

pub fn work_base() -> PathBuf {
    std::env::temp_dir().join("pxlxc-e2e")
}

pub fn work_dir(label: &str) -> PathBuf {
    work_base().join(format!("{label}-{}", std::process::id()))
}

pub type Shared = Mutex<HashMap<String, Result<Arc<Containerd>, String>>>;

pub fn shared_instances() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(Default::default)
}

/// The containerd shared by the cases of one version, started on first use with the images
/// imported.
pub fn shared(version: &ContainerdVersion) -> Result<Arc<Containerd>> {
    let mut map = shared_instances().lock().unwrap_or_else(|e| e.into_inner());
    let entry = map.entry(version.name.clone()).or_insert_with(|| {
        let label = format!("c{}-shared", version.name);
        Containerd::start(version.clone(), &work_dir(&label), &paths::shim_dir())
            .and_then(|cd| {
                cd.import_images()?;
                Ok(Arc::new(cd))
            })
            .map_err(|e| format!("{e:#}"))
    });
    entry
        .clone()
        .map_err(|e| anyhow!("shared containerd {}: {e}", version.name))
}

/// A containerd of its own for a case that restarts it; torn down by the guard.
pub struct Private {
    pub cd: Containerd,
    label: String,
}

impl Private {
    pub fn start(version: &ContainerdVersion, label: &str) -> Result<Self> {
        let cd = Containerd::start(version.clone(), &work_dir(label), &paths::shim_dir())?;
        cd.import_images()?;
        Ok(Private {
            cd,
            label: label.to_string(),
        })
    }

    /// Tears down and fails if a runtime left anything behind.
    pub fn finish(self) -> Result<()> {
        let leftovers = self.cd.teardown(&self.label);
        ensure!(
            leftovers.is_empty(),
            "teardown of {} found leftovers:\n{}",
            self.label,
            leftovers.join("\n")
        );
        Ok(())
    }
}

// What a case sees and records

/// One run of a case: the containerd, the runtime under test and a fresh container id.
pub struct Ctx<'a> {
    pub cd: &'a Containerd,
    pub runtime: &'static str,
    pub id: String,
    /// A host directory of this run, for bind mounts and log files.
    pub scratch: PathBuf,
}

impl Ctx<'_> {
    pub fn is_shim(&self) -> bool {
        self.runtime == SHIM_RUNTIME
    }

    /// `ctr task exec --exec-id EXEC_ID ID sh -c SCRIPT` in the case's container.
    pub fn exec_sh(&self, exec_id: &str, script: &str) -> Result<Output> {
        self.cd.exec_sh(exec_id, &self.id, script)
    }

    pub fn runtime_flag(&self) -> String {
        format!("--runtime={}", self.runtime)
    }

    /// `ctr run --rm --runtime R FLAGS IMAGE ID ARGS...`.
    pub fn run_cmd(&self, flags: &[&str], image: &str, args: &[&str]) -> Command {
        let runtime = self.runtime_flag();
        let mut all: Vec<&str> = vec!["run", "--rm", &runtime];
        all.extend_from_slice(flags);
        all.push(image);
        all.push(&self.id);
        all.extend_from_slice(args);
        self.cd.ctr_cmd(&all)
    }

    /// Runs `sh -c SCRIPT` in the busybox image and waits for it.
    pub fn run_sh(&self, flags: &[&str], script: &str, stdin: Option<Vec<u8>>) -> Result<Output> {
        cmd::run(
            &mut self.run_cmd(flags, BUSYBOX_IMAGE, &["sh", "-c", script]),
            stdin,
            RUN_TIMEOUT,
        )
    }

    /// `ctr run -d --null-io` (plus flags) of `sh -c SCRIPT`; waits until the task is RUNNING.
    pub fn run_detached(&self, flags: &[&str], script: &str) -> Result<()> {
        let runtime = self.runtime_flag();
        let mut all: Vec<&str> = vec!["run", "-d", &runtime];
        all.extend_from_slice(flags);
        all.extend_from_slice(&[BUSYBOX_IMAGE, &self.id, "sh", "-c", script]);
        self.cd.ctr_ok(&all)?;
        self.cd
            .wait_task_status(&self.id, "RUNNING", Duration::from_secs(30))
    }

    /// SIGKILL to task `id`'s init; waits until the task is STOPPED.
    pub fn kill_task(&self, id: &str) -> Result<()> {
        self.cd
            .ctr_ok(&["task", "kill", "--signal", "SIGKILL", id])?;
        self.cd
            .wait_task_status(id, "STOPPED", Duration::from_secs(20))
    }

    pub fn scratch_str(&self) -> String {
        self.scratch.to_string_lossy().into_owned()
    }
}

/// What a case observed, label by label; compared between runc and the shim after replacing
/// the run-specific container id and scratch path.
#[derive(Default, Debug, Clone, PartialEq)]
pub struct Transcript(pub Vec<(String, String)>);

impl Transcript {
    pub fn add(&mut self, label: &str, value: impl Into<String>) {
        self.0.push((label.to_string(), value.into()));
    }

    pub fn add_output(&mut self, prefix: &str, out: &Output) {
        self.add(&format!("{prefix}status"), out.status.to_string());
        self.add(&format!("{prefix}stdout"), out.stdout_str());
        self.add(&format!("{prefix}stderr"), out.stderr_str());
    }

    /// Records a terminal's exit status and screen under `prefix`; returns the screen.
    pub fn add_screen(&mut self, prefix: &str, out: &PtyOutput) -> String {
        let screen = out.screen_text();
        self.add(&format!("{prefix}status"), out.status.to_string());
        self.add(&format!("{prefix}screen"), screen.clone());
        screen
    }

    pub fn normalized(&self, ctx: &Ctx) -> Transcript {
        let scratch = ctx.scratch_str();
        Transcript(
            self.0
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.replace(&ctx.id, "<ID>").replace(&scratch, "<SCRATCH>"),
                    )
                })
                .collect(),
        )
    }

    pub fn render(&self) -> String {
        self.0
            .iter()
            .map(|(k, v)| format!("  {k}: {v:?}"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

pub fn expect_eq(what: &str, got: impl AsRef<str>, want: impl AsRef<str>) -> Result<()> {
    let (got, want) = (got.as_ref(), want.as_ref());
    ensure!(got == want, "{what}: got {got:?}, expected {want:?}");
    Ok(())
}

/// Everything a run printed, for failure messages.
pub fn shown(out: &Output) -> String {
    format!(
        "(status {}, stdout {:?}, stderr {:?})",
        out.status,
        out.stdout_str(),
        out.stderr_str()
    )
}

/// Fails unless the exit status is `status`, showing everything the workload printed.
pub fn expect_status(out: &Output, status: i32) -> Result<()> {
    ensure!(
        out.status.0 == status,
        "exit status {} != {status}\n(stdout {:?}, stderr {:?})",
        out.status,
        out.stdout_str(),
        out.stderr_str()
    );
    Ok(())
}

pub fn expect_output(out: &Output, status: i32, stdout: &str, stderr: &str) -> Result<()> {
    let ctx = format!(
        "\n(status {}, stdout {:?}, stderr {:?})",
        out.status,
        out.stdout_str(),
        out.stderr_str()
    );
    ensure!(
        out.status.0 == status,
        "exit status {} != {status}{ctx}",
        out.status
    );
    ensure!(out.stdout_str() == stdout, "stdout != {stdout:?}{ctx}");
    ensure!(out.stderr_str() == stderr, "stderr != {stderr:?}{ctx}");
    Ok(())
}

// Leaving nothing behind

/// Everything that would show the container still exists somewhere.
pub fn traces_of(cd: &Containerd, id: &str) -> Result<Vec<String>> {
    let mut traces = Vec::new();
    let containers = cd.ctr_ok(&["container", "ls", "-q"])?.stdout_str();
    if containers.lines().any(|l| l.trim() == id) {
        traces.push(format!("containerd still lists container {id}"));
    }
    if let Some(status) = cd.task_status(id)? {
        traces.push(format!("containerd still lists task {id} ({status})"));
    }
    let own = std::process::id() as i32;
    for p in host::processes_matching(&[id]) {
        if p.pid != own {
            traces.push(format!("process {} still runs: {}", p.pid, p.cmdline));
        }
    }
    for m in host::mounts_containing(&format!("/{id}/")) {
        traces.push(format!("mount left: {}", m.display()));
    }
    for m in host::mounts_containing(&format!("/{id}")) {
        if m.ends_with(id) {
            traces.push(format!("mount left: {}", m.display()));
        }
    }
    // The shim's lxcpath, flat or per containerd namespace.
    for lxc_dir in [
        Path::new(SHIM_LXCPATH).join(id),
        Path::new(SHIM_LXCPATH).join(e2e::NAMESPACE).join(id),
    ] {
        if lxc_dir.exists() {
            traces.push(format!("LXC container dir left: {}", lxc_dir.display()));
        }
    }
    for cg in host::cgroups_of(e2e::NAMESPACE, id) {
        traces.push(format!("cgroup left: {}", cg.display()));
    }
    Ok(traces)
}

/// Waits (shims exit asynchronously) until no trace of the container is left, or fails
/// listing them.
pub fn assert_nothing_left(cd: &Containerd, id: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let traces = traces_of(cd, id)?;
        if traces.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "container {id} left traces behind:\n  {}",
                traces.join("\n  ")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

// The cases

pub fn sh_grep_status() -> &'static str {
    "grep -E '^(Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs|Seccomp):' /proc/self/status"
}

pub fn simple(
    ctx: &Ctx,
    flags: &[&str],
    script: &str,
    stdin: Option<Vec<u8>>,
) -> Result<(Transcript, Output)> {
    let out = ctx.run_sh(flags, script, stdin)?;
    let mut t = Transcript::default();
    t.add_output("", &out);
    Ok((t, out))
}

pub fn bind_dir(ctx: &Ctx) -> Result<PathBuf> {
    let dir = ctx.scratch.join("bind");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("input.txt"), "from the host\n")?;
    Ok(dir)
}

/// Runs `sh -c SCRIPT` in the app image (its User, Env and WorkingDir apply) and records what
/// it printed.
pub fn app_sh(ctx: &Ctx, script: &str) -> Result<(Transcript, Output)> {
    let out = cmd::run(
        &mut ctx.run_cmd(&[], APP_IMAGE, &["sh", "-c", script]),
        None,
        RUN_TIMEOUT,
    )?;
    let mut t = Transcript::default();
    t.add_output("", &out);
    Ok((t, out))
}
