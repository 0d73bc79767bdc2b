//! What the API tests share: the repository root, real headlines, and scores for them.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use auroraq_schemas::*;

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The first `n` real headlines of `data/crypto/crypto_news_2025-05_2025-08.csv.gz`.
pub fn real_articles(n: usize) -> Vec<Article> {
    auroraq_replay::news_csv::read_news_csv(
        &repo().join("data/crypto/crypto_news_2025-05_2025-08.csv.gz"),
        "crypto-news",
    )
    .expect("news")
    .into_iter()
    .filter_map(|e| match e {
        AnyEvent::Article(a) => Some(a),
        _ => None,
    })
    .take(n)
    .collect()
}

/// A score of `a` for BTC with `label` and `score` (a stand-in for the worker's output).
pub fn score_of(a: &Article, label: &str, score: f64) -> SentimentScore {
    let mut probs = std::collections::BTreeMap::new();
    probs.insert(label.to_string(), score);
    SentimentScore {
        meta: Meta::derived(
            EventKind::SentimentScore,
            "sentiment",
            &[&a.meta],
            "m",
            a.meta.ts_event,
            a.meta.ts_event,
        ),
        article_id: a.article_id.clone(),
        assets: vec!["BTC".into()],
        label: label.into(),
        probabilities: probs,
        sentiment_score: score,
        confidence: 0.9,
        model_id: "m".into(),
        model_sha256: "0".repeat(64),
        tokenizer_sha256: "0".repeat(64),
        truncated: false,
    }
}
