#![doc = include_str!("../../../docs/lxc-config.md")]

mod cgroup;
mod mounts;
mod process;
mod render;
mod seccomp;
mod text;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{Hooks, LinuxNamespaceType, Process, Spec};

pub use cgroup::{cgroup_settings, shares_to_weight, DeviceRule};
pub use ctinit_proto::InitSpec;
pub use mounts::{supported_options as supported_mount_options, MountEntry};
pub use render::PveRender;

/// Which cgroup hierarchy holds the controllers on this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CgroupMode {
    /// cgroup v1 or hybrid: resources are written as `lxc.cgroup.*` (v1 file names).
    Legacy,
    /// cgroup v2 only: `lxc.cgroup2.*`.
    Unified,
}

/// Facts about the node that shape the config.
#[derive(Clone, Debug)]
pub struct NodeFacts {
    pub cgroup: CgroupMode,
    pub lxc_version: (u32, u32, u32),
}

/// Everything [`plan`] needs.
pub struct PlanRequest<'a> {
    /// LXC container name (`[A-Za-z0-9_.-]+`).
    pub name: &'a str,
    pub spec: &'a Spec,
    /// The bundle directory; a relative `root.path` or bind source is relative to it.
    pub bundle: &'a Path,
    /// Host directory with the helper, its specs and sockets; bind-mounted read-only at
    /// [`ctinit_proto::CONTAINER_DIR`].
    pub state_dir: &'a Path,
    pub facts: &'a NodeFacts,
}

/// A spec field that was deliberately not applied, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ignored {
    pub field: String,
    pub reason: String,
}

impl Ignored {
    pub fn new(field: &str, reason: &str) -> Ignored {
        Ignored {
            field: field.to_string(),
            reason: reason.to_string(),
        }
    }
}

/// Why a spec cannot be turned into a container. The message starts with the OCI field
/// (`linux.resources.memory.limit: ...`).
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum PlanError {
    /// The field's value is malformed or would not stay inside its config line.
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    /// The field is well-formed but this runtime cannot honour it.
    #[error("{field}: not supported: {reason}")]
    Unsupported { field: String, reason: String },
    /// A value the caller (not the spec) passed in is unusable.
    #[error("{what}: {reason}")]
    Request { what: String, reason: String },
}

impl PlanError {
    pub(crate) fn invalid(field: &str, reason: impl Into<String>) -> PlanError {
        PlanError::Invalid {
            field: field.to_string(),
            reason: reason.into(),
        }
    }
    pub(crate) fn unsupported(field: &str, reason: impl Into<String>) -> PlanError {
        PlanError::Unsupported {
            field: field.to_string(),
            reason: reason.into(),
        }
    }
    fn request(what: &str, reason: impl Into<String>) -> PlanError {
        PlanError::Request {
            what: what.to_string(),
            reason: reason.into(),
        }
    }

    /// The OCI field (or request parameter) the error is about.
    pub fn field(&self) -> &str {
        match self {
            PlanError::Invalid { field, .. } | PlanError::Unsupported { field, .. } => field,
            PlanError::Request { what, .. } => what,
        }
    }
}

/// A device node from `linux.devices`. LXC has no key to create a node, so the shim creates
/// it (mknod, then chown/chmod) at `host_path` inside the state directory before the start, and
/// the config bind-mounts it at `path`. The state directory's filesystem must allow device
/// nodes (no `nodev`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceNode {
    /// Path inside the container.
    pub path: String,
    /// Where the shim creates the node on the host.
    pub host_path: PathBuf,
    /// `'c'`, `'b'` or `'p'` (fifo).
    pub kind: char,
    pub major: u32,
    pub minor: u32,
    pub file_mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// Proxmox-native values derived from the spec (shown in the Proxmox GUI; see the crate docs
/// for how they relate to the cgroup lines that really apply).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PveNative {
    /// `memory:` in MiB (limit rounded up, at least 16).
    pub memory_mib: Option<u64>,
    /// `swap:` in MiB (OCI memory+swap minus memory).
    pub swap_mib: Option<u64>,
    /// `cpulimit:` (quota / period).
    pub cpulimit: Option<f64>,
    /// `cpuunits:` (the v2 weight of the spec's shares).
    pub cpuunits: Option<u64>,
    /// `hostname:` when the spec's hostname is a valid Proxmox `dns-name`.
    pub hostname: Option<String>,
    /// `unprivileged: 1` when the spec asks for a user namespace.
    pub unprivileged: bool,
}

