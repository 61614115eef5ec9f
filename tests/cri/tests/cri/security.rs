//! The security context: users, groups, capabilities, no-new-privileges, read-only root, a
//! privileged pod, the kubelet's masked and read-only paths, AppArmor confinement.

use crate::harness::*;

/// runAsUser/runAsGroup/supplemental groups, working dir, env, args, read-only root.
pub fn case_security_context(env: &CriEnv) -> Result<()> {
    let mut c = env.cri()?;
    let mut pod = run_pod(env, "secctx", |_| {})?;
    let mut cfg = container_config("user", &env.images.busybox, &["sh", "-c"]);
    cfg.args = vec![
        "echo uid=$(id -u) gid=$(id -g) groups=$(id -G); echo cwd=$(pwd); echo FOO=$FOO; \
         if touch /rootfs-write 2>/dev/null; then echo root=rw; else echo root=ro; fi; \
         grep CapEff /proc/self/status; echo end"
            .into(),
    ];
    cfg.working_dir = "/tmp".into();
    cfg.envs = vec![v1::KeyValue {
        key: "FOO".into(),
        value: "bar baz".into(),
    }];
    {
        let s = sec(&mut cfg);
        s.run_as_user = Some(v1::Int64Value { value: 1234 });
        s.run_as_group = Some(v1::Int64Value { value: 2345 });
        s.supplemental_groups = vec![3000, 3001];
        s.readonly_rootfs = true;
    }
    let id = pod.run(&cfg)?;
    let code = env.block_on(c.wait_state(&id, state::EXITED, Duration::from_secs(20)))?;
    let lines = pod.wait_log("user", "end")?;
    let text: Vec<&str> = lines.iter().map(|(_, l)| l.as_str()).collect();
    ensure!(code == 0, "exited {code}: {text:?}");
    let groups_line = text
        .iter()
        .find(|l| l.starts_with("uid="))
        .ok_or_else(|| anyhow!("no id line: {text:?}"))?;
    ensure!(
        groups_line.starts_with("uid=1234 gid=2345 groups=2345 "),
        "id: {groups_line}"
    );
    for g in ["3000", "3001"] {
        ensure!(
            groups_line
                .split_whitespace()
                .any(|w| w == g || w.ends_with(&format!("={g}"))),
            "supplemental group {g} missing: {groups_line}"
        );
    }
    for w in [
        "cwd=/tmp",
        "FOO=bar baz",
        "root=ro",
        "CapEff:\t0000000000000000",
    ] {
        ensure!(text.contains(&w), "missing {w:?}: {text:?}");
    }

    // Capabilities: drop and add on top of containerd's default set (root user).
    let mut cfg = container_config(
        "caps",
        &env.images.busybox,
        &[
            "sh",
            "-c",
            "grep -E '^Cap(Eff|Bnd)' /proc/self/status; echo end",
        ],
    );
    sec(&mut cfg).capabilities = Some(v1::Capability {
        add_capabilities: vec!["SYS_TIME".into()],
        drop_capabilities: vec!["CHOWN".into(), "NET_RAW".into()],
        ..Default::default()
    });
    let caps = pod.run(&cfg)?;
    env.block_on(c.wait_state(&caps, state::EXITED, Duration::from_secs(20)))?;
    let lines = pod.wait_log("caps", "end")?;
    let text = lines
        .iter()
        .map(|(_, l)| l.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    let want = (default_caps() & !(1 << CAP_CHOWN) & !(1 << CAP_NET_RAW)) | (1 << CAP_SYS_TIME);
    let eff = cap_mask(&text, "CapEff")?;
    let bnd = cap_mask(&text, "CapBnd")?;
    ensure!(eff == want, "CapEff {eff:#x}, want {want:#x}");
    ensure!(bnd == want, "CapBnd {bnd:#x}, want {want:#x}");

    // `seccompProfile: RuntimeDefault`: an ExecSync (kubectl exec) runs under the container's
    // filter, as under runc; the pve driver's lxc-attach left it out (issue 21).
    let mut cfg = container_config("seccomp", &env.images.busybox, &["sleep", "300"]);
    sec(&mut cfg).seccomp = Some(v1::SecurityProfile {
        profile_type: v1::security_profile::ProfileType::RuntimeDefault as i32,
        localhost_ref: String::new(),
    });
    let filtered = pod.run(&cfg)?;
    env.block_on(c.wait_state(&filtered, state::RUNNING, Duration::from_secs(20)))?;
    let probe = ["sh", "-c", "grep Seccomp: /proc/1/status /proc/self/status"];
    let (code, out, err) = env.block_on(c.exec_sync(&filtered, &probe, 10))?;
    ensure!(
        code == 0
            && out.contains("/proc/1/status:Seccomp:\t2")
            && out.contains("/proc/self/status:Seccomp:\t2"),
        "the exec must run under the container's filter: exit {code}, {out:?} {err:?}"
    );
    pod.finish()
}

/// A privileged container in a privileged pod (CNI daemons, device plugins): every capability
/// of the node, the node's devices, no masked /proc paths. (/sys is not checked: the pod's
/// network namespace already has a read-only sysfs from the sandbox, and sysfs is one
/// superblock per network namespace, under runc too.)
pub fn case_privileged(env: &CriEnv) -> Result<()> {
    let mut c = env.cri()?;
    let mut pod = run_pod(env, "priv", privileged_pod)?;
    let masked = masked_proc_file()?;
    let probe = format!(
        "grep CapEff /proc/self/status; \
         if [ -c /dev/loop-control ]; then echo dev=host; else echo dev=default; fi; \
         if [ -c {masked} ]; then echo proc=masked; else echo proc=open; fi; echo end"
    );
    let mut cfg = container_config("priv", &env.images.busybox, &["sh", "-c", &probe]);
    sec(&mut cfg).privileged = true;
    let id = pod.run(&cfg)?;
    env.block_on(c.wait_state(&id, state::EXITED, Duration::from_secs(20)))?;
    let text = log_text(&pod.wait_log("priv", "end")?);
    let host = std::fs::read_to_string("/proc/self/status")?;
    let host_bnd = cap_mask(&host, "CapBnd")?;
    let eff = cap_mask(&text, "CapEff")?;
    ensure!(
        eff == host_bnd,
        "privileged CapEff {eff:#x}, node bounding set {host_bnd:#x}"
    );
    if Path::new("/dev/loop-control").exists() {
        ensure!(
            text.contains("dev=host"),
            "privileged: no host devices: {text}"
        );
    }
    ensure!(
        text.contains("proc=open"),
        "privileged: {masked} masked: {text}"
    );
    pod.finish()
}

/// A path containerd masks (a /dev/null bind) for non-privileged containers.
pub fn masked_proc_file() -> Result<&'static str> {
    ["/proc/keys", "/proc/timer_list", "/proc/sched_debug"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .ok_or_else(|| anyhow!("none of the usual masked /proc files exists on this node"))
}

/// A non-privileged pod container gets the masked and read-only paths the kubelet asks for (the
/// spec's linux.maskedPaths / readonlyPaths): a masked /proc file reads as /dev/null,
/// /proc/sys is read-only, and it sees none of the node's devices.
pub fn case_masked_paths(env: &CriEnv) -> Result<()> {
    let mut c = env.cri()?;
    let mut pod = run_pod(env, "masked", |_| {})?;
    let masked = masked_proc_file()?;
    let probe = format!(
        "grep CapEff /proc/self/status; \
         if [ -c /dev/loop-control ]; then echo dev=host; else echo dev=default; fi; \
         if [ -c {masked} ]; then echo proc=masked; else echo proc=open; fi; \
         if grep ' /proc/sys ' /proc/self/mountinfo | grep -q ' ro,'; then echo procsys=ro; else echo procsys=rw; fi; \
         echo end"
    );
    let id = pod.run(&container_config(
        "plain",
        &env.images.busybox,
        &["sh", "-c", &probe],
    ))?;
    env.block_on(c.wait_state(&id, state::EXITED, Duration::from_secs(20)))?;
    let text = log_text(&pod.wait_log("plain", "end")?);
    let eff = cap_mask(&text, "CapEff")?;
    ensure!(eff == default_caps(), "CapEff {eff:#x}");
    ensure!(
        text.contains("dev=default"),
        "sees the node's devices: {text}"
    );
    ensure!(
        text.contains("proc=masked"),
        "{masked} is not masked: {text}"
    );
    ensure!(
        text.contains("procsys=ro"),
        "/proc/sys is not read-only: {text}"
    );
    pod.finish()
}

/// Whether the node's kernel has AppArmor on (a Proxmox VE node does; this build host does not).
pub fn apparmor_enabled() -> bool {
    std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .is_ok_and(|v| v.trim() == "Y")
}

/// Whether AppArmor profile `name` is loaded on the node.
pub fn apparmor_profile_loaded(name: &str) -> bool {
    std::fs::read_to_string("/sys/kernel/security/apparmor/profiles").is_ok_and(|text| {
        text.lines().any(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(" ("))
        })
    })
}

