//! The pve driver against the Proxmox API test server with its default in-memory node (tasks
//! finish before the first status poll): what a lifecycle costs in API requests, the CT config
//! it writes, the VMID claim under Proxmox's lock, and that failures leave nothing behind.
//! A case this machine cannot run (not root) is reported ignored with the reason
//! (tests/skip-harness).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use std::sync::Arc;

mod common;

use pve_test_server::{
    async_trait, BackendResult, CtConfig, Fault, FaultRule, NodeBackend, NodeContext, TaskLog,
    TestServer,
};
use shim::config::PveSection;
use shim::driver::pve::{PveContainer, PveDriver};
use shim::driver::{CreateSpec, Driver, NodeContainer};
use shim::host::process::exits::ChildExits;
use skip_harness::{Outcome, Trial};

const TOKEN: &str = "root@pam!drv";
const SECRET: &str = "7a1e5c3b-2d4f-4e6a-8b9c-0d1e2f3a4b5c";

fn settings(dir: &Path, server: &TestServer, range: [u32; 2]) -> PveSection {
    common::pve_settings(dir, server, (TOKEN, SECRET), range)
}

/// A test server with the shim's token, whose tasks finish at once.
fn server() -> pve_test_server::TestServerBuilder {
    TestServer::builder()
        .token(TOKEN, SECRET)
        .task_duration(Duration::ZERO)
}

/// A scratch directory with a container state directory in it.
fn scratch() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");
    std::fs::create_dir_all(&state_dir).unwrap();
    (dir, state_dir)
}

/// The driver of a new shim process (with its own child-exit watcher) for `server`, claiming
/// VMIDs in `range`, its settings in `dir`.
async fn new_driver(dir: &Path, server: &TestServer, range: [u32; 2]) -> PveDriver {
    let exits = ChildExits::start().await.unwrap();
    PveDriver::new(&settings(dir, server, range), exits).unwrap()
}

/// What most tests start from: a scratch directory, a driver for the server and the test plan.
struct Setup {
    dir: tempfile::TempDir,
    state_dir: std::path::PathBuf,
    driver: PveDriver,
    plan: lxc_config::ContainerPlan,
}

impl Setup {
    async fn new(server: &TestServer, range: [u32; 2]) -> Setup {
        let (dir, state_dir) = scratch();
        let driver = new_driver(dir.path(), server, range).await;
        let plan = plan(dir.path(), &state_dir);
        Setup {
            dir,
            state_dir,
            driver,
            plan,
        }
    }

    /// Creates container `id` (namespace "default") of the test plan.
    async fn create(&self, id: &str) -> Box<dyn NodeContainer> {
        let spec = spec(id, &self.plan, &self.state_dir);
        self.driver.create(&spec).await.unwrap()
    }
}

fn plan(dir: &Path, state_dir: &Path) -> lxc_config::ContainerPlan {
    let mut ann = std::collections::HashMap::new();
    ann.insert(
        "io.kubernetes.cri.sandbox-namespace".to_string(),
        "default".to_string(),
    );
    ann.insert(
        "io.kubernetes.cri.sandbox-name".to_string(),
        "web".to_string(),
    );
    ann.insert(
        "io.kubernetes.cri.container-name".to_string(),
        "nginx".to_string(),
    );
    common::plan_with("c1", dir, state_dir, ann)
}

/// A node whose CTs run a workload that ends at once (`ctr run --rm IMAGE true`): started,
/// then stopped by itself before containerd deletes it.
struct ExitsAtOnce;

#[async_trait]
impl NodeBackend for ExitsAtOnce {
    async fn start(&self, _: &NodeContext, _: u32, _: &CtConfig, _: &TaskLog) -> BackendResult {
        Ok(())
    }
    async fn stop(
        &self,
        _: &NodeContext,
        _: u32,
        _: &CtConfig,
        _: Option<Duration>,
        _: &TaskLog,
    ) -> BackendResult {
        Ok(())
    }
    async fn is_running(&self, _: &NodeContext, _: u32) -> bool {
        false
    }
}

