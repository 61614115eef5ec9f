//! OCI seccomp profile -> LXC seccomp policy, version 2.
//!
//! LXC's format: line 1 `2`, line 2 `allowlist <default action>` or `denylist`, then one rule per
//! line: `syscall action [index,value,op(,mask)]...` (all argument comparisons of a line must
//! match, as in OCI). On amd64 rules without an architecture section apply to all three ABIs
//! (x86_64, i386, x32), which is what OCI's usual `architectures` list asks for.

use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator};

use crate::{Ignored, PlanError};

const F: &str = "linux.seccomp";
const EPERM: u32 = 1;

fn action(
    field: &str,
    a: LinuxSeccompAction,
    errno: Option<u32>,
    ignored: &mut Vec<Ignored>,
) -> Result<String, PlanError> {
    Ok(match a {
        LinuxSeccompAction::ScmpActAllow => "allow".into(),
        LinuxSeccompAction::ScmpActErrno => format!("errno {}", errno.unwrap_or(EPERM)),
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => "kill".into(),
        LinuxSeccompAction::ScmpActKillProcess => {
            ignored.push(Ignored::new(
                field,
                "SCMP_ACT_KILL_PROCESS is applied as SCMP_ACT_KILL (LXC 5 kills the thread)",
            ));
            "kill".into()
        }
        LinuxSeccompAction::ScmpActTrap => "trap".into(),
        LinuxSeccompAction::ScmpActLog => {
            ignored.push(Ignored::new(
                field,
                "SCMP_ACT_LOG is applied as SCMP_ACT_ALLOW (LXC 5 has no log action)",
            ));
            "allow".into()
        }
        LinuxSeccompAction::ScmpActTrace => {
            return Err(PlanError::unsupported(
                field,
                "SCMP_ACT_TRACE needs a tracer, which LXC does not provide",
            ))
        }
        LinuxSeccompAction::ScmpActNotify => {
            return Err(PlanError::unsupported(
                field,
                "SCMP_ACT_NOTIFY needs a seccomp agent (listenerPath), not supported",
            ))
        }
    })
}

fn op(o: LinuxSeccompOperator) -> &'static str {
    match o {
        LinuxSeccompOperator::ScmpCmpNe => "SCMP_CMP_NE",
        LinuxSeccompOperator::ScmpCmpLt => "SCMP_CMP_LT",
        LinuxSeccompOperator::ScmpCmpLe => "SCMP_CMP_LE",
        LinuxSeccompOperator::ScmpCmpEq => "SCMP_CMP_EQ",
        LinuxSeccompOperator::ScmpCmpGe => "SCMP_CMP_GE",
        LinuxSeccompOperator::ScmpCmpGt => "SCMP_CMP_GT",
        LinuxSeccompOperator::ScmpCmpMaskedEq => "SCMP_CMP_MASKED_EQ",
    }
}

fn syscall_name(field: &str, name: &str) -> Result<String, PlanError> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(PlanError::invalid(
            field,
            format!("{name:?} is not a system call name"),
        ));
    }
    Ok(name.to_string())
}

/// The policy text for `lxc.seccomp.profile`.
pub(crate) fn profile(s: &LinuxSeccomp, ignored: &mut Vec<Ignored>) -> Result<String, PlanError> {
    if s.listener_path().is_some() {
        return Err(PlanError::unsupported(
            &format!("{F}.listenerPath"),
            "seccomp agents are not supported",
        ));
    }
    if s.listener_metadata().is_some() {
        ignored.push(Ignored::new(
            &format!("{F}.listenerMetadata"),
            "only meaningful with listenerPath",
        ));
    }
    if s.flags().as_ref().is_some_and(|f| !f.is_empty()) {
        ignored.push(Ignored::new(
            &format!("{F}.flags"),
            "LXC 5 loads filters with its own flags (TSYNC is implied for a single-threaded init)",
        ));
    }
    if s.architectures().as_ref().is_some_and(|a| !a.is_empty()) {
        ignored.push(Ignored::new(
            &format!("{F}.architectures"),
            "LXC adds the native ABI and its compat ABIs (amd64: x86_64, i386, x32) itself",
        ));
    }
    let default = action(
        &format!("{F}.defaultAction"),
        s.default_action(),
        s.default_errno_ret(),
        ignored,
    )?;
    let mut out = String::from("2\n");
    if default == "allow" {
        out.push_str("denylist\n");
    } else {
        out.push_str(&format!("allowlist {default}\n"));
    }
    for (i, rule) in s.syscalls().iter().flatten().enumerate() {
        let rf = format!("{F}.syscalls[{i}]");
        let act = action(
            &format!("{rf}.action"),
            rule.action(),
            rule.errno_ret(),
            ignored,
        )?;
        if act == default {
            // libseccomp refuses a rule whose action is the default; runc skips them too.
            continue;
        }
        let mut args = String::new();
        for (j, a) in rule.args().iter().flatten().enumerate() {
            if a.index() > 5 {
                return Err(PlanError::invalid(
                    &format!("{rf}.args[{j}].index"),
                    "must be 0..5",
                ));
            }
            // LXC passes [index, v, op, m] to SCMP_CMP as (index, op, v) and, for MASKED_EQ, as
            // (index, op, m, v); OCI's (value, valueTwo) is (mask, datum) there.
            let o = a.op();
            let text = if o == LinuxSeccompOperator::ScmpCmpMaskedEq {
                format!(
                    " [{},{},{},{}]",
                    a.index(),
                    a.value_two().unwrap_or(0),
                    op(o),
                    a.value()
                )
            } else {
                format!(" [{},{},{}]", a.index(), a.value(), op(o))
            };
            args.push_str(&text);
        }
        for (j, name) in rule.names().iter().enumerate() {
            let n = syscall_name(&format!("{rf}.names[{j}]"), name)?;
            out.push_str(&format!("{n} {act}{args}\n"));
        }
    }
    Ok(out)
}
