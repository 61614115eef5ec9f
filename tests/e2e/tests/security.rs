//! Security end to end (issue 12), as root against a private containerd and real LXC, on both
//! drivers (`pve` against the in-process Proxmox API test server, see `tests/pve.rs`):
//!
//! - a container's secrets stay its own: every path the shim created for a running container
//!   whose environment holds `DB_PASSWORD=hunter2` is unreadable and unlistable for an
//!   unprivileged host user, and the Proxmox CT config (world-readable `/etc/pve` on a node)
//!   holds no secret;
//! - the in-container helper cannot be written from inside a container (runc CVE-2019-5736):
//!   a static program in the container reaches running helpers through `/proc/PID/exe` and
//!   tries to write them; the helper stays unchanged and later containers are unaffected;
//! - the API token never leaves its file: not in any log at debug level, nor in the shim's or
//!   its children's command lines and environments, nor in any file the shim wrote;
//! - what host root reads, runs or acts on in a user-namespaced container's state directory
//!   is out of the reach of the host uid its root maps to (issue 21): it can change, replace
//!   or add nothing there; and the LXC tools do not take an adopted container for a stopped
//!   one, nor does a `shim delete` after a crash leave its init running when its
//!   `lxcpath/ID` is gone.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use e2e::cmd::{self, Output};
use e2e::image::BUSYBOX_IMAGE;
use e2e::pve_node::{PveNode, TOKEN_SECRET};
use e2e::{paths, Containerd, ContainerdVersion, NAMESPACE, SHIM_LXCPATH, SHIM_RUNTIME};

const RUN_TIMEOUT: Duration = Duration::from_secs(30);
/// VMIDs of this file's pve cases (tests/pve.rs and the CRI tests use 990100-990399).
const SECRETS_RANGE: [u32; 2] = [990400, 990419];
const TOKEN_RANGE: [u32; 2] = [990420, 990439];
const STATE_RANGE: [u32; 2] = [990440, 990459];
const SECRET_ENV: &str = "DB_PASSWORD=hunter2";
const SECRET: &str = "hunter2";
/// The shim's per-container state directories (crates/shim/src/config.rs STATE_ROOT).
const STATE_ROOT: &str = "/run/containerd-shim-proxmox-lxc";
/// `nobody`/`nogroup` on Debian.
const NOBODY: u32 = 65534;

fn root_or_skip() -> Result<(), skip_harness::Missing> {
    e2e::require_root_and_shim("LXC containers, containerd, setuid to nobody")
}

struct Env {
    node: Option<PveNode>,
    cd: Containerd,
    work: PathBuf,
}

