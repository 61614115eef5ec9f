//! Configuration: the host file `/etc/containerd-shim-proxmox-lxc/config.toml` and containerd's
//! per-runtime options (`runtimeoptions.v1.Options`: `ConfigPath` on every containerd, an
//! inline TOML body from 1.7 on). Runtime options win over the host file. No file at all gives
//! the plain `lxc` driver with its defaults.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::errors::{Result, ShimError};

pub const HOST_CONFIG_PATH: &str = "/etc/containerd-shim-proxmox-lxc/config.toml";
/// Names another host file in containerd's environment, which its shims inherit: for a second
/// containerd on one node, or a test rig. It matters where containerd passes no runtime options
/// of ours: a task with a user namespace (`ctr --uidmap`, CRI's `hostUsers: false`) gets
/// containerd's IO owner options instead (client `WithUIDOwner`), so its `ConfigPath` is lost.
pub const HOST_CONFIG_ENV: &str = "CONTAINERD_SHIM_PROXMOX_LXC_CONFIG";
pub const DEFAULT_LXCPATH: &str = "/var/lib/containerd-shim-proxmox-lxc";
/// Per-container state directories (helper, specs, control sockets). Under /run so it is a
/// tmpfs and short enough for unix socket paths.
pub const STATE_ROOT: &str = "/run/containerd-shim-proxmox-lxc";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DriverKind {
    #[default]
    Lxc,
    Pve,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LxcSection {
    #[serde(default = "default_lxcpath")]
    pub lxcpath: PathBuf,
}

fn default_lxcpath() -> PathBuf {
    PathBuf::from(DEFAULT_LXCPATH)
}

impl Default for LxcSection {
    fn default() -> Self {
        LxcSection {
            lxcpath: default_lxcpath(),
        }
    }
}

/// The `[pve]` section. Parsed and validated here so that a bad file fails early with a clear
/// message; the driver that uses it lives in `driver::pve`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PveSection {
    pub url: String,
    pub node: String,
    pub token_id: String,
    pub token_secret_file: PathBuf,
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub fingerprint: Option<String>,
    #[serde(default = "default_vmid_range")]
    pub vmid_range: [u32; 2],
    /// No longer used, still read so that existing files and bundle records parse: the driver
    /// allocates no volume (a CT's rootfs is containerd's snapshot directory, `rootfs: /DIR`;
    /// mounts are `lxc.mount.entry` lines), so no Proxmox storage is involved. `check` says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<String>,
    #[serde(default = "default_tag_prefix")]
    pub tag_prefix: String,
    #[serde(default = "default_config_dir")]
    pub config_dir: PathBuf,
    #[serde(default = "default_lock_dir")]
    pub lock_dir: PathBuf,
    /// Keep LXC's lxcfs hook on the node (`/proc/meminfo` etc. show the container's limits);
    /// off by default: the workload's `/proc` is the kernel's, as under runc
    /// (docs/pve-driver.md, "lxcfs").
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lxcfs: bool,
    /// Seconds a Proxmox task (start, destroy) may take before the RPC fails.
    #[serde(default = "default_task_timeout")]
    pub task_timeout: u64,
}

/// Proxmox's VMIDs: the `pve-vmid` format is `^[1-9][0-9]{2,8}$` (pve-common
/// src/PVE/JSONSchema.pm), i.e. 100 to 999999999.
pub const MIN_VMID: u32 = 100;
pub const MAX_VMID: u32 = 999_999_999;

/// Whether `text` is a Proxmox tag: pve-common's `$PVE_TAG_RE`,
/// `[a-z0-9_][a-z0-9_\-\+\.]*` case-insensitive (src/PVE/JSONSchema.pm, `pve_verify_tag`).
/// The shim's tags are the prefix followed by `-cid-<hash>` and the like, so a valid prefix
/// makes valid tags.
pub fn is_pve_tag(text: &str) -> bool {
    let mut chars = text.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '+' | '.'))
}

fn default_task_timeout() -> u64 {
    120
}

