//! The pod and container lifecycle: create, start, logs, ExecSync, stats, updates, stop and
//! remove; streaming exec and exec with a terminal; the image config; one shim per pod;
//! restarts, crash loops, log reopening, fast exits, the example pod, and the smoke case.

use crate::harness::*;

/// The whole lifecycle the kubelet drives, with logs, ExecSync, stats, resource updates and
/// both ways a stop ends (graceful; killed after the timeout).
pub fn case_lifecycle(env: &CriEnv) -> Result<()> {
    let mut c = env.cri()?;
    let mut pod = run_pod(env, "lifecycle", |_| {})?;
    let status = env.block_on(c.pod_status(&pod.id))?;
    let s = status
        .status
        .clone()
        .ok_or_else(|| anyhow!("no pod status"))?;
    ensure!(s.state == 0, "pod state {} (want SANDBOX_READY)", s.state);
    let ip = s.network.map(|n| n.ip).unwrap_or_default();
    ensure!(
        ip.starts_with(&env.net.prefix),
        "pod IP {ip:?} not in {}",
        env.net.subnet
    );
    ensure!(
        pod.netns.is_some(),
        "no netns path in the pod's verbose status"
    );

    let graceful = pod.run(&container_config(
        "graceful",
        &env.images.busybox,
        &[
            "sh",
            "-c",
            "echo out-line; echo err-line >&2; trap 'echo got-TERM; exit 0' TERM; while :; do sleep 1; done",
        ],
    ))?;
    env.block_on(c.wait_state(&graceful, state::RUNNING, Duration::from_secs(20)))?;
    let st = env.block_on(c.container_status(&graceful))?;
    let cs = st.status.ok_or_else(|| anyhow!("no container status"))?;
    ensure!(cs.started_at > 0, "started_at not set: {cs:?}");
    ensure!(
        cs.log_path == pod.log_file("graceful").display().to_string(),
        "log path {} (want {})",
        cs.log_path,
        pod.log_file("graceful").display()
    );

    // Logs in CRI format, stdout and stderr apart.
    let lines = pod.wait_log("graceful", "err-line")?;
    ensure!(
        lines.contains(&("stdout".into(), "out-line".into())),
        "stdout line missing: {lines:?}"
    );
    ensure!(
        lines.contains(&("stderr".into(), "err-line".into())),
        "stderr line missing: {lines:?}"
    );

    // ExecSync: output split, exit code kept.
    let (code, out, err) = env.block_on(c.exec_sync(
        &graceful,
        &["sh", "-c", "echo exec-out; echo exec-err >&2; exit 3"],
        10,
    ))?;
    ensure!(
        (code, out.as_str(), err.as_str()) == (3, "exec-out\n", "exec-err\n"),
        "ExecSync gave ({code}, {out:?}, {err:?})"
    );

    // Stats with real numbers after some work in the container.
    env.block_on(c.sh(
        &graceful,
        "i=0; while [ $i -lt 30000 ]; do i=$((i+1)); done; echo done",
    ))?;
    let stats = env.block_on(c.stats(&graceful))?;
    let cpu = stats
        .cpu
        .as_ref()
        .and_then(|c| c.usage_core_nano_seconds.as_ref())
        .map(|v| v.value)
        .unwrap_or(0);
    let mem = stats
        .memory
        .as_ref()
        .and_then(|m| m.working_set_bytes.as_ref())
        .map(|v| v.value)
        .unwrap_or(0);
    ensure!(
        cpu > 10_000_000,
        "ContainerStats cpu usage {cpu} ns after a busy loop: {stats:?}"
    );
    ensure!(
        mem > 0,
        "ContainerStats memory working set {mem}: {stats:?}"
    );
    let listed = env.block_on(c.list_stats(&pod.id))?;
    let mine = listed
        .iter()
        .find(|s| s.attributes.as_ref().map(|a| a.id.as_str()) == Some(graceful.as_str()))
        .ok_or_else(|| anyhow!("ListContainerStats lacks {graceful}: {listed:?}"))?;
    ensure!(
        mine.cpu
            .as_ref()
            .and_then(|c| c.usage_core_nano_seconds.as_ref())
            .map(|v| v.value)
            .unwrap_or(0)
            >= cpu,
        "ListContainerStats cpu went backwards: {mine:?}"
    );

    // UpdateContainerResources reaches the container's cgroup.
    let pid = env.block_on(c.container_pid(&graceful))?;
    env.block_on(c.update_resources(
        &graceful,
        v1::LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: 30_000,
            cpu_shares: 256,
            memory_limit_in_bytes: 96 << 20,
            ..Default::default()
        },
    ))?;
    let limits = limits_of(pid)?;
    ensure!(
        limits.memory == (96u64 << 20).to_string() && limits.cpu_quota == "30000",
        "limits after update (want memory {}, cpu quota 30000): {limits:?}",
        96u64 << 20
    );
    if driver_of(env) == Driver::Pve {
        // The Proxmox GUI shows what is enforced: the CT config follows the update.
        let vmids = pve::cts_of(&graceful);
        let conf = pve::ct_config(*vmids.first().context("no CT")?).unwrap_or_default();
        for want in ["memory: 96", "cpulimit: 0.3"] {
            ensure!(
                conf.lines().any(|l| l == want),
                "CT config after UpdateContainerResources lacks {want:?}:\n{conf}"
            );
        }
    }

    // A container that ignores SIGTERM (PID 1 without a handler).
    let stubborn = pod.run(&container_config(
        "stubborn",
        &env.images.busybox,
        &["sh", "-c", "echo started; while :; do sleep 1; done"],
    ))?;
    pod.wait_log("stubborn", "started")?;
    let t = Instant::now();
    env.block_on(c.stop_container(&graceful, 20))?;
    let took = t.elapsed();
    let (st, code) = env.block_on(c.container_state(&graceful))?;
    ensure!(
        st == state::EXITED && code == 0,
        "graceful stop: state {st} code {code}"
    );
    ensure!(
        took < Duration::from_secs(10),
        "graceful stop took {took:?}"
    );
    pod.wait_log("graceful", "got-TERM")?;

    let t = Instant::now();
    env.block_on(c.stop_container(&stubborn, 2))?;
    let took = t.elapsed();
    let (st, code) = env.block_on(c.container_state(&stubborn))?;
    ensure!(st == state::EXITED, "stubborn: state {st}");
    ensure!(
        code == 137,
        "stubborn container exit code {code} (want 137, SIGKILL)"
    );
    ensure!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(15),
        "stop with timeout 2 s took {took:?}"
    );

    for id in [&graceful, &stubborn] {
        env.block_on(c.remove_container(id))?;
        ensure!(
            !container_exists(env, id),
            "LXC container (or CT) {id} still there after RemoveContainer"
        );
    }
    pod.finish()
}

