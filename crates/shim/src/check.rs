//! `containerd-shim-proxmox-lxc-v2 check`: what an operator runs once on a node to see whether
//! the shim's setup works, in plain words. Nothing is created or changed, and no task is
//! started: the privileges come from `GET /access/permissions`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use pve_client::ResourceType;

use crate::config::{DriverKind, PveSection, ShimConfig, HOST_CONFIG_ENV, HOST_CONFIG_PATH};
use crate::pve_api::{client_for, read_token_secret};
use crate::RUNTIME_NAME;

/// Where containerd reads its configuration unless told otherwise (`containerd --config`).
pub const DEFAULT_CONTAINERD_CONFIG: &str = "/etc/containerd/config.toml";

/// The role and ACL scheme the shim's token needs (docs/operator.md, "The Proxmox token"):
/// `ContainerdShim` on `/vms`, `ContainerdShimAudit` (Sys.Audit only) on `/` without
/// propagation. Each privilege with what fails without it.
pub const VM_ROLE: &str = "ContainerdShim";
pub const AUDIT_ROLE: &str = "ContainerdShimAudit";
pub const VM_PRIVILEGES: [(&str, &str); 5] = [
    (
        "VM.Audit",
        "find its CTs (GET /cluster/resources lists only guests the token may audit: recovery \
         after a crash, gc, the VMID range check)",
    ),
    ("VM.PowerMgmt", "start CTs"),
    ("VM.Allocate", "destroy CTs"),
    ("VM.Config.CPU", "write updated CPU limits into CT configs"),
    (
        "VM.Config.Memory",
        "write updated memory limits into CT configs",
    ),
];
pub const AUDIT_PRIVILEGES: [(&str, &str); 1] = [(
    "Sys.Audit",
    "read the cluster's quorum (GET /cluster/status) and backup jobs (GET /cluster/backup)",
)];

/// What to check, and where.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// The shim's configuration named on the command line (must exist); `None`: the host
    /// configuration ([`HOST_CONFIG_ENV`], else [`HOST_CONFIG_PATH`] or the defaults).
    pub config: Option<PathBuf>,
    /// containerd's configuration, searched for this runtime's entry.
    pub containerd_config: PathBuf,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            config: None,
            containerd_config: PathBuf::from(DEFAULT_CONTAINERD_CONFIG),
        }
    }
}

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

