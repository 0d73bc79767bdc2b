#!/usr/bin/env python3
"""Rebuilds a PyTorch (Hugging Face `transformers`) checkpoint from the int8 ONNX default model, for the
API benchmark's baseline: the seed's design (FastAPI calling a `transformers` pipeline) on the same weights.

The ONNX file keeps the training graph's names: biases, LayerNorms, the pooler and the classifier are
float initializers named after their module (`m.bert....`); the embedding tables are uint8 with one scale
and zero point each (DequantizeLinear); every encoder Linear is an int8 weight of MatMulIntegerToFloat
with per-output-channel scales and zero points, named after its node (`/m/bert/encoder/layer.0/attention/
self/query/MatMul`). Dequantising gives back the weights the int8 model computes with, so the baseline
and the API run the same numbers up to activation quantisation; `--check` reports how often their labels
agree on the FPB validation sentences.

    python3 scripts/bench/onnx_to_torch.py models/auroraq-minilm-fpb OUT_DIR [--check ../shared/data/fpb/train.csv]
"""

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper


def dequant(q, scale, zero):
    return (q.astype(np.float32) - zero.astype(np.float32)) * scale.astype(np.float32)


def state_dict(model_path):
    m = onnx.load(str(model_path))
    init = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    sd = {}
    for name, arr in init.items():
        if name.startswith("m.") and not name.endswith(("_quantized", "_scale", "_zero_point")):
            sd[name[2:]] = arr.astype(np.float32)
    for n in m.graph.node:
        if n.op_type == "DequantizeLinear" and n.input[0] in init and n.input[0].endswith("_quantized"):
            # Embedding tables: uint8, one scale and zero point.
            q, s, z = (init[x] for x in n.input[:3])
            sd[n.input[0][2:-len("_quantized")]] = dequant(q, s, z)
        elif n.op_type == "MatMulIntegerToFloat":
            # x (quantised) @ W: W [in, out] int8, scale and zero point per output column.
            q, s, z = init[n.input[1]], init[n.input[3]], init[n.input[5]]
            path = n.name.strip("/").split("/")[1:-1]  # m/bert/.../query/MatMul -> bert ... query
            sd[".".join(path) + ".weight"] = dequant(q, s, z).T.copy()
    gemm = {n.input[1]: n for n in m.graph.node if n.op_type == "Gemm"}
    for w, n in gemm.items():
        trans_b = next((a.i for a in n.attribute if a.name == "transB"), 0)
        if not trans_b:  # torch's Linear keeps [out, in]
            sd[w[2:]] = sd[w[2:]].T.copy()
    return sd


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--check", type=Path, help="label,sentence CSV: report label agreement with the ONNX model")
    ap.add_argument("--rows", type=int, default=400)
    a = ap.parse_args()

    import torch
    from transformers import BertConfig, BertForSequenceClassification

    sd = state_dict(a.model_dir / "model.onnx")
    cfg = json.loads((a.model_dir / "config.json").read_text())
    config = BertConfig(**{k: v for k, v in cfg.items() if not k.startswith("auroraq_")})
    model = BertForSequenceClassification(config)
    tensors = {k: torch.from_numpy(v) for k, v in sd.items()}
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        sys.exit(f"weights do not map: missing {missing}, unexpected {unexpected}")
    a.out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(a.out_dir)
    shutil.copy(a.model_dir / "tokenizer.json", a.out_dir / "tokenizer.json")
    (a.out_dir / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "BertTokenizerFast", "do_lower_case": True,
        "model_max_length": cfg.get("auroraq_max_length", 128),
    }))
    print(f"wrote {a.out_dir} ({len(sd)} tensors)")

    if a.check:
        import csv
        import onnxruntime as ort
        from transformers import AutoTokenizer
        tok = AutoTokenizer.from_pretrained(a.out_dir)
        sess = ort.InferenceSession(str(a.model_dir / "model.onnx"))
        rows = list(csv.DictReader(a.check.open()))[: a.rows]
        agree = 0
        model.eval()
        for r in rows:
            enc = tok(r["sentence"], truncation=True, max_length=128, return_tensors="np")
            feeds = {i.name: enc[i.name].astype(np.int64) for i in sess.get_inputs() if i.name in enc}
            onnx_label = int(np.argmax(sess.run(None, feeds)[0][0]))
            with torch.no_grad():
                t = model(**{k: torch.from_numpy(v.astype(np.int64)) for k, v in enc.items()}).logits
            agree += int(int(t.argmax(-1)[0]) == onnx_label)
        print(json.dumps({"check_rows": len(rows), "label_agreement": agree / max(1, len(rows))}))


if __name__ == "__main__":
    main()
