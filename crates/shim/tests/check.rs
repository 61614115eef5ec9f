//! `check` against the Proxmox API test server: a good configuration passes, and each kind of
//! mistake is named in plain words.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use pve_test_server::{TestServer, TestServerBuilder};
use shim::check::{check, CheckOptions, Report};

const TOKEN: &str = "root@pam!check";
const SECRET: &str = "0d6f1c2a-8b3e-4f5a-9c7d-1e2f3a4b5c6d";

fn write_config(dir: &Path, server: &TestServer, extra: &str) -> std::path::PathBuf {
    let ca = dir.join("ca.pem");
    server.write_ca_file(&ca).unwrap();
    let token = dir.join("token");
    std::fs::write(&token, SECRET).unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let path = dir.join("config.toml");
    std::fs::write(
        &path,
        format!(
            "[pve]\nurl = \"{}\"\nnode = \"{}\"\ntoken_id = \"{TOKEN}\"\ntoken_secret_file = \"{}\"\n\
             ca_file = \"{}\"\nconfig_dir = \"{}\"\nlock_dir = \"{}\"\n{extra}",
            server.url(),
            server.node(),
            token.display(),
            ca.display(),
            server.context().config_dir.display(),
            server.context().lock_dir.display(),
        ),
    )
    .unwrap();
    path
}

/// containerd's configuration with this runtime's entry (containerd 2.x layout).
fn containerd_config(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("containerd.toml");
    std::fs::write(
        &path,
        "version = 3\n[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.proxmox-lxc]\n\
         runtime_type = 'io.containerd.proxmox-lxc.v2'\n",
    )
    .unwrap();
    path
}

/// The test server with the token check uses (every privilege unless the builder's caller
/// grants fewer).
fn server() -> TestServerBuilder {
    TestServer::builder().token(TOKEN, SECRET)
}

async fn check_file(path: &Path) -> Report {
    let dir = path.parent().unwrap();
    let report = check(&CheckOptions {
        config: Some(path.to_path_buf()),
        containerd_config: containerd_config(dir),
    })
    .await;
    println!("{}", report.lines.join("\n"));
    report
}

/// What check says of a config for `server` with `extra` lines, written into `dir`.
async fn check_config(dir: &Path, server: &TestServer, extra: &str) -> Report {
    check_file(&write_config(dir, server, extra)).await
}

/// What check says of a plain config for a server whose token holds only `privileges`.
async fn check_with_privileges(privileges: &[&str]) -> (TestServer, Report) {
    let server = server()
        .token_privileges(TOKEN, privileges)
        .start()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let report = check_config(dir.path(), &server, "").await;
    (server, report)
}

/// Fails unless one of `lines` starts with `kind` ("PROBLEM", "note", "ok"; "" for any) and
/// holds every one of `needles`.
#[track_caller]
fn assert_says(lines: &[String], kind: &str, needles: &[&str]) {
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(kind) && needles.iter().all(|n| l.contains(n))),
        "no {kind} line with {needles:?}: {lines:?}"
    );
}

fn problems(report: &Report) -> Vec<&String> {
    report
        .lines
        .iter()
        .filter(|l| l.starts_with("PROBLEM"))
        .collect()
}

