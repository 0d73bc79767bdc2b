#!/usr/bin/env bash
# Sets up what the embedded main job needs on this machine and builds the auroraq command.
# The embedded mode needs no servers: everything runs in one process on the in-process bus.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || { echo "cargo is needed: install Rust (rustup) first" >&2; exit 1; }
scripts/onnxruntime.sh
scripts/build-deps.sh
echo "[setup] building auroraq (release)" >&2
cargo build --release --locked -p auroraq
echo "[setup] done: run it with 'cargo run --release -p auroraq -- <command>'" >&2
