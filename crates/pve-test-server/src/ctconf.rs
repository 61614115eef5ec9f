//! The CT config file (`/etc/pve/lxc/VMID.conf`) in Proxmox's format, after pve-container
//! `parse_pct_config` / `write_pct_config`: the description as `#` comment lines (pve-common
//! `encode_text`), then `key: value` lines sorted by key, then `lxc.environment.runtime` lines
//! from `env`, then raw `lxc.*` lines in their order. Snapshot and pending sections are kept
//! verbatim but not interpreted. The digest is the SHA-1 of the file's bytes.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use sha1::{Digest, Sha1};

/// A parsed CT config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CtConfig {
    /// Plain keys (`hostname`, `memory`, `net0`, `lock`, ...), without `description`.
    pub options: BTreeMap<String, String>,
    /// The description (decoded from the leading comment lines).
    pub description: Option<String>,
    /// `env`, NUL-separated, from `lxc.environment.runtime` lines.
    pub env: Option<String>,
    /// Raw `lxc.*` keys in file order (without `lxc.environment.runtime`).
    pub lxc: Vec<(String, String)>,
    /// Everything from the first `[section]` on, kept as it was.
    pub trailing_sections: String,
}

/// A config line the parser does not accept.
#[derive(Debug, thiserror::Error)]
#[error("vm {vmid} - unable to parse config: {line}")]
pub struct ParseError {
    /// The CT.
    pub vmid: u32,
    /// The offending line.
    pub line: String,
}

/// pve-container `src/PVE/LXC/Config.pm`, `$valid_lxc_conf_keys`: the raw `lxc.*` keys a CT
/// config may hold. A key mapped to a message is refused with that message.
const VALID_LXC_CONF_KEYS: &[(&str, Option<&str>)] = &[
    ("lxc.apparmor.profile", None),
    ("lxc.apparmor.allow_incomplete", None),
    ("lxc.apparmor.allow_nesting", None),
    ("lxc.apparmor.raw", None),
    ("lxc.selinux.context", None),
    ("lxc.include", None),
    ("lxc.arch", None),
    ("lxc.uts.name", None),
    ("lxc.signal.halt", None),
    ("lxc.signal.reboot", None),
    ("lxc.signal.stop", None),
    ("lxc.init.cmd", None),
    ("lxc.init.cwd", None),
    ("lxc.init.uid", None),
    ("lxc.init.gid", None),
    ("lxc.init.groups", None),
    ("lxc.pty.max", None),
    ("lxc.console.logfile", None),
    ("lxc.console.path", None),
    ("lxc.tty.max", None),
    ("lxc.devtty.dir", None),
    ("lxc.hook.autodev", None),
    ("lxc.autodev", None),
    ("lxc.kmsg", None),
    ("lxc.mount.fstab", None),
    ("lxc.mount.entry", None),
    ("lxc.mount.auto", None),
    (
        "lxc.rootfs.path",
        Some("lxc.rootfs.path is auto generated from rootfs"),
    ),
    ("lxc.rootfs.mount", None),
    (
        "lxc.rootfs.options",
        Some("lxc.rootfs.options is not supported, please use mount point options in the \"rootfs\" key"),
    ),
    ("lxc.cap.drop", None),
    ("lxc.cap.keep", None),
    ("lxc.seccomp.profile", None),
    ("lxc.seccomp.notify.proxy", None),
    ("lxc.seccomp.notify.cookie", None),
    ("lxc.idmap", None),
    ("lxc.hook.pre-start", None),
    ("lxc.hook.pre-mount", None),
    ("lxc.hook.mount", None),
    ("lxc.hook.start", None),
    ("lxc.hook.stop", None),
    ("lxc.hook.post-stop", None),
    ("lxc.hook.clone", None),
    ("lxc.hook.destroy", None),
    ("lxc.hook.version", None),
    ("lxc.log.level", None),
    ("lxc.log.file", None),
    ("lxc.start.auto", None),
    ("lxc.start.delay", None),
    ("lxc.start.order", None),
    ("lxc.group", None),
    ("lxc.environment", None),
    ("lxc.environment.runtime", None),
    ("lxc.environment.hooks", None),
    ("lxc.sysctl.fs.mqueue", None),
    ("lxc.sysctl.kernel.msgmax", None),
    ("lxc.sysctl.kernel.msgmnb", None),
    ("lxc.sysctl.kernel.msgmni", None),
    ("lxc.sysctl.kernel.sem", None),
    ("lxc.sysctl.kernel.shmall", None),
    ("lxc.sysctl.kernel.shmmax", None),
    ("lxc.sysctl.kernel.shmmni", None),
    ("lxc.sysctl.kernel.shm_rmid_forced", None),
];