async fn lifecycle_costs_at_most_eight_requests_and_leaves_nothing() -> Outcome {
    let server = server()
        .backend(Arc::new(ExitsAtOnce))
        .start()
        .await
        .unwrap();
    let Setup {
        dir,
        state_dir,
        driver,
        plan,
    } = Setup::new(&server, [980000, 980009]).await;
    // The first candidate exists already: the claim must move on to the next one.
    std::fs::write(server.context().config_path(980000), "arch: amd64\n").unwrap();
    server.reset_counts();
    let name = driver
        .create(&CreateSpec {
            namespace: "k8s.io",
            id: "c1",
            plan: &plan,
            state_dir: &state_dir,
        })
        .await
        .unwrap();
    assert_eq!(name.name(), "980001");
    let conf = std::fs::read_to_string(server.context().config_path(980001)).unwrap();
    for want in [
        "ostype: unmanaged",
        "onboot: 0",
        "k8s-ns-default",
        "k8s-pod-web",
        "k8s-ctr-nginx",
        "k8s-cid-",
        &format!("rootfs: {}", dir.path().join("rootfs").display()),
        &format!(
            "lxc.include: {}",
            state_dir.join("pve-include.conf").display()
        ),
        "lxc.init.cmd: ",
    ] {
        assert!(conf.contains(want), "{want:?} missing in:\n{conf}");
    }
    assert_eq!(server.total_requests(), 0, "create needs no API request");
    name.start().await.unwrap();
    // The node loads the config with Proxmox's raw-key rules and warns about (and drops)
    // every key it does not accept: the driver writes none of those.
    for upid in server.tasks().iter().filter(|u| u.contains(":vzstart:")) {
        let log = server.task_log(upid).unwrap();
        assert!(log.iter().all(|l| !l.starts_with("WARN")), "{log:?}");
    }
    name.destroy().await.unwrap();
    let counts: BTreeMap<String, u64> = server.request_counts();
    println!(
        "requests per lifecycle: {} {counts:?}",
        server.total_requests()
    );
    // One POST start and one DELETE, each followed by status polls until its task is done
    // (one when the task finished before the first poll; the server runs it concurrently, so
    // sometimes two); no config, status or log requests.
    assert_eq!(
        server.requests("POST", "/nodes/{node}/lxc/{vmid}/status/start"),
        1
    );
    assert_eq!(server.requests("DELETE", "/nodes/{node}/lxc/{vmid}"), 1);
    assert_eq!(
        server.total_requests(),
        2 + server.requests("GET", "/nodes/{node}/tasks/{upid}/status"),
        "{counts:?}"
    );
    assert!(server.total_requests() <= 8, "{counts:?}");
    assert!(!server.context().config_path(980001).exists());
    // Destroying again is not an error.
    name.destroy().await.unwrap();
    Ok(())
}

async fn failures_carry_proxmox_message() -> Outcome {
    let server = server().start().await.unwrap();
    let setup = Setup::new(&server, [980100, 980109]).await;
    let driver = &setup.driver;
    let name = setup.create("c2").await;
    server.inject(
        FaultRule::new(Fault::FailTask("no space left (injected)".into()))
            .on("POST", "/nodes/{node}/lxc/{vmid}/status/start"),
    );
    let err = name.start().await.unwrap_err().to_string();
    assert!(err.contains("no space left (injected)"), "{err}");
    let found = driver.find_by_container("default", "c2").await.unwrap();
    assert_eq!(found, vec![name.name().parse::<u32>().unwrap()]);
    name.destroy().await.unwrap();
    assert!(driver
        .find_by_container("default", "c2")
        .await
        .unwrap()
        .is_empty());
    Ok(())
}

fn spec<'a>(
    id: &'a str,
    plan: &'a lxc_config::ContainerPlan,
    state_dir: &'a Path,
) -> CreateSpec<'a> {
    CreateSpec {
        namespace: "default",
        id,
        plan,
        state_dir,
    }
}