impl Env {
    fn start(label: &str, pve_range: Option<[u32; 2]>) -> Result<Env> {
        let work = std::env::temp_dir().join(format!("pxlxc-sec-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work)?;
        let node = match pve_range {
            Some(range) => Some(PveNode::start(&work, range, 20, "")?),
            None => None,
        };
        let version = ContainerdVersion::system().map_err(anyhow::Error::msg)?;
        let cd = Containerd::start(version, &work.join("containerd"), &paths::shim_dir())?;
        cd.import_images()?;
        Ok(Env { node, cd, work })
    }

    fn run_args(&self, id: &str, flags: &[&str], args: &[&str]) -> Vec<String> {
        let mut all: Vec<String> = vec!["run".into(), format!("--runtime={SHIM_RUNTIME}")];
        if let Some(node) = &self.node {
            all.push(format!(
                "--runtime-config-path={}",
                node.shim_config.display()
            ));
        }
        all.extend(flags.iter().map(|s| s.to_string()));
        all.push(BUSYBOX_IMAGE.into());
        all.push(id.into());
        all.extend(args.iter().map(|s| s.to_string()));
        all
    }

    fn ctr(&self, args: &[String]) -> Result<Output> {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        cmd::run(&mut self.cd.ctr_cmd(&refs), None, RUN_TIMEOUT)
    }

    fn run_detached(&self, id: &str, flags: &[&str], args: &[&str]) -> Result<()> {
        let mut f = vec!["-d"];
        f.extend_from_slice(flags);
        self.ctr(&self.run_args(id, &f, args))?
            .ok(&format!("ctr run -d {id}"))?;
        self.cd.wait_task_status(id, "RUNNING", RUN_TIMEOUT)
    }

    fn finish(self, label: &str) -> Result<()> {
        let leftovers = self.cd.teardown(label);
        let work = self.work.clone();
        let node_left = self
            .node
            .as_ref()
            .map(|n| n.leftovers())
            .unwrap_or_default();
        drop(self.node);
        let _ = std::fs::remove_dir_all(&work);
        ensure!(leftovers.is_empty(), "leftovers: {leftovers:?}");
        ensure!(node_left.is_empty(), "node leftovers: {node_left:?}");
        Ok(())
    }
}

/// The shim's state directory of container `id` (crates/shim/src/task.rs `state_dir_for`).
fn state_dir_of(id: &str) -> PathBuf {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("{NAMESPACE}/{id}").as_bytes());
    Path::new(STATE_ROOT).join(&hex::encode(digest)[..16])
}

/// Every path under `root` (itself included), as root sees them.
fn walk(root: &Path, out: &mut Vec<PathBuf>) {
    out.push(root.to_path_buf());
    if std::fs::symlink_metadata(root).is_ok_and(|m| m.is_dir()) {
        for e in std::fs::read_dir(root).into_iter().flatten().flatten() {
            walk(&e.path(), out);
        }
    }
}

/// Runs `argv` as host uid and gid `id` with no supplementary groups (util-linux `setpriv`).
fn as_user(id: u32, argv: &[&std::ffi::OsStr]) -> Result<Output> {
    let mut c = Command::new("setpriv");
    c.arg(format!("--reuid={id}"))
        .arg(format!("--regid={id}"))
        .arg("--clear-groups")
        .arg("--")
        .args(argv);
    cmd::run(&mut c, None, Duration::from_secs(10))
}

/// Runs `program args` as nobody:nogroup.
fn as_nobody(program: &str, args: &[&Path]) -> Result<Output> {
    let argv: Vec<&std::ffi::OsStr> = std::iter::once(program.as_ref())
        .chain(args.iter().map(|a| a.as_os_str()))
        .collect();
    as_user(NOBODY, &argv)
}

/// Runs a whole end-to-end case: its own containerd (and test node for `pve_range`), torn
/// down after, leftovers failing the case.
fn with_env(
    label: &str,
    pve_range: Option<[u32; 2]>,
    case: impl FnOnce(&Env) -> Result<()>,
) -> Result<()> {
    root_or_skip()?;
    let env = Env::start(label, pve_range)?;
    let result = case(&env);
    let finish = env.finish(&format!("security-{label}"));
    result.and(finish)
}

/// Every attempt of nobody to read (files) or list (directories) `paths` fails, and nothing
/// it printed holds the secret. A positive control first: nobody can read a public file, so a
/// failure below is the path's mode, not a broken setuid.
fn nobody_cannot_read(paths: &[PathBuf]) -> Result<()> {
    let control = as_nobody("cat", &[Path::new("/etc/hostname")])?;
    ensure!(
        control.status.0 == 0,
        "control: nobody cannot read /etc/hostname: {}",
        control.stderr_str()
    );
    let mut readable = Vec::new();
    for p in paths {
        let is_dir = std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir());
        let out = if is_dir {
            as_nobody("ls", &[Path::new("-a"), p])?
        } else {
            as_nobody("cat", &[p.as_path()])?
        };
        if out.status.0 == 0 || out.stdout_str().contains(SECRET) {
            let mode = std::fs::symlink_metadata(p)
                .map(|m| m.permissions().mode() & 0o7777)
                .unwrap_or(0);
            readable.push(format!("{} (mode {mode:04o})", p.display()));
        }
    }
    ensure!(
        readable.is_empty(),
        "nobody could read or list {} of {} paths the shim created: {readable:?}",
        readable.len(),
        paths.len()
    );
    Ok(())
}

