//! Value at risk and expected shortfall, historical and parametric (variance-covariance), in
//! `f64` (statistics, not money).
//!
//! Conventions, used everywhere in this crate:
//!
//! - A return is simple: `p_t / p_{t-1} - 1`. VaR and ES are **losses**, reported as positive
//!   numbers (a VaR of 0.05 on a fraction series means "lose 5% or more with probability
//!   `1 - confidence`"). Applied to a money P&L series they are money.
//! - **Historical**: sort the `n` returns ascending and take the `k = ceil(n * (1 - c))` worst
//!   (at least one). `VaR = -r_(k)` (the k-th worst return), `ES = -mean(r_(1..=k))`.
//! - **Parametric**: returns ~ Normal(mu, sigma) with the sample mean and the sample standard
//!   deviation (`n - 1`). With `z = Phi^-1(c)`: `VaR = z * sigma - mu`,
//!   `ES = sigma * phi(z) / (1 - c) - mu`.
//! - **Horizon** (sqrt-time): for a horizon of `h` return periods, historical figures are
//!   scaled by `sqrt(h)`; parametric ones are `z * sigma * sqrt(h) - mu * h` (ES likewise).
//! - **Portfolio**: exposures `w_i` (signed money) on aligned return observations; the money
//!   P&L of period `t` is `sum_i w_i r_{i,t}`. Historical portfolio VaR/ES are taken on that
//!   series; parametric ones from `mu_p = w . mu` and `sigma_p^2 = w' S w`, `S` the sample
//!   covariance matrix.

use serde::{Deserialize, Serialize};

/// The standard normal quantile `Phi^-1(p)`, by Wichura's algorithm AS 241 (PPND16, about 16
/// significant digits). `p` outside `(0, 1)` gives `-inf`/`+inf`, NaN gives NaN.
pub fn normal_quantile(p: f64) -> f64 {
    if p.is_nan() {
        return f64::NAN;
    }
    if p <= 0.0 {
        return f64::NEG_INFINITY;
    }
    if p >= 1.0 {
        return f64::INFINITY;
    }
    const A: [f64; 8] = [
        3.3871328727963665,
        133.14166789178438,
        1971.5909503065513,
        13731.69376550946,
        45921.95393154987,
        67265.7709270087,
        33430.57558358813,
        2509.0809287301227,
    ];
    const B: [f64; 8] = [
        1.0,
        42.31333070160091,
        687.1870074920579,
        5394.196021424751,
        21213.794301586597,
        39307.89580009271,
        28729.085735721943,
        5226.495278852854,
    ];
    const C: [f64; 8] = [
        1.4234371107496835,
        4.630337846156546,
        5.769497221460691,
        3.6478483247632045,
        1.2704582524523684,
        0.2417807251774506,
        0.022723844989269184,
        0.0007745450142783414,
    ];
    const D: [f64; 8] = [
        1.0,
        2.053191626637759,
        1.6763848301838038,
        0.6897673349851,
        0.14810397642748008,
        0.015198666563616457,
        0.0005475938084995345,
        1.0507500716444169e-9,
    ];
    const E: [f64; 8] = [
        6.657904643501103,
        5.463784911164114,
        1.7848265399172913,
        0.29656057182850487,
        0.026532189526576124,
        0.0012426609473880784,
        2.7115555687434876e-5,
        2.0103343992922881e-7,
    ];
    const F: [f64; 8] = [
        1.0,
        0.599832206555888,
        0.1369298809227358,
        0.014875361290850615,
        0.0007868691311456133,
        1.8463183175100548e-5,
        1.421511758316446e-7,
        2.0442631033899397e-15,
    ];
    fn poly(c: &[f64; 8], x: f64) -> f64 {
        c.iter().rev().fold(0.0, |acc, &k| acc * x + k)
    }
    let q = p - 0.5;
    if q.abs() <= 0.425 {
        let r = 0.180625 - q * q;
        return q * poly(&A, r) / poly(&B, r);
    }
    let r = if q < 0.0 { p } else { 1.0 - p };
    let r = (-r.ln()).sqrt();
    let v = if r <= 5.0 {
        let r = r - 1.6;
        poly(&C, r) / poly(&D, r)
    } else {
        let r = r - 5.0;
        poly(&E, r) / poly(&F, r)
    };
    if q < 0.0 {
        -v
    } else {
        v
    }
}

