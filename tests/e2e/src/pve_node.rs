//! The Proxmox VE node the `pve` driver's end-to-end tests run against (`tests/pve.rs`, and the
//! CRI tests in `tests/cri`): the in-process Proxmox API test server playing the node with real
//! LXC ([`pve_test_server::LxcNodeBackend`]: CT config -> LXC config as pve-container does,
//! `lxc-start -F` in `/var/lib/lxc` as `pve-container@VMID`: through systemd and that unit
//! where the host has both, as in the node twin, else under the test node's own supervision),
//! and the shim config that points the `pve` driver at it.
//!
//! The test server is a test double of a Proxmox VE node (none can be installed here): it checks
//! every request against the Proxmox API schema and behaves as pve-container where the shim can
//! tell, but it is not Proxmox.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use pve_test_server::{LxcNodeBackend, Supervisor, TestServer};

use crate::host::{self, Proc};

pub const TOKEN_ID: &str = "root@pam!e2e";
pub const TOKEN_SECRET: &str = "5f3d7a2e-0c1b-4e8f-9a6d-2b7c1e0f4a93";
/// Where a node keeps its LXC containers; shared by every test (as by the CTs of one node), so
/// each test has a VMID range of its own.
pub const LXCPATH: &str = "/var/lib/lxc";
/// The shim's tag prefix in these tests (its default).
pub const TAG_PREFIX: &str = "k8s";

pub struct PveNode {
    pub rt: tokio::runtime::Runtime,
    pub server: TestServer,
    /// The node side: who runs the CTs' `lxc-start` ([`LxcNodeBackend::supervisor`]).
    pub backend: Arc<LxcNodeBackend>,
    /// The node's copy of `/etc/pve/lxc` and its lock directory.
    pub config_dir: PathBuf,
    pub lock_dir: PathBuf,
    pub ca_file: PathBuf,
    /// `driver = "pve"`, pointing at this node.
    pub shim_config: PathBuf,
    pub range: [u32; 2],
}

impl PveNode {
    /// Starts the node with its files under `work`; the shim config gets VMIDs from `range`,
    /// `task_timeout_secs`, and `extra` (more TOML, appended after the `[pve]` table).
    pub fn start(
        work: &Path,
        range: [u32; 2],
        task_timeout_secs: u64,
        extra: &str,
    ) -> Result<PveNode> {
        let config_dir = work.join("etc-pve-lxc");
        let lock_dir = work.join("lock-lxc");
        std::fs::create_dir_all(&config_dir)?;
        std::fs::create_dir_all(&lock_dir)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let backend = Arc::new(LxcNodeBackend::new(LXCPATH, work.join("ct-stderr")));
        // Said once per node, so a run's output shows which path it proved.
        eprintln!(
            "test node: CTs' lxc-start run {}",
            match backend.supervisor() {
                Supervisor::Systemd => "through systemd (systemctl start pve-container@VMID)",
                Supervisor::Own => "under the test node's own supervision (no systemd with pve-container@.service here)",
            }
        );
        let server = rt
            .block_on(
                TestServer::builder()
                    .config_dir(&config_dir)
                    .lock_dir(&lock_dir)
                    .token(TOKEN_ID, TOKEN_SECRET)
                    .task_duration(Duration::ZERO)
                    .backend(backend.clone())
                    .start(),
            )
            .context("start the Proxmox API test server")?;
        let ca_file = work.join("pve-root-ca.pem");
        server.write_ca_file(&ca_file)?;
        let token = work.join("token");
        std::fs::write(&token, format!("{TOKEN_SECRET}\n"))?;
        std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        let shim_config = work.join("shim-pve.toml");
        std::fs::write(
            &shim_config,
            format!(
                "driver = \"pve\"\nlog_level = \"debug\"\n[pve]\nurl = \"{}\"\nnode = \"{}\"\n\
                 token_id = \"{TOKEN_ID}\"\ntoken_secret_file = \"{}\"\nca_file = \"{}\"\n\
                 vmid_range = [{}, {}]\ntag_prefix = \"{TAG_PREFIX}\"\nconfig_dir = \"{}\"\n\
                 lock_dir = \"{}\"\ntask_timeout = {task_timeout_secs}\n{extra}",
                server.url(),
                server.node(),
                token.display(),
                ca_file.display(),
                range[0],
                range[1],
                config_dir.display(),
                lock_dir.display(),
            ),
        )?;
        Ok(PveNode {
            rt,
            server,
            backend,
            config_dir,
            lock_dir,
            ca_file,
            shim_config,
            range,
        })
    }

    /// An API client with the node's token, as an operator's tool would connect.
    pub fn client(&self) -> Result<pve_client::Client> {
        Ok(pve_client::Client::new(pve_client::ClientConfig::new(
            &self.server.url(),
            pve_client::TlsTrust::CaFile(self.ca_file.clone()),
            pve_client::Credentials::Token {
                token_id: TOKEN_ID.into(),
                secret: pve_client::Secret::new(TOKEN_SECRET),
            },
        ))?)
    }

    /// `/cluster/resources?type=vm`, as the Proxmox GUI lists guests.
    pub fn resources(&self) -> Result<Vec<pve_client::ClusterResource>> {
        let client = self.client()?;
        Ok(self
            .rt
            .block_on(client.cluster_resources(Some(pve_client::ResourceType::Vm)))?)
    }