/// The container, ready to render. A caller may add tags and description lines before
/// rendering (both are re-encoded by the renderer); the other fields were checked by [`plan`]
/// and are public for reading (cgroup path, mounts, devices), not for changing.
#[derive(Clone, Debug)]
pub struct ContainerPlan {
    /// What the helper applies to become the workload (stdio flags are the shim's to set).
    pub init: InitSpec,
    /// The spec's hooks; the runtime runs them, they are not rendered.
    pub hooks: Option<Hooks>,
    /// Spec fields that were present and deliberately not applied.
    pub ignored: Vec<Ignored>,
    /// LXC container name.
    pub name: String,
    /// Absolute host path of the root filesystem.
    pub rootfs: PathBuf,
    pub rootfs_readonly: bool,
    /// `linux.rootfsPropagation`, applied through `lxc.rootfs.options`.
    pub rootfs_propagation: Option<String>,
    pub cgroup_mode: CgroupMode,
    /// The node's LXC version (LXC 6 dropped the `lxc.cgroup.*` v1 keys).
    pub lxc_version: (u32, u32, u32),
    /// The container's cgroup, relative to each hierarchy's root (`lxc.cgroup.dir.container`);
    /// `None`: LXC's default (`lxc.payload.<name>`).
    pub cgroup_dir: Option<String>,
    /// The cgroup files and values (see [`cgroup_settings`]).
    pub cgroup: Vec<(String, String)>,
    /// devices cgroup rules, in order.
    pub device_rules: Vec<DeviceRule>,
    /// Device nodes the shim must create before the start.
    pub devices: Vec<DeviceNode>,
    /// The LXC seccomp policy; the shim writes it to [`ContainerPlan::seccomp_path`].
    pub seccomp_profile: Option<String>,
    pub seccomp_path: PathBuf,
    /// Mount entries in the order LXC mounts them (spec mounts, the helper's directory, masked
    /// and read-only paths, device nodes).
    pub mounts: Vec<MountEntry>,
    /// Proxmox tags (already valid `pve-tag-list` elements) and description text.
    pub tags: Vec<String>,
    pub description: String,
    pub pve: PveNative,
    /// Raw LXC lines other than rootfs, mounts and cgroups, in order.
    pub(crate) entries: Vec<(String, String)>,
}

/// File name of the seccomp policy inside the state directory.
pub const SECCOMP_NAME: &str = "seccomp.conf";
/// Directory (inside the state directory) holding device nodes for `linux.devices`.
pub const DEVICES_DIR: &str = "devices";

/// The `lxc.hook.mount` command that makes the root filesystem read-only (see `root.readonly`).
pub const READONLY_ROOT_HOOK: &str = "/bin/mount -o remount,bind,ro \"${LXC_ROOTFS_MOUNT}\" #";

/// Tag prefix for the Kubernetes tags (matches the shim's default `tag_prefix`).
pub const DEFAULT_TAG_PREFIX: &str = "k8s";

/// The helper's process spec for an OCI process (the container's or an exec's).
pub fn init_spec_for(process: &Process) -> Result<InitSpec, PlanError> {
    process::init_spec(process, &mut Vec::new())
}

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

fn spec_field_name(t: LinuxNamespaceType) -> &'static str {
    match t {
        LinuxNamespaceType::Mount => "mount",
        LinuxNamespaceType::Network => "network",
        other => ns_name(other),
    }
}

/// How one namespace is set up.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Ns {
    New,
    Join(String),
    Host,
}

