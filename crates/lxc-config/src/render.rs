//! The two renderers: a complete `lxc.container.conf`, and a Proxmox CT config plus include.

use std::fmt::Write as _;
use std::path::Path;

use crate::text;
use crate::{CgroupMode, ContainerPlan};

/// Choices of the Proxmox rendering that are the operator's, not the spec's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PveOptions {
    /// Keep lxcfs's mount hook, which a node's `common.conf` pulls in (lxcfs package:
    /// `common.conf.d/00-lxcfs.conf`, `lxc.hook.mount = /usr/share/lxcfs/lxc.mount.hook`): it
    /// binds lxcfs's `/proc/meminfo`, `cpuinfo`, `stat`, `uptime`, ... and
    /// `/sys/devices/system/cpu` over the container's, so `free` shows the container's limit.
    /// Off (the default), the workload's `/proc` is the kernel's, as under runc.
    pub lxcfs: bool,
}

/// A Proxmox CT config (`/etc/pve/lxc/VMID.conf`) and the LXC include file it references.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PveRender {
    pub ct_conf: String,
    pub include: String,
}

fn line(out: &mut String, key: &str, value: &str) {
    let _ = writeln!(out, "{key} = {value}");
}

/// Raw keys Proxmox VE accepts in a CT config (pve-container `is_valid_lxc_conf_key`, and the
/// key pattern of its config parser); everything else goes into the include file.
pub(crate) fn pve_accepts(key: &str) -> bool {
    const EXACT: &[&str] = &[
        "lxc.apparmor.profile",
        "lxc.apparmor.allow_incomplete",
        "lxc.apparmor.allow_nesting",
        "lxc.apparmor.raw",
        "lxc.selinux.context",
        "lxc.include",
        "lxc.arch",
        "lxc.uts.name",
        "lxc.signal.halt",
        "lxc.signal.reboot",
        "lxc.signal.stop",
        "lxc.init.cmd",
        "lxc.init.cwd",
        "lxc.init.uid",
        "lxc.init.gid",
        "lxc.init.groups",
        "lxc.pty.max",
        "lxc.console.logfile",
        "lxc.console.path",
        "lxc.tty.max",
        "lxc.devtty.dir",
        "lxc.hook.autodev",
        "lxc.autodev",
        "lxc.kmsg",
        "lxc.mount.fstab",
        "lxc.mount.entry",
        "lxc.mount.auto",
        "lxc.rootfs.mount",
        "lxc.cap.drop",
        "lxc.cap.keep",
        "lxc.seccomp.profile",
        "lxc.seccomp.notify.proxy",
        "lxc.seccomp.notify.cookie",
        "lxc.idmap",
        "lxc.hook.pre-start",
        "lxc.hook.pre-mount",
        "lxc.hook.mount",
        "lxc.hook.start",
        "lxc.hook.stop",
        "lxc.hook.post-stop",
        "lxc.hook.clone",
        "lxc.hook.destroy",
        "lxc.hook.version",
        "lxc.log.level",
        "lxc.log.file",
        "lxc.start.auto",
        "lxc.start.delay",
        "lxc.start.order",
        "lxc.group",
        "lxc.environment",
        "lxc.environment.runtime",
        "lxc.environment.hooks",
        "lxc.sysctl.fs.mqueue",
        "lxc.sysctl.kernel.msgmax",
        "lxc.sysctl.kernel.msgmnb",
        "lxc.sysctl.kernel.msgmni",
        "lxc.sysctl.kernel.sem",
        "lxc.sysctl.kernel.shmall",
        "lxc.sysctl.kernel.shmmax",
        "lxc.sysctl.kernel.shmmni",
        "lxc.sysctl.kernel.shm_rmid_forced",
    ];
    let pattern_ok = key.starts_with("lxc.")
        && key.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'.')
        });
    pattern_ok
        && (EXACT.contains(&key)
            || key.starts_with("lxc.cgroup2.")
            || key.starts_with("lxc.prlimit.")
            || key.starts_with("lxc.net."))
}

