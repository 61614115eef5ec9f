//! The parity matrix: every case runs the same container under runc's shim
//! (`io.containerd.runc.v2`) and under this shim (`io.containerd.proxmox-lxc.v2`) through a real
//! private containerd, and compares what the workload printed (stdout and stderr apart) and how
//! it ended.
//!
//! Test names: `containerd-VERSION::RUNTIME::CASE`, RUNTIME being `runc` (the case run under
//! runc alone, checking the case's own expectations: the reference is sound) or `proxmox-lxc`
//! (the case under runc and then under the shim; the shim must meet the same expectations and
//! produce the same transcript). Run one with `cargo test -p e2e --test parity -- NAME`.
//!
//! One containerd per version is shared by all cases (started on first use, torn down at the
//! end); cases that restart containerd get one of their own. After every case the container
//! must be gone without a trace: no task, container, process, mount, LXC container or cgroup.
//! Teardown fails the run if containerd or any shim had to be cleaned up by force.
//!
//! The cases live in modules by subject (process, mounts, namespaces, security, userns, exec,
//! lifecycle, metrics); `harness` and `run` are what they share. One test binary, so one
//! containerd per version serves every case.

mod exec;
mod harness;
mod lifecycle;
mod metrics;
mod mounts;
mod namespaces;
mod process;
mod run;
mod security;
mod userns;

use std::path::Path;
use std::sync::Arc;

use e2e::containerd::reap_stale_work_dirs;
use e2e::{host, paths, Containerd, ContainerdVersion, RUNC_RUNTIME, SHIM_RUNTIME};
use harness::{shared_instances, work_base, Ctx, Result, Transcript};
use run::run_trial;
use skip_harness::Failed;

pub type CaseFn = fn(&Ctx) -> Result<Transcript>;

#[derive(Clone, Copy)]
pub struct Case {
    pub name: &'static str,
    pub func: CaseFn,
    /// Runs on a containerd of its own (it restarts containerd).
    pub private_containerd: bool,
    /// Compare the transcripts of runc and the shim (false where they legitimately differ
    /// and the case asserts each runtime's own expectation).
    pub compare: bool,
}

const fn case(name: &'static str, func: CaseFn) -> Case {
    Case {
        name,
        func,
        private_containerd: false,
        compare: true,
    }
}

fn cases() -> Vec<Case> {
    vec![
        case("exit_status_0", process::exit_status_0),
        case(
            "exit_status_3_stdout_stderr_split",
            process::exit_status_3_split,
        ),
        case("exit_status_255", process::exit_status_255),
        case("large_output", process::large_output),
        case("pid1_and_exact_argv", process::pid1_and_argv),
        case("kill_9_self_as_pid1_is_ignored", process::kill_self_as_pid1),
        case(
            "child_killed_by_signal_137",
            process::child_killed_by_signal,
        ),
        case(
            "sigkill_from_outside_exits_137",
            process::sigkill_from_outside,
        ),
        case("env", process::env_vars),
        case("env_value_with_newlines_is_data", process::env_newlines),
        case("cwd_flag", process::cwd_flag),
        case(
            "image_config_entrypoint_env_workdir_user",
            process::image_config,
        ),
        case("image_config_with_args", process::image_entrypoint_args),
        case("stdin_piped_then_eof", process::stdin_piped),
        case("stdin_large", process::stdin_large),
        case("tty", process::tty),
        case("read_only_root", mounts::read_only_root),
        case("writable_root", mounts::writable_root),
        case("bind_mount_rw", mounts::bind_mount_rw),
        case("bind_mount_ro", mounts::bind_mount_ro),
        case(
            "mount_propagation_rshared_both_ways",
            mounts::propagation_rshared,
        ),
        case(
            "mount_propagation_rslave_host_to_container",
            mounts::propagation_rslave,
        ),
        case(
            "mount_propagation_rprivate_neither",
            mounts::propagation_rprivate,
        ),
        case("bind_mount_rro_submount_read_only", mounts::bind_mount_rro),
        case(
            "bind_mount_rnosuid_rnoexec_reach_submounts_not_later_mounts",
            mounts::bind_mount_rnosuid_rnoexec,
        ),
        case("network_namespace_private", namespaces::net_private),
        case("network_host", namespaces::net_host),
        case("hostname", namespaces::hostname),
        case("long_namespace_and_id", namespaces::long_namespace_and_id),
        case("capabilities_default", security::caps_default),
        case("capabilities_add_drop", security::caps_add_drop),
        case("capabilities_privileged", security::caps_privileged),
        case("seccomp_default_profile", security::seccomp_default),
        case(
            "seccomp_default_profile_reaches_exec_signal_status",
            security::seccomp_exec,
        ),
        case(
            "exec_confined_from_the_start",
            security::exec_confined_from_the_start,
        ),
        case("user_from_image", security::user_numeric),
        case("userns_uidmap", userns::userns_uidmap),
        case("userns_exec_and_tty", userns::userns_exec_and_tty),
        case("userns_tty", userns::userns_tty),
        case("umask_and_rlimits", process::umask_rlimits),
        Case {
            // runc 1.1 (Debian 12's) ignores linux.personality: see the case.
            compare: false,
            ..case(
                "personality_linux32_init_and_exec",
                process::personality_linux32,
            )
        },
        case("filesystem_view", process::filesystem_view),
        case("exec_output_status_stdin_user_cwd", exec::exec_basics),
        case("exec_tty", exec::exec_tty),
        case("exec_tty_large_output_intact", exec::exec_tty_large_output),
        case("kill_sigusr1_sigterm_trapped", lifecycle::kill_trapped),
        case(
            "kill_sigterm_ignored_by_pid1_then_sigkill",
            lifecycle::kill_term_ignored,
        ),
        case("ps", lifecycle::task_ps),
        case("pause_resume", lifecycle::pause_resume),
        case("metrics", metrics::metrics),
        case("log_uri_file", lifecycle::log_uri_file),
        case(
            "shim_killed_then_task_rm_leaves_nothing",
            lifecycle::shim_killed,
        ),
        Case {
            compare: false,
            ..case("bad_input_unsupported_field_names_it", lifecycle::bad_input)
        },
        Case {
            private_containerd: true,
            ..case(
                "detached_survives_containerd_restart",
                lifecycle::survives_restart,
            )
        },
    ]
}

