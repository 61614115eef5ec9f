//! Security property: no value from the spec can add, end or alter a config line, and no spec
//! makes the planner or the renderers panic.
//!
//! 1. For arbitrary strings (control characters, `=`, `#`, quotes, backslashes, unicode) put into
//!    every string field of a spec, `plan` either rejects the spec, or both renderings consist of
//!    exactly the lines the plan intends, each of which LXC and Proxmox parse back to exactly the
//!    intended key and value.
//! 2. Whole hostile specs (arbitrary strings and numbers in every section: process, mounts,
//!    namespaces, devices, resources, seccomp, id mappings, sysctls, annotations) never panic
//!    `plan` or the renderers, and every rendered key is one the spec asked for.
//!
//! Case counts are bounded for CI; `PROPTEST_CASES=N` runs more. Failures proptest finds are
//! kept in `injection.proptest-regressions`; hand-kept hostile specs are in `tests/corpus/`.

mod common;

use std::path::Path;

use lxc_config::{CgroupMode, ContainerPlan};
use proptest::prelude::*;
use serde_json::{json, Value};

/// Where a fuzzed string goes: (JSON pointer, or a map key/value insertion), and the mode.
#[derive(Clone, Copy, Debug)]
enum Slot {
    /// Replace the string at this pointer of the k8s fixture.
    At(&'static str),
    /// Insert `{fuzz: value}` into the map at this pointer.
    Key(&'static str, &'static str),
    /// Insert `{key: fuzz}` into the map at this pointer.
    Val(&'static str, &'static str),
    /// The request's container name / state dir.
    Name,
    StateDir,
}

const SLOTS: &[(Slot, CgroupMode)] = &[
    (Slot::At("/hostname"), CgroupMode::Legacy),
    (Slot::At("/domainname"), CgroupMode::Legacy),
    (Slot::At("/process/args/1"), CgroupMode::Legacy),
    (Slot::At("/process/env/1"), CgroupMode::Legacy),
    (Slot::At("/process/cwd"), CgroupMode::Legacy),
    (Slot::At("/process/apparmorProfile"), CgroupMode::Legacy),
    (Slot::At("/process/selinuxLabel"), CgroupMode::Legacy),
    (Slot::At("/process/user/username"), CgroupMode::Legacy),
    (Slot::At("/root/path"), CgroupMode::Legacy),
    (Slot::At("/mounts/0/destination"), CgroupMode::Legacy),
    (Slot::At("/mounts/9/source"), CgroupMode::Legacy),
    (Slot::At("/mounts/9/type"), CgroupMode::Legacy),
    (Slot::At("/mounts/9/options/0"), CgroupMode::Legacy),
    (Slot::At("/mounts/9/destination"), CgroupMode::Legacy),
    (Slot::At("/mounts/6/source"), CgroupMode::Legacy),
    (Slot::At("/mounts/6/destination"), CgroupMode::Legacy),
    (Slot::At("/mounts/6/options/1"), CgroupMode::Legacy),
    (Slot::At("/linux/maskedPaths/0"), CgroupMode::Legacy),
    (Slot::At("/linux/readonlyPaths/0"), CgroupMode::Legacy),
    (Slot::At("/linux/cgroupsPath"), CgroupMode::Legacy),
    (Slot::At("/linux/namespaces/4/path"), CgroupMode::Legacy),
    (Slot::At("/linux/devices/0/path"), CgroupMode::Legacy),
    (Slot::At("/linux/resources/cpu/cpus"), CgroupMode::Legacy),
    (Slot::At("/linux/resources/cpu/mems"), CgroupMode::Unified),
    (
        Slot::At("/linux/seccomp/syscalls/0/names/0"),
        CgroupMode::Legacy,
    ),
    (Slot::At("/linux/mountLabel"), CgroupMode::Legacy),
    (Slot::At("/linux/rootfsPropagation"), CgroupMode::Legacy),
    (
        Slot::At("/annotations/io.kubernetes.cri.sandbox-name"),
        CgroupMode::Legacy,
    ),
    (
        Slot::At("/annotations/io.kubernetes.cri.sandbox-namespace"),
        CgroupMode::Legacy,
    ),
    (
        Slot::At("/annotations/io.kubernetes.cri.container-name"),
        CgroupMode::Legacy,
    ),
    (Slot::Key("/linux/sysctl", "1"), CgroupMode::Legacy),
    (
        Slot::Val("/linux/sysctl", "net.core.somaxconn"),
        CgroupMode::Legacy,
    ),
    (
        Slot::Key("/linux/resources/unified", "1"),
        CgroupMode::Unified,
    ),
    (
        Slot::Val("/linux/resources/unified", "memory.high"),
        CgroupMode::Unified,
    ),
    (Slot::Key("/linux/resources/rdma", "x"), CgroupMode::Unified),
    (Slot::Key("/linux/netDevices", "x"), CgroupMode::Legacy),
    (Slot::Key("/linux/timeOffsets", "x"), CgroupMode::Legacy),
    (Slot::Key("/annotations", "x"), CgroupMode::Legacy),
    (Slot::Name, CgroupMode::Legacy),
    (Slot::StateDir, CgroupMode::Legacy),
];

fn pointer_set(v: &mut Value, pointer: &str, new: Value) {
    let (parent, last) = pointer.rsplit_once('/').unwrap();
    let parent = if parent.is_empty() {
        v
    } else {
        v.pointer_mut(parent).unwrap_or_else(|| panic!("{parent}"))
    };
    match parent {
        Value::Array(a) => {
            let i = last.parse::<usize>().unwrap();
            if i == a.len() {
                a.push(new)
            } else {
                a[i] = new
            }
        }
        Value::Object(o) => {
            o.insert(last.to_string(), new);
        }
        _ => panic!("{pointer}"),
    }
}

fn base(slot: Slot) -> Value {
    let mut v = common::fixture("k8s");
    // A base where every slot reaches the renderer: a new network and time namespace (for
    // netDevices, timeOffsets, net sysctls) instead of the joined one, where not fuzzed.
    if !matches!(slot, Slot::At("/linux/namespaces/4/path")) {
        pointer_set(&mut v, "/linux/namespaces/4", json!({"type": "network"}));
    }
    pointer_set(&mut v, "/linux/namespaces/6", json!({"type": "time"}));
    v
}

fn apply(slot: Slot, s: &str) -> Option<(Value, String, String)> {
    let mut v = base(slot);
    let mut name = "c1".to_string();
    let mut state = common::STATE.to_string();
    match slot {
        Slot::At(p) => pointer_set(&mut v, p, json!(s)),
        Slot::Key(p, val) => {
            let mut m = serde_json::Map::new();
            let val = match p {
                "/linux/resources/rdma" => json!({"hcaHandles": 1}),
                "/linux/netDevices" => json!({"name": "eth1"}),
                "/linux/timeOffsets" => json!({"secs": 1}),
                _ => json!(val),
            };
            m.insert(s.to_string(), val);
            pointer_set(&mut v, p, Value::Object(m));
        }
        Slot::Val(p, key) => {
            let mut m = serde_json::Map::new();
            m.insert(key.to_string(), json!(s));
            pointer_set(&mut v, p, Value::Object(m));
        }
        Slot::Name => name = s.to_string(),
        Slot::StateDir => state = s.to_string(),
    }
    Some((v, name, state))
}

/// The value LXC's config parser reads from `line` (None for a comment or blank line).
fn lxc_parse(line: &str) -> Option<(String, String)> {
    let ws = [' ', '\t', '\r', '\n'];
    let l = line.trim_start_matches(ws);
    if l.is_empty() || l.starts_with('#') {
        return None;
    }
    let (k, v) = l.split_once('=').expect("a config line has '='");
    let k = k.trim_end_matches(ws).to_string();
    let mut v = v.trim_matches(ws);
    let b = v.as_bytes();
    if b.len() > 1 && (b[0] == b'"' || b[0] == b'\'') && b[b.len() - 1] == b[0] {
        v = &v[1..v.len() - 1];
    }
    Some((k, v.to_string()))
}

fn clean_key(k: &str) -> bool {
    k.starts_with("lxc.")
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn clean_value(v: &str) -> bool {
    !v.is_empty()
        && !v
            .chars()
            .any(|c| c.is_control() || c == '\u{2028}' || c == '\u{2029}')
}

/// getmntent's decoding of one fstab field.
fn unescape(f: &str) -> String {
    f.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// The (key, value) lines the plan means to write, in order (raw layer for Proxmox).
fn intended(plan: &ContainerPlan) -> Vec<(String, String)> {
    let prefix = match plan.cgroup_mode {
        CgroupMode::Legacy => "lxc.cgroup",
        CgroupMode::Unified => "lxc.cgroup2",
    };
    let mut out: Vec<(String, String)> = plan.lxc_entries().to_vec();
    out.extend(
        plan.mounts
            .iter()
            .map(|m| ("lxc.mount.entry".to_string(), m.lxc_value())),
    );
    out.extend(
        plan.cgroup
            .iter()
            .map(|(k, v)| (format!("{prefix}.{k}"), v.clone())),
    );
    for r in &plan.device_rules {
        let kind = if r.allow { "allow" } else { "deny" };
        out.push((format!("{prefix}.devices.{kind}"), r.rule.clone()));
    }
    out
}

fn check_lxc(plan: &ContainerPlan) -> Result<(), TestCaseError> {
    let conf = plan.render_lxc();
    let mut parsed = Vec::new();
    for (i, line) in conf.lines().enumerate() {
        if i == 0 {
            prop_assert!(line.starts_with("# LXC config for OCI container "));
            continue;
        }
        let (k, v) = lxc_parse(line)
            .ok_or_else(|| TestCaseError::fail(format!("comment or blank line {line:?}")))?;
        prop_assert!(clean_key(&k), "key {k:?}");
        prop_assert!(clean_value(&v), "value {v:?}");
        prop_assert_eq!(
            line,
            format!("{k} = {v}"),
            "LXC would read {:?} differently",
            line
        );
        if k == "lxc.mount.entry" {
            let fields: Vec<&str> = v.split([' ', '\t']).collect();
            prop_assert_eq!(fields.len(), 6, "mount entry {:?}", v);
            prop_assert!(!fields[0].starts_with('#'));
            let m = plan
                .mounts
                .iter()
                .find(|m| m.lxc_value() == v)
                .ok_or_else(|| TestCaseError::fail(format!("unplanned mount {v:?}")))?;
            prop_assert_eq!(unescape(fields[0]), m.source.clone());
            let target = m.destination.trim_start_matches('/');
            prop_assert_eq!(
                unescape(fields[1]),
                if target.is_empty() { "." } else { target }
            );
            let creates = fields[3]
                .split(',')
                .filter(|o| o.starts_with("create="))
                .count();
            prop_assert!(creates <= 1);
            let optional = fields[3].split(',').any(|o| o == "optional");
            prop_assert_eq!(optional, m.optional);
        }
        parsed.push((k, v));
    }
    let mut expected = vec![
        (
            "lxc.rootfs.path".to_string(),
            format!("dir:{}", plan.rootfs.display()),
        ),
        ("lxc.rootfs.managed".to_string(), "0".to_string()),
    ];
    if let Some(p) = &plan.rootfs_propagation {
        expected.push(("lxc.rootfs.options".into(), p.clone()));
    }
    let mut rest = intended(plan);
    let cg_start = rest
        .iter()
        .position(|(k, _)| k.starts_with("lxc.cgroup"))
        .unwrap_or(rest.len());
    let cg = rest.split_off(cg_start);
    expected.extend(rest);
    if let Some(dir) = &plan.cgroup_dir {
        expected.push(("lxc.cgroup.dir.container".into(), dir.clone()));
        expected.push((
            "lxc.cgroup.dir.monitor".into(),
            format!("lxc.monitor/{}", plan.name),
        ));
    }
    expected.extend(cg);
    prop_assert_eq!(parsed, expected);
    Ok(())
}

fn check_pve(plan: &ContainerPlan) -> Result<(), TestCaseError> {
    let r = plan.render_pve(Path::new(common::INCLUDE));
    let mut raw = Vec::new();
    let mut descr = Vec::new();
    for line in r.ct_conf.lines() {
        if let Some(d) = line.strip_prefix('#') {
            prop_assert!(
                d.bytes().all(|b| (0x20..=0x7e).contains(&b) && b != b':'),
                "description line {:?}",
                d
            );
            descr.push(d.to_string());
            continue;
        }
        let (k, v) = line
            .split_once(": ")
            .ok_or_else(|| TestCaseError::fail(format!("bad line {line:?}")))?;
        prop_assert!(clean_value(v) && v.trim() == v, "value {v:?}");
        if k.starts_with("lxc.") {
            prop_assert!(
                k.bytes().all(|b| b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || matches!(b, b'_' | b'-' | b'.')),
                "Proxmox key {k:?}"
            );
            if k != "lxc.include" {
                raw.push((k.to_string(), v.to_string()));
            }
        } else {
            prop_assert!(
                k.bytes().all(|b| b.is_ascii_lowercase()),
                "native key {k:?}"
            );
            if k == "tags" {
                for t in v.split(';') {
                    let b = t.as_bytes();
                    prop_assert!(!b.is_empty() && (b[0].is_ascii_alphanumeric() || b[0] == b'_'));
                    prop_assert!(
                        t.bytes()
                            .all(|c| c.is_ascii_alphanumeric()
                                || matches!(c, b'_' | b'-' | b'+' | b'.')),
                        "tag {t:?}"
                    );
                }
            }
        }
    }
    // The description decodes back to the plan's text.
    let decoded: Vec<String> = descr
        .iter()
        .map(|d| {
            let mut bytes = Vec::new();
            let b = d.as_bytes();
            let mut i = 0;
            while i < b.len() {
                if b[i] == b'%' {
                    bytes.push(u8::from_str_radix(&d[i + 1..i + 3], 16).unwrap());
                    i += 3;
                } else {
                    bytes.push(b[i]);
                    i += 1;
                }
            }
            String::from_utf8(bytes).unwrap()
        })
        .collect();
    prop_assert_eq!(decoded.join("\n"), plan.description.clone());
    // What common.conf sets and the include resets (kept here as an independent list; the
    // mount hook is lxcfs's on a node, reset by default).
    let resets: Vec<&str> = "lxc.tty.dir lxc.cap.drop lxc.cap.keep lxc.mount.auto \
                             lxc.mount.entry lxc.seccomp.profile lxc.hook.clone lxc.cgroup lxc.cgroup2 \
                             lxc.hook.mount"
        .split_whitespace()
        .collect();
    let mut include_lines = Vec::new();
    for (i, line) in r.include.lines().enumerate() {
        if i < 2 {
            prop_assert!(line.starts_with("# "));
            continue;
        }
        if let Some(k) = line.strip_suffix(" =").filter(|k| resets.contains(k)) {
            prop_assert!(i < 2 + resets.len(), "reset {k} after other lines");
            continue;
        }
        let (k, v) =
            lxc_parse(line).ok_or_else(|| TestCaseError::fail(format!("comment {line:?}")))?;
        prop_assert!(clean_key(&k) && clean_value(&v));
        prop_assert_eq!(line, format!("{k} = {v}"));
        if k != "lxc.rootfs.options" {
            include_lines.push((k, v));
        }
    }
    // Every intended raw line is in exactly one of the two files, in order.
    let expected = intended(plan);
    let mut it_ct = raw.iter();
    let mut it_inc = include_lines.iter();
    for e in &expected {
        let got = if r.ct_conf.contains(&format!("\n{}: {}\n", e.0, e.1))
            && !e.0.starts_with("lxc.cgroup.")
            && !e.0.starts_with("lxc.namespace")
            && !e.0.starts_with("lxc.time")
        {
            it_ct.next()
        } else {
            it_inc.next()
        };
        prop_assert_eq!(Some(e), got);
    }
    prop_assert!(
        it_ct.next().is_none() && it_inc.next().is_none(),
        "extra lines"
    );
    Ok(())
}

/// `default` cases (bounded for CI; `PROPTEST_CASES=N` runs more), failures kept next to this
/// file in `injection.proptest-regressions` and replayed first.
fn config(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"),
        )),
        ..ProptestConfig::default()
    }
}

