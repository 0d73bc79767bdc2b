//! The execution stage with its paper venue, as a deterministic [`Processor`].
//!
//! An approved or resized [`RiskDecision`] becomes a market order with a client order id derived
//! from the agent and the intent id ([`client_order_id`]), so a redelivered decision, or a
//! second decision for the same intent, never makes a second order. The order is `new`, then
//! `accepted` (or `rejected`), and fills from the market stream strictly after the time it was
//! placed: the next trade, the next book ticker (ask for a buy, bid for a sell) or the next
//! closed bar whose open time is after it (at the bar's open). Data with `ts_event <=` the
//! order's time is never used.

use std::collections::{BTreeMap, HashSet, VecDeque};

use auroraq_bus::{topics, OutMessage};
use auroraq_schemas::decimal::to_f64;
use auroraq_schemas::{
    event_id, AnyEvent, CodecError, EventKind, Meta, Micros, OrderSide, OrderStatus, OrderUpdate,
    PortfolioSnapshot, RiskDecision, Verdict,
};
use auroraq_stage::{Clock, HandlerError, Processor};
use rust_decimal::Decimal;
use serde::Serialize;
use tracing::{debug, info, warn};

use crate::config::{ConfigError, ExecutionConfig};
use crate::performance::{EquityPoint, Performance, PerformanceConfig, PerformanceTracker, TradeRecord};
use crate::portfolio::{wire, Portfolio};

/// The client order id of an agent's intent: `aq-` and 32 hex digits (35 characters, within
/// Binance's 36 and its `[.A-Z:/a-z0-9_-]` alphabet). The same agent and intent id always give
/// the same id.
pub fn client_order_id(agent: &str, intent_id: &str) -> String {
    format!("aq-{}", event_id("ClientOrderId", agent, intent_id))
}

/// The copy of a fill for `exec.fills`: the same encoded event as on `exec.orders`, with the
/// bus de-duplication id `<event_id>@exec.fills` (ids de-duplicate across topics, so the copy
/// needs its own). `None` for events that are not fills.
pub fn fill_message(ev: &AnyEvent) -> Option<Result<OutMessage, CodecError>> {
    auroraq_stage::fill_copy(ev)
}

/// One order of the paper venue.
#[derive(Clone, Debug, Serialize)]
pub struct Order {
    pub client_order_id: String,
    pub venue_order_id: String,
    pub intent_id: String,
    pub agent: String,
    pub symbol: String,
    pub side: OrderSide,
    pub quantity: Decimal,
    pub filled: Decimal,
    pub avg_fill_price: Option<Decimal>,
    pub fees: Decimal,
    pub status: OrderStatus,
    /// When it was placed: only market data strictly after this fills it.
    pub placed_at: Micros,
    pub reason: Option<String>,
    #[serde(skip)]
    decision: Meta,
    #[serde(skip)]
    seq: u64,
}

impl Order {
    pub fn remaining(&self) -> Decimal {
        (self.quantity - self.filled).max(Decimal::ZERO)
    }

    pub fn is_open(&self) -> bool {
        matches!(
            self.status,
            OrderStatus::New | OrderStatus::Accepted | OrderStatus::PartiallyFilled
        )
    }
}

/// A price the paper venue can fill at, from one market event.
struct Liquidity {
    /// Buy price and size (`None`: no size limit).
    buy: Option<(Decimal, Option<Decimal>)>,
    sell: Option<(Decimal, Option<Decimal>)>,
    /// Orders placed strictly before this fill.
    after: Micros,
}

/// The execution stage (paper venue).
pub struct ExecutionProcessor {
    cfg: ExecutionConfig,
    portfolio: Portfolio,
    /// Open orders by sequence (placement order).
    open: BTreeMap<u64, Order>,
    /// Done orders, oldest first (bounded by `remember`).
    done: VecDeque<Order>,
    known: HashSet<String>,
    known_order: VecDeque<String>,
    seq: u64,
    equity_curve: Vec<EquityPoint>,
    trades: Vec<TradeRecord>,
    tracker: PerformanceTracker,
    last_sample_bucket: Option<i64>,
    last_market: Option<Meta>,
}

