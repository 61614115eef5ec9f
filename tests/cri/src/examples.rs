//! The Kubernetes objects in `examples/`, read as the API server would: each YAML file must be
//! exactly the object it claims (apiVersion, kind, only fields of that kind, with the API's
//! types), and the parts the tests run (the Pod's container) are turned into CRI calls the way
//! the kubelet turns them.
//!
//! The structs model the subset of the Kubernetes API the examples use, with
//! `deny_unknown_fields`, so a misspelt or misplaced field fails instead of being ignored.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, ensure, Context, Result};
use serde::Deserialize;

/// `examples/` of the workspace.
pub fn examples_dir() -> PathBuf {
    e2e::paths::workspace_root().join("examples")
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ObjectMeta {
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// node.k8s.io/v1 RuntimeClass.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RuntimeClass {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub handler: String,
    #[serde(default)]
    pub overhead: Option<serde_yaml::Value>,
    #[serde(default)]
    pub scheduling: Option<serde_yaml::Value>,
}

/// v1 Pod (the fields the example uses, typed as the API types them).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Pod {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: PodSpec,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PodSpec {
    #[serde(default)]
    pub runtime_class_name: Option<String>,
    pub containers: Vec<Container>,
    #[serde(default)]
    pub host_network: bool,
    #[serde(default)]
    pub share_process_namespace: bool,
    #[serde(default)]
    pub restart_policy: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Container {
    pub name: String,
    pub image: String,
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub env: Vec<EnvVar>,
    #[serde(default)]
    pub ports: Vec<ContainerPort>,
    #[serde(default)]
    pub security_context: Option<SecurityContext>,
    #[serde(default)]
    pub resources: Option<Resources>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EnvVar {
    pub name: String,
    #[serde(default)]
    pub value: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ContainerPort {
    pub container_port: u16,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub protocol: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SecurityContext {
    #[serde(default)]
    pub run_as_user: Option<i64>,
    #[serde(default)]
    pub run_as_group: Option<i64>,
    #[serde(default)]
    pub run_as_non_root: Option<bool>,
    #[serde(default)]
    pub allow_privilege_escalation: Option<bool>,
    #[serde(default)]
    pub read_only_root_filesystem: Option<bool>,
    #[serde(default)]
    pub privileged: Option<bool>,
    #[serde(default)]
    pub capabilities: Option<Capabilities>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Capabilities {
    #[serde(default)]
    pub add: Vec<String>,
    #[serde(default)]
    pub drop: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Resources {
    #[serde(default)]
    pub requests: BTreeMap<String, String>,
    #[serde(default)]
    pub limits: BTreeMap<String, String>,
}

/// A DNS-1123 label (RuntimeClass handlers and object names must be one).
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

pub fn load_runtime_class() -> Result<RuntimeClass> {
    let path = examples_dir().join("runtimeclass.yaml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    let rc: RuntimeClass = serde_yaml::from_str(&text)
        .with_context(|| format!("{} as a RuntimeClass", path.display()))?;
    ensure!(
        rc.api_version == "node.k8s.io/v1" && rc.kind == "RuntimeClass",
        "{}: apiVersion/kind {} {}",
        path.display(),
        rc.api_version,
        rc.kind
    );
    ensure!(
        is_dns_label(&rc.handler),
        "handler {:?} is not a DNS label",
        rc.handler
    );
    ensure!(
        is_dns_label(&rc.metadata.name),
        "name {:?}",
        rc.metadata.name
    );
    Ok(rc)
}

pub fn load_pod() -> Result<Pod> {
    let path = examples_dir().join("pod.yaml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    let pod: Pod =
        serde_yaml::from_str(&text).with_context(|| format!("{} as a Pod", path.display()))?;
    ensure!(
        pod.api_version == "v1" && pod.kind == "Pod",
        "{}: apiVersion/kind {} {}",
        path.display(),
        pod.api_version,
        pod.kind
    );
    ensure!(!pod.spec.containers.is_empty(), "pod without containers");
    for c in &pod.spec.containers {
        ensure!(is_dns_label(&c.name), "container name {:?}", c.name);
        if let Some(r) = &c.resources {
            for (k, v) in r.requests.iter().chain(r.limits.iter()) {
                match k.as_str() {
                    "cpu" => {
                        parse_cpu_millis(v)?;
                    }
                    "memory" => {
                        parse_bytes(v)?;
                    }
                    other => bail!("resource {other:?} is not used by the example"),
                }
            }
        }
    }
    Ok(pod)
}

/// A CPU quantity ("500m", "1", "0.5") in millicores.
pub fn parse_cpu_millis(q: &str) -> Result<i64> {
    if let Some(m) = q.strip_suffix('m') {
        return Ok(m.parse()?);
    }
    let cores: f64 = q.parse().with_context(|| format!("cpu quantity {q:?}"))?;
    Ok((cores * 1000.0).round() as i64)
}

/// A memory quantity ("64Mi", "1G", "1000") in bytes.
pub fn parse_bytes(q: &str) -> Result<i64> {
    const UNITS: [(&str, i64); 8] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("k", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
    ];
    for (suffix, factor) in UNITS {
        if let Some(n) = q.strip_suffix(suffix) {
            let n: i64 = n
                .parse()
                .with_context(|| format!("memory quantity {q:?}"))?;
            return Ok(n * factor);
        }
    }
    q.parse().with_context(|| format!("memory quantity {q:?}"))
}

/// The CRI container config the kubelet builds for `c` (its image replaced by `image`, since
/// the tests pull from a local registry): command, args, env, security context, and CPU/memory
/// limits as the kubelet maps them (quota = millicores * 100 per 100 ms period, shares =
/// requests in millicores * 1024 / 1000).
pub fn kubelet_container_config(
    c: &Container,
    image: &str,
) -> Result<k8s_cri::v1::ContainerConfig> {
    use k8s_cri::v1 as cri;
    let mut cfg = crate::client::container_config(&c.name, image, &[]);
    cfg.command = c.command.clone();
    cfg.args = c.args.clone();
    cfg.working_dir = c.working_dir.clone().unwrap_or_default();
    cfg.envs = c
        .env
        .iter()
        .map(|e| cri::KeyValue {
            key: e.name.clone(),
            value: e.value.clone(),
        })
        .collect();
    if let Some(sc) = &c.security_context {
        let s = crate::client::sec(&mut cfg);
        s.run_as_user = sc.run_as_user.map(|value| cri::Int64Value { value });
        s.run_as_group = sc.run_as_group.map(|value| cri::Int64Value { value });
        s.readonly_rootfs = sc.read_only_root_filesystem.unwrap_or(false);
        s.privileged = sc.privileged.unwrap_or(false);
        s.no_new_privs = sc.allow_privilege_escalation == Some(false);
        if let Some(caps) = &sc.capabilities {
            s.capabilities = Some(cri::Capability {
                add_capabilities: caps.add.clone(),
                drop_capabilities: caps.drop.clone(),
                ..Default::default()
            });
        }
    }
    if let Some(r) = &c.resources {
        let res = crate::client::res(&mut cfg);
        if let Some(cpu) = r.limits.get("cpu") {
            res.cpu_period = 100_000;
            res.cpu_quota = parse_cpu_millis(cpu)? * 100;
        }
        if let Some(cpu) = r.requests.get("cpu") {
            res.cpu_shares = (parse_cpu_millis(cpu)? * 1024 / 1000).max(2);
        }
        if let Some(mem) = r.limits.get("memory") {
            res.memory_limit_in_bytes = parse_bytes(mem)?;
        }
    }
    Ok(cfg)
}
