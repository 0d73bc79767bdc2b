#!/usr/bin/env bash
# GPU check of AuroraQ's two sentiment tiers (the int8 ONNX exports):
#   default  models/auroraq-minilm-fpb  (all-MiniLM-L6-v2, distilled)
#   teacher  models/auroraq-mpnet-fpb   (all-mpnet-base-v2; model.onnx is git-ignored: export it first with
#                                        scripts/model/train_teacher.py export, or copy it in)
# For each tier it scores data/fpb/validation.csv on CUDAExecutionProvider and on CPUExecutionProvider, checks
# that the argmax labels agree on >= 99 % of the sentences (GPU_CHECK_MIN_AGREEMENT), and times sequences/s at
# batch 1, 32 and 128 on CUDA (padded, length-sorted batches, best of GPU_CHECK_REPEATS passes). Prints one JSON
# line on stdout; exits 1 if an agreement is below the floor, 2 if no usable GPU / CUDA provider is found.
#
# Installs onnxruntime-gpu (GPU_CHECK_ORT_VERSION, default 1.31.1, the version the CPU exports were made with),
# tokenizers and numpy from PyPI into .auroraq/gpu-venv. Without network, point GPU_CHECK_WHEELS at a folder of
# wheels (pip download them on a connected machine: onnxruntime-gpu, tokenizers, numpy and their deps).
# GPU_CHECK_CUDA_WHEELS=1 also installs the CUDA 12 / cuDNN runtime from PyPI (onnxruntime-gpu[cuda,cudnn]) and
# preloads it, for hosts with a driver but no CUDA toolkit.
#
#   scripts/gpu-check.sh                # from anywhere; runs in the repository root
#   GPU_CHECK_TIERS=default scripts/gpu-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "gpu-check: $*" >&2; exit 2; }

if ! command -v nvidia-smi >/dev/null 2>&1; then
  fail "no GPU: nvidia-smi is not installed (this script needs an NVIDIA GPU with its driver)"
fi
if ! nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
  fail "no GPU: nvidia-smi lists no device ($(nvidia-smi -L 2>&1 | head -n1))"
fi

version="${GPU_CHECK_ORT_VERSION:-1.31.1}"
venv=.auroraq/gpu-venv
py=/usr/bin/python3
[ -x "$py" ] || py=$(command -v python3) || fail "python3 is not installed"
mkdir -p .auroraq
if [ ! -x "$venv/bin/python" ]; then
  "$py" -m venv "$venv" || fail "cannot create a venv (install python3-venv)"
fi
pkg="onnxruntime-gpu==$version"
[ "${GPU_CHECK_CUDA_WHEELS:-0}" = 1 ] && pkg="onnxruntime-gpu[cuda,cudnn]==$version"
pipargs=(--quiet --disable-pip-version-check)
[ -n "${GPU_CHECK_WHEELS:-}" ] && pipargs+=(--no-index --find-links "$GPU_CHECK_WHEELS")
if ! "$venv/bin/python" -c "import onnxruntime, tokenizers, numpy, sys; sys.exit(onnxruntime.__version__ != '$version')" 2>/dev/null; then
  echo "gpu-check: installing $pkg tokenizers numpy into $venv" >&2
  "$venv/bin/pip" install "${pipargs[@]}" "$pkg" "tokenizers>=0.15,<0.23" "numpy<3" >&2 \
    || fail "pip could not install $pkg (no network? set GPU_CHECK_WHEELS to a wheel folder)"
fi

exec "$venv/bin/python" - <<'PY'
import json, os, sys, time, csv
import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

def die(msg, code=2):
    print(f"gpu-check: {msg}", file=sys.stderr)
    sys.exit(code)

if os.environ.get("GPU_CHECK_CUDA_WHEELS") == "1" and hasattr(ort, "preload_dlls"):
    ort.preload_dlls()
if "CUDAExecutionProvider" not in ort.get_available_providers():
    die(f"onnxruntime {ort.__version__} offers no CUDAExecutionProvider (available: {ort.get_available_providers()})")

TIERS = {"default": "models/auroraq-minilm-fpb", "teacher": "models/auroraq-mpnet-fpb"}
wanted = [t for t in os.environ.get("GPU_CHECK_TIERS", "default,teacher").split(",") if t]
csv_path = os.environ.get("GPU_CHECK_CSV", "data/fpb/validation.csv")
floor = float(os.environ.get("GPU_CHECK_MIN_AGREEMENT", "0.99"))
repeats = int(os.environ.get("GPU_CHECK_REPEATS", "3"))
with open(csv_path, encoding="utf-8", newline="") as f:
    rows = [(r["label"].strip().lower(), r["sentence"]) for r in csv.DictReader(f)]

