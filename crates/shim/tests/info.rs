//! `-v` and `-info` as containerd runs them: `-info` answers a `RuntimeInfo` whose features name
//! the driver the runtime options (written to stdin by containerd 2.x) select.
//!
//! A case this machine cannot run (a host config in the way, no runc to compare with) is
//! reported ignored with the reason (tests/skip-harness).

use std::io::Write;
use std::process::{Command, Stdio};

use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::Message;
use containerd_shim::protos::types::introspection::RuntimeInfo;
use skip_harness::Outcome;

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

fn version_flag() -> Outcome {
    let out = Command::new(SHIM).arg("-v").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.contains(env!("CARGO_PKG_VERSION")), "{text}");
    assert!(text.contains("io.containerd.proxmox-lxc.v2"), "{text}");
    Ok(())
}

/// Without options: no host file (as on test machines) means the lxc driver.
fn info_names_runtime_and_the_lxc_driver_without_options() -> Outcome {
    skip_harness::require(
        !std::path::Path::new(shim::config::HOST_CONFIG_PATH).exists(),
        format!(
            "{} exists: it selects the driver without options",
            shim::config::HOST_CONFIG_PATH
        ),
    )?;
    let plain = info(b"");
    assert_eq!(plain.name, "io.containerd.proxmox-lxc.v2");
    assert_eq!(plain.version.version, env!("CARGO_PKG_VERSION"));
    let f = features(&plain);
    assert_eq!(f["annotations"]["io.containerd.proxmox-lxc.driver"], "lxc");
    assert_eq!(f["ociVersionMax"], "1.2.0");
    Ok(())
}

fn info_names_the_driver_the_options_select() -> Outcome {
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
    Ok(())
}

fn strings(v: &serde_json::Value) -> std::collections::BTreeSet<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// runc's recursive mount attributes (libcontainer/specconv, `recAttrFlags`).
const RECURSIVE_ATTRS: &[&str] = &[
    "rro",
    "rrw",
    "rnosuid",
    "rsuid",
    "rnodev",
    "rdev",
    "rnoexec",
    "rexec",
    "rnodiratime",
    "rdiratime",
    "rrelatime",
    "rnorelatime",
    "rnoatime",
    "ratime",
    "rstrictatime",
    "rnostrictatime",
    "rnosymfollow",
    "rsymfollow",
];

/// The document's shape, whatever runc is installed.
fn features_have_runcs_sections_and_the_recursive_attributes_the_kernel_applies() -> Outcome {
    let ours = features(&info(b""));
    for key in ["hooks", "mountOptions", "linux", "ociVersionMin"] {
        assert!(ours.get(key).is_some(), "features lack {key}: {ours}");
    }
    let options = strings(&ours["mountOptions"]);
    // The recursive attributes where this kernel's mount_setattr(2) applies them (all of them
    // on Linux 5.14 and later), none where it cannot.
    let support = shim::host::mounts::mount_attrs::kernel_support();
    for attr in RECURSIVE_ATTRS {
        let symlinks = attr.ends_with("symfollow");
        let expected = if symlinks {
            support.nosymfollow
        } else {
            support.available
        };
        assert_eq!(
            options.contains(*attr),
            expected,
            "{attr} with mount_setattr {support:?}: {options:?}"
        );
    }
    Ok(())
}

