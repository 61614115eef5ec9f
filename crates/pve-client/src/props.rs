//! Typed builders for Proxmox property strings (`net[n]`, `mp[n]`, `rootfs`, `features`) and
//! the parameters of CT create and config update. Values are checked so that nothing a
//! caller passes can add a key to a property string or a line to the config file.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::error::Error;
use crate::secret::Secret;

fn check_value(key: &str, value: &str) -> Result<(), Error> {
    if value.is_empty() {
        return Err(Error::Config(format!("empty value for '{key}'")));
    }
    if value.contains(',') || value.contains('=') || value.chars().any(char::is_control) {
        return Err(Error::Config(format!(
            "value for '{key}' must not contain ',', '=' or control characters: {value:?}"
        )));
    }
    Ok(())
}

fn check_text(key: &str, value: &str) -> Result<(), Error> {
    // Only a description may span lines (Proxmox stores it as comment lines).
    let newline_ok = key == "description";
    if value
        .chars()
        .any(|c| c.is_control() && !(newline_ok && c == '\n'))
    {
        return Err(Error::Config(format!(
            "value for '{key}' contains control characters"
        )));
    }
    Ok(())
}

/// A property string under construction: `default,k=v,k2=v2`.
#[derive(Debug, Default, Clone)]
struct PropString {
    default: Option<String>,
    pairs: Vec<(&'static str, String)>,
}

impl PropString {
    fn set(&mut self, key: &'static str, value: impl Into<String>) {
        let value = value.into();
        self.pairs.retain(|(k, _)| *k != key);
        self.pairs.push((key, value));
    }
    fn flag(&mut self, key: &'static str, on: bool) {
        self.set(key, if on { "1" } else { "0" });
    }
    fn render(&self) -> Result<String, Error> {
        let mut out = String::new();
        if let Some(d) = &self.default {
            check_value("default key", d)?;
            out.push_str(d);
        }
        for (k, v) in &self.pairs {
            check_value(k, v)?;
            if !out.is_empty() {
                out.push(',');
            }
            let _ = write!(out, "{k}={v}");
        }
        Ok(out)
    }
}

/// Parses a property string into its keys (the bare value under `default_key`).
pub fn parse_property_string(text: &str, default_key: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for part in text.split(',').filter(|p| !p.trim().is_empty()) {
        match part.split_once('=') {
            Some((k, v)) => map.insert(k.to_string(), v.to_string()),
            None => map.insert(default_key.to_string(), part.to_string()),
        };
    }
    map
}

/// IPv4 configuration of a network interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ipv4Config {
    /// DHCP.
    Dhcp,
    /// Not configured by Proxmox.
    Manual,
    /// Static `ADDRESS/PREFIX`.
    Cidr(String),
}

/// IPv6 configuration of a network interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ipv6Config {
    /// SLAAC.
    Auto,
    /// DHCPv6.
    Dhcp,
    /// Not configured by Proxmox.
    Manual,
    /// Static `ADDRESS/PREFIX`.
    Cidr(String),
}

/// `net[n]`: a veth interface.
#[derive(Debug, Clone)]
pub struct NetConfig(PropString);

