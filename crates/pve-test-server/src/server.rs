//! The HTTPS server: transport, authentication, validation, request counting, faults.
//! The endpoint handlers are in `handlers.rs`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rand::Rng;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::backend::{InMemoryBackend, NodeBackend, NodeContext, TaskLog};
use crate::fault::{Fault, FaultRule};
use crate::schema::{check_prop, validate_parameters, ApiSchema, ParamErrors};
use crate::tls::{TlsError, TlsMaterial};

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Binding or creating directories failed.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// Certificates.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// How the server is set up. Build with [`TestServer::builder`].
pub struct TestServerBuilder {
    node: String,
    cluster_name: String,
    bind: SocketAddr,
    config_dir: Option<PathBuf>,
    lock_dir: Option<PathBuf>,
    tokens: Vec<(String, String)>,
    users: Vec<(String, String)>,
    ticket_lifetime: Duration,
    task_duration: Duration,
    lock_timeout: Duration,
    create_lock_timeout: Duration,
    storages: Vec<String>,
    backup_jobs: Vec<serde_json::Value>,
    backend: Arc<dyn NodeBackend>,
    token_privileges: Vec<(String, Vec<String>)>,
    start_limit: StartLimit,
}

/// systemd's start rate limit of one `pve-container@VMID` unit instance.
/// `pve-container@.service` sets no `StartLimit*`, so systemd's defaults apply
/// (`DefaultStartLimitIntervalSec=10s`, `DefaultStartLimitBurst=5`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StartLimit {
    /// Starts allowed per interval.
    pub burst: u32,
    /// The interval.
    pub interval: Duration,
}

impl Default for StartLimit {
    fn default() -> Self {
        StartLimit {
            burst: 5,
            interval: Duration::from_secs(10),
        }
    }
}

/// The privileges a token has when the builder names none for it (the ones this server
/// checks, and the ones `GET /access/permissions` reports).
pub const ALL_PRIVILEGES: &[&str] = &[
    "Datastore.Allocate",
    "Datastore.AllocateSpace",
    "Datastore.Audit",
    "Sys.Audit",
    "Sys.Modify",
    "VM.Allocate",
    "VM.Audit",
    "VM.Config.CPU",
    "VM.Config.Memory",
    "VM.Config.Options",
    "VM.PowerMgmt",
];

