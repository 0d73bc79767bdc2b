//! Scoring on request, for the API: texts in, predictions out, through the same token-budget
//! batcher as the workers on the bus ([`plan`] under a [`BatchConfig`]).
//!
//! A [`Scorer`] owns one model instance. Callers from any task hand it texts; a batching task
//! waits up to `max_wait` for company, plans batches by length under the token budget and runs
//! them on blocking threads (as many at once as the classifier has sessions), so concurrent
//! requests share batches. The queue is bounded: when it is full [`Scorer::score_many`] fails at
//! once with [`ScoreError::Overloaded`] instead of queueing without bound.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};

use crate::batcher::{infer, next_batches, BatchConfig};
use crate::model::{Classifier, Encoded, Prediction};
use crate::text::{prepare, TextError};

/// Why a text got no prediction.
#[derive(Debug, thiserror::Error)]
pub enum ScoreError {
    /// Nothing to score in the text (empty, only markup or symbols).
    #[error("{0}")]
    Text(#[from] TextError),
    #[error("tokenizer: {0}")]
    Tokenize(String),
    /// The queue is full: the caller should retry later.
    #[error("the scorer's queue is full ({0} texts waiting)")]
    Overloaded(usize),
    #[error("inference: {0}")]
    Inference(String),
    /// The batching task stopped (the process is shutting down).
    #[error("the scorer stopped")]
    Stopped,
}

/// A prediction with what the API reports beside it.
#[derive(Clone, Debug)]
pub struct Scored {
    pub prediction: Prediction,
    /// The text was cut to the model's input limit (characters or tokens).
    pub truncated: bool,
    /// Texts in the batch this one ran in.
    pub batch_size: usize,
}

struct Request {
    encoded: Encoded,
    truncated: bool,
    reply: oneshot::Sender<Result<Scored, ScoreError>>,
}

/// Counters of a scorer.
#[derive(Debug, Default)]
pub struct ScorerStats {
    pub texts: AtomicU64,
    pub batches: AtomicU64,
    pub queued: AtomicU64,
}

impl ScorerStats {
    /// Mean texts per batch so far (0 before the first batch).
    pub fn mean_batch_size(&self) -> f64 {
        let b = self.batches.load(Ordering::Relaxed);
        if b == 0 {
            0.0
        } else {
            self.texts.load(Ordering::Relaxed) as f64 / b as f64
        }
    }
}

/// One model behind a bounded, batching queue. Cheap to clone.
#[derive(Clone)]
pub struct Scorer {
    tx: mpsc::Sender<Request>,
    classifier: Arc<Classifier>,
    stats: Arc<ScorerStats>,
    capacity: usize,
}

impl Scorer {
    /// Starts the batching task on the current tokio runtime. It ends when every clone of the
    /// scorer is dropped.
    pub fn start(classifier: Arc<Classifier>, batching: BatchConfig) -> Scorer {
        let capacity = batching.queue.max(1);
        let (tx, rx) = mpsc::channel(capacity);
        let stats = Arc::new(ScorerStats::default());
        tokio::spawn(batch_loop(rx, classifier.clone(), batching, stats.clone()));
        Scorer {
            tx,
            classifier,
            stats,
            capacity,
        }
    }

    pub fn classifier(&self) -> &Classifier {
        &self.classifier
    }

    pub fn stats(&self) -> &ScorerStats {
        &self.stats
    }

    /// Texts waiting for a batch now.
    pub fn queue_depth(&self) -> usize {
        self.capacity - self.tx.capacity()
    }

    /// Scores one text.
    pub async fn score(&self, text: &str) -> Result<Scored, ScoreError> {
        let mut out = self.score_many(&[text]).await;
        out.pop().unwrap_or(Err(ScoreError::Stopped))
    }

    /// Scores texts; results in the order given. Every text is queued before any is awaited, so
    /// the texts of one call batch together (and with other callers'). When the queue cannot
    /// take all of them, none is queued and each result is [`ScoreError::Overloaded`].
    pub async fn score_many(&self, texts: &[&str]) -> Vec<Result<Scored, ScoreError>> {
        let mut waiting: Vec<Result<oneshot::Receiver<Result<Scored, ScoreError>>, ScoreError>> =
            Vec::with_capacity(texts.len());
        let mut requests = Vec::with_capacity(texts.len());
        for text in texts {
            match self.encode(text) {
                Ok((encoded, truncated)) => {
                    let (reply, rx) = oneshot::channel();
                    requests.push(Request {
                        encoded,
                        truncated,
                        reply,
                    });
                    waiting.push(Ok(rx));
                }
                Err(e) => waiting.push(Err(e)),
            }
        }
        if !requests.is_empty() {
            let permits = match self.tx.try_reserve_many(requests.len()) {
                Ok(p) => Some(p),
                Err(mpsc::error::TrySendError::Full(())) => None,
                Err(mpsc::error::TrySendError::Closed(())) => {
                    return texts.iter().map(|_| Err(ScoreError::Stopped)).collect();
                }
            };
            let Some(permits) = permits else {
                let depth = self.queue_depth();
                return waiting
                    .into_iter()
                    .map(|w| w.and(Err(ScoreError::Overloaded(depth))))
                    .collect();
            };
            self.stats
                .queued
                .fetch_add(requests.len() as u64, Ordering::Relaxed);
            for (permit, req) in permits.zip(requests) {
                permit.send(req);
            }
        }
        let mut out = Vec::with_capacity(waiting.len());
        for w in waiting {
            out.push(match w {
                Ok(rx) => rx.await.unwrap_or(Err(ScoreError::Stopped)),
                Err(e) => Err(e),
            });
        }
        out
    }

    fn encode(&self, text: &str) -> Result<(Encoded, bool), ScoreError> {
        let prepared = prepare(None, text)?;
        let encoded = self
            .classifier
            .encode(&prepared.text)
            .map_err(|e| ScoreError::Tokenize(e.to_string()))?;
        let truncated = prepared.truncated || encoded.truncated;
        Ok((encoded, truncated))
    }
}

async fn batch_loop(
    mut rx: mpsc::Receiver<Request>,
    classifier: Arc<Classifier>,
    batching: BatchConfig,
    stats: Arc<ScorerStats>,
) {
    while let Some(groups) = next_batches(&mut rx, &batching, |r: &Request| r.encoded.ids.len()).await {
        metrics::gauge!("auroraq_api_scorer_queue_depth").set(rx.len() as f64);
        let mut results = futures::stream::iter(
            groups
                .into_iter()
                .map(|reqs| infer(classifier.clone(), reqs, |x: &Request| &x.encoded)),
        )
        .buffer_unordered(classifier.sessions().max(1));
        while let Some((reqs, result)) = results.next().await {
            let n = reqs.len();
            stats.batches.fetch_add(1, Ordering::Relaxed);
            stats.texts.fetch_add(n as u64, Ordering::Relaxed);
            match result {
                Ok(preds) => {
                    for (req, prediction) in reqs.into_iter().zip(preds) {
                        let _ = req.reply.send(Ok(Scored {
                            prediction,
                            truncated: req.truncated,
                            batch_size: n,
                        }));
                    }
                }
                Err(e) => {
                    for req in reqs {
                        let _ = req.reply.send(Err(ScoreError::Inference(e.to_string())));
                    }
                }
            }
        }
    }
}
