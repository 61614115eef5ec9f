//! Shared helpers for the integration tests.
#![allow(dead_code)]

use std::path::Path;

use lxc_config::{CgroupMode, ContainerPlan, NodeFacts, PlanError, PlanRequest};
use oci_spec::runtime::Spec;

pub const BUNDLE: &str = "/run/bundles/c1";
pub const STATE: &str = "/run/ctinit/c1";
pub const INCLUDE: &str = "/run/containerd-shim-proxmox-lxc/c1/lxc.conf";

pub fn fixture(name: &str) -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("{name}.json"));
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

pub fn facts(mode: CgroupMode) -> NodeFacts {
    NodeFacts {
        cgroup: mode,
        lxc_version: (5, 0, 2),
        mount_setattr: lxc_config::MountSetattr::ALL,
    }
}

pub fn plan_value(v: &serde_json::Value, mode: CgroupMode) -> Result<ContainerPlan, PlanError> {
    let spec: Spec = serde_json::from_value(v.clone()).expect("fixture parses as a spec");
    plan_spec(&spec, mode)
}

pub fn plan_spec(spec: &Spec, mode: CgroupMode) -> Result<ContainerPlan, PlanError> {
    lxc_config::plan(&PlanRequest {
        name: "c1",
        spec,
        bundle: Path::new(BUNDLE),
        state_dir: Path::new(STATE),
        facts: &facts(mode),
    })
}