impl NetConfig {
    /// An interface named `name` inside the CT (e.g. `eth0`).
    pub fn new(name: &str) -> Self {
        let mut p = PropString::default();
        p.set("name", name);
        NetConfig(p)
    }
    /// Host bridge (e.g. `vmbr0`).
    pub fn bridge(mut self, bridge: &str) -> Self {
        self.0.set("bridge", bridge);
        self
    }
    /// IPv4.
    pub fn ip(mut self, ip: Ipv4Config) -> Self {
        let v = match ip {
            Ipv4Config::Dhcp => "dhcp".to_string(),
            Ipv4Config::Manual => "manual".to_string(),
            Ipv4Config::Cidr(c) => c,
        };
        self.0.set("ip", v);
        self
    }
    /// IPv6.
    pub fn ip6(mut self, ip: Ipv6Config) -> Self {
        let v = match ip {
            Ipv6Config::Auto => "auto".to_string(),
            Ipv6Config::Dhcp => "dhcp".to_string(),
            Ipv6Config::Manual => "manual".to_string(),
            Ipv6Config::Cidr(c) => c,
        };
        self.0.set("ip6", v);
        self
    }
    /// IPv4 gateway.
    pub fn gw(mut self, gw: &str) -> Self {
        self.0.set("gw", gw);
        self
    }
    /// IPv6 gateway.
    pub fn gw6(mut self, gw: &str) -> Self {
        self.0.set("gw6", gw);
        self
    }
    /// MAC address.
    pub fn hwaddr(mut self, mac: &str) -> Self {
        self.0.set("hwaddr", mac);
        self
    }
    /// MTU.
    pub fn mtu(mut self, mtu: u16) -> Self {
        self.0.set("mtu", mtu.to_string());
        self
    }
    /// VLAN tag.
    pub fn tag(mut self, vlan: u16) -> Self {
        self.0.set("tag", vlan.to_string());
        self
    }
    /// Proxmox firewall on this interface.
    pub fn firewall(mut self, on: bool) -> Self {
        self.0.flag("firewall", on);
        self
    }
    /// The host configures the addresses (PVE 9.1+ `host-managed`).
    pub fn host_managed(mut self, on: bool) -> Self {
        self.0.flag("host-managed", on);
        self
    }
    /// Disconnected.
    pub fn link_down(mut self, on: bool) -> Self {
        self.0.flag("link_down", on);
        self
    }
    /// Rate limit in MB/s.
    pub fn rate(mut self, mbps: f64) -> Self {
        self.0.set("rate", format!("{mbps}"));
        self
    }
    /// `type=veth` (the only type).
    pub fn veth(mut self) -> Self {
        self.0.set("type", "veth");
        self
    }
    /// The property string.
    pub fn to_property_string(&self) -> Result<String, Error> {
        self.0.render()
    }
}

/// Mount options of rootfs and mount points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountOption {
    /// `discard`
    Discard,
    /// `lazytime`
    Lazytime,
    /// `noatime`
    Noatime,
    /// `nodev`
    Nodev,
    /// `noexec`
    Noexec,
    /// `nosuid`
    Nosuid,
}

impl MountOption {
    fn as_str(self) -> &'static str {
        match self {
            MountOption::Discard => "discard",
            MountOption::Lazytime => "lazytime",
            MountOption::Noatime => "noatime",
            MountOption::Nodev => "nodev",
            MountOption::Noexec => "noexec",
            MountOption::Nosuid => "nosuid",
        }
    }
}

fn join_mount_options(opts: &[MountOption]) -> String {
    opts.iter()
        .map(|o| o.as_str())
        .collect::<Vec<_>>()
        .join(";")
}

/// `rootfs`: the CT's root volume.
#[derive(Debug, Clone)]
pub struct RootFs(PropString);

impl RootFs {
    /// A new volume of `size_gib` GiB on `storage` (`STORAGE:SIZE`).
    pub fn new_volume(storage: &str, size_gib: f64) -> Self {
        RootFs(PropString {
            default: Some(format!("{storage}:{size_gib}")),
            pairs: Vec::new(),
        })
    }
    /// An existing volume (`local:100/vm-100-disk-0.raw`) or, root@pam only, a directory.
    pub fn volume(volume: &str) -> Self {
        RootFs(PropString {
            default: Some(volume.to_string()),
            pairs: Vec::new(),
        })
    }
    /// Read-only.
    pub fn ro(mut self, on: bool) -> Self {
        self.0.flag("ro", on);
        self
    }
    /// Mount options.
    pub fn mount_options(mut self, opts: &[MountOption]) -> Self {
        self.0.set("mountoptions", join_mount_options(opts));
        self
    }
    /// ACL support.
    pub fn acl(mut self, on: bool) -> Self {
        self.0.flag("acl", on);
        self
    }
    /// Include in replication.
    pub fn replicate(mut self, on: bool) -> Self {
        self.0.flag("replicate", on);
        self
    }
    /// The property string.
    pub fn to_property_string(&self) -> Result<String, Error> {
        self.0.render()
    }
}

