//! Privileges: capabilities (default, added and dropped, privileged), the default seccomp
//! profile (also for an exec), an exec confined from the start, the user from the image.

use crate::harness::*;
use crate::userns::{USERNS_FLAGS, USERNS_SNAPSHOT};

pub fn caps_default(ctx: &Ctx) -> Result<Transcript> {
    let (t, out) = simple(ctx, &[], sh_grep_status(), None)?;
    expect_status(&out, 0)?;
    // containerd's default set: 0xa80425fb (chown .. audit_write, no sys_admin).
    ensure!(
        out.stdout_str().contains("CapEff:\t00000000a80425fb"),
        "{}",
        shown(&out)
    );
    ensure!(
        out.stdout_str().contains("NoNewPrivs:\t1"),
        "{}",
        shown(&out)
    );
    Ok(t)
}

pub fn caps_add_drop(ctx: &Ctx) -> Result<Transcript> {
    let (t, out) = simple(
        ctx,
        &["--cap-add", "CAP_SYS_ADMIN", "--cap-drop", "CAP_CHOWN"],
        sh_grep_status(),
        None,
    )?;
    expect_status(&out, 0)?;
    // +CAP_SYS_ADMIN (bit 21), -CAP_CHOWN (bit 0).
    ensure!(
        out.stdout_str().contains("CapEff:\t00000000a82425fa"),
        "{}",
        shown(&out)
    );
    Ok(t)
}

pub fn caps_privileged(ctx: &Ctx) -> Result<Transcript> {
    let (t, out) = simple(ctx, &["--privileged"], sh_grep_status(), None)?;
    expect_status(&out, 0)?;
    let own = std::fs::read_to_string("/proc/self/status")?;
    let own_bnd = own
        .lines()
        .find(|l| l.starts_with("CapBnd:"))
        .unwrap_or("")
        .to_string();
    ensure!(
        out.stdout_str()
            .contains(&own_bnd.replace("CapBnd", "CapEff")),
        "privileged CapEff should be the host's bounding set ({own_bnd}):\n{}",
        shown(&out)
    );
    Ok(t)
}

pub fn seccomp_default(ctx: &Ctx) -> Result<Transcript> {
    let (t, out) = simple(
        ctx,
        &["--seccomp"],
        "grep Seccomp: /proc/self/status; unshare -U true; echo \"unshare=$?\"",
        None,
    )?;
    ensure!(
        out.stdout_str().starts_with("Seccomp:\t2\n"),
        "{}",
        shown(&out)
    );
    ensure!(
        out.stdout_str().contains("unshare=1"),
        "unshare must be refused: {}",
        shown(&out)
    );
    Ok(t)
}

/// An exec gets the container's seccomp filter (the shim's lxc driver copies it from the
/// init, runc loads it from config.json), and an exec killed by a signal reports 128+N.
pub fn seccomp_exec(ctx: &Ctx) -> Result<Transcript> {
    ctx.run_detached(&["--seccomp", "--null-io"], "exec sleep 1000")?;
    let mut t = Transcript::default();
    let id = ctx.id.as_str();
    if ctx.is_shim() {
        // The shim's lxc driver lets LXC's monitor go once the container runs: the init is the
        // shim's child, and no `lxc-start` is left for the container.
        let init = ctx
            .cd
            .task_pid(id)?
            .ok_or_else(|| anyhow!("no pid of {id} in ctr task ls"))?;
        let shim = host::processes_matching(&["containerd-shim-proxmox-lxc-v2", id]);
        let parent = host::processes()
            .into_iter()
            .find(|p| p.pid == init)
            .map(|p| p.ppid);
        ensure!(
            shim.iter().any(|s| Some(s.pid) == parent),
            "the init {init} should be the shim's child (parent {parent:?}, shims {shim:?})"
        );
        let monitors = host::processes_matching(&["lxc-start", id]);
        ensure!(monitors.is_empty(), "lxc-start left: {monitors:?}");
    }
    let script = "grep '^Seccomp:' /proc/self/status; unshare -U true; echo \"unshare=$?\"";
    let out = ctx.exec_sh("e1", script)?;
    t.add_output("exec1 ", &out);
    ensure!(
        out.stdout_str().starts_with("Seccomp:\t2\nunshare=1\n"),
        "the exec must run under the container's filter: {}",
        shown(&out)
    );
    let out = ctx.exec_sh("e2", "kill -9 $$")?;
    t.add("exec2 status", out.status.0.to_string());
    expect_status(&out, 137)?;
    ctx.kill_task(id)?;
    Ok(t)
}

