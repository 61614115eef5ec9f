//! The task service's own tests; the RPCs end to end are in tests/e2e and tests/cri.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::Notify;

use super::*;
use crate::driver::{CreateSpec, NodeContainer};

#[test]
fn a_reserved_id_is_taken_until_released() {
    let table = Containers::default();
    let first = table.reserve("web").unwrap();
    let second = table.reserve("web").err().unwrap();
    assert!(matches!(second, ShimError::AlreadyExists(_)), "{second}");
    assert!(matches!(table.get("web"), Err(ShimError::NotFound(_))));
    assert!(!table.is_empty(), "a Create in flight keeps the shim up");
    drop(first);
    assert!(table.is_empty());
    table.reserve("web").unwrap();
}

/// A driver whose create waits until the test lets it go, then fails.
struct GatedDriver {
    entered: Arc<Notify>,
    gate: Arc<Notify>,
}

#[async_trait]
impl Driver for GatedDriver {
    async fn create(&self, _spec: &CreateSpec<'_>) -> Result<Box<dyn NodeContainer>> {
        self.entered.notify_one();
        self.gate.notified().await;
        Err(ShimError::Internal("gated driver: create refused".into()))
    }
}

/// Two Creates with one id at once: the second is refused before it touches anything, and
/// the first one's state directory stays as the first made it.
#[tokio::test]
#[ignore = "needs root: the state root under /run"]
async fn a_second_create_of_one_id_leaves_the_first_alone() {
    crate::assert_root();
    let bundle = tempfile::tempdir().unwrap();
    std::fs::create_dir(bundle.path().join("rootfs")).unwrap();
    let spec = oci_spec::runtime::Spec::default();
    spec.save(bundle.path().join("config.json")).unwrap();
    let namespace = format!("shim-unit-{}", std::process::id());
    let (events, _queue) = Events::channel();
    let service = TaskService::with(
        &namespace,
        events,
        ChildExits::default(),
        Arc::new(ExitSignal::default()),
    );
    let req = CreateTaskRequest {
        id: "twice".into(),
        bundle: bundle.path().display().to_string(),
        ..Default::default()
    };
    let (entered, gate) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let driver: Arc<dyn Driver> = Arc::new(GatedDriver {
        entered: entered.clone(),
        gate: gate.clone(),
    });
    let first = tokio::spawn({
        let (service, req) = (service.clone(), req.clone());
        async move { service.create_task(&req, move |_| Ok(driver)).await }
    });
    // The first Create is inside its driver's create: its state directory is made.
    entered.notified().await;
    let state_dir = record::state_dir_for(&namespace, "twice");
    let init_spec = state_dir
        .join(ctinit_proto::HELPER_DIR_NAME)
        .join(ctinit_proto::INIT_SPEC_NAME);
    assert!(init_spec.exists(), "{} missing", init_spec.display());

    let second = service
        .create_task(&req, |_| {
            panic!("the second Create must be refused before it opens a driver")
        })
        .await
        .err()
        .unwrap();
    assert!(matches!(second, ShimError::AlreadyExists(_)), "{second}");
    assert!(
        init_spec.exists(),
        "the second Create removed the first one's state"
    );

    gate.notify_one();
    let first = first.await.unwrap().err().unwrap();
    assert!(first.to_string().contains("gated driver"), "{first}");
    assert!(!state_dir.exists(), "a failed Create is rolled back");
    // The id is free again.
    let third = service
        .create_task(&req, |_| Err(ShimError::InvalidArgument("third".into())))
        .await
        .err()
        .unwrap();
    assert!(matches!(third, ShimError::InvalidArgument(_)), "{third}");
}

/// containerd's idmap options on the rootfs mount, malformed or unusable: a Create fails with
/// an error naming what was wrong and leaves nothing (no rootfs mount, no state directory, no
/// idmapped lower-dir clones).
#[tokio::test]
#[ignore = "needs root: mounts, user namespaces"]
async fn bad_rootfs_idmap_options_fail_cleanly() {
    crate::assert_root();
    let clones = || -> Vec<String> {
        std::fs::read_dir(crate::config::STATE_ROOT)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with(&format!("ovl-idmapped-{}-", std::process::id())))
                    .collect()
            })
            .unwrap_or_default()
    };
    let namespace = format!("shim-idmap-{}", std::process::id());
    let (events, _queue) = Events::channel();
    let exits = ChildExits::start().await.unwrap();
    let service = TaskService::with(&namespace, events, exits, Arc::new(ExitSignal::default()));
    let work = tempfile::tempdir().unwrap();
    let upper = work.path().join("upper");
    let lower = work.path().join("lower");
    std::fs::create_dir_all(&upper).unwrap();
    std::fs::create_dir_all(&lower).unwrap();
    for (i, (maps, lowerdirs, want)) in [
        (
            ["uidmap=0:100000:65536", "gidmap=0:100000"],
            lower.display().to_string(),
            "gidmap=0:100000",
        ),
        (
            ["uidmap=0:100000:65536", "gidmap=0:100000:65536"],
            format!("{}:/nonexistent-layer", lower.display()),
            "/nonexistent-layer",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let bundle = tempfile::tempdir().unwrap();
        oci_spec::runtime::Spec::default()
            .save(bundle.path().join("config.json"))
            .unwrap();
        let mut options = vec![
            format!("lowerdir={lowerdirs}"),
            format!("upperdir={}", upper.display()),
            format!("workdir={}", work.path().join("work").display()),
        ];
        options.extend(maps.iter().map(|s| s.to_string()));
        let mount = containerd_shim::protos::types::mount::Mount {
            type_: "overlay".into(),
            source: "overlay".into(),
            options,
            ..Default::default()
        };
        let req = CreateTaskRequest {
            id: format!("idmap{i}"),
            bundle: bundle.path().display().to_string(),
            rootfs: vec![mount],
            ..Default::default()
        };
        // A driver that refuses at once, should the Create get that far.
        let gate = Arc::new(Notify::new());
        gate.notify_one();
        let driver: Arc<dyn Driver> = Arc::new(GatedDriver {
            entered: Arc::new(Notify::new()),
            gate,
        });
        let err = service
            .create_task(&req, move |_| Ok(driver))
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains(want), "{err} does not name {want}");
        let rootfs = bundle.path().join("rootfs");
        assert!(
            !std::fs::read_to_string("/proc/self/mountinfo")
                .unwrap()
                .contains(&rootfs.display().to_string()),
            "rootfs left mounted"
        );
        assert!(!record::state_dir_for(&namespace, &req.id).exists());
        assert!(
            clones().is_empty(),
            "idmapped lower dirs left: {:?}",
            clones()
        );
    }
}
