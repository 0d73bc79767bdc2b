//! The default model through ONNX Runtime from Rust: logits against Python onnxruntime's golden
//! file, batching equivalence, labels from config.json, clear errors.

use std::path::{Path, PathBuf};

use auroraq_sentiment::{runtime, Classifier, ModelOptions};

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn load(dir: &Path) -> Classifier {
    runtime::init(Some(&repo().join(runtime::LOCAL_LIBRARY))).expect("run scripts/onnxruntime.sh first");
    Classifier::load(
        dir,
        &ModelOptions {
            threads: 2,
            ..ModelOptions::default()
        },
    )
    .unwrap()
}

fn default_model() -> PathBuf {
    repo().join("models/auroraq-minilm-fpb")
}

#[test]
fn logits_match_python_onnxruntime() {
    let c = load(&default_model());
    let golden: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(default_model().join("golden.json")).unwrap()).unwrap();
    let cases = golden["cases"].as_array().unwrap();
    assert!(cases.len() >= 5);
    let mut truncated_seen = false;
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let enc = c.encode(text).unwrap();
        let want_ids: Vec<i64> = case["input_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        assert_eq!(enc.ids, want_ids, "token ids of {text:?}");
        truncated_seen |= enc.truncated;
        let got = c.logits(&[&enc]).unwrap().remove(0);
        let want: Vec<f32> = case["logits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        for (g, w) in got.iter().zip(&want) {
            assert!(
                (g - w).abs() <= 1e-4,
                "{text:?}: logits {got:?} vs Python {want:?}"
            );
        }
    }
    assert!(
        truncated_seen,
        "the golden file has a text longer than the model's max length"
    );
}

const TEXTS: [&str; 8] = [
    "Operating profit rose to EUR 13.1 mn from EUR 8.7 mn in the corresponding period in 2007.",
    "The company's net sales fell by 5% to EUR 77.6 million.",
    "The annual general meeting will be held on 24 March.",
    "Shares surged after the upbeat forecast.",
    "Pretax loss widened to EUR 2.1 million as demand collapsed across all regions and the outlook was cut again.",
    "Nokia",
    "Profit warning issued.",
    "The board proposes a dividend of EUR 0.50 per share, up from EUR 0.40 a year earlier, reflecting strong cash flow.",
];

/// Within one batch, a text's result does not depend on its position or on padding order.
#[test]
fn batch_order_does_not_matter() {
    let c = load(&default_model());
    let forward = c.classify(&TEXTS).unwrap();
    let reversed: Vec<&str> = TEXTS.iter().rev().copied().collect();
    let backward = c.classify(&reversed).unwrap();
    for (i, (_, f)) in forward.iter().enumerate() {
        let b = &backward[TEXTS.len() - 1 - i].1;
        for (x, y) in f.logits.iter().zip(&b.logits) {
            assert!(
                (x - y).abs() < 1e-5,
                "{}: {:?} vs {:?}",
                TEXTS[i],
                f.logits,
                b.logits
            );
        }
    }
}

/// A batched result equals the unbatched one: the default model is quantised with static
/// (calibrated, constant) activation scales, so a text's logits do not depend on its batch-mates;
/// only float rounding differs with padding. Checked on validation sentences in worker-style
/// batches (by length under the token budget) and in file order (more padding).
#[test]
fn batched_results_equal_unbatched() {
    use auroraq_sentiment::batcher::{plan, BatchConfig};
    let c = load(&default_model());
    let ex = auroraq_sentiment::eval::read_examples(&repo().join("data/fpb/validation.csv")).unwrap();
    let enc: Vec<_> = ex
        .iter()
        .take(300)
        .map(|e| c.encode(&e.sentence).unwrap())
        .collect();
    let single: Vec<_> = enc
        .iter()
        .map(|e| c.predict(c.logits(&[e]).unwrap().remove(0)))
        .collect();
    let lengths: Vec<usize> = enc.iter().map(|e| e.ids.len()).collect();
    let cfg = BatchConfig {
        max_batch_size: 32,
        max_batch_tokens: 32 * 128,
        ..BatchConfig::default()
    };
    let by_length = plan(&lengths, &cfg);
    let file_order: Vec<Vec<usize>> = (0..enc.len())
        .collect::<Vec<_>>()
        .chunks(32)
        .map(<[usize]>::to_vec)
        .collect();
    for (name, batches) in [("by length", by_length), ("file order", file_order)] {
        let mut worst = 0.0f64;
        for b in batches {
            let refs: Vec<_> = b.iter().map(|&i| &enc[i]).collect();
            for (&i, l) in b.iter().zip(c.logits(&refs).unwrap()) {
                let p = c.predict(l);
                assert_eq!(
                    p.label, single[i].label,
                    "{name}: sentence {i} changed label in a batch"
                );
                for (k, v) in &p.probabilities {
                    worst = worst.max((v - single[i].probabilities[k]).abs());
                }
            }
        }
        eprintln!("{name}: largest probability difference batched vs alone {worst:.2e}");
        // Bitwise equal on this machine (0.0); float rounding may differ slightly on other CPUs.
        assert!(worst < 1e-6, "{name}: probabilities differ by up to {worst:.2e}");
    }
}

/// `ModelOptions::spin` changes how idle intra-op threads wait, nothing else: the same logits.
#[test]
fn spinning_threads_give_the_same_logits() {
    let sleeping = load(&default_model());
    let spinning = Classifier::load(
        &default_model(),
        &ModelOptions {
            threads: 2,
            spin: true,
            ..ModelOptions::default()
        },
    )
    .expect("a session with spinning intra-op threads");
    let ex = auroraq_sentiment::eval::read_examples(&repo().join("data/fpb/validation.csv")).unwrap();
    let enc: Vec<_> = ex
        .iter()
        .take(64)
        .map(|e| sleeping.encode(&e.sentence).unwrap())
        .collect();
    for batch in enc.chunks(16) {
        let refs: Vec<_> = batch.iter().collect();
        assert_eq!(spinning.logits(&refs).unwrap(), sleeping.logits(&refs).unwrap());
    }
}

#[test]
fn labels_follow_config_json() {
    let c = load(&default_model());
    assert_eq!(c.labels, vec!["positive", "negative", "neutral"]);
    let text = "Operating profit rose sharply and the company raised its outlook.";
    let base = c.classify(&[text]).unwrap().remove(0).1;

    // The same model with positive and negative swapped in id2label.
    let dir = tempfile::tempdir().unwrap();
    for f in ["model.onnx", "tokenizer.json"] {
        std::fs::copy(default_model().join(f), dir.path().join(f)).unwrap();
    }
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(default_model().join("config.json")).unwrap()).unwrap();
    cfg["id2label"] = serde_json::json!({"0": "negative", "1": "positive", "2": "neutral"});
    std::fs::write(dir.path().join("config.json"), cfg.to_string()).unwrap();
    let swapped = load(dir.path());
    let s = swapped.classify(&[text]).unwrap().remove(0).1;
    assert_eq!(base.label, "positive");
    assert_eq!(s.label, "negative", "a permuted id2label permutes the result");
    assert!((s.probabilities["negative"] - base.probabilities["positive"]).abs() < 1e-9);
    assert!((s.sentiment_score - (1.0 - base.sentiment_score)).abs() < 1e-9);
}

#[test]
fn missing_files_are_named() {
    runtime::init(Some(&repo().join(runtime::LOCAL_LIBRARY))).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let err = Classifier::load(dir.path(), &ModelOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("model.onnx"), "{err}");
}
