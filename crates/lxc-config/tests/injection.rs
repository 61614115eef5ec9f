//! Security property: no value from the spec can add, end or alter a config line.
//!
//! For arbitrary strings (control characters, `=`, `#`, quotes, backslashes, unicode) put into
//! every string field of a spec, `plan` either rejects the spec, or both renderings consist of
//! exactly the lines the plan intends, each of which LXC and Proxmox parse back to exactly the
//! intended key and value.

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
    let mut expected = vec![(
        "lxc.rootfs.path".to_string(),
        format!("dir:{}", plan.rootfs.display()),
    )];
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
    let resets = [
        "lxc.tty.dir",
        "lxc.cap.drop",
        "lxc.cap.keep",
        "lxc.mount.auto",
        "lxc.mount.entry",
        "lxc.seccomp.profile",
        "lxc.hook.clone",
        "lxc.cgroup",
        "lxc.cgroup2",
    ];
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
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]
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
