#!/usr/bin/env python3
"""Export a Hugging Face BERT-family sequence classifier into AuroraQ's model layout.

    OUT_DIR/model.onnx      ONNX (opset 14+), inputs input_ids / attention_mask / token_type_ids
                            (int64, [batch, sequence], both axes dynamic), output logits [batch, num_labels];
                            int8 with --quantize (static: QInt8 per-channel 7-bit weights, QUInt8 activations
                            with calibrated constant scales, so a text's logits do not depend on its batch;
                            --quantize dynamic: activation scales computed per run), else fp32
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
    python export_hf.py --verify models/auroraq-minilm-fpb --eval-csv data/fpb/validation.csv \\
        --bench --bench-baseline old/model.onnx

--eval-csv takes a CSV with columns label,sentence (label names as in the model's label2id, any case) and
reports accuracy, macro-F1, per-class F1 and the confusion matrix of the fp32 and the int8 model, how often
their argmax labels agree, and each model's batch invariance (batch-1 logits vs the same texts in padded
batches of 32, sorted by length and in random order). Static quantisation calibrates on --calib-csv
(default data/fpb/train.csv). A local directory whose config.json has "auroraq_pooling": "mean" is loaded as
BertMeanPoolForSequenceClassification (masked mean pooling + linear head), others as the model type's HF
sequence classifier. --golden-texts FILE (UTF-8, one sentence a line) writes a golden.json with the token
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


def pad_feed(session, encs, pad_id=0):
    """The feed of one batch of encodings ((ids, type_ids) pairs) as a runtime builds it: padded to the longest
    with pad_id, attention_mask 1 on tokens and 0 on padding, token_type_ids padded with 0."""
    width = max(len(e[0]) for e in encs)
    ids = np.full((len(encs), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(encs), width), dtype=np.int64)
    types = np.zeros((len(encs), width), dtype=np.int64)
    for i, (tok, typ) in enumerate(encs):
        ids[i, : len(tok)] = tok
        mask[i, : len(tok)] = 1
        types[i, : len(typ)] = typ
    return ort_feed(session, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types})


def batched_logits(session, encs, batch_size=1, order=None, pad_id=0):
    """Logits of every encoding, run in consecutive batches of `batch_size` taken in `order` (default: as given);
    batch_size 1 means no padding at all."""
    order = list(range(len(encs))) if order is None else list(order)
    out = [None] * len(encs)
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        logits = session.run(["logits"], pad_feed(session, [encs[i] for i in idx], pad_id))[0]
        for j, i in enumerate(idx):
            out[i] = logits[j]
    return np.stack(out)


def length_order(encs):
    return sorted(range(len(encs)), key=lambda i: (len(encs[i][0]), i))


def softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def batch_invariance(session, encs, pad_id=0, batch_size=32, seed=0, single=None):
    """How far each text's logits in padded batches of `batch_size` are from its batch-1 logits: batches of
    texts sorted by length (little padding) and in a seeded random order (much padding, mixed batch-mates).
    Returns the figures and the logits {"single", "sorted", "random"}."""
    import random

    if single is None:
        single = batched_logits(session, encs, 1)
    orders = {"sorted": length_order(encs), "random": list(range(len(encs)))}
    random.Random(seed).shuffle(orders["random"])
    p1 = softmax(single.astype(np.float64))
    figures, logits = {"batch_size": batch_size, "random_seed": seed}, {"single": single}
    for name, order in orders.items():
        got = batched_logits(session, encs, batch_size, order, pad_id)
        logits[name] = got
        same = int(np.sum(got.argmax(axis=1) == single.argmax(axis=1)))
        figures[name] = {
            "max_abs_logit_diff": float(np.max(np.abs(got - single))),
            "max_abs_prob_diff": float(np.max(np.abs(softmax(got.astype(np.float64)) - p1))),
            "label_agreement": same / len(encs),
            "same_labels": same,
            "n": len(encs),
        }
    return figures, logits


def describe_invariance(tag, f):
    return "; ".join(
        f"{tag} batch 1 vs {f['batch_size']} {k}: max |logit diff| {f[k]['max_abs_logit_diff']:.2e}, max |prob diff| "
        f"{f[k]['max_abs_prob_diff']:.2e}, label agreement {f[k]['same_labels']}/{f[k]['n']} = {f[k]['label_agreement']:.4f}"
        for k in ("sorted", "random")
    )


def throughput(paths, encs, pad_id=0, batch_sizes=(8, 32), threads=2, repeats=5):
    """Sequences per second of each model (tag -> .onnx path) on the same encodings, in batches of each size
    taken in the given order (a stream: lengths mixed), with `threads` intra-op threads. Models are timed in
    turn, `repeats` times each after a warm-up pass; the best pass counts (the least disturbed by other load)
    and the median is reported too."""
    sessions = {tag: ort_session(path, threads) for tag, path in paths.items()}
    out = {"sentences": len(encs), "threads": threads, "repeats": repeats}
    for bs in batch_sizes:
        feeds = {}
        for tag, sess in sessions.items():
            feeds[tag] = [pad_feed(sess, encs[s : s + bs], pad_id) for s in range(0, len(encs), bs)]
            for f in feeds[tag]:  # warm-up
                sess.run(["logits"], f)
        times = {tag: [] for tag in sessions}
        for _ in range(repeats):
            for tag, sess in sessions.items():
                t0 = time.perf_counter()
                for f in feeds[tag]:
                    sess.run(["logits"], f)
                times[tag].append(time.perf_counter() - t0)
        for tag in sessions:
            best, median = min(times[tag]), sorted(times[tag])[len(times[tag]) // 2]
            out.setdefault(tag, {})[f"batch_{bs}"] = {
                "seq_per_s_best": len(encs) / best,
                "seq_per_s_median": len(encs) / median,
            }
            log(f"throughput {tag} batch {bs}: {len(encs) / best:.1f} seq/s (best of {repeats}; median {len(encs) / median:.1f})")
    return out


# --------------------------------------------------------------------------------------------------- export


_MEAN_POOL_CLASS = None


def mean_pool_class():
    """BertMeanPoolForSequenceClassification: a BERT encoder (no pooler), a masked mean over the last hidden
    states (attention_mask 1 tokens only, so padding does not change it), dropout and a linear head
    hidden_size -> num_labels. This is the pooling all-MiniLM-L6-v2 was pre-trained with (sentence-transformers
    mean pooling). Its config carries "auroraq_pooling": "mean"; save_pretrained / from_pretrained work as for
    any BertPreTrainedModel (the base checkpoint's pooler weights are not used)."""
    global _MEAN_POOL_CLASS
    if _MEAN_POOL_CLASS is not None:
        return _MEAN_POOL_CLASS
    import torch
    from transformers import BertModel, BertPreTrainedModel
    from transformers.modeling_outputs import SequenceClassifierOutput

    class BertMeanPoolForSequenceClassification(BertPreTrainedModel):
        def __init__(self, config):
            super().__init__(config)
            config.auroraq_pooling = "mean"
            self.num_labels = config.num_labels
            self.bert = BertModel(config, add_pooling_layer=False)
            p = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
            self.dropout = torch.nn.Dropout(p)
            self.classifier = torch.nn.Linear(config.hidden_size, config.num_labels)
            self.post_init()

        def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None, return_dict=None, **kwargs):
            if attention_mask is None:
                attention_mask = torch.ones_like(input_ids)
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, return_dict=True).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            logits = self.classifier(self.dropout(pooled))
            loss = None
            if labels is not None:
                loss = torch.nn.functional.cross_entropy(logits, labels)
            return SequenceClassifierOutput(loss=loss, logits=logits)

    _MEAN_POOL_CLASS = BertMeanPoolForSequenceClassification
    return _MEAN_POOL_CLASS