fn fuzz_string() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[\\x00-\\x20a-z0-9=#\"'\\\\/.,:;%\u{85}\u{2028}é-]{0,16}",
        "(/[a-z \\n\\r=#]{1,4}){1,3}",
        Just("x\nlxc.cap.keep = sys_admin".to_string()),
        Just("\"quoted\"".to_string()),
        Just(" padded ".to_string()),
        Just("#comment".to_string()),
        Just(String::new()),
    ]
}

proptest! {
    #![proptest_config(config(3000))]
    #[test]
    fn no_spec_value_escapes_its_line(slot in 0..SLOTS.len(), s in fuzz_string()) {
        let (slot, mode) = SLOTS[slot];
        let Some((v, name, state)) = apply(slot, &s) else { return Ok(()) };
        let Ok(spec) = serde_json::from_value::<oci_spec::runtime::Spec>(v) else { return Ok(()) };
        let facts = common::facts(mode);
        let req = lxc_config::PlanRequest {
            name: &name,
            spec: &spec,
            bundle: Path::new(common::BUNDLE),
            state_dir: Path::new(&state),
            facts: &facts,
        };
        if let Ok(plan) = lxc_config::plan(&req) {
            check_lxc(&plan)?;
            check_pve(&plan)?;
        }
    }
}

