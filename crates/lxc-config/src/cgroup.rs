//! `linux.resources` -> cgroup files, the same mapping runc uses for cgroup v1 and v2.

use oci_spec::runtime::{
    Linux, LinuxBlockIo, LinuxCpu, LinuxDeviceCgroup, LinuxDeviceType, LinuxMemory, LinuxNetwork,
    LinuxResources,
};

use crate::text;
use crate::{CgroupMode, Ignored, NodeFacts, PlanError};

const F: &str = "linux.resources";

fn field(rest: &str) -> String {
    format!("{F}.{rest}")
}

/// runc's conversion of cgroup v1 `cpu.shares` (2..262144) to v2 `cpu.weight` (1..10000).
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

/// runc's conversion of blkio weight (10..1000) to v2 `io.weight` (1..10000).
fn blkio_weight_to_io(weight: u16) -> u64 {
    let w = u64::from(weight.clamp(10, 1000));
    1 + (w - 10) * 9999 / 990
}

fn limit_value(v: i64) -> String {
    if v < 0 {
        "-1".into()
    } else {
        v.to_string()
    }
}

fn v2_limit(v: i64) -> String {
    if v < 0 {
        "max".into()
    } else {
        v.to_string()
    }
}

/// A cpuset list such as `0-3,6`.
fn cpu_list(name: &str, v: &str) -> Result<String, PlanError> {
    if v.is_empty()
        || !v
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b',' || b == b'-')
    {
        return Err(PlanError::invalid(
            &field(name),
            format!("{v:?} is not a CPU or node list"),
        ));
    }
    Ok(v.to_string())
}

/// The cgroup files and values for `resources`, in the order they must be written. File names
/// are those of the chosen hierarchy (v1: `memory.limit_in_bytes`, v2: `memory.max`, ...).
/// Device rules are not included (see [`device_rules`]).
pub fn cgroup_settings(
    resources: &LinuxResources,
    mode: CgroupMode,
) -> Result<Vec<(String, String)>, PlanError> {
    let mut out = Settings {
        v1: mode == CgroupMode::Legacy,
        list: Vec::new(),
    };
    if let Some(m) = resources.memory() {
        memory_limits(m, &mut out);
        memory_swap(m, &mut out)?;
        memory_v1_only(m, &mut out)?;
    }
    if let Some(c) = resources.cpu() {
        cpu_weight_and_bandwidth(c, &mut out);
        cpu_realtime_and_sets(c, &mut out)?;
    }
    if let Some(p) = resources.pids().filter(|p| p.limit() != 0) {
        let limit = if p.limit() <= 0 {
            "max".into()
        } else {
            p.limit().to_string()
        };
        out.set("pids.max", limit);
    }
    hugepages(resources, &mut out)?;
    if let Some(b) = resources.block_io() {
        block_io_weights(b, &mut out)?;
        block_io_throttles(b, &mut out);
    }
    if let Some(n) = resources.network() {
        network(n, &mut out)?;
    }
    rdma(resources, &mut out)?;
    unified(resources, &mut out)?;
    Ok(out.list)
}

/// The settings being collected, for one hierarchy.
struct Settings {
    v1: bool,
    list: Vec<(String, String)>,
}

impl Settings {
    fn set(&mut self, file: &str, value: String) {
        self.list.push((file.to_string(), value));
    }

    /// A byte limit: `-1` (v1) or `max` (v2) for a negative one.
    fn limit(&mut self, v1_file: &str, v2_file: &str, v: i64) {
        if self.v1 {
            self.set(v1_file, limit_value(v));
        } else {
            self.set(v2_file, v2_limit(v));
        }
    }

    /// A setting cgroup v1 has and cgroup v2 does not.
    fn v1_only(
        &mut self,
        file: &str,
        value: String,
        spec_field: &str,
        why: &str,
    ) -> Result<(), PlanError> {
        if !self.v1 {
            return Err(PlanError::unsupported(&field(spec_field), why));
        }
        self.set(file, value);
        Ok(())
    }
}