impl TestServerBuilder {
    /// Gives API token `token_id` exactly these privileges (on every path) instead of all of
    /// [`ALL_PRIVILEGES`].
    pub fn token_privileges(mut self, token_id: &str, privileges: &[&str]) -> Self {
        self.token_privileges.push((
            token_id.to_string(),
            privileges.iter().map(|p| p.to_string()).collect(),
        ));
        self
    }
    /// systemd's start limit per `pve-container@VMID` (default: systemd's 5 per 10 s).
    pub fn start_limit(mut self, limit: StartLimit) -> Self {
        self.start_limit = limit;
        self
    }
    /// Node name (default `pve`).
    pub fn node(mut self, node: &str) -> Self {
        self.node = node.to_string();
        self
    }
    /// Listen address (default `127.0.0.1:0`, an ephemeral port).
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.bind = addr;
        self
    }
    /// Directory of the CT configs (Proxmox: `/etc/pve/lxc`); default: a fresh temporary one.
    pub fn config_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.config_dir = Some(dir.into());
        self
    }
    /// Directory of the config lock files (Proxmox: `/run/lock/lxc`); default: a fresh
    /// temporary one.
    pub fn lock_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.lock_dir = Some(dir.into());
        self
    }
    /// Accepts an API token: `token_id` is `USER@REALM!TOKENID`.
    pub fn token(mut self, token_id: &str, secret: &str) -> Self {
        self.tokens.push((token_id.to_string(), secret.to_string()));
        self
    }
    /// Accepts a user (`USER@REALM`) with this password for tickets.
    pub fn user(mut self, userid: &str, password: &str) -> Self {
        self.users.push((userid.to_string(), password.to_string()));
        self
    }
    /// How long a ticket stays valid (Proxmox: 2 hours).
    pub fn ticket_lifetime(mut self, lifetime: Duration) -> Self {
        self.ticket_lifetime = lifetime;
        self
    }
    /// How long each task takes at least (default 30 ms).
    pub fn task_duration(mut self, d: Duration) -> Self {
        self.task_duration = d;
        self
    }
    /// How long an operation waits for a CT's config lock (Proxmox: 10 s; create: 5 s).
    pub fn lock_timeout(mut self, d: Duration) -> Self {
        self.lock_timeout = d;
        self.create_lock_timeout = d / 2;
        self
    }
    /// A backup job as `GET /cluster/backup` lists it (`jobs.cfg`: `id`, `all`, `exclude`,
    /// `pool`, `vmid`, `node`, `enabled`, `schedule`, ...); none by default.
    pub fn backup_job(mut self, job: serde_json::Value) -> Self {
        self.backup_jobs.push(job);
        self
    }
    /// Storages that exist (default `local`).
    pub fn storages(mut self, ids: &[&str]) -> Self {
        self.storages = ids.iter().map(|s| s.to_string()).collect();
        self
    }
    /// The node side (default [`InMemoryBackend`]).
    pub fn backend(mut self, backend: Arc<dyn NodeBackend>) -> Self {
        self.backend = backend;
        self
    }

    /// Generates the certificates, binds and starts serving.
    pub async fn start(self) -> Result<TestServer, ServerError> {
        let mut temp_dirs = Vec::new();
        let mut dir_or_temp = |given: Option<PathBuf>, what: &str| -> std::io::Result<PathBuf> {
            match given {
                Some(d) => {
                    std::fs::create_dir_all(&d)?;
                    Ok(d)
                }
                None => {
                    let d = tempfile::Builder::new()
                        .prefix(&format!("pve-test-{what}-"))
                        .tempdir()?;
                    let p = d.path().to_path_buf();
                    temp_dirs.push(d);
                    Ok(p)
                }
            }
        };
        let config_dir = dir_or_temp(self.config_dir, "lxc")?;
        let lock_dir = dir_or_temp(self.lock_dir, "lock")?;
        let tls = TlsMaterial::generate(&self.node)?;
        let listener = TcpListener::bind(self.bind).await?;
        let addr = listener.local_addr()?;
        let inner = Arc::new(Inner {
            ctx: NodeContext {
                node: self.node.clone(),
                config_dir,
                lock_dir,
            },
            cluster_name: self.cluster_name,
            tokens: self.tokens.into_iter().collect(),
            users: self.users.into_iter().collect(),
            ticket_lifetime: Mutex::new(self.ticket_lifetime),
            task_duration: self.task_duration,
            lock_timeout: self.lock_timeout,
            create_lock_timeout: self.create_lock_timeout,
            storages: self.storages,
            backup_jobs: self.backup_jobs,
            backend: self.backend,
            token_privileges: self
                .token_privileges
                .into_iter()
                .map(|(t, p)| (t, p.into_iter().collect()))
                .collect(),
            start_limit: self.start_limit,
            start_limit_state: Mutex::new(HashMap::new()),
            fingerprint: tls.fingerprint(),
            tickets: Mutex::new(HashMap::new()),
            tasks: Mutex::new(BTreeMap::new()),
            counts: Mutex::new(BTreeMap::new()),
            faults: Mutex::new(Vec::new()),
            logins: AtomicU64::new(0),
            schema_violations: Mutex::new(Vec::new()),
            connections: AtomicU64::new(0),
            auth_failures: AtomicU64::new(0),
            next_pid: AtomicU32::new(std::process::id() * 16),
            quorate: AtomicBool::new(true),
            config_dir_readonly: Mutex::new(false),
            start_time: Instant::now(),
        });
        let acceptor = TlsAcceptor::from(tls.server_config.clone());
        let accept_inner = inner.clone();
        let accept_task = tokio::spawn(async move {
            loop {
                let Ok((stream, _peer)) = listener.accept().await else {
                    continue;
                };
                accept_inner.connections.fetch_add(1, Ordering::SeqCst);
                let acceptor = acceptor.clone();
                let inner = accept_inner.clone();
                tokio::spawn(async move {
                    let tls_stream = match acceptor.accept(stream).await {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::debug!(error = %e, "TLS handshake failed");
                            return;
                        }
                    };
                    let service = hyper::service::service_fn(move |req| {
                        let inner = inner.clone();
                        async move { inner.handle(req).await }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls_stream), service)
                        .await;
                });
            }
        });
        tracing::info!(%addr, node = %inner.ctx.node, "pve-test-server listening");
        Ok(TestServer {
            inner,
            addr,
            tls,
            accept_task,
            _temp_dirs: temp_dirs,
        })
    }
}

/// A running test server. Dropping it stops accepting connections.
pub struct TestServer {
    inner: Arc<Inner>,
    addr: SocketAddr,
    tls: TlsMaterial,
    accept_task: JoinHandle<()>,
    _temp_dirs: Vec<tempfile::TempDir>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.accept_task.abort();
        // Nothing stays mounted.
        self.set_quorate(true);
    }
}

