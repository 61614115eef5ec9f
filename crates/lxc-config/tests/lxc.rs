//! Rendered configs on the real thing: each test plans a spec, writes the plain-LXC config,
//! starts it with Debian's LXC (`lxc-start -F`) on a busybox rootfs built here, plays the shim's
//! side of the helper protocol (ct-init-bin) with pipes for stdio, and checks from inside the
//! container what the config controls. Needs root, lxc and busybox-static; every container is
//! stopped and removed on drop, also when a test fails.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::ops::{Deref, DerefMut};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use ct_init_bin::{write_spec, InitConnection, InitListener, StdioFds};
use ctinit_proto::StdioFlags;
use lxc_config::{CgroupMode, ContainerPlan, NodeFacts, PlanRequest};
use lxc_fixture::{busybox_rootfs, require_lxc, LxcContainer};
use serde_json::{json, Value};
use skip_harness::{Missing, Outcome};

const T: Duration = Duration::from_secs(30);

fn node_facts() -> NodeFacts {
    let cgroup = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        CgroupMode::Unified
    } else {
        CgroupMode::Legacy
    };
    NodeFacts {
        cgroup,
        lxc_version: (5, 0, 2),
        mount_setattr: lxc_config::MountSetattr::ALL,
    }
}

/// What the workload wrote up to its line "done" (or its end), while it goes on running.
fn read_through_done(stdout: &mut impl BufRead) -> String {
    let mut out = String::new();
    while !out.ends_with("done\n") {
        if stdout.read_line(&mut out).unwrap() == 0 {
            break;
        }
    }
    out
}

/// The fixture's container with an OCI bundle (a busybox rootfs) beside it, configured by a
/// plan of this crate as the shim would.
struct Ct {
    lxc: LxcContainer,
    /// Host PID of the workload (the helper's, which it exec'd).
    pid: Option<i32>,
}

impl Deref for Ct {
    type Target = LxcContainer;
    fn deref(&self) -> &LxcContainer {
        &self.lxc
    }
}

impl DerefMut for Ct {
    fn deref_mut(&mut self) -> &mut LxcContainer {
        &mut self.lxc
    }
}

impl Ct {
    /// A fresh container, or why the real-LXC tests cannot run here.
    fn if_available() -> Result<Ct, Missing> {
        require_lxc()?;
        Ok(Ct::new())
    }

    fn new() -> Ct {
        let ct = Ct {
            lxc: LxcContainer::new("lxcfg"),
            pid: None,
        };
        ct.make_rootfs();
        ct
    }

    fn bundle(&self) -> PathBuf {
        self.dir().join("b")
    }

    fn make_rootfs(&self) {
        let root = self.bundle().join("rootfs");
        busybox_rootfs(
            &root,
            &["etc", "dev", "proc", "sys", "work", "data", "secretdir"],
        );
        fs::set_permissions(root.join("work"), fs::Permissions::from_mode(0o777)).unwrap();
        fs::write(
            root.join("etc/passwd"),
            "root:x:0:0::/:/bin/sh\nuser:x:1000:1000::/:/bin/sh\n",
        )
        .unwrap();
        fs::write(
            root.join("etc/group"),
            "root:x:0:\nwheel:x:10:\nuser:x:1000:\n",
        )
        .unwrap();
        fs::write(root.join("etc/secret"), "top secret\n").unwrap();
        fs::write(root.join("secretdir/inside"), "hidden\n").unwrap();
    }

    /// Plans `spec`, writes the config (and seccomp policy, device nodes) like the shim would.
    fn prepare(&self, spec: &Value) -> ContainerPlan {
        let spec: oci_spec::runtime::Spec = serde_json::from_value(spec.clone()).unwrap();
        let facts = node_facts();
        let plan = lxc_config::plan(&PlanRequest {
            name: &self.name,
            spec: &spec,
            bundle: &self.bundle(),
            state_dir: &self.state(),
            facts: &facts,
        })
        .unwrap();
        self.write_config(&plan.render_lxc());
        plan.write_state_files().unwrap();
        plan
    }

    /// Writes the helper's spec, runs `lxc-start -F` and waits for the helper to connect.
    fn launch(&mut self, init: &lxc_config::InitSpec) -> InitConnection {
        write_spec(&self.helper_dir().join(ctinit_proto::INIT_SPEC_NAME), init).unwrap();
        let listener =
            InitListener::bind(&self.helper_dir().join(ctinit_proto::INIT_SOCKET_NAME)).unwrap();
        self.lxc_start();
        listener
            .accept(T)
            .unwrap_or_else(|e| panic!("{e}\n{}", self.log_text()))
    }

    /// Starts the container and plays the protocol: stdin, stdout and stderr are pipes.
    /// Returns (stdin writer, stdout reader, stderr reader).
    fn start(&mut self, plan: &ContainerPlan) -> (fs::File, fs::File, fs::File) {
        let mut init = plan.init.clone();
        init.stdio = StdioFlags {
            stdin: true,
            stdout: true,
            stderr: true,
        };
        let conn = self.launch(&init);
        let (in_r, in_w) = nix::unistd::pipe().unwrap();
        let (out_r, out_w) = nix::unistd::pipe().unwrap();
        let (err_r, err_w) = nix::unistd::pipe().unwrap();
        self.pid = Some(conn.peer_pid().unwrap());
        conn.send_stdio(StdioFds {
            stdin: Some(in_r),
            stdout: Some(out_w),
            stderr: Some(err_w),
        })
        .unwrap();
        conn.wait_ready(T)
            .unwrap_or_else(|e| panic!("helper not ready: {e}\n{}", self.log_text()));
        conn.start(T)
            .unwrap_or_else(|e| panic!("exec failed: {e}\n{}", self.log_text()));
        let file = |fd: OwnedFd| fs::File::from(fd);
        (file(in_w), file(out_r), file(err_r))
    }