/// As with runc, a zero means "not set" for these values (CRI sends zeros for unset ones).
fn nz(v: Option<i64>) -> Option<i64> {
    v.filter(|v| *v != 0)
}

fn memory_limits(m: &LinuxMemory, out: &mut Settings) {
    if let Some(limit) = nz(m.limit()) {
        out.limit("memory.limit_in_bytes", "memory.max", limit);
    }
    if let Some(r) = nz(m.reservation()) {
        out.limit("memory.soft_limit_in_bytes", "memory.low", r);
    }
}

/// OCI swap is memory+swap (v1 semantics); v2 `swap.max` is swap alone.
fn memory_swap(m: &LinuxMemory, out: &mut Settings) -> Result<(), PlanError> {
    let Some(swap) = nz(m.swap()) else {
        return Ok(());
    };
    let below_limit = || {
        PlanError::invalid(
            &field("memory.swap"),
            "must not be below memory.limit (it counts memory plus swap)",
        )
    };
    let limit = nz(m.limit());
    if let Some(l) = limit {
        if swap >= 0 && l >= 0 && swap < l {
            return Err(below_limit());
        }
    }
    if out.v1 {
        out.set("memory.memsw.limit_in_bytes", limit_value(swap));
        return Ok(());
    }
    let v = match (swap, limit) {
        (s, _) if s < 0 => "max".to_string(),
        (s, Some(l)) if l >= 0 => (s - l).to_string(),
        _ => {
            return Err(PlanError::invalid(
                &field("memory.swap"),
                "cgroup v2 needs memory.limit to derive swap.max",
            ))
        }
    };
    out.set("memory.swap.max", v);
    Ok(())
}

/// Memory settings only cgroup v1 has (disabling the OOM killer off is fine on v2).
fn memory_v1_only(m: &LinuxMemory, out: &mut Settings) -> Result<(), PlanError> {
    if let Some(tcp) = nz(m.kernel_tcp()) {
        out.v1_only(
            "memory.kmem.tcp.limit_in_bytes",
            limit_value(tcp),
            "memory.kernelTCP",
            "cgroup v2 has no kernel TCP memory limit",
        )?;
    }
    if let Some(s) = m.swappiness() {
        if s > 100 {
            return Err(PlanError::invalid(
                &field("memory.swappiness"),
                "must be 0..100",
            ));
        }
        out.v1_only(
            "memory.swappiness",
            s.to_string(),
            "memory.swappiness",
            "cgroup v2 has no per-cgroup swappiness",
        )?;
    }
    match m.disable_oom_killer() {
        Some(d) if out.v1 => out.set("memory.oom_control", if d { "1" } else { "0" }.into()),
        Some(true) => {
            return Err(PlanError::unsupported(
                &field("memory.disableOOMKiller"),
                "cgroup v2 cannot disable the OOM killer",
            ))
        }
        _ => {}
    }
    if m.use_hierarchy() == Some(true) && out.v1 {
        out.set("memory.use_hierarchy", "1".into());
    }
    Ok(())
}

fn cpu_weight_and_bandwidth(c: &LinuxCpu, out: &mut Settings) {
    if let Some(shares) = c.shares().filter(|s| *s != 0) {
        if out.v1 {
            out.set("cpu.shares", shares.to_string());
        } else {
            out.set("cpu.weight", shares_to_weight(shares).to_string());
        }
    }
    let quota = nz(c.quota());
    let period = c.period().filter(|p| *p != 0);
    if out.v1 {
        if let Some(p) = period {
            out.set("cpu.cfs_period_us", p.to_string());
        }
        if let Some(q) = quota {
            out.set(
                "cpu.cfs_quota_us",
                if q <= 0 { "-1".into() } else { q.to_string() },
            );
        }
    } else if quota.is_some() || period.is_some() {
        let q = match quota {
            Some(q) if q > 0 => q.to_string(),
            _ => "max".into(),
        };
        out.set("cpu.max", format!("{q} {}", period.unwrap_or(100_000)));
    }
    if let Some(b) = c.burst() {
        let file = if out.v1 {
            "cpu.cfs_burst_us"
        } else {
            "cpu.max.burst"
        };
        out.set(file, b.to_string());
    }
    if let Some(idle) = c.idle() {
        out.set("cpu.idle", idle.to_string());
    }
}

