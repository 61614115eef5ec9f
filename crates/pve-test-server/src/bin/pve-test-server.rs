//! Serves the Proxmox API test double on 127.0.0.1 for manual use and end-to-end tests.
//!
//! ```text
//! pve-test-server [--port N] [--node NAME] [--config-dir DIR] [--lock-dir DIR]
//!                 [--token USER@REALM!ID=SECRET]... [--user USER@REALM:PASSWORD]...
//!                 [--ca-out FILE] [--task-ms N]
//! pve-test-server --lxc-node DIR [--vmid-range LOW-HIGH] [--port N] [--node NAME]
//! ```
//!
//! The node's name defaults to `pve`, with `--lxc-node` to this host's name (as on a node,
//! where `check` compares the two).
//!
//! The first form serves the API only: CTs are records, nothing runs (a `ctr run` on the pve
//! driver against it waits for its helper until it times out).
//!
//! `--lxc-node DIR` plays the node with real LXC, as the e2e tests' `PveNode` does: a CT start
//! renders its config the way pve-container does and runs `lxc-start` in `/var/lib/lxc`
//! (through `pve-container@VMID` where systemd has that unit, else under the server's own
//! supervision). Needs root and LXC. It writes, in DIR (0700): `etc-pve-lxc/` and `lock-lxc/`
//! (the node's `/etc/pve/lxc` and `/run/lock/lxc`), `pve-root-ca.pem`, `token` (0600, a fresh
//! secret of `containerd@pve!shim`, which gets the privileges of docs/operator.md's ACL scheme
//! and no others) and `shim.toml` (0600, a complete `driver = "pve"` config pointing at this
//! server), the last once the server listens. On SIGINT/SIGTERM it destroys the CTs still
//! configured (naming each) and exits.
//!
//! Prints `key=value` lines: url, node, fingerprint, config_dir, lock_dir (and shim_config),
//! then serves until interrupted.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use pve_test_server::{CtConfig, LxcNodeBackend, NodeBackend, TaskLog, TestServer};

/// The token `--lxc-node` writes, as docs/operator.md makes it on a node.
const NODE_TOKEN_ID: &str = "containerd@pve!shim";
/// docs/operator.md's scheme: `ContainerdShim` on `/vms`, `Sys.Audit` on `/`. The test server
/// grants a token's privileges on every path, so this is their union.
const NODE_TOKEN_PRIVILEGES: &[&str] = &[
    "VM.Audit",
    "VM.PowerMgmt",
    "VM.Allocate",
    "VM.Config.CPU",
    "VM.Config.Memory",
    "Sys.Audit",
];
/// Where a node keeps its CTs for LXC (pve-container's lxcpath).
const NODE_LXCPATH: &str = "/var/lib/lxc";
/// Clear of the ranges the e2e and CRI tests use (990000..), so a by-hand node can run beside
/// them without taking their VMIDs.
const DEFAULT_NODE_RANGE: [u32; 2] = [960000, 960099];

fn usage() -> ! {
    eprintln!(
        "usage: pve-test-server [--port N] [--node NAME] [--config-dir DIR] [--lock-dir DIR] \
         [--token USER@REALM!ID=SECRET]... [--user USER@REALM:PASSWORD]... [--ca-out FILE] \
         [--task-ms N]\n       \
         pve-test-server --lxc-node DIR [--vmid-range LOW-HIGH] [--port N] [--node NAME]"
    );
    std::process::exit(2)
}

fn fail(message: impl std::fmt::Display) -> ! {
    eprintln!("pve-test-server: {message}");
    std::process::exit(1)
}

fn parse_range(text: &str) -> Option<[u32; 2]> {
    let (low, high) = text.split_once('-')?;
    let (low, high) = (low.trim().parse().ok()?, high.trim().parse().ok()?);
    // Proxmox VMIDs are 100..=999999999 (pve-common `pve-vmid`).
    (100 <= low && low <= high && high <= 999_999_999).then_some([low, high])
}

/// The files of `--lxc-node DIR`.
struct NodeDir {
    dir: PathBuf,
    range: [u32; 2],
}

impl NodeDir {
    fn config_dir(&self) -> PathBuf {
        self.dir.join("etc-pve-lxc")
    }
    fn lock_dir(&self) -> PathBuf {
        self.dir.join("lock-lxc")
    }
    fn stderr_dir(&self) -> PathBuf {
        self.dir.join("ct-stderr")
    }
    fn token_file(&self) -> PathBuf {
        self.dir.join("token")
    }
    fn ca_file(&self) -> PathBuf {
        self.dir.join("pve-root-ca.pem")
    }
    fn shim_config(&self) -> PathBuf {
        self.dir.join("shim.toml")
    }

