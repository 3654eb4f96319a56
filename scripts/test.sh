#!/usr/bin/env bash
# The whole test suite: format, lints, the http-cache-tests conformance run (with its committed
# floor) and every unit, property and end-to-end test. CI runs exactly this (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== build"
cargo build --workspace --locked

echo "== conformance: http-cache-tests against outpost node"
OUTPOST_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/outpost" bash scripts/conformance.sh

echo "== cargo test"
cargo test --workspace --locked