/// 20 back-to-back `ctr run --rm`: each a new shim process (a new driver), each CT created,
/// started, ended and destroyed. The test node enforces systemd's start limit of
/// `pve-container@VMID` (5 in 10 s), so reusing the lowest free VMID fails the sixth.
async fn back_to_back_short_lived_containers_do_not_hit_systemds_start_limit() -> Outcome {
    let server = server()
        .backend(Arc::new(ExitsAtOnce))
        .start()
        .await
        .unwrap();
    let (dir, state_dir) = scratch();
    let plan = plan(dir.path(), &state_dir);
    let mut used = Vec::new();
    for _ in 0..20 {
        let driver = new_driver(dir.path(), &server, [980200, 980299]).await;
        let name = driver
            .create(&spec("run-rm", &plan, &state_dir))
            .await
            .unwrap();
        name.start().await.unwrap();
        name.destroy().await.unwrap();
        used.push(name.name().to_string());
    }
    let distinct: std::collections::BTreeSet<&String> = used.iter().collect();
    assert_eq!(distinct.len(), 20, "VMIDs reused: {used:?}");
    for upid in server.tasks() {
        let log = server.task_log(&upid).unwrap();
        assert!(
            !log.iter().any(|l| l.contains("attempted too often")),
            "{upid}: {log:?}"
        );
    }
    Ok(())
}

/// When the limit is hit anyway (something else started the CT), the driver waits out
/// systemd's interval and starts it then.
async fn a_start_refused_by_the_start_limit_is_retried_after_the_interval() -> Outcome {
    let server = server()
        .backend(Arc::new(ExitsAtOnce))
        .start_limit(pve_test_server::StartLimit {
            burst: 1,
            interval: Duration::from_secs(10),
        })
        .start()
        .await
        .unwrap();
    let setup = Setup::new(&server, [980300, 980309]).await;
    let name = setup.create("limited").await;
    // The one start the limit allows.
    name.start().await.unwrap();
    name.start().await.unwrap();
    let refused = server
        .tasks()
        .iter()
        .filter(|u| {
            server
                .task_log(u)
                .unwrap()
                .iter()
                .any(|l| l.contains("attempted too often"))
        })
        .count();
    assert_eq!(
        refused, 1,
        "the second start was refused once, then retried"
    );
    name.destroy().await.unwrap();
    Ok(())
}

/// A start task that ends with `WARNINGS: n` left a running CT: success, as in Proxmox.
async fn a_start_with_warnings_is_a_start() -> Outcome {
    let server = server().start().await.unwrap();
    let setup = Setup::new(&server, [980400, 980409]).await;
    let name = setup.create("warned").await;
    server.inject(
        FaultRule::new(Fault::TaskWarnings(vec![
            "lxc.idmap: unmapped uid (injected)".into(),
        ]))
        .on("POST", "/nodes/{node}/lxc/{vmid}/status/start"),
    );
    // A raw key Proxmox does not accept: dropped with a task warning, the CT starts.
    let path = server.context().config_path(name.name().parse().unwrap());
    let mut conf = std::fs::read_to_string(&path).unwrap();
    conf.push_str("lxc.no.such.key: 1\n");
    std::fs::write(&path, conf).unwrap();
    name.start().await.unwrap();
    let status = server
        .tasks()
        .into_iter()
        .find(|u| u.contains(":vzstart:"))
        .and_then(|u| server.task_log(&u))
        .unwrap();
    assert!(status.iter().any(|l| l == "TASK WARNINGS: 2"), "{status:?}");
    assert!(
        status
            .iter()
            .any(|l| l.starts_with("WARN: ")
                && l.contains("unable to parse config: lxc.no.such.key")),
        "{status:?}"
    );
    name.destroy().await.unwrap();
    Ok(())
}

