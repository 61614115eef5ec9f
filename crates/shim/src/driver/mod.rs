//! Node drivers: how a planned container becomes a running container on this node. The task
//! layer is written once over these types; [`open`] (for Create) and [`recover`] (for `shim
//! delete`, from the bundle's record) are the only two places that name a concrete driver, so
//! a new driver is one file plus one arm in each.
//!
//! A container passes through three values, each owning what the next step needs, so no state
//! is checked at run time and no name is passed around:
//! [`Driver::create`] -> a [`NodeContainer`] (lives until Delete; destroys what it made)
//! -> [`NodeContainer::start`] -> a [`Starting`] init (lives until the init waits for Start)
//! -> [`Starting::supervise`] -> a [`Running`] init: its exit, and an [`ExecSpawner`] that
//! runs an exec's helper inside the container and hands back the process and its exit.
//!
//! - [`lxc`]: plain LXC on this host, `lxc-start -F` a child of the shim until the init
//!   runs, the init the shim's own child from then on.
//! - [`pve`]: each container a Proxmox VE CT, started through the API.
//! - [`lxc_node`]: what both share, since both end as an LXC container: whether it runs, and
//!   its init's exit from LXC's monitor.
//! - [`attach`], [`exec_command`]: how an exec's helper gets into a running container, for
//!   both.

use std::future::Future;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use log::{info, warn};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::config::{DriverKind, PveSection, ShimConfig, DEFAULT_LXCPATH};
use crate::errors::{Result, ShimError};
use crate::host::cgroup::ContainerCgroup;
use crate::host::process::exits::ChildExits;

pub mod attach;
pub mod exec_command;
pub mod lxc;
pub mod lxc_node;
pub mod pve;

/// What the driver needs to make a container.
pub struct CreateSpec<'a> {
    /// The containerd namespace and container id.
    pub namespace: &'a str,
    pub id: &'a str,
    /// The planned container; each driver renders it its own way (plain LXC config, or a
    /// Proxmox CT config plus include). Tags and description may still be added by the driver.
    pub plan: &'a lxc_config::ContainerPlan,
    /// The container's state directory (helper, specs, sockets, logs).
    pub state_dir: &'a Path,
}

/// Resolves with the container's init exit status as containerd reports it (the code, or
/// 128+N for a signal; 255 when it cannot be known).
pub type InitExit = Pin<Box<dyn Future<Output = u32> + Send>>;

/// Makes containers on this node: one per Create, chosen by [`open`].
#[async_trait]
pub trait Driver: Send + Sync {
    /// Writes everything the container needs; nothing runs yet.
    async fn create(&self, spec: &CreateSpec<'_>) -> Result<Box<dyn NodeContainer>>;
}

/// One container on the node, from its creation until it is destroyed.
#[async_trait]
pub trait NodeContainer: Send + Sync {
    /// Its name on the node: the container id under `lxc`, the VMID under `pve`. For logs
    /// and the bundle's record.
    fn name(&self) -> &str;

    /// Starts the container's init (the helper), watching for its exit from before the start.
    async fn start(&self) -> Result<Box<dyn Starting>>;

    /// The container's cgroups, from its init's pid (at the level where its limits are).
    fn cgroup(&self, init_pid: u32) -> Result<ContainerCgroup> {
        Ok(ContainerCgroup::of_pid(init_pid)?.at_limit_level(self.name()))
    }

    /// Stops the container if it runs and removes what `create` made. Idempotent: a missing
    /// container is not an error.
    async fn destroy(&self) -> Result<()>;

    /// What the bundle's record needs to [`recover`] this container.
    fn record(&self) -> DriverRecord;

    /// What the driver's own logs say about a failed start, if anything.
    fn failure_detail(&self) -> Option<String>;

    /// Records new resources of a running container where the driver shows them (the `pve`
    /// driver's CT config), before the shim writes them to the cgroup.
    async fn update_resources(&self, _resources: &oci_spec::runtime::LinuxResources) -> Result<()> {
        Ok(())
    }
}

impl std::fmt::Debug for dyn NodeContainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeContainer")
            .field("name", &self.name())
            .finish_non_exhaustive()
    }
}

/// A container whose init is starting, until the init waits for Start.
#[async_trait]
pub trait Starting: Send {
    /// A child of the shim that lives while the container starts (`lxc-start -F`), if the
    /// driver has one: the helper's accept gives up early when it dies.
    fn supervisor(&self) -> Option<u32>;

    /// Once the init (host pid `init_pid`) is up and waits for Start: its exit from now on,
    /// and the way into the container for execs. A driver that lets its supervisor go here
    /// takes over the init (the plain driver: the init becomes the shim's child, `lxc.rs`).
    async fn supervise(self: Box<Self>, init_pid: u32) -> Result<Running>;
}

impl std::fmt::Debug for dyn Starting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Starting")
            .field("supervisor", &self.supervisor())
            .finish_non_exhaustive()
    }
}

/// A container whose init runs (or waits for Start).
pub struct Running {
    pub exit: InitExit,
    pub execs: Box<dyn ExecSpawner>,
}

/// Runs an exec's helper inside a running container.
#[async_trait]
pub trait ExecSpawner: Send + Sync {
    async fn spawn(&self, files: ExecFiles) -> Result<SpawnedExec>;
}

/// What an exec's helper is given: the helper itself (a sealed copy), its
/// socket and its spec, as descriptors. The helper's directory is gone from the container
/// once its init runs (see `tidy`), so they reach it through the container's /proc/self/fd.
pub struct ExecFiles {
    pub helper: OwnedFd,
    pub socket: OwnedFd,
    pub spec: OwnedFd,
}

