//! `containerd-shim-proxmox-lxc-v2 check [--config FILE]`: what an operator runs once on a node
//! to see whether the shim's configuration works, in plain words. Nothing is created or
//! changed, and no task is started: the privileges come from `GET /access/permissions`.

use std::collections::BTreeSet;
use std::path::Path;

use crate::config::{DriverKind, PveSection, ShimConfig};
use crate::pve_api::{client_for, read_token_secret};

/// What the check found: lines for the operator, and whether anything is wrong.
#[derive(Debug, Default)]
pub struct Report {
    pub lines: Vec<String>,
    pub problems: usize,
}

impl Report {
    fn ok(&mut self, text: impl Into<String>) {
        self.lines.push(format!("ok       {}", text.into()));
    }
    fn problem(&mut self, text: impl Into<String>) {
        self.problems += 1;
        self.lines.push(format!("PROBLEM  {}", text.into()));
    }
    fn note(&mut self, text: impl Into<String>) {
        self.lines.push(format!("note     {}", text.into()));
    }
}

/// Runs every check of the configuration at `path`, in order; a check that the later ones
/// depend on (config, secret, reaching the API) ends the run when it fails.
pub async fn check(path: &Path) -> Report {
    let mut r = Report::default();
    let Some(config) = load_config(path, &mut r) else {
        return r;
    };
    for tool in ["lxc-start", "lxc-attach", "lxc-info"] {
        if crate::host::process::command::on_path(tool).is_some() {
            r.ok(format!("{tool} found"));
        } else {
            r.problem(format!("{tool} is not on PATH: install the lxc package"));
        }
    }
    if config.driver() == DriverKind::Lxc {
        check_ptrace(&mut r);
        r.ok("driver \"lxc\": no Proxmox VE checks needed");
        return r;
    }
    let Some(pve) = config.pve.clone() else {
        r.problem("driver \"pve\" needs a [pve] section");
        return r;
    };
    let Some(client) = local_pve_setup(&pve, &mut r) else {
        return r;
    };
    if !api_answers(&client, &pve, &mut r).await {
        return r;
    }
    check_node(&client, &pve, &mut r).await;
    check_vmid_range(&client, &pve, &mut r).await;
    note_unused_storage(&pve, &mut r);
    check_privileges(&client, &pve, &mut r).await;
    check_backup_jobs(&client, &pve, &mut r).await;
    check_dirs(&pve, &mut r);
    r
}

/// The lxc driver reads a container's seccomp filters with ptrace, once, to give its execs the
/// same (driver/lxc.rs); Yama's mode 3 forbids ptrace even to root.
fn check_ptrace(r: &mut Report) {
    let scope = std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope");
    match scope.as_deref().map(str::trim) {
        Ok("3") => r.problem(
            "kernel.yama.ptrace_scope is 3 (no ptrace at all): the lxc driver cannot read a \
             container's seccomp filters for its execs, and Create fails; use 0, 1 or 2",
        ),
        Ok(mode) => r.ok(format!(
            "kernel.yama.ptrace_scope is {mode}: root may ptrace"
        )),
        Err(_) => r.ok("no Yama ptrace restrictions"),
    }
}

/// The config file, or the defaults where there is none; `None` when it does not parse.
fn load_config(path: &Path, r: &mut Report) -> Option<ShimConfig> {
    if !path.exists() {
        r.note(format!(
            "{} does not exist: the defaults apply (driver \"lxc\")",
            path.display()
        ));
        return Some(ShimConfig::default());
    }
    match ShimConfig::load_file(path) {
        Ok(c) => {
            r.ok(format!("configuration {} parses", path.display()));
            Some(c)
        }
        Err(e) => {
            r.problem(format!("configuration: {e}"));
            None
        }
    }
}

/// The token secret file, the CA file and the API client: what needs no request.
fn local_pve_setup(pve: &PveSection, r: &mut Report) -> Option<pve_client::Client> {
    match read_token_secret(&pve.token_secret_file) {
        Ok(_) => r.ok(format!(
            "token secret file {} is private",
            pve.token_secret_file.display()
        )),
        Err(e) => {
            r.problem(e.to_string());
            return None;
        }
    }
    if let Some(ca) = &pve.ca_file {
        if !ca.is_file() {
            r.problem(format!("CA file {} does not exist", ca.display()));
            return None;
        }
    }
    match client_for(pve) {
        Ok(c) => Some(c),
        Err(e) => {
            r.problem(format!("API client: {e}"));
            None
        }
    }
}

/// `GET /version`: TLS, the token and the URL in one request, each failure named.
async fn api_answers(client: &pve_client::Client, pve: &PveSection, r: &mut Report) -> bool {
    match client.version().await {
        Ok(v) => {
            r.ok(format!(
                "{} answers (Proxmox VE {}); TLS and token {} accepted",
                pve.url, v.version, pve.token_id
            ));
            return true;
        }
        Err(e) if e.is_tls_failure() => r.problem(format!(
            "TLS: the certificate of {} is not trusted ({e}); set pve.ca_file to the cluster's pve-root-ca.pem or pve.fingerprint to the node's certificate fingerprint",
            pve.url
        )),
        Err(e) if e.is_unauthorized() => r.problem(format!(
            "the token {} was refused ({e}): check token_id and the secret file",
            pve.token_id
        )),
        Err(e) if e.is_connection_failure() => {
            r.problem(format!("cannot reach {}: {e}", pve.url))
        }
        Err(e) => r.problem(format!("GET /version: {e}")),
    }
    false
}