/// Update of a running container's resources: the CT config shows the new limits (what the
/// Proxmox GUI reads); a token that may not change them fails the update, naming why.
async fn an_update_shows_its_limits_in_the_ct_config() -> Outcome {
    const LIMITED: &str = "root@pam!limited";
    let server = server()
        .token(LIMITED, SECRET)
        .token_privileges(LIMITED, &["VM.Audit", "VM.PowerMgmt", "VM.Allocate"])
        .start()
        .await
        .unwrap();
    let (dir, state_dir) = scratch();
    let exits = ChildExits::start().await.unwrap();
    let settings = settings(dir.path(), &server, [980500, 980509]);
    let driver = PveDriver::new(&settings, exits.clone()).unwrap();
    let plan = plan(dir.path(), &state_dir);
    let name = driver
        .create(&spec("updated", &plan, &state_dir))
        .await
        .unwrap();
    name.start().await.unwrap();
    let resources: oci_spec::runtime::LinuxResources = serde_json::from_value(serde_json::json!({
        "memory": {"limit": 200 * 1024 * 1024, "swap": 264 * 1024 * 1024},
        "cpu": {"quota": 150000, "period": 100000, "shares": 1024}
    }))
    .unwrap();
    name.update_resources(&resources).await.unwrap();
    let conf = std::fs::read_to_string(server.context().config_path(name.name().parse().unwrap()))
        .unwrap();
    for want in ["memory: 200", "swap: 64", "cpulimit: 1.5", "cpuunits: 39"] {
        assert!(conf.lines().any(|l| l == want), "{want:?} in\n{conf}");
    }
    // Nothing Proxmox shows: no request.
    server.reset_counts();
    name.update_resources(&Default::default()).await.unwrap();
    assert_eq!(server.total_requests(), 0);

    let mut limited = settings.clone();
    limited.token_id = LIMITED.into();
    let weak = PveDriver::new(&limited, exits).unwrap();
    let vmid = name.name().parse().unwrap();
    let err = PveContainer::recovered(weak, vmid)
        .update_resources(&resources)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("Permission check failed")
            && err.contains(&format!("update CT {}", name.name())),
        "{err}"
    );
    name.destroy().await.unwrap();
    Ok(())
}

