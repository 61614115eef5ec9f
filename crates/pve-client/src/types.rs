//! Typed responses. Proxmox encodes booleans as 0/1 and some numbers as strings (nextid,
//! vmid in older versions); the deserializers here accept both forms.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};
use serde_json::Value;

pub(crate) mod lenient {
    use super::*;

    /// `true`/`false`, `0`/`1`, `"0"`/`"1"`.
    pub fn bool_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
        let v = Option::<Value>::deserialize(d)?;
        Ok(match v {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(b),
            Some(Value::Number(n)) => Some(n.as_f64().unwrap_or(0.0) != 0.0),
            Some(Value::String(s)) => Some(s == "1" || s.eq_ignore_ascii_case("true")),
            Some(other) => {
                return Err(serde::de::Error::custom(format!(
                    "expected boolean, got {other}"
                )))
            }
        })
    }

    pub fn bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
        Ok(bool_opt(d)?.unwrap_or(false))
    }

    /// An integer given as number or string.
    pub fn u64_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        let v = Option::<Value>::deserialize(d)?;
        Ok(match v {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => n.as_u64().or_else(|| n.as_f64().map(|f| f as u64)),
            Some(Value::String(s)) => Some(
                s.trim()
                    .parse()
                    .map_err(|_| serde::de::Error::custom(format!("not an integer: {s}")))?,
            ),
            Some(other) => {
                return Err(serde::de::Error::custom(format!(
                    "expected integer, got {other}"
                )))
            }
        })
    }

    pub fn u32<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        let n = u64_opt(d)?.ok_or_else(|| serde::de::Error::custom("missing integer"))?;
        u32::try_from(n).map_err(|_| serde::de::Error::custom(format!("out of range: {n}")))
    }

    pub fn u32_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
        match u64_opt(d)? {
            None => Ok(None),
            Some(n) => u32::try_from(n)
                .map(Some)
                .map_err(|_| serde::de::Error::custom(format!("out of range: {n}"))),
        }
    }
}

/// `GET /version`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Version {
    /// e.g. `9.1.1`.
    pub version: String,
    /// e.g. `9.1`.
    pub release: String,
    /// Git commit of pve-manager.
    pub repoid: String,
}

/// One entry of `GET /cluster/status` (the cluster, or a node).
#[derive(Debug, Clone, Deserialize)]
pub struct ClusterStatusEntry {
    /// `cluster` or `node`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `cluster` or `node/NAME`.
    pub id: String,
    /// Cluster or node name.
    pub name: String,
    /// Cluster entry: whether the cluster has quorum.
    #[serde(default, deserialize_with = "lenient::bool_opt")]
    pub quorate: Option<bool>,
    /// Node entry: online.
    #[serde(default, deserialize_with = "lenient::bool_opt")]
    pub online: Option<bool>,
    /// Node entry: the node this API call ran on.
    #[serde(default, deserialize_with = "lenient::bool_opt")]
    pub local: Option<bool>,
    /// Node entry: address.
    #[serde(default)]
    pub ip: Option<String>,
    /// Cluster entry: number of nodes.
    #[serde(default, deserialize_with = "lenient::u64_opt")]
    pub nodes: Option<u64>,
}

/// `type` filter of `GET /cluster/resources`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceType {
    /// Guests (qemu and lxc).
    Vm,
    /// Storages.
    Storage,
    /// Nodes.
    Node,
    /// SDN.
    Sdn,
}

impl ResourceType {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ResourceType::Vm => "vm",
            ResourceType::Storage => "storage",
            ResourceType::Node => "node",
            ResourceType::Sdn => "sdn",
        }
    }
}

/// One entry of `GET /cluster/resources`.
#[derive(Debug, Clone, Deserialize)]
pub struct ClusterResource {
    /// e.g. `lxc/100`, `node/pve`, `storage/pve/local`.
    pub id: String,
    /// `node`, `storage`, `qemu`, `lxc`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// Guest ID.
    #[serde(default, deserialize_with = "lenient::u32_opt")]
    pub vmid: Option<u32>,
    /// Node.
    #[serde(default)]
    pub node: Option<String>,
    /// Guest name.
    #[serde(default)]
    pub name: Option<String>,
    /// Status (`running`, `stopped`, `online`, `available`, ...).
    #[serde(default)]
    pub status: Option<String>,
    /// Tags (`;`-separated).
    #[serde(default)]
    pub tags: Option<String>,
    /// Lock.
    #[serde(default)]
    pub lock: Option<String>,
    /// Template flag.
    #[serde(default, deserialize_with = "lenient::bool")]
    pub template: bool,
    /// Storage ID for storages.
    #[serde(default)]
    pub storage: Option<String>,
}

