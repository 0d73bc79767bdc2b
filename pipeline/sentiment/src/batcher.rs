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
    /// What one more model run costs beyond its tokens, in tokens: [`plan`] splits waiting texts
    /// into batches of similar length when the padding that saves costs more than the extra runs.
    pub run_cost_tokens: usize,
}

/// [`BatchConfig::run_cost_tokens`] by default. The int8 MiniLM here costs about 80 µs of CPU per
/// token and 0.3 ms per run on one thread (`scripts/bench/run_cost.py`), a run the price of about 4
/// tokens; 16 allows for what a run costs around the model (a blocking task, the input tensors,
/// waking the intra-op threads).
pub const RUN_COST_TOKENS: usize = 16;

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_batch_tokens: 4096,
            max_batch_size: 64,
            max_wait: Duration::from_millis(10),
            queue: 512,
            run_cost_tokens: RUN_COST_TOKENS,
        }
    }
}

/// Splits items (with their token lengths) into batches of indexes into `lengths`, each within
/// `max_batch_size` and `max_batch_tokens` (a single item longer than the budget gets a batch of
/// its own), at the least cost: padded tokens (batch size × its longest item) plus
/// `run_cost_tokens` per batch. Items are sorted by length and batches are runs of that order, so
/// the best split is found exactly by dynamic programming over it (O(n × max_batch_size)). Sixteen
/// headlines of 8 to 55 tokens padded as one batch waste about 38 % of the model's work; split
/// this way about 17 %.
pub fn plan(lengths: &[usize], cfg: &BatchConfig) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| lengths[i]);
    let n = order.len();
    let len = |k: usize| lengths[order[k]].max(1);
    let (max_size, budget) = (cfg.max_batch_size.max(1), cfg.max_batch_tokens.max(1));
    // best[j]: the least cost of the j shortest items; start[j]: where their last batch starts.
    let mut best = vec![usize::MAX; n + 1];
    let mut start = vec![0; n + 1];
    best[0] = 0;
    for j in 1..=n {
        let longest = len(j - 1); // sorted: the last item of a batch is its longest
        for i in (0..j).rev() {
            let size = j - i;
            if size > 1 && (size > max_size || size * longest > budget) {
                break;
            }
            let cost = best[i]
                .saturating_add(cfg.run_cost_tokens)
                .saturating_add(size * longest);
            // On a tie the larger batch wins: fewer runs.
            if cost <= best[j] {
                best[j] = cost;
                start[j] = i;
            }
        }
    }
    let mut batches = Vec::new();
    let mut j = n;
    while j > 0 {
        let i = start[j];
        batches.push(order[i..j].to_vec());
        j = i;
    }
    batches.reverse();
    batches
}

/// How many batches' worth of texts [`next_batches`] plans at once when more are already waiting:
/// sorting by length pays more over a larger window (512 FPB sentences at batch 16: 250 sequences/s
/// in arrival order, 545 length-sorted), and texts that are already queued wait no longer for it.
pub const PLAN_WINDOW_BATCHES: usize = 8;

