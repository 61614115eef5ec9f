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

impl CtConfig {
    /// Parses the text of `VMID.conf`.
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

/// pve-common `decode_text`.
pub fn decode_text(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            if let Some(hex) = text.get(i + 1..i + 3) {
                if let Ok(b) = u8::from_str_radix(hex, 16) {
                    out.push(b);
                    i += 3;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
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
    fn rejects_garbage() {
        assert!(CtConfig::parse(100, "Hostname x\n").is_err());
    }
}
