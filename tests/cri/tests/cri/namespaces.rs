//! Namespaces: a pod sharing its process namespace, sysctls, and user namespaces (`hostUsers:
//! false`) with idmapped volumes.

use crate::harness::*;

/// shareProcessNamespace: containers see each other's processes and the sandbox as PID 1;
/// without it they see only their own.
pub fn case_share_process_namespace(env: &CriEnv) -> Result<()> {
    let mut c = env.cri()?;
    let mut shared = run_pod(env, "pidshared", |p| client::pod_ns(p).pid = ns::POD)?;
    let a = shared.run(&container_config(
        "a",
        &env.images.busybox,
        &["sh", "-c", "exec sleep 31337"],
    ))?;
    let b = shared.run(&sleeper("b", &env.images.busybox))?;
    env.block_on(c.wait_state(&a, state::RUNNING, Duration::from_secs(20)))?;
    env.block_on(c.wait_state(&b, state::RUNNING, Duration::from_secs(20)))?;
    let ps = env.block_on(c.sh(&b, "ps -o pid,args"))?;
    ensure!(
        ps.contains("sleep 31337"),
        "shared pid ns: b does not see a:\n{ps}"
    );
    let pid1 = env.block_on(c.sh(&b, "tr '\\0' ' ' < /proc/1/cmdline"))?;
    ensure!(
        pid1.contains("trap 'exit 0' TERM INT"),
        "shared pid ns: PID 1 is not the pause process: {pid1:?}"
    );
    // A container without a pid namespace of its own: when its init exits, the processes it
    // left are killed (runc's shim does the same), so nothing of it outlives it in the pod.
    let c2 = shared.run(&container_config(
        "c",
        &env.images.busybox,
        &[
            "sh",
            "-c",
            "sleep 31339 & trap 'exit 0' TERM; while :; do sleep 1; done",
        ],
    ))?;
    env.block_on(c.wait_state(&c2, state::RUNNING, Duration::from_secs(20)))?;
    let ps = env.block_on(c.sh(&a, "ps -o args"))?;
    ensure!(ps.contains("sleep 31339"), "c's child not visible:\n{ps}");
    env.block_on(c.stop_container(&c2, 10))?;
    let ps = env.block_on(c.sh(&a, "sleep 0.3; ps -o args"))?;
    ensure!(
        !ps.contains("sleep 31339"),
        "a child of stopped container c still runs in the pod:\n{ps}"
    );
    shared.finish()?;

    let mut own = run_pod(env, "pidown", |_| {})?;
    let a = own.run(&container_config(
        "a",
        &env.images.busybox,
        &["sh", "-c", "exec sleep 31338"],
    ))?;
    let b = own.run(&sleeper("b", &env.images.busybox))?;
    env.block_on(c.wait_state(&a, state::RUNNING, Duration::from_secs(20)))?;
    env.block_on(c.wait_state(&b, state::RUNNING, Duration::from_secs(20)))?;
    let ps = env.block_on(c.sh(&b, "ps -o pid,args"))?;
    ensure!(!ps.contains("sleep 31338"), "own pid ns: b sees a:\n{ps}");
    let pid1 = env.block_on(c.sh(&b, "tr '\\0' ' ' < /proc/1/cmdline"))?;
    ensure!(pid1.contains("while :"), "own pid ns: PID 1 is {pid1:?}");
    own.finish()
}

/// Pod sysctls (namespaced ones) are set in the pod, not on the node.
pub fn case_sysctls(env: &CriEnv) -> Result<()> {
    let mut c = env.cri()?;
    let host_before = read_trim(Path::new("/proc/sys/net/ipv4/ip_unprivileged_port_start"))?;
    let mut pod = run_pod(env, "sysctl", |p| {
        p.linux.get_or_insert_with(Default::default).sysctls = HashMap::from([
            (
                "net.ipv4.ip_unprivileged_port_start".to_string(),
                "80".to_string(),
            ),
            ("kernel.shm_rmid_forced".to_string(), "1".to_string()),
        ]);
    })?;
    let id = pod.run_sleeper(&mut c)?;
    let got = env.block_on(c.sh(
        &id,
        "cat /proc/sys/net/ipv4/ip_unprivileged_port_start /proc/sys/kernel/shm_rmid_forced",
    ))?;
    ensure!(
        got.split_whitespace().collect::<Vec<_>>() == ["80", "1"],
        "sysctls in the pod: {got:?}"
    );
    let host_after = read_trim(Path::new("/proc/sys/net/ipv4/ip_unprivileged_port_start"))?;
    ensure!(
        host_before == host_after,
        "node sysctl changed: {host_before} -> {host_after}"
    );
    pod.finish()
}

