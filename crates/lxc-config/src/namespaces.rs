//! `linux.namespaces` and the fields that live in a namespace: `hostname`/`domainname` (UTS),
//! `linux.netDevices` (network), `linux.uidMappings`/`gidMappings` (user),
//! `linux.timeOffsets` (time) and `linux.sysctl`.

use std::collections::HashMap;

use oci_spec::runtime::{Linux, LinuxIdMapping, LinuxNamespaceType, Spec};

use crate::{text, Ignored, Lines, PlanError};

/// LXC's name for a namespace (`lxc.namespace.clone` words, `lxc.namespace.share.<name>`).
fn ns_name(t: LinuxNamespaceType) -> &'static str {
    match t {
        LinuxNamespaceType::Mount => "mnt",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Network => "net",
        LinuxNamespaceType::Time => "time",
    }
}

/// The spec's name for a namespace type, for error messages.
fn spec_field_name(t: LinuxNamespaceType) -> &'static str {
    match t {
        LinuxNamespaceType::Mount => "mount",
        LinuxNamespaceType::Network => "network",
        other => ns_name(other),
    }
}

/// How one namespace is set up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Ns {
    New,
    Join(String),
    Host,
}

/// The order of the words in `lxc.namespace.clone` and of the `share` lines.
const ORDER: [&str; 8] = ["mnt", "pid", "uts", "ipc", "net", "cgroup", "user", "time"];