/// An AppArmor label as the kernel shows it (`PROFILE (MODE)`), with a profile in the
/// `unconfined` mode shown as `unconfined`: Debian ships `runc` as such a profile, which runc's
/// workloads inherit when no profile is asked for; it confines nothing, as plain `unconfined`.
pub fn confinement_label(text: &str) -> String {
    let t = text.trim();
    match t.strip_suffix(" (unconfined)") {
        Some(_) => "unconfined".to_string(),
        None => t.to_string(),
    }
}

/// The AppArmor confinement of host process `pid`, read from the host side
/// (`/proc/PID/attr/apparmor/current`, or `attr/current` on kernels without the former), or
/// what reading it said where AppArmor is off.
pub fn confinement_of(pid: i32) -> String {
    let specific = format!("/proc/{pid}/attr/apparmor/current");
    let generic = format!("/proc/{pid}/attr/current");
    match std::fs::read_to_string(&specific).or_else(|_| std::fs::read_to_string(&generic)) {
        Ok(text) => confinement_label(&text),
        Err(e) => format!("unreadable ({})", e.kind()),
    }
}

/// Pods' AppArmor confinement is runc's. With AppArmor on (a Proxmox VE node, the node twin)
/// containerd's CRI plugin asks for its default profile (`cri-containerd.apparmor.d`) for every
/// container that asks for none, nothing for `Unconfined` nor for a privileged container, and
/// the named profile for `Localhost`; runc applies it at the workload's execve and to every
/// exec. The same pod runs under the `runc` handler and under the shim, and the confinement of
/// the sandbox, each container's workload (read on the host) and an ExecSync in it (read
/// inside) must be the same: no container of the shim's may run unconfined where runc's would
/// not. Without AppArmor (this build host) both have none, and the case proves only that they
/// agree.
pub fn case_apparmor_confinement(env: &CriEnv) -> Result<()> {
    const LOCALHOST_PROFILE: &str = "lxc-container-default-cgns";
    let mut c = env.cri()?;
    // (name, profile, the profile in the older string field, privileged)
    let mut containers: Vec<(&str, Option<v1::SecurityProfile>, &str, bool)> = vec![
        ("default", None, "", false),
        (
            "unconfined",
            Some(v1::SecurityProfile {
                profile_type: v1::security_profile::ProfileType::Unconfined as i32,
                localhost_ref: String::new(),
            }),
            "unconfined",
            false,
        ),
        // containerd asks for no profile for a privileged container that names none.
        ("privileged", None, "", true),
    ];
    // A profile of the node's own, by name (LXC's, loaded on every node with LXC); containerd
    // refuses a Localhost profile where AppArmor is off, under runc too.
    let localhost = apparmor_enabled() && apparmor_profile_loaded(LOCALHOST_PROFILE);
    let localhost_deprecated = format!("localhost/{LOCALHOST_PROFILE}");
    if localhost {
        containers.push((
            "localhost",
            Some(v1::SecurityProfile {
                profile_type: v1::security_profile::ProfileType::Localhost as i32,
                localhost_ref: LOCALHOST_PROFILE.to_string(),
            }),
            &localhost_deprecated,
            false,
        ));
    }
    let mut seen: Vec<BTreeMap<String, String>> = Vec::new();
    for (label, handler) in [("runc", RUNC_HANDLER), ("lxc", cri::env::HANDLER)] {
        // A privileged pod, so that it may hold the privileged container; the others are not.
        let mut pod = run_pod_on(env, handler, &format!("aa-{label}"), privileged_pod)?;
        let mut got = BTreeMap::new();
        let status = env.block_on(c.pod_status(&pod.id))?;
        let sandbox = client::pod_pid(&status).ok_or_else(|| anyhow!("no sandbox pid"))?;
        got.insert("sandbox".to_string(), confinement_of(sandbox));
        for (name, profile, deprecated, privileged) in &containers {
            let mut cfg = sleeper(name, &env.images.busybox);
            {
                let s = sec(&mut cfg);
                s.privileged = *privileged;
                s.apparmor = profile.clone();
                // containerd 1.6 reads only the older string field (the kubelet sends both).
                #[allow(deprecated)]
                {
                    s.apparmor_profile = deprecated.to_string();
                }
            }
            let id = pod.run(&cfg)?;
            env.block_on(c.wait_state(&id, state::RUNNING, Duration::from_secs(20)))?;
            let pid = env.block_on(c.container_pid(&id))?;
            got.insert(format!("{name}: workload"), confinement_of(pid));
            let (code, out, err) =
                env.block_on(c.exec_sync(&id, &["cat", "/proc/self/attr/current"], 10))?;
            let exec = if code == 0 {
                confinement_label(&out)
            } else {
                format!("exit {code}: {}", err.trim())
            };
            got.insert(format!("{name}: exec"), exec);
        }
        pod.finish()?;
        seen.push(got);
    }
    let (runc, shim) = (&seen[0], &seen[1]);
    println!(
        "{}::apparmor_confinement (AppArmor {}):",
        test_prefix(env),
        if apparmor_enabled() { "on" } else { "off" }
    );
    for (what, r) in runc {
        println!("  {what:<22} runc: {r:<40} shim: {}", shim[what]);
    }
    if apparmor_enabled() {
        // The reference itself: containerd applied its default profile under runc.
        ensure!(
            runc["default: workload"] == "cri-containerd.apparmor.d (enforce)",
            "runc's container without a profile runs as {:?}, not under containerd's default \
             profile: the CRI plugin did not apply AppArmor",
            runc["default: workload"]
        );
    }
    let differ: Vec<String> = runc
        .iter()
        .filter(|(what, r)| shim.get(*what) != Some(r))
        .map(|(what, r)| format!("{what}: runc {r:?}, shim {:?}", shim.get(what)))
        .collect();
    ensure!(
        differ.is_empty(),
        "AppArmor confinement differs from runc's:\n{}",
        differ.join("\n")
    );
    Ok(())
}