pub fn user_numeric(ctx: &Ctx) -> Result<Transcript> {
    // uid 1000 from the image's User (ctr 1.6 has no --user for run; exec's --user is tested
    // in the exec case).
    let script = "id; echo \"home=$HOME\"; touch /etc/x; echo \"etc=$?\"; touch /home/app/x && echo home-writable";
    let (t, out) = app_sh(ctx, script)?;
    expect_output(
        &out,
        0,
        "uid=1000(app) gid=1000(app) groups=1000(app),2000(extra)\nhome=/home/app\netc=1\nhome-writable\n",
        "touch: /etc/x: Permission denied\n",
    )?;
    ensure!(
        out.stdout_str().contains("etc=1\nhome-writable\n"),
        "{}",
        shown(&out)
    );
    Ok(t)
}

/// How many execs the scanner watches: enough that an exec set up outside the container's
/// cgroups, or dumpable, is caught (today's shim before issue 21 was caught in the first few).
const SCANNED_EXECS: usize = 40;

/// An exec is confined before it does anything in the container (issue 21; runc's
/// CVE-2016-9962 fix): a container's root scanning /proc through many execs never sees a
/// process outside the container's cgroups, nor can it list a host descriptor of one (the
/// helper, its socket, its spec). In a user namespace, where the container's root holds
/// every capability of its namespace and so could list a dumpable helper's descriptors.
/// runc is held to the descriptors only: runc 1.1 (Debian 12's) moves an exec into the
/// container's cgroups after it entered the pid namespace (libcontainer/process_linux.go,
/// `setnsProcess.start`: `execSetns`, then `cgroups.EnterPid`), so a scanner sees it
/// outside for a moment; runc 1.2 clones it into the cgroup (`CLONE_INTO_CGROUP`), which is
/// what the shim is held to.
pub fn exec_confined_from_the_start(ctx: &Ctx) -> Result<Transcript> {
    {
        let _turn = USERNS_SNAPSHOT.lock().unwrap_or_else(|e| e.into_inner());
        let mut flags = vec!["--null-io"];
        flags.extend_from_slice(&USERNS_FLAGS);
        ctx.run_detached(&flags, e2e::confinement::SCANNER)?;
    }
    let id = ctx.id.as_str();
    let report = e2e::confinement::exec_while_scanning(ctx.cd, id, SCANNED_EXECS)?;
    eprintln!(
        "{}: the scanner walked /proc {} times during {SCANNED_EXECS} execs and saw {} things",
        ctx.runtime,
        report.rounds,
        report.seen.len()
    );
    ensure!(
        report.rounds >= SCANNED_EXECS as u64,
        "the scanner walked /proc only {} times",
        report.rounds
    );
    let held_to: Vec<&String> = if ctx.is_shim() {
        report.seen.iter().collect()
    } else {
        report
            .seen
            .iter()
            .filter(|l| l.contains("descriptor"))
            .collect()
    };
    ensure!(
        held_to.is_empty(),
        "the container's root saw execs before they were confined:\n{}",
        report.seen.join("\n")
    );
    ctx.kill_task(id)?;
    let mut t = Transcript::default();
    t.add("seen by the container's root", "nothing it must not see");
    Ok(t)
}
