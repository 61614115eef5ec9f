//! Mounts: volumes, the termination message path, and mount propagation between pods and the
//! node.

use crate::harness::*;

/// Host path mounts (read-write and read-only) and the termination message file, which the
/// kubelet mounts from the host and reads after the container ended.
pub fn case_mounts_and_termination_message(env: &CriEnv) -> Result<()> {
    let mut c = env.cri()?;
    let rw = env.scratch("hostpath-rw");
    let ro = env.scratch("hostpath-ro");
    std::fs::write(rw.join("from-host"), "host data\n")?;
    std::fs::write(ro.join("keep"), "read only\n")?;
    let term = env.scratch("termination").join("termination-log");
    std::fs::write(&term, "")?;
    let mut pod = run_pod(env, "mounts", |_| {})?;
    let mut cfg = container_config(
        "mounter",
        &env.images.busybox,
        &[
            "sh",
            "-c",
            "cat /data/from-host; echo written > /data/from-container; \
             if echo x > /ro/keep 2>/dev/null; then echo ro-writable; else echo ro-refused; fi; \
             cat /ro/keep; echo 'goodbye message' > /dev/termination-log; echo end; exit 2",
        ],
    );
    cfg.mounts = vec![
        v1::Mount {
            container_path: "/data".into(),
            host_path: rw.display().to_string(),
            ..Default::default()
        },
        v1::Mount {
            container_path: "/ro".into(),
            host_path: ro.display().to_string(),
            readonly: true,
            ..Default::default()
        },
        v1::Mount {
            container_path: "/dev/termination-log".into(),
            host_path: term.display().to_string(),
            ..Default::default()
        },
    ];
    let id = pod.run(&cfg)?;
    let code = env.block_on(c.wait_state(&id, state::EXITED, Duration::from_secs(20)))?;
    let lines = pod.wait_log("mounter", "end")?;
    let text: Vec<&str> = lines.iter().map(|(_, l)| l.as_str()).collect();
    ensure!(code == 2, "exit code {code} (want 2): {text:?}");
    for w in ["host data", "ro-refused", "read only"] {
        ensure!(text.contains(&w), "missing {w:?}: {text:?}");
    }
    ensure!(
        read_trim(&rw.join("from-container"))? == "written",
        "write through the rw host path did not reach the host"
    );
    ensure!(
        read_trim(&ro.join("keep"))? == "read only",
        "read-only host path was changed"
    );
    ensure!(
        std::fs::read_to_string(&term)? == "goodbye message\n",
        "termination message on the host: {:?}",
        std::fs::read_to_string(&term)?
    );
    let st = env
        .block_on(c.container_status(&id))?
        .status
        .ok_or_else(|| anyhow!("no status"))?;
    ensure!(
        st.reason == "Error" && st.exit_code == 2,
        "status {} {}",
        st.reason,
        st.exit_code
    );
    pod.finish()
}

/// A host tmpfs made a shared mount (kubelet requires a Bidirectional volume's source to be on
/// one, containerd checks it), unmounted with everything below it when dropped.
pub struct SharedTmpfs(PathBuf);

impl SharedTmpfs {
    fn new(path: PathBuf) -> Result<Self> {
        std::fs::create_dir_all(&path)?;
        let p = path.to_string_lossy().into_owned();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "cri-prop", &p])
            .status()?;
        ensure!(status.success(), "mount a tmpfs at {p}");
        let dir = SharedTmpfs(path);
        let status = std::process::Command::new("mount")
            .args(["--make-shared", &p])
            .status()?;
        ensure!(status.success(), "make {p} shared");
        for sub in ["in", "fromhost"] {
            std::fs::create_dir(dir.0.join(sub))?;
        }
        Ok(dir)
    }
}

impl Drop for SharedTmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-R")
            .arg(&self.0)
            .status();
    }
}

/// hostPath volumes with `mountPropagation` Bidirectional, HostToContainer and None in a
/// privileged container (as CSI node plugins have them): a mount the container makes in each
/// reaches the host only through the Bidirectional one; a mount the host makes afterwards
/// reaches the container through Bidirectional and HostToContainer, as under runc.
pub fn case_mount_propagation(env: &CriEnv) -> Result<()> {
    use v1::MountPropagation as P;
    let mut c = env.cri()?;
    let modes = [
        ("both", P::PropagationBidirectional),
        ("tohost", P::PropagationHostToContainer),
        ("none", P::PropagationPrivate),
    ];
    let mut dirs = Vec::new();
    for (name, _) in &modes {
        dirs.push(SharedTmpfs::new(
            env.scratch(&format!("propagation-{name}")),
        )?);
    }
    let mut pod = run_pod(env, "propagation", privileged_pod)?;
    let script = "for d in both tohost none; do \
                    mount -t tmpfs cri-in /$d/in && echo made-in-container > /$d/in/f || exit 1; done; \
                  touch /both/ready; while [ ! -e /both/go ]; do sleep 0.02; done; \
                  for d in both tohost none; do \
                    if [ -e /$d/fromhost/f ]; then echo $d=host-mount-seen; else echo $d=host-mount-not-seen; fi; done; \
                  echo end";
    let mut cfg = container_config("propagation", &env.images.busybox, &["sh", "-c", script]);
    sec(&mut cfg).privileged = true;
    cfg.mounts = modes
        .iter()
        .zip(&dirs)
        .map(|((name, mode), dir)| v1::Mount {
            container_path: format!("/{name}"),
            host_path: dir.0.display().to_string(),
            propagation: *mode as i32,
            ..Default::default()
        })
        .collect();
    let id = pod.run(&cfg)?;
    let ready = dirs[0].0.join("ready");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready.exists() {
        if Instant::now() > deadline {
            bail!("the container never got to make its mounts");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut seen_on_host = Vec::new();
    for ((name, _), dir) in modes.iter().zip(&dirs) {
        if dir.0.join("in/f").exists() {
            seen_on_host.push(*name);
        }
        let fromhost = dir.0.join("fromhost");
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "cri-fromhost", &fromhost.to_string_lossy()])
            .status()?;
        ensure!(status.success(), "mount a tmpfs at {}", fromhost.display());
        std::fs::write(fromhost.join("f"), "made-on-host\n")?;
    }
    std::fs::write(dirs[0].0.join("go"), "")?;
    env.block_on(c.wait_state(&id, state::EXITED, Duration::from_secs(60)))?;
    let text = log_text(&pod.wait_log("propagation", "end")?);
    ensure!(
        seen_on_host == ["both"],
        "container mounts seen on the host through {seen_on_host:?}, expected only Bidirectional's"
    );
    for want in [
        "both=host-mount-seen",
        "tohost=host-mount-seen",
        "none=host-mount-not-seen",
    ] {
        ensure!(text.contains(want), "missing {want:?} in: {text}");
    }
    let result = pod.finish();
    drop(dirs);
    result
}
