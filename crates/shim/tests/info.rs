//! `-v` and `-info` as containerd runs them: `-info` answers a `RuntimeInfo` whose features name
//! the driver the runtime options (written to stdin by containerd 2.x) select.

use std::io::Write;
use std::process::{Command, Stdio};

use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::Message;
use containerd_shim::protos::types::introspection::RuntimeInfo;

const SHIM: &str = env!("CARGO_BIN_EXE_containerd-shim-proxmox-lxc-v2");

fn info(stdin: &[u8]) -> RuntimeInfo {
    let mut child = Command::new(SHIM)
        .arg("-info")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "-info failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    RuntimeInfo::parse_from_bytes(&out.stdout).unwrap()
}

fn features(info: &RuntimeInfo) -> serde_json::Value {
    serde_json::from_slice(&info.features.value).unwrap()
}

fn runtime_options(config_path: &str) -> Vec<u8> {
    // runtimeoptions.v1.Options { type_url = 1, config_path = 2 }
    let mut inner = Vec::new();
    {
        let mut os = protobuf::CodedOutputStream::vec(&mut inner);
        os.write_string(2, config_path).unwrap();
        os.flush().unwrap();
    }
    let any = Any {
        type_url: "runtimeoptions.v1.Options".into(),
        value: inner,
        ..Default::default()
    };
    any.write_to_bytes().unwrap()
}

#[test]
fn version_flag() {
    let out = Command::new(SHIM).arg("-v").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.contains(env!("CARGO_PKG_VERSION")), "{text}");
    assert!(text.contains("io.containerd.proxmox-lxc.v2"), "{text}");
}

#[test]
fn info_names_runtime_and_the_driver_the_options_select() {
    // Without options: the host file, absent on test machines, means the lxc driver.
    if !std::path::Path::new(shim::config::HOST_CONFIG_PATH).exists() {
        let plain = info(b"");
        assert_eq!(plain.name, "io.containerd.proxmox-lxc.v2");
        assert_eq!(plain.version.version, env!("CARGO_PKG_VERSION"));
        let f = features(&plain);
        assert_eq!(f["annotations"]["io.containerd.proxmox-lxc.driver"], "lxc");
        assert_eq!(f["ociVersionMax"], "1.2.0");
    } else {
        eprintln!("info: SKIP the no-options half: a host config exists");
    }

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        "driver = \"pve\"\n[pve]\nurl = \"https://pve.example:8006/api2/json\"\nnode = \"n1\"\n\
         token_id = \"a@pam!b\"\ntoken_secret_file = \"/nonexistent\"\n",
    )
    .unwrap();
    let pve = info(&runtime_options(&config.display().to_string()));
    assert_eq!(
        features(&pve)["annotations"]["io.containerd.proxmox-lxc.driver"],
        "pve"
    );

    // Options that name a missing file are an error that names it.
    let out = Command::new(SHIM)
        .arg("-info")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin
                .take()
                .unwrap()
                .write_all(&runtime_options("/nonexistent/config.toml"))?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("/nonexistent/config.toml"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
