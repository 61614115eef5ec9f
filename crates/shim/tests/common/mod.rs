//! What the pve driver tests share: the shim's `[pve]` settings for a test server and a planned
//! container with a rootfs.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use pve_test_server::TestServer;
use shim::config::PveSection;

/// Settings for `server` with the token `token_id` (secret in a 0600 file in `dir`).
pub fn pve_settings(
    dir: &Path,
    server: &TestServer,
    (token_id, secret): (&str, &str),
    range: [u32; 2],
) -> PveSection {
    let ca = dir.join("ca.pem");
    server.write_ca_file(&ca).unwrap();
    let token = dir.join("token");
    std::fs::write(&token, secret).unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    PveSection {
        url: server.url(),
        node: server.node().to_string(),
        token_id: token_id.into(),
        token_secret_file: token,
        ca_file: Some(ca),
        fingerprint: None,
        vmid_range: range,
        storage: None,
        lxcfs: false,
        tag_prefix: "k8s".into(),
        config_dir: server.context().config_dir.clone(),
        lock_dir: server.context().lock_dir.clone(),
        task_timeout: 5,
    }
}

/// The plan of container `name`: a spec with a rootfs in `dir` and `annotations`, on a cgroup
/// v1 node with LXC 5.0.
pub fn plan_with(
    name: &str,
    dir: &Path,
    state_dir: &Path,
    annotations: HashMap<String, String>,
) -> lxc_config::ContainerPlan {
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    let mut spec = oci_spec::runtime::Spec::default();
    spec.set_root(Some(
        oci_spec::runtime::RootBuilder::default()
            .path(&rootfs)
            .build()
            .unwrap(),
    ));
    spec.set_annotations(Some(annotations));
    plan_of(name, dir, state_dir, &spec, lxc_config::CgroupMode::Legacy)
}

/// The plan of `spec` for a node with LXC 5.0.2 and cgroup mode `cgroup`.
pub fn plan_of(
    name: &str,
    dir: &Path,
    state_dir: &Path,
    spec: &oci_spec::runtime::Spec,
    cgroup: lxc_config::CgroupMode,
) -> lxc_config::ContainerPlan {
    lxc_config::plan(&lxc_config::PlanRequest {
        name,
        spec,
        bundle: dir,
        state_dir,
        facts: &lxc_config::NodeFacts {
            cgroup,
            lxc_version: (5, 0, 2),
            mount_setattr: lxc_config::MountSetattr::ALL,
        },
    })
    .unwrap()
}
