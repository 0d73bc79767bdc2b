//! What a policy sees and what it may do.
//!
//! The observation is a fixed-length `f32` vector, so that a trained model (ONNX) and the rule
//! read the same thing:
//!
//! | index | feature | range |
//! | --- | --- | --- |
//! | 0 | fused sentiment score of the asset's latest window | 0 .. 1 (0.5 neutral) |
//! | 1 | confidence of that score | 0 .. 1 |
//! | 2 | trend against earlier windows | -1 falling, 0 stable, +1 rising |
//! | 3 | scores used in the window | count |
//! | 4 | last price return of the symbol (last / previous − 1) | fraction |
//! | 5 | position | -1 short, 0 flat, +1 long |
//! | 6 | open position's return (price / average entry − 1; 0 when flat) | fraction |
//! | 7 | bias | always 1 |
//!
//! The action is one of hold, buy, sell ([`Action`], indexes 0, 1, 2). An ONNX policy outputs
//! either three logits in that order (the highest wins; ties go to the lowest index, so to hold)
//! or one integer index.

/// Length of the observation vector.
pub const OBSERVATION_LEN: usize = 8;

/// See the module docs for the layout.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Observation(pub [f32; OBSERVATION_LEN]);

impl Observation {
    pub fn fused_score(&self) -> f32 {
        self.0[0]
    }
    pub fn confidence(&self) -> f32 {
        self.0[1]
    }
    pub fn position(&self) -> f32 {
        self.0[5]
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    Hold = 0,
    Buy = 1,
    Sell = 2,
}

impl Action {
    pub fn from_index(i: i64) -> Option<Action> {
        match i {
            0 => Some(Action::Hold),
            1 => Some(Action::Buy),
            2 => Some(Action::Sell),
            _ => None,
        }
    }

    /// The highest of three logits `[hold, buy, sell]`; ties go to the lowest index.
    pub fn argmax(logits: &[f32]) -> Option<Action> {
        if logits.len() != 3 || logits.iter().any(|x| !x.is_finite()) {
            return None;
        }
        let mut best = 0;
        for i in 1..3 {
            if logits[i] > logits[best] {
                best = i;
            }
        }
        Action::from_index(best as i64)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("policy model: {0}")]
    Model(String),
    #[error("policy output {0:?} is not an action (three finite logits or an index 0..=2)")]
    BadOutput(Vec<f32>),
}

/// Decides an action from an observation, with a human-readable reason.
pub trait Policy: Send {
    fn name(&self) -> &str;
    fn decide(&mut self, obs: &Observation) -> Result<(Action, String), PolicyError>;
}

/// The seed's thresholds.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuleThresholds {
    /// Buy when the fused score is above this...
    pub buy_above: f32,
    /// ...sell when it is below this...
    pub sell_below: f32,
    /// ...and in both cases only when confidence is above this.
    pub min_confidence: f32,
}

impl Default for RuleThresholds {
    fn default() -> Self {
        RuleThresholds {
            buy_above: 0.7,
            sell_below: 0.3,
            min_confidence: 0.8,
        }
    }
}

/// The seed's rule: BUY when score > 0.7 and confidence > 0.8, SELL when score < 0.3 and
/// confidence > 0.8, else HOLD.
#[derive(Clone, Debug, Default)]
pub struct RulePolicy {
    pub t: RuleThresholds,
}

impl Policy for RulePolicy {
    fn name(&self) -> &str {
        "rule"
    }

    fn decide(&mut self, obs: &Observation) -> Result<(Action, String), PolicyError> {
        let (s, c, t) = (obs.fused_score(), obs.confidence(), self.t);
        Ok(if c > t.min_confidence && s > t.buy_above {
            (
                Action::Buy,
                format!(
                    "rule: fused {s:.3} > {:.2} and confidence {c:.3} > {:.2}",
                    t.buy_above, t.min_confidence
                ),
            )
        } else if c > t.min_confidence && s < t.sell_below {
            (
                Action::Sell,
                format!(
                    "rule: fused {s:.3} < {:.2} and confidence {c:.3} > {:.2}",
                    t.sell_below, t.min_confidence
                ),
            )
        } else {
            (
                Action::Hold,
                format!("rule: fused {s:.3}, confidence {c:.3}: no threshold crossed"),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(s: f32, c: f32) -> Observation {
        Observation([s, c, 0.0, 3.0, 0.0, 0.0, 0.0, 1.0])
    }

    #[test]
    fn the_seed_rule() {
        let mut p = RulePolicy::default();
        let a = |p: &mut RulePolicy, s, c| p.decide(&obs(s, c)).map(|(a, _)| a).ok();
        assert_eq!(a(&mut p, 0.71, 0.81), Some(Action::Buy));
        assert_eq!(a(&mut p, 0.70, 0.90), Some(Action::Hold), "strictly above");
        assert_eq!(
            a(&mut p, 0.90, 0.80),
            Some(Action::Hold),
            "confidence strictly above"
        );
        assert_eq!(a(&mut p, 0.29, 0.81), Some(Action::Sell));
        assert_eq!(a(&mut p, 0.5, 0.99), Some(Action::Hold));
        p.t.buy_above = 0.6;
        assert_eq!(
            a(&mut p, 0.65, 0.81),
            Some(Action::Buy),
            "thresholds are configurable"
        );
    }

    #[test]
    fn argmax_ties_hold() {
        assert_eq!(Action::argmax(&[0.0, 0.0, 0.0]), Some(Action::Hold));
        assert_eq!(Action::argmax(&[0.0, 0.1, 0.1]), Some(Action::Buy));
        assert_eq!(Action::argmax(&[0.0, f32::NAN, 0.1]), None);
        assert_eq!(Action::argmax(&[0.0, 1.0]), None);
    }
}
