//! A small OCI image built locally from Debian's static busybox, as an OCI image layout
//! tarball that `ctr images import` takes, so no registry is needed.
//!
//! Deterministic: one uncompressed layer with fixed timestamps and owners and sorted entries,
//! and JSON with sorted keys, so the same busybox gives the same digests on every run.
//!
//! Two images share the layer:
//! - [`BUSYBOX_IMAGE`]: no entrypoint, `Cmd ["sh"]`, root, `WorkingDir /` (tests pass `sh -c`).
//! - [`APP_IMAGE`]: `Entrypoint ["/bin/sh","-c"]`, a `Cmd` script, `Env`, `WorkingDir
//!   /home/app`, `User app` (uid 1000), to prove the image config reaches the workload.

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub const BUSYBOX_IMAGE: &str = "localhost/e2e/busybox:latest";
pub const APP_IMAGE: &str = "localhost/e2e/app:latest";
pub const BUSYBOX_PATH: &str = "/bin/busybox";

/// The `Env` PATH entry of every image (the one `ctr run` and the CRI plugin default to).
pub const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The app image's default command, printed lines a test can check exactly.
pub const APP_CMD: &str = "echo \"greeting=$GREETING\"; id; pwd";
pub const APP_GREETING: &str = "hello from the app image";

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
app:x:1000:1000:app:/home/app:/bin/sh\n\
nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
const GROUP: &str = "root:x:0:\napp:x:1000:\nextra:x:2000:app\nnogroup:x:65534:\n";

/// `sha256:HEX` of `data`, as OCI descriptors name a blob.
pub fn digest_of(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

struct LayerBuilder {
    tar: tar::Builder<Vec<u8>>,
}

impl LayerBuilder {
    fn new() -> Self {
        let mut tar = tar::Builder::new(Vec::new());
        tar.mode(tar::HeaderMode::Deterministic);
        LayerBuilder { tar }
    }

    fn header(kind: tar::EntryType, mode: u32, uid: u64, size: u64) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(uid);
        h.set_gid(uid);
        h.set_mtime(0);
        h.set_size(size);
        h
    }

    fn dir(&mut self, path: &str, mode: u32, uid: u64) -> Result<()> {
        let mut h = Self::header(tar::EntryType::Directory, mode, uid, 0);
        self.tar.append_data(&mut h, path, std::io::empty())?;
        Ok(())
    }

    fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> Result<()> {
        let mut h = Self::header(tar::EntryType::Regular, mode, 0, data.len() as u64);
        self.tar.append_data(&mut h, path, data)?;
        Ok(())
    }

    fn symlink(&mut self, path: &str, target: &str) -> Result<()> {
        let mut h = Self::header(tar::EntryType::Symlink, 0o777, 0, 0);
        self.tar.append_link(&mut h, path, target)?;
        Ok(())
    }

    fn finish(self) -> Result<Vec<u8>> {
        Ok(self.tar.into_inner()?)
    }
}

/// The layer every test image shares: Debian's static busybox ([`BUSYBOX_PATH`]) with every
/// applet linked in /bin, a passwd/group with a non-root user, and the usual empty directories.
pub fn busybox_layer() -> Result<Vec<u8>> {
    let busybox = Path::new(BUSYBOX_PATH);
    if !busybox.is_file() {
        bail!(
            "{} missing: install busybox-static (scripts/setup.sh)",
            busybox.display()
        );
    }
    build_layer(busybox)
}

fn build_layer(busybox: &Path) -> Result<Vec<u8>> {
    let binary = std::fs::read(busybox).with_context(|| format!("read {}", busybox.display()))?;
    let listing = std::process::Command::new(busybox)
        .arg("--list")
        .output()
        .context("busybox --list")?;
    let mut applets: Vec<String> = String::from_utf8_lossy(&listing.stdout)
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != "busybox" && !a.contains('/'))
        .map(str::to_owned)
        .collect();
    applets.sort();
    applets.dedup();

    let mut layer = LayerBuilder::new();
    layer.dir("bin", 0o755, 0)?;
    layer.file("bin/busybox", 0o755, &binary)?;
    for applet in &applets {
        layer.symlink(&format!("bin/{applet}"), "busybox")?;
    }
    for d in [
        "dev", "etc", "home", "proc", "root", "run", "sys", "usr", "var",
    ] {
        layer.dir(d, 0o755, 0)?;
    }
    layer.file("etc/group", 0o644, GROUP.as_bytes())?;
    layer.file("etc/passwd", 0o644, PASSWD.as_bytes())?;
    layer.dir("home/app", 0o755, 1000)?;
    layer.dir("tmp", 0o1777, 0)?;
    layer.dir("usr/bin", 0o755, 0)?;
    layer.dir("var/tmp", 0o1777, 0)?;
    layer.finish()
}

