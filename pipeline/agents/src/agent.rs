//! The agent stage: fused signals and prices in, order intents out.

use std::collections::{BTreeMap, HashSet, VecDeque};

use auroraq_schemas::{
    AnyEvent, Dec, EventKind, FusedSignal, Holding, Meta, OrderIntent, OrderSide, OrderStatus, OrderUpdate,
    Trend, Verdict,
};
use auroraq_stage::{Clock, HandlerError, Processor};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::policy::{Action, Observation, Policy};

/// An agent's settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    /// The agent's name: on its intents, and the stage name.
    pub name: String,
    /// Asset (as fused signals name it) → the symbol it trades, e.g. `BTC = "BTCUSDT"`.
    pub assets: BTreeMap<String, String>,
    /// Whether a sell signal when flat opens a short.
    pub allow_short: bool,
    /// Quote notional per opening order; unset: risk sizes the order.
    pub order_notional: Option<Decimal>,
    /// Windows with fewer scores than this are ignored.
    pub min_scores: i32,
    /// Thresholds of the rule policy (`[agents.<name>.rule]`; the seed's 0.7 / 0.3 / 0.8 by
    /// default); an ONNX policy ignores them.
    pub rule: crate::policy::RuleThresholds,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig::auroraq()
    }
}

impl AgentConfig {
    /// AuroraQ: crypto, long-only.
    pub fn auroraq() -> Self {
        AgentConfig {
            name: "auroraq".into(),
            assets: [("BTC", "BTCUSDT"), ("ETH", "ETHUSDT")]
                .into_iter()
                .map(|(a, s)| (a.to_owned(), s.to_owned()))
                .collect(),
            allow_short: false,
            order_notional: None,
            min_scores: 1,
            rule: Default::default(),
        }
    }

    /// MacroQ: stocks and indexes on daily bars, long-only.
    pub fn macroq() -> Self {
        AgentConfig {
            name: "macroq".into(),
            assets: [("AAPL", "AAPL"), ("MSFT", "MSFT"), ("SPX", "SPX")]
                .into_iter()
                .map(|(a, s)| (a.to_owned(), s.to_owned()))
                .collect(),
            ..AgentConfig::auroraq()
        }
    }
}

/// Counts of what the agent did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AgentStats {
    pub signals: u64,
    pub intents: u64,
    pub holds: u64,
    /// Signals for an asset whose symbol had no price yet.
    pub no_price: u64,
    /// Signals while an earlier intent for the symbol was still open.
    pub pending: u64,
    pub fills: u64,
    pub policy_errors: u64,
}

#[derive(Clone, Debug, Default)]
struct SymbolState {
    last: Option<Decimal>,
    prev: Option<Decimal>,
    /// From the agent's own fills.
    holding: Holding,
    /// The intent waiting for its decision or order.
    pending: Option<String>,
}

/// The state of `symbol` (names are upper case; no allocation when `symbol` is already).
fn state_of<'a>(symbols: &'a mut BTreeMap<String, SymbolState>, symbol: &str) -> Option<&'a mut SymbolState> {
    if symbol.bytes().any(|c| c.is_ascii_lowercase()) {
        symbols.get_mut(&symbol.to_ascii_uppercase())
    } else {
        symbols.get_mut(symbol)
    }
}

/// Remembers the last `cap` ids, to apply each fill once under redelivery.
#[derive(Debug)]
struct Seen {
    set: HashSet<String>,
    order: VecDeque<String>,
    cap: usize,
}

impl Seen {
    fn new(cap: usize) -> Self {
        Seen {
            set: HashSet::new(),
            order: VecDeque::new(),
            cap,
        }
    }

    /// True the first time an id is seen.
    fn first(&mut self, id: &str) -> bool {
        if self.set.contains(id) {
            return false;
        }
        if self.order.len() >= self.cap {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        self.set.insert(id.to_owned());
        self.order.push_back(id.to_owned());
        true
    }
}

/// A trading agent (see the crate docs).
pub struct Agent {
    cfg: AgentConfig,
    policy: Box<dyn Policy>,
    symbols: BTreeMap<String, SymbolState>,
    seen_fills: Seen,
    stats: AgentStats,
}

impl Agent {
    pub fn new(cfg: AgentConfig, policy: Box<dyn Policy>) -> Self {
        let symbols = cfg
            .assets
            .values()
            .map(|s| (s.to_ascii_uppercase(), SymbolState::default()))
            .collect();
        Agent {
            cfg,
            policy,
            symbols,
            seen_fills: Seen::new(100_000),
            stats: AgentStats::default(),
        }
    }

