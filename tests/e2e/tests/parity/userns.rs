//! User namespaces: `ctr run --uidmap/--gidmap` (a remapped snapshot), an exec and a terminal
//! in one, and the id maps the workload sees.

use crate::harness::*;

pub const USERNS_FLAGS: [&str; 4] = ["--uidmap", "0:100000:65536", "--gidmap", "0:100000:65536"];

/// ctr 1.6 makes the shared remapped snapshot without a lock: two runs at once on one
/// containerd (a case's runc and proxmox-lxc trials) collide with "already exists".
pub static USERNS_SNAPSHOT: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub fn userns_exec_and_tty(ctx: &Ctx) -> Result<Transcript> {
    {
        let _turn = USERNS_SNAPSHOT.lock().unwrap_or_else(|e| e.into_inner());
        let mut flags = vec!["--null-io"];
        flags.extend_from_slice(&USERNS_FLAGS);
        ctx.run_detached(&flags, "exec sleep 1000")?;
    }
    let mut t = Transcript::default();
    let id = ctx.id.as_str();
    let out = ctx.exec_sh(
        "e1",
        "cat /proc/self/uid_map; id; touch /tmp/e1 && stat -c '%u:%g' /tmp/e1",
    )?;
    t.add_output("exec1 ", &out);
    expect_output(
        &out,
        0,
        "         0     100000      65536\nuid=0(root) gid=0(root) groups=0(root)\n0:0\n",
        "",
    )?;
    let out = ctx.cd.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "e2",
        "--user",
        "1000",
        id,
        "sh",
        "-c",
        "id -u; id -g",
    ])?;
    t.add_output("exec2 ", &out);
    expect_output(&out, 0, "1000\n1000\n", "")?;
    let out = cmd::run_on_pty(
        &mut ctx.cd.ctr_cmd(&[
            "task",
            "exec",
            "--exec-id",
            "e3",
            "-t",
            id,
            "sh",
            "-c",
            "tty; id -u; sleep 0.3",
        ]),
        30,
        100,
        b"",
        RUN_TIMEOUT,
    )?;
    let screen = t.add_screen("exec3 ", &out);
    expect_eq("exec3 status", out.status.to_string(), "0")?;
    expect_eq("exec3 screen", &screen, "/dev/pts/0\n0\n")?;
    ctx.kill_task(id)?;
    Ok(t)
}

pub fn userns_tty(ctx: &Ctx) -> Result<Transcript> {
    // The init on a terminal: the terminal must be the container's (owned by its root).
    let script = "tty; id -u; stat -c '%u:%g' $(tty); sleep 0.3";
    let mut flags = vec!["-t"];
    flags.extend_from_slice(&USERNS_FLAGS);
    let out = {
        let _turn = USERNS_SNAPSHOT.lock().unwrap_or_else(|e| e.into_inner());
        cmd::run_on_pty(
            &mut ctx.run_cmd(&flags, BUSYBOX_IMAGE, &["sh", "-c", script]),
            30,
            100,
            b"",
            RUN_TIMEOUT,
        )?
    };
    let mut t = Transcript::default();
    let screen = t.add_screen("", &out);
    expect_eq("status", out.status.to_string(), "0")?;
    ensure!(screen.starts_with("/dev/pts/0\n0\n"), "screen: {screen:?}");
    Ok(t)
}

pub fn userns_uidmap(ctx: &Ctx) -> Result<Transcript> {
    // A user namespace as `ctr --uidmap/--gidmap` asks for it (a remapped snapshot, owned by
    // host id 100000): the maps, the ids, who owns the rootfs, what the workload creates and
    // what the runtime made in /dev (created as the container's root, so owned by 0 inside).
    let script = "cat /proc/self/uid_map /proc/self/gid_map; id; \
        stat -c '%u:%g %n' / /etc/passwd /dev /dev/ptmx /dev/null; \
        touch /x && stat -c '%u:%g %n' /x; readlink /dev/ptmx";
    let (t, out) = {
        let _turn = USERNS_SNAPSHOT.lock().unwrap_or_else(|e| e.into_inner());
        simple(ctx, &USERNS_FLAGS, script, None)?
    };
    expect_status(&out, 0)?;
    ensure!(
        out.stdout_str().starts_with(
            "         0     100000      65536\n         0     100000      65536\nuid=0(root) gid=0(root)"
        ),
        "{}",
        shown(&out)
    );
    ensure!(
        out.stdout_str().contains("\n0:0 /etc/passwd\n") && out.stdout_str().contains("\n0:0 /x\n"),
        "the rootfs and new files must belong to the container's root: {}",
        shown(&out)
    );
    Ok(t)
}
