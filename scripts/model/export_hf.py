#!/usr/bin/env python3
"""Export a Hugging Face BERT-family sequence classifier into AuroraQ's model layout.

    OUT_DIR/model.onnx      ONNX (opset 14+), inputs input_ids / attention_mask / token_type_ids
                            (int64, [batch, sequence], both axes dynamic), output logits [batch, num_labels];
                            int8 (dynamic quantisation, QInt8 weights) with --quantize, else fp32
    OUT_DIR/tokenizer.json  the HF fast-tokenizer JSON exactly as tokenizer.save_pretrained() writes it
    OUT_DIR/config.json     the model's HF config (id2label, label2id, model_type, max_position_embeddings, ...)
                            plus "auroraq_max_length"

MODEL is a hub id (e.g. ProsusAI/finbert; needs a machine that reaches huggingface.co) or a local directory
written by save_pretrained (e.g. .auroraq/models/auroraq-minilm-fpb-hf). The fp32 ONNX file and the
quantisation intermediates go to --work-dir, which should be outside the repository or under .auroraq/.

Examples:
    python export_hf.py ProsusAI/finbert --out-dir models/finbert --work-dir .auroraq/export/finbert --quantize
    python export_hf.py .auroraq/models/auroraq-minilm-fpb-hf --out-dir models/auroraq-minilm-fpb \\
        --work-dir .auroraq/models/auroraq-minilm-fpb-hf/onnx --quantize --eval-csv data/fpb/validation.csv

--eval-csv takes a CSV with columns label,sentence (label names as in the model's label2id, any case) and
reports accuracy, macro-F1, per-class F1 and the confusion matrix of the fp32 and the int8 model, and how often
their argmax labels agree. --golden-texts FILE (UTF-8, one sentence a line) writes a golden.json with the token
ids and the batch-1 logits of the exported model.onnx, for tests of other runtimes.
"""
import argparse
import csv
import hashlib
import inspect
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np

INPUT_NAMES = ["input_ids", "attention_mask", "token_type_ids"]


