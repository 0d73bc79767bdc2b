#!/usr/bin/env python3
"""Evaluates AuroraQ's sentiment tiers (exported int8 ONNX directories) on the validation sets with ONNX Runtime
and the tokenizers library only, the way the Rust runtime runs them (tokenizer.json with truncation at
auroraq_max_length, padded batches with the id of "[PAD]" or 0, mask 0 on padding, token_type_ids only when the
graph has that input), and writes scripts/model/eval_report.json.

For every tier and set: accuracy, macro-F1, per-class precision / recall / F1, confusion matrix (rows gold,
columns predicted, order of the model's id2label), at batch 1 (no padding) and in length-sorted padded batches
of 32 (label agreement and max |logit diff| between the two), plus sequences/s of the batched pass.

    .auroraq/venv/bin/python scripts/model/eval_tiers.py \\
        --tier old=.auroraq/old-default --tier teacher=models/auroraq-mpnet-fpb --tier default=models/auroraq-minilm-fpb
"""
import argparse
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

from export_hf import batched_logits, file_info, length_order, metrics, ort_session, read_labelled_csv  # noqa: E402


def log(msg):
    print(f"[eval {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def load(model_dir):
    from tokenizers import Tokenizer

    cfg = json.load(open(os.path.join(model_dir, "config.json"), encoding="utf-8"))
    tk = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    tk.no_padding()
    tk.enable_truncation(int(cfg.get("auroraq_max_length", 128)))
    labels = [cfg["id2label"][str(i)].lower() for i in range(len(cfg["id2label"]))]
    rust_pad = tk.token_to_id("[PAD]")  # what pipeline/sentiment/src/model.rs pads with
    return cfg, tk, labels, (0 if rust_pad is None else rust_pad)


def evaluate(model_dir, csv_path, threads, examples=0):
    cfg, tk, labels, pad = load(model_dir)
    sess = ort_session(os.path.join(model_dir, "model.onnx"), threads)
    texts, gold = read_labelled_csv(csv_path, {l: i for i, l in enumerate(labels)})
    encs = [(e.ids, e.type_ids) for e in tk.encode_batch(texts)]
    t0 = time.time()
    single = batched_logits(sess, encs, 1)
    t1 = time.time()
    batched = batched_logits(sess, encs, 32, length_order(encs), pad)
    t2 = time.time()
    pred = single.argmax(axis=1).tolist()
    out = metrics(gold, pred, labels)
    out["csv"] = os.path.relpath(csv_path, ROOT)
    out["batched_32_sorted"] = {
        "accuracy": metrics(gold, batched.argmax(axis=1).tolist(), labels)["accuracy"],
        "label_agreement_with_batch_1": float(np.mean(batched.argmax(axis=1) == single.argmax(axis=1))),
        "max_abs_logit_diff_vs_batch_1": float(np.max(np.abs(batched - single))),
        "pad_id": pad,
    }
    out["seconds"] = {"batch_1": round(t1 - t0, 2), "batch_32_sorted": round(t2 - t1, 2)}
    out["sequences_per_s"] = {"batch_1": round(len(texts) / (t1 - t0), 1), "batch_32_sorted": round(len(texts) / (t2 - t1), 1)}
    if examples:
        wrong = [i for i in range(len(texts)) if pred[i] != gold[i]]
        e = np.exp(single - single.max(axis=1, keepdims=True))
        p = e / e.sum(axis=1, keepdims=True)
        out["errors"] = [
            {"sentence": texts[i], "gold": labels[gold[i]], "predicted": labels[pred[i]], "p": [round(float(x), 3) for x in p[i]]}
            for i in wrong[:examples]
        ]
        out["predictions"] = [labels[x] for x in pred]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tier", action="append", default=[], help="NAME=MODEL_DIR (repeatable)")
    ap.add_argument("--csv", action="append", default=None, help="label,sentence CSVs (default: both validation sets)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--errors", type=int, default=0, help="also list the first N misclassified sentences per tier and set")
    ap.add_argument("--out", default=os.path.join(HERE, "eval_report.json"))
    ap.add_argument("--reuse", action="append", default=[], help="NAME=REPORT.json: take tier NAME from an earlier report of this "
                    "script instead of re-running it (its model files' sha256 must still match)")
    ap.add_argument("--note", action="append", default=[], help="KEY=TEXT notes stored in the report")
    args = ap.parse_args()
    csvs = args.csv or [os.path.join(ROOT, "data/fpb/validation.csv"), os.path.join(ROOT, "data/eval/crypto_headlines_validation.csv")]
    import onnxruntime

    report = {
        "what": "int8 ONNX tiers on the validation sets, Python onnxruntime CPUExecutionProvider, batch 1 (no padding) "
        "unless noted; confusion matrices rows = gold, columns = predicted, in the model's id2label order",
        "onnxruntime": onnxruntime.__version__,
        "threads": args.threads,
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "csv_sha256": {os.path.relpath(c, ROOT): file_info(c)["sha256"] for c in csvs},
        "notes": dict(n.split("=", 1) for n in args.note),
        "tiers": {},
    }
    for spec in args.reuse:
        name, path = spec.split("=", 1)
        t = json.load(open(path, encoding="utf-8"))["tiers"][name]
        for fname, info in t["files"].items():
            if file_info(os.path.join(ROOT, t["dir"], fname))["sha256"] != info["sha256"]:
                raise SystemExit(f"--reuse {spec}: {t['dir']}/{fname} changed since that report")
        t["reused_from"] = os.path.relpath(path, ROOT)
        report["tiers"][name] = t
        log(f"{name}: reused from {path}")
    for spec in args.tier:
        name, d = spec.split("=", 1)
        t = {"dir": os.path.relpath(d, ROOT), "files": {n: file_info(os.path.join(d, n)) for n in ("model.onnx", "tokenizer.json", "config.json")}}
        for c in csvs:
            key = os.path.basename(c).replace(".csv", "")
            key = "fpb_validation" if key == "validation" else key
            m = evaluate(d, c, args.threads, args.errors)
            t[key] = m
            f1 = {k: round(v["f1"], 4) for k, v in m["per_class"].items()}
            log(f"{name} on {key}: accuracy {m['accuracy']:.4f} macro-F1 {m['macro_f1']:.4f} F1 {f1} "
                f"cm {m['confusion_matrix']['rows_gold_cols_pred']} batched agreement {m['batched_32_sorted']['label_agreement_with_batch_1']:.4f} "
                f"max diff {m['batched_32_sorted']['max_abs_logit_diff_vs_batch_1']:.2e}")
        report["tiers"][name] = t
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2, ensure_ascii=False)
        f.write("\n")
    log(f"wrote {os.path.relpath(args.out, ROOT)}")


if __name__ == "__main__":
    main()
