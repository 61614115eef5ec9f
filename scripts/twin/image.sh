#!/usr/bin/env bash
# Builds (or reuses) the node twin's disk image: Debian 13 (trixie) made with mmdebstrap from
# Debian packages, shaped like a Proxmox VE node where it matters to the shim: systemd as PID 1,
# cgroup v2 only, AppArmor with LXC's profiles, lxcfs, LXC 6, containerd as a systemd service.
#
# The image is cached in target/twin/image-KEY/ where KEY hashes this file (the package list
# and every customisation below are in it) and the suite; a second run reuses it. Prints the
# image directory (rootfs.img, vmlinuz, initrd.img) on stdout; progress goes to stderr.
# The mirror comes from the host's own apt sources (scripts/apt-mirror.sh).
set -euo pipefail
# stdout carries only the image directory (the caller captures it): everything any tool prints
# goes to stderr (mke2fs says "Creating regular file ..." on stdout even with -q).
exec 3>&1 1>&2
repo="$(cd "$(dirname "$0")/../.." && pwd)"
suite="${TWIN_SUITE:-trixie}"
packages=(
    systemd-sysv udev dbus kmod linux-image-amd64 initramfs-tools
    apparmor lxc lxcfs uidmap          # LXC 6 with its AppArmor profiles, lxcfs, id maps
    containerd runc busybox-static     # containerd as a service, runc as the reference
    containernetworking-plugins iproute2 procps util-linux psmisc e2fsprogs
    docker-registry                    # the CRI suite's local registry (it starts its own)
)
key=$( (cat "$0"; echo "$suite") | sha256sum | cut -c1-16)
out="$repo/target/twin/image-$key"
if [ -f "$out/rootfs.img" ] && [ -f "$out/vmlinuz" ] && [ -f "$out/initrd.img" ]; then
    echo "twin: reusing image $out" >&2
    echo "$out" >&3
    exit 0
fi
for tool in mmdebstrap mke2fs; do
    command -v "$tool" >/dev/null || { echo "twin: $tool missing (run scripts/setup.sh)" >&2; exit 1; }
done
mirror="$(bash "$repo/scripts/apt-mirror.sh")"
echo "twin: building image $out ($suite from the host's mirror)" >&2
tmp="$out.tmp"
rm -rf "$tmp"
mkdir -p "$tmp"
root="$tmp/root"
include=$(IFS=,; echo "${packages[*]}")
# The stage unit runs the payload disk's stage.sh (when a payload disk is attached) with
# its output on the serial console, where the host harness reads it.
stage_unit='[Unit]
Description=node twin test stage (payload disk /dev/vdb)
ConditionPathExists=/dev/vdb
After=multi-user.target containerd.service lxcfs.service apparmor.service
Wants=containerd.service

[Service]
Type=oneshot
ExecStart=/bin/sh -c "mkdir -p /payload && mount -o ro /dev/vdb /payload && exec /bin/bash /payload/stage.sh"
StandardOutput=tty
StandardError=inherit
TTYPath=/dev/ttyS0
TimeoutStartSec=infinity

[Install]
WantedBy=multi-user.target'
# Proxmox's CT unit, as pve-container installs it (src/pve-container@.service, the slice
# src/system-pve\x2dcontainer.slice, into /usr/lib/systemd/system), so the pve driver's test
# node starts CTs with `systemctl start pve-container@VMID` as PVE::LXC::vm_start does, and
# systemd's own start limits (none set: 5 starts in 10 s), stop handling (KillMode=mixed,
# ExecStop) and cgroup placement (Delegate=yes) apply. Verbatim but for the comments.
pve="$tmp/pve"
mkdir -p "$pve"
cat >"$pve/pve-container@.service" <<'UNIT'
[Unit]
Description=PVE LXC Container: %i
DefaultDependencies=No
After=lxc.service
Wants=lxc.service
Documentation=man:lxc-start man:lxc man:pct

[Service]
Type=simple
Delegate=yes
KillMode=mixed
TimeoutStopSec=120s
ExecStart=/usr/bin/lxc-start -F -n %i
ExecStop=/usr/share/lxc/pve-container-stop-wrapper %i
StandardOutput=null
StandardError=file:/run/pve/ct-%i.stderr
UNIT
cat >"$pve/system-pve\\x2dcontainer.slice" <<'UNIT'
[Unit]
Description=PVE LXC Container Slice
DefaultDependencies=No
Documentation=man:pct
UNIT
# pve-container's src/pve-container-stop-wrapper (Perl there) in sh: restart when the CT asked
# for a reboot, lxc-stop when systemd stops a running unit, nothing when lxc-start exited by
# itself. The node's "is this a CT" test is /etc/pve/lxc/VMID.conf; the test node keeps its CT
# configs elsewhere, so the CT's LXC config stands for it.
cat >"$pve/pve-container-stop-wrapper" <<'WRAPPER'
#!/bin/sh
vmid="${1:-}"
[ -n "$vmid" ] || exit 1
case "$vmid" in *[!0-9]*) exit 0 ;; esac
[ -e "/var/lib/lxc/$vmid/config" ] || exit 0
if rm "/var/lib/lxc/$vmid/reboot" 2>/dev/null; then
    exec systemctl --no-block restart "pve-container@$vmid.service"
elif [ "${EXIT_CODE:-}" != exited ]; then
    exec lxc-stop -n "$vmid"
fi
exit 0
WRAPPER
chmod 0755 "$pve/pve-container-stop-wrapper"
mmdebstrap --variant=minbase --mode=root --include="$include" \
    --customize-hook='echo twin >"$1/etc/hostname"' \
    --customize-hook='echo "/dev/vda / ext4 rw,errors=remount-ro 0 1" >"$1/etc/fstab"' \
    --customize-hook='chroot "$1" passwd -d root' \
    --customize-hook="printf '%s\n' '$stage_unit' >\"\$1/etc/systemd/system/twin-stage.service\"" \
    --customize-hook='chroot "$1" systemctl enable twin-stage.service' \
    --customize-hook='for t in apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer dpkg-db-backup.timer; do chroot "$1" systemctl mask "$t" >/dev/null 2>&1 || true; done' \
    --customize-hook="cp '$pve/pve-container@.service' '$pve/system-pve\\x2dcontainer.slice' \"\$1/usr/lib/systemd/system/\"" \
    --customize-hook="install -m 0755 '$pve/pve-container-stop-wrapper' \"\$1/usr/share/lxc/\"" \
    --customize-hook='chroot "$1" systemctl mask docker-registry.service >/dev/null' \
    --customize-hook='cp -L "$1/vmlinuz" "$1/initrd.img" "$1/../"' \
    "$suite" "$root" "$mirror" >&2
du -sh "$root" >&2
# No loop device needed: mke2fs fills the file system from the directory. The size is an upper
# bound on a sparse file, with room for container images and rootfs copies.
mke2fs -q -t ext4 -L twin-root -d "$root" "$tmp/rootfs.img" 4G
rm -rf "$root"
rm -rf "$out"
mv "$tmp" "$out"
echo "twin: image ready in $out" >&2
echo "$out" >&3
