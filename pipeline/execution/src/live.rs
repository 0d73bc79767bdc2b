//! Live execution on Binance: a stage [`Handler`] (not a [`auroraq_stage::Processor`]: it does
//! I/O) that turns approved risk decisions into Binance market orders and the answers into
//! [`OrderUpdate`]s.
//!
//! Idempotency: the `newClientOrderId` is [`client_order_id`] of the agent and intent, so a
//! redelivered decision that reaches Binance again is refused as a duplicate (`-2010`), and
//! the handler then reports the existing order by querying it. A 429/418 or an unknown outcome
//! that a query cannot settle is a transient failure: the stage runner retries the decision
//! later with the same client order id.
//!
//! Restarts: with a [journal](crate::journal) ([`LiveExecution::with_journal`]) every order is
//! recorded before it is sent, and [`LiveExecution::reconcile`] (at start, then now and then)
//! asks the venue about each order the journal still holds: its state (`GET /api/v3/order`),
//! the account's open orders (`GET /api/v3/openOrders`) and the order's fills since it was last
//! seen (`GET /api/v3/myTrades`), and reports what was missed. An update has the same event id
//! whichever path reports it (the decision, the fill's trade id), so a report sent twice is
//! de-duplicated downstream.

use std::collections::{HashMap, HashSet, VecDeque};

use async_trait::async_trait;
use auroraq_schemas::{
    now_micros, AnyEvent, EventKind, Meta, OrderStatus, OrderUpdate, RiskDecision, Verdict,
};
use auroraq_stage::{Handler, HandlerError};
use rust_decimal::Decimal;
use tracing::{info, warn};

use crate::binance::{
    binance_symbol, BinanceOrder, BinanceOrderClient, BinanceOrderError, BinanceTrade, NewOrder, OrderType,
};
use crate::journal::{Journal, JournalError, JournalFile, JournalOrder};
use crate::paper::client_order_id;
use crate::portfolio::wire;

/// A fill to report: price, quantity, fee and its asset, discriminator, trade id, time (µs).
struct FillReport {
    price: Decimal,
    qty: Decimal,
    fee: Option<(Decimal, String)>,
    disc: String,
    trade_id: Option<i64>,
    ts: i64,
}

/// Reports of orders done, kept in memory to answer a redelivered decision.
const RECENT_REPORTS: usize = 1024;

/// The live execution stage.
pub struct LiveExecution {
    client: BinanceOrderClient,
    name: String,
    venue: String,
    journal: Journal,
    file: Option<JournalFile>,
    done: HashSet<String>,
    remember: usize,
    recent: HashMap<String, Vec<OrderUpdate>>,
    recent_order: VecDeque<String>,
}

impl LiveExecution {
    /// Orders go through `client`; events name `name` as their source and `binance` as venue.
    /// No journal: see [`LiveExecution::with_journal`].
    pub fn new(client: BinanceOrderClient, name: &str) -> Self {
        LiveExecution {
            client,
            name: name.to_owned(),
            venue: "binance".to_owned(),
            journal: Journal::default(),
            file: None,
            done: HashSet::new(),
            remember: 100_000,
            recent: HashMap::new(),
            recent_order: VecDeque::new(),
        }
    }

    /// The `venue` of its order updates (`binance-testnet` for the testnet).
    pub fn with_venue(mut self, venue: &str) -> Self {
        self.venue = venue.to_owned();
        self
    }

    /// Client order ids of done orders remembered (duplicate protection). Default 100000.
    pub fn with_remember(mut self, remember: usize) -> Self {
        self.remember = remember.max(1);
        self
    }

    /// Keeps the order journal in `path` (read now: what a previous run left there is
    /// reconciled by [`LiveExecution::reconcile`]).
    pub fn with_journal(mut self, path: &std::path::Path) -> Result<Self, JournalError> {
        let (file, journal) = JournalFile::open(path)?;
        self.done = journal.done.iter().cloned().collect();
        self.journal = journal;
        self.file = Some(file);
        Ok(self)
    }

    pub fn client(&self) -> &BinanceOrderClient {
        &self.client
    }

    pub fn venue(&self) -> &str {
        &self.venue
    }

    /// The orders sent and not yet seen done.
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    fn save(&self) -> Result<(), JournalError> {
        match &self.file {
            Some(f) => f.save(&self.journal),
            None => Ok(()),
        }
    }

