//! Event study: what the price did after a signal, by signal strength.
//!
//! For each observation (a fused signal at the time the agent could act on it, or one article's
//! score at its receive time) the forward return of the price over each horizon is taken from the
//! last bar closed at or before the observation to the last bar closed at or before the horizon's
//! end (observations whose horizon runs past the last bar are left out). Observations are ranked
//! by value and cut into quintiles (Q1 lowest, most negative sentiment; ties ordered by time);
//! per quintile: count, mean, median, hit rate (share of positive returns) and a bootstrap 95%
//! interval of the mean (percentiles of resampled means, a fixed seed: the same input gives the
//! same table). `Q5-Q1` is the difference of the top and bottom quintiles' means, its interval
//! from the same resamples. Returns are in percent.
//!
//! Caveat, stated in the report: hourly observations with a 24-hour horizon overlap, so they are
//! not independent and the intervals are too narrow; an interval that includes zero is no edge.

use auroraq_schemas::Micros;
use serde::Serialize;

/// Horizons of the study, in hours.
pub const HORIZONS_H: [u32; 3] = [1, 4, 24];
/// Bootstrap resamples per cell.
pub const RESAMPLES: usize = 1000;
/// Bootstrap seed.
pub const SEED: u64 = 0x5eed_a0e0_2025;

/// One cell of the table.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Row {
    /// `fused` or `article`.
    pub signal: String,
    pub horizon_h: u32,
    /// `Q1`..`Q5`, `all` or `Q5-Q1`.
    pub bucket: String,
    /// Range of signal values in the bucket (NaN for `Q5-Q1`).
    pub lo: f64,
    pub hi: f64,
    pub n: usize,
    /// Forward return, percent.
    pub mean: f64,
    pub median: f64,
    pub hit_rate: f64,
    pub ci_lo: f64,
    pub ci_hi: f64,
}

/// The table, with how it was made and what it says.
#[derive(Clone, Debug, Default, Serialize)]
pub struct EventStudy {
    pub horizons_h: Vec<u32>,
    pub resamples: usize,
    pub seed: u64,
    pub rows: Vec<Row>,
    /// One line per signal and horizon: the Q5-Q1 spread and whether its interval excludes zero.
    pub findings: Vec<String>,
    /// The line for the fused signal at 24 h (the summary's headline).
    pub headline: String,
}

/// Last close at or before `t` (prices sorted by time).
fn price_at(prices: &[(Micros, f64)], t: Micros) -> Option<f64> {
    let i = prices.partition_point(|p| p.0 <= t);
    (i > 0).then(|| prices[i - 1].1)
}

