//! Every rejection names the OCI field it is about.

mod common;

use lxc_config::CgroupMode;
use serde_json::{json, Value};

/// Sets `pointer` (creating objects on the way) in a copy of `base`.
fn with(base: &Value, pointer: &str, value: Value) -> Value {
    let mut v = base.clone();
    let mut cur = &mut v;
    let parts: Vec<&str> = pointer.trim_start_matches('/').split('/').collect();
    for (i, p) in parts.iter().enumerate() {
        let last = i == parts.len() - 1;
        if let Ok(idx) = p.parse::<usize>() {
            let arr = cur.as_array_mut().unwrap();
            if last {
                if idx < arr.len() {
                    arr[idx] = value;
                } else {
                    arr.push(value);
                }
                return v;
            }
            cur = &mut arr[idx];
        } else {
            let obj = cur.as_object_mut().unwrap();
            if last {
                obj.insert(p.to_string(), value);
                return v;
            }
            cur = obj.entry(p.to_string()).or_insert(json!({}));
        }
    }
    v
}

fn expect_err(spec: &Value, mode: CgroupMode, field: &str, fragment: &str) {
    match common::plan_value(spec, mode) {
        Ok(_) => panic!("expected an error about {field}"),
        Err(e) => {
            let msg = e.to_string();
            assert_eq!(e.field(), field, "{msg}");
            assert!(msg.starts_with(field), "{msg}");
            assert!(msg.contains(fragment), "{msg} lacks {fragment:?}");
        }
    }
}

