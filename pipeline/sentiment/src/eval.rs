//! Evaluation on labelled sentences: accuracy, macro-F1, per-class figures, confusion matrix.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::batcher::{plan, BatchConfig};
use crate::model::{Classifier, Encoded};
use crate::SentimentError;

/// One labelled sentence.
#[derive(Clone, Debug)]
pub struct Example {
    pub label: String,
    pub sentence: String,
}

/// Reads a CSV with columns `label,sentence` (header required, any column order).
pub fn read_examples(path: &Path) -> Result<Vec<Example>, SentimentError> {
    let bad = |why: String| SentimentError::Model(format!("{}: {why}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    parse_examples(&text).map_err(bad)
}

/// Parses `label,sentence` CSV text.
pub fn parse_examples(text: &str) -> Result<Vec<Example>, String> {
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(text.as_bytes());
    let headers = rdr.headers().map_err(|e| e.to_string())?.clone();
    let col = |name: &str| headers.iter().position(|h| h.trim().eq_ignore_ascii_case(name));
    let (Some(li), Some(si)) = (col("label"), col("sentence")) else {
        return Err(format!(
            "needs columns label and sentence, has {:?}",
            headers.iter().collect::<Vec<_>>()
        ));
    };
    let mut out = Vec::new();
    for (n, rec) in rdr.records().enumerate() {
        let rec = rec.map_err(|e| format!("row {}: {e}", n + 2))?;
        let (Some(l), Some(s)) = (rec.get(li), rec.get(si)) else {
            return Err(format!("row {}: missing label or sentence", n + 2));
        };
        out.push(Example {
            label: l.trim().to_lowercase(),
            sentence: s.to_owned(),
        });
    }
    Ok(out)
}

#[derive(Clone, Debug, Serialize)]
pub struct ClassFigures {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: usize,
}

/// The figures of one evaluation.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub n: usize,
    pub accuracy: f64,
    pub macro_f1: f64,
    pub per_class: BTreeMap<String, ClassFigures>,
    /// confusion[true label][predicted label]
    pub confusion: BTreeMap<String, BTreeMap<String, usize>>,
    pub labels: Vec<String>,
    pub model_id: String,
    pub model_sha256: String,
}

/// Rows: true label; columns: predicted label.
pub type Confusion = BTreeMap<String, BTreeMap<String, usize>>;

/// Accuracy, macro-F1, per-class figures and the confusion matrix.
pub struct Figures {
    pub accuracy: f64,
    pub macro_f1: f64,
    pub per_class: BTreeMap<String, ClassFigures>,
    pub confusion: Confusion,
}

/// Computes the figures from (true, predicted) pairs over `labels`.
pub fn score(labels: &[String], pairs: &[(String, String)]) -> Figures {
    let mut confusion: BTreeMap<String, BTreeMap<String, usize>> = labels
        .iter()
        .map(|t| (t.clone(), labels.iter().map(|p| (p.clone(), 0)).collect()))
        .collect();
    let mut correct = 0;
    for (t, p) in pairs {
        if t == p {
            correct += 1;
        }
        *confusion
            .entry(t.clone())
            .or_default()
            .entry(p.clone())
            .or_default() += 1;
    }
    let mut per_class = BTreeMap::new();
    for l in labels {
        let tp = confusion.get(l).and_then(|r| r.get(l)).copied().unwrap_or(0) as f64;
        let support: usize = confusion.get(l).map(|r| r.values().sum()).unwrap_or(0);
        let predicted: usize = confusion.values().map(|r| r.get(l).copied().unwrap_or(0)).sum();
        let precision = if predicted > 0 { tp / predicted as f64 } else { 0.0 };
        let recall = if support > 0 { tp / support as f64 } else { 0.0 };
        let f1 = if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        };
        per_class.insert(
            l.clone(),
            ClassFigures {
                precision,
                recall,
                f1,
                support,
            },
        );
    }
    let accuracy = if pairs.is_empty() {
        0.0
    } else {
        correct as f64 / pairs.len() as f64
    };
    let macro_f1 = per_class.values().map(|c| c.f1).sum::<f64>() / labels.len().max(1) as f64;
    Figures {
        accuracy,
        macro_f1,
        per_class,
        confusion,
    }
}

/// Classifies every example in length-sorted batches and scores the result.
pub fn evaluate(
    c: &Classifier,
    examples: &[Example],
    batching: &BatchConfig,
    mut progress: impl FnMut(usize, usize),
) -> Result<Report, SentimentError> {
    for e in examples {
        if !c.labels.contains(&e.label) {
            return Err(SentimentError::Model(format!(
                "label {:?} in the data is not one of the model's labels {:?}",
                e.label, c.labels
            )));
        }
    }
    let enc: Vec<Encoded> = examples
        .iter()
        .map(|e| c.encode(&e.sentence))
        .collect::<Result<_, _>>()?;
    let lengths: Vec<usize> = enc.iter().map(|e| e.ids.len()).collect();
    let mut predicted = vec![String::new(); examples.len()];
    let mut done = 0;
    for batch in plan(&lengths, batching) {
        let refs: Vec<&Encoded> = batch.iter().map(|&i| &enc[i]).collect();
        let logits = c.logits(&refs)?;
        for (&i, l) in batch.iter().zip(logits) {
            predicted[i] = c.predict(l).label;
        }
        done += batch.len();
        progress(done, examples.len());
    }
    let pairs: Vec<(String, String)> = examples.iter().map(|e| e.label.clone()).zip(predicted).collect();
    let Figures {
        accuracy,
        macro_f1,
        per_class,
        confusion,
    } = score(&c.labels, &pairs);
    Ok(Report {
        n: examples.len(),
        accuracy,
        macro_f1,
        per_class,
        confusion,
        labels: c.labels.clone(),
        model_id: c.model_id.clone(),
        model_sha256: c.model_sha256.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_by_hand() {
        let labels: Vec<String> = ["positive", "negative", "neutral"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let p = |a: &str, b: &str| (a.to_string(), b.to_string());
        let pairs = vec![
            p("positive", "positive"),
            p("positive", "neutral"),
            p("negative", "negative"),
            p("neutral", "neutral"),
            p("neutral", "positive"),
        ];
        let Figures {
            accuracy: acc,
            macro_f1,
            per_class: per,
            confusion: conf,
        } = score(&labels, &pairs);
        assert!((acc - 0.6).abs() < 1e-12);
        // positive: tp 1, predicted 2, support 2 -> p 0.5 r 0.5 f1 0.5
        assert!((per["positive"].f1 - 0.5).abs() < 1e-12);
        assert!((per["negative"].f1 - 1.0).abs() < 1e-12);
        assert!((per["neutral"].f1 - 0.5).abs() < 1e-12);
        assert!((macro_f1 - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(conf["neutral"]["positive"], 1);
    }

    #[test]
    fn parses_csv() {
        let ex = parse_examples("label,sentence\nPositive,\"Up, a lot\"\nneutral,Flat\n").unwrap();
        assert_eq!(ex.len(), 2);
        assert_eq!(ex[0].label, "positive");
        assert_eq!(ex[0].sentence, "Up, a lot");
        assert!(parse_examples("a,b\n1,2\n").is_err());
    }
}
