//! The root filesystem and bind mounts: read-only and writable roots, bind mounts, mount
//! propagation, recursive read-only and nosuid/noexec reaching submounts.

use crate::harness::*;

pub fn read_only_root(ctx: &Ctx) -> Result<Transcript> {
    let script = "touch /newfile; echo \"root=$?\"; touch /tmp/newfile; echo \"tmp=$?\"; echo ok > /dev/null; echo \"dev=$?\"";
    let (t, out) = simple(ctx, &["--read-only"], script, None)?;
    expect_output(
        &out,
        0,
        "root=1\ntmp=1\ndev=0\n",
        "touch: /newfile: Read-only file system\ntouch: /tmp/newfile: Read-only file system\n",
    )?;
    Ok(t)
}

pub fn writable_root(ctx: &Ctx) -> Result<Transcript> {
    let (t, out) = simple(
        ctx,
        &[],
        "echo data > /newfile && cat /newfile && rm /newfile && echo removed",
        None,
    )?;
    expect_output(&out, 0, "data\nremoved\n", "")?;
    Ok(t)
}

pub fn bind_mount_rw(ctx: &Ctx) -> Result<Transcript> {
    let dir = bind_dir(ctx)?;
    let mount = format!("type=bind,src={},dst=/host,options=rbind:rw", dir.display());
    let (mut t, out) = simple(
        ctx,
        &["--mount", &mount],
        "cat /host/input.txt; echo from-container > /host/output.txt",
        None,
    )?;
    expect_output(&out, 0, "from the host\n", "")?;
    let written =
        std::fs::read_to_string(dir.join("output.txt")).context("output.txt on the host")?;
    t.add("host sees", written.clone());
    expect_eq(
        "file written through the bind mount",
        written,
        "from-container\n",
    )?;
    Ok(t)
}

pub fn bind_mount_ro(ctx: &Ctx) -> Result<Transcript> {
    let dir = bind_dir(ctx)?;
    let mount = format!("type=bind,src={},dst=/host,options=rbind:ro", dir.display());
    let (t, out) = simple(
        ctx,
        &["--mount", &mount],
        "cat /host/input.txt; touch /host/nope; echo \"status=$?\"",
        None,
    )?;
    expect_output(
        &out,
        0,
        "from the host\nstatus=1\n",
        "touch: /host/nope: Read-only file system\n",
    )?;
    ensure!(
        !dir.join("nope").exists(),
        "a read-only bind mount was written"
    );
    Ok(t)
}

/// A host tmpfs made a shared mount (the peer group a Bidirectional volume joins, as kubelet
/// requires of its source), unmounted with everything below it when dropped.
pub struct SharedHostDir(PathBuf);

impl SharedHostDir {
    fn new(path: PathBuf) -> Result<Self> {
        std::fs::create_dir_all(&path)?;
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "e2e-prop", &path.to_string_lossy()])
            .status()?;
        ensure!(status.success(), "mount a tmpfs at {}", path.display());
        let dir = SharedHostDir(path);
        let status = Command::new("mount")
            .args(["--make-shared", &dir.0.to_string_lossy()])
            .status()?;
        ensure!(status.success(), "make {} shared", dir.0.display());
        Ok(dir)
    }
}

impl Drop for SharedHostDir {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-R").arg(&self.0).status();
    }
}

