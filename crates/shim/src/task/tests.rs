//! The task service's own tests; the RPCs end to end are in tests/e2e and tests/cri.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::Notify;

use super::*;
use crate::driver::{CreateSpec, DriverRecord, StartedInit};

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
    async fn create(&self, _spec: &CreateSpec<'_>) -> Result<String> {
        self.entered.notify_one();
        self.gate.notified().await;
        Err(ShimError::Internal("gated driver: create refused".into()))
    }
    async fn start(&self, _name: &str, _state_dir: &Path) -> Result<StartedInit> {
        Err(ShimError::Internal("gated driver: never started".into()))
    }
    fn exec_command(&self, _name: &str, _args: &[String]) -> std::process::Command {
        std::process::Command::new("false")
    }
    async fn destroy(&self, _name: &str, _state_dir: &Path) -> Result<()> {
        Ok(())
    }
    fn record(&self, _name: &str) -> DriverRecord {
        DriverRecord::Lxc {
            lxcpath: "/nonexistent".into(),
        }
    }
    fn failure_detail(&self, _state_dir: &Path) -> Option<String> {
        None
    }
}

/// Two Creates with one id at once: the second is refused before it touches anything, and
/// the first one's state directory stays as the first made it.
#[tokio::test]
async fn a_second_create_of_one_id_leaves_the_first_alone() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED a_second_create_of_one_id_leaves_the_first_alone: needs root (the state root under /run)");
        return;
    }
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
    let init_spec = state_dir.join(ctinit_proto::INIT_SPEC_NAME);
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
