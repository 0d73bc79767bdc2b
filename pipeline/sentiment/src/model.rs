//! A sequence classifier on disk: `model.onnx`, `tokenizer.json`, `config.json`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::Tensor;
use sha2::{Digest, Sha256};
use tokenizers::{Tokenizer, TruncationParams};

use crate::SentimentError;

/// Where to run the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Device {
    #[default]
    Cpu,
    Cuda,
}

/// How to load a model.
#[derive(Clone, Debug)]
pub struct ModelOptions {
    /// Intra-op threads; 0: ONNX Runtime's choice (all cores).
    pub threads: usize,
    pub device: Device,
    /// Overrides the model's maximum sequence length (tokens).
    pub max_length: Option<usize>,
    /// Sessions over the same model, each with `threads` intra-op threads, so that this many
    /// batches run at once (0 or 1: one). On a few cores, two single-threaded sessions keep the
    /// cores busier with small batches than one session with two threads.
    pub sessions: usize,
    /// Idle intra-op threads spin instead of sleeping: lower latency per model run (a batch of
    /// one: 2.2 ms here instead of 3.1 ms on two threads) on cores that nothing else needs, but
    /// spinning threads take CPU from the tokenizer, the bus and the other stages of the same
    /// process. Off by default; nothing changes with one intra-op thread.
    pub spin: bool,
}

impl Default for ModelOptions {
    fn default() -> Self {
        ModelOptions {
            threads: 0,
            device: Device::Cpu,
            max_length: None,
            sessions: 1,
            spin: false,
        }
    }
}

/// One text, tokenised.
#[derive(Clone, Debug, PartialEq)]
pub struct Encoded {
    pub ids: Vec<i64>,
    pub type_ids: Vec<i64>,
    /// Cut at the model's maximum length.
    pub truncated: bool,
}

/// A classification.
#[derive(Clone, Debug, PartialEq)]
pub struct Prediction {
    pub label: String,
    pub probabilities: BTreeMap<String, f64>,
    /// 0.5 + (P(positive) - P(negative)) / 2, in [0, 1].
    pub sentiment_score: f64,
    /// Probability of the winning label.
    pub confidence: f64,
    pub logits: Vec<f32>,
}

/// A loaded model.
pub struct Classifier {
    /// `Session::run` needs exclusive access; tokenising does not. One or more sessions over the
    /// same model; a batch takes a free one.
    sessions: Vec<std::sync::Mutex<Session>>,
    next_session: std::sync::atomic::AtomicUsize,
    tokenizer: Tokenizer,
    /// Labels by output index, from `config.json`'s `id2label`.
    pub labels: Vec<String>,
    pub max_length: usize,
    pub model_id: String,
    pub model_sha256: String,
    pub tokenizer_sha256: String,
    pub device: Device,
    uses_token_types: bool,
    pad_id: i64,
}

