//! `mounts`, `linux.maskedPaths`, `linux.readonlyPaths` -> `lxc.mount.entry` lines.

use std::path::Path;

use oci_spec::runtime::Mount;

use crate::text;
use crate::{Ignored, PlanError};

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
const PROPAGATION: &[&str] = &[
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

/// The OCI mount options this translation honours: LXC's flags and propagation, plus `bind` and
/// `rbind`. What the runtime's features document reports (`mountOptions`).
pub fn supported_options() -> Vec<&'static str> {
    let mut all: Vec<&'static str> = FLAGS
        .iter()
        .chain(PROPAGATION)
        .chain(&["bind", "rbind"])
        .copied()
        .collect();
    all.sort_unstable();
    all
}

/// runc's recursive mount attributes (`rro`, `rnosuid`, ... applied with mount_setattr and
/// AT_RECURSIVE): LXC 5 has no such option and would pass the word to the filesystem as data,
/// where a bind mount ignores it, so a `rro` volume would stay writable.
fn is_recursive_attr(o: &str) -> bool {
    o.strip_prefix('r')
        .is_some_and(|rest| FLAGS.contains(&rest) && !FLAGS.contains(&o))
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

fn options(
    field: &str,
    raw: &[String],
    is_bind: bool,
) -> Result<(Vec<String>, bool, bool), PlanError> {
    // returns (options for LXC, bind, recursive)
    let mut out = Vec::new();
    let mut bind = is_bind;
    let mut rec = false;
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
        match o.as_str() {
            "bind" => bind = true,
            "rbind" => {
                bind = true;
                rec = true;
            }
            "idmap" | "ridmap" => {
                return Err(PlanError::unsupported(
                    &of,
                    "idmapped mounts are not supported",
                ))
            }
            "tmpcopyup" => return Err(PlanError::unsupported(&of, "tmpcopyup is not supported")),
            o if is_recursive_attr(o) => {
                return Err(PlanError::unsupported(
                    &of,
                    format!("{o} (recursive mount attributes) is not supported"),
                ))
            }
            "remount" => return Err(PlanError::unsupported(&of, "remount is not supported")),
            _ => out.push(o),
        }
    }
    Ok((out, bind, rec))
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

pub(crate) fn convert(
    mounts: &[Mount],
    bundle: &Path,
    rootfs: &Path,
    ignored: &mut Vec<Ignored>,
) -> Result<Mounts, PlanError> {
    let mut out = Mounts::default();
    // LXC's autodev tmpfs is always on /dev.
    let mut fresh = vec!["/dev".to_string()];
    for (i, m) in mounts.iter().enumerate() {
        let f = format!("mounts[{i}]");
        let dest = text::abs_path(&format!("{f}.destination"), m.destination())?;
        let dest = resolve_in_rootfs(&format!("{f}.destination"), rootfs, &dest, &fresh)?;
        fresh.push(dest.clone());
        let ctdir = ctinit_proto::CONTAINER_DIR;
        if dest == ctdir || dest.starts_with(&format!("{ctdir}/")) {
            return Err(PlanError::invalid(
                &format!("{f}.destination"),
                format!("{ctdir} is reserved for the runtime's helper"),
            ));
        }
        if m.uid_mappings().is_some() || m.gid_mappings().is_some() {
            return Err(PlanError::unsupported(
                &format!("{f}.uidMappings"),
                "idmapped mounts are not supported",
            ));
        }
        let typ = m.typ().clone().unwrap_or_default();
        let raw_opts = m.options().clone().unwrap_or_default();
        let (opts, bind, rec) = options(&f, &raw_opts, typ == "bind")?;
        let source_raw = m
            .source()
            .as_ref()
            .map(|s| s.to_string_lossy().into_owned());

        if bind {
            let src = m.source().as_ref().ok_or_else(|| {
                PlanError::invalid(&format!("{f}.source"), "a bind mount needs a source")
            })?;
            // A relative bind source is relative to the bundle, as with runc.
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
            let mut o = vec![if rec {
                "rbind".to_string()
            } else {
                "bind".to_string()
            }];
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
            out.entries.push(
                MountEntry {
                    source: src_s,
                    destination: dest,
                    fstype: "none".into(),
                    options: o,
                    create_dir: Some(meta.is_dir()),
                    optional: false,
                }
                .checked(&f)?,
            );
            continue;
        }

        let typ = text::key_part(&format!("{f}.type"), &typ).map_err(|_| {
            PlanError::invalid(
                &format!("{f}.type"),
                format!("{typ:?} is not a filesystem type"),
            )
        })?;
        match typ.as_str() {
            "cgroup" | "cgroup2" => {
                if dest != "/sys/fs/cgroup" {
                    return Err(PlanError::unsupported(
                        &format!("{f}.destination"),
                        "LXC mounts cgroup filesystems only at /sys/fs/cgroup",
                    ));
                }
                let ro = opts.iter().any(|o| o == "ro");
                out.auto.push(
                    if ro {
                        "cgroup:ro:force"
                    } else {
                        "cgroup:rw:force"
                    }
                    .into(),
                );
                if opts.iter().any(|o| {
                    !matches!(
                        o.as_str(),
                        "ro" | "rw" | "nosuid" | "nodev" | "noexec" | "relatime"
                    )
                }) {
                    ignored.push(Ignored::new(
                        &format!("{f}.options"),
                        "LXC's cgroup automount chooses its own options besides ro/rw",
                    ));
                }
                continue;
            }
            "tmpfs" if dest == "/dev" => {
                // lxc.autodev already mounts a tmpfs on /dev and fills it with the standard
                // nodes; a second one from the spec would stack over it (runc has exactly one).
                // Its size carries over; the mode is 0755 as in every runtime's /dev.
                for o in &opts {
                    match o.strip_prefix("size=") {
                        Some(v) => match tmpfs_size_bytes(v) {
                            Some(bytes) => out.dev_tmpfs_size = Some(bytes),
                            None => ignored.push(Ignored::new(
                                &format!("{f}.options"),
                                &format!("/dev size {v:?}: LXC's autodev size is in bytes"),
                            )),
                        },
                        None if matches!(
                            o.as_str(),
                            "nosuid" | "strictatime" | "mode=755" | "mode=0755" | "rw"
                        ) => {}
                        None => ignored.push(Ignored::new(
                            &format!("{f}.options"),
                            &format!("{o:?}: /dev is LXC's autodev tmpfs (mode 0755)"),
                        )),
                    }
                }
                continue;
            }
            "devpts" if dest == "/dev/pts" => {
                // lxc.pty.max makes LXC mount a new devpts instance here (newinstance,
                // ptmxmode=0666,mode=0620,gid=5) and point /dev/ptmx at it; a second mount by
                // us would be replaced by it.
                let std_opts = [
                    "nosuid",
                    "noexec",
                    "newinstance",
                    "ptmxmode=0666",
                    "mode=0620",
                    "gid=5",
                    "mode=620",
                ];
                if opts.iter().any(|o| !std_opts.contains(&o.as_str())) {
                    ignored.push(Ignored::new(
                        &format!("{f}.options"),
                        "/dev/pts is LXC's own devpts instance (newinstance,ptmxmode=0666,mode=0620,gid=5)",
                    ));
                }
                continue;
            }
            _ => {}
        }
        let source = match source_raw {
            Some(s) if !s.is_empty() => s,
            _ => typ.clone(),
        };
        text::fstab_field(&format!("{f}.source"), &source)?;
        out.entries.push(
            MountEntry {
                source,
                destination: dest,
                fstype: typ,
                options: opts,
                create_dir: Some(true),
                optional: false,
            }
            .checked(&f)?,
        );
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
    for (i, p) in paths.iter().enumerate() {
        let f = format!("linux.maskedPaths[{i}]");
        let dest = text::abs_path(&f, Path::new(p))?;
        let dest = resolve_in_rootfs(&f, rootfs, &dest, fresh)?;
        text::fstab_field(&format!("linux.maskedPaths[{i}]"), &dest)?;
        out.push(
            MountEntry {
                source: "/dev/null".into(),
                destination: dest.clone(),
                fstype: "none".into(),
                options: vec!["bind".into(), "ro".into()],
                create_dir: None,
                optional: true,
            }
            .checked(&format!("linux.maskedPaths[{i}]"))?,
        );
        out.push(
            MountEntry {
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
            }
            .checked(&format!("linux.maskedPaths[{i}]"))?,
        );
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
    let mut out = Vec::new();
    for (i, p) in paths.iter().enumerate() {
        let f = format!("linux.readonlyPaths[{i}]");
        let dest = text::abs_path(&f, Path::new(p))?;
        let dest = resolve_in_rootfs(&f, rootfs, &dest, fresh)?;
        if dest == "/" {
            return Err(PlanError::invalid(
                &format!("linux.readonlyPaths[{i}]"),
                "use root.readonly for the root filesystem",
            ));
        }
        text::fstab_field(&format!("linux.readonlyPaths[{i}]"), &dest)?;
        out.push(
            MountEntry {
                source: dest.trim_start_matches('/').to_string(),
                destination: dest,
                fstype: "none".into(),
                options: vec![
                    "rbind".into(),
                    "ro".into(),
                    "nosuid".into(),
                    "nodev".into(),
                    "noexec".into(),
                    "relative".into(),
                ],
                create_dir: None,
                optional: true,
            }
            .checked(&format!("linux.readonlyPaths[{i}]"))?,
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn recursive_attributes_are_told_apart_from_plain_flags() {
        for o in [
            "rro",
            "rrw",
            "rnosuid",
            "rnoexec",
            "rnodev",
            "ratime",
            "rnosymfollow",
        ] {
            assert!(is_recursive_attr(o), "{o}");
        }
        for o in [
            "ro", "rw", "relatime", "rprivate", "rshared", "rbind", "size=1m",
        ] {
            assert!(!is_recursive_attr(o), "{o}");
        }
        let supported = supported_options();
        assert!(supported.contains(&"rbind") && supported.contains(&"rslave"));
        assert!(!supported.iter().any(|o| is_recursive_attr(o)));
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
