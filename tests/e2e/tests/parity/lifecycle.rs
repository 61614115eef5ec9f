//! The task's life: signals from outside, `ps`, pause and resume, the log URI, a killed shim,
//! bad input, and a detached task surviving a containerd restart.

use crate::harness::*;

pub fn kill_trapped(ctx: &Ctx) -> Result<Transcript> {
    let script = "trap 'echo got-USR1' USR1; trap 'echo got-TERM; exit 7' TERM; echo ready; while :; do sleep 1 & wait $!; done";
    let mut bg = Background::spawn(
        &mut ctx.run_cmd(&[], BUSYBOX_IMAGE, &["sh", "-c", script]),
        None,
    )?;
    bg.wait_for_stdout("ready", RUN_TIMEOUT)?;
    ctx.cd
        .ctr_ok(&["task", "kill", "--signal", "SIGUSR1", &ctx.id])?;
    bg.wait_for_stdout("got-USR1", Duration::from_secs(10))?;
    ctx.cd
        .ctr_ok(&["task", "kill", "--signal", "SIGTERM", &ctx.id])?;
    let out = bg.wait(RUN_TIMEOUT)?;
    let mut t = Transcript::default();
    t.add_output("", &out);
    expect_output(&out, 7, "ready\ngot-USR1\ngot-TERM\n", "")?;
    Ok(t)
}

pub fn kill_term_ignored(ctx: &Ctx) -> Result<Transcript> {
    // PID 1 without a handler: the kernel ignores SIGTERM from outside, not SIGKILL.
    let mut bg = Background::spawn(
        &mut ctx.run_cmd(
            &[],
            BUSYBOX_IMAGE,
            &["sh", "-c", "echo ready; while :; do sleep 1; done"],
        ),
        None,
    )?;
    bg.wait_for_stdout("ready", RUN_TIMEOUT)?;
    ctx.cd.ctr_ok(&["task", "kill", &ctx.id])?;
    std::thread::sleep(Duration::from_millis(1500));
    let mut t = Transcript::default();
    let status = ctx.cd.task_status(&ctx.id)?.unwrap_or_default();
    t.add("after SIGTERM", status.clone());
    expect_eq("task status after SIGTERM", status, "RUNNING")?;
    ctx.cd
        .ctr_ok(&["task", "kill", "--signal", "SIGKILL", &ctx.id])?;
    let out = bg.wait(RUN_TIMEOUT)?;
    t.add_output("", &out);
    expect_output(&out, 137, "ready\n", "")?;
    Ok(t)
}

pub fn task_ps(ctx: &Ctx) -> Result<Transcript> {
    ctx.run_detached(
        &["--null-io"],
        "sleep 1000 & sleep 1001 & touch /tmp/ready; wait",
    )?;
    let id = ctx.id.as_str();
    ctx.cd.ctr_ok(&[
        "task",
        "exec",
        "--exec-id",
        "w",
        id,
        "sh",
        "-c",
        "while [ ! -e /tmp/ready ]; do sleep 0.05; done",
    ])?;
    let pid = ctx.cd.task_pid(id)?.context("task pid")?;
    let out = ctx.cd.ctr_ok(&["task", "ps", id])?.stdout_str();
    let pids: Vec<i32> = out
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    let mut t = Transcript::default();
    t.add("process count", pids.len().to_string());
    ensure!(
        pids.len() == 3,
        "ctr task ps should list sh and two sleeps:\n{out}"
    );
    ensure!(
        pids.contains(&pid),
        "ctr task ps lacks the init pid {pid}:\n{out}"
    );
    for p in &pids {
        ensure!(
            host::pid_alive(*p),
            "ps listed {p}, which is not a live host pid"
        );
    }
    ctx.cd
        .ctr_ok(&["task", "kill", "--all", "--signal", "SIGKILL", id])?;
    ctx.cd
        .wait_task_status(id, "STOPPED", Duration::from_secs(20))?;
    Ok(t)
}

pub fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