    /// Runs `script` with `sh -c` as the workload and returns its stdout and stderr.
    fn run(&mut self, spec: &Value) -> (String, String) {
        let plan = self.prepare(spec);
        let (stdin, stdout, stderr) = self.start(&plan);
        drop(stdin);
        let out = read_all(stdout);
        let err = read_all(stderr);
        let (out, err) = (out.recv_timeout(T).unwrap(), err.recv_timeout(T).unwrap());
        self.wait_stopped();
        (out, err)
    }

    /// Runs `spec` to the end and checks its stdout, line by line.
    fn run_expecting(&mut self, spec: &Value, expected: &[&str]) {
        let (out, err) = self.run(spec);
        assert_eq!(lines(&out), expected, "stderr: {err}\n{}", self.log_text());
    }

    fn wait_stopped(&mut self) {
        self.lxc.wait_stopped(T);
    }
}

impl Drop for Ct {
    fn drop(&mut self) {
        self.lxc.stop();
        // LXC removes the container's cgroups when it stops; this catches a failed start.
        if let Ok(hierarchies) = fs::read_dir("/sys/fs/cgroup") {
            for h in hierarchies.flatten() {
                let _ = fs::remove_dir(h.path().join(format!("lxc-config-test-{}", self.name)));
            }
        }
    }
}

fn read_all(mut f: fs::File) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = f.read_to_string(&mut s);
        let _ = tx.send(s);
    });
    rx
}

/// The spec every test starts from: busybox sh, new namespaces, proc, a /dev tmpfs.
fn base_spec(script: &str) -> Value {
    json!({
        "ociVersion": "1.2.0",
        "process": {
            "user": {"uid": 0, "gid": 0},
            "args": ["/bin/sh", "-c", script],
            "env": ["PATH=/bin"],
            "cwd": "/"
        },
        "root": {"path": "rootfs"},
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}
        ],
        "linux": {
            "namespaces": [
                {"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"},
                {"type": "network"}, {"type": "cgroup"}
            ]
        }
    })
}

fn lines(s: &str) -> Vec<&str> {
    s.lines().collect()
}

fn identity_env_cwd_hostname_capabilities_network() -> Outcome {
    let mut ct = Ct::if_available()?;
    let mut spec = base_spec(
        "echo \"env=$FOO|$BAR\"; pwd; id -u; id -g; id -G; hostname; \
         grep CapBnd /proc/self/status; grep CapEff /proc/self/status; echo pid=$$; \
         grep -c : /proc/net/dev; echo done",
    );
    spec["process"]["user"] = json!({"uid": 1000, "gid": 1000, "additionalGids": [10, 20]});
    spec["process"]["env"] = json!(["PATH=/bin", "FOO=a b=c", "BAR=x\ny"]);
    spec["process"]["cwd"] = json!("/work");
    spec["hostname"] = json!("lxcfg-host");
    spec["process"]["capabilities"] = json!({
        "bounding": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
        "effective": ["CAP_KILL"],
        "permitted": ["CAP_KILL"],
        "ambient": ["CAP_KILL"],
        "inheritable": ["CAP_KILL"]
    });
    ct.run_expecting(
        &spec,
        &[
            "env=a b=c|x",
            "y",
            "/work",
            "1000",
            "1000",
            "1000 10 20",
            "lxcfg-host",
            // CAP_CHOWN (0), CAP_KILL (5), CAP_NET_BIND_SERVICE (10): 0x421.
            "CapBnd:\t0000000000000421",
            // CAP_KILL kept as an ambient capability across the exec of sh.
            "CapEff:\t0000000000000020",
            "pid=1",
            // A new network namespace with only loopback (header lines have no ':').
            "1",
            "done",
        ],
    );
    Ok(())
}

fn mounts_readonly_root_rlimit_masked_paths_seccomp_devices() -> Outcome {
    let mut ct = Ct::if_available()?;
    let host_data = ct.dir().join("hostdata");
    fs::create_dir_all(&host_data).unwrap();
    fs::write(host_data.join("hello"), "from the host\n").unwrap();
    let mut spec = base_spec(
        "touch /rootfile 2>/dev/null && echo root=rw || echo root=ro; \
         cat /data/hello; touch /data/x 2>/dev/null && echo data=rw || echo data=ro; \
         touch /tmp/x && echo tmp=rw; \
         cat /new/deep/hello; cat /etc/newfile; \
         echo nofile=$(ulimit -n)/$(ulimit -Hn); \
         echo secret=$(cat /etc/secret | wc -c); echo secretdir=$(ls /secretdir | wc -l); \
         touch /work/x 2>/dev/null && echo work=rw || echo work=ro; \
         mkdir /tmp/d 2>&1; \
         echo x > /dev/mynull && echo mynull=ok; \
         head -c 4 /dev/zero | wc -c; \
         echo done",
    );
    spec["root"]["readonly"] = json!(true);
    spec["mounts"].as_array_mut().unwrap().extend([
        json!({"destination": "/data", "type": "bind", "source": host_data, "options": ["rbind", "ro"]}),
        json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "size=1m"]}),
        // Targets missing from the image: created before the root becomes read-only.
        json!({"destination": "/new/deep", "type": "bind", "source": host_data, "options": ["rbind", "ro"]}),
        json!({"destination": "/etc/newfile", "type": "bind", "source": host_data.join("hello"), "options": ["bind", "ro"]}),
    ]);
    spec["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "soft": 256, "hard": 512}]);
    spec["linux"]["maskedPaths"] = json!(["/etc/secret", "/secretdir", "/proc/does-not-exist"]);
    spec["linux"]["readonlyPaths"] = json!(["/work"]);
    spec["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]
    });
    spec["linux"]["devices"] =
        json!([{"path": "/dev/mynull", "type": "c", "major": 1, "minor": 3, "fileMode": 438}]);
    spec["linux"]["resources"] = json!({"devices": [{"allow": false, "access": "rwm"}]});
    ct.run_expecting(
        &spec,
        &[
            "root=ro",
            "from the host",
            "data=ro",
            "tmp=rw",
            "from the host",
            "from the host",
            "nofile=256/512",
            "secret=0",
            "secretdir=0",
            "work=ro",
            "mkdir: can't create directory '/tmp/d': Permission denied",
            "mynull=ok",
            "4",
            "done",
        ],
    );
    Ok(())
}