fn secrets_case(env: &Env, id: &str) -> Result<()> {
    env.run_detached(id, &["--env", SECRET_ENV], &["sleep", "120"])?;
    // The secret is where the helper needs it (so the paths below are the right ones)...
    let state = state_dir_of(id);
    let spec = std::fs::read_to_string(state.join("helper/init.json"))
        .with_context(|| format!("read {}/helper/init.json as root", state.display()))?;
    ensure!(spec.contains(SECRET), "init.json does not hold the env");
    // ... and an exec's too, while it runs.
    env.ctr(&[
        "task".into(),
        "exec".into(),
        "--exec-id".into(),
        "e1".into(),
        id.into(),
        "true".into(),
    ])?
    .ok("exec")?;

    let mut all = Vec::new();
    walk(&state, &mut all);
    if env.node.is_none() {
        // The lxc driver's lxcpath is one per containerd namespace (driver/mod.rs).
        let dir = Path::new(SHIM_LXCPATH).join(NAMESPACE).join(id);
        // Set aside once the shim took the init over (driver/lxc.rs, ADOPTED_CONFIG_NAME).
        ensure!(
            dir.join("config.adopted").is_file(),
            "no LXC config in {}",
            dir.display()
        );
        walk(&dir, &mut all);
    }
    println!("{} paths of {id}: {all:?}", all.len());
    ensure!(all.len() >= 4, "too few paths found: {all:?}");
    nobody_cannot_read(&all)?;

    if let Some(node) = &env.node {
        // /etc/pve is readable by www-data on a node: a CT config (and anything it includes
        // from there) must hold no secret.
        let configs = node.ct_configs();
        ensure!(configs.len() == 1, "one CT expected: {configs:?}");
        for (vmid, text) in &configs {
            ensure!(
                !text.contains(SECRET),
                "CT {vmid}'s config holds the secret:\n{text}"
            );
            for line in text.lines() {
                if let Some(inc) = line.strip_prefix("lxc.include") {
                    let inc = inc.trim_start_matches([' ', '=', ':']).trim();
                    ensure!(
                        Path::new(inc).starts_with(&state),
                        "CT {vmid} includes {inc}, outside the container's private state dir"
                    );
                }
            }
        }
    }
    env.cd.force_remove(id);
    ensure!(!state.exists(), "{} left after delete", state.display());
    Ok(())
}

fn container_secrets_are_private_lxc() -> Result<()> {
    with_env("secrets-lxc", None, |env| secrets_case(env, "sec-lxc"))
}

fn container_secrets_are_private_pve() -> Result<()> {
    with_env("secrets-pve", Some(SECRETS_RANGE), |env| {
        secrets_case(env, "sec-pve")
    })
}

/// The attack of runc CVE-2019-5736, from inside a container, as a small static program (std
/// only, built by the test with rustc). It watches the container's /proc for processes whose
/// binary is the runtime's helper (`/proc/PID/exe` names an `init`), takes a handle on that
/// binary (O_PATH, as the exploit does), and once nothing executes it any more tries to open
/// it for writing and write to it. The probe writes back the byte that is there, so on a
/// vulnerable shim it proves the helper writable without poisoning it for others on the host.
/// It stops when /tmp/stop exists and prints one line per handle.
const ATTACK_RS: &str = r#"
use std::io::Read;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;

fn probe(handle: &std::fs::File) -> Option<String> {
    let path = format!("/proc/self/fd/{}", handle.as_raw_fd());
    match std::fs::OpenOptions::new().write(true).open(&path) {
        Err(e) if e.raw_os_error() == Some(26) => None, // ETXTBSY: still executed, try again
        Err(e) => Some(format!("open-for-write refused: {e}")),
        Ok(w) => {
            let mut first = [0u8; 1];
            let read = std::fs::File::open(&path).and_then(|mut r| r.read_exact(&mut first));
            if read.is_err() {
                return Some("open-for-write WRITABLE (could not read it back)".into());
            }
            match w.write_at(&first, 0) {
                Ok(_) => Some("WRITABLE: wrote into the helper".into()),
                Err(e) => Some(format!("opened for write, write refused: {e}")),
            }
        }
    }
}