/// Forward return in percent from `t` to `t + h` (None when either end has no price, or the
/// horizon runs past the last bar).
pub fn forward_return(prices: &[(Micros, f64)], t: Micros, h: Micros) -> Option<f64> {
    let last = prices.last()?.0;
    if t + h > last {
        return None;
    }
    let (a, b) = (price_at(prices, t)?, price_at(prices, t + h)?);
    (a > 0.0).then(|| (b / a - 1.0) * 100.0)
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn mean(x: &[f64]) -> f64 {
    if x.is_empty() {
        f64::NAN
    } else {
        x.iter().sum::<f64>() / x.len() as f64
    }
}

fn median(x: &[f64]) -> f64 {
    if x.is_empty() {
        return f64::NAN;
    }
    let mut v = x.to_vec();
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Means of `resamples` bootstrap resamples of `x`.
fn boot_means(x: &[f64], rng: &mut Rng, resamples: usize) -> Vec<f64> {
    if x.is_empty() {
        return Vec::new();
    }
    (0..resamples)
        .map(|_| {
            let mut s = 0.0;
            for _ in 0..x.len() {
                s += x[rng.below(x.len())];
            }
            s / x.len() as f64
        })
        .collect()
}

fn interval(mut means: Vec<f64>) -> (f64, f64) {
    means.sort_by(f64::total_cmp);
    (percentile(&means, 0.025), percentile(&means, 0.975))
}

fn row(signal: &str, h: u32, bucket: &str, vals: &[f64], rets: &[f64], boot: Vec<f64>) -> Row {
    let (ci_lo, ci_hi) = interval(boot);
    Row {
        signal: signal.to_owned(),
        horizon_h: h,
        bucket: bucket.to_owned(),
        lo: vals.iter().copied().fold(f64::INFINITY, f64::min),
        hi: vals.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        n: rets.len(),
        mean: mean(rets),
        median: median(rets),
        hit_rate: if rets.is_empty() {
            f64::NAN
        } else {
            rets.iter().filter(|r| **r > 0.0).count() as f64 / rets.len() as f64
        },
        ci_lo,
        ci_hi,
    }
}

/// The rows of one signal: per horizon, `all`, `Q1`..`Q5` and `Q5-Q1`.
/// `obs`: (time the signal could be acted on, value).
pub fn study(
    signal: &str,
    obs: &[(Micros, f64)],
    prices: &[(Micros, f64)],
    seed: u64,
    resamples: usize,
) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut rng = Rng(seed | 1);
    for h in HORIZONS_H {
        let hm = h as i64 * 3_600_000_000;
        let mut pts: Vec<(f64, Micros, f64)> = obs
            .iter()
            .filter(|(_, v)| v.is_finite())
            .filter_map(|&(t, v)| forward_return(prices, t, hm).map(|r| (v, t, r)))
            .collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let vals: Vec<f64> = pts.iter().map(|p| p.0).collect();
        let rets: Vec<f64> = pts.iter().map(|p| p.2).collect();
        rows.push(row(
            signal,
            h,
            "all",
            &vals,
            &rets,
            boot_means(&rets, &mut rng, resamples),
        ));
        let n = pts.len();
        let mut q_boot = Vec::new();
        for q in 0..5 {
            let (a, b) = (q * n / 5, (q + 1) * n / 5);
            let boot = boot_means(&rets[a..b], &mut rng, resamples);
            q_boot.push(boot.clone());
            rows.push(row(
                signal,
                h,
                &format!("Q{}", q + 1),
                &vals[a..b],
                &rets[a..b],
                boot,
            ));
        }
        let (top, bottom) = (&q_boot[4], &q_boot[0]);
        let spread_boot: Vec<f64> = top.iter().zip(bottom).map(|(t, b)| t - b).collect();
        let (q1, q5) = (&rows[rows.len() - 5], &rows[rows.len() - 1]);
        let (ci_lo, ci_hi) = interval(spread_boot);
        rows.push(Row {
            signal: signal.to_owned(),
            horizon_h: h,
            bucket: "Q5-Q1".into(),
            lo: f64::NAN,
            hi: f64::NAN,
            n: q1.n + q5.n,
            mean: q5.mean - q1.mean,
            median: q5.median - q1.median,
            hit_rate: q5.hit_rate - q1.hit_rate,
            ci_lo,
            ci_hi,
        });
    }
    rows
}

/// One line on a `Q5-Q1` row.
pub fn finding(r: &Row) -> String {
    let verdict = if r.n == 0 || !r.ci_lo.is_finite() {
        "too few observations to say"
    } else if r.ci_lo > 0.0 {
        "the most positive signals were followed by higher returns than the most negative (interval above zero; overlapping windows make it optimistic)"
    } else if r.ci_hi < 0.0 {
        "the most positive signals were followed by lower returns than the most negative (interval below zero; overlapping windows make it optimistic)"
    } else {
        "no edge: the interval includes zero"
    };
    format!(
        "{} scores, {} h: Q5-Q1 mean forward return {:+.3}% (95% CI {:+.3}% .. {:+.3}%, n = {}): {verdict}",
        r.signal, r.horizon_h, r.mean, r.ci_lo, r.ci_hi, r.n
    )
}

/// The whole study: fused signals and per-article scores against the same prices.
pub fn event_study(
    fused: &[(Micros, f64)],
    articles: &[(Micros, f64)],
    prices: &[(Micros, f64)],
) -> EventStudy {
    let mut rows = study("fused", fused, prices, SEED, RESAMPLES);
    rows.extend(study("article", articles, prices, SEED ^ 0xa5a5, RESAMPLES));
    let findings: Vec<String> = rows.iter().filter(|r| r.bucket == "Q5-Q1").map(finding).collect();
    let headline = rows
        .iter()
        .find(|r| r.bucket == "Q5-Q1" && r.signal == "fused" && r.horizon_h == 24)
        .map(finding)
        .unwrap_or_default();
    EventStudy {
        horizons_h: HORIZONS_H.to_vec(),
        resamples: RESAMPLES,
        seed: SEED,
        rows,
        findings,
        headline,
    }
}

/// The table as CSV.
pub fn to_csv(s: &EventStudy) -> String {
    let mut out =
        String::from("signal,horizon_h,bucket,lo,hi,n,mean_pct,median_pct,hit_rate,ci_lo_pct,ci_hi_pct\n");
    for r in &s.rows {
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{},{}\n",
            r.signal, r.horizon_h, r.bucket, r.lo, r.hi, r.n, r.mean, r.median, r.hit_rate, r.ci_lo, r.ci_hi
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: Micros = 3_600_000_000;

    /// Hourly prices that rise 1% an hour after positive signals and fall 1% after negative ones.
    type Series = Vec<(Micros, f64)>;

    fn planted(n: usize) -> (Series, Series) {
        let mut prices = vec![(0, 100.0)];
        let mut obs = Vec::new();
        let mut x: u64 = 7;
        for i in 0..n {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = (x % 1000) as f64 / 1000.0;
            let t = i as Micros * H;
            obs.push((t, v));
            let p = prices.last().unwrap().1 * if v > 0.5 { 1.01 } else { 0.99 };
            prices.push((t + H, p));
        }
        (obs, prices)
    }

    #[test]
    fn forward_returns_use_the_last_close_and_stop_at_the_end() {
        let prices = [(0, 100.0), (H, 110.0), (2 * H, 99.0)];
        assert!((forward_return(&prices, 0, H).unwrap() - 10.0).abs() < 1e-9);
        // Half-way through a bar: the last close at or before.
        assert!((forward_return(&prices, H / 2, H).unwrap() - 10.0).abs() < 1e-9);
        assert_eq!(forward_return(&prices, 2 * H, H), None, "past the last bar");
        assert_eq!(forward_return(&prices, -H, H / 2), None, "no price before");
    }

    #[test]
    fn a_planted_edge_is_found_and_noise_is_not() {
        let (obs, prices) = planted(2000);
        let s = event_study(&obs, &[], &prices);
        let cell = |sig: &str, h: u32, b: &str| {
            s.rows
                .iter()
                .find(|r| r.signal == sig && r.horizon_h == h && r.bucket == b)
                .unwrap()
                .clone()
        };
        let (q1, q5, spread) = (
            cell("fused", 1, "Q1"),
            cell("fused", 1, "Q5"),
            cell("fused", 1, "Q5-Q1"),
        );
        assert_eq!(q1.n + q5.n, spread.n);
        assert!((q1.n as i64 - 399).abs() <= 1, "{q1:?}");
        assert!(q1.hi <= q5.lo, "quintiles ordered by value");
        assert!(
            (q5.mean - 1.0).abs() < 1e-6 && (q1.mean + 1.0).abs() < 1e-6,
            "{q1:?} {q5:?}"
        );
        assert_eq!(q5.hit_rate, 1.0);
        assert_eq!(q1.hit_rate, 0.0);
        assert!(spread.ci_lo > 1.5, "{spread:?}");
        assert!(s.findings[0].contains("higher returns"), "{}", s.findings[0]);
        // The 24 h horizon: values of later hours are unrelated to this one's.
        let late = cell("fused", 24, "Q5-Q1");
        assert!(late.ci_lo < late.mean && late.mean < late.ci_hi);
        // Same input, same table (fixed seed).
        let again = event_study(&obs, &[], &prices);
        assert_eq!(again.rows.len(), s.rows.len());
        for (a, b) in again.rows.iter().zip(&s.rows) {
            assert!(a.mean.to_bits() == b.mean.to_bits() && a.ci_lo.to_bits() == b.ci_lo.to_bits());
        }
        // Shuffled signals: no edge.
        let noise: Vec<(Micros, f64)> = obs.iter().map(|&(t, v)| (t, (v * 7919.0).fract())).collect();
        let n = event_study(&noise, &[], &prices);
        let r = n
            .rows
            .iter()
            .find(|r| r.horizon_h == 1 && r.bucket == "Q5-Q1")
            .unwrap();
        assert!(r.mean.abs() < 0.3, "{r:?}");
        assert_eq!(
            n.rows.iter().filter(|r| r.signal == "article" && r.n > 0).count(),
            0
        );
        assert!(to_csv(&n).lines().count() == 1 + n.rows.len());
    }

    #[test]
    fn medians_and_intervals() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        let mut rng = Rng(SEED);
        let b = boot_means(&[1.0; 10], &mut rng, 50);
        assert_eq!(interval(b), (1.0, 1.0));
    }
}
