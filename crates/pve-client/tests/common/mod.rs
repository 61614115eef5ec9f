//! Shared setup: a test server with a token and a user, and clients for it.
#![allow(dead_code)]

use std::time::Duration;

use pve_client::{Client, ClientConfig, Credentials, RetryPolicy, Secret, TlsTrust};
use pve_test_server::{TestServer, TestServerBuilder};

pub const TOKEN_ID: &str = "root@pam!shim";
pub const TOKEN_SECRET: &str = "5f0c6f1e-0b7e-4a7c-9d62-token-secret-xyz";
pub const USER: &str = "root@pam";
pub const PASSWORD: &str = "pa55-w0rd-never-logged";
pub const TEMPLATE: &str = "local:vztmpl/busybox.tar.zst";

pub fn builder() -> TestServerBuilder {
    TestServer::builder()
        .node("pve1")
        .token(TOKEN_ID, TOKEN_SECRET)
        .user(USER, PASSWORD)
        .task_duration(Duration::from_millis(20))
}

pub async fn server() -> TestServer {
    builder().start().await.expect("server starts")
}

pub fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(40),
    }
}

pub fn config(server: &TestServer, credentials: Credentials) -> ClientConfig {
    let trust = TlsTrust::fingerprint(server.fingerprint()).expect("fingerprint");
    let mut c = ClientConfig::new(&server.url(), trust, credentials);
    c.retry = fast_retry();
    c
}

pub fn token() -> Credentials {
    Credentials::Token {
        token_id: TOKEN_ID.into(),
        secret: Secret::new(TOKEN_SECRET),
    }
}

pub fn password() -> Credentials {
    Credentials::Password {
        username: USER.into(),
        password: Secret::new(PASSWORD),
    }
}

pub fn token_client(server: &TestServer) -> Client {
    Client::new(config(server, token())).expect("client")
}

pub fn password_client(server: &TestServer) -> Client {
    Client::new(config(server, password())).expect("client")
}
