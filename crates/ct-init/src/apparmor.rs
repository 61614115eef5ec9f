//! `process.apparmorProfile`, applied as runc applies it (libcontainer/apparmor
//! `ApplyProfile`): "exec PROFILE" written to `/proc/self/attr/apparmor/exec` (older kernels:
//! `/proc/self/attr/exec`), so the profile takes hold at the workload's `execve` and the
//! helper's own setup runs unconfined. Written while still root, before the user switch, as
//! runc does: afterwards the process may no longer own its `/proc/self/attr` files.

use std::io::Write;
use std::path::{Path, PathBuf};

use nix::errno::Errno;

use crate::sys::{self, Failure};

/// Asks for `profile` on the next `execve`.
pub fn apply_on_exec(profile: &str) -> Result<(), Failure> {
    apply_on_exec_at(
        Path::new("/proc/self"),
        Path::new("/sys/module/apparmor/parameters/enabled"),
        profile,
    )
}

/// [`apply_on_exec`] with the paths as parameters, so tests can point them elsewhere.
fn apply_on_exec_at(proc_self: &Path, enabled_flag: &Path, profile: &str) -> Result<(), Failure> {
    let attr = exec_attr(proc_self);
    let value = format!("exec {profile}");
    let result = std::fs::OpenOptions::new()
        .write(true)
        .open(&attr)
        .and_then(|mut f| {
            // One write: the kernel parses each write as a whole command.
            let n = f.write(value.as_bytes())?;
            if n == value.len() {
                Ok(())
            } else {
                Err(std::io::Error::other(format!(
                    "short write ({n} of {} bytes)",
                    value.len()
                )))
            }
        });
    result.map_err(|e| {
        let errno = e.raw_os_error().map(Errno::from_raw);
        let enabled = apparmor_enabled(proc_self, enabled_flag);
        failure(profile, &attr, errno, &e.to_string(), enabled)
    })
}

/// The interface file: the LSM-specific one where the kernel has it (5.8+), else the shared one.
fn exec_attr(proc_self: &Path) -> PathBuf {
    let specific = proc_self.join("attr/apparmor/exec");
    if specific.exists() {
        specific
    } else {
        proc_self.join("attr/exec")
    }
}

/// Whether AppArmor is the active LSM. The module flag is the host's word where sysfs shows it;
/// inside a container without it, reading the AppArmor attribute fails when AppArmor is off.
fn apparmor_enabled(proc_self: &Path, enabled_flag: &Path) -> bool {
    match std::fs::read_to_string(enabled_flag) {
        Ok(flag) => flag.starts_with('Y'),
        Err(_) => std::fs::read_to_string(proc_self.join("attr/apparmor/current")).is_ok(),
    }
}

/// The error the create (or exec) fails with: it names the profile and the likely cause.
fn failure(
    profile: &str,
    attr: &Path,
    errno: Option<Errno>,
    io_text: &str,
    enabled: bool,
) -> Failure {
    let cause = match errno {
        Some(e) => sys::describe(e),
        None => io_text.to_string(),
    };
    let detail = format!("write {}: {cause}", attr.display());
    if !enabled {
        Failure::new(format!(
            "apparmor profile {profile:?} (process.apparmorProfile) is asked for, but AppArmor \
             is not enabled on this host ({detail})"
        ))
    } else if errno == Some(Errno::ENOENT) {
        // The kernel answers ENOENT for a profile name it has not loaded.
        Failure::new(format!(
            "apparmor profile {profile:?} (process.apparmorProfile) is not loaded on the host \
             ({detail})"
        ))
    } else {
        Failure::new(format!(
            "unable to apply apparmor profile {profile:?} (process.apparmorProfile): {detail}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_proc(specific: bool) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("attr/apparmor")).unwrap();
        std::fs::write(dir.path().join("attr/exec"), "").unwrap();
        if specific {
            std::fs::write(dir.path().join("attr/apparmor/exec"), "").unwrap();
        }
        dir
    }

    fn flag(dir: &tempfile::TempDir, value: &str) -> PathBuf {
        let path = dir.path().join("enabled");
        std::fs::write(&path, value).unwrap();
        path
    }

    #[test]
    fn writes_exec_profile_to_the_apparmor_attr() {
        let dir = fake_proc(true);
        apply_on_exec_at(dir.path(), &flag(&dir, "Y\n"), "docker-default").unwrap();
        let written = std::fs::read_to_string(dir.path().join("attr/apparmor/exec")).unwrap();
        assert_eq!(written, "exec docker-default");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("attr/exec")).unwrap(),
            ""
        );
    }

    #[test]
    fn falls_back_to_the_shared_attr_on_older_kernels() {
        let dir = fake_proc(false);
        apply_on_exec_at(dir.path(), &flag(&dir, "Y\n"), "p").unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("attr/exec")).unwrap(),
            "exec p"
        );
    }

    #[test]
    fn no_interface_and_apparmor_off_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let err = apply_on_exec_at(dir.path(), &flag(&dir, "N\n"), "twin-default").unwrap_err();
        assert!(err.0.contains("\"twin-default\""), "{err}");
        assert!(err.0.contains("AppArmor is not enabled"), "{err}");
    }

    #[test]
    fn enoent_with_apparmor_on_means_not_loaded() {
        let f = failure(
            "twin-not-loaded",
            Path::new("/proc/self/attr/apparmor/exec"),
            Some(Errno::ENOENT),
            "",
            true,
        );
        assert_eq!(
            f.0,
            "apparmor profile \"twin-not-loaded\" (process.apparmorProfile) is not loaded on the \
             host (write /proc/self/attr/apparmor/exec: no such file or directory)"
        );
        let f = failure("p", Path::new("/x"), Some(Errno::EACCES), "", true);
        assert!(
            f.0.starts_with("unable to apply apparmor profile \"p\""),
            "{f}"
        );
        assert!(f.0.ends_with("permission denied"), "{f}");
    }

    #[test]
    fn enabled_flag_wins_over_the_attr_probe() {
        let dir = fake_proc(true);
        std::fs::write(dir.path().join("attr/apparmor/current"), "unconfined\n").unwrap();
        assert!(!apparmor_enabled(dir.path(), &flag(&dir, "N\n")));
        assert!(apparmor_enabled(dir.path(), &dir.path().join("absent")));
        let empty = tempfile::tempdir().unwrap();
        assert!(!apparmor_enabled(
            empty.path(),
            &empty.path().join("absent")
        ));
    }
}
