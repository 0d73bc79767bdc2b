//! The sentiment worker on the bus: articles in, sentiment scores out.
//!
//! Intake pulls deliveries, decodes, prepares and tokenises them (bad ones become dead letters)
//! and queues them; the batcher waits up to `max_wait` for company, plans batches by length
//! under the token budget, and runs them on a blocking thread while intake tokenises the next
//! ones. Each score is published before its article is acked. The bounded queue and the bus's
//! `max_in_flight` push back on the bus when inference falls behind. On close, what was queued
//! is scored and acked before the worker returns.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use auroraq_bus::{topics, Bus, Delivery, OutMessage, Subscription};
use auroraq_schemas::{
    decode, is_watermark, now_micros, AnyEvent, Article, EventKind, Meta, Micros, SentimentScore, Watermark,
};
use auroraq_stage::watermark::Forwarder;
use auroraq_stage::{
    retry_after, send_dead_letter, send_dead_letter_after, subscribe_stage, to_message, Retries, StageConfig,
    StageError, StageMetrics, StageStats,
};
use futures::StreamExt;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::assets::AliasTable;
use crate::batcher::{infer, next_batches, BatchConfig};
use crate::model::{Classifier, Encoded, Prediction};
use crate::text::prepare;

/// One article ready for inference.
struct Job {
    delivery: Delivery,
    article: Article,
    encoded: Encoded,
    text_truncated: bool,
}

/// When an article is available (its score is stamped no earlier).
fn available(a: &Article) -> Micros {
    a.meta.ts_event.max(a.meta.ts_ingest)
}

/// Builds the score event of an article.
pub fn score_event(
    article: &Article,
    assets: Vec<String>,
    pred: &Prediction,
    classifier: &Classifier,
    truncated: bool,
    ts_scored: i64,
) -> SentimentScore {
    SentimentScore {
        meta: Meta::derived(
            EventKind::SentimentScore,
            "sentiment",
            &[&article.meta],
            &classifier.model_sha256,
            article.meta.ts_event,
            ts_scored,
        ),
        article_id: article.article_id.clone(),
        assets,
        label: pred.label.clone(),
        probabilities: pred.probabilities.clone(),
        sentiment_score: pred.sentiment_score,
        confidence: pred.confidence,
        model_id: classifier.model_id.clone(),
        model_sha256: classifier.model_sha256.clone(),
        tokenizer_sha256: classifier.tokenizer_sha256.clone(),
        truncated,
    }
}

/// Runs the worker until the bus closes and the queue is drained. Returns the stage counters.
pub async fn run_worker(
    bus: Arc<dyn Bus>,
    cfg: StageConfig,
    classifier: Classifier,
    aliases: AliasTable,
    batching: BatchConfig,
    metrics: Arc<StageMetrics>,
) -> Result<StageStats, StageError> {
    let sub = subscribe_stage(&*bus, &cfg).await?;
    run_worker_on(bus, cfg, sub, classifier, aliases, batching, metrics).await
}

