//! The workload's process: exit status, output, argv, signals from inside, environment, working
//! directory, the image config, stdin, a terminal, umask and rlimits, the filesystem it sees,
//! the execution domain (`linux.personality`) of the init and an exec.

use crate::harness::*;

pub fn exit_status_0(ctx: &Ctx) -> Result<Transcript> {
    let (t, out) = simple(ctx, &[], "echo hello", None)?;
    expect_output(&out, 0, "hello\n", "")?;
    Ok(t)
}

pub fn exit_status_3_split(ctx: &Ctx) -> Result<Transcript> {
    let script = "echo out1; echo err1 >&2; echo out2; echo err2 >&2; exit 3";
    let (t, out) = simple(ctx, &[], script, None)?;
    expect_output(&out, 3, "out1\nout2\n", "err1\nerr2\n")?;
    Ok(t)
}

pub fn exit_status_255(ctx: &Ctx) -> Result<Transcript> {
    let (t, out) = simple(ctx, &[], "echo bye; exit 255", None)?;
    expect_output(&out, 255, "bye\n", "")?;
    Ok(t)
}

pub fn large_output(ctx: &Ctx) -> Result<Transcript> {
    // The workload lingers 0.3 s: runc's shim (1.7) can publish the exit before the copy of
    // the last output ends, which would make the reference flaky.
    let script = "head -c 1048576 /dev/zero | tr '\\0' x; head -c 65536 /dev/zero | tr '\\0' y >&2; sleep 0.3";
    let out = ctx.run_sh(&[], script, None)?;
    let mut t = Transcript::default();
    t.add("status", out.status.to_string());
    t.add("stdout_len", out.stdout.len().to_string());
    t.add("stderr_len", out.stderr.len().to_string());
    expect_status(&out, 0)?;
    ensure!(
        out.stdout.len() == 1 << 20 && out.stdout.iter().all(|b| *b == b'x'),
        "stdout: {} bytes, not 1 MiB of x",
        out.stdout.len()
    );
    ensure!(
        out.stderr.len() == 1 << 16 && out.stderr.iter().all(|b| *b == b'y'),
        "stderr: {} bytes, not 64 KiB of y",
        out.stderr.len()
    );
    Ok(t)
}

pub fn pid1_and_argv(ctx: &Ctx) -> Result<Transcript> {
    let script = "echo \"pid=$$ ppid=$PPID\"; tr '\\0' '|' < /proc/1/cmdline; echo; echo \"$0\"";
    let (t, out) = simple(ctx, &[], script, None)?;
    expect_output(&out, 0, &format!("pid=1 ppid=0\nsh|-c|{script}|\nsh\n"), "")?;
    Ok(t)
}

pub fn kill_self_as_pid1(ctx: &Ctx) -> Result<Transcript> {
    // The kernel drops SIGKILL that a pid namespace's init sends itself: runc's behaviour.
    let (t, out) = simple(ctx, &[], "kill -9 $$; echo survived", None)?;
    expect_output(&out, 0, "survived\n", "")?;
    Ok(t)
}

pub fn child_killed_by_signal(ctx: &Ctx) -> Result<Transcript> {
    let (t, out) = simple(
        ctx,
        &[],
        "sh -c 'kill -9 $$'; echo \"child status=$?\"; exit 9",
        None,
    )?;
    // busybox sh reports the child's signal death on stderr.
    expect_output(&out, 9, "child status=137\n", "Killed\n")?;
    Ok(t)
}

pub fn sigkill_from_outside(ctx: &Ctx) -> Result<Transcript> {
    let mut bg = Background::spawn(
        &mut ctx.run_cmd(
            &[],
            BUSYBOX_IMAGE,
            &["sh", "-c", "echo ready; exec sleep 1000"],
        ),
        None,
    )?;
    bg.wait_for_stdout("ready", RUN_TIMEOUT)?;
    ctx.cd
        .ctr_ok(&["task", "kill", "--signal", "SIGKILL", &ctx.id])?;
    let out = bg.wait(RUN_TIMEOUT)?;
    let mut t = Transcript::default();
    t.add_output("", &out);
    expect_output(&out, 137, "ready\n", "")?;
    Ok(t)
}

