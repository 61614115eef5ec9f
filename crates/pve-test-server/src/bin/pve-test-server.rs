//! Serves the Proxmox API test double on 127.0.0.1 for manual use and end-to-end tests.
//!
//! Usage: pve-test-server [--port N] [--node NAME] [--config-dir DIR] [--lock-dir DIR]
//!                        [--token USER@REALM!ID=SECRET]... [--user USER@REALM:PASSWORD]...
//!                        [--ca-out FILE] [--task-ms N]
//! Prints the URL and the certificate fingerprint, then serves until interrupted.

use std::path::PathBuf;
use std::time::Duration;

use pve_test_server::TestServer;

fn usage() -> ! {
    eprintln!(
        "usage: pve-test-server [--port N] [--node NAME] [--config-dir DIR] [--lock-dir DIR] \
         [--token USER@REALM!ID=SECRET]... [--user USER@REALM:PASSWORD]... [--ca-out FILE] \
         [--task-ms N]"
    );
    std::process::exit(2)
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut builder = TestServer::builder();
    let mut port = 0u16;
    let mut ca_out: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        match arg.as_str() {
            "--port" => port = value().parse().unwrap_or_else(|_| usage()),
            "--node" => builder = builder.node(&value()),
            "--config-dir" => builder = builder.config_dir(value()),
            "--lock-dir" => builder = builder.lock_dir(value()),
            "--token" => {
                let v = value();
                let Some((id, secret)) = v.split_once('=') else {
                    usage()
                };
                builder = builder.token(id, secret);
            }
            "--user" => {
                let v = value();
                let Some((user, password)) = v.split_once(':') else {
                    usage()
                };
                builder = builder.user(user, password);
            }
            "--ca-out" => ca_out = Some(PathBuf::from(value())),
            "--task-ms" => {
                let ms: u64 = value().parse().unwrap_or_else(|_| usage());
                builder = builder.task_duration(Duration::from_millis(ms));
            }
            _ => usage(),
        }
    }
    builder = builder.bind(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    let server = match builder.start().await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("pve-test-server: {e}");
            std::process::exit(1);
        }
    };
    if let Some(path) = ca_out {
        if let Err(e) = server.write_ca_file(&path) {
            eprintln!("pve-test-server: writing {}: {e}", path.display());
            std::process::exit(1);
        }
    }
    println!("url={}", server.url());
    println!("node={}", server.node());
    println!("fingerprint={}", server.fingerprint());
    println!("config_dir={}", server.context().config_dir.display());
    println!("lock_dir={}", server.context().lock_dir.display());
    // Serve until SIGINT or SIGTERM; returning drops the server and its temporary dirs.
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