    fn base(&self, d: &RiskDecision, coid: &str, quantity: Decimal, disc: &str, ts: i64) -> OrderUpdate {
        let now = now_micros();
        OrderUpdate {
            meta: Meta::derived(
                EventKind::OrderUpdate,
                &self.name,
                &[&d.meta],
                &format!("{disc}|{coid}"),
                ts,
                now,
            ),
            client_order_id: coid.to_owned(),
            venue_order_id: None,
            venue: self.venue.clone(),
            agent: d.agent.clone(),
            symbol: d.symbol.clone(),
            side: d.side,
            status: OrderStatus::New,
            quantity: wire(quantity),
            filled_quantity: wire(Decimal::ZERO),
            last_fill_price: None,
            last_fill_quantity: None,
            fee: None,
            fee_asset: None,
            reason: None,
        }
    }

    /// The fills of an order's answer (its `fills`, else its executed quantity as one).
    fn fills_of(o: &BinanceOrder) -> Vec<FillReport> {
        let ts = o.transact_time.map(|ms| ms * 1000).unwrap_or_else(now_micros);
        if o.fills.is_empty() {
            return o
                .avg_price()
                .map(|p| FillReport {
                    price: p,
                    qty: o.executed_qty,
                    fee: None,
                    disc: format!("fill|q{}", o.executed_qty),
                    trade_id: None,
                    ts,
                })
                .into_iter()
                .collect();
        }
        o.fills
            .iter()
            .enumerate()
            .map(|(i, f)| FillReport {
                price: f.price,
                qty: f.qty,
                fee: Some((f.commission, f.commission_asset.clone())),
                disc: format!(
                    "fill|{}",
                    f.trade_id.map(|t| t.to_string()).unwrap_or_else(|| i.to_string())
                ),
                trade_id: f.trade_id,
                ts,
            })
            .collect()
    }

    fn fills_of_trades(trades: &[BinanceTrade]) -> Vec<FillReport> {
        trades
            .iter()
            .map(|t| FillReport {
                price: t.price,
                qty: t.qty,
                fee: Some((t.commission, t.commission_asset.clone())),
                disc: format!("fill|{}", t.id),
                trade_id: Some(t.id),
                ts: t.time_ms * 1000,
            })
            .collect()
    }

    /// The updates that report `o` to an order whose journal entry is `e` (what was reported
    /// before is not reported again): accepted, each new fill, and a final cancel or reject.
    /// Updates `e`.
    fn report(
        &self,
        e: &mut JournalOrder,
        coid: &str,
        o: &BinanceOrder,
        fills: Vec<FillReport>,
    ) -> Vec<OrderUpdate> {
        let ts = o.transact_time.map(|ms| ms * 1000).unwrap_or_else(now_micros);
        let venue_id = Some(o.order_id.to_string());
        let d = e.decision.clone();
        let mut out = Vec::new();
        if e.venue_order_id.is_none() {
            let mut acc = self.base(&d, coid, e.quantity, "accepted", ts);
            acc.status = OrderStatus::Accepted;
            acc.venue_order_id = venue_id.clone();
            out.push(acc);
            e.venue_order_id = Some(o.order_id);
        }
        for f in fills {
            if f.trade_id.is_some_and(|t| e.trades.contains(&t)) {
                continue;
            }
            // Without trade ids (an answer with no fills): only what is beyond the reported.
            if f.trade_id.is_none() && f.qty <= e.filled {
                continue;
            }
            e.filled += f.qty;
            if let Some(t) = f.trade_id {
                e.trades.insert(t);
            }
            let mut u = self.base(&d, coid, e.quantity, &f.disc, f.ts);
            u.venue_order_id = venue_id.clone();
            u.status = if e.filled >= o.orig_qty {
                OrderStatus::Filled
            } else {
                OrderStatus::PartiallyFilled
            };
            u.filled_quantity = wire(e.filled);
            u.last_fill_price = Some(wire(f.price));
            u.last_fill_quantity = Some(wire(f.qty));
            if let Some((c, a)) = f.fee {
                u.fee = Some(wire(c));
                u.fee_asset = Some(a);
            }
            out.push(u);
        }
        if matches!(o.status, OrderStatus::Cancelled | OrderStatus::Rejected) {
            let mut u = self.base(&d, coid, e.quantity, "final", ts);
            u.venue_order_id = venue_id;
            u.status = o.status;
            u.filled_quantity = wire(o.executed_qty);
            u.reason = Some(format!("binance status {}", o.venue_status));
            out.push(u);
        }
        e.updates.extend(out.iter().cloned());
        out
    }

