#!/usr/bin/env bash
# Runs every check and test: starts (installing if needed) the servers the tests use, then
# cargo fmt --check, cargo clippy -D warnings, and all tests of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
# One target folder outside the clone, shared by builds, tests and benchmarks, and kept
# between runs on the same machine. A fresh machine just builds it.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/auroraq/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
command -v cargo >/dev/null || { echo "cargo is needed: install Rust (rustup) first" >&2; exit 1; }
scripts/build-deps.sh
scripts/services.sh
scripts/onnxruntime.sh
scripts/chromium.sh
scripts/schemathesis.sh
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
# The lean command the README documents (no Kafka, API, OTLP or mimalloc) must keep compiling.
cargo clippy -p auroraq --no-default-features --features nats,sentiment --locked -- -D warnings
echo "== cargo test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --locked 2>&1 | tee "$log"
# One closing line over every test binary (cargo prints one per binary, doc tests last).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f; if (p == 0) exit 1 }' "$log"