pub fn pause_resume(ctx: &Ctx) -> Result<Transcript> {
    let dir = bind_dir(ctx)?;
    let mount = format!("type=bind,src={},dst=/host,options=rbind:rw", dir.display());
    ctx.run_detached(
        &["--null-io", "--mount", &mount],
        "while :; do echo tick >> /host/ticks; sleep 0.05; done",
    )?;
    let ticks = dir.join("ticks");
    let id = ctx.id.as_str();
    let deadline = Instant::now() + Duration::from_secs(10);
    while file_len(&ticks) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut t = Transcript::default();
    ctx.cd.ctr_ok(&["task", "pause", id])?;
    let status = ctx.cd.task_status(id)?.unwrap_or_default();
    t.add("after pause", status.clone());
    expect_eq("status after pause", status, "PAUSED")?;
    let before = file_len(&ticks);
    std::thread::sleep(Duration::from_millis(500));
    let after = file_len(&ticks);
    t.add("frozen", (before == after).to_string());
    ensure!(
        before == after,
        "the workload kept running while paused ({before} -> {after} bytes)"
    );
    ctx.cd.ctr_ok(&["task", "resume", id])?;
    let status = ctx.cd.task_status(id)?.unwrap_or_default();
    t.add("after resume", status.clone());
    expect_eq("status after resume", status, "RUNNING")?;
    std::thread::sleep(Duration::from_millis(500));
    let resumed = file_len(&ticks);
    t.add("runs again", (resumed > after).to_string());
    ensure!(
        resumed > after,
        "the workload did not run again after resume"
    );
    ctx.kill_task(id)?;
    Ok(t)
}

pub fn log_uri_file(ctx: &Ctx) -> Result<Transcript> {
    std::fs::create_dir_all(&ctx.scratch)?;
    let log = ctx.scratch.join("task.log");
    let uri = format!("file://{}", log.display());
    let runtime = ctx.runtime_flag();
    ctx.cd.ctr_ok(&[
        "run",
        "-d",
        &runtime,
        "--log-uri",
        &uri,
        BUSYBOX_IMAGE,
        &ctx.id,
        "sh",
        "-c",
        "echo to-stdout; echo to-stderr >&2; sleep 0.5; exit 2",
    ])?;
    ctx.cd
        .wait_task_status(&ctx.id, "STOPPED", Duration::from_secs(30))?;
    // runc's shim can publish the exit before the last line is copied (seen with 1.6 and
    // 1.7; the workload lingers 0.5 s so the copy wins): wait a
    // little for both lines.
    let read = || {
        let mut lines: Vec<String> = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect();
        lines.sort();
        lines
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut lines = read();
    while lines.len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        lines = read();
    }
    let mut t = Transcript::default();
    t.add("log lines", lines.join("|"));
    expect_eq(
        "log file lines (sorted)",
        lines.join("|"),
        "to-stderr|to-stdout",
    )?;
    Ok(t)
}

pub fn find_shim(cd: &Containerd, id: &str) -> Option<host::Proc> {
    cd.shim_processes().into_iter().find(|p| {
        p.cmdline
            .split_whitespace()
            .collect::<Vec<_>>()
            .windows(2)
            .any(|w| w[0] == "-id" && w[1] == id)
    })
}

