//! The shim's log as containerd gets it: each line of a container carries its id (and VMID),
//! through the RPC entry point, into spawned tasks, and for the Proxmox client's `tracing`
//! messages; containerd's `-debug` is not lowered by a Create's `log_level`.
//!
//! One test: the logger and the level are process-wide.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use containerd_shim::protos::shim::shim::{
    CreateTaskRequest, CreateTaskResponse, StartRequest, StartResponse,
};
use containerd_shim::protos::shim_async::Task;
use containerd_shim::protos::ttrpc::r#async::TtrpcContext;
use pve_client::{Client, ClientConfig, Credentials, Secret, TlsTrust};
use pve_test_server::LogCapture;
use shim::logging::{self, ContainerScoped};

/// The line of what the logger wrote (containerd's FIFO in the shim) that holds `text`.
#[track_caller]
fn line_with(capture: &LogCapture, text: &str) -> String {
    let lines = capture.lines();
    lines
        .iter()
        .find(|l| l.contains(text))
        .cloned()
        .unwrap_or_else(|| panic!("no log line with {text:?} in:\n{}", lines.join("\n")))
}

/// A Task service that logs like the real one: in the RPC, after the driver has a VMID, and
/// from a background task the RPC spawned.
struct LoggingTask {
    background_done: Arc<tokio::sync::Notify>,
}

#[async_trait]
impl Task for LoggingTask {
    async fn create(
        &self,
        _ctx: &TtrpcContext,
        req: CreateTaskRequest,
    ) -> containerd_shim::protos::ttrpc::Result<CreateTaskResponse> {
        log::info!("creating {}", req.id);
        // What the pve driver does once it has allocated the CT.
        logging::set_vmid(900_123);
        log::info!("Proxmox CT allocated");
        let done = self.background_done.clone();
        logging::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            log::warn!("init exited (background)");
            done.notify_one();
        });
        Ok(CreateTaskResponse::default())
    }

    async fn start(
        &self,
        _ctx: &TtrpcContext,
        _req: StartRequest,
    ) -> containerd_shim::protos::ttrpc::Result<StartResponse> {
        // As the shim's own code logs it (a test crate is not one of the shim's targets).
        log::debug!(target: "shim::task", "starting (a debug line)");
        Ok(StartResponse::default())
    }
}

const SECRET: &str = "5f0c9e1a-log-test-secret";

/// A client of `server` with its token, trusting the certificate with `fingerprint`.
fn token_client(server: &pve_test_server::TestServer, fingerprint: &str) -> Client {
    Client::new(ClientConfig::new(
        &server.url(),
        TlsTrust::fingerprint(fingerprint).unwrap(),
        Credentials::Token {
            token_id: "root@pam!t".into(),
            secret: Secret::new(SECRET.to_string()),
        },
    ))
    .unwrap()
}

fn ttrpc_context() -> TtrpcContext {
    TtrpcContext {
        mh: Default::default(),
        metadata: Default::default(),
        timeout_nano: 0,
    }
}

#[tokio::test]
async fn container_lines_carry_id_and_vmid_and_pve_client_messages_arrive() {
    let capture = LogCapture::default();
    // As containerd's `-debug` with the host file's `log_level = "info"`.
    logging::install(Box::new(capture.clone()), true, Some("info")).unwrap();
    assert_eq!(log::max_level(), log::LevelFilter::Debug);
    // A Create whose runtime options say "warn" does not lower -debug.
    logging::apply_configured_level(Some("warn"));
    assert_eq!(log::max_level(), log::LevelFilter::Debug);

    // RPCs through the one entry point.
    let done = Arc::new(tokio::sync::Notify::new());
    let service = ContainerScoped::new(LoggingTask {
        background_done: done.clone(),
    });
    let ctx = ttrpc_context();
    service
        .create(
            &ctx,
            CreateTaskRequest {
                id: "web-1".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), done.notified())
        .await
        .expect("the background task logged");
    service
        .start(
            &ctx,
            StartRequest {
                id: "web-1".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    log::info!("a shim-wide line");

    let before_vmid = line_with(&capture, "creating web-1");
    assert!(
        before_vmid.contains(" level=info id=\"web-1\" msg=") && !before_vmid.contains("vmid"),
        "{before_vmid}"
    );
    for text in ["Proxmox CT allocated", "init exited (background)"] {
        let line = line_with(&capture, text);
        assert!(line.contains(" id=\"web-1\" vmid=\"900123\" "), "{line}");
    }
    // A later RPC of the container: its context (with the VMID) is kept; -debug lets debug
    // lines through.
    let start = line_with(&capture, "starting (a debug line)");
    assert!(
        start.contains(" level=debug id=\"web-1\" vmid=\"900123\" "),
        "{start}"
    );
    let shim_wide = line_with(&capture, "a shim-wide line");
    assert!(!shim_wide.contains(" id="), "{shim_wide}");

    // The bridge: a `tracing` event (as pve-client emits them) becomes a line, with its fields.
    let context = logging::ContainerContext::new("web-2");
    logging::scope(context.clone(), async {
        tracing::warn!(attempt = 2, "transient failure, retrying");
    })
    .await;
    let bridged = line_with(&capture, "transient failure, retrying");
    assert!(
        bridged.contains(" level=warning id=\"web-2\" ") && bridged.contains("attempt=2"),
        "{bridged}"
    );

    // The real thing: pve-client against a server whose certificate is not the pinned one
    // logs (through tracing) the fingerprint the server presented, in the container's line.
    let server = pve_test_server::TestServer::builder()
        .token("root@pam!t", SECRET)
        .start()
        .await
        .unwrap();
    let pinned = "AB:".repeat(31) + "AB";
    let client = token_client(&server, &pinned);
    let err = logging::scope(context, async { client.version().await.unwrap_err() }).await;
    assert_eq!(err.presented_fingerprint(), Some(server.fingerprint()));
    println!("{}", capture.lines().join("\n"));
    let mismatch = line_with(&capture, server.fingerprint());
    assert!(
        mismatch.contains(" level=warning id=\"web-2\" ")
            && mismatch.contains("not the pinned one"),
        "{mismatch}"
    );
    // At debug the client's own lines are there (each request), the TLS stack's chatter is
    // not.
    let trusted = token_client(&server, server.fingerprint());
    let context = logging::ContainerContext::new("web-3");
    logging::scope(context, async { trusted.version().await.unwrap() }).await;
    let request = line_with(&capture, "Proxmox API");
    assert!(
        request.contains(" level=debug id=\"web-3\" ") && request.contains("/version"),
        "{request}"
    );
    assert!(
        !capture.lines().iter().any(|l| l.contains("Not resuming")),
        "{:?}",
        capture.lines()
    );
    // Secrets never reach the log.
    assert!(
        !capture
            .lines()
            .iter()
            .any(|l| l.contains(SECRET) || l.contains("PVEAPIToken")),
        "{:?}",
        capture.lines()
    );
}
