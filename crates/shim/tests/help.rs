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

/// Runs the shim with `args` and no containerd environment; (exit code, stdout, stderr).
fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(SHIM)
        .args(args)
        .env_remove("TTRPC_ADDRESS")
        .env_remove("CONTAINERD_SHIM_PROXMOX_LXC_CONFIG")
        .output()
        .expect("run the shim");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Nothing here may fall through to the framework's `Env(NotPresent)` or a Debug-formatted
/// `InvalidArgument(..)`.
fn assert_no_framework_debug(text: &str) {
    for debug in ["NotPresent", "InvalidArgument(", "Env("] {
        assert!(!text.contains(debug), "framework error leaked: {text}");
    }
}

#[test]
fn no_arguments_says_what_the_binary_is_for() {
    let (code, stdout, stderr) = run(&[]);
    assert_eq!(code, Some(2), "{stdout}{stderr}");
    assert_no_framework_debug(&stderr);
    assert!(stderr.contains("no subcommand given"), "{stderr}");
    assert!(
        stderr.contains("containerd runs this binary itself"),
        "{stderr}"
    );
    assert!(
        stderr.contains(" check`") && stderr.contains("--help"),
        "{stderr}"
    );
}

#[test]
fn unknown_flag_is_named_as_typed() {
    let (code, _, stderr) = run(&["--foo"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert_no_framework_debug(&stderr);
    assert!(stderr.contains("unknown flag `--foo`"), "{stderr}");
    assert!(
        stderr.contains("-namespace") && stderr.contains("--help"),
        "{stderr}"
    );
}

#[test]
fn misspelt_subcommand_gets_a_suggestion() {
    let (code, _, stderr) = run(&["chec"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert_no_framework_debug(&stderr);
    assert!(
        stderr.contains("unknown subcommand `chec` (did you mean `check`?)"),
        "{stderr}"
    );
}

#[test]
fn start_by_hand_says_containerd_runs_it() {
    let (code, _, stderr) = run(&["-namespace", "default", "-id", "x", "start"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert_no_framework_debug(&stderr);
    assert!(stderr.contains("TTRPC_ADDRESS is not set"), "{stderr}");
}

#[test]
fn subcommand_help_is_the_subcommands() {
    for (sub, want) in [("check", "--containerd-config FILE"), ("gc", "--dry-run")] {
        for flag in ["--help", "-h"] {
            let (code, stdout, stderr) = run(&[sub, flag]);
            assert_eq!(code, Some(0), "{sub} {flag}: {stderr}");
            assert!(
                stdout.starts_with(&format!("usage: containerd-shim-proxmox-lxc-v2 {sub} ")),
                "{sub} {flag}:\n{stdout}"
            );
            assert!(stdout.contains(want), "{sub} {flag}:\n{stdout}");
            assert!(
                !stdout.contains("Run by containerd"),
                "{sub} {flag} printed the global help:\n{stdout}"
            );
        }
    }
    let (code, _, stderr) = run(&["check", "--bogus"]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("unknown argument `--bogus`") && stderr.contains("check --help"),
        "{stderr}"
    );
    let (code, _, stderr) = run(&["gc", "--config"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("--config needs a file"), "{stderr}");
}

#[test]
fn check_with_a_missing_config_file_fails() {
    let (code, stdout, stderr) = run(&["check", "--config", "/nonexistent/config.toml"]);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(!stdout.contains("all checks passed"), "{stdout}");
    assert!(
        stdout.contains(
            "PROBLEM  configuration file /nonexistent/config.toml (named by --config) does not exist"
        ),
        "{stdout}"
    );
    // gc too: a named file must exist.
    let (code, _, stderr) = run(&["gc", "--config", "/nonexistent/config.toml"]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("/nonexistent/config.toml") && stderr.contains("No such file"),
        "{stderr}"
    );
}

#[test]
fn version_flags_still_answer() {
    for flag in ["-v", "-version", "--version"] {
        let (code, stdout, _) = run(&[flag]);
        assert_eq!(code, Some(0), "{flag}");
        assert!(
            stdout.contains("Runtime: io.containerd.proxmox-lxc.v2"),
            "{flag}: {stdout}"
        );
    }
}
