//! The bundle's record: written at Create (before the start, and again with the init's pid)
//! so that `shim delete` can clean up from the bundle alone, even after the shim died (a
//! Proxmox CT outlives the shim).

use std::path::{Path, PathBuf};

use crate::config;
use crate::driver::{container_hash, DriverRecord};
use crate::errors::{Result, ShimError};
use crate::host::private::{self, Owner};

pub const BUNDLE_RECORD_FILE: &str = "proxmox-lxc-state.json";

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct BundleRecord {
    pub namespace: String,
    pub id: String,
    /// The container's name on the node (the id for `lxc`, the VMID for `pve`).
    pub name: String,
    #[serde(flatten)]
    pub driver: DriverRecord,
    pub state_dir: PathBuf,
    pub rootfs_mounted: bool,
    pub init_pid: u32,
}

impl BundleRecord {
    pub fn write(&self, bundle: &Path) -> Result<()> {
        let json = serde_json::to_vec(self)
            .map_err(|e| ShimError::Internal(format!("encode the bundle record: {e}")))?;
        private::write_file(&bundle.join(BUNDLE_RECORD_FILE), &json, Owner::ROOT)
    }

    /// The record in `bundle`, if there is a readable one.
    pub fn read(bundle: &Path) -> Option<BundleRecord> {
        let bytes = std::fs::read(bundle.join(BUNDLE_RECORD_FILE)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    pub fn remove(bundle: &Path) {
        let _ = std::fs::remove_file(bundle.join(BUNDLE_RECORD_FILE));
    }
}

/// The state directory of container `namespace/id` (helper, specs, sockets, logs).
pub fn state_dir_for(namespace: &str, id: &str) -> PathBuf {
    PathBuf::from(config::STATE_ROOT).join(container_hash(namespace, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_keeps_the_earlier_format() {
        let record = BundleRecord {
            namespace: "default".into(),
            id: "web".into(),
            name: "901".into(),
            driver: DriverRecord::Pve {
                vmid: Some(901),
                pve: None,
            },
            state_dir: "/run/x".into(),
            rootfs_mounted: true,
            init_pid: 7,
        };
        let json = serde_json::to_value(&record).unwrap();
        assert_eq!(json["driver"], "pve");
        assert_eq!(json["vmid"], 901);
        let old = r#"{"namespace":"default","id":"web","name":"web","driver":"lxc",
            "lxcpath":"/l/default","state_dir":"/run/x","rootfs_mounted":false,"init_pid":0}"#;
        let read: BundleRecord = serde_json::from_str(old).unwrap();
        assert!(matches!(read.driver, DriverRecord::Lxc { .. }));
    }
}