/// [`run_worker`] on a subscription made beforehand; scores and dead letters go to `bus`.
pub async fn run_worker_on(
    bus: Arc<dyn Bus>,
    cfg: StageConfig,
    mut sub: Box<dyn Subscription>,
    classifier: Classifier,
    aliases: AliasTable,
    batching: BatchConfig,
    metrics: Arc<StageMetrics>,
) -> Result<StageStats, StageError> {
    let classifier = Arc::new(classifier);
    let (tx, mut rx) = mpsc::channel::<Job>(batching.queue.max(1));
    // Watermarks on the articles passed on to the scores (a score is stamped no earlier than its
    // article is available).
    let progress = Forwarder::new(bus.clone(), &cfg, vec![topics::SENTIMENT_SCORES.to_owned()]);

    // Intake: decode, prepare, tokenise; dead-letter what cannot be scored.
    let intake = {
        let bus = bus.clone();
        let stage = cfg.name.clone();
        let metrics = metrics.clone();
        let classifier = classifier.clone();
        let progress = progress.clone();
        tokio::spawn(async move {
            while let Some(next) = sub.next().await {
                let d = match next {
                    Ok(d) => d,
                    Err(e) => {
                        warn!(stage = %stage, error = %e, "delivery error");
                        continue;
                    }
                };
                if is_watermark(d.payload()) {
                    match Watermark::decode(d.payload()) {
                        Ok(w) => {
                            progress.watermark(d.partition, &w).await;
                            d.ack().await?;
                        }
                        Err(e) => {
                            send_dead_letter(&*bus, &stage, d, "decode_error", &e.to_string(), &metrics)
                                .await?
                        }
                    }
                    continue;
                }
                metrics.received.fetch_add(1, Ordering::Relaxed);
                auroraq_stage::count_consumed(&stage, d.topic());
                if d.attempt > 1 {
                    metrics.redelivered.fetch_add(1, Ordering::Relaxed);
                }
                let article = match decode::<Article>(d.payload()) {
                    Ok(a) => a,
                    Err(e) => {
                        send_dead_letter(&*bus, &stage, d, "decode_error", &e.to_string(), &metrics).await?;
                        continue;
                    }
                };
                let prepared = match prepare(article.title.as_deref(), &article.text) {
                    Ok(p) => p,
                    Err(e) => {
                        send_dead_letter(&*bus, &stage, d, "bad_text", &e.to_string(), &metrics).await?;
                        continue;
                    }
                };
                let encoded = match classifier.encode(&prepared.text) {
                    Ok(e) => e,
                    Err(e) => {
                        send_dead_letter(&*bus, &stage, d, "tokenize_error", &e.to_string(), &metrics)
                            .await?;
                        continue;
                    }
                };
                progress.hold(available(&article)).await;
                let job = Job {
                    delivery: d,
                    article,
                    encoded,
                    text_truncated: prepared.truncated,
                };
                if tx.send(job).await.is_err() {
                    break;
                }
            }
            Ok::<(), StageError>(())
        })
    };

    // Batches: collect, plan, infer on a blocking thread, publish, ack.
    while let Some(groups) = next_batches(&mut rx, &batching, |j: &Job| j.encoded.ids.len()).await {
        // As many batches in flight as the classifier has sessions; results in batch order, so
        // that scores are published in the same order whatever the concurrency.
        let mut results = futures::stream::iter(
            groups
                .into_iter()
                .map(|jobs| infer(classifier.clone(), jobs, |x: &Job| &x.encoded)),
        )
        .buffered(classifier.sessions().max(1));
        while let Some((jobs, result)) = results.next().await {
            let times: Vec<Micros> = jobs.iter().map(|j| available(&j.article)).collect();
            match result {
                Ok(preds) => {
                    publish_scores(&*bus, &cfg, &classifier, &aliases, jobs, preds, &metrics).await?
                }
                Err(e) => {
                    warn!(stage = %cfg.name, error = %e, "inference failed");
                    for j in jobs {
                        if j.delivery.attempt >= cfg.max_attempts {
                            let why = format!("failed {} times, last: {e}", j.delivery.attempt);
                            send_dead_letter(&*bus, &cfg.name, j.delivery, "max_attempts", &why, &metrics)
                                .await?;
                        } else {
                            metrics.retried.fetch_add(1, Ordering::Relaxed);
                            let delay = retry_after(cfg.retry_delay, j.delivery.attempt);
                            j.delivery.nack(Some(delay)).await?;
                        }
                    }
                }
            }
            progress.release(times).await;
        }
    }
    intake
        .await
        .map_err(|e| StageError::Task(format!("intake: {e}")))??;
    bus.flush().await?;
    Ok(metrics.snapshot())
}

