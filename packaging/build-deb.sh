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
# dpkg --purge also removes what the shim made at run time (LXC configs and state of its
# containers), unless a process still uses it: a running container's files are not pulled away.
cat > "$root/DEBIAN/postrm" <<'POSTRM'
#!/bin/sh
set -e
if [ "$1" = purge ] && command -v deb-systemd-helper >/dev/null 2>&1; then
    deb-systemd-helper purge containerd-shim-proxmox-lxc-gc.service >/dev/null || true
fi
if [ "$1" = purge ]; then
    for dir in /var/lib/containerd-shim-proxmox-lxc /run/containerd-shim-proxmox-lxc; do
        [ -d "$dir" ] || continue
        # LXC starts an lxc-monitord per lxcpath (here: per containerd namespace) that outlives
        # the containers; the ones for the shim's lxcpaths go with the package.
        for proc in /proc/[0-9]*; do
            cmd=$(tr '\0' ' ' <"$proc/cmdline" 2>/dev/null) || continue
            case "$cmd" in
            */lxc-monitord" $dir/"*) kill "${proc#/proc/}" 2>/dev/null || true ;;
            esac
        done
        sleep 1
        if grep -qsF "$dir/" /proc/[0-9]*/cmdline; then
            echo "containerd-shim-proxmox-lxc: $dir is still in use by a running container; left in place" >&2
            continue
        fi
        # The shim mounts a tmpfs on its state dir where /run is nodev (Debian, Proxmox VE).
        if mountpoint -q "$dir" && ! umount "$dir"; then
            echo "containerd-shim-proxmox-lxc: could not unmount $dir; left in place" >&2
            continue
        fi
        rm -rf "$dir" || echo "containerd-shim-proxmox-lxc: could not remove $dir" >&2
    done
fi
exit 0
POSTRM
chmod 0755 "$root/DEBIAN/postrm"
cat > "$root/DEBIAN/control" <<CONTROL
Package: containerd-shim-proxmox-lxc
Version: $version
Architecture: amd64
Maintainer: containerd-shim-proxmox-lxc developers <noreply@example.invalid>
Depends: libc6 (>= 2.36), lxc-pve (>= 5.0) | lxc (>= 1:5.0), containerd (>= 1.6) | containerd.io (>= 1.6), util-linux
Section: admin
Priority: optional
Description: containerd runtime v2 shim running containers as LXC / Proxmox VE CTs
 Runs OCI containers and Kubernetes pods through containerd as LXC containers,
 and on a Proxmox VE node as real Proxmox CTs (runtime io.containerd.proxmox-lxc.v2).
CONTROL
# DEB_COMPRESS (e.g. gzip) overrides dpkg-deb's default xz, which takes minutes on a busy host.
dpkg-deb --root-owner-group ${DEB_COMPRESS:+-Z"$DEB_COMPRESS"} --build "$root" "target/debian/containerd-shim-proxmox-lxc_${version}_amd64.deb"