    /// The fills of `o`: from its answer, or, when the answer has none but something filled
    /// (a query's answer), from the account's trades of the order (so each fill keeps the id
    /// its trade gives it); the answer's executed quantity when even those cannot be had.
    async fn fills(&self, symbol: &str, o: &BinanceOrder) -> Vec<FillReport> {
        if o.fills.is_empty() && o.executed_qty > Decimal::ZERO {
            match self.client.order_trades(symbol, o.order_id).await {
                Ok(t) if !t.is_empty() => return Self::fills_of_trades(&t),
                Ok(_) => {}
                Err(e) => {
                    warn!(client_order_id = %o.client_order_id, error = %e, "cannot read the order's trades")
                }
            }
        }
        Self::fills_of(o)
    }

    fn is_done(s: OrderStatus) -> bool {
        matches!(
            s,
            OrderStatus::Filled | OrderStatus::Cancelled | OrderStatus::Rejected
        )
    }

    /// Moves `coid` from the open orders to the done ones.
    fn finish(&mut self, coid: &str, updates: Vec<OrderUpdate>) {
        self.journal.open.remove(coid);
        if self.done.insert(coid.to_owned()) {
            self.journal.done.push_back(coid.to_owned());
        }
        while self.journal.done.len() > self.remember {
            if let Some(old) = self.journal.done.pop_front() {
                self.done.remove(&old);
            }
        }
        self.recent.insert(coid.to_owned(), updates);
        self.recent_order.push_back(coid.to_owned());
        while self.recent_order.len() > RECENT_REPORTS {
            if let Some(old) = self.recent_order.pop_front() {
                self.recent.remove(&old);
            }
        }
    }

    fn events(u: Vec<OrderUpdate>) -> Vec<AnyEvent> {
        u.into_iter().map(AnyEvent::OrderUpdate).collect()
    }

    /// Places the order of one decision; see the module documentation.
    pub async fn on_decision(&mut self, d: &RiskDecision) -> Result<Vec<AnyEvent>, HandlerError> {
        let Some(q) = d
            .approved_quantity
            .map(|q| q.0)
            .filter(|q| *q > Decimal::ZERO && d.verdict != Verdict::Rejected)
        else {
            return Ok(Vec::new());
        };
        let coid = client_order_id(&d.agent, &d.intent_id);
        if self.done.contains(&coid) {
            // Redelivered (its outputs were not published, or the stage restarted): the same
            // updates again, when still at hand; they de-duplicate downstream.
            return Ok(Self::events(self.recent.get(&coid).cloned().unwrap_or_default()));
        }
        if let Some(e) = self.journal.open.get(&coid) {
            if e.venue_order_id.is_some() {
                return Ok(Self::events(e.updates.clone()));
            }
            // Sent before, outcome unknown: send again; a duplicate is queried below.
        }
        let symbol = binance_symbol(&d.symbol);
        let mut entry = self
            .journal
            .open
            .get(&coid)
            .cloned()
            .unwrap_or_else(|| JournalOrder {
                decision: d.clone(),
                symbol: symbol.clone(),
                quantity: q,
                venue_order_id: None,
                trades: Default::default(),
                filled: Decimal::ZERO,
                updates: Vec::new(),
            });
        // Write-ahead: recorded before it is sent.
        self.journal.open.insert(coid.clone(), entry.clone());
        self.save().map_err(|e| HandlerError::Transient(e.to_string()))?;
        let req = NewOrder {
            symbol: symbol.clone(),
            side: d.side,
            order_type: OrderType::Market,
            quantity: q,
            client_order_id: coid.clone(),
        };
        let outcome = match self.client.place_order(&req).await {
            Ok(o) => Ok(o),
            Err(e) if e.is_duplicate() => self.client.query_order(&symbol, &coid).await,
            Err(e @ (BinanceOrderError::Unknown { .. } | BinanceOrderError::Transport { .. })) => {
                warn!(client_order_id = %coid, error = %e, "order outcome unknown; querying");
                self.client.query_order(&symbol, &coid).await
            }
            Err(e) => Err(e),
        };
        let mut updates = Vec::new();
        if entry.updates.is_empty() {
            let new = self.base(d, &coid, q, "new", d.meta.ts_event);
            entry.updates.push(new.clone());
            updates.push(new);
        }
        let done = match outcome {
            Ok(o) => {
                info!(client_order_id = %coid, venue = %self.venue, status = %o.venue_status, executed = %o.executed_qty, "binance order");
                let fills = self.fills(&symbol, &o).await;
                updates.extend(self.report(&mut entry, &coid, &o, fills));
                Self::is_done(o.status)
            }
            Err(e @ (BinanceOrderError::Rejected { .. } | BinanceOrderError::Api { .. })) => {
                warn!(client_order_id = %coid, error = %e, "binance rejected the order");
                let mut u = self.base(d, &coid, q, "rejected", d.meta.ts_event);
                u.status = OrderStatus::Rejected;
                u.reason = Some(e.to_string());
                entry.updates.push(u.clone());
                updates.push(u);
                true
            }
            Err(e) => return Err(HandlerError::Transient(e.to_string())),
        };
        if done {
            let all = entry.updates.clone();
            self.finish(&coid, all);
        } else {
            self.journal.open.insert(coid.clone(), entry);
        }
        if let Err(e) = self.save() {
            // The venue has the order; the journal catches up on the next write.
            warn!(client_order_id = %coid, error = %e, "cannot record the order's state");
        }
        Ok(Self::events(updates))
    }

