//! INTERIM: a minimal spec -> LXC config translation used only until the `lxc-config` crate
//! lands; it lets the shim's lifecycle be exercised. Replaced by `lxc_config::plan`.

use std::path::Path;

use ctinit_proto::{CapabilitySets, InitSpec, Rlimit};
use oci_spec::runtime::{Process, Spec};

use crate::errors::{Result, ShimError};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CgroupMode {
    Legacy,
    Unified,
}

pub struct NodeFacts {
    pub cgroup: CgroupMode,
    pub lxc_version: (u32, u32, u32),
}

pub struct PlanRequest<'a> {
    pub name: &'a str,
    pub spec: &'a Spec,
    pub bundle: &'a Path,
    pub state_dir: &'a Path,
    pub facts: &'a NodeFacts,
}

pub struct Ignored {
    pub field: String,
    pub reason: String,
}

pub struct ContainerPlan {
    pub init: InitSpec,
    pub ignored: Vec<Ignored>,
    config: String,
}

impl ContainerPlan {
    pub fn render_lxc(&self) -> String {
        self.config.clone()
    }
}

pub fn init_spec_for(p: &Process) -> Result<InitSpec> {
    let caps = p.capabilities().as_ref().map(|c| {
        let names = |s: &Option<oci_spec::runtime::Capabilities>| {
            s.as_ref()
                .map(|set| {
                    set.iter()
                        .map(|c| format!("CAP_{}", c.to_string().trim_start_matches("CAP_")))
                        .collect()
                })
                .unwrap_or_default()
        };
        CapabilitySets {
            bounding: names(c.bounding()),
            effective: names(c.effective()),
            inheritable: names(c.inheritable()),
            permitted: names(c.permitted()),
            ambient: names(c.ambient()),
        }
    });
    Ok(InitSpec {
        args: p.args().clone().unwrap_or_default(),
        env: p.env().clone().unwrap_or_default(),
        cwd: p.cwd().display().to_string(),
        uid: p.user().uid(),
        gid: p.user().gid(),
        additional_gids: p.user().additional_gids().clone().unwrap_or_default(),
        umask: p.user().umask(),
        capabilities: caps,
        rlimits: p
            .rlimits()
            .clone()
            .unwrap_or_default()
            .iter()
            .map(|r| Rlimit {
                kind: serde_json::to_value(r.typ())
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default(),
                soft: r.soft(),
                hard: r.hard(),
            })
            .collect(),
        no_new_privileges: p.no_new_privileges().unwrap_or(false),
        oom_score_adj: p.oom_score_adj(),
        terminal: p.terminal().unwrap_or(false),
        console_size: None,
        stdio: Default::default(),
    })
}

pub fn plan(req: &PlanRequest<'_>) -> Result<ContainerPlan> {
    let spec = req.spec;
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| ShimError::InvalidArgument("process: missing".into()))?;
    let init = init_spec_for(process)?;
    let root = spec
        .root()
        .as_ref()
        .map(|r| r.path().clone())
        .unwrap_or_else(|| "rootfs".into());
    let root = if root.is_absolute() {
        root
    } else {
        req.bundle.join(root)
    };
    let mut c = String::new();
    let mut line = |k: &str, v: &str| {
        c.push_str(k);
        c.push_str(" = ");
        c.push_str(v);
        c.push('\n');
    };
    line(
        "lxc.uts.name",
        spec.hostname().as_deref().unwrap_or(req.name),
    );
    line("lxc.rootfs.path", &format!("dir:{}", root.display()));
    line("lxc.net.0.type", "empty");
    line("lxc.apparmor.profile", "unconfined");
    line("lxc.console.path", "none");
    line("lxc.tty.max", "0");
    line("lxc.pty.max", "1024");
    line("lxc.autodev", "1");
    line("lxc.mount.auto", "proc:rw sys:rw");
    line(
        "lxc.mount.entry",
        &format!(
            "{} dev/.ctinit none bind,ro,create=dir 0 0",
            req.state_dir.display()
        ),
    );
    line(
        "lxc.init.cmd",
        &format!(
            "{d}/{} {d}/{} {d}/{}",
            ctinit_proto::HELPER_NAME,
            ctinit_proto::INIT_SOCKET_NAME,
            ctinit_proto::INIT_SPEC_NAME,
            d = ctinit_proto::CONTAINER_DIR
        ),
    );
    Ok(ContainerPlan {
        init,
        ignored: vec![],
        config: c,
    })
}