/// `$deprecated_lxc_conf_keys` (removed with LXC 3.0): kept, with a warning naming the new key.
const DEPRECATED_LXC_CONF_KEYS: &[(&str, &str)] = &[
    ("lxc.aa_profile", "lxc.apparmor.profile"),
    ("lxc.aa_allow_incomplete", "lxc.apparmor.allow_incomplete"),
    ("lxc.console", "lxc.console.path"),
    ("lxc.devttydir", "lxc.tty.dir"),
    ("lxc.haltsignal", "lxc.signal.halt"),
    ("lxc.rebootsignal", "lxc.signal.reboot"),
    ("lxc.stopsignal", "lxc.signal.stop"),
    ("lxc.id_map", "lxc.idmap"),
    ("lxc.init_cmd", "lxc.init.cmd"),
    ("lxc.loglevel", "lxc.log.level"),
    ("lxc.logfile", "lxc.log.file"),
    ("lxc.mount", "lxc.mount.fstab"),
    ("lxc.network.type", "lxc.net.INDEX.type"),
    ("lxc.network.flags", "lxc.net.INDEX.flags"),
    ("lxc.network.link", "lxc.net.INDEX.link"),
    ("lxc.network.mtu", "lxc.net.INDEX.mtu"),
    ("lxc.network.name", "lxc.net.INDEX.name"),
    ("lxc.network.hwaddr", "lxc.net.INDEX.hwaddr"),
    ("lxc.network.ipv4", "lxc.net.INDEX.ipv4.address"),
    ("lxc.network.ipv4.gateway", "lxc.net.INDEX.ipv4.gateway"),
    ("lxc.network.ipv6", "lxc.net.INDEX.ipv6.address"),
    ("lxc.network.ipv6.gateway", "lxc.net.INDEX.ipv6.gateway"),
    ("lxc.network.script.up", "lxc.net.INDEX.script.up"),
    ("lxc.network.script.down", "lxc.net.INDEX.script.down"),
    ("lxc.pts", "lxc.pty.max"),
    ("lxc.se_context", "lxc.selinux.context"),
    ("lxc.seccomp", "lxc.seccomp.profile"),
    ("lxc.tty", "lxc.tty.max"),
    ("lxc.utsname", "lxc.uts.name"),
];

/// What `is_valid_lxc_conf_key` (Config.pm) says about a raw key.
#[derive(Debug, PartialEq, Eq)]
pub enum LxcKeyValidity {
    /// Accepted.
    Valid,
    /// Accepted with a warning (deprecated or renamed).
    ValidWithWarning(String),
    /// Refused with this message (e.g. `lxc.rootfs.path`).
    Refused(String),
    /// Unknown: "unable to parse config".
    Unknown,
}

