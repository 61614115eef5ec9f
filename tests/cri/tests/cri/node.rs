//! What the node shows of a container: its cgroup and the limits in it, capability masks.

use crate::harness::*;

/// Whether the node has the cgroup v2 hierarchy alone at /sys/fs/cgroup (a Proxmox VE node, the
/// node twin), rather than v1 controllers (this build host's hybrid layout).
pub fn cgroup_v2_only() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").is_file()
}

/// The container's cgroup directory where its limits are, from its init pid: the v1
/// controller's, or on a v2-only node the one v2 directory.
pub fn cgroup_dir(pid: i32, controller: &str) -> Result<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    let v2 = cgroup_v2_only();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, ctrls, path) = (
            parts.next(),
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
        );
        if v2 && ctrls.is_empty() {
            let dir = PathBuf::from("/sys/fs/cgroup").join(path.trim_start_matches('/'));
            return Ok(limit_level(dir));
        }
        if !v2 && ctrls.split(',').any(|c| c == controller) {
            let dir = PathBuf::from("/sys/fs/cgroup")
                .join(ctrls)
                .join(path.trim_start_matches('/'));
            return Ok(limit_level(dir));
        }
    }
    bail!("pid {pid} has no {controller} cgroup:\n{text}")
}

/// Where a container's limits are: its cgroup, or for a Proxmox CT (pve-container
/// update_lxc_config: processes in `lxc/VMID/ns`, limits on `lxc/VMID`) the parent.
pub fn limit_level(dir: PathBuf) -> PathBuf {
    let proxmox_inner = dir.file_name().is_some_and(|f| f == "ns")
        && dir
            .parent()
            .and_then(Path::parent)
            .and_then(Path::file_name)
            .is_some_and(|g| g == "lxc");
    match dir.parent() {
        Some(parent) if proxmox_inner => parent.to_path_buf(),
        _ => dir,
    }
}

/// A container's memory and CPU limits as its cgroup files hold them, on cgroup v1 or v2.
#[derive(Debug, PartialEq, Eq)]
pub struct Limits {
    /// `memory.limit_in_bytes` (v1) or `memory.max` (v2).
    pub memory: String,
    /// `cpu.cfs_quota_us` (v1) or the first field of `cpu.max` (v2).
    pub cpu_quota: String,
    /// `cpu.cfs_period_us` (v1) or the second field of `cpu.max` (v2).
    pub cpu_period: String,
    /// `cpu.shares` (v1) or `cpu.weight` (v2): the runtime converts CRI's shares to a weight
    /// on v2, so that value is compared with runc's rather than with the shares asked for.
    pub cpu_weight: String,
}

pub fn limits_of(pid: i32) -> Result<Limits> {
    let mem = cgroup_dir(pid, "memory")?;
    let cpu = cgroup_dir(pid, "cpu")?;
    if cgroup_v2_only() {
        let max = read_trim(&cpu.join("cpu.max"))?;
        let (quota, period) = max
            .split_once(' ')
            .ok_or_else(|| anyhow!("cpu.max of {}: {max:?}", cpu.display()))?;
        Ok(Limits {
            memory: read_trim(&mem.join("memory.max"))?,
            cpu_quota: quota.to_string(),
            cpu_period: period.to_string(),
            cpu_weight: read_trim(&cpu.join("cpu.weight"))?,
        })
    } else {
        Ok(Limits {
            memory: read_trim(&mem.join("memory.limit_in_bytes"))?,
            cpu_quota: read_trim(&cpu.join("cpu.cfs_quota_us"))?,
            cpu_period: read_trim(&cpu.join("cpu.cfs_period_us"))?,
            cpu_weight: read_trim(&cpu.join("cpu.shares"))?,
        })
    }
}

pub fn read_trim(path: &Path) -> Result<String> {
    Ok(std::fs::read_to_string(path)
        .with_context(|| format!("read {}", path.display()))?
        .trim()
        .to_string())
}

pub fn cap_mask(text: &str, field: &str) -> Result<u64> {
    let line = text
        .lines()
        .find(|l| l.starts_with(field))
        .ok_or_else(|| anyhow!("no {field} in {text}"))?;
    let hex = line.split_whitespace().nth(1).unwrap_or("");
    Ok(u64::from_str_radix(hex, 16)?)
}

// Capability numbers (linux/capability.h).
pub const CAP_CHOWN: u32 = 0;
pub const CAP_DAC_OVERRIDE: u32 = 1;
pub const CAP_FOWNER: u32 = 3;
pub const CAP_FSETID: u32 = 4;
pub const CAP_KILL: u32 = 5;
pub const CAP_SETGID: u32 = 6;
pub const CAP_SETUID: u32 = 7;
pub const CAP_SETPCAP: u32 = 8;
pub const CAP_NET_BIND_SERVICE: u32 = 10;
pub const CAP_NET_RAW: u32 = 13;
pub const CAP_SYS_CHROOT: u32 = 18;
pub const CAP_SYS_TIME: u32 = 25;
pub const CAP_MKNOD: u32 = 27;
pub const CAP_AUDIT_WRITE: u32 = 29;
pub const CAP_SETFCAP: u32 = 31;

/// containerd's default capability set for CRI containers.
pub fn default_caps() -> u64 {
    [
        CAP_CHOWN,
        CAP_DAC_OVERRIDE,
        CAP_FSETID,
        CAP_FOWNER,
        CAP_MKNOD,
        CAP_NET_RAW,
        CAP_SETGID,
        CAP_SETUID,
        CAP_SETFCAP,
        CAP_SETPCAP,
        CAP_NET_BIND_SERVICE,
        CAP_SYS_CHROOT,
        CAP_KILL,
        CAP_AUDIT_WRITE,
    ]
    .iter()
    .fold(0u64, |m, c| m | (1u64 << c))
}

// Cases
