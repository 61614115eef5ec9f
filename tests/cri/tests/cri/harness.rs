//! What every case shares: the local registry and one CRI environment per containerd and
//! driver (started on first use, torn down at the end), and where a container shows on the node.

// What every case module uses (each imports `crate::harness::*`).
pub use std::collections::{BTreeMap, HashMap};
pub use std::path::{Path, PathBuf};
pub use std::time::{Duration, Instant};

pub use anyhow::{anyhow, bail, ensure, Context, Result};
pub use cri::client::{self, container_config, ns, pod_config, res, sec, state, v1, Cri};
pub use cri::env::CriEnv;
pub use cri::registry::APP_GREETING;

pub use crate::node::*;
pub use crate::pod::*;
pub(crate) use crate::pve;

use std::sync::{Arc, Mutex, OnceLock};

use cri::env::{ExtraRuntime, ShimOptions};
use cri::registry::{Images, Registry};
use e2e::ContainerdVersion;

pub struct Shared {
    pub registry: Registry,
    pub images: Images,
}

pub static SHARED: OnceLock<std::result::Result<Shared, String>> = OnceLock::new();

pub fn shared() -> Result<&'static Shared> {
    SHARED
        .get_or_init(|| {
            let dir = cri::env::work_base().join(format!("registry-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            let registry = Registry::start(&dir).map_err(|e| format!("{e:#}"))?;
            let images = registry.push_test_images().map_err(|e| format!("{e:#}"))?;
            Ok(Shared { registry, images })
        })
        .as_ref()
        .map_err(|e| anyhow!("local registry: {e}"))
}

pub type Envs = Mutex<HashMap<String, std::result::Result<Arc<CriEnv>, String>>>;

pub fn envs() -> &'static Envs {
    static ENVS: OnceLock<Envs> = OnceLock::new();
    ENVS.get_or_init(Default::default)
}

/// This shim as a runtime handler without runtime options (its host config file, or none:
/// the default lxcpath).
pub const PLAIN_HANDLER: &str = "proxmox-lxc-plain";

/// The node driver a set of cases runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Driver {
    Lxc,
    Pve,
}

/// The end of the label of the environment that runs the `pve` driver (`c1.6pve`).
pub const PVE_LABEL_SUFFIX: &str = "pve";

pub fn driver_of(env: &CriEnv) -> Driver {
    if env.label.ends_with(PVE_LABEL_SUFFIX) {
        Driver::Pve
    } else {
        Driver::Lxc
    }
}

/// The name the case's tests carry for this environment (`containerd-1.7-pve`).
pub fn test_prefix(env: &CriEnv) -> String {
    match driver_of(env) {
        Driver::Lxc => format!("containerd-{}", env.version.name),
        Driver::Pve => format!("containerd-{}-pve", env.version.name),
    }
}

/// The shared environment of a containerd version and driver, started on first use, with the
/// test images pulled through CRI.
pub fn env_for(version: &ContainerdVersion, driver: Driver) -> Result<Arc<CriEnv>> {
    let shared = shared()?;
    let mut map = envs().lock().unwrap_or_else(|e| e.into_inner());
    let label = match driver {
        Driver::Lxc => format!("c{}", version.name),
        Driver::Pve => format!("c{}{PVE_LABEL_SUFFIX}", version.name),
    };
    let entry = map.entry(label.clone()).or_insert_with(|| {
        let use_config_path = version.name == "1.6";
        // This shim without runtime options too: containerd 2.x starts a hostUsers: false
        // container only with runc's options or none (see case_user_namespaces).
        let extra = match driver {
            Driver::Lxc => vec![ExtraRuntime {
                handler: PLAIN_HANDLER.into(),
                runtime_type: "io.containerd.proxmox-lxc.v2".into(),
                shim_options: false,
            }],
            Driver::Pve => Vec::new(),
        };
        CriEnv::start_with_runtimes(
            version.clone(),
            &label,
            &shared.images,
            &shared.registry.host,
            |work| {
                let lxcpath = work.join("lxc");
                if driver == Driver::Pve {
                    let file = pve::start_node(work, &lxcpath)?;
                    return Ok((ShimOptions::ConfigPath(file.display().to_string()), lxcpath));
                }
                let shim_config = format!("[lxc]\nlxcpath = \"{}\"\n", lxcpath.display());
                if use_config_path {
                    let file = work.join("shim.toml");
                    std::fs::write(&file, &shim_config)?;
                    Ok((ShimOptions::ConfigPath(file.display().to_string()), lxcpath))
                } else {
                    Ok((ShimOptions::Inline(shim_config), lxcpath))
                }
            },
            &extra,
        )
        .and_then(|env| {
            let mut c = env.cri()?;
            for image in [&env.images.busybox, &env.images.app] {
                env.block_on(c.pull(image))?;
            }
            Ok(Arc::new(env))
        })
        .map_err(|e| format!("{e:#}"))
    });
    entry
        .clone()
        .map_err(|e| anyhow!("containerd {label}: {e}"))
}

/// Whether container (or pod sandbox) `id` exists on the node: an LXC container in the
/// lxcpath from the runtime options, or a CT carrying its tag.
pub fn container_exists(env: &CriEnv, id: &str) -> bool {
    match driver_of(env) {
        Driver::Lxc => env.lxc_dir().join(id).is_dir(),
        Driver::Pve => !pve::cts_of(id).is_empty(),
    }
}