/// `mp[n]`: a mount point.
#[derive(Debug, Clone)]
pub struct MountPoint(PropString);

impl MountPoint {
    /// A new volume of `size_gib` GiB on `storage`, mounted at `path` in the CT.
    pub fn new_volume(storage: &str, size_gib: f64, path: &str) -> Self {
        let mut p = PropString {
            default: Some(format!("{storage}:{size_gib}")),
            pairs: Vec::new(),
        };
        p.set("mp", path);
        MountPoint(p)
    }
    /// An existing volume, or a host directory (a bind mount: root@pam only, never via an
    /// API token) mounted at `path`.
    pub fn volume(volume: &str, path: &str) -> Self {
        let mut p = PropString {
            default: Some(volume.to_string()),
            pairs: Vec::new(),
        };
        p.set("mp", path);
        MountPoint(p)
    }
    /// Read-only.
    pub fn ro(mut self, on: bool) -> Self {
        self.0.flag("ro", on);
        self
    }
    /// Include in backups.
    pub fn backup(mut self, on: bool) -> Self {
        self.0.flag("backup", on);
        self
    }
    /// Mount options.
    pub fn mount_options(mut self, opts: &[MountOption]) -> Self {
        self.0.set("mountoptions", join_mount_options(opts));
        self
    }
    /// Shared between nodes (non-volume mount points).
    pub fn shared(mut self, on: bool) -> Self {
        self.0.flag("shared", on);
        self
    }
    /// Inherit owner and mode of the mount point directory.
    pub fn keepattrs(mut self, on: bool) -> Self {
        self.0.flag("keepattrs", on);
        self
    }
    /// The property string.
    pub fn to_property_string(&self) -> Result<String, Error> {
        self.0.render()
    }
}

/// `features`.
#[derive(Debug, Clone, Default)]
pub struct Features {
    /// Nesting.
    pub nesting: Option<bool>,
    /// keyctl() for unprivileged CTs.
    pub keyctl: Option<bool>,
    /// FUSE.
    pub fuse: Option<bool>,
    /// mknod() for unprivileged CTs.
    pub mknod: Option<bool>,
    /// `/sys` rw in unprivileged CTs.
    pub force_rw_sys: Option<bool>,
    /// File system types allowed to mount.
    pub mount: Vec<String>,
}

impl Features {
    /// The property string.
    pub fn to_property_string(&self) -> Result<String, Error> {
        let mut p = PropString::default();
        for (k, v) in [
            ("force_rw_sys", self.force_rw_sys),
            ("fuse", self.fuse),
            ("keyctl", self.keyctl),
            ("mknod", self.mknod),
            ("nesting", self.nesting),
        ] {
            if let Some(v) = v {
                p.flag(k, v);
            }
        }
        if !self.mount.is_empty() {
            for fs in &self.mount {
                if fs.is_empty() || !fs.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(Error::Config(format!("invalid file system type {fs:?}")));
                }
            }
            p.set("mount", self.mount.join(";"));
        }
        p.render()
    }
}

/// `ostype`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OsType {
    /// `unmanaged`: Proxmox does not touch the rootfs.
    Unmanaged,
    /// `debian`
    Debian,
    /// `ubuntu`
    Ubuntu,
    /// `alpine`
    Alpine,
}

impl OsType {
    fn as_str(self) -> &'static str {
        match self {
            OsType::Unmanaged => "unmanaged",
            OsType::Debian => "debian",
            OsType::Ubuntu => "ubuntu",
            OsType::Alpine => "alpine",
        }
    }
}

