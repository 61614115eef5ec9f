#!/usr/bin/env bash
# Builds a Debian package of the shim: target/debian/containerd-shim-proxmox-lxc_<ver>_amd64.deb
# Installs /usr/bin/containerd-shim-proxmox-lxc-v2 (the static in-container helper is embedded
# in it) and /etc/containerd-shim-proxmox-lxc/config.toml (a conffile).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p containerd-shim-proxmox-lxc
version=$(cargo metadata --no-deps --format-version 1 |
    python3 -c 'import json,sys; print([p["version"] for p in json.load(sys.stdin)["packages"] if p["name"]=="containerd-shim-proxmox-lxc"][0])')
root=target/debian/root
rm -rf "$root"
install -D -m 0755 target/release/containerd-shim-proxmox-lxc-v2 "$root/usr/bin/containerd-shim-proxmox-lxc-v2"
install -D -m 0644 packaging/config.toml "$root/etc/containerd-shim-proxmox-lxc/config.toml"
install -D -m 0644 packaging/containerd-shim-proxmox-lxc-gc.service "$root/lib/systemd/system/containerd-shim-proxmox-lxc-gc.service"
install -D -m 0644 README.md "$root/usr/share/doc/containerd-shim-proxmox-lxc/README.md"
for f in docs/*.md; do install -D -m 0644 "$f" "$root/usr/share/doc/containerd-shim-proxmox-lxc/$f"; done
mkdir -p "$root/DEBIAN"
echo "/etc/containerd-shim-proxmox-lxc/config.toml" > "$root/DEBIAN/conffiles"
# The gc unit runs at every boot (it does nothing unless the pve driver is configured).
cat > "$root/DEBIAN/postinst" <<'POSTINST'
#!/bin/sh
set -e
if [ "$1" = configure ] && command -v deb-systemd-helper >/dev/null 2>&1; then
    deb-systemd-helper enable containerd-shim-proxmox-lxc-gc.service >/dev/null || true
fi
POSTINST
chmod 0755 "$root/DEBIAN/postinst"
cat > "$root/DEBIAN/control" <<CONTROL
Package: containerd-shim-proxmox-lxc
Version: $version
Architecture: amd64
Maintainer: containerd-shim-proxmox-lxc developers <noreply@example.invalid>
Depends: lxc (>= 1:5.0), containerd (>= 1.6) | containerd.io (>= 1.6), util-linux
Section: admin
Priority: optional
Description: containerd runtime v2 shim running containers as LXC / Proxmox VE CTs
 Runs OCI containers and Kubernetes pods through containerd as LXC containers,
 and on a Proxmox VE node as real Proxmox CTs (runtime io.containerd.proxmox-lxc.v2).
CONTROL
dpkg-deb --root-owner-group --build "$root" "target/debian/containerd-shim-proxmox-lxc_${version}_amd64.deb"
