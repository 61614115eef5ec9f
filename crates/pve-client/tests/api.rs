//! pve-client against the Proxmox API test server: every endpoint, every error class,
//! retries and their bound, and task waiting.

mod common;

use std::time::Duration;

use common::*;
use pve_client::{
    ConfigUpdate, CreateCt, CtRunState, DestroyOptions, Error, Features, Ipv4Config, MountPoint,
    NetConfig, OsType, ResourceType, RootFs, Upid, WaitOptions,
};
use pve_test_server::{Fault, FaultRule};

const START: &str = "/nodes/{node}/lxc/{vmid}/status/start";
const CONFIG: &str = "/nodes/{node}/lxc/{vmid}/config";
const TASK_STATUS: &str = "/nodes/{node}/tasks/{upid}/status";

fn wait() -> WaitOptions {
    WaitOptions {
        timeout: Duration::from_secs(10),
        initial_interval: Duration::from_millis(10),
        max_interval: Duration::from_millis(100),
        ..WaitOptions::default()
    }
}

fn simple_ct(vmid: u32) -> CreateCt {
    CreateCt::new(vmid, TEMPLATE)
        .hostname(&format!("ct{vmid}"))
        .ostype(OsType::Unmanaged)
}

async fn create(client: &pve_client::Client, vmid: u32) {
    let upid = client
        .create_ct("pve1", &simple_ct(vmid))
        .await
        .expect("create");
    client.wait_task(&upid, &wait()).await.expect("create task");
}

#[tokio::test]
async fn read_endpoints() {
    let server = server().await;
    let client = token_client(&server);

    let v = client.version().await.unwrap();
    assert_eq!(v.release, "9.1");
    assert!(v.version.starts_with("9."));

    let status = client.cluster_status().await.unwrap();
    assert!(status
        .iter()
        .any(|e| e.kind == "node" && e.name == "pve1" && e.local == Some(true)));
    assert!(client.quorate().await.unwrap());
    server.set_quorate(false);
    assert!(!client.quorate().await.unwrap());
    server.set_quorate(true);

    assert_eq!(client.next_id(None).await.unwrap(), 100);
    create(&client, 100).await;
    assert_eq!(client.next_id(None).await.unwrap(), 101);
    assert_eq!(client.next_id(Some(150)).await.unwrap(), 150);
    let taken = client.next_id(Some(100)).await.unwrap_err();
    assert!(taken.is_already_exists(), "{taken}");
    assert_eq!(taken.status(), Some(400));

    let vms = client
        .cluster_resources(Some(ResourceType::Vm))
        .await
        .unwrap();
    assert_eq!(vms.len(), 1);
    assert_eq!(vms[0].vmid, Some(100));
    assert_eq!(vms[0].kind, "lxc");
    let all = client.cluster_resources(None).await.unwrap();
    assert!(all.iter().any(|r| r.kind == "node") && all.iter().any(|r| r.kind == "storage"));
    assert_eq!(
        client
            .used_vmids()
            .await
            .unwrap()
            .into_iter()
            .collect::<Vec<_>>(),
        vec![100]
    );

    let nodes = client.nodes().await.unwrap();
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].node, "pve1");
    assert_eq!(
        nodes[0].ssl_fingerprint.as_deref(),
        Some(server.fingerprint())
    );
    let ns = client.node_status("pve1").await.unwrap();
    assert!(ns.pveversion.unwrap().starts_with("pve-manager/"));
    assert!(ns.memory.unwrap().total.unwrap() > 0);

    server.reset_counts();
    let unknown = client.node_status("pve9").await.unwrap_err();
    assert_eq!(unknown.status(), Some(500));
    assert_eq!(unknown.message(), Some("no such cluster node 'pve9'\n"));
    assert_eq!(server.requests("GET", "/nodes/{node}/status"), 1);
    assert_eq!(server.schema_violations(), Vec::<String>::new());
}

