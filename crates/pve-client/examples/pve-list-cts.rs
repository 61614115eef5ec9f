//! Connects to Proxmox VE with an API token and lists the node's CTs.
//!
//! Environment:
//!   PVE_URL                 https://HOST:8006/api2/json
//!   PVE_NODE                node name
//!   PVE_TOKEN_ID            USER@REALM!TOKENID
//!   PVE_TOKEN_SECRET_FILE   file holding the token secret (or PVE_TOKEN_SECRET)
//!   PVE_CA_FILE             CA bundle, e.g. /etc/pve/pve-root-ca.pem, or
//!   PVE_FINGERPRINT         SHA-256 fingerprint of the node certificate
//!                           (neither: the system's trust store)
//!
//! Try it against the test server: `cargo run -p pve-test-server -- --token 'root@pam!demo=s3cret'`
//! prints url= and fingerprint=; then
//! `PVE_URL=... PVE_NODE=pve PVE_TOKEN_ID='root@pam!demo' PVE_TOKEN_SECRET=s3cret PVE_FINGERPRINT=... \
//!  cargo run -p pve-client --example pve-list-cts`

use pve_client::{Client, ClientConfig, Credentials, Secret, TlsTrust};

fn env(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("{name} is not set"))
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let url = env("PVE_URL")?;
    let node = env("PVE_NODE")?;
    let token_id = env("PVE_TOKEN_ID")?;
    let secret = match std::env::var("PVE_TOKEN_SECRET_FILE") {
        Ok(path) => Secret::from_file(std::path::Path::new(&path))?,
        Err(_) => Secret::new(env("PVE_TOKEN_SECRET")?),
    };
    let trust = if let Ok(ca) = std::env::var("PVE_CA_FILE") {
        TlsTrust::CaFile(ca.into())
    } else if let Ok(fp) = std::env::var("PVE_FINGERPRINT") {
        TlsTrust::fingerprint(&fp)?
    } else {
        TlsTrust::SystemRoots
    };
    let client = Client::new(ClientConfig::new(
        &url,
        trust,
        Credentials::Token { token_id, secret },
    ))?;
    let version = client.version().await?;
    println!("Proxmox VE {} (node {node})", version.version);
    println!("{:>10}  {:<8}  {:<24}  TAGS", "VMID", "STATUS", "NAME");
    let mut cts = client.list_cts(&node).await?;
    cts.sort_by_key(|c| c.vmid);
    for ct in cts {
        println!(
            "{:>10}  {:<8}  {:<24}  {}",
            ct.vmid,
            if ct.is_running() {
                "running"
            } else {
                "stopped"
            },
            ct.name.unwrap_or_default(),
            ct.tags.unwrap_or_default()
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("pve-list-cts: {e}");
        std::process::exit(1);
    }
}