/// Bind-mounts `dir` over itself and makes that mount read-only.
fn readonly_bind(dir: &std::path::Path) -> nix::Result<()> {
    use nix::mount::{mount, umount2, MntFlags, MsFlags};
    mount(Some(dir), dir, None::<&str>, MsFlags::MS_BIND, None::<&str>)?;
    let remount = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    if let Err(e) = mount(None::<&str>, dir, None::<&str>, remount, None::<&str>) {
        let _ = umount2(dir, MntFlags::MNT_DETACH);
        return Err(e);
    }
    Ok(())
}

impl TestServer {
    /// A builder with defaults: node `pve`, `127.0.0.1:0`, temporary config and lock dirs,
    /// no users or tokens, 2 h tickets, 30 ms tasks, 10 s lock timeout, storage `local`.
    pub fn builder() -> TestServerBuilder {
        TestServerBuilder {
            node: "pve".into(),
            cluster_name: "testcluster".into(),
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            config_dir: None,
            lock_dir: None,
            tokens: Vec::new(),
            users: Vec::new(),
            ticket_lifetime: Duration::from_secs(7200),
            task_duration: Duration::from_millis(30),
            lock_timeout: Duration::from_secs(10),
            create_lock_timeout: Duration::from_secs(5),
            storages: vec!["local".into()],
            backup_jobs: Vec::new(),
            backend: Arc::new(InMemoryBackend::default()),
            token_privileges: Vec::new(),
            start_limit: StartLimit::default(),
        }
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    /// The API base URL, `https://127.0.0.1:PORT/api2/json`.
    pub fn url(&self) -> String {
        format!("https://{}/api2/json", self.addr)
    }
    /// The node name.
    pub fn node(&self) -> &str {
        &self.inner.ctx.node
    }
    /// Facts a backend gets (config and lock directories).
    pub fn context(&self) -> &NodeContext {
        &self.inner.ctx
    }
    /// PEM of the CA that signed the server certificate (like `pve-root-ca.pem`).
    pub fn ca_pem(&self) -> &str {
        &self.tls.ca_pem
    }
    /// PEM of the server certificate.
    pub fn cert_pem(&self) -> &str {
        &self.tls.cert_pem
    }
    /// SHA-256 fingerprint of the server certificate, `AB:CD:...`.
    pub fn fingerprint(&self) -> &str {
        &self.inner.fingerprint
    }
    /// Writes the CA PEM to `path`.
    pub fn write_ca_file(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, &self.tls.ca_pem)
    }

