//! `mounts`, `linux.maskedPaths`, `linux.readonlyPaths` -> `lxc.mount.entry` lines.

use std::path::Path;

use oci_spec::runtime::{Linux, LinuxIdMapping, LinuxNamespaceType, Mount};

use crate::text;
use crate::{Ignored, Lines, MountSetattr, Places, PlanError};

/// Mount flags LXC understands itself (its mount option and propagation tables). Anything else
/// is passed to the filesystem as data (`size=`, `mode=`, ...).
const FLAGS: &[&str] = &[
    "defaults",
    "ro",
    "rw",
    "suid",
    "nosuid",
    "dev",
    "nodev",
    "exec",
    "noexec",
    "sync",
    "async",
    "dirsync",
    "mand",
    "nomand",
    "atime",
    "noatime",
    "diratime",
    "nodiratime",
    "relatime",
    "norelatime",
    "strictatime",
    "nostrictatime",
    "nosymfollow",
    "symfollow",
    "lazytime",
    "nolazytime",
    "iversion",
    "noiversion",
    "silent",
    "loud",
];
pub(crate) const PROPAGATION: &[&str] = &[
    "private",
    "rprivate",
    "shared",
    "rshared",
    "slave",
    "rslave",
    "unbindable",
    "runbindable",
];
/// LXC's own options; a spec must not be able to smuggle them in.
const LXC_ONLY: &[&str] = &["optional", "relative", "create=dir", "create=file"];

/// runc's recursive mount attributes (libcontainer/specconv/spec_linux.go, `recAttrFlags`):
/// the word, whether it clears the attribute, and the `MOUNT_ATTR_*` bit. LXC 5 has no such
/// option (it would pass the word to the filesystem as data, which a bind mount ignores), so they
/// are kept off the LXC entry and applied by the shim with mount_setattr(2) and AT_RECURSIVE.
const RECURSIVE_ATTRS: &[(&str, bool, u64)] = &[
    ("rro", false, libc::MOUNT_ATTR_RDONLY),
    ("rrw", true, libc::MOUNT_ATTR_RDONLY),
    ("rnosuid", false, libc::MOUNT_ATTR_NOSUID),
    ("rsuid", true, libc::MOUNT_ATTR_NOSUID),
    ("rnodev", false, libc::MOUNT_ATTR_NODEV),
    ("rdev", true, libc::MOUNT_ATTR_NODEV),
    ("rnoexec", false, libc::MOUNT_ATTR_NOEXEC),
    ("rexec", true, libc::MOUNT_ATTR_NOEXEC),
    ("rnodiratime", false, libc::MOUNT_ATTR_NODIRATIME),
    ("rdiratime", true, libc::MOUNT_ATTR_NODIRATIME),
    ("rrelatime", false, libc::MOUNT_ATTR_RELATIME),
    ("rnorelatime", true, libc::MOUNT_ATTR_RELATIME),
    ("rnoatime", false, libc::MOUNT_ATTR_NOATIME),
    ("ratime", true, libc::MOUNT_ATTR_NOATIME),
    ("rstrictatime", false, libc::MOUNT_ATTR_STRICTATIME),
    ("rnostrictatime", true, libc::MOUNT_ATTR_STRICTATIME),
    ("rnosymfollow", false, libc::MOUNT_ATTR_NOSYMFOLLOW),
    ("rsymfollow", true, libc::MOUNT_ATTR_NOSYMFOLLOW),
];

/// The recursive attribute words this kernel's mount_setattr(2) can apply.
fn recursive_attr_words(support: MountSetattr) -> impl Iterator<Item = &'static str> {
    RECURSIVE_ATTRS
        .iter()
        .filter(move |(_, _, flag)| {
            support.available && (support.nosymfollow || *flag != libc::MOUNT_ATTR_NOSYMFOLLOW)
        })
        .map(|(word, _, _)| *word)
}

/// The OCI mount options this translation honours: LXC's flags and propagation, `bind` and
/// `rbind`, and the recursive attributes the kernel can apply (`support`). What the runtime's
/// features document reports (`mountOptions`).
pub fn supported_options(support: MountSetattr) -> Vec<&'static str> {
    let mut all: Vec<&'static str> = FLAGS
        .iter()
        .chain(PROPAGATION)
        .chain(&["bind", "rbind"])
        .copied()
        .chain(recursive_attr_words(support))
        .collect();
    all.sort_unstable();
    all
}

/// A mount's recursive attributes as runc computes them (specconv `parseMountOptions`): a
/// word that sets an attribute takes it out of the cleared ones and the other way round, so
/// the last of `rro`/`rrw` wins, as `ro`/`rw` do (runc 1.2, commit 7795ca466 "specconv:
/// handle recursive attribute clearing more consistently"). The access-time values are an
/// enumeration, not bits: any of them also clears the whole `MOUNT_ATTR__ATIME` field, as
/// mount_setattr(2) demands (runc commit 5560d55bf). Unlike runc, a later access-time word
/// replaces an earlier one in `attr_set` (`rnoatime,rstrictatime` is strictatime), where runc
/// would pass both bits and the kernel refuse the mount with EINVAL.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct AttrChange {
    set: u64,
    clr: u64,
}

impl AttrChange {
    fn apply(&mut self, clear: bool, flag: u64) {
        let atime = flag & libc::MOUNT_ATTR__ATIME == flag;
        if clear {
            self.clr |= flag;
            self.set &= !flag;
        } else {
            if atime {
                self.set &= !libc::MOUNT_ATTR__ATIME;
            }
            self.set |= flag;
            self.clr &= !flag;
        }
        if atime {
            self.clr |= libc::MOUNT_ATTR__ATIME;
        }
    }

    fn is_empty(&self) -> bool {
        self.set == 0 && self.clr == 0
    }
}

/// One rendered mount, before LXC syntax.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountEntry {
    pub source: String,
    /// Absolute path inside the container.
    pub destination: String,
    pub fstype: String,
    pub options: Vec<String>,
    /// What LXC creates at the target when it is missing: `Some(true)` a directory,
    /// `Some(false)` a file.
    pub create_dir: Option<bool>,
    /// Do not fail the start when this mount fails.
    pub optional: bool,
}

impl MountEntry {
    /// Checks that every field encodes into its own fstab field unchanged in meaning.
    pub(crate) fn checked(self, field: &str) -> Result<MountEntry, PlanError> {
        text::fstab_field(&format!("{field}.source"), &self.source)?;
        let target = self.destination.trim_start_matches('/');
        if !target.is_empty() {
            text::fstab_field(&format!("{field}.destination"), target)?;
        }
        text::fstab_field(&format!("{field}.type"), &self.fstype)?;
        Ok(self)
    }

    /// The `lxc.mount.entry` value: an fstab line with a rootfs-relative target.
    pub fn lxc_value(&self) -> String {
        let mut opts = self.options.clone();
        match self.create_dir {
            Some(true) => opts.push("create=dir".into()),
            Some(false) => opts.push("create=file".into()),
            None => {}
        }
        if self.optional {
            opts.push("optional".into());
        }
        let opts = if opts.is_empty() {
            "defaults".to_string()
        } else {
            opts.join(",")
        };
        // Fields were checked when the entry was built; encoding cannot fail on them.
        let enc = |s: &str| text::fstab_field("mount", s).unwrap_or_else(|_| "none".into());
        let target = self.destination.trim_start_matches('/');
        let target = if target.is_empty() { "." } else { target };
        format!(
            "{} {} {} {} 0 0",
            enc(&self.source),
            enc(target),
            enc(&self.fstype),
            opts
        )
    }
}