/// The pod user namespace's host range in `case_user_namespaces` (a multiple of 65536, as the
/// kubelet picks them).
pub const USERNS_HOST_ID: u32 = 31 * 65536;

/// What a `hostUsers: false` pod's container sees and leaves: its maps and ids, the owners of
/// its rootfs and volumes inside, and the host owners of the files it made in them.
pub fn userns_transcript(env: &CriEnv, handler: &str, idmapped_volumes: bool) -> Result<String> {
    use std::os::unix::fs::PermissionsExt;
    let tag = if handler == RUNC_HANDLER {
        "runc"
    } else {
        "shim"
    };
    // An emptyDir (the kubelet makes it 0777, root's) and a hostPath with files of root's and
    // of uid 1000's.
    let empty = env.scratch(&format!("userns-{tag}-empty"));
    let host = env.scratch(&format!("userns-{tag}-host"));
    for d in [&empty, &host] {
        let _ = std::fs::remove_dir_all(d);
        std::fs::create_dir_all(d)?;
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o777))?;
    }
    std::fs::write(host.join("root-file"), "r\n")?;
    std::fs::write(host.join("app-file"), "a\n")?;
    std::os::unix::fs::chown(host.join("app-file"), Some(1000), Some(1000))?;
    // Search permission for the container's root (an unprivileged host uid) on the way in.
    let mut dir = host.parent();
    while let Some(d) = dir {
        let mode = std::fs::metadata(d)?.permissions().mode();
        if mode & 0o001 == 0 {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(mode | 0o001))?;
        }
        dir = d.parent();
    }
    let range = |id: u32| {
        vec![v1::IdMapping {
            container_id: 0,
            host_id: id,
            length: 65536,
        }]
    };
    let userns = v1::UserNamespace {
        mode: ns::POD,
        uids: range(USERNS_HOST_ID),
        gids: range(USERNS_HOST_ID),
    };
    let mut c = env.cri()?;
    let mut pod = run_pod_on(env, handler, &format!("userns-{tag}"), |p| {
        client::pod_ns(p).userns_options = Some(userns.clone());
    })?;
    let script = "cat /proc/self/uid_map /proc/self/gid_map; id -u; id -g; \
                  stat -c 'rootfs %u:%g' /; stat -c 'etc %u:%g' /etc/passwd; \
                  stat -c 'empty %u:%g %a' /empty; \
                  stat -c 'host %u:%g' /host /host/root-file /host/app-file; \
                  touch /empty/made /host/made && echo made; echo end";
    let mut cfg = container_config("userns", &env.images.busybox, &["sh", "-c", script]);
    let maps = idmapped_volumes.then(|| (range(USERNS_HOST_ID), range(USERNS_HOST_ID)));
    cfg.mounts = [("/empty", &empty), ("/host", &host)]
        .into_iter()
        .map(|(at, dir)| v1::Mount {
            container_path: at.to_string(),
            host_path: dir.display().to_string(),
            // As the kubelet gives them for a hostUsers: false pod (KEP-127).
            uid_mappings: maps.clone().map(|m| m.0).unwrap_or_default(),
            gid_mappings: maps.clone().map(|m| m.1).unwrap_or_default(),
            ..Default::default()
        })
        .collect();
    let id = pod.run(&cfg)?;
    env.block_on(c.wait_state(&id, state::EXITED, Duration::from_secs(60)))?;
    let mut text = log_text(&pod.wait_log("userns", "end")?);
    let owner = |p: &Path| -> Result<String> {
        let m = std::fs::metadata(p)?;
        Ok(format!(
            "{}:{}",
            std::os::unix::fs::MetadataExt::uid(&m),
            std::os::unix::fs::MetadataExt::gid(&m)
        ))
    };
    text.push_str(&format!(
        "\non the host: empty/made {} host/made {}",
        owner(&empty.join("made"))?,
        owner(&host.join("made"))?
    ));
    // An exec (kubectl exec) in a second container of the pod: in the pod's user namespace,
    // as root there and as another user, with the container's oom_score_adj (the kubelet's
    // QoS score), which the exec's helper cannot write itself there while it is
    // non-dumpable: it is set on the host (issue 21).
    let mut exec_cfg = sleeper("userns-exec", &env.images.busybox);
    client::res(&mut exec_cfg).oom_score_adj = 123;
    let sleeper_id = pod.run(&exec_cfg)?;
    env.block_on(c.wait_state(&sleeper_id, state::RUNNING, Duration::from_secs(30)))?;
    let exec = env.block_on(c.sh(
        &sleeper_id,
        "cat /proc/self/uid_map; id -u; stat -c 'rootfs %u:%g' /; \
         echo \"oom_score_adj $(cat /proc/self/oom_score_adj)\"; \
         su -s /bin/sh nobody -c 'id -u' 2>&1 || true",
    ))?;
    text.push_str("\nexec:\n");
    text.push_str(exec.trim_end());
    let ids: Vec<String> = std::iter::once(pod.id.clone())
        .chain(pod.containers.iter().cloned())
        .collect();
    pod.finish()?;
    // The bind sources the shim staged for the container's root (`<state dir>.binds/N`) are
    // gone with the pod.
    let dirs: Vec<String> = ids
        .iter()
        .map(|id| {
            let state = shim::task::record::state_dir_for("k8s.io", id);
            format!(
                "{}/",
                shim::host::mounts::staged::binds_dir(&state).display()
            )
        })
        .collect();
    let staged: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")?
        .lines()
        .filter(|l| dirs.iter().any(|d| l.contains(d.as_str())))
        .map(str::to_string)
        .collect();
    ensure!(staged.is_empty(), "staged binds left mounted: {staged:?}");
    Ok(text)
}