/// The base spec itself passes, so the fuzzed fields do reach the renderers.
#[test]
fn base_spec_renders() {
    for (slot, mode) in SLOTS {
        let (v, _, _) = apply(*slot, "ok").unwrap();
        let spec: oci_spec::runtime::Spec = serde_json::from_value(v).unwrap();
        let plan = common::plan_spec(&spec, *mode);
        // Only slots whose harmless value is invalid for other reasons may fail here.
        if let Err(e) = &plan {
            assert!(
                matches!(
                    slot,
                    Slot::At("/domainname")
                        | Slot::At("/root/path")
                        | Slot::At("/process/cwd")
                        | Slot::At("/mounts/0/destination")
                        | Slot::At("/mounts/9/destination")
                        | Slot::At("/mounts/6/destination")
                        | Slot::At("/mounts/6/source")
                        | Slot::At("/linux/maskedPaths/0")
                        | Slot::At("/linux/readonlyPaths/0")
                        | Slot::At("/linux/namespaces/4/path")
                        | Slot::At("/linux/devices/0/path")
                        | Slot::At("/linux/resources/cpu/cpus")
                        | Slot::At("/linux/resources/cpu/mems")
                        | Slot::At("/linux/rootfsPropagation")
                        | Slot::At("/process/env/1")
                        | Slot::Key("/linux/sysctl", _)
                        | Slot::Key("/linux/resources/unified", _)
                        | Slot::Key("/linux/timeOffsets", _)
                        | Slot::StateDir
                        | Slot::At("/mounts/9/type")
                        | Slot::At("/mounts/6/options/1")
                ),
                "{slot:?}: {e}"
            );
        } else {
            let plan = plan.unwrap();
            check_lxc(&plan).unwrap();
            check_pve(&plan).unwrap();
        }
    }
}

