#!/usr/bin/env bash
# The test command: installs what is missing, builds the whole workspace once (the shim binary
# included, which the end-to-end tests run through a private containerd), then runs every test:
# unit, golden, real-LXC, and end-to-end (tests/e2e: runc vs this shim through containerd 1.6,
# and 1.7/2.1 where scripts/setup.sh could fetch them). Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --workspace --all-targets
cargo test --workspace --no-fail-fast 2>&1