/// How each namespace is set up, by LXC's name for it; one the spec does not list is the host's.
#[derive(Debug)]
pub(crate) struct Namespaces(HashMap<&'static str, Ns>);

impl Namespaces {
    /// Reads `linux.namespaces`: no type twice, join paths absolute, and a new mount namespace
    /// (LXC builds the container's mounts in one).
    pub(crate) fn parse(linux: &Linux) -> Result<Namespaces, PlanError> {
        let mut ns: HashMap<&'static str, Ns> = HashMap::new();
        for (i, n) in linux.namespaces().iter().flatten().enumerate() {
            let key = ns_name(n.typ());
            if ns.contains_key(key) {
                return Err(PlanError::invalid(
                    &format!("linux.namespaces[{i}].type"),
                    format!("{} is listed twice", spec_field_name(n.typ())),
                ));
            }
            let how = match n.path() {
                Some(p) => Ns::Join(text::abs_path(&format!("linux.namespaces[{i}].path"), p)?),
                None => Ns::New,
            };
            ns.insert(key, how);
        }
        let ns = Namespaces(ns);
        match ns.how("mnt") {
            Ns::New => Ok(ns),
            Ns::Join(_) => Err(PlanError::unsupported(
                "linux.namespaces",
                "joining a mount namespace by path is not supported: LXC builds the container's mounts in a new one",
            )),
            Ns::Host => Err(PlanError::unsupported(
                "linux.namespaces",
                "a container without its own mount namespace is not supported",
            )),
        }
    }

    /// How the namespace with LXC name `key` is set up.
    pub(crate) fn how(&self, key: &str) -> Ns {
        self.0.get(key).cloned().unwrap_or(Ns::Host)
    }

    pub(crate) fn is_new(&self, key: &str) -> bool {
        self.how(key) == Ns::New
    }

    /// Clone exactly the new ones; the rest are inherited (LXC refuses lxc.namespace.clone
    /// together with lxc.namespace.keep, and keep alone would clone a user and time namespace
    /// the spec did not ask for).
    pub(crate) fn clone_and_share(&self, lines: &mut Lines) {
        let clone: Vec<&str> = ORDER.iter().copied().filter(|k| self.is_new(k)).collect();
        lines.push("lxc.namespace.clone", clone.join(" "));
        for k in ORDER {
            if let Ns::Join(p) = self.how(k) {
                lines.push(&format!("lxc.namespace.share.{k}"), p);
            }
        }
    }
}

/// `hostname` (set only in a new UTS namespace) and `domainname` (LXC has no key).
pub(crate) fn hostname(
    spec: &Spec,
    ns: &Namespaces,
    lines: &mut Lines,
    ignored: &mut Vec<Ignored>,
) -> Result<(), PlanError> {
    let wanted = spec.hostname().as_ref().filter(|h| !h.is_empty());
    match (ns.how("uts"), wanted) {
        (_, None) => {}
        (Ns::New, Some(h)) => lines.push("lxc.uts.name", text::value("hostname", h)?),
        (Ns::Join(_), Some(_)) => {
            // Kubernetes app containers join the sandbox's UTS namespace, which has the pod's
            // hostname already; runc would set the same name again.
            ignored.push(Ignored::new(
                "hostname",
                "the container joins an existing UTS namespace, whose hostname stays",
            ));
        }
        (Ns::Host, Some(_)) => {
            return Err(PlanError::invalid(
                "hostname",
                "needs a new UTS namespace (linux.namespaces)",
            ))
        }
    }
    if spec.domainname().as_ref().is_some_and(|d| !d.is_empty()) {
        return Err(PlanError::unsupported(
            "domainname",
            "LXC 5 has no key for the NIS domain name",
        ));
    }
    Ok(())
}

/// A new network namespace gets loopback only (`empty`; CNI configures it from outside) plus
/// the spec's `linux.netDevices`, moved in as physical interfaces in name order.
pub(crate) fn network(linux: &Linux, ns: &Namespaces, lines: &mut Lines) -> Result<(), PlanError> {
    let net_devices = linux.net_devices().clone().unwrap_or_default();
    if !ns.is_new("net") {
        if net_devices.is_empty() {
            return Ok(());
        }
        return Err(PlanError::invalid(
            "linux.netDevices",
            "needs a new network namespace",
        ));
    }
    lines.push("lxc.net.0.type", "empty".into());
    let mut names: Vec<&String> = net_devices.keys().collect();
    names.sort();
    for (i, host_name) in names.into_iter().enumerate() {
        let f = format!("linux.netDevices.{host_name}");
        let link = text::key_part(&f, host_name)?;
        let idx = i + 1;
        lines.push(&format!("lxc.net.{idx}.type"), "phys".into());
        lines.push(&format!("lxc.net.{idx}.link"), link.clone());
        let inner = net_devices[host_name].name().clone().unwrap_or(link);
        lines.push(
            &format!("lxc.net.{idx}.name"),
            text::key_part(&format!("{f}.name"), &inner)?,
        );
        lines.push(&format!("lxc.net.{idx}.flags"), "up".into());
    }
    Ok(())
}

/// `linux.uidMappings`/`gidMappings` -> `lxc.idmap`; both are needed with a new user namespace
/// and meaningless without one. A joined one (a Kubernetes container in its pod's, which
/// containerd's CRI gives with the pod's mappings) may name them too: LXC then writes no map
/// (start.c, `lxc_spawn`: `ns_share[LXC_NS_USER]`) but knows the container's root host ids
/// from them, as for a new one.
pub(crate) fn id_mappings(
    linux: &Linux,
    ns: &Namespaces,
    lines: &mut Lines,
) -> Result<(), PlanError> {
    let uid_maps = linux.uid_mappings().clone().unwrap_or_default();
    let gid_maps = linux.gid_mappings().clone().unwrap_or_default();
    match ns.how("user") {
        Ns::New if uid_maps.is_empty() || gid_maps.is_empty() => {
            return Err(PlanError::invalid(
                "linux.uidMappings",
                "a new user namespace needs uid and gid mappings",
            ));
        }
        Ns::Join(_) if uid_maps.is_empty() != gid_maps.is_empty() => {
            return Err(PlanError::invalid(
                "linux.uidMappings",
                "a joined user namespace's mappings need both uid and gid mappings",
            ));
        }
        Ns::Host if !uid_maps.is_empty() || !gid_maps.is_empty() => {
            return Err(PlanError::invalid(
                "linux.uidMappings",
                "mappings need a user namespace",
            ));
        }
        _ => {}
    }
    let idmap = |kind: char, m: &LinuxIdMapping| {
        format!("{kind} {} {} {}", m.container_id(), m.host_id(), m.size())
    };
    for m in &uid_maps {
        lines.push("lxc.idmap", idmap('u', m));
    }
    for m in &gid_maps {
        lines.push("lxc.idmap", idmap('g', m));
    }
    Ok(())
}

/// `linux.timeOffsets` -> `lxc.time.offset.*`, in a new time namespace only.
pub(crate) fn time_offsets(
    linux: &Linux,
    ns: &Namespaces,
    lines: &mut Lines,
) -> Result<(), PlanError> {
    let Some(offsets) = linux.time_offsets().as_ref().filter(|o| !o.is_empty()) else {
        return Ok(());
    };
    if !ns.is_new("time") {
        return Err(PlanError::invalid(
            "linux.timeOffsets",
            "needs a new time namespace",
        ));
    }
    let mut clocks: Vec<&String> = offsets.keys().collect();
    clocks.sort();
    for clock in clocks {
        let o = &offsets[clock];
        let key = match clock.as_str() {
            "boottime" => "boot",
            "monotonic" => "monotonic",
            _ => {
                return Err(PlanError::invalid(
                    "linux.timeOffsets",
                    format!("{clock:?} is not boottime or monotonic"),
                ))
            }
        };
        // LXC keeps one number with one unit per clock and hands the kernel
        // "secs nanosecs" with the nanoseconds below one second.
        let value = match (o.secs().unwrap_or(0), o.nanosecs().unwrap_or(0)) {
            (s, 0) => format!("{s}s"),
            (0, n) if n < 1_000_000_000 => format!("{n}ns"),
            _ => {
                return Err(PlanError::unsupported(
                    &format!("linux.timeOffsets.{clock}"),
                    "LXC 5 takes either whole seconds or nanoseconds below one second",
                ))
            }
        };
        lines.push(&format!("lxc.time.offset.{key}"), value);
    }
    Ok(())
}

/// IPC sysctls outside `fs.mqueue.*` (the list runc checks).
const IPC_SYSCTLS: &[&str] = &[
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
];

/// The namespace a sysctl belongs to (LXC name), `None` for one that is not namespaced.
fn sysctl_namespace(key: &str) -> Option<&'static str> {
    if key.starts_with("net.") {
        Some("net")
    } else if key.starts_with("fs.mqueue.") || IPC_SYSCTLS.contains(&key) {
        Some("ipc")
    } else if key == "kernel.hostname" || key == "kernel.domainname" {
        Some("uts")
    } else {
        None
    }
}

