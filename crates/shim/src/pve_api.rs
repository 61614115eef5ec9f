//! The Proxmox VE API as the shim's settings describe it: the token secret, the client, and
//! Proxmox's errors as the shim's. Shared by the pve driver and the operator subcommands
//! (`check`, `gc`), which need the API but not a driver.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use pve_client::{Client, ClientConfig, Credentials, Secret, TlsTrust};

use crate::config::PveSection;
use crate::errors::{IoContext, Result, ShimError};

/// Reads the token secret, refusing a file that group or others may read (or write).
pub fn read_token_secret(path: &Path) -> Result<Secret> {
    let meta = std::fs::metadata(path).ctx(|| format!("token secret file {}", path.display()))?;
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(ShimError::InvalidArgument(format!(
            "token secret file {} is accessible by group or others (mode {:04o}); chmod 600 it",
            path.display(),
            mode & 0o7777
        )));
    }
    crate::host::private::no_core_dumps();
    let secret = Secret::from_file(path).ctx(|| format!("read {}", path.display()))?;
    if secret.expose().is_empty() {
        return Err(ShimError::InvalidArgument(format!(
            "token secret file {} is empty",
            path.display()
        )));
    }
    Ok(secret)
}

/// The API client the settings describe (nothing is sent yet).
pub fn client_for(settings: &PveSection) -> Result<Client> {
    let trust = match (&settings.ca_file, &settings.fingerprint) {
        (Some(ca), _) => TlsTrust::CaFile(ca.clone()),
        (None, Some(fp)) => TlsTrust::fingerprint(fp).map_err(pve_error)?,
        (None, None) => TlsTrust::SystemRoots,
    };
    let secret = read_token_secret(&settings.token_secret_file)?;
    let config = ClientConfig::new(
        &settings.url,
        trust,
        Credentials::Token {
            token_id: settings.token_id.clone(),
            secret,
        },
    );
    Client::new(config).map_err(pve_error)
}

/// A Proxmox error as the shim's, with Proxmox's message (and the end of a task's log).
pub fn pve_error(e: pve_client::Error) -> ShimError {
    let mut text = format!("Proxmox VE: {e}");
    if let Some(log) = e.task_log() {
        let tail: Vec<&str> = log.iter().rev().take(5).rev().map(String::as_str).collect();
        if !tail.is_empty() {
            text.push_str(&format!(" (task log: {})", tail.join(" | ")));
        }
    }
    if e.is_not_found() {
        ShimError::NotFound(text)
    } else if e.is_already_exists() {
        ShimError::AlreadyExists(text)
    } else {
        ShimError::Internal(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_readable_by_others_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "secret\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_token_secret(&path).unwrap_err().to_string();
        assert!(err.contains("group or others"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_token_secret(&path).unwrap().expose(), "secret");
    }
}