/// What the mounts section turned into.
#[derive(Default, Debug)]
pub(crate) struct Mounts {
    pub entries: Vec<MountEntry>,
    /// `lxc.mount.auto` words (cgroup mounts).
    pub auto: Vec<String>,
    /// `lxc.autodev.tmpfs.size` in bytes, from the spec's own `/dev` tmpfs.
    pub dev_tmpfs_size: Option<u64>,
    /// The bind entries with recursive attributes.
    pub recursive: Vec<RecursiveBind>,
}

/// A bind entry (by its index in the entries) and its recursive attributes.
#[derive(Debug)]
pub(crate) struct RecursiveBind {
    entry: usize,
    /// N of the spec's `mounts[N]`.
    field_index: usize,
    attrs: AttrChange,
    words: Vec<&'static str>,
}

/// A tmpfs `size=` value (bytes, or with a k/m/g suffix as tmpfs takes it) in bytes; `None`
/// for what LXC cannot express (percentages).
fn tmpfs_size_bytes(value: &str) -> Option<u64> {
    let (digits, unit) = match value.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&value[..i], Some(c.to_ascii_lowercase())),
        _ => (value, None),
    };
    let n: u64 = digits.parse().ok()?;
    let factor: u64 = match unit {
        None => 1,
        Some('k') => 1 << 10,
        Some('m') => 1 << 20,
        Some('g') => 1 << 30,
        Some(_) => return None,
    };
    n.checked_mul(factor)
}

/// A spec mount's options, sorted out.
#[derive(Debug, Default)]
struct Options {
    /// What goes on to LXC's entry (flags, propagation, filesystem data).
    lxc: Vec<String>,
    bind: bool,
    /// `rbind`: the submounts come along.
    rec: bool,
    /// The recursive attributes (see [`AttrChange`]) and their words, in order.
    attrs: AttrChange,
    attr_words: Vec<&'static str>,
}

fn options(
    field: &str,
    raw: &[String],
    is_bind: bool,
    support: MountSetattr,
    ignored: &mut Vec<Ignored>,
) -> Result<Options, PlanError> {
    let mut out = Options {
        bind: is_bind,
        ..Options::default()
    };
    let mut unsupported = None;
    for (i, o) in raw.iter().enumerate() {
        let of = format!("{field}.options[{i}]");
        let o = text::value(&of, o)?;
        if o.contains(',') || o.contains(' ') {
            return Err(PlanError::invalid(&of, "must not contain ',' or blanks"));
        }
        if LXC_ONLY.contains(&o.as_str()) || o.starts_with("create=") || o.starts_with("idmap=") {
            return Err(PlanError::invalid(
                &of,
                format!("{o:?} is not a mount option"),
            ));
        }
        if let Some(&(word, clear, flag)) = RECURSIVE_ATTRS.iter().find(|(w, _, _)| *w == o) {
            if unsupported.is_none() && !recursive_attr_words(support).any(|w| w == word) {
                unsupported = Some((of, word, flag));
            }
            out.attrs.apply(clear, flag);
            out.attr_words.push(word);
            continue;
        }
        match o.as_str() {
            "bind" => out.bind = true,
            "rbind" => {
                out.bind = true;
                out.rec = true;
            }
            // Checked with the mount's mappings by the caller (`idmapped`).
            "idmap" | "ridmap" => {}
            "tmpcopyup" => return Err(PlanError::unsupported(&of, "tmpcopyup is not supported")),
            "remount" => return Err(PlanError::unsupported(&of, "remount is not supported")),
            _ => out.lxc.push(o),
        }
    }
    if out.attr_words.is_empty() {
        return Ok(out);
    }
    if !out.bind {
        // runc parses them on any mount but applies them to bind mounts only
        // (libcontainer/rootfs_linux.go, `mountToRootfs`: `setRecAttr` in the "bind" case).
        ignored.push(Ignored::new(
            &format!("{field}.options"),
            &format!(
                "{}: recursive attributes apply to bind mounts only, as in runc",
                out.attr_words.join(",")
            ),
        ));
        out.attrs = AttrChange::default();
        out.attr_words.clear();
        return Ok(out);
    }
    if let Some((of, word, flag)) = unsupported {
        let (since, what) = if flag == libc::MOUNT_ATTR_NOSYMFOLLOW && support.available {
            ("5.14", "MOUNT_ATTR_NOSYMFOLLOW")
        } else {
            ("5.12", "mount_setattr(2)")
        };
        return Err(PlanError::unsupported(
            &of,
            format!("{word} (a recursive mount attribute) needs {what} (Linux {since}), which this kernel lacks"),
        ));
    }
    Ok(out)
}

/// Resolves a container path against the image, as runc's securejoin does: symlinks in the
/// root filesystem are followed with the root as `/` (absolute targets stay inside, `..` stops
/// at the root). LXC refuses a mount target whose path has a symlink, and its `create=dir`
/// would follow one out of the rootfs on the host (`/var/run -> /run`). Resolution stops below
/// a path that an earlier mount covers (`fresh`: its content is not the image's), and at the
/// first missing component (nothing further can be a symlink).
pub(crate) fn resolve_in_rootfs(
    field: &str,
    rootfs: &Path,
    dest: &str,
    fresh: &[String],
) -> Result<String, PlanError> {
    let covered = |p: &str| {
        fresh
            .iter()
            .any(|m| p == m || (m == "/" || p.starts_with(&format!("{m}/"))))
    };
    let mut pending: Vec<String> = dest
        .split('/')
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .rev()
        .collect();
    let mut current: Vec<String> = Vec::new();
    let mut hops = 0;
    let join = |c: &[String]| format!("/{}", c.join("/"));
    while let Some(comp) = pending.pop() {
        if comp == "." {
            continue;
        }
        if comp == ".." {
            current.pop();
            continue;
        }
        if covered(&join(&current)) && !current.is_empty() {
            current.push(comp);
            continue;
        }
        let mut candidate = current.clone();
        candidate.push(comp.clone());
        let host = rootfs.join(candidate.join("/"));
        match std::fs::symlink_metadata(&host) {
            Ok(meta) if meta.file_type().is_symlink() => {
                hops += 1;
                if hops > 40 {
                    return Err(PlanError::invalid(
                        field,
                        format!("{dest}: too many symbolic links in the image"),
                    ));
                }
                let target = std::fs::read_link(&host).map_err(|e| {
                    PlanError::invalid(field, format!("{dest}: reading a link in the image: {e}"))
                })?;
                let target = target.to_str().ok_or_else(|| {
                    PlanError::invalid(field, format!("{dest}: a link in the image is not UTF-8"))
                })?;
                if target.starts_with('/') {
                    current.clear();
                }
                for c in target.split('/').filter(|c| !c.is_empty()).rev() {
                    pending.push(c.to_string());
                }
            }
            Ok(_) => current = candidate,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                current = candidate;
                while let Some(rest) = pending.pop() {
                    match rest.as_str() {
                        "." => {}
                        ".." => {
                            current.pop();
                        }
                        _ => current.push(rest),
                    }
                }
            }
            Err(e) => {
                return Err(PlanError::invalid(
                    field,
                    format!("{dest}: looking it up in the image: {e}"),
                ))
            }
        }
    }
    text::abs_path(field, Path::new(&join(&current)))
}

/// Whether `o` is a flag LXC applies (as opposed to filesystem data).
fn is_flag(o: &str) -> bool {
    FLAGS.contains(&o) || PROPAGATION.contains(&o)
}

