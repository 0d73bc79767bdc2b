//! The risk stage as a deterministic [`Processor`].

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use auroraq_bus::topics;
use auroraq_schemas::decimal::to_f64;
use auroraq_schemas::{
    Alert, AnyEvent, Dec, EventKind, Meta, Micros, OrderIntent, OrderSide, OrderStatus, OrderUpdate,
    RiskDecision, Severity, Verdict,
};
use auroraq_stage::{Clock, HandlerError, Processor};
use rust_decimal::Decimal;
use serde::Serialize;
use tracing::{debug, info, warn};

use crate::book::{AgentBook, Holding};
use crate::config::{ConfigError, RiskConfig};
use crate::returns::{align, ReturnSeries};
use crate::sizing::{floor_to_lot, vol_target_quantity};
use crate::stats::{portfolio_var, sample_std, PortfolioVar, VarEstimate};

const DAY: Micros = 86_400_000_000;

/// The alert kind that resets a halted or blocked agent (see [`RiskProcessor::reset_agent`]).
pub const RESET_KIND: &str = "risk_reset";

/// A decimal for the wire: at most 8 decimal places, and fewer if the mantissa would not fit
/// the 64 bits of the Avro decimal.
pub fn wire(d: Decimal) -> Dec {
    Dec::fit(d)
}

/// An agent as risk sees it now.
#[derive(Clone, Debug, Serialize)]
pub struct AgentStatus {
    pub agent: String,
    pub equity: Decimal,
    pub peak_equity: Decimal,
    pub drawdown: Decimal,
    pub daily_loss: Decimal,
    pub realized_pnl: Decimal,
    pub halted: Option<String>,
    pub daily_blocked: bool,
    pub positions: BTreeMap<String, Holding>,
    pub pending: BTreeMap<String, Decimal>,
}

/// The risk stage: checks every [`OrderIntent`], tracks positions and PnL from
/// [`OrderUpdate`]s and prices from market data, and raises [`Alert`]s.
pub struct RiskProcessor {
    cfg: RiskConfig,
    prices: BTreeMap<String, Decimal>,
    series: BTreeMap<String, ReturnSeries>,
    agents: BTreeMap<String, AgentBook>,
    decisions: HashMap<String, RiskDecision>,
    decision_order: VecDeque<String>,
    seen_updates: HashSet<String>,
    seen_order: VecDeque<String>,
    /// Scratch: the agents holding the symbol being priced.
    holders: Vec<String>,
}

/// An alert to raise: kind, severity, discriminator, message, attributes.
type PendingAlert = (
    &'static str,
    Severity,
    &'static str,
    String,
    BTreeMap<String, String>,
);

/// The outcome of [`RiskProcessor::check`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Check {
    pub verdict: Verdict,
    /// The approved (possibly resized) quantity; `None` when rejected.
    pub quantity: Option<Decimal>,
    pub reason: String,
    /// Each check's result, by name (`pass`, `fail: ...`, or a note).
    pub checks: BTreeMap<String, String>,
}

/// The outcome of the checks on one intent.
struct Outcome {
    verdict: Verdict,
    quantity: Option<Decimal>,
    reason: String,
    checks: BTreeMap<String, String>,
    /// `(alert kind, check, message)` for the alerts it raises.
    breaches: Vec<(&'static str, String, String)>,
}

fn signed(side: OrderSide, q: Decimal) -> Decimal {
    match side {
        OrderSide::Buy => q,
        OrderSide::Sell => -q,
    }
}

impl RiskProcessor {
    /// A risk stage with `cfg` (validated).
    pub fn new(cfg: RiskConfig) -> Result<Self, ConfigError> {
        cfg.validate()?;
        Ok(RiskProcessor {
            cfg,
            prices: BTreeMap::new(),
            series: BTreeMap::new(),
            agents: BTreeMap::new(),
            decisions: HashMap::new(),
            decision_order: VecDeque::new(),
            seen_updates: HashSet::new(),
            seen_order: VecDeque::new(),
            holders: Vec::new(),
        })
    }

    pub fn config(&self) -> &RiskConfig {
        &self.cfg
    }

    /// The last price of `symbol`.
    pub fn price(&self, symbol: &str) -> Option<Decimal> {
        self.prices.get(symbol).copied()
    }

    /// The return series of `symbol`.
    pub fn returns(&self, symbol: &str) -> Option<&ReturnSeries> {
        self.series.get(symbol)
    }

