//! Security sections: LSM labels (`process.apparmorProfile`, `process.selinuxLabel`,
//! `linux.mountLabel`), the capability bounding set, `linux.seccomp`, `linux.personality`, and
//! the `linux` fields LXC cannot apply at all.

use std::path::Path;

use oci_spec::runtime::{Linux, LinuxPersonalityDomain, Process};

use crate::{process, seccomp, text, Ignored, InitSpec, Lines, PlanError};

/// AppArmor: LXC always starts the helper unconfined, and the helper asks for
/// `process.apparmorProfile` on its final `execve` (see `InitSpec::apparmor_profile`), as runc
/// applies it only at the workload's exec (libcontainer `apparmor.ApplyProfile`). Were LXC to
/// apply the profile (`lxc.apparmor.profile`), it would confine the helper's own setup (its
/// writes under /proc/self, setgroups), which a docker-default-like profile denies. The
/// explicit `unconfined` also keeps LXC's own default (`lxc-container-default-cgns`, what a
/// Proxmox CT runs under when its config names no profile) off a container whose spec names
/// none, as runc runs it unconfined. SELinux context as the spec says.
pub(crate) fn lsm(
    process: &Process,
    linux: &Linux,
    lines: &mut Lines,
    ignored: &mut Vec<Ignored>,
) -> Result<(), PlanError> {
    lines.push("lxc.apparmor.profile", "unconfined".into());
    if let Some(l) = process.selinux_label().as_ref().filter(|l| !l.is_empty()) {
        lines.push(
            "lxc.selinux.context",
            text::value("process.selinuxLabel", l)?,
        );
    }
    if linux.mount_label().as_ref().is_some_and(|l| !l.is_empty()) {
        ignored.push(Ignored::new(
            "linux.mountLabel",
            "LXC has no key for the SELinux label of mounts; Debian and Proxmox hosts run without SELinux",
        ));
    }
    Ok(())
}

/// `lxc.cap.keep`: the spec's bounding set plus what the helper needs. The helper runs as root
/// under this bounding set before it becomes the workload: it needs setuid/setgid to switch
/// user and setpcap to narrow the bounding set to the spec's own (and sys_resource for
/// rlimits/oom_score_adj).
pub(crate) fn capabilities(process: &Process, init: &InitSpec, lines: &mut Lines) {
    let Some(caps) = process.capabilities() else {
        return;
    };
    let mut keep: Vec<String> = process::cap_names(caps.bounding())
        .iter()
        .map(|c| c.trim_start_matches("CAP_").to_ascii_lowercase())
        .collect();
    let mut helper_needs = vec!["setuid", "setgid", "setpcap"];
    if !init.rlimits.is_empty() || init.oom_score_adj.is_some() {
        helper_needs.push("sys_resource");
    }
    for n in helper_needs {
        if !keep.iter().any(|k| k == n) {
            keep.push(n.to_string());
        }
    }
    keep.sort();
    lines.push("lxc.cap.keep", keep.join(" "));
}

/// `linux.seccomp` -> the LXC policy text (written by the caller to `path`) and the
/// `lxc.seccomp.profile` line naming it.
pub(crate) fn seccomp(
    linux: &Linux,
    path: &Path,
    lines: &mut Lines,
    ignored: &mut Vec<Ignored>,
) -> Result<Option<String>, PlanError> {
    let Some(s) = linux.seccomp() else {
        return Ok(None);
    };
    let profile = seccomp::profile(s, ignored)?;
    lines.push("lxc.seccomp.profile", path.to_string_lossy().into_owned());
    Ok(Some(profile))
}

/// `linux.personality`: LXC sets the execution domain (`lxc.arch`), not personality flags.
pub(crate) fn personality(linux: &Linux, lines: &mut Lines) -> Result<(), PlanError> {
    let Some(p) = linux.personality() else {
        return Ok(());
    };
    if p.flags().as_ref().is_some_and(|f| !f.is_empty()) {
        return Err(PlanError::unsupported(
            "linux.personality.flags",
            "LXC sets only the execution domain",
        ));
    }
    if p.domain() == LinuxPersonalityDomain::PerLinux32 {
        lines.push("lxc.arch", "linux32".into());
    }
    Ok(())
}

