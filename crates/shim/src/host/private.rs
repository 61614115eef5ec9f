//! Files and directories the shim makes for one container are that container's alone: its
//! process specs carry the workload's environment (Kubernetes Secrets passed as env vars end up
//! there), so nothing the shim writes is wider than containerd's own bundle (0700 directories,
//! 0600 files).
//!
//! The owner is host root, or, for a container with a user namespace, the host uid/gid its root
//! maps to: the helper reads its spec and connects to its socket as the container's root, which
//! is then not host root (the same reason runc's bundle rootfs belongs to the mapped root).
//! Device nodes made for `linux.devices` keep the mode and owner the spec gave them: the 0700
//! directory around them is what keeps other host users out.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::errors::{IoContext, Result};

pub const DIR_MODE: u32 = 0o700;
pub const FILE_MODE: u32 = 0o600;

/// Who owns a container's private files on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

impl Owner {
    pub const ROOT: Owner = Owner { uid: 0, gid: 0 };

    /// The host ids of the container's root: its user namespace mappings of id 0, else host
    /// root.
    pub fn for_spec(spec: &oci_spec::runtime::Spec) -> Owner {
        let Some(linux) = spec.linux() else {
            return Owner::ROOT;
        };
        let host_id_of_root = |maps: &Option<Vec<oci_spec::runtime::LinuxIdMapping>>| {
            maps.as_deref()
                .unwrap_or_default()
                .iter()
                .find_map(|m| (m.container_id() == 0 && m.size() > 0).then_some(m.host_id()))
        };
        Owner {
            uid: host_id_of_root(linux.uid_mappings()).unwrap_or(0),
            gid: host_id_of_root(linux.gid_mappings()).unwrap_or(0),
        }
    }

    /// The owner of an existing directory made by [`make_dir`] (an exec finds its
    /// container's owner there).
    pub fn of(path: &Path) -> Owner {
        std::fs::metadata(path)
            .map(|m| Owner {
                uid: m.uid(),
                gid: m.gid(),
            })
            .unwrap_or(Owner::ROOT)
    }

    fn apply(self, path: &Path) -> Result<()> {
        std::os::unix::fs::lchown(path, Some(self.uid), Some(self.gid))
            .ctx(|| format!("chown {} to {}:{}", path.display(), self.uid, self.gid))
    }
}

/// Creates `path` (and missing parents, with their default mode) and makes the directory
/// itself 0700, owned by `owner`.
pub fn make_dir(path: &Path, owner: Owner) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)
        .ctx(|| format!("create {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(DIR_MODE))
        .ctx(|| format!("chmod {}", path.display()))?;
    owner.apply(path)
}

/// Writes `bytes` to `path` as a 0600 file of `owner` (created with that mode, so the content
/// is never readable by others, not even between open and chmod).
pub fn write_file(path: &Path, bytes: &[u8], owner: Owner) -> Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(path)
        .ctx(|| format!("write {}", path.display()))?;
    // An existing file keeps its old mode through open: set it exactly.
    file.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))
        .ctx(|| format!("chmod {}", path.display()))?;
    file.write_all(bytes)
        .ctx(|| format!("write {}", path.display()))?;
    owner.apply(path)
}

/// A container's state directory: host root's, and the helper's directory in it
/// (`ctinit_proto::HELPER_DIR_NAME`) `owner`'s. Host root reads, runs or acts on what is in
/// the state directory (LXC loads its seccomp profile, includes and device nodes from there,
/// LXC's hooks write there, Delete reads the init's cgroups there), so the container's root
/// must not be able to replace any of it; it needs only its helper, specs and sockets. For
/// a container with a user namespace the state directory is 0710 with the group of the
/// container's root, as containerd makes such a container's bundle: the container's root
/// may pass through it, not list or write it. Returns the helper's directory.
pub fn make_state_dir(state_dir: &Path, owner: Owner) -> Result<std::path::PathBuf> {
    make_dir(state_dir, Owner::ROOT)?;
    let helper_dir = state_dir.join(ctinit_proto::HELPER_DIR_NAME);
    make_dir(&helper_dir, owner)?;
    open_state_dir_to(state_dir, owner)?;
    Ok(helper_dir)
}

/// Lets the container's root through the state directory to its helper's directory (see
/// [`make_state_dir`]).
fn open_state_dir_to(state_dir: &Path, owner: Owner) -> Result<()> {
    if owner == Owner::ROOT {
        return Ok(());
    }
    std::fs::set_permissions(state_dir, std::fs::Permissions::from_mode(0o710))
        .ctx(|| format!("chmod {}", state_dir.display()))?;
    Owner {
        uid: 0,
        gid: owner.gid,
    }
    .apply(state_dir)
}

/// Makes everything under a state directory made by [`make_state_dir`] private again (after
/// LXC and the driver wrote into it): host root's, but for the helper's directory, which is
/// `owner`'s, and the helper binary in it (see [`restrict_tree`]).
pub fn restrict_state_dir(state_dir: &Path, owner: Owner) -> Result<()> {
    restrict_tree(state_dir, Owner::ROOT, &[ctinit_proto::HELPER_DIR_NAME])?;
    open_state_dir_to(state_dir, owner)?;
    restrict_tree(
        &state_dir.join(ctinit_proto::HELPER_DIR_NAME),
        owner,
        &[ctinit_proto::HELPER_NAME],
    )
}

