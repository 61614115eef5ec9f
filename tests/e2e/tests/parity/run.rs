//! Running a case: its container ids, one run on a runtime, a retry where the host was at fault,
//! and the trial comparing runc's transcript with the shim's.

use crate::harness::*;

/// A container id unique to this run, version, case and role: `role` tells the runc-only
/// trial ("runc"), the shim trial's runc reference ("ref") and the shim itself ("lxc") apart,
/// since the runc trial and the shim trial of one case may run at the same time.
pub fn container_id(version: &ContainerdVersion, case: &str, role: &str) -> String {
    format!(
        "e{}-{}-{}-{role}",
        std::process::id(),
        version.name.replace('.', ""),
        case.replace('_', "-"),
    )
}

/// Runs a case under one runtime, then removes the container and checks nothing is left.
pub fn run_case_once(
    role: &str,
    version: &ContainerdVersion,
    c: &Case,
    runtime: &'static str,
    cd: &Containerd,
) -> Result<(Transcript, Transcript)> {
    let id = container_id(version, c.name, role);
    let scratch = work_base()
        .join(format!("scratch-{}", std::process::id()))
        .join(&id);
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch)?;
    let ctx = Ctx {
        cd,
        runtime,
        id: id.clone(),
        scratch: scratch.clone(),
    };
    let result = (c.func)(&ctx);
    cd.force_remove(&id);
    let clean = assert_nothing_left(cd, &id);
    let _ = std::fs::remove_dir_all(&scratch);
    let t = result?;
    clean?;
    let normalized = t.normalized(&ctx);
    Ok((t, normalized))
}

pub fn run_on(
    role: &str,
    version: &ContainerdVersion,
    c: &Case,
    runtime: &'static str,
) -> Result<Transcript> {
    if c.private_containerd {
        // Short: the socket path must stay under the unix limit.
        let short_case: String = c.name.replace('_', "-").chars().take(16).collect();
        let label = format!("c{}-{short_case}-{role}", version.name);
        let private = Private::start(version, &label)?;
        let result = run_case_once(role, version, c, runtime, &private.cd);
        let finish = private.finish();
        let (_, n) = result?;
        finish?;
        Ok(n)
    } else {
        let cd = shared(version)?;
        Ok(run_case_once(role, version, c, runtime, &cd)?.1)
    }
}

/// Runs a case, and once more if it fails: under load, ctr itself sometimes loses a short
/// workload's output (its client cancels the fifo copy when the exit arrives first), under
/// runc as under any shim. A retry is printed with the first failure, so a flaky case shows;
/// a case that fails twice fails, and so does a shim run that timed out.
pub fn run_retrying(
    role: &str,
    version: &ContainerdVersion,
    c: &Case,
    runtime: &'static str,
) -> Result<Transcript> {
    match run_on(role, version, c, runtime) {
        Ok(t) => Ok(t),
        // A hang is not that race: runc never showed one here (ctr's output loss shows as
        // missing output), so under the shim it fails at once.
        Err(first) if runtime == SHIM_RUNTIME && format!("{first:#}").starts_with("timeout") => {
            Err(first.context("no retry: the shim hung (runc never does here)"))
        }
        Err(first) => {
            let first_line = format!("{first:#}");
            let first_line = first_line.lines().next().unwrap_or("");
            eprintln!(
                "e2e: RETRY containerd-{}::{}::{} ({role}) after: {first_line}",
                version.name, runtime, c.name
            );
            run_on(&format!("{role}2"), version, c, runtime)
                .map_err(|e| anyhow!("{e:#}\n(failed twice; the first time: {first_line})"))
        }
    }
}

pub fn run_trial(version: &ContainerdVersion, c: &Case, runtime: &'static str) -> Result<()> {
    if runtime == RUNC_RUNTIME {
        run_retrying("runc", version, c, RUNC_RUNTIME)?;
        return Ok(());
    }
    let dir = paths::shim_dir();
    if paths::shim_binary(&dir).is_none() {
        bail!(
            "shim binary not built: {} is missing (cargo build -p containerd-shim-proxmox-lxc, or set E2E_SHIM_DIR)",
            dir.join(e2e::SHIM_BINARY).display()
        );
    }
    let reference =
        run_retrying("ref", version, c, RUNC_RUNTIME).context("the runc reference run failed")?;
    let shim = run_retrying("lxc", version, c, SHIM_RUNTIME).map_err(|e| {
        anyhow!(
            "{e:#}\n-- runc's transcript for comparison:\n{}",
            reference.render()
        )
    })?;
    if c.compare && shim != reference {
        bail!(
            "the shim differs from runc\n-- runc:\n{}\n-- proxmox-lxc:\n{}",
            reference.render(),
            shim.render()
        );
    }
    Ok(())
}
