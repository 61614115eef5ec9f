#!/usr/bin/env bash
# Benchmarks (not tests): this shim vs runc's shims, side by side in one run on the same private
# containerd: start-to-exit latency of `ctr run --rm IMAGE ID true`, `ctr task exec` latency,
# TTY output throughput (`ctr task exec -t ... seq -s " " 1000000`),
# host-side memory (RSS/PSS) per running container and where it goes (smaps breakdown).
# Prints markdown tables (docs/benchmarks.md shows the last ones recorded and how to read them).
# Uses a release build of the shim. On containerd 2.x the Rust runc shim (crates.io
# `containerd-runc-shim`, task API v3) is a third column: it is installed from the registry
# into target/bench-tools and linked, with this shim, into a bench-only shim directory under
# the name containerd resolves `io.containerd.runc-rs.v2` to. Then cri-bench measures host
# memory per Kubernetes pod (sandbox + 1 and + 3 containers, 10 and 50 pods) through
# containerd's CRI plugin with the same runtimes. Run as root.
# BENCH_BASELINE=FILE adds another build of this shim as a column (before/after in one run).
# BENCH_CRI=skip leaves the per-pod benchmark out; BENCH_CRI_LAYOUTS=1x1,10x1 picks its layouts.
# Arguments: --containerd 1.6|1.7|2.1 (both benchmarks); the rest go to e2e-bench:
#   --runs N (30)  --containers K (5)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
    echo "bench: run as root (containerd and LXC need it)" >&2
    exit 1
fi
bash scripts/setup.sh >/dev/null
cargo build --release -p containerd-shim-proxmox-lxc -p e2e -p cri

tools=target/bench-tools
shims="$tools/shims"
mkdir -p "$shims"
ln -sf "$PWD/target/release/containerd-shim-proxmox-lxc-v2" "$shims/containerd-shim-proxmox-lxc-v2"
if [ ! -x "$tools/bin/containerd-shim-runc-v2-rs" ]; then
    cargo install --locked --root "$tools" containerd-runc-shim ||
        echo "bench: could not install containerd-runc-shim; the Rust runc shim is left out" >&2
fi
if [ -x "$tools/bin/containerd-shim-runc-v2-rs" ]; then
    ln -sf "$PWD/$tools/bin/containerd-shim-runc-v2-rs" "$shims/containerd-shim-runc-rs-v2"
fi
# BENCH_BASELINE=FILE: another build of this shim (e.g. before a change) as its own column.
rm -f "$shims/containerd-shim-proxmox-lxc-baseline-v2"
if [ -n "${BENCH_BASELINE:-}" ]; then
    cp "$BENCH_BASELINE" "$shims/containerd-shim-proxmox-lxc-baseline-v2"
fi
version=()
rest=()
while [ $# -gt 0 ]; do
    case "$1" in
        --containerd) version=(--containerd "$2"); shift 2 ;;
        *) rest+=("$1"); shift ;;
    esac
done
status=0
target/release/e2e-bench --shim-dir "$PWD/$shims" "${version[@]}" "${rest[@]}" || status=$?
if [ "${BENCH_CRI:-}" != skip ]; then
    target/release/cri-bench --shim-dir "$PWD/$shims" "${version[@]}" \
        --layouts "${BENCH_CRI_LAYOUTS:-1x1,1x3,10x1,50x1}" || status=$?
fi
exit "$status"