fn default_vmid_range() -> [u32; 2] {
    [900_000, 999_999]
}
fn default_tag_prefix() -> String {
    "k8s".into()
}
fn default_config_dir() -> PathBuf {
    PathBuf::from("/etc/pve/lxc")
}
fn default_lock_dir() -> PathBuf {
    PathBuf::from("/run/lock/lxc")
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShimConfig {
    /// `lxc` (default) or `pve`. When absent, a `[pve]` section selects `pve`.
    #[serde(default)]
    pub driver: Option<DriverKind>,
    #[serde(default)]
    pub log_level: Option<String>,
    #[serde(default)]
    pub lxc: LxcSection,
    #[serde(default)]
    pub pve: Option<PveSection>,
}

impl ShimConfig {
    pub fn parse(text: &str, origin: &str) -> Result<ShimConfig> {
        let config: ShimConfig = toml::from_str(text)
            .map_err(|e| ShimError::InvalidArgument(format!("config {origin}: {e}")))?;
        config.validate(origin)?;
        Ok(config)
    }

    pub fn load_file(path: &Path) -> Result<ShimConfig> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ShimError::io(format!("read config {}", path.display()), e))?;
        Self::parse(&text, &path.display().to_string())
    }

    /// The host file if it exists, else the defaults. A file named by [`HOST_CONFIG_ENV`] must
    /// exist.
    pub fn load_host() -> Result<ShimConfig> {
        if let Some(named) = std::env::var_os(HOST_CONFIG_ENV).filter(|p| !p.is_empty()) {
            return Self::load_file(Path::new(&named));
        }
        let path = Path::new(HOST_CONFIG_PATH);
        if path.exists() {
            Self::load_file(path)
        } else {
            Ok(ShimConfig::default())
        }
    }

    pub fn driver(&self) -> DriverKind {
        self.driver.unwrap_or(if self.pve.is_some() {
            DriverKind::Pve
        } else {
            DriverKind::Lxc
        })
    }

    fn validate(&self, origin: &str) -> Result<()> {
        if !self.lxc.lxcpath.is_absolute() {
            return Err(ShimError::InvalidArgument(format!(
                "config {origin}: lxc.lxcpath must be absolute, got {:?}",
                self.lxc.lxcpath
            )));
        }
        if let Some(level) = &self.log_level {
            if !["error", "warn", "info", "debug", "trace"].contains(&level.as_str()) {
                return Err(ShimError::InvalidArgument(format!(
                    "config {origin}: log_level must be one of error, warn, info, debug, trace; got {level:?}"
                )));
            }
        }
        if self.driver() == DriverKind::Pve && self.pve.is_none() {
            return Err(ShimError::InvalidArgument(format!(
                "config {origin}: driver = \"pve\" needs a [pve] section"
            )));
        }
        if let Some(pve) = &self.pve {
            let [low, high] = pve.vmid_range;
            if low < MIN_VMID || low > high || high > MAX_VMID {
                return Err(ShimError::InvalidArgument(format!(
                    "config {origin}: pve.vmid_range must be [low, high] with \
                     {MIN_VMID} <= low <= high <= {MAX_VMID} (Proxmox VMIDs), got {:?}",
                    pve.vmid_range
                )));
            }
            if !is_pve_tag(&pve.tag_prefix) {
                return Err(ShimError::InvalidArgument(format!(
                    "config {origin}: pve.tag_prefix {:?} is not a valid Proxmox tag start: \
                     a letter, digit or _ first, then also - + . (e.g. \"k8s\")",
                    pve.tag_prefix
                )));
            }
            if pve.task_timeout == 0 {
                return Err(ShimError::InvalidArgument(format!(
                    "config {origin}: pve.task_timeout is in seconds and must be at least 1 \
                     (default {})",
                    default_task_timeout()
                )));
            }
            if pve.ca_file.is_some() && pve.fingerprint.is_some() {
                return Err(ShimError::InvalidArgument(format!(
                    "config {origin}: pve.ca_file and pve.fingerprint are exclusive"
                )));
            }
        }
        Ok(())
    }
}

