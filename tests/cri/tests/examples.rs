//! examples/ checked: the YAML files are the Kubernetes objects they claim and agree with each
//! other and with the containerd configs; each containerd config starts the containerd version
//! it is for (with private paths), and that containerd's CRI plugin reports the runtime entry;
//! the shim options in them are valid shim configuration. (The example Pod is run through CRI
//! by `tests/cri.rs`, case `example_pod`.)

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use cri::client::Cri;
use cri::env::HANDLER;
use cri::examples::{examples_dir, is_dns_label, load_pod, load_runtime_class};
use e2e::ContainerdVersion;
use skip_harness::Failed;

const SHIM_RUNTIME_TYPE: &str = "io.containerd.proxmox-lxc.v2";

fn load_toml(name: &str) -> Result<toml::Table> {
    let path = examples_dir().join(name);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    text.parse::<toml::Table>()
        .with_context(|| format!("{} is not valid TOML", path.display()))
}

fn get<'a>(t: &'a toml::Table, path: &[&str]) -> Option<&'a toml::Value> {
    let (first, rest) = path.split_first()?;
    let mut v = t.get(*first)?;
    for k in rest {
        v = v.as_table()?.get(*k)?;
    }
    Some(v)
}

/// (file, config version, the CRI runtime plugin's table name)
const CONFIGS: [(&str, i64, &str); 2] = [
    ("containerd-1.x.toml", 2, "io.containerd.grpc.v1.cri"),
    ("containerd-2.x.toml", 3, "io.containerd.cri.v1.runtime"),
];

/// The runtime entry's table in a config.
fn runtime_entry<'a>(t: &'a toml::Table, plugin: &str) -> Result<&'a toml::Table> {
    get(t, &["plugins", plugin, "containerd", "runtimes", HANDLER])
        .and_then(|v| v.as_table())
        .ok_or_else(|| anyhow!("no runtime entry plugins.{plugin}.containerd.runtimes.{HANDLER}"))
}

fn check_yaml_objects() -> Result<()> {
    let rc = load_runtime_class()?;
    ensure!(
        rc.handler == HANDLER,
        "RuntimeClass handler {:?}, the containerd examples name the entry {HANDLER:?}",
        rc.handler
    );
    // Pods of the class must land only on nodes that have the runtime: the scheduler merges
    // the class's scheduling.nodeSelector into them (node.k8s.io/v1 Scheduling).
    let selector = rc
        .scheduling
        .as_ref()
        .and_then(|s| s.get("nodeSelector"))
        .and_then(|n| n.as_mapping())
        .filter(|m| !m.is_empty())
        .ok_or_else(|| anyhow!("RuntimeClass has no scheduling.nodeSelector"))?;
    for (key, value) in selector {
        let (key, value) = (key.as_str().unwrap_or(""), value.as_str().unwrap_or(""));
        // A label key: an optional DNS-subdomain prefix and '/', then a name of at most 63
        // characters; the value at most 63 (Kubernetes' IsQualifiedName / IsValidLabelValue).
        let (prefix, name) = key.rsplit_once('/').unwrap_or(("", key));
        ensure!(
            !name.is_empty()
                && name.len() <= 63
                && prefix.len() <= 253
                && prefix
                    .split('.')
                    .all(|l| prefix.is_empty() || is_dns_label(l))
                && value.len() <= 63,
            "nodeSelector {key:?}: {value:?} is not a label a node can carry"
        );
    }
    let pod = load_pod()?;
    ensure!(
        pod.spec.runtime_class_name.as_deref() == Some(rc.metadata.name.as_str()),
        "Pod runtimeClassName {:?}, RuntimeClass is {:?}",
        pod.spec.runtime_class_name,
        rc.metadata.name
    );
    Ok(())
}

/// The containerd configs: version, runtime entry, and shim options that the shim accepts.
fn check_config_files() -> Result<()> {
    for (file, version, plugin) in CONFIGS {
        let t = load_toml(file)?;
        ensure!(
            t.get("version").and_then(|v| v.as_integer()) == Some(version),
            "{file}: version should be {version}"
        );
        let entry = runtime_entry(&t, plugin).with_context(|| file.to_string())?;
        ensure!(
            entry.get("runtime_type").and_then(|v| v.as_str()) == Some(SHIM_RUNTIME_TYPE),
            "{file}: runtime_type should be {SHIM_RUNTIME_TYPE}"
        );
        let options = entry
            .get("options")
            .and_then(|v| v.as_table())
            .ok_or_else(|| anyhow!("{file}: the runtime entry has no options table"))?;
        if let Some(path) = options.get("ConfigPath").and_then(|v| v.as_str()) {
            // The path is the host file the package installs; check the packaged one.
            ensure!(
                path == shim::config::HOST_CONFIG_PATH,
                "{file}: ConfigPath {path} (the package installs {})",
                shim::config::HOST_CONFIG_PATH
            );
            let packaged = e2e::paths::workspace_root().join("packaging/config.toml");
            if packaged.is_file() {
                shim::config::ShimConfig::load_file(&packaged)
                    .map_err(|e| anyhow!("{}: {e}", packaged.display()))?;
            }
        } else {
            // Inline keys: containerd sends the table as the config body.
            let body = toml::to_string(options)?;
            shim::config::ShimConfig::parse(&body, file)
                .map_err(|e| anyhow!("{file}: inline shim options rejected by the shim: {e}"))?;
        }
    }
    Ok(())
}

