//! The test server's node extension point: a custom `NodeBackend` sees create/start/stop/
//! shutdown/destroy with the CT's config, and its errors fail the task with Proxmox's shape.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use pve_client::{CreateCt, DestroyOptions, Error, WaitOptions};
use pve_test_server::{BackendResult, CtConfig, NodeBackend, NodeContext, TaskLog};

#[derive(Default)]
struct Recorder {
    calls: Mutex<Vec<String>>,
    running: Mutex<bool>,
}

impl Recorder {
    fn record(&self, what: String) {
        self.calls.lock().unwrap().push(what);
    }
}

// The trait is declared with async-trait; implementing it needs the same macro.
#[pve_test_server::async_trait]
impl NodeBackend for Recorder {
    async fn create(
        &self,
        ctx: &NodeContext,
        vmid: u32,
        ostemplate: &str,
        config: &CtConfig,
        log: &TaskLog,
    ) -> BackendResult {
        assert!(
            ctx.config_path(vmid).exists(),
            "config exists before the backend runs"
        );
        assert_eq!(config.lock(), Some("create"));
        log.line(format!("unpacking {ostemplate}"));
        self.record(format!("create {vmid} {ostemplate}"));
        Ok(())
    }
    async fn start(
        &self,
        _: &NodeContext,
        vmid: u32,
        config: &CtConfig,
        log: &TaskLog,
    ) -> BackendResult {
        let host = config.options.get("hostname").cloned().unwrap_or_default();
        self.record(format!("start {vmid} {host}"));
        if host == "broken" {
            log.line("lxc-start: failed to run init");
            return Err(format!("startup for container '{vmid}' failed"));
        }
        *self.running.lock().unwrap() = true;
        Ok(())
    }
    async fn stop(
        &self,
        _: &NodeContext,
        vmid: u32,
        _: &CtConfig,
        timeout: Option<Duration>,
        _: &TaskLog,
    ) -> BackendResult {
        if let Some(timeout) = timeout {
            // A clean shutdown that never finishes.
            self.record(format!("shutdown {vmid} {}", timeout.as_secs()));
            return Err("container did not stop in time".into());
        }
        self.record(format!("stop {vmid}"));
        *self.running.lock().unwrap() = false;
        Ok(())
    }
    async fn destroy(
        &self,
        _: &NodeContext,
        vmid: u32,
        _: &CtConfig,
        _: &TaskLog,
    ) -> BackendResult {
        self.record(format!("destroy {vmid}"));
        Ok(())
    }
    async fn is_running(&self, _: &NodeContext, _: u32) -> bool {
        *self.running.lock().unwrap()
    }
    async fn init_pid(&self, _: &NodeContext, _: u32) -> Option<u32> {
        self.running.lock().unwrap().then_some(4242)
    }
}

#[tokio::test]
async fn node_backend_hooks() {
    let backend = Arc::new(Recorder::default());
    let server = builder().backend(backend.clone()).start().await.unwrap();
    let client = token_client(&server);
    let wait = WaitOptions::default();

    let upid = client
        .create_ct("pve1", &CreateCt::new(100, TEMPLATE).hostname("web"))
        .await
        .unwrap();
    client.wait_task(&upid, &wait).await.unwrap();
    assert!(client
        .task_log_all(&upid)
        .await
        .unwrap()
        .iter()
        .any(|l| l == &format!("unpacking {TEMPLATE}")));
    let upid = client.start_ct("pve1", 100).await.unwrap();
    client.wait_task(&upid, &wait).await.unwrap();
    let status = client.ct_status("pve1", 100).await.unwrap();
    assert!(status.is_running());
    assert_eq!(status.pid, Some(4242));

    // Shutdown fails in the backend; forceStop makes the server stop it.
    let upid = client
        .shutdown_ct("pve1", 100, Duration::from_secs(3), true)
        .await
        .unwrap();
    client.wait_task(&upid, &wait).await.unwrap();
    assert!(!client.ct_status("pve1", 100).await.unwrap().is_running());

    // A backend error is the task's exit status; its log lines are in the error.
    let upid = client
        .create_ct("pve1", &CreateCt::new(101, TEMPLATE).hostname("broken"))
        .await
        .unwrap();
    client.wait_task(&upid, &wait).await.unwrap();
    let upid = client.start_ct("pve1", 101).await.unwrap();
    match client.wait_task(&upid, &wait).await.unwrap_err() {
        Error::TaskFailed {
            exitstatus, log, ..
        } => {
            assert_eq!(exitstatus, "startup for container '101' failed");
            assert!(
                log.iter().any(|l| l == "lxc-start: failed to run init"),
                "{log:?}"
            );
        }
        other => panic!("{other:?}"),
    }

    let upid = client
        .destroy_ct("pve1", 100, &DestroyOptions::default())
        .await
        .unwrap();
    client.wait_task(&upid, &wait).await.unwrap();
    let calls = backend.calls.lock().unwrap().clone();
    assert_eq!(
        calls,
        vec![
            format!("create 100 {TEMPLATE}"),
            "start 100 web".to_string(),
            "shutdown 100 3".to_string(),
            "stop 100".to_string(),
            format!("create 101 {TEMPLATE}"),
            "start 101 broken".to_string(),
            "destroy 100".to_string(),
        ]
    );
}