/// The OCI architecture name of this machine.
pub fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Writes the OCI layout tarball with both images to `out`.
pub fn build_layout_tar(busybox: &Path, out: &Path) -> Result<()> {
    let layer = build_layer(busybox)?;
    let layer_digest = digest_of(&layer);

    let mut blobs: Vec<(String, Vec<u8>)> = vec![(layer_digest.clone(), layer.clone())];
    let mut manifests = Vec::new();
    let images: [(&str, Value); 2] = [
        (
            BUSYBOX_IMAGE,
            json!({"Cmd": ["sh"], "Env": [PATH_ENV], "WorkingDir": "/"}),
        ),
        (
            APP_IMAGE,
            json!({
                "Entrypoint": ["/bin/sh", "-c"],
                "Cmd": [APP_CMD],
                "Env": [PATH_ENV, format!("GREETING={APP_GREETING}")],
                "WorkingDir": "/home/app",
                "User": "app",
            }),
        ),
    ];
    for (name, config) in images {
        let image = ImageBlobs::new(&layer, config, "e2e image builder")?;
        let tag = name.rsplit(':').next().unwrap_or("latest");
        manifests.push(json!({
            "mediaType": MANIFEST_MEDIA_TYPE,
            "digest": image.manifest_digest,
            "size": image.manifest.len(),
            "platform": {"architecture": arch(), "os": "linux"},
            "annotations": {
                "io.containerd.image.name": name,
                "org.opencontainers.image.ref.name": tag,
            },
        }));
        blobs.push((image.config_digest, image.config));
        blobs.push((image.manifest_digest, image.manifest));
    }
    let index = json!({"schemaVersion": 2, "manifests": manifests});

    let mut tar = tar::Builder::new(Vec::new());
    tar.mode(tar::HeaderMode::Deterministic);
    let mut add = |path: &str, data: &[u8]| -> Result<()> {
        let mut h = LayerBuilder::header(tar::EntryType::Regular, 0o644, 0, data.len() as u64);
        tar.append_data(&mut h, path, data)?;
        Ok(())
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    add("index.json", &serde_json::to_vec(&index)?)?;
    blobs.sort_by(|a, b| a.0.cmp(&b.0));
    blobs.dedup_by(|a, b| a.0 == b.0);
    for (digest, data) in &blobs {
        let hex = digest.trim_start_matches("sha256:");
        add(&format!("blobs/sha256/{hex}"), data)?;
    }
    let bytes = tar.into_inner()?;
    let mut f = std::fs::File::create(out).with_context(|| format!("create {}", out.display()))?;
    f.write_all(&bytes)?;
    Ok(())
}

/// One image over a single uncompressed layer: its config blob and manifest, with digests.
pub struct ImageBlobs {
    pub config: Vec<u8>,
    pub config_digest: String,
    pub manifest: Vec<u8>,
    pub manifest_digest: String,
}

impl ImageBlobs {
    /// `config` is the image's runtime config (`Cmd`, `Env`, `User`, ...); `created_by` goes
    /// into its history. Timestamps are fixed, so the digests are the same on every run.
    pub fn new(layer: &[u8], config: Value, created_by: &str) -> Result<ImageBlobs> {
        let layer_digest = digest_of(layer);
        let config = json!({
            "architecture": arch(),
            "os": "linux",
            "created": "1970-01-01T00:00:00Z",
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
            "history": [{"created": "1970-01-01T00:00:00Z", "created_by": created_by}],
        });
        let config = serde_json::to_vec(&config)?;
        let config_digest = digest_of(&config);
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": config.len(),
            },
            "layers": [{
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": layer_digest,
                "size": layer.len(),
            }],
        });
        let manifest = serde_json::to_vec(&manifest)?;
        Ok(ImageBlobs {
            manifest_digest: digest_of(&manifest),
            config,
            config_digest,
            manifest,
        })
    }
}

/// The media type of an OCI image manifest.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
