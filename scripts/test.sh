#!/usr/bin/env bash
# Runs Remora's whole test suite: unit, integration, end-to-end and differential tests,
# then the benchmark harness in --quick mode (every scenario for a moment against no
# proxy, Remora and Envoy: a check that the harness works, never a verdict on timings).
# Installs the non-Rust test dependency (Envoy 1.40, into .venv/) first.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup-test-deps.sh
cargo test --workspace --locked "$@"
cargo run --locked -p benches -- all --quick --out target/bench-quick