/// A pod with `hostUsers: false` (CRI `userns_options`, mode POD) and a container with an
/// emptyDir and a hostPath volume, under runc and under this shim: the same maps, ids and
/// owners. containerd 2.x idmaps the rootfs (the overlay snapshotter's `uidmap=`/`gidmap=`
/// options) and passes the kubelet's volume mappings on as idmapped mounts; 1.7 chowns a copy of
/// the image (remapped snapshot) and refuses mapped volumes; 1.6 ignores the request. runc here
/// may predate idmapped mounts (1.2), which it then ignores: the volumes' expectations are
/// checked on their own and compared with runc only where `runc features` lists idmap.
pub fn case_user_namespaces(env: &CriEnv) -> Result<()> {
    let v = &env.version.name;
    let supports_userns = !v.starts_with("1.6");
    let idmapped_volumes = !v.starts_with("1.6") && !v.starts_with("1.7");
    // containerd 2.x gives a hostUsers: false container's task runc's options (the stdio
    // owner, internal/cri/server/container_start_linux.go `updateContainerIOOwner`), which
    // fails for any other options type: "can't unmarshal type runtimeoptions.v1.Options".
    // Such pods need the handler without options, as would any non-runc runtime.
    let handler = if idmapped_volumes {
        PLAIN_HANDLER
    } else {
        cri::env::HANDLER
    };
    let runc_idmaps = std::process::Command::new("runc")
        .arg("features")
        .output()
        .ok()
        .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
        .is_some_and(|f| f["linux"]["mountExtensions"]["idmap"]["enabled"] == true);
    let ours = userns_transcript(env, handler, idmapped_volumes)?;
    eprintln!("user_namespaces: containerd {v}, the shim's pod:\n{ours}");
    // containerd 2.x refuses any hostUsers: false container under a runc without idmapped
    // mounts (its /etc/hosts is one): no reference then, only the expectations below.
    let runc = if idmapped_volumes && !runc_idmaps {
        eprintln!(
            "user_namespaces: runc here predates idmapped mounts (1.2), which containerd {v} \
             needs for this pod: the shim is checked against the expectations alone"
        );
        None
    } else {
        Some(userns_transcript(env, "runc", idmapped_volumes)?)
    };
    let line = |text: &str, prefix: &str| -> String {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_default()
            .to_string()
    };
    let expect = |text: &str, prefix: &str, want: &str, who: &str| -> Result<()> {
        ensure!(
            line(text, prefix) == want,
            "{who}: expected {want:?}, got {:?} in:\n{text}",
            line(text, prefix)
        );
        Ok(())
    };
    let map = if supports_userns {
        format!("0 {USERNS_HOST_ID} 65536")
    } else {
        "0 0 4294967295".to_string()
    };
    let first_line = |text: &str| -> String {
        text.lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    for (who, text) in std::iter::once(("shim", &ours)).chain(runc.iter().map(|r| ("runc", r))) {
        ensure!(
            first_line(text) == map,
            "{who}: uid_map is not {map:?}:\n{text}"
        );
        expect(text, "rootfs ", "rootfs 0:0", who)?;
        expect(text, "etc ", "etc 0:0", who)?;
        ensure!(
            text.contains("\nmade"),
            "{who}: could not write the volumes:\n{text}"
        );
        let exec = text.split("\nexec:\n").nth(1).unwrap_or_default();
        ensure!(
            first_line(exec) == map && exec.contains("\n0\nrootfs 0:0\noom_score_adj 123\n65534"),
            "{who}: the exec is not in the pod's user namespace as root with the container's \
             oom_score_adj (then nobody):\n{text}"
        );
    }
    if idmapped_volumes {
        // Idmapped: the host's root owns them inside as the container's root, what the
        // container's root makes is root's on the host (runtime-spec, runc 1.2).
        expect(&ours, "empty ", "empty 0:0 777", "shim")?;
        ensure!(
            ours.contains("host 0:0\nhost 0:0\nhost 1000:1000"),
            "shim: hostPath owners inside:\n{ours}"
        );
        ensure!(
            ours.contains("\non the host: empty/made 0:0 host/made 0:0\n"),
            "shim: owners on the host:\n{ours}"
        );
    }
    // What the kubelet is told (it refuses hostUsers: false pods on a handler without
    // `user_namespaces`): containerd 2.1-2.3 introspect only runtime type
    // io.containerd.runc.v2 (internal/cri/server/service.go `introspectRuntimeFeatures`), so
    // this shim's handlers say false whatever its features document lists; runc's says what
    // runc's features give (`user` and `mountExtensions.idmap`).
    if idmapped_volumes {
        let status = env.block_on(env.cri()?.status())?;
        let userns_of = |name: &str| {
            status
                .runtime_handlers
                .iter()
                .find(|h| h.name == name)
                .and_then(|h| h.features.as_ref())
                .is_some_and(|f| f.user_namespaces)
        };
        eprintln!(
            "user_namespaces: CRI handler features: runc {}, {} {}, {PLAIN_HANDLER} {}",
            userns_of("runc"),
            cri::env::HANDLER,
            userns_of(cri::env::HANDLER),
            userns_of(PLAIN_HANDLER)
        );
        ensure!(
            userns_of("runc") == runc_idmaps,
            "runc's handler: user_namespaces is not {runc_idmaps}"
        );
        ensure!(
            !userns_of(cri::env::HANDLER) && !userns_of(PLAIN_HANDLER),
            "containerd {v} now introspects this runtime: update README's user namespace row"
        );
    }
    // Everything as runc, where runc can run it.
    if let Some(runc) = runc {
        ensure!(
            ours == runc,
            "differs from runc:\nshim:\n{ours}\nrunc:\n{runc}"
        );
    }
    Ok(())
}
