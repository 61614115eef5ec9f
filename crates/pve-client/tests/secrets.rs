//! No secret reaches a log: every log record (tracing and the `log` crate, all levels,
//! including reqwest/hyper/rustls internals) of a session with token and ticket
//! authentication, failures and retries is captured and searched for the token secret, the
//! password and every ticket and CSRF token the server issued. `Debug` output of the
//! client, credentials, builders and errors is checked as well.

mod common;

use std::time::Duration;

use common::*;
use pve_client::{Client, ConfigUpdate, CreateCt, Credentials, Secret, WaitOptions};
use pve_test_server::{Fault, FaultRule, LogCapture};

#[tokio::test]
async fn no_secret_in_any_log() {
    let capture = LogCapture::default();
    let writer = capture.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .try_init()
        .expect("subscriber installed once in this test binary");

    let server = builder()
        .ticket_lifetime(Duration::from_millis(600))
        .start()
        .await
        .unwrap();
    let wait = WaitOptions::default();

    // Token session with a retried fault and a failing task.
    let token_client = token_client(&server);
    server.inject(FaultRule::new(Fault::LockTimeout).on("POST", "/nodes/{node}/lxc"));
    let create = CreateCt::new(100, TEMPLATE).password(Secret::new("ct-root-password-secret"));
    let upid = token_client.create_ct("pve1", &create).await.unwrap();
    token_client.wait_task(&upid, &wait).await.unwrap();
    server.inject(FaultRule::new(Fault::FailTask("boom".into())));
    let upid = token_client.start_ct("pve1", 100).await.unwrap();
    let task_err = token_client.wait_task(&upid, &wait).await.unwrap_err();
    tracing::error!(error = %task_err, debug = ?task_err, "task failed");

    // Ticket session with renewals and a re-login after 401.
    let mut c = config(&server, password());
    c.ticket_lifetime = Duration::from_millis(600);
    let ticket_client = Client::new(c).unwrap();
    for _ in 0..8 {
        ticket_client
            .update_ct_config("pve1", 100, &ConfigUpdate::new().memory_mib(256))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    // Failures: wrong token secret, wrong password.
    let bad = Client::new(config(
        &server,
        Credentials::Token {
            token_id: TOKEN_ID.into(),
            secret: Secret::new("bad-token-secret-value"),
        },
    ))
    .unwrap();
    let e = bad.version().await.unwrap_err();
    tracing::warn!(error = %e, debug = ?e, "expected failure");
    let bad = Client::new(config(
        &server,
        Credentials::Password {
            username: USER.into(),
            password: Secret::new("bad-password-value"),
        },
    ))
    .unwrap();
    let e = bad.version().await.unwrap_err();
    tracing::warn!(error = %e, debug = ?e, "expected failure");

    // Debug output of everything a caller might log.
    tracing::info!(client = ?token_client, "client");
    tracing::info!(client = ?ticket_client, "client");
    tracing::info!(credentials = ?token(), password = ?password(), create = ?create, "inputs");

    let tickets = server.issued_tickets();
    assert!(tickets.len() >= 3, "renewals happened: {}", tickets.len());
    let log = String::from_utf8(capture.bytes()).unwrap();
    assert!(log.len() > 1000, "the capture works ({} bytes)", log.len());
    assert!(
        log.contains("obtained Proxmox ticket"),
        "info lines are captured"
    );
    let mut secrets = vec![
        TOKEN_SECRET.to_string(),
        PASSWORD.to_string(),
        "ct-root-password-secret".to_string(),
        "bad-token-secret-value".to_string(),
        "bad-password-value".to_string(),
    ];
    for t in &tickets {
        secrets.push(t.clone());
        // The signature part alone, and its URL-encoded cookie form.
        secrets.push(t.rsplit("::").next().unwrap().to_string());
        secrets.push(t.replace(':', "%3A"));
    }
    for s in &secrets {
        assert!(!log.contains(s.as_str()), "a secret reached the log: {s}");
    }
}
