//! Live execution on Binance: a stage [`Handler`] (not a [`auroraq_stage::Processor`]: it does
//! I/O) that turns approved risk decisions into Binance market orders and the answers into
//! [`OrderUpdate`]s.
//!
//! Idempotency: the `newClientOrderId` is [`client_order_id`] of the agent and intent, so a
//! redelivered decision that reaches Binance again is refused as a duplicate (`-2010`), and
//! the handler then reports the existing order by querying it. A 429/418 or an unknown outcome
//! that a query cannot settle is a transient failure: the stage runner retries the decision
//! later with the same client order id.

use std::collections::{HashSet, VecDeque};

use async_trait::async_trait;
use auroraq_schemas::{
    now_micros, AnyEvent, EventKind, Meta, OrderStatus, OrderUpdate, RiskDecision, Verdict,
};
use auroraq_stage::{Handler, HandlerError};
use rust_decimal::Decimal;
use tracing::{info, warn};

use crate::binance::{
    binance_symbol, BinanceOrder, BinanceOrderClient, BinanceOrderError, NewOrder, OrderType,
};
use crate::paper::client_order_id;
use crate::portfolio::wire;

/// A fill to report: price, quantity, fee and its asset, discriminator.
type FillReport = (Decimal, Decimal, Option<(Decimal, String)>, String);

/// The live execution stage.
pub struct LiveExecution {
    client: BinanceOrderClient,
    name: String,
    venue: String,
    placed: HashSet<String>,
    placed_order: VecDeque<String>,
    remember: usize,
}

impl LiveExecution {
    /// Orders go through `client`; events name `name` as their source and `binance` as venue.
    pub fn new(client: BinanceOrderClient, name: &str) -> Self {
        LiveExecution {
            client,
            name: name.to_owned(),
            venue: "binance".to_owned(),
            placed: HashSet::new(),
            placed_order: VecDeque::new(),
            remember: 100_000,
        }
    }

    pub fn client(&self) -> &BinanceOrderClient {
        &self.client
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

    /// The updates that report `o` (accepted, each fill, and a final cancel or reject).
    fn report(&self, d: &RiskDecision, coid: &str, quantity: Decimal, o: &BinanceOrder) -> Vec<AnyEvent> {
        let ts = o.transact_time.map(|ms| ms * 1000).unwrap_or_else(now_micros);
        let venue_id = Some(o.order_id.to_string());
        let mut out = Vec::new();
        let mut acc = self.base(d, coid, quantity, "accepted", ts);
        acc.status = OrderStatus::Accepted;
        acc.venue_order_id = venue_id.clone();
        out.push(AnyEvent::OrderUpdate(acc));
        let mut filled = Decimal::ZERO;
        let fills: Vec<FillReport> = if o.fills.is_empty() {
            o.avg_price()
                .map(|p| (p, o.executed_qty, None, format!("fill|q{}", o.executed_qty)))
                .into_iter()
                .collect()
        } else {
            o.fills
                .iter()
                .enumerate()
                .map(|(i, f)| {
                    let id = f.trade_id.map(|t| t.to_string()).unwrap_or_else(|| i.to_string());
                    (
                        f.price,
                        f.qty,
                        Some((f.commission, f.commission_asset.clone())),
                        format!("fill|{id}"),
                    )
                })
                .collect()
        };
        for (price, qty, fee, disc) in fills {
            filled += qty;
            let mut u = self.base(d, coid, quantity, &disc, ts);
            u.venue_order_id = venue_id.clone();
            u.status = if filled >= o.orig_qty {
                OrderStatus::Filled
            } else {
                OrderStatus::PartiallyFilled
            };
            u.filled_quantity = wire(filled);
            u.last_fill_price = Some(wire(price));
            u.last_fill_quantity = Some(wire(qty));
            if let Some((c, a)) = fee {
                u.fee = Some(wire(c));
                u.fee_asset = Some(a);
            }
            out.push(AnyEvent::OrderUpdate(u));
        }
        if matches!(o.status, OrderStatus::Cancelled | OrderStatus::Rejected) {
            let mut u = self.base(d, coid, quantity, "final", ts);
            u.venue_order_id = venue_id;
            u.status = o.status;
            u.filled_quantity = wire(o.executed_qty);
            u.reason = Some(format!("binance status {}", o.venue_status));
            out.push(AnyEvent::OrderUpdate(u));
        }
        out
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
        if self.placed.contains(&coid) {
            return Ok(Vec::new());
        }
        let symbol = binance_symbol(&d.symbol);
        let req = NewOrder {
            symbol: symbol.clone(),
            side: d.side,
            order_type: OrderType::Market,
            quantity: q,
            client_order_id: coid.clone(),
        };
        let new = AnyEvent::OrderUpdate(self.base(d, &coid, q, "new", d.meta.ts_event));
        let outcome = match self.client.place_order(&req).await {
            Ok(o) => Ok(o),
            Err(e) if e.is_duplicate() => self.client.query_order(&symbol, &coid).await,
            Err(e @ (BinanceOrderError::Unknown { .. } | BinanceOrderError::Transport { .. })) => {
                warn!(client_order_id = %coid, error = %e, "order outcome unknown; querying");
                self.client.query_order(&symbol, &coid).await
            }
            Err(e) => Err(e),
        };
        let out = match outcome {
            Ok(o) => {
                info!(client_order_id = %coid, status = %o.venue_status, executed = %o.executed_qty, "binance order");
                let mut v = vec![new];
                v.extend(self.report(d, &coid, q, &o));
                v
            }
            Err(e @ (BinanceOrderError::Rejected { .. } | BinanceOrderError::Api { .. })) => {
                warn!(client_order_id = %coid, error = %e, "binance rejected the order");
                let mut u = self.base(d, &coid, q, "rejected", d.meta.ts_event);
                u.status = OrderStatus::Rejected;
                u.reason = Some(e.to_string());
                vec![new, AnyEvent::OrderUpdate(u)]
            }
            Err(e) => return Err(HandlerError::Transient(e.to_string())),
        };
        self.placed.insert(coid.clone());
        self.placed_order.push_back(coid);
        while self.placed_order.len() > self.remember {
            if let Some(old) = self.placed_order.pop_front() {
                self.placed.remove(&old);
            }
        }
        Ok(out)
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