/// `linux` fields LXC has no key for.
pub(crate) fn reject_unsupported(linux: &Linux) -> Result<(), PlanError> {
    process::first_unsupported(&[
        (
            linux.intel_rdt().is_some(),
            "linux.intelRdt",
            "LXC has no resctrl support",
        ),
        (
            linux.memory_policy().is_some(),
            "linux.memoryPolicy",
            "LXC has no key for a NUMA memory policy",
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rendered(lines: &Lines) -> Vec<String> {
        lines.0.iter().map(|(k, v)| format!("{k} = {v}")).collect()
    }

    #[test]
    fn lsm_runs_the_helper_unconfined_and_ignores_mount_label() {
        // The spec's profile is the helper's to apply at execve, never LXC's.
        let p: Process = serde_json::from_value(
            json!({"args": ["x"], "cwd": "/", "user": {"uid": 0, "gid": 0},
            "apparmorProfile": "docker-default",
            "selinuxLabel": "system_u:system_r:container_t:s0"}),
        )
        .unwrap();
        assert_eq!(
            process::init_spec(&p, &mut Vec::new())
                .unwrap()
                .apparmor_profile
                .as_deref(),
            Some("docker-default")
        );
        let l: Linux = serde_json::from_value(json!({"mountLabel": "x"})).unwrap();
        let (mut lines, mut ignored) = (Lines::default(), Vec::new());
        lsm(&p, &l, &mut lines, &mut ignored).unwrap();
        assert_eq!(
            rendered(&lines),
            [
                "lxc.apparmor.profile = unconfined",
                "lxc.selinux.context = system_u:system_r:container_t:s0"
            ]
        );
        assert_eq!(ignored[0].field, "linux.mountLabel");
    }

    #[test]
    fn empty_apparmor_profile_means_none_and_control_characters_are_refused() {
        let spec = |profile: &str| {
            let p: Process = serde_json::from_value(
                json!({"args": ["x"], "cwd": "/", "user": {"uid": 0, "gid": 0},
                "apparmorProfile": profile}),
            )
            .unwrap();
            process::init_spec(&p, &mut Vec::new())
        };
        assert_eq!(spec("").unwrap().apparmor_profile, None);
        assert_eq!(spec("a\nb").unwrap_err().field(), "process.apparmorProfile");
    }

    #[test]
    fn cap_keep_adds_what_the_helper_needs() {
        let p: Process = serde_json::from_value(
            json!({"args": ["x"], "cwd": "/", "user": {"uid": 0, "gid": 0},
            "capabilities": {"bounding": ["CAP_NET_BIND_SERVICE", "CAP_SETUID"]},
            "oomScoreAdj": 5}),
        )
        .unwrap();
        let init = process::init_spec(&p, &mut Vec::new()).unwrap();
        let mut lines = Lines::default();
        capabilities(&p, &init, &mut lines);
        assert_eq!(
            rendered(&lines),
            ["lxc.cap.keep = net_bind_service setgid setpcap setuid sys_resource"]
        );
    }

    #[test]
    fn personality_sets_the_domain_only() {
        let l: Linux =
            serde_json::from_value(json!({"personality": {"domain": "LINUX32"}})).unwrap();
        let mut lines = Lines::default();
        personality(&l, &mut lines).unwrap();
        assert_eq!(rendered(&lines), ["lxc.arch = linux32"]);
        let l: Linux = serde_json::from_value(
            json!({"personality": {"domain": "LINUX", "flags": ["ADDR_NO_RANDOMIZE"]}}),
        )
        .unwrap();
        assert_eq!(
            personality(&l, &mut Lines::default()).unwrap_err().field(),
            "linux.personality.flags"
        );
    }
}
