//! Where things are: the workspace, the cache of extra containerd versions, the shim binary.

use std::path::{Path, PathBuf};

use crate::SHIM_BINARY;

/// The workspace root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| manifest.to_path_buf())
}

/// The cargo profile directory the running executable lives in (`target/debug` for both
/// `target/debug/e2e-env` and `target/debug/deps/parity-HASH`), so a custom `CARGO_TARGET_DIR`
/// works.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    dir
}

/// Directory holding `containerd-shim-proxmox-lxc-v2`: `E2E_SHIM_DIR` if set, else the profile
/// directory of this executable (the workspace build puts the shim there too).
pub fn shim_dir() -> PathBuf {
    match std::env::var_os("E2E_SHIM_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => profile_dir(),
    }
}

/// The shim binary, if it has been built.
pub fn shim_binary(dir: &Path) -> Option<PathBuf> {
    let path = dir.join(SHIM_BINARY);
    path.is_file().then_some(path)
}

/// Where scripts/setup.sh unpacks containerd 1.7/2.x (`E2E_CACHE`, default `target/e2e-cache`).
pub fn cache_dir() -> PathBuf {
    match std::env::var_os("E2E_CACHE") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => workspace_root().join("target").join("e2e-cache"),
    }
}

/// Where logs of finished runs are kept for inspection (`target/e2e-logs`).
pub fn log_dir() -> PathBuf {
    workspace_root().join("target").join("e2e-logs")
}

/// Finds an executable on the system PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}