    /// Requests received for `METHOD TEMPLATE` (e.g. `"GET", "/nodes/{node}/lxc"`),
    /// including failed, refused and dropped ones.
    pub fn requests(&self, method: &str, template: &str) -> u64 {
        let counts = self.inner.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts
            .get(&format!("{method} {template}"))
            .copied()
            .unwrap_or(0)
    }
    /// All counters, keyed `METHOD TEMPLATE`.
    pub fn request_counts(&self) -> BTreeMap<String, u64> {
        self.inner
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
    /// Sum of all counters.
    pub fn total_requests(&self) -> u64 {
        self.request_counts().values().sum()
    }
    /// Clears the counters.
    pub fn reset_counts(&self) {
        self.inner
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
    /// Successful logins (`POST /access/ticket`).
    pub fn logins(&self) -> u64 {
        self.inner.logins.load(Ordering::SeqCst)
    }
    /// TCP connections accepted (including those whose TLS handshake failed).
    pub fn connections(&self) -> u64 {
        self.inner.connections.load(Ordering::SeqCst)
    }
    /// Every ticket issued so far (for tests that prove tickets never reach a log).
    pub fn issued_tickets(&self) -> Vec<String> {
        let tickets = self.inner.tickets.lock().unwrap_or_else(|e| e.into_inner());
        tickets.keys().cloned().collect()
    }
    /// Answers of this server that did not fit the `returns` schema of their endpoint
    /// (should stay empty; tests assert it).
    pub fn schema_violations(&self) -> Vec<String> {
        self.inner
            .schema_violations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
    /// Requests refused with 401.
    pub fn auth_failures(&self) -> u64 {
        self.inner.auth_failures.load(Ordering::SeqCst)
    }
    /// Adds a fault rule.
    pub fn inject(&self, rule: FaultRule) {
        self.inner
            .faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(rule);
    }
    /// Removes all fault rules.
    pub fn clear_faults(&self) {
        self.inner
            .faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
    /// `systemctl reset-failed pve-container@VMID`: forgets the unit's start-limit state.
    pub fn reset_failed(&self, vmid: u32) {
        self.inner.backend.reset_failed(vmid);
        self.inner
            .start_limit_state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&vmid);
    }
    /// Sets whether the cluster reports quorum.
    ///
    /// Without quorum pmxcfs also refuses every write below `/etc/pve` (pve-cluster
    /// `src/pmxcfs/cfs-plug-memdb.c`: EACCES unless quorate). As root the server does the same
    /// to its config dir with a read-only bind mount of the dir over itself (EROFS), so a
    /// writer such as the shim's VMID claim fails as on a node; it is unmounted when quorum
    /// returns or the server is dropped. Without root only the API sees the lost quorum.
    pub fn set_quorate(&self, quorate: bool) {
        self.inner.quorate.store(quorate, Ordering::SeqCst);
        let mut readonly = self
            .inner
            .config_dir_readonly
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let dir = &self.inner.ctx.config_dir;
        if !quorate && !*readonly && nix::unistd::geteuid().is_root() {
            match readonly_bind(dir) {
                Ok(()) => *readonly = true,
                Err(e) => tracing::warn!("config dir {} not made read-only: {e}", dir.display()),
            }
        } else if quorate && *readonly {
            match nix::mount::umount2(dir, nix::mount::MntFlags::MNT_DETACH) {
                Ok(()) => *readonly = false,
                Err(e) => tracing::warn!("unmount {}: {e}", dir.display()),
            }
        }
    }
    /// Whether the config dir is read-only now (quorum lost, running as root).
    pub fn config_dir_readonly(&self) -> bool {
        *self
            .inner
            .config_dir_readonly
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
    /// Changes the lifetime of tickets, including those already issued.
    pub fn set_ticket_lifetime(&self, lifetime: Duration) {
        *self
            .inner
            .ticket_lifetime
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = lifetime;
    }
    /// The log of a task, if it exists.
    pub fn task_log(&self, upid: &str) -> Option<Vec<String>> {
        let tasks = self.inner.tasks.lock().unwrap_or_else(|e| e.into_inner());
        tasks.get(upid).map(|t| t.log.lines())
    }
    /// UPIDs of all tasks so far, oldest first.
    pub fn tasks(&self) -> Vec<String> {
        let tasks = self.inner.tasks.lock().unwrap_or_else(|e| e.into_inner());
        let mut list: Vec<_> = tasks.values().map(|t| (t.seq, t.upid.clone())).collect();
        list.sort();
        list.into_iter().map(|(_, u)| u).collect()
    }
    /// Waits until no task runs (for tests that inspect state afterwards).
    pub async fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let busy = {
                let tasks = self.inner.tasks.lock().unwrap_or_else(|e| e.into_inner());
                tasks.values().any(|t| {
                    t.exitstatus
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .is_none()
                })
            };
            if !busy {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }
}

/// Who made the request.
#[derive(Clone, Debug)]
pub(crate) struct Auth {
    /// `user@realm`.
    pub user: String,
    /// Token name when authenticated by API token.
    pub token: Option<String>,
}

impl Auth {
    /// `root@pam` with a ticket; an API token never counts as root@pam.
    pub fn is_root(&self) -> bool {
        self.user == "root@pam" && self.token.is_none()
    }
    /// The user as written in UPIDs (`user@realm!token` for tokens).
    pub fn upid_user(&self) -> String {
        match &self.token {
            Some(t) => format!("{}!{}", self.user, t),
            None => self.user.clone(),
        }
    }
}

impl Inner {
    /// The privileges of the requester: all for users (this server has no user ACLs), the
    /// configured ones for a restricted token.
    pub(crate) fn privileges(&self, auth: &Auth) -> BTreeSet<String> {
        match &auth.token {
            Some(_) => self
                .token_privileges
                .get(&auth.upid_user())
                .cloned()
                .unwrap_or_else(|| ALL_PRIVILEGES.iter().map(|p| p.to_string()).collect()),
            None => ALL_PRIVILEGES.iter().map(|p| p.to_string()).collect(),
        }
    }

    /// `$rpcenv->check(..., $path, [$privilege])`: 403 "Permission check failed" without it.
    pub(crate) fn check_privilege(
        &self,
        auth: &Auth,
        path: &str,
        privilege: &str,
    ) -> Result<(), ApiError> {
        if self.privileges(auth).contains(privilege) {
            Ok(())
        } else {
            Err(ApiError::status(
                403,
                format!("Permission check failed ({path}, {privilege})"),
            ))
        }
    }

    /// One `systemctl start pve-container@VMID` as systemd's `ratelimit_below` counts it:
    /// a window opens at the first start; within it `burst` starts pass and every further
    /// one fails, whether or not the earlier ones did, until the window has passed or
    /// `reset-failed`.
    pub(crate) fn unit_start_allowed(&self, vmid: u32) -> bool {
        let mut state = self
            .start_limit_state
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let entry = state.entry(vmid).or_insert((now, 0));
        if now.duration_since(entry.0) > self.start_limit.interval {
            *entry = (now, 0);
        }
        entry.1 += 1;
        entry.1 <= self.start_limit.burst
    }
}

pub(crate) struct Task {
    pub seq: u64,
    pub upid: String,
    /// What the task's status reports besides its state (an object): the UPID and its parts.
    pub status: Value,
    pub log: TaskLog,
    pub exitstatus: Arc<Mutex<Option<String>>>,
    pub hidden_polls: Arc<AtomicU32>,
}

pub(crate) struct Inner {
    pub ctx: NodeContext,
    pub cluster_name: String,
    tokens: HashMap<String, String>,
    users: HashMap<String, String>,
    ticket_lifetime: Mutex<Duration>,
    pub task_duration: Duration,
    pub lock_timeout: Duration,
    pub create_lock_timeout: Duration,
    pub storages: Vec<String>,
    pub backup_jobs: Vec<serde_json::Value>,
    pub backend: Arc<dyn NodeBackend>,
    /// Tokens with restricted privileges (the others have all).
    token_privileges: HashMap<String, BTreeSet<String>>,
    pub start_limit: StartLimit,
    /// systemd's rate limit state per unit instance: window begin and starts in it.
    start_limit_state: Mutex<HashMap<u32, (Instant, u32)>>,
    pub fingerprint: String,
    /// ticket -> (user, CSRF token, issued)
    tickets: Mutex<HashMap<String, (String, String, Instant)>>,
    pub tasks: Mutex<BTreeMap<String, Task>>,
    counts: Mutex<BTreeMap<String, u64>>,
    faults: Mutex<Vec<FaultRule>>,
    logins: AtomicU64,
    schema_violations: Mutex<Vec<String>>,
    connections: AtomicU64,
    auth_failures: AtomicU64,
    next_pid: AtomicU32,
    pub quorate: AtomicBool,
    /// The config dir is bind-mounted read-only over itself (quorum lost, as root).
    config_dir_readonly: Mutex<bool>,
    pub start_time: Instant,
}

/// The outcome of a handler: data (200) or an API error.
pub(crate) type HandlerResult = Result<Reply, ApiError>;

/// A successful answer.
pub(crate) struct Reply {
    pub data: Value,
    pub total: Option<u64>,
}

impl Reply {
    pub fn data(data: Value) -> Self {
        Reply { data, total: None }
    }
}

/// An error answer, shaped like Proxmox's.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub status: u16,
    pub message: String,
    pub errors: ParamErrors,
}

impl ApiError {
    /// A plain `die` in a handler: 500 with the message.
    pub fn die(message: impl Into<String>) -> Self {
        ApiError {
            status: 500,
            message: message.into(),
            errors: ParamErrors::new(),
        }
    }
    /// `raise_param_exc`: 400 "Parameter verification failed." with per-parameter errors.
    pub fn param(errors: ParamErrors) -> Self {
        ApiError {
            status: 400,
            message: "Parameter verification failed.\n".into(),
            errors,
        }
    }
    /// `raise_param_exc` for one parameter.
    pub fn param1(name: &str, msg: &str) -> Self {
        let mut e = ParamErrors::new();
        e.insert(name.to_string(), msg.to_string());
        Self::param(e)
    }
    pub fn status(status: u16, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            errors: ParamErrors::new(),
        }
    }
}

/// Request parameters after parsing: path variables, query and body.
pub(crate) type Params = BTreeMap<String, Value>;

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn random_hex(bytes: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..bytes)
        .map(|_| format!("{:02x}", rng.gen::<u8>()))
        .collect()
}

impl Inner {
    async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<Full<Bytes>>, std::io::Error> {
        let method = req.method().as_str().to_string();
        // pve-http-server unescapes the path before routing (a UPID arrives as %3A...).
        let raw_path = percent_decode_path(req.uri().path());
        let rel = raw_path
            .strip_prefix("/api2/json")
            .map(|p| if p.is_empty() { "/" } else { p });
        let schema = ApiSchema::builtin();
        let route = rel.map(|rel| schema.route(&method, rel));
        let template = match &route {
            Some(Ok((ep, _))) => ep.template.clone(),
            _ => rel.unwrap_or(&raw_path).to_string(),
        };
        {
            let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
            *counts.entry(format!("{method} {template}")).or_insert(0) += 1;
        }
        tracing::debug!(%method, path = %raw_path, "request");

        // Request-level faults come first: they model failures before the handler runs.
        if let Some(fault) = self.take_fault(&method, &template, false) {
            let vmid = match &route {
                Some(Ok((_, vars))) => vars.get("vmid").cloned(),
                _ => None,
            };
            match fault {
                Fault::DropConnection => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::ConnectionReset,
                        "fault injection: drop connection",
                    ));
                }
                Fault::Status { status, message } => {
                    return Ok(error_response(&ApiError::status(status, message)));
                }
                Fault::RawResponse { status, body } => {
                    let mut resp = json_response_raw(body);
                    *resp.status_mut() =
                        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                    return Ok(resp);
                }
                Fault::LockTimeout => {
                    let lock = self.ctx.lock_dir.join(format!(
                        "pve-config-{}.lock",
                        vmid.unwrap_or_else(|| "0".into())
                    ));
                    let mut msg = format!("can't lock file '{}' - got timeout\n", lock.display());
                    if method == "POST" && template == "/nodes/{node}/lxc" {
                        msg = format!("unable to create CT - {msg}");
                    }
                    return Ok(error_response(&ApiError::die(msg)));
                }
                Fault::CtLocked(lock) => {
                    return Ok(error_response(&ApiError::die(format!(
                        "CT is locked ({lock})\n"
                    ))));
                }
                _ => {}
            }
        }

        let Some(rel) = rel else {
            return Ok(error_response(&ApiError::status(501, "no such uri")));
        };

        // Parameters: query string always, body for POST/PUT (form or JSON).
        let query = req.uri().query().unwrap_or("").to_string();
        let headers = req.headers().clone();
        let body = match req.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => return Err(std::io::Error::other(e)),
        };
        let mut params = Params::new();
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            params.insert(k.into_owned(), Value::String(v.into_owned()));
        }
        if !body.is_empty() {
            if method != "POST" && method != "PUT" {
                return Ok(error_response(&ApiError::status(
                    501,
                    format!("Unexpected content for method '{method}'"),
                )));
            }
            let is_json = headers
                .get(hyper::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("application/json"));
            if is_json {
                match serde_json::from_slice::<serde_json::Map<String, Value>>(&body) {
                    Ok(map) => params.extend(map),
                    Err(e) => {
                        return Ok(error_response(&ApiError::status(
                            400,
                            format!("unable to parse JSON body - {e}"),
                        )))
                    }
                }
            } else {
                for (k, v) in form_urlencoded::parse(&body) {
                    params.insert(k.into_owned(), Value::String(v.into_owned()));
                }
            }
        }

        let is_login = method == "POST" && rel.trim_end_matches('/') == "/access/ticket";
        let auth = if is_login {
            None
        } else {
            match self.authenticate(&method, &headers) {
                Ok(a) => Some(a),
                Err(msg) => {
                    self.auth_failures.fetch_add(1, Ordering::SeqCst);
                    return Ok(bare_response(401, msg));
                }
            }
        };

        let (endpoint, vars) = match route {
            Some(Ok(found)) => found,
            _ => {
                return Ok(error_response(&ApiError::status(
                    501,
                    format!("Method '{method} {rel}' not implemented"),
                )))
            }
        };
        for (k, v) in vars {
            params.insert(k, Value::String(v));
        }
        let errors = validate_parameters(&endpoint.parameters, &params);
        if !errors.is_empty() {
            return Ok(error_response(&ApiError::param(errors)));
        }
        let result = if is_login {
            self.login(&params)
        } else {
            let auth = auth.unwrap_or(Auth {
                user: String::new(),
                token: None,
            });
            self.clone()
                .dispatch(&method, &endpoint.template, &params, &auth)
                .await
        };
        Ok(match result {
            Ok(reply) => {
                // Keep the double honest: every answer must fit the schema's `returns`.
                let mut violations = ParamErrors::new();
                check_prop(Some(&reply.data), &endpoint.returns, "", &mut violations);
                if !violations.is_empty() {
                    tracing::error!(%method, template = %endpoint.template, ?violations, "answer violates the schema");
                    let mut all = self
                        .schema_violations
                        .lock()
                        .unwrap_or_else(|e| e.into_inner());
                    for (k, v) in violations {
                        all.push(format!("{method} {} {k}: {v}", endpoint.template));
                    }
                }
                ok_response(reply)
            }
            Err(e) => error_response(&e),
        })
    }

    fn take_fault(&self, method: &str, template: &str, task: bool) -> Option<Fault> {
        let mut faults = self.faults.lock().unwrap_or_else(|e| e.into_inner());
        let index = faults
            .iter()
            .position(|r| r.fault.is_task_fault() == task && r.matches(method, template))?;
        let rule = &mut faults[index];
        let fault = rule.fault.clone();
        rule.times = rule.times.saturating_sub(1);
        if rule.times == 0 {
            faults.remove(index);
        }
        Some(fault)
    }

    /// Task faults for a task started by `method template`: every matching rule fires once.
    pub(crate) fn take_task_faults(&self, method: &str, template: &str) -> Vec<Fault> {
        let mut faults = self.faults.lock().unwrap_or_else(|e| e.into_inner());
        let mut found = Vec::new();
        for rule in faults.iter_mut() {
            if rule.fault.is_task_fault() && rule.matches(method, template) && rule.times > 0 {
                found.push(rule.fault.clone());
                rule.times -= 1;
            }
        }
        faults.retain(|r| r.times > 0);
        found
    }

    fn authenticate(&self, method: &str, headers: &hyper::HeaderMap) -> Result<Auth, &'static str> {
        let cookie_ticket = headers
            .get_all(hyper::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|kv| kv.trim().strip_prefix("PVEAuthCookie="))
            .map(|t| t.to_string())
            .next();
        let authz = headers
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        if let Some(ticket) = cookie_ticket {
            let ticket = percent_decode(&ticket);
            let (user, csrf) = self.check_ticket(&ticket).ok_or("authentication failure")?;
            if method != "GET" {
                let given = headers
                    .get("CSRFPreventionToken")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                if given != csrf {
                    return Err("Permission denied - invalid csrf token");
                }
            }
            return Ok(Auth { user, token: None });
        }
        if let Some(rest) = authz.strip_prefix("PVEAPIToken=") {
            let (token_id, secret) = rest.split_once('=').ok_or("authentication failure")?;
            let known = self.tokens.get(token_id).ok_or("authentication failure")?;
            if !constant_time_eq(known.as_bytes(), secret.trim().as_bytes()) {
                return Err("authentication failure");
            }
            let (user, token) = token_id.split_once('!').ok_or("authentication failure")?;
            return Ok(Auth {
                user: user.to_string(),
                token: Some(token.to_string()),
            });
        }
        Err("No ticket")
    }

    fn check_ticket(&self, ticket: &str) -> Option<(String, String)> {
        let lifetime = *self
            .ticket_lifetime
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let tickets = self.tickets.lock().unwrap_or_else(|e| e.into_inner());
        let (user, csrf, issued) = tickets.get(ticket)?;
        (issued.elapsed() < lifetime).then(|| (user.clone(), csrf.clone()))
    }

    fn login(&self, params: &Params) -> HandlerResult {
        let text = |k: &str| {
            params
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let mut username = text("username");
        let password = text("password");
        let realm = text("realm");
        if !username.contains('@') && !realm.is_empty() {
            username = format!("{username}@{realm}");
        }
        let by_password = self
            .users
            .get(&username)
            .is_some_and(|p| constant_time_eq(p.as_bytes(), password.as_bytes()));
        // Proxmox renews a ticket by passing the current ticket as the password.
        let by_ticket = self
            .check_ticket(&password)
            .is_some_and(|(u, _)| u == username);
        if !(by_password || by_ticket) {
            self.auth_failures.fetch_add(1, Ordering::SeqCst);
            return Err(ApiError::status(401, "authentication failure\n"));
        }
        let now = unix_now();
        let ticket = format!("PVE:{username}:{now:08X}::{}", random_hex(32));
        let csrf = format!("{now:08X}:{}", random_hex(20));
        self.tickets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                ticket.clone(),
                (username.clone(), csrf.clone(), Instant::now()),
            );
        self.logins.fetch_add(1, Ordering::SeqCst);
        Ok(Reply::data(json!({
            "username": username,
            "ticket": ticket,
            "CSRFPreventionToken": csrf,
            "clustername": self.cluster_name,
        })))
    }

    /// Registers a task and runs `work` in the background. Returns the UPID.
    pub(crate) fn spawn_task<F, Fut>(
        self: &Arc<Self>,
        kind: &str,
        id: &str,
        auth: &Auth,
        faults: Vec<Fault>,
        work: F,
    ) -> String
    where
        F: FnOnce(TaskLog) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
    {
        let pid = self.next_pid.fetch_add(1, Ordering::SeqCst);
        let pstart = 1000 + self.start_time.elapsed().as_millis() as u64 / 10;
        let starttime = unix_now();
        let user = auth.upid_user();
        let upid = format!(
            "UPID:{}:{pid:08X}:{pstart:08X}:{starttime:08X}:{kind}:{id}:{user}:",
            self.ctx.node
        );
        let status = json!({
            "upid": upid, "node": self.ctx.node, "pid": pid, "pstart": pstart,
            "starttime": starttime, "type": kind, "id": id, "user": user,
        });
        let log = TaskLog::default();
        let exitstatus = Arc::new(Mutex::new(None));
        let hidden = Arc::new(AtomicU32::new(0));
        let mut extra_delay = Duration::ZERO;
        let mut fail: Option<String> = None;
        let mut warnings: Vec<String> = Vec::new();
        for f in faults {
            match f {
                Fault::SlowTask(d) => extra_delay += d,
                Fault::FailTask(m) => fail = Some(m),
                Fault::TaskWarnings(w) => warnings = w,
                Fault::HiddenTask { polls } => hidden.store(polls, Ordering::SeqCst),
                _ => {}
            }
        }
        {
            let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
            let seq = tasks.len() as u64;
            tasks.insert(
                upid.clone(),
                Task {
                    seq,
                    upid: upid.clone(),
                    status,
                    log: log.clone(),
                    exitstatus: exitstatus.clone(),
                    hidden_polls: hidden,
                },
            );
        }
        let delay = self.task_duration + extra_delay;
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let result = match fail {
                Some(msg) => Err(msg),
                None => work(log.clone()).await,
            };
            for w in &warnings {
                log.warn(w);
            }
            let count = *log.warnings.lock().unwrap_or_else(|e| e.into_inner());
            let status = match result {
                Err(msg) => {
                    let msg = msg.trim_end().to_string();
                    log.line(msg.clone());
                    log.line(format!("TASK ERROR: {msg}"));
                    msg
                }
                Ok(()) if count > 0 => {
                    log.line(format!("TASK WARNINGS: {count}"));
                    format!("WARNINGS: {count}")
                }
                Ok(()) => {
                    log.line("TASK OK");
                    "OK".to_string()
                }
            };
            *exitstatus.lock().unwrap_or_else(|e| e.into_inner()) = Some(status);
        });
        upid
    }
}