fn side_sign(side: OrderSide) -> Decimal {
    match side {
        OrderSide::Buy => Decimal::ONE,
        OrderSide::Sell => Decimal::NEGATIVE_ONE,
    }
}

impl ExecutionProcessor {
    pub fn new(cfg: ExecutionConfig) -> Result<Self, ConfigError> {
        cfg.validate()?;
        let tracker = PerformanceTracker::new(PerformanceConfig {
            periods_per_year: cfg.periods_per_year(),
            risk_free_rate: cfg.risk_free_rate,
        });
        Ok(ExecutionProcessor {
            portfolio: Portfolio::new(cfg.initial_cash),
            cfg,
            open: BTreeMap::new(),
            done: VecDeque::new(),
            known: HashSet::new(),
            known_order: VecDeque::new(),
            seq: 0,
            equity_curve: Vec::new(),
            trades: Vec::new(),
            tracker,
            last_sample_bucket: None,
            last_market: None,
        })
    }

    pub fn config(&self) -> &ExecutionConfig {
        &self.cfg
    }

    pub fn portfolio(&self) -> &Portfolio {
        &self.portfolio
    }

    /// Open orders, in placement order.
    pub fn open_orders(&self) -> Vec<&Order> {
        self.open.values().collect()
    }

    /// An order by client order id (open, or done and still remembered).
    pub fn order(&self, client_order_id: &str) -> Option<&Order> {
        self.open
            .values()
            .chain(self.done.iter())
            .find(|o| o.client_order_id == client_order_id)
    }

    /// The sampled equity curve.
    pub fn equity_curve(&self) -> &[EquityPoint] {
        &self.equity_curve
    }

    /// Every fill.
    pub fn trades(&self) -> &[TradeRecord] {
        &self.trades
    }

    /// The performance figures so far.
    pub fn performance(&self) -> Performance {
        self.tracker.performance()
    }

    fn remember(&mut self, id: &str) {
        self.known.insert(id.to_owned());
        self.known_order.push_back(id.to_owned());
        while self.known_order.len() > self.cfg.remember {
            if let Some(old) = self.known_order.pop_front() {
                self.known.remove(&old);
            }
        }
    }

    fn retire(&mut self, o: Order) {
        self.done.push_back(o);
        while self.done.len() > self.cfg.remember {
            self.done.pop_front();
        }
    }

    fn update(&self, o: &Order, parents: &[&Meta], disc: &str, ts: Micros, clock: &dyn Clock) -> OrderUpdate {
        OrderUpdate {
            meta: Meta::derived(
                EventKind::OrderUpdate,
                &self.cfg.name,
                parents,
                &format!("{disc}|{}", o.client_order_id),
                ts,
                clock.now(),
            ),
            client_order_id: o.client_order_id.clone(),
            venue_order_id: (!o.venue_order_id.is_empty()).then(|| o.venue_order_id.clone()),
            venue: self.cfg.venue.clone(),
            agent: o.agent.clone(),
            symbol: o.symbol.clone(),
            side: o.side,
            status: o.status,
            quantity: wire(o.quantity),
            filled_quantity: wire(o.filled),
            last_fill_price: None,
            last_fill_quantity: None,
            fee: None,
            fee_asset: None,
            reason: o.reason.clone(),
        }
    }