impl ContainerPlan {
    fn cgroup_prefix(&self) -> &'static str {
        match self.cgroup_mode {
            CgroupMode::Legacy => "lxc.cgroup",
            CgroupMode::Unified => "lxc.cgroup2",
        }
    }

    /// Cgroup limit and device lines, in order.
    fn cgroup_lines(&self) -> Vec<(String, String)> {
        let prefix = self.cgroup_prefix();
        let mut out: Vec<(String, String)> = self
            .cgroup
            .iter()
            .map(|(k, v)| (format!("{prefix}.{k}"), v.clone()))
            .collect();
        for r in &self.device_rules {
            let kind = if r.allow { "allow" } else { "deny" };
            out.push((format!("{prefix}.devices.{kind}"), r.rule.clone()));
        }
        out
    }

    /// `lxc.rootfs.options`: the propagation only; read-only comes from the mount hook.
    fn rootfs_options(&self) -> Option<String> {
        self.rootfs_propagation.clone()
    }

    /// Whether LXC's monitor (`lxc-start`) must see the container stop: it moves the spec's
    /// `linux.netDevices` back to the host under their own names when the container's network
    /// namespace ends (LXC's network.c, `lxc_restore_phys_nics_to_netns`); the kernel alone
    /// would give a physical one a new name and destroy a virtual one.
    pub fn needs_monitor_at_stop(&self) -> bool {
        self.entries
            .iter()
            .any(|(k, v)| k.starts_with("lxc.net.") && k.ends_with(".type") && v == "phys")
    }

    /// [`ContainerPlan::render_lxc`] for a container whose monitor may go once the init runs:
    /// `lxc.monitor.signal.pdeath = 0` (LXC >= 3.1, start.c `do_start`) keeps the init alive
    /// when `lxc-start` ends, instead of the default SIGKILL.
    pub fn render_lxc_without_monitor(&self) -> String {
        let mut out = self.render_lxc();
        line(&mut out, "lxc.monitor.signal.pdeath", "0");
        out
    }

    /// A complete `lxc.container.conf` for plain LXC (`lxc-start -n NAME -P LXCPATH`). It
    /// includes no distribution config: all security comes from the spec.
    pub fn render_lxc(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# LXC config for OCI container {}, generated by lxc-config. Do not edit.",
            self.name
        );
        line(
            &mut out,
            "lxc.rootfs.path",
            &format!("dir:{}", self.rootfs.display()),
        );
        // The rootfs is containerd's (the bundle's): `lxc-destroy` must never delete it
        // (LXC's lxccontainer.c, `container_destroy`, destroys only a managed rootfs).
        line(&mut out, "lxc.rootfs.managed", "0");
        if let Some(o) = self.rootfs_options() {
            line(&mut out, "lxc.rootfs.options", &o);
        }
        for (k, v) in &self.entries {
            line(&mut out, k, v);
        }
        for m in &self.mounts {
            line(&mut out, "lxc.mount.entry", &m.lxc_value());
        }
        if let Some(dir) = &self.cgroup_dir {
            line(&mut out, "lxc.cgroup.dir.container", dir);
            line(
                &mut out,
                "lxc.cgroup.dir.monitor",
                &format!("lxc.monitor/{}", self.name),
            );
        }
        for (k, v) in self.cgroup_lines() {
            line(&mut out, &k, &v);
        }
        out
    }

    /// The Proxmox-native keys of the CT config (unsorted).
    fn pve_native_keys(&self) -> Vec<(&'static str, String)> {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "x86" => "i386",
            "aarch64" => "arm64",
            "arm" => "armhf",
            "riscv64" => "riscv64",
            other => other,
        };
        let mut native: Vec<(&'static str, String)> = vec![
            ("arch", arch.to_string()),
            ("console", "0".into()),
            ("onboot", "0".into()),
            ("ostype", "unmanaged".into()),
            ("tty", "0".into()),
        ];
        let p = &self.pve;
        if let Some(c) = p.cpulimit {
            let s = format!("{c:.2}");
            let s = s.trim_end_matches('0').trim_end_matches('.').to_string();
            if s != "0" {
                native.push(("cpulimit", s));
            }
        }
        if let Some(u) = p.cpuunits {
            native.push(("cpuunits", u.to_string()));
        }
        if let Some(h) = &p.hostname {
            native.push(("hostname", h.clone()));
        }
        if let Some(m) = p.memory_mib {
            native.push(("memory", m.to_string()));
        }
        // Not `ro=1`: Proxmox would mount the root read-only before the mount entries, so
        // missing mount targets could not be created; the mount hook makes it read-only.
        native.push(("rootfs", self.rootfs.display().to_string()));
        if let Some(s) = p.swap_mib {
            native.push(("swap", s.to_string()));
        }
        if !self.tags.is_empty() {
            // Callers may add tags; they are reduced to valid ones here, so none can break out.
            let tags: Vec<String> = self.tags.iter().map(|t| text::pve_tag(t)).collect();
            native.push(("tags", tags.join(";")));
        }
        if p.unprivileged {
            native.push(("unprivileged", "1".into()));
        }
        native
    }

    /// The include file's header and the resets of what `common.conf` sets.
    fn include_header(&self, options: PveOptions) -> String {
        let mut inc = String::new();
        let _ = writeln!(
            inc,
            "# LXC include for OCI container {}, generated by lxc-config. Do not edit.",
            self.name
        );
        let _ = writeln!(
            inc,
            "# Resets what common.conf sets, so that only the spec decides."
        );
        for k in [
            "lxc.tty.dir",
            "lxc.cap.drop",
            "lxc.cap.keep",
            "lxc.mount.auto",
            "lxc.mount.entry",
            "lxc.seccomp.profile",
            "lxc.hook.clone",
            "lxc.cgroup",
            "lxc.cgroup2",
        ] {
            // LXC 6 (Proxmox VE 9) no longer knows the v1 key at all.
            if k == "lxc.cgroup" && self.lxc_version.0 >= 6 {
                continue;
            }
            let _ = writeln!(inc, "{k} =");
        }
        if !options.lxcfs {
            // Only lxcfs sets a mount hook on a node (pve-container's `01-pve.conf` sets
            // pre-start, autodev and post-stop hooks, which must stay); the spec's own mount
            // hook comes after this include, in the CT config.
            let _ = writeln!(inc, "lxc.hook.mount =");
        }
        inc
    }

    /// The Proxmox rendering: `ct_conf` for `/etc/pve/lxc/VMID.conf` (Proxmox-native keys, then
    /// the raw `lxc.*` keys Proxmox accepts) and `include`, to be written at `include_path`, with
    /// the keys Proxmox does not accept and the resets of what `common.conf` (pulled in by
    /// `ostype: unmanaged`) sets but the spec must decide.
    pub fn render_pve(&self, include_path: &Path) -> PveRender {
        self.render_pve_with(include_path, PveOptions::default())
    }

    /// [`ContainerPlan::render_pve`] with the operator's choices.
    pub fn render_pve_with(&self, include_path: &Path, options: PveOptions) -> PveRender {
        let mut ct = String::new();
        for l in self.description.split('\n') {
            let _ = writeln!(ct, "#{}", text::pve_encode_text(l));
        }
        let mut native = self.pve_native_keys();
        native.sort_by(|a, b| a.0.cmp(b.0));
        for (k, v) in &native {
            let _ = writeln!(ct, "{k}: {v}");
        }

        let mut inc = self.include_header(options);
        if let Some(o) = self.rootfs_options() {
            line(&mut inc, "lxc.rootfs.options", &o);
        }
        // The include path comes from the runtime, not the spec; still, it must stay on its line.
        let include = include_path
            .to_str()
            .and_then(|s| text::value("include_path", s).ok())
            .filter(|s| s.starts_with('/'))
            .unwrap_or_else(|| "/invalid-include-path".to_string());
        let _ = writeln!(ct, "lxc.include: {include}");
        let mut raw: Vec<(String, String)> = self.entries.clone();
        raw.extend(
            self.mounts
                .iter()
                .map(|m| ("lxc.mount.entry".to_string(), m.lxc_value())),
        );
        raw.extend(self.cgroup_lines());
        for (k, v) in raw {
            if pve_accepts(&k) {
                let _ = writeln!(ct, "{k}: {v}");
            } else {
                line(&mut inc, &k, &v);
            }
        }
        PveRender {
            ct_conf: ct,
            include: inc,
        }
    }
}