/// The memory limit lands in the container's own cgroup (`linux.cgroupsPath`) and the kernel
/// enforces it: allocating past it gets the allocating process OOM-killed.
fn memory_limit_is_enforced_by_the_container_cgroup() -> Outcome {
    let facts = node_facts();
    let mut ct = Ct::if_available()?;
    let cgroup = format!("lxc-config-test-{}", ct.name);
    const LIMIT: i64 = 32 * 1024 * 1024;
    let mut spec = base_spec(
        "echo started; read go; \
         dd if=/dev/zero of=/dev/null bs=64M count=1 2>/dev/null; echo dd=$?; \
         dd if=/dev/zero of=/dev/null bs=8M count=1 2>/dev/null; echo small=$?",
    );
    spec["linux"]["cgroupsPath"] = json!(format!("/{cgroup}"));
    spec["linux"]["resources"] =
        json!({"memory": {"limit": LIMIT, "swap": LIMIT}, "pids": {"limit": 50}});
    let plan = ct.prepare(&spec);
    let (mut stdin, stdout, stderr) = ct.start(&plan);
    let mut out = BufReader::new(stdout);
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    assert_eq!(first, "started\n", "{}", ct.log_text());
    // While the workload runs, its cgroup on the host carries the limit.
    let (file, want) = match facts.cgroup {
        CgroupMode::Legacy => (
            format!("/sys/fs/cgroup/memory/{cgroup}/memory.limit_in_bytes"),
            LIMIT.to_string(),
        ),
        CgroupMode::Unified => (
            format!("/sys/fs/cgroup/{cgroup}/memory.max"),
            LIMIT.to_string(),
        ),
    };
    let got =
        fs::read_to_string(&file).unwrap_or_else(|e| panic!("{file}: {e}\n{}", ct.log_text()));
    assert_eq!(got.trim(), want);
    if facts.cgroup == CgroupMode::Legacy {
        let memsw = fs::read_to_string(format!(
            "/sys/fs/cgroup/memory/{cgroup}/memory.memsw.limit_in_bytes"
        ))
        .unwrap();
        assert_eq!(memsw.trim(), LIMIT.to_string());
        let pids = fs::read_to_string(format!("/sys/fs/cgroup/pids/{cgroup}/pids.max")).unwrap();
        assert_eq!(pids.trim(), "50");
        // The workload (host PID of the helper that exec'd) is in that cgroup.
        let procs =
            fs::read_to_string(format!("/sys/fs/cgroup/memory/{cgroup}/cgroup.procs")).unwrap();
        assert!(!procs.trim().is_empty());
    }
    stdin.write_all(b"go\n").unwrap();
    drop(stdin);
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    let err = read_all(stderr).recv_timeout(T).unwrap();
    ct.wait_stopped();
    // 137 = killed by SIGKILL (the OOM killer); 8 MiB fits under the limit.
    assert_eq!(
        lines(&rest),
        ["dd=137", "small=0"],
        "stderr: {err}\n{}",
        ct.log_text()
    );
    Ok(())
}

/// Every golden config (both renderers) loads in the installed LXC: `lxc-info` fails with
/// "Failed to load config" on any key or value LXC 5 does not accept.
fn golden_configs_load_in_installed_lxc() -> Outcome {
    require_lxc()?;
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("c1")).unwrap();
    let mut checked = 0;
    let mut files: Vec<PathBuf> = fs::read_dir(&golden)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".conf"))
        .collect();
    files.sort();
    for f in files {
        let text = fs::read_to_string(&f).unwrap();
        let config = if f.to_string_lossy().ends_with(".pve.conf") {
            // The raw lines of a CT config, as Proxmox writes them into the LXC config; the
            // include itself is checked on its own.
            text.lines()
                .filter(|l| l.starts_with("lxc.") && !l.starts_with("lxc.include:"))
                .map(|l| l.replacen(": ", " = ", 1) + "\n")
                .collect::<String>()
        } else {
            text
        };
        fs::write(dir.path().join("c1/config"), &config).unwrap();
        let out = Command::new("lxc-info")
            .args(["-n", "c1", "-P"])
            .arg(dir.path())
            .args(["-c", "lxc.init.cmd"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && !stderr.contains("Failed"),
            "{}: {stderr}\n{config}",
            f.display()
        );
        checked += 1;
    }
    assert!(checked >= 12, "only {checked} golden configs found");
    Ok(())
}