/// Every mount entry in the order LXC mounts them (spec mounts, the helper's directory,
/// masked paths, sysctl files under read-only paths, read-only paths; the caller appends device
/// nodes), with the `lxc.mount.auto` and `lxc.autodev.tmpfs.size` lines.
pub(crate) fn layout(
    spec_mounts: &[Mount],
    linux: &Linux,
    at: &Places<'_>,
    sysctl_files: &[String],
    lines: &mut Lines,
    ignored: &mut Vec<Ignored>,
) -> Result<Layout, PlanError> {
    let converted = convert(
        spec_mounts,
        at.bundle,
        at.rootfs,
        ContainerIds::of(linux),
        at.plain_cgroup2,
        at.mount_setattr,
        ignored,
    )?;
    let spec_binds = converted
        .entries
        .iter()
        .filter(|m| {
            matches!(
                m.options.first().map(String::as_str),
                Some("bind" | "rbind")
            )
        })
        .cloned()
        .collect();
    // Paths below these are not resolved against the image (see resolve_in_rootfs).
    let mut fresh: Vec<String> = vec!["/dev".to_string()];
    fresh.extend(converted.entries.iter().map(|m| m.destination.clone()));
    if !converted.auto.is_empty() {
        fresh.push("/sys/fs/cgroup".to_string());
    }
    let mut entries = converted.entries;
    entries.push(helper_dir_mount(at.state_dir));
    let masked_paths = linux.masked_paths().clone().unwrap_or_default();
    entries.extend(masked(&masked_paths, at.rootfs, &fresh)?);
    let readonly_paths = linux.readonly_paths().clone().unwrap_or_default();
    entries.extend(writable_sysctl_files(sysctl_files, &readonly_paths)?);
    entries.extend(readonly(&readonly_paths, at.rootfs, &fresh)?);
    if !converted.auto.is_empty() {
        lines.push("lxc.mount.auto", converted.auto.join(" "));
    }
    if let Some(bytes) = converted.dev_tmpfs_size {
        lines.push("lxc.autodev.tmpfs.size", bytes.to_string());
    }
    Ok(Layout {
        entries,
        fresh,
        spec_binds,
        recursive: converted.recursive,
    })
}

/// The mounts and the targets whose content is not the image's.
pub(crate) struct Layout {
    pub entries: Vec<MountEntry>,
    pub fresh: Vec<String>,
    /// The spec's bind mounts, for [`host_peer_binds`].
    pub spec_binds: Vec<MountEntry>,
    /// The binds with recursive attributes (indices into `entries`), for [`recursive_attrs`].
    pub recursive: Vec<RecursiveBind>,
}

/// A spec bind mount that must stay in the host's peer group (see [`host_peer_binds`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerBind {
    pub source: String,
    /// Absolute path inside the container (resolved in the image, as LXC's entry).
    pub destination: String,
    /// `rbind`: the submounts come along.
    pub recursive: bool,
    /// The container's own mount points LXC makes below `destination` after it (later spec
    /// mounts, masked and read-only paths), in order: kept when the bind is replaced.
    pub nested: Vec<String>,
}

/// The bind mounts through which mounts must propagate from the container back to the host,
/// as under runc: runc leaves the rootfs `rshared` (`linux.rootfsPropagation` shared or
/// rshared), so its bind of a shared host mount joins the host mount's peer group, unless the
/// mount's own options make it a slave or private. Kubernetes asks for this with
/// `mountPropagation: Bidirectional`. LXC cannot give it: before mounting anything it turns
/// every shared mount of the container's namespace into a slave (LXC's conf.c,
/// `turn_into_dependent_mounts`, called from `lxc_setup_rootfs_prepare_root`), so its entry
/// receives the host's mounts and sends none back. The shim replaces these entries with clones
/// of the host mounts once the container is set up.
pub(crate) fn host_peer_binds(
    spec_binds: &[MountEntry],
    rootfs_propagation: Option<&str>,
) -> Vec<PeerBind> {
    if !matches!(rootfs_propagation, Some("shared" | "rshared")) {
        return Vec::new();
    }
    spec_binds
        .iter()
        .filter(|m| {
            // The last propagation word wins, as in runc's and LXC's option parsing.
            let own = m
                .options
                .iter()
                .rev()
                .find(|o| PROPAGATION.contains(&o.as_str()));
            matches!(own.map(String::as_str), None | Some("shared" | "rshared"))
        })
        .map(|m| PeerBind {
            source: m.source.clone(),
            destination: m.destination.clone(),
            recursive: m.options.first().is_some_and(|o| o == "rbind"),
            nested: Vec::new(),
        })
        .collect()
}

/// Fills each peer bind's `nested` from every mount entry, in LXC's order: the entries after
/// the last one at the bind's destination whose destination lies below it.
pub(crate) fn find_nested(peer_binds: &mut [PeerBind], all: &[MountEntry]) {
    for bind in peer_binds {
        let Some(at) = all.iter().rposition(|m| m.destination == bind.destination) else {
            continue;
        };
        let prefix = format!("{}/", bind.destination.trim_end_matches('/'));
        bind.nested = all[at + 1..]
            .iter()
            .filter(|m| m.destination.starts_with(&prefix))
            .map(|m| m.destination.clone())
            .collect();
    }
}

/// A spec bind mount's recursive attributes (`rro`, `rnosuid`, ... as runc names them), for
/// the shim to apply with mount_setattr(2) and AT_RECURSIVE in the container's mount namespace.
///
/// runc applies them right after it made the bind (libcontainer/rootfs_linux.go,
/// `mountToRootfs` -> `setRecAttr`), so they reach the bind's submounts but not the container's
/// own mounts made later below it (later spec mounts, masked and read-only paths). LXC cannot
/// apply them at all, and the shim can only act once LXC has made every mount: it sets
/// `later` aside, applies the attributes, and puts `later` back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecursiveAttrs {
    /// The spec field (`mounts[N]`), for errors.
    pub field: String,
    /// Absolute path inside the container (resolved in the image, as LXC's entry).
    pub destination: String,
    /// `MOUNT_ATTR_*` bits to set and to clear (`struct mount_attr`).
    pub attr_set: u64,
    pub attr_clr: u64,
    /// The spec's words for them, in order (`rro`, `rnosuid`, ...), for errors.
    pub words: Vec<String>,
    /// The container's own mounts LXC makes at or below `destination` after the bind, in the
    /// order LXC makes them.
    pub later: Vec<LaterMount>,
}

/// A mount LXC makes after a bind with recursive attributes, at or below its destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaterMount {
    /// Absolute path inside the container.
    pub path: String,
    /// LXC skips it when it cannot be made (masked and read-only paths: a missing path, or
    /// the one of a masked path's two entries that does not fit).
    pub optional: bool,
}

/// The order in which LXC makes the mount entries (indices into `all`): every entry but the
/// idmapped ones in order, then the idmapped ones, which LXC attaches after all the others
/// (LXC 5 conf.c: `mount_entry` skips them, `lxc_idmapped_mounts_child` attaches the
/// detached mounts its parent made, after `setup_mount_entries`).
fn lxc_mount_order(all: &[MountEntry]) -> Vec<usize> {
    let idmapped = |m: &MountEntry| m.options.iter().any(|o| o.starts_with("idmap="));
    let (mut order, late): (Vec<usize>, Vec<usize>) =
        (0..all.len()).partition(|&i| !idmapped(&all[i]));
    order.extend(late);
    order
}

