//! Named formats of the Proxmox API schema.
//!
//! These are code in Proxmox, not schema: `register_format` in pve-common `src/PVE/JSONSchema.pm`,
//! pve-container `src/PVE/LXC/Config.pm` and pve-storage `PVE/Storage.pm`. The checks and the
//! error texts follow those functions (the texts end in "\n" as Perl's `die` messages do).

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::OnceLock;

use regex::Regex;

fn re(cell: &'static OnceLock<Regex>, pattern: &str) -> &'static Regex {
    cell.get_or_init(|| Regex::new(pattern).expect("static format regex"))
}

macro_rules! static_re {
    ($pattern:expr) => {{
        static CELL: OnceLock<Regex> = OnceLock::new();
        re(&CELL, $pattern)
    }};
}

/// pve-common `split_list`: NUL-separated when a NUL is present, else on `,`, `;` and whitespace.
pub fn split_list(text: &str) -> Vec<&str> {
    if text.contains('\0') {
        return text.split('\0').collect();
    }
    text.split(|c: char| c == ',' || c == ';' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Checks `value` against the named format `format` (with pve-common's `-list` and `-opt`
/// suffixes). `Ok(())` when valid, else the message Proxmox's validator dies with.
/// Unknown names are an error, as in Proxmox ("undefined format").
pub fn check_named_format(format: &str, value: &str) -> Result<(), String> {
    if let Some(base) = format.strip_suffix("-list") {
        if is_known(base) {
            for item in split_list(value) {
                check_single(base, item)?;
            }
            return Ok(());
        }
    }
    if let Some(base) = format.strip_suffix("-opt") {
        if is_known(base) {
            if value.is_empty() {
                return Ok(());
            }
            return check_single(base, value);
        }
    }
    check_single(format, value)
}

const KNOWN: &[&str] = &[
    "string",
    "pve-configid",
    "pve-storage-id",
    "pve-vmid",
    "pve-node",
    "mac-addr",
    "ipv4",
    "ipv6",
    "ip",
    "CIDRv4",
    "CIDRv6",
    "pve-ipv4-config",
    "pve-ipv6-config",
    "dns-name",
    "disk-size",
    "pve-startup-order",
    "pve-tag",
    "pve-volume-id",
    "pve-lxc-mp-string",
    "pve-lxc-dev-string",
    "lxc-ip-with-ll-iface",
    "pve-ct-timezone",
    "pve-poolid",
    "pve-realm",
    "pve-priv",
    "pve-storage-content",
    "pve-iface",
    "pve-calendar-event",
];

fn is_known(name: &str) -> bool {
    KNOWN.contains(&name)
}

fn check_single(format: &str, v: &str) -> Result<(), String> {
    let fail = |msg: String| Err(msg);
    match format {
        "string" => Ok(()),
        // Backup job schedules (systemd calendar events, parsed in Proxmox by the proxmox-time
        // crate). Only this server's own answers carry one; it checks no more than that there
        // is one, which the schema's maxLength bounds.
        "pve-calendar-event" => {
            if v.trim().is_empty() {
                fail("invalid calendar event ''\n".into())
            } else {
                Ok(())
            }
        }
        "pve-configid" => {
            if static_re!(r"^(?i:[a-z][a-z0-9_-]+)$").is_match(v) {
                Ok(())
            } else {
                fail(format!("invalid configuration ID '{v}'\n"))
            }
        }
        "pve-storage-id" => parse_id(v, "storage"),
        "pve-vmid" => {
            if static_re!(r"^[1-9][0-9]{2,8}$").is_match(v) {
                Ok(())
            } else {
                fail("value does not look like a valid VM ID\n".into())
            }
        }
        "pve-node" => {
            if static_re!(r"^([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?)$").is_match(v) {
                Ok(())
            } else {
                fail("value does not look like a valid node name\n".into())
            }
        }
        "mac-addr" => {
            if static_re!(r"^(?i:[a-f0-9][02468ace](?::[a-f0-9]{2}){5})$").is_match(v) {
                Ok(())
            } else {
                fail("value does not look like a valid unicast MAC address\n".into())
            }
        }
        "ipv4" => {
            if is_ipv4(v) {
                Ok(())
            } else {
                fail("value does not look like a valid IPv4 address\n".into())
            }
        }
        "ipv6" => {
            if is_ipv6(v) {
                Ok(())
            } else {
                fail("value does not look like a valid IPv6 address\n".into())
            }
        }
        "ip" => {
            if is_ipv4(v) || is_ipv6(v) {
                Ok(())
            } else {
                fail("value does not look like a valid IP address\n".into())
            }
        }
        "CIDRv4" => {
            if is_cidr(v, false) {
                Ok(())
            } else {
                fail("value does not look like a valid IPv4 CIDR network\n".into())
            }
        }
        "CIDRv6" => {
            if is_cidr(v, true) {
                Ok(())
            } else {
                fail("value does not look like a valid IPv6 CIDR network\n".into())
            }
        }
        "pve-ipv4-config" => {
            if v == "dhcp" || v == "manual" || is_cidr(v, false) {
                Ok(())
            } else {
                fail("value does not look like a valid ipv4 network configuration\n".into())
            }
        }
        "pve-ipv6-config" => {
            if v == "auto" || v == "dhcp" || v == "manual" || is_cidr(v, true) {
                Ok(())
            } else {
                fail("value does not look like a valid ipv6 network configuration\n".into())
            }
        }
        "dns-name" => {
            let name = r"([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?)";
            static CELL: OnceLock<Regex> = OnceLock::new();
            let dns = re(&CELL, &format!(r"^({name}\.)*{name}$"));
            if dns.is_match(v) {
                Ok(())
            } else {
                fail("value does not look like a valid DNS name\n".into())
            }
        }
        "disk-size" => {
            if static_re!(r"^(\d+(\.\d+)?)([KMGT](?:iB)?)?$").is_match(v) {
                Ok(())
            } else {
                fail(format!("value does not look like a valid disk size: {v}\n"))
            }
        }
        "pve-startup-order" => {
            let ok = !v.is_empty()
                && v.split(',').all(|part| {
                    part.trim().is_empty()
                        || static_re!(r"^(order=)?\d+$").is_match(part)
                        || static_re!(r"^up=\d+$").is_match(part)
                        || static_re!(r"^down=\d+$").is_match(part)
                });
            if ok {
                Ok(())
            } else {
                fail("unable to parse startup options\n".into())
            }
        }
        "pve-tag" => {
            if static_re!(r"^(?i:[a-z0-9_][a-z0-9_\-+.]*)$").is_match(v) {
                Ok(())
            } else {
                fail("invalid characters in tag\n".into())
            }
        }
        "pve-volume-id" => {
            if static_re!(r"^(?i:[a-z][a-z0-9\-_.]*[a-z0-9]):(.+)$").is_match(v) {
                Ok(())
            } else {
                fail(format!("unable to parse volume ID '{v}'\n"))
            }
        }
        "pve-lxc-mp-string" => {
            if static_re!(r"/\.\.?/").is_match(v)
                || static_re!(r"/\.\.?$").is_match(v)
                || v.starts_with("../")
            {
                fail(format!("{v} contains illegal character sequences\n"))
            } else {
                Ok(())
            }
        }
        "pve-lxc-dev-string" => {
            if static_re!(r"/\.\.?(?:/|$)").is_match(v) || !v.starts_with("/dev/") {
                fail(format!("{v} is not a valid device path\n"))
            } else {
                Ok(())
            }
        }
        "lxc-ip-with-ll-iface" => {
            if let Some((addr, iface)) = v.split_once('%') {
                if addr.starts_with("fe80:") && is_ipv6(addr) && is_iface(iface) {
                    return Ok(());
                }
            }
            if is_ipv4(v) || is_ipv6(v) {
                Ok(())
            } else {
                fail("value does not look like a valid IP address\n".into())
            }
        }
        "pve-iface" => {
            if is_iface(v) {
                Ok(())
            } else {
                fail(format!("invalid network interface name '{v}'\n"))
            }
        }
        "pve-ct-timezone" => {
            if v == "host" || v == "UTC" || known_timezone(v) {
                Ok(())
            } else {
                fail(format!("invalid time zone '{v}'\n"))
            }
        }
        "pve-poolid" => {
            if static_re!(r"^[A-Za-z0-9.\-_]+$").is_match(v) {
                Ok(())
            } else {
                fail(format!("pool name '{v}' contains illegal characters\n"))
            }
        }
        "pve-realm" => {
            if static_re!(r"^[A-Za-z][A-Za-z0-9.\-_]+$").is_match(v) {
                Ok(())
            } else {
                fail(format!("realm '{v}' contains illegal characters\n"))
            }
        }
        "pve-priv" => {
            if static_re!(r"^[A-Z][A-Za-z]*\.[A-Za-z.]+$").is_match(v) {
                Ok(())
            } else {
                fail(format!("invalid privilege name '{v}'\n"))
            }
        }
        "pve-storage-content" => {
            const CONTENT: &[&str] = &[
                "images", "rootdir", "vztmpl", "iso", "backup", "snippets", "import", "none",
            ];
            if CONTENT.contains(&v) {
                Ok(())
            } else {
                fail(format!("invalid content type '{v}'\n"))
            }
        }
        other => fail(format!("undefined format '{other}'\n")),
    }
}

fn parse_id(v: &str, kind: &str) -> Result<(), String> {
    if v.len() < 2 {
        return Err(format!(
            "{kind} ID '{v}' cannot be shorter than 2 characters\n"
        ));
    }
    if !static_re!(r"^(?i:[a-z][a-z0-9\-_.]*[a-z0-9])$").is_match(v) {
        return Err(format!("{kind} ID '{v}' contains illegal characters\n"));
    }
    Ok(())
}

fn is_ipv4(v: &str) -> bool {
    v.parse::<Ipv4Addr>().is_ok()
}

fn is_ipv6(v: &str) -> bool {
    v.parse::<Ipv6Addr>().is_ok()
}

/// pve-common: prefix length must be > 7 and <= 32 (v4) / 128 (v6).
fn is_cidr(v: &str, v6: bool) -> bool {
    let Some((addr, len)) = v.split_once('/') else {
        return false;
    };
    if len.is_empty() || !len.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let Ok(len) = len.parse::<u32>() else {
        return false;
    };
    if v6 {
        is_ipv6(addr) && len > 7 && len <= 128
    } else {
        is_ipv4(addr) && len > 7 && len <= 32
    }
}

fn is_iface(v: &str) -> bool {
    // pve-common pve_verify_iface: 2..20 characters of [a-zA-Z][a-zA-Z0-9_]
    (2..=20).contains(&v.len()) && static_re!(r"^[a-zA-Z][a-zA-Z0-9_]{1,20}$").is_match(v)
}

/// pve-common `pve_verify_timezone` reads /usr/share/zoneinfo/zone.tab.
fn known_timezone(v: &str) -> bool {
    static ZONES: OnceLock<Vec<String>> = OnceLock::new();
    let zones = ZONES.get_or_init(|| {
        std::fs::read_to_string("/usr/share/zoneinfo/zone.tab")
            .map(|text| {
                text.lines()
                    .filter(|l| !l.trim_start().starts_with('#'))
                    .filter_map(|l| l.split('\t').nth(2).map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    });
    zones.iter().any(|z| z == v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vmid_and_node() {
        assert!(check_named_format("pve-vmid", "100").is_ok());
        assert!(check_named_format("pve-vmid", "099").is_err());
        assert!(check_named_format("pve-vmid", "1234567890").is_err());
        assert!(check_named_format("pve-node", "pve-1").is_ok());
        assert!(check_named_format("pve-node", "-pve").is_err());
    }

    #[test]
    fn lists_and_ids() {
        assert!(check_named_format("pve-tag-list", "k8s;pod-a,ns.default").is_ok());
        assert!(check_named_format("pve-tag-list", "bad tag!").is_err());
        assert!(check_named_format("pve-configid-list", "mp0,net1").is_ok());
        assert!(check_named_format("pve-configid-list", "0bad").is_err());
        assert!(check_named_format("dns-name-list", "a.example b.example").is_ok());
        assert_eq!(
            check_named_format("pve-storage-id", "a").unwrap_err(),
            "storage ID 'a' cannot be shorter than 2 characters\n"
        );
        assert!(check_named_format("pve-volume-id", "local:vztmpl/a.tar.zst").is_ok());
        assert!(check_named_format("pve-volume-id", "/abs/path").is_err());
    }

    #[test]
    fn net_formats() {
        assert!(check_named_format("pve-ipv4-config", "10.0.0.2/24").is_ok());
        assert!(check_named_format("pve-ipv4-config", "10.0.0.2/4").is_err());
        assert!(check_named_format("pve-ipv4-config", "dhcp").is_ok());
        assert!(check_named_format("pve-ipv6-config", "auto").is_ok());
        assert!(check_named_format("mac-addr", "BC:24:11:00:00:01").is_ok());
        assert!(check_named_format("mac-addr", "01:24:11:00:00:01").is_err());
        assert!(check_named_format("lxc-ip-with-ll-iface-list", "1.1.1.1 fe80::1%eth0").is_ok());
    }

    #[test]
    fn paths() {
        assert!(check_named_format("pve-lxc-mp-string", "/data").is_ok());
        assert!(check_named_format("pve-lxc-mp-string", "/a/../b").is_err());
        assert!(check_named_format("pve-lxc-mp-string", "/a/..").is_err());
        assert!(check_named_format("pve-lxc-dev-string", "/dev/null").is_ok());
        assert!(check_named_format("pve-lxc-dev-string", "/etc/passwd").is_err());
        assert!(check_named_format("pve-startup-order", "order=1,up=5").is_ok());
        assert!(check_named_format("pve-startup-order", "first").is_err());
        assert!(check_named_format("no-such-format", "x").is_err());
    }
}