    /// VaR and ES of one asset (fractions of its value) at the configured confidence and
    /// horizon; `None` before `min_observations` returns.
    pub fn asset_var(&self, symbol: &str) -> Option<VarEstimate> {
        let s = self.series.get(symbol)?;
        if s.len() < self.cfg.min_observations {
            return None;
        }
        VarEstimate::from_series(&s.returns(), self.cfg.confidence, self.cfg.horizon_periods())
    }

    /// Annualised volatility of `symbol` from its kept returns; `None` before
    /// `min_observations`.
    pub fn annual_vol(&self, symbol: &str) -> Option<f64> {
        let s = self.series.get(symbol)?;
        if s.len() < self.cfg.min_observations {
            return None;
        }
        Some(sample_std(&s.returns())? * self.cfg.periods_per_year().sqrt())
    }

    /// Portfolio VaR and ES (money) of signed exposures (money) by symbol, on the returns the
    /// assets have in common; `None` when an asset has no series or fewer than
    /// `min_observations` aligned returns. An empty portfolio has no VaR (`None`).
    pub fn portfolio_var_of(&self, exposures: &BTreeMap<String, f64>) -> Option<PortfolioVar> {
        self.portfolio_var_in(exposures.iter().map(|(s, w)| (s.as_str(), *w)))
    }

