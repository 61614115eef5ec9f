//! `ctr task exec`: output, status, stdin, user and cwd of an exec, and execs with a terminal.

use crate::harness::*;

pub fn exec_basics(ctx: &Ctx) -> Result<Transcript> {
    ctx.run_detached(
        &["--null-io"],
        "echo started > /tmp/started; exec sleep 1000",
    )?;
    let mut t = Transcript::default();
    let id = ctx.id.as_str();
    let wait_started = "while [ ! -e /tmp/started ]; do sleep 0.05; done; ";
    let script = format!("{wait_started}cat /tmp/started; echo out; echo err >&2; echo \"pid1=$(cat /proc/1/comm)\"; exit 5");
    let out = ctx.exec_sh("e1", &script)?;
    t.add_output("exec1 ", &out);
    expect_output(&out, 5, "started\nout\npid1=sleep\n", "err\n")?;

    let out = cmd::run(
        &mut ctx.cd.ctr_cmd(&[
            "task",
            "exec",
            "--exec-id",
            "e2",
            id,
            "sh",
            "-c",
            "cat; echo done",
        ]),
        Some(b"piped in\n".to_vec()),
        RUN_TIMEOUT,
    )?;
    t.add_output("exec2 ", &out);
    expect_output(&out, 0, "piped in\ndone\n", "")?;

    let out = ctx.cd.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "e3",
        "--user",
        "1000",
        "--cwd",
        "/home/app",
        id,
        "sh",
        "-c",
        "id -u; pwd",
    ])?;
    t.add_output("exec3 ", &out);
    expect_output(&out, 0, "1000\n/home/app\n", "")?;

    let out = ctx.exec_sh("e4", "env | sort")?;
    t.add_output("exec4 ", &out);
    ensure!(
        out.stdout_str().contains("PATH=/usr/local/sbin:"),
        "exec env: {}",
        shown(&out)
    );

    let out = ctx
        .cd
        .ctr(&["task", "exec", "--exec-id", "e5", id, "/no/such/binary"])?;
    t.add("exec5 failed", (out.status.0 != 0).to_string());
    ensure!(out.status.0 != 0, "exec of a missing binary succeeded");

    ctx.kill_task(id)?;
    Ok(t)
}

pub fn exec_tty(ctx: &Ctx) -> Result<Transcript> {
    ctx.run_detached(&["--null-io"], "exec sleep 1000")?;
    let out = ctx.cd.exec_on_pty(
        "t1",
        &ctx.id,
        &[
            "sh",
            "-c",
            "sleep 0.5; test -t 0 && echo tty; tty; sleep 0.3; exit 6",
        ],
        RUN_TIMEOUT,
    )?;
    let mut t = Transcript::default();
    let screen = t.add_screen("", &out);
    expect_eq("status", out.status.to_string(), "6")?;
    expect_eq("screen", screen, "tty\n/dev/pts/0\n")?;
    Ok(t)
}

pub fn exec_tty_large_output(ctx: &Ctx) -> Result<Transcript> {
    // 6.9 MB through the pty, as the benchmark's TTY row: every byte, the last ones included,
    // must reach the user's terminal though the workload exits right after writing them.
    ctx.run_detached(&["--null-io"], "exec sleep 1000")?;
    let out = ctx.cd.exec_on_pty(
        "t1",
        &ctx.id,
        &["seq", "-s", " ", "1000000"],
        WORKLOAD_TIMEOUT,
    )?;
    let screen = out.screen_text();
    let mut want = (1..=1_000_000)
        .map(|n: u32| n.to_string())
        .collect::<Vec<_>>()
        .join(" ");
    want.push('\n');
    let mut t = Transcript::default();
    t.add("status", out.status.to_string());
    t.add("screen_len", screen.len().to_string());
    t.add("screen_intact", (screen == want).to_string());
    expect_eq("status", out.status.to_string(), "0")?;
    if screen != want {
        let same = screen
            .bytes()
            .zip(want.bytes())
            .take_while(|(a, b)| a == b)
            .count();
        bail!(
            "screen: {} bytes, {} expected; first difference at byte {same}, screen ends ...{:?}",
            screen.len(),
            want.len(),
            screen.get(screen.len().saturating_sub(40)..).unwrap_or("")
        );
    }
    Ok(t)
}