fn sha256_file(p: &Path) -> Result<String, SentimentError> {
    let bytes =
        std::fs::read(p).map_err(|e| SentimentError::Model(format!("cannot read {}: {e}", p.display())))?;
    Ok(Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Labels in output order from a `config.json` value.
pub fn labels_from_config(config: &serde_json::Value) -> Result<Vec<String>, SentimentError> {
    let map = config
        .get("id2label")
        .and_then(|m| m.as_object())
        .ok_or_else(|| SentimentError::Model("config.json has no id2label".into()))?;
    let mut labels = vec![String::new(); map.len()];
    for (k, v) in map {
        let i: usize = k
            .parse()
            .map_err(|_| SentimentError::Model(format!("id2label key {k:?} is not an index")))?;
        let name = v
            .as_str()
            .ok_or_else(|| SentimentError::Model(format!("id2label[{k}] is not a string")))?;
        let slot = labels
            .get_mut(i)
            .ok_or_else(|| SentimentError::Model(format!("id2label index {i} out of range")))?;
        *slot = name.to_lowercase();
    }
    if labels.iter().any(String::is_empty) {
        return Err(SentimentError::Model("id2label has gaps".into()));
    }
    Ok(labels)
}

impl Classifier {
    /// Loads a model folder. ONNX Runtime must be loaded first ([`crate::runtime::init`]).
    pub fn load(dir: &Path, opts: &ModelOptions) -> Result<Self, SentimentError> {
        let file = |name: &str| -> Result<PathBuf, SentimentError> {
            let p = dir.join(name);
            if p.is_file() {
                Ok(p)
            } else {
                Err(SentimentError::Model(format!(
                    "{} is missing from the model folder",
                    p.display()
                )))
            }
        };
        let (model_path, tok_path, cfg_path) =
            (file("model.onnx")?, file("tokenizer.json")?, file("config.json")?);
        let cfg_text = std::fs::read_to_string(&cfg_path)
            .map_err(|e| SentimentError::Model(format!("cannot read {}: {e}", cfg_path.display())))?;
        let config: serde_json::Value = serde_json::from_str(&cfg_text)
            .map_err(|e| SentimentError::Model(format!("{} is not JSON: {e}", cfg_path.display())))?;
        let labels = labels_from_config(&config)?;
        let max_length = opts
            .max_length
            .or_else(|| {
                config
                    .get("auroraq_max_length")
                    .and_then(|v| v.as_u64())
                    .map(|v| v as usize)
            })
            .or_else(|| {
                config
                    .get("max_position_embeddings")
                    .and_then(|v| v.as_u64())
                    .map(|v| v as usize)
            })
            .unwrap_or(512)
            .clamp(8, 8192);
        let model_id = config
            .get("auroraq_model_id")
            .and_then(|v| v.as_str())
            .map(str::to_owned)
            .unwrap_or_else(|| {
                dir.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            });

        let mut tokenizer = Tokenizer::from_file(&tok_path)
            .map_err(|e| SentimentError::Model(format!("cannot load {}: {e}", tok_path.display())))?;
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length,
                ..Default::default()
            }))
            .map_err(|e| SentimentError::Model(format!("tokenizer truncation: {e}")))?;
        let pad_id = tokenizer.token_to_id("[PAD]").unwrap_or(0) as i64;

        let (session, device) = Self::session(&model_path, opts)?;
        let uses_token_types = session.inputs().iter().any(|i| i.name() == "token_type_ids");
        let mut sessions = vec![std::sync::Mutex::new(session)];
        for _ in 1..opts.sessions.max(1) {
            let (s, _) = Self::session(
                &model_path,
                &ModelOptions {
                    device,
                    ..opts.clone()
                },
            )?;
            sessions.push(std::sync::Mutex::new(s));
        }
        Ok(Classifier {
            sessions,
            next_session: std::sync::atomic::AtomicUsize::new(0),
            tokenizer,
            labels,
            max_length,
            model_id,
            model_sha256: sha256_file(&model_path)?,
            tokenizer_sha256: sha256_file(&tok_path)?,
            device,
            uses_token_types,
            pad_id,
        })
    }

    fn session(model: &Path, opts: &ModelOptions) -> Result<(Session, Device), SentimentError> {
        let err = |e: String| SentimentError::Model(format!("{}: {e}", model.display()));
        let env = crate::runtime::environment()?;
        let builder = || -> Result<_, SentimentError> {
            let mut b = Session::builder(env)
                .map_err(|e| err(e.to_string()))?
                .with_optimization_level(GraphOptimizationLevel::Level3)
                .map_err(|e| err(e.to_string()))?
                // Idle intra-op threads sleep instead of spinning unless asked: on a few shared
                // cores (the async runtime, the tokenizer, other stages) spinning threads steal
                // the CPU the others need, and slow everything down under load.
                .with_intra_op_spinning(opts.spin)
                .map_err(|e| err(e.to_string()))?;
            if opts.threads > 0 {
                b = b
                    .with_intra_threads(opts.threads)
                    .map_err(|e| err(e.to_string()))?;
            }
            Ok(b)
        };
        if opts.device == Device::Cuda {
            match Self::cuda_session(builder()?, model) {
                Ok(s) => return Ok((s, Device::Cuda)),
                Err(why) => tracing::warn!(reason = %why, "CUDA is not available; running on the CPU"),
            }
        }
        let s = builder()?
            .commit_from_file(model)
            .map_err(|e| err(e.to_string()))?;
        Ok((s, Device::Cpu))
    }

    #[cfg(feature = "cuda")]
    fn cuda_session(b: ort::session::builder::SessionBuilder, model: &Path) -> Result<Session, String> {
        let b = b
            .with_execution_providers([ort::ep::CUDA::default().build().error_on_failure()])
            .map_err(|e| e.to_string())?;
        let mut b = b;
        b.commit_from_file(model).map_err(|e| e.to_string())
    }

    #[cfg(not(feature = "cuda"))]
    fn cuda_session(_b: ort::session::builder::SessionBuilder, _model: &Path) -> Result<Session, String> {
        Err("this build has no CUDA support (cargo feature `cuda`)".into())
    }

    /// Tokenises one text (truncating at the model's maximum length).
    pub fn encode(&self, text: &str) -> Result<Encoded, SentimentError> {
        let enc = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| SentimentError::Tokenize(e.to_string()))?;
        Ok(Encoded {
            ids: enc.get_ids().iter().map(|&i| i as i64).collect(),
            type_ids: enc.get_type_ids().iter().map(|&i| i as i64).collect(),
            truncated: !enc.get_overflowing().is_empty(),
        })
    }

    /// Runs one padded batch and returns the logits of each input.
    pub fn logits(&self, batch: &[&Encoded]) -> Result<Vec<Vec<f32>>, SentimentError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let n = batch.len();
        let len = batch.iter().map(|e| e.ids.len()).max().unwrap_or(1).max(1);
        let mut ids = vec![self.pad_id; n * len];
        let mut mask = vec![0i64; n * len];
        let mut types = vec![0i64; n * len];
        for (r, e) in batch.iter().enumerate() {
            let row = r * len;
            ids[row..row + e.ids.len()].copy_from_slice(&e.ids);
            mask[row..row + e.ids.len()].fill(1);
            types[row..row + e.type_ids.len()].copy_from_slice(&e.type_ids);
        }
        let t = |v: Vec<i64>| {
            Tensor::from_array(([n, len], v)).map_err(|e| SentimentError::Inference(e.to_string()))
        };
        let mut session = self.free_session();
        let outputs = if self.uses_token_types {
            session.run(ort::inputs!["input_ids" => t(ids)?, "attention_mask" => t(mask)?, "token_type_ids" => t(types)?])
        } else {
            session.run(ort::inputs!["input_ids" => t(ids)?, "attention_mask" => t(mask)?])
        }
        .map_err(|e| SentimentError::Inference(e.to_string()))?;
        let (shape, data) = outputs[0]
            .try_extract_tensor::<f32>()
            .map_err(|e| SentimentError::Inference(e.to_string()))?;
        let classes = shape.last().copied().unwrap_or(0) as usize;
        if classes != self.labels.len() || data.len() != n * classes {
            return Err(SentimentError::Inference(format!(
                "model output has shape {shape:?}, expected [{n}, {}] (labels in config.json)",
                self.labels.len()
            )));
        }
        Ok(data.chunks(classes).map(<[f32]>::to_vec).collect())
    }

    /// How many batches can run at once (sessions loaded).
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    /// A free session if there is one, else the next in turn (waiting for it).
    fn free_session(&self) -> std::sync::MutexGuard<'_, Session> {
        for s in &self.sessions {
            if let Ok(g) = s.try_lock() {
                return g;
            }
        }
        let i = self
            .next_session
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            % self.sessions.len();
        self.sessions[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Turns logits into a prediction with this model's labels.
    pub fn predict(&self, logits: Vec<f32>) -> Prediction {
        predict(&self.labels, logits)
    }

    /// Tokenises, runs and predicts a list of texts as one batch.
    pub fn classify(&self, texts: &[&str]) -> Result<Vec<(Encoded, Prediction)>, SentimentError> {
        let enc: Vec<Encoded> = texts.iter().map(|t| self.encode(t)).collect::<Result<_, _>>()?;
        let refs: Vec<&Encoded> = enc.iter().collect();
        let logits = self.logits(&refs)?;
        Ok(enc
            .into_iter()
            .zip(logits)
            .map(|(e, l)| (e, self.predict(l)))
            .collect())
    }
}

