#!/usr/bin/env python3
"""Draw a deterministic, stratified sample of real crypto news headlines for hand labelling.

Source: the shared crypto news file (CryptoCompare / Finnhub headlines collected by
github mouadja02/bitcoin-news-data, MIT; the headline text belongs to its publishers).

Sampling:
  * rows with an empty headline are skipped; headlines are de-duplicated on the lower-cased,
    whitespace-collapsed text (the first, i.e. earliest, row of each is kept);
  * strata are (source, month) with month in 2025-05 .. 2025-08, the source string as it appears
    in the file (the Finnhub and CryptoCompare feeds spell some sources differently, e.g.
    `Cointelegraph` / `cointelegraph`, and are kept apart);
  * every stratum gets a floor of min(size, FLOOR) rows so small sources appear at all;
  * the promotional `coinotag` source is capped at COINOTAG_CAP rows in total;
  * the rest of the budget is allocated to the other strata in proportion to their size
    (largest remainder), never more than a stratum holds;
  * rows are drawn inside each stratum with random.Random(SEED) and written in a seeded
    shuffled order (so the labeller does not see one source or one day in a run).

Output: data/eval/crypto_headlines_sample.csv with columns id,published_utc,source,categories,headline
where id is the 0-based data-row index in the source file (header not counted).

A later round (more headlines to label for training) passes the files already sampled with --exclude: their
rows, and every row whose headline equals one of theirs after lower-casing, unifying quotes and dropping
punctuation (split_crypto_headlines.dup_key), are left out before the strata are formed; --seed gives the
round its own draw.

Python 3 standard library only. Usage (from the repository root):
    python3 scripts/model/sample_crypto_headlines.py [--source PATH] [--out PATH] [--n 1000]
    python3 scripts/model/sample_crypto_headlines.py --n 600 --seed 20261207 \
        --exclude data/eval/crypto_headlines_sample.csv --out data/eval/crypto_headlines_sample_r2.csv
"""
import argparse
import collections
import csv
import gzip
import os
import random
import re

SEED = 20250802
FLOOR = 2
COINOTAG = "coinotag"
COINOTAG_CAP_SHARE = 0.15
MONTHS = ("2025-05", "2025-06", "2025-07", "2025-08")

DEFAULT_SOURCE = "../shared/data/crypto_news/crypto_news_2025-05_2025-08.csv.gz"
DEFAULT_OUT = "data/eval/crypto_headlines_sample.csv"


def norm(headline):
    return re.sub(r"\s+", " ", headline.strip().lower())


def largest_remainder(weights, budget, caps):
    """Split `budget` over keys in proportion to weights, each at most caps[k]; deterministic."""
    alloc = {k: 0 for k in weights}
    open_keys = [k for k in weights if caps[k] > 0 and weights[k] > 0]
    left = budget
    while left > 0 and open_keys:
        total = sum(weights[k] for k in open_keys)
        quotas = {k: left * weights[k] / total for k in open_keys}
        give = {k: min(int(quotas[k]), caps[k] - alloc[k]) for k in open_keys}
        handed = sum(give.values())
        rest = left - handed
        # hand out the remainder one by one, largest fractional part first (ties: key order)
        order = sorted(open_keys, key=lambda k: (-(quotas[k] - int(quotas[k])), k))
        for k in order:
            if rest == 0:
                break
            if alloc[k] + give[k] < caps[k]:
                give[k] += 1
                rest -= 1
        for k in open_keys:
            alloc[k] += give[k]
        left = budget - sum(alloc.values())
        open_keys = [k for k in open_keys if alloc[k] < caps[k]]
        if sum(give.values()) == 0:
            break
    return alloc


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", default=DEFAULT_SOURCE)
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--exclude", nargs="*", default=[], help="CSVs with id,headline columns already sampled (a later round)")
    args = ap.parse_args()

    from split_crypto_headlines import clean, dup_key

    excluded_ids, excluded_keys = set(), set()
    for path in args.exclude:
        with open(path, encoding="utf-8", newline="") as f:
            for r in csv.DictReader(f):
                excluded_ids.add(int(r["id"]))
                excluded_keys.add(dup_key(clean(r.get("headline") or r.get("sentence") or "")))

    with gzip.open(args.source, "rt", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))

    seen = set()
    strata = collections.defaultdict(list)
    skipped_dup = 0
    for i, r in enumerate(rows):
        h = r["headline"].strip()
        month = r["published_utc"][:7]
        if not h or month not in MONTHS:
            continue
        if i in excluded_ids or dup_key(clean(h)) in excluded_keys:
            continue
        key = norm(h)
        if key in seen:
            skipped_dup += 1
            continue
        seen.add(key)
        strata[(r["source"], month)].append(i)

    keys = sorted(strata)
    size = {k: len(strata[k]) for k in keys}
    floor = {k: min(size[k], FLOOR) for k in keys}

    coin_keys = [k for k in keys if k[0] == COINOTAG]
    other_keys = [k for k in keys if k[0] != COINOTAG]
    coin_cap = int(round(args.n * COINOTAG_CAP_SHARE))
    coin_total = min(coin_cap, sum(size[k] for k in coin_keys))
    coin_floor = sum(floor[k] for k in coin_keys)
    coin_extra = largest_remainder(
        {k: size[k] - floor[k] for k in coin_keys},
        max(0, coin_total - coin_floor),
        {k: size[k] - floor[k] for k in coin_keys},
    )
    other_budget = args.n - coin_floor - sum(coin_extra.values()) - sum(floor[k] for k in other_keys)
    if other_budget < 0:
        raise SystemExit("sample size too small for the floors")
    other_extra = largest_remainder(
        {k: size[k] - floor[k] for k in other_keys},
        other_budget,
        {k: size[k] - floor[k] for k in other_keys},
    )
    alloc = {k: floor[k] + coin_extra.get(k, 0) + other_extra.get(k, 0) for k in keys}

    rng = random.Random(args.seed)
    chosen = []
    for k in keys:  # sorted: deterministic order of draws
        chosen.extend(rng.sample(strata[k], alloc[k]))
    rng.shuffle(chosen)

    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["id", "published_utc", "source", "categories", "headline"])
        for i in chosen:
            r = rows[i]
            w.writerow([i, r["published_utc"], r["source"], r["categories"], re.sub(r"\s+", " ", r["headline"].strip())])

    by_source = collections.Counter(rows[i]["source"] for i in chosen)
    by_month = collections.Counter(rows[i]["published_utc"][:7] for i in chosen)
    print(f"read {len(rows)} rows, {skipped_dup} duplicate headlines skipped, {len(keys)} strata")
    print(f"wrote {len(chosen)} rows to {args.out}")
    print("per month:", dict(sorted(by_month.items())))
    print("per source:", dict(by_source.most_common()))


if __name__ == "__main__":
    main()
