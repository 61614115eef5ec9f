//! The Proxmox VE driver: every container is a Proxmox CT on this node.
//!
//! - Create: a VMID from the configured range is claimed by creating `<config_dir>/VMID.conf`
//!   exclusively under Proxmox's own config lock (`<lock_dir>/pve-config-VMID.lock`, flock),
//!   the next candidate on "exists". The file holds the Proxmox-native keys, the raw `lxc.*`
//!   lines Proxmox accepts and an `lxc.include` of the rest (written into the container's state
//!   directory). Writing the file ourselves (we run as root on the node) is the only way: an
//!   API token never counts as `root@pam`, so raw keys and bind mounts cannot go through the
//!   API. No API request is needed for Create.
//! - Start and destroy go through the API and wait for their task (`POST .../status/start`,
//!   `DELETE .../lxc/VMID?purge=1&force=1`: two requests each with a task that is already done
//!   at the first status poll).
//! - The CT lives in Proxmox's lxcpath (`/var/lib/lxc`, name = VMID), where the shim's LXC
//!   monitor finds it; Proxmox (systemd) is the parent of `lxc-start`, so the driver has no
//!   supervisor child. Execs get in through the init's pidfd (`attach.rs`), as under `lxc`.
//! - Tags carry a hash of the containerd namespace and id (and the Kubernetes names from the
//!   plan), the description the id in words, so a CT left by a crashed shim is found again.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use log::{debug, info, warn};
use pve_client::{
    claim_config_file, Client, ConfigUpdate, DestroyOptions, ResourceType, VmidAllocator,
    VmidRange, WaitOptions,
};

use super::lxc_node::{init_exit, LxcNode, Monitored};
use super::{container_hash, CreateSpec, Driver, DriverRecord, NodeContainer, Starting};
use crate::config::PveSection;
use crate::errors::{IoContext, Result, ShimError};
use crate::host::process::exits::ChildExits;
use crate::pve_api::{client_for, pve_error};

/// Where Proxmox VE keeps its CTs for LXC (`lxc-start -n VMID -P /var/lib/lxc`).
pub const PVE_LXCPATH: &str = "/var/lib/lxc";
/// Name of the include file (in the container's state directory) with the keys Proxmox does
/// not accept in a CT config.
pub const INCLUDE_NAME: &str = "pve-include.conf";
/// How long the driver waits for Proxmox's config lock of one VMID.
const LOCK_TIMEOUT: Duration = Duration::from_secs(10);
/// The VMID cursor shared by the shims on the node (in `lock_dir`).
pub const VMID_CURSOR_NAME: &str = "containerd-shim-proxmox-lxc-vmid-cursor";
/// systemd's default `StartLimitIntervalSec` (pve-container@.service sets none): after a
/// start refused for the start limit, a start after this long is allowed again.
const START_LIMIT_INTERVAL: Duration = Duration::from_secs(10);

/// Makes CTs on this node; cheap to clone (every CT it makes keeps one).
#[derive(Clone)]
pub struct PveDriver {
    inner: Arc<Pve>,
}

struct Pve {
    settings: PveSection,
    client: Client,
    allocator: VmidAllocator,
    node: LxcNode,
}

/// One CT.
pub struct PveContainer {
    pve: PveDriver,
    vmid: u32,
    /// The VMID as LXC names the container.
    name: String,
}

/// The tag that names one containerd container (namespace and id hashed: ids are longer and
/// freer than a Proxmox tag may be).
pub fn container_tag(prefix: &str, namespace: &str, id: &str) -> String {
    format!("{prefix}-cid-{}", container_hash(namespace, id))
}

fn wait_options(settings: &PveSection) -> WaitOptions {
    WaitOptions {
        // After this the RPC fails (the task goes on in Proxmox).
        timeout: Duration::from_secs(settings.task_timeout.max(1)),
        // The first poll goes out at once; a short second interval keeps a fast task fast.
        initial_interval: Duration::from_millis(20),
        max_interval: Duration::from_millis(500),
        ..WaitOptions::default()
    }
}

/// Holds Proxmox's config lock of one CT (`flock` on `pve-config-VMID.lock`); released on drop,
/// so nothing stays locked whatever happens in between.
struct ConfigLock {
    _file: nix::fcntl::Flock<std::fs::File>,
}