/// An exec's helper, running in the container: the shim's child either way (directly, or
/// handed over by a command that forked it), so its exit is the exec's.
pub struct SpawnedExec {
    /// The helper's host pid (it becomes the exec's process).
    pub pid: u32,
    /// Its raw exit code (or 128+N), from the shim's reaper.
    pub exit: oneshot::Receiver<i32>,
    /// What the command that made it said of its own errors (its stderr), once it ends.
    pub diagnostics: tokio::task::JoinHandle<String>,
}

impl std::fmt::Debug for SpawnedExec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpawnedExec")
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

/// What the bundle's record keeps of the driver, so that `shim delete` can undo a container
/// from the bundle alone. Serialized flat into the record (`"driver": "lxc"|"pve"` plus these
/// fields), the format earlier versions wrote. No secrets: the token secret stays in its file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "driver", rename_all = "lowercase")]
pub enum DriverRecord {
    Lxc {
        lxcpath: PathBuf,
    },
    /// The CT and the `[pve]` settings it was made with.
    Pve {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        vmid: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pve: Option<Box<PveSection>>,
    },
}

/// The driver the runtime options (or the host config) choose for a new container.
pub fn open(config: &ShimConfig, namespace: &str, exits: &ChildExits) -> Result<Arc<dyn Driver>> {
    match config.driver() {
        DriverKind::Lxc => Ok(Arc::new(lxc::LxcDriver::new(
            namespaced_lxcpath(&config.lxc.lxcpath, namespace),
            exits.clone(),
        ))),
        DriverKind::Pve => {
            let section = config.pve.as_ref().ok_or_else(|| {
                ShimError::InvalidArgument("driver \"pve\" needs a [pve] section".into())
            })?;
            Ok(Arc::new(pve::PveDriver::new(section, exits.clone())?))
        }
    }
}

/// For `shim delete` (the shim that made the container may be gone): the containers to
/// destroy, from the bundle's record (`driver` and `name`) or, without one, from the host
/// config. A pve container without a recorded VMID is looked up by its tag; none may be left.
pub async fn recover(
    record: Option<(&DriverRecord, &str)>,
    namespace: &str,
    id: &str,
    state_dir: &Path,
    exits: ChildExits,
) -> Vec<Box<dyn NodeContainer>> {
    let host = || ShimConfig::load_host().ok();
    let lxc_at = |lxcpath: PathBuf, name: &str| -> Vec<Box<dyn NodeContainer>> {
        // An empty name would be the lxcpath itself.
        if name.is_empty() {
            return Vec::new();
        }
        let node = lxc_node::LxcNode::new(lxcpath, exits.clone());
        vec![Box::new(lxc::LxcContainer::recovered(
            node, name, state_dir,
        ))]
    };
    let (settings, vmid) = match record {
        Some((DriverRecord::Lxc { lxcpath }, name)) => return lxc_at(lxcpath.clone(), name),
        Some((DriverRecord::Pve { vmid, pve }, name)) => {
            match pve
                .as_deref()
                .cloned()
                .or_else(|| host().and_then(|c| c.pve))
            {
                Some(settings) => (settings, *vmid),
                // No settings to reach Proxmox with: stop what LXC runs under that name.
                None => return lxc_at(PathBuf::from(pve::PVE_LXCPATH), name),
            }
        }
        None => {
            let config = host();
            match config.as_ref().filter(|c| c.driver() == DriverKind::Pve) {
                Some(ShimConfig {
                    pve: Some(settings),
                    ..
                }) => (settings.clone(), None),
                _ => {
                    let base = config
                        .map(|c| c.lxc.lxcpath)
                        .unwrap_or_else(|| PathBuf::from(DEFAULT_LXCPATH));
                    return lxc_at(namespaced_lxcpath(&base, namespace), id);
                }
            }
        }
    };
    let driver = match pve::PveDriver::new(&settings, exits.clone()) {
        Ok(d) => d,
        Err(e) => {
            warn!("delete {namespace}/{id}: cannot reach Proxmox VE: {e}");
            let name = vmid.map(|v| v.to_string()).unwrap_or_default();
            return lxc_at(PathBuf::from(pve::PVE_LXCPATH), &name);
        }
    };
    let vmids = match vmid {
        Some(v) => vec![v],
        None => driver.vmids_by_tag(namespace, id).await,
    };
    info!("delete {namespace}/{id}: Proxmox CT(s) {vmids:?}");
    vmids
        .into_iter()
        .map(|vmid| -> Box<dyn NodeContainer> {
            Box::new(pve::PveContainer::recovered(driver.clone(), vmid))
        })
        .collect()
}

/// The per-namespace lxcpath: containers of different containerd namespaces may share an id.
/// Long namespaces are shortened so that LXC's monitor socket name fits.
pub fn namespaced_lxcpath(base: &Path, namespace: &str) -> PathBuf {
    crate::host::process::lxcmon::lxcpath_for_namespace(base, namespace)
}

/// The hash of `namespace/id`, hex: names a container where its id is too long or too free
/// (state directory, Proxmox tag).
pub fn container_hash(namespace: &str, id: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("{namespace}/{id}").as_bytes());
    hex::encode(digest)[..16].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_the_earlier_format() {
        let lxc = r#"{"driver":"lxc","lxcpath":"/var/lib/x/default"}"#;
        assert!(matches!(
            serde_json::from_str::<DriverRecord>(lxc).unwrap(),
            DriverRecord::Lxc { lxcpath } if lxcpath == Path::new("/var/lib/x/default")
        ));
        let pve = r#"{"driver":"pve","lxcpath":"/var/lib/lxc","vmid":901}"#;
        assert!(matches!(
            serde_json::from_str::<DriverRecord>(pve).unwrap(),
            DriverRecord::Pve {
                vmid: Some(901),
                pve: None
            }
        ));
    }
}
