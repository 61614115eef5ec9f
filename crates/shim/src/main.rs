use std::io::Write;

use shim::{service::Service, RUNTIME_NAME};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // Operator subcommands first: their own `--help` and flags are theirs, not the shim's.
    match args.get(1).map(String::as_str) {
        Some(shim::host::mounts::tidy::SUBCOMMAND) => {
            // Internal: run by the shim itself, single-threaded so that it may enter a
            // container's mount namespace.
            if let Err(e) = shim::host::mounts::tidy::run(&args[2..]) {
                eprintln!("{e}");
                std::process::exit(1);
            }
            return;
        }
        Some("check") => std::process::exit(run_check(&args[2..])),
        Some("gc") => std::process::exit(run_gc(&args[2..])),
        _ => {}
    }
    // containerd and operators call `-v`/`-version` and `-info`; the shim framework does not
    // handle them, so answer before handing over.
    if args
        .iter()
        .skip(1)
        .any(|a| a == "-v" || a == "--v" || a == "-version" || a == "--version")
    {
        println!(
            "{}:\n  Version: {}\n  Runtime: {}",
            env!("CARGO_BIN_NAME"),
            env!("CARGO_PKG_VERSION"),
            RUNTIME_NAME
        );
        return;
    }
    if args
        .iter()
        .skip(1)
        .any(|a| a == "-h" || a == "--help" || a == "-help")
    {
        print!("{}", usage());
        return;
    }
    if args.iter().skip(1).any(|a| a == "-info" || a == "--info") {
        match shim::service::runtime_info() {
            Ok(bytes) => {
                let _ = std::io::stdout().write_all(&bytes);
            }
            Err(e) => {
                eprintln!("{RUNTIME_NAME}: info: {e}");
                std::process::exit(1);
            }
        }
        return;
    }
    if let Some(problem) = not_a_shim_invocation(&args[1..], std::env::var_os(TTRPC_ADDRESS_ENV)) {
        eprintln!("{}: {problem}", env!("CARGO_BIN_NAME"));
        std::process::exit(2);
    }
    // A containerd that goes away must not kill the shim through a write to a closed pipe.
    // SAFETY: SIG_IGN installs no handler code, and no other thread exists yet to race with.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    // glibc gives every thread that allocates its own malloc arena (up to 8 per core), each
    // keeping freed pages resident; the shim's work is a few small requests at a time, so one
    // arena is enough and saves that anonymous memory in every resident shim
    // (docs/benchmarks.md, "Where the memory goes").
    // SAFETY: called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
    // One worker thread: the shim serves one pod, its handlers wait on I/O, and blocking work
    // goes to `spawn_blocking` (whose threads exit when idle). Each further worker costs a
    // stack and per-thread buffers in every resident shim.
    // Threads of the blocking pool (file and cgroup work of create/start/delete) exit after
    // 1 s idle instead of tokio's 10 s: a shim is resident for its pod's whole life, and a
    // pool thread parked for nothing holds its stack pages there meanwhile.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_keep_alive(std::time::Duration::from_secs(1))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{RUNTIME_NAME}: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    runtime.block_on(containerd_shim::asynchronous::run::<Service>(
        RUNTIME_NAME,
        Some(shim::service::shim_config()),
    ));
}