/// Exec over the streaming server (WebSocket, v4.channel.k8s.io): output, exit code, stdin.
pub fn case_exec_streaming(env: &CriEnv) -> Result<()> {
    let mut c = env.cri()?;
    let mut pod = run_pod(env, "streaming", |_| {})?;
    let id = pod.run_sleeper(&mut c)?;
    let url = env.block_on(c.exec_url(v1::ExecRequest {
        stderr: true,
        ..sh_exec(&id, "echo streamed-out; echo streamed-err >&2; exit 5")
    }))?;
    let r = env.block_on(cri::stream::run(&url, None))?;
    ensure!(
        r.stdout == b"streamed-out\n" && r.stderr == b"streamed-err\n" && r.exit_code == 5,
        "streamed exec: stdout {:?} stderr {:?} exit {} status {}",
        String::from_utf8_lossy(&r.stdout),
        String::from_utf8_lossy(&r.stderr),
        r.exit_code,
        r.status
    );
    let url = env.block_on(c.exec_url(v1::ExecRequest {
        container_id: id.clone(),
        cmd: vec!["head".into(), "-n1".into()],
        stdin: true,
        stdout: true,
        ..Default::default()
    }))?;
    let r = env.block_on(cri::stream::run(&url, Some(b"ping-line\n")))?;
    ensure!(
        r.stdout == b"ping-line\n" && r.exit_code == 0,
        "streamed exec with stdin: stdout {:?} exit {} status {}",
        String::from_utf8_lossy(&r.stdout),
        r.exit_code,
        r.status
    );
    pod.finish()
}