pub fn shim_killed(ctx: &Ctx) -> Result<Transcript> {
    ctx.run_detached(&["--null-io"], "exec sleep 1000")?;
    let id = ctx.id.as_str();
    let task_pid = ctx.cd.task_pid(id)?.context("task pid")?;
    let shim = find_shim(ctx.cd, id).with_context(|| format!("no shim process with -id {id}"))?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(shim.pid),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while host::pid_alive(shim.pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut t = Transcript::default();
    let rm = ctx.cd.ctr(&["task", "delete", "--force", id])?;
    t.add("task rm status", rm.status.to_string());
    let crm = ctx.cd.ctr(&["container", "delete", id])?;
    t.add("container rm status", crm.status.to_string());
    ensure!(
        crm.status.0 == 0,
        "ctr container rm failed: {}",
        crm.stderr_str()
    );
    assert_nothing_left(ctx.cd, id)?;
    ensure!(
        !host::pid_alive(task_pid),
        "the workload (pid {task_pid}) outlived its deleted task"
    );
    Ok(t)
}

pub fn bad_input(ctx: &Ctx) -> Result<Transcript> {
    // linux.intelRdt (ctr --rdt-class): LXC has no such key. runc on this host accepts it
    // (no resctrl mounted); the shim must refuse it, naming the field, and leave nothing.
    let (t, out) = simple(ctx, &["--rdt-class", "e2e-class"], "echo ran", None)?;
    if ctx.is_shim() {
        ensure!(
            out.status.0 != 0,
            "the shim ran a spec with linux.intelRdt: {}",
            shown(&out)
        );
        ensure!(
            out.stderr_str().to_lowercase().contains("intelrdt"),
            "the error does not name the field (intelRdt): {}",
            out.stderr_str()
        );
    } else {
        expect_output(&out, 0, "ran\n", "")?;
    }
    ctx.cd.force_remove(&ctx.id);
    assert_nothing_left(ctx.cd, &ctx.id)?;
    Ok(t)
}

pub fn survives_restart(ctx: &Ctx) -> Result<Transcript> {
    let dir = bind_dir(ctx)?;
    let mount = format!("type=bind,src={},dst=/host,options=rbind:rw", dir.display());
    let log = ctx.scratch.join("task.log");
    let uri = format!("file://{}", log.display());
    let runtime = ctx.runtime_flag();
    let id = ctx.id.as_str();
    ctx.cd.ctr_ok(&[
        "run", "-d", &runtime, "--log-uri", &uri, "--mount", &mount, BUSYBOX_IMAGE, id, "sh", "-c",
        "trap 'echo got-TERM; exit 3' TERM; while :; do echo tick; echo tick >> /host/ticks; sleep 0.1 & wait $!; done",
    ])?;
    ctx.cd
        .wait_task_status(id, "RUNNING", Duration::from_secs(30))?;
    let pid_before = ctx.cd.task_pid(id)?;
    ctx.cd.restart()?;
    let mut t = Transcript::default();
    let status = ctx.cd.task_status(id)?.unwrap_or_default();
    t.add("after restart", status.clone());
    expect_eq("status after containerd restart", status, "RUNNING")?;
    expect_eq(
        "pid after restart",
        format!("{:?}", ctx.cd.task_pid(id)?),
        format!("{pid_before:?}"),
    )?;
    let ticks = dir.join("ticks");
    let (a, la) = (file_len(&ticks), file_len(&log));
    std::thread::sleep(Duration::from_millis(600));
    let (b, lb) = (file_len(&ticks), file_len(&log));
    t.add("still running", (b > a).to_string());
    t.add("still logging", (lb > la).to_string());
    ensure!(b > a, "the workload stopped working after the restart");
    ensure!(
        lb > la,
        "the workload's stdout stopped reaching the log after the restart"
    );
    let out = ctx.cd.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "after",
        id,
        "echo",
        "exec-after-restart",
    ])?;
    t.add_output("exec ", &out);
    expect_output(&out, 0, "exec-after-restart\n", "")?;
    ctx.cd
        .ctr_ok(&["task", "kill", "--signal", "SIGTERM", id])?;
    ctx.cd
        .wait_task_status(id, "STOPPED", Duration::from_secs(20))?;
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    t.add(
        "log ends with",
        log_text.lines().last().unwrap_or("").to_string(),
    );
    expect_eq(
        "last log line",
        log_text.lines().last().unwrap_or(""),
        "got-TERM",
    )?;
    ctx.cd.ctr_ok(&["task", "delete", id])?;
    ctx.cd.ctr_ok(&["container", "delete", id])?;
    Ok(t)
}

// Running a case
