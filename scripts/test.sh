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
scripts/services.sh
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked
