//! Facts about this node that decide how a container is planned, and two more answers that
//! depend on the node: the OCI features document the runtime gives here ([`features`]) and
//! whether LXC may write a new user namespace's maps here ([`subid`]).

pub mod features;
pub mod subid;

/// LXC's version decides which keys the renderer may use (LXC 6 has no cgroup v1 keys).
fn lxc_version() -> (u32, u32, u32) {
    static VERSION: std::sync::OnceLock<(u32, u32, u32)> = std::sync::OnceLock::new();
    *VERSION.get_or_init(|| {
        // Read the output, then wait; the wait may lose the race with the shim's reaper,
        // which only means the status is not ours to see.
        let mut text = String::new();
        if let Ok(mut child) = std::process::Command::new("lxc-start")
            .arg("--version")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
        {
            if let Some(mut out) = child.stdout.take() {
                let _ = std::io::Read::read_to_string(&mut out, &mut text);
            }
            let _ = child.wait();
        }
        parse_version(&text).unwrap_or((5, 0, 0))
    })
}

fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    let mut parts = text
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .filter(|p| !p.is_empty());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let patch = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    Some((major, minor, patch))
}

pub fn node_facts() -> lxc_config::NodeFacts {
    let unified = std::fs::read_to_string("/proc/self/mountinfo")
        .map(|t| {
            t.lines()
                .any(|l| l.contains(" /sys/fs/cgroup ") && l.contains(" - cgroup2 "))
        })
        .unwrap_or(false);
    lxc_config::NodeFacts {
        cgroup: if unified {
            lxc_config::CgroupMode::Unified
        } else {
            lxc_config::CgroupMode::Legacy
        },
        lxc_version: lxc_version(),
        mount_setattr: crate::host::mounts::mount_attrs::kernel_support(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn lxc_versions_parse() {
        assert_eq!(super::parse_version("5.0.2\n"), Some((5, 0, 2)));
        assert_eq!(super::parse_version("6.0.4-pve1"), Some((6, 0, 4)));
        assert_eq!(super::parse_version(""), None);
    }
}