/// `linux.sysctl` -> `lxc.sysctl.*`, only those that belong to a namespace the container owns
/// (as runc checks). Returns the `/proc/sys` files set, in order (the mounts keep them
/// writable under a read-only `/proc/sys`).
pub(crate) fn sysctls(
    linux: &Linux,
    ns: &Namespaces,
    lines: &mut Lines,
) -> Result<Vec<String>, PlanError> {
    let mut files = Vec::new();
    let Some(sysctl) = linux.sysctl() else {
        return Ok(files);
    };
    let mut keys: Vec<&String> = sysctl.keys().collect();
    keys.sort();
    for k in keys {
        let f = format!("linux.sysctl.{k}");
        let key = text::key_part(&f, &k.replace('/', "."))?;
        let Some(owner) = sysctl_namespace(&key) else {
            return Err(PlanError::unsupported(&f, "not a namespaced sysctl"));
        };
        if ns.how(owner) == Ns::Host {
            return Err(PlanError::invalid(
                &f,
                "the container shares this sysctl's namespace with the host",
            ));
        }
        lines.push(&format!("lxc.sysctl.{key}"), text::value(&f, &sysctl[k])?);
        files.push(format!("/proc/sys/{}", key.replace('.', "/")));
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn linux(v: serde_json::Value) -> Linux {
        serde_json::from_value(v).unwrap()
    }

    fn rendered(lines: &Lines) -> Vec<String> {
        lines.0.iter().map(|(k, v)| format!("{k} = {v}")).collect()
    }

    #[test]
    fn clones_new_and_shares_joined_namespaces_in_lxc_order() {
        let l = linux(json!({"namespaces": [
            {"type": "network", "path": "/proc/1/ns/net"},
            {"type": "pid"}, {"type": "mount"}, {"type": "time"}
        ]}));
        let ns = Namespaces::parse(&l).unwrap();
        let mut lines = Lines::default();
        ns.clone_and_share(&mut lines);
        assert_eq!(
            rendered(&lines),
            [
                "lxc.namespace.clone = mnt pid time",
                "lxc.namespace.share.net = /proc/1/ns/net"
            ]
        );
    }

    #[test]
    fn needs_a_new_mount_namespace_and_no_type_twice() {
        let host = linux(json!({"namespaces": [{"type": "pid"}]}));
        assert_eq!(
            Namespaces::parse(&host).unwrap_err().field(),
            "linux.namespaces"
        );
        let twice = linux(json!({"namespaces": [{"type": "mount"}, {"type": "mount"}]}));
        assert_eq!(
            Namespaces::parse(&twice).unwrap_err().field(),
            "linux.namespaces[1].type"
        );
    }

    #[test]
    fn network_idmap_time_and_sysctl_lines() {
        let l = linux(json!({
            "namespaces": [{"type": "mount"}, {"type": "network"}, {"type": "user"},
                           {"type": "time"}],
            "netDevices": {"eth9": {"name": "net1"}},
            "uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
            "gidMappings": [{"containerID": 0, "hostID": 200000, "size": 65536}],
            "timeOffsets": {"monotonic": {"secs": 5}, "boottime": {"nanosecs": 7}},
            "sysctl": {"net/ipv4/ip_forward": "1"}
        }));
        let ns = Namespaces::parse(&l).unwrap();
        let mut lines = Lines::default();
        network(&l, &ns, &mut lines).unwrap();
        id_mappings(&l, &ns, &mut lines).unwrap();
        time_offsets(&l, &ns, &mut lines).unwrap();
        let files = sysctls(&l, &ns, &mut lines).unwrap();
        assert_eq!(files, ["/proc/sys/net/ipv4/ip_forward"]);
        assert_eq!(
            rendered(&lines),
            [
                "lxc.net.0.type = empty",
                "lxc.net.1.type = phys",
                "lxc.net.1.link = eth9",
                "lxc.net.1.name = net1",
                "lxc.net.1.flags = up",
                "lxc.idmap = u 0 100000 65536",
                "lxc.idmap = g 0 200000 65536",
                "lxc.time.offset.boot = 7ns",
                "lxc.time.offset.monotonic = 5s",
                "lxc.sysctl.net.ipv4.ip_forward = 1",
            ]
        );
    }

    #[test]
    fn a_joined_user_namespace_keeps_its_mappings_for_lxc() {
        let maps = |ns: serde_json::Value, uid: bool, gid: bool| {
            let m = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
            let mut v = json!({"namespaces": ns});
            if uid {
                v["uidMappings"] = m.clone();
            }
            if gid {
                v["gidMappings"] = m;
            }
            linux(v)
        };
        let joined = json!([{"type": "mount"}, {"type": "user", "path": "/proc/7/ns/user"}]);
        let l = maps(joined.clone(), true, true);
        let ns = Namespaces::parse(&l).unwrap();
        let mut lines = Lines::default();
        ns.clone_and_share(&mut lines);
        id_mappings(&l, &ns, &mut lines).unwrap();
        assert_eq!(
            rendered(&lines),
            [
                "lxc.namespace.clone = mnt",
                "lxc.namespace.share.user = /proc/7/ns/user",
                "lxc.idmap = u 0 100000 65536",
                "lxc.idmap = g 0 100000 65536",
            ]
        );
        // Joined without mappings: nothing to tell LXC; half of them: an error.
        let l = maps(joined.clone(), false, false);
        let ns = Namespaces::parse(&l).unwrap();
        id_mappings(&l, &ns, &mut Lines::default()).unwrap();
        let l = maps(joined, true, false);
        let ns = Namespaces::parse(&l).unwrap();
        assert!(id_mappings(&l, &ns, &mut Lines::default()).is_err());
        // The host's user namespace takes none.
        let l = maps(json!([{"type": "mount"}]), true, true);
        let ns = Namespaces::parse(&l).unwrap();
        let e = id_mappings(&l, &ns, &mut Lines::default()).unwrap_err();
        assert_eq!(e.field(), "linux.uidMappings");
    }

    #[test]
    fn sysctls_outside_an_owned_namespace_are_refused() {
        let l = linux(json!({"namespaces": [{"type": "mount"}],
                             "sysctl": {"net.core.somaxconn": "1"}}));
        let ns = Namespaces::parse(&l).unwrap();
        let e = sysctls(&l, &ns, &mut Lines::default()).unwrap_err();
        assert!(matches!(e, PlanError::Invalid { .. }), "{e}");
        let l = linux(json!({"namespaces": [{"type": "mount"}],
                             "sysctl": {"vm.swappiness": "1"}}));
        let e = sysctls(&l, &ns, &mut Lines::default()).unwrap_err();
        assert!(matches!(e, PlanError::Unsupported { .. }), "{e}");
    }
}
