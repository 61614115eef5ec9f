//! Looking at the host: processes, mounts, LXC containers, cgroups; and the per-container
//! memory the benchmarks report.

use std::path::{Path, PathBuf};

/// A host process as /proc shows it.
#[derive(Clone, Debug)]
pub struct Proc {
    pub pid: i32,
    pub ppid: i32,
    /// argv joined with spaces.
    pub cmdline: String,
}

impl Proc {
    /// The file name of argv[0] (`lxc-start`, `containerd-shim-runc-v2`), for the benchmarks'
    /// list of processes counted.
    pub fn exe_name(&self) -> String {
        let exe = self.cmdline.split_whitespace().next().unwrap_or("?");
        exe.rsplit('/').next().unwrap_or(exe).to_string()
    }
}

fn read_proc(pid: i32) -> Option<Proc> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let cmdline = raw
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The comm field is in parentheses and may hold spaces: parse after the last ')'.
    let after = &stat[stat.rfind(')')? + 2..];
    let ppid = after.split(' ').nth(1)?.parse().ok()?;
    Some(Proc { pid, ppid, cmdline })
}

/// Every process on the host (kernel threads have an empty cmdline).
pub fn processes() -> Vec<Proc> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(read_proc)
        .collect()
}

/// Processes whose command line contains every one of `needles`.
pub fn processes_matching(needles: &[&str]) -> Vec<Proc> {
    processes()
        .into_iter()
        .filter(|p| needles.iter().all(|n| p.cmdline.contains(n)))
        .collect()
}

/// Processes whose command line names `dir` or a path under it. A plain substring match would
/// also take `/x/work-12` for `/x/work-1`: the teardown of one work dir would kill the
/// containerd of another whose name it prefixes.
pub fn processes_under(dir: &Path) -> Vec<Proc> {
    let dir = dir.to_string_lossy();
    processes()
        .into_iter()
        .filter(|p| names_path_under(&p.cmdline, &dir))
        .collect()
}

/// Whether `cmdline` holds `dir` followed by `/`, a separator or the end.
fn names_path_under(cmdline: &str, dir: &str) -> bool {
    let dir = dir.trim_end_matches('/');
    !dir.is_empty()
        && cmdline.match_indices(dir).any(|(at, _)| {
            matches!(
                cmdline[at + dir.len()..].chars().next(),
                None | Some('/' | ' ' | '"' | '\'' | ',' | ':' | ';')
            )
        })
}

pub fn pid_alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false)
}

/// The pid namespace of a process (`pid:[4026531836]`), to tell container processes apart.
pub fn pid_ns(pid: i32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/ns/pid"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// Mount points (from /proc/self/mountinfo) that lie under `dir` or equal it.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let prefix = dir.to_string_lossy().trim_end_matches('/').to_string();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mount_path)
        .filter(|m| m == &prefix || m.starts_with(&format!("{prefix}/")))
        .map(PathBuf::from)
        .collect()
}

/// Mount points whose path contains `needle` as a path component sequence.
pub fn mounts_containing(needle: &str) -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mount_path)
        .filter(|m| m.contains(needle))
        .map(PathBuf::from)
        .collect()
}

fn unescape_mount_path(s: &str) -> String {
    // mountinfo escapes space, tab, newline and backslash as \ooo.
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            if let Some(v) = std::str::from_utf8(&bytes[i + 1..i + 4])
                .ok()
                .and_then(|o| u8::from_str_radix(o, 8).ok())
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Unmounts everything under `dir`, deepest first (lazy, so a busy mount still goes).
pub fn unmount_all_under(dir: &Path) -> Vec<PathBuf> {
    let mut mounts = mounts_under(dir);
    mounts.sort_by_key(|m| std::cmp::Reverse(m.as_os_str().len()));
    for m in &mounts {
        let _ = nix::mount::umount2(m.as_path(), nix::mount::MntFlags::MNT_DETACH);
    }
    mounts
}

/// The cgroup hierarchies: `/sys/fs/cgroup` (the v2 tree, or the v1 tmpfs) and every
/// directory in it (the v1 controllers, the hybrid `unified`).
pub fn cgroup_hierarchies() -> Vec<PathBuf> {
    let root = PathBuf::from("/sys/fs/cgroup");
    let mut out = vec![root.clone()];
    if let Ok(dir) = std::fs::read_dir(&root) {
        out.extend(
            dir.flatten()
                .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
                .map(|e| e.path()),
        );
    }
    out
}

/// cgroup directories named `NAMESPACE/ID` in any hierarchy (v1 controllers or the v2 tree),
/// where ctr puts a container by default (`cgroupsPath = /NAMESPACE/ID`).
pub fn cgroups_of(namespace: &str, id: &str) -> Vec<PathBuf> {
    cgroup_hierarchies()
        .into_iter()
        .map(|h| h.join(namespace).join(id))
        .filter(|p| p.is_dir())
        .collect()
}

/// Resident and proportional memory of a process, in KiB (`/proc/PID/smaps_rollup`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Memory {
    pub rss_kib: u64,
    pub pss_kib: u64,
}

impl std::ops::AddAssign for Memory {
    fn add_assign(&mut self, o: Memory) {
        self.rss_kib += o.rss_kib;
        self.pss_kib += o.pss_kib;
    }
}

/// Memory summed over processes, with their executables' names (each once), for the
/// benchmarks' per-runtime rows.
#[derive(Default, Debug)]
pub struct MemoryTally {
    pub total: Memory,
    pub names: Vec<String>,
}

impl MemoryTally {
    /// Adds process `p`'s memory; false when it is gone.
    pub fn add(&mut self, p: &Proc) -> bool {
        let Some(m) = memory_of(p.pid) else {
            return false;
        };
        self.total += m;
        let short = p.exe_name();
        if !self.names.contains(&short) {
            self.names.push(short);
        }
        true
    }
}

pub fn memory_of(pid: i32) -> Option<Memory> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let field = |name: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Some(Memory {
        rss_kib: field("Rss:"),
        pss_kib: field("Pss:"),
    })
}

/// Whether we are root (the end-to-end tests need it).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[cfg(test)]
mod tests {
    use super::names_path_under;

    #[test]
    fn a_work_dir_does_not_match_another_it_prefixes() {
        let cmd = "/usr/bin/containerd --config /tmp/w/e2e-12/config.toml";
        assert!(names_path_under(cmd, "/tmp/w/e2e-12"));
        assert!(names_path_under(cmd, "/tmp/w/e2e-12/"));
        assert!(!names_path_under(cmd, "/tmp/w/e2e-1"));
        assert!(names_path_under(
            "lxc-start -P /tmp/w/e2e-1 -n x",
            "/tmp/w/e2e-1"
        ));
        assert!(names_path_under("x --root=/tmp/w/e2e-1", "/tmp/w/e2e-1"));
        assert!(!names_path_under("x --root=/tmp/w/e2e-10", "/tmp/w/e2e-1"));
    }
}
