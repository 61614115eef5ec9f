//! A private OCI registry (Debian's `docker-registry`, the CNCF distribution server) on
//! 127.0.0.1, and a small OCI push over plain HTTP for the images the tests build.
//!
//! Images: one busybox layer (the same deterministic layer `e2e::image` builds) under three
//! image configs:
//! - `pause`: the sandbox ("pause") image the CRI plugin pulls itself for every pod; it sleeps
//!   until killed, as registry.k8s.io/pause does.
//! - `busybox`: `Cmd ["sh"]`, root, `/`; tests give the command.
//! - `app`: `Entrypoint`, `Cmd`, `Env`, `WorkingDir /home/app`, `User app` (uid 1000), to prove
//!   that the image config pulled through CRI reaches the workload.

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use e2e::image::{busybox_layer, digest_of, ImageBlobs, MANIFEST_MEDIA_TYPE, PATH_ENV};
use serde_json::{json, Value};

pub const REGISTRY_BINARY: &str = "/usr/bin/docker-registry";
/// The app image's command and the values it prints (checked by the tests).
pub const APP_CMD: &str = "echo \"greeting=$GREETING\"; id; pwd; echo args=\"$0 $*\"";
pub const APP_GREETING: &str = "hello from a pulled image";

pub struct Registry {
    /// `127.0.0.1:PORT`
    pub host: String,
    pub dir: PathBuf,
    child: Mutex<Option<Child>>,
}

/// References of the images pushed to the registry.
#[derive(Clone, Debug)]
pub struct Images {
    pub pause: String,
    pub busybox: String,
    pub app: String,
}

fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

impl Registry {
    /// Starts `docker-registry` with storage under `dir`, listening on a free loopback port.
    pub fn start(dir: &Path) -> Result<Registry> {
        if !Path::new(REGISTRY_BINARY).is_file() {
            bail!("{REGISTRY_BINARY} missing: install docker-registry (scripts/setup.sh)");
        }
        std::fs::create_dir_all(dir.join("storage"))?;
        let port = free_port()?;
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.join("storage").display()
        );
        let config_path = dir.join("registry.yml");
        std::fs::write(&config_path, config)?;
        let log = std::fs::File::create(dir.join("registry.log"))?;
        let child = Command::new(REGISTRY_BINARY)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start docker-registry")?;
        let reg = Registry {
            host: format!("127.0.0.1:{port}"),
            dir: dir.to_path_buf(),
            child: Mutex::new(Some(child)),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(resp) = http(&reg.host, "GET", "/v2/", &[], &[]) {
                if resp.status == 200 {
                    return Ok(reg);
                }
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(dir.join("registry.log")).unwrap_or_default();
                bail!(
                    "docker-registry did not answer on {} within 20 s:\n{log}",
                    reg.host
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn stop(&self) {
        if let Some(mut c) = self.child.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Builds the test images and pushes them; returns their references.
    pub fn push_test_images(&self) -> Result<Images> {
        let layer = busybox_layer()?;
        let images = Images {
            pause: format!("{}/cri-e2e/pause:3", self.host),
            busybox: format!("{}/cri-e2e/busybox:1", self.host),
            app: format!("{}/cri-e2e/app:1", self.host),
        };
        let configs = [
            (
                &images.pause,
                json!({
                    "Entrypoint": ["/bin/sh", "-c", "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait; done"],
                    "Env": [PATH_ENV],
                    "WorkingDir": "/",
                }),
            ),
            (
                &images.busybox,
                json!({"Cmd": ["sh"], "Env": [PATH_ENV], "WorkingDir": "/"}),
            ),
            (
                &images.app,
                json!({
                    "Entrypoint": ["/bin/sh", "-c", APP_CMD],
                    "Cmd": ["app-arg"],
                    "Env": [PATH_ENV, format!("GREETING={APP_GREETING}")],
                    "WorkingDir": "/home/app",
                    "User": "app",
                }),
            ),
        ];
        let layer_digest = digest_of(&layer);
        self.push_blob(repo_of(&images.busybox)?, &layer_digest, &layer)?;
        for (reference, config) in configs {
            let (repo, tag) = split_reference(reference)?;
            if repo != repo_of(&images.busybox)? {
                self.push_blob(repo, &layer_digest, &layer)?;
            }
            let image = ImageBlobs::new(&layer, config, "cri e2e image builder")?;
            self.push_blob(repo, &image.config_digest, &image.config)?;
            let resp = http(
                &self.host,
                "PUT",
                &format!("/v2/{repo}/manifests/{tag}"),
                &[("Content-Type", MANIFEST_MEDIA_TYPE)],
                &image.manifest,
            )?;
            if resp.status != 201 {
                bail!(
                    "push manifest {reference}: HTTP {} {}",
                    resp.status,
                    String::from_utf8_lossy(&resp.body)
                );
            }
        }
        Ok(images)
    }

    /// Monolithic blob upload (POST to open a session, PUT with the digest).
    fn push_blob(&self, repo: &str, digest: &str, data: &[u8]) -> Result<()> {
        let head = http(
            &self.host,
            "HEAD",
            &format!("/v2/{repo}/blobs/{digest}"),
            &[],
            &[],
        )?;
        if head.status == 200 {
            return Ok(());
        }
        let start = http(
            &self.host,
            "POST",
            &format!("/v2/{repo}/blobs/uploads/"),
            &[],
            &[],
        )?;
        if start.status != 202 {
            bail!("start upload to {repo}: HTTP {}", start.status);
        }
        let location = start
            .header("location")
            .ok_or_else(|| anyhow!("upload to {repo}: no Location header"))?;
        // Location may be absolute (http://host/...) or a path.
        let path = match location.find("/v2/") {
            Some(i) => location[i..].to_string(),
            None => bail!("upload to {repo}: odd Location {location}"),
        };
        let sep = if path.contains('?') { '&' } else { '?' };
        let put = http(
            &self.host,
            "PUT",
            &format!("{path}{sep}digest={digest}"),
            &[("Content-Type", "application/octet-stream")],
            data,
        )?;
        if put.status != 201 {
            bail!(
                "upload {digest} to {repo}: HTTP {} {}",
                put.status,
                String::from_utf8_lossy(&put.body)
            );
        }
        Ok(())
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `host:port/a/b:tag` -> (`a/b`, `tag`).
fn split_reference(reference: &str) -> Result<(&str, &str)> {
    let (_, rest) = reference
        .split_once('/')
        .ok_or_else(|| anyhow!("bad reference {reference}"))?;
    rest.rsplit_once(':')
        .ok_or_else(|| anyhow!("reference {reference} has no tag"))
}

fn repo_of(reference: &str) -> Result<&str> {
    Ok(split_reference(reference)?.0)
}

pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A minimal HTTP/1.1 client for the registry on loopback (one request per connection).
pub fn http(
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<HttpResponse> {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(host)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes())?;
    stream.write_all(body)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("{method} {path}: malformed HTTP response"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("{method} {path}: no status line"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok(HttpResponse {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    })
}

/// Reads a file and returns its parsed JSON (for `info` maps and the like).
pub fn parse_json(text: &str) -> Result<Value> {
    serde_json::from_str(text).with_context(|| format!("parse JSON: {text:.200}"))
}
