//! `check` against the Proxmox API test server: a good configuration passes, and each kind of
//! mistake is named in plain words.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use pve_test_server::TestServer;

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

#[tokio::test]
async fn check_passes_on_a_good_setup_and_names_problems() {
    let server = TestServer::builder()
        .token(TOKEN, SECRET)
        .start()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &server, "");
    let report = shim::check::check(&path).await;
    println!("{}", report.lines.join("\n"));
    assert_eq!(report.problems, 0, "{:?}", report.lines);
    assert!(report.lines.iter().any(|l| l.contains("quorate")));
    // A real node answers a start request for a free VMID with a UPID and a task that fails
    // later (the test server does too): check must not leave such tasks behind.
    assert!(server.wait_idle(std::time::Duration::from_secs(10)).await);
    assert_eq!(server.tasks(), Vec::<String>::new(), "check started tasks");

    server.set_quorate(false);
    let report = shim::check::check(&path).await;
    assert!(
        report
            .lines
            .iter()
            .any(|l| l.starts_with("PROBLEM") && l.contains("no quorum")),
        "{:?}",
        report.lines
    );
    server.set_quorate(true);

    // The unused `storage` setting of older files still parses; check says to remove it.
    let path = write_config(dir.path(), &server, "storage = \"nosuch\"\n");
    let report = shim::check::check(&path).await;
    assert!(
        report
            .lines
            .iter()
            .any(|l| l.starts_with("note") && l.contains("\"nosuch\" is not used")),
        "{:?}",
        report.lines
    );
    assert_eq!(report.problems, 0, "{:?}", report.lines);

    std::fs::set_permissions(
        dir.path().join("token"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let report = shim::check::check(&path).await;
    assert!(
        report.lines.iter().any(|l| l.contains("group or others")),
        "{:?}",
        report.lines
    );

    std::fs::write(dir.path().join("token"), "wrong").unwrap();
    std::fs::set_permissions(
        dir.path().join("token"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let path = write_config(dir.path(), &server, "");
    std::fs::write(dir.path().join("token"), "wrong").unwrap();
    let report = shim::check::check(&path).await;
    assert!(
        report.lines.iter().any(|l| l.contains("was refused")),
        "{:?}",
        report.lines
    );
}

#[tokio::test]
async fn check_names_the_privileges_a_token_lacks_without_starting_tasks() {
    let server = TestServer::builder()
        .token(TOKEN, SECRET)
        .token_privileges(
            TOKEN,
            &[
                "Sys.Audit",
                "VM.Audit",
                "Datastore.Audit",
                "VM.PowerMgmt",
                "VM.Config.Memory",
                "VM.Config.CPU",
            ],
        )
        .start()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &server, "");
    let report = shim::check::check(&path).await;
    println!("{}", report.lines.join("\n"));
    let problems: Vec<&String> = report
        .lines
        .iter()
        .filter(|l| l.starts_with("PROBLEM"))
        .collect();
    assert_eq!(problems.len(), 1, "{:?}", report.lines);
    assert!(
        problems[0].contains("VM.Allocate") && problems[0].contains("destroy"),
        "{problems:?}"
    );
    assert!(
        report
            .lines
            .iter()
            .any(|l| l.starts_with("ok") && l.contains("VM.PowerMgmt")),
        "{:?}",
        report.lines
    );
    assert_eq!(server.tasks(), Vec::<String>::new(), "check started tasks");
}

/// A backup job for "all" guests would back up the shim's CTs: check warns about it (and only
/// about it: a pool job, a job on another node, a job whose exclusions cover the range).
#[tokio::test]
async fn check_warns_about_backup_jobs_that_cover_the_vmid_range() {
    let excluded: Vec<String> = (990000..=990009).map(|v| v.to_string()).collect();
    let server = TestServer::builder()
        .token(TOKEN, SECRET)
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
    let path = write_config(dir.path(), &server, "vmid_range = [990000, 990009]\n");
    let report = shim::check::check(&path).await;
    println!("{}", report.lines.join("\n"));
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