/// PullImage from the registry; the image config (entrypoint, cmd, env, workdir, user) reaches
/// the workload, and the container config overrides it as the kubelet does.
pub fn case_image_config(env: &CriEnv) -> Result<()> {
    let mut c = env.cri()?;
    let image_ref = env.block_on(c.pull(&env.images.app))?;
    ensure!(
        image_ref.starts_with("sha256:"),
        "PullImage ref {image_ref:?}"
    );
    let img = env
        .block_on(c.image_status(&env.images.app))?
        .ok_or_else(|| anyhow!("ImageStatus: image not found after pull"))?;
    ensure!(
        img.username == "app" || img.uid.as_ref().map(|u| u.value) == Some(1000),
        "ImageStatus user: {img:?}"
    );
    let mut pod = run_pod(env, "imagecfg", |_| {})?;
    let plain = pod.run(&container_config("plain", &env.images.app, &[]))?;
    let code = env.block_on(c.wait_state(&plain, state::EXITED, Duration::from_secs(20)))?;
    ensure!(code == 0, "app image exited {code}");
    let lines = pod.wait_log("plain", "args=")?;
    let text: Vec<&str> = lines.iter().map(|(_, l)| l.as_str()).collect();
    let want = [
        format!("greeting={APP_GREETING}"),
        "uid=1000(app) gid=1000(app)".to_string(),
        "/home/app".to_string(),
        "args=app-arg".to_string(),
    ];
    for w in &want {
        ensure!(
            text.iter().any(|l| l.starts_with(w.as_str())),
            "app image output lacks {w:?}: {text:?}"
        );
    }
    let mut cfg = container_config("override", &env.images.app, &[]);
    cfg.args = vec!["first".into(), "second".into()];
    cfg.envs = vec![v1::KeyValue {
        key: "GREETING".into(),
        value: "overridden".into(),
    }];
    cfg.working_dir = "/tmp".into();
    let over = pod.run(&cfg)?;
    env.block_on(c.wait_state(&over, state::EXITED, Duration::from_secs(20)))?;
    let lines = pod.wait_log("override", "args=")?;
    let text: Vec<&str> = lines.iter().map(|(_, l)| l.as_str()).collect();
    for w in ["greeting=overridden", "/tmp", "args=first second"] {
        ensure!(
            text.iter().any(|l| l.starts_with(w)),
            "overridden app output lacks {w:?}: {text:?}"
        );
    }
    pod.finish()
}

/// One shim process serves the whole pod, whatever the number of containers; the LXC
/// containers live in the lxcpath the runtime options name.
pub fn case_one_shim_per_pod(env: &CriEnv) -> Result<()> {
    let mut c = env.cri()?;
    let mut pod = run_pod(env, "oneshim", |_| {})?;
    let mut ids = Vec::new();
    for n in ["one", "two", "three"] {
        let id = pod.run(&sleeper(n, &env.images.busybox))?;
        env.block_on(c.wait_state(&id, state::RUNNING, Duration::from_secs(20)))?;
        ids.push(id);
    }
    let shims = env.shim_processes();
    let pod_shims: Vec<_> = shims
        .iter()
        .filter(|p| p.cmdline.contains(&format!("-id {}", pod.id)))
        .collect();
    ensure!(
        pod_shims.len() == 1,
        "{} shim processes for the pod: {pod_shims:?}",
        pod_shims.len()
    );
    for id in &ids {
        ensure!(
            !shims
                .iter()
                .any(|p| p.cmdline.contains(&format!("-id {id}"))),
            "container {id} got a shim of its own"
        );
        ensure!(
            container_exists(env, id),
            "LXC container {id} not in the lxcpath from the runtime options ({}), or no CT with its tag",
            env.lxc_dir().display()
        );
        // The container's own mounts (proc, sys, dev, ...) stay in its mount namespace: the
        // node sees only the rootfs mount the shim made.
        let leaked: Vec<_> = e2e::host::mounts_containing(id)
            .into_iter()
            .filter(|m| !m.ends_with("rootfs"))
            .collect();
        ensure!(
            leaked.is_empty(),
            "mounts of container {id} visible on the node: {leaked:?}"
        );
        ensure!(
            !Path::new(e2e::SHIM_LXCPATH)
                .join("k8s.io")
                .join(id)
                .exists(),
            "LXC container {id} in the default lxcpath: runtime options were not honoured"
        );
    }
    // Every container's processes run under that one shim's supervision: the shim's pid is
    // what containerd reports for the pod's tasks.
    let shim_pid = pod_shims[0].pid;
    let resp = env.block_on(c.container_status(&ids[0]))?;
    let info: serde_json::Value = serde_json::from_str(
        resp.info
            .get("info")
            .ok_or_else(|| anyhow!("no verbose info"))?,
    )?;
    ensure!(info.get("pid").is_some(), "no pid in info: {info}");
    ensure!(shim_pid > 0, "shim pid");
    pod.finish()
}