/// The Proxmox rendering on the real thing: the CT config's raw lines and the include, after
/// what pve-container's `update_lxc_config` writes for such a CT (`ostype: unmanaged` pulls in
/// common.conf, which drops capabilities, loads a seccomp policy and sets device rules). The
/// include's resets must leave exactly the spec's security and limits.
fn pve_rendering_resets_common_conf() -> Outcome {
    let facts = node_facts();
    let mut ct = Ct::if_available()?;
    let mut spec = base_spec(
        "grep -E '^(CapBnd|Seccomp):' /proc/self/status; hostname; \
         head -c 3 /dev/zero | wc -c; echo done; read go",
    );
    spec["hostname"] = json!("pve-ct");
    spec["process"]["capabilities"] = json!({"bounding": ["CAP_KILL", "CAP_SYS_TIME"]});
    spec["linux"]["resources"] = json!({
        "memory": {"limit": 64 * 1024 * 1024},
        "devices": [{"allow": false, "access": "rwm"}]
    });
    let plan = ct.prepare(&spec);
    let include = ct.state().join("lxc.conf");
    let pve = plan.render_pve(&include);
    fs::write(&include, &pve.include).unwrap();
    let cgroup = format!("lxc-config-test-{}", ct.name);
    // What update_lxc_config writes before the CT's raw lxc.* lines (LXC >= 4, privileged,
    // console: 0, tty: 0), with our own cgroup directory instead of lxc/VMID.
    let mut config = format!(
        "lxc.cgroup.relative = 0\n\
         lxc.cgroup.dir.monitor = lxc.monitor/{name}\n\
         lxc.cgroup.dir.container = {cgroup}\n\
         lxc.cgroup.dir.container.inner = ns\n\
         lxc.arch = amd64\n\
         lxc.include = /usr/share/lxc/config/common.conf\n\
         lxc.monitor.unshare = 1\n\
         lxc.console.path = none\n\
         lxc.tty.max = 0\n\
         lxc.environment = TERM=linux\n\
         lxc.uts.name = pve-ct\n\
         lxc.cgroup2.memory.max = 67108864\n\
         lxc.cgroup2.memory.high = 66584576\n\
         lxc.cgroup2.memory.swap.max = 0\n\
         lxc.rootfs.path = {rootfs}\n",
        name = ct.name,
        rootfs = plan.rootfs.display(),
    );
    for l in pve.ct_conf.lines().filter(|l| l.starts_with("lxc.")) {
        config.push_str(&l.replacen(": ", " = ", 1));
        config.push('\n');
    }
    ct.write_config(&config);
    let (mut stdin, stdout, stderr) = ct.start(&plan);
    let mut stdout = BufReader::new(stdout);
    let out = read_through_done(&mut stdout);
    // While the workload waits for its stdin, the include's limit is on its cgroup.
    let limit_file = match facts.cgroup {
        CgroupMode::Legacy => format!("/sys/fs/cgroup/memory/{cgroup}/memory.limit_in_bytes"),
        CgroupMode::Unified => format!("/sys/fs/cgroup/{cgroup}/memory.max"),
    };
    let limit = fs::read_to_string(&limit_file);
    stdin.write_all(b"go\n").unwrap();
    drop(stdin);
    let err = read_all(stderr).recv_timeout(T).unwrap();
    ct.wait_stopped();
    let expected = [
        // CAP_KILL (5) and CAP_SYS_TIME (25), which common.conf would drop.
        "CapBnd:\t0000000002000020",
        // common.seccomp is gone: no filter.
        "Seccomp:\t0",
        "pve-ct",
        "3",
        "done",
    ];
    assert_eq!(
        lines(&out),
        expected,
        "stderr: {err}\n{config}\n{}",
        ct.log_text()
    );
    assert_eq!(
        limit.unwrap_or_else(|e| panic!("{limit_file}: {e}")).trim(),
        (64 * 1024 * 1024).to_string()
    );
    Ok(())
}

/// /proc and /sys as Kubernetes sets them up: masked and read-only /proc paths, a namespaced
/// sysctl, sysfs read-only with the cgroup filesystem on it showing the container's own limit.
fn proc_sys_sysctl_and_cgroup_mount() -> Outcome {
    let facts = node_facts();
    let mut ct = Ct::if_available()?;
    let mut spec = base_spec(
        "echo timer_list=$(cat /proc/timer_list | wc -c); \
         echo 1 > /proc/sys/kernel/ns_last_pid 2>/dev/null && echo procsys=rw || echo procsys=ro; \
         echo port=$(cat /proc/sys/net/ipv4/ip_unprivileged_port_start); \
         touch /sys/x 2>/dev/null && echo sys=rw || echo sys=ro; \
         cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max; \
         echo done",
    );
    spec["mounts"].as_array_mut().unwrap().extend([
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}),
    ]);
    spec["linux"]["maskedPaths"] = json!(["/proc/timer_list", "/proc/keys", "/proc/acpi"]);
    spec["linux"]["readonlyPaths"] = json!(["/proc/sys", "/proc/sysrq-trigger"]);
    spec["linux"]["sysctl"] = json!({"net.ipv4.ip_unprivileged_port_start": "80"});
    spec["linux"]["cgroupsPath"] = json!(format!("lxc-config-test-{}", ct.name));
    spec["linux"]["resources"] = json!({"memory": {"limit": 48 * 1024 * 1024}});
    let (out, err) = ct.run(&spec);
    let _ = facts;
    let expected = [
        "timer_list=0",
        "procsys=ro",
        "port=80",
        "sys=ro",
        "50331648",
        "done",
    ];
    assert_eq!(lines(&out), expected, "stderr: {err}\n{}", ct.log_text());
    Ok(())
}