def pooling_of(config):
    """'mean' for a BertMeanPoolForSequenceClassification config, else 'cls' (the HF head of the model type)."""
    return getattr(config, "auroraq_pooling", None) or "cls"


def load_hf(model_id, revision=None):
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_id, revision=revision, use_fast=True)
    if not getattr(tokenizer, "is_fast", False):
        raise SystemExit(f"{model_id}: no fast tokenizer (tokenizer.json) could be made for it")
    config = AutoConfig.from_pretrained(model_id, revision=revision)
    if pooling_of(config) == "mean":
        model = mean_pool_class().from_pretrained(model_id, revision=revision)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(model_id, revision=revision)
    model.eval()
    return tokenizer, model


# model types whose position ids HF derives from input_ids != pad_token_id (RoBERTa-style: positions start at
# pad_token_id + 1); the export derives them from attention_mask instead (same values on every real token), so
# that the graph does not depend on which id a runtime pads with (AuroraQ's Rust runtime pads with the id of
# "[PAD]", which for MPNet's vocabulary is 4, not its pad_token_id 1)
MASK_POSITION_TYPES = ("mpnet", "roberta", "xlm-roberta", "camembert")


def mask_position_ids(attention_mask, padding_idx):
    import torch

    mask = attention_mask.to(torch.long)
    return torch.cumsum(mask, dim=1) * mask + padding_idx