pub fn env_vars(ctx: &Ctx) -> Result<Transcript> {
    let (t, out) = simple(
        ctx,
        &[
            "--env",
            "FOO=bar",
            "--env",
            "SPACES=a b  c",
            "--env",
            "EMPTY=",
        ],
        "env | sort",
        None,
    )?;
    let stdout = out.stdout_str();
    for want in [
        "FOO=bar\n",
        "SPACES=a b  c\n",
        "EMPTY=\n",
        "HOME=/root\n",
        "PATH=/usr/local/sbin:",
    ] {
        ensure!(stdout.contains(want), "env lacks {want:?}:\n{stdout}");
    }
    expect_status(&out, 0)?;
    Ok(t)
}

pub fn env_newlines(ctx: &Ctx) -> Result<Transcript> {
    // A value that would add a line to a naively written LXC config must arrive as data.
    // (No trailing newline: ctr 2.x trims it before containerd sees it.)
    let value = "a\nlxc.init.cmd = /bin/false\nlxc.cap.drop =\nb";
    let flag = format!("INJECT={value}");
    let (t, out) = simple(ctx, &["--env", &flag], "printf '[%s]' \"$INJECT\"", None)?;
    expect_output(&out, 0, &format!("[{value}]"), "")?;
    Ok(t)
}

pub fn cwd_flag(ctx: &Ctx) -> Result<Transcript> {
    let (t, out) = simple(ctx, &["--cwd", "/tmp"], "pwd", None)?;
    expect_output(&out, 0, "/tmp\n", "")?;
    Ok(t)
}

pub fn image_config(ctx: &Ctx) -> Result<Transcript> {
    let out = cmd::run(&mut ctx.run_cmd(&[], APP_IMAGE, &[]), None, RUN_TIMEOUT)?;
    let mut t = Transcript::default();
    t.add_output("", &out);
    expect_output(
        &out,
        0,
        &format!("greeting={APP_GREETING}\nuid=1000(app) gid=1000(app) groups=1000(app),2000(extra)\n/home/app\n"),
        "",
    )?;
    Ok(t)
}

pub fn image_entrypoint_args(ctx: &Ctx) -> Result<Transcript> {
    let (t, out) = app_sh(ctx, "echo \"$GREETING\"; id -u; pwd; echo \"$HOME\"")?;
    // ctr's arguments replace the image's Entrypoint and Cmd; Env, WorkingDir, User stay.
    expect_output(
        &out,
        0,
        &format!("{APP_GREETING}\n1000\n/home/app\n/home/app\n"),
        "",
    )?;
    Ok(t)
}

/// Runs `sh -c SCRIPT` attached, writes `input` once the task runs, then closes stdin (EOF).
/// (Input that ends before the task exists can lose its EOF with ctr 2.1: ctr's CloseIO
/// races the task's start there, under runc as well.)
pub fn with_stdin(ctx: &Ctx, script: &str, input: &[u8]) -> Result<(Transcript, Output)> {
    let mut bg = Background::spawn_with_open_stdin(&mut ctx.run_cmd(
        &[],
        BUSYBOX_IMAGE,
        &["sh", "-c", script],
    ))?;
    ctx.cd.wait_task_status(&ctx.id, "RUNNING", RUN_TIMEOUT)?;
    bg.send_stdin_and_close(input)?;
    let out = bg.wait(RUN_TIMEOUT)?;
    let mut t = Transcript::default();
    t.add_output("", &out);
    Ok((t, out))
}

pub fn stdin_piped(ctx: &Ctx) -> Result<Transcript> {
    let (t, out) = with_stdin(ctx, "cat; echo 'eof reached'", b"line1\nline2\n")?;
    expect_output(&out, 0, "line1\nline2\neof reached\n", "")?;
    Ok(t)
}

pub fn stdin_large(ctx: &Ctx) -> Result<Transcript> {
    let (t, out) = with_stdin(ctx, "wc -c", &[b'z'; 262_144])?;
    expect_output(&out, 0, "262144\n", "")?;
    Ok(t)
}