    fn on_decision(&mut self, d: &RiskDecision, clock: &dyn Clock) -> Vec<AnyEvent> {
        if d.verdict == Verdict::Rejected {
            debug!(intent = %d.intent_id, "rejected by risk: no order");
            return Vec::new();
        }
        let coid = client_order_id(&d.agent, &d.intent_id);
        if self.known.contains(&coid) {
            debug!(client_order_id = %coid, intent = %d.intent_id, "duplicate decision: no second order");
            return Vec::new();
        }
        self.remember(&coid);
        self.seq += 1;
        let ts = d.meta.ts_event;
        let mut o = Order {
            client_order_id: coid,
            venue_order_id: String::new(),
            intent_id: d.intent_id.clone(),
            agent: d.agent.clone(),
            symbol: d.symbol.clone(),
            side: d.side,
            quantity: d.approved_quantity.map(|q| q.0).unwrap_or_default(),
            filled: Decimal::ZERO,
            avg_fill_price: None,
            fees: Decimal::ZERO,
            status: OrderStatus::New,
            placed_at: ts.max(clock.now()),
            reason: None,
            decision: d.meta.clone(),
            seq: self.seq,
        };
        let mut out = vec![AnyEvent::OrderUpdate(self.update(
            &o,
            &[&d.meta],
            "new",
            ts,
            clock,
        ))];
        let reject = if o.quantity <= Decimal::ZERO {
            Some("no positive approved quantity".to_owned())
        } else if !self.cfg.allow_short && o.side == OrderSide::Sell {
            let selling: Decimal = self
                .open
                .values()
                .filter(|x| x.symbol == o.symbol && x.side == OrderSide::Sell)
                .map(Order::remaining)
                .sum();
            let free = self.portfolio.quantity(&o.symbol) - selling;
            (o.quantity > free).then(|| format!("insufficient position: sell {} > {} free", o.quantity, free))
        } else {
            None
        };
        match reject {
            Some(why) => {
                warn!(client_order_id = %o.client_order_id, reason = %why, "order rejected");
                o.status = OrderStatus::Rejected;
                o.reason = Some(why);
                out.push(AnyEvent::OrderUpdate(self.update(
                    &o,
                    &[&d.meta],
                    "rejected",
                    ts,
                    clock,
                )));
                self.retire(o);
            }
            None => {
                o.status = OrderStatus::Accepted;
                o.venue_order_id = format!("{}-{}", self.cfg.venue, o.seq);
                info!(
                    client_order_id = %o.client_order_id, agent = %o.agent, symbol = %o.symbol,
                    side = ?o.side, quantity = %o.quantity, "order accepted"
                );
                out.push(AnyEvent::OrderUpdate(self.update(
                    &o,
                    &[&d.meta],
                    "accepted",
                    ts,
                    clock,
                )));
                self.open.insert(o.seq, o);
            }
        }
        out
    }

    fn exchange_ok(&self, exchange: &str) -> bool {
        self.cfg
            .exchange
            .as_deref()
            .is_none_or(|e| e.eq_ignore_ascii_case(exchange))
    }

    fn on_market(
        &mut self,
        meta: &Meta,
        symbol: &str,
        mark: Option<Decimal>,
        liq: Option<Liquidity>,
        clock: &dyn Clock,
    ) -> Vec<AnyEvent> {
        let ts = meta.ts_event;
        match &mut self.last_market {
            Some(m) => m.clone_from(meta),
            None => self.last_market = Some(meta.clone()),
        }
        let mut out = Vec::new();
        let mut filled_any = false;
        if let Some(liq) = liq {
            filled_any = self.fill_from(meta, symbol, liq, clock, &mut out);
        }
        if let Some(p) = mark {
            self.portfolio.mark(symbol, p);
        }
        self.expire(meta, clock, &mut out);
        let interval = self.cfg.snapshot_interval_secs.saturating_mul(1_000_000);
        let bucket = if interval > 0 { ts.div_euclid(interval) } else { ts };
        let sample = self.last_sample_bucket.is_none_or(|b| bucket > b) || interval == 0;
        if sample {
            self.last_sample_bucket = Some(bucket);
            self.record_point(ts);
            out.push(self.snapshot(meta, "sample", ts, clock));
        } else if filled_any && self.cfg.snapshot_on_fill {
            out.push(self.snapshot(meta, "fill", ts, clock));
        }
        out
    }

