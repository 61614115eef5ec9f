//! The `pve-test-server` binary on the wire: TLS with the CA it writes, the JSON envelope,
//! and Proxmox's exact error shape and status line.

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `raw` sent over TLS to the server on `port` whose CA is `ca_pem`: what it answered.
async fn request(port: u16, ca_pem: &[u8], raw: String) -> String {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &ca_pem[..]) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    tls.write_all(raw.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tls.read_to_end(&mut out).await.unwrap_or_default();
    String::from_utf8_lossy(&out).into_owned()
}

/// A raw GET of `path`, with the `auth` header line.
fn get(path: &str, auth: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n")
}

/// A raw POST of the form `body` to `path`, with the `auth` header line.
fn post_form(path: &str, auth: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test]
async fn binary_serves_proxmox_wire_format() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    let lxc = dir.path().join("lxc");
    let mut child = Command::new(env!("CARGO_BIN_EXE_pve-test-server"))
        .args([
            "--node",
            "pve1",
            "--token",
            "root@pam!t=s3cret",
            "--task-ms",
            "5",
        ])
        .arg("--ca-out")
        .arg(&ca)
        .arg("--config-dir")
        .arg(&lxc)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _guard = Child(child);
    let mut url = String::new();
    let mut fingerprint = String::new();
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(u) = line.strip_prefix("url=") {
            url = u.to_string();
        }
        if let Some(f) = line.strip_prefix("fingerprint=") {
            fingerprint = f.to_string();
        }
        if line.starts_with("lock_dir=") {
            break;
        }
    }
    assert_eq!(fingerprint.len(), 95, "{fingerprint}");
    let port: u16 = url
        .rsplit(':')
        .next()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let ca_pem = std::fs::read(&ca).unwrap();
    let auth = "Authorization: PVEAPIToken=root@pam!t=s3cret\r\n";

    let send = |raw| request(port, &ca_pem, raw);

    let ok = send(get("/api2/json/version", auth)).await;
    assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
    assert!(ok.contains("application/json;charset=UTF-8"), "{ok}");
    assert!(
        ok.contains(r#"{"data":{"#) && ok.contains(r#""release":"9.1""#),
        "{ok}"
    );

    let body = "vmid=42&ostemplate=local%3Avztmpl%2Fx.tar.zst";
    let bad = send(post_form("/api2/json/nodes/pve1/lxc", auth, body)).await;
    assert!(
        bad.starts_with("HTTP/1.1 400 Parameter verification failed.\r\n"),
        "{bad}"
    );
    let json = bad.split("\r\n\r\n").nth(1).unwrap();
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(
        v,
        serde_json::json!({
            "data": null,
            "errors": {"vmid": "invalid format - value does not look like a valid VM ID\n"},
            "message": "Parameter verification failed.\n"
        })
    );

    let wrong = "Authorization: PVEAPIToken=root@pam!t=wrong\r\n";
    let denied = send(get("/api2/json/version", wrong)).await;
    assert!(
        denied.starts_with("HTTP/1.1 401 authentication failure\r\n"),
        "{denied}"
    );

    // A CT created through the wire lands as VMID.conf in the config directory.
    let body = "vmid=100&ostemplate=local%3Avztmpl%2Fx.tar.zst&hostname=a1";
    let created = send(post_form("/api2/json/nodes/pve1/lxc", auth, body)).await;
    assert!(created.contains(r#"{"data":"UPID:pve1:"#), "{created}");
    let conf = std::fs::read_to_string(lxc.join("100.conf")).unwrap();
    assert!(
        conf.contains("lock: create") || conf.contains("hostname: a1"),
        "{conf}"
    );
}