    pub fn stats(&self) -> AgentStats {
        self.stats
    }

    pub fn config(&self) -> &AgentConfig {
        &self.cfg
    }

    /// The agent's position in `symbol`, from its fills.
    pub fn position(&self, symbol: &str) -> Decimal {
        self.symbols
            .get(&symbol.to_ascii_uppercase())
            .map(|s| s.holding.quantity)
            .unwrap_or_default()
    }

    fn price(&mut self, symbol: &str, price: Decimal) {
        if let Some(s) = state_of(&mut self.symbols, symbol) {
            if price > Decimal::ZERO {
                s.prev = s.last;
                s.last = Some(price);
            }
        }
    }

    fn on_update(&mut self, u: &OrderUpdate) {
        if u.agent != self.cfg.name {
            return;
        }
        let Some(s) = state_of(&mut self.symbols, &u.symbol) else {
            return;
        };
        if let (Some(q), Some(p)) = (u.last_fill_quantity, u.last_fill_price) {
            if q.0 > Decimal::ZERO && self.seen_fills.first(&u.meta.event_id) {
                self.stats.fills += 1;
                let signed = if u.side == OrderSide::Buy { q.0 } else { -q.0 };
                s.holding.apply(signed, p.0);
            }
        }
        if matches!(
            u.status,
            OrderStatus::Filled | OrderStatus::Cancelled | OrderStatus::Rejected
        ) {
            s.pending = None;
        }
    }

    fn observation(&self, f: &FusedSignal, s: &SymbolState, last: Decimal) -> Observation {
        let to_f = |d: Decimal| d.to_f32().unwrap_or(0.0);
        let ret = match s.prev {
            Some(p) if p > Decimal::ZERO => to_f(last / p - Decimal::ONE),
            _ => 0.0,
        };
        let pos = if s.holding.quantity > Decimal::ZERO {
            1.0
        } else if s.holding.quantity < Decimal::ZERO {
            -1.0
        } else {
            0.0
        };
        let open_ret = if s.holding.quantity.is_zero() || s.holding.avg_price.is_zero() {
            0.0
        } else {
            to_f(last / s.holding.avg_price - Decimal::ONE) * pos
        };
        let trend = match f.trend {
            Trend::Rising => 1.0,
            Trend::Falling => -1.0,
            Trend::Stable => 0.0,
        };
        Observation([
            f.fused_score as f32,
            f.confidence as f32,
            trend,
            f.scores_used as f32,
            ret,
            pos,
            open_ret,
            1.0,
        ])
    }

    fn on_signal(&mut self, f: &FusedSignal, clock: &dyn Clock) -> Vec<AnyEvent> {
        let Some(symbol) = self.cfg.assets.get(&f.asset).map(|s| s.to_ascii_uppercase()) else {
            return Vec::new();
        };
        self.stats.signals += 1;
        if f.scores_used < self.cfg.min_scores {
            self.stats.holds += 1;
            return Vec::new();
        }
        let Some(state) = self.symbols.get(&symbol).cloned() else {
            return Vec::new();
        };
        let Some(last) = state.last else {
            self.stats.no_price += 1;
            return Vec::new();
        };
        if state.pending.is_some() {
            self.stats.pending += 1;
            return Vec::new();
        }
        let obs = self.observation(f, &state, last);
        let (action, why) = match self.policy.decide(&obs) {
            Ok(x) => x,
            Err(e) => {
                self.stats.policy_errors += 1;
                tracing::warn!(agent = %self.cfg.name, error = %e, "policy failed; holding");
                return Vec::new();
            }
        };
        let pos = state.holding.quantity;
        // What the action means for the position: close what is open, or open when flat.
        let (side, quantity) = match action {
            Action::Hold => {
                self.stats.holds += 1;
                return Vec::new();
            }
            Action::Buy if pos < Decimal::ZERO => (OrderSide::Buy, Some(-pos)),
            Action::Buy if pos.is_zero() => (OrderSide::Buy, None),
            Action::Sell if pos > Decimal::ZERO => (OrderSide::Sell, Some(pos)),
            Action::Sell if pos.is_zero() && self.cfg.allow_short => (OrderSide::Sell, None),
            _ => {
                self.stats.holds += 1;
                return Vec::new();
            }
        };
        let meta = Meta::derived(
            EventKind::OrderIntent,
            &self.cfg.name,
            &[&f.meta],
            &symbol,
            f.meta.ts_event,
            clock.now(),
        );
        let intent_id = meta.event_id.clone();
        let notional = if quantity.is_none() {
            self.cfg.order_notional.map(Dec)
        } else {
            None
        };
        if let Some(s) = self.symbols.get_mut(&symbol) {
            s.pending = Some(intent_id.clone());
        }
        self.stats.intents += 1;
        vec![AnyEvent::OrderIntent(OrderIntent {
            meta,
            intent_id,
            agent: self.cfg.name.clone(),
            symbol,
            side,
            quantity: quantity.map(Dec),
            notional,
            limit_price: None,
            reason: format!(
                "{} ({}; window {}..{})",
                why,
                self.policy.name(),
                f.window_start,
                f.window_end
            ),
        })]
    }
}

impl Processor for Agent {
    fn name(&self) -> &str {
        &self.cfg.name
    }