// ---- Whole hostile specs ----------------------------------------------------------------

fn opt<T: Strategy>(s: T) -> impl Strategy<Value = Option<T::Value>> {
    proptest::option::weighted(0.5, s)
}

fn some_of<T: Strategy>(s: T, max: usize) -> impl Strategy<Value = Vec<T::Value>> {
    proptest::collection::vec(s, 0..=max)
}

/// Integers that break naive arithmetic and conversions, as i64.
fn hostile_i64() -> BoxedStrategy<i64> {
    prop_oneof![
        Just(0i64),
        Just(-1),
        Just(1),
        Just(i64::MAX),
        Just(i64::MAX),
        Just(i64::MAX - 1),
        Just(i64::MIN),
        Just(i64::from(u32::MAX) + 1),
        -1_000_000i64..1_000_000_000,
        any::<i64>(),
    ]
    .boxed()
}

fn hostile_u64() -> BoxedStrategy<u64> {
    prop_oneof![
        Just(0u64),
        Just(1),
        Just(u64::MAX),
        Just(i64::MAX as u64 + 1),
        0u64..1_000_000,
        any::<u64>(),
    ]
    .boxed()
}

fn word(list: &'static [&'static str]) -> BoxedStrategy<String> {
    proptest::sample::select(list)
        .prop_map(str::to_string)
        .boxed()
}

/// A known word or an arbitrary string.
fn word_or_fuzz(list: &'static [&'static str]) -> BoxedStrategy<String> {
    prop_oneof![3 => word(list), 1 => fuzz_string()].boxed()
}

fn hostile_path() -> BoxedStrategy<String> {
    prop_oneof![
        word(&[
            "/",
            "/dev",
            "/dev/pts",
            "/dev/shm",
            "/dev/.ctinit",
            "/proc",
            "/proc/sys",
            "/proc/sys/net",
            "/sys",
            "/sys/fs/cgroup",
            "/tmp",
            "/etc/hosts",
            "/run/x",
            "/a/../b",
            "rel/path",
            "//x//y/",
        ]),
        "(/[a-z .\\\\#=\\n]{1,4}){1,3}",
        fuzz_string(),
    ]
    .boxed()
}

