//! The Proxmox CT config's native keys checked against the Proxmox VE API schema
//! (the repository's copy of `shared/reference/pve-api-lxc-subset.json`, kept by the test
//! server in `crates/pve-test-server/fixtures/pve-api-schema.json`): every key exists and every
//! value has the schema's type, range, enum or format.

mod common;

use std::path::{Path, PathBuf};

use lxc_config::CgroupMode;
use serde_json::Value;
use skip_harness::{Missing, Outcome};

fn schema_path() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let in_repo = dir.join("../pve-test-server/fixtures/pve-api-schema.json");
    if in_repo.exists() {
        return in_repo;
    }
    dir.join("../../../shared/reference/pve-api-lxc-subset.json")
}

fn is_dns_name(v: &str) -> bool {
    v.split('.').all(|l| {
        !l.is_empty()
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    })
}

/// pve-common's `pve-tag-list`: tags `[a-z0-9_][a-z0-9_\-+.]*` (case-insensitive), separated
/// by `;`, `,` or spaces.
fn is_tag_list(v: &str) -> bool {
    v.split([';', ',', ' ']).all(|t| {
        let b = t.as_bytes();
        !b.is_empty()
            && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'+' | b'.'))
    })
}

fn check_value(key: &str, value: &str, prop: &Value) {
    let num = |k: &str| prop.get(k).and_then(Value::as_f64);
    match prop["type"].as_str().unwrap() {
        "boolean" => assert!(value == "0" || value == "1", "{key}: {value}"),
        "integer" => {
            let v: i64 = value.parse().unwrap_or_else(|_| panic!("{key}: {value}"));
            if let Some(min) = num("minimum") {
                assert!(v as f64 >= min, "{key}: {v} < {min}");
            }
            if let Some(max) = num("maximum") {
                assert!(v as f64 <= max, "{key}: {v} > {max}");
            }
        }
        "number" => {
            let v: f64 = value.parse().unwrap_or_else(|_| panic!("{key}: {value}"));
            if let Some(min) = num("minimum") {
                assert!(v >= min, "{key}: {v} < {min}");
            }
            if let Some(max) = num("maximum") {
                assert!(v <= max, "{key}: {v} > {max}");
            }
        }
        "string" => {
            if let Some(e) = prop.get("enum") {
                assert!(
                    e.as_array().unwrap().iter().any(|x| x == value),
                    "{key}: {value} not in {e}"
                );
            }
            if let Some(max) = num("maxLength") {
                assert!(value.len() as f64 <= max, "{key}: too long");
            }
            match &prop["format"] {
                Value::String(f) if f == "dns-name" => {
                    assert!(is_dns_name(value), "{key}: {value}")
                }
                Value::String(f) if f == "pve-tag-list" => {
                    assert!(is_tag_list(value), "{key}: {value}")
                }
                Value::Object(fmt) => {
                    // A property string: `[default_key=]v,k=v,...`.
                    for (i, part) in value.split(',').enumerate() {
                        match part.split_once('=') {
                            Some((k, _)) => assert!(fmt.contains_key(k), "{key}: unknown {k}"),
                            None => assert!(i == 0, "{key}: {part} without a key"),
                        }
                    }
                }
                _ => {}
            }
        }
        other => panic!("{key}: unexpected type {other}"),
    }
}

fn native_keys_follow_the_api_schema() -> Outcome {
    let path = schema_path();
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Err(Missing(format!(
            "{} not found (shared/ beside the repository)",
            path.display()
        )));
    };
    let schema: Value = serde_json::from_str(&text).unwrap();
    let props = &schema["/nodes/{node}/lxc/{vmid}/config"]["PUT"]["parameters"]["properties"];
    assert!(props.is_object());
    let mut seen = std::collections::BTreeSet::new();
    for (fixture, mode) in [
        ("minimal", CgroupMode::Legacy),
        ("k8s", CgroupMode::Legacy),
        ("k8s", CgroupMode::Unified),
        ("userns-v2", CgroupMode::Unified),
    ] {
        let plan = common::plan_value(&common::fixture(fixture), mode).unwrap();
        let conf = plan.render_pve(Path::new(common::INCLUDE)).ct_conf;
        let mut description = Vec::new();
        for line in conf.lines() {
            if let Some(d) = line.strip_prefix('#') {
                description.push(d.to_string());
                continue;
            }
            let (key, value) = line.split_once(": ").unwrap();
            if key.starts_with("lxc.") {
                continue;
            }
            let prop = props
                .get(key)
                .unwrap_or_else(|| panic!("{key} is not a CT config key"));
            check_value(key, value, prop);
            seen.insert(key.to_string());
        }
        assert!(description.join("\n").len() <= 8192);
    }
    for key in [
        "arch",
        "console",
        "cpulimit",
        "cpuunits",
        "hostname",
        "memory",
        "onboot",
        "ostype",
        "rootfs",
        "swap",
        "tags",
        "tty",
        "unprivileged",
    ] {
        assert!(seen.contains(key), "{key} never rendered by the fixtures");
    }
    Ok(())
}

skip_harness::main!(native_keys_follow_the_api_schema);