pub fn tty(ctx: &Ctx) -> Result<Transcript> {
    // Lingers 0.3 s before exiting: under runc, output written just before a fast exit on a
    // terminal is sometimes lost, which would make the reference flaky.
    let script = "tty; test -t 0 && echo stdin-tty; test -t 1 && echo stdout-tty; echo to-stderr >&2; sleep 0.3; exit 4";
    let out = cmd::run_on_pty(
        &mut ctx.run_cmd(&["-t"], BUSYBOX_IMAGE, &["sh", "-c", script]),
        30,
        100,
        b"",
        RUN_TIMEOUT,
    )?;
    let mut t = Transcript::default();
    let screen = t.add_screen("", &out);
    expect_eq("status", out.status.to_string(), "4")?;
    expect_eq(
        "screen",
        &screen,
        "/dev/pts/0\nstdin-tty\nstdout-tty\nto-stderr\n",
    )?;
    Ok(t)
}

pub fn umask_rlimits(ctx: &Ctx) -> Result<Transcript> {
    let (t, out) = simple(ctx, &[], "umask; ulimit -a", None)?;
    expect_status(&out, 0)?;
    ensure!(out.stdout_str().starts_with("0022\n"), "{}", shown(&out));
    Ok(t)
}

pub fn filesystem_view(ctx: &Ctx) -> Result<Transcript> {
    // What the workload sees of mounts (sorted: the order is not meaningful) and /dev must be
    // what runc gives it.
    let script = "awk '{print $2, $3}' /proc/mounts | sort; echo ---; ls -a /dev";
    let (t, out) = simple(ctx, &[], script, None)?;
    expect_status(&out, 0)?;
    ensure!(
        out.stdout_str().starts_with("/ overlay\n"),
        "{}",
        shown(&out)
    );
    Ok(t)
}

/// `linux.personality` (LINUX32): the init and an exec run in the 32-bit execution domain
/// (`uname -m` says i686), as runc >= 1.2 gives both (libcontainer's `setupPersonality`,
/// for init and exec); the shim's exec takes the init's (issue 21: the helper's `--attach`
/// had lost it). Debian 12's runc 1.1.5 predates it and ignores the field (x86_64 twice), so
/// runc's run is shown, not compared. Needs a spec of its own (`ctr run --config`): ctr has
/// no flag for it.
pub fn personality_linux32(ctx: &Ctx) -> Result<Transcript> {
    let rootfs = ctx.scratch.join(format!("{}-rootfs", ctx.id));
    for sub in ["bin", "proc", "dev", "sys", "tmp", "etc"] {
        std::fs::create_dir_all(rootfs.join(sub))?;
    }
    std::fs::copy(e2e::image::BUSYBOX_PATH, rootfs.join("bin/busybox"))?;
    for applet in ["sh", "uname", "sleep", "cat"] {
        let link = rootfs.join("bin").join(applet);
        if !link.exists() {
            std::os::unix::fs::symlink("busybox", link)?;
        }
    }
    let out = ctx.cd.ctr_ok(&["oci", "spec"])?;
    let mut spec: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    spec["root"] = serde_json::json!({"path": rootfs, "readonly": false});
    spec["process"]["args"] =
        serde_json::json!(["sh", "-c", "uname -m > /tmp/init; exec sleep 1000"]);
    spec["process"]["env"] = serde_json::json!(["PATH=/bin"]);
    spec["linux"]["cgroupsPath"] = serde_json::json!(format!("/{}/{}", e2e::NAMESPACE, ctx.id));
    spec["linux"]["personality"] = serde_json::json!({"domain": "LINUX32"});
    let path = ctx.scratch.join(format!("{}.json", ctx.id));
    std::fs::write(&path, serde_json::to_vec_pretty(&spec)?)?;
    let config = path.to_string_lossy().into_owned();
    let runtime = ctx.runtime_flag();
    ctx.cd.ctr_ok(&[
        "run",
        "-d",
        "--null-io",
        &runtime,
        "--config",
        &config,
        &ctx.id,
    ])?;
    ctx.cd
        .wait_task_status(&ctx.id, "RUNNING", std::time::Duration::from_secs(30))?;
    let out = ctx.exec_sh("e1", "cat /tmp/init; uname -m")?;
    let mut t = Transcript::default();
    t.add_output("init, exec ", &out);
    ctx.kill_task(&ctx.id)?;
    if ctx.is_shim() {
        expect_output(&out, 0, "i686\ni686\n", "")?;
    } else {
        eprintln!("runc: init and exec in {:?}", out.stdout_str());
    }
    Ok(t)
}