impl ConfigLock {
    async fn acquire(lock_dir: &Path, vmid: u32) -> Result<ConfigLock> {
        std::fs::create_dir_all(lock_dir).ctx(|| format!("create {}", lock_dir.display()))?;
        let path = lock_dir.join(format!("pve-config-{vmid}.lock"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .ctx(|| format!("open {}", path.display()))?;
        let deadline = tokio::time::Instant::now() + LOCK_TIMEOUT;
        let mut pause = Duration::from_millis(5);
        let mut file = file;
        loop {
            file = match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
            {
                Ok(locked) => return Ok(ConfigLock { _file: locked }),
                Err((file, nix::errno::Errno::EWOULDBLOCK)) => file,
                Err((_, e)) => {
                    return Err(ShimError::io(format!("flock {}", path.display()), e.into()))
                }
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(ShimError::Internal(format!(
                    "can't lock file '{}' - got timeout",
                    path.display()
                )));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }
}

impl PveDriver {
    /// One start request and its task (warnings accepted).
    async fn start_once(
        &self,
        vmid: u32,
    ) -> std::result::Result<pve_client::TaskOutcome, pve_client::Error> {
        let node = self.inner.settings.node.clone();
        let options = WaitOptions {
            accept_warnings: true,
            ..wait_options(&self.inner.settings)
        };
        self.inner
            .client
            .run_task(&options, || self.inner.client.start_ct(&node, vmid))
            .await
    }

    pub fn new(settings: &PveSection, exits: ChildExits) -> Result<PveDriver> {
        let range =
            VmidRange::new(settings.vmid_range[0], settings.vmid_range[1]).map_err(pve_error)?;
        Ok(PveDriver {
            inner: Arc::new(Pve {
                client: client_for(settings)?,
                // Shared by all shims on the node: see pve_client::vmid on systemd's start limit.
                allocator: VmidAllocator::new(range)
                    .with_cursor_file(settings.lock_dir.join(VMID_CURSOR_NAME)),
                settings: settings.clone(),
                node: LxcNode::new(PathBuf::from(PVE_LXCPATH), exits),
            }),
        })
    }

    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    fn config_path(&self, vmid: u32) -> PathBuf {
        self.inner.settings.config_dir.join(format!("{vmid}.conf"))
    }

    /// The CTs on this node whose tags name containerd container `namespace/id` (a CT left by
    /// a shim that died before it recorded the VMID).
    pub async fn find_by_container(&self, namespace: &str, id: &str) -> Result<Vec<u32>> {
        let tag = container_tag(&self.inner.settings.tag_prefix, namespace, id);
        let resources = self
            .inner
            .client
            .cluster_resources(Some(ResourceType::Vm))
            .await
            .map_err(pve_error)?;
        Ok(resources
            .into_iter()
            .filter(|r| r.node.as_deref() == Some(self.inner.settings.node.as_str()))
            .filter(|r| {
                r.tags
                    .as_deref()
                    .is_some_and(|t| t.split([';', ',', ' ']).any(|x| x == tag))
            })
            .filter_map(|r| r.vmid)
            .collect())
    }

    /// For `shim delete` without a recorded VMID: the CTs tagged for `namespace/id`.
    pub async fn vmids_by_tag(&self, namespace: &str, id: &str) -> Vec<u32> {
        self.find_by_container(namespace, id)
            .await
            .unwrap_or_else(|e| {
                warn!("delete {namespace}/{id}: looking for its CT: {e}");
                Vec::new()
            })
    }

    /// Tags with the configured prefix (the plan uses lxc-config's default one) and the
    /// container's own tag.
    fn tags(&self, spec: &CreateSpec<'_>) -> Vec<String> {
        let prefix = &self.inner.settings.tag_prefix;
        let default = lxc_config::DEFAULT_TAG_PREFIX;
        let mut tags: Vec<String> = spec
            .plan
            .tags
            .iter()
            .map(|t| match t.strip_prefix(default) {
                Some(rest) if prefix != default => format!("{prefix}{rest}"),
                _ => t.clone(),
            })
            .collect();
        tags.push(container_tag(prefix, spec.namespace, spec.id));
        tags
    }
}

impl PveContainer {
    /// A CT `shim delete` destroys, from the bundle's record.
    pub fn recovered(pve: PveDriver, vmid: u32) -> PveContainer {
        PveContainer {
            pve,
            vmid,
            name: vmid.to_string(),
        }
    }
}

#[async_trait]
impl Driver for PveDriver {
    async fn create(&self, spec: &CreateSpec<'_>) -> Result<Box<dyn NodeContainer>> {
        let include_path = spec.state_dir.join(INCLUDE_NAME);
        let mut plan = spec.plan.clone();
        plan.tags = self.tags(spec);
        show_unlimited_as_the_hosts(&mut plan.pve);
        plan.description = format!(
            "{}\ncontainerd: {}/{}",
            plan.description, spec.namespace, spec.id
        );
        let render = plan.render_pve_with(
            &include_path,
            lxc_config::PveOptions {
                lxcfs: self.inner.settings.lxcfs,
            },
        );
        std::fs::write(&include_path, &render.include)
            .ctx(|| format!("write {}", include_path.display()))?;
        let config_dir = self.inner.settings.config_dir.clone();
        let lock_dir = self.inner.settings.lock_dir.clone();
        let ct_conf = render.ct_conf;
        let (vmid, path) = self
            .inner
            .allocator
            .allocate(&Default::default(), |vmid| {
                let config_dir = config_dir.clone();
                let lock_dir = lock_dir.clone();
                let ct_conf = ct_conf.clone();
                async move {
                    let _lock = ConfigLock::acquire(&lock_dir, vmid).await.map_err(|e| {
                        pve_client::Error::Claim {
                            vmid,
                            message: e.to_string(),
                        }
                    })?;
                    // The lock file of a CT being destroyed may outlive its config; the config
                    // file is what decides.
                    claim_config_file(&config_dir, vmid, &ct_conf).await
                }
            })
            .await
            .map_err(pve_error)?;
        // From here on the container's log lines carry its VMID.
        crate::logging::set_vmid(vmid);
        info!(
            "{}/{}: Proxmox CT {vmid} ({})",
            spec.namespace,
            spec.id,
            path.display()
        );
        Ok(Box::new(PveContainer::recovered(self.clone(), vmid)))
    }
}

#[async_trait]
impl NodeContainer for PveContainer {
    fn name(&self) -> &str {
        &self.name
    }

    async fn start(&self) -> Result<Box<dyn Starting>> {
        let (vmid, pve) = (self.vmid, &self.pve);
        // Proxmox (systemd) is the parent of lxc-start: no supervisor child, the monitor only.
        let from_monitor = pve.inner.node.watch_exit(&self.name).await?;
        let mut outcome = pve.start_once(vmid).await;
        if matches!(&outcome, Err(e) if e.is_start_limit_hit()) {
            // The VMID cursor makes this rare (another tool may start the CT too): systemd
            // lets the unit start again once its interval has passed.
            warn!(
                "CT {vmid}: systemd refused pve-container@{vmid} (started too often); retrying in {}s",
                START_LIMIT_INTERVAL.as_secs()
            );
            tokio::time::sleep(START_LIMIT_INTERVAL).await;
            outcome = pve.start_once(vmid).await;
        }
        let outcome = outcome.map_err(|e| {
            let hint = if e.is_start_limit_hit() {
                format!(
                    "; systemd refuses pve-container@{vmid} after 5 starts within 10 s: run `systemctl reset-failed pve-container@{vmid}` on the node or retry later"
                )
            } else {
                String::new()
            };
            let e = pve_error(e);
            ShimError::Internal(format!("start CT {vmid}: {e}{hint}"))
        })?;
        // The prestart hook's warnings end the task with "WARNINGS: n" and a running CT:
        // Proxmox counts that as started (PVE::RESTEnvironment's worker), so does the shim.
        for w in &outcome.warnings {
            warn!("CT {vmid} started with a warning: {w}");
        }
        debug!("CT {vmid} started ({} status polls)", outcome.polls);
        Ok(Box::new(Monitored {
            exits: pve.inner.node.exits().clone(),
            supervisor: None,
            exit: init_exit(&self.name, from_monitor, None),
        }))
    }

    async fn destroy(&self) -> Result<()> {
        let (vmid, pve) = (self.vmid, &self.pve);
        if !pve.config_path(vmid).exists() {
            return Ok(());
        }
        let node = pve.inner.settings.node.clone();
        let options = DestroyOptions {
            purge: true,
            destroy_unreferenced_disks: false,
            // Stops it first if it still runs: one task instead of two.
            force: true,
        };
        // A forced stop ends the task with "WARNINGS: 1" ("forced to stop CT ... before
        // destroying!"): the CT is gone all the same.
        let options_wait = WaitOptions {
            accept_warnings: true,
            ..wait_options(&pve.inner.settings)
        };
        let result = pve
            .inner
            .client
            .run_task(&options_wait, || {
                pve.inner.client.destroy_ct(&node, vmid, &options)
            })
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(ShimError::Internal(format!(
                "destroy CT {vmid}: {}",
                pve_error(e)
            ))),
        }
    }

    fn record(&self) -> DriverRecord {
        DriverRecord::Pve {
            vmid: Some(self.vmid),
            pve: Some(Box::new(self.pve.inner.settings.clone())),
        }
    }

    /// Proxmox starts the CT through systemd; the task log is already in the start's error.
    fn failure_detail(&self) -> Option<String> {
        None
    }

    /// `PUT .../config` with the new `memory`/`swap`/`cpulimit`/`cpuunits` (the values create
    /// writes), so the GUI shows the limits that are enforced. Needs `VM.Config.Memory` and
    /// `VM.Config.CPU` (pve-container src/PVE/LXC.pm, check_ct_modify_config_perm). On a
    /// running CT Proxmox hotplugs them into `lxc/VMID` (src/PVE/LXC/Config.pm,
    /// vmconfig_hotplug_pending); the shim then writes the spec's exact values.
    async fn update_resources(&self, resources: &oci_spec::runtime::LinuxResources) -> Result<()> {
        let vmid = self.vmid;
        let Some(update) = config_update_for(resources) else {
            return Ok(());
        };
        self.pve
            .inner
            .client
            .update_ct_config(&self.pve.inner.settings.node, vmid, &update)
            .await
            .map_err(|e| {
                ShimError::Internal(format!(
                    "update CT {vmid}'s config with the new resources: {}",
                    pve_error(e)
                ))
            })?;
        if resources
            .memory()
            .as_ref()
            .and_then(|m| m.limit())
            .is_some()
        {
            undo_proxmox_memory_high(vmid);
        }
        Ok(())
    }
}

/// A spec without a memory (or swap) limit leaves the container the node's memory (swap), but a
/// CT config without `memory`/`swap` shows Proxmox's defaults (512 MiB each, pve-container
/// src/PVE/LXC/Config.pm). Write the node's totals instead, so the GUI shows what the container
/// may use. (Display only: the include resets the `lxc.cgroup2.*` lines Proxmox derives from
/// them, and the spec's own limits follow.)
fn show_unlimited_as_the_hosts(native: &mut lxc_config::PveNative) {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let total_mib = |key: &str| -> Option<u64> {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map(|kib| kib / 1024)
    };
    if native.memory_mib.is_none() {
        // Proxmox's minimum is 16 MiB.
        native.memory_mib = total_mib("MemTotal:").map(|m| m.max(16));
    }
    if native.swap_mib.is_none() {
        native.swap_mib = total_mib("SwapTotal:");
    }
}

/// On cgroup v2 Proxmox's memory hotplug also sets `memory.high` to ~99.2% of the new
/// `memory` (src/PVE/LXC/Config.pm, vmconfig_hotplug_pending and
/// calculate_memory_constraints), throttling the workload below its limit, which runc never
/// does; the spec's own `memory.high` (unified), if any, is written after this. Not verified
/// on a real v2 node (the test machines are cgroup v1): a missing file is ignored.
fn undo_proxmox_memory_high(vmid: u32) {
    if !Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        return;
    }
    let high = PathBuf::from(format!("/sys/fs/cgroup/lxc/{vmid}/memory.high"));
    match std::fs::write(&high, "max") {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => warn!(
            "CT {vmid}: reset {} after Proxmox's hotplug: {e}",
            high.display()
        ),
    }
}

/// The CT config change that shows `resources`, if they set anything Proxmox shows.
fn config_update_for(resources: &oci_spec::runtime::LinuxResources) -> Option<ConfigUpdate> {
    let native = lxc_config::pve_native_resources(resources);
    let mut update = ConfigUpdate::new();
    let mut any = false;
    if let Some(m) = native.memory_mib {
        update = update.memory_mib(m);
        any = true;
    }
    if let Some(s) = native.swap_mib {
        update = update.swap_mib(s);
        any = true;
    }
    // Two decimals, as create writes it.
    if let Some(c) = native.cpulimit.map(|c| (c * 100.0).round() / 100.0) {
        if c > 0.0 {
            update = update.cpulimit(c);
            any = true;
        }
    }
    if let Some(u) = native.cpuunits {
        update = update.cpuunits(u32::try_from(u).unwrap_or(u32::MAX));
        any = true;
    }
    any.then_some(update)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_tags_are_valid_and_distinct() {
        let a = container_tag("k8s", "default", "web");
        let b = container_tag("k8s", "other", "web");
        assert_ne!(a, b);
        assert!(a
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
    }

    #[tokio::test]
    async fn config_lock_is_exclusive_and_released() {
        let dir = tempfile::tempdir().unwrap();
        let held = ConfigLock::acquire(dir.path(), 901).await.unwrap();
        let start = std::time::Instant::now();
        let second = tokio::spawn({
            let d = dir.path().to_path_buf();
            async move { ConfigLock::acquire(&d, 901).await.map(|_| ()) }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(held);
        second.await.unwrap().unwrap();
        assert!(start.elapsed() >= Duration::from_millis(100));
    }
}
