#![doc = include_str!("../../../docs/lxc-config.md")]

// One module per spec section; `plan` calls them in render order.
mod cgroup;
mod devices;
mod mounts;
mod namespaces;
mod process;
mod pve;
mod render;
mod rootfs;
mod seccomp;
mod security;
mod state_files;
mod text;

use std::path::{Path, PathBuf};

use oci_spec::runtime::{Hooks, Process, Spec};

use namespaces::Namespaces;

pub use cgroup::{cgroup_settings, shares_to_weight, DeviceRule};
pub use ctinit_proto::InitSpec;
pub use mounts::{
    supported_options as supported_mount_options, LaterMount, MountEntry, PeerBind, RecursiveAttrs,
};
pub use pve::native_resources as pve_native_resources;
pub use render::{PveOptions, PveRender};

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
    /// What the kernel's mount_setattr(2) can do (recursive mount attributes need it).
    pub mount_setattr: MountSetattr,
}

/// What the running kernel's mount_setattr(2) offers, found out at run time (as runc does
/// not: it lists the recursive attributes whatever the kernel and fails when it applies them).
/// The default is nothing: recursive mount attributes are then refused by name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MountSetattr {
    /// The system call exists (Linux 5.12).
    pub available: bool,
    /// It knows `MOUNT_ATTR_NOSYMFOLLOW` (Linux 5.14): `rnosymfollow`, `rsymfollow`.
    pub nosymfollow: bool,
}

impl MountSetattr {
    /// A kernel with all of it.
    pub const ALL: MountSetattr = MountSetattr {
        available: true,
        nosymfollow: true,
    };
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
    /// `unprivileged: 1` when the container has a user namespace (its own or one it joins).
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
    /// Spec bind mounts that must share mounts with the host both ways (`rshared` rootfs):
    /// the shim re-makes them in the container's mount namespace once LXC is done.
    pub host_peer_binds: Vec<PeerBind>,
    /// Spec bind mounts with recursive attributes (`rro`, `rnosuid`, ...), in the order LXC
    /// mounts them: the shim applies them in the container's mount namespace once LXC is
    /// done, after re-making [`ContainerPlan::host_peer_binds`].
    pub recursive_attrs: Vec<RecursiveAttrs>,
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

/// Name (in the state directory) of the symlink the shim points at the container's OOM kill
/// counter file once its cgroup is known (v2 `memory.events`, v1 `memory.oom_control`).
pub const OOM_COUNTER_LINK_NAME: &str = "oom-counter";
/// Name (in the state directory) of the copy of that file the `lxc.hook.stop` hook takes.
pub const OOM_COUNTER_AT_STOP_NAME: &str = "oom-counter.at-stop";

/// Tag prefix for the Kubernetes tags (matches the shim's default `tag_prefix`).
pub const DEFAULT_TAG_PREFIX: &str = "k8s";

/// The helper's process spec for an OCI process (the container's or an exec's).
pub fn init_spec_for(process: &Process) -> Result<InitSpec, PlanError> {
    process::init_spec(process, &mut Vec::new())
}

/// The raw LXC lines other than rootfs, mounts and cgroups, collected in render order by the
/// section functions.
#[derive(Default)]
pub(crate) struct Lines(Vec<(String, String)>);

impl Lines {
    pub(crate) fn push(&mut self, key: &str, value: String) {
        self.0.push((key.to_string(), value));
    }
}

/// Host paths the sections resolve spec paths against, already checked.
pub(crate) struct Places<'a> {
    /// The bundle directory (base of relative bind sources).
    pub bundle: &'a Path,
    /// The root filesystem, absolute and normalised.
    pub rootfs: &'a Path,
    /// The state directory, absolute and normalised.
    pub state_dir: &'a str,
    /// The node has cgroup v2 alone and the container no cgroup namespace (containerd gives a
    /// privileged CRI container none): LXC's cgroup automount refuses that (cgfsng_mount:
    /// "Force-mounting the unified cgroup hierarchy without cgroup namespace support is
    /// currently not supported"), so a cgroup mount becomes a plain `cgroup2` mount, as runc
    /// mounts it.
    pub plain_cgroup2: bool,
    /// Whether recursive mount attributes can be applied (see [`MountSetattr`]).
    pub mount_setattr: MountSetattr,
}