async fn publish_scores(
    bus: &dyn Bus,
    cfg: &StageConfig,
    c: &Classifier,
    aliases: &AliasTable,
    jobs: Vec<Job>,
    preds: Vec<Prediction>,
    metrics: &StageMetrics,
) -> Result<(), StageError> {
    let now = now_micros();
    let traced = auroraq_stage::trace::enabled().then(std::time::SystemTime::now);
    if let Some(start) = traced {
        // The batch: one span linked to every article it scored.
        auroraq_stage::trace::record_batch(
            &cfg.name,
            "score batch",
            Vec::new(),
            jobs.iter().map(|j| &j.article.meta),
            start,
        );
    }
    let mut batch: Vec<OutMessage> = Vec::with_capacity(jobs.len());
    for (j, p) in jobs.iter().zip(&preds) {
        let a = &j.article;
        let assets = aliases.link_article(a);
        // On event time (replays), scored when the article was received, as in a backtest.
        let ts_scored = if cfg.clock == auroraq_stage::ClockKind::Event {
            a.meta.ts_event.max(a.meta.ts_ingest)
        } else {
            now
        };
        let score = score_event(
            a,
            assets,
            p,
            c,
            j.text_truncated || j.encoded.truncated,
            ts_scored,
        );
        let mut ev = AnyEvent::SentimentScore(score);
        // Continues the article's trace: a child span per article (ids from the events).
        let input = auroraq_schemas::TraceContext::of(&a.meta);
        let span = auroraq_stage::trace::stamp(&cfg.name, ev.meta_mut(), &input);
        if let Some(start) = traced {
            auroraq_stage::trace::record_outputs(
                &cfg.name,
                &[span],
                std::slice::from_ref(&ev),
                Some((
                    &a.meta.event_id,
                    j.delivery.topic(),
                    Some(j.delivery.partition),
                    input,
                )),
                start,
            );
        }
        let mut m = to_message(&ev).map_err(StageError::Encode)?;
        m.topic = topics::SENTIMENT_SCORES.to_owned();
        batch.push(m);
    }
    let n = batch.len() as u64;
    // Kept for the one-by-one fallback below (the payloads are shared, not copied).
    let singles = batch.clone();
    if let Err(e) = bus.publish(batch).await {
        warn!(stage = %cfg.name, error = %e, scores = n, "publishing a batch of scores failed; publishing them one by one");
        return publish_one_by_one(bus, cfg, jobs, singles, metrics).await;
    }
    count_scores_published(cfg, metrics, n);
    for j in jobs {
        j.delivery.ack().await?;
        metrics.processed.fetch_add(1, Ordering::Relaxed);
    }
    debug!(stage = %cfg.name, scored = n, "batch scored");
    Ok(())
}

fn count_scores_published(cfg: &StageConfig, metrics: &StageMetrics, n: u64) {
    metrics.published.fetch_add(n, Ordering::Relaxed);
    metrics::counter!("auroraq_events_published_total", "stage" => cfg.name.clone(), "topic" => topics::SENTIMENT_SCORES)
        .increment(n);
}

/// After a batch of scores could not be published: each score alone, so that one the bus refuses
/// (e.g. over its max payload) holds up neither its batch-mates nor the stage. A score that fails
/// is retried by redelivery of its article (nacked, backing off) and, once the article has been
/// delivered `max_attempts` times, dead-lettered with reason `publish_error` (or, if even that
/// cannot be published, acked with an error log and counted dropped). Two failures in a row look
/// like a bus that is down rather than a bad message: the rest are nacked without a try.
async fn publish_one_by_one(
    bus: &dyn Bus,
    cfg: &StageConfig,
    jobs: Vec<Job>,
    messages: Vec<OutMessage>,
    metrics: &StageMetrics,
) -> Result<(), StageError> {
    let mut failures_in_a_row = 0u32;
    for (j, m) in jobs.into_iter().zip(messages) {
        let d = j.delivery;
        let result = if failures_in_a_row >= 2 {
            Err("not tried: the bus refused the scores before it".to_owned())
        } else {
            bus.publish(vec![m]).await.map(|_| ()).map_err(|e| e.to_string())
        };
        match result {
            Ok(()) => {
                failures_in_a_row = 0;
                count_scores_published(cfg, metrics, 1);
                d.ack().await?;
                metrics.processed.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                failures_in_a_row += 1;
                if d.attempt >= cfg.max_attempts {
                    let why = format!("publishing its score failed {} times, last: {e}", d.attempt);
                    send_dead_letter_after(
                        bus,
                        &cfg.name,
                        d,
                        "publish_error",
                        &why,
                        metrics,
                        Retries::of(cfg),
                    )
                    .await?;
                } else {
                    warn!(stage = %cfg.name, id = %d.id(), attempt = d.attempt, error = %e, "publishing a score failed; will retry");
                    metrics.retried.fetch_add(1, Ordering::Relaxed);
                    let delay = retry_after(cfg.retry_delay, d.attempt);
                    d.nack(Some(delay)).await?;
                }
            }
        }
    }
    Ok(())
}