/// Reads a file of the shim's own that host root acts on (a state directory's `init.cgroup`,
/// LXC's log, the OOM counter's copy), refusing anything else in its place: it must be a
/// regular file owned by root and writable by no one else, not a link (`O_NOFOLLOW`), and is
/// opened without blocking (a fifo cannot hang the shim). At most `limit` bytes.
pub fn read_root_owned(path: &Path, limit: u64) -> Option<String> {
    use std::io::Read;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() || meta.uid() != 0 || meta.mode() & 0o022 != 0 {
        log::warn!(
            "{}: not a root-owned regular file writable only by root; not read",
            path.display()
        );
        return None;
    }
    let mut text = String::new();
    file.take(limit).read_to_string(&mut text).ok()?;
    Some(text)
}

/// Makes one existing file or socket 0600 and `owner`'s.
pub fn restrict(path: &Path, owner: Owner) -> Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(FILE_MODE))
        .ctx(|| format!("chmod {}", path.display()))?;
    owner.apply(path)
}

/// Makes everything under a container's state directory private: directories 0700, regular
/// files and sockets 0600, all `owner`'s. Left as they are: the helper binary (executable, and
/// a hard link to a copy shared by every container, so its owner must not change) and device
/// nodes (the spec chose their mode and owner).
pub fn restrict_tree(dir: &Path, owner: Owner, keep: &[&str]) -> Result<()> {
    let meta = std::fs::symlink_metadata(dir).ctx(|| format!("stat {}", dir.display()))?;
    if !meta.is_dir() {
        return Ok(());
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DIR_MODE))
        .ctx(|| format!("chmod {}", dir.display()))?;
    owner.apply(dir)?;
    for entry in std::fs::read_dir(dir).ctx(|| format!("list {}", dir.display()))? {
        let entry = entry.ctx(|| format!("list {}", dir.display()))?;
        let path = entry.path();
        if keep.iter().any(|k| entry.file_name() == *k) {
            continue;
        }
        let kind = entry
            .file_type()
            .ctx(|| format!("stat {}", path.display()))?;
        use std::os::unix::fs::FileTypeExt;
        if kind.is_dir() {
            restrict_tree(&path, owner, keep)?;
        } else if kind.is_file() || kind.is_socket() {
            restrict(&path, owner)?;
        }
    }
    Ok(())
}

/// Called where the process takes a secret (the API token) into memory: from then on it
/// leaves no core dump, and `/proc/PID/mem` and ptrace are closed to all but root
/// (`PR_SET_DUMPABLE` 0). The secret's own memory is zeroized when dropped
/// (`pve_client::Secret`). Children start dumpable again after their `execve`; they never get
/// the secret.
pub fn no_core_dumps() {
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        log::warn!("PR_SET_DUMPABLE: {e}; a core dump could hold the API token");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path)
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    }

    #[test]
    fn files_and_dirs_are_owner_only() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        make_dir(&dir, Owner::ROOT.with_current()).unwrap();
        assert_eq!(mode(&dir), 0o700);
        let file = dir.join("spec.json");
        std::fs::write(&file, "x").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_file(&file, b"{}", Owner::ROOT.with_current()).unwrap();
        assert_eq!(mode(&file), 0o600);
        assert_eq!(std::fs::read(&file).unwrap(), b"{}");

        let sub = dir.join("dev");
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(sub.join("f"), "y").unwrap();
        std::fs::write(dir.join("init"), "helper").unwrap();
        std::fs::set_permissions(dir.join("init"), std::fs::Permissions::from_mode(0o755)).unwrap();
        restrict_tree(&dir, Owner::ROOT.with_current(), &["init"]).unwrap();
        assert_eq!(mode(&sub), 0o700);
        assert_eq!(mode(&sub.join("f")), 0o600);
        assert_eq!(mode(&dir.join("init")), 0o755, "the helper is left alone");
    }

    #[test]
    fn owner_is_the_containers_mapped_root() {
        let spec: oci_spec::runtime::Spec = serde_json::from_str(
            r#"{"ociVersion":"1.0.2","linux":{
                "uidMappings":[{"containerID":0,"hostID":100000,"size":65536}],
                "gidMappings":[{"containerID":0,"hostID":200000,"size":65536}]}}"#,
        )
        .unwrap();
        assert_eq!(
            Owner::for_spec(&spec),
            Owner {
                uid: 100000,
                gid: 200000
            }
        );
        let plain: oci_spec::runtime::Spec =
            serde_json::from_str(r#"{"ociVersion":"1.0.2"}"#).unwrap();
        assert_eq!(Owner::for_spec(&plain), Owner::ROOT);
    }

    #[test]
    fn a_process_holding_the_secret_is_not_dumpable() {
        no_core_dumps();
        assert_eq!(nix::sys::prctl::get_dumpable(), Ok(false));
    }

    impl Owner {
        /// The test's own ids, so the tests also run unprivileged.
        fn with_current(self) -> Owner {
            Owner {
                uid: nix::unistd::getuid().as_raw(),
                gid: nix::unistd::getgid().as_raw(),
            }
        }
    }
}
