//! Pods through containerd's CRI plugin with `runtime_handler = "proxmox-lxc"`, driven over
//! gRPC the way the kubelet drives it.
//!
//! Test names: `containerd-VERSION::CASE`. One containerd per version is shared by its cases
//! (started on first use, torn down at the end), with one local registry for all of them. Each
//! case makes its own pods and, after removing them, checks that nothing of them is left: no
//! shim process, no LXC container in the shim's lxcpath, no mount, no network namespace.
//! The run fails if the final teardown had to clean anything up by force.
//!
//! Every case runs on every containerd available. containerd 1.6 (Debian's) passes the shim its
//! options through `ConfigPath`; 1.7 and 2.1 (unpacked by scripts/setup.sh) through inline keys
//! (`config_body`). Each points the shim's lxcpath into the run's work dir, and the cases check
//! the LXC containers appear there: the proof that runtime options reach the shim.
//!
//! VERSION is the containerd's own (`containerd --version`): the system's is 1.6 on this build
//! host (Debian 12) and 1.7 in the node twin (Debian 13).
//!
//! The same cases run once more with the `pve` driver (`containerd-SYSTEM-pve::CASE`, on the
//! system's containerd: `containerd-1.6-pve` here, `containerd-1.7-pve` in the twin): the shim's
//! `ConfigPath` file says `driver = "pve"` and points at the Proxmox API test server, which plays
//! the node with real LXC (CT configs in its own copy of /etc/pve/lxc, `lxc-start -F` in
//! /var/lib/lxc as `pve-container@VMID` does). There every container is a CT: the cases find
//! it by its tag, check it is listed in `/cluster/resources` with the pod's tags, and check that
//! no CT config, LXC container, lock or `lxc-start` is left.
//!
//! The cases live in modules by subject (lifecycle, network, security, resources, namespaces,
//! mounts, and pve for the pve driver's own); `harness`, `pod` and `node` are what they share.
//! One test binary, so one containerd per version and one registry serve every case.

mod harness;
mod lifecycle;
mod mounts;
mod namespaces;
mod network;
mod node;
mod pod;
mod pve;
mod resources;
mod security;

use std::path::Path;

use e2e::ContainerdVersion;
use harness::{env_for, envs, test_prefix, CriEnv, Driver, Result, SHARED};
use skip_harness::Failed;

type Case = fn(&CriEnv) -> Result<()>;

fn skip_reason() -> Option<String> {
    if !e2e::host::is_root() {
        return Some("not root: containerd, LXC and CNI need root".into());
    }
    for (path, pkg) in [
        ("/usr/lib/cni/bridge", "containernetworking-plugins"),
        ("/usr/lib/cni/host-local", "containernetworking-plugins"),
        ("/usr/lib/cni/loopback", "containernetworking-plugins"),
        (cri::registry::REGISTRY_BINARY, "docker-registry"),
        ("/usr/bin/lxc-start", "lxc"),
        (e2e::image::BUSYBOX_PATH, "busybox-static"),
    ] {
        if !Path::new(path).exists() {
            return Some(format!("{path} missing: install {pkg} (scripts/setup.sh)"));
        }
    }
    None
}

/// Why one case cannot run on this host, if it cannot (reported ignored with the reason).
fn case_unavailable(case: &str) -> Option<String> {
    match case {
        "pids_limit" if !node::cgroup_v2_only() => Some(
            "a cgroup v1 host: CRI's unified resources are cgroup v2 files (the node twin runs it)"
                .into(),
        ),
        _ => None,
    }
}