    /// Checks what the mode needs and makes the directories; a `shim.toml` of an earlier run
    /// is removed first, so a new one appearing means this server is ready.
    fn prepare(&self) -> std::io::Result<()> {
        if !nix::unistd::geteuid().is_root() {
            fail("--lxc-node runs real LXC containers (lxc-start in /var/lib/lxc): run it as root");
        }
        if std::process::Command::new("lxc-start")
            .arg("--version")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .map_or(true, |s| !s.success())
        {
            fail("--lxc-node needs LXC: lxc-start is not on PATH (Debian: apt-get install lxc)");
        }
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true).mode(0o700);
        for d in [
            self.dir.clone(),
            self.config_dir(),
            self.lock_dir(),
            self.stderr_dir(),
        ] {
            builder.create(&d)?;
        }
        match std::fs::remove_file(self.shim_config()) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// A file of mode 0600 with `text`, replacing an older one (its mode included).
    fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        file.write_all(text.as_bytes())
    }

    fn write_shim_config(&self, server: &TestServer) -> std::io::Result<()> {
        let text = format!(
            "# Written by `pve-test-server --lxc-node {dir}`: the shim's pve driver against this\n\
             # test node (real LXC, CTs in {NODE_LXCPATH}). Use it as containerd's ConfigPath,\n\
             # `ctr run --runtime-config-path`, or CONTAINERD_SHIM_PROXMOX_LXC_CONFIG.\n\
             driver = \"pve\"\n\
             log_level = \"debug\"\n\
             \n\
             [pve]\n\
             url = \"{url}\"\n\
             node = \"{node}\"\n\
             token_id = \"{NODE_TOKEN_ID}\"\n\
             token_secret_file = \"{token}\"\n\
             ca_file = \"{ca}\"\n\
             # or instead of ca_file: fingerprint = \"{fingerprint}\"\n\
             vmid_range = [{low}, {high}]\n\
             tag_prefix = \"k8s\"\n\
             task_timeout = 60\n\
             # the node's /etc/pve/lxc and /run/lock/lxc (defaults on a real node)\n\
             config_dir = \"{config_dir}\"\n\
             lock_dir = \"{lock_dir}\"\n",
            dir = self.dir.display(),
            url = server.url(),
            node = server.node(),
            token = self.token_file().display(),
            ca = self.ca_file().display(),
            fingerprint = server.fingerprint(),
            low = self.range[0],
            high = self.range[1],
            config_dir = self.config_dir().display(),
            lock_dir = self.lock_dir().display(),
        );
        Self::write_private(&self.shim_config(), &text)
    }

    /// Destroys the CTs still configured (their containers' tasks are gone with them), as a
    /// node's `pct destroy --force` would, so the host keeps no LXC container of this run.
    async fn destroy_leftovers(&self, server: &TestServer, backend: &LxcNodeBackend) {
        let Ok(entries) = std::fs::read_dir(self.config_dir()) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(vmid) = name
                .strip_suffix(".conf")
                .and_then(|v| v.parse::<u32>().ok())
            else {
                continue;
            };
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            let config = match CtConfig::parse(vmid, &text) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("pve-test-server: CT {vmid} left, its config unreadable ({e}); remove {NODE_LXCPATH}/{vmid} by hand");
                    continue;
                }
            };
            let log = TaskLog::default();
            match backend.destroy(server.context(), vmid, &config, &log).await {
                Ok(()) => {
                    let _ = std::fs::remove_file(entry.path());
                    eprintln!("pve-test-server: destroyed CT {vmid}, still configured at exit");
                }
                Err(e) => eprintln!("pve-test-server: CT {vmid}: {e}"),
            }
        }
    }
}