/// One entry of `GET /nodes`.
#[derive(Debug, Clone, Deserialize)]
pub struct NodeInfo {
    /// Node name.
    pub node: String,
    /// `online`, `offline`, `unknown`.
    pub status: String,
    /// Its certificate's SHA-256 fingerprint.
    #[serde(default)]
    pub ssl_fingerprint: Option<String>,
    /// CPU count.
    #[serde(default, deserialize_with = "lenient::u64_opt")]
    pub maxcpu: Option<u64>,
    /// Memory in bytes.
    #[serde(default, deserialize_with = "lenient::u64_opt")]
    pub maxmem: Option<u64>,
    /// Uptime in seconds.
    #[serde(default, deserialize_with = "lenient::u64_opt")]
    pub uptime: Option<u64>,
}

/// Memory figures of `GET /nodes/{node}/status`.
#[derive(Debug, Clone, Deserialize)]
pub struct NodeMemory {
    /// Bytes.
    #[serde(deserialize_with = "lenient::u64_opt", default)]
    pub total: Option<u64>,
    /// Bytes.
    #[serde(deserialize_with = "lenient::u64_opt", default)]
    pub used: Option<u64>,
    /// Bytes.
    #[serde(deserialize_with = "lenient::u64_opt", default)]
    pub free: Option<u64>,
}

/// `GET /nodes/{node}/status` (main fields; the rest in `extra`).
#[derive(Debug, Clone, Deserialize)]
pub struct NodeStatus {
    /// `pve-manager/9.1.1/...`.
    #[serde(default)]
    pub pveversion: Option<String>,
    /// Kernel version string.
    #[serde(default)]
    pub kversion: Option<String>,
    /// Uptime in seconds.
    #[serde(default, deserialize_with = "lenient::u64_opt")]
    pub uptime: Option<u64>,
    /// Memory.
    #[serde(default)]
    pub memory: Option<NodeMemory>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// `running` or `stopped`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CtRunState {
    /// Running.
    Running,
    /// Stopped.
    Stopped,
}

/// One CT of `GET /nodes/{node}/lxc`, or `GET .../status/current`.
#[derive(Debug, Clone, Deserialize)]
pub struct CtStatus {
    /// The CT ID.
    #[serde(deserialize_with = "lenient::u32")]
    pub vmid: u32,
    /// Run state.
    pub status: CtRunState,
    /// Host name.
    #[serde(default)]
    pub name: Option<String>,
    /// Lock (`create`, `backup`, ...), when set.
    #[serde(default)]
    pub lock: Option<String>,
    /// Tags (`;`-separated).
    #[serde(default)]
    pub tags: Option<String>,
    /// Template flag.
    #[serde(default, deserialize_with = "lenient::bool")]
    pub template: bool,
    /// Uptime in seconds.
    #[serde(default, deserialize_with = "lenient::u64_opt")]
    pub uptime: Option<u64>,
    /// Memory limit in bytes.
    #[serde(default, deserialize_with = "lenient::u64_opt")]
    pub maxmem: Option<u64>,
    /// PID of the CT's init (status/current, when running).
    #[serde(default, deserialize_with = "lenient::u32_opt")]
    pub pid: Option<u32>,
}

impl CtStatus {
    /// Whether it runs.
    pub fn is_running(&self) -> bool {
        self.status == CtRunState::Running
    }
}

/// `GET /nodes/{node}/lxc/{vmid}/config`: the config with its digest. Values are kept as
/// Proxmox sends them; typed accessors read the common keys.
#[derive(Debug, Clone, Deserialize)]
pub struct CtConfig {
    /// SHA-1 of the config file; pass it to a config update to detect concurrent changes.
    pub digest: String,
    /// Raw `lxc.*` keys, in order.
    #[serde(default)]
    pub lxc: Vec<(String, String)>,
    /// All other keys.
    #[serde(flatten)]
    pub options: BTreeMap<String, Value>,
}

