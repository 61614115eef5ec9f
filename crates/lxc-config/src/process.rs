//! `process` -> [`InitSpec`], the part the in-container helper applies.

use ctinit_proto::{CapabilitySets, ConsoleSize, InitSpec, Rlimit};
use oci_spec::runtime::{Capabilities, Capability, Process};

use crate::{Ignored, PlanError};

/// The capability name as the OCI spec spells it (`CAP_CHOWN`).
pub(crate) fn cap_name(cap: &Capability) -> String {
    // oci-spec serialises capabilities with their `CAP_` names; plain enum data cannot fail.
    match serde_json::to_value(cap) {
        Ok(serde_json::Value::String(s)) => s,
        _ => format!("CAP_{cap}"),
    }
}

/// Sorted names, so that rendered output does not depend on hash order.
pub(crate) fn cap_names(caps: &Option<Capabilities>) -> Vec<String> {
    let mut names: Vec<String> = caps.iter().flatten().map(cap_name).collect();
    names.sort();
    names
}

/// Builds the helper's spec from an OCI process (the container's or an exec's). Stdio flags are
/// left at their default: the shim sets them. Fields the helper does not apply are listed in
/// `ignored` (or rejected).
pub(crate) fn init_spec(
    process: &Process,
    ignored: &mut Vec<Ignored>,
) -> Result<InitSpec, PlanError> {
    let args = args(process)?;
    let env = env(process)?;
    let cwd = process
        .cwd()
        .to_str()
        .ok_or_else(|| PlanError::invalid("process.cwd", "is not valid UTF-8"))?
        .to_string();
    if !cwd.starts_with('/') || cwd.contains('\0') {
        return Err(PlanError::invalid(
            "process.cwd",
            "must be an absolute path without NUL",
        ));
    }
    let user = process.user();
    if user.username().is_some() {
        ignored.push(Ignored::new(
            "process.user.username",
            "Windows only; on Linux the numeric uid/gid are used",
        ));
    }
    let capabilities = process.capabilities().as_ref().map(|c| CapabilitySets {
        bounding: cap_names(c.bounding()),
        effective: cap_names(c.effective()),
        inheritable: cap_names(c.inheritable()),
        permitted: cap_names(c.permitted()),
        ambient: cap_names(c.ambient()),
    });
    let rlimits = rlimits(process)?;
    let console_size = console_size(process)?;
    // An empty profile means none, as in runc. The name travels as a JSON string and then into
    // "exec NAME" on /proc: no control characters, no surrounding whitespace.
    let apparmor_profile = match process.apparmor_profile().as_deref() {
        Some(p) if !p.is_empty() => Some(crate::text::value("process.apparmorProfile", p)?),
        _ => None,
    };
    reject_unsupported(process)?;
    Ok(InitSpec {
        args,
        env,
        cwd,
        uid: user.uid(),
        gid: user.gid(),
        additional_gids: user.additional_gids().clone().unwrap_or_default(),
        umask: user.umask(),
        capabilities,
        rlimits,
        no_new_privileges: process.no_new_privileges().unwrap_or(false),
        oom_score_adj: process.oom_score_adj(),
        terminal: process.terminal().unwrap_or(false),
        console_size,
        stdio: Default::default(),
        apparmor_profile,
    })
}

/// `process.args`: not empty, no NUL (they become C strings); `commandLine` is Windows only.
fn args(process: &Process) -> Result<Vec<String>, PlanError> {
    let args = process.args().clone().unwrap_or_default();
    if args.is_empty() {
        return Err(PlanError::invalid("process.args", "must not be empty"));
    }
    if let Some(i) = args.iter().position(|a| a.contains('\0')) {
        return Err(PlanError::invalid(
            &format!("process.args[{i}]"),
            "contains a NUL byte",
        ));
    }
    if process.command_line().is_some() {
        return Err(PlanError::unsupported(
            "process.commandLine",
            "is for Windows containers",
        ));
    }
    Ok(args)
}

/// `process.env`: each `KEY=VALUE` with a non-empty key and no NUL.
fn env(process: &Process) -> Result<Vec<String>, PlanError> {
    let env = process.env().clone().unwrap_or_default();
    for (i, e) in env.iter().enumerate() {
        let field = format!("process.env[{i}]");
        if e.contains('\0') {
            return Err(PlanError::invalid(&field, "contains a NUL byte"));
        }
        match e.split_once('=') {
            Some((k, _)) if !k.is_empty() => {}
            _ => return Err(PlanError::invalid(&field, "is not KEY=VALUE")),
        }
    }
    Ok(env)
}

/// `process.rlimits`: soft at most hard, each type once.
fn rlimits(process: &Process) -> Result<Vec<Rlimit>, PlanError> {
    let mut rlimits = Vec::new();
    for (i, r) in process.rlimits().iter().flatten().enumerate() {
        if r.soft() > r.hard() {
            return Err(PlanError::invalid(
                &format!("process.rlimits[{i}]"),
                "soft limit is above the hard limit",
            ));
        }
        let kind = r.typ().to_string();
        if rlimits.iter().any(|x: &Rlimit| x.kind == kind) {
            return Err(PlanError::invalid(
                &format!("process.rlimits[{i}].type"),
                format!("{kind} is given twice"),
            ));
        }
        rlimits.push(Rlimit {
            kind,
            soft: r.soft(),
            hard: r.hard(),
        });
    }
    Ok(rlimits)
}

fn console_size(process: &Process) -> Result<Option<ConsoleSize>, PlanError> {
    let Some(b) = process.console_size() else {
        return Ok(None);
    };
    let side = |v: u64, field: &str| {
        u16::try_from(v).map_err(|_| PlanError::invalid(field, "is larger than 65535"))
    };
    Ok(Some(ConsoleSize {
        height: side(b.height(), "process.consoleSize.height")?,
        width: side(b.width(), "process.consoleSize.width")?,
    }))
}

/// The first of `checks` (present, field, reason) that is present, as an Unsupported error.
pub(crate) fn first_unsupported(checks: &[(bool, &str, &str)]) -> Result<(), PlanError> {
    match checks.iter().find(|(present, _, _)| *present) {
        Some((_, field, why)) => Err(PlanError::unsupported(field, *why)),
        None => Ok(()),
    }
}

/// Process fields the helper does not apply.
fn reject_unsupported(process: &Process) -> Result<(), PlanError> {
    first_unsupported(&[
        (
            process.io_priority().is_some(),
            "process.ioPriority",
            "the helper does not set I/O priorities",
        ),
        (
            process.scheduler().is_some(),
            "process.scheduler",
            "the helper does not set scheduling policies",
        ),
        (
            process.exec_cpu_affinity().is_some(),
            "process.execCPUAffinity",
            "the helper does not set CPU affinity",
        ),
    ])
}
