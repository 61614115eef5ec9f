//! `root` and `linux.rootfsPropagation`.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{Linux, Spec};

use crate::{mounts, text, PlanError};

/// The checked root filesystem.
#[derive(Debug)]
pub(crate) struct Root {
    /// Absolute and normalised host path.
    pub path: PathBuf,
    pub readonly: bool,
}

/// `root.path` (relative to the bundle) and `root.readonly`. The path also goes into a
/// Proxmox property string (`rootfs:`), whose separators it must not contain.
pub(crate) fn root(spec: &Spec, bundle: &Path) -> Result<Root, PlanError> {
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| PlanError::invalid("root", "is required"))?;
    let path = if root.path().is_absolute() {
        root.path().clone()
    } else {
        bundle.join(root.path())
    };
    let path = text::abs_path("root.path", &path)?;
    if path.contains([',', '=', '"', ';']) {
        return Err(PlanError::invalid(
            "root.path",
            "must not contain ',', '=', ';' or '\"' (Proxmox property strings)",
        ));
    }
    Ok(Root {
        path: PathBuf::from(path),
        readonly: root.readonly().unwrap_or(false),
    })
}

/// `linux.rootfsPropagation`, applied through `lxc.rootfs.options`.
pub(crate) fn propagation(linux: &Linux) -> Result<Option<String>, PlanError> {
    match linux.rootfs_propagation() {
        Some(p) if !p.is_empty() => {
            if !mounts::PROPAGATION.contains(&p.as_str()) {
                return Err(PlanError::invalid(
                    "linux.rootfsPropagation",
                    format!("{p:?} is not a propagation mode"),
                ));
            }
            Ok(Some(p.clone()))
        }
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(root: serde_json::Value) -> Spec {
        serde_json::from_value(json!({"ociVersion": "1.2.0", "root": root})).unwrap()
    }

    #[test]
    fn relative_root_is_under_the_bundle() {
        let r = root(
            &spec(json!({"path": "rootfs/./x", "readonly": true})),
            "/b".as_ref(),
        )
        .unwrap();
        assert_eq!(r.path, Path::new("/b/rootfs/x"));
        assert!(r.readonly);
        let e = root(&spec(json!({"path": "/a,b"})), "/b".as_ref()).unwrap_err();
        assert_eq!(e.field(), "root.path");
    }

    #[test]
    fn propagation_is_one_of_the_mount_modes() {
        let l =
            |p: &str| -> Linux { serde_json::from_value(json!({"rootfsPropagation": p})).unwrap() };
        assert_eq!(
            propagation(&l("rslave")).unwrap().as_deref(),
            Some("rslave")
        );
        assert_eq!(propagation(&l("")).unwrap(), None);
        assert!(propagation(&l("bogus")).is_err());
    }
}