fn main() {
    let args = skip_harness::Arguments::from_args();
    if e2e::host::is_root() {
        cri::env::reap_stale();
    }
    let mut trials = Vec::new();
    let skip = skip_reason();
    if let Some(reason) = &skip {
        eprintln!("cri: SKIPPING every CRI test: {reason}");
    }
    let main_cases: [(&str, Case); 13] = [
        ("lifecycle", lifecycle::case_lifecycle),
        ("exec_streaming", lifecycle::case_exec_streaming),
        ("networking", network::case_networking),
        ("host_network", network::case_host_network),
        ("image_config", lifecycle::case_image_config),
        ("security_context", security::case_security_context),
        ("privileged", security::case_privileged),
        ("masked_paths", security::case_masked_paths),
        ("resources", resources::case_resources),
        ("apparmor_confinement", security::case_apparmor_confinement),
        (
            "share_process_namespace",
            namespaces::case_share_process_namespace,
        ),
        ("sysctls", namespaces::case_sysctls),
        (
            "mounts_and_termination_message",
            mounts::case_mounts_and_termination_message,
        ),
    ];
    let extra: [(&str, Case); 11] = [
        ("one_shim_per_pod", lifecycle::case_one_shim_per_pod),
        ("mount_propagation", mounts::case_mount_propagation),
        ("example_pod", lifecycle::case_example_pod),
        ("exec_tty", lifecycle::case_exec_tty),
        ("oom_killed", resources::case_oom_killed),
        ("pids_limit", resources::case_pids_limit),
        ("restart_attempt", lifecycle::case_restart_attempt),
        ("crash_loop", lifecycle::case_crash_loop),
        ("log_reopen", lifecycle::case_log_reopen),
        ("fast_exits", lifecycle::case_fast_exits),
        ("user_namespaces", namespaces::case_user_namespaces),
    ];
    // Every case on every containerd with the lxc driver (1.6 passes options by ConfigPath, 1.7
    // and 2.1 inline), and on the system's containerd with the pve driver.
    let mut setups: Vec<(
        String,
        std::result::Result<ContainerdVersion, String>,
        Driver,
    )> = ContainerdVersion::all()
        .into_iter()
        .map(|(name, version)| (name, version, Driver::Lxc))
        .collect();
    let system = ContainerdVersion::system();
    let system_name = system
        .as_ref()
        .map(|v| v.name.clone())
        .unwrap_or_else(|_| "system".into());
    setups.push((format!("{system_name}-pve"), system, Driver::Pve));
    for (name, version, driver) in setups {
        let mut cases: Vec<(&str, Case)> = main_cases
            .iter()
            .chain(extra.iter())
            .cloned()
            .chain(std::iter::once(("smoke", lifecycle::case_smoke as Case)))
            .collect();
        if driver == Driver::Pve {
            cases.push(("proxmox_cts_listed_with_pod_tags", pve::case_pve_cts_listed));
        }
        for (case, f) in cases {
            let test_name = format!("containerd-{name}::{case}");
            let unavailable = match (&skip, &version) {
                (Some(r), _) => Some(r.clone()),
                (None, Err(e)) => Some(e.clone()),
                (None, Ok(_)) => case_unavailable(case),
            };
            let version = version.clone();
            trials.push(skip_harness::case_unless(
                &test_name,
                unavailable,
                move || {
                    let version = version.map_err(Failed::from)?;
                    let env =
                        env_for(&version, driver).map_err(|e| Failed::from(format!("{e:#}")))?;
                    f(&env).map_err(|e| {
                        Failed::from(format!(
                            "{e:#}\n(containerd log: {})",
                            env.log_path().display()
                        ))
                    })
                },
            ));
        }
    }
    let conclusion = skip_harness::run_with(&args, trials);
    // Teardown of every environment that was started; leftovers fail the run.
    let mut leftovers = Vec::new();
    let started: Vec<_> = envs()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .drain()
        .filter_map(|(_, e)| e.ok())
        .collect();
    for env in started {
        for l in env.teardown() {
            leftovers.push(format!("{}: {l}", test_prefix(&env)));
        }
    }
    for l in pve::teardown() {
        leftovers.push(format!("the pve node: {l}"));
    }
    if let Some(Ok(shared)) = SHARED.get() {
        shared.registry.stop();
        let _ = std::fs::remove_dir_all(&shared.registry.dir);
    }
    if !leftovers.is_empty() {
        eprintln!("cri: teardown found leftovers:\n{}", leftovers.join("\n"));
        std::process::exit(101);
    }
    conclusion.exit();
}