#[tokio::test]
async fn ct_lifecycle() {
    let server = server().await;
    let client = token_client(&server);

    let create = CreateCt::new(200, TEMPLATE)
        .hostname("web-1")
        .memory_mib(256)
        .swap_mib(0)
        .cores(2)
        .cpulimit(1.5)
        .rootfs(&RootFs::new_volume("local", 2.0))
        .net(
            0,
            &NetConfig::new("eth0")
                .bridge("vmbr0")
                .ip(Ipv4Config::Cidr("10.0.0.2/24".into()))
                .gw("10.0.0.1"),
        )
        .mount_point(
            0,
            &MountPoint::new_volume("local", 1.0, "/data").backup(false),
        )
        .features(&Features {
            nesting: Some(true),
            ..Default::default()
        })
        .tags(&["k8s", "pod-a"])
        .description("pod default/a\ncontainer app")
        .ostype(OsType::Unmanaged)
        .unprivileged(true)
        .onboot(false)
        .entrypoint("/init --serve")
        .env(&[("PATH", "/usr/bin:/bin"), ("MODE", "a b")]);
    let upid = client.create_ct("pve1", &create).await.unwrap();
    assert_eq!(upid.kind, "vzcreate");
    assert_eq!(upid.id, "200");
    assert_eq!(upid.user, TOKEN_ID);
    let outcome = client.wait_task(&upid, &wait()).await.unwrap();
    assert_eq!(outcome.exitstatus, "OK");
    let log = client.task_log_all(&upid).await.unwrap();
    assert_eq!(log.last().map(String::as_str), Some("TASK OK"));
    let page = client.task_log(&upid, 0, 1).await.unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].n, 1);
    let ts = client.task_status(&upid).await.unwrap();
    assert!(ts.is_stopped());
    assert_eq!(ts.exitstatus.as_deref(), Some("OK"));

    // The config file is in Proxmox's format.
    let raw = std::fs::read_to_string(server.context().config_path(200)).unwrap();
    assert!(raw.starts_with("#pod default/a\n#container app\n"), "{raw}");
    assert!(raw.contains("\nhostname: web-1\n"), "{raw}");
    assert!(raw.contains("\nentrypoint: /init --serve\n"), "{raw}");
    assert!(
        raw.ends_with(
            "lxc.environment.runtime: PATH=/usr/bin:/bin\nlxc.environment.runtime: MODE=a b\n"
        ),
        "{raw}"
    );
    assert!(
        raw.contains("\nrootfs: local:200/vm-200-disk-0.raw,size=2G\n"),
        "{raw}"
    );
    assert!(
        raw.contains("\nmp0: local:200/vm-200-disk-1.raw,mp=/data,backup=0,size=1G\n"),
        "{raw}"
    );

    let list = client.list_cts("pve1").await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].vmid, 200);
    assert_eq!(list[0].status, CtRunState::Stopped);
    assert_eq!(list[0].name.as_deref(), Some("web-1"));

    let conf = client.ct_config("pve1", 200).await.unwrap();
    assert_eq!(conf.hostname().as_deref(), Some("web-1"));
    assert_eq!(conf.memory_mib(), Some(256));
    assert_eq!(conf.tags(), vec!["k8s", "pod-a"]);
    assert_eq!(
        conf.get("net0").as_deref(),
        Some("name=eth0,bridge=vmbr0,ip=10.0.0.2/24,gw=10.0.0.1")
    );
    assert_eq!(conf.get("features").as_deref(), Some("nesting=1"));
    assert_eq!(conf.get("unprivileged").as_deref(), Some("1"));
    assert_eq!(
        conf.description().as_deref(),
        Some("pod default/a\ncontainer app\n")
    );
    assert_eq!(conf.digest.len(), 40);
    assert_eq!(
        conf.get("env").as_deref(),
        Some("PATH=/usr/bin:/bin\0MODE=a b")
    );

    // Update with the digest; then the old digest is stale.
    let update = ConfigUpdate::new()
        .digest(&conf.digest)
        .memory_mib(512)
        .delete("mp0");
    client.update_ct_config("pve1", 200, &update).await.unwrap();
    let conf2 = client.ct_config("pve1", 200).await.unwrap();
    assert_eq!(conf2.memory_mib(), Some(512));
    assert!(conf2.get("mp0").is_none());
    assert_ne!(conf2.digest, conf.digest);
    let stale = ConfigUpdate::new().digest(&conf.digest).memory_mib(128);
    let e = client
        .update_ct_config("pve1", 200, &stale)
        .await
        .unwrap_err();
    assert!(
        e.message()
            .unwrap()
            .contains("detected modified configuration"),
        "{e}"
    );
    assert!(!e.is_transient());

    // Start, status, shutdown, start, stop.
    let upid = client.start_ct("pve1", 200).await.unwrap();
    client.wait_task(&upid, &wait()).await.unwrap();
    assert!(client.ct_status("pve1", 200).await.unwrap().is_running());
    server.reset_counts();
    let again = client.start_ct("pve1", 200).await.unwrap_err();
    assert_eq!(again.message(), Some("CT 200 already running\n"));
    assert_eq!(
        server.requests("POST", START),
        1,
        "a non-transient error is not retried"
    );
    let busy = client
        .destroy_ct("pve1", 200, &DestroyOptions::default())
        .await
        .unwrap_err();
    assert!(
        busy.message().unwrap().contains("container is running"),
        "{busy}"
    );
    let upid = client
        .shutdown_ct("pve1", 200, Duration::from_secs(5), true)
        .await
        .unwrap();
    assert_eq!(upid.kind, "vzshutdown");
    client.wait_task(&upid, &wait()).await.unwrap();
    assert_eq!(
        client.ct_status("pve1", 200).await.unwrap().status,
        CtRunState::Stopped
    );
    let not_running = client.stop_ct("pve1", 200).await.unwrap_err();
    assert_eq!(not_running.message(), Some("CT 200 not running\n"));
    let upid = client.start_ct("pve1", 200).await.unwrap();
    client.wait_task(&upid, &wait()).await.unwrap();
    let upid = client.stop_ct("pve1", 200).await.unwrap();
    assert_eq!(upid.kind, "vzstop");
    client.wait_task(&upid, &wait()).await.unwrap();

    // Destroy with purge and unreferenced disks.
    let options = DestroyOptions {
        purge: true,
        destroy_unreferenced_disks: true,
        force: false,
    };
    let upid = client.destroy_ct("pve1", 200, &options).await.unwrap();
    client.wait_task(&upid, &wait()).await.unwrap();
    let log = client.task_log_all(&upid).await.unwrap();
    assert!(log.iter().any(|l| l.contains("purging CT 200")), "{log:?}");
    assert!(!server.context().config_path(200).exists());
    let gone = client.ct_config("pve1", 200).await.unwrap_err();
    assert!(gone.is_not_found(), "{gone}");
    assert!(client.list_cts("pve1").await.unwrap().is_empty());
    assert_eq!(server.schema_violations(), Vec::<String>::new());
}

