#!/usr/bin/env python3
"""A Python client for AuroraQ's sentiment API, in the shapes of the seed's `SentimentClient`.

Standard library only (no `requests`, no `httpx`), so it runs wherever Python 3.8+ does:

    from sentiment_client import SentimentClient
    client = SentimentClient("http://127.0.0.1:8001", api_key="...")
    r = client.analyze_sentiment("Bitcoin jumps above $97K", asset="BTC")
    print(r["label"], r["sentiment_score"], r["keywords"], r["scenario_tag"])

Every call returns the server's JSON as a dict (`health` its text, "ok"). A non-2xx answer raises `SentimentAPIError` with the
status, the API's error code and message (`{"error": {"code", "message"}}`), and `retry_after` in
seconds when the server asked the caller to wait (429 rate limited, 503 overloaded); pass
`retries=N` to let the client wait and try again itself.

Run as a script, it checks a server end to end and prints one JSON line (used by the API's tests):

    python3 sentiment_client.py --url http://127.0.0.1:8001 --api-key KEY smoke
"""

import argparse
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

__all__ = ["SentimentClient", "SentimentAPIError"]


class SentimentAPIError(Exception):
    """A non-2xx answer from the API (or no answer at all: status 0)."""

    def __init__(self, status, code, message, retry_after=None):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after


class SentimentClient:
    """The seed's sentiment client, speaking to `auroraq api` (REST under /api/v1)."""

    def __init__(self, base_url="http://127.0.0.1:8001", api_key=None, token=None, timeout=30.0, retries=0):
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.token = token
        self.timeout = timeout
        self.retries = retries

    # --- the seed's calls -------------------------------------------------------------------

    def analyze_sentiment(self, text, asset="CRYPTO", mode="live", timestamp=None):
        """One text: sentiment_score in [0, 1], label, confidence, keywords, scenario_tag, processing_time,
        model_version."""
        body = {"text": text, "asset": asset, "mode": mode}
        if timestamp is not None:
            body["timestamp"] = timestamp
        return self._call("POST", "/api/v1/sentiment/analyze", body)

    def analyze_batch(self, texts, asset="CRYPTO", mode="live"):
        """Up to 100 texts: results in the order given, total_processed, avg_processing_time."""
        return self._call("POST", "/api/v1/sentiment/batch", {"texts": list(texts), "asset": asset, "mode": mode})

    def get_realtime_sentiment(self, asset, hours_back=6):
        """The latest fused sentiment of an asset: fused_score, confidence, article_count, trend, sources."""
        q = urllib.parse.urlencode({"hours_back": int(hours_back)})
        return self._call("GET", f"/api/v1/sentiment/{urllib.parse.quote(asset, safe='')}/realtime?{q}")

    def fuse_sentiments(self, sentiment_scores, symbol="CRYPTO", timestamp=None):
        """Fuses scores by source (fusion's own weights and outlier rejection): fused_score, weights_used,
        confidence, trend."""
        body = {"sentiment_scores": dict(sentiment_scores), "symbol": symbol}
        if timestamp is not None:
            body["timestamp"] = timestamp
        return self._call("POST", "/api/v1/sentiment/fusion", body)

    def health(self):
        """`/health`: "ok" while the process is alive (no credentials needed)."""
        return self._call("GET", "/health")

    def ready(self):
        """`/ready`: the model is loaded and the bus and configured stores answer (raises on 503)."""
        return self._call("GET", "/ready")

    # --- plumbing ---------------------------------------------------------------------------

    def _headers(self, has_body):
        h = {"Accept": "application/json"}
        if has_body:
            h["Content-Type"] = "application/json"
        secret = self.token or self.api_key
        if secret:
            h["Authorization"] = f"Bearer {secret}"
        return h

    def _call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode("utf-8")
        attempt = 0
        while True:
            req = urllib.request.Request(
                self.base_url + path, data=data, method=method, headers=self._headers(data is not None)
            )
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    raw = resp.read()
                    if "json" not in (resp.headers.get("Content-Type") or ""):
                        return raw.decode("utf-8", "replace").strip()
                    return json.loads(raw) if raw else {}
            except urllib.error.HTTPError as e:
                err = _api_error(e)
                if err.retry_after is not None and attempt < self.retries:
                    attempt += 1
                    time.sleep(min(err.retry_after, 30.0))
                    continue
                raise err from None
            except (urllib.error.URLError, OSError) as e:
                raise SentimentAPIError(0, "unreachable", f"{self.base_url}: {e}") from None


def _api_error(e):
    raw = e.read() or b""
    code, message = "http_error", raw.decode("utf-8", "replace")[:500]
    try:
        err = json.loads(raw).get("error", {})
        code, message = err.get("code", code), err.get("message", message)
    except (ValueError, AttributeError):
        pass
    retry_after = e.headers.get("Retry-After") if e.headers else None
    try:
        retry_after = float(retry_after) if retry_after is not None else None
    except ValueError:
        retry_after = None
    return SentimentAPIError(e.code, code, message, retry_after)


def _smoke(client, texts, asset):
    """Every call once; what came back, for a caller to check."""
    out = {"health": client.health()}
    one = client.analyze_sentiment(texts[0], asset=asset, timestamp="2025-05-02T10:00:00Z")
    out["analyze"] = {k: one.get(k) for k in (
        "label", "sentiment_score", "confidence", "keywords", "scenario_tag", "processing_time", "model_version",
        "asset", "mode", "timestamp")}
    batch = client.analyze_batch(texts, asset=asset, mode="backtest")
    out["batch"] = {
        "labels": [r["label"] for r in batch["results"]],
        "scores": [r["sentiment_score"] for r in batch["results"]],
        "modes": sorted({r["mode"] for r in batch["results"]}),
        "total_processed": batch["total_processed"],
        "avg_processing_time": batch["avg_processing_time"],
    }
    out["realtime"] = client.get_realtime_sentiment(asset, hours_back=6)
    out["fusion"] = client.fuse_sentiments({"coindesk": 0.8, "reuters": 0.6}, symbol=asset)
    errors = {}
    try:
        client.analyze_sentiment("")
    except SentimentAPIError as e:
        errors["empty_text"] = {"status": e.status, "code": e.code}
    try:
        SentimentClient(client.base_url, api_key="wrong-key", timeout=client.timeout).analyze_sentiment("x")
    except SentimentAPIError as e:
        errors["wrong_key"] = {"status": e.status, "code": e.code}
    out["errors"] = errors
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description="AuroraQ sentiment API client")
    p.add_argument("--url", default="http://127.0.0.1:8001")
    p.add_argument("--api-key", default=None)
    p.add_argument("--asset", default="BTC")
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("analyze", help="score texts given as arguments")
    a.add_argument("texts", nargs="+")
    s = sub.add_parser("smoke", help="call every endpoint once and print what came back as one JSON line")
    s.add_argument("texts", nargs="*")
    args = p.parse_args(argv)
    client = SentimentClient(args.url, api_key=args.api_key)
    try:
        if args.cmd == "analyze":
            res = client.analyze_batch(args.texts, asset=args.asset)
        else:
            texts = args.texts or ["Bitcoin jumps above $97K", "Exchange hacked, funds stolen", "Markets flat"]
            res = _smoke(client, texts, args.asset)
    except SentimentAPIError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