/// Waits for a file the workload makes (the case's own synchronisation, not a timing check).
pub fn wait_for_file(path: &Path) -> Result<()> {
    let deadline = Instant::now() + WORKLOAD_TIMEOUT;
    while !path.exists() {
        ensure!(
            Instant::now() < deadline,
            "the workload never made {}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// A privileged container with a bind of a shared host tmpfs at /mnt (options `rbind` and
/// `propagation`, rootfs propagation `root`): it mounts a tmpfs at /mnt/in, then the host
/// mounts one at its /fromhost. Records which side saw the other's mount, as Kubernetes'
/// `mountPropagation` modes Bidirectional (rshared), HostToContainer (rslave) and None
/// (rprivate) make containerd ask.
pub fn propagation(ctx: &Ctx, root: &str, propagation: &str) -> Result<Transcript> {
    let host = SharedHostDir::new(ctx.scratch.join("prop"))?;
    let dir = host.0.clone();
    std::fs::create_dir(dir.join("in"))?;
    std::fs::create_dir(dir.join("fromhost"))?;
    let mount = format!(
        "type=bind,src={},dst=/mnt,options=rbind:{propagation}",
        dir.display()
    );
    // A second bind below the first must survive whatever is done to the first.
    let nested_src = ctx.scratch.join("nested");
    std::fs::create_dir_all(&nested_src)?;
    std::fs::write(nested_src.join("f"), "nested\n")?;
    let nested = format!(
        "type=bind,src={},dst=/mnt/nested,options=rbind:ro",
        nested_src.display()
    );
    let script =
        "mount -t tmpfs e2e-in /mnt/in && echo made-in-container > /mnt/in/f && touch /mnt/ready; \
                  while [ ! -e /mnt/go ]; do sleep 0.02; done; \
                  cat /mnt/fromhost/f > /mnt/result 2>/dev/null || echo not-seen > /mnt/result; \
                  cat /mnt/nested/f > /mnt/nested-result 2>&1";
    ctx.run_detached(
        &[
            "--null-io",
            "--privileged",
            "--rootfs-propagation",
            root,
            "--mount",
            &mount,
            "--mount",
            &nested,
        ],
        script,
    )?;
    wait_for_file(&dir.join("ready"))?;
    let on_host = std::fs::read_to_string(dir.join("in/f")).unwrap_or_else(|_| "not-seen\n".into());
    let status = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "e2e-fromhost",
            &dir.join("fromhost").to_string_lossy(),
        ])
        .status()?;
    ensure!(
        status.success(),
        "mount a tmpfs at {}/fromhost",
        dir.display()
    );
    std::fs::write(dir.join("fromhost/f"), "made-on-host\n")?;
    std::fs::write(dir.join("go"), "")?;
    ctx.cd
        .wait_task_status(&ctx.id, "STOPPED", WORKLOAD_TIMEOUT)?;
    let in_container = std::fs::read_to_string(dir.join("result"))?;
    let nested_seen = std::fs::read_to_string(dir.join("nested-result"))?;
    let mut t = Transcript::default();
    t.add("host sees the container's mount", on_host.clone());
    t.add("container sees the host's mount", in_container.clone());
    t.add("container sees the bind below", nested_seen.clone());
    drop(host);
    expect_eq("container sees the bind below", nested_seen, "nested\n")?;
    Ok(t)
}

/// [`propagation`] with `mode` on both the root and the bind; what the host must see of the
/// container's mount and the container of the host's.
fn propagation_expecting(
    ctx: &Ctx,
    mode: &str,
    host_sees: &str,
    container_sees: &str,
) -> Result<Transcript> {
    let t = propagation(ctx, mode, mode)?;
    expect_eq("host sees the container's mount", &t.0[0].1, host_sees)?;
    expect_eq("container sees the host's mount", &t.0[1].1, container_sees)?;
    Ok(t)
}

pub fn propagation_rshared(ctx: &Ctx) -> Result<Transcript> {
    propagation_expecting(ctx, "rshared", "made-in-container\n", "made-on-host\n")
}

pub fn propagation_rslave(ctx: &Ctx) -> Result<Transcript> {
    propagation_expecting(ctx, "rslave", "not-seen\n", "made-on-host\n")
}

pub fn propagation_rprivate(ctx: &Ctx) -> Result<Transcript> {
    propagation_expecting(ctx, "rprivate", "not-seen\n", "not-seen\n")
}

/// A host tmpfs under the bind source, unmounted when dropped.
pub struct HostSubmount(PathBuf);

impl HostSubmount {
    /// The bind source of `bind_dir` with a tmpfs at `sub`.
    fn under_bind_dir(ctx: &Ctx) -> Result<(PathBuf, HostSubmount)> {
        let dir = bind_dir(ctx)?;
        let sub = dir.join("sub");
        std::fs::create_dir_all(&sub)?;
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "e2e-rattr", &sub.to_string_lossy()])
            .status()?;
        ensure!(status.success(), "mount a tmpfs at {}", sub.display());
        Ok((dir, HostSubmount(sub)))
    }
}