    fn inputs(&self) -> Vec<String> {
        vec![
            "sentiment.fused.>".into(),
            "market.trades.>".into(),
            "market.tickers.>".into(),
            "market.klines.>".into(),
            auroraq_bus::topics::EXEC_ORDERS.into(),
            auroraq_bus::topics::RISK_DECISIONS.into(),
        ]
    }

    fn outputs(&self) -> Vec<String> {
        vec![auroraq_bus::topics::ORDER_INTENTS.into()]
    }

    /// Order updates and risk decisions are what its own intents caused.
    fn feedback(&self) -> Vec<String> {
        vec![
            auroraq_bus::topics::EXEC_ORDERS.into(),
            auroraq_bus::topics::RISK_DECISIONS.into(),
        ]
    }

    /// Intents come from fused signals only (prices and updates only change its state).
    fn triggers(&self, _output: &str) -> Vec<String> {
        vec!["sentiment.fused.>".into()]
    }

    fn process(&mut self, event: &AnyEvent, clock: &dyn Clock) -> Result<Vec<AnyEvent>, HandlerError> {
        match event {
            AnyEvent::FusedSignal(f) => return Ok(self.on_signal(f, clock)),
            AnyEvent::TradeTick(t) => self.price(&t.symbol, t.price.0),
            AnyEvent::BookTicker(b) => self.price(&b.symbol, (b.bid_price.0 + b.ask_price.0) / Decimal::TWO),
            AnyEvent::Kline(k) if k.closed => self.price(&k.symbol, k.close.0),
            AnyEvent::OrderUpdate(u) => self.on_update(u),
            AnyEvent::RiskDecision(d) if d.agent == self.cfg.name && d.verdict == Verdict::Rejected => {
                if let Some(s) = state_of(&mut self.symbols, &d.symbol) {
                    if s.pending.as_deref() == Some(d.intent_id.as_str()) {
                        s.pending = None;
                    }
                }
            }
            _ => {}
        }
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::RulePolicy;
    use auroraq_schemas::{Kline, OrderStatus};
    use auroraq_stage::SimClock;

    fn d(s: &str) -> Dec {
        Dec::parse(s).expect("dec")
    }

    fn bar(symbol: &str, t: i64, close: &str) -> AnyEvent {
        AnyEvent::Kline(Kline {
            meta: Meta::raw(EventKind::Kline, "test", &format!("{symbol}{t}"), t, t),
            exchange: "test".into(),
            symbol: symbol.into(),
            interval: "1h".into(),
            open_time: t - 3_600_000_000,
            close_time: t,
            open: d(close),
            high: d(close),
            low: d(close),
            close: d(close),
            volume: d("1"),
            quote_volume: None,
            trades: None,
            closed: true,
        })
    }

    fn fused(asset: &str, t: i64, score: f64, conf: f64) -> AnyEvent {
        AnyEvent::FusedSignal(FusedSignal {
            meta: Meta::derived(
                EventKind::FusedSignal,
                "fusion",
                &[],
                &format!("{asset}{t}"),
                t,
                t,
            ),
            asset: asset.into(),
            window_start: t - 300_000_000,
            window_end: t,
            fused_score: score,
            confidence: conf,
            scores_used: 3,
            scores_rejected: 0,
            sources_used: 1,
            weights_used: BTreeMap::new(),
            trend: Trend::Stable,
        })
    }

    fn fill(agent: &str, symbol: &str, side: OrderSide, q: &str, p: &str, id: &str) -> AnyEvent {
        AnyEvent::OrderUpdate(OrderUpdate {
            meta: Meta::raw(EventKind::OrderUpdate, "paper", id, 1, 1),
            client_order_id: id.into(),
            venue_order_id: None,
            venue: "paper".into(),
            agent: agent.into(),
            symbol: symbol.into(),
            side,
            status: OrderStatus::Filled,
            quantity: d(q),
            filled_quantity: d(q),
            last_fill_price: Some(d(p)),
            last_fill_quantity: Some(d(q)),
            fee: None,
            fee_asset: None,
            reason: None,
        })
    }

    fn intents(out: &[AnyEvent]) -> Vec<(OrderSide, Option<String>)> {
        out.iter()
            .filter_map(|e| match e {
                AnyEvent::OrderIntent(i) => Some((i.side, i.quantity.map(|q| q.to_string()))),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn buys_when_flat_sells_what_it_holds_and_waits_for_fills() {
        let clock = SimClock::new(0);
        let mut a = Agent::new(AgentConfig::auroraq(), Box::new(RulePolicy::default()));
        assert!(
            a.process(&fused("BTC", 10, 0.9, 0.9), &clock).unwrap().is_empty(),
            "no price yet"
        );
        assert_eq!(a.stats().no_price, 1);
        a.process(&bar("BTCUSDT", 20, "100"), &clock).unwrap();
        let out = a.process(&fused("BTC", 30, 0.9, 0.9), &clock).unwrap();
        assert_eq!(intents(&out), vec![(OrderSide::Buy, None)]);
        // Still pending: a second buy signal makes nothing.
        assert!(a
            .process(&fused("BTC", 40, 0.95, 0.9), &clock)
            .unwrap()
            .is_empty());
        assert_eq!(a.stats().pending, 1);
        let f = fill("auroraq", "BTCUSDT", OrderSide::Buy, "0.5", "101", "f1");
        a.process(&f, &clock).unwrap();
        a.process(&f, &clock).unwrap(); // redelivered: applied once
        assert_eq!(a.position("BTCUSDT"), Decimal::new(5, 1));
        assert!(
            a.process(&fused("BTC", 50, 0.95, 0.9), &clock)
                .unwrap()
                .is_empty(),
            "already long"
        );
        let out = a.process(&fused("BTC", 60, 0.1, 0.9), &clock).unwrap();
        assert_eq!(intents(&out), vec![(OrderSide::Sell, Some("0.5".into()))]);
        // Other agents' fills and other assets are not ours.
        a.process(
            &fill("macroq", "BTCUSDT", OrderSide::Sell, "0.5", "90", "f2"),
            &clock,
        )
        .unwrap();
        assert_eq!(a.position("BTCUSDT"), Decimal::new(5, 1));
        assert!(a
            .process(&fused("DOGE", 70, 0.9, 0.9), &clock)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn a_rejected_intent_frees_the_symbol() {
        let clock = SimClock::new(0);
        let mut a = Agent::new(AgentConfig::auroraq(), Box::new(RulePolicy::default()));
        a.process(&bar("BTCUSDT", 20, "100"), &clock).unwrap();
        let out = a.process(&fused("BTC", 30, 0.9, 0.9), &clock).unwrap();
        let AnyEvent::OrderIntent(i) = &out[0] else {
            panic!("intent")
        };
        let rejected = AnyEvent::RiskDecision(auroraq_schemas::RiskDecision {
            meta: Meta::derived(EventKind::RiskDecision, "risk", &[&i.meta], "", 30, 30),
            intent_id: i.intent_id.clone(),
            agent: "auroraq".into(),
            symbol: "BTCUSDT".into(),
            side: OrderSide::Buy,
            verdict: Verdict::Rejected,
            approved_quantity: None,
            reason: "max drawdown".into(),
            checks: BTreeMap::new(),
        });
        a.process(&rejected, &clock).unwrap();
        assert_eq!(
            intents(&a.process(&fused("BTC", 40, 0.9, 0.9), &clock).unwrap()).len(),
            1
        );
    }

    #[test]
    fn the_same_input_gives_the_same_intents() {
        let run = || {
            let clock = SimClock::new(0);
            let mut a = Agent::new(AgentConfig::auroraq(), Box::new(RulePolicy::default()));
            let mut out = Vec::new();
            for ev in [
                bar("BTCUSDT", 1, "10"),
                fused("BTC", 2, 0.8, 0.9),
                bar("BTCUSDT", 3, "11"),
            ] {
                clock.advance_to(ev.meta().ts_event);
                out.extend(a.process(&ev, &clock).unwrap());
            }
            out
        };
        assert_eq!(run(), run());
        assert_eq!(run().len(), 1);
    }
}
