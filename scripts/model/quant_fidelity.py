#!/usr/bin/env python3
"""How closely int8 exports follow their fp32 model, measured without gold labels and without validation text.

Choosing a quantisation variant by its validation accuracy picks noise (a few borderline sentences flip either
way) and spends the validation set. This scores each int8 ONNX file against the fp32 ONNX file of the same
weights on texts that are neither validation nor calibration texts: `--fpb N` FPB train sentences outside the
calibration sample (the sample export_hf.calibration_feeds draws from --calib-csv with --calib-samples and
--calib-seed, reproduced here) and `--crypto N` unlabelled crypto headlines (distill.py's pool: no validation
or labelled row). Reports, per int8 file: label agreement with fp32, mean KL(fp32 || int8) of the softmax
outputs, and the largest |logit difference|, all at batch 1.

    .auroraq/venv/bin/python scripts/model/quant_fidelity.py --tokenizer-dir models/auroraq-mpnet-fpb \\
        --fp32 .auroraq/models/auroraq-mpnet-fpb-hf/onnx/model.fp32.onnx \\
        --int8 shipped=models/auroraq-mpnet-fpb/model.onnx --int8 smooth0.5=/tmp/smooth/model.onnx
"""
import argparse
import json
import os
import random
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

from export_hf import batched_logits, calibration_pick, ort_session, softmax  # noqa: E402
from train_teacher import read_labelled  # noqa: E402


def log(msg):
    print(f"[fidelity {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def held_out_texts(args):
    """FPB train sentences outside the calibration sample, and unlabelled pool headlines; seeded."""
    calib = [r[1] for c in args.calib_csv for r in read_labelled(c)]
    calib_texts = {calib[i] for i in calibration_pick(len(calib), args.calib_samples, args.calib_seed)}
    fpb = [r[1] for r in read_labelled(args.fpb_train) if r[1] not in calib_texts]
    rng = random.Random(args.seed)
    out = [("fpb_train", t) for t in rng.sample(fpb, min(args.fpb, len(fpb)))]
    if args.crypto:
        import distill

        ns = argparse.Namespace(crypto_val=args.crypto_val, crypto_train=args.crypto_train, crypto_sample=args.crypto_sample, news=args.news)
        pool, _, _, _ = distill.build_pool(ns)
        pool = [t for _, t in pool if t not in calib_texts]
        out += [("crypto_pool", t) for t in rng.sample(pool, min(args.crypto, len(pool)))]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenizer-dir", required=True, help="a model directory with tokenizer.json and config.json")
    ap.add_argument("--fp32", required=True, help="the fp32 ONNX file the int8 files were made from")
    ap.add_argument("--int8", action="append", required=True, metavar="NAME=ONNX")
    ap.add_argument("--fpb", type=int, default=250)
    ap.add_argument("--crypto", type=int, default=250)
    ap.add_argument("--seed", type=int, default=99)
    ap.add_argument("--fpb-train", default=os.path.join(ROOT, "data/fpb/train.csv"))
    ap.add_argument("--calib-csv", nargs="*", default=[os.path.join(ROOT, "data/fpb/train.csv")])
    ap.add_argument("--calib-samples", type=int, default=512)
    ap.add_argument("--calib-seed", type=int, default=1234)
    ap.add_argument("--crypto-val", default=os.path.join(ROOT, "data/eval/crypto_headlines_validation.csv"))
    ap.add_argument("--crypto-train", default=os.path.join(ROOT, "data/eval/crypto_headlines_train.csv"))
    ap.add_argument("--crypto-sample", nargs="*", default=[os.path.join(ROOT, f"data/eval/crypto_headlines_sample{r}.csv") for r in ("", "_r2")])
    ap.add_argument("--news", default="/work/shared/data/crypto_news/crypto_news_2025-05_2025-08.csv.gz")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="also write the JSON report here")
    args = ap.parse_args()

    from tokenizers import Tokenizer

    cfg = json.load(open(os.path.join(args.tokenizer_dir, "config.json"), encoding="utf-8"))
    tk = Tokenizer.from_file(os.path.join(args.tokenizer_dir, "tokenizer.json"))
    tk.no_padding()
    tk.enable_truncation(int(cfg.get("auroraq_max_length", 128)))
    texts = held_out_texts(args)
    encs = [(e.ids, e.type_ids) for e in tk.encode_batch([t for _, t in texts])]
    groups = sorted({g for g, _ in texts})
    log(f"{len(texts)} held-out texts: " + ", ".join(f"{g} {sum(x == g for x, _ in texts)}" for g in groups))
    ref = batched_logits(ort_session(args.fp32, args.threads), encs, 1)
    p_ref = softmax(ref)
    report = {"fp32": os.path.relpath(args.fp32, ROOT), "texts": {g: sum(x == g for x, _ in texts) for g in groups}, "int8": {}}
    for spec in args.int8:
        name, path = spec.split("=", 1)
        lg = batched_logits(ort_session(path, args.threads), encs, 1)
        p = softmax(lg)
        kl = (p_ref * (np.log(np.clip(p_ref, 1e-12, None)) - np.log(np.clip(p, 1e-12, None)))).sum(axis=1)
        agree = lg.argmax(axis=1) == ref.argmax(axis=1)
        row = {"file": os.path.relpath(path, ROOT), "agreement": float(agree.mean()), "mean_kl": float(kl.mean()),
               "max_abs_logit_diff": float(np.abs(lg - ref).max())}
        for g in groups:
            m = np.array([x == g for x, _ in texts])
            row[g] = {"agreement": float(agree[m].mean()), "mean_kl": float(kl[m].mean())}
        report["int8"][name] = row
        log(f"{name}: agreement {row['agreement']:.3f}, mean KL {row['mean_kl']:.4f}, max |dlogit| {row['max_abs_logit_diff']:.3f}")
    print(json.dumps(report, indent=2))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