fn main() {
    let me = std::process::id().to_string();
    let own = std::fs::read_link("/proc/self/exe").unwrap_or_default();
    let mut held: Vec<(String, String, std::fs::File)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    println!("attack ready");
    loop {
        let stop = Path::new("/tmp/stop").exists();
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let pid = e.file_name().to_string_lossy().into_owned();
            if pid == me || !pid.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let Ok(link) = std::fs::read_link(format!("/proc/{pid}/exe")) else { continue };
            let name = link.to_string_lossy().into_owned();
            if link == own || !name.contains("init") || !seen.insert(pid.clone()) {
                continue;
            }
            if let Ok(f) = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(0o10000000) // O_PATH
                .open(format!("/proc/{pid}/exe"))
            {
                held.push((pid, name, f));
            }
        }
        let mut left = Vec::new();
        for (pid, name, f) in held.drain(..) {
            match probe(&f) {
                Some(result) => println!("caught pid {pid} exe {name}: {result}"),
                None if stop => println!("caught pid {pid} exe {name}: still executed at the end"),
                None => left.push((pid, name, f)),
            }
        }
        held = left;
        if stop {
            println!("attack done");
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}
"#;

fn build_attack(dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let out = dir.join("attack");
    cmd::build_static_rust(
        "the attack program",
        ATTACK_RS,
        &dir.join("attack.rs"),
        &out,
    )?;
    Ok(out)
}

/// sha256 of every shared helper copy under the state root.
fn helper_digests() -> Vec<(PathBuf, String)> {
    use sha2::Digest;
    let mut out: Vec<(PathBuf, String)> = std::fs::read_dir(STATE_ROOT)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("helper-"))
        .filter_map(|e| {
            let path = e.path().join("init");
            let bytes = std::fs::read(&path).ok()?;
            Some((path, hex::encode(sha2::Sha256::digest(&bytes))))
        })
        .collect();
    out.sort();
    out
}

fn helper_case(env: &Env) -> Result<()> {
    let attack_dir = env.work.join("attack");
    build_attack(&attack_dir)?;
    let mount = format!(
        "type=bind,src={},dst=/attack,options=rbind:ro",
        attack_dir.display()
    );
    let id = "helper-attack";
    let args = env.run_args(
        id,
        &["--rm", "--mount", &mount],
        &[
            "sh",
            "-c",
            "printf '#!/proc/self/exe\\n' > /tmp/evil && chmod +x /tmp/evil && exec /attack/attack",
        ],
    );
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut bg = cmd::Background::spawn(&mut env.cd.ctr_cmd(&refs), None)?;
    bg.wait_for_stdout("attack ready", RUN_TIMEOUT)?;
    let before = helper_digests();

    let exec = |n: usize, argv: &[&str]| -> Result<Output> {
        let mut a: Vec<String> = vec![
            "task".into(),
            "exec".into(),
            "--exec-id".into(),
            format!("x{n}"),
            id.into(),
        ];
        a.extend(argv.iter().map(|s| s.to_string()));
        env.ctr(&a)
    };
    // Ordinary execs (the helper runs for each), and execs whose target makes the helper run
    // again as the workload (`#!/proc/self/exe`), as the exploit does.
    for n in 0..6 {
        let plain = exec(n, &["true"])?;
        let evil = exec(100 + n, &["/tmp/evil"])?;
        println!(
            "exec true: {}; exec /tmp/evil: {} {}",
            plain.status.0,
            evil.status.0,
            evil.stderr_str().trim()
        );
    }
    let stop = exec(999, &["touch", "/tmp/stop"])?;
    if stop.status.0 != 0 {
        println!("stop exec: {} {}", stop.status.0, stop.stderr_str());
    }
    let out = bg.wait(RUN_TIMEOUT)?;
    let report = out.stdout_str();
    println!("attack report:\n{report}");
    ensure!(
        report.contains("attack done"),
        "the attack did not finish: {report}"
    );
    let caught: Vec<&str> = report.lines().filter(|l| l.starts_with("caught")).collect();
    ensure!(
        !caught.is_empty(),
        "the attack never reached a helper (the test proves nothing): {report}"
    );
    let writable: Vec<&&str> = caught
        .iter()
        .filter(|l| l.contains("WRITABLE") || l.contains("still executed"))
        .collect();
    ensure!(
        writable.is_empty(),
        "a container could open the helper for writing: {writable:?}"
    );
    let after = helper_digests();
    for (path, digest) in &before {
        let now = after.iter().find(|(p, _)| p == path).map(|(_, d)| d);
        ensure!(
            now == Some(digest),
            "{} changed: {digest} -> {now:?}",
            path.display()
        );
    }
    // A later container is unaffected: its init and an exec run the real helper.
    let later = env.ctr(&env.run_args(
        "helper-later",
        &["--rm"],
        &["sh", "-c", "echo fine; exit 7"],
    ))?;
    ensure!(
        later.status.0 == 7 && later.stdout_str() == "fine\n",
        "later container: exit {} stdout {:?} stderr {:?}",
        later.status.0,
        later.stdout_str(),
        later.stderr_str()
    );
    Ok(())
}

