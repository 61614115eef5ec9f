#!/usr/bin/env bash
# The test command: installs what is missing, builds the whole workspace once (the shim binary
# included, which the end-to-end tests run through a private containerd), then runs every test:
# unit, golden, real-LXC, and end-to-end (tests/e2e: runc vs this shim through containerd 1.6,
# and 1.7/2.1 where scripts/setup.sh could fetch them). Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --workspace --all-targets
status=0
# --include-ignored: the crates' unit tests that need root are `#[ignore = "needs root: ..."]`
# (a plain `cargo test` reports them ignored with that reason); this run, as root, runs them.
# The integration and end-to-end suites decide at run time (tests/skip-harness).
cargo test --workspace --no-fail-fast -- --include-ignored 2>&1 || status=$?
# The node twin: a Debian 13 VM shaped like a Proxmox VE node (docs/testing.md#the-node-twin),
# bounded by TWIN_TIMEOUT; TWIN=skip skips it where QEMU cannot run.
TWIN_NO_BUILD=1 bash scripts/twin/run.sh || status=1
exit "$status"
