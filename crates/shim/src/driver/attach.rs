//! How an exec gets into a running container, under both drivers: the helper's own
//! `--attach` mode (ct-init's `host.rs`) joins the namespaces of the container's init that
//! differ from the shim's through a pidfd, forks into its pid namespace, loads the init's
//! seccomp filters and goes on as the exec's helper, the shim's own child. This is what
//! `lxc-attach` did, but `lxc-attach` left out the seccomp filter with
//! `--elevated-privileges=LSM` (LXC's attach.c loads it only with `LXC_ATTACH_LSM`), and it
//! needs the container's monitor, which the plain driver lets go.
//!
//! The init's filters are read once, when the init waits for Start (the helper's
//! `--dump-seccomp`, into a memfd of the shim's), and kept sealed in the shim's memory: no
//! file of a container's state directory, which the container's root may own, is ever
//! loaded as a filter. The helper that host root runs here is the sealed copy of the shim's
//! own (`host::helper::sealed`), never a file of the state directory.

use std::io::Seek;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use async_trait::async_trait;

use super::exec_command::{self, fd_path};
use super::{ExecFiles, ExecSpawner, SpawnedExec};
use crate::errors::{IoContext, Result, ShimError};
use crate::host::helper;
use crate::host::process::command::run_command;
use crate::host::process::exits::ChildExits;
use crate::host::process::{keep_fds_across_exec, KeptFd};

/// How long reading the init's seccomp filters may take.
const DUMP_LIMIT: Duration = Duration::from_secs(10);

/// The way into one container for its execs.
pub struct HelperAttach {
    exits: ChildExits,
    init_pid: u32,
    /// Keeps the init's identity for execs, whatever happens to its pid.
    pidfd: OwnedFd,
    /// The init's seccomp filters (empty: none), sealed.
    seccomp: std::fs::File,
    /// The init's execution domain (`personality(2)`), which execs take too.
    personality: u32,
}

impl HelperAttach {
    /// Takes the init's pidfd first (before anything else uses the pid, so that everything
    /// after names the same process), then reads its seccomp filters.
    pub async fn prepare(exits: &ChildExits, init_pid: u32) -> Result<HelperAttach> {
        let pidfd = pidfd_open(init_pid).ctx(|| format!("pidfd_open {init_pid}"))?;
        let personality = personality_of(init_pid)?;
        let mut seccomp = helper::sealable_memfd(c"containerd-shim-proxmox-lxc-seccomp")
            .map_err(|e| ShimError::io("make a memfd for the init's seccomp filters", e))?;
        if has_seccomp_filters(init_pid)? {
            let sealed_helper = helper::sealed()?;
            let output = seccomp
                .try_clone()
                .map_err(|e| ShimError::io("duplicate the seccomp memfd", e))?;
            let mut dump = std::process::Command::new(fd_path(sealed_helper.as_raw_fd()));
            dump.arg(ctinit_proto::DUMP_SECCOMP_ARG)
                .arg(init_pid.to_string())
                .arg(fd_path(output.as_raw_fd()))
                .env_clear();
            keep_fds_across_exec(
                &mut dump,
                [KeptFd::same(sealed_helper), KeptFd::same(output)],
            )?;
            let out = run_command(exits, dump, DUMP_LIMIT).await?;
            if out.code != 0 {
                return Err(ShimError::Internal(format!(
                    "read the seccomp filters of the container's init, for its execs: {}",
                    out.stderr.trim()
                )));
            }
        }
        seccomp
            .rewind()
            .and_then(|()| helper::seal(&seccomp))
            .map_err(|e| ShimError::io("seal the init's seccomp filters", e))?;
        Ok(HelperAttach {
            exits: exits.clone(),
            init_pid,
            pidfd,
            seccomp,
            personality,
        })
    }
}

#[async_trait]
impl ExecSpawner for HelperAttach {
    /// The helper (its sealed copy, `files.helper`) in `--attach` mode, run by host root: it
    /// joins the init's cgroups (through their `cgroup.procs` files, opened here) and then
    /// its namespaces, forks the exec's helper there and prints its pid.
    async fn spawn(&self, files: ExecFiles) -> Result<SpawnedExec> {
        let flags = crate::host::process::namespaces::to_join(self.init_pid)?;
        let [helper, socket, spec] = files.helper_args();
        let dup = |fd: &dyn AsFd, what: &str| {
            fd.as_fd()
                .try_clone_to_owned()
                .map_err(|e| ShimError::io(format!("duplicate the init's {what}"), e))
        };
        let (pidfd, seccomp) = (
            dup(&self.pidfd, "pidfd")?,
            dup(&self.seccomp, "seccomp filters")?,
        );
        let cgroups = crate::host::cgroup::ContainerCgroup::procs_files_to_join(self.init_pid)?;
        let cgroup_fds: Vec<String> = cgroups.iter().map(|f| f.as_raw_fd().to_string()).collect();
        let mut command = std::process::Command::new(helper);
        command
            .arg(ctinit_proto::ATTACH_ARG)
            .arg(flags.to_string())
            .arg(pidfd.as_raw_fd().to_string())
            .arg(self.personality.to_string())
            .arg(fd_path(seccomp.as_raw_fd()))
            .arg(cgroup_fds.join(","))
            .arg(socket)
            .arg(spec)
            .env_clear();
        let passed = [pidfd, seccomp].into_iter().chain(cgroups).collect();
        exec_command::spawn(&self.exits, command, files, passed).await
    }
}

/// Whether `pid` runs under seccomp filters (`Seccomp: 2` in /proc/PID/status; a kernel
/// without seccomp has no such line).
fn has_seccomp_filters(pid: u32) -> Result<bool> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ctx(|| format!("read /proc/{pid}/status"))?;
    Ok(status
        .lines()
        .filter_map(|l| l.strip_prefix("Seccomp:"))
        .any(|mode| mode.trim() != "0"))
}

/// The execution domain of `pid` (/proc/PID/personality: hex, readable by host root).
fn personality_of(pid: u32) -> Result<u32> {
    let path = format!("/proc/{pid}/personality");
    let text = std::fs::read_to_string(&path).ctx(|| format!("read {path}"))?;
    u32::from_str_radix(text.trim(), 16)
        .map_err(|_| ShimError::Internal(format!("{path}: {text:?} is not a personality")))
}

/// SIGKILLs the process behind `pidfd` (ESRCH once it has ended: never another process).
pub fn pidfd_kill(pidfd: &OwnedFd) -> std::io::Result<()> {
    // SAFETY: pidfd_send_signal on a descriptor we own, no siginfo, no flags.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if ret < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

pub fn pidfd_open(pid: u32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open with a pid and no flags; the result is checked and owned below.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nothing else owns (pidfds are close-on-exec).
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An exec takes the init's execution domain: read as /proc/PID/personality shows it
    /// (hex), e.g. PER_LINUX32 (8) for `setarch i686`.
    #[test]
    fn reads_the_personality_of_a_process() {
        assert_eq!(personality_of(std::process::id()).unwrap(), 0);
        // setarch is util-linux's, which every Debian system has (Essential: yes).
        let mut child = std::process::Command::new("setarch")
            .args(["i686", "sleep", "5"])
            .spawn()
            .expect("run setarch (util-linux)");
        let pid = child.id();
        // setarch execs sleep in the same process; wait until it did.
        for _ in 0..100 {
            if std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "sleep")
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let read = personality_of(pid);
        let _ = child.kill();
        let _ = child.wait();
        // include/uapi/linux/personality.h: PER_LINUX32 = 0x0008 (libc does not name it).
        assert_eq!(read.unwrap(), 0x0008);
    }
}