def session(path, provider):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    providers = [("CUDAExecutionProvider", {"device_id": int(os.environ.get("GPU_CHECK_DEVICE", "0"))}), "CPUExecutionProvider"] \
        if provider == "cuda" else ["CPUExecutionProvider"]
    s = ort.InferenceSession(path, so, providers=providers)
    if provider == "cuda" and s.get_providers()[0] != "CUDAExecutionProvider":
        die(f"{path}: CUDA provider could not be created (session providers {s.get_providers()}); check the driver / CUDA / cuDNN libraries")
    return s

def feeds(s, encs, pad):
    names = {i.name for i in s.get_inputs()}
    width = max(len(e) for e in encs)
    ids = np.full((len(encs), width), pad, dtype=np.int64)
    mask = np.zeros_like(ids)
    for i, e in enumerate(encs):
        ids[i, :len(e)] = e
        mask[i, :len(e)] = 1
    feed = {"input_ids": ids, "attention_mask": mask}
    if "token_type_ids" in names:
        feed["token_type_ids"] = np.zeros_like(ids)
    return feed

def run_all(s, encs, order, bs, pad):
    out = {}
    for k in range(0, len(order), bs):
        idx = order[k:k + bs]
        lg = s.run(["logits"], feeds(s, [encs[i] for i in idx], pad))[0]
        for j, i in enumerate(idx):
            out[i] = lg[j]
    return np.stack([out[i] for i in sorted(out)])  # in text order

result = {"check": "gpu-sentiment-tiers", "onnxruntime": ort.__version__, "csv": csv_path, "n": len(rows),
          "min_agreement": floor, "tiers": {}}
try:
    import subprocess
    result["gpu"] = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                                   capture_output=True, text=True).stdout.strip()
except Exception:
    pass
ok = True
for tier in wanted:
    d = TIERS.get(tier, tier)
    path = os.path.join(d, "model.onnx")
    if not os.path.exists(path):
        die(f"{path} is missing (the teacher's model.onnx is git-ignored: export it with scripts/model/train_teacher.py export)")
    cfg = json.load(open(os.path.join(d, "config.json"), encoding="utf-8"))
    labels = [cfg["id2label"][str(i)].lower() for i in range(len(cfg["id2label"]))]
    tk = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
    tk.no_padding()
    tk.enable_truncation(int(cfg.get("auroraq_max_length", 128)))
    pad = tk.token_to_id("[PAD]") or 0  # as the Rust runtime pads
    encs = [e.ids for e in tk.encode_batch([r[1] for r in rows])]
    gold = np.array([labels.index(r[0]) for r in rows])
    order = sorted(range(len(encs)), key=lambda i: (len(encs[i]), i))
    cpu, gpu = session(path, "cpu"), session(path, "cuda")
    lc = run_all(cpu, encs, order, 32, pad)
    lg = run_all(gpu, encs, order, 32, pad)
    agree = float(np.mean(lc.argmax(1) == lg.argmax(1)))
    speed = {}
    for bs in (1, 32, 128):
        run_all(gpu, encs, order[: max(bs, 64)], bs, pad)  # warm-up (CUDA kernels, allocator)
        best = None
        for _ in range(repeats):
            t = time.perf_counter()
            run_all(gpu, encs, order, bs, pad)
            dt = time.perf_counter() - t
            best = dt if best is None else min(best, dt)
        speed[str(bs)] = round(len(encs) / best, 1)
    t = time.perf_counter(); run_all(cpu, encs, order, 32, pad); cpu_s = time.perf_counter() - t
    tier_ok = agree >= floor
    ok &= tier_ok
    result["tiers"][tier] = {
        "dir": d, "label_agreement_cuda_vs_cpu": round(agree, 4), "ok": tier_ok,
        "accuracy_cuda": round(float(np.mean(lg.argmax(1) == gold)), 4), "accuracy_cpu": round(float(np.mean(lc.argmax(1) == gold)), 4),
        "max_abs_logit_diff": float(np.max(np.abs(lc - lg))),
        "cuda_sequences_per_s": speed, "cpu_sequences_per_s_batch_32": round(len(encs) / cpu_s, 1),
        "cuda_provider_options": gpu.get_provider_options().get("CUDAExecutionProvider", {}).get("device_id"),
    }
result["ok"] = ok
print(json.dumps(result, sort_keys=True))
sys.exit(0 if ok else 1)
PY
