//! The arithmetic of one window: de-duplication of syndicated copies, outlier rejection,
//! source, confidence and recency weights, the fused score, its confidence and the trend.
//!
//! Pure functions over [`ScoreView`]s, so every number can be checked by hand.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use auroraq_schemas::{Micros, Trend};

/// What fusion needs of one score in a window.
#[derive(Clone, Debug, PartialEq)]
pub struct ScoreView {
    pub id: String,
    pub ts: Micros,
    /// `sentiment_score`, in [0, 1].
    pub value: f64,
    /// The model's confidence, clamped to [0, 1].
    pub confidence: f64,
    /// The article's source (lower-case).
    pub source: String,
    /// Keys that identify the story: two scores sharing any key are copies of one story.
    pub keys: Vec<u64>,
}

/// The weights and rules of [`fuse_window`].
#[derive(Clone, Debug)]
pub struct FuseParams {
    pub source_weights: HashMap<String, f64>,
    pub default_source_weight: f64,
    /// Half-life of the recency decay, in microseconds.
    pub half_life: f64,
    pub outlier_k: f64,
    pub outlier_min_mad: f64,
    pub outlier_min_scores: usize,
    pub evidence_scale: f64,
    pub trend_threshold: f64,
    pub trend_lookback: usize,
}

impl FuseParams {
    /// The parameters of a fusion configuration (source names lower-cased, half-life in µs).
    pub fn from_config(cfg: &crate::FusionConfig) -> FuseParams {
        FuseParams {
            source_weights: cfg
                .source_weights
                .iter()
                .map(|(k, v)| (k.trim().to_lowercase(), *v))
                .collect::<HashMap<_, _>>(),
            default_source_weight: cfg.default_source_weight,
            half_life: cfg.half_life_secs * 1_000_000.0,
            outlier_k: cfg.outlier_k,
            outlier_min_mad: cfg.outlier_min_mad,
            outlier_min_scores: cfg.outlier_min_scores,
            evidence_scale: cfg.evidence_scale,
            trend_threshold: cfg.trend_threshold,
            trend_lookback: cfg.trend_lookback,
        }
    }
}

/// One window's result.
#[derive(Clone, Debug, PartialEq)]
pub struct Fused {
    pub fused_score: f64,
    pub confidence: f64,
    /// Ids of the scores used, in the order they were given.
    pub used: Vec<String>,
    /// Ids rejected as outliers.
    pub outliers: Vec<String>,
    /// Ids merged into an earlier copy of the same story.
    pub copies: Vec<String>,
    pub sources_used: usize,
    /// Share of the total weight per source (sums to 1 when any weight is positive).
    pub weights_used: BTreeMap<String, f64>,
    pub trend: Trend,
}

/// Disjoint sets over indices.
struct Dsu(Vec<usize>);

impl Dsu {
    fn find(&mut self, mut i: usize) -> usize {
        while self.0[i] != i {
            self.0[i] = self.0[self.0[i]];
            i = self.0[i];
        }
        i
    }
    fn union(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            // The smaller index stays the root, so the root is the earliest score.
            let (lo, hi) = if ra < rb { (ra, rb) } else { (rb, ra) };
            self.0[hi] = lo;
        }
    }
}