/// Turns a spec into a container plan. Reads, never writes: the metadata of bind-mount sources
/// (to tell LXC whether to create a directory or a file at a missing target) and the symlinks
/// on the way to each mount target in the root filesystem (resolved inside it, as runc does).
pub fn plan(req: &PlanRequest<'_>) -> Result<ContainerPlan, PlanError> {
    let spec = req.spec;
    let mut ignored = Vec::new();
    let mut entries: Vec<(String, String)> = Vec::new();
    let mut push = |k: &str, v: String| entries.push((k.to_string(), v));

    let name = text::key_part("name", req.name)
        .map_err(|_| PlanError::request("name", format!("{:?} is not a plain name", req.name)))?;
    let state_dir = text::abs_path("state_dir", req.state_dir)
        .map_err(|e| PlanError::request("state_dir", e.to_string()))?;
    text::fstab_field("state_dir", &state_dir)
        .map_err(|e| PlanError::request("state_dir", e.to_string()))?;

    // Fields outside process and linux.
    if spec.solaris().is_some() {
        return Err(PlanError::unsupported("solaris", "this is a Linux runtime"));
    }
    if spec.windows().is_some() {
        return Err(PlanError::unsupported("windows", "this is a Linux runtime"));
    }
    if spec.vm().is_some() {
        return Err(PlanError::unsupported("vm", "this is a container runtime"));
    }
    if spec.zos().is_some() {
        return Err(PlanError::unsupported("zos", "this is a Linux runtime"));
    }
    if spec.uid_mappings().is_some() || spec.gid_mappings().is_some() {
        return Err(PlanError::unsupported(
            "uidMappings",
            "top-level mappings are not part of runtime-spec 1.2; use linux.uidMappings",
        ));
    }
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| PlanError::invalid("process", "is required to start a container"))?;
    let init = process::init_spec(process, &mut ignored)?;
    let linux = spec.linux().clone().unwrap_or_default();

    // Root filesystem.
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| PlanError::invalid("root", "is required"))?;
    let rootfs = if root.path().is_absolute() {
        root.path().clone()
    } else {
        req.bundle.join(root.path())
    };
    let rootfs_s = text::abs_path("root.path", &rootfs)?;
    if rootfs_s.contains([',', '=', '"', ';']) {
        return Err(PlanError::invalid(
            "root.path",
            "must not contain ',', '=', ';' or '\"' (Proxmox property strings)",
        ));
    }
    let rootfs_readonly = root.readonly().unwrap_or(false);

    // Namespaces.
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
    let how = |k: &str| ns.get(k).cloned().unwrap_or(Ns::Host);
    match how("mnt") {
        Ns::New => {}
        Ns::Join(_) => {
            return Err(PlanError::unsupported(
                "linux.namespaces",
                "joining a mount namespace by path is not supported: LXC builds the container's mounts in a new one",
            ))
        }
        Ns::Host => {
            return Err(PlanError::unsupported(
                "linux.namespaces",
                "a container without its own mount namespace is not supported",
            ))
        }
    }

    // Console and devpts: the workload's stdio comes from the helper, not from LXC.
    push("lxc.autodev", "1".into());
    push("lxc.console.path", "none".into());
    push("lxc.tty.max", "0".into());
    push("lxc.pty.max", "1024".into());
    let ctdir = ctinit_proto::CONTAINER_DIR;
    push(
        "lxc.init.cmd",
        format!(
            "{ctdir}/{} {ctdir}/{} {ctdir}/{}",
            ctinit_proto::HELPER_NAME,
            ctinit_proto::INIT_SOCKET_NAME,
            ctinit_proto::INIT_SPEC_NAME
        ),
    );

    if root.readonly().unwrap_or(false) {
        // runc makes the root read-only after every mount, so missing mount targets can still be
        // created on it. LXC has no key for that; a mount hook (run on the host in the
        // container's mount namespace after all mount entries, before pivot_root) remounts the
        // root's own mount read-only, leaving the mounts under it as they are. The trailing `#`
        // turns the arguments LXC appends into a comment.
        push("lxc.hook.mount", READONLY_ROOT_HOOK.to_string());
    }

    // Namespaces: clone exactly the new ones; the rest are inherited (LXC refuses
    // lxc.namespace.clone together with lxc.namespace.keep, and keep alone would clone a user
    // and time namespace the spec did not ask for).
    let order = ["mnt", "pid", "uts", "ipc", "net", "cgroup", "user", "time"];
    let clone: Vec<&str> = order
        .iter()
        .copied()
        .filter(|k| how(k) == Ns::New)
        .collect();
    push("lxc.namespace.clone", clone.join(" "));
    for k in order {
        if let Ns::Join(p) = how(k) {
            push(&format!("lxc.namespace.share.{k}"), p);
        }
    }
    if how("uts") == Ns::New {
        if let Some(h) = spec.hostname() {
            if !h.is_empty() {
                push("lxc.uts.name", text::value("hostname", h)?);
            }
        }
    } else if spec.hostname().as_ref().is_some_and(|h| !h.is_empty()) {
        if let Ns::Join(_) = how("uts") {
            // Kubernetes app containers join the sandbox's UTS namespace, which has the pod's
            // hostname already; runc would set the same name again.
            ignored.push(Ignored::new(
                "hostname",
                "the container joins an existing UTS namespace, whose hostname stays",
            ));
        } else {
            return Err(PlanError::invalid(
                "hostname",
                "needs a new UTS namespace (linux.namespaces)",
            ));
        }
    }
    if spec.domainname().as_ref().is_some_and(|d| !d.is_empty()) {
        return Err(PlanError::unsupported(
            "domainname",
            "LXC 5 has no key for the NIS domain name",
        ));
    }

    // Network.
    let net_devices = linux.net_devices().clone().unwrap_or_default();
    if how("net") == Ns::New {
        push("lxc.net.0.type", "empty".into());
        let mut names: Vec<&String> = net_devices.keys().collect();
        names.sort();
        for (i, host_name) in names.into_iter().enumerate() {
            let f = format!("linux.netDevices.{host_name}");
            let link = text::key_part(&f, host_name)?;
            let idx = i + 1;
            push(&format!("lxc.net.{idx}.type"), "phys".into());
            push(&format!("lxc.net.{idx}.link"), link.clone());
            let inner = net_devices[host_name].name().clone().unwrap_or(link);
            push(
                &format!("lxc.net.{idx}.name"),
                text::key_part(&format!("{f}.name"), &inner)?,
            );
            push(&format!("lxc.net.{idx}.flags"), "up".into());
        }
    } else if !net_devices.is_empty() {
        return Err(PlanError::invalid(
            "linux.netDevices",
            "needs a new network namespace",
        ));
    }

    // User namespace and id mappings.
    let uid_maps = linux.uid_mappings().clone().unwrap_or_default();
    let gid_maps = linux.gid_mappings().clone().unwrap_or_default();
    match how("user") {
        Ns::New => {
            if uid_maps.is_empty() || gid_maps.is_empty() {
                return Err(PlanError::invalid(
                    "linux.uidMappings",
                    "a new user namespace needs uid and gid mappings",
                ));
            }
        }
        _ => {
            if !uid_maps.is_empty() || !gid_maps.is_empty() {
                return Err(PlanError::invalid(
                    "linux.uidMappings",
                    "mappings need a new user namespace",
                ));
            }
        }
    }
    for m in &uid_maps {
        push(
            "lxc.idmap",
            format!("u {} {} {}", m.container_id(), m.host_id(), m.size()),
        );
    }
    for m in &gid_maps {
        push(
            "lxc.idmap",
            format!("g {} {} {}", m.container_id(), m.host_id(), m.size()),
        );
    }

    // Time namespace.
    if let Some(offsets) = linux.time_offsets() {
        if !offsets.is_empty() {
            if how("time") != Ns::New {
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
                push(&format!("lxc.time.offset.{key}"), value);
            }
        }
    }

    // Security: LSMs, capabilities, seccomp.
    match process.apparmor_profile() {
        Some(p) if !p.is_empty() => push(
            "lxc.apparmor.profile",
            text::value("process.apparmorProfile", p)?,
        ),
        _ => push("lxc.apparmor.profile", "unconfined".into()),
    }
    if let Some(l) = process.selinux_label() {
        if !l.is_empty() {
            push(
                "lxc.selinux.context",
                text::value("process.selinuxLabel", l)?,
            );
        }
    }
    if let Some(l) = linux.mount_label() {
        if !l.is_empty() {
            ignored.push(Ignored::new(
                "linux.mountLabel",
                "LXC has no key for the SELinux label of mounts; Debian and Proxmox hosts run without SELinux",
            ));
        }
    }
    if let Some(caps) = process.capabilities() {
        // The helper runs as root under this bounding set before it becomes the workload: it
        // needs setuid/setgid to switch user and setpcap to narrow the bounding set to the
        // spec's own (and sys_resource for rlimits/oom_score_adj).
        let mut keep: Vec<String> = process::cap_names(caps.bounding())
            .iter()
            .map(|c| c.trim_start_matches("CAP_").to_ascii_lowercase())
            .collect();
        let mut helper_needs = vec!["setuid", "setgid", "setpcap"];
        if !init.rlimits.is_empty() || init.oom_score_adj.is_some() {
            helper_needs.push("sys_resource");
        }
        for n in helper_needs {
            if !keep.iter().any(|k| k == n) {
                keep.push(n.to_string());
            }
        }
        keep.sort();
        push("lxc.cap.keep", keep.join(" "));
    }
    let seccomp_path = PathBuf::from(&state_dir).join(SECCOMP_NAME);
    let seccomp_profile = match linux.seccomp() {
        Some(s) => {
            let profile = seccomp::profile(s, &mut ignored)?;
            push(
                "lxc.seccomp.profile",
                seccomp_path.to_string_lossy().into_owned(),
            );
            Some(profile)
        }
        None => None,
    };

    // sysctls, only those that belong to a namespace the container owns (as runc checks).
    let mut sysctl_files: Vec<String> = Vec::new();
    if let Some(sysctl) = linux.sysctl() {
        let mut keys: Vec<&String> = sysctl.keys().collect();
        keys.sort();
        for k in keys {
            let f = format!("linux.sysctl.{k}");
            let key = text::key_part(&f, &k.replace('/', "."))?;
            let owned = |n: &str| how(n) != Ns::Host;
            let ok = if key.starts_with("net.") {
                owned("net")
            } else if key.starts_with("fs.mqueue.")
                || [
                    "kernel.msgmax",
                    "kernel.msgmnb",
                    "kernel.msgmni",
                    "kernel.sem",
                    "kernel.shmall",
                    "kernel.shmmax",
                    "kernel.shmmni",
                    "kernel.shm_rmid_forced",
                ]
                .contains(&key.as_str())
            {
                owned("ipc")
            } else if key == "kernel.hostname" || key == "kernel.domainname" {
                owned("uts")
            } else {
                return Err(PlanError::unsupported(&f, "not a namespaced sysctl"));
            };
            if !ok {
                return Err(PlanError::invalid(
                    &f,
                    "the container shares this sysctl's namespace with the host",
                ));
            }
            push(&format!("lxc.sysctl.{key}"), text::value(&f, &sysctl[k])?);
            sysctl_files.push(format!("/proc/sys/{}", key.replace('.', "/")));
        }
    }

    // Personality.
    if let Some(p) = linux.personality() {
        if p.flags().as_ref().is_some_and(|f| !f.is_empty()) {
            return Err(PlanError::unsupported(
                "linux.personality.flags",
                "LXC sets only the execution domain",
            ));
        }
        if p.domain() == oci_spec::runtime::LinuxPersonalityDomain::PerLinux32 {
            push("lxc.arch", "linux32".into());
        }
    }
    if linux.intel_rdt().is_some() {
        return Err(PlanError::unsupported(
            "linux.intelRdt",
            "LXC has no resctrl support",
        ));
    }
    if linux.memory_policy().is_some() {
        return Err(PlanError::unsupported(
            "linux.memoryPolicy",
            "LXC has no key for a NUMA memory policy",
        ));
    }

    // Mounts.
    let spec_mounts = spec.mounts().clone().unwrap_or_default();
    let rootfs_path = PathBuf::from(&rootfs_s);
    let converted = mounts::convert(&spec_mounts, req.bundle, &rootfs_path, &mut ignored)?;
    // Paths below these are not resolved against the image (see mounts::resolve_in_rootfs).
    let mut fresh: Vec<String> = vec!["/dev".to_string()];
    fresh.extend(converted.entries.iter().map(|m| m.destination.clone()));
    if !converted.auto.is_empty() {
        fresh.push("/sys/fs/cgroup".to_string());
    }
    let mut all_mounts = converted.entries;
    all_mounts.push(MountEntry {
        source: state_dir.clone(),
        destination: ctdir.to_string(),
        fstype: "none".into(),
        options: vec!["bind".into(), "ro".into(), "nosuid".into(), "nodev".into()],
        create_dir: Some(true),
        optional: false,
    });
    all_mounts.extend(mounts::masked(
        linux.masked_paths().as_deref().unwrap_or_default(),
        &rootfs_path,
        &fresh,
    )?);
    let readonly_paths = linux.readonly_paths().clone().unwrap_or_default();
    // LXC writes sysctls after all mounts, so a read-only /proc/sys would refuse them. Each
    // file the spec sets gets its own bind mount first; the recursive read-only bind of
    // /proc/sys carries it along and the read-only remount leaves it writable.
    for file in &sysctl_files {
        let covered = readonly_paths
            .iter()
            .any(|p| file == p || file.starts_with(&format!("{}/", p.trim_end_matches('/'))));
        if covered {
            all_mounts.push(
                MountEntry {
                    source: file.trim_start_matches('/').to_string(),
                    destination: file.clone(),
                    fstype: "none".into(),
                    options: vec!["bind".into(), "relative".into()],
                    create_dir: None,
                    optional: false,
                }
                .checked("linux.sysctl")?,
            );
        }
    }
    all_mounts.extend(mounts::readonly(&readonly_paths, &rootfs_path, &fresh)?);
    if !converted.auto.is_empty() {
        push("lxc.mount.auto", converted.auto.join(" "));
    }
    if let Some(bytes) = converted.dev_tmpfs_size {
        push("lxc.autodev.tmpfs.size", bytes.to_string());
    }

    // Device nodes.
    let mut devices = Vec::new();
    let mut extra_allow = Vec::new();
    for (i, d) in linux.devices().iter().flatten().enumerate() {
        let f = format!("linux.devices[{i}]");
        let path = text::abs_path(&format!("{f}.path"), d.path())?;
        let path = mounts::resolve_in_rootfs(&format!("{f}.path"), &rootfs_path, &path, &fresh)?;
        text::fstab_field(&format!("{f}.path"), &path)?;
        let kind = match d.typ() {
            oci_spec::runtime::LinuxDeviceType::C | oci_spec::runtime::LinuxDeviceType::U => 'c',
            oci_spec::runtime::LinuxDeviceType::B => 'b',
            oci_spec::runtime::LinuxDeviceType::P => 'p',
            oci_spec::runtime::LinuxDeviceType::A => {
                return Err(PlanError::invalid(
                    &format!("{f}.type"),
                    "must be c, b, u or p",
                ))
            }
        };
        let num = |n: i64, w: &str| {
            u32::try_from(n)
                .map_err(|_| PlanError::invalid(&format!("{f}.{w}"), "is negative or out of range"))
        };
        let (major, minor) = (num(d.major(), "major")?, num(d.minor(), "minor")?);
        if kind != 'p' {
            extra_allow.push(format!("{kind} {major}:{minor} rwm"));
        }
        // LXC makes /dev/ptmx and /dev/pts itself (a new devpts instance) and must be able to
        // replace /dev/ptmx, which a bind mount would pin: privileged specs list the host's
        // (`ctr run --privileged`). Access stays allowed by the rule above.
        if path == "/dev/ptmx" || path.starts_with("/dev/pts/") {
            continue;
        }
        let host_path = PathBuf::from(&state_dir)
            .join(DEVICES_DIR)
            .join(format!("dev{i}"));
        all_mounts.push(
            MountEntry {
                source: host_path.to_string_lossy().into_owned(),
                destination: path.clone(),
                fstype: "none".into(),
                options: vec!["bind".into()],
                create_dir: Some(false),
                optional: false,
            }
            .checked(&f)?,
        );
        devices.push(DeviceNode {
            path,
            host_path,
            kind,
            major,
            minor,
            file_mode: d.file_mode().unwrap_or(0o666),
            uid: d.uid().unwrap_or(0),
            gid: d.gid().unwrap_or(0),
        });
    }

    // Cgroups.
    let cgroup_dir = match linux.cgroups_path() {
        Some(p) => Some(cgroup::cgroups_path(p)?),
        None => None,
    };
    let resources = linux.resources().clone();
    let cgroup_lines = match &resources {
        Some(r) => cgroup::cgroup_settings(r, req.facts.cgroup)?,
        None => Vec::new(),
    };
    if let Some(m) = resources.as_ref().and_then(|r| r.memory().as_ref()) {
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
        if req.facts.cgroup == CgroupMode::Unified && m.use_hierarchy().is_some() {
            ignored.push(Ignored::new(
                "linux.resources.memory.useHierarchy",
                "cgroup v2 is always hierarchical",
            ));
        }
    }
    let device_rules = cgroup::device_rules(resources.as_ref(), &extra_allow)?;
    if req.facts.cgroup == CgroupMode::Legacy
        && req.facts.lxc_version.0 >= 6
        && (!cgroup_lines.is_empty() || !device_rules.is_empty())
    {
        return Err(PlanError::unsupported(
            "linux.resources",
            "LXC 6 and later cannot apply cgroup v1 limits (this node runs cgroup v1)",
        ));
    }

    // Rootfs propagation.
    let rootfs_propagation = match linux.rootfs_propagation() {
        Some(p) if !p.is_empty() => {
            let allowed = [
                "private",
                "rprivate",
                "shared",
                "rshared",
                "slave",
                "rslave",
                "unbindable",
                "runbindable",
            ];
            if !allowed.contains(&p.as_str()) {
                return Err(PlanError::invalid(
                    "linux.rootfsPropagation",
                    format!("{p:?} is not a propagation mode"),
                ));
            }
            Some(p.clone())
        }
        _ => None,
    };

    // Proxmox-native values.
    let mut pve = PveNative {
        unprivileged: how("user") == Ns::New,
        hostname: spec
            .hostname()
            .as_ref()
            .filter(|h| how("uts") == Ns::New && text::is_dns_name(h))
            .cloned(),
        ..Default::default()
    };
    if let Some(r) = &resources {
        const MIB: i64 = 1024 * 1024;
        if let Some(m) = r.memory() {
            if let Some(l) = m.limit().filter(|l| *l > 0) {
                pve.memory_mib = Some(((l + MIB - 1) / MIB).max(16) as u64);
                if let Some(s) = m.swap().filter(|s| *s >= l) {
                    pve.swap_mib = Some(((s - l) / MIB) as u64);
                }
            }
        }
        if let Some(c) = r.cpu() {
            if let (Some(q), Some(p)) = (c.quota(), c.period()) {
                if q > 0 && p > 0 {
                    pve.cpulimit = Some((q as f64 / p as f64).min(8192.0));
                }
            }
            if let Some(s) = c.shares().filter(|s| *s > 0) {
                pve.cpuunits = Some(shares_to_weight(s));
            }
        }
    }

    // Kubernetes names -> tags and description.
    let (tags, description) = kube_metadata(spec.annotations().as_ref(), &name);

    Ok(ContainerPlan {
        init,
        hooks: spec.hooks().clone(),
        ignored,
        name,
        rootfs: PathBuf::from(rootfs_s),
        rootfs_readonly,
        rootfs_propagation,
        cgroup_mode: req.facts.cgroup,
        lxc_version: req.facts.lxc_version,
        cgroup_dir,
        cgroup: cgroup_lines,
        device_rules,
        devices,
        seccomp_profile,
        seccomp_path,
        mounts: all_mounts,
        tags,
        description,
        pve,
        entries,
    })
}