/// The standard normal density.
pub fn normal_pdf(x: f64) -> f64 {
    (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt()
}

/// The arithmetic mean; `None` when empty.
pub fn mean(xs: &[f64]) -> Option<f64> {
    (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64)
}

/// The sample standard deviation (`n - 1`); `None` with fewer than two values.
pub fn sample_std(xs: &[f64]) -> Option<f64> {
    if xs.len() < 2 {
        return None;
    }
    let m = mean(xs)?;
    let ss: f64 = xs.iter().map(|x| (x - m) * (x - m)).sum();
    Some((ss / (xs.len() - 1) as f64).sqrt())
}

/// How many of `n` observations make the `1 - confidence` tail: `ceil(n * (1 - c))`, at least 1
/// (a tolerance of 1e-9 keeps `20 * (1 - 0.9)` at 2, not 3).
pub fn tail_count(n: usize, confidence: f64) -> usize {
    let k = (n as f64 * (1.0 - confidence) - 1e-9).ceil();
    (k.max(1.0) as usize).min(n.max(1))
}

/// The finite returns with the `k` worst first (in ascending order), found by selection rather
/// than a full sort: VaR is recomputed on every completed return interval.
fn worst(xs: &[f64], confidence: f64) -> Option<(Vec<f64>, usize)> {
    let mut v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    let k = tail_count(v.len(), confidence);
    v.select_nth_unstable_by(k - 1, f64::total_cmp);
    v[..k].sort_by(f64::total_cmp);
    Some((v, k))
}

/// One-period historical VaR at `confidence` (a positive loss): minus the k-th worst return.
pub fn historical_var(returns: &[f64], confidence: f64) -> Option<f64> {
    let (v, k) = worst(returns, confidence)?;
    Some(-v[k - 1])
}

/// One-period historical expected shortfall: minus the mean of the k worst returns.
pub fn historical_es(returns: &[f64], confidence: f64) -> Option<f64> {
    let (v, k) = worst(returns, confidence)?;
    Some(-v[..k].iter().sum::<f64>() / k as f64)
}

/// One-period historical VaR and ES together (one selection for both).
fn historical_var_es(returns: &[f64], confidence: f64) -> Option<(f64, f64)> {
    let (v, k) = worst(returns, confidence)?;
    Some((-v[k - 1], -v[..k].iter().sum::<f64>() / k as f64))
}

/// Parametric (normal) VaR over `horizon` periods: `z * sigma * sqrt(h) - mu * h`.
pub fn parametric_var(mu: f64, sigma: f64, confidence: f64, horizon: f64) -> f64 {
    normal_quantile(confidence) * sigma * horizon.sqrt() - mu * horizon
}

/// Parametric (normal) expected shortfall over `horizon` periods:
/// `sigma * phi(z) / (1 - c) * sqrt(h) - mu * h`.
pub fn parametric_es(mu: f64, sigma: f64, confidence: f64, horizon: f64) -> f64 {
    let z = normal_quantile(confidence);
    sigma * normal_pdf(z) / (1.0 - confidence) * horizon.sqrt() - mu * horizon
}

/// VaR and ES of one series, both methods, at one confidence and horizon.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct VarEstimate {
    pub confidence: f64,
    /// Horizon in return periods (the sqrt-time factor is `sqrt(horizon)`).
    pub horizon: f64,
    pub observations: usize,
    pub mean: f64,
    pub std_dev: f64,
    pub historical_var: f64,
    pub historical_es: f64,
    pub parametric_var: f64,
    pub parametric_es: f64,
}

impl VarEstimate {
    /// Both methods on `series` (returns, or money P&L); `None` with fewer than two values.
    pub fn from_series(series: &[f64], confidence: f64, horizon: f64) -> Option<VarEstimate> {
        VarEstimate::with_moments(series, mean(series)?, sample_std(series)?, confidence, horizon)
    }

    /// Historical figures from `series`, parametric ones from the mean `mu` and deviation `sd`
    /// given (the series' own, or a covariance matrix's); `None` with fewer than two values.
    fn with_moments(series: &[f64], mu: f64, sd: f64, confidence: f64, horizon: f64) -> Option<VarEstimate> {
        let scale = horizon.sqrt();
        let (hist_var, hist_es) = historical_var_es(series, confidence)?;
        Some(VarEstimate {
            confidence,
            horizon,
            observations: series.len(),
            mean: mu,
            std_dev: sd,
            historical_var: hist_var * scale,
            historical_es: hist_es * scale,
            parametric_var: parametric_var(mu, sd, confidence, horizon),
            parametric_es: parametric_es(mu, sd, confidence, horizon),
        })
    }