    fn fill_from(
        &mut self,
        market: &Meta,
        symbol: &str,
        liq: Liquidity,
        clock: &dyn Clock,
        out: &mut Vec<AnyEvent>,
    ) -> bool {
        let mut buy = liq.buy;
        let mut sell = liq.sell;
        let eligible: Vec<u64> = self
            .open
            .values()
            .filter(|o| o.symbol == symbol && o.placed_at < liq.after)
            .map(|o| o.seq)
            .collect();
        let bps = Decimal::from(10_000);
        let mut any = false;
        for seq in eligible {
            let Some(mut o) = self.open.remove(&seq) else {
                continue;
            };
            let book = match o.side {
                OrderSide::Buy => &mut buy,
                OrderSide::Sell => &mut sell,
            };
            let Some((price, size)) = book.as_mut() else {
                self.open.insert(seq, o);
                continue;
            };
            let mut q = o.remaining();
            if self.cfg.use_market_size {
                if let Some(avail) = size.as_mut() {
                    q = q.min(*avail);
                    *avail -= q;
                }
            }
            if q <= Decimal::ZERO {
                self.open.insert(seq, o);
                continue;
            }
            let slip = side_sign(o.side) * self.cfg.slippage_bps / bps;
            let px = wire(*price * (Decimal::ONE + slip)).0;
            let fee = wire(px * q * self.cfg.fee_bps / bps).0;
            let effect = self.portfolio.fill(&o.symbol, o.side, q, px, fee);
            let prev = o.filled;
            o.filled += q;
            o.fees += fee;
            let avg = match o.avg_fill_price {
                Some(a) => ((a * prev + px * q) / o.filled).round_dp(12),
                None => px,
            };
            o.avg_fill_price = Some(avg);
            o.status = if o.filled >= o.quantity {
                OrderStatus::Filled
            } else {
                OrderStatus::PartiallyFilled
            };
            let trade = TradeRecord {
                ts: market.ts_event,
                client_order_id: o.client_order_id.clone(),
                symbol: o.symbol.clone(),
                side: o.side,
                quantity: q,
                price: px,
                fee,
                realized_pnl: effect.realized,
            };
            self.tracker.add_trade(&trade);
            self.trades.push(trade);
            let decision = o.decision.clone();
            let mut u = self.update(&o, &[&decision, market], "fill", market.ts_event, clock);
            u.last_fill_price = Some(wire(px));
            u.last_fill_quantity = Some(wire(q));
            u.fee = Some(wire(fee));
            u.fee_asset = Some(self.cfg.fee_asset.clone());
            info!(
                client_order_id = %o.client_order_id, symbol = %o.symbol, side = ?o.side,
                qty = %q, price = %px, fee = %fee, status = ?o.status, "fill"
            );
            out.push(AnyEvent::OrderUpdate(u));
            any = true;
            if o.is_open() {
                self.open.insert(seq, o);
            } else {
                self.retire(o);
            }
        }
        any
    }

    fn expire(&mut self, market: &Meta, clock: &dyn Clock, out: &mut Vec<AnyEvent>) {
        let Some(ttl) = self.cfg.order_ttl_secs else {
            return;
        };
        let ttl = ttl.saturating_mul(1_000_000);
        let now = market.ts_event;
        let stale: Vec<u64> = self
            .open
            .values()
            .filter(|o| now - o.placed_at >= ttl)
            .map(|o| o.seq)
            .collect();
        for seq in stale {
            if let Some(mut o) = self.open.remove(&seq) {
                o.status = OrderStatus::Cancelled;
                o.reason = Some(format!(
                    "expired: no fill within order_ttl_secs {}",
                    ttl / 1_000_000
                ));
                let decision = o.decision.clone();
                out.push(AnyEvent::OrderUpdate(self.update(
                    &o,
                    &[&decision, market],
                    "cancelled",
                    now,
                    clock,
                )));
                info!(client_order_id = %o.client_order_id, "order expired");
                self.retire(o);
            }
        }
    }

    fn record_point(&mut self, ts: Micros) {
        let p = EquityPoint {
            ts,
            equity: to_f64(self.portfolio.equity()),
            exposure: to_f64(self.portfolio.gross_exposure()),
        };
        self.tracker.add_point(p);
        self.equity_curve.push(p);
    }

