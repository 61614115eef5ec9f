//! `--help` (and `-h`, `-help`) prints the usage instead of the shim framework's
//! "flag provided but not defined" error.

use std::process::Command;

const SHIM: &str = env!("CARGO_BIN_EXE_containerd-shim-proxmox-lxc-v2");

#[test]
fn help_flags_print_usage() {
    for flag in ["--help", "-h", "-help"] {
        let out = Command::new(SHIM).arg(flag).output().expect("run the shim");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{flag}: exit {:?}, stderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        for want in [
            "Usage:",
            "check [--config FILE]",
            "start",
            "delete",
            "-namespace NS",
            "/etc/containerd-shim-proxmox-lxc/config.toml",
            "io.containerd.proxmox-lxc.v2",
        ] {
            assert!(text.contains(want), "{flag}: usage lacks {want:?}:\n{text}");
        }
    }
}
