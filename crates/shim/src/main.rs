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
    if args.get(1).map(String::as_str) == Some(shim::tidy::SUBCOMMAND) {
        // Internal: run by the shim itself, single-threaded so that it may enter a container's
        // mount namespace.
        if let Err(e) = shim::tidy::run(&args[2..]) {
            eprintln!("{e}");
            std::process::exit(1);
        }
        return;
    }
    if args.get(1).map(String::as_str) == Some("check") {
        std::process::exit(run_check(&args[2..]));
    }
    // A containerd that goes away must not kill the shim through a write to a closed pipe.
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
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
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

/// `check [--config FILE]`: verifies the configuration and the Proxmox VE side, prints what is
/// wrong; exit status 1 on problems, 2 on bad usage.
fn run_check(args: &[String]) -> i32 {
    let mut path = std::path::PathBuf::from(shim::config::HOST_CONFIG_PATH);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--config" | "-config" | "-c" => match it.next() {
                Some(p) => path = p.into(),
                None => {
                    eprintln!("check: --config needs a file");
                    return 2;
                }
            },
            other => {
                eprintln!(
                    "usage: {} check [--config FILE] (unknown argument {other:?})",
                    env!("CARGO_BIN_NAME")
                );
                return 2;
            }
        }
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("check: cannot start the async runtime: {e}");
            return 1;
        }
    };
    let report = runtime.block_on(shim::check::check(&path));
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