class LogitsOnly:
    """Wraps a HF classifier so that the traced graph takes the three inputs positionally and returns logits
    (for MASK_POSITION_TYPES with position ids computed from attention_mask)."""

    def __new__(cls, model, with_token_types):
        import torch

        mask_positions = getattr(model.config, "model_type", None) in MASK_POSITION_TYPES
        padding_idx = int(getattr(model.config, "pad_token_id", 1) or 0)

        class _W(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def extra(self, attention_mask):
                return {"position_ids": mask_position_ids(attention_mask, padding_idx)} if mask_positions else {}

            if with_token_types:

                def forward(self, input_ids, attention_mask, token_type_ids):
                    return self.m(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, return_dict=True,
                                  **self.extra(attention_mask)).logits

            else:

                def forward(self, input_ids, attention_mask):
                    return self.m(input_ids=input_ids, attention_mask=attention_mask, return_dict=True, **self.extra(attention_mask)).logits

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


def preprocess_for_quantization(fp32_path, work_dir):
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src = os.path.join(work_dir, "model.fp32.preprocessed.onnx")
    # symbolic shape inference fails on this graph ("Incomplete symbolic shape inference"): ONNX shape
    # inference and ONNX Runtime's basic graph optimisation only
    quant_pre_process(fp32_path, src, skip_symbolic_shape=True)
    return src


def calibration_pick(n, samples, seed):
    """Indices (sorted) of the calibration sample drawn from n texts: the draw calibration_feeds makes, also
    used to keep calibration texts out of held-out sets (quant_fidelity.py)."""
    import random

    return sorted(random.Random(seed).sample(range(n), min(samples, n)))


def calibration_feeds(tokenizer, texts, max_length, input_names, samples, seed):
    """Calibration inputs: a seeded sample of `samples` texts, one text per run (batch 1, no padding, so that
    the activation ranges are those of real tokens only, never of [PAD] positions)."""
    pick = calibration_pick(len(texts), samples, seed)
    feeds = []
    for i in pick:
        enc = tokenizer([texts[i]], truncation=True, max_length=max_length, padding=False, return_tensors="np")
        feed = {}
        for name in input_names:
            feed[name] = np.asarray(enc[name], dtype=np.int64) if name in enc else np.zeros_like(np.asarray(enc["input_ids"], dtype=np.int64))
        feeds.append(feed)
    return feeds, pick


CALIBRATION_METHODS = ("minmax", "entropy", "percentile", "distribution")


def quantize_static_qdq(src, int8_path, feeds, per_channel=True, reduce_range=True, method="percentile", percentile=99.99,
                        op_types=("MatMul", "Gather"), exclude=(), cache_path=None, attention=False, weight_type="int8"):
    """Static int8 quantisation in QDQ format: QInt8 weights (per-channel when per_channel; 7-bit with
    reduce_range) and QUInt8 activations whose scales and zero points are constants calibrated on `feeds`.
    ONNX Runtime's CPU provider fuses the QDQ groups into integer kernels (MatMulIntegerToFloat / QLinearMatMul);
    since no scale depends on the run's data, a text's logits do not depend on its batch-mates. Unless
    `attention`, only MatMuls with a constant B (the weight matrices) are quantised: the attention products
    (Q K^T, softmax V: activation by activation) stay float, as in dynamic quantisation.

    weight_type "uint8" stores the weights as QUInt8 with an asymmetric zero point per channel instead: with
    uint8 activations, ONNX Runtime's x86 CPU kernels then multiply u8 x u8 in 16-bit lanes, which cannot
    saturate, so the full 8 bits are usable without VNNI (reduce_range off); QInt8 weights go through the u8 x s8
    pair instructions, which can saturate their 16-bit sums unless the weights keep 7 bits (reduce_range)."""
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self, items):
            self.all = items
            self.pos, self.end = 0, len(items)

        def get_next(self):
            if self.pos >= self.end:
                return None
            self.pos += 1
            return self.all[self.pos - 1]

        def __len__(self):
            return len(self.all)

        def set_range(self, start_index, end_index):
            self.pos, self.end = start_index, min(end_index, len(self.all))

    cal = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
        "distribution": CalibrationMethod.Distribution,
    }[method]
    extra = {
        "CalibTensorRangeSymmetric": False,  # asymmetric uint8 ranges (the percentile calibrator's own default is symmetric)
        "ActivationSymmetric": False,
        "WeightSymmetric": weight_type == "int8",
        # MatMul outputs stay float: DQ(x) + DQ(W) + MatMul fuse into MatMulIntegerToFloat (the bias add and
        # what follows see the exact integer product, not a re-quantised one)
        "OpTypesToExcludeOutputQuantization": ["MatMul"],
    }
    exclude = list(exclude)
    if not attention:
        # QDQ quantisation ignores MatMulConstBOnly: leave the MatMuls of two activations out by name
        import onnx

        m = onnx.load(src, load_external_data=False)
        weights = {i.name for i in m.graph.initializer}
        exclude += [n.name for n in m.graph.node if n.op_type == "MatMul" and n.input[1] not in weights and n.name not in exclude]
    if method == "percentile":
        extra["CalibPercentile"] = percentile
    if method != "minmax":
        # the histogram calibrators stack each tensor's outputs over the collected runs, which fails for
        # texts of different lengths: hand them one run at a time (quantize_static's strided collection)
        extra["CalibStridedMinMax"] = 1
    if cache_path and os.path.exists(cache_path):
        log(f"calibration ranges from {cache_path}")
    quantize_static(
        src,
        int8_path,
        Reader(list(feeds)),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=list(op_types),
        per_channel=per_channel,
        reduce_range=reduce_range,
        activation_type=QuantType.QUInt8,
        weight_type={"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}[weight_type],
        nodes_to_exclude=exclude,
        calibrate_method=cal,
        extra_options=extra,
        calibration_cache_path=cache_path,
    )


def smooth_activations(src, dst, feeds, alpha, exclude=(), threads=2):
    """SmoothQuant-style migration of activation outliers into the weights, before static quantisation.

    One uint8 scale per activation tensor must cover its few outlier channels (MPNet's LayerNorm outputs have
    some far larger than the rest), which leaves few levels for the bulk. For each input X of the weight MatMuls
    (the MatMuls whose B is a constant [K, N] matrix; MatMuls sharing an input, as query, key and value do, are
    handled together) this finds each channel's largest |X_j| over the calibration runs and the largest |W_jn|
    of its weight rows, sets s_j = max|X_j|^alpha / max|W_j|^(1 - alpha), inserts a float Mul X * (1/s) read only
    by those MatMuls, and multiplies weight row j by s_j. The float product is unchanged (X diag(1/s) diag(s) W =
    X W); the channels the MatMuls see are flatter, their weight rows steeper, and both are then quantised as
    usual (weights per output column). Residual connections and LayerNorms keep reading X itself.
    Returns the number of smoothed inputs."""
    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    model = onnx.load(src)
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    exclude = set(exclude)
    groups = {}  # input tensor -> weight MatMuls reading it
    for n in g.node:
        if n.op_type == "MatMul" and n.name not in exclude and n.input[1] in inits and len(inits[n.input[1]].dims) == 2:
            if n.input[0] not in inits:
                groups.setdefault(n.input[0], []).append(n)
    if not groups:
        return 0
    # per-channel max |X| over the calibration runs: expose each X as an output of a copy of the graph
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {o.name for o in probe.graph.output}
    for name in groups:
        if name not in known:
            probe.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every named tensor
    sess = ort.InferenceSession(probe.SerializeToString(), so, providers=["CPUExecutionProvider"])
    names = list(groups)
    xmax = {name: None for name in names}
    for feed in feeds:
        for name, x in zip(names, sess.run(names, feed)):
            m = np.abs(x).reshape(-1, x.shape[-1]).max(axis=0)
            xmax[name] = m if xmax[name] is None else np.maximum(xmax[name], m)
    scaled = set()
    for k, (name, nodes) in enumerate(groups.items()):
        ws = [numpy_helper.to_array(inits[n.input[1]]) for n in nodes]
        wmax = np.max(np.stack([np.abs(w).max(axis=1) for w in ws]), axis=0)
        s = np.power(np.maximum(xmax[name], 1e-5), alpha) / np.power(np.maximum(wmax, 1e-5), 1.0 - alpha)
        s = np.clip(s, 1e-3, 1e3).astype(np.float32)
        inv = f"{name}_smooth_inv_scale"
        out = f"{name}_smoothed"
        g.initializer.append(numpy_helper.from_array((1.0 / s).astype(np.float32), inv))
        g.node.append(helper.make_node("Mul", [name, inv], [out], name=f"SmoothQuant_Mul_{k}"))
        for n, w in zip(nodes, ws):
            wname = n.input[1]
            if wname in scaled:  # a weight shared by two inputs cannot take two scalings (never in these graphs)
                raise SystemExit(f"weight {wname} is read by MatMuls of two inputs")
            scaled.add(wname)
            new = numpy_helper.from_array((w * s[:, None]).astype(np.float32), wname)
            inits[wname].CopyFrom(new)
            n.input[0] = out
    # nodes must stay topologically sorted: put each Mul right before its first reader
    order = list(g.node)
    muls = {n.output[0]: n for n in order if n.name.startswith("SmoothQuant_Mul_")}
    rest = [n for n in order if not n.name.startswith("SmoothQuant_Mul_")]
    placed, nodes = set(), []
    for n in rest:
        for i in n.input:
            if i in muls and i not in placed:
                nodes.append(muls[i])
                placed.add(i)
        nodes.append(n)
    del g.node[:]
    g.node.extend(nodes)
    onnx.save(model, dst)
    return len(groups)


def keep_float_paths(model_path, out_path=None):
    """The QDQ quantiser rewires every consumer of a quantised activation to its QuantizeLinear ->
    DequantizeLinear copy, so the residual connections and LayerNorms around each MatMul would see 8-bit values
    too. This points the consumers that are not MatMuls back at the float tensor (the Q node's input), so that
    only the MatMul inputs are quantised (as in dynamic quantisation); DequantizeLinear nodes left without
    consumers are removed. Activations whose Q node follows a Gather (embedding tables, whose float values are
    the dequantised table rows anyway) are left alone. Returns the number of rewired inputs."""
    import onnx

    model = onnx.load(model_path)
    g = model.graph
    producer = {o: n for n in g.node for o in n.output}
    rewired = 0
    dq_float = {}  # DQ output -> float tensor
    for n in g.node:
        if n.op_type != "DequantizeLinear":
            continue
        q = producer.get(n.input[0])
        if q is None or q.op_type != "QuantizeLinear":
            continue  # a weight's DQ
        src = producer.get(q.input[0])
        if src is not None and src.op_type == "Gather":
            continue
        dq_float[n.output[0]] = q.input[0]
    for n in g.node:
        if n.op_type in ("MatMul", "QuantizeLinear", "DequantizeLinear"):
            continue
        for i, name in enumerate(n.input):
            if name in dq_float:
                n.input[i] = dq_float[name]
                rewired += 1
    used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    dead = [n for n in g.node if n.op_type == "DequantizeLinear" and n.output[0] in dq_float and n.output[0] not in used]
    for n in dead:
        g.node.remove(n)
    onnx.save(model, out_path or model_path)
    return rewired


def integer_matmuls(model_path, out_path=None):
    """Rewrites each quantised weight MatMul of a QDQ graph, DequantizeLinear(x_q) x DequantizeLinear(W_q) ->
    MatMul [-> Add(bias)], into one com.microsoft MatMulIntegerToFloat(x_q, W_q, x_scale, W_scale, x_zero,
    W_zero[, bias]) node: the kernel ONNX Runtime's CPU provider would fuse the QDQ group into anyway, here with
    the bias folded in (the QDQ fusion leaves the bias Add, and the Add + Gelu after it, as separate, slower
    nodes; dynamic quantisation fuses the bias the same way). Same integers, same scales. Returns the count."""
    import onnx
    from onnx import helper

    model = onnx.load(model_path)
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    consumers = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    graph_outputs = {o.name for o in g.output}
    replace, remove = {}, set()
    for m in g.node:
        if m.op_type != "MatMul":
            continue
        dqa, dqb = producer.get(m.input[0]), producer.get(m.input[1])
        if not (dqa is not None and dqb is not None and dqa.op_type == dqb.op_type == "DequantizeLinear"):
            continue
        if dqb.input[0] not in inits or dqa.input[0] in inits or len(dqa.input) < 3 or len(dqb.input) < 3:
            continue
        axis = next((a.i for a in dqb.attribute if a.name == "axis"), 1)
        w = inits[dqb.input[0]]
        if len(w.dims) != 2 or (len(inits[dqb.input[1]].dims) == 1 and inits[dqb.input[1]].dims[0] > 1 and axis not in (1, -1)):
            continue  # per-channel scales must be per column of B
        inputs = [dqa.input[0], dqb.input[0], dqa.input[1], dqb.input[1], dqa.input[2], dqb.input[2]]
        output, drop = m.output[0], [m]
        users = consumers.get(m.output[0], [])
        if len(users) == 1 and users[0].op_type == "Add" and m.output[0] not in graph_outputs:
            add = users[0]
            bias = [i for i in add.input if i != m.output[0]]
            if len(bias) == 1 and bias[0] in inits and list(inits[bias[0]].dims) == [w.dims[1]]:
                inputs.append(bias[0])
                output = add.output[0]
                drop.append(add)
        node = helper.make_node("MatMulIntegerToFloat", inputs, [output], name=m.name, domain="com.microsoft")
        replace[id(m)] = node
        remove.update(id(n) for n in drop[1:])
    nodes = [replace.get(id(n), n) for n in g.node if id(n) not in remove]
    while True:  # DequantizeLinear nodes nothing reads any more
        used = {i for n in nodes for i in n.input} | graph_outputs
        keep = [n for n in nodes if n.op_type != "DequantizeLinear" or n.output[0] in used]
        if len(keep) == len(nodes):
            break
        nodes = keep
    del g.node[:]
    g.node.extend(nodes)
    used = {i for n in nodes for i in n.input}
    unused = [i for i in g.initializer if i.name not in used]
    for i in unused:  # e.g. a weight scale only a removed DequantizeLinear read
        g.initializer.remove(i)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    onnx.save(model, out_path or model_path)
    return len(replace)


def quantize(fp32_path, int8_path, work_dir, per_channel=True, reduce_range=True, preprocess=True, mode="dynamic", static=None):
    """mode 'dynamic': QInt8 weights, uint8 activations quantised at run time (one scale per tensor per run,
    so results depend on batch-mates). mode 'static': see quantize_static_qdq; `static` holds its keyword
    arguments (feeds, method, percentile, op_types, exclude, cache_path)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src = preprocess_for_quantization(fp32_path, work_dir) if preprocess else fp32_path
    if mode == "static":
        static = dict(static or {})
        graph = static.pop("graph", "integer")
        alpha = static.pop("smooth_alpha", None)
        static["exclude"] = excluded_nodes(src, static.get("exclude") or [])  # regular expressions -> node names
        if alpha is not None:
            smoothed = os.path.join(work_dir, f"model.fp32.smooth{alpha:g}.onnx")
            n = smooth_activations(src, smoothed, static["feeds"], alpha, static["exclude"])
            log(f"static: {n} MatMul inputs smoothed (alpha {alpha:g}) -> {smoothed}")
            src = smoothed
        quantize_static_qdq(src, int8_path, per_channel=per_channel, reduce_range=reduce_range, **static)
        rewired = keep_float_paths(int8_path)
        fused = integer_matmuls(int8_path) if graph == "integer" else 0
        log(f"static: {rewired} float inputs restored, {fused} MatMuls as MatMulIntegerToFloat")
        return static["exclude"]
    elif mode == "dynamic":
        quantize_dynamic(src, int8_path, weight_type=QuantType.QInt8, per_channel=per_channel, reduce_range=reduce_range)
        return []
    raise ValueError(f"unknown quantisation mode {mode!r}")


def excluded_nodes(onnx_path, patterns):
    """Names of the nodes of the (pre-processed) graph that match any of the regular expressions."""
    import re

    if not patterns:
        return []
    import onnx

    names = [n.name for n in onnx.load(onnx_path, load_external_data=False).graph.node]
    return [n for n in names if any(re.search(p, n) for p in patterns)]


def write_config(model, out_path, max_length, name, quantization=None):
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
    if pooling_of(model.config) != "cls":
        cfg["auroraq_pooling"] = pooling_of(model.config)
    else:
        cfg.pop("auroraq_pooling", None)
    if quantization:
        cfg["auroraq_quantization"] = {"static": "int8-static", "dynamic": "int8-dynamic"}[quantization]
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


def hf_encodings(tokenizer, texts, max_length):
    """(input_ids, token_type_ids) of each text: truncation at max_length, no padding."""
    enc = tokenizer(list(texts), truncation=True, max_length=max_length)
    types = enc.get("token_type_ids") or [[0] * len(ids) for ids in enc["input_ids"]]
    return [(list(ids), list(t)) for ids, t in zip(enc["input_ids"], types)]


def evaluate(paths, tokenizer, csv_path, label2id, max_length, threads, pad_id=0):
    """Metrics of each model on the CSV, one sentence at a time (batch 1, no padding: how golden.json is made,
    and the reference), and in padded batches of 32 sorted by length; and each model's batch invariance (see
    batch_invariance). A dynamically quantised model's activations get one scale per batch, so its batched
    results depend on which sentences share a batch; a statically quantised one's do not."""
    labels = [l for l, _ in sorted(label2id.items(), key=lambda kv: kv[1])]
    texts, gold = read_labelled_csv(csv_path, label2id)
    encs = hf_encodings(tokenizer, texts, max_length)
    report, preds = {
        "note": "TAG: batch 1; TAG_batched: padded batches of 32 sorted by length; TAG_batch_invariance: batch 1 vs "
        "padded batches of 32 (sorted by length, and in a seeded random order)"
    }, {}
    for tag, path in paths.items():
        session = ort_session(path, threads)
        t0 = time.time()
        inv, logits = batch_invariance(session, encs, pad_id)
        for key, lg in ((tag, logits["single"]), (tag + "_batched", logits["sorted"])):
            preds[key] = lg.argmax(axis=1).tolist()
            report[key] = metrics(gold, preds[key], labels)
            log(f"{key}: accuracy {report[key]['accuracy']:.4f} macro-F1 {report[key]['macro_f1']:.4f} on {csv_path}")
        report[tag + "_batch_invariance"] = inv
        report[tag + "_seconds"] = round(time.time() - t0, 2)
        log(describe_invariance(tag, inv))

    def agree(a, b):
        same = sum(x == y for x, y in zip(preds[a], preds[b]))
        log(f"{a} vs {b} argmax agreement {same}/{len(texts)} = {same / len(texts):.4f}")
        return {"same": same, "n": len(texts), "fraction": same / len(texts)}

    if "int8" in paths:
        report["fp32_int8_agreement"] = agree("fp32", "int8")
        report["fp32_int8_agreement_batched"] = agree("fp32_batched", "int8_batched")
        report["int8_batch1_vs_batched_agreement"] = agree("int8", "int8_batched")
    return report