/// Every capability name the OCI spec knows is one LXC 5 accepts in `lxc.cap.keep`.
fn all_capabilities_load_in_installed_lxc() -> Outcome {
    require_lxc()?;
    let names = [
        "CAP_AUDIT_CONTROL",
        "CAP_AUDIT_READ",
        "CAP_AUDIT_WRITE",
        "CAP_BLOCK_SUSPEND",
        "CAP_BPF",
        "CAP_CHECKPOINT_RESTORE",
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_DAC_READ_SEARCH",
        "CAP_FOWNER",
        "CAP_FSETID",
        "CAP_IPC_LOCK",
        "CAP_IPC_OWNER",
        "CAP_KILL",
        "CAP_LEASE",
        "CAP_LINUX_IMMUTABLE",
        "CAP_MAC_ADMIN",
        "CAP_MAC_OVERRIDE",
        "CAP_MKNOD",
        "CAP_NET_ADMIN",
        "CAP_NET_BIND_SERVICE",
        "CAP_NET_BROADCAST",
        "CAP_NET_RAW",
        "CAP_PERFMON",
        "CAP_SETFCAP",
        "CAP_SETGID",
        "CAP_SETPCAP",
        "CAP_SETUID",
        "CAP_SYSLOG",
        "CAP_SYS_ADMIN",
        "CAP_SYS_BOOT",
        "CAP_SYS_CHROOT",
        "CAP_SYS_MODULE",
        "CAP_SYS_NICE",
        "CAP_SYS_PACCT",
        "CAP_SYS_PTRACE",
        "CAP_SYS_RAWIO",
        "CAP_SYS_RESOURCE",
        "CAP_SYS_TIME",
        "CAP_SYS_TTY_CONFIG",
        "CAP_WAKE_ALARM",
    ];
    let ct = Ct::new();
    let mut spec = base_spec("true");
    spec["process"]["capabilities"] = json!({"bounding": names.to_vec()});
    let plan = ct.prepare(&spec);
    let keep = plan
        .lxc_entries()
        .iter()
        .find(|(k, _)| k == "lxc.cap.keep")
        .map(|(_, v)| v.clone())
        .unwrap();
    assert_eq!(keep.split(' ').count(), names.len());
    let out = Command::new("lxc-info")
        .args(["-n", &ct.name, "-P"])
        .arg(ct.lxcpath())
        .args(["-c", "lxc.cap.keep"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // lxc-info prints the list one name per line.
    let loaded: Vec<&str> = stdout
        .trim()
        .trim_start_matches("lxc.cap.keep = ")
        .lines()
        .collect();
    assert_eq!(loaded, keep.split(' ').collect::<Vec<_>>());
    Ok(())
}

/// An allowlist seccomp profile as Kubernetes' RuntimeDefault has it: default errno, every
/// syscall of the host ABI allowed except a few, a name libseccomp does not know (LXC skips
/// it), and an argument filter.
fn seccomp_allowlist_with_argument_filter() -> Outcome {
    require_lxc()?;
    let header = "/usr/include/x86_64-linux-gnu/asm/unistd_64.h";
    let Ok(text) = fs::read_to_string(header) else {
        return Err(Missing(format!(
            "{header} not found (install linux-libc-dev)"
        )));
    };
    let mut names: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("#define __NR_"))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| !["mkdir", "mkdirat", "kill"].contains(n))
        .map(str::to_string)
        .collect();
    assert!(names.len() > 300);
    names.push("not_a_real_syscall".into());
    let mut ct = Ct::new();
    let mut spec =
        base_spec("mkdir /tmp/d 2>&1; kill -0 $$ && echo kill0=ok; kill -CONT $$ 2>&1; echo done");
    spec["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 1,
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [
            {"names": names, "action": "SCMP_ACT_ALLOW"},
            // kill only with signal 0 (a liveness probe)
            {"names": ["kill"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 1, "value": 0, "op": "SCMP_CMP_EQ"}]}
        ]
    });
    ct.run_expecting(
        &spec,
        &[
            "mkdir: can't create directory '/tmp/d': Operation not permitted",
            "kill0=ok",
            "sh: can't kill pid 1: Operation not permitted",
            "done",
        ],
    );
    Ok(())
}

/// Kubernetes pods: a container joins another one's network namespace by path
/// (`lxc.namespace.share.net`).
fn join_network_namespace_by_path() -> Outcome {
    let mut sandbox = Ct::if_available()?;
    let spec = base_spec("readlink /proc/self/ns/net; read go");
    let plan = sandbox.prepare(&spec);
    let (mut stdin, stdout, _stderr) = sandbox.start(&plan);
    let mut reader = BufReader::new(stdout);
    let mut sandbox_ns = String::new();
    reader.read_line(&mut sandbox_ns).unwrap();
    let pid = sandbox.pid.unwrap();

    let mut app = Ct::new();
    let mut spec = base_spec("readlink /proc/self/ns/net");
    spec["linux"]["namespaces"][4] =
        json!({"type": "network", "path": format!("/proc/{pid}/ns/net")});
    let (out, err) = app.run(&spec);
    stdin.write_all(b"go\n").unwrap();
    drop(stdin);
    sandbox.wait_stopped();
    let host_ns = fs::read_link("/proc/self/ns/net").unwrap();
    assert!(sandbox_ns.starts_with("net:["), "{sandbox_ns}");
    assert_ne!(sandbox_ns.trim(), host_ns.to_string_lossy());
    assert_eq!(out, sandbox_ns, "stderr: {err}\n{}", app.log_text());
    Ok(())
}

/// Images often have `/var/run -> /run` (an absolute symlink); Kubernetes mounts the service
/// account under `/var/run/secrets/...`.
fn mount_target_through_absolute_symlink() -> Outcome {
    let mut ct = Ct::if_available()?;
    let root = ct.bundle().join("rootfs");
    fs::create_dir_all(root.join("run")).unwrap();
    fs::create_dir_all(root.join("var")).unwrap();
    symlink("/run", root.join("var/run")).unwrap();
    let host_data = ct.dir().join("sa");
    fs::create_dir_all(&host_data).unwrap();
    fs::write(host_data.join("token"), "tok\n").unwrap();
    let mut spec = base_spec("cat /var/run/secrets/sa/token; cat /run/secrets/sa/token; echo done");
    spec["root"]["readonly"] = json!(true);
    spec["mounts"].as_array_mut().unwrap().push(json!({
        "destination": "/var/run/secrets/sa", "type": "bind", "source": host_data, "options": ["rbind", "ro"]
    }));
    let (out, err) = ct.run(&spec);
    assert_eq!(
        lines(&out),
        ["tok", "tok", "done"],
        "stderr: {err}\n{}",
        ct.log_text()
    );
    // The target was created inside the image, nothing on the host's /run.
    assert!(root.join("run/secrets/sa").is_dir());
    assert!(!Path::new("/run/secrets/sa").exists());
    Ok(())
}

