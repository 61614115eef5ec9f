//! The OCI runtime features document (runtime-spec `features.md`, what `runc features` prints)
//! for `-info` and containerd's RuntimeInfo: containerd and the kubelet decide from it, e.g.
//! whether a `recursiveReadOnly: Enabled` volume may be asked for (only with `rro` listed).
//!
//! Every entry is something this runtime honours end to end, not what LXC could do in
//! principle; where runc lists more, the difference is deliberate and tested
//! (tests/info.rs compares with `runc features`):
//! - mount options: lxc-config's table (LXC's flags and propagation, `bind`, `rbind`), and
//!   runc's recursive attributes (`rro`, `rnosuid`, ...) where this kernel's mount_setattr(2)
//!   applies them (probed at run time; runc lists them whatever the kernel): the shim applies
//!   them to the bind and its submounts once LXC has mounted everything
//!   ([`crate::host::mounts::mount_attrs`]). No `tmpcopyup`, `remount`, `acl`/`noacl`.
//! - namespaces: with `user` (a new one, `ctr --uidmap`, or a pod's joined by path, CRI's
//!   `hostUsers: false`).
//! - `mountExtensions.idmap`: idmapped bind mounts with the container's own mappings (what
//!   containerd's CRI asks for: a pod's volumes carry the pod's mappings), through LXC's
//!   `idmap=container`; other mappings are refused by name. containerd 2.x refuses a container
//!   with idmapped mounts unless the runtime lists this (core/runtime/v2/task_manager.go,
//!   `validateRuntimeFeatures`), and its CRI reports a handler's user namespace support from
//!   `user` plus this (internal/cri/server/service.go, `supportsCRIUserns`).
//! - seccomp actions: those LXC 5 applies as asked; `SCMP_ACT_KILL_PROCESS` and `SCMP_ACT_LOG`
//!   are accepted but approximated (KILL, ALLOW), `TRACE` and `NOTIFY` are refused.
//! - seccomp architectures: LXC loads the native ABI and its compat ABIs itself.
//! - cgroup: v1 and v2 through LXC's cgroupfs layout; no systemd cgroup driver.

use serde_json::{json, Value};

/// OCI's capability names by number; the running kernel's `cap_last_cap` says how many of
/// them it has.
const CAPABILITIES: &[&str] = &ctinit_proto::CAPABILITY_NAMES;

/// The namespaces a spec may ask for (new or joined by path).
const NAMESPACES: &[&str] = &["cgroup", "ipc", "mount", "network", "pid", "user", "uts"];

const HOOKS: &[&str] = &[
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
];

/// lxc-config's seccomp translation maps these one to one onto LXC's actions.
const SECCOMP_ACTIONS: &[&str] = &[
    "SCMP_ACT_ALLOW",
    "SCMP_ACT_ERRNO",
    "SCMP_ACT_KILL",
    "SCMP_ACT_KILL_THREAD",
    "SCMP_ACT_TRAP",
];

const SECCOMP_OPERATORS: &[&str] = &[
    "SCMP_CMP_EQ",
    "SCMP_CMP_GE",
    "SCMP_CMP_GT",
    "SCMP_CMP_LE",
    "SCMP_CMP_LT",
    "SCMP_CMP_MASKED_EQ",
    "SCMP_CMP_NE",
];

/// The ABIs LXC's seccomp loads on this build's architecture.
fn seccomp_archs() -> &'static [&'static str] {
    if cfg!(target_arch = "x86_64") {
        &["SCMP_ARCH_X32", "SCMP_ARCH_X86", "SCMP_ARCH_X86_64"]
    } else if cfg!(target_arch = "aarch64") {
        &["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
    } else {
        &[]
    }
}

/// The capabilities the running kernel has (`/proc/sys/kernel/cap_last_cap`); all known ones
/// when that cannot be read.
fn capabilities(cap_last_cap: Option<usize>) -> Vec<&'static str> {
    let count = cap_last_cap
        .map(|last| (last + 1).min(CAPABILITIES.len()))
        .unwrap_or(CAPABILITIES.len());
    CAPABILITIES[..count].to_vec()
}

fn read_cap_last_cap() -> Option<usize> {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// AppArmor confines a container only where the host kernel has it enabled.
fn apparmor_enabled() -> bool {
    std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .is_ok_and(|v| v.trim().eq_ignore_ascii_case("y"))
}

fn selinux_enabled() -> bool {
    std::path::Path::new("/sys/fs/selinux/enforce").exists()
}

/// The features document; `driver` ("lxc" or "pve") is reported as an annotation.
pub fn document(driver: &str) -> Value {
    json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.2.0",
        "hooks": HOOKS,
        "mountOptions": lxc_config::supported_mount_options(
            crate::host::mounts::mount_attrs::kernel_support()
        ),
        "linux": {
            "namespaces": NAMESPACES,
            "capabilities": capabilities(read_cap_last_cap()),
            "cgroup": { "v1": true, "v2": true, "systemd": false, "systemdUser": false },
            "seccomp": {
                "enabled": true,
                "actions": SECCOMP_ACTIONS,
                "operators": SECCOMP_OPERATORS,
                "archs": seccomp_archs(),
            },
            "apparmor": { "enabled": apparmor_enabled() },
            "selinux": { "enabled": selinux_enabled() },
            "intelRdt": { "enabled": false },
            "mountExtensions": { "idmap": { "enabled": true } },
        },
        "annotations": { "io.containerd.proxmox-lxc.driver": driver },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_follow_the_kernel() {
        assert_eq!(capabilities(Some(40)).len(), 41);
        assert_eq!(capabilities(Some(37)).last(), Some(&"CAP_AUDIT_READ"));
        assert_eq!(capabilities(Some(99)).len(), 41);
        assert_eq!(capabilities(None).len(), 41);
    }

    #[test]
    fn user_namespaces_idmap_and_the_kernels_recursive_attributes_are_claimed() {
        let doc = document("lxc");
        let options: Vec<&str> = doc["mountOptions"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        assert!(options.contains(&"rbind") && options.contains(&"ro"));
        let support = crate::host::mounts::mount_attrs::kernel_support();
        assert_eq!(options.contains(&"rro"), support.available);
        assert_eq!(options.contains(&"rnosymfollow"), support.nosymfollow);
        assert_eq!(
            options,
            lxc_config::supported_mount_options(support),
            "sorted, as runc's"
        );
        let ns = doc["linux"]["namespaces"].as_array().unwrap();
        assert!(ns.iter().any(|n| n == "user"));
        assert_eq!(doc["linux"]["mountExtensions"]["idmap"]["enabled"], true);
        assert_eq!(
            doc["annotations"]["io.containerd.proxmox-lxc.driver"],
            "lxc"
        );
    }
}