#[test]
fn rejections_name_their_field() {
    let min = common::fixture("minimal");
    let k8s = common::fixture("k8s");
    let l = CgroupMode::Legacy;
    let u = CgroupMode::Unified;
    let cases: Vec<(Value, CgroupMode, &str, &str)> = vec![
        (
            with(&min, "/process/args", json!([])),
            l,
            "process.args",
            "empty",
        ),
        (
            with(&min, "/process/args/0", json!("a\u{0}b")),
            l,
            "process.args[0]",
            "NUL",
        ),
        (
            with(&min, "/process/env/0", json!("NOEQUALS")),
            l,
            "process.env[0]",
            "KEY=VALUE",
        ),
        (
            with(&min, "/process/cwd", json!("rel")),
            l,
            "process.cwd",
            "absolute",
        ),
        (
            with(&min, "/process/commandLine", json!("x")),
            l,
            "process.commandLine",
            "Windows",
        ),
        (
            with(
                &min,
                "/process/rlimits",
                json!([{"type": "RLIMIT_NOFILE", "soft": 10, "hard": 5}]),
            ),
            l,
            "process.rlimits[0]",
            "soft",
        ),
        (
            with(
                &min,
                "/process/rlimits",
                json!([{"type": "RLIMIT_NOFILE", "soft": 1, "hard": 5}, {"type": "RLIMIT_NOFILE", "soft": 1, "hard": 5}]),
            ),
            l,
            "process.rlimits[1].type",
            "twice",
        ),
        (
            with(
                &min,
                "/process/consoleSize",
                json!({"height": 70000, "width": 1}),
            ),
            l,
            "process.consoleSize.height",
            "65535",
        ),
        (
            with(
                &min,
                "/process/ioPriority",
                json!({"class": "IOPRIO_CLASS_RT", "priority": 1}),
            ),
            l,
            "process.ioPriority",
            "not supported",
        ),
        (
            with(&min, "/process/scheduler", json!({"policy": "SCHED_FIFO"})),
            l,
            "process.scheduler",
            "not supported",
        ),
        (
            with(
                &min,
                "/process/apparmorProfile",
                json!("a\nlxc.cap.keep = sys_admin"),
            ),
            l,
            "process.apparmorProfile",
            "control",
        ),
        (with(&min, "/hostname", json!("h")), l, "hostname", "UTS"),
        (
            with(&min, "/domainname", json!("d")),
            l,
            "domainname",
            "not supported",
        ),
        (
            with(&min, "/windows", json!({"layerFolders": []})),
            l,
            "windows",
            "Linux",
        ),
        (
            with(&min, "/linux/namespaces", json!([{"type": "pid"}])),
            l,
            "linux.namespaces",
            "mount namespace",
        ),
        (
            with(
                &min,
                "/linux/namespaces",
                json!([{"type": "mount"}, {"type": "mount"}]),
            ),
            l,
            "linux.namespaces[1].type",
            "twice",
        ),
        (
            with(
                &min,
                "/linux/namespaces",
                json!([{"type": "mount", "path": "/proc/1/ns/mnt"}]),
            ),
            l,
            "linux.namespaces",
            "mount namespace",
        ),
        (
            with(
                &min,
                "/linux/namespaces/1",
                json!({"type": "network", "path": "relative"}),
            ),
            l,
            "linux.namespaces[1].path",
            "absolute",
        ),
        (
            with(&min, "/linux/namespaces/1", json!({"type": "user"})),
            l,
            "linux.uidMappings",
            "mappings",
        ),
        (
            with(
                &min,
                "/linux/uidMappings",
                json!([{"containerID": 0, "hostID": 1000, "size": 1}]),
            ),
            l,
            "linux.uidMappings",
            "user namespace",
        ),
        (
            with(
                &min,
                "/linux/timeOffsets",
                json!({"monotonic": {"secs": 1}}),
            ),
            l,
            "linux.timeOffsets",
            "time namespace",
        ),
        (
            with(&min, "/linux/netDevices", json!({"eth9": {}})),
            l,
            "linux.netDevices",
            "network namespace",
        ),
        (
            with(&min, "/linux/sysctl", json!({"kernel.panic": "1"})),
            l,
            "linux.sysctl.kernel.panic",
            "namespaced",
        ),
        (
            with(&min, "/linux/sysctl", json!({"net.ipv4.ip_forward": "1"})),
            l,
            "linux.sysctl.net.ipv4.ip_forward",
            "host",
        ),
        (
            with(&min, "/linux/cgroupsPath", json!("/a/../b")),
            l,
            "linux.cgroupsPath",
            "..",
        ),
        (
            with(&min, "/linux/intelRdt", json!({"closID": "x"})),
            l,
            "linux.intelRdt",
            "not supported",
        ),
        (
            with(
                &min,
                "/linux/personality",
                json!({"domain": "LINUX", "flags": ["x"]}),
            ),
            l,
            "linux.personality.flags",
            "not supported",
        ),
        (
            with(&min, "/linux/rootfsPropagation", json!("weird")),
            l,
            "linux.rootfsPropagation",
            "propagation",
        ),
        (
            with(&min, "/linux/maskedPaths", json!(["relative"])),
            l,
            "linux.maskedPaths[0]",
            "absolute",
        ),
        (
            with(&min, "/linux/readonlyPaths", json!(["/"])),
            l,
            "linux.readonlyPaths[0]",
            "root.readonly",
        ),
        (
            with(
                &min,
                "/linux/devices",
                json!([{"path": "/dev/x", "type": "c", "major": -1, "minor": 0}]),
            ),
            l,
            "linux.devices[0].major",
            "negative",
        ),
        (
            with(
                &min,
                "/mounts",
                json!([{"destination": "rel", "type": "tmpfs"}]),
            ),
            l,
            "mounts[0].destination",
            "absolute",
        ),
        (
            with(
                &min,
                "/mounts",
                json!([{"destination": "/dev/.ctinit/x", "type": "tmpfs"}]),
            ),
            l,
            "mounts[0].destination",
            "reserved",
        ),
        (
            with(
                &min,
                "/mounts",
                json!([{"destination": "/x", "type": "tmpfs", "options": ["size=1,uid=0"]}]),
            ),
            l,
            "mounts[0].options[0]",
            "','",
        ),
        (
            with(
                &min,
                "/mounts",
                json!([{"destination": "/x", "type": "tmpfs", "options": ["optional"]}]),
            ),
            l,
            "mounts[0].options[0]",
            "not a mount option",
        ),
        (
            with(
                &min,
                "/mounts",
                json!([{"destination": "/x", "type": "tmpfs", "options": ["create=file"]}]),
            ),
            l,
            "mounts[0].options[0]",
            "not a mount option",
        ),
        (
            with(
                &min,
                "/mounts",
                json!([{"destination": "/x", "type": "bind", "source": "/nonexistent-source-for-test"}]),
            ),
            l,
            "mounts[0].source",
            "nonexistent",
        ),
        (
            with(
                &min,
                "/mounts",
                json!([{"destination": "/x", "type": "tmpfs", "source": "#comment"}]),
            ),
            l,
            "mounts[0].source",
            "'#'",
        ),
        (
            with(
                &min,
                "/mounts",
                json!([{"destination": "/x", "type": "ext4 x", "source": "/dev/sda"}]),
            ),
            l,
            "mounts[0].type",
            "filesystem type",
        ),
        (
            with(
                &min,
                "/mounts",
                json!([{"destination": "/x", "type": "bind", "source": "/tmp", "options": ["idmap"]}]),
            ),
            l,
            "mounts[0].uidMappings",
            "needs the container's user namespace",
        ),
        (
            with(
                &min,
                "/mounts",
                json!([{"destination": "/cg", "type": "cgroup"}]),
            ),
            l,
            "mounts[0].destination",
            "/sys/fs/cgroup",
        ),
        (
            with(
                &k8s,
                "/linux/resources/unified",
                json!({"memory.high": "1"}),
            ),
            l,
            "linux.resources.unified",
            "cgroup v2",
        ),
        (
            with(
                &k8s,
                "/linux/resources/unified",
                json!({"memory.high": "a\nb"}),
            ),
            u,
            "linux.resources.unified.memory.high",
            "control",
        ),
        (
            with(&k8s, "/linux/resources/unified", json!({"../x": "1"})),
            u,
            "linux.resources.unified.../x",
            "plain name",
        ),
        (
            with(&k8s, "/linux/resources/memory/swappiness", json!(10)),
            u,
            "linux.resources.memory.swappiness",
            "v2",
        ),
        (
            with(&k8s, "/linux/resources/memory/swap", json!(1)),
            l,
            "linux.resources.memory.swap",
            "below",
        ),
        (
            with(&k8s, "/linux/resources/memory/swap", json!(1)),
            u,
            "linux.resources.memory.swap",
            "below",
        ),
        (
            with(&k8s, "/linux/resources/cpu/cpus", json!("0-1;x")),
            l,
            "linux.resources.cpu.cpus",
            "CPU",
        ),
        (
            with(&k8s, "/linux/resources/cpu/realtimeRuntime", json!(100)),
            u,
            "linux.resources.cpu.realtimeRuntime",
            "v2",
        ),
        (
            with(
                &k8s,
                "/linux/resources/hugepageLimits",
                json!([{"pageSize": "2MB/../x", "limit": 1}]),
            ),
            l,
            "linux.resources.hugepageLimits[0].pageSize",
            "plain name",
        ),
        (
            with(&k8s, "/linux/resources/devices/0/access", json!("rwx")),
            l,
            "linux.resources.devices[0].access",
            "rwm",
        ),
        (
            with(&k8s, "/linux/resources/network", json!({"classID": 1})),
            u,
            "linux.resources.network.classID",
            "net_cls",
        ),
        (
            with(
                &k8s,
                "/linux/seccomp/syscalls/0/names/0",
                json!("read\nwrite"),
            ),
            l,
            "linux.seccomp.syscalls[0].names[0]",
            "system call",
        ),
        (
            with(
                &k8s,
                "/linux/seccomp/syscalls/0/action",
                json!("SCMP_ACT_TRACE"),
            ),
            l,
            "linux.seccomp.syscalls[0].action",
            "tracer",
        ),
        (
            with(
                &k8s,
                "/linux/seccomp/defaultAction",
                json!("SCMP_ACT_NOTIFY"),
            ),
            l,
            "linux.seccomp.defaultAction",
            "agent",
        ),
        (
            with(
                &k8s,
                "/linux/seccomp/listenerPath",
                json!("/run/agent.sock"),
            ),
            l,
            "linux.seccomp.listenerPath",
            "agents",
        ),
        (
            with(&k8s, "/linux/seccomp/syscalls/1/args/0/index", json!(6)),
            l,
            "linux.seccomp.syscalls[1].args[0].index",
            "0..5",
        ),
        (
            with(&min, "/root/path", json!("/a,b")),
            l,
            "root.path",
            "property",
        ),
        (
            with(&min, "/root/path", json!("/a\nb")),
            l,
            "root.path",
            "control",
        ),
    ];
    for (spec, mode, field, fragment) in cases {
        expect_err(&spec, mode, field, fragment);
    }
}