fn cpu_realtime_and_sets(c: &LinuxCpu, out: &mut Settings) -> Result<(), PlanError> {
    let realtime = [
        (
            c.realtime_runtime().map(|v| v.to_string()),
            "cpu.rt_runtime_us",
            "cpu.realtimeRuntime",
        ),
        (
            c.realtime_period().map(|v| v.to_string()),
            "cpu.rt_period_us",
            "cpu.realtimePeriod",
        ),
    ];
    for (value, file, spec_field) in realtime {
        if let Some(v) = value {
            out.v1_only(
                file,
                v,
                spec_field,
                "cgroup v2 has no real-time scheduling budget",
            )?;
        }
    }
    if let Some(cpus) = c.cpus().as_ref().filter(|c| !c.is_empty()) {
        out.set("cpuset.cpus", cpu_list("cpu.cpus", cpus)?);
    }
    if let Some(mems) = c.mems().as_ref().filter(|m| !m.is_empty()) {
        out.set("cpuset.mems", cpu_list("cpu.mems", mems)?);
    }
    Ok(())
}

fn hugepages(resources: &LinuxResources, out: &mut Settings) -> Result<(), PlanError> {
    for (i, h) in resources.hugepage_limits().iter().flatten().enumerate() {
        let size = text::key_part(
            &field(&format!("hugepageLimits[{i}].pageSize")),
            h.page_size(),
        )?;
        out.limit(
            &format!("hugetlb.{size}.limit_in_bytes"),
            &format!("hugetlb.{size}.max"),
            h.limit(),
        );
    }
    Ok(())
}

fn block_io_weights(b: &LinuxBlockIo, out: &mut Settings) -> Result<(), PlanError> {
    if let Some(w) = b.weight().filter(|w| *w != 0) {
        if out.v1 {
            out.set("blkio.weight", w.to_string());
        } else {
            out.set("io.weight", format!("default {}", blkio_weight_to_io(w)));
        }
    }
    if let Some(lw) = b.leaf_weight().filter(|w| *w != 0) {
        out.v1_only(
            "blkio.leaf_weight",
            lw.to_string(),
            "blockIO.leafWeight",
            "cgroup v2 has no leaf weight",
        )?;
    }
    for (i, d) in b.weight_device().iter().flatten().enumerate() {
        let dev = format!("{}:{}", d.major(), d.minor());
        if let Some(w) = d.weight() {
            if out.v1 {
                out.set("blkio.weight_device", format!("{dev} {w}"));
            } else {
                out.set("io.weight", format!("{dev} {}", blkio_weight_to_io(w)));
            }
        }
        if let Some(lw) = d.leaf_weight() {
            out.v1_only(
                "blkio.leaf_weight_device",
                format!("{dev} {lw}"),
                &format!("blockIO.weightDevice[{i}].leafWeight"),
                "cgroup v2 has no leaf weight",
            )?;
        }
    }
    Ok(())
}

fn block_io_throttles(b: &LinuxBlockIo, out: &mut Settings) {
    let throttles = [
        (b.throttle_read_bps_device(), "read_bps_device", "rbps"),
        (b.throttle_write_bps_device(), "write_bps_device", "wbps"),
        (b.throttle_read_iops_device(), "read_iops_device", "riops"),
        (b.throttle_write_iops_device(), "write_iops_device", "wiops"),
    ];
    for (list, v1file, v2key) in throttles {
        for d in list.iter().flatten() {
            let dev = format!("{}:{}", d.major(), d.minor());
            if out.v1 {
                out.set(
                    &format!("blkio.throttle.{v1file}"),
                    format!("{dev} {}", d.rate()),
                );
            } else {
                out.set("io.max", format!("{dev} {v2key}={}", d.rate()));
            }
        }
    }
}

