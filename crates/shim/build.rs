//! Link options of the shim's executables.

fn main() {
    // Packed relative relocations (DT_RELR, glibc >= 2.36: Debian 12 and 13, Proxmox VE 8 and
    // 9): the PIE's ~19k relative relocations take a few KiB instead of a 445 KiB `.rela.dyn`
    // that the loader reads (faults in) at every shim start. Same addresses, same ASLR; only
    // the table's encoding changes (docs/benchmarks.md, "Where the memory goes").
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux")
        && std::env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu")
    {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