#[cfg(test)]
impl Places<'static> {
    /// Where the unit tests plan: bundle `/b`, a rootfs that does not exist (no image to
    /// resolve paths in), state directory `/s`, every mount attribute available.
    pub(crate) fn for_tests() -> Self {
        Places {
            bundle: "/b".as_ref(),
            rootfs: "/nonexistent-rootfs".as_ref(),
            state_dir: "/s",
            plain_cgroup2: false,
            mount_setattr: MountSetattr::ALL,
        }
    }
}

/// Turns a spec into a container plan. Reads, never writes: the metadata of bind-mount sources
/// (to tell LXC whether to create a directory or a file at a missing target) and the symlinks
/// on the way to each mount target in the root filesystem (resolved inside it, as runc does).
///
/// Each spec section has its own function (and module); the order of the calls is the order of
/// the rendered lines and of the checks, so the first error a spec meets does not change.
pub fn plan(req: &PlanRequest<'_>) -> Result<ContainerPlan, PlanError> {
    let spec = req.spec;
    let (name, state_dir) = request_names(req)?;
    reject_other_platforms(spec)?;
    let mut ignored = Vec::new();
    let mut lines = Lines::default();
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| PlanError::invalid("process", "is required to start a container"))?;
    let init = process::init_spec(process, &mut ignored)?;
    let linux = spec.linux().clone().unwrap_or_default();
    let root = rootfs::root(spec, req.bundle)?;
    let ns = Namespaces::parse(&linux)?;

    console_and_init_lines(root.readonly, &mut lines);
    oom_counter_at_stop_hook(&state_dir, &mut lines)?;
    ns.clone_and_share(&mut lines);
    namespaces::hostname(spec, &ns, &mut lines, &mut ignored)?;
    namespaces::network(&linux, &ns, &mut lines)?;
    namespaces::id_mappings(&linux, &ns, &mut lines)?;
    namespaces::time_offsets(&linux, &ns, &mut lines)?;
    security::lsm(process, &linux, &mut lines, &mut ignored)?;
    security::capabilities(process, &init, &mut lines);
    let seccomp_path = PathBuf::from(&state_dir).join(SECCOMP_NAME);
    let seccomp_profile = security::seccomp(&linux, &seccomp_path, &mut lines, &mut ignored)?;
    let sysctl_files = namespaces::sysctls(&linux, &ns, &mut lines)?;
    security::personality(&linux, &mut lines)?;
    security::reject_unsupported(&linux)?;

    let places = Places {
        bundle: req.bundle,
        rootfs: &root.path,
        state_dir: &state_dir,
        plain_cgroup2: matches!(req.facts.cgroup, CgroupMode::Unified)
            && ns.how("cgroup") == namespaces::Ns::Host,
        mount_setattr: req.facts.mount_setattr,
    };
    let spec_mounts = spec.mounts().clone().unwrap_or_default();
    let layout = mounts::layout(
        &spec_mounts,
        &linux,
        &places,
        &sysctl_files,
        &mut lines,
        &mut ignored,
    )?;
    let devices = devices::nodes(&linux, &places, &layout.fresh)?;
    let mut all_mounts = layout.entries;
    all_mounts.extend(devices.mounts);
    let rootfs_propagation = rootfs::propagation(&linux)?;
    let mut host_peer_binds =
        mounts::host_peer_binds(&layout.spec_binds, rootfs_propagation.as_deref());
    mounts::find_nested(&mut host_peer_binds, &all_mounts);
    let recursive_attrs = mounts::recursive_attrs(&layout.recursive, &all_mounts);
    let cgroups = cgroup::section(&linux, req.facts, &devices.allow, &mut ignored)?;
    let pve = pve::native(spec, &ns, linux.resources().as_ref());
    let (tags, description) = pve::kube_metadata(spec.annotations().as_ref(), &name);

    Ok(ContainerPlan {
        init,
        hooks: spec.hooks().clone(),
        ignored,
        name,
        rootfs: root.path,
        rootfs_readonly: root.readonly,
        rootfs_propagation,
        cgroup_mode: req.facts.cgroup,
        lxc_version: req.facts.lxc_version,
        cgroup_dir: cgroups.dir,
        cgroup: cgroups.settings,
        device_rules: cgroups.device_rules,
        devices: devices.nodes,
        seccomp_profile,
        seccomp_path,
        mounts: all_mounts,
        host_peer_binds,
        recursive_attrs,
        tags,
        description,
        pve,
        entries: lines.0,
    })
}