/// Runs every check, in order; a check that the later ones depend on (config, secret,
/// reaching the API) ends the run when it fails.
pub async fn check(options: &CheckOptions) -> Report {
    let mut r = Report::default();
    let Some(config) = load_config(options.config.as_deref(), &mut r) else {
        return r;
    };
    for tool in ["lxc-start", "lxc-attach", "lxc-info"] {
        if crate::host::process::command::on_path(tool).is_some() {
            r.ok(format!("{tool} found"));
        } else {
            r.problem(format!(
                "{tool} is not on PATH: install LXC (on a Proxmox VE node it comes with \
                 lxc-pve; elsewhere the lxc package)"
            ));
        }
    }
    check_containerd_runtime(&options.containerd_config, &mut r);
    if config.driver() == DriverKind::Lxc {
        check_ptrace(&mut r);
        r.ok("driver \"lxc\": no Proxmox VE checks needed");
        return r;
    }
    let Some(pve) = config.pve.clone() else {
        r.problem("driver \"pve\" needs a [pve] section");
        return r;
    };
    check_local_settings(&pve, &mut r);
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

/// The shim's configuration: the file named (which must exist), else the host file, else the
/// defaults; `None` when it is missing or does not parse.
fn load_config(named: Option<&Path>, r: &mut Report) -> Option<ShimConfig> {
    let from_env = std::env::var_os(HOST_CONFIG_ENV).filter(|v| !v.is_empty());
    let (path, named_by) = match (named, from_env) {
        (Some(path), _) => (path.to_path_buf(), Some("--config".to_string())),
        (None, Some(path)) => (PathBuf::from(path), Some(format!("${HOST_CONFIG_ENV}"))),
        (None, None) => (PathBuf::from(HOST_CONFIG_PATH), None),
    };
    if !path.exists() {
        match named_by {
            Some(by) => {
                r.problem(format!(
                    "configuration file {} (named by {by}) does not exist: correct the path, \
                     or leave it out to use {HOST_CONFIG_PATH}",
                    path.display()
                ));
                return None;
            }
            None => {
                r.note(format!(
                    "{} does not exist: the defaults apply (driver \"lxc\"); for the pve driver \
                     write it (docs/operator.md)",
                    path.display()
                ));
                return Some(ShimConfig::default());
            }
        }
    }
    match ShimConfig::load_file(&path) {
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

/// Where CRI reads its runtimes in each containerd config `version` (containerd
/// docs/cri/config.md and docs/PLUGINS.md): 3 is containerd 2.x's layout, 2 containerd 1.x's
/// (containerd 2.x converts it), 1 (no `version`) the oldest.
fn cri_runtimes_table(version: i64) -> [&'static str; 4] {
    match version {
        3.. => [
            "plugins",
            "io.containerd.cri.v1.runtime",
            "containerd",
            "runtimes",
        ],
        2 => [
            "plugins",
            "io.containerd.grpc.v1.cri",
            "containerd",
            "runtimes",
        ],
        _ => ["plugins", "cri", "containerd", "runtimes"],
    }
}

/// A TOML table path as a header: `plugins."io.containerd.grpc.v1.cri".containerd`.
fn toml_header(path: &[String]) -> String {
    path.iter()
        .map(|k| {
            if !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                k.clone()
            } else {
                format!("{k:?}")
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// A runtime entry of this shim's type found in a containerd config file.
struct RuntimeEntry {
    file: PathBuf,
    /// The file's config version.
    version: i64,
    /// Its table path.
    path: Vec<String>,
    table: toml::Table,
}

/// Every table under `value` whose `runtime_type` is this runtime.
fn find_runtime_entries(
    file: &Path,
    version: i64,
    path: &mut Vec<String>,
    table: &toml::Table,
    out: &mut Vec<RuntimeEntry>,
) {
    if table.get("runtime_type").and_then(|t| t.as_str()) == Some(RUNTIME_NAME) {
        out.push(RuntimeEntry {
            file: file.to_path_buf(),
            version,
            path: path.clone(),
            table: table.clone(),
        });
    }
    for (key, value) in table {
        if let Some(child) = value.as_table() {
            path.push(key.clone());
            find_runtime_entries(file, version, path, child, out);
            path.pop();
        }
    }
}

/// `*` and `?` in a file name, as containerd's `imports` (Go's filepath.Glob) allow.
fn wildcard_match(pattern: &[char], name: &[char]) -> bool {
    match (pattern.first(), name.first()) {
        (None, None) => true,
        (Some('*'), _) => {
            wildcard_match(&pattern[1..], name)
                || (!name.is_empty() && wildcard_match(pattern, &name[1..]))
        }
        (Some('?'), Some(_)) => wildcard_match(&pattern[1..], &name[1..]),
        (Some(p), Some(n)) if p == n => wildcard_match(&pattern[1..], &name[1..]),
        _ => false,
    }
}

/// The files a containerd config's `imports` name (relative to its directory; wildcards in
/// the file name), sorted as containerd merges them.
fn imported_files(config: &Path, imports: &[toml::Value]) -> Vec<PathBuf> {
    let base = config.parent().unwrap_or(Path::new("/"));
    let mut files = Vec::new();
    for import in imports.iter().filter_map(|i| i.as_str()) {
        let path = base.join(import);
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        if !name.contains(['*', '?']) {
            files.push(path);
            continue;
        }
        let pattern: Vec<char> = name.chars().collect();
        let dir = path.parent().unwrap_or(Path::new("/"));
        let mut matched: Vec<PathBuf> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| {
                let n: Vec<char> = e.file_name().to_string_lossy().chars().collect();
                wildcard_match(&pattern, &n)
            })
            .map(|e| e.path())
            .collect();
        matched.sort();
        files.extend(matched);
    }
    files
}

/// containerd's configuration has a runtime of this type where CRI reads it (for a
/// Kubernetes RuntimeClass; `ctr run --runtime io.containerd.proxmox-lxc.v2` needs none), and
/// a `ConfigPath` in its options names a file that exists.
fn check_containerd_runtime(config: &Path, r: &mut Report) {
    let example = |version: i64| {
        let mut path: Vec<String> = cri_runtimes_table(version)
            .iter()
            .map(|s| s.to_string())
            .collect();
        path.push("proxmox-lxc".into());
        format!("[{}] runtime_type = \"{RUNTIME_NAME}\"", toml_header(&path))
    };
    let read = |file: &Path| -> Result<toml::Table, String> {
        let text = std::fs::read_to_string(file).map_err(|e| e.to_string())?;
        toml::from_str(&text).map_err(|e| e.to_string())
    };
    if !config.exists() {
        r.problem(format!(
            "containerd's configuration {} does not exist, so containerd has no runtime of \
             type {RUNTIME_NAME} and Kubernetes cannot select it (`ctr run --runtime \
             {RUNTIME_NAME}` works without one): write `containerd config default > {}`, add \
             {} (containerd 2.x; {} on 1.x) and restart containerd",
            config.display(),
            config.display(),
            example(3),
            example(2)
        ));
        return;
    }
    let main = match read(config) {
        Ok(t) => t,
        Err(e) => {
            r.problem(format!(
                "containerd's configuration {}: {e}",
                config.display()
            ));
            return;
        }
    };
    let main_version = main
        .get("version")
        .and_then(|v| v.as_integer())
        .unwrap_or(1);
    let mut entries = Vec::new();
    find_runtime_entries(config, main_version, &mut Vec::new(), &main, &mut entries);
    let imports = main
        .get("imports")
        .and_then(|i| i.as_array())
        .map(|list| imported_files(config, list))
        .unwrap_or_default();
    for file in &imports {
        match read(file) {
            Ok(t) => {
                let version = t
                    .get("version")
                    .and_then(|v| v.as_integer())
                    .unwrap_or(main_version);
                find_runtime_entries(file, version, &mut Vec::new(), &t, &mut entries);
            }
            Err(e) => r.problem(format!(
                "{} (imported by {}): {e}",
                file.display(),
                config.display()
            )),
        }
    }
    let searched = if imports.is_empty() {
        config.display().to_string()
    } else {
        format!("{} and its {} import(s)", config.display(), imports.len())
    };
    let (placed, misplaced): (Vec<&RuntimeEntry>, Vec<&RuntimeEntry>) =
        entries.iter().partition(|e| {
            let want = cri_runtimes_table(e.version);
            e.path.len() == want.len() + 1 && e.path.iter().zip(want).all(|(a, b)| a == b)
        });
    for e in &misplaced {
        let mut want: Vec<String> = cri_runtimes_table(e.version)
            .iter()
            .map(|s| s.to_string())
            .collect();
        want.push(e.path.last().cloned().unwrap_or_default());
        let v3_table = cri_runtimes_table(3);
        if e.version == 2 && e.path.iter().zip(v3_table).all(|(a, b)| a == b) {
            // containerd 2.x converts a version 2 config and keeps what is already under the
            // new plugin's name; containerd 1.x does not know that name.
            r.note(format!(
                "containerd: {} is a version 2 config with a runtime of type {RUNTIME_NAME} at \
                 [{}]: containerd 2.x reads it there, containerd 1.x does not (on 1.x move it \
                 to [{}])",
                e.file.display(),
                toml_header(&e.path),
                toml_header(&want)
            ));
            continue;
        }
        r.problem(format!(
            "containerd: {} has a runtime of type {RUNTIME_NAME} at [{}], but a version {} \
             config gives CRI its runtimes under [{}]: move it there (and restart containerd)",
            e.file.display(),
            toml_header(&e.path),
            e.version,
            toml_header(&want)
        ));
    }
    if placed.is_empty() && misplaced.is_empty() {
        r.problem(format!(
            "containerd: no runtime with runtime_type = \"{RUNTIME_NAME}\" in {searched}, so \
             Kubernetes cannot select it (`ctr run --runtime {RUNTIME_NAME}` works without \
             one): add {} to {} and restart containerd",
            example(main_version),
            config.display()
        ));
    }
    for e in placed {
        let name = e.path.last().cloned().unwrap_or_default();
        r.ok(format!(
            "containerd runtime \"{name}\" ({RUNTIME_NAME}) in {}: a RuntimeClass with \
             handler \"{name}\" selects it",
            e.file.display()
        ));
        let config_path = e
            .table
            .get("options")
            .and_then(|o| o.get("ConfigPath"))
            .and_then(|p| p.as_str());
        if let Some(path) = config_path.filter(|p| !p.is_empty()) {
            if Path::new(path).is_file() {
                r.ok(format!("runtime \"{name}\": its ConfigPath {path} exists"));
            } else {
                r.problem(format!(
                    "containerd runtime \"{name}\": options.ConfigPath {path} does not exist; \
                     every Create through it fails: correct it or remove the option (the \
                     default is {HOST_CONFIG_PATH})"
                ));
            }
        }
    }
}

/// What needs no request: the tag prefix and the task timeout (both validated when the file
/// parses; here in words).
fn check_local_settings(pve: &PveSection, r: &mut Report) {
    r.ok(format!(
        "tag_prefix {:?}: CTs are tagged {}-cid-<hash> (a valid Proxmox tag)",
        pve.tag_prefix, pve.tag_prefix
    ));
    let timeout = pve.task_timeout;
    if timeout < MIN_SENSIBLE_TASK_TIMEOUT {
        r.note(format!(
            "task_timeout = {timeout} s: a CT start takes a few seconds, more on a busy node; \
             below {MIN_SENSIBLE_TASK_TIMEOUT} s Creates fail that would have succeeded"
        ));
    } else if timeout > KUBELET_RUNTIME_REQUEST_TIMEOUT {
        r.note(format!(
            "task_timeout = {timeout} s is longer than the kubelet waits for a CRI request \
             (--runtime-request-timeout, 2 minutes by default): the kubelet gives up first"
        ));
    } else {
        r.ok(format!("task_timeout = {timeout} s"));
    }
}

/// Below this a start on a loaded node times out for nothing.
const MIN_SENSIBLE_TASK_TIMEOUT: u64 = 10;
/// kubelet's default `--runtime-request-timeout` (2m), in seconds.
const KUBELET_RUNTIME_REQUEST_TIMEOUT: u64 = 120;

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
        Err(e) if e.presented_fingerprint().is_some() => r.problem(format!(
            "TLS: {} presented a certificate with SHA-256 fingerprint {}, not pve.fingerprint \
             {}. If the node's certificate was renewed, compare on the node with `pvenode cert \
             info` (or `openssl x509 -noout -fingerprint -sha256 -in \
             /etc/pve/local/pveproxy-ssl.pem`, /etc/pve/local/pve-ssl.pem without a custom \
             certificate) and set pve.fingerprint to the new one; ca_file = \
             \"/etc/pve/pve-root-ca.pem\" instead survives renewals of Proxmox's own certificate",
            pve.url,
            e.presented_fingerprint().unwrap_or_default(),
            pve.fingerprint.as_deref().unwrap_or("(none)")
        )),
        Err(e) if e.is_tls_failure() => r.problem(format!(
            "TLS: the certificate of {} is not trusted ({e}); set pve.ca_file to the cluster's \
             /etc/pve/pve-root-ca.pem, or pve.fingerprint to the node certificate's (`pvenode \
             cert info`), and use a host name or address the certificate names",
            pve.url
        )),
        Err(e) if e.is_unauthorized() => r.problem(format!(
            "the token {} was refused ({e}): check token_id (user@realm!name) and the secret \
             file (the token's secret, without the user or \"PVEAPIToken=\")",
            pve.token_id
        )),
        Err(e) if e.is_connection_failure() => r.problem(format!(
            "cannot reach {}: {e}; is pveproxy running (`systemctl status pveproxy`) and the \
             URL's port 8006?",
            pve.url
        )),
        Err(e) => r.problem(format!("GET /version: {e}")),
    }
    false
}

/// The configured node is in the cluster and online, is this host, and the cluster is quorate.
async fn check_node(client: &pve_client::Client, pve: &PveSection, r: &mut Report) {
    match client.nodes().await {
        Ok(nodes) => match nodes.iter().find(|n| n.node == pve.node) {
            Some(n) if n.status == "online" => r.ok(format!("node {} is online", pve.node)),
            Some(n) => r.problem(format!(
                "node {} is {}: the shim starts CTs only on its own node, which must be online",
                pve.node, n.status
            )),
            None => r.problem(format!(
                "pve.node = {:?} is not a node of this cluster (its nodes: {}): set it to this \
                 node's name (`hostname`, as `pvecm nodes` lists it)",
                pve.node,
                nodes
                    .iter()
                    .map(|n| n.node.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        },
        Err(e) => r.problem(format!("listing nodes (GET /nodes): {e}")),
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
        Err(e) => r.problem(format!("cluster status (GET /cluster/status): {e}")),
    }
}

/// The VMID range has room, and what else lives in it.
async fn check_vmid_range(client: &pve_client::Client, pve: &PveSection, r: &mut Report) {
    let [low, high] = pve.vmid_range;
    let guests = match client.cluster_resources(Some(ResourceType::Vm)).await {
        Ok(g) => g,
        Err(e) => {
            r.problem(format!("listing guests (GET /cluster/resources): {e}"));
            return;
        }
    };
    let tag_start = format!("{}-cid-", pve.tag_prefix);
    let mut used = BTreeSet::new();
    let mut foreign = Vec::new();
    for g in &guests {
        let Some(vmid) = g.vmid.filter(|v| (low..=high).contains(v)) else {
            continue;
        };
        used.insert(vmid);
        let ours = g
            .tags
            .as_deref()
            .is_some_and(|t| t.split([';', ',', ' ']).any(|x| x.starts_with(&tag_start)));
        if !ours {
            foreign.push(vmid);
        }
    }
    let taken = used.len() as u64;
    let size = u64::from(high - low) + 1;
    if taken >= size {
        r.problem(format!(
            "VMID range {low}..={high} is full ({taken} used): widen pve.vmid_range or remove \
             CTs (`gc --dry-run` lists the shim's stale ones)"
        ));
    } else {
        r.ok(format!(
            "VMID range {low}..={high}: {} free, {taken} in use",
            size - taken
        ));
    }
    if !foreign.is_empty() {
        let shown: Vec<String> = foreign.iter().take(5).map(u32::to_string).collect();
        r.note(format!(
            "{} guest(s) in the VMID range were not made by this shim (no {tag_start}… tag: {}{}): \
             the shim skips their VMIDs and never touches them, but keep the range for the shim",
            foreign.len(),
            shown.join(", "),
            if foreign.len() > 5 { ", …" } else { "" }
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

/// The `pveum` commands that grant one role of the scheme to the token's user.
fn grant_commands(
    pve: &PveSection,
    role: &str,
    privileges: &[(&str, &str)],
    acl_path: &str,
    acl_flags: &str,
) -> String {
    let user = pve.token_id.split('!').next().unwrap_or(&pve.token_id);
    let privs: Vec<&str> = privileges.iter().map(|(p, _)| *p).collect();
    format!(
        "`pveum role add {role} --privs \"{}\"` (`pveum role modify` if it exists), then \
         `pveum acl modify {acl_path} --users {user} --roles {role}{acl_flags}`; a token made with --privsep 1 \
         also needs `--tokens '{}'` on that ACL (docs/operator.md, \"The Proxmox token\")",
        privs.join(" "),
        pve.token_id
    )
}

/// Privileges: what the API says about the token's own permissions, against the one scheme
/// (see [`VM_PRIVILEGES`], [`AUDIT_PRIVILEGES`]). A start request as a probe would not do:
/// Proxmox checks the privilege, forks the task and only then loads the config
/// (PVE::API2::LXC::Status, `vm_start`), so a free VMID gets a UPID and a failed task in the
/// node's task log.
async fn check_privileges(client: &pve_client::Client, pve: &PveSection, r: &mut Report) {
    let vm_path = format!("/vms/{}", pve.vmid_range[0]);
    let mut extra = Vec::new();
    for (path, role, privileges, acl_path, acl_flags) in [
        (vm_path.as_str(), VM_ROLE, &VM_PRIVILEGES[..], "/vms", ""),
        (
            "/",
            AUDIT_ROLE,
            &AUDIT_PRIVILEGES[..],
            "/",
            " --propagate 0",
        ),
    ] {
        let held = match client.permissions(Some(path)).await {
            Ok(perms) => perms.get(path).cloned().unwrap_or_default(),
            Err(e) => {
                r.problem(format!(
                    "reading the token's permissions on {path} (GET /access/permissions): {e}"
                ));
                continue;
            }
        };
        for (privilege, what) in privileges {
            if held.contains(*privilege) {
                r.ok(format!("the token may {what} ({privilege} on {path})"));
            } else {
                r.problem(format!(
                    "the token may not {what}: it lacks {privilege} on {path}; grant the role: {}",
                    grant_commands(pve, role, privileges, acl_path, acl_flags)
                ));
            }
        }
        let needed: BTreeSet<&str> = privileges.iter().map(|(p, _)| *p).collect();
        extra.extend(
            held.iter()
                .filter(|p| !needed.contains(p.as_str()))
                .map(|p| format!("{p} on {path}")),
        );
    }
    if !extra.is_empty() {
        let shown: Vec<&str> = extra.iter().take(6).map(String::as_str).collect();
        r.note(format!(
            "the token holds {} privilege(s) the shim does not need ({}{}): least privilege is \
             {VM_ROLE} on /vms and {AUDIT_ROLE} on / (docs/operator.md)",
            extra.len(),
            shown.join(", "),
            if extra.len() > shown.len() {
                ", …"
            } else {
                ""
            }
        ));
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