fn helper_cannot_be_written_from_a_container() -> Result<()> {
    with_env("helper", None, helper_case)
}

/// Where `needle` occurs in the regular files under `root` (files over 64 MiB skipped: binaries
/// such as helper copies or images, which the shim does not write the token into).
fn files_containing(root: &Path, needle: &[u8], found: &mut Vec<PathBuf>, seen: &mut usize) {
    let mut all = Vec::new();
    walk(root, &mut all);
    for path in all {
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if !meta.is_file() || meta.len() > 64 << 20 {
            continue;
        }
        *seen += 1;
        if let Ok(bytes) = std::fs::read(&path) {
            if bytes.windows(needle.len()).any(|w| w == needle) {
                found.push(path);
            }
        }
    }
}

/// The shim processes of this containerd and every descendant (lxc-start, lxc-attach, tidy,
/// the containers' processes).
fn shim_family(cd: &Containerd) -> Vec<e2e::host::Proc> {
    let all = e2e::host::processes();
    let mut family: Vec<e2e::host::Proc> = cd.shim_processes();
    let mut i = 0;
    while i < family.len() {
        let parent = family[i].pid;
        for p in &all {
            if p.ppid == parent && !family.iter().any(|f| f.pid == p.pid) {
                family.push(p.clone());
            }
        }
        i += 1;
    }
    family
}

fn token_case(env: &Env) -> Result<()> {
    let node = env.node.as_ref().context("pve node")?;
    let secret = TOKEN_SECRET.as_bytes();
    let mut leaks = Vec::new();
    let mut check_processes = |when: &str| -> Result<usize> {
        let family = shim_family(&env.cd);
        ensure!(!family.is_empty(), "{when}: no shim process found");
        for p in &family {
            for file in ["cmdline", "environ"] {
                let bytes = std::fs::read(format!("/proc/{}/{file}", p.pid)).unwrap_or_default();
                if bytes.windows(secret.len()).any(|w| w == secret) {
                    leaks.push(format!("{when}: /proc/{}/{file} ({})", p.pid, p.cmdline));
                }
            }
        }
        Ok(family.len())
    };

    // A full lifecycle with debug logging (the node's shim config sets log_level = "debug"):
    // create, start, exec, kill, delete through the API, plus a run to completion.
    env.run_detached("tok-1", &[], &["sleep", "120"])?;
    let n = check_processes("running")?;
    let exec = env.ctr(&[
        "task".into(),
        "exec".into(),
        "--exec-id".into(),
        "e1".into(),
        "tok-1".into(),
        "sh".into(),
        "-c".into(),
        "echo exec-ok".into(),
    ])?;
    ensure!(
        exec.stdout_str() == "exec-ok\n",
        "exec: {:?}",
        exec.stderr_str()
    );
    let n2 = check_processes("after exec")?;
    let state = state_dir_of("tok-1");
    let run = env.ctr(&env.run_args("tok-2", &["--rm"], &["sh", "-c", "echo done"]))?;
    ensure!(run.stdout_str() == "done\n", "run: {:?}", run.stderr_str());

    let mut found = Vec::new();
    let mut seen = 0;
    // Everything the shim wrote for its containers while they exist: state dirs, the CT
    // configs (the node's /etc/pve), the CTs' LXC dirs, containerd's bundles and state.
    files_containing(&state, secret, &mut found, &mut seen);
    files_containing(&node.config_dir, secret, &mut found, &mut seen);
    for vmid in node.range[0]..=node.range[1] {
        files_containing(
            &Path::new(e2e::pve_node::LXCPATH).join(vmid.to_string()),
            secret,
            &mut found,
            &mut seen,
        );
    }
    env.cd.force_remove("tok-1");
    files_containing(&env.work.join("containerd"), secret, &mut found, &mut seen);
    files_containing(&env.work.join("ct-stderr"), secret, &mut found, &mut seen);
    // The logs: containerd's (the shim logs into it) and LXC's in the state dirs.
    let log = std::fs::read_to_string(env.cd.log_path()).unwrap_or_default();
    ensure!(
        log.contains("status polls"),
        "the shim's debug lines are not in containerd's log, so it proves nothing"
    );
    if log.contains(TOKEN_SECRET) {
        leaks.push("containerd's log (with the shim's debug lines)".into());
    }
    println!(
        "checked {n}+{n2} processes' cmdline and environ, {seen} files, {} log bytes",
        log.len()
    );
    ensure!(leaks.is_empty(), "the API token leaked into: {leaks:?}");
    ensure!(
        found.is_empty(),
        "the API token is in these files: {found:?}"
    );
    Ok(())
}

