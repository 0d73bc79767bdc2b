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