/// The binds of `recursive` (indices into `all`, every mount entry in config order) with the
/// mounts LXC makes after each at or below its destination.
pub(crate) fn recursive_attrs(
    recursive: &[RecursiveBind],
    all: &[MountEntry],
) -> Vec<RecursiveAttrs> {
    let order = lxc_mount_order(all);
    let mut out: Vec<(usize, RecursiveAttrs)> = recursive
        .iter()
        .filter_map(|r| {
            let bind = all.get(r.entry)?;
            let at = order.iter().position(|&i| i == r.entry)?;
            let prefix = format!("{}/", bind.destination.trim_end_matches('/'));
            let later = order[at + 1..]
                .iter()
                .map(|&i| &all[i])
                .filter(|m| m.destination == bind.destination || m.destination.starts_with(&prefix))
                .map(|m| LaterMount {
                    path: m.destination.clone(),
                    optional: m.optional,
                })
                .collect();
            let attrs = RecursiveAttrs {
                field: format!("mounts[{}]", r.field_index),
                destination: bind.destination.clone(),
                attr_set: r.attrs.set,
                attr_clr: r.attrs.clr,
                words: r.words.iter().map(|w| w.to_string()).collect(),
                later,
            };
            Some((at, attrs))
        })
        .collect();
    out.sort_by_key(|(at, _)| *at);
    out.into_iter().map(|(_, attrs)| attrs).collect()
}

/// The state directory's helper part (`ctinit_proto::HELPER_DIR_NAME`), read-only at the
/// helper's place; the rest of the state directory is host root's and stays outside.
fn helper_dir_mount(state_dir: &str) -> MountEntry {
    MountEntry {
        source: format!(
            "{}/{}",
            state_dir.trim_end_matches('/'),
            ctinit_proto::HELPER_DIR_NAME
        ),
        destination: ctinit_proto::CONTAINER_DIR.to_string(),
        fstype: "none".into(),
        options: vec!["bind".into(), "ro".into(), "nosuid".into(), "nodev".into()],
        create_dir: Some(true),
        optional: false,
    }
}

/// LXC writes sysctls after all mounts, so a read-only /proc/sys would refuse them. Each
/// file the spec sets gets its own bind mount first; the recursive read-only bind of
/// /proc/sys carries it along and the read-only remount leaves it writable.
fn writable_sysctl_files(
    sysctl_files: &[String],
    readonly_paths: &[String],
) -> Result<Vec<MountEntry>, PlanError> {
    let covered = |file: &str| {
        readonly_paths
            .iter()
            .any(|p| file == p || file.starts_with(&format!("{}/", p.trim_end_matches('/'))))
    };
    sysctl_files
        .iter()
        .filter(|file| covered(file))
        .map(|file| {
            MountEntry {
                source: file.trim_start_matches('/').to_string(),
                destination: file.clone(),
                fstype: "none".into(),
                options: vec!["bind".into(), "relative".into()],
                create_dir: None,
                optional: false,
            }
            .checked("linux.sysctl")
        })
        .collect()
}

/// The container's user namespace mappings (`linux.uidMappings`/`gidMappings`), when it has a
/// user namespace of its own or joins one.
#[derive(Clone, Copy)]
pub(crate) struct ContainerIds<'a> {
    uid: &'a [LinuxIdMapping],
    gid: &'a [LinuxIdMapping],
}

impl<'a> ContainerIds<'a> {
    pub(crate) fn of(linux: &'a Linux) -> Option<ContainerIds<'a>> {
        let has_userns = linux
            .namespaces()
            .iter()
            .flatten()
            .any(|n| n.typ() == LinuxNamespaceType::User);
        let uid = linux.uid_mappings().as_deref().unwrap_or_default();
        let gid = linux.gid_mappings().as_deref().unwrap_or_default();
        (has_userns && !uid.is_empty() && !gid.is_empty()).then_some(ContainerIds { uid, gid })
    }
}

/// Whether spec mount `m` is an idmapped mount (runtime-spec: `uidMappings`/`gidMappings`, or
/// the `idmap`/`ridmap` option), checked against what LXC can make of it: LXC 5 idmaps a bind
/// mount with the container's own user namespace (`idmap=container` in `lxc.mount.entry`,
/// conf.c `lxc_idmapped_mounts_parent`), so the mount's mappings, if given, must be the
/// container's. That is what containerd's CRI asks for a `hostUsers: false` pod: every mapped
/// volume gets the pod's mappings.
fn idmapped(
    f: &str,
    m: &Mount,
    raw_opts: &[String],
    bind: bool,
    ids: Option<ContainerIds<'_>>,
) -> Result<bool, PlanError> {
    let (uid, gid) = (m.uid_mappings().as_deref(), m.gid_mappings().as_deref());
    let by_option = raw_opts.iter().any(|o| o == "idmap" || o == "ridmap");
    if uid.is_none() && gid.is_none() && !by_option {
        return Ok(false);
    }
    let field = format!("{f}.uidMappings");
    if uid.is_some() != gid.is_some() {
        return Err(PlanError::invalid(
            &field,
            "an idmapped mount needs both uidMappings and gidMappings",
        ));
    }
    if !bind {
        return Err(PlanError::unsupported(
            &field,
            "only bind mounts can be idmapped (LXC's idmap=container)",
        ));
    }
    let Some(ids) = ids else {
        return Err(PlanError::unsupported(
            &field,
            "an idmapped mount needs the container's user namespace (linux.uidMappings/gidMappings): LXC idmaps mounts with it",
        ));
    };
    if let (Some(uid), Some(gid)) = (uid, gid) {
        if uid != ids.uid || gid != ids.gid {
            return Err(PlanError::unsupported(
                &field,
                "mappings other than the container's (linux.uidMappings/gidMappings) are not supported: LXC idmaps mounts with the container's user namespace",
            ));
        }
    }
    Ok(true)
}

/// The spec's `mounts`, in order.
pub(crate) fn convert(
    mounts: &[Mount],
    bundle: &Path,
    rootfs: &Path,
    ids: Option<ContainerIds<'_>>,
    plain_cgroup2: bool,
    support: MountSetattr,
    ignored: &mut Vec<Ignored>,
) -> Result<Mounts, PlanError> {
    let mut out = Mounts::default();
    // LXC's autodev tmpfs is always on /dev.
    let mut fresh = vec!["/dev".to_string()];
    for (i, m) in mounts.iter().enumerate() {
        let f = format!("mounts[{i}]");
        let dest = destination(&f, m, rootfs, &fresh)?;
        fresh.push(dest.clone());
        let typ = m.typ().clone().unwrap_or_default();
        let raw_opts = m.options().clone().unwrap_or_default();
        let parsed = options(&f, &raw_opts, typ == "bind", support, ignored)?;
        let opts = parsed.lxc;
        let idmap = idmapped(&f, m, &raw_opts, parsed.bind, ids)?;
        if parsed.bind {
            let mut entry = bind_mount(&f, m, bundle, dest, opts, parsed.rec, ignored)?;
            if idmap {
                entry.options.push("idmap=container".into());
            }
            if !parsed.attrs.is_empty() {
                out.recursive.push(RecursiveBind {
                    entry: out.entries.len(),
                    field_index: i,
                    attrs: parsed.attrs,
                    words: parsed.attr_words,
                });
            }
            out.entries.push(entry);
            continue;
        }
        let typ = text::key_part(&format!("{f}.type"), &typ).map_err(|_| {
            PlanError::invalid(
                &format!("{f}.type"),
                format!("{typ:?} is not a filesystem type"),
            )
        })?;
        let target = Target {
            field: &f,
            dest: &dest,
            opts: &opts,
        };
        let taken_over = match typ.as_str() {
            // Without a cgroup namespace on cgroup v2, the node's whole tree (see Places).
            "cgroup" | "cgroup2" if plain_cgroup2 => {
                out.entries
                    .push(fs_mount(&f, m, "cgroup2".into(), dest, opts)?);
                continue;
            }
            "cgroup" | "cgroup2" => cgroup_mount(&target, &mut out, ignored)?,
            "tmpfs" if dest == "/dev" => dev_tmpfs(&target, &mut out, ignored),
            "devpts" if dest == "/dev/pts" => devpts(&target, ignored),
            _ => false,
        };
        if !taken_over {
            out.entries.push(fs_mount(&f, m, typ, dest, opts)?);
        }
    }
    Ok(out)
}

/// A spec mount's target, resolved in the image; the helper's directory is reserved.
fn destination(f: &str, m: &Mount, rootfs: &Path, fresh: &[String]) -> Result<String, PlanError> {
    let dest = text::abs_path(&format!("{f}.destination"), m.destination())?;
    let dest = resolve_in_rootfs(&format!("{f}.destination"), rootfs, &dest, fresh)?;
    let ctdir = ctinit_proto::CONTAINER_DIR;
    if dest == ctdir || dest.starts_with(&format!("{ctdir}/")) {
        return Err(PlanError::invalid(
            &format!("{f}.destination"),
            format!("{ctdir} is reserved for the runtime's helper"),
        ));
    }
    Ok(dest)
}

/// A bind or rbind mount: the source relative to the bundle (as with runc), flags kept,
/// filesystem data ignored.
fn bind_mount(
    f: &str,
    m: &Mount,
    bundle: &Path,
    dest: String,
    opts: Vec<String>,
    rec: bool,
    ignored: &mut Vec<Ignored>,
) -> Result<MountEntry, PlanError> {
    let src = m
        .source()
        .as_ref()
        .ok_or_else(|| PlanError::invalid(&format!("{f}.source"), "a bind mount needs a source"))?;
    let src = if src.is_absolute() {
        src.clone()
    } else {
        bundle.join(src)
    };
    let src_s = text::abs_path(&format!("{f}.source"), &src)?;
    text::fstab_field(&format!("{f}.source"), &src_s)?;
    // The only filesystem access of the planner: LXC must be told whether to create a
    // directory or a file at a missing target.
    let meta = std::fs::metadata(&src_s)
        .map_err(|e| PlanError::invalid(&format!("{f}.source"), format!("{src_s}: {e}")))?;
    let mut o = vec![if rec { "rbind" } else { "bind" }.to_string()];
    for x in opts {
        if is_flag(&x) {
            o.push(x);
        } else {
            ignored.push(Ignored::new(
                &format!("{f}.options"),
                &format!("{x:?} is filesystem data, meaningless for a bind mount"),
            ));
        }
    }
    MountEntry {
        source: src_s,
        destination: dest,
        fstype: "none".into(),
        options: o,
        create_dir: Some(meta.is_dir()),
        optional: false,
    }
    .checked(f)
}

/// Where a non-bind mount goes, for the mounts LXC makes itself.
struct Target<'a> {
    field: &'a str,
    dest: &'a str,
    opts: &'a [String],
}