/// A namespace the spec does not list is the host's (here: the network, as with
/// `hostNetwork: true`); a new time namespace gets the spec's clock offsets.
fn host_network_and_time_offsets() -> Outcome {
    let mut ct = Ct::if_available()?;
    let mut spec = base_spec("readlink /proc/self/ns/net; cut -d. -f1 /proc/uptime; echo done");
    let ns = spec["linux"]["namespaces"].as_array_mut().unwrap();
    ns.retain(|n| n["type"] != "network");
    ns.push(json!({"type": "time"}));
    spec["linux"]["timeOffsets"] = json!({"boottime": {"secs": 1_000_000, "nanosecs": 0}});
    let host_uptime: u64 = fs::read_to_string("/proc/uptime")
        .unwrap()
        .split('.')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let (out, err) = ct.run(&spec);
    let l = lines(&out);
    assert_eq!(l.len(), 3, "stderr: {err}\n{}", ct.log_text());
    let host_ns = fs::read_link("/proc/self/ns/net").unwrap();
    assert_eq!(l[0], host_ns.to_string_lossy());
    let uptime: u64 = l[1].parse().unwrap();
    assert!(
        uptime >= host_uptime + 1_000_000 && uptime < host_uptime + 1_000_000 + 60,
        "uptime {uptime} vs host {host_uptime}"
    );
    assert_eq!(l[2], "done");
    Ok(())
}

/// `linux.netDevices` moves a host interface into the container under a new name
/// (`lxc.net.N.type = phys`); `linux.personality` LINUX32 (`lxc.arch = linux32`); and the cpu
/// and cpuset limits land in the container's cgroup.
fn net_device_personality_and_cpu_limits() -> Outcome {
    let facts = node_facts();
    let mut ct = Ct::if_available()?;
    // The container's number in this run keeps the names apart.
    let n = ct.name.rsplit('-').next().unwrap_or("0").to_string();
    // Interface names are at most 15 bytes.
    let host_if = format!("lxcfg{}x{n}", std::process::id() % 100_000);
    let peer_if = format!("lxcfg{}y{n}", std::process::id() % 100_000);
    let added = Command::new("ip")
        .args([
            "link", "add", &host_if, "type", "veth", "peer", "name", &peer_if,
        ])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    skip_harness::require(
        added,
        "cannot create a veth pair (ip link add ... type veth)",
    )?;
    struct DelLink(String);
    impl Drop for DelLink {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["link", "del", &self.0]).status();
        }
    }
    let _cleanup = DelLink(peer_if.clone());
    let cgroup = format!("lxc-config-test-{}", ct.name);
    let mut spec = base_spec(
        "grep -c 'net1:' /proc/net/dev; uname -m; cat /proc/self/status | grep -c Cpus_allowed_list; \
         echo done; read go",
    );
    spec["linux"]["netDevices"] = json!({ host_if.clone(): {"name": "net1"} });
    spec["linux"]["personality"] = json!({"domain": "LINUX32"});
    spec["linux"]["cgroupsPath"] = json!(cgroup.clone());
    spec["linux"]["resources"] = json!({
        "cpu": {"shares": 512, "quota": 25000, "period": 100000, "cpus": "0"}
    });
    let plan = ct.prepare(&spec);
    let (mut stdin, stdout, stderr) = ct.start(&plan);
    let mut stdout = BufReader::new(stdout);
    let out = read_through_done(&mut stdout);
    let read = |f: &str| fs::read_to_string(f).map(|s| s.trim().to_string());
    let limits = match facts.cgroup {
        CgroupMode::Legacy => vec![
            read(&format!("/sys/fs/cgroup/cpu/{cgroup}/cpu.shares")),
            read(&format!("/sys/fs/cgroup/cpu/{cgroup}/cpu.cfs_quota_us")),
            read(&format!("/sys/fs/cgroup/cpu/{cgroup}/cpu.cfs_period_us")),
            read(&format!("/sys/fs/cgroup/cpuset/{cgroup}/cpuset.cpus")),
        ],
        CgroupMode::Unified => vec![
            read(&format!("/sys/fs/cgroup/{cgroup}/cpu.weight")),
            read(&format!("/sys/fs/cgroup/{cgroup}/cpu.max")),
            read(&format!("/sys/fs/cgroup/{cgroup}/cpuset.cpus")),
        ],
    };
    // While it runs, the host no longer has the interface.
    let on_host = Path::new("/sys/class/net").join(&host_if).exists();
    stdin.write_all(b"go\n").unwrap();
    drop(stdin);
    let err = read_all(stderr).recv_timeout(T).unwrap();
    ct.wait_stopped();
    assert_eq!(
        lines(&out),
        ["1", "i686", "1", "done"],
        "stderr: {err}\n{}",
        ct.log_text()
    );
    assert!(!on_host);
    let limits: Vec<String> = limits.into_iter().map(|r| r.unwrap()).collect();
    match facts.cgroup {
        CgroupMode::Legacy => assert_eq!(limits, ["512", "25000", "100000", "0"]),
        CgroupMode::Unified => assert_eq!(limits, ["20", "25000 100000", "0"]),
    }
    Ok(())
}

