//! Endpoint handlers, after pve-manager / pve-container (`PVE::API2::LXC`, `::LXC::Config`,
//! `::LXC::Status`, `PVE::API2::Tasks`, `PVE::API2::Cluster`): which checks run before the
//! task is forked (and answer the request with an error), which run inside the task (and fail
//! it), and the messages they use.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};
use serde_json::{json, Value};

use crate::backend::TaskLog;
use crate::ctconf::{digest, CtConfig};
use crate::formats::split_list;
use crate::schema::{lookup_property, ApiSchema};
use crate::server::{ApiError, Auth, HandlerResult, Inner, Params, Reply};

/// The endpoint of a CT's config (GET reads it, PUT changes it).
const CONFIG: &str = "/nodes/{node}/lxc/{vmid}/config";

/// Parameters that steer creation and are not stored in the config.
const CREATE_ONLY: &[&str] = &[
    "node",
    "vmid",
    "ostemplate",
    "storage",
    "password",
    "ssh-public-keys",
    "start",
    "force",
    "restore",
    "unique",
    "ignore-unpack-errors",
    "bwlimit",
    "pool",
    "ha-managed",
];

fn text<'a>(params: &'a Params, key: &str) -> Option<&'a str> {
    params.get(key).and_then(Value::as_str)
}

fn flag(params: &Params, key: &str) -> bool {
    match params.get(key) {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s == "1",
        Some(Value::Number(n)) => n.as_i64() == Some(1),
        _ => false,
    }
}

