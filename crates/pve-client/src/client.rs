//! The client: transport, authentication, retries, and the typed endpoints.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::Mutex;

use crate::error::Error;
use crate::props::{ConfigUpdate, CreateCt};
use crate::secret::Secret;
use crate::task::{TaskOutcome, Upid, WaitOptions};
use crate::tls::{client_config, TlsTrust};
use crate::types::{
    BackupJob, ClusterResource, ClusterStatusEntry, CtConfig, CtStatus, NodeInfo, NodeStatus,
    ResourceType, TaskLogLine, TaskStatus, TicketResponse, Version,
};
use crate::vmid::{Claim, VmidAllocator};

/// How the client authenticates.
#[derive(Clone)]
pub enum Credentials {
    /// An API token: `token_id` is `USER@REALM!TOKENID`. Sent as
    /// `Authorization: PVEAPIToken=USER@REALM!TOKENID=SECRET`.
    Token {
        /// `USER@REALM!TOKENID`.
        token_id: String,
        /// The token's secret (UUID).
        secret: Secret,
    },
    /// A user and password: the client gets a ticket and CSRF token and renews them before
    /// they expire.
    Password {
        /// `USER@REALM`.
        username: String,
        /// The password.
        password: Secret,
    },
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Token { token_id, .. } => f
                .debug_struct("Token")
                .field("token_id", token_id)
                .finish_non_exhaustive(),
            Credentials::Password { username, .. } => f
                .debug_struct("Password")
                .field("username", username)
                .finish_non_exhaustive(),
        }
    }
}

/// Retries of transient failures.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Attempts in all (1: no retry).
    pub max_attempts: u32,
    /// Pause before the first retry; doubled each time (with up to 25% jitter).
    pub initial_backoff: Duration,
    /// Longest pause.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .initial_backoff
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        let base = exp.min(self.max_backoff);
        let jitter = rand::thread_rng().gen_range(0.0..0.25);
        base.mul_f64(1.0 + jitter)
    }
}

/// Client settings.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// `https://HOST:8006/api2/json` (a URL without a path gets `/api2/json`).
    pub url: String,
    /// Certificate trust.
    pub trust: TlsTrust,
    /// Authentication.
    pub credentials: Credentials,
    /// Timeout of one request.
    pub request_timeout: Duration,
    /// Timeout of connecting.
    pub connect_timeout: Duration,
    /// Retries of transient failures.
    pub retry: RetryPolicy,
    /// Lifetime of a ticket (Proxmox: 2 hours). The client renews it when a quarter of it
    /// (at most 15 minutes) is left.
    pub ticket_lifetime: Duration,
}

impl ClientConfig {
    /// Settings with defaults: 30 s requests, 10 s connect, [`RetryPolicy::default`], 2 h
    /// tickets.
    pub fn new(url: &str, trust: TlsTrust, credentials: Credentials) -> Self {
        ClientConfig {
            url: url.to_string(),
            trust,
            credentials,
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
            ticket_lifetime: Duration::from_secs(7200),
        }
    }
}

struct Ticket {
    ticket: Secret,
    csrf: Secret,
    obtained: Instant,
}

struct Inner {
    http: reqwest::Client,
    base: String,
    credentials: Credentials,
    retry: RetryPolicy,
    ticket_lifetime: Duration,
    ticket: Mutex<Option<Ticket>>,
}

/// A Proxmox VE API client. Cheap to clone (clones share connections and the ticket).
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("url", &self.inner.base)
            .field("credentials", &self.inner.credentials)
            .finish_non_exhaustive()
    }
}

enum Body<'a> {
    Form(&'a [(String, String)]),
}