    /// [`Self::portfolio_var_of`] of exposures given in symbol order.
    fn portfolio_var_in<'a>(&self, exposures: impl Iterator<Item = (&'a str, f64)>) -> Option<PortfolioVar> {
        let held: Vec<(&str, f64)> = exposures.filter(|(_, w)| *w != 0.0).collect();
        if held.is_empty() {
            return None;
        }
        let mut series = Vec::with_capacity(held.len());
        for (s, _) in &held {
            series.push(self.series.get(*s)?);
        }
        let aligned = align(&series, self.cfg.lookback);
        if aligned
            .first()
            .is_none_or(|a| a.len() < self.cfg.min_observations)
        {
            return None;
        }
        let w: Vec<f64> = held.iter().map(|(_, w)| *w).collect();
        portfolio_var(&w, &aligned, self.cfg.confidence, self.cfg.horizon_periods())
    }

    fn exposures(&self, book: &AgentBook, with_pending: bool) -> BTreeMap<String, f64> {
        let mut q: BTreeMap<String, Decimal> = book
            .positions
            .iter()
            .map(|(s, h)| (s.clone(), h.quantity))
            .collect();
        if with_pending {
            for (s, p) in &book.pending {
                *q.entry(s.clone()).or_default() += *p;
            }
        }
        q.into_iter()
            .filter_map(|(s, qty)| {
                let p = self.prices.get(&s)?;
                Some((s, to_f64(qty * *p)))
            })
            .collect()
    }

    /// Portfolio VaR/ES (money) of one agent's filled positions.
    pub fn agent_var(&self, agent: &str) -> Option<PortfolioVar> {
        let book = self.agents.get(agent)?;
        // `exposures(book, false)` without building the map: positions are by symbol already.
        self.portfolio_var_in(book.positions.iter().filter_map(|(s, h)| {
            let p = self.prices.get(s)?;
            Some((s.as_str(), to_f64(h.quantity * *p)))
        }))
    }

    /// An agent's state; `None` if risk has not heard of it.
    pub fn agent(&self, agent: &str) -> Option<AgentStatus> {
        let b = self.agents.get(agent)?;
        let equity = b.equity(&self.prices);
        Some(AgentStatus {
            agent: agent.to_owned(),
            equity,
            peak_equity: b.peak_equity,
            drawdown: b.drawdown(),
            daily_loss: b.daily_loss(),
            realized_pnl: b.realized_pnl,
            halted: b.halted.clone(),
            daily_blocked: b.daily_blocked,
            positions: b.positions.clone(),
            pending: b.pending.clone(),
        })
    }

    /// Agents risk has heard of.
    pub fn agents(&self) -> Vec<String> {
        self.agents.keys().cloned().collect()
    }

    /// Lifts a drawdown halt and a daily-loss block of `agent` (`"*"`: every agent): its peak
    /// and its day's starting equity become its current equity, so drawdown and daily loss
    /// count from now. Returns whether anything was lifted. The same as a [`RESET_KIND`] alert
    /// on the bus, without the confirming alert.
    pub fn reset_agent(&mut self, agent: &str) -> bool {
        let mut lifted = false;
        let names: Vec<String> = if agent == "*" {
            self.agents.keys().cloned().collect()
        } else {
            vec![agent.to_owned()]
        };
        for name in names {
            if let Some(b) = self.agents.get_mut(&name) {
                let eq = b.equity(&self.prices);
                lifted |= b.halted.is_some() || b.daily_blocked;
                b.halted = None;
                b.daily_blocked = false;
                b.peak_equity = eq;
                b.last_equity = eq;
                b.day_start_equity = eq;
                info!(stage = %self.cfg.name, agent = %name, equity = %eq, "agent reset");
            }
        }
        lifted
    }

    fn ensure_agent(&mut self, agent: &str) {
        if !self.agents.contains_key(agent) {
            let eq = self.cfg.equity_for(agent);
            self.agents.insert(agent.to_owned(), AgentBook::new(eq));
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn alert(
        &self,
        parent: &Meta,
        clock: &dyn Clock,
        kind: &str,
        severity: Severity,
        subject: &str,
        discriminator: &str,
        message: String,
        attributes: BTreeMap<String, String>,
    ) -> AnyEvent {
        let meta = Meta::derived(
            EventKind::Alert,
            &self.cfg.name,
            &[parent],
            &format!("{kind}|{subject}|{discriminator}"),
            parent.ts_event,
            clock.now(),
        );
        AnyEvent::Alert(Alert {
            meta,
            severity,
            kind: kind.to_owned(),
            subject: Some(subject.to_owned()),
            message,
            attributes,
        })
    }

    /// Re-values `agent`, rolls its day, and raises `halted`, daily-loss `limit_breach` and
    /// (when `check_var`) `var_breach` alerts.
    fn mark(
        &mut self,
        agent: &str,
        parent: &Meta,
        clock: &dyn Clock,
        check_var: bool,
        out: &mut Vec<AnyEvent>,
    ) {
        let now = clock.now();
        let limits = self.cfg.limits_for(agent);
        let var_limit = self.cfg.max_portfolio_var;
        let var_method = self.cfg.var_method;
        let var = if check_var && var_limit.is_some() {
            self.agent_var(agent)
        } else {
            None
        };
        let Some(b) = self.agents.get_mut(agent) else {
            return;
        };
        let equity = b.equity(&self.prices);
        let day = now.div_euclid(DAY);
        if b.day != Some(day) {
            if b.day.is_some() {
                b.day_start_equity = b.last_equity;
                if b.daily_blocked {
                    info!(agent, "new UTC day: daily-loss block lifted");
                }
                b.daily_blocked = false;
            }
            b.day = Some(day);
        }
        b.last_equity = equity;
        if equity > b.peak_equity {
            b.peak_equity = equity;
        }
        let mut alerts: Vec<PendingAlert> = Vec::new();
        if let Some(max) = limits.max_drawdown.filter(|_| b.halted.is_none()) {
            let dd_f = to_f64(b.drawdown());
            if dd_f >= max {
                let why = format!(
                    "drawdown {:.4} >= max_drawdown {max} (equity {}, peak {})",
                    dd_f,
                    wire(equity),
                    wire(b.peak_equity)
                );
                warn!(agent, %why, "agent halted");
                b.halted = Some(why.clone());
                let attrs = BTreeMap::from([
                    ("agent".to_owned(), agent.to_owned()),
                    ("limit".to_owned(), "max_drawdown".to_owned()),
                    ("drawdown".to_owned(), format!("{dd_f:.6}")),
                    ("max_drawdown".to_owned(), max.to_string()),
                    ("equity".to_owned(), wire(equity).to_string()),
                    ("peak_equity".to_owned(), wire(b.peak_equity).to_string()),
                    (
                        "reset".to_owned(),
                        format!("publish an Alert of kind {RESET_KIND} with subject {agent}"),
                    ),
                ]);
                alerts.push((
                    "halted",
                    Severity::Critical,
                    "drawdown",
                    format!("agent {agent} halted: {why}; new risk is rejected until an explicit reset"),
                    attrs,
                ));
            }
        }
        if let Some(max) = limits.max_daily_loss {
            let loss = b.daily_loss();
            if !b.daily_blocked && loss >= max {
                b.daily_blocked = true;
                warn!(agent, loss = %wire(loss), max = %max, "daily loss limit reached");
                let attrs = BTreeMap::from([
                    ("agent".to_owned(), agent.to_owned()),
                    ("limit".to_owned(), "max_daily_loss".to_owned()),
                    ("daily_loss".to_owned(), wire(loss).to_string()),
                    ("max_daily_loss".to_owned(), max.to_string()),
                    ("day".to_owned(), day.to_string()),
                ]);
                alerts.push((
                    "limit_breach",
                    Severity::Critical,
                    "daily_loss",
                    format!(
                        "agent {agent} lost {} today (max_daily_loss {max}): new risk is rejected until the next UTC day or a reset",
                        wire(loss)
                    ),
                    attrs,
                ));
            }
        }
        if let (Some(limit), Some(v)) = (var_limit, var) {
            let eq = to_f64(equity);
            let value = v.estimate.var(var_method);
            if value > limit * eq {
                if !b.var_breached {
                    b.var_breached = true;
                    let attrs = BTreeMap::from([
                        ("agent".to_owned(), agent.to_owned()),
                        ("var".to_owned(), format!("{value:.2}")),
                        ("es".to_owned(), format!("{:.2}", v.estimate.es(var_method))),
                        ("limit".to_owned(), format!("{:.2}", limit * eq)),
                        ("confidence".to_owned(), v.estimate.confidence.to_string()),
                        ("horizon_periods".to_owned(), v.estimate.horizon.to_string()),
                    ]);
                    alerts.push((
                        "var_breach",
                        Severity::Warning,
                        "var",
                        format!(
                            "agent {agent}: portfolio VaR {value:.2} exceeds {:.2} ({limit} of equity)",
                            limit * eq
                        ),
                        attrs,
                    ));
                }
            } else {
                b.var_breached = false;
            }
        }
        for (kind, sev, disc, msg, attrs) in alerts {
            let a = self.alert(parent, clock, kind, sev, agent, disc, msg, attrs);
            out.push(a);
        }
    }

    fn on_price(
        &mut self,
        parent: &Meta,
        symbol: &str,
        price: Decimal,
        bar: Option<(Micros, Micros)>,
        clock: &dyn Clock,
    ) -> Vec<AnyEvent> {
        if price <= Decimal::ZERO {
            return Vec::new();
        }
        match self.prices.get_mut(symbol) {
            Some(p) => *p = price,
            None => {
                self.prices.insert(symbol.to_owned(), price);
            }
        }
        if !self.series.contains_key(symbol) {
            let interval = self.cfg.return_interval_secs.saturating_mul(1_000_000);
            let series = ReturnSeries::new(interval, self.cfg.lookback);
            self.series.insert(symbol.to_owned(), series);
        }
        let p = to_f64(price);
        let completed = match self.series.get_mut(symbol) {
            Some(series) => match bar {
                Some((open, close)) => !series.observe_bar(open, close, p).is_empty(),
                None => series.observe(parent.ts_event, p).is_some(),
            },
            None => false,
        };
        // The holders' names, in a buffer kept between prices (no allocation per price).
        let mut holders = std::mem::take(&mut self.holders);
        let mut n = 0;
        for (a, b) in &self.agents {
            if b.positions.contains_key(symbol) {
                match holders.get_mut(n) {
                    Some(h) => h.clone_from(a),
                    None => holders.push(a.clone()),
                }
                n += 1;
            }
        }
        let mut out = Vec::new();
        for a in &holders[..n] {
            self.mark(a, parent, clock, completed, &mut out);
        }
        self.holders = holders;
        out
    }

    fn on_order_update(&mut self, u: &OrderUpdate, clock: &dyn Clock) -> Vec<AnyEvent> {
        if !self.seen_updates.insert(u.meta.event_id.clone()) {
            return Vec::new();
        }
        self.seen_order.push_back(u.meta.event_id.clone());
        while self.seen_order.len() > self.cfg.remember {
            if let Some(old) = self.seen_order.pop_front() {
                self.seen_updates.remove(&old);
            }
        }
        self.ensure_agent(&u.agent);
        if let Some(b) = self.agents.get_mut(&u.agent) {
            if let (Some(q), Some(p)) = (u.last_fill_quantity, u.last_fill_price) {
                if q.0 > Decimal::ZERO {
                    let fee = u.fee.map(|f| f.0).unwrap_or_default();
                    let s = signed(u.side, q.0);
                    b.fill(&u.symbol, s, p.0, fee);
                    b.release(&u.symbol, s);
                    debug!(agent = %u.agent, symbol = %u.symbol, qty = %s, price = %p, "fill");
                }
            }
            if matches!(u.status, OrderStatus::Cancelled | OrderStatus::Rejected) {
                let left = (u.quantity.0 - u.filled_quantity.0).max(Decimal::ZERO);
                b.release(&u.symbol, signed(u.side, left));
            }
        }
        let mut out = Vec::new();
        self.mark(&u.agent, &u.meta, clock, false, &mut out);
        out
    }

    fn on_alert(&mut self, a: &Alert, clock: &dyn Clock) -> Vec<AnyEvent> {
        if a.meta.source == self.cfg.name || a.kind != RESET_KIND {
            return Vec::new();
        }
        let Some(target) = a.attributes.get("agent").cloned().or_else(|| a.subject.clone()) else {
            warn!(stage = %self.cfg.name, "risk_reset without an agent (subject or attribute `agent`)");
            return Vec::new();
        };
        let lifted = self.reset_agent(&target);
        let attrs = BTreeMap::from([
            ("agent".to_owned(), target.clone()),
            ("requested_by".to_owned(), a.meta.source.clone()),
            ("lifted".to_owned(), lifted.to_string()),
        ]);
        vec![self.alert(
            &a.meta,
            clock,
            "halt_reset",
            Severity::Info,
            &target,
            "",
            format!(
                "risk reset for {target} (requested by {}): {}",
                a.meta.source, a.message
            ),
            attrs,
        )]
    }

    fn on_intent(&mut self, it: &OrderIntent, clock: &dyn Clock) -> Vec<AnyEvent> {
        let key = format!("{}\u{1f}{}", it.agent, it.intent_id);
        if let Some(d) = self.decisions.get(&key) {
            debug!(agent = %it.agent, intent = %it.intent_id, "intent seen before: same decision");
            return vec![AnyEvent::RiskDecision(d.clone())];
        }
        self.ensure_agent(&it.agent);
        let mut out = Vec::new();
        self.mark(&it.agent, &it.meta, clock, false, &mut out);
        let o = self.decide(it);
        if let (Some(q), Some(b)) = (o.quantity, self.agents.get_mut(&it.agent)) {
            *b.pending.entry(it.symbol.clone()).or_default() += signed(it.side, q);
        }
        let decision = RiskDecision {
            meta: Meta::derived(
                EventKind::RiskDecision,
                &self.cfg.name,
                &[&it.meta],
                "",
                it.meta.ts_event,
                clock.now(),
            ),
            intent_id: it.intent_id.clone(),
            agent: it.agent.clone(),
            symbol: it.symbol.clone(),
            side: it.side,
            verdict: o.verdict,
            approved_quantity: o.quantity.map(wire),
            reason: o.reason.clone(),
            checks: o.checks,
        };
        info!(
            agent = %it.agent, intent = %it.intent_id, symbol = %it.symbol, verdict = ?o.verdict,
            quantity = ?o.quantity, reason = %o.reason, "risk decision"
        );
        out.insert(0, AnyEvent::RiskDecision(decision.clone()));
        for (kind, check, msg) in o.breaches {
            let attrs = BTreeMap::from([
                ("agent".to_owned(), it.agent.clone()),
                ("symbol".to_owned(), it.symbol.clone()),
                ("intent_id".to_owned(), it.intent_id.clone()),
                ("check".to_owned(), check.clone()),
                ("verdict".to_owned(), o.verdict.as_str().to_owned()),
            ]);
            let a = self.alert(
                &it.meta,
                clock,
                kind,
                Severity::Warning,
                &it.agent,
                &check,
                msg,
                attrs,
            );
            out.push(a);
        }
        self.decisions.insert(key.clone(), decision);
        self.decision_order.push_back(key);
        while self.decision_order.len() > self.cfg.remember {
            if let Some(old) = self.decision_order.pop_front() {
                self.decisions.remove(&old);
            }
        }
        out
    }

    /// What risk would decide on `it` now: the same checks as an intent on the bus, but no
    /// decision is stored, nothing becomes pending and no alert is raised. An agent risk has not
    /// heard of gets its starting book, as its first intent would give it.
    pub fn check(&mut self, it: &OrderIntent) -> Check {
        self.ensure_agent(&it.agent);
        let o = self.decide(it);
        Check {
            verdict: o.verdict,
            quantity: o.quantity,
            reason: o.reason,
            checks: o.checks,
        }
    }

    /// The checks, in order: price, halt, daily loss, quantity (given, from notional, or
    /// sized), lot, max quantity, reduce-only clip, order notional, position quantity and
    /// notional limits, minimum quantity, portfolio VaR.
    fn decide(&self, it: &OrderIntent) -> Outcome {
        let mut checks: BTreeMap<String, String> = BTreeMap::new();
        let mut breaches = Vec::new();
        let reject = |mut checks: BTreeMap<String, String>,
                      mut breaches: Vec<(&'static str, String, String)>,
                      check: &str,
                      why: String,
                      alert: Option<&'static str>| {
            checks.insert(check.to_owned(), format!("fail: {why}"));
            if let Some(kind) = alert {
                breaches.push((
                    kind,
                    check.to_owned(),
                    format!("intent {} rejected: {why}", it.intent_id),
                ));
            }
            Outcome {
                verdict: Verdict::Rejected,
                quantity: None,
                reason: format!("{check}: {why}"),
                checks,
                breaches,
            }
        };
        let agent = it.agent.as_str();
        let sym = it.symbol.as_str();
        let Some(book) = self.agents.get(agent) else {
            return reject(checks, breaches, "agent", format!("unknown agent {agent}"), None);
        };
        let limits = self.cfg.limits_for(agent);
        let sizing = &self.cfg.sizing;
        let lot = self.cfg.lot_for(sym);
        let equity = book.equity(&self.prices);

        // Price: the limit price, else the last market price.
        let price = match it
            .limit_price
            .map(|p| p.0)
            .filter(|p| *p > Decimal::ZERO)
            .or_else(|| self.prices.get(sym).copied())
        {
            Some(p) => p,
            None => {
                return reject(
                    checks,
                    breaches,
                    "price",
                    format!("no market price for {sym} yet"),
                    None,
                );
            }
        };
        checks.insert("price".into(), format!("pass: {}", wire(price)));

        let pos = book.held(sym) + book.pending(sym);
        let sign = signed(it.side, Decimal::ONE);
        let reducing_room = if !pos.is_zero() && pos.is_sign_positive() != sign.is_sign_positive() {
            pos.abs()
        } else {
            Decimal::ZERO
        };
        let mut reduce_only: Option<&'static str> = None;
        let allow_reduce = self.cfg.allow_reducing_when_blocked && reducing_room > Decimal::ZERO;

        // Halt (drawdown) and daily loss.
        match &book.halted {
            Some(why) if allow_reduce => {
                checks.insert("halt".into(), format!("reduce-only: halted ({why})"));
                reduce_only = Some("halt");
            }
            Some(why) => {
                let msg = format!("agent {agent} is halted ({why}); an explicit reset is required");
                return reject(checks, breaches, "halt", msg, None);
            }
            None => {
                let max = limits
                    .max_drawdown
                    .map(|m| m.to_string())
                    .unwrap_or_else(|| "none".into());
                checks.insert(
                    "halt".into(),
                    format!("pass: drawdown {} (max {max})", book.drawdown().round_dp(6)),
                );
            }
        }
        if book.daily_blocked {
            let why = format!(
                "daily loss {} reached max_daily_loss {}",
                wire(book.daily_loss()),
                limits.max_daily_loss.map(|m| m.to_string()).unwrap_or_default()
            );
            if allow_reduce {
                checks.insert("daily_loss".into(), format!("reduce-only: {why}"));
                reduce_only = reduce_only.or(Some("daily_loss"));
            } else {
                return reject(
                    checks,
                    breaches,
                    "daily_loss",
                    format!("{why}; blocked until the next UTC day or a reset"),
                    None,
                );
            }
        } else {
            let max = limits
                .max_daily_loss
                .map(|m| m.to_string())
                .unwrap_or_else(|| "none".into());
            checks.insert(
                "daily_loss".into(),
                format!("pass: {} (max {max})", wire(book.daily_loss())),
            );
        }

        // The quantity asked for.
        let (requested, how) = if let Some(q) = it.quantity {
            (q.0, "quantity".to_owned())
        } else if let Some(n) = it.notional {
            (n.0 / price, format!("notional {}", n.0))
        } else {
            let vol = self.annual_vol(sym).or(sizing.fallback_annual_vol);
            let Some(vol) = vol else {
                let n = self.series.get(sym).map(|s| s.len()).unwrap_or(0);
                let why = format!(
                    "no volatility estimate for {sym} ({n} of {} returns)",
                    self.cfg.min_observations
                );
                return reject(checks, breaches, "sizing", why, None);
            };
            match vol_target_quantity(equity, price, vol, sizing, lot) {
                Ok(s) => {
                    checks.insert(
                        "sizing".into(),
                        format!(
                            "pass: vol target {} / annual vol {vol:.4} -> notional {:.2}{}",
                            sizing.target_annual_vol,
                            s.target_notional,
                            s.capped_by
                                .map(|c| format!(", capped by {c}"))
                                .unwrap_or_default()
                        ),
                    );
                    // The target is a position on the intent's side: order what is missing.
                    let have = sign * pos;
                    let missing = s.quantity - have;
                    if missing <= Decimal::ZERO {
                        let why = format!(
                            "position {pos} is already at the volatility target {} on the {} side",
                            s.quantity,
                            it.side.as_str()
                        );
                        return reject(checks, breaches, "sizing", why, None);
                    }
                    (missing, format!("sized to the volatility target {}", s.quantity))
                }
                Err(why) => return reject(checks, breaches, "sizing", why, None),
            }
        };
        if requested <= Decimal::ZERO {
            return reject(
                checks,
                breaches,
                "quantity",
                format!("requested quantity {requested} must be > 0"),
                None,
            );
        }
        let mut q = floor_to_lot(requested, lot);
        if q != requested {
            checks.insert(
                "lot_size".into(),
                format!("pass: rounded down to {q} (lot {lot})"),
            );
        } else {
            checks.insert("lot_size".into(), "pass".into());
        }
        let mut resized: Vec<String> = Vec::new();
        if let Some(mx) = sizing.max_quantity {
            if q > mx {
                let nq = floor_to_lot(mx, lot);
                let msg = format!("resized {q} -> {nq}: max_quantity {mx}");
                checks.insert("max_quantity".into(), msg.clone());
                breaches.push(("limit_breach", "max_quantity".to_owned(), msg.clone()));
                resized.push(msg);
                q = nq;
            }
        }
        if let Some(check) = reduce_only {
            if q > reducing_room {
                let nq = floor_to_lot(reducing_room, lot);
                let msg = format!("resized {q} -> {nq}: reduce-only while blocked ({check})");
                checks.insert(format!("{check}_reduce_only"), msg.clone());
                resized.push(msg);
                q = nq;
            }
        }

        // Order notional.
        if let Some(max) = limits.max_order_notional {
            let n = q * price;
            if n > max {
                let why = format!("order notional {} exceeds max_order_notional {max}", wire(n));
                return reject(checks, breaches, "max_order_notional", why, Some("limit_breach"));
            }
            checks.insert("max_order_notional".into(), format!("pass: {} of {max}", wire(n)));
        }

        // Position limits (per symbol): resize down to the limit.
        let notional_limit = limits.max_position_notional.map(|n| n / price);
        for (check, lim) in [
            ("max_position_qty", limits.max_position_qty),
            ("max_position_notional", notional_limit),
        ] {
            let Some(lim) = lim else { continue };
            let new_pos = pos + sign * q;
            if new_pos.abs() <= lim || new_pos.abs() <= pos.abs() {
                checks.insert(check.into(), format!("pass: position {pos} -> {new_pos}"));
                continue;
            }
            let room = if reducing_room > Decimal::ZERO {
                pos.abs() + lim
            } else {
                lim - pos.abs()
            };
            let room = floor_to_lot(room.max(Decimal::ZERO), lot);
            let what = match check {
                "max_position_qty" => format!("max_position_qty {lim}"),
                _ => format!(
                    "max_position_notional {} at {}",
                    limits.max_position_notional.unwrap_or_default(),
                    wire(price)
                ),
            };
            if room <= Decimal::ZERO {
                let why = format!("position {pos} is at the limit ({what})");
                return reject(checks, breaches, check, why, Some("limit_breach"));
            }
            let msg = format!("resized {q} -> {room}: position {pos} would exceed {what}");
            checks.insert(check.into(), msg.clone());
            breaches.push((
                "limit_breach",
                check.to_owned(),
                format!("intent {}: {msg}", it.intent_id),
            ));
            resized.push(msg);
            q = room;
        }

        if q <= Decimal::ZERO || q < sizing.min_quantity {
            let why = format!(
                "quantity {q} below min_quantity {} (lot {lot})",
                sizing.min_quantity
            );
            return reject(checks, breaches, "min_quantity", why, None);
        }

        // Portfolio VaR after the trade.
        if let Some(limit) = self.cfg.max_portfolio_var {
            let mut ex = self.exposures(book, true);
            let w = to_f64(sign * q * price);
            *ex.entry(sym.to_owned()).or_default() += w;
            let increases = reducing_room.is_zero() || q > reducing_room * Decimal::TWO;
            match self.portfolio_var_of(&ex) {
                Some(v) => {
                    let value = v.estimate.var(self.cfg.var_method);
                    let cap = limit * to_f64(equity);
                    if value > cap && increases {
                        let why = format!(
                            "portfolio VaR after the order {value:.2} exceeds {cap:.2} ({limit} of equity)"
                        );
                        return reject(checks, breaches, "var", why, Some("var_breach"));
                    }
                    checks.insert("var".into(), format!("pass: {value:.2} of {cap:.2}"));
                }
                None => {
                    checks.insert("var".into(), "skip: not enough returns yet".into());
                }
            }
        }
        if let Some(v) = self.asset_var(sym) {
            checks.insert(
                "asset_var".into(),
                format!(
                    "info: {sym} VaR {:.6} hist / {:.6} param, ES {:.6} / {:.6} (c {}, h {})",
                    v.historical_var,
                    v.historical_es,
                    v.parametric_var,
                    v.parametric_es,
                    v.confidence,
                    v.horizon
                ),
            );
        }

        let (verdict, reason) = if resized.is_empty() {
            (
                Verdict::Approved,
                format!("approved {} {q} {sym} ({how})", it.side.as_str()),
            )
        } else {
            (Verdict::Resized, resized.join("; "))
        };
        Outcome {
            verdict,
            quantity: Some(q),
            reason,
            checks,
            breaches,
        }
    }
}

impl Processor for RiskProcessor {
    fn name(&self) -> &str {
        &self.cfg.name
    }

    /// Intents, every order update (fills, cancels, rejects), market data and alerts (for
    /// resets).
    fn inputs(&self) -> Vec<String> {
        vec![
            topics::ORDER_INTENTS.to_owned(),
            topics::EXEC_ORDERS.to_owned(),
            "market.trades.>".to_owned(),
            "market.tickers.>".to_owned(),
            "market.klines.>".to_owned(),
            topics::ALERTS.to_owned(),
        ]
    }

    fn outputs(&self) -> Vec<String> {
        vec![topics::RISK_DECISIONS.to_owned(), topics::ALERTS.to_owned()]
    }

    /// Order updates are what its own decisions caused.
    fn feedback(&self) -> Vec<String> {
        vec![topics::EXEC_ORDERS.to_owned()]
    }

    /// Decisions come from intents only; alerts from anything.
    fn triggers(&self, output: &str) -> Vec<String> {
        if output == topics::RISK_DECISIONS {
            vec![topics::ORDER_INTENTS.to_owned()]
        } else {
            self.inputs()
        }
    }

    /// Alerts are read for operators' resets, handled when they come (its own are ignored).
    fn unordered(&self) -> Vec<String> {
        vec![topics::ALERTS.to_owned()]
    }

    /// Each agent's gross exposure and portfolio VaR (quote currency) as gauges.
    fn observe(&self) {
        for (agent, book) in &self.agents {
            let gross: f64 = self.exposures(book, false).values().map(|w| w.abs()).sum();
            metrics::gauge!("auroraq_risk_exposure", "agent" => agent.clone()).set(gross);
            if let Some(v) = self.agent_var(agent) {
                metrics::gauge!("auroraq_risk_var", "agent" => agent.clone())
                    .set(v.estimate.var(self.cfg.var_method));
            }
        }
    }

    fn process(&mut self, event: &AnyEvent, clock: &dyn Clock) -> Result<Vec<AnyEvent>, HandlerError> {
        Ok(match event {
            AnyEvent::OrderIntent(i) => self.on_intent(i, clock),
            AnyEvent::OrderUpdate(u) => self.on_order_update(u, clock),
            AnyEvent::TradeTick(t) => self.on_price(&t.meta, &t.symbol, t.price.0, None, clock),
            AnyEvent::BookTicker(b) => {
                if b.bid_price.0 > Decimal::ZERO && b.ask_price.0 > Decimal::ZERO {
                    let mid = (b.bid_price.0 + b.ask_price.0) / Decimal::TWO;
                    self.on_price(&b.meta, &b.symbol, mid, None, clock)
                } else {
                    Vec::new()
                }
            }
            AnyEvent::Kline(k) if k.closed => self.on_price(
                &k.meta,
                &k.symbol,
                k.close.0,
                Some((k.open_time, k.close_time)),
                clock,
            ),
            AnyEvent::Alert(a) => self.on_alert(a, clock),
            _ => Vec::new(),
        })
    }
}