/// pve-container `src/PVE/LXC/Config.pm`, `is_valid_lxc_conf_key`, in its order.
pub fn lxc_conf_key_validity(vmid: u32, key: &str) -> LxcKeyValidity {
    if key.starts_with("lxc.limit.") {
        return LxcKeyValidity::ValidWithWarning(format!(
            "vm {vmid} - {key}: lxc.limit.* was renamed to lxc.prlimit.*"
        ));
    }
    if let Some((_, new)) = DEPRECATED_LXC_CONF_KEYS.iter().find(|(k, _)| *k == key) {
        return LxcKeyValidity::ValidWithWarning(format!(
            "vm {vmid} - {key} is deprecated and was renamed to {new}"
        ));
    }
    if let Some((_, refusal)) = VALID_LXC_CONF_KEYS.iter().find(|(k, _)| *k == key) {
        return match refusal {
            None => LxcKeyValidity::Valid,
            Some(msg) => LxcKeyValidity::Refused(msg.to_string()),
        };
    }
    if key.starts_with("lxc.cgroup.") {
        return LxcKeyValidity::ValidWithWarning(format!(
            "vm {vmid} - {key} is deprecated, this will be a hard error in the future!"
        ));
    }
    if key.starts_with("lxc.cgroup2.")
        || key.starts_with("lxc.prlimit.")
        || key.starts_with("lxc.net.")
    {
        return LxcKeyValidity::Valid;
    }
    LxcKeyValidity::Unknown
}

impl CtConfig {
    /// Parses the text of `VMID.conf` as `parse_pct_config` does when loading a config (not
    /// strict): raw `lxc.*` keys Proxmox does not accept are dropped and each is named in the
    /// returned warnings, which a node prints as `WARN:` lines of the running task.
    pub fn parse_with_warnings(
        vmid: u32,
        raw: &str,
    ) -> Result<(CtConfig, Vec<String>), ParseError> {
        let mut conf = CtConfig::parse(vmid, raw)?;
        let mut warnings = Vec::new();
        conf.lxc
            .retain(|(key, value)| match lxc_conf_key_validity(vmid, key) {
                LxcKeyValidity::Valid => true,
                LxcKeyValidity::ValidWithWarning(w) => {
                    warnings.push(w);
                    true
                }
                LxcKeyValidity::Refused(msg) => {
                    warnings.push(format!("vm {vmid} - {key}: {msg}"));
                    false
                }
                LxcKeyValidity::Unknown => {
                    warnings.push(format!(
                        "vm {vmid} - unable to parse config: {key}: {value}"
                    ));
                    false
                }
            });
        Ok((conf, warnings))
    }

    /// Parses the text of `VMID.conf`, keeping every raw `lxc.*` key (see
    /// [`CtConfig::parse_with_warnings`] for Proxmox's key rules).
    pub fn parse(vmid: u32, raw: &str) -> Result<CtConfig, ParseError> {
        let mut conf = CtConfig::default();
        let mut descr = String::new();
        let mut lines = raw.split('\n').peekable();
        while let Some(line) = lines.next() {
            if line.trim().is_empty() {
                continue;
            }
            if line.starts_with('[') {
                // Snapshots / pending: keep the rest untouched.
                let mut rest = String::from(line);
                for l in lines.by_ref() {
                    rest.push('\n');
                    rest.push_str(l);
                }
                conf.trailing_sections = rest;
                break;
            }
            if let Some(comment) = line.strip_prefix('#') {
                descr.push_str(&decode_text(comment));
                descr.push('\n');
                continue;
            }
            let Some((key, value)) = split_line(line) else {
                return Err(ParseError {
                    vmid,
                    line: line.to_string(),
                });
            };
            if key.starts_with("lxc.") {
                if key == "lxc.environment.runtime" {
                    match &mut conf.env {
                        Some(env) => {
                            env.push('\0');
                            env.push_str(&value);
                        }
                        None => conf.env = Some(value),
                    }
                } else {
                    conf.lxc.push((key, value));
                }
            } else if key == "description" {
                descr.push_str(&decode_text(&value));
            } else {
                conf.options.insert(key, value);
            }
        }
        if !descr.is_empty() {
            conf.description = Some(descr);
        }
        Ok(conf)
    }

