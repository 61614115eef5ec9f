//! The crate's one writer: the files a plan's config refers to, in the state directory.
//!
//! Planning itself writes nothing. It reads two things, because the config depends on them:
//! the image's symbolic links on the way to a mount target (resolved like runc's securejoin,
//! `mounts.rs`), and whether a bind source is a directory or a file (LXC must be told which to
//! create at a missing target). Both are reads of what the caller handed in (the bundle), at
//! planning time, as runc reads them when it builds the same mounts.
//!
//! This writer stays here, beside the names it writes (`seccomp_path`, the OOM hook's files,
//! `devices`), rather than in the shim: the shim and this crate's real-LXC tests must write
//! exactly what the rendered config refers to, and one writer serves both. It is the only
//! place that makes device nodes (mknod, then the exact mode and owner, as runc sets them).

use std::path::{Path, PathBuf};

use crate::{ContainerPlan, OOM_COUNTER_AT_STOP_NAME, OOM_COUNTER_LINK_NAME};

/// Removes the file at `path`; one that is not there is fine.
fn remove_if_present(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

impl ContainerPlan {
    /// Where the `lxc.hook.stop` hook copies the OOM kill counter (see
    /// [`OOM_COUNTER_AT_STOP_NAME`]).
    pub fn oom_counter_at_stop_path(&self) -> PathBuf {
        self.seccomp_path.with_file_name(OOM_COUNTER_AT_STOP_NAME)
    }

    /// Writes what the config refers to in the state directory, before the start: the seccomp
    /// policy at [`ContainerPlan::seccomp_path`] and the device nodes of
    /// [`ContainerPlan::devices`] (mknod, chmod, chown; an existing node is replaced), the
    /// empty 0600 file the stop hook fills and the hook's source link, at `/dev/null` for now.
    /// It needs root for the device nodes.
    pub fn write_state_files(&self) -> std::io::Result<()> {
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(self.oom_counter_at_stop_path())?;
        // Until the shim knows the container's cgroup and points the link there, the hook
        // copies nothing (and does not fail: a container that dies before that would get
        // "Failed to run lxc.hook.stop" in its start error).
        let link = self.seccomp_path.with_file_name(OOM_COUNTER_LINK_NAME);
        remove_if_present(&link)?;
        std::os::unix::fs::symlink("/dev/null", &link)?;
        if let Some(profile) = &self.seccomp_profile {
            std::fs::write(&self.seccomp_path, profile)?;
            std::fs::set_permissions(&self.seccomp_path, std::fs::Permissions::from_mode(0o644))?;
        }
        for d in &self.devices {
            if let Some(dir) = d.host_path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            remove_if_present(&d.host_path)?;
            let kind = match d.kind {
                'b' => libc::S_IFBLK,
                'p' => libc::S_IFIFO,
                _ => libc::S_IFCHR,
            };
            let path = std::ffi::CString::new(d.host_path.as_os_str().as_bytes())
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
            let dev = libc::makedev(d.major, d.minor);
            // SAFETY: a valid NUL-terminated path; mknod does not keep the pointer.
            if unsafe { libc::mknod(path.as_ptr(), kind | (d.file_mode & 0o7777), dev) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            std::fs::set_permissions(
                &d.host_path,
                std::fs::Permissions::from_mode(d.file_mode & 0o7777),
            )?;
            std::os::unix::fs::chown(&d.host_path, Some(d.uid), Some(d.gid))?;
        }
        Ok(())
    }
}
