#!/usr/bin/env bash
# Benchmarks (not tests): this shim vs runc's shim, side by side in one run on the same private
# containerd: start-to-exit latency of `ctr run --rm IMAGE ID true`, `ctr task exec` latency,
# TTY output throughput (`ctr task exec -t ... seq -s " " 1000000`),
# and host-side memory (RSS/PSS) per running container. Prints a markdown table
# (docs/benchmarks.md shows the last one recorded and how to read it).
# Uses a release build of the shim. Run as root. Extra arguments go to e2e-bench:
#   --runs N (30)  --containers K (5)  --containerd 1.6|1.7|2.1
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
    echo "bench: run as root (containerd and LXC need it)" >&2
    exit 1
fi
bash scripts/setup.sh >/dev/null
cargo build --release -p containerd-shim-proxmox-lxc -p e2e
exec target/release/e2e-bench --shim-dir "$PWD/target/release" "$@"
