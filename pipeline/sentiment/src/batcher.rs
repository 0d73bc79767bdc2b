//! Dynamic batching: group waiting texts into batches under a token budget, by length.

use std::time::Duration;

/// Batching limits.
#[derive(Clone, Debug)]
pub struct BatchConfig {
    /// Padded tokens per batch (batch size × longest sequence in it).
    pub max_batch_tokens: usize,
    /// Sequences per batch.
    pub max_batch_size: usize,
    /// How long the first waiting text waits for company.
    pub max_wait: Duration,
    /// Texts tokenised and waiting for inference; when full, intake stops pulling from the bus.
    pub queue: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_batch_tokens: 4096,
            max_batch_size: 64,
            max_wait: Duration::from_millis(10),
            queue: 512,
        }
    }
}

/// Splits items (with their token lengths) into batches: sorted by length so that padding wastes
/// little, each batch within `max_batch_size` and `max_batch_tokens` (a single item longer than
/// the budget gets a batch of its own). Returns batches of indexes into `lengths`.
pub fn plan(lengths: &[usize], cfg: &BatchConfig) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| lengths[i]);
    let mut batches = Vec::new();
    let mut cur: Vec<usize> = Vec::new();
    for i in order {
        let longest = lengths[i].max(1); // sorted: the newcomer is the longest
        let fits =
            cur.len() < cfg.max_batch_size.max(1) && longest * (cur.len() + 1) <= cfg.max_batch_tokens.max(1);
        if !fits && !cur.is_empty() {
            batches.push(std::mem::take(&mut cur));
        }
        cur.push(i);
    }
    if !cur.is_empty() {
        batches.push(cur);
    }
    batches
}

/// The next batches from a queue: waits for a first item (`None` once the queue is closed and
/// empty), then up to `max_wait` for company (at most twice `max_batch_size` items), and splits
/// what came into batches by [`plan`] (`len`: an item's token length). The one batching loop of
/// the bus worker and of the API's scorer.
pub async fn next_batches<T>(
    rx: &mut tokio::sync::mpsc::Receiver<T>,
    cfg: &BatchConfig,
    len: impl Fn(&T) -> usize,
) -> Option<Vec<Vec<T>>> {
    let mut pending = vec![rx.recv().await?];
    let deadline = tokio::time::Instant::now() + cfg.max_wait;
    let want = cfg.max_batch_size.max(1) * 2;
    while pending.len() < want {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(x)) => pending.push(x),
            Ok(None) | Err(_) => break,
        }
    }
    let lengths: Vec<usize> = pending.iter().map(&len).collect();
    let batches = plan(&lengths, cfg);
    let mut slots: Vec<Option<T>> = pending.into_iter().map(Some).collect();
    Some(
        batches
            .iter()
            .map(|idx| idx.iter().filter_map(|&i| slots[i].take()).collect())
            .collect(),
    )
}

/// Runs one batch of `items` through the model on a blocking thread (`encoded`: an item's
/// tokens), recording batch size, padding efficiency and inference time. Returns the items with
/// their predictions in order. If the task is cancelled (the runtime is shutting down) the items
/// are gone: a bus worker's deliveries were dropped unsettled and come back to the group.
pub async fn infer<T: Send + 'static>(
    c: std::sync::Arc<crate::Classifier>,
    items: Vec<T>,
    encoded: fn(&T) -> &crate::Encoded,
) -> (Vec<T>, Result<Vec<crate::Prediction>, crate::SentimentError>) {
    let handle = tokio::task::spawn_blocking(move || {
        let refs: Vec<&crate::Encoded> = items.iter().map(encoded).collect();
        let real: usize = refs.iter().map(|e| e.ids.len()).sum();
        let padded = refs.iter().map(|e| e.ids.len()).max().unwrap_or(0) * refs.len();
        metrics::histogram!("auroraq_sentiment_batch_size").record(refs.len() as f64);
        if padded > 0 {
            metrics::gauge!("auroraq_sentiment_padding_efficiency").set(real as f64 / padded as f64);
        }
        let t = std::time::Instant::now();
        let r = c
            .logits(&refs)
            .map(|ls| ls.into_iter().map(|l| c.predict(l)).collect());
        metrics::histogram!("auroraq_sentiment_inference_seconds").record(t.elapsed().as_secs_f64());
        (items, r)
    });
    match handle.await {
        Ok(r) => r,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => (
            Vec::new(),
            Err(crate::SentimentError::Inference(format!("inference task: {e}"))),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn respects_budget_and_size_and_sorts() {
        let cfg = BatchConfig {
            max_batch_tokens: 100,
            max_batch_size: 3,
            ..BatchConfig::default()
        };
        let lengths = [50, 10, 12, 11, 40, 200];
        let b = plan(&lengths, &cfg);
        // every item exactly once
        let mut all: Vec<usize> = b.iter().flatten().copied().collect();
        all.sort();
        assert_eq!(all, (0..lengths.len()).collect::<Vec<_>>());
        for batch in &b {
            let longest = batch.iter().map(|&i| lengths[i]).max().unwrap();
            assert!(batch.len() <= 3);
            assert!(batch.len() == 1 || longest * batch.len() <= 100, "{batch:?}");
        }
        assert_eq!(b[0], vec![1, 3, 2], "short ones together, shortest first");
        assert_eq!(b.last().unwrap(), &vec![5], "an over-budget text runs alone");
    }
}