/// Kubernetes annotations (CRI and the older `io.kubernetes.pod.*` names) -> tags, description.
fn kube_metadata(
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

impl ContainerPlan {
    /// Writes what the config refers to in the state directory, before the start: the seccomp
    /// policy at [`ContainerPlan::seccomp_path`] and the device nodes of
    /// [`ContainerPlan::devices`] (mknod, chmod, chown; an existing node is replaced). This is
    /// the crate's only write to the filesystem; it needs root for the device nodes.
    pub fn write_state_files(&self) -> std::io::Result<()> {
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::fs::PermissionsExt;
        if let Some(profile) = &self.seccomp_profile {
            std::fs::write(&self.seccomp_path, profile)?;
            std::fs::set_permissions(&self.seccomp_path, std::fs::Permissions::from_mode(0o644))?;
        }
        for d in &self.devices {
            if let Some(dir) = d.host_path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            match std::fs::remove_file(&d.host_path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            let kind = match d.kind {
                'b' => libc::S_IFBLK,
                'p' => libc::S_IFIFO,
                _ => libc::S_IFCHR,
            };
            let path = std::ffi::CString::new(d.host_path.as_os_str().as_bytes())
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
            let dev = libc::makedev(d.major, d.minor);
            // SAFETY: a valid NUL-terminated path; mknod does not keep the pointer.
            if unsafe { libc::mknod(path.as_ptr(), kind | (d.file_mode & 0o7777), dev) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            std::fs::set_permissions(
                &d.host_path,
                std::fs::Permissions::from_mode(d.file_mode & 0o7777),
            )?;
            std::os::unix::fs::chown(&d.host_path, Some(d.uid), Some(d.gid))?;
        }
        Ok(())
    }

    /// The raw LXC lines other than rootfs, mounts and cgroups, in render order.
    pub fn lxc_entries(&self) -> &[(String, String)] {
        &self.entries
    }
}
