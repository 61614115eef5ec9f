//! VMID allocation under concurrency: 20 tasks, never a duplicate.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use common::*;
use pve_client::{
    claim_config_file, Claim, CreateCt, Error, VmidAllocator, VmidRange, WaitOptions,
};

#[tokio::test]
async fn twenty_concurrent_api_creates_get_distinct_ids() {
    let server = server().await;
    let client = token_client(&server);
    // Some IDs of the range are taken already, one of them behind the allocator's back.
    for vmid in [1000, 1001, 1003] {
        let upid = client
            .create_ct("pve1", &CreateCt::new(vmid, TEMPLATE))
            .await
            .unwrap();
        client
            .wait_task(&upid, &WaitOptions::default())
            .await
            .unwrap();
    }
    let allocator = VmidAllocator::new(VmidRange::new(1000, 1099).unwrap());
    let template = CreateCt::new(0, TEMPLATE).hostname("pod").tags(&["k8s"]);
    let mut handles = Vec::new();
    for _ in 0..20 {
        let client = client.clone();
        let allocator = allocator.clone();
        let template = template.clone();
        handles.push(tokio::spawn(async move {
            let (vmid, upid) = client
                .create_ct_allocated("pve1", &allocator, &template)
                .await?;
            client.wait_task(&upid, &WaitOptions::default()).await?;
            Ok::<u32, Error>(vmid)
        }));
    }
    let mut ids = BTreeSet::new();
    for h in handles {
        let vmid = h.await.unwrap().unwrap();
        assert!((1000..=1099).contains(&vmid));
        assert!(ids.insert(vmid), "VMID {vmid} handed out twice");
    }
    assert_eq!(ids.len(), 20);
    for taken in [1000, 1001, 1003] {
        assert!(!ids.contains(&taken));
    }
    let on_server: BTreeSet<u32> = client
        .list_cts("pve1")
        .await
        .unwrap()
        .iter()
        .map(|c| c.vmid)
        .collect();
    assert_eq!(on_server.len(), 23);
    assert!(ids.is_subset(&on_server));
}

#[tokio::test]
async fn twenty_processes_claiming_config_files_never_collide() {
    // Separate allocators share nothing, as separate shim processes: only the exclusive
    // creation of VMID.conf decides.
    let server = server().await;
    let dir = Arc::new(server.context().config_dir.clone());
    std::fs::write(dir.join("2000.conf"), "hostname: existing\n").unwrap();
    let mut handles = Vec::new();
    for i in 0..20 {
        let dir = dir.clone();
        handles.push(tokio::spawn(async move {
            let allocator = VmidAllocator::new(VmidRange::new(2000, 2030).unwrap());
            let contents = format!("hostname: claim-{i}\nlock: create\n");
            allocator
                .allocate(&BTreeSet::new(), |vmid| {
                    let dir = dir.clone();
                    let contents = contents.clone();
                    async move { claim_config_file(&dir, vmid, &contents).await }
                })
                .await
        }));
    }
    let mut ids = BTreeSet::new();
    for h in handles {
        let (vmid, path) = h.await.unwrap().unwrap();
        assert!(ids.insert(vmid), "VMID {vmid} claimed twice");
        assert!(path.ends_with(format!("{vmid}.conf")));
    }
    assert_eq!(ids.len(), 20);
    assert!(!ids.contains(&2000));
    // The server sees them as CTs.
    let client = token_client(&server);
    let cts = client.list_cts("pve1").await.unwrap();
    assert_eq!(cts.len(), 21);
    assert!(cts
        .iter()
        .filter(|c| c.vmid != 2000)
        .all(|c| c.lock.as_deref() == Some("create")));
}

#[tokio::test]
async fn exhausted_range_and_claim_errors() {
    let dir = tempfile::tempdir().unwrap();
    let allocator = VmidAllocator::new(VmidRange::new(100, 102).unwrap());
    for _ in 0..3 {
        allocator
            .allocate(&BTreeSet::new(), |v| claim_config_file(dir.path(), v, ""))
            .await
            .unwrap();
    }
    let e = allocator
        .allocate(&BTreeSet::new(), |v| claim_config_file(dir.path(), v, ""))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::VmidExhausted {
                start: 100,
                end: 102,
                tried: 3
            }
        ),
        "{e:?}"
    );
    // A claim that fails for another reason stops the search at once.
    let allocator = VmidAllocator::new(VmidRange::new(200, 300).unwrap());
    let mut calls = 0;
    let e = allocator
        .allocate(&BTreeSet::new(), |v| {
            calls += 1;
            async move {
                Err::<Claim<()>, _>(Error::Claim {
                    vmid: v,
                    message: "read-only file system".into(),
                })
            }
        })
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Claim { vmid: 200, .. }));
    assert_eq!(calls, 1);
    assert!(VmidRange::new(99, 200).is_err());
    assert!(VmidRange::new(300, 200).is_err());
}

/// Allocates from `allocator` by creating `VMID.conf` in `dir`, then removes it again (a
/// container that lived briefly, as `ctr run --rm` makes).
async fn allocate_and_release(allocator: &VmidAllocator, dir: &std::path::Path) -> u32 {
    let (vmid, path) = allocator
        .allocate(&BTreeSet::new(), |vmid| {
            claim_config_file(dir, vmid, "arch: amd64\n")
        })
        .await
        .unwrap();
    std::fs::remove_file(path).unwrap();
    vmid
}

/// systemd refuses `pve-container@VMID` after 5 starts in 10 s: back-to-back short-lived
/// containers, each from a new shim process (a new allocator), must not reuse one VMID.
#[tokio::test]
async fn a_shared_cursor_does_not_reuse_a_vmid_across_processes() {
    let dir = tempfile::tempdir().unwrap();
    let cursor = dir.path().join("lock/vmid-cursor");
    let range = VmidRange::new(2000, 2099).unwrap();
    let mut seen = BTreeSet::new();
    for _ in 0..20 {
        let process = VmidAllocator::new(range).with_cursor_file(&cursor);
        let vmid = allocate_and_release(&process, dir.path()).await;
        assert!((2000..=2099).contains(&vmid));
        assert!(seen.insert(vmid), "VMID {vmid} reused: {seen:?}");
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&cursor).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // It wraps: after the range's end the search starts over at its start.
    std::fs::write(&cursor, "2099\n").unwrap();
    let process = VmidAllocator::new(range).with_cursor_file(&cursor);
    assert_eq!(allocate_and_release(&process, dir.path()).await, 2099);
    assert_eq!(allocate_and_release(&process, dir.path()).await, 2000);
    // A cursor outside the range (the range was changed) is ignored.
    std::fs::write(&cursor, "5\n").unwrap();
    let process = VmidAllocator::new(range).with_cursor_file(&cursor);
    assert_eq!(allocate_and_release(&process, dir.path()).await, 2000);
}

/// pmxcfs refuses files over 1 MiB: the claim says so, and leaves no file.
#[tokio::test]
async fn a_config_over_pmxcfs_limit_is_refused_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let big = "a".repeat(pve_client::PMXCFS_MAX_FILE_SIZE + 1);
    let err = claim_config_file(dir.path(), 3000, &big).await.unwrap_err();
    assert!(err.to_string().contains("1 MiB"), "{err}");
    assert!(!dir.path().join("3000.conf").exists());
}