fn percent_decode(s: &str) -> String {
    form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

fn percent_decode_path(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            if let Some(b) = path
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn reason(status: u16, message: &str) -> String {
    // pve-http-server: the status line carries the first line of the message.
    let first = message.lines().next().unwrap_or("").trim();
    if first.is_empty() {
        StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Error")
            .to_string()
    } else {
        first.chars().filter(|c| !c.is_control()).collect()
    }
}

fn with_reason(
    mut resp: Response<Full<Bytes>>,
    status: u16,
    message: &str,
) -> Response<Full<Bytes>> {
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let phrase = reason(status, message);
    if let Ok(r) = hyper::ext::ReasonPhrase::try_from(phrase.into_bytes()) {
        resp.extensions_mut().insert(r);
    }
    resp
}

fn json_response(body: &Value) -> Response<Full<Bytes>> {
    json_response_raw(body.to_string())
}

fn json_response_raw(body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json;charset=UTF-8"),
    );
    resp
}

fn ok_response(reply: Reply) -> Response<Full<Bytes>> {
    let mut body = json!({ "data": reply.data });
    if let Some(total) = reply.total {
        body["total"] = json!(total);
    }
    json_response(&body)
}

/// pve-http-server's JSON formatter: `{"data":null,"errors":{..},"message":".."}`.
pub(crate) fn error_response(e: &ApiError) -> Response<Full<Bytes>> {
    let mut body = json!({ "data": Value::Null, "message": e.message });
    if !e.errors.is_empty() {
        body["errors"] = json!(e.errors);
    }
    with_reason(json_response(&body), e.status, &e.message)
}

/// Authentication failures carry only a status line (pve-http-server answers them before
/// any formatter runs).
fn bare_response(status: u16, message: &str) -> Response<Full<Bytes>> {
    with_reason(Response::new(Full::new(Bytes::new())), status, message)
}
