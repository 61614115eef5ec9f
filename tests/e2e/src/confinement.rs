//! What a container's root can see of an exec while it is set up (issue 21; the
//! CVE-2016-9962 class runc closed): a scanner, run as the container's init, walks /proc over
//! and over while execs come and go, and notes every process outside its own cgroup and
//! every descriptor of the host's it can list (the helper's memfd, its socket or spec under
//! the shim's state directory). Under runc it notes nothing; an exec's helper that sets up
//! before it is in the container's cgroups, or dumpable, shows up here.

use anyhow::{ensure, Result};

use crate::Containerd;

/// The scanner (busybox sh), as `sh -c SCANNER`: it writes /tmp/ready once it scans, stops
/// when /tmp/stop appears, leaves what it saw in /tmp/scan and its round count in
/// /tmp/rounds, and stays (as PID 1, its exit would end the execs that read the report).
/// A line of /proc/PID/cgroup counts when it is not one of the scanner's own, except a v1
/// line of "/": the kernel shows an exiting task's v1 cgroups as "/" (kernel/cgroup/
/// cgroup.c, `proc_cgroup_show`), which every exec that ends does for a moment; its v2 line
/// still tells where it is.
pub const SCANNER: &str = r#"nl='
'; own="$nl$(cat /proc/self/cgroup)$nl"; n=0; : > /tmp/scan; touch /tmp/ready
while [ ! -e /tmp/stop ]; do
  n=$((n+1))
  for d in /proc/[0-9]*; do
    { while read -r l; do
      case "$own" in *"$nl$l$nl"*) continue ;; esac
      case "$l" in 0::*) ;; *:/) continue ;; esac
      echo "outside the container's cgroups: pid ${d#/proc/}: $l" >> /tmp/scan
    done < $d/cgroup; } 2>/dev/null
  done
  ls -l /proc/[0-9]*/fd/ 2>/dev/null |
    grep -E 'containerd-shim-proxmox-lxc|memfd:|exec-[0-9]+\.(json|sock)' |
    sed 's/^/a host descriptor listable: /' >> /tmp/scan
done
echo $n > /tmp/rounds; exec sleep 1000"#;

/// What the scanner saw during the execs.
pub struct ScanReport {
    /// How often it walked /proc (shows it was scanning all along).
    pub rounds: u64,
    /// One line per sighting; empty when every exec was confined from the start.
    pub seen: Vec<String>,
}

/// Runs `execs` execs of `true` in container `id`, whose init is [`SCANNER`], then stops the
/// scanner and returns what it saw (each distinct line once).
pub fn exec_while_scanning(cd: &Containerd, id: &str, execs: usize) -> Result<ScanReport> {
    let exec = |exec_id: &str, script: &str| {
        cd.ctr_ok(&["task", "exec", "--exec-id", exec_id, id, "sh", "-c", script])
    };
    exec("scan-ready", "until [ -e /tmp/ready ]; do sleep 0.05; done")?;
    for n in 0..execs {
        exec(&format!("scan-{n}"), "true")?;
    }
    let out = exec(
        "scan-end",
        "touch /tmp/stop; until [ -e /tmp/rounds ]; do sleep 0.05; done; \
         cat /tmp/rounds; sort -u /tmp/scan",
    )?;
    let text = out.stdout_str();
    let mut lines = text.lines();
    let rounds = lines.next().and_then(|l| l.trim().parse().ok());
    ensure!(rounds.is_some(), "the scanner's report: {text:?}");
    Ok(ScanReport {
        rounds: rounds.unwrap_or_default(),
        seen: lines.map(str::to_string).collect(),
    })
}
