//! `gc` after a simulated node reboot: CT configs outlive the containers' state directories in
//! `/run`; `gc` destroys exactly the CTs of this shim whose container is gone, and nothing else.

use std::path::Path;
use std::time::Duration;

mod common;

use pve_test_server::TestServer;
use shim::config::PveSection;
use shim::driver::pve::PveDriver;
use shim::driver::{CreateSpec, Driver};

const TOKEN: &str = "root@pam!gc";
const SECRET: &str = "3c9d0e1f-5a6b-4c7d-8e9f-0a1b2c3d4e5f";
const RANGE: [u32; 2] = [980600, 980699];

fn settings(dir: &Path, server: &TestServer) -> PveSection {
    common::pve_settings(dir, server, (TOKEN, SECRET), RANGE)
}

fn plan(dir: &Path, state_dir: &Path) -> lxc_config::ContainerPlan {
    common::plan_with("gc", dir, state_dir, Default::default())
}

#[tokio::test]
async fn gc_after_a_reboot_destroys_exactly_the_stale_cts_of_this_shim() {
    let server = TestServer::builder()
        .token(TOKEN, SECRET)
        .task_duration(Duration::ZERO)
        .start()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let settings = settings(dir.path(), &server);
    let exits = shim::host::process::exits::ChildExits::start()
        .await
        .unwrap();
    let driver = PveDriver::new(&settings, exits).unwrap();
    let mut made = Vec::new();
    for id in ["gone", "alive", "running-gone"] {
        let state_dir = dir.path().join("run").join(id);
        std::fs::create_dir_all(&state_dir).unwrap();
        let plan = plan(dir.path(), &state_dir);
        let name = driver
            .create(&CreateSpec {
                namespace: "default",
                id,
                plan: &plan,
                state_dir: &state_dir,
            })
            .await
            .unwrap();
        if id == "running-gone" {
            name.start().await.unwrap();
        }
        made.push((id, name.name().parse::<u32>().unwrap(), state_dir));
    }
    let vmid = |id: &str| made.iter().find(|m| m.0 == id).unwrap().1;
    // Not this shim's: another tool's CT in the range without the tag, and a tagged CT
    // outside the range, both with a missing include.
    let missing = dir.path().join("nowhere/pve-include.conf");
    let foreign = format!(
        "arch: amd64\nhostname: other\nlxc.include: {}\n",
        missing.display()
    );
    std::fs::write(server.context().config_path(980690), &foreign).unwrap();
    let outside = format!(
        "arch: amd64\ntags: k8s;k8s-cid-0123456789abcdef\nlxc.include: {}\n",
        missing.display()
    );
    std::fs::write(server.context().config_path(980700), &outside).unwrap();

    // The reboot: /run is empty again.
    for (id, _, state_dir) in &made {
        if *id != "alive" {
            std::fs::remove_dir_all(state_dir).unwrap();
        }
    }

    let dry = shim::gc::collect(&settings, true).await.unwrap();
    assert_eq!(dry.destroyed, vec![vmid("gone")]);
    assert!(server.context().config_path(vmid("gone")).exists());

    let report = shim::gc::collect(&settings, false).await.unwrap();
    println!("{report:?}");
    assert_eq!(report.destroyed, vec![vmid("gone")]);
    assert!(report.failed.is_empty(), "{report:?}");
    assert!(!server.context().config_path(vmid("gone")).exists());
    for kept in [vmid("alive"), vmid("running-gone"), 980690, 980700] {
        assert!(
            server.context().config_path(kept).exists(),
            "CT {kept} must be kept: {report:?}"
        );
    }
    let reasons: Vec<&(u32, String)> = report.kept.iter().collect();
    assert!(
        reasons
            .iter()
            .any(|(v, why)| *v == vmid("running-gone") && why.contains("running")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|(v, why)| *v == vmid("alive") && why.contains("exists")),
        "{reasons:?}"
    );
    // A second run finds nothing more to do.
    let again = shim::gc::collect(&settings, false).await.unwrap();
    assert!(again.destroyed.is_empty(), "{again:?}");
}