#[tokio::test]
async fn check_passes_on_a_good_setup_and_names_problems() {
    let server = server().start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &server, "");
    let report = check_file(&path).await;
    assert_eq!(report.problems, 0, "{:?}", report.lines);
    assert_says(&report.lines, "", &["quorate"]);
    // A real node answers a start request for a free VMID with a UPID and a task that fails
    // later (the test server does too): check must not leave such tasks behind.
    assert!(server.wait_idle(std::time::Duration::from_secs(10)).await);
    assert_eq!(server.tasks(), Vec::<String>::new(), "check started tasks");

    server.set_quorate(false);
    let report = check_file(&path).await;
    assert_says(&report.lines, "PROBLEM", &["no quorum"]);
    server.set_quorate(true);

    // The unused `storage` setting of older files still parses; check says to remove it.
    let path = write_config(dir.path(), &server, "storage = \"nosuch\"\n");
    let report = check_file(&path).await;
    assert_says(&report.lines, "note", &["\"nosuch\" is not used"]);
    assert_eq!(report.problems, 0, "{:?}", report.lines);

    std::fs::set_permissions(
        dir.path().join("token"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let report = check_file(&path).await;
    assert_says(&report.lines, "", &["group or others"]);

    std::fs::write(dir.path().join("token"), "wrong").unwrap();
    std::fs::set_permissions(
        dir.path().join("token"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let path = write_config(dir.path(), &server, "");
    std::fs::write(dir.path().join("token"), "wrong").unwrap();
    let report = check_file(&path).await;
    assert_says(&report.lines, "", &["was refused"]);
}

#[tokio::test]
async fn check_names_the_privileges_a_token_lacks_without_starting_tasks() {
    let (server, report) = check_with_privileges(&[
        "Sys.Audit",
        "VM.Audit",
        "Datastore.Audit",
        "VM.PowerMgmt",
        "VM.Config.Memory",
        "VM.Config.CPU",
    ])
    .await;
    let problems = problems(&report);
    assert_eq!(problems.len(), 1, "{:?}", report.lines);
    // The one problem: what is missing, and the one scheme that grants it, not PVEVMAdmin.
    assert_says(
        &report.lines,
        "PROBLEM",
        &[
            "VM.Allocate",
            "destroy",
            "pveum acl modify /vms --users root@pam --roles ContainerdShim",
            "--privs \"VM.Audit VM.PowerMgmt VM.Allocate VM.Config.CPU VM.Config.Memory\"",
        ],
    );
    assert!(!problems[0].contains("PVEVMAdmin"), "{problems:?}");
    assert_says(&report.lines, "ok", &["VM.PowerMgmt"]);
    // More than needed is said (least privilege), but is no problem.
    assert_says(&report.lines, "note", &["Datastore.Audit on /vms/"]);
    assert_eq!(server.tasks(), Vec::<String>::new(), "check started tasks");
}

/// Without Sys.Audit on `/` the quorum and the backup jobs cannot be read: named, with the
/// scheme's second role.
#[tokio::test]
async fn check_names_a_missing_sys_audit() {
    let (_server, report) = check_with_privileges(&[
        "VM.Audit",
        "VM.PowerMgmt",
        "VM.Allocate",
        "VM.Config.Memory",
        "VM.Config.CPU",
    ])
    .await;
    assert_eq!(problems(&report).len(), 1, "{:?}", report.lines);
    assert_says(
        &report.lines,
        "PROBLEM",
        &[
            "Sys.Audit on /;",
            "quorum",
            "pveum acl modify / --users root@pam --roles ContainerdShimAudit --propagate 0",
        ],
    );
    // The test server grants a token's privileges on every path, so the VM privileges show on
    // `/` too (and are reported as more than needed there); on a node the scheme puts them on
    // `/vms` only.
    assert!(
        !report
            .lines
            .iter()
            .any(|l| l.contains("does not need") && l.contains("on /vms/")),
        "exactly the scheme's privileges on /vms: nothing extra there: {:?}",
        report.lines
    );
}

/// The settings that need no request, and the node, against the cluster.
#[tokio::test]
async fn check_validates_node_timeout_and_the_vmid_range() {
    let server = server().start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();

    // A node that is not in the cluster.
    let path = write_config(dir.path(), &server, "");
    let text = std::fs::read_to_string(&path).unwrap().replace(
        &format!("node = \"{}\"", server.node()),
        "node = \"pve-other\"",
    );
    std::fs::write(&path, text).unwrap();
    let report = check_file(&path).await;
    assert_says(
        &report.lines,
        "PROBLEM",
        &[
            "pve.node = \"pve-other\" is not a node of this cluster",
            server.node(),
        ],
    );

    // task_timeout: 0 does not parse; too short or longer than the kubelet waits is a note.
    let report = check_config(dir.path(), &server, "task_timeout = 0\n").await;
    assert_says(&report.lines, "PROBLEM", &["task_timeout", "at least 1"]);
    for (timeout, want) in [(3, "below 10 s"), (600, "kubelet gives up first")] {
        let extra = format!("task_timeout = {timeout}\n");
        let report = check_config(dir.path(), &server, &extra).await;
        assert_eq!(report.problems, 0, "{:?}", report.lines);
        assert_says(&report.lines, "note", &[want]);
    }

    // tag_prefix: not a Proxmox tag.
    let report = check_config(dir.path(), &server, "tag_prefix = \"k8s cid\"\n").await;
    assert_says(
        &report.lines,
        "PROBLEM",
        &["tag_prefix", "not a valid Proxmox tag"],
    );

    // vmid_range beyond Proxmox's VMIDs.
    let report = check_config(dir.path(), &server, "vmid_range = [100, 1000000000]\n").await;
    assert_says(&report.lines, "PROBLEM", &["vmid_range", "999999999"]);

    // A guest in the range the shim did not make is a note.
    std::fs::write(
        server.context().config_dir.join("990003.conf"),
        "arch: amd64\nhostname: mine\nostype: debian\nmemory: 512\n",
    )
    .unwrap();
    let report = check_config(dir.path(), &server, "vmid_range = [990000, 990009]\n").await;
    assert_eq!(report.problems, 0, "{:?}", report.lines);
    assert_says(&report.lines, "ok", &["9 free, 1 in use"]);
    assert_says(&report.lines, "note", &["not made by this shim", "990003"]);
}

/// A pinned fingerprint that is not the server's: the problem names the one it presented.
#[tokio::test]
async fn check_names_the_fingerprint_the_server_presented() {
    let server = server().start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &server, "");
    let pinned = "AB:".repeat(31) + "AB";
    let text = std::fs::read_to_string(&path).unwrap();
    let text: String = text
        .lines()
        .filter(|l| !l.starts_with("ca_file"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&path, format!("{text}fingerprint = \"{pinned}\"\n")).unwrap();
    let report = check_file(&path).await;
    assert_eq!(problems(&report).len(), 1, "{:?}", report.lines);
    let mismatch = format!(
        "fingerprint {}, not pve.fingerprint {pinned}",
        server.fingerprint()
    );
    assert_says(&report.lines, "PROBLEM", &[&mismatch, "pvenode cert info"]);
    // And with the right one it passes.
    std::fs::write(
        &path,
        format!("{text}fingerprint = \"{}\"\n", server.fingerprint()),
    )
    .unwrap();
    let report = check_file(&path).await;
    assert_eq!(report.problems, 0, "{:?}", report.lines);
}

/// containerd's runtime entry: found in the layout of the config's version (and imports),
/// a misplaced one named with where it belongs, a missing one with what to add.
#[tokio::test]
async fn check_finds_containerds_runtime_entry() {
    let dir = tempfile::tempdir().unwrap();
    // The lxc driver: no Proxmox checks, only the local ones.
    let shim_config = dir.path().join("shim.toml");
    std::fs::write(&shim_config, "driver = \"lxc\"\n").unwrap();
    let run = |containerd: &str| {
        let containerd_path = dir.path().join("config.toml");
        std::fs::write(&containerd_path, containerd).unwrap();
        let options = CheckOptions {
            config: Some(shim_config.clone()),
            containerd_config: containerd_path,
        };
        async move { check(&options).await }
    };
    let entry = |report: &Report| {
        report
            .lines
            .iter()
            .filter(|l| l.contains("containerd") && !l.contains("lxc-"))
            .cloned()
            .collect::<Vec<_>>()
    };

    // containerd 1.x (version 2) and 2.x (version 3) layouts.
    let v2 = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.pve]\n\
              runtime_type = \"io.containerd.proxmox-lxc.v2\"\n";
    let v3 = "version = 3\n[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.pve]\n\
              runtime_type = 'io.containerd.proxmox-lxc.v2'\n";
    for text in [v2, v3] {
        let report = run(text).await;
        let lines = entry(&report);
        assert_says(&lines, "ok", &["runtime \"pve\"", "handler \"pve\""]);
        assert!(!lines.iter().any(|l| l.starts_with("PROBLEM")), "{lines:?}");
    }

    // A version 2 entry in a version 3 file is not where containerd 2.x reads it.
    let report = run(&v2.replace("version = 2", "version = 3")).await;
    assert_says(
        &entry(&report),
        "PROBLEM",
        &[
            "[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.pve]",
            "under [plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.pve]",
        ],
    );

    // A version 3 entry in a version 2 file: containerd 2.x converts the file and reads it,
    // 1.x does not: a note.
    let report = run(&v3.replace("version = 3", "version = 2")).await;
    let lines = entry(&report);
    assert_says(
        &lines,
        "note",
        &["containerd 2.x reads it there, containerd 1.x does not"],
    );
    assert!(!lines.iter().any(|l| l.starts_with("PROBLEM")), "{lines:?}");

    // None: says what to add for that version.
    let report = run("version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\nruntime_type = \"io.containerd.runc.v2\"\n").await;
    assert_says(
        &entry(&report),
        "PROBLEM",
        &[
            "no runtime with runtime_type = \"io.containerd.proxmox-lxc.v2\"",
            "[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.proxmox-lxc] runtime_type",
        ],
    );

    // In an imported file (containerd's `imports`, wildcards allowed), with a ConfigPath that
    // does not exist.
    let conf_d = dir.path().join("conf.d");
    std::fs::create_dir_all(&conf_d).unwrap();
    std::fs::write(
        conf_d.join("50-pve.toml"),
        format!("{v3}[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.pve.options]\nConfigPath = '/nonexistent/shim.toml'\n"),
    )
    .unwrap();
    let report = run("version = 3\nimports = ['conf.d/*.toml']\n").await;
    let lines = entry(&report);
    assert_says(&lines, "ok", &["50-pve.toml"]);
    assert_says(
        &lines,
        "PROBLEM",
        &["ConfigPath /nonexistent/shim.toml does not exist"],
    );

    // No containerd config at all.
    let options = CheckOptions {
        config: Some(shim_config.clone()),
        containerd_config: dir.path().join("absent.toml"),
    };
    let report = check(&options).await;
    assert_says(
        &report.lines,
        "PROBLEM",
        &["absent.toml does not exist", "containerd config default"],
    );
}

/// A backup job for "all" guests would back up the shim's CTs: check warns about it (and only
/// about it: a pool job, a job on another node, a job whose exclusions cover the range).
#[tokio::test]
async fn check_warns_about_backup_jobs_that_cover_the_vmid_range() {
    let excluded: Vec<String> = (990000..=990009).map(|v| v.to_string()).collect();
    let server = server()
        .backup_job(
            serde_json::json!({"id": "backup-all", "type": "vzdump", "all": 1,
            "exclude": "100", "schedule": "21:00", "enabled": 1}),
        )
        .backup_job(serde_json::json!({"id": "backup-pool", "type": "vzdump",
            "pool": "prod", "schedule": "22:00"}))
        .backup_job(
            serde_json::json!({"id": "backup-elsewhere", "type": "vzdump", "all": 1,
            "node": "other", "schedule": "23:00"}),
        )
        .backup_job(
            serde_json::json!({"id": "backup-excluding", "type": "vzdump", "all": 1,
            "exclude": excluded.join(","), "schedule": "20:00"}),
        )
        .start()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let report = check_config(dir.path(), &server, "vmid_range = [990000, 990009]\n").await;
    let warnings: Vec<&String> = report
        .lines
        .iter()
        .filter(|l| l.contains("WARNING backup job"))
        .collect();
    assert_eq!(warnings.len(), 1, "{:?}", report.lines);
    assert!(
        warnings[0].contains("backup-all") && warnings[0].contains("10 VMIDs"),
        "{warnings:?}"
    );
    assert_eq!(
        report.problems, 0,
        "a warning, not a problem: {:?}",
        report.lines
    );
    assert!(
        server.schema_violations().is_empty(),
        "{:?}",
        server.schema_violations()
    );
}