fn network(n: &LinuxNetwork, out: &mut Settings) -> Result<(), PlanError> {
    if let Some(id) = n.class_id() {
        out.v1_only(
            "net_cls.classid",
            id.to_string(),
            "network.classID",
            "cgroup v2 has no net_cls controller",
        )?;
    }
    for (i, p) in n.priorities().iter().flatten().enumerate() {
        if !out.v1 {
            return Err(PlanError::unsupported(
                &field("network.priorities"),
                "cgroup v2 has no net_prio controller",
            ));
        }
        let name = text::key_part(&field(&format!("network.priorities[{i}].name")), p.name())?;
        out.set("net_prio.ifpriomap", format!("{name} {}", p.priority()));
    }
    Ok(())
}

fn rdma(resources: &LinuxResources, out: &mut Settings) -> Result<(), PlanError> {
    let Some(rdma) = resources.rdma() else {
        return Ok(());
    };
    let mut names: Vec<&String> = rdma.keys().collect();
    names.sort();
    for name in names {
        let r = &rdma[name];
        let mut v = text::key_part(&field(&format!("rdma.{name}")), name)?;
        if let Some(h) = r.hca_handles() {
            v.push_str(&format!(" hca_handle={h}"));
        }
        if let Some(o) = r.hca_objects() {
            v.push_str(&format!(" hca_object={o}"));
        }
        out.set("rdma.max", v);
    }
    Ok(())
}

/// `unified`: cgroup v2 files by name, in name order.
fn unified(resources: &LinuxResources, out: &mut Settings) -> Result<(), PlanError> {
    let Some(unified) = resources.unified().as_ref().filter(|u| !u.is_empty()) else {
        return Ok(());
    };
    if out.v1 {
        return Err(PlanError::unsupported(
            &field("unified"),
            "this node runs cgroup v1; unified keys need cgroup v2",
        ));
    }
    let mut keys: Vec<&String> = unified.keys().collect();
    keys.sort();
    for k in keys {
        let f = field(&format!("unified.{k}"));
        let key = text::key_part(&f, k)?;
        if !key.contains('.') {
            return Err(PlanError::invalid(&f, "is not a cgroup file name"));
        }
        out.set(&key, text::value(&f, &unified[k])?);
    }
    Ok(())
}

/// What the cgroup section of a plan holds.
pub(crate) struct CgroupPlan {
    /// `linux.cgroupsPath` relative to the hierarchy root.
    pub dir: Option<String>,
    pub settings: Vec<(String, String)>,
    pub device_rules: Vec<DeviceRule>,
}

/// `linux.cgroupsPath` and `linux.resources` (with `extra_allow`, the rules for
/// `linux.devices`), for the node's hierarchy and LXC version.
pub(crate) fn section(
    linux: &Linux,
    facts: &NodeFacts,
    extra_allow: &[String],
    ignored: &mut Vec<Ignored>,
) -> Result<CgroupPlan, PlanError> {
    let dir = match linux.cgroups_path() {
        Some(p) => Some(cgroups_path(p)?),
        None => None,
    };
    let resources = linux.resources().as_ref();
    let settings = match resources {
        Some(r) => cgroup_settings(r, facts.cgroup)?,
        None => Vec::new(),
    };
    if let Some(m) = resources.and_then(|r| r.memory().as_ref()) {
        ignored_memory_fields(m, facts.cgroup, ignored);
    }
    let device_rules = device_rules(resources, extra_allow)?;
    if facts.cgroup == CgroupMode::Legacy
        && facts.lxc_version.0 >= 6
        && (!settings.is_empty() || !device_rules.is_empty())
    {
        return Err(PlanError::unsupported(
            F,
            "LXC 6 and later cannot apply cgroup v1 limits (this node runs cgroup v1)",
        ));
    }
    Ok(CgroupPlan {
        dir,
        settings,
        device_rules,
    })
}