    fn snapshot(&self, parent: &Meta, kind: &str, ts: Micros, clock: &dyn Clock) -> AnyEvent {
        let pf = &self.portfolio;
        AnyEvent::PortfolioSnapshot(PortfolioSnapshot {
            meta: Meta::derived(
                EventKind::PortfolioSnapshot,
                &self.cfg.name,
                &[parent],
                &format!("{kind}|{}", self.cfg.account),
                ts,
                clock.now(),
            ),
            account: self.cfg.account.clone(),
            positions: pf.snapshot_positions(),
            cash: wire(pf.cash),
            equity: wire(pf.equity()),
            realized_pnl: wire(pf.realized_pnl),
            unrealized_pnl: wire(pf.unrealized_pnl()),
            performance: self.tracker.performance().to_map(),
        })
    }
}

impl Processor for ExecutionProcessor {
    fn name(&self) -> &str {
        &self.cfg.name
    }

    /// Risk decisions and market data (trades, book tickers, klines).
    fn inputs(&self) -> Vec<String> {
        vec![
            topics::RISK_DECISIONS.to_owned(),
            "market.trades.>".to_owned(),
            "market.tickers.>".to_owned(),
            "market.klines.>".to_owned(),
        ]
    }

    fn outputs(&self) -> Vec<String> {
        vec![
            topics::EXEC_ORDERS.to_owned(),
            topics::EXEC_FILLS.to_owned(),
            topics::PORTFOLIO.to_owned(),
        ]
    }

    fn process(&mut self, event: &AnyEvent, clock: &dyn Clock) -> Result<Vec<AnyEvent>, HandlerError> {
        Ok(match event {
            AnyEvent::RiskDecision(d) => self.on_decision(d, clock),
            AnyEvent::TradeTick(t) if self.exchange_ok(&t.exchange) => {
                let size = self.cfg.use_market_size.then_some(t.quantity.0);
                let liq = self.cfg.fill_on_trades.then_some(Liquidity {
                    buy: Some((t.price.0, size)),
                    sell: Some((t.price.0, size)),
                    after: t.meta.ts_event,
                });
                self.on_market(&t.meta, &t.symbol, Some(t.price.0), liq, clock)
            }
            AnyEvent::BookTicker(b) if self.exchange_ok(&b.exchange) => {
                let pos = |p: Decimal| p > Decimal::ZERO;
                let mid = (pos(b.bid_price.0) && pos(b.ask_price.0))
                    .then(|| (b.bid_price.0 + b.ask_price.0) / Decimal::TWO);
                let sized = |q: Decimal| self.cfg.use_market_size.then_some(q);
                let liq = self.cfg.fill_on_tickers.then(|| Liquidity {
                    buy: pos(b.ask_price.0).then(|| (b.ask_price.0, sized(b.ask_qty.0))),
                    sell: pos(b.bid_price.0).then(|| (b.bid_price.0, sized(b.bid_qty.0))),
                    after: b.meta.ts_event,
                });
                self.on_market(&b.meta, &b.symbol, mid, liq, clock)
            }
            AnyEvent::Kline(k) if k.closed && self.exchange_ok(&k.exchange) => {
                let size = self.cfg.use_market_size.then_some(k.volume.0);
                let liq = (self.cfg.fill_on_klines && k.open.0 > Decimal::ZERO).then_some(Liquidity {
                    buy: Some((k.open.0, size)),
                    sell: Some((k.open.0, size)),
                    after: k.open_time,
                });
                self.on_market(&k.meta, &k.symbol, Some(k.close.0), liq, clock)
            }
            _ => Vec::new(),
        })
    }

    /// Records the last equity point (if the market moved on since the last sample) and
    /// publishes a final snapshot. Open orders stay open: nothing fills them without data.
    fn finish(&mut self, clock: &dyn Clock) -> Vec<AnyEvent> {
        let Some(last) = self.last_market.clone() else {
            return Vec::new();
        };
        if self.equity_curve.last().is_none_or(|p| p.ts < last.ts_event) {
            self.record_point(last.ts_event);
        }
        vec![self.snapshot(&last, "final", last.ts_event, clock)]
    }
}
