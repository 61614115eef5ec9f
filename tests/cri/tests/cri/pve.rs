//! The `pve` driver's node: the Proxmox API test server with real LXC (`e2e::pve_node`), and
//! the case only that driver has: each container a CT listed with the pod's tags.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{anyhow, Result};
use e2e::pve_node::{PveNode, TAG_PREFIX};

use crate::harness::*;

pub use e2e::pve_node::LXCPATH;
/// The VMIDs of this run: 100 of 991000-999999 chosen by the pid, clear of the ranges of
/// `e2e --test pve` (990100-990249). Every node's CTs share /var/lib/lxc (and LXC's cgroup
/// names), so two runs at once (CI and a developer's, say) must not share VMIDs: each test
/// server only knows its own CT configs.
pub fn range() -> [u32; 2] {
    let start = 991_000 + (std::process::id() % 90) * 100;
    [start, start + 99]
}
/// containerd's CRI plugin puts every pod in this namespace.
const NAMESPACE: &str = "k8s.io";

static NODE: Mutex<Option<PveNode>> = Mutex::new(None);

fn with_node<T>(f: impl FnOnce(&PveNode) -> T) -> Option<T> {
    NODE.lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .map(f)
}

/// Starts the node; returns the shim config file (`driver = "pve"`) that points at it. Its
/// `[lxc] lxcpath` is the lxc driver's, which the pve driver must not use (checked).
pub fn start_node(work: &Path, unused_lxcpath: &Path) -> Result<PathBuf> {
    let extra = format!("[lxc]\nlxcpath = \"{}\"\n", unused_lxcpath.display());
    let node = PveNode::start(work, range(), 60, &extra)?;
    let file = node.shim_config.clone();
    *NODE.lock().unwrap_or_else(|e| e.into_inner()) = Some(node);
    Ok(file)
}

/// The tag the shim gives the CT of containerd container `id`.
pub fn tag_of(id: &str) -> String {
    shim::driver::pve::container_tag(TAG_PREFIX, NAMESPACE, id)
}

/// VMIDs of the CTs whose config carries container `id`'s tag.
pub fn cts_of(id: &str) -> Vec<u32> {
    let tag = tag_of(id);
    with_node(PveNode::ct_configs)
        .unwrap_or_default()
        .into_iter()
        .filter(|(_, text)| {
            text.lines()
                .filter_map(|l| l.strip_prefix("tags:"))
                .any(|t| t.trim().split([';', ',', ' ']).any(|x| x == tag))
        })
        .map(|(vmid, _)| vmid)
        .collect()
}

/// A CT's config file (`/etc/pve/lxc/VMID.conf` on a node).
pub fn ct_config(vmid: u32) -> Option<String> {
    with_node(PveNode::ct_configs)?
        .into_iter()
        .find_map(|(v, text)| (v == vmid).then_some(text))
}

/// The logs of the node's tasks that contain `needle`.
pub fn task_logs_with(needle: &str) -> Vec<Vec<String>> {
    with_node(|n| {
        n.server
            .tasks()
            .into_iter()
            .filter_map(|upid| n.server.task_log(&upid))
            .filter(|log| log.iter().any(|l| l.contains(needle)))
            .collect()
    })
    .unwrap_or_default()
}

/// The name of the node the test server plays.
pub fn node_name() -> Option<String> {
    with_node(|n| n.server.node().to_string())
}

/// A CT's description (its notes in the GUI).
pub fn description(vmid: u32) -> Option<String> {
    with_node(|n| n.ct_description(vmid)).flatten()
}

/// `/cluster/resources?type=vm` through the API, as the Proxmox GUI lists guests.
pub fn resources() -> Result<Vec<pve_client::ClusterResource>> {
    with_node(PveNode::resources).ok_or_else(|| anyhow!("the pve node is not running"))?
}

/// What the CTs of containers `ids` left: configs with their tags.
pub fn leftovers_of(ids: &[String]) -> Vec<String> {
    ids.iter()
        .flat_map(|id| {
            cts_of(id)
                .into_iter()
                .map(move |vmid| format!("CT {vmid} of {id} left in the node's config dir"))
        })
        .collect()
}

/// Everything of the range left on the node; then stops the server.
pub fn teardown() -> Vec<String> {
    let out = with_node(PveNode::leftovers).unwrap_or_default();
    drop(NODE.lock().unwrap_or_else(|e| e.into_inner()).take());
    out
}

// Pods and what they must leave behind: nothing