/// The spec containerd generates by default (`ctr run`, and the base of CRI's): its mounts,
/// masked and read-only paths, default capabilities and device rules work together.
fn containerd_default_spec() -> Outcome {
    let mut ct = Ct::if_available()?;
    let caps = json!(lxc_fixture::CONTAINERD_DEFAULT_CAPS);
    let spec = json!({
        "ociVersion": "1.1.0",
        "process": {
            "user": {"uid": 0, "gid": 0},
            "args": ["/bin/sh", "-c", "grep -E '^Cap(Bnd|Eff|Amb)' /proc/self/status; \
                     echo nofile=$(ulimit -n); ls /run /dev/shm /dev/mqueue >/dev/null && echo dirs=ok; \
                     ls /sys/firmware | wc -l; head -c 1 /dev/urandom | wc -c; \
                     mknod /tmp/blk b 8 0 2>/dev/null && (head -c 1 /tmp/blk >/dev/null 2>&1 || echo blk=denied); \
                     echo done"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "cwd": "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs"},
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/run", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}
        ],
        "linux": {
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "cgroupsPath": format!("/lxc-config-test-{}", ct.name),
            "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, {"type": "network"}],
            "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                            "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
                            "/sys/devices/virtual/powercap", "/proc/scsi"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
        }
    });
    ct.run_expecting(
        &spec,
        &[
            "CapEff:\t00000000a80425fb",
            "CapBnd:\t00000000a80425fb",
            "CapAmb:\t0000000000000000",
            "nofile=1024",
            "dirs=ok",
            "0",
            "1",
            // mknod is allowed ("b *:* m"), opening a block device is not.
            "blk=denied",
            "done",
        ],
    );
    Ok(())
}