fn process() -> BoxedStrategy<Value> {
    let caps = some_of(
        word(&[
            "CAP_CHOWN",
            "CAP_SYS_ADMIN",
            "CAP_NET_RAW",
            "CAP_SETUID",
            "CAP_KILL",
        ]),
        3,
    );
    let rlimit = (
        word(&["RLIMIT_NOFILE", "RLIMIT_NPROC", "RLIMIT_CORE"]),
        hostile_u64(),
        hostile_u64(),
    )
        .prop_map(|(t, soft, hard)| json!({"type": t, "soft": soft, "hard": hard}));
    (
        (
            opt(some_of(fuzz_string(), 3)),
            opt(some_of(fuzz_string(), 3)),
            opt(hostile_path()),
        ),
        (
            any::<u32>(),
            any::<u32>(),
            opt(any::<u32>()),
            opt(fuzz_string()),
        ),
        (opt(caps), some_of(rlimit, 3), opt(any::<i32>())),
        (
            opt(fuzz_string()),
            opt(fuzz_string()),
            opt((hostile_u64(), hostile_u64())),
        ),
        (any::<bool>(), opt(any::<u32>())),
    )
        .prop_map(|(a, u, c, l, t)| {
            let mut p = json!({
                "args": a.0, "env": a.1, "cwd": a.2,
                "user": {"uid": u.0, "gid": u.1, "umask": u.2, "username": u.3},
                "rlimits": c.1, "oomScoreAdj": c.2,
                "apparmorProfile": l.0, "selinuxLabel": l.1, "terminal": t.0,
            });
            if let Some(caps) = c.0 {
                p["capabilities"] = json!({"bounding": caps.clone(), "effective": caps});
            }
            if let Some((h, w)) = l.2 {
                p["consoleSize"] = json!({"height": h, "width": w});
            }
            if let Some(gid) = t.1 {
                p["user"]["additionalGids"] = json!([gid]);
            }
            p
        })
        .boxed()
}

const MOUNT_OPTIONS: &[&str] = &[
    "bind",
    "rbind",
    "ro",
    "rw",
    "nosuid",
    "nodev",
    "noexec",
    "rprivate",
    "rshared",
    "size=64k",
    "size=50%",
    "size=99999999999999999999g",
    "mode=755",
    "mode=1777",
    "idmap",
    "ridmap",
    "tmpcopyup",
    "remount",
    "optional",
    "relative",
    "create=dir",
    "create=file",
    "newinstance",
    "ptmxmode=0666",
    "gid=5",
    "a,b",
    "x y",
    "",
];

fn mount() -> BoxedStrategy<Value> {
    (
        hostile_path(),
        opt(word_or_fuzz(&[
            "bind", "tmpfs", "proc", "sysfs", "cgroup", "cgroup2", "devpts", "mqueue", "none",
        ])),
        opt(prop_oneof![
            word(&["/", "/dev/null", "/missing", "tmpfs"]),
            fuzz_string()
        ]),
        some_of(word_or_fuzz(MOUNT_OPTIONS), 4),
        any::<bool>(),
    )
        .prop_map(|(dest, typ, src, opts, idmapped)| {
            let mut m = json!({"destination": dest, "type": typ, "source": src, "options": opts});
            if idmapped {
                m["uidMappings"] = json!([{"containerID": 0, "hostID": 1000, "size": 1}]);
            }
            m
        })
        .boxed()
}

const NS_TYPES: &[&str] = &[
    "mount", "pid", "uts", "ipc", "network", "cgroup", "user", "time",
];

fn namespaces() -> BoxedStrategy<Value> {
    let ns = (word(NS_TYPES), opt(hostile_path())).prop_map(|(t, p)| json!({"type": t, "path": p}));
    (any::<bool>(), some_of(ns, 5))
        .prop_map(|(own_mount, mut list)| {
            if own_mount {
                list.insert(0, json!({"type": "mount"}));
            }
            Value::Array(list)
        })
        .boxed()
}

fn device() -> BoxedStrategy<Value> {
    (
        word(&["c", "b", "u", "p", "a"]),
        hostile_path(),
        hostile_i64(),
        hostile_i64(),
        opt(any::<u32>()),
    )
        .prop_map(|(t, path, major, minor, mode)| {
            json!({"type": t, "path": path, "major": major, "minor": minor, "fileMode": mode})
        })
    .boxed()
}

