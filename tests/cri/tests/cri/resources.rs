//! Resources: CPU and memory limits and their updates against runc's, the pids limit, an OOM
//! kill reported as OOMKilled.

use crate::harness::*;

/// CPU quota/shares and memory limit land in the container's cgroup (v1 on this build host, v2
/// on a node), under the pod's cgroup parent, with the values runc's container gets from the
/// same container config (the same pod under the `runc` handler).
pub fn case_resources(env: &CriEnv) -> Result<()> {
    let mut c = env.cri()?;
    let mut cfg = sleeper("limited", &env.images.busybox);
    {
        let r = res(&mut cfg);
        r.cpu_period = 100_000;
        r.cpu_quota = 50_000;
        r.cpu_shares = 512;
        r.memory_limit_in_bytes = 64 << 20;
    }
    let mut reference = run_pod_on(env, RUNC_HANDLER, "res-runc", |_| {})?;
    let rid = reference.run(&cfg)?;
    env.block_on(c.wait_state(&rid, state::RUNNING, Duration::from_secs(20)))?;
    let runc_limits = limits_of(env.block_on(c.container_pid(&rid))?)?;
    reference.finish()?;

    let mut pod = run_pod(env, "res", |_| {})?;
    let parent = pod
        .config
        .linux
        .as_ref()
        .map(|l| l.cgroup_parent.clone())
        .unwrap_or_default();
    let id = pod.run(&cfg)?;
    env.block_on(c.wait_state(&id, state::RUNNING, Duration::from_secs(20)))?;
    let pid = env.block_on(c.container_pid(&id))?;
    let mem = cgroup_dir(pid, "memory")?;
    match driver_of(env) {
        Driver::Lxc => ensure!(
            mem.to_string_lossy()
                .contains(parent.trim_start_matches('/')),
            "container cgroup {} is not under the pod's cgroup parent {parent}",
            mem.display()
        ),
        // A CT lives in the cgroup Proxmox gives it (limits on `lxc/VMID`, processes in
        // `lxc/VMID/ns`), not under the kubelet's pod cgroup (docs/pve-driver.md).
        Driver::Pve => {
            let vmids = pve::cts_of(&id);
            ensure!(vmids.len() == 1, "CTs of {id}: {vmids:?}");
            let path = mem.to_string_lossy().into_owned();
            ensure!(
                path.ends_with(&format!("/lxc/{}", vmids[0])),
                "container cgroup {path} is not CT {}'s",
                vmids[0]
            );
            // Said on every run rather than passed over: the pod-level cgroup (the kubelet's
            // accounting and limits of the pod as a whole) does not hold pve CTs.
            println!(
                "NOTE {}::resources: the container's cgroup is its CT's ({path}), \
                 not under the pod's cgroup parent {parent}: the pve driver keeps Proxmox's \
                 layout and does not apply linux.cgroupsPath (docs/pve-driver.md)",
                test_prefix(env)
            );
        }
    }
    let limits = limits_of(pid)?;
    println!(
        "{}::resources: cgroup v{}: runc's {runc_limits:?}, the shim's {limits:?}",
        test_prefix(env),
        if cgroup_v2_only() { 2 } else { 1 }
    );
    let want = Limits {
        memory: (64u64 << 20).to_string(),
        cpu_quota: "50000".into(),
        cpu_period: "100000".into(),
        // v1 keeps the shares; v2's weight is the runtime's conversion (runc's is the model).
        cpu_weight: if cgroup_v2_only() {
            runc_limits.cpu_weight.clone()
        } else {
            "512".into()
        },
    };
    ensure!(
        runc_limits == want,
        "runc's container (the reference) has {runc_limits:?}, want {want:?}"
    );
    ensure!(
        limits == runc_limits,
        "the shim's container has {limits:?}, runc's {runc_limits:?}"
    );
    pod.finish()
}

/// cgroup v2: a container's pids limit through CRI's `unified` resources (`pids.max`; the
/// kubelet's pod-level pids limit is on its own pod cgroup, not the runtime's), under runc and
/// under the shim: the same `pids.max` where the container's limits are, and forks beyond it
/// refused inside the container. On cgroup v1 there is no `unified`: reported ignored
/// (main.rs, `case_unavailable`).
pub fn case_pids_limit(env: &CriEnv) -> Result<()> {
    const LIMIT: usize = 16;
    let mut c = env.cri()?;
    let mut cfg = sleeper("pids", &env.images.busybox);
    res(&mut cfg)
        .unified
        .insert("pids.max".into(), LIMIT.to_string());
    let view = |c: &mut Cri, id: &str| -> Result<(String, bool, bool)> {
        env.block_on(c.wait_state(id, state::RUNNING, Duration::from_secs(20)))?;
        let pid = env.block_on(c.container_pid(id))?;
        let max = read_trim(&cgroup_dir(pid, "pids")?.join("pids.max"))?;
        let (_, _, err) = env.block_on(c.exec_sync(
            id,
            &["sh", "-c", "for i in $(seq 40); do sleep 30 & done"],
            30,
        ))?;
        // Read on the host: inside, at the limit, even `ls` could not fork.
        let current: usize = read_trim(&cgroup_dir(pid, "pids")?.join("pids.current"))?
            .parse()
            .unwrap_or(usize::MAX);
        Ok((max, err.contains("fork"), current <= LIMIT))
    };
    let mut reference = run_pod_on(env, RUNC_HANDLER, "pids-runc", |_| {})?;
    let rid = reference.run(&cfg)?;
    let runc = view(&mut c, &rid)?;
    reference.finish()?;
    let mut pod = run_pod(env, "pids", |_| {})?;
    let id = pod.run(&cfg)?;
    let ours = view(&mut c, &id)?;
    println!(
        "{}::pids_limit: (pids.max, a fork refused, pids.current within the limit): runc's \
         {runc:?}, the shim's {ours:?}",
        test_prefix(env)
    );
    let want = (LIMIT.to_string(), true, true);
    ensure!(
        runc == want,
        "runc's container (the reference): {runc:?}, want {want:?}"
    );
    ensure!(
        ours == runc,
        "the shim's container: {ours:?}, runc's {runc:?}"
    );
    pod.finish()
}

/// A container that exceeds its memory limit is OOM-killed: exit 137, reason OOMKilled (the
/// kubelet's restart and event logic keys on it).
pub fn case_oom_killed(env: &CriEnv) -> Result<()> {
    let mut c = env.cri()?;
    let mut pod = run_pod(env, "oom", |_| {})?;
    let mut cfg = container_config(
        "hog",
        &env.images.busybox,
        &["sh", "-c", "echo start; tail /dev/zero"],
    );
    {
        let r = res(&mut cfg);
        r.memory_limit_in_bytes = 24 << 20;
        r.memory_swap_limit_in_bytes = 24 << 20;
    }
    let id = pod.run(&cfg)?;
    let code = env.block_on(c.wait_state(&id, state::EXITED, Duration::from_secs(60)))?;
    let st = env
        .block_on(c.container_status(&id))?
        .status
        .ok_or_else(|| anyhow!("no status"))?;
    ensure!(
        code == 137 && st.reason == "OOMKilled",
        "memory hog ended with {code}, reason {:?}",
        st.reason
    );
    pod.finish()
}