/// containerd's `runtimeoptions.v1.Options` (type_url `runtimeoptions.v1.Options`), decoded by
/// hand since the protos crate does not ship it: field 1 type_url, 2 config_path,
/// 3 config_body (containerd 1.7+).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeOptions {
    pub type_url: String,
    pub config_path: String,
    pub config_body: String,
}

pub const RUNTIME_OPTIONS_TYPE: &str = "runtimeoptions.v1.Options";

impl RuntimeOptions {
    pub fn decode(bytes: &[u8]) -> Result<RuntimeOptions> {
        let mut out = RuntimeOptions::default();
        let mut input = protobuf::CodedInputStream::from_bytes(bytes);
        let bad = |e: protobuf::Error| {
            ShimError::InvalidArgument(format!("runtime options ({RUNTIME_OPTIONS_TYPE}): {e}"))
        };
        while !input.eof().map_err(bad)? {
            let tag = input.read_raw_varint32().map_err(bad)?;
            match (tag >> 3, tag & 7) {
                (1, 2) => out.type_url = input.read_string().map_err(bad)?,
                (2, 2) => out.config_path = input.read_string().map_err(bad)?,
                (3, 2) => out.config_body = input.read_string().map_err(bad)?,
                (_, wire) => {
                    let wire = protobuf::rt::WireType::new(wire).ok_or_else(|| {
                        ShimError::InvalidArgument(format!(
                            "runtime options ({RUNTIME_OPTIONS_TYPE}): bad wire type {wire}"
                        ))
                    })?;
                    input.skip_field(wire).map_err(bad)?;
                }
            }
        }
        Ok(out)
    }

    /// Applies these options to the host configuration: a `ConfigPath` replaces the host file,
    /// an inline body is merged over it key by key (runtime options win).
    pub fn apply(&self, host: ShimConfig) -> Result<ShimConfig> {
        let mut config = if self.config_path.is_empty() {
            host
        } else {
            ShimConfig::load_file(Path::new(&self.config_path))?
        };
        if !self.config_body.trim().is_empty() {
            let mut base = toml::Value::try_from(&config).map_err(|e| {
                ShimError::Internal(format!("config: cannot re-encode for merging: {e}"))
            })?;
            let overlay: toml::Value = toml::from_str(&self.config_body).map_err(|e| {
                ShimError::InvalidArgument(format!("runtime options config body: {e}"))
            })?;
            merge_toml(&mut base, overlay);
            let text = toml::to_string(&base)
                .map_err(|e| ShimError::Internal(format!("config: cannot merge: {e}")))?;
            config = ShimConfig::parse(&text, "runtime options config body")?;
        }
        Ok(config)
    }
}