/// Why `args` is not what containerd runs (`[flags] start`, `[flags] delete`, or the server
/// mode `start` spawns with `-socket`), in a sentence for the person who typed it; `None` when
/// it is, so the shim framework takes over. The framework itself would print only
/// `Env(NotPresent)` or a Debug-formatted `InvalidArgument(..)` for these.
fn not_a_shim_invocation(
    args: &[String],
    ttrpc_address: Option<std::ffi::OsString>,
) -> Option<String> {
    let see_help = format!("run `{} --help` for what it does", env!("CARGO_BIN_NAME"));
    // The framework's own parser (containerd-shim's `args::parse`), so that what passes here
    // is exactly what it accepts.
    let flags = match containerd_shim::parse(args) {
        Ok(flags) => flags,
        Err(e) => {
            let reason = match &e {
                containerd_shim::Error::InvalidArgument(m) => {
                    // go-flag names the flag with one dash whatever was typed.
                    match m.strip_prefix("flag provided but not defined: -") {
                        Some(name) => {
                            let typed = args
                                .iter()
                                .find(|a| a.trim_start_matches('-').split('=').next() == Some(name))
                                .map_or(name, |a| a.split('=').next().unwrap_or(a));
                            format!("unknown flag `{typed}`")
                        }
                        None => m.clone(),
                    }
                }
                other => other.to_string(),
            };
            return Some(format!(
                "{reason}; the flags are containerd's (-namespace, -id, -address, \
                 -publish-binary, -bundle, -socket, -debug); {see_help}"
            ));
        }
    };
    let serving = flags.action.is_empty() && !flags.socket.is_empty();
    match flags.action.as_str() {
        "start" | "delete" => {}
        "" if serving => {}
        "" => {
            return Some(format!(
                "no subcommand given. containerd runs this binary itself (with `start` or \
                 `delete`); to verify a node's setup run `{bin} check`, to remove CTs left \
                 after a reboot `{bin} gc`; {see_help}",
                bin = env!("CARGO_BIN_NAME")
            ))
        }
        other => {
            let known = ["check", "gc", "start", "delete"];
            let hint = known
                .iter()
                .find(|k| edit_distance(k, other) <= 2)
                .map(|k| format!(" (did you mean `{k}`?)"))
                .unwrap_or_default();
            return Some(format!(
                "unknown subcommand `{other}`{hint}; the subcommands are check, gc (for \
                 operators) and start, delete (run by containerd); {see_help}"
            ));
        }
    }
    if !matches!(ttrpc_address, Some(v) if !v.is_empty()) {
        return Some(format!(
            "{TTRPC_ADDRESS_ENV} is not set: containerd sets it when it runs the shim \
             (`start`, `delete`); these are not meant to be run by hand; {see_help}"
        ));
    }
    None
}

/// containerd's environment variable with its ttrpc address (containerd-shim `TTRPC_ADDRESS`).
const TTRPC_ADDRESS_ENV: &str = "TTRPC_ADDRESS";

/// Levenshtein distance, for "did you mean" on a misspelt subcommand.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// The arguments of an operator subcommand (`check`, `gc`).
#[derive(Debug, Default)]
struct SubcommandArgs {
    /// `--config FILE`, when given (otherwise the host configuration).
    config: Option<std::path::PathBuf>,
    /// The value options of `options` that were given, by name.
    values: Vec<(String, String)>,
    /// The plain flags of `flags` that were given.
    flags: Vec<String>,
}

/// What an operator subcommand accepts, for parsing and for its `--help`.
struct Subcommand {
    name: &'static str,
    /// Flags without a value, e.g. `--dry-run`.
    flags: &'static [&'static str],
    /// Options with a value (beside `--config`), e.g. `--containerd-config`.
    options: &'static [&'static str],
    help: &'static str,
}

impl Subcommand {
    fn synopsis(&self) -> String {
        let mut text = format!("{} {} [--config FILE]", env!("CARGO_BIN_NAME"), self.name);
        for option in self.options {
            text.push_str(&format!(" [{option} FILE]"));
        }
        for flag in self.flags {
            text.push_str(&format!(" [{flag}]"));
        }
        text
    }

    /// Parses `args`; `Err(exit status)` after printing the help (0) or what was wrong (2).
    fn parse(&self, args: &[String]) -> Result<SubcommandArgs, i32> {
        let mut parsed = SubcommandArgs::default();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let arg = a.as_str();
            if matches!(arg, "-h" | "--help" | "-help") {
                print!("usage: {}\n\n{}", self.synopsis(), self.help);
                return Err(0);
            }
            let option = |names: &[&str]| names.contains(&arg);
            let needs_value = |what: &str| {
                eprintln!(
                    "{}: {arg} needs {what}; usage: {}",
                    self.name,
                    self.synopsis()
                );
                2
            };
            if option(&["--config", "-config", "-c"]) {
                parsed.config = Some(it.next().ok_or_else(|| needs_value("a file"))?.into());
            } else if let Some(name) = self
                .options
                .iter()
                .find(|o| arg == **o || arg.strip_prefix('-') == Some(o))
            {
                let value = it.next().ok_or_else(|| needs_value("a file"))?;
                parsed.values.push((name.to_string(), value.clone()));
            } else if let Some(flag) = self
                .flags
                .iter()
                .find(|f| arg == **f || arg.strip_prefix('-') == Some(f))
            {
                parsed.flags.push(flag.to_string());
            } else {
                eprintln!(
                    "{}: unknown argument `{arg}`; usage: {} (`{} {} --help` says more)",
                    self.name,
                    self.synopsis(),
                    env!("CARGO_BIN_NAME"),
                    self.name
                );
                return Err(2);
            }
        }
        Ok(parsed)
    }
}