/// A JSON object with each named field present or absent (`null`).
fn object(fields: Vec<(&'static str, BoxedStrategy<Value>)>) -> BoxedStrategy<Value> {
    let (names, values): (Vec<&str>, Vec<BoxedStrategy<Value>>) = fields.into_iter().unzip();
    values
        .prop_map(move |values| {
            let fields = names.iter().map(|n| n.to_string()).zip(values);
            Value::Object(fields.collect())
        })
        .boxed()
}

/// A field value or `null`.
fn maybe<T: std::fmt::Debug + Into<Value>>(
    s: impl Strategy<Value = T> + 'static,
) -> BoxedStrategy<Value> {
    opt(s)
        .prop_map(|v| v.map_or(Value::Null, Into::into))
        .boxed()
}

fn memory() -> BoxedStrategy<Value> {
    object(vec![
        ("limit", maybe(hostile_i64())),
        ("reservation", maybe(hostile_i64())),
        ("swap", maybe(hostile_i64())),
        ("kernel", maybe(hostile_i64())),
        ("kernelTCP", maybe(hostile_i64())),
        ("swappiness", maybe(hostile_u64())),
        ("disableOOMKiller", maybe(any::<bool>())),
        ("useHierarchy", maybe(any::<bool>())),
        ("checkBeforeUpdate", maybe(any::<bool>())),
    ])
}

fn cpu() -> BoxedStrategy<Value> {
    object(vec![
        ("shares", maybe(hostile_u64())),
        ("quota", maybe(hostile_i64())),
        ("burst", maybe(hostile_u64())),
        ("period", maybe(hostile_u64())),
        ("realtimeRuntime", maybe(hostile_i64())),
        ("realtimePeriod", maybe(hostile_u64())),
        ("idle", maybe(hostile_i64())),
        ("cpus", maybe(fuzz_string())),
        ("mems", maybe(word_or_fuzz(&["0", "0-3,6", "-", ",,"]))),
    ])
}

fn block_io() -> BoxedStrategy<Value> {
    let dev = (hostile_i64(), hostile_i64(), opt(any::<u16>()), opt(any::<u16>())).prop_map(
        |(major, minor, w, lw)| json!({"major": major, "minor": minor, "weight": w, "leafWeight": lw}),
    );
    let rate = (hostile_i64(), hostile_i64(), hostile_u64())
        .prop_map(|(major, minor, rate)| json!({"major": major, "minor": minor, "rate": rate}));
    (
        opt(any::<u16>()),
        opt(any::<u16>()),
        some_of(dev, 2),
        some_of(rate, 2),
    )
        .prop_map(|(w, lw, devs, rates)| {
            json!({"weight": w, "leafWeight": lw, "weightDevice": devs,
                   "throttleReadBpsDevice": rates.clone(), "throttleWriteIOPSDevice": rates})
        })
        .boxed()
}

fn device_cgroup() -> BoxedStrategy<Value> {
    (
        any::<bool>(),
        opt(word(&["a", "b", "c", "u", "p"])),
        opt(hostile_i64()),
        opt(hostile_i64()),
        opt(word_or_fuzz(&["rwm", "r", "", "rwx"])),
    )
        .prop_map(|(allow, t, major, minor, access)| {
            json!({"allow": allow, "type": t, "major": major, "minor": minor, "access": access})
        })
    .boxed()
}

fn string_map(
    keys: impl Strategy<Value = String> + 'static,
    values: impl Strategy<Value = Value> + 'static,
) -> BoxedStrategy<Value> {
    proptest::collection::btree_map(keys, values, 0..3)
        .prop_map(|m| Value::Object(m.into_iter().collect()))
        .boxed()
}

fn resources() -> BoxedStrategy<Value> {
    let hugepage = (word_or_fuzz(&["2MB", "1GB"]), hostile_i64())
        .prop_map(|(size, limit)| json!({"pageSize": size, "limit": limit}));
    let priority = (word_or_fuzz(&["eth0", "lo"]), any::<u32>())
        .prop_map(|(name, priority)| json!({"name": name, "priority": priority}));
    let network = (opt(any::<u32>()), some_of(priority, 2))
        .prop_map(|(id, prio)| json!({"classID": id, "priorities": prio}));
    let rdma = (opt(any::<u32>()), opt(any::<u32>()))
        .prop_map(|(h, o)| json!({"hcaHandles": h, "hcaObjects": o}));
    (
        (opt(memory()), opt(cpu()), opt(hostile_i64())),
        (some_of(hugepage, 2), opt(block_io()), opt(network)),
        (
            some_of(device_cgroup(), 3),
            string_map(
                word_or_fuzz(&["memory.high", "cpu.idle", "io"]),
                fuzz_string().prop_map(Value::from),
            ),
            string_map(word_or_fuzz(&["mlx5_0"]), rdma),
        ),
    )
        .prop_map(|(a, b, c)| {
            let mut r = json!({"memory": a.0, "cpu": a.1, "hugepageLimits": b.0,
                               "blockIO": b.1, "network": b.2, "devices": c.0,
                               "unified": c.1, "rdma": c.2});
            if let Some(limit) = a.2 {
                r["pids"] = json!({"limit": limit});
            }
            r
        })
        .boxed()
}

fn seccomp() -> BoxedStrategy<Value> {
    const ACTIONS: &[&str] = &[
        "SCMP_ACT_ALLOW",
        "SCMP_ACT_ERRNO",
        "SCMP_ACT_KILL",
        "SCMP_ACT_KILL_PROCESS",
        "SCMP_ACT_TRAP",
        "SCMP_ACT_LOG",
        "SCMP_ACT_TRACE",
        "SCMP_ACT_NOTIFY",
    ];
    const OPS: &[&str] = &[
        "SCMP_CMP_NE",
        "SCMP_CMP_LT",
        "SCMP_CMP_LE",
        "SCMP_CMP_EQ",
        "SCMP_CMP_GE",
        "SCMP_CMP_GT",
        "SCMP_CMP_MASKED_EQ",
    ];
    let arg = (0usize..8, hostile_u64(), opt(hostile_u64()), word(OPS)).prop_map(
        |(index, value, two, op)| json!({"index": index, "value": value, "valueTwo": two, "op": op}),
    );
    let syscall = (
        some_of(word_or_fuzz(&["read", "write", "clone", "ptrace"]), 3),
        word(ACTIONS),
        opt(any::<u32>()),
        some_of(arg, 3),
    )
        .prop_map(|(names, action, errno, args)| {
            json!({"names": names, "action": action, "errnoRet": errno, "args": args})
        });
    (
        word(ACTIONS),
        opt(any::<u32>()),
        some_of(
            word(&["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_AARCH64"]),
            2,
        ),
        some_of(word(&["SECCOMP_FILTER_FLAG_LOG"]), 1),
        opt(fuzz_string()),
        some_of(syscall, 3),
    )
        .prop_map(|(default, errno, arches, flags, listener, syscalls)| {
            json!({"defaultAction": default, "defaultErrnoRet": errno, "architectures": arches,
                   "flags": flags, "listenerPath": listener, "syscalls": syscalls})
        })
        .boxed()
}

fn idmaps() -> BoxedStrategy<Value> {
    let m = (any::<u32>(), any::<u32>(), any::<u32>())
        .prop_map(|(c, h, n)| json!({"containerID": c, "hostID": h, "size": n}));
    some_of(m, 2).prop_map(Value::Array).boxed()
}

fn linux() -> BoxedStrategy<Value> {
    let time = (opt(hostile_i64()), opt(any::<u32>()))
        .prop_map(|(s, n)| json!({"secs": s, "nanosecs": n}));
    let net_dev = opt(word_or_fuzz(&["eth1"])).prop_map(|n| json!({"name": n}));
    let sysctl_key = word_or_fuzz(&[
        "net.ipv4.ip_forward",
        "net/core/somaxconn",
        "kernel.shmmax",
        "fs.mqueue.msg_max",
        "kernel.hostname",
        "vm.swappiness",
    ]);
    (
        (
            opt(namespaces()),
            some_of(device(), 2),
            opt(resources()),
            opt(seccomp()),
        ),
        (
            opt(idmaps()),
            opt(idmaps()),
            string_map(sysctl_key, fuzz_string().prop_map(Value::from)),
        ),
        (
            string_map(word_or_fuzz(&["boottime", "monotonic"]), time),
            string_map(word_or_fuzz(&["eth9"]), net_dev),
            opt(word(&["LINUX", "LINUX32"])),
            any::<bool>(),
        ),
        (
            opt(word_or_fuzz(&["rprivate", "rslave", "shared", "bogus"])),
            some_of(hostile_path(), 2),
            some_of(hostile_path(), 2),
            opt(prop_oneof![
                hostile_path(),
                word(&[
                    "kubepods-burstable-pod1.slice:cri-containerd:abc",
                    "-.slice::x",
                    "a:b:c"
                ]),
            ]),
            opt(fuzz_string()),
        ),
    )
        .prop_map(|(a, b, c, d)| {
            let mut l = json!({
                "namespaces": a.0, "devices": a.1, "resources": a.2, "seccomp": a.3,
                "uidMappings": b.0, "gidMappings": b.1, "sysctl": b.2,
                "timeOffsets": c.0, "netDevices": c.1,
                "rootfsPropagation": d.0, "maskedPaths": d.1, "readonlyPaths": d.2,
                "cgroupsPath": d.3, "mountLabel": d.4,
            });
            if let Some(domain) = c.2 {
                let flags = if c.3 {
                    json!(["ADDR_NO_RANDOMIZE"])
                } else {
                    json!([])
                };
                l["personality"] = json!({"domain": domain, "flags": flags});
            }
            l
        })
        .boxed()
}

const KUBE_KEYS: &[&str] = &[
    "io.kubernetes.cri.sandbox-namespace",
    "io.kubernetes.cri.sandbox-name",
    "io.kubernetes.cri.container-name",
    "io.kubernetes.cri.container-type",
    "io.kubernetes.pod.namespace",
];

/// A whole spec with hostile values, as JSON (what containerd hands over): one or two hostile
/// sections (process, hostname, root, mounts, all of linux, or one of its sections alone) laid
/// over one of the valid fixtures, so that most specs get past the first check and the later
/// sections and the renderers see hostile values too.
fn hostile_spec() -> BoxedStrategy<Value> {
    let in_linux = |key: &'static str| move |v: Value| json!({"linux": {key: v}});
    let section = prop_oneof![
        process().prop_map(|p| json!({"process": p})),
        fuzz_string().prop_map(|h| json!({"hostname": h})),
        (
            prop_oneof![word(&["rootfs", "/", "/srv/rootfs"]), hostile_path()],
            any::<bool>(),
        )
            .prop_map(|(path, ro)| json!({"root": {"path": path, "readonly": ro}})),
        some_of(mount(), 4).prop_map(|m| json!({"mounts": m})),
        linux().prop_map(|l| json!({"linux": l})),
        resources().prop_map(in_linux("resources")),
        resources().prop_map(in_linux("resources")),
        seccomp().prop_map(in_linux("seccomp")),
        some_of(device(), 3)
            .prop_map(Value::from)
            .prop_map(in_linux("devices")),
        namespaces().prop_map(in_linux("namespaces")),
        string_map(word_or_fuzz(KUBE_KEYS), fuzz_string().prop_map(Value::from))
            .prop_map(|a| json!({"annotations": a})),
    ];
    (
        word(&["k8s", "minimal", "userns-v2"]),
        proptest::collection::vec(section, 1..=2),
    )
        .prop_map(|(base, sections)| {
            let mut spec = common::fixture(&base);
            for s in sections {
                merge(&mut spec, s);
            }
            spec
        })
        .boxed()
}

/// Lays `overlay` over `base`: objects field by field, `null` leaves the base's value.
fn merge(base: &mut Value, overlay: Value) {
    match (base, overlay) {
        (_, Value::Null) => {}
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, o) => *b = o,
    }
}

