#!/usr/bin/env python3
"""What one model run costs beyond its tokens, for the batcher's `run_cost_tokens`.

Times the ONNX model (onnxruntime, one intra-op thread, CPU time so that other work on the machine
matters less) on batches of dummy ids at several shapes and fits cpu_ms = run_ms + tokens * token_ms
by least squares. Prints both and their ratio, the run's cost in tokens.

    .auroraq/bench-venv/bin/python scripts/bench/run_cost.py [models/auroraq-minilm-fpb]
"""
import sys
import time

import numpy as np
import onnxruntime as ort

model = (sys.argv[1] if len(sys.argv) > 1 else "models/auroraq-minilm-fpb") + "/model.onnx"
so = ort.SessionOptions()
so.intra_op_num_threads = 1
s = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
names = [i.name for i in s.get_inputs()]


def cpu_ms(batch, length, n=40):
    feed = {nm: (np.zeros if nm == "token_type_ids" else np.ones)((batch, length), dtype=np.int64) for nm in names}
    for _ in range(3):
        s.run(None, feed)
    t = time.process_time()
    for _ in range(n):
        s.run(None, feed)
    return (time.process_time() - t) / n * 1000


shapes = [(1, 8), (1, 16), (1, 32), (1, 48), (4, 16), (4, 32), (8, 16), (8, 24), (8, 36), (16, 24), (16, 40)]
rows = [(b * l, cpu_ms(b, l)) for b, l in shapes]
a = np.array([[1.0, t] for t, _ in rows])
y = np.array([ms for _, ms in rows])
(run_ms, token_ms), *_ = np.linalg.lstsq(a, y, rcond=None)
for (b, l), (_, ms) in zip(shapes, rows):
    print(f"batch {b:>2} x {l:>2} tokens: {ms:7.2f} ms CPU")
print(f"per run {run_ms:.3f} ms, per token {token_ms * 1000:.1f} us: a run costs {run_ms / token_ms:.1f} tokens")
