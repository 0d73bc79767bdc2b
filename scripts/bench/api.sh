#!/usr/bin/env bash
# The API benchmark: `auroraq bench api` against AuroraQ's API and, in the same run, the seed's design
# (FastAPI + uvicorn calling a transformers pipeline per request) on the default model's weights
# rebuilt for PyTorch. Everything on loopback.
#
#   scripts/bench/api.sh [--clients 1,16,64] [--duration 15] [--rounds 3]
#
# Sets up (once) Debian's python3-torch and a venv beside it with transformers, FastAPI, uvicorn and
# onnx (.auroraq/bench-venv), rebuilds the PyTorch checkpoint (.auroraq/bench/minilm-hf), builds the
# release binary, starts the baseline on 127.0.0.1:18001 and stops it at the end.
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/auroraq/target}"
venv=.auroraq/bench-venv
hf=.auroraq/bench/minilm-hf
port=18001

# Debian's torch calls the system BLAS (libblas.so.3): with the reference BLAS one headline takes
# ~220 ms, with OpenBLAS ~14 ms. The baseline gets OpenBLAS, its best honest setting.
if ! /usr/bin/python3 -c 'import torch' 2>/dev/null || [ ! -e /usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3 ]; then
  echo "== installing Debian's python3-torch and OpenBLAS"
  sudo_=""; [ "$(id -u)" = 0 ] || sudo_=sudo
  $sudo_ apt-get install -y -q python3-torch python3-venv libopenblas0-pthread
fi
if [ ! -x "$venv/bin/python" ]; then
  echo "== $venv (transformers, fastapi, uvicorn, onnx; torch and numpy from Debian)"
  /usr/bin/python3 -m venv --system-site-packages "$venv"
  # numpy < 2: Debian's torch 1.13 is built against numpy 1.x.
  "$venv/bin/pip" install -q "numpy<2" "transformers==4.44.2" "tokenizers<0.20" fastapi uvicorn \
    "onnx==1.16.2" "ml-dtypes<0.5" "onnxruntime==1.19.2"
fi
if [ ! -f "$hf/config.json" ]; then
  echo "== rebuilding the PyTorch checkpoint from models/auroraq-minilm-fpb/model.onnx"
  "$venv/bin/python" scripts/bench/onnx_to_torch.py models/auroraq-minilm-fpb "$hf" \
    --check data/fpb/validation.csv --rows 400
fi
cargo build --release --locked -p auroraq

# One BLAS thread per request: FastAPI's thread pool runs requests side by side on the two cores
# (two BLAS threads per request oversubscribe them: 76 ms per headline instead of 14).
OPENBLAS_NUM_THREADS="${BASELINE_BLAS_THREADS:-1}" \
  "$venv/bin/python" scripts/bench/api_seed_baseline.py "$hf" --port "$port" &
baseline=$!
trap 'kill $baseline 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do
  curl -sf "http://127.0.0.1:$port/health" >/dev/null && break
  sleep 0.5
done
curl -sf "http://127.0.0.1:$port/health" >/dev/null || { echo "the baseline did not start" >&2; exit 1; }

RUST_LOG=warn "$CARGO_TARGET_DIR/release/auroraq" bench api \
  --baseline "http://127.0.0.1:$port/api/v1/sentiment/analyze" "$@"