/// pve driver: while a pod runs, each of its containers (the sandbox too) is a CT that
/// `/cluster/resources` lists on this node, running, with tags naming the Kubernetes namespace,
/// pod and container and notes saying the same, so an operator can tell in the Proxmox GUI what
/// it is; the workload is that CT's init; after removal no CT of the pod is listed (and
/// `finish` checks nothing else is left).
pub fn case_pve_cts_listed(env: &CriEnv) -> Result<()> {
    let mut c = env.cri()?;
    let mut pod = run_pod(env, "pve-tags", |_| {})?;
    let id = pod.run(&sleeper("web", &env.images.busybox))?;
    let sidecar = pod.run(&sleeper("sidecar", &env.images.busybox))?;
    for cid in [&id, &sidecar] {
        env.block_on(c.wait_state(cid, state::RUNNING, Duration::from_secs(20)))?;
    }
    let resources = self::resources()?;
    let node = node_name().ok_or_else(|| anyhow!("the pve node is not running"))?;
    let range = range();
    let mut listed = Vec::new();
    for (what, cid, kind_tag, note) in [
        (
            "container",
            id.as_str(),
            "k8s-ctr-web",
            "Kubernetes container: web",
        ),
        (
            "sidecar",
            sidecar.as_str(),
            "k8s-ctr-sidecar",
            "Kubernetes container: sidecar",
        ),
        (
            "sandbox",
            pod.id.as_str(),
            "k8s-sandbox",
            "Kubernetes pod sandbox",
        ),
    ] {
        let vmids = cts_of(cid);
        ensure!(
            vmids.len() == 1,
            "{what} {cid}: CTs with its tag: {vmids:?}"
        );
        let vmid = vmids[0];
        ensure!(
            (range[0]..=range[1]).contains(&vmid),
            "{what}: VMID {vmid} outside the configured range {range:?}"
        );
        let ct = resources
            .iter()
            .find(|r| r.vmid == Some(vmid))
            .ok_or_else(|| anyhow!("{what}: CT {vmid} not in /cluster/resources"))?;
        ensure!(
            ct.kind == "lxc" && ct.status.as_deref() == Some("running"),
            "{what}: CT {vmid} type {} status {:?}",
            ct.kind,
            ct.status
        );
        ensure!(
            ct.node.as_deref() == Some(node.as_str()),
            "{what}: CT {vmid} on node {:?}, the shim's node is {node}",
            ct.node
        );
        let tags = ct.tags.clone().unwrap_or_default();
        let tag_list: Vec<&str> = tags.split([';', ',', ' ']).collect();
        for t in ["k8s-ns-cri-e2e", "k8s-pod-pve-tags", kind_tag]
            .into_iter()
            .chain([tag_of(cid).as_str()])
        {
            ensure!(
                tag_list.contains(&t),
                "{what}: CT {vmid} tags {tags:?} lack {t:?}"
            );
        }
        // The CT's notes in the GUI.
        let notes = description(vmid).ok_or_else(|| anyhow!("CT {vmid}: no config or notes"))?;
        for want in [
            format!("OCI container {cid}"),
            "Kubernetes pod: cri-e2e/pve-tags".to_string(),
            note.to_string(),
            format!("containerd: k8s.io/{cid}"),
        ] {
            ensure!(
                notes.lines().any(|l| l == want),
                "{what}: CT {vmid} notes lack {want:?}:\n{notes}"
            );
        }
        ensure!(
            Path::new(LXCPATH).join(vmid.to_string()).is_dir(),
            "{what}: CT {vmid} has no LXC container in {}",
            LXCPATH
        );
        println!(
            "{}: {what} is CT {vmid} named {:?}, tags {tags}",
            test_prefix(env),
            ct.name.as_deref().unwrap_or("")
        );
        listed.push((cid.to_string(), vmid));
    }
    // The workload CRI reports is the CT's init, as LXC sees it.
    let pid = env.block_on(c.container_pid(&id))?;
    let out = std::process::Command::new("lxc-info")
        .args(["-p", "-H", "-n", &listed[0].1.to_string(), "-P", LXCPATH])
        .output()?;
    let ct_pid = String::from_utf8_lossy(&out.stdout).trim().to_string();
    ensure!(
        ct_pid == pid.to_string(),
        "CT {} init pid {ct_pid:?}, CRI says the container's is {pid}",
        listed[0].1
    );
    pod.finish()?;
    let resources = self::resources()?;
    for (cid, vmid) in &listed {
        let tag = tag_of(cid);
        ensure!(
            !resources
                .iter()
                .any(|r| r.tags.as_deref().is_some_and(|t| t.contains(&tag))),
            "CT {vmid} of {cid} still in /cluster/resources after the pod was removed"
        );
    }
    Ok(())
}