/// The next batches from a queue: waits for a first item (`None` once the queue is closed and
/// empty), then up to `max_wait` for company (at most twice `max_batch_size` items), takes
/// whatever else is already queued (up to [`PLAN_WINDOW_BATCHES`] × `max_batch_size` in all,
/// without waiting), and splits what came into batches by [`plan`] (`len`: an item's token
/// length). The one batching loop of the bus worker and of the API's scorer.
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
    let window = cfg.max_batch_size.max(1) * PLAN_WINDOW_BATCHES;
    while pending.len() < window {
        match rx.try_recv() {
            Ok(x) => pending.push(x),
            Err(_) => break,
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

    #[tokio::test]
    async fn plans_over_what_is_already_queued_up_to_the_window() {
        let cfg = BatchConfig {
            max_batch_size: 4,
            max_batch_tokens: 4 * 128,
            ..BatchConfig::default()
        };
        let (tx, mut rx) = tokio::sync::mpsc::channel::<usize>(100);
        // 50 texts waiting, long and short alternating.
        for i in 0..50 {
            tx.send(if i % 2 == 0 { 8 } else { 60 }).await.unwrap();
        }
        let groups = next_batches(&mut rx, &cfg, |&x| x).await.unwrap();
        let taken: Vec<usize> = groups.iter().flatten().copied().collect();
        assert_eq!(taken.len(), 4 * PLAN_WINDOW_BATCHES, "one window of 8 batches");
        // Planned together: no batch mixes short and long texts.
        for g in &groups {
            assert!(g.iter().all(|&x| x == g[0]), "{groups:?}");
        }
        // The rest stays queued for the next round.
        assert_eq!(rx.len(), 50 - 4 * PLAN_WINDOW_BATCHES);
        drop(tx);
        let mut rest = 0;
        while let Some(g) = next_batches(&mut rx, &cfg, |&x| x).await {
            rest += g.iter().map(Vec::len).sum::<usize>();
        }
        assert_eq!(rest, 50 - 4 * PLAN_WINDOW_BATCHES);
    }

    fn cost(b: &[Vec<usize>], lengths: &[usize], run: usize) -> usize {
        b.iter()
            .map(|x| run + x.len() * x.iter().map(|&i| lengths[i]).max().unwrap_or(0))
            .sum()
    }

    #[test]
    fn splits_by_length_when_padding_costs_more_than_a_run() {
        let cfg = BatchConfig::default();
        // Eight short headlines and eight long ones: two batches beat one padded to 50.
        let lengths: Vec<usize> = (0..16).map(|i| if i % 2 == 0 { 12 } else { 50 }).collect();
        let b = plan(&lengths, &cfg);
        assert_eq!(b.len(), 2, "{b:?}");
        assert!(b[0].iter().all(|&i| lengths[i] == 12), "{b:?}");
        assert!(cost(&b, &lengths, RUN_COST_TOKENS) < RUN_COST_TOKENS + 16 * 50);
        // Nearly equal lengths: one batch (a second run would cost more than it saves).
        let lengths: Vec<usize> = (0..16).map(|i| 20 + i % 2).collect();
        assert_eq!(plan(&lengths, &cfg).len(), 1);
        // Run cost 0 and distinct lengths: every item alone is cheapest (no padding at all).
        let free = BatchConfig {
            run_cost_tokens: 0,
            ..BatchConfig::default()
        };
        let lengths = [5, 9, 7];
        assert_eq!(cost(&plan(&lengths, &free), &lengths, 0), 21);
    }

    #[test]
    fn the_split_is_the_cheapest_of_all_contiguous_splits() {
        // Every split of the sorted order into runs, by brute force, on pseudo-random lengths.
        let cfg = BatchConfig {
            max_batch_tokens: 120,
            max_batch_size: 4,
            ..BatchConfig::default()
        };
        let mut x = 12345u64;
        for _ in 0..200 {
            let n = 1 + (x % 9) as usize;
            let lengths: Vec<usize> = (0..n)
                .map(|_| {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    1 + (x >> 33) as usize % 60
                })
                .collect();
            let b = plan(&lengths, &cfg);
            let mut all: Vec<usize> = b.iter().flatten().copied().collect();
            all.sort();
            assert_eq!(all, (0..n).collect::<Vec<_>>());
            let mut sorted = lengths.clone();
            sorted.sort();
            let mut brute = usize::MAX;
            for mask in 0..(1u32 << (n - 1)) {
                let (mut c, mut from, mut ok) = (0, 0, true);
                for k in 1..=n {
                    if k == n || mask & (1 << (k - 1)) != 0 {
                        let size = k - from;
                        ok &= size == 1 || (size <= 4 && size * sorted[k - 1] <= 120);
                        c += RUN_COST_TOKENS + size * sorted[k - 1];
                        from = k;
                    }
                }
                if ok {
                    brute = brute.min(c);
                }
            }
            assert_eq!(cost(&b, &lengths, RUN_COST_TOKENS), brute, "{lengths:?}: {b:?}");
        }
    }
}
