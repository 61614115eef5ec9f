//! Whether LXC may write a new user namespace's maps on this host.
//!
//! LXC writes them through shadow's `newuidmap`/`newgidmap` whenever both are on its PATH, root
//! included (src/lxc/idmap_utils.c, `lxc_map_ids`: "If newuidmap exists, that is, if shadow is
//! handing out subuid ranges, then insist that root also reserve ranges in subuid"), and those
//! refuse every range `/etc/subuid` and `/etc/subgid` do not give root (shadow's
//! `have_sub_uids`). runc writes the maps itself and needs no such entry. Proxmox VE ships
//! `root:100000:65536` in both files, which covers its own unprivileged CTs and `ctr --uidmap
//! 0:100000:65536`, but not the ranges the kubelet hands out to `hostUsers: false` pods. Checked
//! before anything is made, so that the error names the file and the line to add instead of
//! LXC's "Failed to set up id mapping".

use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxIdMapping, LinuxNamespaceType, Spec};

use crate::errors::{Result, ShimError};

const SUBUID: &str = "/etc/subuid";
const SUBGID: &str = "/etc/subgid";

/// Fails with what to add to `/etc/subuid` or `/etc/subgid` if LXC would map `spec`'s new user
/// namespace through shadow's tools and root does not own the ranges there.
pub fn check_new_user_namespace(spec: &Spec) -> Result<()> {
    let Some(linux) = spec.linux() else {
        return Ok(());
    };
    let new_userns = linux
        .namespaces()
        .iter()
        .flatten()
        .any(|n| n.typ() == LinuxNamespaceType::User && n.path().is_none());
    if !new_userns {
        return Ok(());
    }
    let uid_maps = linux.uid_mappings().clone().unwrap_or_default();
    let gid_maps = linux.gid_mappings().clone().unwrap_or_default();
    // A map of host root is written directly (newer kernels want CAP_SETFCAP for it).
    let maps_host_root = uid_maps.iter().any(|m| m.host_id() == 0 && m.size() > 0);
    if maps_host_root {
        return Ok(());
    }
    let Some(tool) =
        privileged_tool("newuidmap").filter(|_| privileged_tool("newgidmap").is_some())
    else {
        return Ok(());
    };
    for (maps, file, what) in [(&uid_maps, SUBUID, "uid"), (&gid_maps, SUBGID, "gid")] {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let ranges = root_ranges(&text);
        for m in maps.iter() {
            if !allowed(&ranges, m) {
                return Err(ShimError::FailedPrecondition(format!(
                    "linux.{what}Mappings: {what}s {}-{} of the host are not root's in {file}: \
                     LXC writes a user namespace's maps through {} here (shadow's uidmap \
                     tools), which need the line \"root:{}:{}\" (or a range covering it) in \
                     {file}",
                    m.host_id(),
                    u64::from(m.host_id()) + u64::from(m.size()).saturating_sub(1),
                    tool.display(),
                    m.host_id(),
                    m.size()
                )));
            }
        }
    }
    Ok(())
}

/// The first `name` in the directories of PATH (LXC's `on_path`), if it can act for root: setuid,
/// or with file capabilities (LXC's `idmaptool_on_path_and_privileged`; the capability sets
/// themselves are not read here).
fn privileged_tool(name: &str) -> Option<PathBuf> {
    let found = crate::host::process::command::on_path(name)?;
    (is_setuid(&found) || has_file_capabilities(&found)).then_some(found)
}

fn is_setuid(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o4000 != 0)
}

fn has_file_capabilities(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: valid C strings; a NULL buffer of size 0 asks only for the value's size.
    let size = unsafe {
        libc::getxattr(
            c_path.as_ptr(),
            c"security.capability".as_ptr(),
            std::ptr::null_mut(),
            0,
        )
    };
    size > 0
}

/// root's ranges in a subuid/subgid file (`owner:start:count`, owner by name or number).
fn root_ranges(text: &str) -> Vec<(u64, u64)> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.trim().split(':');
            let owner = fields.next()?;
            let start = fields.next()?.parse().ok()?;
            let count = fields.next()?.parse().ok()?;
            (owner == "root" || owner == "0").then_some((start, count))
        })
        .collect()
}

/// Whether shadow's new[ug]idmap lets root map `m`: root's own id alone, or a host range root's
/// entries cover, adjacent entries joining up (shadow's `have_range`).
fn allowed(ranges: &[(u64, u64)], m: &LinuxIdMapping) -> bool {
    let (mut start, count) = (u64::from(m.host_id()), u64::from(m.size()));
    if count == 0 || (start == 0 && count == 1) {
        return true;
    }
    let end = start + count;
    while start < end {
        let Some(next) = ranges
            .iter()
            .filter(|(s, c)| *s <= start && start < s + c)
            .map(|(s, c)| s + c)
            .max()
        else {
            return false;
        };
        start = next;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxIdMappingBuilder;

    fn map(host: u32, size: u32) -> LinuxIdMapping {
        LinuxIdMappingBuilder::default()
            .container_id(0u32)
            .host_id(host)
            .size(size)
            .build()
            .unwrap()
    }

    #[test]
    fn roots_ranges_decide_like_shadows_have_range() {
        let ranges = root_ranges("root:100000:65536\nuser:165536:65536\n0:200000:1000\nbad\n");
        assert_eq!(ranges, vec![(100000, 65536), (200000, 1000)]);
        assert!(allowed(&ranges, &map(100000, 65536)));
        assert!(allowed(&ranges, &map(100500, 10)));
        assert!(
            !allowed(&ranges, &map(165536, 65536)),
            "another user's range"
        );
        assert!(!allowed(&ranges, &map(99999, 2)));
        assert!(allowed(&ranges, &map(0, 1)), "root's own id");
        let adjacent = root_ranges("root:100000:65536\nroot:165536:65536\n");
        assert!(allowed(&adjacent, &map(100000, 131072)));
        assert!(!allowed(&[], &map(100000, 65536)));
    }
}