impl Client {
    /// Builds a client. Nothing is sent yet.
    pub fn new(config: ClientConfig) -> Result<Client, Error> {
        let tls = client_config(&config.trust)?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(config.request_timeout)
            .connect_timeout(config.connect_timeout)
            .user_agent(concat!("pve-client/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Config(format!("HTTP client: {e}")))?;
        let mut base = config.url.trim_end_matches('/').to_string();
        let parsed =
            url::Url::parse(&base).map_err(|e| Error::Config(format!("URL '{base}': {e}")))?;
        if parsed.scheme() != "https" {
            return Err(Error::Config(format!("URL '{base}' must be https")));
        }
        if parsed.path() == "/" || parsed.path().is_empty() {
            base.push_str("/api2/json");
        }
        if let Credentials::Token { token_id, .. } = &config.credentials {
            if !token_id.contains('@') || !token_id.contains('!') {
                return Err(Error::Config(format!(
                    "token id '{token_id}' must look like USER@REALM!TOKENID"
                )));
            }
        }
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                base,
                credentials: config.credentials,
                retry: config.retry,
                ticket_lifetime: config.ticket_lifetime,
                ticket: Mutex::new(None),
            }),
        })
    }

    /// The API base URL.
    pub fn url(&self) -> &str {
        &self.inner.base
    }

    // ----- transport -------------------------------------------------------------------

    /// One request with the configured authentication.
    async fn send_once(
        &self,
        method: &Method,
        path: &str,
        body: &Body<'_>,
    ) -> Result<Value, Error> {
        let mut headers = reqwest::header::HeaderMap::new();
        match &self.inner.credentials {
            Credentials::Token { token_id, secret } => {
                let header =
                    zeroize::Zeroizing::new(format!("PVEAPIToken={token_id}={}", secret.expose()));
                let mut value = reqwest::header::HeaderValue::from_str(&header).map_err(|_| {
                    Error::Config("token id or secret is not a valid header".into())
                })?;
                value.set_sensitive(true);
                headers.insert(reqwest::header::AUTHORIZATION, value);
            }
            Credentials::Password { .. } => {
                // Copy the ticket out so the lock is not held during the request.
                let (ticket, csrf) = {
                    let guard = self.ensure_ticket().await?;
                    let Some(t) = guard.as_ref() else {
                        return Err(Error::Config("no ticket".into()));
                    };
                    (t.ticket.clone(), t.csrf.clone())
                };
                let header = zeroize::Zeroizing::new(format!(
                    "PVEAuthCookie={}",
                    encode_cookie(ticket.expose())
                ));
                let mut cookie = reqwest::header::HeaderValue::from_str(&header)
                    .map_err(|_| Error::Config("ticket is not a valid header".into()))?;
                cookie.set_sensitive(true);
                headers.insert(reqwest::header::COOKIE, cookie);
                if *method != Method::GET {
                    let mut value = reqwest::header::HeaderValue::from_str(csrf.expose())
                        .map_err(|_| Error::Config("CSRF token is not a valid header".into()))?;
                    value.set_sensitive(true);
                    headers.insert("CSRFPreventionToken", value);
                }
            }
        }
        self.send_raw(method, path, body, headers).await
    }

    /// One request with the given headers (no authentication added).
    async fn send_raw(
        &self,
        method: &Method,
        path: &str,
        body: &Body<'_>,
        headers: reqwest::header::HeaderMap,
    ) -> Result<Value, Error> {
        let url = format!("{}{}", self.inner.base, path);
        let mut req = self
            .inner
            .http
            .request(method.clone(), &url)
            .headers(headers);
        match body {
            Body::Form(pairs) if *method == Method::GET || *method == Method::DELETE => {
                req = req.query(pairs);
            }
            Body::Form(pairs) => req = req.form(pairs),
        }
        let transport = |source| Error::Transport {
            method: method.to_string(),
            path: path.to_string(),
            source,
        };
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(transport)?;
        tracing::debug!(%method, path, status = status.as_u16(), "Proxmox API");
        decode_response(method.as_str(), path, status.as_u16(), &bytes)
    }

    /// Sends with retries of transient failures; re-authenticates once on 401 with tickets.
    async fn call(&self, method: Method, path: &str, body: Body<'_>) -> Result<Value, Error> {
        let policy = &self.inner.retry;
        let mut attempt = 1;
        let mut relogged = false;
        loop {
            match self.send_once(&method, path, &body).await {
                Ok(v) => return Ok(v),
                Err(e)
                    if e.is_unauthorized()
                        && !relogged
                        && matches!(self.inner.credentials, Credentials::Password { .. }) =>
                {
                    // The ticket may have expired early (clock skew, key rotation): log in anew.
                    tracing::info!(%method, path, "ticket refused, logging in again");
                    relogged = true;
                    *self.inner.ticket.lock().await = None;
                }
                Err(e) if attempt < policy.max_attempts && self.retryable(&method, &e) => {
                    let pause = policy.backoff(attempt);
                    tracing::warn!(%method, path, attempt, ?pause, error = %e, "transient failure, retrying");
                    tokio::time::sleep(pause).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Transient API answers are retried for every method (Proxmox did not run the
    /// operation: lock timeouts, "CT is locked", 595/596/599 from the proxy); a connection
    /// that broke after the request was sent only for GET, because a POST may have run.
    fn retryable(&self, method: &Method, e: &Error) -> bool {
        match e {
            Error::Api { .. } => e.is_transient(),
            Error::Transport { .. } => {
                e.is_connect_failure() || (*method == Method::GET && e.is_connection_failure())
            }
            _ => false,
        }
    }

    async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(String, String)],
    ) -> Result<T, Error> {
        let v = self.call(Method::GET, path, Body::Form(query)).await?;
        decode("GET", path, v)
    }

    // ----- tickets ---------------------------------------------------------------------

    fn renew_margin(&self) -> Duration {
        (self.inner.ticket_lifetime / 4).min(Duration::from_secs(900))
    }

    async fn ensure_ticket(&self) -> Result<tokio::sync::MutexGuard<'_, Option<Ticket>>, Error> {
        let mut guard = self.inner.ticket.lock().await;
        let lifetime = self.inner.ticket_lifetime;
        let needs = match guard.as_ref() {
            None => true,
            Some(t) => t.obtained.elapsed() + self.renew_margin() >= lifetime,
        };
        if needs {
            // Renew with the current ticket while it is valid (as Proxmox's own clients do),
            // else with the password.
            let current = guard
                .as_ref()
                .filter(|t| t.obtained.elapsed() < lifetime)
                .map(|t| t.ticket.clone());
            let renewed = match current {
                Some(ticket) => match self.login(Some(&ticket)).await {
                    Ok(t) => t,
                    Err(e) => {
                        tracing::info!(error = %e, "ticket renewal refused, logging in with the password");
                        self.login(None).await?
                    }
                },
                None => self.login(None).await?,
            };
            *guard = Some(renewed);
        }
        Ok(guard)
    }

    async fn login(&self, with_ticket: Option<&Secret>) -> Result<Ticket, Error> {
        let Credentials::Password { username, password } = &self.inner.credentials else {
            return Err(Error::Config("login needs username and password".into()));
        };
        let secret = with_ticket.unwrap_or(password);
        let form = vec![
            ("username".to_string(), username.clone()),
            ("password".to_string(), secret.expose().to_string()),
        ];
        let form = zeroize::Zeroizing::new(form);
        let policy = &self.inner.retry;
        let mut attempt = 1;
        let value = loop {
            match self
                .send_raw(
                    &Method::POST,
                    "/access/ticket",
                    &Body::Form(&form),
                    Default::default(),
                )
                .await
            {
                Ok(v) => break v,
                Err(e) if attempt < policy.max_attempts && self.retryable(&Method::POST, &e) => {
                    tokio::time::sleep(policy.backoff(attempt)).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        };
        let resp: TicketResponse = decode("POST", "/access/ticket", value)?;
        let (Some(ticket), Some(csrf)) = (resp.ticket, resp.csrf) else {
            return Err(Error::Decode {
                method: "POST".into(),
                path: "/access/ticket".into(),
                detail: "no ticket in the answer (second factor required?)".into(),
            });
        };
        tracing::info!(user = %resp.username, renewal = with_ticket.is_some(), "obtained Proxmox ticket");
        Ok(Ticket {
            ticket: Secret::new(ticket),
            csrf: Secret::new(csrf),
            obtained: Instant::now(),
        })
    }

    // ----- endpoints ---------------------------------------------------------------------

    /// `GET /version`.
    pub async fn version(&self) -> Result<Version, Error> {
        self.get("/version", &[]).await
    }

    /// `GET /access/permissions[?path=PATH]`: the privileges the caller itself holds, by ACL
    /// path (with `path`: the effective ones on that path). Creates nothing, needs no
    /// privilege: every user or token may read its own (pve-access-control
    /// `PVE::API2::AccessControl`, `permissions`).
    pub async fn permissions(
        &self,
        path: Option<&str>,
    ) -> Result<BTreeMap<String, BTreeSet<String>>, Error> {
        let query: Vec<(String, String)> = path
            .map(|p| vec![("path".to_string(), p.to_string())])
            .unwrap_or_default();
        // `{path: {privilege: propagate}}`; the propagate flag does not matter here.
        let raw: BTreeMap<String, BTreeMap<String, Value>> =
            self.get("/access/permissions", &query).await?;
        Ok(raw
            .into_iter()
            .map(|(path, privs)| (path, privs.into_keys().collect()))
            .collect())
    }

    /// `GET /cluster/status`.
    pub async fn cluster_status(&self) -> Result<Vec<ClusterStatusEntry>, Error> {
        self.get("/cluster/status", &[]).await
    }

    /// `GET /cluster/backup`: the backup jobs (needs `Sys.Audit` on `/`).
    pub async fn backup_jobs(&self) -> Result<Vec<BackupJob>, Error> {
        self.get("/cluster/backup", &[]).await
    }

    /// Whether the cluster has quorum (a single node without cluster counts as quorate).
    pub async fn quorate(&self) -> Result<bool, Error> {
        let status = self.cluster_status().await?;
        Ok(status
            .iter()
            .find(|e| e.kind == "cluster")
            .is_none_or(|c| c.quorate.unwrap_or(false)))
    }

    /// `GET /cluster/resources`, optionally filtered by type.
    pub async fn cluster_resources(
        &self,
        kind: Option<ResourceType>,
    ) -> Result<Vec<ClusterResource>, Error> {
        let query: Vec<(String, String)> = kind
            .map(|k| vec![("type".to_string(), k.as_str().to_string())])
            .unwrap_or_default();
        self.get("/cluster/resources", &query).await
    }

    /// VMIDs in use anywhere in the cluster (from `/cluster/resources?type=vm`).
    pub async fn used_vmids(&self) -> Result<BTreeSet<u32>, Error> {
        Ok(self
            .cluster_resources(Some(ResourceType::Vm))
            .await?
            .into_iter()
            .filter_map(|r| r.vmid)
            .collect())
    }

    /// `GET /cluster/nextid`: a free ID now (it reserves nothing; see [`VmidAllocator`]).
    /// With `vmid`: that ID if it is free, else an "already exists" error.
    pub async fn next_id(&self, vmid: Option<u32>) -> Result<u32, Error> {
        let query: Vec<(String, String)> = vmid
            .map(|v| vec![("vmid".to_string(), v.to_string())])
            .unwrap_or_default();
        let v: Value = self.get("/cluster/nextid", &query).await?;
        let n = match &v {
            Value::String(s) => s.parse().ok(),
            Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
            _ => None,
        };
        n.ok_or_else(|| Error::Decode {
            method: "GET".into(),
            path: "/cluster/nextid".into(),
            detail: format!("not a VMID: {v}"),
        })
    }

    /// `GET /nodes`.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, Error> {
        self.get("/nodes", &[]).await
    }

    /// `GET /nodes/{node}/status`.
    pub async fn node_status(&self, node: &str) -> Result<NodeStatus, Error> {
        self.get(&format!("/nodes/{}/status", seg(node)?), &[])
            .await
    }

    /// `GET /nodes/{node}/lxc`.
    pub async fn list_cts(&self, node: &str) -> Result<Vec<CtStatus>, Error> {
        self.get(&format!("/nodes/{}/lxc", seg(node)?), &[]).await
    }

    /// `POST /nodes/{node}/lxc`: starts the create task. An existing VMID fails at once
    /// ([`Error::is_already_exists`]).
    pub async fn create_ct(&self, node: &str, create: &CreateCt) -> Result<Upid, Error> {
        let form = zeroize::Zeroizing::new(create.params.to_form()?);
        self.post_task(&format!("/nodes/{}/lxc", seg(node)?), &form)
            .await
    }

    /// Creates a CT with the first free VMID of `allocator`'s range (the VMID in `create` is
    /// replaced). Returns the VMID and the create task.
    pub async fn create_ct_allocated(
        &self,
        node: &str,
        allocator: &VmidAllocator,
        create: &CreateCt,
    ) -> Result<(u32, Upid), Error> {
        let known = self.used_vmids().await?;
        allocator
            .allocate(&known, |vmid| {
                let create = create.clone().with_vmid(vmid);
                async move {
                    match self.create_ct(node, &create).await {
                        Ok(upid) => Ok(Claim::Claimed(upid)),
                        Err(e) if e.is_already_exists() => Ok(Claim::Taken),
                        Err(e) => Err(e),
                    }
                }
            })
            .await
    }

    /// `GET /nodes/{node}/lxc/{vmid}/config`.
    pub async fn ct_config(&self, node: &str, vmid: u32) -> Result<CtConfig, Error> {
        self.get(&format!("/nodes/{}/lxc/{vmid}/config", seg(node)?), &[])
            .await
    }

    /// `PUT /nodes/{node}/lxc/{vmid}/config`. With a digest, fails if the config changed.
    pub async fn update_ct_config(
        &self,
        node: &str,
        vmid: u32,
        update: &ConfigUpdate,
    ) -> Result<(), Error> {
        let form = update.to_form()?;
        let path = format!("/nodes/{}/lxc/{vmid}/config", seg(node)?);
        self.call(Method::PUT, &path, Body::Form(&form)).await?;
        Ok(())
    }

    /// `GET /nodes/{node}/lxc/{vmid}/status/current`.
    pub async fn ct_status(&self, node: &str, vmid: u32) -> Result<CtStatus, Error> {
        self.get(
            &format!("/nodes/{}/lxc/{vmid}/status/current", seg(node)?),
            &[],
        )
        .await
    }

    /// `POST .../status/start`.
    pub async fn start_ct(&self, node: &str, vmid: u32) -> Result<Upid, Error> {
        self.post_task(
            &format!("/nodes/{}/lxc/{vmid}/status/start", seg(node)?),
            &[],
        )
        .await
    }

    /// `POST .../status/stop` (immediate).
    pub async fn stop_ct(&self, node: &str, vmid: u32) -> Result<Upid, Error> {
        self.post_task(
            &format!("/nodes/{}/lxc/{vmid}/status/stop", seg(node)?),
            &[],
        )
        .await
    }

    /// `POST .../status/shutdown`: clean shutdown within `timeout`, then a hard stop if
    /// `force_stop`.
    pub async fn shutdown_ct(
        &self,
        node: &str,
        vmid: u32,
        timeout: Duration,
        force_stop: bool,
    ) -> Result<Upid, Error> {
        let form = vec![
            ("timeout".to_string(), timeout.as_secs().to_string()),
            (
                "forceStop".to_string(),
                if force_stop { "1" } else { "0" }.to_string(),
            ),
        ];
        self.post_task(
            &format!("/nodes/{}/lxc/{vmid}/status/shutdown", seg(node)?),
            &form,
        )
        .await
    }

    /// `DELETE /nodes/{node}/lxc/{vmid}`.
    pub async fn destroy_ct(
        &self,
        node: &str,
        vmid: u32,
        options: &DestroyOptions,
    ) -> Result<Upid, Error> {
        let flag = |b: bool| if b { "1" } else { "0" }.to_string();
        let mut query = vec![("purge".to_string(), flag(options.purge))];
        if options.destroy_unreferenced_disks {
            query.push(("destroy-unreferenced-disks".to_string(), flag(true)));
        }
        if options.force {
            query.push(("force".to_string(), flag(true)));
        }
        let path = format!("/nodes/{}/lxc/{vmid}", seg(node)?);
        let v = self.call(Method::DELETE, &path, Body::Form(&query)).await?;
        parse_upid("DELETE", &path, v)
    }

    /// `GET /nodes/{node}/tasks/{upid}/status`.
    pub async fn task_status(&self, upid: &Upid) -> Result<TaskStatus, Error> {
        let path = format!(
            "/nodes/{}/tasks/{}/status",
            seg(&upid.node)?,
            seg(upid.as_str())?
        );
        self.get(&path, &[]).await
    }

    /// `GET /nodes/{node}/tasks/{upid}/log` from line `start` (0-based), up to `limit` lines.
    pub async fn task_log(
        &self,
        upid: &Upid,
        start: u32,
        limit: u32,
    ) -> Result<Vec<TaskLogLine>, Error> {
        let path = format!(
            "/nodes/{}/tasks/{}/log",
            seg(&upid.node)?,
            seg(upid.as_str())?
        );
        let query = vec![
            ("start".to_string(), start.to_string()),
            ("limit".to_string(), limit.to_string()),
        ];
        self.get(&path, &query).await
    }

    /// The whole task log, as text lines.
    pub async fn task_log_all(&self, upid: &Upid) -> Result<Vec<String>, Error> {
        const PAGE: u32 = 500;
        let mut out = Vec::new();
        loop {
            let start = u32::try_from(out.len()).unwrap_or(u32::MAX);
            let page = self.task_log(upid, start, PAGE).await?;
            let n = page.len();
            out.extend(page.into_iter().map(|l| l.t));
            if n < PAGE as usize {
                return Ok(out);
            }
        }
    }

    async fn post_task(&self, path: &str, form: &[(String, String)]) -> Result<Upid, Error> {
        let v = self.call(Method::POST, path, Body::Form(form)).await?;
        parse_upid("POST", path, v)
    }

    // ----- tasks -------------------------------------------------------------------------

    /// Waits for a task: polls its status (short intervals first, growing), until it
    /// stopped or the deadline passed. Success only on `OK` (or `WARNINGS: n` if accepted);
    /// a failure carries the task log. "No such task" on a fresh UPID counts as "not visible
    /// yet" during `not_visible_grace`.
    pub async fn wait_task(
        &self,
        upid: &Upid,
        options: &WaitOptions,
    ) -> Result<TaskOutcome, Error> {
        let started = Instant::now();
        let mut interval = options.initial_interval;
        let mut polls = 0u32;
        let mut seen = false;
        let mut last_status = "not visible".to_string();
        loop {
            polls += 1;
            match self.task_status(upid).await {
                Ok(status) => {
                    seen = true;
                    if status.is_stopped() {
                        let exit = status.exitstatus.unwrap_or_default();
                        return self.finish_task(upid, exit, polls, options).await;
                    }
                    last_status = status.status;
                }
                Err(e)
                    if !seen
                        && matches!(e.status(), Some(400) | Some(404))
                        && started.elapsed() < options.not_visible_grace =>
                {
                    tracing::debug!(upid = %upid, "task not visible yet");
                }
                Err(e) => return Err(e),
            }
            let waited = started.elapsed();
            if waited >= options.timeout {
                return Err(Error::TaskTimeout {
                    upid: upid.to_string(),
                    waited,
                    last_status,
                });
            }
            let remaining = options.timeout - waited;
            tokio::time::sleep(interval.min(remaining)).await;
            interval = interval.mul_f64(1.5).min(options.max_interval);
        }
    }

    async fn finish_task(
        &self,
        upid: &Upid,
        exit: String,
        polls: u32,
        options: &WaitOptions,
    ) -> Result<TaskOutcome, Error> {
        if exit == "OK" {
            return Ok(TaskOutcome {
                upid: upid.clone(),
                exitstatus: exit,
                warnings: Vec::new(),
                polls,
            });
        }
        let log = match self.task_log_all(upid).await {
            Ok(log) => log,
            Err(e) => vec![format!("(task log unavailable: {e})")],
        };
        let is_warnings = exit
            .strip_prefix("WARNINGS: ")
            .is_some_and(|n| n.parse::<u32>().is_ok());
        if is_warnings {
            let warnings: Vec<String> = log
                .iter()
                .filter(|l| l.starts_with("WARN:"))
                .cloned()
                .collect();
            for w in &warnings {
                tracing::warn!(upid = %upid, "{w}");
            }
            if options.accept_warnings {
                return Ok(TaskOutcome {
                    upid: upid.clone(),
                    exitstatus: exit,
                    warnings,
                    polls,
                });
            }
            return Err(Error::TaskWarnings {
                upid: upid.to_string(),
                warnings,
                log,
            });
        }
        Err(Error::TaskFailed {
            upid: upid.to_string(),
            exitstatus: exit,
            log,
        })
    }

    /// Starts a task with `start` and waits for it; when the task fails for a transient
    /// reason (config lock timeout, "CT is locked") the whole operation is repeated, within
    /// the retry policy's bound.
    pub async fn run_task<F, Fut>(
        &self,
        options: &WaitOptions,
        mut start: F,
    ) -> Result<TaskOutcome, Error>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<Upid, Error>>,
    {
        let policy = &self.inner.retry;
        let mut attempt = 1;
        loop {
            let upid = start().await?;
            match self.wait_task(&upid, options).await {
                Err(e) if e.is_transient() && attempt < policy.max_attempts => {
                    let pause = policy.backoff(attempt);
                    tracing::warn!(upid = %upid, attempt, error = %e, "task failed transiently, repeating");
                    tokio::time::sleep(pause).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}

/// Options of CT destruction.
#[derive(Clone, Debug, Default)]
pub struct DestroyOptions {
    /// Also remove the CT from backup, replication and HA configuration.
    pub purge: bool,
    /// Also destroy disks with this VMID that the config does not reference.
    pub destroy_unreferenced_disks: bool,
    /// Stop it first if it runs.
    pub force: bool,
}

/// Percent-encodes a path segment (a UPID contains `:` and `@`, a token user `!`).
fn seg(s: &str) -> Result<String, Error> {
    if s.is_empty() || s.contains('/') || s.chars().any(char::is_control) {
        return Err(Error::Config(format!("invalid path segment {s:?}")));
    }
    Ok(s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect())
}

fn encode_cookie(ticket: &str) -> String {
    ticket
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'@' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Turns one API response into the `data` of its envelope or a typed error. Pure (no I/O), so
/// it can be fed hostile bodies and status codes directly (tests/hostile.rs): whatever the
/// server sends, the result is a value or an error, never a panic.
#[doc(hidden)]
pub fn decode_response(
    method: &str,
    path: &str,
    status: u16,
    bytes: &[u8],
) -> Result<Value, Error> {
    let status = reqwest::StatusCode::from_u16(status).unwrap_or(reqwest::StatusCode::BAD_GATEWAY);
    if status.is_success() {
        let mut envelope: Value = serde_json::from_slice(bytes).map_err(|e| Error::Decode {
            method: method.to_string(),
            path: path.to_string(),
            detail: format!("not JSON: {e}"),
        })?;
        return Ok(envelope
            .get_mut("data")
            .map(Value::take)
            .unwrap_or(Value::Null));
    }
    let body: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
    let message = body
        .get("message")
        .and_then(Value::as_str)
        // Kept as Proxmox sent it (with its trailing newline); an empty or blank message says
        // nothing, the status's reason does (found by tests/hostile.rs).
        .filter(|m| !m.trim().is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_string());
    let errors = body
        .get("errors")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| v.to_string()),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Err(Error::Api {
        status: status.as_u16(),
        method: method.to_string(),
        path: path.to_string(),
        message,
        errors,
    })
}

fn decode<T: DeserializeOwned>(method: &str, path: &str, v: Value) -> Result<T, Error> {
    serde_json::from_value(v).map_err(|e| Error::Decode {
        method: method.to_string(),
        path: path.to_string(),
        detail: e.to_string(),
    })
}

fn parse_upid(method: &str, path: &str, v: Value) -> Result<Upid, Error> {
    match v {
        Value::String(s) => s.parse(),
        other => Err(Error::Decode {
            method: method.to_string(),
            path: path.to_string(),
            detail: format!("expected a UPID, got {other}"),
        }),
    }
}
