use std::io::Write;

use shim::{service::Service, RUNTIME_NAME};

fn main() {
    let args: Vec<String> = std::env::args().collect();
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
    if args.get(1).map(String::as_str) == Some(shim::host::mounts::tidy::SUBCOMMAND) {
        // Internal: run by the shim itself, single-threaded so that it may enter a container's
        // mount namespace.
        if let Err(e) = shim::host::mounts::tidy::run(&args[2..]) {
            eprintln!("{e}");
            std::process::exit(1);
        }
        return;
    }
    if args.get(1).map(String::as_str) == Some("check") {
        std::process::exit(run_check(&args[2..]));
    }
    if args.get(1).map(String::as_str) == Some("gc") {
        std::process::exit(run_gc(&args[2..]));
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

/// The arguments of an operator subcommand (`check`, `gc`): `--config FILE` and the flags in
/// `flags`. Prints the usage and returns `Err(2)` on anything else.
fn subcommand_args(
    name: &str,
    flags: &[&str],
    args: &[String],
) -> Result<(std::path::PathBuf, Vec<String>), i32> {
    let mut path = std::path::PathBuf::from(shim::config::HOST_CONFIG_PATH);
    let mut set = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--config" | "-config" | "-c" => match it.next() {
                Some(p) => path = p.into(),
                None => {
                    eprintln!("{name}: --config needs a file");
                    return Err(2);
                }
            },
            flag if flags.contains(&flag) => set.push(flag.to_string()),
            other => {
                let extra: String = flags.iter().map(|f| format!(" [{f}]")).collect();
                eprintln!(
                    "usage: {} {name} [--config FILE]{extra} (unknown argument {other:?})",
                    env!("CARGO_BIN_NAME")
                );
                return Err(2);
            }
        }
    }
    Ok((path, set))
}

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

/// `check [--config FILE]`: verifies the configuration and the Proxmox VE side, prints what is
/// wrong; exit status 1 on problems, 2 on bad usage.
fn run_check(args: &[String]) -> i32 {
    let path = match subcommand_args("check", &[], args) {
        Ok((path, _)) => path,
        Err(code) => return code,
    };
    let report = match block_on("check", shim::check::check(&path)) {
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

/// `gc [--config FILE] [--dry-run]`: destroys the CTs of this shim whose container is gone
/// (see `shim::gc`); exit status 1 when a destroy failed, 2 on bad usage.
fn run_gc(args: &[String]) -> i32 {
    let (path, flags) = match subcommand_args("gc", &["--dry-run"], args) {
        Ok(parsed) => parsed,
        Err(code) => return code,
    };
    let dry_run = !flags.is_empty();
    match block_on("gc", shim::gc::run(&path, dry_run)) {
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
  {bin} check [--config FILE]  verify the configuration and the Proxmox VE side
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