def log(msg):
    print(f"[export {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_info(path):
    return {"bytes": os.path.getsize(path), "sha256": sha256(path)}


# --------------------------------------------------------------------------------------------------- metrics


def metrics(gold, pred, labels):
    """Accuracy, per-class precision/recall/F1, macro-F1 and confusion matrix (rows gold, columns predicted)."""
    n = len(labels)
    cm = [[0] * n for _ in range(n)]
    for g, p in zip(gold, pred):
        cm[g][p] += 1
    per_class = {}
    f1s = []
    for i, name in enumerate(labels):
        tp = cm[i][i]
        fp = sum(cm[r][i] for r in range(n)) - tp
        fn = sum(cm[i]) - tp
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        f1s.append(f1)
        per_class[name] = {"precision": prec, "recall": rec, "f1": f1, "support": sum(cm[i])}
    acc = sum(cm[i][i] for i in range(n)) / max(1, len(gold))
    return {
        "n": len(gold),
        "accuracy": acc,
        "macro_f1": sum(f1s) / n,
        "per_class": per_class,
        "confusion_matrix": {"labels": labels, "rows_gold_cols_pred": cm},
    }


def read_labelled_csv(path, label2id):
    """Rows of a label,sentence CSV as (sentences, label ids); label names matched case-insensitively."""
    lower = {k.lower(): v for k, v in label2id.items()}
    texts, gold = [], []
    with open(path, encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            name = row["label"].strip().lower()
            if name not in lower:
                raise SystemExit(f"{path}: label {row['label']!r} is not one of the model's labels {sorted(label2id)}")
            texts.append(row["sentence"])
            gold.append(lower[name])
    return texts, gold


# --------------------------------------------------------------------------------------------------- ONNX Runtime


def ort_session(path, threads=0, opt_level=None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    if opt_level is not None:
        so.graph_optimization_level = opt_level
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def ort_feed(session, enc):
    names = {i.name for i in session.get_inputs()}
    feed = {}
    for name in INPUT_NAMES:
        if name not in names:
            continue
        if name in enc:
            feed[name] = np.asarray(enc[name], dtype=np.int64)
        else:  # token_type_ids for a tokenizer that does not emit them
            feed[name] = np.zeros_like(np.asarray(enc["input_ids"], dtype=np.int64))
    return feed


def ort_logits(session, tokenizer, texts, max_length, batch_size=32):
    """Logits for texts, in batches sorted by length (padding to the longest in each batch)."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = [None] * len(texts)
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        enc = tokenizer([texts[i] for i in idx], truncation=True, max_length=max_length, padding=True, return_tensors="np")
        logits = session.run(["logits"], ort_feed(session, enc))[0]
        for j, i in enumerate(idx):
            out[i] = logits[j]
    return np.stack(out)


# --------------------------------------------------------------------------------------------------- export


def load_hf(model_id, revision=None):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_id, revision=revision, use_fast=True)
    if not getattr(tokenizer, "is_fast", False):
        raise SystemExit(f"{model_id}: no fast tokenizer (tokenizer.json) could be made for it")
    model = AutoModelForSequenceClassification.from_pretrained(model_id, revision=revision)
    model.eval()
    return tokenizer, model


class LogitsOnly:
    """Wraps a HF classifier so that the traced graph takes the three inputs positionally and returns logits."""

    def __new__(cls, model, with_token_types):
        import torch

        class _W(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            if with_token_types:

                def forward(self, input_ids, attention_mask, token_type_ids):
                    return self.m(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, return_dict=True).logits

            else:

                def forward(self, input_ids, attention_mask):
                    return self.m(input_ids=input_ids, attention_mask=attention_mask, return_dict=True).logits

        return _W(model).eval()


def export_onnx(model, tokenizer, path, opset=14):
    import torch

    with_tt = "token_type_ids" in inspect.signature(model.forward).parameters
    if not with_tt:
        log("this model takes no token_type_ids: the ONNX graph will have input_ids and attention_mask only")
    names = INPUT_NAMES if with_tt else INPUT_NAMES[:2]
    sample = tokenizer(
        ["Operating profit rose to EUR 13.1 mn from EUR 8.7 mn .", "Sales fell ."],
        padding=True,
        truncation=True,
        return_tensors="pt",
    )
    args = tuple(sample[n] if n in sample else torch.zeros_like(sample["input_ids"]) for n in names)
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes["logits"] = {0: "batch"}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(
            LogitsOnly(model, with_tt),
            args,
            path,
            input_names=names,
            output_names=["logits"],
            dynamic_axes=axes,
            opset_version=opset,
            do_constant_folding=True,
        )
    import onnx

    onnx.checker.check_model(onnx.load(path))
    return names


def check_against_torch(model, tokenizer, onnx_path, max_length, texts):
    import torch

    session = ort_session(onnx_path)
    enc = tokenizer(texts, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
    with torch.no_grad():
        ref = model(**{k: v for k, v in enc.items() if k in INPUT_NAMES}).logits.numpy()
    got = session.run(["logits"], ort_feed(session, {k: v.numpy() for k, v in enc.items()}))[0]
    return float(np.max(np.abs(ref - got)))


def quantize(fp32_path, int8_path, work_dir, per_channel=True, reduce_range=True, preprocess=True):
    """Dynamic int8 quantisation (QInt8 weights, uint8 activations quantised at run time)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src = fp32_path
    if preprocess:
        from onnxruntime.quantization.shape_inference import quant_pre_process

        src = os.path.join(work_dir, "model.fp32.preprocessed.onnx")
        # symbolic shape inference fails on this graph ("Incomplete symbolic shape inference"): ONNX shape
        # inference and ONNX Runtime's basic graph optimisation only
        quant_pre_process(fp32_path, src, skip_symbolic_shape=True)
    quantize_dynamic(src, int8_path, weight_type=QuantType.QInt8, per_channel=per_channel, reduce_range=reduce_range)


def write_config(model, out_path, max_length, name):
    # what save_pretrained writes (the fields that differ from the defaults), plus the fields runtimes rely on
    cfg = model.config.to_diff_dict()
    for key in ("model_type", "max_position_embeddings", "vocab_size", "type_vocab_size", "pad_token_id"):
        if hasattr(model.config, key):
            cfg[key] = getattr(model.config, key)
    cfg["_name_or_path"] = name
    cfg["architectures"] = [type(model).__name__]
    # HF writes id2label keys as strings; keep that, and make both maps explicit and consistent
    id2label = {str(int(k)): v for k, v in model.config.id2label.items()}
    cfg["id2label"] = id2label
    cfg["label2id"] = {v: int(k) for k, v in id2label.items()}
    cfg["auroraq_max_length"] = int(max_length)
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(cfg, f, indent=2, sort_keys=True, ensure_ascii=False)
        f.write("\n")


def write_tokenizer(tokenizer_source, revision, out_path):
    """tokenizer.json as a freshly loaded HF fast tokenizer saves it (before any call changes its
    truncation/padding state), so that the file does not depend on what this script encoded before."""
    from transformers import AutoTokenizer

    fresh = AutoTokenizer.from_pretrained(tokenizer_source, revision=revision, use_fast=True)
    with tempfile.TemporaryDirectory() as tmp:
        fresh.save_pretrained(tmp)
        shutil.copyfile(os.path.join(tmp, "tokenizer.json"), out_path)


def golden(onnx_path, tokenizer, texts, max_length, threads=0):
    """Token ids (truncation at max_length, no padding) and batch-1 logits from onnxruntime for each text."""
    import onnxruntime as ort

    session = ort_session(onnx_path, threads)
    cases = []
    for text in texts:
        enc = tokenizer([text], truncation=True, max_length=max_length, padding=False, return_tensors="np")
        logits = session.run(["logits"], ort_feed(session, enc))[0][0]
        cases.append({"text": text, "input_ids": [int(x) for x in enc["input_ids"][0]], "logits": [float(x) for x in logits]})
    # how much the logits move with ONNX Runtime's graph optimisation level (runtimes may pick another one): for
    # an int8 model the fused kernels of the extended level round differently, and activation quantisation
    # amplifies that, so a runtime must use ORT_ENABLE_EXTENDED or ORT_ENABLE_ALL (the default) to match
    spread = {}
    for name in ("ORT_DISABLE_ALL", "ORT_ENABLE_BASIC", "ORT_ENABLE_EXTENDED"):
        s = ort_session(onnx_path, threads, getattr(ort.GraphOptimizationLevel, name))
        worst = 0.0
        for case in cases:
            ids = np.asarray([case["input_ids"]], dtype=np.int64)
            enc = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
            got = s.run(["logits"], ort_feed(s, enc))[0][0]
            worst = max(worst, float(np.max(np.abs(got - np.asarray(case["logits"])))))
        spread[name] = worst
    return {"onnxruntime": ort.__version__, "max_length": int(max_length), "cases": cases}, spread


def golden_json(g):
    """golden.json text: one line per case, arrays inline."""
    dump = lambda v: json.dumps(v, ensure_ascii=False)  # noqa: E731
    lines = ["{", f'  "onnxruntime": {dump(g["onnxruntime"])},', f'  "max_length": {g["max_length"]},', '  "cases": [']
    for i, c in enumerate(g["cases"]):
        sep = "," if i + 1 < len(g["cases"]) else ""
        lines.append(f'    {{"text": {dump(c["text"])}, "input_ids": {dump(c["input_ids"])}, "logits": {dump(c["logits"])}}}{sep}')
    lines += ["  ]", "}", ""]
    text = "\n".join(lines)
    assert json.loads(text) == g
    return text


def check_tokenizer_json(tokenizer_json, hf_tokenizer, texts, max_length):
    """The committed tokenizer.json, read by the tokenizers library (as a Rust runtime would), with truncation
    at max_length and no padding, must give the same ids as the HF tokenizer."""
    from tokenizers import Tokenizer

    tk = Tokenizer.from_file(tokenizer_json)
    tk.no_padding()
    tk.enable_truncation(max_length)
    bad = 0
    for text in texts:
        a = tk.encode(text).ids
        b = hf_tokenizer([text], truncation=True, max_length=max_length)["input_ids"][0]
        bad += a != b
    return bad


def evaluate(paths, tokenizer, csv_path, label2id, max_length, threads):
    """Metrics of each model on the CSV, one sentence at a time (batch 1, no padding: how golden.json is made,
    and the reference), and in padded batches of 32 sorted by length. The int8 model's activations are
    quantised with one scale per batch, so its batched results depend on which sentences share a batch."""
    labels = [l for l, _ in sorted(label2id.items(), key=lambda kv: kv[1])]
    texts, gold = read_labelled_csv(csv_path, label2id)
    report, preds = {"note": "TAG: batch 1; TAG_batched: padded batches of 32 sorted by length"}, {}
    for tag, path in paths.items():
        session = ort_session(path, threads)
        for suffix, batch in (("", 1), ("_batched", 32)):
            t0 = time.time()
            logits = ort_logits(session, tokenizer, texts, max_length, batch_size=batch)
            key = tag + suffix
            preds[key] = logits.argmax(axis=1).tolist()
            report[key] = metrics(gold, preds[key], labels)
            report[key]["seconds"] = round(time.time() - t0, 2)
            log(f"{key}: accuracy {report[key]['accuracy']:.4f} macro-F1 {report[key]['macro_f1']:.4f} on {csv_path}")

    def agree(a, b):
        same = sum(x == y for x, y in zip(preds[a], preds[b]))
        log(f"{a} vs {b} argmax agreement {same}/{len(texts)} = {same / len(texts):.4f}")
        return {"same": same, "n": len(texts), "fraction": same / len(texts)}

    if "int8" in paths:
        report["fp32_int8_agreement"] = agree("fp32", "int8")
        report["fp32_int8_agreement_batched"] = agree("fp32_batched", "int8_batched")
        report["int8_batch1_vs_batched_agreement"] = agree("int8", "int8_batched")
    return report


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", help="hub id (e.g. ProsusAI/finbert) or local save_pretrained directory")
    ap.add_argument("--revision", default=None, help="hub revision (branch, tag or commit) to pin")
    ap.add_argument("--out-dir", help="where model.onnx, tokenizer.json, config.json go")
    ap.add_argument("--work-dir", help="where the fp32 ONNX file and intermediates go")
    ap.add_argument("--name", default=None, help="_name_or_path written into config.json (default: the model argument's last part)")
    ap.add_argument("--max-length", type=int, default=128, help="auroraq_max_length: truncation length in tokens")
    ap.add_argument("--opset", type=int, default=14)
    ap.add_argument("--quantize", action="store_true", help="ship the int8 model (dynamic quantisation, QInt8 weights)")
    ap.add_argument("--no-per-channel", dest="per_channel", action="store_false", help="per-tensor weight scales")
    ap.add_argument(
        "--no-reduce-range",
        dest="reduce_range",
        action="store_false",
        help="full 8-bit weights (can saturate, and so differ, on x86 CPUs without VNNI)",
    )
    ap.add_argument("--no-preprocess", dest="preprocess", action="store_false", help="skip quant_pre_process")
    ap.add_argument("--eval-csv", default=None, help="label,sentence CSV to evaluate fp32 (and int8) on")
    ap.add_argument("--golden-texts", default=None, help="UTF-8 file, one sentence a line: write OUT_DIR/golden.json")
    ap.add_argument("--report", default=None, help="JSON report path (default WORK_DIR/export_report.json)")
    ap.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: its default)")
    ap.add_argument(
        "--verify",
        metavar="DIR",
        help="instead of exporting: check an exported DIR with onnxruntime and the tokenizers library only "
        "(no torch/transformers): sizes and sha256, golden.json if present, and --eval-csv metrics",
    )
    args = ap.parse_args(argv)
    if args.verify:
        verify(args.verify, args.eval_csv, args.threads)
        return
    if not (args.model and args.out_dir and args.work_dir):
        ap.error("MODEL, --out-dir and --work-dir are needed to export")
    run(args)


def verify(model_dir, eval_csv=None, threads=0):
    """Checks an exported directory the way a runtime would use it: tokenizer.json through the tokenizers
    library (truncation at auroraq_max_length, no padding, batches padded with [PAD]=pad_token_id and mask 0)."""
    import onnxruntime
    from tokenizers import Tokenizer

    with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as f:
        cfg = json.load(f)
    max_length = int(cfg.get("auroraq_max_length", 128))
    labels = [cfg["id2label"][str(i)] for i in range(len(cfg["id2label"]))]
    tk = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    tk.no_padding()
    tk.enable_truncation(max_length)
    session = ort_session(os.path.join(model_dir, "model.onnx"), threads)
    pad = int(cfg.get("pad_token_id", 0) or 0)

    def run_batch(texts):
        encs = tk.encode_batch(texts)
        width = max(len(e.ids) for e in encs)
        ids = np.full((len(encs), width), pad, dtype=np.int64)
        mask = np.zeros((len(encs), width), dtype=np.int64)
        types = np.zeros((len(encs), width), dtype=np.int64)
        for i, e in enumerate(encs):
            ids[i, : len(e.ids)] = e.ids
            mask[i, : len(e.ids)] = 1
            types[i, : len(e.ids)] = e.type_ids
        feed = ort_feed(session, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types})
        return session.run(["logits"], feed)[0], encs

    report = {"dir": model_dir, "onnxruntime": onnxruntime.__version__, "labels": labels, "max_length": max_length}
    report["files"] = {n: file_info(os.path.join(model_dir, n)) for n in ("model.onnx", "tokenizer.json", "config.json")}
    gpath = os.path.join(model_dir, "golden.json")
    if os.path.exists(gpath):
        with open(gpath, encoding="utf-8") as f:
            g = json.load(f)
        worst, ids_ok = 0.0, 0
        for case in g["cases"]:
            logits, encs = run_batch([case["text"]])
            ids_ok += encs[0].ids == case["input_ids"]
            worst = max(worst, float(np.max(np.abs(logits[0] - np.asarray(case["logits"])))))
        report["golden"] = {"cases": len(g["cases"]), "input_ids_equal": ids_ok, "max_abs_logit_diff": worst, "recorded_with": g["onnxruntime"]}
        log(f"golden: input_ids equal in {ids_ok}/{len(g['cases'])} cases, max |logit diff| {worst:.2e}")
    if eval_csv:
        texts, gold = read_labelled_csv(eval_csv, {l: i for i, l in enumerate(labels)})
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        pred = [None] * len(texts)
        for s in range(0, len(order), 32):
            idx = order[s : s + 32]
            logits, _ = run_batch([texts[i] for i in idx])
            for j, i in enumerate(idx):
                pred[i] = int(logits[j].argmax())
        report["eval"] = metrics(gold, pred, labels)
        report["eval"]["csv"] = eval_csv
        log(f"accuracy {report['eval']['accuracy']:.4f} macro-F1 {report['eval']['macro_f1']:.4f} on {eval_csv}")
    print(json.dumps(report, indent=2, ensure_ascii=False))
    return report


def run(args, golden_texts=None):
    """Does the export described by args (see main); golden_texts overrides --golden-texts. Returns the report."""
    import onnxruntime
    import torch
    import transformers

    os.makedirs(args.out_dir, exist_ok=True)
    os.makedirs(args.work_dir, exist_ok=True)
    if args.name:
        name = args.name
    elif os.path.isdir(args.model):
        name = os.path.basename(os.path.abspath(args.model))
    else:
        name = args.model
    log(f"loading {args.model}")
    tokenizer, model = load_hf(args.model, args.revision)
    if model.config.max_position_embeddings < args.max_length:
        raise SystemExit(f"--max-length {args.max_length} exceeds max_position_embeddings {model.config.max_position_embeddings}")

    fp32 = os.path.join(args.work_dir, "model.fp32.onnx")
    log(f"exporting {fp32} (opset {args.opset})")
    inputs = export_onnx(model, tokenizer, fp32, args.opset)
    probe = [
        "Operating profit rose to EUR 13.1 mn from EUR 8.7 mn in the corresponding period in 2007 .",
        "The company 's net loss widened .",
        "The contract value was not disclosed .",
        "Finnish Ålandsbanken said revenue fell — by 5 %.",
    ]
    diff = check_against_torch(model, tokenizer, fp32, args.max_length, probe)
    log(f"fp32 ONNX vs PyTorch: max |logit difference| {diff:.2e}")
    if diff > 1e-3:
        raise SystemExit(f"the ONNX export disagrees with PyTorch (max |diff| {diff})")

    paths = {"fp32": fp32}
    shipped = fp32
    if args.quantize:
        int8 = os.path.join(args.work_dir, "model.int8.onnx")
        log(f"quantising to {int8} (QInt8 weights, per_channel={args.per_channel}, reduce_range={args.reduce_range})")
        quantize(fp32, int8, args.work_dir, args.per_channel, args.reduce_range, args.preprocess)
        paths["int8"] = int8
        shipped = int8

    out_model = os.path.join(args.out_dir, "model.onnx")
    out_tok = os.path.join(args.out_dir, "tokenizer.json")
    out_cfg = os.path.join(args.out_dir, "config.json")
    shutil.copyfile(shipped, out_model)
    write_tokenizer(args.model, args.revision, out_tok)
    write_config(model, out_cfg, args.max_length, name)

    report = {
        "model": args.model,
        "revision": args.revision,
        "inputs": inputs,
        "opset": args.opset,
        "max_length": args.max_length,
        "quantized": bool(args.quantize),
        "quantization": {"weight_type": "QInt8", "per_channel": args.per_channel, "reduce_range": args.reduce_range, "preprocess": args.preprocess}
        if args.quantize
        else None,
        "onnx_vs_torch_max_abs_diff": diff,
        "versions": {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "onnxruntime": onnxruntime.__version__,
        },
        "files": {os.path.basename(p): file_info(p) for p in (out_model, out_tok, out_cfg)},
        "fp32_onnx": file_info(fp32),
    }
    bad = check_tokenizer_json(out_tok, tokenizer, probe, args.max_length)
    report["tokenizer_json_mismatches"] = bad
    if bad:
        raise SystemExit(f"{out_tok} read by the tokenizers library disagrees with the HF tokenizer on {bad} probe texts")

    if args.eval_csv:
        report["eval"] = evaluate(paths, tokenizer, args.eval_csv, model.config.label2id, args.max_length, args.threads)
        report["eval"]["csv"] = args.eval_csv

    if golden_texts is None and args.golden_texts:
        with open(args.golden_texts, encoding="utf-8") as f:
            golden_texts = [line.rstrip("\n") for line in f if line.strip()]
    if golden_texts:
        bad = check_tokenizer_json(out_tok, tokenizer, golden_texts, args.max_length)
        if bad:
            raise SystemExit(f"{out_tok} disagrees with the HF tokenizer on {bad} golden texts")
        g, spread = golden(out_model, tokenizer, golden_texts, args.max_length, args.threads)
        gpath = os.path.join(args.out_dir, "golden.json")
        with open(gpath, "w", encoding="utf-8") as f:
            f.write(golden_json(g))
        report["golden"] = {"path": gpath, "cases": len(g["cases"]), "max_abs_logit_diff_vs_ort_enable_all": spread}
        log(f"golden: {len(g['cases'])} cases in {gpath} (ORT_ENABLE_ALL); max |logit diff| at other optimisation levels: "
            + ", ".join(f"{k} {v:.1e}" for k, v in spread.items()))

    rpath = args.report or os.path.join(args.work_dir, "export_report.json")
    with open(rpath, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2, ensure_ascii=False)
        f.write("\n")
    for fname, info in report["files"].items():
        log(f"{fname}: {info['bytes']} bytes sha256 {info['sha256']}")
    log(f"report in {rpath}")
    return report


if __name__ == "__main__":
    main()
