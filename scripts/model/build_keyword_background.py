#!/usr/bin/env python3
"""Build the background document-frequency table of auroraq-text's keyword extractor.

Inputs (from the repository root, all in the repository):
  data/crypto/crypto_news_2025-05_2025-08.csv.gz   crypto news headlines (column `headline`)
  data/fpb/train.csv                               Financial PhraseBank training split (column `sentence`;
                                                   CC BY-NC-SA 3.0, left out with --no-fpb)
  pipeline/text/data/stopwords.txt                 stop-words (never counted)
  pipeline/text/data/finance_lexicon.tsv           the lexicon (its phrases are counted too)

Output:
  pipeline/text/data/background_df.tsv
    line 1:  #documents<TAB>N          (number of documents read)
    then:    term<TAB>df               (documents containing the term), sorted by term, df >= --min-df

Every headline and every sentence is one document. A document's terms are its candidate words (the
tokeniser below, minus stop-words, one-character words and number-like words) plus the lexicon phrases
(terms of several words) found in its token sequence. HTML character references in headlines
(`&#039;`) are decoded first.

The tokeniser is the Rust one of `pipeline/text/src/keywords.rs`, and must stay so:
  * lower-case the text (`str.lower()`, Rust `str::to_lowercase`);
  * a token is a maximal run of alphanumeric characters (`[^\\W_]+` here, `char::is_alphanumeric` there;
    the two agree on everything but a few combining marks of non-Latin scripts);
  * a candidate word has 2 to 40 characters, is not a stop-word, and is not number-like: all
    characters numeric (`2025`), or ASCII digits followed by at most two ASCII letters (`97k`, `10th`).
`cargo test -p auroraq-text --test tags` recounts the table in Rust and compares.

Python 3 standard library only; deterministic (same inputs, same bytes). Run from the repository root:
  python3 scripts/model/build_keyword_background.py
"""
import argparse
import csv
import gzip
import html
import os
import re
import unicodedata

TOKEN = re.compile(r"[^\W_]+")
MAX_WORD_CHARS = 40
NUMBER_LIKE = re.compile(r"[0-9]+[a-z]{0,2}")


def tokens(text):
    return TOKEN.findall(text.lower())


def number_like(tok):
    return all(unicodedata.category(c)[0] == "N" for c in tok) or NUMBER_LIKE.fullmatch(tok) is not None


def read_stopwords(path):
    with open(path, encoding="utf-8") as f:
        return {line.strip() for line in f if line.strip() and not line.startswith("#")}


def read_phrases(path):
    """The lexicon's terms of several words, as token tuples."""
    phrases = set()
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line or line.startswith("#"):
                continue
            term = line.split("\t")[0]
            toks = tuple(tokens(term))
            if len(toks) > 1:
                phrases.add(toks)
    return phrases


def documents(crypto_path, fpb_path):
    with gzip.open(crypto_path, "rt", encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            yield html.unescape(row["headline"])
    if fpb_path is None:
        return
    with open(fpb_path, encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            yield row["sentence"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--crypto", default="data/crypto/crypto_news_2025-05_2025-08.csv.gz")
    ap.add_argument("--fpb", default="data/fpb/train.csv")
    ap.add_argument("--no-fpb", action="store_true",
                    help="leave the Financial PhraseBank (CC BY-NC-SA 3.0) out of the background")
    ap.add_argument("--stopwords", default="pipeline/text/data/stopwords.txt")
    ap.add_argument("--lexicon", default="pipeline/text/data/finance_lexicon.tsv")
    ap.add_argument("--out", default="pipeline/text/data/background_df.tsv")
    ap.add_argument("--min-df", type=int, default=2)
    args = ap.parse_args()

    stop = read_stopwords(args.stopwords)
    phrases = read_phrases(args.lexicon)
    max_len = max((len(p) for p in phrases), default=1)

    df = {}
    n_docs = 0
    for doc in documents(args.crypto, None if args.no_fpb else args.fpb):
        n_docs += 1
        toks = tokens(doc)
        terms = {t for t in toks if 2 <= len(t) <= MAX_WORD_CHARS and t not in stop and not number_like(t)}
        for i in range(len(toks)):
            for n in range(2, max_len + 1):
                if tuple(toks[i : i + n]) in phrases:
                    terms.add(" ".join(toks[i : i + n]))
        for t in terms:
            df[t] = df.get(t, 0) + 1

    kept = sorted((t, n) for t, n in df.items() if n >= args.min_df)
    tmp = args.out + ".tmp"
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.write(f"#documents\t{n_docs}\n")
        for t, n in kept:
            f.write(f"{t}\t{n}\n")
    os.replace(tmp, args.out)
    print(f"{args.out}: {n_docs} documents, {len(kept)} terms (of {len(df)}) with df >= {args.min_df}, "
          f"{os.path.getsize(args.out)} bytes")


if __name__ == "__main__":
    main()