/// The LXC keys a plan may render at all, by the spec section that asks for them (exact keys,
/// and prefixes whose rest comes from the spec and is checked below).
const LXC_KEYS: &[&str] = &[
    "lxc.rootfs.path",
    "lxc.rootfs.options",
    "lxc.rootfs.managed",
    "lxc.autodev",
    "lxc.console.path",
    "lxc.tty.max",
    "lxc.pty.max",
    "lxc.init.cmd",
    "lxc.hook.mount",
    "lxc.hook.stop",
    "lxc.namespace.clone",
    "lxc.uts.name",
    "lxc.idmap",
    "lxc.apparmor.profile",
    "lxc.selinux.context",
    "lxc.cap.keep",
    "lxc.seccomp.profile",
    "lxc.arch",
    "lxc.mount.auto",
    "lxc.autodev.tmpfs.size",
    "lxc.mount.entry",
    "lxc.cgroup.dir.container",
    "lxc.cgroup.dir.monitor",
    "lxc.time.offset.boot",
    "lxc.time.offset.monotonic",
];

/// Whether `key` is a line the spec asked for: a fixed key, or one built from a spec name
/// (namespace, interface index, sysctl, cgroup file).
fn expected_key(key: &str, spec: &oci_spec::runtime::Spec, plan: &ContainerPlan) -> bool {
    if LXC_KEYS.contains(&key) {
        return true;
    }
    let linux = spec.linux().clone().unwrap_or_default();
    if let Some(ns) = key.strip_prefix("lxc.namespace.share.") {
        return ["mnt", "pid", "uts", "ipc", "net", "cgroup", "user", "time"].contains(&ns);
    }
    if let Some(rest) = key.strip_prefix("lxc.net.") {
        let (idx, what) = rest.split_once('.').unwrap_or(("", ""));
        let devices = linux.net_devices().as_ref().map_or(0, |d| d.len());
        return idx.parse::<usize>().is_ok_and(|i| i <= devices)
            && ["type", "link", "name", "flags"].contains(&what);
    }
    if let Some(name) = key.strip_prefix("lxc.sysctl.") {
        return linux
            .sysctl()
            .iter()
            .flatten()
            .any(|(k, _)| k.replace('/', ".") == name);
    }
    let file = key
        .strip_prefix("lxc.cgroup2.")
        .or_else(|| key.strip_prefix("lxc.cgroup."));
    match file {
        Some(f) if f == "devices.allow" || f == "devices.deny" => !plan.device_rules.is_empty(),
        Some(f) => plan.cgroup.iter().any(|(k, _)| k == f) && cgroup_file_from_spec(f, &linux),
        None => false,
    }
}