    /// The CT configs in the node's `/etc/pve/lxc` copy: (VMID, text), by VMID.
    pub fn ct_configs(&self) -> Vec<(u32, String)> {
        let mut out: Vec<(u32, String)> = std::fs::read_dir(&self.config_dir)
            .map(|d| {
                d.flatten()
                    .filter_map(|e| {
                        let vmid = e
                            .file_name()
                            .to_str()?
                            .strip_suffix(".conf")?
                            .parse()
                            .ok()?;
                        Some((vmid, std::fs::read_to_string(e.path()).unwrap_or_default()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }

    /// A CT's description (its notes in the GUI), decoded from its config as Proxmox does.
    pub fn ct_description(&self, vmid: u32) -> Option<String> {
        let text = std::fs::read_to_string(self.config_dir.join(format!("{vmid}.conf"))).ok()?;
        pve_test_server::CtConfig::parse(vmid, &text)
            .ok()?
            .description
    }

    /// `lxc-start` processes of CTs in this node's VMID range.
    pub fn lxc_starts(&self) -> Vec<Proc> {
        host::processes()
            .into_iter()
            .filter(|p| {
                // `lxc-start` as the test node spawns it, `/usr/bin/lxc-start` as the unit does.
                p.cmdline
                    .split(' ')
                    .next()
                    .is_some_and(|a| a.rsplit('/').next() == Some("lxc-start"))
                    && p.cmdline
                        .split(' ')
                        .skip_while(|a| *a != "-n")
                        .nth(1)
                        .and_then(|v| v.parse::<u32>().ok())
                        .is_some_and(|v| (self.range[0]..=self.range[1]).contains(&v))
            })
            .collect()
    }

    /// Waits until no `lxc-start` of the range runs: a destroyed CT's `lxc-start` finishes its
    /// own cleanup (post-stop hooks) a moment after the CT is gone, on a node too.
    pub fn wait_lxc_starts_gone(&self, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            let left = self.lxc_starts();
            if left.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let list: Vec<String> = left
                    .iter()
                    .map(|p| format!("{} {}", p.pid, p.cmdline))
                    .collect();
                bail!("lxc-start still runs after {limit:?}: {list:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `pve-container@VMID` units of this range that still run (systemd hosts).
    pub fn running_units(&self) -> Vec<String> {
        pve_test_server::running_ct_units()
            .into_iter()
            .filter(|(vmid, _)| (self.range[0]..=self.range[1]).contains(vmid))
            .map(|(_, unit)| unit)
            .collect()
    }

    /// Everything of the range left on the node: CT configs, LXC containers in `/var/lib/lxc`,
    /// `lxc-start` processes (after waiting for their cleanup), LXC's cgroups of the CTs
    /// (Proxmox's `lxc/VMID` and `lxc.monitor/VMID`, which the test node sets up, and LXC's
    /// default `lxc.payload.VMID[-N]`, `lxc.monitor.VMID`; removed when found), held CT locks,
    /// and under systemd `pve-container@VMID` units that still run.
    pub fn leftovers(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (vmid, _) in self.ct_configs() {
            out.push(format!("CT config {vmid}.conf left"));
        }
        if let Err(e) = self.wait_lxc_starts_gone(Duration::from_secs(10)) {
            out.push(format!("{e:#}"));
        }
        if self.backend.supervisor() == Supervisor::Systemd {
            // The unit's ExecStop (the stop wrapper) runs after lxc-start has exited.
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut units = self.running_units();
            while !units.is_empty() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
                units = self.running_units();
            }
            out.extend(
                units
                    .into_iter()
                    .map(|u| format!("unit still running: {u}")),
            );
        }
        for vmid in self.range[0]..=self.range[1] {
            let dir = Path::new(LXCPATH).join(vmid.to_string());
            if dir.exists() {
                out.push(format!("LXC container left: {}", dir.display()));
            }
        }
        for dir in host::cgroup_hierarchies() {
            for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let vmid = name
                    .strip_prefix("lxc.payload.")
                    .or_else(|| name.strip_prefix("lxc.monitor."))
                    .and_then(|rest| rest.split('-').next())
                    .and_then(|v| v.parse::<u32>().ok());
                if vmid.is_some_and(|v| (self.range[0]..=self.range[1]).contains(&v)) {
                    out.push(format!("cgroup left: {}", e.path().display()));
                    let _ = std::fs::remove_dir(e.path());
                }
            }
            for parent in ["lxc", "lxc.monitor"] {
                for e in std::fs::read_dir(dir.join(parent))
                    .into_iter()
                    .flatten()
                    .flatten()
                {
                    let in_range = e
                        .file_name()
                        .to_string_lossy()
                        .parse::<u32>()
                        .is_ok_and(|v| (self.range[0]..=self.range[1]).contains(&v));
                    if in_range {
                        out.push(format!("cgroup left: {}", e.path().display()));
                        let _ = std::fs::remove_dir(e.path().join("ns"));
                        let _ = std::fs::remove_dir(e.path());
                    }
                }
            }
        }
        for l in std::fs::read_dir(&self.lock_dir)
            .into_iter()
            .flatten()
            .flatten()
        {
            let Ok(f) = std::fs::File::open(l.path()) else {
                continue;
            };
            // SAFETY: flock on a descriptor this function owns.
            let rc = unsafe {
                libc::flock(
                    std::os::fd::AsRawFd::as_raw_fd(&f),
                    libc::LOCK_EX | libc::LOCK_NB,
                )
            };
            if rc != 0 {
                out.push(format!("{} is still locked", l.path().display()));
            }
        }
        out
    }
}
