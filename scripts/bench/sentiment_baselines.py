#!/usr/bin/env python3
"""Python baselines for `auroraq sentiment bench`, on the same ONNX file and the same sentences.

Prints one JSON object: for each path, sequences/s and p50/p99 latency (ms) per call.
  ort_b1       Python onnxruntime, one sentence per call
  ort_bN       Python onnxruntime, N sentences per call (padded to the longest), N = --batch
  ort_plan_1x2 text in, label out over the batch plan Rust used (--plan: lists of sentence indexes,
               length-sorted by the worker's planner): tokenise, pad, run, argmax; one session with
               two intra-op threads (a typical Python service)
  ort_plan_2x1 the same plan with two single-threaded sessions on two Python threads taking
               batches in turn (onnxruntime releases the GIL while it runs)
  hf_pipeline  the seed's way: a transformers text-classification pipeline over the fine-tuned
               PyTorch weights, one text at a time (skipped when --hf-dir is missing)
  fp32_gemm    numpy float32 matrix product (OpenBLAS, --threads): the machine's dense peak, for
               the roofline
Threads: --threads for both onnxruntime and torch (the machine has 2 cores).
"""
import argparse, csv, json, os, statistics, sys, time


def percentile(xs, q):
    xs = sorted(xs)
    if not xs:
        return None
    k = min(len(xs) - 1, max(0, int(round(q / 100.0 * (len(xs) - 1)))))
    return xs[k]


def figures(latencies_s, sequences, wall_s):
    return {
        "sequences": sequences,
        "seconds": wall_s,
        "sequences_per_s": sequences / wall_s if wall_s > 0 else None,
        "p50_ms": percentile(latencies_s, 50) * 1000,
        "p99_ms": percentile(latencies_s, 99) * 1000,
        "calls": len(latencies_s),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--hf-dir", default="")
    ap.add_argument("--sentences", required=True, help="CSV with a sentence column")
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--plan", default="", help="JSON list of batches (lists of sentence indexes)")
    a = ap.parse_args()

    with open(a.sentences, newline="", encoding="utf-8") as f:
        sents = [r["sentence"] for r in csv.DictReader(f)][: a.n]

    import numpy as np
    import onnxruntime as ort
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(a.model_dir, "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(a.max_length)
    so = ort.SessionOptions()
    so.intra_op_num_threads = a.threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(os.path.join(a.model_dir, "model.onnx"), so, providers=["CPUExecutionProvider"])
    names = {i.name for i in sess.get_inputs()}

    def session(threads):
        o = ort.SessionOptions()
        o.intra_op_num_threads = threads
        o.inter_op_num_threads = 1
        o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        return ort.InferenceSession(os.path.join(a.model_dir, "model.onnx"), o, providers=["CPUExecutionProvider"])

    def run(batch, s=None):
        encs = tok.encode_batch(batch)
        n, L = len(encs), max(len(e.ids) for e in encs)
        ids = np.zeros((n, L), dtype=np.int64)
        mask = np.zeros((n, L), dtype=np.int64)
        types = np.zeros((n, L), dtype=np.int64)
        for i, e in enumerate(encs):
            ids[i, : len(e.ids)] = e.ids
            mask[i, : len(e.ids)] = 1
            types[i, : len(e.type_ids)] = e.type_ids
        feed = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in names:
            feed["token_type_ids"] = types
        return (s or sess).run(None, feed)[0]

    out = {"onnxruntime": ort.__version__, "threads": a.threads, "batch": a.batch, "n": len(sents)}
    run(sents[:8])  # warm-up
    lat = []
    t0 = time.perf_counter()
    for s in sents:
        t = time.perf_counter()
        run([s])
        lat.append(time.perf_counter() - t)
    out["ort_b1"] = figures(lat, len(sents), time.perf_counter() - t0)

    lat = []
    t0 = time.perf_counter()
    for i in range(0, len(sents), a.batch):
        t = time.perf_counter()
        run(sents[i : i + a.batch])
        lat.append(time.perf_counter() - t)
    out["ort_bN"] = figures(lat, len(sents), time.perf_counter() - t0)

    if a.plan:
        import threading

        with open(a.plan) as f:
            plan = json.load(f)
        for name, sessions, threads in [("ort_plan_1x2", 1, 2), ("ort_plan_2x1", 2, 1)]:
            pool = [session(threads) for _ in range(sessions)]
            for p in pool:
                run(sents[:8], p)
            labels = [None] * len(sents)
            lat, nxt, lock = [], [0], threading.Lock()

            def work(p):
                while True:
                    with lock:
                        i = nxt[0]
                        nxt[0] += 1
                    if i >= len(plan):
                        return
                    t = time.perf_counter()
                    batch = plan[i]
                    logits = run([sents[j] for j in batch], p)
                    for j, k in zip(batch, logits.argmax(axis=1)):
                        labels[j] = int(k)
                    with lock:
                        lat.append(time.perf_counter() - t)

            t0 = time.perf_counter()
            ts = [threading.Thread(target=work, args=(p,)) for p in pool]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            out[name] = figures(lat, len(sents), time.perf_counter() - t0)
            assert all(x is not None for x in labels), "a sentence got no label"

    import numpy as np

    m = np.random.default_rng(0).standard_normal((1024, 1024), dtype=np.float32)
    m @ m
    t0 = time.perf_counter()
    reps = 20
    for _ in range(reps):
        m @ m
    out["fp32_gemm_gflops"] = reps * 2 * 1024**3 / (time.perf_counter() - t0) / 1e9

    if a.hf_dir and os.path.isdir(a.hf_dir):
        import torch
        import transformers
        from transformers import pipeline

        torch.set_num_threads(a.threads)
        clf = pipeline("text-classification", model=a.hf_dir, tokenizer=a.hf_dir, device=-1, top_k=None)
        clf(sents[:4])
        lat = []
        t0 = time.perf_counter()
        for s in sents:
            t = time.perf_counter()
            clf(s, truncation=True, max_length=a.max_length)
            lat.append(time.perf_counter() - t)
        out["hf_pipeline"] = figures(lat, len(sents), time.perf_counter() - t0)
        out["torch"] = torch.__version__
        out["transformers"] = transformers.__version__
    else:
        out["hf_pipeline"] = None
    print(json.dumps(out))


if __name__ == "__main__":
    sys.exit(main())
