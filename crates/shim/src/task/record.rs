//! The bundle's record: written at Create (before the start, and again with the init's pid)
//! so that `shim delete` can clean up from the bundle alone, even after the shim died (a
//! Proxmox CT outlives the shim).

use std::path::{Path, PathBuf};

use crate::config;
use crate::driver::{container_hash, DriverRecord};
use crate::errors::{Result, ShimError};
use crate::host::private::{self, Owner};

pub const BUNDLE_RECORD_FILE: &str = "proxmox-lxc-state.json";
/// Left in the bundle in place of the record once the shim itself took everything down
/// (Delete, or a failed Create's rollback). containerd 1.6 runs `shim delete` whenever a shim
/// disconnects, a normal exit included (runtime/v2/manager.go, `startShim`'s onClose calls
/// `cleanupAfterDeadShim`); without the record, that would search the node for CTs tagged for
/// the container, an API request per container for nothing.
pub const BUNDLE_DONE_FILE: &str = "proxmox-lxc-done";

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

    fn remove(bundle: &Path) {
        let _ = std::fs::remove_file(bundle.join(BUNDLE_RECORD_FILE));
    }

    /// Removes the record after a teardown. If the container was `destroyed`, the record is
    /// replaced with [`BUNDLE_DONE_FILE`]: nothing is left to undo. If not, nothing marks the
    /// bundle, so a later `shim delete` still searches for what is left.
    pub fn close(bundle: &Path, destroyed: bool) {
        if destroyed {
            if let Err(e) = private::write_file(&bundle.join(BUNDLE_DONE_FILE), b"", Owner::ROOT) {
                log::debug!("mark {} done: {e}", bundle.display());
            }
        }
        Self::remove(bundle);
    }

    /// Whether the shim already took down what it made from this bundle.
    pub fn is_finished(bundle: &Path) -> bool {
        bundle.join(BUNDLE_DONE_FILE).exists() && !bundle.join(BUNDLE_RECORD_FILE).exists()
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
    fn a_finished_bundle_has_no_record_left_and_says_so() {
        let bundle = tempfile::tempdir().unwrap();
        assert!(!BundleRecord::is_finished(bundle.path()));
        std::fs::write(bundle.path().join(BUNDLE_RECORD_FILE), b"{}").unwrap();
        BundleRecord::close(bundle.path(), false);
        assert!(
            !BundleRecord::is_finished(bundle.path()),
            "not destroyed: not finished"
        );
        std::fs::write(bundle.path().join(BUNDLE_RECORD_FILE), b"{}").unwrap();
        BundleRecord::close(bundle.path(), true);
        assert!(BundleRecord::is_finished(bundle.path()));
        assert!(!bundle.path().join(BUNDLE_RECORD_FILE).exists());
        // A record written later (a new Create in the same bundle) counts again.
        std::fs::write(bundle.path().join(BUNDLE_RECORD_FILE), b"{}").unwrap();
        assert!(!BundleRecord::is_finished(bundle.path()));
    }

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
