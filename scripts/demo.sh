#!/usr/bin/env bash
# The main job, on a fresh machine: installs what is missing, builds the workspace, starts a
# private containerd (its own config, root, state and socket under target/demo), builds a small
# busybox image locally (no registry), runs one container through this shim with
#   ctr run --rm --runtime io.containerd.proxmox-lxc.v2 ...
# shows its output, and tears everything down (containerd, shims, mounts, the work dir).
# Run as root. Options: DEMO_CONTAINERD=2.1 (or 1.7) uses containerd from scripts/setup.sh's
# cache instead of Debian's 1.6.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
if [ "$(id -u)" != 0 ]; then
    echo "demo: run as root (containerd and LXC need it)" >&2
    exit 1
fi
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "installing what is missing (scripts/setup.sh)"
bash scripts/setup.sh

say "building the workspace (cargo build)"
cargo build --workspace
shim="$repo/target/debug/containerd-shim-proxmox-lxc-v2"
if [ ! -x "$shim" ]; then
    echo "demo: $shim was not built" >&2
    exit 1
fi

work="$repo/target/demo"
env_tool="$repo/target/debug/e2e-env"
"$env_tool" stop --work "$work" >/dev/null 2>&1 || true
cleanup() {
    say "tearing down (containerd, shims, mounts, $work)"
    "$env_tool" stop --work "$work" && echo "nothing left behind"
}
trap cleanup EXIT

say "starting a private containerd ${DEMO_CONTAINERD:-1.6} and importing the local image"
eval "$("$env_tool" start --work "$work" --containerd "${DEMO_CONTAINERD:-1.6}" --shim-dir "$repo/target/debug")"
$E2E_CTR version | sed 's/^/  /'
$E2E_CTR images ls

id="demo-$$"
say "ctr run --rm --runtime io.containerd.proxmox-lxc.v2 $E2E_IMAGE $id sh -c '...'"
set +e
# (A deadline, so a hanging run cannot hang the demo; SIGKILL because ctr forwards SIGTERM.)
timeout -s KILL 60 $E2E_CTR run --rm --runtime io.containerd.proxmox-lxc.v2 "$E2E_IMAGE" "$id" sh -c \
    'echo "hello from $(hostname), pid $$, $(id)"; printf "/proc/1/cmdline: "; tr "\0" " " </proc/1/cmdline | cut -c1-40; exit 0'
status=$?
set -e
say "the container exited with status $status"

say "a detached one, to look at it from the host while it runs"
$E2E_CTR run -d --null-io --runtime io.containerd.proxmox-lxc.v2 "$E2E_IMAGE" "$id-bg" sleep 300
$E2E_CTR task ls
for lxcpath in /var/lib/containerd-shim-proxmox-lxc/e2e /var/lib/containerd-shim-proxmox-lxc; do
    if [ -d "$lxcpath/$id-bg" ]; then
        # The shim took the init over from lxc-start: LXC's tools would call it STOPPED,
        # so its config is set aside and they do not list it (nor start or destroy it).
        echo "its LXC directory ($lxcpath/$id-bg; lxc-ls does not list an adopted container):"
        ls -l "$lxcpath/$id-bg"
        break
    fi
done
echo "host processes that exist because of it:"
ps -eo pid,ppid,rss,args | awk -v id="$id-bg" 'NR == 1 || index($0, id) && !/awk/' | cut -c1-160
echo "ctr task exec:"
$E2E_CTR task exec --exec-id demo "$id-bg" sh -c 'echo "exec in $(hostname): PID 1 is $(cat /proc/1/comm)"'
$E2E_CTR task kill --signal SIGKILL "$id-bg"
for _ in $(seq 50); do
    $E2E_CTR task ls | grep -q "^$id-bg .*STOPPED" && break
    sleep 0.1
done
$E2E_CTR task rm "$id-bg" >/dev/null
$E2E_CTR container rm "$id-bg"
exit $status