impl Target<'_> {
    fn ignore(&self, ignored: &mut Vec<Ignored>, reason: &str) {
        ignored.push(Ignored::new(&format!("{}.options", self.field), reason));
    }
}

/// A cgroup filesystem becomes LXC's cgroup automount, which exists only at /sys/fs/cgroup.
fn cgroup_mount(
    t: &Target<'_>,
    out: &mut Mounts,
    ignored: &mut Vec<Ignored>,
) -> Result<bool, PlanError> {
    if t.dest != "/sys/fs/cgroup" {
        return Err(PlanError::unsupported(
            &format!("{}.destination", t.field),
            "LXC mounts cgroup filesystems only at /sys/fs/cgroup",
        ));
    }
    let ro = t.opts.iter().any(|o| o == "ro");
    out.auto.push(
        if ro {
            "cgroup:ro:force"
        } else {
            "cgroup:rw:force"
        }
        .into(),
    );
    let own_options = ["ro", "rw", "nosuid", "nodev", "noexec", "relatime"];
    if t.opts.iter().any(|o| !own_options.contains(&o.as_str())) {
        t.ignore(
            ignored,
            "LXC's cgroup automount chooses its own options besides ro/rw",
        );
    }
    Ok(true)
}

/// lxc.autodev already mounts a tmpfs on /dev and fills it with the standard nodes; a second
/// one from the spec would stack over it (runc has exactly one). Its size carries over; the
/// mode is 0755 as in every runtime's /dev.
fn dev_tmpfs(t: &Target<'_>, out: &mut Mounts, ignored: &mut Vec<Ignored>) -> bool {
    let standard = ["nosuid", "strictatime", "mode=755", "mode=0755", "rw"];
    for o in t.opts {
        match o.strip_prefix("size=") {
            Some(v) => match tmpfs_size_bytes(v) {
                Some(bytes) => out.dev_tmpfs_size = Some(bytes),
                None => t.ignore(
                    ignored,
                    &format!("/dev size {v:?}: LXC's autodev size is in bytes"),
                ),
            },
            None if standard.contains(&o.as_str()) => {}
            None => t.ignore(
                ignored,
                &format!("{o:?}: /dev is LXC's autodev tmpfs (mode 0755)"),
            ),
        }
    }
    true
}

/// lxc.pty.max makes LXC mount a new devpts instance at /dev/pts (newinstance,
/// ptmxmode=0666,mode=0620,gid=5) and point /dev/ptmx at it; a second mount by us would be
/// replaced by it.
fn devpts(t: &Target<'_>, ignored: &mut Vec<Ignored>) -> bool {
    let standard = [
        "nosuid",
        "noexec",
        "newinstance",
        "ptmxmode=0666",
        "mode=0620",
        "gid=5",
        "mode=620",
    ];
    if t.opts.iter().any(|o| !standard.contains(&o.as_str())) {
        t.ignore(
            ignored,
            "/dev/pts is LXC's own devpts instance (newinstance,ptmxmode=0666,mode=0620,gid=5)",
        );
    }
    true
}

/// Any other filesystem (tmpfs, proc, sysfs, mqueue, ...); the source defaults to the type.
fn fs_mount(
    f: &str,
    m: &Mount,
    typ: String,
    dest: String,
    opts: Vec<String>,
) -> Result<MountEntry, PlanError> {
    let source = match m
        .source()
        .as_ref()
        .map(|s| s.to_string_lossy().into_owned())
    {
        Some(s) if !s.is_empty() => s,
        _ => typ.clone(),
    };
    text::fstab_field(&format!("{f}.source"), &source)?;
    MountEntry {
        source,
        destination: dest,
        fstype: typ,
        options: opts,
        create_dir: Some(true),
        optional: false,
    }
    .checked(f)
}

/// `paths` (of `field`) resolved in the image and checked as fstab fields, with the field name
/// of each.
fn resolved_paths(
    field: &str,
    paths: &[String],
    rootfs: &Path,
    fresh: &[String],
) -> Result<Vec<(String, String)>, PlanError> {
    let mut out = Vec::new();
    for (i, p) in paths.iter().enumerate() {
        let f = format!("{field}[{i}]");
        let dest = text::abs_path(&f, Path::new(p))?;
        let dest = resolve_in_rootfs(&f, rootfs, &dest, fresh)?;
        if field == "linux.readonlyPaths" && dest == "/" {
            return Err(PlanError::invalid(
                &f,
                "use root.readonly for the root filesystem",
            ));
        }
        text::fstab_field(&f, &dest)?;
        out.push((f, dest));
    }
    Ok(out)
}