/// Softmax over logits, labelled; the sentiment score from the `positive` and `negative` labels.
pub fn predict(labels: &[String], logits: Vec<f32>) -> Prediction {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f64> = logits.iter().map(|&l| ((l - max) as f64).exp()).collect();
    let sum: f64 = exps.iter().sum();
    let probs: Vec<f64> = exps.iter().map(|e| e / sum).collect();
    let (best, confidence) =
        probs.iter().copied().enumerate().fold(
            (0, f64::NEG_INFINITY),
            |acc, (i, p)| if p > acc.1 { (i, p) } else { acc },
        );
    let probabilities: BTreeMap<String, f64> = labels.iter().cloned().zip(probs.iter().copied()).collect();
    let p = |name: &str| probabilities.get(name).copied().unwrap_or(0.0);
    let sentiment_score = (0.5 + (p("positive") - p("negative")) / 2.0).clamp(0.0, 1.0);
    Prediction {
        label: labels[best].clone(),
        probabilities,
        sentiment_score,
        confidence,
        logits,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_come_from_config_in_index_order() {
        let c = serde_json::json!({"id2label": {"2": "neutral", "0": "positive", "1": "Negative"}});
        assert_eq!(
            labels_from_config(&c).unwrap(),
            vec!["positive", "negative", "neutral"]
        );
        assert!(labels_from_config(&serde_json::json!({})).is_err());
        assert!(labels_from_config(&serde_json::json!({"id2label": {"0": "a", "2": "b"}})).is_err());
    }

    #[test]
    fn score_uses_named_labels() {
        let labels: Vec<String> = ["positive", "negative", "neutral"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let p = predict(&labels, vec![2.0, 0.0, 0.0]);
        assert_eq!(p.label, "positive");
        assert!(p.sentiment_score > 0.5 && p.sentiment_score <= 1.0);
        let sum: f64 = p.probabilities.values().sum();
        assert!((sum - 1.0).abs() < 1e-9);
        // Permuting the labels permutes the meaning of the same logits.
        let permuted: Vec<String> = ["negative", "positive", "neutral"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let q = predict(&permuted, vec![2.0, 0.0, 0.0]);
        assert_eq!(q.label, "negative");
        assert!((q.sentiment_score - (1.0 - p.sentiment_score)).abs() < 1e-12);
    }
}