/// The caller's container name and state directory, checked (they reach config lines too).
fn request_names(req: &PlanRequest<'_>) -> Result<(String, String), PlanError> {
    let name = text::key_part("name", req.name)
        .map_err(|_| PlanError::request("name", format!("{:?} is not a plain name", req.name)))?;
    let state_dir = text::abs_path("state_dir", req.state_dir)
        .map_err(|e| PlanError::request("state_dir", e.to_string()))?;
    text::fstab_field("state_dir", &state_dir)
        .map_err(|e| PlanError::request("state_dir", e.to_string()))?;
    Ok((name, state_dir))
}

/// Fields outside `process` and `linux` that no LXC container can honour.
fn reject_other_platforms(spec: &Spec) -> Result<(), PlanError> {
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
    Ok(())
}

/// Console, devpts and the helper as init: the workload's stdio comes from the helper, not
/// from LXC.
fn console_and_init_lines(readonly_root: bool, lines: &mut Lines) {
    lines.push("lxc.autodev", "1".into());
    lines.push("lxc.console.path", "none".into());
    lines.push("lxc.tty.max", "0".into());
    lines.push("lxc.pty.max", "1024".into());
    let ctdir = ctinit_proto::CONTAINER_DIR;
    lines.push(
        "lxc.init.cmd",
        format!(
            "{ctdir}/{} {ctdir}/{} {ctdir}/{}",
            ctinit_proto::HELPER_NAME,
            ctinit_proto::INIT_SOCKET_NAME,
            ctinit_proto::INIT_SPEC_NAME
        ),
    );
    if readonly_root {
        // runc makes the root read-only after every mount, so missing mount targets can still be
        // created on it. LXC has no key for that; a mount hook (run on the host in the
        // container's mount namespace after all mount entries, before pivot_root) remounts the
        // root's own mount read-only, leaving the mounts under it as they are. The trailing `#`
        // turns the arguments LXC appends into a comment.
        lines.push("lxc.hook.mount", READONLY_ROOT_HOOK.to_string());
    }
}

/// A stop hook that copies the container's OOM kill counter before LXC removes its cgroup.
///
/// The init's OOM kill counts in `memory.events` before the init dies, but LXC removes the
/// container's cgroup right after (src/lxc/start.c, `lxc_end`: the `stop` hooks, then
/// `payload_destroy`), and the kernel may deliver the file's change notification later still
/// (cgroup_file_notify waits out 10 ms between two notifications and drops a pending one with
/// the file). runc's shim reads the counter from a cgroup that lives until delete; here this
/// hook keeps the last value where the shim can read it after the cgroup is gone. `cp` into
/// the 0600 file [`ContainerPlan::write_state_files`] made keeps that mode; the trailing `#`
/// turns the arguments LXC appends into a comment.
fn oom_counter_at_stop_hook(state_dir: &str, lines: &mut Lines) -> Result<(), PlanError> {
    let dir = Path::new(state_dir);
    let source = dir.join(OOM_COUNTER_LINK_NAME);
    let copy = dir.join(OOM_COUNTER_AT_STOP_NAME);
    let (Some(source), Some(copy)) = (source.to_str(), copy.to_str()) else {
        return Err(PlanError::request("state_dir", "is not UTF-8"));
    };
    let command = shlex::try_join(["/bin/cp", "--", source, copy])
        .map_err(|e| PlanError::request("state_dir", e.to_string()))?;
    lines.push("lxc.hook.stop", format!("{command} #"));
    Ok(())
}

impl ContainerPlan {
    /// The raw LXC lines other than rootfs, mounts and cgroups, in render order.
    pub fn lxc_entries(&self) -> &[(String, String)] {
        &self.entries
    }
}
