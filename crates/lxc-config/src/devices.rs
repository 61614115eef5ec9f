//! `linux.devices` -> device nodes the shim creates in the state directory, a bind mount for
//! each, and a devices-cgroup allow rule for each.

use std::path::PathBuf;

use oci_spec::runtime::{Linux, LinuxDevice, LinuxDeviceType};

use crate::{mounts, text, DeviceNode, MountEntry, Places, PlanError, DEVICES_DIR};

/// What `linux.devices` turned into.
#[derive(Debug, Default)]
pub(crate) struct Devices {
    pub nodes: Vec<DeviceNode>,
    /// Bind mounts of the nodes, after all other mounts.
    pub mounts: Vec<MountEntry>,
    /// Allow rules (`c 1:3 rwm`) for the devices cgroup.
    pub allow: Vec<String>,
}

fn node_kind(field: &str, typ: LinuxDeviceType) -> Result<char, PlanError> {
    match typ {
        LinuxDeviceType::C | LinuxDeviceType::U => Ok('c'),
        LinuxDeviceType::B => Ok('b'),
        LinuxDeviceType::P => Ok('p'),
        LinuxDeviceType::A => Err(PlanError::invalid(
            &format!("{field}.type"),
            "must be c, b, u or p",
        )),
    }
}

fn device_number(field: &str, n: i64, what: &str) -> Result<u32, PlanError> {
    u32::try_from(n)
        .map_err(|_| PlanError::invalid(&format!("{field}.{what}"), "is negative or out of range"))
}

/// Device nodes in spec order; `fresh` are the mount targets whose content is not the image's
/// (see [`mounts::resolve_in_rootfs`]).
pub(crate) fn nodes(
    linux: &Linux,
    at: &Places<'_>,
    fresh: &[String],
) -> Result<Devices, PlanError> {
    let mut out = Devices::default();
    for (i, d) in linux.devices().iter().flatten().enumerate() {
        let f = format!("linux.devices[{i}]");
        let path = text::abs_path(&format!("{f}.path"), d.path())?;
        let path = mounts::resolve_in_rootfs(&format!("{f}.path"), at.rootfs, &path, fresh)?;
        text::fstab_field(&format!("{f}.path"), &path)?;
        let kind = node_kind(&f, d.typ())?;
        let (major, minor) = (
            device_number(&f, d.major(), "major")?,
            device_number(&f, d.minor(), "minor")?,
        );
        if kind != 'p' {
            out.allow.push(format!("{kind} {major}:{minor} rwm"));
        }
        // LXC makes /dev/ptmx and /dev/pts itself (a new devpts instance) and must be able to
        // replace /dev/ptmx, which a bind mount would pin: privileged specs list the host's
        // (`ctr run --privileged`). Access stays allowed by the rule above.
        if path == "/dev/ptmx" || path.starts_with("/dev/pts/") {
            continue;
        }
        let host_path = PathBuf::from(at.state_dir)
            .join(DEVICES_DIR)
            .join(format!("dev{i}"));
        out.mounts.push(node_mount(&f, &host_path, &path)?);
        out.nodes
            .push(node(d, path, host_path, kind, (major, minor)));
    }
    Ok(out)
}

fn node_mount(
    field: &str,
    host_path: &std::path::Path,
    path: &str,
) -> Result<MountEntry, PlanError> {
    MountEntry {
        source: host_path.to_string_lossy().into_owned(),
        destination: path.to_string(),
        fstype: "none".into(),
        options: vec!["bind".into()],
        create_dir: Some(false),
        optional: false,
    }
    .checked(field)
}

fn node(
    d: &LinuxDevice,
    path: String,
    host_path: PathBuf,
    kind: char,
    (major, minor): (u32, u32),
) -> DeviceNode {
    DeviceNode {
        path,
        host_path,
        kind,
        major,
        minor,
        file_mode: d.file_mode().unwrap_or(0o666),
        uid: d.uid().unwrap_or(0),
        gid: d.gid().unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nodes_mounts_and_rules() {
        let l: Linux = serde_json::from_value(json!({"devices": [
            {"type": "c", "path": "/dev/fuse", "major": 10, "minor": 229},
            {"type": "c", "path": "/dev/ptmx", "major": 5, "minor": 2},
            {"type": "p", "path": "/dev/fifo", "major": 0, "minor": 0, "fileMode": 384}
        ]}))
        .unwrap();
        let at = Places::for_tests();
        let d = nodes(&l, &at, &["/dev".to_string()]).unwrap();
        assert_eq!(d.allow, ["c 10:229 rwm", "c 5:2 rwm"]);
        let values: Vec<String> = d.mounts.iter().map(MountEntry::lxc_value).collect();
        assert_eq!(
            values,
            [
                "/s/devices/dev0 dev/fuse none bind,create=file 0 0",
                "/s/devices/dev2 dev/fifo none bind,create=file 0 0"
            ]
        );
        assert_eq!(d.nodes.len(), 2);
        assert_eq!((d.nodes[1].kind, d.nodes[1].file_mode), ('p', 0o600));
    }

    #[test]
    fn numbers_out_of_range_are_refused() {
        let l: Linux = serde_json::from_value(json!({"devices": [
            {"type": "c", "path": "/dev/x", "major": 4294967296_i64, "minor": 1}
        ]}))
        .unwrap();
        let at = Places::for_tests();
        let e = nodes(&l, &at, &[]).unwrap_err();
        assert_eq!(e.field(), "linux.devices[0].major");
    }
}
