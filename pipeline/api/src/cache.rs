//! Predictions by text: an in-process map (first in, first out past its capacity) in front of an
//! optional Redis cache shared by API replicas. The key is SHA-256 over the model's sha and the
//! text, so a new model never answers from an old one's entries.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use sha2::{Digest, Sha256};

/// What is cached of a prediction (what `analyze` reports, without timings).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CachedPrediction {
    pub label: String,
    pub sentiment_score: f64,
    pub confidence: f64,
    pub probabilities: std::collections::BTreeMap<String, f64>,
    pub truncated: bool,
}

/// The cache key of `text` under model `model_sha256`, hex.
pub fn key(model_sha256: &str, text: &str) -> String {
    let mut h = Sha256::new();
    h.update(model_sha256.as_bytes());
    h.update([0u8]);
    h.update(text.as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// A bounded in-process cache.
pub struct LocalCache {
    cap: usize,
    inner: Mutex<(HashMap<String, CachedPrediction>, VecDeque<String>)>,
}

impl LocalCache {
    pub fn new(cap: usize) -> Self {
        LocalCache {
            cap,
            inner: Mutex::new((HashMap::new(), VecDeque::new())),
        }
    }

    pub fn get(&self, key: &str) -> Option<CachedPrediction> {
        if self.cap == 0 {
            return None;
        }
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .get(key)
            .cloned()
    }

    pub fn put(&self, key: String, value: CachedPrediction) {
        if self.cap == 0 {
            return;
        }
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (map, order) = &mut *g;
        if map.insert(key.clone(), value).is_none() {
            order.push_back(key);
        }
        while order.len() > self.cap {
            if let Some(old) = order.pop_front() {
                map.remove(&old);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: f64) -> CachedPrediction {
        CachedPrediction {
            label: "positive".into(),
            sentiment_score: s,
            confidence: 0.9,
            probabilities: Default::default(),
            truncated: false,
        }
    }

    #[test]
    fn bounded_and_keyed_by_model() {
        assert_ne!(key("a", "x"), key("b", "x"));
        assert_ne!(key("a", "x"), key("a", "y"));
        let c = LocalCache::new(2);
        c.put("1".into(), p(0.1));
        c.put("2".into(), p(0.2));
        c.put("3".into(), p(0.3));
        assert_eq!(c.len(), 2);
        assert!(c.get("1").is_none());
        assert_eq!(c.get("3").map(|x| x.sentiment_score), Some(0.3));
        assert!(LocalCache::new(0).get("3").is_none());
    }
}
