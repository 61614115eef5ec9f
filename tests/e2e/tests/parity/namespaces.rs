//! Names and namespaces: long containerd namespace and container ids, private and host network,
//! the hostname.

use crate::harness::*;

/// `ctr --namespace NS ARGS...` against the case's containerd.
pub fn ctr_in(ctx: &Ctx, namespace: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(ctx.cd.version.ctr());
    cmd.arg("--address")
        .arg(&ctx.cd.address)
        .arg("--namespace")
        .arg(namespace)
        .args(args);
    cmd
}

/// Pads `base` with "-x..." to exactly `len` characters (containerd's limit for namespaces
/// and ids is 76).
pub fn padded(base: &str, len: usize) -> String {
    let mut s = format!("{base}-");
    while s.len() < len {
        s.push('x');
    }
    s.truncate(len);
    s
}

pub fn long_namespace_and_id(ctx: &Ctx) -> Result<Transcript> {
    // Names at containerd's limit: the lxcpath, LXC's monitor and command sockets and every
    // path derived from them must still work (LXC's monitor socket name does not hash a long
    // lxcpath; it fails instead).
    let namespace = padded(&format!("ns{}", ctx.id.replace('-', "")), 76);
    let id = padded(&ctx.id, 76);
    let tarball = ctx.cd.work.join("images.oci.tar");
    let import = cmd::run(
        &mut ctr_in(
            ctx,
            &namespace,
            &["images", "import", &tarball.to_string_lossy()],
        ),
        None,
        RUN_TIMEOUT,
    )?;
    expect_status(&import, 0)?;
    let runtime = ctx.runtime_flag();
    let out = cmd::run(
        &mut ctr_in(
            ctx,
            &namespace,
            &[
                "run",
                "--rm",
                &runtime,
                BUSYBOX_IMAGE,
                &id,
                "sh",
                "-c",
                "echo ran; exit 3",
            ],
        ),
        None,
        RUN_TIMEOUT,
    );
    // Leave the namespace empty whatever happened, so containerd can drop it.
    let _ = cmd::run(
        &mut ctr_in(ctx, &namespace, &["task", "rm", "-f", &id]),
        None,
        RUN_TIMEOUT,
    );
    let _ = cmd::run(
        &mut ctr_in(ctx, &namespace, &["container", "rm", &id]),
        None,
        RUN_TIMEOUT,
    );
    let images = cmd::run(
        &mut ctr_in(ctx, &namespace, &["images", "ls", "-q"]),
        None,
        RUN_TIMEOUT,
    )?
    .stdout_str();
    for image in images.lines().filter(|l| !l.trim().is_empty()) {
        let _ = cmd::run(
            &mut ctr_in(ctx, &namespace, &["images", "rm", image.trim()]),
            None,
            RUN_TIMEOUT,
        );
    }
    let out = out?;
    let mut t = Transcript::default();
    t.add_output("", &out);
    expect_output(&out, 3, "ran\n", "")?;
    // Nothing left: no LXC container directory (whatever the namespace's lxcpath), no cgroup,
    // no process.
    let deadline = Instant::now() + RUN_TIMEOUT;
    loop {
        let mut traces: Vec<String> = host::cgroups_of(&namespace, &id)
            .into_iter()
            .map(|c| format!("cgroup left: {}", c.display()))
            .collect();
        for entry in std::fs::read_dir(SHIM_LXCPATH)
            .into_iter()
            .flatten()
            .flatten()
        {
            if entry.path().join(&id).exists() {
                traces.push(format!(
                    "LXC container dir left under {}",
                    entry.path().display()
                ));
            }
        }
        for p in host::processes_matching(&[&id]) {
            traces.push(format!("process {} still runs: {}", p.pid, p.cmdline));
        }
        if traces.is_empty() {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "{id} left traces:\n  {}",
            traces.join("\n  ")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The shim's lxcpath for this namespace (named after it) is empty now and the namespace
    // is this test's alone: remove the directory (remove_dir: only if empty).
    let prefix: String = namespace.chars().take(16).collect();
    for entry in std::fs::read_dir(SHIM_LXCPATH)
        .into_iter()
        .flatten()
        .flatten()
    {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = std::fs::remove_dir(entry.path());
        }
    }
    Ok(t)
}

pub fn host_interfaces() -> Result<String> {
    let mut names: Vec<String> = std::fs::read_dir("/sys/class/net")?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    Ok(names.iter().map(|n| format!("{n}\n")).collect())
}

pub fn net_private(ctx: &Ctx) -> Result<Transcript> {
    let (t, out) = simple(ctx, &[], "ls /sys/class/net", None)?;
    expect_output(&out, 0, "lo\n", "")?;
    Ok(t)
}

pub fn net_host(ctx: &Ctx) -> Result<Transcript> {
    // Other work on the host adds and removes veths meanwhile: the container must see exactly
    // the host's interfaces as of some moment between the two host readings.
    let before = host_interfaces()?;
    let out = ctx.run_sh(&["--net-host"], "ls /sys/class/net | sort", None)?;
    let after = host_interfaces()?;
    expect_status(&out, 0)?;
    let seen: Vec<String> = out.stdout_str().lines().map(str::to_owned).collect();
    let (b, a): (Vec<&str>, Vec<&str>) = (before.lines().collect(), after.lines().collect());
    let stable_present = b
        .iter()
        .filter(|i| a.contains(i))
        .all(|i| seen.iter().any(|s| s == i));
    let nothing_foreign = seen
        .iter()
        .all(|s| b.contains(&s.as_str()) || a.contains(&s.as_str()));
    let mut t = Transcript::default();
    t.add("status", out.status.to_string());
    t.add(
        "sees the host's interfaces",
        (stable_present && nothing_foreign).to_string(),
    );
    t.add("stderr", out.stderr_str());
    ensure!(
        stable_present && nothing_foreign,
        "--net-host shows {seen:?}; the host had {before:?} then {after:?}"
    );
    Ok(t)
}

pub fn hostname(ctx: &Ctx) -> Result<Transcript> {
    // ctr sets no hostname: the container's UTS namespace starts as a copy of the host's.
    let host = nix::unistd::gethostname()?.to_string_lossy().into_owned();
    let (t, out) = simple(ctx, &[], "hostname", None)?;
    expect_output(&out, 0, &format!("{host}\n"), "")?;
    Ok(t)
}