const CHECK: Subcommand = Subcommand {
    name: "check",
    flags: &[],
    options: &["--containerd-config"],
    help: "Verifies this node's setup for the shim and prints one line per check: `ok`, `note`
(worth knowing, not wrong) or `PROBLEM` (with what to do). Nothing is created or changed.

  --config FILE             the shim's configuration (default: $CONTAINERD_SHIM_PROXMOX_LXC_CONFIG,
                            else /etc/containerd-shim-proxmox-lxc/config.toml; a file named here
                            must exist)
  --containerd-config FILE  containerd's configuration, searched for a runtime entry of
                            type io.containerd.proxmox-lxc.v2 (default /etc/containerd/config.toml)

With the pve driver it also checks the token secret file, TLS, the token and its privileges,
the node, quorum, the VMID range, tag_prefix, task_timeout and backup jobs.
Exit status: 0 when nothing is wrong, 1 when a PROBLEM was found, 2 on bad usage.
",
};

const GC: Subcommand = Subcommand {
    name: "gc",
    flags: &["--dry-run"],
    options: &[],
    help: "Destroys this shim's Proxmox CTs whose container is gone (after a node reboot the CTs
stay while containerd has forgotten them). Only stopped CTs in vmid_range carrying this shim's
tag and whose state directory is gone are destroyed; every other CT is kept and said why.

  --config FILE  the shim's configuration (default: $CONTAINERD_SHIM_PROXMOX_LXC_CONFIG, else
                 /etc/containerd-shim-proxmox-lxc/config.toml)
  --dry-run      print what would be destroyed, destroy nothing

Exit status: 0 when every destroy succeeded, 1 otherwise, 2 on bad usage.
",
};

/// Runs an operator subcommand's future on a one-thread runtime; `Err(1)` if there is none.
fn block_on<F: std::future::Future>(name: &str, work: F) -> Result<F::Output, i32> {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Ok(rt.block_on(work)),
        Err(e) => {
            eprintln!("{name}: cannot start the async runtime: {e}");
            Err(1)
        }
    }
}

/// `check`: verifies the configuration and the Proxmox VE side, prints what is wrong; exit
/// status 1 on problems, 2 on bad usage.
fn run_check(args: &[String]) -> i32 {
    let parsed = match CHECK.parse(args) {
        Ok(parsed) => parsed,
        Err(code) => return code,
    };
    let mut options = shim::check::CheckOptions {
        config: parsed.config,
        ..Default::default()
    };
    if let Some((_, file)) = parsed
        .values
        .iter()
        .find(|(k, _)| k == "--containerd-config")
    {
        options.containerd_config = file.into();
    }
    let report = match block_on("check", shim::check::check(&options)) {
        Ok(report) => report,
        Err(code) => return code,
    };
    for line in &report.lines {
        println!("{line}");
    }
    if report.problems == 0 {
        println!("all checks passed");
        0
    } else {
        println!("{} problem(s) found", report.problems);
        1
    }
}

/// `gc`: destroys the CTs of this shim whose container is gone (see `shim::gc`); exit status
/// 1 when a destroy failed, 2 on bad usage.
fn run_gc(args: &[String]) -> i32 {
    let parsed = match GC.parse(args) {
        Ok(parsed) => parsed,
        Err(code) => return code,
    };
    let dry_run = parsed.flags.iter().any(|f| f == "--dry-run");
    match block_on("gc", shim::gc::run(parsed.config.as_deref(), dry_run)) {
        Err(code) => code,
        Ok(Ok((lines, ok))) => {
            for line in lines {
                println!("{line}");
            }
            i32::from(!ok)
        }
        Ok(Err(e)) => {
            eprintln!("gc: {e}");
            1
        }
    }
}