fn api_token_stays_in_its_file() -> Result<()> {
    with_env("token", Some(TOKEN_RANGE), token_case)
}

/// The host ids a user-namespaced container's root maps to here.
const MAPPED_ROOT: u32 = 100000;
const USERNS_FLAGS: [&str; 5] = [
    "--null-io",
    "--uidmap",
    "0:100000:65536",
    "--gidmap",
    "0:100000:65536",
];

/// Runs `sh -c SCRIPT sh ARGS` as the host uid/gid a container's root maps to.
fn as_mapped_root(script: &str, args: &[&Path]) -> Result<Output> {
    let argv: Vec<&std::ffi::OsStr> = ["sh", "-c", script, "sh"]
        .into_iter()
        .map(std::ffi::OsStr::new)
        .chain(args.iter().map(|a| a.as_os_str()))
        .collect();
    as_user(MAPPED_ROOT, &argv)
}

/// Each entry of `dir` with what it is (file content, link target, or kind).
fn snapshot(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut paths = Vec::new();
    walk(dir, &mut paths);
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let what = match std::fs::symlink_metadata(&p) {
                Ok(m) if m.file_type().is_symlink() => {
                    format!("-> {:?}", std::fs::read_link(&p).unwrap_or_default())
                }
                Ok(m) if m.is_file() => format!("{:?}", std::fs::read(&p).unwrap_or_default()),
                Ok(m) => format!("{:?} {:o}", m.file_type(), m.permissions().mode()),
                Err(e) => e.to_string(),
            };
            (p, what)
        })
        .collect()
}

fn state_case(env: &Env, id: &str) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    env.run_detached(id, &USERNS_FLAGS, &["sleep", "120"])?;
    let state = state_dir_of(id);
    let meta = std::fs::metadata(&state)?;
    ensure!(
        (meta.uid(), meta.gid(), meta.mode() & 0o7777) == (0, MAPPED_ROOT, 0o710),
        "{} is {}:{} {:o}, not root:{MAPPED_ROOT} 0710",
        state.display(),
        meta.uid(),
        meta.gid(),
        meta.mode() & 0o7777
    );
    let helper_dir = state.join("helper");
    let meta = std::fs::metadata(&helper_dir)?;
    ensure!(
        meta.uid() == MAPPED_ROOT && meta.mode() & 0o777 == 0o700,
        "{} is not the container root's 0700 directory",
        helper_dir.display()
    );
    // Everything but the helper's own directory: the mapped root can change, replace or add
    // nothing, not even with a link to a host file.
    let before: Vec<_> = snapshot(&state)
        .into_iter()
        .filter(|(p, _)| !p.starts_with(&helper_dir))
        .collect();
    let entries: Vec<&Path> = before
        .iter()
        .map(|(p, _)| p.as_path())
        .filter(|p| *p != state.as_path())
        .collect();
    ensure!(
        entries.len() >= 3,
        "too few files in {}: {entries:?}",
        state.display()
    );
    let mut succeeded = Vec::new();
    for entry in &entries {
        let attempts = [
            ("write", "echo x >> \"$1\""),
            ("move", "mv -f \"$1\" \"$1.moved\""),
            ("link", "ln -sfn /etc/shadow \"$1\""),
            ("remove", "rm -f \"$1\""),
        ];
        for (what, script) in attempts {
            if as_mapped_root(script, &[entry])?.status.0 == 0 {
                succeeded.push(format!("{what} {}", entry.display()));
            }
        }
    }
    if as_mapped_root("touch \"$1\"", &[&state.join("added")])?
        .status
        .0
        == 0
    {
        succeeded.push("add a file".into());
    }
    let after: Vec<_> = snapshot(&state)
        .into_iter()
        .filter(|(p, _)| !p.starts_with(&helper_dir))
        .collect();
    println!(
        "{id}: the mapped root tried {} entries of the state dir: {succeeded:?}",
        entries.len()
    );
    ensure!(
        succeeded.is_empty() && after == before,
        "the container's mapped root altered the state dir: {succeeded:?}"
    );
    Ok(())
}