/// The list parameter `key` (`delete`, `revert`: comma or space separated), taken out of
/// `params`.
fn take_list(params: &mut Params, key: &str) -> Vec<String> {
    params
        .remove(key)
        .map(|v| {
            split_list(&value_text(&v))
                .into_iter()
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The properties an object schema (an endpoint's `parameters` or `returns`) names, by name.
fn properties(schema: Option<&Value>) -> serde_json::Map<String, Value> {
    schema
        .and_then(|s| s.get("properties"))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

/// `PVE::AbstractConfig::check_lock`: a config with a `lock:` refuses the operation.
fn check_lock(conf: &CtConfig) -> Result<(), String> {
    match conf.lock() {
        Some(l) => Err(format!("CT is locked ({l})\n")),
        None => Ok(()),
    }
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(b) => (if *b { "1" } else { "0" }).to_string(),
        other => other.to_string(),
    }
}

/// The held config lock (`flock` on `<lock_dir>/pve-config-VMID.lock`, as
/// `PVE::AbstractConfig::lock_config_full`). Released on drop.
pub(crate) struct ConfigLock {
    _lock: Flock<File>,
}

impl Inner {
    fn config_path(&self, vmid: u32) -> std::path::PathBuf {
        self.ctx.config_path(vmid)
    }

    fn cfs_path(&self, vmid: u32) -> String {
        format!("nodes/{}/lxc/{vmid}.conf", self.ctx.node)
    }

    /// `load_config`: the config and its digest, or Proxmox's "does not exist" error.
    pub(crate) fn load_config(&self, vmid: u32) -> Result<(CtConfig, String), ApiError> {
        let raw = std::fs::read_to_string(self.config_path(vmid)).map_err(|_| {
            ApiError::die(format!(
                "Configuration file '{}' does not exist\n",
                self.cfs_path(vmid)
            ))
        })?;
        let conf = CtConfig::parse(vmid, &raw).map_err(|e| ApiError::die(format!("{e}\n")))?;
        Ok((conf, digest(&raw)))
    }

    /// `load_config` inside a task: the config without the raw keys Proxmox drops, each
    /// dropped or deprecated key logged as a task warning (`warn` in a worker).
    pub(crate) fn load_config_warnings(
        &self,
        vmid: u32,
        log: &TaskLog,
    ) -> Result<CtConfig, ApiError> {
        let raw = std::fs::read_to_string(self.config_path(vmid)).map_err(|_| {
            ApiError::die(format!(
                "Configuration file '{}' does not exist\n",
                self.cfs_path(vmid)
            ))
        })?;
        let (conf, warnings) = CtConfig::parse_with_warnings(vmid, &raw)
            .map_err(|e| ApiError::die(format!("{e}\n")))?;
        for w in warnings {
            log.warn(w);
        }
        Ok(conf)
    }

    /// Writes the config atomically (temporary file and rename, as pmxcfs replaces files).
    pub(crate) fn write_config(&self, vmid: u32, conf: &CtConfig) -> Result<(), ApiError> {
        let path = self.config_path(vmid);
        let tmp = self
            .ctx
            .config_dir
            .join(format!(".{vmid}.conf.tmp.{}", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(conf.render().as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        };
        write().map_err(|e| ApiError::die(format!("unable to write '{}' - {e}\n", path.display())))
    }

    /// VMIDs with a config file.
    pub(crate) fn list_vmids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = std::fs::read_dir(&self.ctx.config_dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter_map(|e| {
                        let name = e.file_name().to_string_lossy().into_owned();
                        name.strip_suffix(".conf")?.parse::<u32>().ok()
                    })
                    .collect()
            })
            .unwrap_or_default();
        ids.sort_unstable();
        ids
    }

    /// Inside a task: the CT's config lock, and the config loaded under it.
    async fn lock_and_load(&self, vmid: u32) -> Result<(ConfigLock, CtConfig), String> {
        let lock = self.lock_config(vmid, self.lock_timeout).await?;
        let (conf, _) = self.load_config(vmid).map_err(|e| e.message)?;
        Ok((lock, conf))
    }

    /// Forks the task `kind` on CT `vmid` for the request `(method, template)`, with the
    /// faults injected for that request, and answers its UPID.
    fn ct_task<F, Fut>(
        self: &Arc<Self>,
        kind: &str,
        (method, template): (&str, &str),
        vmid: u32,
        auth: &Auth,
        work: F,
    ) -> HandlerResult
    where
        F: FnOnce(Arc<Self>, TaskLog) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
    {
        let faults = self.take_task_faults(method, template);
        let inner = self.clone();
        let upid = self.spawn_task(kind, &vmid.to_string(), auth, faults, move |log| {
            work(inner, log)
        });
        Ok(Reply::data(json!(upid)))
    }

    /// Takes the CT's config lock, waiting up to `timeout` (then "can't lock file ... got
    /// timeout", Proxmox's message).
    pub(crate) async fn lock_config(
        &self,
        vmid: u32,
        timeout: Duration,
    ) -> Result<ConfigLock, String> {
        let path = self.ctx.lock_dir.join(format!("pve-config-{vmid}.lock"));
        let deadline = Instant::now() + timeout;
        loop {
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(|e| format!("can't lock file '{}' - {e}\n", path.display()))?;
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => return Ok(ConfigLock { _lock: lock }),
                Err((_, nix::errno::Errno::EWOULDBLOCK)) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                    return Err(format!(
                        "can't lock file '{}' - got timeout\n",
                        path.display()
                    ));
                }
                Err((_, e)) => return Err(format!("can't lock file '{}' - {e}\n", path.display())),
            }
        }
    }

    fn check_node(&self, params: &Params) -> Result<(), ApiError> {
        match text(params, "node") {
            // pve-cluster `remote_node_ip` dies while pveproxy looks for the node to proxy to.
            Some(n) if n != self.ctx.node => {
                Err(ApiError::die(format!("no such cluster node '{n}'\n")))
            }
            _ => Ok(()),
        }
    }

    pub(crate) async fn dispatch(
        self: Arc<Self>,
        method: &str,
        template: &str,
        params: &Params,
        auth: &Auth,
    ) -> HandlerResult {
        self.check_node(params)?;
        let vmid: u32 = text(params, "vmid")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        match (method, template) {
            ("GET", "/version") => Ok(Reply::data(json!({
                "version": "9.1.1",
                "release": "9.1",
                "repoid": "42cb4ef1c0d7e3b8",
                "console": "xtermjs",
            }))),
            ("GET", "/access/permissions") => Ok(Reply::data(self.permissions(params, auth))),
            ("GET", "/cluster/status") => Ok(Reply::data(self.cluster_status())),
            // pve-manager PVE::API2::Backup `index`: needs Sys.Audit on /.
            ("GET", "/cluster/backup") => {
                self.check_privilege(auth, "/", "Sys.Audit")?;
                Ok(Reply::data(Value::Array(self.backup_jobs.clone())))
            }
            ("GET", "/cluster/resources") => self.cluster_resources(params).await,
            ("GET", "/cluster/nextid") => self.nextid(params),
            ("GET", "/nodes") => Ok(Reply::data(json!([{
                "node": self.ctx.node,
                "status": "online",
                "type": "node",
                "id": format!("node/{}", self.ctx.node),
                "cpu": 0.02,
                "maxcpu": 2,
                "mem": 2u64 << 30,
                "maxmem": 24u64 << 30,
                "uptime": self.start_time.elapsed().as_secs() + 3600,
                "level": "",
                "ssl_fingerprint": self.fingerprint,
            }]))),
            ("GET", "/nodes/{node}/status") => Ok(Reply::data(self.node_status())),
            ("GET", "/nodes/{node}/lxc") => self.lxc_list().await,
            ("POST", "/nodes/{node}/lxc") => self.create(params, auth).await,
            ("GET", "/nodes/{node}/lxc/{vmid}") => {
                self.load_config(vmid)?;
                Ok(Reply::data(json!([
                    {"subdir": "config"}, {"subdir": "status"}, {"subdir": "vncproxy"},
                    {"subdir": "termproxy"}, {"subdir": "vncwebsocket"}, {"subdir": "spiceproxy"},
                    {"subdir": "migrate"}, {"subdir": "clone"}, {"subdir": "rrd"},
                    {"subdir": "rrddata"}, {"subdir": "firewall"}, {"subdir": "snapshot"},
                    {"subdir": "resize"}, {"subdir": "interfaces"}, {"subdir": "pending"},
                ])))
            }
            ("DELETE", "/nodes/{node}/lxc/{vmid}") => self.destroy(vmid, params, auth).await,
            ("GET", "/nodes/{node}/lxc/{vmid}/config") => self.get_config(vmid),
            ("PUT", "/nodes/{node}/lxc/{vmid}/config") => self.put_config(vmid, params, auth).await,
            ("GET", "/nodes/{node}/lxc/{vmid}/status/current") => self.status_current(vmid).await,
            ("POST", "/nodes/{node}/lxc/{vmid}/status/start") => {
                self.start(vmid, params, auth).await
            }
            ("POST", "/nodes/{node}/lxc/{vmid}/status/stop") => {
                self.stop(vmid, params, auth, false).await
            }
            ("POST", "/nodes/{node}/lxc/{vmid}/status/shutdown") => {
                self.stop(vmid, params, auth, true).await
            }
            ("GET", "/nodes/{node}/tasks/{upid}/status") => self.task_status(params),
            ("GET", "/nodes/{node}/tasks/{upid}/log") => self.task_log(params),
            _ => Err(ApiError::status(
                501,
                format!("Method '{method} {template}' not implemented"),
            )),
        }
    }

    /// pve-access-control `PVE::API2::AccessControl` `permissions`: the requester's own
    /// effective privileges, `{path: {privilege: propagate}}`; with `path`, only that path.
    /// This server's privileges hold on every path, so the whole tree is `/`.
    fn permissions(&self, params: &Params, auth: &Auth) -> Value {
        let path = text(params, "path").unwrap_or("/");
        let privs: serde_json::Map<String, Value> = self
            .privileges(auth)
            .into_iter()
            .map(|p| (p, json!(1)))
            .collect();
        if privs.is_empty() {
            return json!({});
        }
        json!({ path: privs })
    }

    fn cluster_status(&self) -> Value {
        let quorate = i32::from(self.quorate.load(Ordering::SeqCst));
        json!([
            {"type": "cluster", "id": "cluster", "name": self.cluster_name, "nodes": 1,
             "quorate": quorate, "version": 3},
            {"type": "node", "id": format!("node/{}", self.ctx.node), "name": self.ctx.node,
             "ip": "127.0.0.1", "local": 1, "nodeid": 1, "online": 1, "level": ""},
        ])
    }

    fn node_status(&self) -> Value {
        json!({
            "cpu": 0.02,
            "wait": 0.0,
            "uptime": self.start_time.elapsed().as_secs() + 3600,
            "loadavg": ["0.10", "0.05", "0.01"],
            "kversion": "Linux 6.14.8-2-pve #1 SMP PREEMPT_DYNAMIC PMX 6.14.8-2 (2025-07-22T10:04Z) x86_64",
            "pveversion": "pve-manager/9.1.1/42cb4ef1c0d7e3b8",
            "cpuinfo": {"cores": 2, "cpus": 2, "sockets": 1, "model": "pve-test-server virtual CPU",
                        "mhz": "2400.000", "hvm": "1", "flags": "", "user_hz": 100},
            "memory": {"total": 24u64 << 30, "used": 2u64 << 30, "free": 22u64 << 30,
                       "available": 22u64 << 30},
            "swap": {"total": 0, "used": 0, "free": 0},
            "rootfs": {"total": 100u64 << 30, "used": 10u64 << 30, "free": 90u64 << 30,
                       "avail": 90u64 << 30},
            "ksm": {"shared": 0},
            "current-kernel": {"sysname": "Linux", "release": "6.14.8-2-pve",
                               "version": "#1 SMP PREEMPT_DYNAMIC PMX 6.14.8-2", "machine": "x86_64"},
            "boot-info": {"mode": "efi", "secureboot": 0},
        })
    }

    async fn ct_summary(&self, vmid: u32, conf: &CtConfig) -> serde_json::Map<String, Value> {
        let running = self.backend.is_running(&self.ctx, vmid).await;
        let opt = |k: &str| conf.options.get(k).cloned();
        let mib = |k: &str, default: u64| {
            opt(k)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(default)
                * 1024
                * 1024
        };
        let mut m = serde_json::Map::new();
        m.insert("vmid".into(), json!(vmid));
        m.insert(
            "status".into(),
            json!(if running { "running" } else { "stopped" }),
        );
        m.insert(
            "name".into(),
            json!(opt("hostname").unwrap_or_else(|| format!("CT{vmid}"))),
        );
        m.insert("type".into(), json!("lxc"));
        m.insert("maxmem".into(), json!(mib("memory", 512)));
        m.insert("maxswap".into(), json!(mib("swap", 512)));
        m.insert("maxdisk".into(), json!(4u64 << 30));
        m.insert("disk".into(), json!(0));
        m.insert("mem".into(), json!(if running { 16u64 << 20 } else { 0 }));
        m.insert("swap".into(), json!(0));
        m.insert("cpu".into(), json!(0));
        m.insert(
            "cpus".into(),
            json!(opt("cores")
                .and_then(|c| c.parse::<u64>().ok())
                .unwrap_or(2)),
        );
        m.insert("uptime".into(), json!(if running { 1 } else { 0 }));
        for k in ["netin", "netout", "diskread", "diskwrite"] {
            m.insert(k.into(), json!(0));
        }
        if let Some(lock) = conf.lock() {
            m.insert("lock".into(), json!(lock));
        }
        if let Some(tags) = opt("tags") {
            m.insert("tags".into(), json!(tags));
        }
        if opt("template").as_deref() == Some("1") {
            m.insert("template".into(), json!(1));
        }
        m
    }

    async fn lxc_list(&self) -> HandlerResult {
        let mut list = Vec::new();
        for vmid in self.list_vmids() {
            let Ok((conf, _)) = self.load_config(vmid) else {
                continue;
            };
            list.push(Value::Object(self.ct_summary(vmid, &conf).await));
        }
        Ok(Reply::data(Value::Array(list)))
    }

    async fn cluster_resources(&self, params: &Params) -> HandlerResult {
        let filter = text(params, "type");
        let mut list = Vec::new();
        if filter.is_none() || filter == Some("vm") {
            for vmid in self.list_vmids() {
                let Ok((conf, _)) = self.load_config(vmid) else {
                    continue;
                };
                let mut m = self.ct_summary(vmid, &conf).await;
                m.insert("id".into(), json!(format!("lxc/{vmid}")));
                m.insert("node".into(), json!(self.ctx.node));
                list.push(Value::Object(m));
            }
        }
        if filter.is_none() || filter == Some("node") {
            list.push(
                json!({"id": format!("node/{}", self.ctx.node), "type": "node",
                "node": self.ctx.node, "status": "online", "level": "", "maxcpu": 2,
                "maxmem": 24u64 << 30, "cgroup-mode": 2}),
            );
        }
        if filter.is_none() || filter == Some("storage") {
            for s in &self.storages {
                list.push(
                    json!({"id": format!("storage/{}/{s}", self.ctx.node), "type": "storage",
                    "storage": s, "node": self.ctx.node, "status": "available", "shared": 0,
                    "content": "rootdir,vztmpl,images", "plugintype": "dir"}),
                );
            }
        }
        Ok(Reply::data(Value::Array(list)))
    }

    /// `/cluster/nextid`: the lowest free ID from 100 (answered as a string, as Proxmox does).
    fn nextid(&self, params: &Params) -> HandlerResult {
        let used = self.list_vmids();
        if let Some(want) = text(params, "vmid").and_then(|v| v.parse::<u32>().ok()) {
            if used.contains(&want) {
                return Err(ApiError::param1(
                    "vmid",
                    &format!("VM {want} already exists"),
                ));
            }
            return Ok(Reply::data(json!(want.to_string())));
        }
        let mut id = 100;
        while used.contains(&id) {
            id += 1;
        }
        Ok(Reply::data(json!(id.to_string())))
    }

    /// Bind mounts and device paths need root@pam (an API token never is).
    fn check_paths_allowed(&self, params: &Params, auth: &Auth) -> Result<(), ApiError> {
        for (k, v) in params {
            let is_mp = k == "rootfs" || (k.starts_with("mp") && k[2..].parse::<u32>().is_ok());
            if !is_mp {
                continue;
            }
            let s = value_text(v);
            let volume = s
                .split(',')
                .find(|p| !p.contains('=') || p.starts_with("volume="))
                .map(|p| p.trim_start_matches("volume=").to_string())
                .unwrap_or_default();
            if volume.starts_with('/') && !auth.is_root() {
                return Err(ApiError::die(
                    "Only root can pass arbitrary filesystem paths.\n",
                ));
            }
            if let Some((storage, _)) = volume.split_once(':') {
                if !self.storages.iter().any(|s| s == storage) {
                    return Err(ApiError::die(format!(
                        "storage '{storage}' does not exist\n"
                    )));
                }
            }
        }
        for k in params.keys() {
            if k.starts_with("dev") && k[3..].parse::<u32>().is_ok() && !auth.is_root() {
                return Err(ApiError::status(
                    403,
                    "Permission check failed (changing device passthrough is only allowed for root@pam)\n",
                ));
            }
        }
        Ok(())
    }

    async fn create(self: Arc<Self>, params: &Params, auth: &Auth) -> HandlerResult {
        let vmid: u32 = text(params, "vmid")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let storage = text(params, "storage").unwrap_or("local").to_string();
        let ostemplate = text(params, "ostemplate").unwrap_or("").to_string();
        if !self.storages.contains(&storage) {
            return Err(ApiError::die(format!(
                "storage '{storage}' does not exist\n"
            )));
        }
        if ostemplate.starts_with('/') && !auth.is_root() {
            return Err(ApiError::die(
                "Only root can pass arbitrary filesystem paths.\n",
            ));
        }
        if ostemplate != "-" && !ostemplate.starts_with('/') {
            if let Some((sid, _)) = ostemplate.split_once(':') {
                if !self.storages.iter().any(|s| s == sid) {
                    return Err(ApiError::die(format!("storage '{sid}' does not exist\n")));
                }
            } else {
                return Err(ApiError::die(format!(
                    "unable to parse volume ID '{ostemplate}'\n"
                )));
            }
        }
        self.check_paths_allowed(params, auth)?;
        if !self.quorate.load(Ordering::SeqCst) {
            return Err(ApiError::die("cluster not ready - no quorum?\n"));
        }

        // create_and_lock_config: the ID is claimed by creating VMID.conf exclusively (pmxcfs
        // refuses a VMID that exists anywhere in the cluster).
        let emsg = format!("unable to create CT {vmid} -");
        let lock = self
            .lock_config(vmid, self.create_lock_timeout)
            .await
            .map_err(|e| ApiError::die(format!("{emsg} {e}")))?;
        let mut conf = CtConfig::default();
        conf.options.insert("lock".into(), "create".into());
        let exists = self.config_path(vmid).exists();
        if exists && !flag(params, "force") {
            return Err(ApiError::die(format!(
                "{emsg} CT {vmid} already exists on node '{}'\n",
                self.ctx.node
            )));
        }
        if exists {
            let (old, _) = self.load_config(vmid)?;
            check_lock(&old).map_err(|e| ApiError::die(format!("{emsg} {e}")))?;
            self.write_config(vmid, &conf)?;
        } else {
            let created = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(self.config_path(vmid))
                .and_then(|mut f| f.write_all(conf.render().as_bytes()));
            if let Err(e) = created {
                let msg = if e.kind() == std::io::ErrorKind::AlreadyExists {
                    format!(
                        "{emsg} CT {vmid} already exists on node '{}'\n",
                        self.ctx.node
                    )
                } else {
                    format!("{emsg} unable to create config - {e}\n")
                };
                return Err(ApiError::die(msg));
            }
        }
        drop(lock);

        // The config the task will write.
        let mut final_conf = CtConfig::default();
        for (k, v) in params {
            if CREATE_ONLY.contains(&k.as_str()) {
                continue;
            }
            let v = value_text(v);
            match k.as_str() {
                "description" => final_conf.description = Some(v),
                "env" => final_conf.env = Some(v),
                _ => {
                    final_conf.options.insert(k.clone(), v);
                }
            }
        }
        let rootfs = final_conf
            .options
            .get("rootfs")
            .cloned()
            .unwrap_or_else(|| format!("{storage}:4"));
        final_conf
            .options
            .insert("rootfs".into(), allocate_volume(&rootfs, vmid, 0));
        let mut disk = 1;
        let mp_keys: Vec<String> = final_conf
            .options
            .keys()
            .filter(|k| k.starts_with("mp"))
            .cloned()
            .collect();
        for k in mp_keys {
            if let Some(v) = final_conf.options.get(&k).cloned() {
                final_conf
                    .options
                    .insert(k, allocate_volume(&v, vmid, disk));
                disk += 1;
            }
        }
        let hostname = format!("CT{vmid}");
        for (key, default) in [
            ("hostname", hostname.as_str()),
            ("memory", "512"),
            ("swap", "512"),
            ("arch", "amd64"),
            ("ostype", "unmanaged"),
        ] {
            final_conf
                .options
                .entry(key.into())
                .or_insert_with(|| default.into());
        }
        if !final_conf.options.contains_key("unprivileged") {
            final_conf.options.insert("unprivileged".into(), "1".into());
        } else if final_conf.options.get("unprivileged").map(String::as_str) == Some("0") {
            final_conf.options.remove("unprivileged");
        }
        let start_after = flag(params, "start");
        self.ct_task(
            "vzcreate",
            ("POST", "/nodes/{node}/lxc"),
            vmid,
            auth,
            move |inner, log| async move {
                let result = async {
                    let _lock = inner.lock_config(vmid, inner.lock_timeout).await?;
                    let mut with_lock = final_conf.clone();
                    with_lock.options.insert("lock".into(), "create".into());
                    inner
                        .write_config(vmid, &with_lock)
                        .map_err(|e| e.message)?;
                    log.line(format!("extracting archive '{ostemplate}'"));
                    inner
                        .backend
                        .create(&inner.ctx, vmid, &ostemplate, &with_lock, &log)
                        .await?;
                    log.line("Total bytes read: 0 (0B, 0B/s)");
                    inner
                        .write_config(vmid, &final_conf)
                        .map_err(|e| e.message)?;
                    Ok::<(), String>(())
                }
                .await;
                if let Err(e) = result {
                    // destroy_config_on_error
                    let _ = std::fs::remove_file(inner.config_path(vmid));
                    return Err(format!("unable to create CT {vmid} - {}", e.trim_end()));
                }
                if start_after {
                    let (_lock, conf) = inner.lock_and_load(vmid).await?;
                    inner.backend.start(&inner.ctx, vmid, &conf, &log).await?;
                }
                Ok(())
            },
        )
    }

    async fn destroy(self: Arc<Self>, vmid: u32, params: &Params, auth: &Auth) -> HandlerResult {
        self.check_privilege(auth, &format!("/vms/{vmid}"), "VM.Allocate")?;
        let (conf, _) = self.load_config(vmid)?;
        let early_checks = move |conf: &CtConfig| -> Result<(), String> {
            if conf.options.get("protection").map(String::as_str) == Some("1") {
                return Err(format!(
                    "can't remove CT {vmid} - protection mode enabled\n"
                ));
            }
            check_lock(conf)
        };
        early_checks(&conf).map_err(ApiError::die)?;
        let force = flag(params, "force");
        let running_msg = format!("unable to destroy CT {vmid} - container is running\n");
        if !force && self.backend.is_running(&self.ctx, vmid).await {
            return Err(ApiError::die(running_msg));
        }
        let purge = flag(params, "purge");
        let unreferenced = flag(params, "destroy-unreferenced-disks");
        self.ct_task(
            "vzdestroy",
            ("DELETE", "/nodes/{node}/lxc/{vmid}"),
            vmid,
            auth,
            move |inner, log| async move {
                let (_lock, conf) = inner.lock_and_load(vmid).await?;
                early_checks(&conf)?;
                if inner.backend.is_running(&inner.ctx, vmid).await {
                    if !force {
                        return Err(running_msg);
                    }
                    log.warn(format!("forced to stop CT {vmid} before destroying!"));
                    inner
                        .backend
                        .stop(&inner.ctx, vmid, &conf, None, &log)
                        .await?;
                }
                let mut locked = conf.clone();
                locked.options.insert("lock".into(), "destroyed".into());
                inner.write_config(vmid, &locked).map_err(|e| e.message)?;
                for (k, v) in &conf.options {
                    if k == "rootfs" || k.starts_with("mp") || k.starts_with("unused") {
                        let volume = v.split(',').next().unwrap_or("");
                        if volume.contains(':') {
                            log.line(format!("removing volume '{volume}'"));
                        }
                    }
                }
                if unreferenced {
                    log.line(
                        "destroying unreferenced disks of CT ".to_string() + &vmid.to_string(),
                    );
                }
                inner.backend.destroy(&inner.ctx, vmid, &conf, &log).await?;
                if purge {
                    log.line(format!("purging CT {vmid} from related configurations.."));
                }
                std::fs::remove_file(inner.config_path(vmid))
                    .map_err(|e| format!("unable to remove config - {e}"))?;
                Ok(())
            },
        )
    }

    fn get_config(&self, vmid: u32) -> HandlerResult {
        let (conf, digest) = self.load_config(vmid)?;
        let endpoint = ApiSchema::builtin().endpoint("GET", CONFIG);
        let schema = properties(endpoint.map(|e| &e.returns));
        let mut out = serde_json::Map::new();
        for (k, v) in &conf.options {
            let ty = lookup_property(&schema, k)
                .and_then(|s| s.get("type"))
                .and_then(Value::as_str)
                .unwrap_or("string");
            let typed = match ty {
                "integer" | "boolean" => v.parse::<i64>().map(Value::from).unwrap_or(json!(v)),
                "number" => v.parse::<f64>().map(Value::from).unwrap_or(json!(v)),
                _ => json!(v),
            };
            out.insert(k.clone(), typed);
        }
        if let Some(d) = &conf.description {
            out.insert("description".into(), json!(d));
        }
        if let Some(env) = &conf.env {
            out.insert("env".into(), json!(env));
        }
        if !conf.lxc.is_empty() {
            let pairs: Vec<Value> = conf.lxc.iter().map(|(k, v)| json!([k, v])).collect();
            out.insert("lxc".into(), Value::Array(pairs));
        }
        out.insert("digest".into(), json!(digest));
        Ok(Reply::data(Value::Object(out)))
    }

    async fn put_config(&self, vmid: u32, params: &Params, auth: &Auth) -> HandlerResult {
        let mut params = params.clone();
        params.remove("node");
        params.remove("vmid");
        let want_digest = params.remove("digest").map(|v| value_text(&v));
        if params.is_empty() {
            return Err(ApiError::die("no options specified\n"));
        }
        let delete = take_list(&mut params, "delete");
        let revert = take_list(&mut params, "revert");
        // pve-container src/PVE/LXC.pm, check_ct_modify_config_perm (the subset for the keys
        // a shim changes).
        for key in params.keys().chain(delete.iter()) {
            let privilege = match key.as_str() {
                "cores" | "cpuunits" | "cpulimit" => Some("VM.Config.CPU"),
                "memory" | "swap" => Some("VM.Config.Memory"),
                _ => None,
            };
            if let Some(p) = privilege {
                self.check_privilege(auth, &format!("/vms/{vmid}"), p)?;
            }
        }
        self.check_paths_allowed(&params, auth)?;
        let _lock = self
            .lock_config(vmid, self.lock_timeout)
            .await
            .map_err(ApiError::die)?;
        let (mut conf, digest) = self.load_config(vmid)?;
        check_lock(&conf).map_err(ApiError::die)?;
        if let Some(want) = want_digest {
            if !want.is_empty() && want != digest {
                return Err(ApiError::die(
                    "detected modified configuration - file changed by other user? Try again.\n",
                ));
            }
        }
        let endpoint = ApiSchema::builtin().endpoint("PUT", CONFIG);
        let schema = properties(endpoint.map(|e| &e.parameters));
        for opt in &revert {
            if lookup_property(&schema, opt).is_none() {
                return Err(ApiError::param1(
                    "revert",
                    &format!("unknown option '{opt}'"),
                ));
            }
        }
        for opt in &delete {
            if lookup_property(&schema, opt).is_none() || opt == "node" || opt == "vmid" {
                return Err(ApiError::param1(
                    "delete",
                    &format!("unknown option '{opt}'"),
                ));
            }
            if params.contains_key(opt) {
                return Err(ApiError::param1(
                    "delete",
                    &format!("you can't use '-{opt}' and -delete {opt}' at the same time"),
                ));
            }
            if revert.contains(opt) {
                return Err(ApiError::param1(
                    "delete",
                    &format!("you can't use '-delete {opt}' and '-revert {opt}' at the same time"),
                ));
            }
            match opt.as_str() {
                "description" => conf.description = None,
                "env" => conf.env = None,
                "rootfs" => {
                    return Err(ApiError::param1(
                        "delete",
                        "unable to delete required option 'rootfs'",
                    ))
                }
                _ => {
                    conf.options.remove(opt);
                }
            }
        }
        for (k, v) in params {
            let v = value_text(&v);
            match k.as_str() {
                "description" => conf.description = Some(v),
                "env" => conf.env = Some(v),
                _ => {
                    conf.options.insert(k, v);
                }
            }
        }
        self.write_config(vmid, &conf)?;
        Ok(Reply::data(Value::Null))
    }

    async fn status_current(&self, vmid: u32) -> HandlerResult {
        let (conf, _) = self.load_config(vmid)?;
        let mut m = self.ct_summary(vmid, &conf).await;
        m.insert("ha".into(), json!({"managed": 0}));
        if let Some(pid) = self.backend.init_pid(&self.ctx, vmid).await {
            m.insert("pid".into(), json!(pid));
        }
        Ok(Reply::data(Value::Object(m)))
    }

    async fn start(self: Arc<Self>, vmid: u32, params: &Params, auth: &Auth) -> HandlerResult {
        self.check_privilege(auth, &format!("/vms/{vmid}"), "VM.PowerMgmt")?;
        let skiplock = flag(params, "skiplock");
        if skiplock && !auth.is_root() {
            return Err(ApiError::param1(
                "skiplock",
                "Only root may use this option.",
            ));
        }
        // PVE::API2::LXC::Status `vm_start`: no `load_config` before the fork, so a VMID
        // without a config gets a UPID and its task fails with "does not exist".
        if self.backend.is_running(&self.ctx, vmid).await {
            return Err(ApiError::die(format!("CT {vmid} already running\n")));
        }
        if !self.quorate.load(Ordering::SeqCst) {
            return Err(ApiError::die("cluster not ready - no quorum?\n"));
        }
        self.ct_task(
            "vzstart",
            ("POST", "/nodes/{node}/lxc/{vmid}/status/start"),
            vmid,
            auth,
            move |inner, log| async move {
                let _lock = inner.lock_config(vmid, inner.lock_timeout).await?;
                // load_config warns (into the task log, counted) about each raw key Proxmox
                // does not accept, and the CT starts without it.
                let conf = inner
                    .load_config_warnings(vmid, &log)
                    .map_err(|e| e.message)?;
                if conf.options.get("template").map(String::as_str) == Some("1") {
                    return Err("you can't start a CT if it's a template\n".into());
                }
                if !skiplock && conf.lock() != Some("mounted") {
                    check_lock(&conf)?;
                }
                // PVE::LXC `vm_start` runs `systemctl start pve-container@VMID`; systemd
                // refuses a unit started too often (pve-container@.service sets no
                // StartLimit*, so 5 per 10 s) and systemctl says so on stderr. A backend that
                // starts through the host's systemd gets that from systemd itself.
                if !inner.backend.enforces_start_limit() && !inner.unit_start_allowed(vmid) {
                    let unit = format!("pve-container@{vmid}.service");
                    log.line(format!(
                        "Job for {unit} failed because start of the service was attempted too often."
                    ));
                    log.line(format!(
                        "See \"systemctl status {unit}\" and \"journalctl -xeu {unit}\" for details."
                    ));
                    log.line(format!("To force a start use \"systemctl reset-failed {unit}\""));
                    log.line(format!("followed by \"systemctl start {unit}\" again."));
                    return Err(format!(
                        "command 'systemctl start pve-container@{vmid}' failed: exit code 1\n"
                    ));
                }
                inner.backend.start(&inner.ctx, vmid, &conf, &log).await
            },
        )
    }

    async fn stop(
        self: Arc<Self>,
        vmid: u32,
        params: &Params,
        auth: &Auth,
        clean: bool,
    ) -> HandlerResult {
        let skiplock = flag(params, "skiplock");
        if skiplock && !auth.is_root() {
            return Err(ApiError::param1(
                "skiplock",
                "Only root may use this option.",
            ));
        }
        self.check_privilege(auth, &format!("/vms/{vmid}"), "VM.PowerMgmt")?;
        self.load_config(vmid)?;
        if !self.backend.is_running(&self.ctx, vmid).await {
            return Err(ApiError::die(format!("CT {vmid} not running\n")));
        }
        let timeout = text(params, "timeout")
            .and_then(|t| t.parse::<u64>().ok())
            .unwrap_or(60);
        let force_stop = flag(params, "forceStop");
        let (kind, template) = if clean {
            ("vzshutdown", "/nodes/{node}/lxc/{vmid}/status/shutdown")
        } else {
            ("vzstop", "/nodes/{node}/lxc/{vmid}/status/stop")
        };
        self.ct_task(
            kind,
            ("POST", template),
            vmid,
            auth,
            move |inner, log| async move {
                let (_lock, conf) = inner.lock_and_load(vmid).await?;
                if !skiplock {
                    check_lock(&conf)?;
                }
                let backend = &inner.backend;
                if !clean {
                    return backend.stop(&inner.ctx, vmid, &conf, None, &log).await;
                }
                let timeout = Some(Duration::from_secs(timeout));
                match backend.stop(&inner.ctx, vmid, &conf, timeout, &log).await {
                    Ok(()) => Ok(()),
                    Err(e) if force_stop => {
                        log.line(format!("{e}; forcing stop"));
                        backend.stop(&inner.ctx, vmid, &conf, None, &log).await
                    }
                    Err(e) => Err(e),
                }
            },
        )
    }

    fn find_task(&self, params: &Params) -> Result<(), ApiError> {
        let upid = text(params, "upid").unwrap_or("");
        if parse_upid(upid).is_none() {
            return Err(ApiError::param1("upid", "unable to parse worker upid"));
        }
        let tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        let Some(task) = tasks.get(upid) else {
            return Err(ApiError::param1("upid", "no such task"));
        };
        // A fresh task whose log file is not visible yet.
        let hidden = task.hidden_polls.load(Ordering::SeqCst);
        if hidden > 0 {
            task.hidden_polls.store(hidden - 1, Ordering::SeqCst);
            return Err(ApiError::param1("upid", "no such task"));
        }
        Ok(())
    }

    fn task_status(&self, params: &Params) -> HandlerResult {
        self.find_task(params)?;
        let upid = text(params, "upid").unwrap_or("");
        let tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        let Some(t) = tasks.get(upid) else {
            return Err(ApiError::param1("upid", "no such task"));
        };
        let exit = t
            .exitstatus
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut v = t.status.clone();
        v["status"] = json!(if exit.is_some() { "stopped" } else { "running" });
        if let Some(e) = exit {
            v["exitstatus"] = json!(e);
        }
        Ok(Reply::data(v))
    }

    fn task_log(&self, params: &Params) -> HandlerResult {
        self.find_task(params)?;
        let upid = text(params, "upid").unwrap_or("");
        let start = text(params, "start")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0);
        let limit = text(params, "limit")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(50);
        let tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        let lines = tasks.get(upid).map(|t| t.log.lines()).unwrap_or_default();
        let total = lines.len() as u64;
        // Proxmox numbers lines from 1; `limit=0` means all.
        let take = if limit == 0 { usize::MAX } else { limit };
        let out: Vec<Value> = lines
            .iter()
            .enumerate()
            .skip(start)
            .take(take)
            .map(|(i, t)| json!({"n": i + 1, "t": t}))
            .collect();
        Ok(Reply {
            data: Value::Array(out),
            total: Some(total),
        })
    }
}

/// A new-disk request `STORAGE:SIZE` becomes an allocated volume; anything else is kept.
fn allocate_volume(spec: &str, vmid: u32, index: u32) -> String {
    let mut parts = spec.splitn(2, ',');
    let first = parts.next().unwrap_or("");
    let rest = parts.next();
    let volume = first.strip_prefix("volume=").unwrap_or(first);
    let new_disk = volume
        .split_once(':')
        .filter(|(sid, size)| !sid.is_empty() && !size.is_empty() && size.parse::<f64>().is_ok());
    match new_disk {
        Some((sid, size)) => {
            let mut out = format!("{sid}:{vmid}/vm-{vmid}-disk-{index}.raw");
            if let Some(rest) = rest {
                out.push(',');
                out.push_str(rest);
            }
            out.push_str(&format!(",size={size}G"));
            out
        }
        None => spec.to_string(),
    }
}

/// Parses a UPID (pve-common `PVE::UPID::decode`).
pub fn parse_upid(upid: &str) -> Option<Vec<String>> {
    let re = crate::schema::compile_perl_pattern(
        r"UPID:([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?):([0-9A-Fa-f]{8}):([0-9A-Fa-f]{8,9}):([0-9A-Fa-f]{8}):([^:\s/]+):([^:\s/]*):([^:\s/]+):",
    )?;
    let caps = re.captures(upid)?;
    Some(
        caps.iter()
            .skip(1)
            .map(|m| m.map(|m| m.as_str().to_string()).unwrap_or_default())
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes() {
        assert_eq!(
            allocate_volume("local:8", 100, 0),
            "local:100/vm-100-disk-0.raw,size=8G"
        );
        assert_eq!(
            allocate_volume("local:1,mp=/data", 100, 1),
            "local:100/vm-100-disk-1.raw,mp=/data,size=1G"
        );
        assert_eq!(allocate_volume("/srv/x,mp=/x", 100, 1), "/srv/x,mp=/x");
    }

    #[test]
    fn upids() {
        assert!(
            parse_upid("UPID:pve:0000A1B2:00C0FFEE:6560A1B2:vzstart:100:root@pam!t:").is_some()
        );
        assert!(parse_upid("UPID:pve:zz:1:2:vzstart:100:root@pam:").is_none());
    }
}