/// What `--help` prints: operators run the binary by hand to learn what it is; containerd itself
/// only uses the flags and subcommands listed here.
fn usage() -> String {
    format!(
        "{bin} {version}: containerd runtime v2 shim {runtime}
Runs OCI containers and Kubernetes pods as LXC containers, or as Proxmox VE CTs.
containerd starts it; operators do not run containers through it directly.

Usage:
  {bin} -v | -version          print the version and the runtime name
  {bin} -info                  print RuntimeInfo (protobuf; containerd 2.x runs this)
  {bin} check [--config FILE] [--containerd-config FILE]
                               verify the configuration, containerd's runtime entry
                               and the Proxmox VE side (`check --help` says more)
  {bin} gc [--config FILE] [--dry-run]
                               destroy this shim's Proxmox CTs whose container is gone
                               (after a node reboot; the package runs it at boot)
  {bin} -h | --help            print this help

Run by containerd (flags of the shim protocol):
  {bin} [flags] start          start a shim for a task, print its address
  {bin} [flags] delete         clean up after a shim that died
  flags: -namespace NS -id ID -address ADDR -publish-binary BIN -bundle DIR -debug

Configuration: {config}
  (optional; ${config_env} in containerd's environment names another file;
  containerd's runtime options ConfigPath, or an inline options table on
  containerd 1.7+, override it). Select the runtime with --runtime {runtime}
  (ctr) or a RuntimeClass whose handler names a runtime of this type (Kubernetes).
",
        bin = env!("CARGO_BIN_NAME"),
        version = env!("CARGO_PKG_VERSION"),
        runtime = RUNTIME_NAME,
        config = shim::config::HOST_CONFIG_PATH,
        config_env = shim::config::HOST_CONFIG_ENV,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(String::from).collect()
    }

    /// What containerd runs (runtime/v2 shim manager: `-namespace NS -address ADDR
    /// -publish-binary BIN -id ID [-debug] start|delete`; the server mode `start` spawns) goes
    /// to the shim framework untouched.
    #[test]
    fn containerds_invocations_pass() {
        let address = Some(std::ffi::OsString::from(
            "/run/containerd/containerd.sock.ttrpc",
        ));
        for line in [
            "-namespace k8s.io -address /run/containerd/containerd.sock -publish-binary /usr/bin/containerd -id abc start",
            "-namespace k8s.io -address /run/containerd/containerd.sock -publish-binary /usr/bin/containerd -id abc -debug start",
            "-namespace default -address /run/containerd/containerd.sock -publish-binary /usr/bin/containerd -id abc -bundle /run/x delete",
            "-namespace default -id abc -address /run/containerd/containerd.sock -socket unix:///run/containerd/s/1 -debug",
        ] {
            assert_eq!(not_a_shim_invocation(&args(line), address.clone()), None, "{line}");
        }
    }

    #[test]
    fn anything_else_gets_a_sentence() {
        let address = Some(std::ffi::OsString::from("/x"));
        let said = |line: &str| not_a_shim_invocation(&args(line), address.clone()).unwrap();
        assert!(said("").contains("no subcommand given"));
        assert!(said("--foo").contains("unknown flag `--foo`"));
        assert!(said("-foo=1 start").contains("unknown flag `-foo`"));
        assert!(said("chec").contains("did you mean `check`?"));
        assert!(said("strat").contains("did you mean `start`?"));
        assert!(!said("frobnicate").contains("did you mean"));
        let no_address = not_a_shim_invocation(&args("-id x start"), None).unwrap();
        assert!(
            no_address.contains("TTRPC_ADDRESS is not set"),
            "{no_address}"
        );
    }

    #[test]
    fn edit_distance_counts_edits() {
        assert_eq!(edit_distance("check", "chec"), 1);
        assert_eq!(edit_distance("start", "strat"), 2);
        assert_eq!(edit_distance("gc", "gc"), 0);
        assert_eq!(edit_distance("", "abc"), 3);
    }
}