/// Exec with a terminal over the streaming server (`kubectl exec -it`).
pub fn case_exec_tty(env: &CriEnv) -> Result<()> {
    let mut c = env.cri()?;
    let mut pod = run_pod(env, "exectty", |_| {})?;
    let id = pod.run_sleeper(&mut c)?;
    let url = env.block_on(c.exec_url(v1::ExecRequest {
        tty: true,
        stdin: true,
        ..sh_exec(&id, "tty; test -t 0 && test -t 1 && echo both-tty; exit 4")
    }))?;
    let r = env.block_on(cri::stream::run(&url, None))?;
    let out = String::from_utf8_lossy(&r.stdout);
    ensure!(
        out.contains("/dev/pts/") && out.contains("both-tty\r\n") && r.exit_code == 4,
        "tty exec: {out:?} exit {} status {}",
        r.exit_code,
        r.status
    );
    pod.finish()
}

/// The kubelet's restart of a crashed container: a new container of the same name with the
/// next attempt number in the same pod (and shim), its own log.
pub fn case_restart_attempt(env: &CriEnv) -> Result<()> {
    let mut c = env.cri()?;
    let mut pod = run_pod(env, "restart", |_| {})?;
    let mut first = container_config(
        "crash",
        &env.images.busybox,
        &["sh", "-c", "echo attempt-0; exit 1"],
    );
    first.log_path = "crash/0.log".into();
    std::fs::create_dir_all(pod.log_dir.join("crash"))?;
    let id0 = pod.run(&first)?;
    let code = env.block_on(c.wait_state(&id0, state::EXITED, Duration::from_secs(20)))?;
    ensure!(code == 1, "attempt 0 exited {code}");
    let mut second = container_config(
        "crash",
        &env.images.busybox,
        &["sh", "-c", "echo attempt-1; exit 0"],
    );
    second.log_path = "crash/1.log".into();
    if let Some(m) = second.metadata.as_mut() {
        m.attempt = 1;
    }
    let id1 = pod.run(&second)?;
    let code = env.block_on(c.wait_state(&id1, state::EXITED, Duration::from_secs(20)))?;
    ensure!(code == 0, "attempt 1 exited {code}");
    for (file, want) in [("crash/0.log", "attempt-0"), ("crash/1.log", "attempt-1")] {
        let text = std::fs::read_to_string(pod.log_dir.join(file))?;
        let lines = parse_cri_log(&text)?;
        ensure!(
            lines == vec![("stdout".to_string(), want.to_string())],
            "{file}: {lines:?}"
        );
    }
    let shims: Vec<_> = env
        .shim_processes()
        .into_iter()
        .filter(|p| p.cmdline.contains(&format!("-id {}", pod.id)))
        .collect();
    ensure!(
        shims.len() == 1,
        "shims for the pod after a restart: {shims:?}"
    );
    pod.finish()
}