DEFAULT_CALIB_CSV = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "data/fpb/train.csv")


def add_quantization_options(ap, default_mode=None):
    """Quantisation options shared with train_fpb.py."""
    ap.add_argument(
        "--quantize",
        nargs="?",
        const="static",
        default=default_mode,
        choices=["static", "dynamic"],
        help="ship an int8 model: static (QDQ; QInt8 weights, QUInt8 activations with calibrated constant scales: "
        "batch-invariant; the default when the flag is given alone) or dynamic (activation scales computed per "
        "run over the whole batch)",
    )
    ap.add_argument("--no-per-channel", dest="per_channel", action="store_false", help="per-tensor weight scales")
    ap.add_argument(
        "--no-reduce-range",
        dest="reduce_range",
        action="store_false",
        help="full 8-bit weights (can saturate, and so differ, on x86 CPUs without VNNI)",
    )
    ap.add_argument(
        "--weight-type",
        choices=["int8", "uint8"],
        default="int8",
        help="static: int8 (QInt8, symmetric; 7-bit with reduce-range) or uint8 (QUInt8, asymmetric per channel: "
        "u8 x u8 kernels, full 8 bits without saturation on x86 CPUs without VNNI; use with --no-reduce-range)",
    )
    ap.add_argument("--no-preprocess", dest="preprocess", action="store_false", help="skip quant_pre_process")
    ap.add_argument(
        "--calib-csv",
        default=DEFAULT_CALIB_CSV,
        help="static: label,sentence CSV(s) to calibrate on, comma-separated; their rows are pooled before the sample is drawn (default: data/fpb/train.csv)",
    )
    ap.add_argument("--calib-samples", type=int, default=1024, help="static: texts sampled from --calib-csv (one per run, no padding)")
    ap.add_argument("--calib-seed", type=int, default=1234, help="static: seed of that sample")
    ap.add_argument("--calib-method", choices=CALIBRATION_METHODS, default="percentile", help="static: activation range calibration")
    ap.add_argument("--calib-percentile", type=float, default=99.99, help="static, percentile method: percentile kept")
    ap.add_argument(
        "--static-op-types",
        default="MatMul,Gather",
        help="static: operator types to quantise (comma-separated; Gather quantises the embedding tables)",
    )
    ap.add_argument(
        "--static-attention",
        action="store_true",
        help="static: also quantise the attention products (MatMuls of two activations); default: weight MatMuls only",
    )
    ap.add_argument(
        "--static-graph",
        choices=["integer", "qdq"],
        default="integer",
        help="static: integer (default): each quantised MatMul (+ bias) as one com.microsoft MatMulIntegerToFloat "
        "node, the kernel ONNX Runtime's CPU provider runs (dynamic quantisation's layout, bias fused); qdq: leave "
        "the QuantizeLinear/DequantizeLinear form for other runtimes to fuse (on the CPU provider: same logits, "
        "4-6%% slower, the bias adds stay separate)",
    )
    ap.add_argument(
        "--static-exclude",
        default="",
        help="static: comma-separated regular expressions; nodes whose names match stay float",
    )
    ap.add_argument(
        "--smooth-alpha",
        type=float,
        default=None,
        help="static: migrate activation outliers into the weights first (SmoothQuant: per-channel scales "
        "max|X|^alpha / max|W|^(1-alpha) on each weight MatMul's input, calibrated on the same texts); off by default",
    )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", help="hub id (e.g. ProsusAI/finbert) or local save_pretrained directory")
    ap.add_argument("--revision", default=None, help="hub revision (branch, tag or commit) to pin")
    ap.add_argument("--out-dir", help="where model.onnx, tokenizer.json, config.json go")
    ap.add_argument("--work-dir", help="where the fp32 ONNX file and intermediates go")
    ap.add_argument("--name", default=None, help="_name_or_path written into config.json (default: the model argument's last part)")
    ap.add_argument("--max-length", type=int, default=128, help="auroraq_max_length: truncation length in tokens")
    ap.add_argument("--opset", type=int, default=14)
    add_quantization_options(ap)
    ap.add_argument("--eval-csv", default=None, help="label,sentence CSV to evaluate fp32 (and int8) on")
    ap.add_argument("--golden-texts", default=None, help="UTF-8 file, one sentence a line: write OUT_DIR/golden.json")
    ap.add_argument("--report", default=None, help="JSON report path (default WORK_DIR/export_report.json)")
    ap.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads (0: its default)")
    ap.add_argument(
        "--verify",
        metavar="DIR",
        help="instead of exporting: check an exported DIR with onnxruntime and the tokenizers library only "
        "(no torch/transformers): sizes and sha256, golden.json if present, and --eval-csv metrics and batch "
        "invariance",
    )
    ap.add_argument("--bench", action="store_true", help="with --verify and --eval-csv: throughput at batch 8 and 32")
    ap.add_argument("--bench-baseline", metavar="ONNX", default=None, help="with --bench: also time this model.onnx (same tokenizer)")
    ap.add_argument("--bench-sentences", type=int, default=512, help="with --bench: the first N sentences of --eval-csv")
    ap.add_argument("--bench-repeats", type=int, default=5)
    ap.add_argument("--verify-report", default=None, help="with --verify: also write the JSON report to this file")
    args = ap.parse_args(argv)
    if args.verify:
        report = verify(
            args.verify,
            args.eval_csv,
            args.threads,
            bench=args.bench,
            baseline=args.bench_baseline,
            bench_sentences=args.bench_sentences,
            repeats=args.bench_repeats,
        )
        if args.verify_report:
            with open(args.verify_report, "w", encoding="utf-8") as f:
                json.dump(report, f, indent=2, ensure_ascii=False)
                f.write("\n")
        return
    if not (args.model and args.out_dir and args.work_dir):
        ap.error("MODEL, --out-dir and --work-dir are needed to export")
    run(args)