#[tokio::test]
async fn schema_errors_are_typed_and_not_retried() {
    let server = server().await;
    let client = token_client(&server);
    server.reset_counts();

    let bad = CreateCt::new(99, TEMPLATE)
        .net(
            0,
            &NetConfig::new("eth0").ip(Ipv4Config::Cidr("300.1.1.1/24".into())),
        )
        .param("cores", "many")
        .param("arch", "sparc")
        .param("nosuchkey", "1");
    let e = client.create_ct("pve1", &bad).await.unwrap_err();
    assert_eq!(e.status(), Some(400));
    assert_eq!(e.message(), Some("Parameter verification failed.\n"));
    let errors = e.param_errors().unwrap();
    assert_eq!(
        errors["vmid"],
        "invalid format - value does not look like a valid VM ID\n"
    );
    assert!(
        errors["net0"].starts_with("invalid format - format error\nnet0.ip: invalid format"),
        "{errors:?}"
    );
    assert_eq!(
        errors["cores"],
        "type check ('integer') failed - got 'many'"
    );
    assert!(errors["arch"]
        .starts_with("value 'sparc' does not have a value in the enumeration 'amd64, i386"));
    assert!(errors["nosuchkey"].starts_with("property is not defined in schema"));
    assert!(e.to_string().contains("vmid: invalid format"), "{e}");
    assert!(!e.is_transient());
    assert_eq!(server.requests("POST", "/nodes/{node}/lxc"), 1);

    // Patterns, formats and bounds of the schema.
    let bad = CreateCt::new(100, TEMPLATE)
        .hostname("-bad-")
        .param("memory", "8")
        .param("tags", "ok;not ok!")
        .mount_point(1, &MountPoint::volume("local:1", "/a/../b"));
    let e = client.create_ct("pve1", &bad).await.unwrap_err();
    let errors = e.param_errors().unwrap();
    assert_eq!(
        errors["hostname"],
        "invalid format - value does not look like a valid DNS name\n"
    );
    assert_eq!(errors["memory"], "value must have a minimum value of 16");
    assert_eq!(
        errors["tags"],
        "invalid format - invalid characters in tag\n"
    );
    assert!(
        errors["mp1"].contains("contains illegal character sequences"),
        "{errors:?}"
    );

    // A builder refuses what would inject keys before anything is sent.
    let before = server.total_requests();
    let e = client
        .create_ct("pve1", &CreateCt::new(100, TEMPLATE).hostname("a\nb"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Config(_)), "{e}");
    assert_eq!(server.total_requests(), before);
}

