//! Sentiment workers: score articles with a FinBERT-class classifier run by ONNX Runtime.
//!
//! - [`runtime`] finds and loads `libonnxruntime.so`;
//! - [`model::Classifier`] loads `{model.onnx, tokenizer.json, config.json}` (labels from
//!   `config.json`'s `id2label`) and classifies padded batches;
//! - [`text`] prepares what the model reads, [`assets`] links articles to assets.

pub mod assets;
pub mod batcher;
pub mod eval;
pub mod model;
pub mod processor;
pub mod runtime;
pub mod scorer;
pub mod text;
pub mod worker;

pub use model::{Classifier, Device, Encoded, ModelOptions, Prediction};

/// Failures of the sentiment stage.
#[derive(Debug, thiserror::Error)]
pub enum SentimentError {
    #[error("ONNX Runtime: {0}")]
    Runtime(String),
    #[error("model: {0}")]
    Model(String),
    #[error("tokenizer: {0}")]
    Tokenize(String),
    #[error("inference: {0}")]
    Inference(String),
}