/// The lxc driver's adopted container: LXC's tools do not know it (so cannot start a second
/// one or destroy its rootfs), and a crashed shim's `shim delete` ends it even with its
/// `lxcpath/ID` gone.
fn adopted_case(env: &Env, id: &str) -> Result<()> {
    let lxcpath = Path::new(SHIM_LXCPATH).join(NAMESPACE);
    let lxc = |tool: &str, extra: &[&str]| -> Result<Output> {
        let mut c = Command::new(tool);
        c.args(["-n", id, "-P"]).arg(&lxcpath).args(extra);
        cmd::run(&mut c, None, Duration::from_secs(20))
    };
    let init = env.cd.task_pid(id)?.context("the container's init pid")?;
    let listed = {
        let mut c = Command::new("lxc-ls");
        c.arg("-P").arg(&lxcpath);
        cmd::run(&mut c, None, Duration::from_secs(20))?.stdout_str()
    };
    ensure!(
        !listed.split_whitespace().any(|n| n == id),
        "lxc-ls lists the adopted container {id}: {listed:?}"
    );
    let start = lxc("lxc-start", &["-d"])?;
    let destroy = lxc("lxc-destroy", &[])?;
    ensure!(
        start.status.0 != 0 && destroy.status.0 != 0,
        "lxc-start (status {}) and lxc-destroy (status {}) must refuse {id}",
        start.status.0,
        destroy.status.0
    );
    ensure!(
        e2e::host::pid_alive(init) && env.cd.task_status(id)?.as_deref() == Some("RUNNING"),
        "{id} is no longer running after the LXC tools were turned away"
    );
    // The shim dies and its lxcpath entry is gone: containerd's `shim delete` must still end
    // the init, from the cgroups kept in the (root's) state dir.
    std::fs::remove_dir_all(lxcpath.join(id))?;
    for shim in env.cd.shim_processes() {
        if shim.cmdline.split(' ').any(|a| a == id) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(shim.pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    env.cd.force_remove(id);
    let deadline = std::time::Instant::now() + RUN_TIMEOUT;
    while e2e::host::pid_alive(init) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    ensure!(
        !e2e::host::pid_alive(init),
        "the init {init} of {id} outlived its shim and `shim delete`"
    );
    let cgroups = e2e::host::cgroups_of(NAMESPACE, id);
    ensure!(cgroups.is_empty(), "cgroups left: {cgroups:?}");
    Ok(())
}

fn state_is_host_roots_lxc() -> Result<()> {
    with_env("state-lxc", None, |env| {
        let result = state_case(env, "state-1").and_then(|()| adopted_case(env, "state-1"));
        env.cd.force_remove("state-1");
        result
    })
}

/// The pve driver's state dir (the CT's include file, seccomp profile, LXC's log) is out of
/// the mapped root's reach the same way; the CT itself is Proxmox's, found by its VMID.
fn state_is_host_roots_pve() -> Result<()> {
    with_env("state-pve", Some(STATE_RANGE), |env| {
        let result = state_case(env, "state-2");
        env.cd.force_remove("state-2");
        result
    })
}

skip_harness::main!(
    container_secrets_are_private_lxc,
    container_secrets_are_private_pve,
    state_is_host_roots_lxc,
    state_is_host_roots_pve,
    helper_cannot_be_written_from_a_container,
    api_token_stays_in_its_file,
);