#[tokio::test]
async fn duplicate_vmid_and_permissions() {
    let server = server().await;
    let client = token_client(&server);
    create(&client, 300).await;
    server.reset_counts();
    let e = client.create_ct("pve1", &simple_ct(300)).await.unwrap_err();
    assert!(e.is_already_exists());
    assert_eq!(e.status(), Some(500));
    assert_eq!(
        e.message(),
        Some("unable to create CT 300 - CT 300 already exists on node 'pve1'\n")
    );
    assert_eq!(server.requests("POST", "/nodes/{node}/lxc"), 1);

    // An API token is never root@pam: bind mounts are refused; a root@pam ticket may.
    let bind = simple_ct(301).mount_point(0, &MountPoint::volume("/srv/data", "/data"));
    let e = client.create_ct("pve1", &bind).await.unwrap_err();
    assert_eq!(
        e.message(),
        Some("Only root can pass arbitrary filesystem paths.\n")
    );
    let root = password_client(&server);
    let upid = root.create_ct("pve1", &bind).await.unwrap();
    root.wait_task(&upid, &wait()).await.unwrap();
    let conf = root.ct_config("pve1", 301).await.unwrap();
    assert_eq!(conf.get("mp0").as_deref(), Some("/srv/data,mp=/data"));

    // Unknown storage.
    let e = client
        .create_ct("pve1", &simple_ct(302).storage("nfs1"))
        .await
        .unwrap_err();
    assert_eq!(e.message(), Some("storage 'nfs1' does not exist\n"));
}

