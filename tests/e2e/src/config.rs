//! The containerd config every test harness here runs: its own root, state, sockets and debug
//! log under one work dir, the CRI plugin with the `runc` and `proxmox-lxc` runtime handlers and
//! CNI. Version 2 for containerd 1.6/1.7, version 3 for 2.x (the CRI plugin split into
//! `io.containerd.cri.v1.runtime` and `.images`). The plain ctr tests take [`CriPlugin`]'s
//! defaults; the CRI tests (tests/cri) turn on what a Kubernetes node has.

use std::path::Path;

use crate::ContainerdVersion;

/// The runtime handler of this project's runtime (a RuntimeClass names it).
pub const HANDLER: &str = "proxmox-lxc";
/// CNI binaries from Debian's containernetworking-plugins.
pub const CNI_BIN_DIR: &str = "/usr/lib/cni";

/// How the runtime entry passes options to the shim.
#[derive(Clone, Debug)]
pub enum ShimOptions {
    /// `ConfigPath = FILE` (every containerd).
    ConfigPath(String),
    /// Inline TOML keys in the `options` table (containerd 1.7+ sends them as `config_body`).
    /// The text is the shim config itself, nested under the options table.
    Inline(String),
}

/// A further runtime handler in the CRI config (the benchmarks' other shims): `handler` is
/// what RunPodSandbox names, `runtime_type` what containerd resolves to a shim binary.
#[derive(Clone, Debug)]
pub struct ExtraRuntime {
    pub handler: String,
    pub runtime_type: String,
    /// Whether it takes this shim's options (a second build of this shim does).
    pub shim_options: bool,
}

/// How the CRI plugin is set up beyond what every harness shares.
#[derive(Clone, Debug, Default)]
pub struct CriPlugin {
    /// Leave AppArmor on (containerd's default): on a node with AppArmor the CRI plugin gives
    /// every non-privileged container its default profile. Off for the plain ctr tests.
    pub apparmor: bool,
    /// The pause image the plugin pins as the sandbox image, pulled through the registry hosts
    /// in `WORK/certs.d` with the overlayfs snapshotter (pods need one; ctr does not).
    pub pause_image: Option<String>,
    /// Options of the `proxmox-lxc` handler (none: the shim reads its host file).
    pub shim_options: Option<ShimOptions>,
    /// Handlers beside `runc` and `proxmox-lxc`.
    pub extra_runtimes: Vec<ExtraRuntime>,
    /// Only the first CNI network config (`max_conf_num = 1`), the one pods are wired to.
    pub one_cni_network: bool,
}

/// The CRI plugin's table of runtimes for a config version.
fn runtimes_prefix(config_version: u32) -> &'static str {
    if config_version >= 3 {
        "plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes"
    } else {
        "plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes"
    }
}

/// The `options` table of runtime handler `handler`: the shim's options as `options` says.
fn options_table(runtimes_prefix: &str, handler: &str, options: &ShimOptions) -> String {
    match options {
        ShimOptions::ConfigPath(path) => {
            format!("[{runtimes_prefix}.{handler}.options]\n  ConfigPath = \"{path}\"\n")
        }
        ShimOptions::Inline(body) => {
            // Nested shim tables ([lxc]) become [...options.lxc].
            let mut out = format!("[{runtimes_prefix}.{handler}.options]\n");
            for line in body.lines() {
                let t = line.trim();
                if let Some(inner) = t.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
                    out.push_str(&format!("[{runtimes_prefix}.{handler}.options.{inner}]\n"));
                } else if !t.is_empty() {
                    out.push_str(&format!("  {t}\n"));
                }
            }
            out
        }
    }
}