/// Why the end-to-end tests cannot run on this machine, if they cannot.
fn machine_skip_reason() -> Option<String> {
    if !host::is_root() {
        return Some("not root: the end-to-end tests start containerd and LXC containers".into());
    }
    for tool in ["lxc-start", "lxc-attach", "runc", "containerd-shim-runc-v2"] {
        if paths::which(tool).is_none() {
            return Some(format!("{tool} is not installed (run scripts/setup.sh)"));
        }
    }
    if !Path::new(e2e::image::BUSYBOX_PATH).is_file() {
        return Some("busybox-static is not installed (run scripts/setup.sh)".into());
    }
    None
}

fn main() {
    let args = skip_harness::Arguments::from_args();
    let machine_skip = machine_skip_reason();
    if let Some(reason) = &machine_skip {
        eprintln!("e2e: SKIPPING every end-to-end test: {reason}");
    } else {
        reap_stale_work_dirs(&work_base());
    }
    let shim_dir = paths::shim_dir();
    match paths::shim_binary(&shim_dir) {
        Some(p) => eprintln!("e2e: shim binary {}", p.display()),
        None => eprintln!(
            "e2e: shim binary not built ({} missing): every proxmox-lxc case will fail",
            shim_dir.join(e2e::SHIM_BINARY).display()
        ),
    }

    let mut trials = Vec::new();
    for (name, version) in ContainerdVersion::all() {
        let version_skip = match &version {
            Ok(_) => None,
            Err(reason) => {
                eprintln!("e2e: SKIPPING containerd {name} tests: {reason}");
                Some(reason.clone())
            }
        };
        for c in cases() {
            for runtime in [RUNC_RUNTIME, SHIM_RUNTIME] {
                let test_name = format!(
                    "containerd-{name}::{}::{}",
                    if runtime == SHIM_RUNTIME {
                        "proxmox-lxc"
                    } else {
                        "runc"
                    },
                    c.name
                );
                let missing = machine_skip.clone().or_else(|| version_skip.clone());
                let version = version.clone();
                trials.push(skip_harness::case_unless(&test_name, missing, move || {
                    let v = version.map_err(Failed::from)?;
                    run_trial(&v, &c, runtime).map_err(|e| Failed::from(format!("{e:#}")))
                }));
            }
        }
    }

    let conclusion = skip_harness::run_with(&args, trials);

    // Tear down the shared containerds; anything cleaned up by force is a failure.
    let mut leftovers = Vec::new();
    let instances: Vec<(String, Result<Arc<Containerd>, String>)> = shared_instances()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .drain()
        .collect();
    for (name, instance) in instances {
        if let Ok(cd) = instance {
            for l in cd.teardown(&format!("c{name}-shared")) {
                leftovers.push(format!("containerd {name}: {l}"));
            }
        }
    }
    let _ = std::fs::remove_dir_all(work_base().join(format!("scratch-{}", std::process::id())));
    if !leftovers.is_empty() {
        eprintln!("e2e: teardown had to clean up by force (a runtime left these behind):");
        for l in &leftovers {
            eprintln!("  {l}");
        }
        std::process::exit(101);
    }
    conclusion.exit();
}