impl Drop for HostSubmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// The options (mountinfo's fifth and sixth fields) of the mounts at and below /host, sorted:
/// the clones the shim puts back after applying recursive attributes come last in the table.
pub const HOST_MOUNTS: &str = "grep ' /host' /proc/self/mountinfo | cut -d' ' -f5,6 | sort";

/// The per-mount options mountinfo shows for `point` in `out`.
pub fn mount_options(out: &Output, point: &str) -> Result<Vec<String>> {
    let stdout = out.stdout_str();
    let line = stdout
        .lines()
        .find(|l| l.split(' ').next() == Some(point))
        .with_context(|| format!("no mount at {point}: {}", shown(out)))?;
    Ok(line
        .split(' ')
        .nth(1)
        .unwrap_or("")
        .split(',')
        .map(str::to_string)
        .collect())
}

pub fn bind_mount_rro(ctx: &Ctx) -> Result<Transcript> {
    // `rro` (recursive read-only: mount_setattr with AT_RECURSIVE), what containerd asks for a
    // Kubernetes `recursiveReadOnly: Enabled` volume: the bind and the host's submount under
    // it are read-only, and a write to either fails with EROFS.
    let (dir, submount) = HostSubmount::under_bind_dir(ctx)?;
    let mount = format!(
        "type=bind,src={},dst=/host,options=rbind:rro",
        dir.display()
    );
    let script = format!(
        "{HOST_MOUNTS}; touch /host/nope; echo \"status=$?\"; touch /host/sub/nope; echo \"status=$?\""
    );
    let (t, out) = simple(ctx, &["--mount", &mount], &script, None)?;
    let written = dir.join("nope").exists() || submount.0.join("nope").exists();
    drop(submount);
    expect_status(&out, 0)?;
    for point in ["/host", "/host/sub"] {
        let options = mount_options(&out, point)?;
        ensure!(
            options.first().map(String::as_str) == Some("ro"),
            "{point} is not read-only: {}",
            shown(&out)
        );
    }
    ensure!(
        out.stdout_str().ends_with("status=1\nstatus=1\n"),
        "{}",
        shown(&out)
    );
    expect_eq(
        "stderr",
        out.stderr_str(),
        "touch: /host/nope: Read-only file system\ntouch: /host/sub/nope: Read-only file system\n",
    )?;
    ensure!(!written, "a recursively read-only mount was written");
    Ok(t)
}

pub fn bind_mount_rnosuid_rnoexec(ctx: &Ctx) -> Result<Transcript> {
    // Two more recursive attributes on the bind and the host's submount under it, but not on
    // a tmpfs the spec mounts below the bind after it (runc applies them right after the bind,
    // before its later mounts): a program copied onto the submount cannot run, one copied onto
    // the later tmpfs can.
    let (dir, submount) = HostSubmount::under_bind_dir(ctx)?;
    std::fs::create_dir_all(dir.join("later"))?;
    let mount = format!(
        "type=bind,src={},dst=/host,options=rbind:rnosuid:rnoexec",
        dir.display()
    );
    let later = "type=tmpfs,src=tmpfs,dst=/host/later";
    let script = format!(
        "{HOST_MOUNTS}; cp /bin/busybox /host/sub/true && /host/sub/true; echo \"status=$?\"; \
         cp /bin/busybox /host/later/true && /host/later/true; echo \"status=$?\""
    );
    let (t, out) = simple(ctx, &["--mount", &mount, "--mount", later], &script, None)?;
    drop(submount);
    expect_status(&out, 0)?;
    for point in ["/host", "/host/sub"] {
        let options = mount_options(&out, point)?;
        ensure!(
            ["nosuid", "noexec", "rw"]
                .iter()
                .all(|o| options.iter().any(|x| x == o)),
            "{point} lacks rnosuid/rnoexec: {}",
            shown(&out)
        );
    }
    let options = mount_options(&out, "/host/later")?;
    ensure!(
        !options.iter().any(|o| o == "nosuid" || o == "noexec"),
        "the later tmpfs got the bind's recursive attributes: {}",
        shown(&out)
    );
    ensure!(
        out.stdout_str().ends_with("status=126\nstatus=0\n"),
        "{}",
        shown(&out)
    );
    expect_eq(
        "stderr",
        out.stderr_str(),
        "sh: /host/sub/true: Permission denied\n",
    )?;
    Ok(t)
}