def verify(model_dir, eval_csv=None, threads=2, bench=False, baseline=None, bench_sentences=512, repeats=5):
    """Checks an exported directory the way a runtime would use it: tokenizer.json through the tokenizers
    library (truncation at auroraq_max_length, no padding, batches padded with [PAD]=pad_token_id and mask 0):
    golden.json (batch 1), metrics at batch 1 and in padded batches of 32 sorted by length, batch invariance
    (batch_invariance) and, with bench, throughput (with baseline, of that model too, on the same batches)."""
    import onnxruntime
    from tokenizers import Tokenizer

    with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as f:
        cfg = json.load(f)
    max_length = int(cfg.get("auroraq_max_length", 128))
    labels = [cfg["id2label"][str(i)] for i in range(len(cfg["id2label"]))]
    tk = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    tk.no_padding()
    tk.enable_truncation(max_length)
    model_path = os.path.join(model_dir, "model.onnx")
    session = ort_session(model_path, threads)
    pad = int(cfg.get("pad_token_id", 0) or 0)

    def encode(texts):
        return [(e.ids, e.type_ids) for e in tk.encode_batch(list(texts))]

    report = {
        "dir": model_dir,
        "onnxruntime": onnxruntime.__version__,
        "threads": threads,
        "labels": labels,
        "max_length": max_length,
        "pooling": cfg.get("auroraq_pooling", "cls"),
        "quantization": cfg.get("auroraq_quantization"),
    }
    report["files"] = {n: file_info(os.path.join(model_dir, n)) for n in ("model.onnx", "tokenizer.json", "config.json")}
    gpath = os.path.join(model_dir, "golden.json")
    if os.path.exists(gpath):
        with open(gpath, encoding="utf-8") as f:
            g = json.load(f)
        worst, ids_ok = 0.0, 0
        for case in g["cases"]:
            encs = encode([case["text"]])
            ids_ok += encs[0][0] == case["input_ids"]
            logits = batched_logits(session, encs, 1, pad_id=pad)
            worst = max(worst, float(np.max(np.abs(logits[0] - np.asarray(case["logits"])))))
        report["golden"] = {"cases": len(g["cases"]), "input_ids_equal": ids_ok, "max_abs_logit_diff": worst, "recorded_with": g["onnxruntime"]}
        log(f"golden: input_ids equal in {ids_ok}/{len(g['cases'])} cases, max |logit diff| {worst:.2e}")
    if eval_csv:
        texts, gold = read_labelled_csv(eval_csv, {l: i for i, l in enumerate(labels)})
        encs = encode(texts)
        inv, logits = batch_invariance(session, encs, pad)
        for key, lg in (("eval", logits["single"]), ("eval_batched", logits["sorted"])):
            report[key] = metrics(gold, lg.argmax(axis=1).tolist(), labels)
            report[key]["csv"] = eval_csv
        report["eval"]["note"] = "batch 1 (no padding)"
        report["eval_batched"]["note"] = "padded batches of 32 sorted by length"
        report["batch_invariance"] = inv
        log(f"accuracy {report['eval']['accuracy']:.4f} macro-F1 {report['eval']['macro_f1']:.4f} at batch 1; "
            f"{report['eval_batched']['accuracy']:.4f} / {report['eval_batched']['macro_f1']:.4f} in sorted batches of 32, on {eval_csv}")
        log(describe_invariance("model", inv))
        if bench:
            paths = {"model": model_path}
            if baseline:
                paths["baseline"] = baseline
                report["bench_baseline"] = {"path": baseline, **file_info(baseline)}
            report["throughput"] = throughput(paths, encs[:bench_sentences], pad, threads=threads or 2, repeats=repeats)
    elif bench:
        raise SystemExit("--bench needs --eval-csv (its first --bench-sentences sentences are timed)")
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
    quant_info = None
    if args.quantize:
        int8 = os.path.join(args.work_dir, "model.int8.onnx")
        weight_type = getattr(args, "weight_type", "int8")  # train_fpb.py's namespace has none
        quant_info = {
            "mode": args.quantize,
            "format": ("QDQ" if args.static_graph == "qdq" else "QuantizeLinear + com.microsoft.MatMulIntegerToFloat (from QDQ)")
            if args.quantize == "static"
            else "QOperator (DynamicQuantizeLinear + MatMulInteger)",
            "weight_type": "QUInt8" if args.quantize == "static" and weight_type == "uint8" else "QInt8",
            "activation_type": "QUInt8",
            "per_channel": args.per_channel,
            "reduce_range": args.reduce_range,
            "preprocess": args.preprocess,
        }
        static = None
        if args.quantize == "static":
            calib_csvs = [c for c in args.calib_csv.split(",") if c]
            calib_texts = []
            for c in calib_csvs:
                calib_texts += read_labelled_csv(c, {k.lower(): v for k, v in model.config.label2id.items()})[0]
            feeds, picked = calibration_feeds(tokenizer, calib_texts, args.max_length, inputs, args.calib_samples, args.calib_seed)
            op_types = [t for t in args.static_op_types.split(",") if t]
            fp32_sha = sha256(fp32)
            tag = args.calib_method + (f"{args.calib_percentile:g}" if args.calib_method == "percentile" else "")
            tag += "." + hashlib.sha256("\n".join(calib_texts).encode("utf-8")).hexdigest()[:12]  # the texts sampled from
            smooth_alpha = getattr(args, "smooth_alpha", None)
            if smooth_alpha is not None:
                tag += f".smooth{smooth_alpha:g}"
            cache = os.path.join(args.work_dir, f"calibration.{fp32_sha[:16]}.{tag}.n{len(feeds)}.s{args.calib_seed}.json")
            patterns = [p for p in args.static_exclude.split(",") if p]
            static = {"feeds": feeds, "method": args.calib_method, "percentile": args.calib_percentile, "op_types": op_types,
                      "exclude": patterns, "cache_path": cache, "attention": args.static_attention, "graph": args.static_graph,
                      "weight_type": weight_type, "smooth_alpha": smooth_alpha}
            quant_info.update(
                {
                    "calibration_csv": ",".join(os.path.relpath(c, os.getcwd()) if os.path.isabs(c) else c for c in calib_csvs),
                    "calibration_samples": len(feeds),
                    "calibration_seed": args.calib_seed,
                    "calibration_batch": 1,
                    "calibration_method": args.calib_method,
                    "calibration_percentile": args.calib_percentile if args.calib_method == "percentile" else None,
                    "op_types": op_types,
                    "attention_products_quantized": args.static_attention,
                    "graph": args.static_graph,
                    "exclude_patterns": patterns,
                    "smooth_alpha": smooth_alpha,
                }
            )
        log(f"quantising to {int8}: {json.dumps(quant_info)}")
        excluded = quantize(fp32, int8, args.work_dir, args.per_channel, args.reduce_range, args.preprocess, mode=args.quantize, static=static)
        if args.quantize == "static":
            quant_info["excluded_nodes"] = excluded
            log(f"nodes left float: {excluded}")
        paths["int8"] = int8
        shipped = int8

    out_model = os.path.join(args.out_dir, "model.onnx")
    out_tok = os.path.join(args.out_dir, "tokenizer.json")
    out_cfg = os.path.join(args.out_dir, "config.json")
    shutil.copyfile(shipped, out_model)
    write_tokenizer(args.model, args.revision, out_tok)
    write_config(model, out_cfg, args.max_length, name, args.quantize)

    report = {
        "model": args.model,
        "revision": args.revision,
        "inputs": inputs,
        "opset": args.opset,
        "max_length": args.max_length,
        "quantized": bool(args.quantize),
        "quantization": quant_info,
        "pooling": pooling_of(model.config),
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
        report["eval"] = evaluate(paths, tokenizer, args.eval_csv, model.config.label2id, args.max_length, args.threads,
                                  pad_id=int(tokenizer.pad_token_id or 0))
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
