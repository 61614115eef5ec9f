//! TLS trust modes and authentication (tokens, tickets, renewal, CSRF).

mod common;

use std::time::Duration;

use common::*;
use pve_client::{
    Client, ClientConfig, ConfigUpdate, CreateCt, Credentials, Error, Secret, TlsTrust, WaitOptions,
};

fn with_trust(url: &str, trust: TlsTrust) -> Client {
    let mut c = ClientConfig::new(url, trust, token());
    c.retry = fast_retry();
    Client::new(c).unwrap()
}

#[tokio::test]
async fn fingerprint_pin_match_and_mismatch() {
    let server = server().await;
    let ok = with_trust(
        &server.url(),
        TlsTrust::fingerprint(server.fingerprint()).unwrap(),
    );
    ok.version().await.unwrap();
    // Without colons and in lower case too.
    let plain = server.fingerprint().replace(':', "").to_lowercase();
    with_trust(&server.url(), TlsTrust::fingerprint(&plain).unwrap())
        .version()
        .await
        .unwrap();

    // Another server's fingerprint: refused, and not retried (a TLS failure is permanent).
    let other = common::server().await;
    let before = server.connections();
    let wrong = with_trust(
        &server.url(),
        TlsTrust::fingerprint(other.fingerprint()).unwrap(),
    );
    let e = wrong.version().await.unwrap_err();
    assert!(matches!(e, Error::Transport { .. }), "{e:?}");
    assert!(e.is_tls_failure(), "{e:?}");
    assert!(!e.is_transient());
    // The error names the certificate the server presented, in Proxmox's notation, so the
    // operator can compare it with the node's (e.g. after a renewal).
    assert_eq!(
        e.presented_fingerprint(),
        Some(server.fingerprint()),
        "{e:?}"
    );
    assert!(e.to_string().contains(server.fingerprint()), "{e}");
    assert_eq!(
        server.connections() - before,
        1,
        "a pin mismatch must not be retried"
    );
    assert_eq!(
        server.requests("GET", "/version"),
        2,
        "no request got through with the wrong pin"
    );
}

#[tokio::test]
async fn ca_file_trust() {
    let server = server().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("pve-root-ca.pem");
    server.write_ca_file(&ca).unwrap();
    // By IP and by name: the node certificate carries both.
    with_trust(&server.url(), TlsTrust::CaFile(ca.clone()))
        .version()
        .await
        .unwrap();
    let by_name = format!("https://localhost:{}", server.addr().port());
    let client = with_trust(&by_name, TlsTrust::CaFile(ca.clone()));
    assert_eq!(client.url(), format!("{by_name}/api2/json"));
    client.version().await.unwrap();

    // Another cluster's CA is refused.
    let other = common::server().await;
    let other_ca = dir.path().join("other-ca.pem");
    other.write_ca_file(&other_ca).unwrap();
    let e = with_trust(&server.url(), TlsTrust::CaFile(other_ca))
        .version()
        .await
        .unwrap_err();
    assert!(e.is_tls_failure(), "{e:?}");

    // The system roots do not know the test CA: refused as well (there is no accept-all).
    let e = with_trust(&server.url(), TlsTrust::SystemRoots)
        .version()
        .await;
    match e {
        Err(e) => assert!(e.is_tls_failure() || matches!(e, Error::Tls(_)), "{e:?}"),
        Ok(_) => panic!("system roots must not trust the test CA"),
    }

    // Bad inputs fail at construction.
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let e = Client::new(ClientConfig::new(
        &server.url(),
        TlsTrust::CaFile(empty),
        token(),
    ))
    .unwrap_err();
    assert!(matches!(e, Error::Tls(_)), "{e:?}");
    let e = Client::new(ClientConfig::new(
        "http://127.0.0.1:8006",
        TlsTrust::SystemRoots,
        token(),
    ))
    .unwrap_err();
    assert!(matches!(e, Error::Config(_)), "{e:?}");
}

#[tokio::test]
async fn token_auth() {
    let server = server().await;
    token_client(&server).version().await.unwrap();
    let mut c = config(
        &server,
        Credentials::Token {
            token_id: TOKEN_ID.into(),
            secret: Secret::new("wrong"),
        },
    );
    c.retry.max_attempts = 3;
    let e = Client::new(c).unwrap().version().await.unwrap_err();
    assert!(e.is_unauthorized(), "{e:?}");
    assert_eq!(server.auth_failures(), 1, "401 is not retried");
    let bad_id = Client::new(config(
        &server,
        Credentials::Token {
            token_id: "nobody".into(),
            secret: Secret::new("x"),
        },
    ));
    assert!(matches!(bad_id, Err(Error::Config(_))));
}

#[tokio::test]
async fn ticket_auth_with_csrf() {
    let server = server().await;
    let client = password_client(&server);
    client.version().await.unwrap();
    assert_eq!(server.logins(), 1);
    // Write operations carry the CSRF token.
    let upid = client
        .create_ct("pve1", &CreateCt::new(100, TEMPLATE))
        .await
        .unwrap();
    assert_eq!(upid.user, USER);
    client
        .wait_task(&upid, &WaitOptions::default())
        .await
        .unwrap();
    client
        .update_ct_config("pve1", 100, &ConfigUpdate::new().memory_mib(128))
        .await
        .unwrap();
    assert_eq!(server.logins(), 1, "one ticket serves many requests");
    assert_eq!(server.auth_failures(), 0);

    let wrong = Client::new(config(
        &server,
        Credentials::Password {
            username: USER.into(),
            password: Secret::new("nope"),
        },
    ))
    .unwrap();
    let e = wrong.version().await.unwrap_err();
    assert!(e.is_unauthorized(), "{e:?}");
    assert_eq!(e.message(), Some("authentication failure\n"));
}

#[tokio::test]
async fn ticket_is_renewed_before_it_expires() {
    let lifetime = Duration::from_millis(2400);
    let server = builder().ticket_lifetime(lifetime).start().await.unwrap();
    let mut c = config(&server, password());
    c.ticket_lifetime = lifetime;
    let client = Client::new(c).unwrap();
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_millis(5500) {
        client.nodes().await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Renewed roughly every 1.8 s (lifetime minus a quarter), never refused.
    assert!(server.logins() >= 3, "logins: {}", server.logins());
    assert_eq!(
        server.auth_failures(),
        0,
        "a request went out with an expired ticket"
    );
}

#[tokio::test]
async fn expired_ticket_is_replaced_on_401() {
    // The server's tickets expire earlier than the client believes (clock skew): the
    // client gets a 401, logs in again with the password and repeats the request.
    let server = builder()
        .ticket_lifetime(Duration::from_millis(300))
        .start()
        .await
        .unwrap();
    let client = password_client(&server);
    client.version().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    client.version().await.unwrap();
    assert_eq!(server.logins(), 2);
    assert_eq!(server.auth_failures(), 1);
}