/// The median of a non-empty slice (the mean of the two middle values for an even length).
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Fuses the scores of one window ending at `window_end`. `scores` must be in canonical order
/// (event time, then id), which makes the earliest copy of a story its representative.
/// `history` holds the fused scores of the previous windows of the same asset and window
/// family; the new one is appended.
pub fn fuse_window(
    p: &FuseParams,
    window_end: Micros,
    scores: &[ScoreView],
    history: &mut VecDeque<f64>,
) -> Fused {
    let n = scores.len();
    // 1. Syndicated copies: connected components over shared story keys.
    let mut dsu = Dsu((0..n).collect());
    let mut first_with_key: HashMap<u64, usize> = HashMap::new();
    for (i, s) in scores.iter().enumerate() {
        for k in &s.keys {
            match first_with_key.get(k) {
                Some(&j) => dsu.union(i, j),
                None => {
                    first_with_key.insert(*k, i);
                }
            }
        }
    }
    let mut reps = Vec::new();
    let mut copies = Vec::new();
    for (i, s) in scores.iter().enumerate() {
        if dsu.find(i) == i {
            reps.push(i);
        } else {
            copies.push(s.id.clone());
        }
    }

    // 2. Outliers: Hampel filter around the median of the representatives.
    let mut used_idx = Vec::with_capacity(reps.len());
    let mut outliers = Vec::new();
    if reps.len() >= p.outlier_min_scores.max(1) {
        let values: Vec<f64> = reps.iter().map(|&i| scores[i].value).collect();
        let med = median(&values);
        let deviations: Vec<f64> = values.iter().map(|v| (v - med).abs()).collect();
        let mad = median(&deviations).max(p.outlier_min_mad);
        let limit = p.outlier_k * 1.4826 * mad;
        for &i in &reps {
            if (scores[i].value - med).abs() > limit {
                outliers.push(scores[i].id.clone());
            } else {
                used_idx.push(i);
            }
        }
    } else {
        used_idx = reps;
    }

    // 3. Weights: source reliability × model confidence × recency decay.
    let mut sum_w = 0.0;
    let mut sum_wx = 0.0;
    let mut sum_w2 = 0.0;
    let mut sum_wc = 0.0;
    let mut per_source: BTreeMap<String, f64> = BTreeMap::new();
    let mut weights = Vec::with_capacity(used_idx.len());
    for &i in &used_idx {
        let s = &scores[i];
        let w_src = p
            .source_weights
            .get(&s.source)
            .copied()
            .unwrap_or(p.default_source_weight);
        let age = (window_end - s.ts).max(0) as f64;
        let decay = 0.5f64.powf(age / p.half_life);
        let w = w_src * s.confidence * decay;
        weights.push(w);
        sum_w += w;
        sum_wx += w * s.value;
        sum_w2 += w * w;
        sum_wc += w * s.confidence;
        *per_source.entry(s.source.clone()).or_default() += w;
    }
    let sources_used = used_idx
        .iter()
        .map(|&i| scores[i].source.as_str())
        .collect::<BTreeSet<_>>()
        .len();

    let (fused_score, confidence) = if sum_w > 0.0 {
        let fused = (sum_wx / sum_w).clamp(0.0, 1.0);
        let var = used_idx
            .iter()
            .zip(&weights)
            .map(|(&i, w)| w * (scores[i].value - fused).powi(2))
            .sum::<f64>()
            / sum_w;
        let agreement = (1.0 - 2.0 * var.sqrt()).clamp(0.0, 1.0);
        let n_eff = sum_w * sum_w / sum_w2;
        let evidence = 1.0 - (-n_eff / p.evidence_scale).exp();
        let mean_conf = sum_wc / sum_w;
        (fused, (mean_conf * evidence * agreement).clamp(0.0, 1.0))
    } else if !used_idx.is_empty() {
        // Every weight is zero: the plain mean, with no confidence.
        let mean = used_idx.iter().map(|&i| scores[i].value).sum::<f64>() / used_idx.len() as f64;
        (mean.clamp(0.0, 1.0), 0.0)
    } else {
        (0.5, 0.0)
    };
    let weights_used = if sum_w > 0.0 {
        per_source.into_iter().map(|(k, w)| (k, w / sum_w)).collect()
    } else {
        per_source.into_keys().map(|k| (k, 0.0)).collect()
    };

    // 4. Trend against the previous windows.
    let trend = if history.is_empty() {
        Trend::Stable
    } else {
        let base = history.iter().sum::<f64>() / history.len() as f64;
        let d = fused_score - base;
        if d > p.trend_threshold {
            Trend::Rising
        } else if d < -p.trend_threshold {
            Trend::Falling
        } else {
            Trend::Stable
        }
    };
    if p.trend_lookback > 0 {
        history.push_back(fused_score);
        while history.len() > p.trend_lookback {
            history.pop_front();
        }
    }

    Fused {
        fused_score,
        confidence,
        used: used_idx.iter().map(|&i| scores[i].id.clone()).collect(),
        outliers,
        copies,
        sources_used,
        weights_used,
        trend,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000_000;

    fn params() -> FuseParams {
        FuseParams {
            source_weights: HashMap::new(),
            default_source_weight: 1.0,
            half_life: (30 * MIN) as f64,
            outlier_k: 3.0,
            outlier_min_mad: 0.05,
            outlier_min_scores: 3,
            evidence_scale: 3.0,
            trend_threshold: 0.05,
            trend_lookback: 3,
        }
    }

    fn s(id: &str, ts: i64, value: f64, confidence: f64, source: &str, keys: &[u64]) -> ScoreView {
        ScoreView {
            id: id.into(),
            ts,
            value,
            confidence,
            source: source.into(),
            keys: keys.to_vec(),
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn weights_and_decay_by_hand() {
        let mut p = params();
        p.source_weights.insert("reuters".into(), 2.0);
        p.source_weights.insert("blog".into(), 0.5);
        let end = 60 * MIN;
        // reuters: 2.0 × 0.8 × 0.5^(0) = 1.6; blog: 0.5 × 1.0 × 0.5^(30/30) = 0.25
        let scores = [
            s("b", end - 30 * MIN, 0.2, 1.0, "blog", &[2]),
            s("r", end, 0.9, 0.8, "reuters", &[1]),
        ];
        let mut h = VecDeque::new();
        let f = fuse_window(&p, end, &scores, &mut h);
        let fused = (1.6 * 0.9 + 0.25 * 0.2) / 1.85;
        assert!(close(f.fused_score, fused), "{} vs {fused}", f.fused_score);
        assert!(close(f.weights_used["reuters"], 1.6 / 1.85));
        assert!(close(f.weights_used["blog"], 0.25 / 1.85));
        assert_eq!(f.sources_used, 2);
        assert_eq!(f.used, vec!["b", "r"]);
        // confidence = mean_conf × (1 − e^(−n_eff/3)) × (1 − 2σ)
        let mean_conf = (1.6 * 0.8 + 0.25 * 1.0) / 1.85;
        let n_eff = 1.85f64.powi(2) / (1.6f64.powi(2) + 0.25f64.powi(2));
        let var = (1.6 * (0.9 - fused).powi(2) + 0.25 * (0.2 - fused).powi(2)) / 1.85;
        let conf = mean_conf * (1.0 - (-n_eff / 3.0).exp()) * (1.0 - 2.0 * var.sqrt());
        assert!(close(f.confidence, conf), "{} vs {conf}", f.confidence);
        assert_eq!(f.trend, Trend::Stable, "no history");
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn one_score_confidence() {
        let p = params();
        let f = fuse_window(&p, 0, &[s("a", 0, 0.7, 0.9, "x", &[])], &mut VecDeque::new());
        assert!(close(f.fused_score, 0.7));
        assert!(close(f.confidence, 0.9 * (1.0 - (-1.0f64 / 3.0).exp())));
    }

    #[test]
    fn hampel_rejects_the_outlier_only() {
        let p = params();
        let vals = [0.60, 0.62, 0.58, 0.61, 0.05];
        let scores: Vec<ScoreView> = vals
            .iter()
            .enumerate()
            .map(|(i, v)| s(&format!("s{i}"), i as i64, *v, 1.0, "x", &[i as u64]))
            .collect();
        let f = fuse_window(&p, 10, &scores, &mut VecDeque::new());
        // median 0.60, MAD = median(0, .02, .02, .01, .55) = 0.02 → floored to 0.05;
        // limit = 3 × 1.4826 × 0.05 = 0.222; only |0.05 − 0.60| = 0.55 exceeds it.
        assert_eq!(f.outliers, vec!["s4"]);
        assert_eq!(f.used.len(), 4);
        assert!(f.fused_score > 0.55);
        // Below outlier_min_scores nothing is rejected.
        let f = fuse_window(&p, 10, &scores[3..], &mut VecDeque::new());
        assert!(f.outliers.is_empty());
    }

    #[test]
    fn copies_merge_transitively_and_keep_the_earliest() {
        let p = params();
        // a~b share key 7, b~c share key 9: one story; d is separate.
        let scores = [
            s("a", 1, 0.9, 1.0, "wire", &[7]),
            s("b", 2, 0.9, 1.0, "blog1", &[7, 9]),
            s("c", 3, 0.9, 1.0, "blog2", &[9]),
            s("d", 4, 0.3, 1.0, "other", &[11]),
        ];
        let f = fuse_window(&p, 4, &scores, &mut VecDeque::new());
        assert_eq!(f.used, vec!["a", "d"]);
        assert_eq!(f.copies, vec!["b", "c"]);
        assert_eq!(f.sources_used, 2);
        assert!(f.weights_used.contains_key("wire") && !f.weights_used.contains_key("blog1"));
    }

    #[test]
    fn trend_against_recent_windows() {
        let p = params();
        let mut h = VecDeque::from(vec![0.5, 0.5, 0.5]);
        let one = |v: f64| [s("a", 0, v, 1.0, "x", &[])];
        assert_eq!(fuse_window(&p, 0, &one(0.6), &mut h).trend, Trend::Rising);
        // history now 0.5, 0.5, 0.6 → mean 0.5333; 0.55 is within 0.05
        assert_eq!(fuse_window(&p, 0, &one(0.55), &mut h).trend, Trend::Stable);
        // history 0.5, 0.6, 0.55 → mean 0.55; 0.40 is 0.15 below
        assert_eq!(fuse_window(&p, 0, &one(0.40), &mut h).trend, Trend::Falling);
        assert_eq!(h.len(), 3);
    }

    #[test]
    fn zero_weights_fall_back_to_the_mean() {
        let p = params();
        let scores = [s("a", 0, 0.2, 0.0, "x", &[]), s("b", 0, 0.4, 0.0, "y", &[])];
        let f = fuse_window(&p, 0, &scores, &mut VecDeque::new());
        assert!(close(f.fused_score, 0.3));
        assert_eq!(f.confidence, 0.0);
    }
}