/// Request parameters, in order, with keys checked.
#[derive(Debug, Clone, Default)]
pub struct Params {
    pairs: Vec<(String, String)>,
    secrets: Vec<(String, Secret)>,
    error: Option<String>,
}

impl Params {
    pub(crate) fn set(&mut self, key: &str, value: impl Into<String>) {
        let value = value.into();
        self.pairs.retain(|(k, _)| k != key);
        self.pairs.push((key.to_string(), value));
    }
    fn set_checked(&mut self, key: &str, value: &str) {
        if let Err(e) = check_text(key, value) {
            self.error.get_or_insert(e.to_string());
        }
        self.set(key, value);
    }
    fn set_prop(&mut self, key: &str, value: Result<String, Error>) {
        match value {
            Ok(v) => self.set(key, v),
            Err(e) => {
                self.error.get_or_insert(e.to_string());
            }
        }
    }
    fn flag(&mut self, key: &str, on: bool) {
        self.set(key, if on { "1" } else { "0" });
    }
    /// The pairs to send; secrets are exposed only here, for the request body.
    pub(crate) fn to_form(&self) -> Result<Vec<(String, String)>, Error> {
        if let Some(e) = &self.error {
            return Err(Error::Config(e.clone()));
        }
        let mut out = self.pairs.clone();
        for (k, s) in &self.secrets {
            out.push((k.clone(), s.expose().to_string()));
        }
        Ok(out)
    }
    /// The plain (non-secret) pairs, for inspection and tests.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }
}

macro_rules! common_ct_options {
    ($t:ty) => {
        impl $t {
            /// `hostname`.
            pub fn hostname(mut self, name: &str) -> Self {
                self.params.set_checked("hostname", name);
                self
            }
            /// `memory` in MiB.
            pub fn memory_mib(mut self, mib: u64) -> Self {
                self.params.set("memory", mib.to_string());
                self
            }
            /// `swap` in MiB.
            pub fn swap_mib(mut self, mib: u64) -> Self {
                self.params.set("swap", mib.to_string());
                self
            }
            /// `cores`.
            pub fn cores(mut self, cores: u32) -> Self {
                self.params.set("cores", cores.to_string());
                self
            }
            /// `cpulimit` (0: none).
            pub fn cpulimit(mut self, cpus: f64) -> Self {
                self.params.set("cpulimit", format!("{cpus}"));
                self
            }
            /// `cpuunits`.
            pub fn cpuunits(mut self, units: u32) -> Self {
                self.params.set("cpuunits", units.to_string());
                self
            }
            /// `net[index]`.
            pub fn net(mut self, index: u8, net: &NetConfig) -> Self {
                self.params
                    .set_prop(&format!("net{index}"), net.to_property_string());
                self
            }
            /// `mp[index]`.
            pub fn mount_point(mut self, index: u16, mp: &MountPoint) -> Self {
                self.params
                    .set_prop(&format!("mp{index}"), mp.to_property_string());
                self
            }
            /// `features`.
            pub fn features(mut self, features: &Features) -> Self {
                self.params
                    .set_prop("features", features.to_property_string());
                self
            }
            /// `tags`, joined with `;` (each must match pve-tag `[a-z0-9_][a-z0-9_\-+.]*`).
            pub fn tags<S: AsRef<str>>(mut self, tags: &[S]) -> Self {
                let joined: Vec<&str> = tags.iter().map(|t| t.as_ref()).collect();
                for t in &joined {
                    let ok = t
                        .chars()
                        .next()
                        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                        && t.chars()
                            .all(|c| c.is_ascii_alphanumeric() || "_-+.".contains(c));
                    if !ok {
                        self.params
                            .error
                            .get_or_insert(format!("invalid tag {t:?}"));
                    }
                }
                self.params.set("tags", joined.join(";"));
                self
            }
            /// `description` (shown in the GUI; stored as comment lines).
            pub fn description(mut self, text: &str) -> Self {
                self.params.set_checked("description", text);
                self
            }
            /// `onboot`.
            pub fn onboot(mut self, on: bool) -> Self {
                self.params.flag("onboot", on);
                self
            }
            /// `ostype`.
            pub fn ostype(mut self, os: OsType) -> Self {
                self.params.set("ostype", os.as_str());
                self
            }
            /// `protection`.
            pub fn protection(mut self, on: bool) -> Self {
                self.params.flag("protection", on);
                self
            }
            /// `console`.
            pub fn console(mut self, on: bool) -> Self {
                self.params.flag("console", on);
                self
            }
            /// `tty` count.
            pub fn tty(mut self, n: u8) -> Self {
                self.params.set("tty", n.to_string());
                self
            }
            /// `entrypoint` (PVE 9.1+).
            pub fn entrypoint(mut self, cmd: &str) -> Self {
                self.params.set_checked("entrypoint", cmd);
                self
            }
            /// `env` (PVE 9.1+): NUL-separated `K=V`.
            pub fn env<K: AsRef<str>, V: AsRef<str>>(mut self, vars: &[(K, V)]) -> Self {
                let mut items = Vec::new();
                for (k, v) in vars {
                    let (k, v) = (k.as_ref(), v.as_ref());
                    let key_ok =
                        !k.is_empty() && k.chars().all(|c| c.is_alphanumeric() || c == '_');
                    if !key_ok || v.chars().any(char::is_control) {
                        self.params
                            .error
                            .get_or_insert(format!("invalid environment entry {k:?}"));
                    }
                    items.push(format!("{k}={v}"));
                }
                self.params.set("env", items.join("\0"));
                self
            }
            /// Any other parameter by name (checked by the server against the schema).
            pub fn param(mut self, key: &str, value: &str) -> Self {
                self.params.set_checked(key, value);
                self
            }
            /// The parameters (secrets left out).
            pub fn params(&self) -> &Params {
                &self.params
            }
        }
    };
}