    /// Asks the venue about every order of the journal (see the module documentation) and
    /// returns the updates not reported yet: the acceptance and fills of an order whose answer
    /// was never seen (the stage stopped mid-order), fills since the last look, cancels and
    /// expiries. An order the venue does not know never reached it: it leaves the journal, and
    /// its decision, when redelivered, places it. Open orders at the venue that the journal does
    /// not know are logged and left alone.
    pub async fn reconcile(&mut self) -> Result<Vec<AnyEvent>, BinanceOrderError> {
        let open_at_venue = self.client.open_orders(None).await?;
        let foreign: Vec<&BinanceOrder> = open_at_venue
            .iter()
            .filter(|o| !self.journal.open.contains_key(&o.client_order_id))
            .collect();
        for o in &foreign {
            warn!(
                client_order_id = %o.client_order_id,
                symbol = %o.symbol,
                status = %o.venue_status,
                "an open order at the venue that this stage did not place (or has forgotten): left alone"
            );
        }
        let (foreign, at_venue) = (foreign.len(), open_at_venue.len());
        let mut out = Vec::new();
        let mut dropped = 0usize;
        for coid in self.journal.open.keys().cloned().collect::<Vec<_>>() {
            let Some(mut entry) = self.journal.open.get(&coid).cloned() else {
                continue;
            };
            let known = open_at_venue.iter().find(|o| o.client_order_id == coid).cloned();
            let o = match known {
                Some(o) => o,
                None => match self.client.query_order(&entry.symbol, &coid).await {
                    Ok(o) => o,
                    Err(e) if e.code() == Some(-2013) => {
                        info!(client_order_id = %coid, "the order never reached the venue: its decision places it when it comes again");
                        self.journal.open.remove(&coid);
                        dropped += 1;
                        continue;
                    }
                    Err(e) => return Err(e),
                },
            };
            let mut updates = Vec::new();
            if entry.updates.is_empty() {
                let d = entry.decision.clone();
                let new = self.base(&d, &coid, entry.quantity, "new", d.meta.ts_event);
                entry.updates.push(new.clone());
                updates.push(new);
            }
            let fills = if o.executed_qty > entry.filled {
                Self::fills_of_trades(&self.client.order_trades(&entry.symbol, o.order_id).await?)
            } else {
                Vec::new()
            };
            updates.extend(self.report(&mut entry, &coid, &o, fills));
            out.extend(updates);
            if Self::is_done(o.status) {
                let all = entry.updates.clone();
                self.finish(&coid, all);
            } else {
                self.journal.open.insert(coid, entry);
            }
        }
        if let Err(e) = self.save() {
            warn!(error = %e, "cannot record the reconciled state");
        }
        info!(
            venue = %self.venue,
            open_at_venue = at_venue,
            not_ours = foreign,
            journal_open = self.journal.open.len(),
            never_sent = dropped,
            updates = out.len(),
            "order state reconciled with the venue"
        );
        Ok(Self::events(out))
    }

    /// [`LiveExecution::reconcile`] when the journal holds open orders; nothing (and no
    /// request) otherwise.
    pub async fn poll(&mut self) -> Result<Vec<AnyEvent>, BinanceOrderError> {
        if self.journal.open.is_empty() {
            return Ok(Vec::new());
        }
        self.reconcile().await
    }
}

#[async_trait]
impl Handler<AnyEvent> for LiveExecution {
    async fn handle(&mut self, event: AnyEvent) -> Result<Vec<AnyEvent>, HandlerError> {
        match event {
            AnyEvent::RiskDecision(d) => self.on_decision(&d).await,
            _ => Ok(Vec::new()),
        }
    }
}