#[test]
fn request_values_are_checked() {
    let spec: oci_spec::runtime::Spec = serde_json::from_value(common::fixture("minimal")).unwrap();
    let facts = common::facts(CgroupMode::Legacy);
    let req = |name, state: &'static str| lxc_config::PlanRequest {
        name,
        spec: &spec,
        bundle: std::path::Path::new(common::BUNDLE),
        state_dir: std::path::Path::new(state),
        facts: &facts,
    };
    assert_eq!(
        lxc_config::plan(&req("a b", common::STATE))
            .unwrap_err()
            .field(),
        "name"
    );
    assert_eq!(
        lxc_config::plan(&req("c1", "relative"))
            .unwrap_err()
            .field(),
        "state_dir"
    );
    assert_eq!(
        lxc_config::plan(&req("c1", "/run/x\ny"))
            .unwrap_err()
            .field(),
        "state_dir"
    );
}

#[test]
fn ignored_fields_are_reported() {
    let min = common::fixture("minimal");
    let spec = with(&min, "/process/user/username", json!("bob"));
    let spec = with(
        &spec,
        "/linux/seccomp",
        json!({"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_LOG"], "syscalls": [{"names": ["kill"], "action": "SCMP_ACT_KILL_PROCESS"}, {"names": ["ptrace"], "action": "SCMP_ACT_LOG"}]}),
    );
    let spec = with(
        &spec,
        "/linux/resources",
        json!({"memory": {"kernel": 1, "checkBeforeUpdate": true}}),
    );
    let plan = common::plan_value(&spec, CgroupMode::Legacy).unwrap();
    let fields: Vec<&str> = plan.ignored.iter().map(|i| i.field.as_str()).collect();
    for f in [
        "process.user.username",
        "linux.seccomp.flags",
        "linux.seccomp.syscalls[0].action",
        "linux.seccomp.syscalls[1].action",
        "linux.resources.memory.kernel",
        "linux.resources.memory.checkBeforeUpdate",
    ] {
        assert!(fields.contains(&f), "{f} not in {fields:?}");
    }
    // Denylist policy: LOG became allow = the default, so that rule is dropped.
    assert_eq!(
        plan.seccomp_profile.as_deref(),
        Some("2\ndenylist\nkill kill\n")
    );
}