/// Parameters of `POST /nodes/{node}/lxc` (create a CT).
#[derive(Debug, Clone)]
pub struct CreateCt {
    pub(crate) params: Params,
}

impl CreateCt {
    /// Create CT `vmid` from `ostemplate` (a volume such as `local:vztmpl/x.tar.zst`).
    pub fn new(vmid: u32, ostemplate: &str) -> Self {
        let mut params = Params::default();
        params.set("vmid", vmid.to_string());
        params.set_checked("ostemplate", ostemplate);
        CreateCt { params }
    }
    /// The VMID (set by [`CreateCt::new`], changed by the allocator).
    pub fn vmid(&self) -> Option<u32> {
        self.params
            .pairs
            .iter()
            .find(|(k, _)| k == "vmid")
            .and_then(|(_, v)| v.parse().ok())
    }
    /// Replaces the VMID.
    pub fn with_vmid(mut self, vmid: u32) -> Self {
        self.params.set("vmid", vmid.to_string());
        self
    }
    /// `rootfs`.
    pub fn rootfs(mut self, rootfs: &RootFs) -> Self {
        self.params.set_prop("rootfs", rootfs.to_property_string());
        self
    }
    /// Default `storage`.
    pub fn storage(mut self, storage: &str) -> Self {
        self.params.set_checked("storage", storage);
        self
    }
    /// `unprivileged` (Proxmox creates unprivileged CTs by default).
    pub fn unprivileged(mut self, on: bool) -> Self {
        self.params.flag("unprivileged", on);
        self
    }
    /// `start` after creation.
    pub fn start(mut self, on: bool) -> Self {
        self.params.flag("start", on);
        self
    }
    /// `arch`.
    pub fn arch(mut self, arch: &str) -> Self {
        self.params.set_checked("arch", arch);
        self
    }
    /// `pool`.
    pub fn pool(mut self, pool: &str) -> Self {
        self.params.set_checked("pool", pool);
        self
    }
    /// Root password inside the CT (sent, never logged).
    pub fn password(mut self, password: Secret) -> Self {
        self.params.secrets.retain(|(k, _)| k != "password");
        self.params.secrets.push(("password".into(), password));
        self
    }
}