fn ignored_memory_fields(m: &LinuxMemory, mode: CgroupMode, ignored: &mut Vec<Ignored>) {
    if m.kernel().is_some() {
        ignored.push(Ignored::new(
            "linux.resources.memory.kernel",
            "deprecated in runtime-spec 1.2 and ignored by runc; kernels since 6.x reject kmem limits",
        ));
    }
    if m.check_before_update().is_some() {
        ignored.push(Ignored::new(
            "linux.resources.memory.checkBeforeUpdate",
            "applies to updates of a running container only",
        ));
    }
    if mode == CgroupMode::Unified && m.use_hierarchy().is_some() {
        ignored.push(Ignored::new(
            "linux.resources.memory.useHierarchy",
            "cgroup v2 is always hierarchical",
        ));
    }
}

/// One `devices.allow` / `devices.deny` rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceRule {
    pub allow: bool,
    /// `a`, `c` or `b`, major:minor (`*` for any), access (`rwm` subset).
    pub rule: String,
}

fn device_rule(i: usize, d: &LinuxDeviceCgroup) -> Result<DeviceRule, PlanError> {
    let f = field(&format!("devices[{i}]"));
    let typ = match d.typ().unwrap_or(LinuxDeviceType::A) {
        LinuxDeviceType::A => "a",
        LinuxDeviceType::C | LinuxDeviceType::U => "c",
        LinuxDeviceType::B => "b",
        LinuxDeviceType::P => {
            return Err(PlanError::unsupported(
                &format!("{f}.type"),
                "fifos are not subject to the devices cgroup",
            ))
        }
    };
    let num = |n: Option<i64>, what: &str| -> Result<String, PlanError> {
        match n {
            None => Ok("*".into()),
            Some(n) if n < 0 => Ok("*".into()),
            Some(n) if n <= u32::MAX as i64 => Ok(n.to_string()),
            Some(_) => Err(PlanError::invalid(
                &format!("{f}.{what}"),
                "is out of range",
            )),
        }
    };
    let access = d.access().clone().unwrap_or_else(|| "rwm".into());
    let access = if access.is_empty() {
        "rwm".to_string()
    } else {
        access
    };
    if !access.bytes().all(|b| matches!(b, b'r' | b'w' | b'm')) {
        return Err(PlanError::invalid(
            &format!("{f}.access"),
            format!("{access:?} is not a subset of \"rwm\""),
        ));
    }
    let rule = if typ == "a" && d.major().is_none() && d.minor().is_none() {
        // The kernel's own shorthand; "a *:* rwm" means the same.
        "a".to_string()
    } else {
        format!(
            "{typ} {}:{} {access}",
            num(d.major(), "major")?,
            num(d.minor(), "minor")?
        )
    };
    Ok(DeviceRule {
        allow: d.allow(),
        rule,
    })
}

/// runc's default device allow list, appended after the spec's rules so the container's own
/// `/dev` (null, zero, full, tty, random, urandom, ptys) works under a deny-all rule.
const DEFAULT_ALLOWED: &[&str] = &[
    "c *:* m",
    "b *:* m",
    "c 1:3 rwm",
    "c 1:8 rwm",
    "c 1:7 rwm",
    "c 5:0 rwm",
    "c 1:5 rwm",
    "c 1:9 rwm",
    "c 5:1 rwm",
    "c 136:* rwm",
    "c 5:2 rwm",
];

