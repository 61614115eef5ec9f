#!/usr/bin/env bash
# Builds a Debian package of the shim: target/debian/containerd-shim-proxmox-lxc_<ver>_amd64.deb
# Installs /usr/bin/containerd-shim-proxmox-lxc-v2 (the static in-container helper is embedded
# in it) and /etc/containerd-shim-proxmox-lxc/config.toml (a conffile).
# LXC is `lxc-pve | lxc`: a Proxmox VE node has lxc-pve, which conflicts with Debian's lxc
# (pve-container's debian/control names both the same way).
set -euo pipefail
cd "$(dirname "$0")/.."
# SHIM_BINARY=FILE packages that binary instead of a fresh release build (the node twin packs
# the binary under test without a second, slow LTO build).
shim_binary="${SHIM_BINARY:-target/release/containerd-shim-proxmox-lxc-v2}"
[ -n "${SHIM_BINARY:-}" ] || cargo build --release --locked -p containerd-shim-proxmox-lxc
version=$(cargo metadata --no-deps --format-version 1 |
    python3 -c 'import json,sys; print([p["version"] for p in json.load(sys.stdin)["packages"] if p["name"]=="containerd-shim-proxmox-lxc"][0])')
root=target/debian/root
rm -rf "$root"
install -D -m 0755 "$shim_binary" "$root/usr/bin/containerd-shim-proxmox-lxc-v2"
install -D -m 0644 packaging/config.toml "$root/etc/containerd-shim-proxmox-lxc/config.toml"
install -D -m 0644 README.md "$root/usr/share/doc/containerd-shim-proxmox-lxc/README.md"
for f in docs/*.md; do install -D -m 0644 "$f" "$root/usr/share/doc/containerd-shim-proxmox-lxc/$f"; done
mkdir -p "$root/DEBIAN"
echo "/etc/containerd-shim-proxmox-lxc/config.toml" > "$root/DEBIAN/conffiles"
cat > "$root/DEBIAN/control" <<CONTROL
Package: containerd-shim-proxmox-lxc
Version: $version
Architecture: amd64
Maintainer: containerd-shim-proxmox-lxc developers <noreply@example.invalid>
Depends: lxc-pve (>= 5.0) | lxc (>= 1:5.0), containerd (>= 1.6) | containerd.io (>= 1.6), util-linux
Section: admin
Priority: optional
Description: containerd runtime v2 shim running containers as LXC / Proxmox VE CTs
 Runs OCI containers and Kubernetes pods through containerd as LXC containers,
 and on a Proxmox VE node as real Proxmox CTs (runtime io.containerd.proxmox-lxc.v2).
CONTROL
dpkg-deb --root-owner-group --build "$root" "target/debian/containerd-shim-proxmox-lxc_${version}_amd64.deb"