impl CtConfig {
    /// A key's value as text (numbers and booleans rendered as Proxmox writes them).
    pub fn get(&self, key: &str) -> Option<String> {
        self.options.get(key).map(|v| match v {
            Value::String(s) => s.clone(),
            Value::Bool(b) => (if *b { "1" } else { "0" }).to_string(),
            other => other.to_string(),
        })
    }
    /// `hostname`.
    pub fn hostname(&self) -> Option<String> {
        self.get("hostname")
    }
    /// `lock`.
    pub fn lock(&self) -> Option<String> {
        self.get("lock")
    }
    /// `memory` in MiB.
    pub fn memory_mib(&self) -> Option<u64> {
        self.get("memory").and_then(|v| v.parse().ok())
    }
    /// `tags`, split.
    pub fn tags(&self) -> Vec<String> {
        self.get("tags")
            .map(|t| {
                t.split([';', ',', ' '])
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    }
    /// `description`.
    pub fn description(&self) -> Option<String> {
        self.get("description")
    }
}

/// `GET /nodes/{node}/tasks/{upid}/status`.
#[derive(Debug, Clone, Deserialize)]
pub struct TaskStatus {
    /// The task.
    pub upid: String,
    /// `running` or `stopped`.
    pub status: String,
    /// When stopped: `OK`, `WARNINGS: n`, or the error message.
    #[serde(default)]
    pub exitstatus: Option<String>,
    /// Task type (`vzcreate`, `vzstart`, ...).
    #[serde(rename = "type")]
    pub kind: String,
    /// The object (VMID).
    pub id: String,
    /// Who started it.
    pub user: String,
    /// Node.
    pub node: String,
    /// Worker PID.
    #[serde(deserialize_with = "lenient::u32")]
    pub pid: u32,
    /// Start time (Unix seconds).
    #[serde(default, deserialize_with = "lenient::u64_opt")]
    pub starttime: Option<u64>,
}

impl TaskStatus {
    /// Whether the task ended.
    pub fn is_stopped(&self) -> bool {
        self.status == "stopped"
    }
}

/// One line of `GET /nodes/{node}/tasks/{upid}/log`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct TaskLogLine {
    /// Line number (from 1).
    #[serde(deserialize_with = "lenient::u32")]
    pub n: u32,
    /// Text.
    pub t: String,
}

/// Answer of `POST /access/ticket`.
#[derive(Deserialize)]
pub(crate) struct TicketResponse {
    pub username: String,
    pub ticket: Option<String>,
    #[serde(rename = "CSRFPreventionToken")]
    pub csrf: Option<String>,
}

/// A backup job, as `GET /cluster/backup` lists it (`/etc/pve/jobs.cfg`).
#[derive(Debug, Clone, Deserialize)]
pub struct BackupJob {
    /// Job ID.
    pub id: String,
    /// Whether the job runs (default: yes).
    #[serde(default, deserialize_with = "lenient::bool_opt")]
    pub enabled: Option<bool>,
    /// Back up every guest (but `exclude`).
    #[serde(default, deserialize_with = "lenient::bool")]
    pub all: bool,
    /// VMIDs not backed up (a `pve-vmid-list`: single IDs, no ranges).
    #[serde(default)]
    pub exclude: Option<String>,
    /// Back up the members of this pool.
    #[serde(default)]
    pub pool: Option<String>,
    /// Back up these VMIDs.
    #[serde(default)]
    pub vmid: Option<String>,
    /// Only guests on this node.
    #[serde(default)]
    pub node: Option<String>,
    /// When it runs.
    #[serde(default)]
    pub schedule: Option<String>,
}

impl BackupJob {
    /// How many VMIDs of `low..=high` this job backs up when they are guests on `node` in no
    /// pool, after pve-manager `PVE::VZDump::get_included_guests`: a pool selects its members
    /// only, else a `vmid` list those IDs, else `all` every guest but `exclude` (which alone
    /// implies `all`, `verify_vzdump_parameters`); `node` restricts it to that node's guests.
    pub fn covered_in_range(&self, node: &str, low: u32, high: u32) -> u64 {
        if self.enabled == Some(false) || self.node.as_deref().is_some_and(|n| n != node) {
            return 0;
        }
        let in_range = |list: &Option<String>| -> std::collections::BTreeSet<u32> {
            list.as_deref()
                .unwrap_or("")
                // PVE::Tools::split_list.
                .split(|c: char| c == '\0' || c == ',' || c == ';' || c.is_whitespace())
                .filter_map(|id| id.parse::<u32>().ok())
                .filter(|id| (low..=high).contains(id))
                .collect()
        };
        if self.pool.as_deref().is_some_and(|p| !p.is_empty()) {
            return 0;
        }
        if self.vmid.as_deref().is_some_and(|v| !v.is_empty()) {
            return in_range(&self.vmid).len() as u64;
        }
        if self.all || self.exclude.is_some() {
            let size = u64::from(high.saturating_sub(low)) + 1;
            return size - in_range(&self.exclude).len() as u64;
        }
        0
    }
}

#[cfg(test)]
mod backup_job_tests {
    use super::*;

    fn job(v: serde_json::Value) -> BackupJob {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn selection_follows_vzdump() {
        let all = job(serde_json::json!({"id": "b1", "all": 1}));
        assert_eq!(all.covered_in_range("pve", 900, 909), 10);
        let excl = job(serde_json::json!({"id": "b2", "exclude": "900,901;902 903"}));
        assert_eq!(excl.covered_in_range("pve", 900, 903), 0);
        assert_eq!(excl.covered_in_range("pve", 900, 904), 1);
        let pool = job(serde_json::json!({"id": "b3", "pool": "prod", "all": 0}));
        assert_eq!(pool.covered_in_range("pve", 900, 909), 0);
        let ids = job(serde_json::json!({"id": "b4", "vmid": "100,905"}));
        assert_eq!(ids.covered_in_range("pve", 900, 909), 1);
        let other_node = job(serde_json::json!({"id": "b5", "all": 1, "node": "pve2"}));
        assert_eq!(other_node.covered_in_range("pve", 900, 909), 0);
        let disabled = job(serde_json::json!({"id": "b6", "all": 1, "enabled": 0}));
        assert_eq!(disabled.covered_in_range("pve", 900, 909), 0);
    }
}