fn merge(base: &mut toml::Table, overlay: toml::Table) {
    for (k, v) in overlay {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// Starts `version` with the example config plus private paths (root, state, sockets, CNI
/// config dir), asks its CRI plugin for its effective config and checks the runtime entry.
fn check_starts(version: &ContainerdVersion, file: &str, plugin: &str) -> Result<()> {
    let work = cri::env::work_base().join(format!("ex{}-{}", version.name, std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(work.join("net.d"))?;
    let result = run_with_example(version, file, plugin, &work);
    e2e::host::unmount_all_under(&work);
    if result.is_err() && std::env::var_os("CRI_KEEP").is_some() {
        return result;
    }
    let _ = std::fs::remove_dir_all(&work);
    result
}

fn run_with_example(
    version: &ContainerdVersion,
    file: &str,
    plugin: &str,
    work: &Path,
) -> Result<()> {
    let mut config = load_toml(file)?;
    let w = work.display();
    let mut private: toml::Table = format!(
        r#"root = "{w}/root"
state = "{w}/state"
[grpc]
address = "{w}/c.sock"
[ttrpc]
address = "{w}/c.sock.ttrpc"
[debug]
address = "{w}/debug.sock"
[metrics]
address = ""
[plugins."io.containerd.internal.v1.opt"]
path = "{w}/opt"
"#
    )
    .parse()?;
    let cni: toml::Table = if version.config_version >= 3 {
        format!(
            "[plugins.\"{plugin}\".cni]\nbin_dirs = [\"/usr/lib/cni\"]\nconf_dir = \"{w}/net.d\"\n"
        )
    } else {
        format!(
            "[plugins.\"{plugin}\".cni]\nbin_dir = \"/usr/lib/cni\"\nconf_dir = \"{w}/net.d\"\n"
        )
    }
    .parse()?;
    merge(&mut private, cni);
    if version.name != "1.6" {
        merge(
            &mut private,
            "[plugins.\"io.containerd.nri.v1.nri\"]\ndisable = true\n".parse()?,
        );
    }
    merge(&mut config, private);
    let config_path = work.join("config.toml");
    std::fs::write(&config_path, toml::to_string(&config)?)?;
    let log = std::fs::File::create(work.join("containerd.log"))?;
    let mut child = Command::new(version.containerd())
        .arg("--config")
        .arg(&config_path)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let socket = work.join("c.sock");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait()? {
            bail!(
                "containerd {} exited ({s}) with {file}:\n{}",
                version.name,
                e2e::containerd::tail(&work.join("containerd.log"), 20)
            );
        }
        if socket.exists() {
            if let Ok(s) = rt.block_on(async { Cri::connect(&socket).await?.status().await }) {
                break s;
            }
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "containerd {} with {file}: CRI did not answer in 30 s:\n{}",
                version.name,
                e2e::containerd::tail(&work.join("containerd.log"), 20)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = child.wait();
    let effective: serde_json::Value = serde_json::from_str(
        status
            .info
            .get("config")
            .ok_or_else(|| anyhow!("CRI Status verbose info has no config"))?,
    )?;
    let runtime = effective
        .pointer(&format!("/containerd/runtimes/{HANDLER}"))
        .ok_or_else(|| {
            anyhow!(
                "containerd {} did not load runtime {HANDLER}: {effective}",
                version.name
            )
        })?;
    ensure!(
        runtime.get("runtimeType").and_then(|v| v.as_str()) == Some(SHIM_RUNTIME_TYPE),
        "containerd {} runtime {HANDLER}: {runtime}",
        version.name
    );
    ensure!(
        runtime
            .get("options")
            .map(|o| o.is_object())
            .unwrap_or(false),
        "containerd {} runtime {HANDLER} has no options: {runtime}",
        version.name
    );
    Ok(())
}

fn main() {
    let mut cases = vec![
        skip_harness::case("yaml_objects", check_yaml_objects),
        skip_harness::case("containerd_config_files", check_config_files),
    ];
    let root = e2e::host::is_root();
    for (name, version) in ContainerdVersion::all() {
        let (file, _, plugin) = if name.starts_with("1.") {
            CONFIGS[0]
        } else {
            CONFIGS[1]
        };
        let test_name = format!(
            "containerd-{name}::starts_with_{}",
            file.trim_end_matches(".toml")
        );
        let missing = if !root {
            Some("needs root: starts containerd".to_string())
        } else {
            version.as_ref().err().cloned()
        };
        cases.push(skip_harness::case_unless(&test_name, missing, move || {
            let version = version.map_err(Failed::from)?;
            check_starts(&version, file, plugin).map_err(|e| Failed::from(format!("{e:#}")))
        }));
    }
    skip_harness::run(cases);
}
