//! Proxmox keys: the native values shown in the Proxmox GUI (`memory`, `swap`, `cpulimit`,
//! `cpuunits`, `hostname`, `unprivileged`) and the Kubernetes names as tags and description.

use std::collections::HashMap;

use oci_spec::runtime::{LinuxCpu, LinuxMemory, LinuxResources, Spec};

use crate::namespaces::{Namespaces, Ns};
use crate::{shares_to_weight, text, PveNative, DEFAULT_TAG_PREFIX};

const MIB: i64 = 1024 * 1024;

/// The Proxmox-native values for a spec; they are informational (the cgroup lines apply).
pub(crate) fn native(
    spec: &Spec,
    ns: &Namespaces,
    resources: Option<&LinuxResources>,
) -> PveNative {
    let mut pve = PveNative {
        // Its root is not host root in a user namespace of its own or its pod's (a Kubernetes
        // container joins the sandbox's).
        unprivileged: ns.how("user") != Ns::Host,
        hostname: spec
            .hostname()
            .as_ref()
            .filter(|h| ns.is_new("uts") && text::is_dns_name(h))
            .cloned(),
        ..Default::default()
    };
    if let Some(m) = resources.and_then(|r| r.memory().as_ref()) {
        memory(m, &mut pve);
    }
    if let Some(c) = resources.and_then(|r| r.cpu().as_ref()) {
        cpu(c, &mut pve);
    }
    pve
}

/// The Proxmox-native resource values (`memory`, `swap`, `cpulimit`, `cpuunits`) of `resources`
/// alone, as at create: what an Update of a running container shows in its CT config.
pub fn native_resources(resources: &LinuxResources) -> PveNative {
    let mut pve = PveNative::default();
    if let Some(m) = resources.memory() {
        memory(m, &mut pve);
    }
    if let Some(c) = resources.cpu() {
        cpu(c, &mut pve);
    }
    pve
}

/// `memory:` (limit in MiB rounded up, at least 16) and `swap:` (OCI memory+swap minus memory).
fn memory(m: &LinuxMemory, pve: &mut PveNative) {
    let Some(limit) = m.limit().filter(|l| *l > 0) else {
        return;
    };
    // Rounded up without `limit + MIB - 1`, which overflows for limits near i64::MAX.
    let mib = limit / MIB + i64::from(limit % MIB != 0);
    pve.memory_mib = Some(mib.max(16) as u64);
    if let Some(swap) = m.swap().filter(|s| *s >= limit) {
        pve.swap_mib = Some(((swap - limit) / MIB) as u64);
    }
}

/// `cpulimit:` (quota / period, at most Proxmox's 8192) and `cpuunits:` (the v2 weight).
fn cpu(c: &LinuxCpu, pve: &mut PveNative) {
    if let (Some(q), Some(p)) = (c.quota(), c.period()) {
        if q > 0 && p > 0 {
            pve.cpulimit = Some((q as f64 / p as f64).min(8192.0));
        }
    }
    if let Some(s) = c.shares().filter(|s| *s > 0) {
        pve.cpuunits = Some(shares_to_weight(s));
    }
}

/// Kubernetes annotations (CRI and the older `io.kubernetes.pod.*` names) -> tags, description.
pub(crate) fn kube_metadata(
    annotations: Option<&HashMap<String, String>>,
    name: &str,
) -> (Vec<String>, String) {
    let get = |keys: &[&str]| -> Option<String> {
        let a = annotations?;
        keys.iter()
            .find_map(|k| a.get(*k))
            .filter(|v| !v.is_empty())
            .cloned()
    };
    let namespace = get(&[
        "io.kubernetes.cri.sandbox-namespace",
        "io.kubernetes.pod.namespace",
    ]);
    let pod = get(&["io.kubernetes.cri.sandbox-name", "io.kubernetes.pod.name"]);
    let container = get(&[
        "io.kubernetes.cri.container-name",
        "io.kubernetes.container.name",
    ]);
    let kind = get(&["io.kubernetes.cri.container-type"]);
    let p = DEFAULT_TAG_PREFIX;
    let mut tags = Vec::new();
    let mut lines = vec![format!("OCI container {name}")];
    if let Some(ns) = &namespace {
        tags.push(text::pve_tag(&format!("{p}-ns-{ns}")));
    }
    if let Some(pod) = &pod {
        tags.push(text::pve_tag(&format!("{p}-pod-{pod}")));
        lines.push(format!(
            "Kubernetes pod: {}/{}",
            namespace.as_deref().unwrap_or("?"),
            pod
        ));
    }
    if let Some(c) = &container {
        tags.push(text::pve_tag(&format!("{p}-ctr-{c}")));
        lines.push(format!("Kubernetes container: {c}"));
    } else if kind.as_deref() == Some("sandbox") {
        tags.push(text::pve_tag(&format!("{p}-sandbox")));
        lines.push("Kubernetes pod sandbox".to_string());
    }
    (tags, lines.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn plan_native(v: serde_json::Value) -> PveNative {
        let spec: Spec = serde_json::from_value(v).unwrap();
        let linux = spec.linux().clone().unwrap_or_default();
        let ns = Namespaces::parse(&linux).unwrap();
        native(&spec, &ns, linux.resources().as_ref())
    }

    #[test]
    fn native_values_from_resources_and_namespaces() {
        let pve = plan_native(json!({"ociVersion": "1.2.0", "hostname": "web-1",
            "linux": {"namespaces": [{"type": "mount"}, {"type": "uts"}, {"type": "user"}],
                "resources": {"memory": {"limit": 100_000_000, "swap": 300_000_000},
                              "cpu": {"quota": 150_000, "period": 100_000, "shares": 1024}}}}));
        assert_eq!(
            pve,
            PveNative {
                memory_mib: Some(96),
                swap_mib: Some(190),
                cpulimit: Some(1.5),
                cpuunits: Some(39),
                hostname: Some("web-1".into()),
                unprivileged: true,
            }
        );
    }

    #[test]
    fn huge_limits_do_not_overflow() {
        let pve = plan_native(json!({"ociVersion": "1.2.0",
            "linux": {"namespaces": [{"type": "mount"}],
                "resources": {"memory": {"limit": i64::MAX, "swap": i64::MAX},
                              "cpu": {"quota": i64::MAX, "period": 1}}}}));
        assert_eq!(pve.memory_mib, Some((i64::MAX / MIB + 1) as u64));
        assert_eq!(pve.swap_mib, Some(0));
        assert_eq!(pve.cpulimit, Some(8192.0));
    }

    #[test]
    fn kubernetes_names_become_tags_and_description() {
        let a: HashMap<String, String> = [
            ("io.kubernetes.cri.sandbox-namespace", "default"),
            ("io.kubernetes.cri.sandbox-name", "web"),
            ("io.kubernetes.cri.container-name", "nginx"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let (tags, descr) = kube_metadata(Some(&a), "c1");
        assert_eq!(tags, ["k8s-ns-default", "k8s-pod-web", "k8s-ctr-nginx"]);
        assert_eq!(
            descr,
            "OCI container c1\nKubernetes pod: default/web\nKubernetes container: nginx"
        );
    }
}