/// Masked paths as runc masks them: `/dev/null` over a file, an empty read-only tmpfs over a
/// directory. Which one applies is only known inside the container, so both are rendered as
/// optional entries; the one that does not fit fails harmlessly, as does a missing path.
pub(crate) fn masked(
    paths: &[String],
    rootfs: &Path,
    fresh: &[String],
) -> Result<Vec<MountEntry>, PlanError> {
    let mut out = Vec::new();
    for (f, dest) in resolved_paths("linux.maskedPaths", paths, rootfs, fresh)? {
        let null = MountEntry {
            source: "/dev/null".into(),
            destination: dest.clone(),
            fstype: "none".into(),
            options: vec!["bind".into(), "ro".into()],
            create_dir: None,
            optional: true,
        };
        out.push(null.checked(&f)?);
        let empty_dir = MountEntry {
            source: "tmpfs".into(),
            destination: dest,
            fstype: "tmpfs".into(),
            options: vec![
                "ro".into(),
                "nosuid".into(),
                "nodev".into(),
                "noexec".into(),
            ],
            create_dir: None,
            optional: true,
        };
        out.push(empty_dir.checked(&f)?);
    }
    Ok(out)
}

/// Read-only paths: a recursive bind of the path onto itself (source relative to the container
/// root), remounted read-only; missing paths are skipped as runc skips them.
pub(crate) fn readonly(
    paths: &[String],
    rootfs: &Path,
    fresh: &[String],
) -> Result<Vec<MountEntry>, PlanError> {
    let options = ["rbind", "ro", "nosuid", "nodev", "noexec", "relative"];
    resolved_paths("linux.readonlyPaths", paths, rootfs, fresh)?
        .into_iter()
        .map(|(f, dest)| {
            MountEntry {
                source: dest.trim_start_matches('/').to_string(),
                destination: dest,
                fstype: "none".into(),
                options: options.iter().map(|o| o.to_string()).collect(),
                create_dir: None,
                optional: true,
            }
            .checked(&f)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn mounts(v: serde_json::Value) -> Vec<Mount> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn lxc_takes_over_dev_devpts_and_cgroup_mounts() {
        let m = mounts(serde_json::json!([
            {"destination": "/dev", "type": "tmpfs", "options": ["nosuid", "size=64k", "mode=700"]},
            {"destination": "/dev/pts", "type": "devpts", "options": ["newinstance", "gid=6"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup2", "options": ["ro", "nsdelegate"]},
            {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid"]},
            {"destination": "/data", "type": "bind", "source": "/", "options": ["rbind", "ro", "size=1"]}
        ]));
        let mut ignored = Vec::new();
        let out = convert(
            &m,
            "/b".as_ref(),
            "/nonexistent-rootfs".as_ref(),
            None,
            false,
            MountSetattr::ALL,
            &mut ignored,
        )
        .unwrap();
        assert_eq!(out.dev_tmpfs_size, Some(64 << 10));
        assert_eq!(out.auto, ["cgroup:ro:force"]);
        let values: Vec<String> = out.entries.iter().map(MountEntry::lxc_value).collect();
        assert_eq!(
            values,
            [
                "proc proc proc nosuid,create=dir 0 0",
                "/ data none rbind,ro,create=dir 0 0"
            ]
        );
        let fields: Vec<&str> = ignored.iter().map(|i| i.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "mounts[0].options",
                "mounts[1].options",
                "mounts[2].options",
                "mounts[4].options"
            ]
        );
    }

    #[test]
    fn idmapped_binds_use_the_container_user_namespace_or_are_refused() {
        let map = serde_json::json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
        let other = serde_json::json!([{"containerID": 0, "hostID": 300000, "size": 65536}]);
        let linux: Linux = serde_json::from_value(serde_json::json!({
            "namespaces": [{"type": "mount"}, {"type": "user"}],
            "uidMappings": map, "gidMappings": map
        }))
        .unwrap();
        let run = |v: serde_json::Value, ids: Option<ContainerIds<'_>>| {
            convert(
                &mounts(serde_json::json!([v])),
                "/b".as_ref(),
                "/nonexistent-rootfs".as_ref(),
                ids,
                false,
                MountSetattr::ALL,
                &mut Vec::new(),
            )
        };
        let ids = ContainerIds::of(&linux);
        assert!(ids.is_some());
        // CRI's volume: the pod's mappings on an rbind.
        let out = run(
            serde_json::json!({"destination": "/v", "type": "bind", "source": "/",
                "options": ["rbind", "rw"], "uidMappings": map, "gidMappings": map}),
            ids,
        )
        .unwrap();
        assert_eq!(
            out.entries[0].lxc_value(),
            "/ v none rbind,rw,idmap=container,create=dir 0 0"
        );
        // The option alone means the container's mappings.
        let out = run(
            serde_json::json!({"destination": "/v", "type": "bind", "source": "/",
                "options": ["bind", "idmap"]}),
            ids,
        )
        .unwrap();
        assert_eq!(
            out.entries[0].lxc_value(),
            "/ v none bind,idmap=container,create=dir 0 0"
        );
        for (v, ids) in [
            // Other mappings than the container's.
            (
                serde_json::json!({"destination": "/v", "type": "bind", "source": "/",
                    "options": ["rbind"], "uidMappings": other, "gidMappings": other}),
                ids,
            ),
            // Half of them.
            (
                serde_json::json!({"destination": "/v", "type": "bind", "source": "/",
                    "options": ["rbind"], "uidMappings": map}),
                ids,
            ),
            // Not a bind mount.
            (
                serde_json::json!({"destination": "/v", "type": "tmpfs", "source": "tmpfs",
                    "uidMappings": map, "gidMappings": map}),
                ids,
            ),
            // No user namespace.
            (
                serde_json::json!({"destination": "/v", "type": "bind", "source": "/",
                    "options": ["rbind", "idmap"]}),
                None,
            ),
        ] {
            assert_eq!(run(v, ids).unwrap_err().field(), "mounts[0].uidMappings");
        }
    }

    #[test]
    fn cgroup_without_its_namespace_on_v2_is_a_plain_cgroup2_mount() {
        // containerd's spec of a privileged CRI container: type "cgroup", writable.
        let m = mounts(serde_json::json!([
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", "rw"]}
        ]));
        let out = convert(
            &m,
            "/b".as_ref(),
            "/nonexistent-rootfs".as_ref(),
            None,
            true,
            MountSetattr::ALL,
            &mut Vec::new(),
        )
        .unwrap();
        assert!(out.auto.is_empty(), "{:?}", out.auto);
        let values: Vec<String> = out.entries.iter().map(MountEntry::lxc_value).collect();
        assert_eq!(
            values,
            ["cgroup sys/fs/cgroup cgroup2 nosuid,noexec,nodev,relatime,rw,create=dir 0 0"]
        );
    }

    #[test]
    fn runtime_only_options_and_reserved_targets_are_refused() {
        let convert_one = |v: serde_json::Value| {
            convert(
                &mounts(serde_json::json!([v])),
                "/b".as_ref(),
                "/nonexistent-rootfs".as_ref(),
                None,
                false,
                MountSetattr::ALL,
                &mut Vec::new(),
            )
            .unwrap_err()
            .field()
            .to_string()
        };
        assert_eq!(
            convert_one(
                serde_json::json!({"destination": "/x", "type": "tmpfs", "options": ["create=dir"]})
            ),
            "mounts[0].options[0]"
        );
        assert_eq!(
            convert_one(
                serde_json::json!({"destination": ctinit_proto::CONTAINER_DIR, "type": "tmpfs"})
            ),
            "mounts[0].destination"
        );
        assert_eq!(
            convert_one(serde_json::json!({"destination": "/x", "type": "cgroup"})),
            "mounts[0].destination"
        );
    }

    #[test]
    fn layout_orders_helper_masked_sysctl_and_readonly_entries() {
        let linux: Linux = serde_json::from_value(serde_json::json!({
            "maskedPaths": ["/proc/kcore"], "readonlyPaths": ["/proc/sys"]}))
        .unwrap();
        let at = Places::for_tests();
        let files = ["/proc/sys/net/ipv4/ip_forward".to_string()];
        let mut lines = Lines::default();
        let layout = layout(&[], &linux, &at, &files, &mut lines, &mut Vec::new()).unwrap();
        let values: Vec<String> = layout.entries.iter().map(MountEntry::lxc_value).collect();
        assert_eq!(
            values,
            [
                "/s/helper dev/.ctinit none bind,ro,nosuid,nodev,create=dir 0 0",
                "/dev/null proc/kcore none bind,ro,optional 0 0",
                "tmpfs proc/kcore tmpfs ro,nosuid,nodev,noexec,optional 0 0",
                "proc/sys/net/ipv4/ip_forward proc/sys/net/ipv4/ip_forward none bind,relative 0 0",
                "proc/sys proc/sys none rbind,ro,nosuid,nodev,noexec,relative,optional 0 0",
            ]
        );
        assert_eq!(layout.fresh, ["/dev"]);
        assert!(lines.0.is_empty());
    }

    #[test]
    fn host_peer_binds_follow_runc_propagation() {
        // Sources must exist (the planner asks whether they are directories).
        let m = mounts(serde_json::json!([
            {"destination": "/both", "type": "bind", "source": "/", "options": ["rbind", "rshared"]},
            {"destination": "/default", "type": "bind", "source": "/", "options": ["bind"]},
            {"destination": "/in", "type": "bind", "source": "/", "options": ["rbind", "rslave"]},
            {"destination": "/none", "type": "bind", "source": "/", "options": ["rbind", "rprivate"]},
            {"destination": "/last", "type": "bind", "source": "/", "options": ["rbind", "rprivate", "shared"]},
            {"destination": "/tmp", "type": "tmpfs", "options": ["rshared"]}
        ]));
        let linux: Linux = serde_json::from_value(serde_json::json!({})).unwrap();
        let at = Places::for_tests();
        let layout = layout(&m, &linux, &at, &[], &mut Lines::default(), &mut Vec::new()).unwrap();
        assert_eq!(layout.spec_binds.len(), 5, "the tmpfs is no bind");
        let peers = |root: Option<&str>| -> Vec<(String, bool)> {
            host_peer_binds(&layout.spec_binds, root)
                .into_iter()
                .map(|p| (p.destination, p.recursive))
                .collect()
        };
        let want: Vec<(String, bool)> = vec![
            ("/both".into(), true),
            ("/default".into(), false),
            ("/last".into(), true),
        ];
        assert_eq!(peers(Some("rshared")), want);
        assert_eq!(peers(Some("shared")), want);
        // runc's rootfs is a slave (the default) or private: its binds are cut off from the
        // host's peer group whatever their own options say.
        let mut both = host_peer_binds(&layout.spec_binds, Some("rshared"));
        let mut later = layout.entries.clone();
        later.push(MountEntry {
            destination: "/both/sub".into(),
            ..layout.entries[0].clone()
        });
        later.push(MountEntry {
            destination: "/bothx".into(),
            ..layout.entries[0].clone()
        });
        find_nested(&mut both, &later);
        assert_eq!(both[0].nested, ["/both/sub"]);
        assert!(both[1].nested.is_empty());
        assert!(peers(None).is_empty());
        assert!(peers(Some("rslave")).is_empty());
        assert!(peers(Some("rprivate")).is_empty());
    }

    #[test]
    fn recursive_attribute_words_are_runcs_and_follow_the_kernel() {
        let all = supported_options(MountSetattr::ALL);
        let words: Vec<&str> = RECURSIVE_ATTRS.iter().map(|(w, _, _)| *w).collect();
        assert_eq!(words.len(), 18);
        for w in &words {
            assert!(all.contains(w), "{w}");
            // runc's naming: `r` and the plain flag.
            assert!(FLAGS.contains(&&w[1..]), "{w}");
        }
        assert!(all.contains(&"rbind") && all.contains(&"rslave"));
        // No mount_setattr: none of them.
        let none = supported_options(MountSetattr::default());
        assert!(!none.iter().any(|o| words.contains(o)), "{none:?}");
        assert_eq!(all.len(), none.len() + 18);
        // Linux 5.12 and 5.13: all but the symlink ones.
        let old = supported_options(MountSetattr {
            available: true,
            nosymfollow: false,
        });
        assert_eq!(old.len(), none.len() + 16);
        assert!(!old.contains(&"rnosymfollow") && !old.contains(&"rsymfollow"));
        assert!(old.contains(&"rro") && old.contains(&"rrw"));
    }

    fn parse(words: &[&str], support: MountSetattr) -> Result<(Options, Vec<Ignored>), PlanError> {
        let raw: Vec<String> = words.iter().map(|w| w.to_string()).collect();
        let mut ignored = Vec::new();
        let is_bind = words.iter().any(|w| *w == "bind" || *w == "rbind");
        options("mounts[0]", &raw, is_bind, support, &mut ignored).map(|o| (o, ignored))
    }

    fn attrs(words: &[&str]) -> (u64, u64) {
        let (o, _) = parse(words, MountSetattr::ALL).unwrap();
        (o.attrs.set, o.attrs.clr)
    }

    #[test]
    fn recursive_attributes_set_and_clear_as_runc_parses_them() {
        use libc::{
            MOUNT_ATTR_NOATIME as NOATIME, MOUNT_ATTR_NODEV as NODEV,
            MOUNT_ATTR_NODIRATIME as NODIRATIME, MOUNT_ATTR_NOEXEC as NOEXEC,
            MOUNT_ATTR_NOSUID as NOSUID, MOUNT_ATTR_NOSYMFOLLOW as NOSYMFOLLOW,
            MOUNT_ATTR_RDONLY as RDONLY, MOUNT_ATTR_STRICTATIME as STRICTATIME,
            MOUNT_ATTR__ATIME as ATIME,
        };
        assert_eq!(attrs(&["rbind", "rro"]), (RDONLY, 0));
        assert_eq!(attrs(&["rbind", "rrw"]), (0, RDONLY));
        // A pair: the last word wins, as with ro/rw.
        assert_eq!(attrs(&["rbind", "rro", "rrw"]), (0, RDONLY));
        assert_eq!(attrs(&["rbind", "rrw", "rro"]), (RDONLY, 0));
        assert_eq!(
            attrs(&["rbind", "rnosuid", "rsuid", "rnosuid"]),
            (NOSUID, 0)
        );
        assert_eq!(
            attrs(&["rbind", "rnosuid", "rdev", "rnoexec"]),
            (NOSUID | NOEXEC, NODEV)
        );
        assert_eq!(attrs(&["rbind", "rnodiratime"]), (NODIRATIME, 0));
        assert_eq!(attrs(&["rbind", "rdiratime"]), (0, NODIRATIME));
        assert_eq!(attrs(&["rbind", "rnosymfollow"]), (NOSYMFOLLOW, 0));
        assert_eq!(attrs(&["rbind", "rsymfollow"]), (0, NOSYMFOLLOW));
        // Access times are one field: every word clears all of it, the last one set stays.
        assert_eq!(attrs(&["rbind", "rnoatime"]), (NOATIME, ATIME));
        assert_eq!(attrs(&["rbind", "rrelatime"]), (0, ATIME));
        assert_eq!(attrs(&["rbind", "rnorelatime"]), (0, ATIME));
        assert_eq!(attrs(&["rbind", "ratime"]), (0, ATIME));
        assert_eq!(
            attrs(&["rbind", "rnoatime", "rstrictatime"]),
            (STRICTATIME, ATIME)
        );
        assert_eq!(attrs(&["rbind", "rnoatime", "ratime"]), (0, ATIME));
        assert_eq!(
            attrs(&["rbind", "rstrictatime", "ratime"]),
            (STRICTATIME, ATIME)
        );
        assert_eq!(
            attrs(&["rbind", "rnoatime", "rro", "rnodiratime"]),
            (NOATIME | RDONLY | NODIRATIME, ATIME)
        );
        // The words stay off LXC's entry; the plain flags go on.
        let (o, ignored) = parse(
            &["rbind", "ro", "rro", "nosuid", "rnoexec"],
            MountSetattr::ALL,
        )
        .unwrap();
        assert_eq!(o.lxc, ["ro", "nosuid"]);
        assert_eq!(o.attr_words, ["rro", "rnoexec"]);
        assert!(o.bind && o.rec && ignored.is_empty());
        // Words runc does not know are filesystem data, as there.
        let (o, _) = parse(&["bind", "rsync"], MountSetattr::ALL).unwrap();
        assert_eq!(o.lxc, ["rsync"]);
        assert!(o.attrs.is_empty());
    }

    #[test]
    fn recursive_attributes_need_mount_setattr_and_a_bind() {
        // No mount_setattr: refused, naming the option.
        let err = parse(&["rbind", "rro"], MountSetattr::default()).unwrap_err();
        assert_eq!(err.field(), "mounts[0].options[1]");
        let text = err.to_string();
        assert!(
            text.contains("rro") && text.contains("mount_setattr"),
            "{text}"
        );
        // Linux 5.12/5.13: the symlink attribute alone is refused.
        let old = MountSetattr {
            available: true,
            nosymfollow: false,
        };
        assert!(parse(&["rbind", "rro", "rnoexec"], old).is_ok());
        let err = parse(&["rbind", "rro", "rnosymfollow"], old).unwrap_err();
        assert_eq!(err.field(), "mounts[0].options[2]");
        assert!(err.to_string().contains("MOUNT_ATTR_NOSYMFOLLOW"), "{err}");
        // Not a bind: ignored, as runc ignores them there, whatever the kernel.
        for support in [MountSetattr::ALL, MountSetattr::default()] {
            let (o, ignored) = parse(&["rro", "nosuid", "size=1m"], support).unwrap();
            assert!(o.attrs.is_empty() && o.attr_words.is_empty());
            assert_eq!(o.lxc, ["nosuid", "size=1m"]);
            assert_eq!(ignored.len(), 1);
            assert_eq!(ignored[0].field, "mounts[0].options");
            assert!(ignored[0].reason.contains("rro"), "{:?}", ignored[0]);
        }
    }

    #[test]
    fn recursive_attributes_leave_out_the_mounts_lxc_makes_after_the_bind() {
        let m = mounts(serde_json::json!([
            {"destination": "/data/early", "type": "tmpfs"},
            {"destination": "/data", "type": "bind", "source": "/", "options": ["rbind", "rro"]},
            {"destination": "/data/tmp", "type": "tmpfs"},
            {"destination": "/datax", "type": "tmpfs"},
            {"destination": "/data/sub", "type": "bind", "source": "/", "options": ["rbind", "rnoexec", "rnosuid"]},
            {"destination": "/data", "type": "tmpfs", "options": ["rro"]}
        ]));
        let linux: Linux = serde_json::from_value(serde_json::json!({
            "maskedPaths": ["/data/secret"], "readonlyPaths": ["/data/ro"]}))
        .unwrap();
        let at = Places::for_tests();
        let mut ignored = Vec::new();
        let layout = layout(&m, &linux, &at, &[], &mut Lines::default(), &mut ignored).unwrap();
        // The tmpfs's rro is ignored, as by runc.
        assert_eq!(ignored.len(), 1, "{ignored:?}");
        assert_eq!(ignored[0].field, "mounts[5].options");
        let rec = recursive_attrs(&layout.recursive, &layout.entries);
        let later = |r: &RecursiveAttrs| -> Vec<(String, bool)> {
            r.later
                .iter()
                .map(|l| (l.path.clone(), l.optional))
                .collect()
        };
        assert_eq!(rec.len(), 2);
        assert_eq!(rec[0].field, "mounts[1]");
        assert_eq!(rec[0].destination, "/data");
        assert_eq!(
            (rec[0].attr_set, rec[0].attr_clr),
            (libc::MOUNT_ATTR_RDONLY, 0)
        );
        assert_eq!(rec[0].words, ["rro"]);
        let l = |p: &str, optional: bool| (p.to_string(), optional);
        assert_eq!(
            later(&rec[0]),
            [
                l("/data/tmp", false),
                l("/data/sub", false),
                l("/data", false),
                // The masked path's two alternatives, then the read-only path.
                l("/data/secret", true),
                l("/data/secret", true),
                l("/data/ro", true),
            ]
        );
        assert_eq!(rec[1].field, "mounts[4]");
        assert_eq!(rec[1].destination, "/data/sub");
        assert_eq!(
            (rec[1].attr_set, rec[1].attr_clr),
            (libc::MOUNT_ATTR_NOEXEC | libc::MOUNT_ATTR_NOSUID, 0)
        );
        assert_eq!(rec[1].words, ["rnoexec", "rnosuid"]);
        assert!(later(&rec[1]).is_empty());
    }

    #[test]
    fn lxc_attaches_idmapped_binds_after_every_other_entry() {
        let entry = |dest: &str, idmap: bool| MountEntry {
            source: "/".into(),
            destination: dest.into(),
            fstype: "none".into(),
            options: if idmap {
                vec!["rbind".into(), "idmap=container".into()]
            } else {
                vec!["rbind".into()]
            },
            create_dir: Some(true),
            optional: false,
        };
        let all = [
            entry("/a", true),
            entry("/a/b", false),
            entry("/c", true),
            entry("/a/d", false),
        ];
        assert_eq!(lxc_mount_order(&all), [1, 3, 0, 2]);
        let rec = |entry| RecursiveBind {
            entry,
            field_index: entry,
            attrs: AttrChange {
                set: libc::MOUNT_ATTR_RDONLY,
                clr: 0,
            },
            words: vec!["rro"],
        };
        // The idmapped /a comes after /a/b and /a/d: nothing of them is later.
        let out = recursive_attrs(&[rec(0), rec(1)], &all);
        assert_eq!(out[0].destination, "/a/b");
        assert!(out[0].later.is_empty());
        assert_eq!(out[1].destination, "/a");
        assert!(out[1].later.is_empty());
    }

    #[test]
    fn resolves_links_inside_the_rootfs() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("run")).unwrap();
        std::fs::create_dir_all(root.join("var")).unwrap();
        std::fs::create_dir_all(root.join("usr/lib")).unwrap();
        symlink("/run", root.join("var/run")).unwrap();
        symlink("../../../../../../etc", root.join("usr/lib/up")).unwrap();
        symlink("loop", root.join("loop")).unwrap();
        symlink("/x\nlxc.cap.keep = sys_admin", root.join("evil")).unwrap();
        let r = |d: &str, fresh: &[String]| resolve_in_rootfs("f", root, d, fresh);
        assert_eq!(r("/var/run/secrets/sa", &[]).unwrap(), "/run/secrets/sa");
        // `..` stops at the root, as in the container.
        assert_eq!(r("/usr/lib/up/hosts", &[]).unwrap(), "/etc/hosts");
        assert_eq!(r("/missing/../x", &[]).unwrap(), "/x");
        assert!(r("/loop/x", &[])
            .unwrap_err()
            .to_string()
            .contains("too many"));
        assert!(r("/evil/x", &[]).is_err());
        // Below an earlier mount the image's links do not apply.
        assert_eq!(
            r("/var/run/x", &["/var".to_string()]).unwrap(),
            "/var/run/x"
        );
    }
}