#[tokio::test]
async fn transient_failures_are_retried_within_bound() {
    let server = server().await;
    let client = token_client(&server);
    create(&client, 400).await;

    // Lock timeouts twice, then success: 3 requests.
    server.reset_counts();
    server.inject(
        FaultRule::new(Fault::LockTimeout)
            .on("PUT", CONFIG)
            .times(2),
    );
    client
        .update_ct_config("pve1", 400, &ConfigUpdate::new().memory_mib(300))
        .await
        .unwrap();
    assert_eq!(server.requests("PUT", CONFIG), 3);

    // "CT is locked" once.
    server.reset_counts();
    server.inject(FaultRule::new(Fault::CtLocked("backup".into())).on("POST", START));
    let upid = client.start_ct("pve1", 400).await.unwrap();
    client.wait_task(&upid, &wait()).await.unwrap();
    assert_eq!(server.requests("POST", START), 2);

    // 596 forever: exactly max_attempts (4) requests, then the error.
    server.reset_counts();
    server.inject(
        FaultRule::new(Fault::Status {
            status: 596,
            message: "Broken pipe".into(),
        })
        .on("GET", "/version")
        .times(100),
    );
    let e = client.version().await.unwrap_err();
    assert_eq!(e.status(), Some(596));
    assert!(e.is_transient());
    assert_eq!(server.requests("GET", "/version"), 4);
    server.clear_faults();

    // 595 and 599 are transient too.
    for status in [595, 599] {
        server.reset_counts();
        server.inject(
            FaultRule::new(Fault::Status {
                status,
                message: "proxy".into(),
            })
            .on("GET", "/nodes"),
        );
        client.nodes().await.unwrap();
        assert_eq!(server.requests("GET", "/nodes"), 2);
    }

    // A 500 that is not transient: once.
    server.reset_counts();
    server.inject(
        FaultRule::new(Fault::Status {
            status: 500,
            message: "something broke\n".into(),
        })
        .on("GET", "/nodes"),
    );
    let e = client.nodes().await.unwrap_err();
    assert_eq!(e.status(), Some(500));
    assert_eq!(server.requests("GET", "/nodes"), 1);

    // A dropped connection: GET is repeated, POST is not (it may have run).
    server.reset_counts();
    server.inject(FaultRule::new(Fault::DropConnection).on("GET", "/version"));
    client.version().await.unwrap();
    assert_eq!(server.requests("GET", "/version"), 2);
    server.reset_counts();
    server.inject(
        FaultRule::new(Fault::DropConnection).on("POST", "/nodes/{node}/lxc/{vmid}/status/stop"),
    );
    let e = client.stop_ct("pve1", 400).await.unwrap_err();
    assert!(matches!(e, Error::Transport { .. }), "{e}");
    assert!(e.is_connection_failure(), "{e:?}");
    assert_eq!(
        server.requests("POST", "/nodes/{node}/lxc/{vmid}/status/stop"),
        1
    );
}

#[tokio::test]
async fn real_config_lock_contention() {
    let server = builder()
        .lock_timeout(Duration::from_millis(200))
        .start()
        .await
        .unwrap();
    let client = token_client(&server);
    create(&client, 410).await;
    // Hold Proxmox's config lock as another process would.
    let lock_path = server.context().lock_dir.join("pve-config-410.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .unwrap();
    let held = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive).unwrap();
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(held);
    });
    server.reset_counts();
    client
        .update_ct_config("pve1", 410, &ConfigUpdate::new().cores(1))
        .await
        .unwrap();
    release.await.unwrap();
    assert!(
        server.requests("PUT", CONFIG) >= 2,
        "{:?}",
        server.request_counts()
    );
    assert_eq!(
        client
            .ct_config("pve1", 410)
            .await
            .unwrap()
            .get("cores")
            .as_deref(),
        Some("1")
    );
}

