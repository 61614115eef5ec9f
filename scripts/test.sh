#!/usr/bin/env bash
# The test command: installs what is missing, builds the workspace once, runs every test
# (unit, golden, real-LXC, end-to-end through containerd). Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo test --workspace --no-fail-fast 2>&1