fn secret() -> String {
    // The shape of a Proxmox token secret (a UUID); the value only has to be unguessable.
    let b: [u8; 16] = rand::random();
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

async fn wait_for_signal() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut builder = TestServer::builder();
    let mut port = 0u16;
    let mut ca_out: Option<PathBuf> = None;
    let mut node_dir: Option<PathBuf> = None;
    let mut range: Option<[u32; 2]> = None;
    let mut node_name_given = false;
    let mut api_only_flag = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        match arg.as_str() {
            "--port" => port = value().parse().unwrap_or_else(|_| usage()),
            "--node" => {
                node_name_given = true;
                builder = builder.node(&value())
            }
            "--lxc-node" => node_dir = Some(PathBuf::from(value())),
            "--vmid-range" => {
                range = Some(parse_range(&value()).unwrap_or_else(|| {
                    fail("--vmid-range takes LOW-HIGH, VMIDs from 100 to 999999999, LOW <= HIGH")
                }))
            }
            "--config-dir" => {
                api_only_flag = true;
                builder = builder.config_dir(value())
            }
            "--lock-dir" => {
                api_only_flag = true;
                builder = builder.lock_dir(value())
            }
            "--token" => {
                let v = value();
                let Some((id, secret)) = v.split_once('=') else {
                    usage()
                };
                builder = builder.token(id, secret);
            }
            "--user" => {
                let v = value();
                let Some((user, password)) = v.split_once(':') else {
                    usage()
                };
                builder = builder.user(user, password);
            }
            "--ca-out" => {
                api_only_flag = true;
                ca_out = Some(PathBuf::from(value()))
            }
            "--task-ms" => {
                api_only_flag = true;
                let ms: u64 = value().parse().unwrap_or_else(|_| usage());
                builder = builder.task_duration(Duration::from_millis(ms));
            }
            _ => usage(),
        }
    }
    let node = match node_dir {
        Some(dir) => {
            if api_only_flag {
                fail("--lxc-node DIR chooses its config dir, lock dir, CA file and task timing itself; drop --config-dir, --lock-dir, --ca-out and --task-ms");
            }
            // Absolute: the paths go into a config file read from other working directories.
            let dir = std::path::absolute(&dir)
                .unwrap_or_else(|e| fail(format!("--lxc-node {}: {e}", dir.display())));
            Some(NodeDir {
                dir,
                range: range.unwrap_or(DEFAULT_NODE_RANGE),
            })
        }
        None if range.is_some() => fail("--vmid-range only goes with --lxc-node DIR"),
        None => None,
    };
    let mut backend = None;
    let mut secret_text = None;
    if let Some(node) = &node {
        if let Err(e) = node.prepare() {
            fail(format!("--lxc-node {}: {e}", node.dir.display()));
        }
        if !node_name_given {
            // A node's name is its hostname; `check` compares the two.
            if let Some(host) = nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
            {
                builder = builder.node(&host);
            }
        }
        let lxc = Arc::new(LxcNodeBackend::new(NODE_LXCPATH, node.stderr_dir()));
        let secret = secret();
        builder = builder
            .config_dir(node.config_dir())
            .lock_dir(node.lock_dir())
            .token(NODE_TOKEN_ID, &secret)
            .token_privileges(NODE_TOKEN_ID, NODE_TOKEN_PRIVILEGES)
            // Tasks take as long as LXC does, as on a node.
            .task_duration(Duration::ZERO)
            .backend(lxc.clone());
        backend = Some(lxc);
        secret_text = Some(secret);
    }
    builder = builder.bind(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    let server = match builder.start().await {
        Ok(s) => s,
        Err(e) => fail(e),
    };
    if let Some(path) = ca_out {
        if let Err(e) = server.write_ca_file(&path) {
            fail(format!("writing {}: {e}", path.display()));
        }
    }
    if let (Some(node), Some(secret)) = (&node, &secret_text) {
        let written = NodeDir::write_private(&node.token_file(), &format!("{secret}\n"))
            .and_then(|()| NodeDir::write_private(&node.ca_file(), server.ca_pem()))
            // Last: its appearance says the node is ready.
            .and_then(|()| node.write_shim_config(&server));
        if let Err(e) = written {
            fail(format!("writing into {}: {e}", node.dir.display()));
        }
    }
    println!("url={}", server.url());
    println!("node={}", server.node());
    println!("fingerprint={}", server.fingerprint());
    println!("config_dir={}", server.context().config_dir.display());
    println!("lock_dir={}", server.context().lock_dir.display());
    if let Some(node) = &node {
        println!("shim_config={}", node.shim_config().display());
    }
    // Whoever reads the lines through a pipe gets them now, not at exit.
    let _ = std::io::stdout().flush();
    wait_for_signal().await;
    if let (Some(node), Some(backend)) = (&node, &backend) {
        node.destroy_leftovers(&server, backend).await;
    }
    // Returning drops the server and its temporary dirs.
}