/// A crash loop as the kubelet drives it: each attempt a new container in the same pod (and
/// shim), the previous one removed. With the pve driver every attempt is a new CT started with
/// `systemctl start pve-container@VMID` on a node, which systemd refuses after 5 starts of one
/// VMID within 10 s (the test node enforces that, and logs each refused start task; the driver
/// would retry such a start after 10 s): no start on the node may have been refused. (containerd
/// deletes an exited container's task, and with it the CT, so the VMIDs are gone by then.)
pub fn case_crash_loop(env: &CriEnv) -> Result<()> {
    const ATTEMPTS: u32 = 8;
    let mut c = env.cri()?;
    let mut pod = run_pod(env, "crashloop", |_| {})?;
    std::fs::create_dir_all(pod.log_dir.join("loop"))?;
    let mut previous: Option<String> = None;
    for attempt in 0..ATTEMPTS {
        let mut config = container_config(
            "loop",
            &env.images.busybox,
            &["sh", "-c", &format!("echo attempt-{attempt}; exit 1")],
        );
        config.log_path = format!("loop/{attempt}.log");
        if let Some(m) = config.metadata.as_mut() {
            m.attempt = attempt;
        }
        let id = pod.run(&config)?;
        let code = env.block_on(c.wait_state(&id, state::EXITED, Duration::from_secs(30)))?;
        ensure!(code == 1, "attempt {attempt} exited {code}");
        if let Some(old) = previous.replace(id) {
            env.block_on(c.remove_container(&old))?;
        }
    }
    for attempt in 0..ATTEMPTS {
        let file = format!("loop/{attempt}.log");
        let lines = parse_cri_log(&std::fs::read_to_string(pod.log_dir.join(&file))?)?;
        ensure!(
            lines == vec![("stdout".to_string(), format!("attempt-{attempt}"))],
            "{file}: {lines:?}"
        );
    }
    if driver_of(env) == Driver::Pve {
        let refused = pve::task_logs_with("attempted too often");
        ensure!(
            refused.is_empty(),
            "starts refused by systemd's start limit: {refused:?}"
        );
    }
    pod.finish()
}