/// The configured node is online, is this host, and the cluster is quorate.
async fn check_node(client: &pve_client::Client, pve: &PveSection, r: &mut Report) {
    match client.nodes().await {
        Ok(nodes) => match nodes.iter().find(|n| n.node == pve.node) {
            Some(n) if n.status == "online" => r.ok(format!("node {} is online", pve.node)),
            Some(n) => r.problem(format!("node {} is {}", pve.node, n.status)),
            None => r.problem(format!(
                "node {} is not in the cluster (nodes: {})",
                pve.node,
                nodes
                    .iter()
                    .map(|n| n.node.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        },
        Err(e) => r.problem(format!("listing nodes (needs Sys.Audit): {e}")),
    }
    if let Ok(host) = nix::unistd::gethostname() {
        let host = host.to_string_lossy().to_string();
        let short = host.split('.').next().unwrap_or("").to_string();
        if short != pve.node {
            r.note(format!(
                "this host is {host:?} but pve.node is {:?}: the shim must run on the node whose CTs it makes",
                pve.node
            ));
        }
    }
    match client.quorate().await {
        Ok(true) => r.ok("the cluster is quorate"),
        Ok(false) => r.problem("the cluster has no quorum: CTs can be neither created nor started"),
        Err(e) => r.problem(format!("cluster status: {e}")),
    }
}

async fn check_vmid_range(client: &pve_client::Client, pve: &PveSection, r: &mut Report) {
    let used: BTreeSet<u32> = match client.used_vmids().await {
        Ok(u) => u,
        Err(e) => {
            r.problem(format!("listing guests (needs VM.Audit): {e}"));
            BTreeSet::new()
        }
    };
    let [low, high] = pve.vmid_range;
    let taken = used.range(low..=high).count() as u64;
    let size = u64::from(high - low) + 1;
    if taken >= size {
        r.problem(format!("VMID range {low}..={high} is full ({taken} used)"));
    } else {
        r.ok(format!(
            "VMID range {low}..={high}: {} free, {taken} in use",
            size - taken
        ));
    }
}

/// `storage` is read but not used (see `PveSection::storage`).
fn note_unused_storage(pve: &PveSection, r: &mut Report) {
    if let Some(storage) = &pve.storage {
        r.note(format!(
            "pve.storage = {storage:?} is not used (CTs use containerd's rootfs directory, no Proxmox storage): remove it"
        ));
    }
}

/// Privileges: what the API says about the token's own permissions. A start request as a
/// probe would not do: Proxmox checks the privilege, forks the task and only then loads the
/// config (PVE::API2::LXC::Status, `vm_start`), so a free VMID gets a UPID and a failed task
/// in the node's task log.
async fn check_privileges(client: &pve_client::Client, pve: &PveSection, r: &mut Report) {
    let path = format!("/vms/{}", pve.vmid_range[0]);
    match client.permissions(Some(&path)).await {
        Ok(perms) => {
            let held = perms.get(&path).cloned().unwrap_or_default();
            for (privilege, what) in [
                ("VM.PowerMgmt", "start and stop CTs"),
                ("VM.Allocate", "destroy CTs"),
                ("VM.Audit", "list CTs"),
                (
                    "VM.Config.Memory",
                    "show updated memory limits in CT configs",
                ),
                ("VM.Config.CPU", "show updated CPU limits in CT configs"),
            ] {
                if held.contains(privilege) {
                    r.ok(format!("the token may {what} ({privilege} on {path})"));
                } else {
                    r.problem(format!(
                        "the token may not {what}: it lacks {privilege} on {path}; grant it on /vms (pveum acl modify /vms --tokens {} --roles PVEVMAdmin)",
                        pve.token_id
                    ));
                }
            }
        }
        Err(e) => r.problem(format!(
            "reading the token's permissions (GET /access/permissions): {e}"
        )),
    }
}

/// Backup jobs that would back up the shim's CTs: a job for "all" guests includes them unless
/// its `exclude` lists every VMID of the range (vzdump has no ranges). Their root file system
/// (containerd's snapshot, a bind mount) is always backed up, and mode `stop` stops and
/// restarts the workload. A warning, not a problem: the shim works either way.
async fn check_backup_jobs(client: &pve_client::Client, pve: &PveSection, r: &mut Report) {
    let [low, high] = pve.vmid_range;
    match client.backup_jobs().await {
        Ok(jobs) => {
            let mut covering = 0;
            for job in &jobs {
                let n = job.covered_in_range(&pve.node, low, high);
                if n > 0 {
                    covering += 1;
                    r.note(format!(
                        "WARNING backup job {} would back up the shim's CTs ({n} VMIDs of {low}..={high} are not excluded): select its guests by pool or by VMID list instead of \"all\" (see docs/pve-driver.md, \"Backups\")",
                        job.id
                    ));
                }
            }
            if covering == 0 {
                r.ok(format!(
                    "no backup job covers VMIDs {low}..={high} ({} jobs)",
                    jobs.len()
                ));
            }
        }
        Err(e) => r.note(format!(
            "backup jobs could not be read (GET /cluster/backup needs Sys.Audit on /): {e}"
        )),
    }
}

fn check_dirs(pve: &PveSection, r: &mut Report) {
    for (what, dir) in [("config_dir", &pve.config_dir), ("lock_dir", &pve.lock_dir)] {
        if dir.is_dir() {
            r.ok(format!("{what} {} exists", dir.display()));
        } else if what == "lock_dir" {
            r.note(format!(
                "{what} {} does not exist yet; the shim creates it",
                dir.display()
            ));
        } else {
            r.problem(format!(
                "{what} {} does not exist: on a Proxmox VE node it is /etc/pve/lxc (run the shim on the node)",
                dir.display()
            ));
        }
    }
}
