#!/usr/bin/env python3
"""Join the hand-labelled crypto headlines with their sample rows and split them 60/40.

Inputs (from the repository root):
  data/eval/crypto_headlines_sample.csv   id,published_utc,source,categories,headline
  data/eval/crypto_headlines_labels.csv   id,label   (positive|negative|neutral|ambiguous)
  data/eval/crypto_headlines_sample_r2.csv, crypto_headlines_labels_r2.csv (optional) a second round, drawn
      later by sample_crypto_headlines.py --exclude (no row near-duplicates a first-round row) and labelled
      with the same guide: all of it goes to train, so the validation split stays the first round's

Outputs:
  data/eval/crypto_headlines_train.csv       label,sentence,source,published_utc,id (both rounds)
  data/eval/crypto_headlines_train_r1.csv    the same columns, the first round's train rows only
  data/eval/crypto_headlines_validation.csv  label,sentence,source,published_utc,id
  data/eval/crypto_headlines_ambiguous.csv   label,sentence,source,published_utc,id (left out of both)

Rules:
  * every sample row must have exactly one label, and every label an existing sample row;
  * `ambiguous` rows go to the ambiguous file only;
  * the rest are split per label (stratified) with random.Random(SEED): 40% of each label
    (rounded) to validation, the rest to train;
  * near-duplicate headlines (the same text after lower-casing, unifying quotes and dropping
    punctuation) are kept together in one split, so no headline leaks across the split;
  * `sentence` is the headline with HTML entities decoded (`&#039;` -> `'`) and whitespace
    collapsed; rows are written sorted by id. UTF-8, LF line ends, minimal quoting.

Python 3 standard library only; deterministic. The validation file must never be trained on,
nor put into any unlabelled pool used for distillation (exclude it by `id`).
"""
import argparse
import collections
import csv
import html
import os
import random
import re

SEED = 20250803
VALIDATION_SHARE = 0.4
LABELS = ("positive", "negative", "neutral")
COLUMNS = ["label", "sentence", "source", "published_utc", "id"]


def clean(headline):
    return re.sub(r"\s+", " ", html.unescape(headline)).strip()


def dup_key(sentence):
    s = sentence.lower()
    s = s.replace("\u2019", "'").replace("\u2018", "'").replace("\u201c", '"').replace("\u201d", '"')
    return re.sub(r"[^a-z0-9]+", "", s)


def write(path, rows):
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(COLUMNS)
        for r in sorted(rows, key=lambda r: int(r["id"])):
            w.writerow([r[c] for c in COLUMNS])


def joined(d, suffix):
    """The rows of crypto_headlines_sample{suffix}.csv joined with crypto_headlines_labels{suffix}.csv."""
    with open(os.path.join(d, f"crypto_headlines_sample{suffix}.csv"), encoding="utf-8", newline="") as f:
        sample = {r["id"]: r for r in csv.DictReader(f)}
    with open(os.path.join(d, f"crypto_headlines_labels{suffix}.csv"), encoding="utf-8", newline="") as f:
        labels = list(csv.DictReader(f))

    seen = set()
    rows = []
    for lab in labels:
        i, label = lab["id"], lab["label"].strip()
        if i in seen:
            raise SystemExit(f"id {i} labelled twice")
        if i not in sample:
            raise SystemExit(f"id {i} is not in the sample")
        if label not in LABELS + ("ambiguous",):
            raise SystemExit(f"id {i}: unknown label {label!r}")
        seen.add(i)
        s = sample[i]
        rows.append({"label": label, "sentence": clean(s["headline"]), "source": s["source"],
                     "published_utc": s["published_utc"], "id": i})
    missing = set(sample) - seen
    if missing:
        raise SystemExit(f"{len(missing)} sample rows have no label, e.g. {sorted(missing, key=int)[:5]}")
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default="data/eval")
    args = ap.parse_args()
    d = args.dir

    rows = joined(d, "")
    later = joined(d, "_r2") if os.path.exists(os.path.join(d, "crypto_headlines_sample_r2.csv")) else []
    if {r["id"] for r in rows} & {r["id"] for r in later}:
        raise SystemExit("a second-round row is in the first round")
    ambiguous = [r for r in rows + later if r["label"] == "ambiguous"]
    kept = [r for r in rows if r["label"] != "ambiguous"]
    kept_later = [r for r in later if r["label"] != "ambiguous"]

    # near-duplicate groups; a group's label is checked to be consistent
    groups = collections.defaultdict(list)
    for r in kept:
        groups[dup_key(r["sentence"])].append(r)
    for g in groups.values():
        if len({r["label"] for r in g}) > 1:
            raise SystemExit("near-duplicate headlines with different labels: " + ", ".join(r["id"] for r in g))
    first_keys = {dup_key(r["sentence"]) for r in rows}
    leaks = [r["id"] for r in later if dup_key(r["sentence"]) in first_keys]
    if leaks:
        raise SystemExit(f"second-round rows near-duplicate first-round rows: {leaks[:5]}")

    rng = random.Random(SEED)
    train, validation = [], []
    for label in LABELS:
        lg = [g for g in groups.values() if g[0]["label"] == label]
        lg.sort(key=lambda g: min(int(r["id"]) for r in g))
        rng.shuffle(lg)
        n = sum(len(g) for g in lg)
        target = int(round(n * VALIDATION_SHARE))
        got = 0
        for g in lg:
            if got < target:
                validation.extend(g)
                got += len(g)
            else:
                train.extend(g)
    # the first round's train rows alone: what the accurate tier (models/auroraq-mpnet-fpb) was trained on
    write(os.path.join(d, "crypto_headlines_train_r1.csv"), train)
    train = train + kept_later

    write(os.path.join(d, "crypto_headlines_train.csv"), train)
    write(os.path.join(d, "crypto_headlines_validation.csv"), validation)
    write(os.path.join(d, "crypto_headlines_ambiguous.csv"), ambiguous)

    def counts(rs):
        c = collections.Counter(r["label"] for r in rs)
        return ", ".join(f"{k} {c.get(k, 0)}" for k in LABELS) + f" (total {len(rs)})"

    dups = sum(len(g) for g in groups.values() if len(g) > 1)
    print(f"labelled {len(rows)} + {len(later)} (second round); ambiguous {len(ambiguous)} left out; "
          f"{dups} first-round rows in near-duplicate groups")
    print("train:      " + counts(train) + f"; second round {len(kept_later)}")
    print("validation: " + counts(validation))


if __name__ == "__main__":
    main()
