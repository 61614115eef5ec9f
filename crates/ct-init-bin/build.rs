//! Builds the in-container helper (`crates/ct-init`) as a static binary with a nested cargo
//! and hands its path to the library through `CTINIT_HELPER_PATH`.
//!
//! Why nested: the helper must be statically linked (`+crt-static` on the gnu target gives a
//! static-pie) to run in any rootfs, while the shim is an ordinary dynamic binary; cargo has no
//! stable way to build one workspace member with other flags as a dependency. The nested build
//! uses a target directory of its own (no deadlock on the outer build's lock, and it is reused
//! across debug, test and clippy builds) and an environment cleared of the outer build's flags,
//! so its result does not depend on how the outer cargo was invoked.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN_NAME: &str = "containerd-shim-proxmox-lxc-init";

fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let workspace = manifest_dir
        .parent()
        .and_then(Path::parent)
        .expect("crate lives in <workspace>/crates/ct-init-bin")
        .to_path_buf();
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let target = env::var("TARGET").expect("TARGET");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());

    for path in [
        "crates/ct-init/src",
        "crates/ct-init/Cargo.toml",
        "crates/ctinit-proto/src",
        "crates/ctinit-proto/Cargo.toml",
        "Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", workspace.join(path).display());
    }
    println!("cargo:rerun-if-changed=build.rs");

    let target_dir = nested_target_dir(&out_dir);
    let mut cmd = Command::new(&cargo);
    cmd.arg("build")
        .arg("--release")
        .arg("--locked")
        .arg("--manifest-path")
        .arg(workspace.join("Cargo.toml"))
        .args(["-p", "ct-init", "--bin", BIN_NAME])
        .arg("--target")
        .arg(&target)
        .arg("--target-dir")
        .arg(&target_dir);
    // Drop everything of the outer build that would change the nested one.
    for (key, _) in env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        if key.starts_with("CARGO_PROFILE_")
            || key.starts_with("CARGO_BUILD_")
            || key.starts_with("CARGO_TARGET_")
            || key.starts_with("CARGO_CFG_")
            || key.starts_with("CARGO_FEATURE_")
            || key.starts_with("CARGO_PKG_")
            || key.starts_with("CLIPPY_")
        {
            cmd.env_remove(key);
        }
    }
    for key in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_MANIFEST_DIR",
        "CARGO_MANIFEST_PATH",
        "CARGO_PRIMARY_PACKAGE",
        "OUT_DIR",
        "TARGET",
        "HOST",
        "PROFILE",
        "OPT_LEVEL",
        "DEBUG",
        "NUM_JOBS",
    ] {
        cmd.env_remove(key);
    }
    cmd.env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "s")
        .env("CARGO_PROFILE_RELEASE_LTO", "true")
        .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "1")
        .env("CARGO_PROFILE_RELEASE_PANIC", "abort")
        .env("CARGO_PROFILE_RELEASE_STRIP", "true")
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_DEBUG_ASSERTIONS", "false")
        .env("CARGO_PROFILE_RELEASE_OVERFLOW_CHECKS", "false")
        .env("CARGO_PROFILE_RELEASE_INCREMENTAL", "false");

    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("run {:?}: {e}", cargo));
    if !output.status.success() {
        panic!(
            "nested static build of {BIN_NAME} failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }

    let built = target_dir.join(&target).join("release").join(BIN_NAME);
    let bytes = fs::read(&built).unwrap_or_else(|e| panic!("read {}: {e}", built.display()));
    if let Err(why) = check_static(&bytes) {
        panic!("{} is not static: {why}", built.display());
    }
    // A copy of our own: include_bytes! must not see a concurrent nested build rewrite it.
    let embedded = out_dir.join(BIN_NAME);
    fs::write(&embedded, &bytes).unwrap_or_else(|e| panic!("write {}: {e}", embedded.display()));
    println!("cargo:rustc-env=CTINIT_HELPER_PATH={}", embedded.display());
    // An identity of this helper build (FNV-1a 64), so users can share one copy per build
    // without hashing the embedded bytes at run time (which would page them all in).
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in &bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    println!("cargo:rustc-env=CTINIT_HELPER_ID={hash:016x}");
}

/// `<outer target dir>/ct-init-static`; the outer target dir is the ancestor of OUT_DIR that
/// holds cargo's CACHEDIR.TAG.
fn nested_target_dir(out_dir: &Path) -> PathBuf {
    out_dir
        .ancestors()
        .find(|dir| dir.join("CACHEDIR.TAG").is_file())
        .map(|dir| dir.join("ct-init-static"))
        .unwrap_or_else(|| out_dir.join("ct-init-static"))
}

/// A static (or static-pie) ELF has no PT_INTERP program header.
fn check_static(elf: &[u8]) -> Result<(), String> {
    if elf.len() < 64 || &elf[..4] != b"\x7fELF" {
        return Err("not an ELF file".into());
    }
    if elf[4] != 2 || elf[5] != 1 {
        // Only 64-bit little-endian is checked; other targets are trusted to crt-static.
        println!("cargo:warning=not checking static linking of a non-x86_64-style ELF");
        return Ok(());
    }
    let u16_at = |off: usize| u16::from_le_bytes([elf[off], elf[off + 1]]) as usize;
    let phoff =
        u64::from_le_bytes(elf[0x20..0x28].try_into().map_err(|_| "short header")?) as usize;
    let phentsize = u16_at(0x36);
    let phnum = u16_at(0x38);
    for i in 0..phnum {
        let at = phoff + i * phentsize;
        let p_type = elf.get(at..at + 4).ok_or("program header out of range")?;
        const PT_INTERP: u32 = 3;
        if u32::from_le_bytes([p_type[0], p_type[1], p_type[2], p_type[3]]) == PT_INTERP {
            return Err("it has a PT_INTERP (dynamic loader) header".into());
        }
    }
    Ok(())
}
