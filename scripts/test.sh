#!/usr/bin/env bash
# Runs Remora's whole test suite: unit, integration, end-to-end and differential tests.
# Installs the non-Rust test dependency (Envoy 1.40, into .venv/) first.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup-test-deps.sh
cargo test --workspace --locked "$@"