#[tokio::test]
async fn task_outcomes() {
    let server = server().await;
    let client = token_client(&server);
    create(&client, 500).await;

    // Failure: the error carries the task log.
    server.inject(
        FaultRule::new(Fault::FailTask("startup for container '500' failed".into()))
            .on("POST", START),
    );
    let upid = client.start_ct("pve1", 500).await.unwrap();
    let e = client.wait_task(&upid, &wait()).await.unwrap_err();
    match &e {
        Error::TaskFailed {
            exitstatus, log, ..
        } => {
            assert_eq!(exitstatus, "startup for container '500' failed");
            assert_eq!(
                log.last().unwrap(),
                "TASK ERROR: startup for container '500' failed"
            );
        }
        other => panic!("expected TaskFailed, got {other:?}"),
    }
    assert!(!e.is_transient());

    // Warnings are not OK unless accepted; either way they are surfaced.
    server.inject(
        FaultRule::new(Fault::TaskWarnings(vec!["disk almost full".into()]))
            .on("POST", START)
            .times(2),
    );
    let upid = client.start_ct("pve1", 500).await.unwrap();
    match client.wait_task(&upid, &wait()).await.unwrap_err() {
        Error::TaskWarnings { warnings, .. } => {
            assert_eq!(warnings, vec!["WARN: disk almost full"])
        }
        other => panic!("expected TaskWarnings, got {other:?}"),
    }
    let upid = client.stop_ct("pve1", 500).await.unwrap();
    client.wait_task(&upid, &wait()).await.unwrap();
    server.clear_faults();
    server.inject(
        FaultRule::new(Fault::TaskWarnings(vec!["w1".into(), "w2".into()])).on("POST", START),
    );
    let upid = client.start_ct("pve1", 500).await.unwrap();
    let accept = WaitOptions {
        accept_warnings: true,
        ..wait()
    };
    let ok = client.wait_task(&upid, &accept).await.unwrap();
    assert_eq!(ok.exitstatus, "WARNINGS: 2");
    assert_eq!(ok.warnings.len(), 2);
    let upid = client.stop_ct("pve1", 500).await.unwrap();
    client.wait_task(&upid, &wait()).await.unwrap();

    // A fresh UPID not visible for three polls.
    server.inject(FaultRule::new(Fault::HiddenTask { polls: 3 }).on("POST", START));
    let upid = client.start_ct("pve1", 500).await.unwrap();
    let ok = client.wait_task(&upid, &wait()).await.unwrap();
    assert!(ok.polls >= 4, "{}", ok.polls);
    let upid = client.stop_ct("pve1", 500).await.unwrap();
    client.wait_task(&upid, &wait()).await.unwrap();

    // Deadline.
    server.inject(FaultRule::new(Fault::SlowTask(Duration::from_secs(2))).on("POST", START));
    let upid = client.start_ct("pve1", 500).await.unwrap();
    let short = WaitOptions {
        timeout: Duration::from_millis(300),
        ..wait()
    };
    assert!(matches!(
        client.wait_task(&upid, &short).await,
        Err(Error::TaskTimeout { .. })
    ));

    // Polling backs off: a 1.2 s task with 10 ms growing to 400 ms needs few polls.
    server.wait_idle(Duration::from_secs(5)).await;
    let upid = client.stop_ct("pve1", 500).await.unwrap();
    client.wait_task(&upid, &wait()).await.unwrap();
    server.inject(FaultRule::new(Fault::SlowTask(Duration::from_millis(1200))).on("POST", START));
    server.reset_counts();
    let upid = client.start_ct("pve1", 500).await.unwrap();
    let backoff = WaitOptions {
        max_interval: Duration::from_millis(400),
        ..wait()
    };
    let ok = client.wait_task(&upid, &backoff).await.unwrap();
    let polls = server.requests("GET", TASK_STATUS);
    assert_eq!(u64::from(ok.polls), polls);
    assert!((5..=15).contains(&polls), "{polls} polls");

    // A garbage UPID is refused by the client; an unknown one by the server.
    assert!("UPID:nope".parse::<Upid>().is_err());
    let unknown: Upid = "UPID:pve1:00000001:00000001:00000001:vzstart:500:root@pam:"
        .parse()
        .unwrap();
    let no_grace = WaitOptions {
        not_visible_grace: Duration::ZERO,
        ..wait()
    };
    let e = client.wait_task(&unknown, &no_grace).await.unwrap_err();
    assert_eq!(e.param_errors().unwrap()["upid"], "no such task");
    assert_eq!(server.schema_violations(), Vec::<String>::new());
}

#[tokio::test]
async fn transient_task_failures_repeat_the_operation() {
    let server = server().await;
    let client = token_client(&server);
    create(&client, 600).await;
    let lock = server.context().lock_dir.join("pve-config-600.lock");
    let msg = format!("can't lock file '{}' - got timeout", lock.display());
    server.inject(FaultRule::new(Fault::FailTask(msg)).on("POST", START));
    server.reset_counts();
    let outcome = client
        .run_task(&wait(), || client.start_ct("pve1", 600))
        .await
        .unwrap();
    assert_eq!(outcome.exitstatus, "OK");
    assert_eq!(server.requests("POST", START), 2);
    // A task failure that is not transient is returned at once.
    server.inject(
        FaultRule::new(Fault::FailTask("no such device".into()))
            .on("POST", "/nodes/{node}/lxc/{vmid}/status/stop"),
    );
    server.reset_counts();
    let e = client
        .run_task(&wait(), || client.stop_ct("pve1", 600))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::TaskFailed { .. }));
    assert_eq!(
        server.requests("POST", "/nodes/{node}/lxc/{vmid}/status/stop"),
        1
    );
}

