#!/usr/bin/env python3
"""The seed's sentiment service, for the API benchmark's baseline: FastAPI + uvicorn calling a
`transformers` text-classification pipeline once per request (no batching across requests), on the
default model's weights rebuilt for PyTorch by `onnx_to_torch.py`. Same route and response fields as
AuroraQ's `POST /api/v1/sentiment/analyze` (keywords and scenario tag left empty: the baseline measures
the model path).

    python3 scripts/bench/api_seed_baseline.py HF_DIR --port 18001
"""

import argparse
import time

import torch
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel, Field
from transformers import pipeline


class AnalyzeRequest(BaseModel):
    text: str = Field(min_length=1, max_length=10_000)
    asset: str = "CRYPTO"
    mode: str = "live"


def build(hf_dir):
    clf = pipeline("text-classification", model=hf_dir, tokenizer=hf_dir, top_k=None, truncation=True)
    app = FastAPI()

    @app.get("/health")
    def health():
        return {"status": "ok"}

    @app.post("/api/v1/sentiment/analyze")
    def analyze(req: AnalyzeRequest):
        t0 = time.perf_counter()
        scores = {d["label"]: d["score"] for d in clf(req.text)[0]}
        label = max(scores, key=scores.get)
        return {
            "sentiment_score": 0.5 + (scores.get("positive", 0.0) - scores.get("negative", 0.0)) / 2,
            "label": label,
            "confidence": scores[label],
            "keywords": [],
            "scenario_tag": "",
            "processing_time": time.perf_counter() - t0,
            "model_version": "seed-baseline",
            "asset": req.asset,
            "mode": req.mode,
        }

    return app


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("hf_dir")
    ap.add_argument("--port", type=int, default=18001)
    a = ap.parse_args()
    torch.set_grad_enabled(False)
    uvicorn.run(build(a.hf_dir), host="127.0.0.1", port=a.port, log_level="warning")


if __name__ == "__main__":
    main()