fn merge_toml(base: &mut toml::Value, overlay: toml::Value) {
    match (base, overlay) {
        (toml::Value::Table(base), toml::Value::Table(overlay)) => {
            for (key, value) in overlay {
                match base.get_mut(&key) {
                    Some(existing) => merge_toml(existing, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (base, overlay) => *base = overlay,
    }
}

/// The options of a CreateTaskRequest (an `Any`): ours are `runtimeoptions.v1.Options`;
/// anything else (runc's options, which `ctr` sends for every runtime) is ignored.
pub fn from_create_options(
    options: Option<&containerd_shim_protos::protobuf::well_known_types::any::Any>,
) -> Result<ShimConfig> {
    let host = ShimConfig::load_host()?;
    match options {
        Some(any) if any.type_url.ends_with(RUNTIME_OPTIONS_TYPE) => {
            RuntimeOptions::decode(&any.value)?.apply(host)
        }
        _ => Ok(host),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(path: &str, body: &str) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut os = protobuf::CodedOutputStream::vec(&mut out);
            os.write_string(1, RUNTIME_OPTIONS_TYPE).unwrap();
            if !path.is_empty() {
                os.write_string(2, path).unwrap();
            }
            if !body.is_empty() {
                os.write_string(3, body).unwrap();
            }
            os.flush().unwrap();
        }
        out
    }

    #[test]
    fn defaults_are_plain_lxc() {
        let c = ShimConfig::parse("", "test").unwrap();
        assert_eq!(c.driver(), DriverKind::Lxc);
        assert_eq!(c.lxc.lxcpath, PathBuf::from(DEFAULT_LXCPATH));
    }

    /// A `[pve]` section with only the required keys, for the token `token_id`.
    fn pve_section(token_id: &str) -> String {
        format!(
            r#"
            [pve]
            url = "https://127.0.0.1:8006/api2/json"
            node = "pve1"
            token_id = "{token_id}"
            token_secret_file = "/etc/containerd-shim-proxmox-lxc/token"
        "#
        )
    }

    #[test]
    fn pve_section_selects_pve_and_is_validated() {
        let text = pve_section("root@pam!containerd");
        let c = ShimConfig::parse(&text, "test").unwrap();
        assert_eq!(c.driver(), DriverKind::Pve);
        let bad = format!("{text}\nvmid_range = [5, 1]\n");
        let err = ShimConfig::parse(&bad, "test").unwrap_err().to_string();
        assert!(err.contains("vmid_range"), "{err}");
        let pve = c.pve.clone().unwrap();
        assert!(!pve.lxcfs, "lxcfs is off unless asked for");
        // The unused `storage` of older files and bundle records still parses, and is not
        // written into new records.
        let old = ShimConfig::parse(&format!("{text}\nstorage = \"local\"\n"), "test").unwrap();
        assert_eq!(old.pve.unwrap().storage.as_deref(), Some("local"));
        let record = serde_json::to_string(&pve).unwrap();
        assert!(
            !record.contains("storage") && !record.contains("lxcfs"),
            "{record}"
        );
        let mut old_record: serde_json::Value = serde_json::from_str(&record).unwrap();
        old_record["storage"] = serde_json::json!("local");
        assert!(serde_json::from_value::<PveSection>(old_record).is_ok());
    }

    #[test]
    fn pve_values_are_checked_against_proxmox_formats() {
        let base = pve_section("containerd@pve!shim");
        let err = |extra: &str| {
            ShimConfig::parse(&format!("{base}{extra}\n"), "t")
                .unwrap_err()
                .to_string()
        };
        assert!(err("vmid_range = [99, 200]").contains("100 <= low"));
        assert!(err("vmid_range = [100, 1000000000]").contains("999999999"));
        assert!(ShimConfig::parse(&format!("{base}vmid_range = [100, 999999999]\n"), "t").is_ok());
        for bad in ["", "-k8s", "k8s cid", "k8s;x", "k\u{e9}"] {
            let e = err(&format!("tag_prefix = {bad:?}"));
            assert!(
                e.contains("tag_prefix") && e.contains("Proxmox tag"),
                "{bad:?}: {e}"
            );
        }
        for good in ["k8s", "_x", "a.b+c-d", "K8S"] {
            assert!(is_pve_tag(good), "{good}");
        }
        assert!(err("task_timeout = 0").contains("task_timeout"));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let err = ShimConfig::parse("drvier = \"lxc\"", "x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("drvier"), "{err}");
        let err = ShimConfig::parse("driver = \"pve\"", "x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("[pve]"), "{err}");
        let err = ShimConfig::parse("[lxc]\nlxcpath = \"rel\"", "x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("lxcpath"), "{err}");
    }

    #[test]
    fn runtime_options_decode_and_body_wins() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "log_level = \"info\"\n[lxc]\nlxcpath = \"/a\"\n").unwrap();
        let opts = RuntimeOptions::decode(&encode(file.to_str().unwrap(), "log_level = \"debug\""))
            .unwrap();
        assert_eq!(opts.config_path, file.to_str().unwrap());
        let c = opts.apply(ShimConfig::default()).unwrap();
        assert_eq!(c.log_level.as_deref(), Some("debug"));
        assert_eq!(c.lxc.lxcpath, PathBuf::from("/a"));
    }

    #[test]
    fn garbage_options_are_an_error_not_a_panic() {
        assert!(RuntimeOptions::decode(&[0x0a, 0xff]).is_err());
    }
}
