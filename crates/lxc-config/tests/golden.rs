//! Golden tests: spec in, rendered text out, for both renderers. Regenerate with
//! `UPDATE_GOLDEN=1 cargo test -p lxc-config --test golden` and review the diff.

mod common;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use lxc_config::CgroupMode;

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn check(name: &str, actual: &str) {
    let path = golden_dir().join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", path.display()));
    if expected != actual {
        panic!(
            "{name} differs from the golden file\n--- expected\n{expected}\n--- actual\n{actual}"
        );
    }
}

fn plan_summary(plan: &lxc_config::ContainerPlan) -> String {
    let mut s = String::new();
    writeln!(s, "# init.json").unwrap();
    writeln!(s, "{}", String::from_utf8(plan.init.to_json()).unwrap()).unwrap();
    writeln!(s, "# ignored").unwrap();
    for i in &plan.ignored {
        writeln!(s, "{}: {}", i.field, i.reason).unwrap();
    }
    writeln!(s, "# devices").unwrap();
    for d in &plan.devices {
        writeln!(s, "{d:?}").unwrap();
    }
    writeln!(s, "# hooks: {}", plan.hooks.is_some()).unwrap();
    writeln!(s, "# seccomp at {}", plan.seccomp_path.display()).unwrap();
    if let Some(p) = &plan.seccomp_profile {
        s.push_str(p);
    }
    s
}

fn case(fixture: &str, mode: CgroupMode) {
    let tag = match mode {
        CgroupMode::Legacy => "v1",
        CgroupMode::Unified => "v2",
    };
    let plan = common::plan_value(&common::fixture(fixture), mode).unwrap();
    let base = format!("{fixture}.{tag}");
    check(&format!("{base}.lxc.conf"), &plan.render_lxc());
    let pve = plan.render_pve(Path::new(common::INCLUDE));
    check(&format!("{base}.pve.conf"), &pve.ct_conf);
    check(&format!("{base}.pve-include.conf"), &pve.include);
    check(&format!("{base}.plan.txt"), &plan_summary(&plan));
}

#[test]
fn minimal_v1() {
    case("minimal", CgroupMode::Legacy);
}

#[test]
fn k8s_v1() {
    case("k8s", CgroupMode::Legacy);
}

#[test]
fn k8s_v2() {
    case("k8s", CgroupMode::Unified);
}

#[test]
fn userns_v2() {
    case("userns-v2", CgroupMode::Unified);
}

/// The cgroup settings the shim's Update uses are the lines the renderer writes.
#[test]
fn cgroup_settings_match_rendered_lines() {
    let v = common::fixture("k8s");
    let spec: oci_spec::runtime::Spec = serde_json::from_value(v).unwrap();
    let res = spec.linux().as_ref().unwrap().resources().as_ref().unwrap();
    for (mode, prefix) in [
        (CgroupMode::Legacy, "lxc.cgroup."),
        (CgroupMode::Unified, "lxc.cgroup2."),
    ] {
        let plan = common::plan_spec(&spec, mode).unwrap();
        let conf = plan.render_lxc();
        let settings = lxc_config::cgroup_settings(res, mode).unwrap();
        assert!(!settings.is_empty());
        for (file, value) in settings {
            let line = format!("{prefix}{file} = {value}");
            assert!(conf.contains(&line), "{line} missing from\n{conf}");
        }
    }
}

/// Proxmox VE 9 runs LXC 6, which dropped the `lxc.cgroup` (v1) key: the include must not
/// reset it there, and v1 limits cannot be planned with it.
#[test]
fn lxc6_include_has_no_v1_reset() {
    let v = common::fixture("k8s");
    let spec: oci_spec::runtime::Spec = serde_json::from_value(v).unwrap();
    let mut facts = common::facts(CgroupMode::Unified);
    facts.lxc_version = (6, 0, 4);
    let req = lxc_config::PlanRequest {
        name: "c1",
        spec: &spec,
        bundle: Path::new(common::BUNDLE),
        state_dir: Path::new(common::STATE),
        facts: &facts,
    };
    let plan = lxc_config::plan(&req).unwrap();
    let inc = plan.render_pve(Path::new(common::INCLUDE)).include;
    assert!(!inc.lines().any(|l| l == "lxc.cgroup ="), "{inc}");
    assert!(inc.lines().any(|l| l == "lxc.cgroup2 ="), "{inc}");
    let legacy = lxc_config::NodeFacts {
        cgroup: CgroupMode::Legacy,
        lxc_version: (6, 0, 4),
        mount_setattr: lxc_config::MountSetattr::ALL,
    };
    let req = lxc_config::PlanRequest {
        facts: &legacy,
        ..req
    };
    assert_eq!(
        lxc_config::plan(&req).unwrap_err().field(),
        "linux.resources"
    );
}

/// Tags and description lines a caller adds are encoded by the renderer as well.
#[test]
fn caller_added_tags_and_description_stay_on_their_lines() {
    let mut plan = common::plan_value(&common::fixture("minimal"), CgroupMode::Legacy).unwrap();
    plan.tags.push("id-abc\nlxc.cap.keep: sys_admin".into());
    plan.description
        .push_str("\ncontainer id: abc\r\nlxc.cap.keep: sys_admin");
    let ct = plan.render_pve(Path::new(common::INCLUDE)).ct_conf;
    assert!(!ct.lines().any(|l| l.starts_with("lxc.cap.keep")), "{ct}");
    assert!(
        ct.contains("tags: id-abc_lxc.cap.keep__sys_admin\n"),
        "{ct}"
    );
    assert!(
        ct.contains("#container id%3a abc%0d\n#lxc.cap.keep%3a sys_admin\n"),
        "{ct}"
    );
}
