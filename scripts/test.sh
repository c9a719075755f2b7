#!/usr/bin/env bash
# The project's test command (README "Set up"): installs what the tests need, then runs
# them. Safe to run again: every install step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

# Unit, integration and benchmark-smoke tests (benches run once on a small input).
cargo test --all-targets "$@"
