#!/usr/bin/env bash
# Installs the Debian packages the project builds and tests with. Idempotent: installs only
# what is missing, and runs `apt-get update` once per machine.
set -euo pipefail
packages=(
    lxc                       # lxc-start, lxc-attach, lxc-monitord: the plain LXC driver
    containerd runc           # containerd 1.6 and runc, the reference runtime
    busybox-static            # rootfs for test containers and the demo image
    containernetworking-plugins # CNI plugins for the CRI tests
    protobuf-compiler         # protoc, for CRI client bindings
    iproute2 procps util-linux psmisc
)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "setup: need root to install: ${missing[*]}" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    stamp=/var/lib/apt/periodic/.containerd-shim-proxmox-lxc-updated
    if [ ! -e "$stamp" ]; then
        apt-get update -q
        mkdir -p "$(dirname "$stamp")" && touch "$stamp"
    fi
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