/// The runtime handlers: runc, proxmox-lxc (with its options) and `cri.extra_runtimes`.
fn runtimes(config_version: u32, cri: &CriPlugin) -> String {
    let prefix = runtimes_prefix(config_version);
    let mut out = format!(
        "[{prefix}.runc]\n  runtime_type = \"io.containerd.runc.v2\"\n\n\
         [{prefix}.{HANDLER}]\n  runtime_type = \"io.containerd.proxmox-lxc.v2\"\n"
    );
    if let Some(options) = &cri.shim_options {
        out.push('\n');
        out.push_str(&options_table(prefix, HANDLER, options));
    }
    for rt in &cri.extra_runtimes {
        out.push_str(&format!(
            "\n[{prefix}.{}]\n  runtime_type = \"{}\"\n",
            rt.handler, rt.runtime_type
        ));
        if let (true, Some(options)) = (rt.shim_options, &cri.shim_options) {
            out.push('\n');
            out.push_str(&options_table(prefix, &rt.handler, options));
        }
    }
    out
}

/// The config of a containerd of `version` whose work dir is `work`.
pub fn render_config(work: &Path, version: &ContainerdVersion, cri: &CriPlugin) -> String {
    let w = work.display();
    let disable_apparmor = !cri.apparmor;
    let runtimes = runtimes(version.config_version, cri);
    let max_conf_num = if cri.one_cni_network {
        "  max_conf_num = 1\n"
    } else {
        ""
    };
    let mut out = format!(
        r#"version = {config_version}
root = "{w}/root"
state = "{w}/state"
oom_score = 0

[grpc]
  address = "{w}/containerd.sock"

[ttrpc]
  address = "{w}/containerd.sock.ttrpc"

[debug]
  address = "{w}/debug.sock"
  level = "debug"

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{w}/opt"
"#,
        config_version = if version.config_version >= 3 { 3 } else { 2 },
    );
    // containerd 1.6 has no NRI plugin; 1.7 and 2.x would start one.
    if version.config_version >= 3 || version.name != "1.6" {
        out.push_str("\n[plugins.\"io.containerd.nri.v1.nri\"]\n  disable = true\n");
    }
    if version.config_version >= 3 {
        out.push_str(
            "\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  stream_server_address = \"127.0.0.1\"\n  stream_server_port = \"0\"\n",
        );
        if let Some(pause) = &cri.pause_image {
            out.push_str(&format!(
                r#"
[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"

[plugins."io.containerd.cri.v1.images".pinned_images]
  sandbox = "{pause}"

[plugins."io.containerd.cri.v1.images".registry]
  config_path = "{w}/certs.d"
"#
            ));
        }
        out.push_str(&format!(
            r#"
[plugins."io.containerd.cri.v1.runtime"]
  restrict_oom_score_adj = true
  disable_apparmor = {disable_apparmor}

[plugins."io.containerd.cri.v1.runtime".containerd]
  default_runtime_name = "runc"

{runtimes}
[plugins."io.containerd.cri.v1.runtime".cni]
  bin_dirs = ["{CNI_BIN_DIR}"]
  conf_dir = "{w}/cni/net.d"
{max_conf_num}"#
        ));
    } else {
        let sandbox_image = match &cri.pause_image {
            Some(pause) => format!("  sandbox_image = \"{pause}\"\n"),
            None => String::new(),
        };
        let snapshotter = if cri.pause_image.is_some() {
            "  snapshotter = \"overlayfs\"\n"
        } else {
            ""
        };
        out.push_str(&format!(
            r#"
[plugins."io.containerd.grpc.v1.cri"]
  restrict_oom_score_adj = true
  disable_apparmor = {disable_apparmor}
{sandbox_image}  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

[plugins."io.containerd.grpc.v1.cri".containerd]
  default_runtime_name = "runc"
{snapshotter}
{runtimes}
[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "{CNI_BIN_DIR}"
  conf_dir = "{w}/cni/net.d"
{max_conf_num}"#
        ));
        if cri.pause_image.is_some() {
            out.push_str(&format!(
                "\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"{w}/certs.d\"\n"
            ));
        }
    }
    out
}