/// A cgroup file name is a fixed one (no dots beyond the controller's) or comes from the
/// spec's `unified` keys or hugepage sizes.
fn cgroup_file_from_spec(file: &str, linux: &oci_spec::runtime::Linux) -> bool {
    let resources = linux.resources().clone().unwrap_or_default();
    let unified = resources.unified().iter().flatten().any(|(k, _)| k == file);
    let hugepage = resources.hugepage_limits().iter().flatten().any(|h| {
        file == format!("hugetlb.{}.max", h.page_size())
            || file == format!("hugetlb.{}.limit_in_bytes", h.page_size())
    });
    unified
        || hugepage
        || file.split_once('.').is_some_and(|(controller, rest)| {
            [
                "memory", "cpu", "cpuset", "pids", "blkio", "io", "net_cls", "net_prio", "rdma",
            ]
            .contains(&controller)
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_' || b == b'.')
        })
}

/// Plans and renders one spec; panics are the failure this looks for, errors are fine.
fn check_hostile(v: Value, mode: CgroupMode) -> Result<(), TestCaseError> {
    let Ok(spec) = serde_json::from_value::<oci_spec::runtime::Spec>(v) else {
        return Ok(());
    };
    // Bind sources are resolved on this host (read-only metadata); the rootfs is an empty dir.
    let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
    let facts = common::facts(mode);
    let req = lxc_config::PlanRequest {
        name: "c1",
        spec: &spec,
        bundle: dir.path(),
        state_dir: Path::new(common::STATE),
        facts: &facts,
    };
    let Ok(plan) = lxc_config::plan(&req) else {
        return Ok(());
    };
    check_lxc(&plan)?;
    check_pve(&plan)?;
    for line in plan.render_lxc().lines().skip(1) {
        let (k, _) = lxc_parse(line).unwrap_or_default();
        prop_assert!(
            expected_key(&k, &spec, &plan),
            "unexpected key {k:?} in {line:?}"
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(384))]
    #[test]
    fn hostile_specs_never_panic_or_add_lines(v in hostile_spec(), unified in any::<bool>()) {
        let mode = if unified { CgroupMode::Unified } else { CgroupMode::Legacy };
        check_hostile(v, mode)?;
    }
}

/// Hand-kept hostile specs (one JSON spec per file in `tests/corpus/`), each planned for both
/// hierarchies: no panic, and any plan they give renders only expected lines.
#[test]
fn corpus_specs_never_panic() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no corpus in {}", dir.display());
    for f in files {
        let v: Value = serde_json::from_slice(&std::fs::read(&f).unwrap()).unwrap();
        serde_json::from_value::<oci_spec::runtime::Spec>(v.clone())
            .unwrap_or_else(|e| panic!("{}: not a spec: {e}", f.display()));
        for mode in [CgroupMode::Legacy, CgroupMode::Unified] {
            check_hostile(v.clone(), mode).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        }
    }
}

/// The generator reaches the renderers: a good share of hostile specs is accepted.
#[test]
fn hostile_generator_reaches_the_renderers() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let (mut parsed, mut planned) = (0, 0);
    for _ in 0..300 {
        let v = hostile_spec().new_tree(&mut runner).unwrap().current();
        let spec = match serde_json::from_value::<oci_spec::runtime::Spec>(v) {
            Ok(spec) => spec,
            Err(e) => {
                println!("does not parse: {e}");
                continue;
            }
        };
        parsed += 1;
        match common::plan_spec(&spec, CgroupMode::Unified) {
            Ok(_) => planned += 1,
            Err(e) => println!("refused: {}", e.field()),
        }
    }
    assert!(parsed >= 150, "only {parsed} of 300 generated specs parse");
    assert!(
        planned >= 30,
        "only {planned} of {parsed} parsed specs plan"
    );
    println!("{parsed} of 300 parse, {planned} plan");
}