/// Log rotation: the kubelet renames the log file and calls ReopenContainerLog; new output goes
/// to a new file.
pub fn case_log_reopen(env: &CriEnv) -> Result<()> {
    let mut c = env.cri()?;
    let mut pod = run_pod(env, "logreopen", |_| {})?;
    let id = pod.run(&container_config(
        "ticker",
        &env.images.busybox,
        &[
            "sh",
            "-c",
            "trap 'exit 0' TERM; i=0; while :; do echo tick-$i; i=$((i+1)); sleep 0.1; done",
        ],
    ))?;
    pod.wait_log("ticker", "tick-3")?;
    let log = pod.log_file("ticker");
    let rotated = log.with_extension("log.1");
    std::fs::rename(&log, &rotated)?;
    env.block_on(async {
        c.rt.reopen_container_log(v1::ReopenContainerLogRequest {
            container_id: id.clone(),
        })
        .await
    })
    .map_err(|e| anyhow!("ReopenContainerLog: {}", e.message()))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if parse_cri_log(&text)?.len() >= 3 {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "no output in the reopened log: {text:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let old_len = std::fs::metadata(&rotated)?.len();
    std::thread::sleep(Duration::from_millis(400));
    ensure!(
        std::fs::metadata(&rotated)?.len() == old_len,
        "the rotated log still grows"
    );
    env.block_on(c.stop_container(&id, 10))?;
    pod.finish()
}

/// examples/pod.yaml run the way the kubelet runs it (RuntimeClass handler -> runtime_handler,
/// the container's command, args, security context and limits mapped to CRI), with the image
/// taken from the local registry: the page it serves, its user and its cgroup limits.
pub fn case_example_pod(env: &CriEnv) -> Result<()> {
    let rc = cri::examples::load_runtime_class()?;
    ensure!(
        rc.handler == cri::env::HANDLER,
        "RuntimeClass handler {}",
        rc.handler
    );
    let example = cri::examples::load_pod()?;
    let mut c = env.cri()?;
    let mut pod = run_pod(env, &example.metadata.name, |_| {})?;
    let mut ids = Vec::new();
    for container in &example.spec.containers {
        let cfg = cri::examples::kubelet_container_config(container, &env.images.busybox)?;
        let id = pod.run(&cfg)?;
        env.block_on(c.wait_state(&id, state::RUNNING, Duration::from_secs(20)))?;
        ids.push((id, container));
    }
    let (id, container) = &ids[0];
    let port = container
        .ports
        .first()
        .map(|p| p.container_port)
        .unwrap_or(8080);
    let page = env.block_on(c.sh(
        id,
        &wget_retry(&format!("http://127.0.0.1:{port}/index.html")),
    ))?;
    ensure!(
        page.trim() == format!("hello from {}", example.metadata.name),
        "example pod served {page:?}"
    );
    // ExecSync runs with the container's user and (dropped) capabilities, bounding set too.
    let user = env.block_on(c.sh(id, "id -u; grep -E '^Cap(Eff|Prm|Bnd)' /proc/self/status"))?;
    ensure!(
        user.starts_with("1000\n")
            && user.contains("CapEff:\t0000000000000000")
            && user.contains("CapPrm:\t0000000000000000")
            && user.contains("CapBnd:\t0000000000000000"),
        "example pod exec user/caps: {user:?}"
    );
    let pid = env.block_on(c.container_pid(id))?;
    let limits = limits_of(pid)?;
    ensure!(
        limits.cpu_quota == "50000" && limits.memory == (64u64 << 20).to_string(),
        "example pod limits: {limits:?}"
    );
    pod.finish()
}

/// Containers that exit at once, one after another in one pod: each exit must reach containerd
/// (its Wait may arrive after the exit), as the kubelet's init containers and crash loops need.
pub fn case_fast_exits(env: &CriEnv) -> Result<()> {
    let mut c = env.cri()?;
    let mut pod = run_pod(env, "fastexit", |_| {})?;
    for i in 0..15u32 {
        let mut cfg =
            container_config("fast", &env.images.busybox, &["sh", "-c", "echo x; exit 3"]);
        cfg.log_path = format!("fast-{i}.log");
        if let Some(m) = cfg.metadata.as_mut() {
            m.attempt = i;
        }
        let id = pod.run(&cfg)?;
        let code = env
            .block_on(c.wait_state(&id, state::EXITED, Duration::from_secs(10)))
            .map_err(|e| anyhow!("container {i}: {e}"))?;
        ensure!(code == 3, "container {i} exited {code}");
    }
    pod.finish()
}

/// A short smoke of the whole path, for the other containerd versions.
pub fn case_smoke(env: &CriEnv) -> Result<()> {
    let mut c = env.cri()?;
    let mut pod = run_pod(env, "smoke", |_| {})?;
    let id = pod.run(&container_config(
        "main",
        &env.images.busybox,
        &[
            "sh",
            "-c",
            "echo smoke-out; trap 'exit 0' TERM; while :; do sleep 1; done",
        ],
    ))?;
    env.block_on(c.wait_state(&id, state::RUNNING, Duration::from_secs(20)))?;
    pod.wait_log("main", "smoke-out")?;
    ensure!(
        container_exists(env, &id),
        "LXC container not in the lxcpath given in the runtime options ({}), or no CT with its tag",
        env.lxc_dir().display()
    );
    let ip = env
        .block_on(c.pod_status(&pod.id))?
        .status
        .and_then(|s| s.network)
        .map(|n| n.ip)
        .unwrap_or_default();
    let addrs = env.block_on(c.sh(&id, "ip -4 -o addr show dev eth0"))?;
    ensure!(
        addrs.contains(&format!("inet {ip}/")),
        "eth0 {addrs:?}, CRI says {ip}"
    );
    let (code, out, _) = env.block_on(c.exec_sync(&id, &["sh", "-c", "echo hi; exit 7"], 10))?;
    ensure!(code == 7 && out == "hi\n", "ExecSync: {code} {out:?}");
    let stats = env.block_on(c.stats(&id))?;
    ensure!(
        stats
            .memory
            .and_then(|m| m.working_set_bytes)
            .map(|v| v.value)
            .unwrap_or(0)
            > 0,
        "no memory stats"
    );
    env.block_on(c.stop_container(&id, 10))?;
    let (st, code) = env.block_on(c.container_state(&id))?;
    ensure!(
        st == state::EXITED && code == 0,
        "stop: state {st} code {code}"
    );
    env.block_on(c.remove_container(&id))?;
    pod.finish()
}

// The harness