/// Lost quorum: pmxcfs makes /etc/pve read-only (the test node: a read-only bind mount of its
/// config dir, as root) and Proxmox refuses starts. Create and start each fail saying "no
/// quorum", and the refused create leaves no config behind.
async fn lost_quorum_fails_create_and_start_saying_so() -> Outcome {
    skip_harness::require_root("making the test node's config dir read-only (a bind mount)")?;
    let server = server().start().await.unwrap();
    let setup = Setup::new(&server, [980600, 980609]).await;
    let created = setup.create("before").await;

    server.set_quorate(false);
    assert!(server.config_dir_readonly());
    let err = setup
        .driver
        .create(&spec("during", &setup.plan, &setup.state_dir))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("no quorum"), "{err}");
    let err = match created.start().await {
        Ok(_) => panic!("a start without quorum succeeded"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("no quorum"), "{err}");
    server.set_quorate(true);
    assert!(!server.config_dir_readonly());
    let configs: Vec<_> = std::fs::read_dir(&server.context().config_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(configs.len(), 1, "only the CT made before: {configs:?}");
    created.destroy().await.unwrap();
    Ok(())
}

/// Without limits in the spec the CT config shows the node's memory and swap (what the
/// container may use), not Proxmox's 512 MiB defaults that an absent key means.
async fn no_limit_shows_the_nodes_memory() -> Outcome {
    let server = server().start().await.unwrap();
    let setup = Setup::new(&server, [980700, 980709]).await;
    assert_eq!(
        setup.plan.pve.memory_mib, None,
        "the test plan sets no limit"
    );
    let name = setup.create("unlimited").await;
    let conf = std::fs::read_to_string(server.context().config_path(name.name().parse().unwrap()))
        .unwrap();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let mib = |key: &str| -> u64 {
        let kib: u64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap()
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .unwrap();
        kib / 1024
    };
    for want in [
        format!("memory: {}", mib("MemTotal:")),
        format!("swap: {}", mib("SwapTotal:")),
    ] {
        assert!(conf.lines().any(|l| l == want), "{want:?} in\n{conf}");
    }
    name.destroy().await.unwrap();
    Ok(())
}

/// A plan for a container with a user namespace, new (`ctr --uidmap`) or its pod's joined by
/// path (a Kubernetes `hostUsers: false` container), mapped at `host_id`.
fn userns_plan(
    dir: &Path,
    state_dir: &Path,
    joined: bool,
    host_id: u32,
) -> lxc_config::ContainerPlan {
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    let user = if joined {
        serde_json::json!({"type": "user", "path": "/proc/1/ns/user"})
    } else {
        serde_json::json!({"type": "user"})
    };
    let map = serde_json::json!([{"containerID": 0, "hostID": host_id, "size": 65536}]);
    let spec: oci_spec::runtime::Spec = serde_json::from_value(serde_json::json!({
        "ociVersion": "1.2.0",
        "root": {"path": rootfs},
        "process": {"args": ["true"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
        "linux": {
            "namespaces": [{"type": "mount"}, {"type": "pid"}, user],
            "uidMappings": map, "gidMappings": map
        }
    }))
    .unwrap();
    common::plan_of("u1", dir, state_dir, &spec, lxc_config::CgroupMode::Unified)
}

/// An unprivileged CT as Proxmox makes one, with the spec's map: `unprivileged: 1` and the
/// map as `lxc.idmap` entries of the CT config, where pve-container reads a custom map
/// (src/PVE/LXC.pm `update_lxc_config` `$custom_idmap`, `parse_id_maps`) and then writes no
/// default `u 0 100000 65536` of its own; the node loads them without a warning, and the LXC
/// config it renders from them maps exactly the spec's range.
async fn a_user_namespace_is_an_unprivileged_ct_with_the_specs_id_map() -> Outcome {
    let server = server()
        .backend(Arc::new(ExitsAtOnce))
        .start()
        .await
        .unwrap();
    let exits = ChildExits::start().await.unwrap();
    for (joined, host_id, vmid) in [(false, 200000, 981000), (true, 2031616, 981001)] {
        let (dir, state_dir) = scratch();
        let driver =
            PveDriver::new(&settings(dir.path(), &server, [vmid, vmid]), exits.clone()).unwrap();
        let plan = userns_plan(dir.path(), &state_dir, joined, host_id);
        let name = driver.create(&spec("u1", &plan, &state_dir)).await.unwrap();
        let text = std::fs::read_to_string(server.context().config_path(vmid)).unwrap();
        for want in [
            "unprivileged: 1".to_string(),
            format!("lxc.idmap: u 0 {host_id} 65536"),
            format!("lxc.idmap: g 0 {host_id} 65536"),
        ] {
            assert!(text.contains(&want), "{want:?} missing in:\n{text}");
        }
        let include = std::fs::read_to_string(state_dir.join("pve-include.conf")).unwrap();
        assert!(!include.contains("lxc.idmap"), "{include}");
        let (conf, warnings) = CtConfig::parse_with_warnings(vmid, &text).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        let (lxc, _) = pve_test_server::lxc_node::render_lxc_config(
            &dir.path().join("lxc"),
            vmid,
            &conf,
            true,
        );
        let idmaps: Vec<&str> = lxc.lines().filter(|l| l.starts_with("lxc.idmap")).collect();
        assert_eq!(
            idmaps,
            [
                format!("lxc.idmap = u 0 {host_id} 65536"),
                format!("lxc.idmap = g 0 {host_id} 65536")
            ],
            "{lxc}"
        );
        name.destroy().await.unwrap();
    }
    Ok(())
}

/// A case run as `#[tokio::test]` runs one: on a current-thread runtime of its own.
fn on_tokio<F: std::future::Future<Output = Outcome> + 'static>(
    name: &str,
    test: fn() -> F,
) -> Trial {
    skip_harness::case(name, move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(test())
    })
}

/// The listed async case functions, each under its own name.
macro_rules! tokio_cases {
    ($($case:ident),* $(,)?) => {
        vec![$(on_tokio(stringify!($case), $case)),*]
    };
}

fn main() {
    skip_harness::run(tokio_cases![
        lifecycle_costs_at_most_eight_requests_and_leaves_nothing,
        failures_carry_proxmox_message,
        back_to_back_short_lived_containers_do_not_hit_systemds_start_limit,
        a_start_refused_by_the_start_limit_is_retried_after_the_interval,
        a_start_with_warnings_is_a_start,
        an_update_shows_its_limits_in_the_ct_config,
        lost_quorum_fails_create_and_start_saying_so,
        no_limit_shows_the_nodes_memory,
        a_user_namespace_is_an_unprivileged_ct_with_the_specs_id_map,
    ]);
}
