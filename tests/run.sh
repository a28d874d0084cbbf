#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs the test-only system packages that are missing
# (tests/setup.sh), then runs every test. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/setup.sh
exec cargo test --release "$@"
