//! Node drivers: how a planned container becomes a running container on this node. The task
//! layer is written once over [`Driver`]; [`open`] (for Create) and [`recover`] (for `shim
//! delete`, from the bundle's record) are the only two places that name a concrete driver, so
//! a new driver is one file plus one arm in each.
//!
//! - [`lxc`]: plain LXC on this host, `lxc-start -F` a child of the shim until the init
//!   runs, the init the shim's own child from then on.
//! - [`pve`]: each container a Proxmox VE CT, started through the API.
//! - [`lxc_node`]: what both share, since both end as an LXC container: `lxc-attach`, whether
//!   it runs, and its init's exit from LXC's monitor.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use log::{info, warn};
use serde::{Deserialize, Serialize};

use crate::config::{DriverKind, PveSection, ShimConfig, DEFAULT_LXCPATH};
use crate::errors::{Result, ShimError};
use crate::host::process::exits::ChildExits;

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

/// A started container.
pub struct StartedInit {
    /// A child of the shim that lives while the container starts (`lxc-start -F`), if the
    /// driver has one: the helper's accept gives up early when it dies.
    pub supervisor: Option<u32>,
    /// The init's exit, where the driver knows it from the start (from LXC's monitor);
    /// `None` where [`Driver::supervise`] gives it.
    pub exit: Option<InitExit>,
}

/// How an exec's helper gets into the running container.
pub struct ExecCommand {
    pub command: std::process::Command,
    /// The command forks the helper into the container, writes the helper's host pid and a
    /// newline to stdout and exits: the helper is then the shim's own child (the shim is a
    /// subreaper), and its exit is the exec's. Otherwise the command stays the helper's
    /// parent until the exec ends, and its exit is the exec's (`lxc-attach`).
    pub detaches: bool,
}

impl std::fmt::Debug for StartedInit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StartedInit")
            .field("supervisor", &self.supervisor)
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

#[async_trait]
pub trait Driver: Send + Sync {
    /// Writes everything the container needs; nothing runs yet. Returns the node name the
    /// container got (the container id for `lxc`, the VMID for `pve`): the name every later
    /// call takes.
    async fn create(&self, spec: &CreateSpec<'_>) -> Result<String>;

    /// Starts the container's init (the helper), watching for its exit from before the start.
    async fn start(&self, name: &str, state_dir: &Path) -> Result<StartedInit>;

    /// Once the init (host pid `init_pid`) is up and waits for Start: returns its exit. A
    /// driver that lets its supervisor go here takes over the init (the plain driver: the
    /// init becomes the shim's child, see `lxc.rs`); the default keeps the start's `exit`.
    async fn supervise(
        &self,
        name: &str,
        _init_pid: u32,
        _state_dir: &Path,
        exit: Option<InitExit>,
    ) -> Result<InitExit> {
        exit.ok_or_else(|| ShimError::Internal(format!("no way to learn the exit of {name}")))
    }

    /// The command that runs `helper_args` (the helper, its socket, its spec) inside the
    /// running container as an exec.
    fn exec_command(&self, name: &str, helper_args: &[String]) -> Result<ExecCommand>;

    /// Stops the container if it runs and removes what `create` made. Idempotent: a missing
    /// container is not an error.
    async fn destroy(&self, name: &str, state_dir: &Path) -> Result<()>;

    /// What the bundle's record needs to [`recover`] this driver for container `name`.
    fn record(&self, name: &str) -> DriverRecord;

    /// What the driver's own logs say about a failed start, if anything.
    fn failure_detail(&self, state_dir: &Path) -> Option<String>;

    /// Records new resources of a running container where the driver shows them (the `pve`
    /// driver's CT config), before the shim writes them to the cgroup.
    async fn update_resources(
        &self,
        _name: &str,
        _resources: &oci_spec::runtime::LinuxResources,
    ) -> Result<()> {
        Ok(())
    }
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

/// For `shim delete` (the shim that made the container may be gone): the driver and the node
/// names to destroy, from the bundle's record (`driver` and `name`) or, without one, from the
/// host config. A pve container without a recorded VMID is looked up by its tag; the list then
/// holds an empty name when no CT is left, so the rest of the cleanup still runs.
pub async fn recover(
    record: Option<(&DriverRecord, &str)>,
    namespace: &str,
    id: &str,
    exits: ChildExits,
) -> (Arc<dyn Driver>, Vec<String>) {
    let host = || ShimConfig::load_host().ok();
    let (settings, vmid) = match record {
        Some((DriverRecord::Lxc { lxcpath }, name)) => {
            return lxc_at(lxcpath.clone(), name, exits);
        }
        Some((DriverRecord::Pve { vmid, pve }, name)) => {
            match pve
                .as_deref()
                .cloned()
                .or_else(|| host().and_then(|c| c.pve))
            {
                Some(settings) => (settings, *vmid),
                // No settings to reach Proxmox with: stop what LXC runs under that name.
                None => return lxc_at(PathBuf::from(pve::PVE_LXCPATH), name, exits),
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
                    return lxc_at(namespaced_lxcpath(&base, namespace), id, exits);
                }
            }
        }
    };
    let driver = match pve::PveDriver::new(&settings, exits.clone()) {
        Ok(d) => d,
        Err(e) => {
            warn!("delete {namespace}/{id}: cannot reach Proxmox VE: {e}");
            let name = vmid.map(|v| v.to_string()).unwrap_or_default();
            return lxc_at(PathBuf::from(pve::PVE_LXCPATH), &name, exits);
        }
    };
    let names = match vmid {
        Some(v) => vec![v.to_string()],
        None => driver.names_by_tag(namespace, id).await,
    };
    info!("delete {namespace}/{id}: Proxmox CT(s) {names:?}");
    (Arc::new(driver), names)
}

fn lxc_at(lxcpath: PathBuf, name: &str, exits: ChildExits) -> (Arc<dyn Driver>, Vec<String>) {
    (
        Arc::new(lxc::LxcDriver::new(lxcpath, exits)),
        vec![name.to_string()],
    )
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