common_ct_options!(CreateCt);

/// Parameters of `PUT /nodes/{node}/lxc/{vmid}/config`.
#[derive(Debug, Clone, Default)]
pub struct ConfigUpdate {
    pub(crate) params: Params,
    delete: Vec<String>,
}

impl ConfigUpdate {
    /// An empty update.
    pub fn new() -> Self {
        Self::default()
    }
    /// Only apply if the config still has this digest (from [`crate::CtConfig::digest`]).
    pub fn digest(mut self, digest: &str) -> Self {
        self.params.set_checked("digest", digest);
        self
    }
    /// Remove a key.
    pub fn delete(mut self, key: &str) -> Self {
        if key.is_empty()
            || !key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            self.params
                .error
                .get_or_insert(format!("invalid key to delete {key:?}"));
        }
        self.delete.push(key.to_string());
        self
    }
    /// `rootfs`.
    pub fn rootfs(mut self, rootfs: &RootFs) -> Self {
        self.params.set_prop("rootfs", rootfs.to_property_string());
        self
    }
    pub(crate) fn to_form(&self) -> Result<Vec<(String, String)>, Error> {
        let mut form = self.params.to_form()?;
        if !self.delete.is_empty() {
            form.push(("delete".into(), self.delete.join(",")));
        }
        Ok(form)
    }
}

common_ct_options!(ConfigUpdate);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_property_string() {
        let net = NetConfig::new("eth0")
            .bridge("vmbr0")
            .ip(Ipv4Config::Cidr("10.0.0.2/24".into()))
            .gw("10.0.0.1")
            .firewall(true)
            .veth();
        assert_eq!(
            net.to_property_string().unwrap(),
            "name=eth0,bridge=vmbr0,ip=10.0.0.2/24,gw=10.0.0.1,firewall=1,type=veth"
        );
        assert!(NetConfig::new("eth0,ip=1.2.3.4")
            .to_property_string()
            .is_err());
    }

    #[test]
    fn mount_points_and_features() {
        let mp = MountPoint::new_volume("local", 1.0, "/data")
            .ro(true)
            .backup(false);
        assert_eq!(
            mp.to_property_string().unwrap(),
            "local:1,mp=/data,ro=1,backup=0"
        );
        let rootfs = RootFs::new_volume("local", 8.0)
            .mount_options(&[MountOption::Noatime, MountOption::Nodev]);
        assert_eq!(
            rootfs.to_property_string().unwrap(),
            "local:8,mountoptions=noatime;nodev"
        );
        let f = Features {
            nesting: Some(true),
            mount: vec!["nfs".into(), "cifs".into()],
            ..Default::default()
        };
        assert_eq!(f.to_property_string().unwrap(), "nesting=1,mount=nfs;cifs");
        let parsed = parse_property_string("local:1,mp=/data,ro=1", "volume");
        assert_eq!(parsed["volume"], "local:1");
        assert_eq!(parsed["mp"], "/data");
    }

    #[test]
    fn rejects_injection() {
        let c = CreateCt::new(100, "local:vztmpl/x.tar.zst").hostname("a\nlxc.x: y");
        assert!(c.params.to_form().is_err());
        let c = CreateCt::new(100, "local:vztmpl/x.tar.zst").tags(&["ok", "bad;x"]);
        assert!(c.params.to_form().is_err());
        let u = ConfigUpdate::new().delete("net0,mp0");
        assert!(u.to_form().is_err());
    }

    #[test]
    fn secrets_stay_out_of_debug() {
        let c = CreateCt::new(100, "local:vztmpl/x.tar.zst").password(Secret::new("hunter22"));
        assert!(!format!("{c:?}").contains("hunter22"));
        assert!(c
            .params
            .to_form()
            .unwrap()
            .iter()
            .any(|(k, v)| k == "password" && v == "hunter22"));
    }
}
