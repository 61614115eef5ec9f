#!/usr/bin/env bash
# Builds the Debian package of the shim with cargo-deb, from the `[package.metadata.deb]` of
# crates/shim/Cargo.toml: target/debian/containerd-shim-proxmox-lxc_<version>-1_amd64.deb.
# cargo-deb computes Installed-Size, the architecture and the shared-library dependencies
# ($auto), marks everything under /etc as a conffile, and adds dh_installsystemd's maintainer
# script snippets for the gc unit to packaging/maintainer-scripts/{prerm,postrm}.
# The path of the .deb is the last line on stdout.
#
# Environment:
#   SHIM_BINARY=FILE    pack that binary instead of a fresh release build (the node twin packs
#                       the binary under test without a second, slow LTO build)
#   DEB_VERSION=V       the package version (default: Cargo's version, revision 1); the twin
#                       builds a higher one to upgrade the package over itself
#   DEB_MAINTAINER=...  the Maintainer field ("Name <address>"), for a build someone signs for
#   DEB_COMPRESS=gzip   the system's `gzip -1` instead of xz (xz takes minutes on a busy host)
#   DEB_OUT_DIR=DIR     where the .deb goes (default: target/debian)
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"

# The cargo-deb this packaging is written for (systemd-units, maintainer-scripts with
# #DEBHELPER#, --deb-version); installed from crates.io when missing or another version.
cargo_deb_version=3.8.0
if [ "$(cargo deb --version 2>/dev/null)" != "cargo-deb $cargo_deb_version" ]; then
    echo "build-deb: installing cargo-deb $cargo_deb_version (cargo install --locked)" >&2
    cargo install --locked --version "$cargo_deb_version" cargo-deb >&2
fi
# cargo-deb needs dpkg-shlibdeps (dpkg-dev) for the $auto dependencies.
command -v dpkg-shlibdeps >/dev/null || {
    echo "build-deb: dpkg-shlibdeps is missing: apt-get install dpkg-dev" >&2
    exit 1
}

out_dir="${DEB_OUT_DIR:-target/debian}"
mkdir -p "$out_dir"
out_dir="$(cd "$out_dir" && pwd)"
# --strip: a prebuilt (debug) binary is stripped too, as the release profile strips its own.
args=(deb -p containerd-shim-proxmox-lxc --locked --strip --output "$out_dir/")
[ -z "${DEB_VERSION:-}" ] || args+=(--deb-version "$DEB_VERSION")
[ -z "${DEB_MAINTAINER:-}" ] || args+=(--maintainer "$DEB_MAINTAINER")
case "${DEB_COMPRESS:-xz}" in
xz) ;;
# The system's gzip -1: cargo-deb's own gzip (built without its "gzip" feature) is zopfli,
# which takes many minutes for the shim's binary.
gz | gzip) args+=(--compress-type gzip --compress-system --fast) ;;
*) echo "build-deb: DEB_COMPRESS must be xz or gzip, got '$DEB_COMPRESS'" >&2; exit 1 ;;
esac

if [ -n "${SHIM_BINARY:-}" ]; then
    [ -x "$SHIM_BINARY" ] || { echo "build-deb: SHIM_BINARY=$SHIM_BINARY is not an executable file" >&2; exit 1; }
    # cargo-deb takes binaries from <target dir>/release (the metadata's "target/release/..."
    # asset): a target dir of their own holds the prebuilt one, and nothing is compiled.
    prebuilt="$repo/target/debian/prebuilt"
    rm -rf "$prebuilt"
    install -D -m 0755 "$SHIM_BINARY" "$prebuilt/release/containerd-shim-proxmox-lxc-v2"
    deb="$(CARGO_TARGET_DIR="$prebuilt" cargo "${args[@]}" --no-build | tail -1)"
else
    deb="$(cargo "${args[@]}" | tail -1)"
fi
[ -f "$deb" ] || { echo "build-deb: cargo deb did not name a package file (got '$deb')" >&2; exit 1; }
echo "$deb"