/// A Kubernetes app container: it joins the sandbox's network, IPC, UTS and PID namespaces by
/// path (the spec still names the pod's hostname) and gets its own mount and cgroup namespaces.
fn pod_app_container_joins_sandbox_namespaces() -> Outcome {
    let mut sandbox = Ct::if_available()?;
    let mut spec = base_spec("echo ready; read go # sandbox-marker");
    spec["hostname"] = json!("my-pod");
    let plan = sandbox.prepare(&spec);
    let (mut stdin, stdout, _stderr) = sandbox.start(&plan);
    let mut reader = BufReader::new(stdout);
    let mut ready = String::new();
    reader.read_line(&mut ready).unwrap();
    assert_eq!(ready, "ready\n", "{}", sandbox.log_text());
    let pid = sandbox.pid.unwrap();

    let mut app = Ct::new();
    let mut spec = base_spec(
        "hostname; for n in net ipc uts pid mnt; do readlink /proc/self/ns/$n; done; \
         ps -o pid,args | grep -c 'sandbox-mark[e]r'; echo done",
    );
    spec["hostname"] = json!("my-pod");
    spec["linux"]["namespaces"] = json!([
        {"type": "pid", "path": format!("/proc/{pid}/ns/pid")},
        {"type": "ipc", "path": format!("/proc/{pid}/ns/ipc")},
        {"type": "uts", "path": format!("/proc/{pid}/ns/uts")},
        {"type": "network", "path": format!("/proc/{pid}/ns/net")},
        {"type": "mount"},
        {"type": "cgroup"}
    ]);
    let (out, err) = app.run(&spec);
    let sandbox_ns: Vec<String> = ["net", "ipc", "uts", "pid", "mnt"]
        .iter()
        .map(|n| {
            fs::read_link(format!("/proc/{pid}/ns/{n}"))
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    stdin.write_all(b"go\n").unwrap();
    drop(stdin);
    sandbox.wait_stopped();
    let l = lines(&out);
    assert_eq!(l.len(), 8, "stderr: {err}\n{out}\n{}", app.log_text());
    assert_eq!(l[0], "my-pod");
    assert_eq!(
        &l[1..5],
        &sandbox_ns[..4],
        "net, ipc, uts, pid are the sandbox's"
    );
    assert_ne!(l[5], sandbox_ns[4], "the mount namespace is the app's own");
    // The sandbox's process is visible in the shared PID namespace (the bracket keeps the
    // pattern from matching the app's own command lines).
    assert_eq!(l[6], "1", "{out}");
    assert_eq!(l[7], "done");
    Ok(())
}

/// A user namespace from `linux.uidMappings`/`gidMappings` (`lxc.idmap`): root in the
/// container is uid 100000 on the host.
fn user_namespace_mappings() -> Outcome {
    require_lxc()?;
    lxc_fixture::require_subids()?;
    let mut ct = Ct::new();
    // The mapped root must be able to reach its rootfs and the helper's directory.
    fs::set_permissions(ct.dir(), fs::Permissions::from_mode(0o755)).unwrap();
    let mut spec = base_spec(
        "id -u; tr -s ' ' < /proc/self/uid_map; tr -s ' ' < /proc/self/gid_map; \
         stat -c %u /bin/busybox; echo done; read go",
    );
    spec["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "user"}));
    spec["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    spec["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    let plan = ct.prepare(&spec);
    let (mut stdin, stdout, stderr) = ct.start(&plan);
    let mut stdout = BufReader::new(stdout);
    let out = read_through_done(&mut stdout);
    // Seen from the host, the workload runs as uid 100000.
    let status = fs::read_to_string(format!("/proc/{}/status", ct.pid.unwrap())).unwrap();
    let host_uid = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("")
        .to_string();
    stdin.write_all(b"go\n").unwrap();
    drop(stdin);
    let err = read_all(stderr).recv_timeout(T).unwrap();
    ct.wait_stopped();
    let l: Vec<String> = out.lines().map(|l| l.trim().to_string()).collect();
    assert_eq!(
        l,
        ["0", "0 100000 65536", "0 100000 65536", "65534", "done"],
        "stderr: {err}\n{}",
        ct.log_text()
    );
    assert_eq!(host_uid, "100000");
    Ok(())
}

/// `process.terminal`: the helper opens a pty in the container's own devpts instance
/// (`lxc.pty.max`) and hands the master to the shim; the workload sees a terminal of the
/// spec's console size.
fn terminal_in_the_container_devpts() -> Outcome {
    let mut ct = Ct::if_available()?;
    let mut spec = base_spec("tty; stty size; echo done");
    spec["process"]["terminal"] = json!(true);
    spec["process"]["consoleSize"] = json!({"height": 33, "width": 101});
    let plan = ct.prepare(&spec);
    let mut init = plan.init.clone();
    init.stdio = StdioFlags::default();
    let conn = ct.launch(&init);
    conn.send_stdio(StdioFds::default()).unwrap();
    let master = conn
        .wait_ready(T)
        .unwrap_or_else(|e| panic!("{e}\n{}", ct.log_text()))
        .expect("a pty master for a terminal");
    conn.start(T).unwrap();
    // Read until the workload is done (EIO once the slave side is closed).
    let rx = {
        let (tx, rx) = mpsc::channel();
        let mut f = fs::File::from(master);
        std::thread::spawn(move || {
            let mut all = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                match f.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => all.extend_from_slice(&buf[..n]),
                }
                if String::from_utf8_lossy(&all).contains("done") {
                    break;
                }
            }
            let _ = tx.send(String::from_utf8_lossy(&all).into_owned());
        });
        rx
    };
    let out = rx.recv_timeout(T).unwrap();
    ct.wait_stopped();
    let l: Vec<&str> = out.lines().map(|l| l.trim_end_matches('\r')).collect();
    assert_eq!(l, ["/dev/pts/0", "33 101", "done"], "{}", ct.log_text());
    Ok(())
}

/// lxcfs on a node: the lxcfs package adds `lxc.hook.mount = /usr/share/lxcfs/lxc.mount.hook`
/// to every container through `common.conf.d/00-lxcfs.conf`, which binds lxcfs's files over
/// `/proc/meminfo` and others. Here a node's common.conf is emulated by one that includes this
/// host's and adds a mount hook doing the same bind with a file of its own (lxcfs itself is
/// not installed on the test machines). By default the include resets it, so `/proc/meminfo`
/// is the kernel's as under runc; with `PveOptions { lxcfs: true }` the hook stays.
fn pve_lxcfs_hook_is_reset_unless_asked_for() -> Outcome {
    for keep in [false, true] {
        let mut ct = Ct::if_available()?;
        let fake = ct.state().join("lxcfs-meminfo");
        fs::write(&fake, "MemTotal: 4242 kB (lxcfs)\n").unwrap();
        let hook = ct.state().join("lxcfs-mount-hook");
        fs::write(
            &hook,
            format!(
                "#!/bin/sh\nmount -n --bind {} \"${{LXC_ROOTFS_MOUNT}}/proc/meminfo\"\n",
                fake.display()
            ),
        )
        .unwrap();
        fs::set_permissions(&hook, fs::Permissions::from_mode(0o755)).unwrap();
        let node_common = ct.state().join("node-common.conf");
        fs::write(
            &node_common,
            format!(
                "lxc.include = /usr/share/lxc/config/common.conf\nlxc.hook.mount = {}\n",
                hook.display()
            ),
        )
        .unwrap();
        let spec = base_spec("head -n 1 /proc/meminfo; echo done");
        let plan = ct.prepare(&spec);
        let include = ct.state().join("lxc.conf");
        let pve = plan.render_pve_with(&include, lxc_config::PveOptions { lxcfs: keep });
        fs::write(&include, &pve.include).unwrap();
        let mut config = format!(
            "lxc.arch = amd64\nlxc.include = {}\nlxc.uts.name = lxcfs\nlxc.rootfs.path = {}\n",
            node_common.display(),
            plan.rootfs.display()
        );
        for l in pve.ct_conf.lines().filter(|l| l.starts_with("lxc.")) {
            config.push_str(&l.replacen(": ", " = ", 1));
            config.push('\n');
        }
        ct.write_config(&config);
        let (stdin, stdout, stderr) = ct.start(&plan);
        drop(stdin);
        let out = read_all(stdout).recv_timeout(T).unwrap();
        let err = read_all(stderr).recv_timeout(T).unwrap();
        ct.wait_stopped();
        let first = lines(&out).first().copied().unwrap_or("").to_string();
        assert_eq!(
            first.contains("(lxcfs)"),
            keep,
            "lxcfs {keep}: /proc/meminfo starts {first:?}; stderr: {err}\n{config}\n{}",
            ct.log_text()
        );
        assert!(first.starts_with("MemTotal:"), "{first:?}");
    }
    Ok(())
}

skip_harness::main!(
    identity_env_cwd_hostname_capabilities_network,
    mounts_readonly_root_rlimit_masked_paths_seccomp_devices,
    memory_limit_is_enforced_by_the_container_cgroup,
    golden_configs_load_in_installed_lxc,
    pve_rendering_resets_common_conf,
    proc_sys_sysctl_and_cgroup_mount,
    all_capabilities_load_in_installed_lxc,
    seccomp_allowlist_with_argument_filter,
    join_network_namespace_by_path,
    mount_target_through_absolute_symlink,
    host_network_and_time_offsets,
    net_device_personality_and_cpu_limits,
    containerd_default_spec,
    pod_app_container_joins_sandbox_namespaces,
    user_namespace_mappings,
    terminal_in_the_container_devpts,
    pve_lxcfs_hook_is_reset_unless_asked_for,
);