    /// Renders the file text.
    pub fn render(&self) -> String {
        let mut raw = String::new();
        if let Some(descr) = &self.description {
            for line in descr.split('\n').filter(|l| !l.is_empty()) {
                let _ = writeln!(raw, "#{}", encode_text(line));
            }
        }
        for (k, v) in &self.options {
            let _ = writeln!(raw, "{k}: {v}");
        }
        if let Some(env) = &self.env {
            for var in env.split('\0').filter(|v| !v.is_empty()) {
                let _ = writeln!(raw, "lxc.environment.runtime: {var}");
            }
        }
        for (k, v) in &self.lxc {
            let _ = writeln!(raw, "{k}: {v}");
        }
        if !self.trailing_sections.is_empty() {
            raw.push('\n');
            raw.push_str(&self.trailing_sections);
        }
        raw
    }

    /// The lock (`lock:` key), if any.
    pub fn lock(&self) -> Option<&str> {
        self.options.get("lock").map(String::as_str)
    }
}

/// SHA-1 hex of the raw file, as `parse_pct_config` computes `digest`.
pub fn digest(raw: &str) -> String {
    hex::encode(Sha1::digest(raw.as_bytes()))
}

fn split_line(line: &str) -> Option<(String, String)> {
    // `lxc.key: value` or `lxc.key = value`; `key: value` for the rest.
    if line.starts_with("lxc.") {
        let end = line
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || "_-.".contains(c)))?;
        let key = &line[..end];
        let rest = line[end..].trim_start();
        let value = rest.strip_prefix(':').or_else(|| rest.strip_prefix('='))?;
        return Some((key.to_string(), value.trim().to_string()));
    }
    let (key, value) = line.split_once(':')?;
    let valid = key.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && key
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if !valid {
        return None;
    }
    Some((key.to_string(), value.trim().to_string()))
}

/// pve-common `encode_text`: percent-encodes control and high-bit bytes, `:` and `%`.
pub fn encode_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        let safe = matches!(b, 0x20..=0x24 | 0x26..=0x39 | 0x3b..=0x7e);
        if safe {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// pve-common `decode_text`: `%XX` escapes, as the shim's stdio URIs (one decoder crate for both).
pub fn decode_text(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let raw = "#pod a%3Ab\n#line 2\narch: amd64\nhostname: ct1\nlock: create\nnet0: name=eth0,bridge=vmbr0\nlxc.environment.runtime: A=1\nlxc.environment.runtime: B=2\nlxc.cap.drop: \nlxc.mount.entry: /a b none bind 0 0\n";
        let conf = CtConfig::parse(100, raw).unwrap();
        assert_eq!(conf.description.as_deref(), Some("pod a:b\nline 2\n"));
        assert_eq!(conf.env.as_deref(), Some("A=1\0B=2"));
        assert_eq!(conf.lxc.len(), 2);
        assert_eq!(conf.lock(), Some("create"));
        assert_eq!(conf.render(), raw);
        assert_eq!(digest(raw).len(), 40);
    }

    #[test]
    fn lxc_keys_follow_proxmox_rules() {
        let raw =
            "arch: amd64\nlxc.init.cmd: /init\nlxc.cgroup2.memory.max: 1\nlxc.net.0.type: empty\n\
                   lxc.prlimit.nofile: 1024\nlxc.rootfs.path: dir:/x\nlxc.no.such.key: 1\n\
                   lxc.utsname: old\nlxc.cgroup.devices.allow: a\n";
        let (conf, warnings) = CtConfig::parse_with_warnings(100, raw).unwrap();
        let keys: Vec<&str> = conf.lxc.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "lxc.init.cmd",
                "lxc.cgroup2.memory.max",
                "lxc.net.0.type",
                "lxc.prlimit.nofile",
                "lxc.utsname",
                "lxc.cgroup.devices.allow"
            ]
        );
        assert_eq!(warnings.len(), 4, "{warnings:?}");
        assert!(warnings[0].contains("auto generated from rootfs"));
        assert!(warnings[1].contains("unable to parse config: lxc.no.such.key"));
        assert!(warnings[2].contains("renamed to lxc.uts.name"));
        assert!(warnings[3].contains("hard error in the future"));
    }

    #[test]
    fn rejects_garbage() {
        assert!(CtConfig::parse(100, "Hostname x\n").is_err());
    }
}