    /// The VaR of `method`.
    pub fn var(&self, method: VarMethod) -> f64 {
        match method {
            VarMethod::Historical => self.historical_var,
            VarMethod::Parametric => self.parametric_var,
        }
    }

    /// The ES of `method`.
    pub fn es(&self, method: VarMethod) -> f64 {
        match method {
            VarMethod::Historical => self.historical_es,
            VarMethod::Parametric => self.parametric_es,
        }
    }
}

/// Which VaR a limit is checked against.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VarMethod {
    #[default]
    Historical,
    Parametric,
}

/// Sample covariance matrix (`n - 1`) of aligned series (`series[i][t]`); `None` unless every
/// series has the same length of at least two.
pub fn covariance_matrix(series: &[Vec<f64>]) -> Option<Vec<Vec<f64>>> {
    let n = series.first()?.len();
    if n < 2 || series.iter().any(|s| s.len() != n) {
        return None;
    }
    let means: Vec<f64> = series.iter().map(|s| mean(s).unwrap_or(0.0)).collect();
    let m = series.len();
    let mut cov = vec![vec![0.0; m]; m];
    for i in 0..m {
        for j in i..m {
            let s: f64 = (0..n)
                .map(|t| (series[i][t] - means[i]) * (series[j][t] - means[j]))
                .sum();
            cov[i][j] = s / (n - 1) as f64;
            cov[j][i] = cov[i][j];
        }
    }
    Some(cov)
}

/// Portfolio VaR and ES in money, for exposures `w` (signed money per asset) on aligned return
/// series (`returns[i][t]`, asset `i`, period `t`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PortfolioVar {
    /// Sum of exposures' absolute values (money).
    pub gross_exposure: f64,
    /// The money P&L series' estimate: historical from the P&L series, parametric from the
    /// covariance matrix (identical to the P&L series' own mean and deviation).
    pub estimate: VarEstimate,
}

/// Portfolio VaR/ES (money) of exposures `w` on aligned `returns`; `None` without two aligned
/// observations or when lengths disagree.
pub fn portfolio_var(w: &[f64], returns: &[Vec<f64>], confidence: f64, horizon: f64) -> Option<PortfolioVar> {
    if w.len() != returns.len() || w.is_empty() {
        return None;
    }
    let cov = covariance_matrix(returns)?;
    let n = returns[0].len();
    let pnl: Vec<f64> = (0..n)
        .map(|t| w.iter().zip(returns).map(|(wi, r)| wi * r[t]).sum())
        .collect();
    let means: Vec<f64> = returns.iter().map(|r| mean(r).unwrap_or(0.0)).collect();
    let mu: f64 = w.iter().zip(&means).map(|(a, b)| a * b).sum();
    let mut var = 0.0;
    for i in 0..w.len() {
        for j in 0..w.len() {
            var += w[i] * w[j] * cov[i][j];
        }
    }
    let estimate = VarEstimate::with_moments(&pnl, mu, var.max(0.0).sqrt(), confidence, horizon)?;
    Some(PortfolioVar {
        gross_exposure: w.iter().map(|x| x.abs()).sum(),
        estimate,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_match_tables() {
        // Reference values (R qnorm, Python statistics.NormalDist().inv_cdf).
        assert!((normal_quantile(0.95) - 1.6448536269514722).abs() < 1e-14);
        assert!((normal_quantile(0.99) - 2.3263478740408408).abs() < 1e-14);
        assert!((normal_quantile(0.975) - 1.959963984540054).abs() < 1e-14);
        assert!((normal_quantile(0.5)).abs() < 1e-15);
        assert!((normal_quantile(0.01) + 2.3263478740408408).abs() < 1e-14);
        assert!((normal_quantile(1e-12) + 7.034483825301131).abs() < 1e-9);
        assert!((normal_quantile(1e-300) + 37.0470962993612).abs() < 1e-9);
        assert_eq!(normal_quantile(0.0), f64::NEG_INFINITY);
    }

    #[test]
    fn tail_count_is_robust_to_rounding() {
        assert_eq!(tail_count(20, 0.9), 2);
        assert_eq!(tail_count(20, 0.95), 1);
        assert_eq!(tail_count(10, 0.99), 1);
        assert_eq!(tail_count(100, 0.99), 1);
        assert_eq!(tail_count(101, 0.99), 2);
        assert_eq!(tail_count(1000, 0.975), 25);
    }
}