#[tokio::test]
async fn calls_per_operation() {
    // The shim's budget: create+wait, start+wait, status, stop+wait, destroy+wait.
    let server = builder()
        .task_duration(Duration::ZERO)
        .start()
        .await
        .unwrap();
    let client = token_client(&server);
    server.reset_counts();
    create(&client, 700).await;
    let create_calls = server.total_requests();
    assert!(
        create_calls <= 3,
        "create took {create_calls} calls: {:?}",
        server.request_counts()
    );
    server.reset_counts();
    let upid = client.start_ct("pve1", 700).await.unwrap();
    client.wait_task(&upid, &wait()).await.unwrap();
    assert!(
        server.total_requests() <= 3,
        "{:?}",
        server.request_counts()
    );
}

#[tokio::test]
async fn config_file_written_by_the_node_side() {
    // The pve driver writes raw lxc.* keys into VMID.conf itself (an API token may not):
    // the API shows them and an API update keeps them.
    let server = server().await;
    let client = token_client(&server);
    let raw = "#k8s pod\narch: amd64\nhostname: raw\nmemory: 64\nostype: unmanaged\nrootfs: local:900/vm-900-disk-0.raw,size=1G\nlxc.cap.drop: \nlxc.mount.entry: /run/shim/900 run/shim none bind,ro 0 0\n";
    std::fs::write(server.context().config_path(900), raw).unwrap();
    let conf = client.ct_config("pve1", 900).await.unwrap();
    assert_eq!(
        conf.lxc,
        vec![
            ("lxc.cap.drop".to_string(), String::new()),
            (
                "lxc.mount.entry".to_string(),
                "/run/shim/900 run/shim none bind,ro 0 0".to_string()
            ),
        ]
    );
    assert_eq!(conf.description().as_deref(), Some("k8s pod\n"));
    client
        .update_ct_config(
            "pve1",
            900,
            &ConfigUpdate::new().digest(&conf.digest).memory_mib(128),
        )
        .await
        .unwrap();
    let after = std::fs::read_to_string(server.context().config_path(900)).unwrap();
    assert_eq!(after, raw.replace("memory: 64", "memory: 128"));
}

#[tokio::test]
async fn answers_that_do_not_fit_are_decode_errors() {
    let server = server().await;
    let client = token_client(&server);
    let raw = |body: &str| {
        FaultRule::new(Fault::RawResponse {
            status: 200,
            body: body.into(),
        })
    };
    server.inject(raw(r#"{"data":{"version":1}}"#).on("GET", "/version"));
    let e = client.version().await.unwrap_err();
    assert!(matches!(e, Error::Decode { .. }), "{e:?}");
    server.inject(raw("<html>proxy error</html>").on("GET", "/version"));
    let e = client.version().await.unwrap_err();
    assert!(e.to_string().contains("not JSON"), "{e}");
    server.inject(raw(r#"{"data":"not-a-upid"}"#).on("POST", "/nodes/{node}/lxc"));
    let e = client.create_ct("pve1", &simple_ct(100)).await.unwrap_err();
    assert!(matches!(e, Error::InvalidUpid(_)), "{e:?}");
    server.inject(raw(r#"{"data":"abc"}"#).on("GET", "/cluster/nextid"));
    assert!(matches!(
        client.next_id(None).await,
        Err(Error::Decode { .. })
    ));
    // An error status without a JSON body: the message falls back to the status text.
    server.inject(
        FaultRule::new(Fault::RawResponse {
            status: 502,
            body: String::new(),
        })
        .on("GET", "/nodes"),
    );
    let e = client.nodes().await.unwrap_err();
    assert_eq!(e.status(), Some(502));
    assert_eq!(e.message(), Some("Bad Gateway"));
}