fn features_speak_runcs_vocabulary_and_leave_out_only_known_gaps() -> Outcome {
    skip_harness::require_tool("runc", "runc")?;
    let ours = features(&info(b""));
    let options = strings(&ours["mountOptions"]);
    let out = Command::new("runc").arg("features").output().unwrap();
    assert!(out.status.success(), "runc features failed");
    let runc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();

    // Same sections; every linux section runc has, the shim answers too.
    for key in runc.as_object().unwrap().keys() {
        assert!(
            ours.get(key).is_some(),
            "runc reports {key}, the shim does not"
        );
    }
    for key in runc["linux"].as_object().unwrap().keys() {
        assert!(
            ours["linux"].get(key).is_some(),
            "runc reports linux.{key}, the shim does not"
        );
    }
    assert_eq!(strings(&ours["hooks"]), strings(&runc["hooks"]));

    // Mount options: the same words; runc's extra ones are exactly tmpcopyup, remount and
    // acl/noacl (MS_POSIXACL, not in LXC's flag table), which LXC does not apply, and the
    // recursive attributes the kernel cannot apply (runc lists them whatever the kernel).
    let runc_options = strings(&runc["mountOptions"]);
    assert!(
        options.is_subset(&runc_options),
        "options runc does not know: {:?}",
        options.difference(&runc_options).collect::<Vec<_>>()
    );
    for extra in runc_options.difference(&options) {
        // Which recursive attributes the kernel lacks: the case before checks that.
        assert!(
            RECURSIVE_ATTRS.contains(&extra.as_str())
                || ["tmpcopyup", "remount", "acl", "noacl"].contains(&extra.as_str()),
            "runc supports mount option {extra}, the shim neither does nor says why"
        );
    }

    // Namespaces: all of runc's but time (not exercised); user among them.
    let ns = strings(&ours["linux"]["namespaces"]);
    let runc_ns = strings(&runc["linux"]["namespaces"]);
    assert!(ns.is_subset(&runc_ns));
    assert!(
        ns.contains("user"),
        "user namespaces work (CRI case user_namespaces)"
    );
    for extra in runc_ns.difference(&ns) {
        assert!(["time"].contains(&extra.as_str()), "namespace {extra}");
    }
    // Idmapped mounts, which containerd 2.x and its CRI require with `user` for a
    // hostUsers: false pod (runc lists them from 1.2 on).
    assert_eq!(ours["linux"]["mountExtensions"]["idmap"]["enabled"], true);
    if let Some(idmap) = runc["linux"]["mountExtensions"]["idmap"]["enabled"].as_bool() {
        assert!(
            idmap,
            "runc says it has no idmapped mounts, the shim says it has"
        );
    }

    // Capabilities: every one the kernel has, by runc's names.
    let caps = strings(&ours["linux"]["capabilities"]);
    assert!(caps.contains("CAP_SYS_ADMIN") && caps.contains("CAP_CHOWN"));
    assert!(caps.is_subset(&strings(&runc["linux"]["capabilities"])));

    // Seccomp: the actions LXC applies exactly; runc's extra ones are approximated (KILL_PROCESS
    // as KILL, LOG as ALLOW) or refused (TRACE, NOTIFY).
    let seccomp = &ours["linux"]["seccomp"];
    let runc_seccomp = &runc["linux"]["seccomp"];
    assert_eq!(seccomp["enabled"], runc_seccomp["enabled"]);
    let actions = strings(&seccomp["actions"]);
    let runc_actions = strings(&runc_seccomp["actions"]);
    assert!(actions.is_subset(&runc_actions));
    for extra in runc_actions.difference(&actions) {
        assert!(
            [
                "SCMP_ACT_KILL_PROCESS",
                "SCMP_ACT_LOG",
                "SCMP_ACT_TRACE",
                "SCMP_ACT_NOTIFY"
            ]
            .contains(&extra.as_str()),
            "seccomp action {extra}"
        );
    }
    assert_eq!(
        strings(&seccomp["operators"]),
        strings(&runc_seccomp["operators"])
    );
    assert!(strings(&seccomp["archs"]).is_subset(&strings(&runc_seccomp["archs"])));
    // cgroup v1 and v2 as runc (the systemd driver is not offered).
    assert_eq!(ours["linux"]["cgroup"]["v1"], runc["linux"]["cgroup"]["v1"]);
    assert_eq!(ours["linux"]["cgroup"]["v2"], runc["linux"]["cgroup"]["v2"]);
    Ok(())
}

skip_harness::main!(
    version_flag,
    info_names_runtime_and_the_lxc_driver_without_options,
    info_names_the_driver_the_options_select,
    features_have_runcs_sections_and_the_recursive_attributes_the_kernel_applies,
    features_speak_runcs_vocabulary_and_leave_out_only_known_gaps,
);