#[test]
fn init_spec_for_exec_process() {
    let p: oci_spec::runtime::Process = serde_json::from_value(json!({
        "user": {"uid": 5, "gid": 6, "additionalGids": [7]},
        "args": ["sh", "-c", "a\"b'c"],
        "env": ["A=1"],
        "cwd": "/tmp",
        "terminal": true
    }))
    .unwrap();
    let s = lxc_config::init_spec_for(&p).unwrap();
    assert_eq!(s.args, vec!["sh", "-c", "a\"b'c"]);
    assert_eq!((s.uid, s.gid, s.additional_gids.clone()), (5, 6, vec![7]));
    assert!(s.terminal);
    assert!(s.capabilities.is_none());
    assert_eq!(s.stdio, Default::default());
}

#[test]
fn recursive_mount_attributes_need_mount_setattr() {
    let spec = with(
        &common::fixture("minimal"),
        "/mounts",
        json!([{"destination": "/x", "type": "bind", "source": "/tmp",
                "options": ["rbind", "ro", "rro", "rnosuid"]}]),
    );
    let spec: oci_spec::runtime::Spec = serde_json::from_value(spec).unwrap();
    let plan = |mount_setattr| {
        lxc_config::plan(&lxc_config::PlanRequest {
            name: "c1",
            spec: &spec,
            bundle: std::path::Path::new(common::BUNDLE),
            state_dir: std::path::Path::new(common::STATE),
            facts: &lxc_config::NodeFacts {
                mount_setattr,
                ..common::facts(CgroupMode::Legacy)
            },
        })
    };
    // A kernel without mount_setattr(2) (before 5.12): refused, naming the option, never
    // passed on to LXC, which would leave the submounts writable.
    let err = plan(lxc_config::MountSetattr::default()).unwrap_err();
    assert_eq!(err.field(), "mounts[0].options[2]", "{err}");
    assert!(
        err.to_string()
            .starts_with("mounts[0].options[2]: not supported: rro"),
        "{err}"
    );
    // With it: the words stay off LXC's entry and go to the shim.
    let plan = plan(lxc_config::MountSetattr::ALL).unwrap();
    let entry = plan.mounts.iter().find(|m| m.destination == "/x").unwrap();
    assert_eq!(entry.lxc_value(), "/tmp x none rbind,ro,create=dir 0 0");
    assert_eq!(plan.recursive_attrs.len(), 1);
    let r = &plan.recursive_attrs[0];
    assert_eq!(
        (r.field.as_str(), r.destination.as_str()),
        ("mounts[0]", "/x")
    );
    assert_eq!(r.words, ["rro", "rnosuid"]);
    assert_eq!(
        (r.attr_set, r.attr_clr),
        (libc::MOUNT_ATTR_RDONLY | libc::MOUNT_ATTR_NOSUID, 0)
    );
}
