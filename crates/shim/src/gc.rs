//! `containerd-shim-proxmox-lxc-v2 gc [--config FILE] [--dry-run]`: removes the Proxmox CTs
//! this shim made whose container is gone.
//!
//! A CT's config lives in `/etc/pve` (cluster-wide, persistent) while the container's bundle and
//! the shim's state directory live in `/run`: after a node reboot the CTs keep their VMIDs and
//! show in the GUI, but containerd has forgotten their tasks and no shim runs for them, so
//! nothing would remove them. `gc` (run at boot by `packaging/containerd-shim-proxmox-lxc-gc.service`)
//! destroys exactly the CTs that
//!
//! - are on this node and in `vmid_range`,
//! - carry this shim's container tag (`<tag_prefix>-cid-…`),
//! - are stopped, and
//! - whose `lxc.include` (the shim's include file in the container's state directory) no
//!   longer exists: the container is gone (a live container always has it; `shim delete`
//!   removes it only after the CT).
//!
//! Anything else is kept and said why. Destroy is Proxmox's own (`DELETE /nodes/N/lxc/VMID`,
//! `purge=1`, no `force`: a CT that started meanwhile is refused, not stopped).

use std::path::{Path, PathBuf};
use std::time::Duration;

use pve_client::{DestroyOptions, ResourceType, WaitOptions};

use crate::config::PveSection;
use crate::errors::Result;
use crate::pve_api::{client_for, pve_error};

/// What `gc` did with each CT it looked at.
#[derive(Debug, Default)]
pub struct GcReport {
    /// CTs destroyed (or, on a dry run, that would be).
    pub destroyed: Vec<u32>,
    /// CTs of this shim that were kept, and why.
    pub kept: Vec<(u32, String)>,
    /// CTs whose destroy failed, and the error.
    pub failed: Vec<(u32, String)>,
}

/// The `lxc.include` line of a CT config (the driver writes exactly one).
fn include_of(config: &str) -> Option<PathBuf> {
    config.lines().find_map(|line| {
        let rest = line.strip_prefix("lxc.include")?.trim_start();
        let value = rest.strip_prefix(':').or_else(|| rest.strip_prefix('='))?;
        Some(PathBuf::from(value.trim()))
    })
}

/// Why a CT of this shim must stay, or None when its container is gone.
fn reason_to_keep(config_dir: &Path, vmid: u32, status: Option<&str>) -> Option<String> {
    if status != Some("stopped") {
        return Some(format!("status {}", status.unwrap_or("unknown")));
    }
    let path = config_dir.join(format!("{vmid}.conf"));
    let config = match std::fs::read_to_string(&path) {
        Ok(c) => c,
        Err(e) => return Some(format!("cannot read {}: {e}", path.display())),
    };
    match include_of(&config) {
        None => Some("no lxc.include: not made by this shim's driver".into()),
        Some(include) if include.exists() => {
            Some(format!("its container exists ({})", include.display()))
        }
        Some(_) => None,
    }
}

/// Finds and (unless `dry_run`) destroys the stale CTs.
pub async fn collect(settings: &PveSection, dry_run: bool) -> Result<GcReport> {
    let client = client_for(settings)?;
    let tag_start = format!("{}-cid-", settings.tag_prefix);
    let [low, high] = settings.vmid_range;
    let resources = client
        .cluster_resources(Some(ResourceType::Vm))
        .await
        .map_err(pve_error)?;
    let mut report = GcReport::default();
    for r in resources {
        let Some(vmid) = r.vmid else { continue };
        let ours = r.node.as_deref() == Some(settings.node.as_str())
            && (low..=high).contains(&vmid)
            && r.tags
                .as_deref()
                .is_some_and(|t| t.split([';', ',', ' ']).any(|x| x.starts_with(&tag_start)));
        if !ours {
            continue;
        }
        if let Some(why) = reason_to_keep(&settings.config_dir, vmid, r.status.as_deref()) {
            report.kept.push((vmid, why));
            continue;
        }
        if dry_run {
            report.destroyed.push(vmid);
            continue;
        }
        let options = DestroyOptions {
            purge: true,
            destroy_unreferenced_disks: false,
            force: false,
        };
        let wait = WaitOptions {
            timeout: Duration::from_secs(settings.task_timeout.max(1)),
            accept_warnings: true,
            ..WaitOptions::default()
        };
        match client
            .run_task(&wait, || client.destroy_ct(&settings.node, vmid, &options))
            .await
        {
            Ok(_) => report.destroyed.push(vmid),
            Err(e) if e.is_not_found() => {}
            Err(e) => report.failed.push((vmid, pve_error(e).to_string())),
        }
    }
    Ok(report)
}

/// Loads `path` (or the host configuration) and runs [`collect`]; the lines to print.
pub async fn run(path: Option<&Path>, dry_run: bool) -> Result<(Vec<String>, bool)> {
    let config = match path {
        Some(path) => crate::config::ShimConfig::load_file(path)?,
        None => crate::config::ShimConfig::load_host()?,
    };
    let Some(settings) = config.pve.clone() else {
        let origin = path.map_or_else(
            || "the host configuration".to_string(),
            |p| p.display().to_string(),
        );
        return Ok((
            vec![format!("{origin}: no [pve] section: nothing to collect")],
            true,
        ));
    };
    let report = collect(&settings, dry_run).await?;
    let mut lines = Vec::new();
    let verb = if dry_run {
        "would destroy"
    } else {
        "destroyed"
    };
    for vmid in &report.destroyed {
        lines.push(format!("{verb} CT {vmid}: its container is gone"));
    }
    for (vmid, why) in &report.kept {
        lines.push(format!("kept CT {vmid}: {why}"));
    }
    for (vmid, err) in &report.failed {
        lines.push(format!("FAILED to destroy CT {vmid}: {err}"));
    }
    Ok((lines, report.failed.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_include() {
        let conf = "arch: amd64\nlxc.init.cmd: /x\nlxc.include: /run/s/c1/pve-include.conf\n";
        assert_eq!(
            include_of(conf),
            Some(PathBuf::from("/run/s/c1/pve-include.conf"))
        );
        assert_eq!(include_of("lxc.include = /a\n"), Some(PathBuf::from("/a")));
        assert_eq!(include_of("arch: amd64\n"), None);
    }
}