/// The spec's device rules in order, then runc's defaults and an allow rule per spec device.
pub(crate) fn device_rules(
    resources: Option<&LinuxResources>,
    extra_allow: &[String],
) -> Result<Vec<DeviceRule>, PlanError> {
    let mut out = Vec::new();
    if let Some(list) = resources.and_then(|r| r.devices().as_ref()) {
        for (i, d) in list.iter().enumerate() {
            out.push(device_rule(i, d)?);
        }
    }
    if out.is_empty() && extra_allow.is_empty() {
        return Ok(out);
    }
    for r in DEFAULT_ALLOWED
        .iter()
        .map(|s| s.to_string())
        .chain(extra_allow.iter().cloned())
    {
        out.push(DeviceRule {
            allow: true,
            rule: r,
        });
    }
    Ok(out)
}

/// `linux.cgroupsPath` as a path relative to the hierarchy root (what `lxc.cgroup.dir.*` take).
/// Accepts the cgroupfs form (`/kubepods/burstable/pod1/ctr`) and the systemd form
/// (`slice:prefix:name`), which is expanded as runc's systemd driver names it
/// (`kubepods.slice/kubepods-burstable.slice/.../prefix-name.scope`).
pub(crate) fn cgroups_path(raw: &std::path::Path) -> Result<String, PlanError> {
    const FIELD: &str = "linux.cgroupsPath";
    let s = raw
        .to_str()
        .ok_or_else(|| PlanError::invalid(FIELD, "is not valid UTF-8"))?;
    let s = text::value(FIELD, s)?;
    let parts: Vec<&str> = s.split(':').collect();
    let path = if !s.starts_with('/') && parts.len() == 3 {
        let (slice, prefix, name) = (parts[0], parts[1], parts[2]);
        let mut out = Vec::new();
        if !slice.is_empty() && slice != "-.slice" {
            let base = slice.strip_suffix(".slice").ok_or_else(|| {
                PlanError::invalid(FIELD, format!("{slice:?} is not a systemd slice name"))
            })?;
            let mut acc = String::new();
            for piece in base.split('-') {
                if piece.is_empty() {
                    return Err(PlanError::invalid(
                        FIELD,
                        format!("{slice:?} is not a systemd slice name"),
                    ));
                }
                if !acc.is_empty() {
                    acc.push('-');
                }
                acc.push_str(piece);
                out.push(format!("{acc}.slice"));
            }
        }
        let unit = if name.ends_with(".slice") {
            name.to_string()
        } else if prefix.is_empty() {
            format!("{name}.scope")
        } else {
            format!("{prefix}-{name}.scope")
        };
        out.push(unit);
        out.join("/")
    } else {
        s.clone()
    };
    let mut clean = Vec::new();
    for comp in path.split('/') {
        match comp {
            "" | "." => {}
            ".." => return Err(PlanError::invalid(FIELD, "must not contain \"..\"")),
            c => clean.push(text::key_part(FIELD, c).map_err(|_| {
                PlanError::invalid(FIELD, format!("component {c:?} is not a plain name"))
            })?),
        }
    }
    if clean.is_empty() {
        return Err(PlanError::invalid(FIELD, "names the root cgroup"));
    }
    Ok(clean.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systemd_paths_expand_like_runc() {
        assert_eq!(
            cgroups_path("kubepods-burstable-pod1.slice:cri-containerd:abc".as_ref()).unwrap(),
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/cri-containerd-abc.scope"
        );
        assert_eq!(
            cgroups_path("/kubepods/pod1/abc".as_ref()).unwrap(),
            "kubepods/pod1/abc"
        );
        assert!(cgroups_path("/a/../b".as_ref()).is_err());
        assert!(cgroups_path("/".as_ref()).is_err());
    }

    fn resources(v: serde_json::Value) -> LinuxResources {
        serde_json::from_value(v).unwrap()
    }

    fn files(r: &LinuxResources, mode: CgroupMode) -> Vec<String> {
        cgroup_settings(r, mode)
            .unwrap()
            .into_iter()
            .map(|(k, v)| format!("{k} = {v}"))
            .collect()
    }

    #[test]
    fn memory_lines_per_hierarchy() {
        let r = resources(serde_json::json!({"memory": {
            "limit": 1048576, "reservation": -1, "swap": 3145728, "swappiness": 10,
            "disableOOMKiller": false, "useHierarchy": true}}));
        assert_eq!(
            files(&r, CgroupMode::Legacy),
            [
                "memory.limit_in_bytes = 1048576",
                "memory.soft_limit_in_bytes = -1",
                "memory.memsw.limit_in_bytes = 3145728",
                "memory.swappiness = 10",
                "memory.oom_control = 0",
                "memory.use_hierarchy = 1",
            ]
        );
        let e = cgroup_settings(&r, CgroupMode::Unified).unwrap_err();
        assert_eq!(e.field(), "linux.resources.memory.swappiness");
        let r = resources(serde_json::json!({"memory": {"limit": 1048576, "swap": 3145728}}));
        assert_eq!(
            files(&r, CgroupMode::Unified),
            ["memory.max = 1048576", "memory.swap.max = 2097152"]
        );
        let r = resources(serde_json::json!({"memory": {"limit": 2, "swap": 1}}));
        assert!(cgroup_settings(&r, CgroupMode::Unified).is_err());
    }

    #[test]
    fn cpu_pids_and_io_lines_per_hierarchy() {
        let r = resources(serde_json::json!({
            "cpu": {"shares": 1024, "quota": 50000, "period": 100000, "cpus": "0-1"},
            "pids": {"limit": -1},
            "blockIO": {"weight": 500,
                        "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1000}]}}));
        assert_eq!(
            files(&r, CgroupMode::Legacy),
            [
                "cpu.shares = 1024",
                "cpu.cfs_period_us = 100000",
                "cpu.cfs_quota_us = 50000",
                "cpuset.cpus = 0-1",
                "pids.max = max",
                "blkio.weight = 500",
                "blkio.throttle.read_bps_device = 8:0 1000",
            ]
        );
        assert_eq!(
            files(&r, CgroupMode::Unified),
            [
                "cpu.weight = 39",
                "cpu.max = 50000 100000",
                "cpuset.cpus = 0-1",
                "pids.max = max",
                "io.weight = default 4950",
                "io.max = 8:0 rbps=1000",
            ]
        );
        let rt = resources(serde_json::json!({"cpu": {"realtimePeriod": 1000}}));
        assert_eq!(files(&rt, CgroupMode::Legacy), ["cpu.rt_period_us = 1000"]);
        assert!(cgroup_settings(&rt, CgroupMode::Unified).is_err());
    }

    #[test]
    fn section_refuses_v1_limits_under_lxc6_and_lists_ignored_memory_fields() {
        let linux: Linux = serde_json::from_value(serde_json::json!({
            "cgroupsPath": "/k/pod/c",
            "resources": {"memory": {"limit": 1048576, "kernel": 1, "useHierarchy": true}}}))
        .unwrap();
        let facts = |cgroup, major| NodeFacts {
            cgroup,
            lxc_version: (major, 0, 0),
            mount_setattr: crate::MountSetattr::ALL,
        };
        let mut ignored = Vec::new();
        let plan = section(&linux, &facts(CgroupMode::Unified, 6), &[], &mut ignored).unwrap();
        assert_eq!(plan.dir.as_deref(), Some("k/pod/c"));
        assert!(plan.device_rules.is_empty());
        let fields: Vec<&str> = ignored.iter().map(|i| i.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "linux.resources.memory.kernel",
                "linux.resources.memory.useHierarchy"
            ]
        );
        let e = section(&linux, &facts(CgroupMode::Legacy, 6), &[], &mut Vec::new());
        assert_eq!(e.err().map(|e| e.field().to_string()).as_deref(), Some(F));
    }

    #[test]
    fn weight_conversion_matches_runc() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(blkio_weight_to_io(10), 1);
        assert_eq!(blkio_weight_to_io(1000), 10_000);
    }
}
