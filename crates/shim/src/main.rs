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
    // A containerd that goes away must not kill the shim through a write to a closed pipe.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
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
