//! The execution stage: paper fills that never use data the order could not have seen, fees and
//! slippage, partial fills, the order lifecycle with duplicate decisions, portfolio PnL and
//! performance figures by hand; the Binance order client (signature, loopback round trips,
//! rate limits) and its live-trading switch.

use std::str::FromStr;
use std::time::Duration;

use auroraq_execution::{
    client_order_id, fill_message, performance, sign, BinanceOrderClient, BinanceOrderError, EquityPoint,
    ExecutionConfig, ExecutionProcessor, LiveExecution, LiveTrading, LiveTradingConfig, LiveTradingError,
    NewOrder, OrderType, PerformanceConfig, TradeRecord, TESTNET_BASE_URL,
};
use auroraq_schemas::{
    AnyEvent, BookTicker, Dec, EventKind, Kline, Meta, Micros, OrderSide, OrderStatus, OrderUpdate,
    PortfolioSnapshot, RiskDecision, Side, TradeTick, Verdict,
};
use auroraq_stage::{Handler, Processor, SimClock};
use auroraq_tests::binance_orders::{BinanceOrderServer, OrderCue, OrderServerConfig};
use rust_decimal::Decimal;

const T0: Micros = 1_699_920_000_000_000;
const H: Micros = 3_600_000_000;
const YEAR: Micros = 31_557_600_000_000; // 365.25 days

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol
}

fn decision(intent: &str, side: OrderSide, qty: &str, ts: Micros) -> RiskDecision {
    RiskDecision {
        meta: Meta::raw(EventKind::RiskDecision, "risk", intent, ts, ts),
        intent_id: intent.into(),
        agent: "a1".into(),
        symbol: "BTCUSD".into(),
        side,
        verdict: Verdict::Approved,
        approved_quantity: Some(Dec(d(qty))),
        reason: "ok".into(),
        checks: Default::default(),
    }
}

fn trade(ts: Micros, price: &str, qty: &str) -> AnyEvent {
    AnyEvent::TradeTick(TradeTick {
        meta: Meta::raw(EventKind::TradeTick, "test", &format!("t{ts}"), ts, ts),
        exchange: "test".into(),
        symbol: "BTCUSD".into(),
        trade_id: ts.to_string(),
        price: Dec(d(price)),
        quantity: Dec(d(qty)),
        aggressor: Side::Buy,
        aggregated: false,
    })
}

fn ticker(ts: Micros, bid: &str, ask: &str) -> AnyEvent {
    AnyEvent::BookTicker(BookTicker {
        meta: Meta::raw(EventKind::BookTicker, "test", &format!("q{ts}"), ts, ts),
        exchange: "test".into(),
        symbol: "BTCUSD".into(),
        update_id: None,
        bid_price: Dec(d(bid)),
        bid_qty: Dec(d("10")),
        ask_price: Dec(d(ask)),
        ask_qty: Dec(d("10")),
    })
}

fn bar(i: i64, open: &str, close: &str) -> AnyEvent {
    let open_time = T0 + i * H;
    let close_time = open_time + H - 1;
    AnyEvent::Kline(Kline {
        meta: Meta::raw(EventKind::Kline, "test", &format!("k{i}"), close_time, close_time),
        exchange: "test".into(),
        symbol: "BTCUSD".into(),
        interval: "1h".into(),
        open_time,
        close_time,
        open: Dec(d(open)),
        high: Dec(d(open).max(d(close))),
        low: Dec(d(open).min(d(close))),
        close: Dec(d(close)),
        volume: Dec(d("1000")),
        quote_volume: None,
        trades: None,
        closed: true,
    })
}

/// No fees, no slippage, full fills.
fn frictionless() -> ExecutionConfig {
    ExecutionConfig {
        fee_bps: Decimal::ZERO,
        slippage_bps: Decimal::ZERO,
        use_market_size: false,
        ..ExecutionConfig::default()
    }
}

fn run(p: &mut ExecutionProcessor, clock: &SimClock, ev: &AnyEvent) -> Vec<AnyEvent> {
    clock.advance_to(ev.meta().ts_event);
    p.process(ev, clock)
        .expect("execution never fails on good events")
}

fn updates(out: &[AnyEvent]) -> Vec<OrderUpdate> {
    out.iter()
        .filter_map(|e| match e {
            AnyEvent::OrderUpdate(u) => Some(u.clone()),
            _ => None,
        })
        .collect()
}

fn snapshots(out: &[AnyEvent]) -> Vec<PortfolioSnapshot> {
    out.iter()
        .filter_map(|e| match e {
            AnyEvent::PortfolioSnapshot(s) => Some(s.clone()),
            _ => None,
        })
        .collect()
}

fn dec_event(d: RiskDecision) -> AnyEvent {
    AnyEvent::RiskDecision(d)
}

#[test]
fn market_orders_fill_only_from_prices_strictly_after_the_order() {
    let mut p = ExecutionProcessor::new(frictionless()).expect("config");
    let clock = SimClock::new(T0);
    run(&mut p, &clock, &trade(T0 + 10, "100", "5"));
    let d1 = decision("i1", OrderSide::Buy, "1", T0 + 20);
    let out = run(&mut p, &clock, &dec_event(d1.clone()));
    let st: Vec<OrderStatus> = updates(&out).iter().map(|u| u.status).collect();
    assert_eq!(st, vec![OrderStatus::New, OrderStatus::Accepted]);
    // A trade at the order's own time, and a late one from before it: not used.
    assert!(updates(&run(&mut p, &clock, &trade(T0 + 20, "101", "5"))).is_empty());
    assert!(updates(&run(&mut p, &clock, &trade(T0 + 15, "99", "5"))).is_empty());
    let coid = client_order_id("a1", "i1");
    assert_eq!(p.order(&coid).map(|o| o.status), Some(OrderStatus::Accepted));
    // The first trade strictly after it fills it.
    let next = trade(T0 + 21, "102", "5");
    let u = updates(&run(&mut p, &clock, &next));
    assert_eq!(u.len(), 1);
    assert_eq!(u[0].status, OrderStatus::Filled);
    assert_eq!(u[0].last_fill_price, Some(Dec(d("102"))));
    assert_eq!(u[0].last_fill_quantity, Some(Dec(d("1"))));
    assert_eq!(
        u[0].meta.ts_event,
        T0 + 21,
        "a fill happens at its market event's time"
    );
    assert_eq!(
        u[0].meta.derived_from,
        vec![d1.meta.event_id.clone(), next.meta().event_id.clone()]
    );
    assert_eq!(u[0].client_order_id, coid);
    assert_eq!(p.portfolio().quantity("BTCUSD"), d("1"));
}

#[test]
fn an_order_with_no_later_price_stays_open() {
    let mut p = ExecutionProcessor::new(frictionless()).expect("config");
    let clock = SimClock::new(T0);
    run(&mut p, &clock, &trade(T0 + 10, "100", "5"));
    run(
        &mut p,
        &clock,
        &dec_event(decision("i1", OrderSide::Buy, "1", T0 + 10)),
    );
    let end = p.finish(&clock);
    assert!(updates(&end).is_empty(), "nothing fills it");
    assert_eq!(snapshots(&end).len(), 1);
    assert_eq!(p.open_orders().len(), 1);
    assert_eq!(p.open_orders()[0].status, OrderStatus::Accepted);
    assert_eq!(p.portfolio().quantity("BTCUSD"), Decimal::ZERO);
    assert_eq!(snapshots(&end)[0].equity, Dec(d("100000")));
}

#[test]
fn tickers_fill_at_the_touch_and_bars_at_the_next_open() {
    let mut p = ExecutionProcessor::new(frictionless()).expect("config");
    let clock = SimClock::new(T0);
    run(
        &mut p,
        &clock,
        &dec_event(decision("b", OrderSide::Buy, "1", T0 + 5)),
    );
    run(
        &mut p,
        &clock,
        &dec_event(decision("s", OrderSide::Sell, "2", T0 + 5)),
    );
    let u = updates(&run(&mut p, &clock, &ticker(T0 + 6, "99", "101")));
    assert_eq!(u.len(), 2);
    assert_eq!(
        (u[0].side, u[0].last_fill_price),
        (OrderSide::Buy, Some(Dec(d("101"))))
    );
    assert_eq!(
        (u[1].side, u[1].last_fill_price),
        (OrderSide::Sell, Some(Dec(d("99"))))
    );

    // Bars: an order at bar 0's close fills at bar 1's open, never at bar 0's.
    let mut p = ExecutionProcessor::new(frictionless()).expect("config");
    let clock = SimClock::new(T0);
    run(&mut p, &clock, &bar(0, "100", "104"));
    run(
        &mut p,
        &clock,
        &dec_event(decision("k", OrderSide::Buy, "1", T0 + H - 1)),
    );
    assert!(
        updates(&run(&mut p, &clock, &bar(0, "100", "104"))).is_empty(),
        "bar 0 opened before the order"
    );
    let out = run(&mut p, &clock, &bar(1, "105", "110"));
    let u = updates(&out);
    assert_eq!(u.len(), 1);
    assert_eq!(u[0].last_fill_price, Some(Dec(d("105"))));
    // Marked at the bar's close: unrealised 110 - 105 = 5.
    let s = snapshots(&out);
    assert_eq!(s.last().map(|s| s.unrealized_pnl), Some(Dec(d("5"))));
}

#[test]
fn fees_and_slippage_arithmetic() {
    // fee 10 bps, slippage 5 bps.
    // Buy 0.2 at a 50000 print: price 50000 * 1.0005 = 50025, fee 50025 * 0.2 * 0.001 = 10.005,
    //   cash 100000 - 10005 - 10.005 = 89984.995.
    // Sell 0.2 at a 51000 print: price 51000 * 0.9995 = 50974.5, fee 50974.5 * 0.2 * 0.001 = 10.1949,
    //   realised 0.2 * (50974.5 - 50025) - 10.1949 = 179.7051; with the buy's fee: 169.7001 in all;
    //   cash 89984.995 + 10194.9 - 10.1949 = 100169.7001 = equity (flat).
    let cfg = ExecutionConfig {
        fee_bps: d("10"),
        slippage_bps: d("5"),
        ..ExecutionConfig::default()
    };
    let mut p = ExecutionProcessor::new(cfg).expect("config");
    let clock = SimClock::new(T0);
    run(
        &mut p,
        &clock,
        &dec_event(decision("b", OrderSide::Buy, "0.2", T0 + 1)),
    );
    let u = updates(&run(&mut p, &clock, &trade(T0 + 2, "50000", "1")));
    assert_eq!(u[0].last_fill_price, Some(Dec(d("50025"))));
    assert_eq!(u[0].fee, Some(Dec(d("10.005"))));
    assert_eq!(u[0].fee_asset.as_deref(), Some("USD"));
    assert_eq!(p.portfolio().cash, d("89984.995"));
    assert_eq!(p.portfolio().realized_pnl, d("-10.005"));
    run(
        &mut p,
        &clock,
        &dec_event(decision("s", OrderSide::Sell, "0.2", T0 + 3)),
    );
    let u = updates(&run(&mut p, &clock, &trade(T0 + 4, "51000", "1")));
    assert_eq!(u[0].last_fill_price, Some(Dec(d("50974.5"))));
    assert_eq!(u[0].fee, Some(Dec(d("10.1949"))));
    let pf = p.portfolio();
    assert_eq!(pf.cash, d("100169.7001"));
    assert_eq!(pf.realized_pnl, d("169.7001"));
    assert_eq!(pf.fees, d("20.1999"));
    assert_eq!(pf.equity(), d("100169.7001"));
    assert_eq!(p.trades()[1].realized_pnl, Some(d("179.7051")));
    assert_eq!(p.trades()[0].realized_pnl, None);
}

#[test]
fn partial_fills_take_the_trade_size() {
    let cfg = ExecutionConfig {
        use_market_size: true,
        ..frictionless()
    };
    let mut p = ExecutionProcessor::new(cfg.clone()).expect("config");
    let clock = SimClock::new(T0);
    run(
        &mut p,
        &clock,
        &dec_event(decision("i1", OrderSide::Buy, "1", T0 + 1)),
    );
    let mut seen = Vec::new();
    for (k, q) in [(2, "0.3"), (3, "0.5"), (4, "0.4")] {
        for u in updates(&run(&mut p, &clock, &trade(T0 + k, "100", q))) {
            seen.push((u.status, u.filled_quantity, u.last_fill_quantity));
        }
    }
    assert_eq!(
        seen,
        vec![
            (OrderStatus::PartiallyFilled, Dec(d("0.3")), Some(Dec(d("0.3")))),
            (OrderStatus::PartiallyFilled, Dec(d("0.8")), Some(Dec(d("0.5")))),
            (OrderStatus::Filled, Dec(d("1")), Some(Dec(d("0.2")))),
        ]
    );
    // Two orders share one print, first placed first.
    let mut p = ExecutionProcessor::new(cfg).expect("config");
    run(
        &mut p,
        &clock,
        &dec_event(decision("x", OrderSide::Buy, "1", T0 + 10)),
    );
    run(
        &mut p,
        &clock,
        &dec_event(decision("y", OrderSide::Buy, "1", T0 + 11)),
    );
    let u = updates(&run(&mut p, &clock, &trade(T0 + 12, "100", "1.5")));
    assert_eq!(u.len(), 2);
    assert_eq!(
        (u[0].status, u[0].filled_quantity),
        (OrderStatus::Filled, Dec(d("1")))
    );
    assert_eq!(
        (u[1].status, u[1].filled_quantity),
        (OrderStatus::PartiallyFilled, Dec(d("0.5")))
    );
    // Without the size limit one print fills everything.
    let mut p = ExecutionProcessor::new(frictionless()).expect("config");
    run(
        &mut p,
        &clock,
        &dec_event(decision("z", OrderSide::Buy, "7", T0 + 20)),
    );
    let u = updates(&run(&mut p, &clock, &trade(T0 + 21, "100", "0.001")));
    assert_eq!(
        (u[0].status, u[0].filled_quantity),
        (OrderStatus::Filled, Dec(d("7")))
    );
}

#[test]
fn duplicate_decisions_make_one_order() {
    let mut p = ExecutionProcessor::new(frictionless()).expect("config");
    let clock = SimClock::new(T0);
    let d1 = decision("i1", OrderSide::Buy, "1", T0 + 1);
    assert_eq!(updates(&run(&mut p, &clock, &dec_event(d1.clone()))).len(), 2);
    // The same decision redelivered...
    assert!(run(&mut p, &clock, &dec_event(d1.clone())).is_empty());
    // ...or a second decision for the same intent (another event id, another quantity).
    let mut d2 = decision("i1", OrderSide::Buy, "3", T0 + 2);
    d2.meta = Meta::raw(EventKind::RiskDecision, "risk", "i1-again", T0 + 2, T0 + 2);
    d2.verdict = Verdict::Resized;
    assert!(run(&mut p, &clock, &dec_event(d2)).is_empty());
    assert_eq!(p.open_orders().len(), 1);
    let u = updates(&run(&mut p, &clock, &trade(T0 + 3, "100", "10")));
    assert_eq!(u.len(), 1);
    assert_eq!(u[0].filled_quantity, Dec(d("1")));
    // Even after the order is done.
    assert!(run(&mut p, &clock, &dec_event(d1)).is_empty());
    assert_eq!(p.trades().len(), 1);
    // Another agent's intent with the same id is another order.
    let mut other = decision("i1", OrderSide::Buy, "1", T0 + 4);
    other.agent = "a2".into();
    assert_eq!(updates(&run(&mut p, &clock, &dec_event(other))).len(), 2);
    assert_ne!(client_order_id("a1", "i1"), client_order_id("a2", "i1"));
    assert_eq!(client_order_id("a1", "i1"), client_order_id("a1", "i1"));
    assert_eq!(client_order_id("a1", "i1").len(), 35);
    // A rejected decision makes no order.
    let mut r = decision("i9", OrderSide::Buy, "1", T0 + 5);
    (r.verdict, r.approved_quantity) = (Verdict::Rejected, None);
    assert!(run(&mut p, &clock, &dec_event(r)).is_empty());
}

#[test]
fn lifecycle_rejects_and_expires() {
    let cfg = ExecutionConfig {
        allow_short: false,
        order_ttl_secs: Some(60),
        ..frictionless()
    };
    let mut p = ExecutionProcessor::new(cfg).expect("config");
    let clock = SimClock::new(T0);
    // Selling what is not held: new, then rejected.
    let u = updates(&run(
        &mut p,
        &clock,
        &dec_event(decision("s", OrderSide::Sell, "1", T0 + 1)),
    ));
    assert_eq!(
        u.iter().map(|u| u.status).collect::<Vec<_>>(),
        vec![OrderStatus::New, OrderStatus::Rejected]
    );
    assert!(u[1]
        .reason
        .as_deref()
        .unwrap_or("")
        .contains("insufficient position"));
    // An approved decision without a quantity: rejected.
    let mut bad = decision("q", OrderSide::Buy, "1", T0 + 2);
    bad.approved_quantity = None;
    let u = updates(&run(&mut p, &clock, &dec_event(bad)));
    assert_eq!(u[1].status, OrderStatus::Rejected);
    // Placed, no price for 60 s: cancelled as expired on the market clock.
    run(
        &mut p,
        &clock,
        &dec_event(decision("b", OrderSide::Buy, "1", T0 + 3)),
    );
    let mut quiet = trade(T0 + 50_000_000, "1", "1");
    if let AnyEvent::TradeTick(t) = &mut quiet {
        t.symbol = "ETHUSD".into();
    }
    assert!(updates(&run(&mut p, &clock, &quiet)).is_empty());
    let mut later = trade(T0 + 63_000_000, "1", "1");
    if let AnyEvent::TradeTick(t) = &mut later {
        t.symbol = "ETHUSD".into();
    }
    let u = updates(&run(&mut p, &clock, &later));
    assert_eq!(u.len(), 1);
    assert_eq!(u[0].status, OrderStatus::Cancelled);
    assert!(u[0].reason.as_deref().unwrap_or("").starts_with("expired"));
    assert!(p.open_orders().is_empty());
}

#[test]
fn portfolio_pnl_by_hand() {
    // Buy 2 @ 100, buy 2 @ 110 -> 4 @ avg 105. Marked at 120: unrealised 4 * 15 = 60.
    // Sell 3 @ 120: realised 3 * (120 - 105) = 45; 1 left @ 105.
    // Marked at 100: unrealised 1 * (100 - 105) = -5.
    // Cash = 100000 - 200 - 220 + 360 = 99940; equity = 99940 + 100 = 100040 = 100000 + 45 - 5.
    let mut p = ExecutionProcessor::new(frictionless()).expect("config");
    let clock = SimClock::new(T0);
    run(
        &mut p,
        &clock,
        &dec_event(decision("b1", OrderSide::Buy, "2", T0 + 1)),
    );
    run(&mut p, &clock, &trade(T0 + 2, "100", "10"));
    run(
        &mut p,
        &clock,
        &dec_event(decision("b2", OrderSide::Buy, "2", T0 + 3)),
    );
    run(&mut p, &clock, &trade(T0 + 4, "110", "10"));
    run(&mut p, &clock, &trade(T0 + 5, "120", "10"));
    assert_eq!(p.portfolio().unrealized_pnl(), d("60"));
    assert_eq!(p.portfolio().positions["BTCUSD"].avg_price, d("105"));
    run(
        &mut p,
        &clock,
        &dec_event(decision("s1", OrderSide::Sell, "3", T0 + 6)),
    );
    run(&mut p, &clock, &trade(T0 + 7, "120", "10"));
    run(&mut p, &clock, &trade(T0 + 8, "100", "10"));
    let s = snapshots(&p.finish(&clock)).pop().expect("final snapshot");
    assert_eq!(s.account, "paper");
    assert_eq!(s.cash, Dec(d("99940")));
    assert_eq!(s.equity, Dec(d("100040")));
    assert_eq!(s.realized_pnl, Dec(d("45")));
    assert_eq!(s.unrealized_pnl, Dec(d("-5")));
    assert_eq!(s.positions.len(), 1);
    let pos = &s.positions[0];
    assert_eq!(
        (pos.quantity, pos.avg_price, pos.market_price, pos.unrealized_pnl),
        (Dec(d("1")), Dec(d("105")), Dec(d("100")), Dec(d("-5")))
    );
    AnyEvent::PortfolioSnapshot(s).encode().expect("snapshot encodes");
}

#[test]
fn performance_figures_by_hand() {
    // Yearly samples 100, 110, 99, 118.8: returns 0.1, -0.1, 0.2.
    //   total return 0.188; CAGR 1.188^(1/3) - 1 = 0.0591045006 (3 years of 365.25 days)
    //   mean 0.0666667, sd = sqrt(((1/30)^2 + (1/6)^2 + (2/15)^2) / 2) = 0.1527525232
    //   P = 1: volatility 0.1527525232, Sharpe 0.0666667 / 0.1527525 = 0.4364357805
    //   downside dev = sqrt(0.01 / 3) = 0.0577350269 -> Sortino 1.1547005384
    //   max drawdown: peak 110 -> 99 = 0.1; Calmar = 0.0591045006 / 0.1 = 0.591045006
    // Exposure 0, 50, 50, 0 -> mean of 0, 50/110, 50/99, 0 = 0.2398989899; in market 2 of 4.
    // Trades: notionals 50 + 60 + 20 = 130, mean equity 106.95 -> turnover 1.2155212716;
    //   closing trades +10 and -2 -> win rate 0.5.
    let e = [
        (0, 100.0, 0.0),
        (1, 110.0, 50.0),
        (2, 99.0, 50.0),
        (3, 118.8, 0.0),
    ];
    let curve: Vec<EquityPoint> = e
        .iter()
        .map(|(i, eq, ex)| EquityPoint {
            ts: T0 + i * YEAR,
            equity: *eq,
            exposure: *ex,
        })
        .collect();
    let tr = |side, q: &str, p: &str, r: Option<&str>| TradeRecord {
        ts: T0,
        client_order_id: "c".into(),
        symbol: "BTCUSD".into(),
        side,
        quantity: d(q),
        price: d(p),
        fee: Decimal::ZERO,
        realized_pnl: r.map(d),
    };
    let trades = vec![
        tr(OrderSide::Buy, "1", "50", None),
        tr(OrderSide::Sell, "1", "60", Some("10")),
        tr(OrderSide::Sell, "0.5", "40", Some("-2")),
    ];
    let cfg = PerformanceConfig {
        periods_per_year: 1.0,
        risk_free_rate: 0.0,
    };
    let f = performance(&curve, &trades, &cfg);
    let get = |x: Option<f64>| x.expect("defined");
    assert!(close(get(f.total_return), 0.188, 1e-12), "{f:?}");
    assert!(close(get(f.cagr), 0.0591045005978188, 1e-12), "{f:?}");
    assert!(
        close(get(f.annual_volatility), 0.15275252316519464, 1e-12),
        "{f:?}"
    );
    assert!(close(get(f.sharpe), 0.436435780471985, 1e-12), "{f:?}");
    assert!(close(get(f.sortino), 1.1547005383792524, 1e-12), "{f:?}");
    assert!(close(get(f.max_drawdown), 0.1, 1e-12), "{f:?}");
    assert!(close(get(f.calmar), 0.591045005978188, 1e-11), "{f:?}");
    assert!(close(get(f.win_rate), 0.5, 1e-15));
    assert!(close(get(f.turnover), 1.2155212716222534, 1e-12), "{f:?}");
    assert!(close(get(f.exposure), 0.2398989898989899, 1e-12), "{f:?}");
    assert!(close(get(f.time_in_market), 0.5, 1e-15));
    assert_eq!((f.trades, f.closing_trades, f.samples), (3, 2, 4));
    // With a 3% risk-free rate: Sharpe (0.0666667 - 0.03) / 0.1527525 = 0.2400396793,
    // Sortino: downside of r - 0.03 = [0, -0.13, 0] -> sqrt(0.0169 / 3) -> 0.4885271509.
    let rf = performance(
        &curve,
        &trades,
        &PerformanceConfig {
            risk_free_rate: 0.03,
            ..cfg
        },
    );
    assert!(close(get(rf.sharpe), 0.24003967925959158, 1e-12), "{rf:?}");
    assert!(close(get(rf.sortino), 0.4885271508527602, 1e-12), "{rf:?}");
    // Annualising hourly samples multiplies by sqrt(P).
    let hourly = performance(
        &curve,
        &trades,
        &PerformanceConfig {
            periods_per_year: 8766.0,
            ..cfg
        },
    );
    assert!(close(
        get(hourly.sharpe),
        0.436435780471985 * 8766f64.sqrt(),
        1e-9
    ));
    // Undefined figures are absent, not NaN.
    let one = performance(&curve[..1], &[], &cfg);
    assert_eq!((one.sharpe, one.win_rate, one.cagr), (None, None, None));
    let m = one.to_map();
    assert!(!m.contains_key("sharpe") && m["samples"] == 1.0);
}

#[test]
fn snapshots_carry_the_same_figures_as_the_report() {
    let cfg = ExecutionConfig {
        snapshot_interval_secs: 3600,
        ..ExecutionConfig::default()
    };
    let go = || {
        let mut p = ExecutionProcessor::new(cfg.clone()).expect("config");
        let clock = SimClock::new(T0);
        let mut out = Vec::new();
        let prices = ["100", "102", "99", "104", "101", "107", "103", "108"];
        for (i, px) in prices.iter().enumerate() {
            let i = i as i64;
            out.extend(run(&mut p, &clock, &bar(i, px, px)));
            let side = if i % 2 == 0 {
                OrderSide::Buy
            } else {
                OrderSide::Sell
            };
            out.extend(run(
                &mut p,
                &clock,
                &dec_event(decision(&format!("i{i}"), side, "10", T0 + (i + 1) * H - 1)),
            ));
        }
        out.extend(p.finish(&clock));
        (p, out)
    };
    let (p, out) = go();
    let last = snapshots(&out).pop().expect("snapshots");
    let ppy = 365.25 * 24.0;
    let report = performance(
        p.equity_curve(),
        p.trades(),
        &PerformanceConfig {
            periods_per_year: ppy,
            risk_free_rate: 0.0,
        },
    );
    assert_eq!(last.performance, report.to_map());
    assert_eq!(p.equity_curve().len(), 8, "one sample per hourly bar");
    assert!(p.trades().len() >= 6);
    assert!(last.performance.contains_key("sharpe"));
    // Deterministic: the same input gives the same events, ids included.
    let (_, again) = go();
    let j = |v: &[AnyEvent]| v.iter().map(|e| e.to_json().to_string()).collect::<Vec<_>>();
    assert_eq!(j(&out), j(&again));
    for e in &out {
        e.encode().expect("every output encodes");
    }
}

#[test]
fn fills_are_copied_to_exec_fills() {
    let mut p = ExecutionProcessor::new(frictionless()).expect("config");
    let clock = SimClock::new(T0);
    let accepted = run(
        &mut p,
        &clock,
        &dec_event(decision("i1", OrderSide::Buy, "1", T0 + 1)),
    );
    assert!(accepted.iter().all(|e| fill_message(e).is_none()));
    let out = run(&mut p, &clock, &trade(T0 + 2, "100", "5"));
    let fill = out
        .iter()
        .find(|e| matches!(e, AnyEvent::OrderUpdate(_)))
        .expect("fill");
    let m = fill_message(fill).expect("a fill").expect("encodes");
    assert_eq!(m.topic, "exec.fills");
    assert_eq!(m.id, format!("{}@exec.fills", fill.meta().event_id));
    assert_eq!(m.key.as_deref(), Some("BTCUSD"));
    assert_eq!(&AnyEvent::decode(&m.payload).expect("decodes"), fill);
    let orders = auroraq_stage::to_message(fill).expect("encodes");
    assert_eq!(orders.topic, "exec.orders");
    assert_ne!(
        orders.id, m.id,
        "ids de-duplicate across topics: the copy needs its own"
    );
}

// ---- Binance ----

const DOC_KEY: &str = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A";
const DOC_SECRET: &str = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j";

fn live(
    key: Option<&str>,
    secret: Option<&str>,
    on: bool,
    base: &str,
) -> Result<LiveTrading, LiveTradingError> {
    LiveTrading::new(LiveTradingConfig {
        enable_live_trading: on,
        api_key: key.map(str::to_owned),
        api_secret: secret.map(str::to_owned),
        base_url: base.to_owned(),
        ..LiveTradingConfig::default()
    })
}

#[test]
fn signature_matches_binance_documentation() {
    // The example of Binance's "SIGNED endpoint security" documentation.
    let q = "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559";
    let sig = "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71";
    assert_eq!(sign(DOC_SECRET, q), sig);
    let lt = live(Some(DOC_KEY), Some(DOC_SECRET), true, TESTNET_BASE_URL).expect("switched on");
    let client = BinanceOrderClient::new(lt).expect("client");
    let params = [
        ("symbol", "LTCBTC".to_owned()),
        ("side", "BUY".to_owned()),
        ("type", "LIMIT".to_owned()),
        ("timeInForce", "GTC".to_owned()),
        ("quantity", "1".to_owned()),
        ("price", "0.1".to_owned()),
    ];
    assert_eq!(
        client.signed_query(&params, 1_499_827_319_559),
        format!("{q}&signature={sig}")
    );
}

#[test]
fn the_live_switch_refuses_without_keys_or_switch() {
    let refused = |r: Result<LiveTrading, LiveTradingError>| match r {
        Err(LiveTradingError::Refused { missing }) => missing,
        other => panic!("expected a refusal, got {other:?}"),
    };
    let all = refused(LiveTrading::new(LiveTradingConfig::default()));
    assert_eq!(
        all,
        vec![
            "api_key is missing",
            "api_secret is missing",
            "enable_live_trading is not true"
        ]
    );
    assert_eq!(
        refused(live(Some("k"), None, false, TESTNET_BASE_URL)),
        vec!["api_secret is missing", "enable_live_trading is not true"]
    );
    assert_eq!(
        refused(live(Some("k"), Some("s"), false, TESTNET_BASE_URL)),
        vec!["enable_live_trading is not true"]
    );
    assert_eq!(
        refused(live(None, Some("s"), true, TESTNET_BASE_URL)),
        vec!["api_key is missing"]
    );
    assert_eq!(
        refused(live(Some("  "), Some("s"), true, TESTNET_BASE_URL)),
        vec!["api_key is missing"]
    );
    let msg = LiveTrading::new(LiveTradingConfig::default())
        .expect_err("refused")
        .to_string();
    assert!(
        msg.starts_with("live trading refused: api_key is missing"),
        "{msg}"
    );
    // Switched on with both: allowed, on the testnet by default.
    assert_eq!(
        LiveTradingConfig::default().base_url,
        "https://testnet.binance.vision"
    );
    let cfg = LiveTradingConfig {
        enable_live_trading: true,
        api_key: Some("KEY-abc123".into()),
        api_secret: Some("SECRET-xyz789".into()),
        ..LiveTradingConfig::default()
    };
    let shown = format!("{cfg:?}");
    let lt = LiveTrading::new(cfg).expect("allowed");
    assert!(lt.is_testnet());
    let client = BinanceOrderClient::new(lt.clone()).expect("client");
    for text in [shown, format!("{lt:?}"), format!("{client:?}")] {
        assert!(
            !text.contains("KEY-abc123") && !text.contains("SECRET-xyz789"),
            "{text}"
        );
    }
    assert!(matches!(
        live(Some("k"), Some("s"), true, "ftp://x"),
        Err(LiveTradingError::BadBaseUrl(_))
    ));
}

async fn loopback() -> (BinanceOrderServer, BinanceOrderClient) {
    let server = BinanceOrderServer::start(OrderServerConfig::default()).await;
    let c = server.config().clone();
    let lt = live(Some(&c.api_key), Some(&c.api_secret), true, &server.base_url()).expect("switched on");
    let client = BinanceOrderClient::new(lt).expect("client");
    (server, client)
}

fn market(coid: &str, qty: &str) -> NewOrder {
    NewOrder {
        symbol: "BTCUSDT".into(),
        side: OrderSide::Buy,
        order_type: OrderType::Market,
        quantity: d(qty),
        client_order_id: coid.into(),
    }
}

#[tokio::test]
async fn orders_round_trip_against_the_loopback_server() {
    let (server, client) = loopback().await;
    // MARKET: filled at the server's price, with the fill and its commission.
    let o = client
        .place_order(&market("aq-1", "0.002"))
        .await
        .expect("placed");
    assert_eq!(
        (o.venue_status.as_str(), o.status),
        ("FILLED", OrderStatus::Filled)
    );
    assert_eq!((o.client_order_id.as_str(), o.executed_qty), ("aq-1", d("0.002")));
    assert_eq!(o.fills.len(), 1);
    assert_eq!((o.fills[0].price, o.fills[0].qty), (d("50000.00"), d("0.002")));
    assert_eq!(o.fills[0].commission, d("0.1"));
    assert_eq!(o.avg_price(), Some(d("50000")));
    let r = &server.requests()[0];
    assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/api/v3/order"));
    assert!(
        r.signature_ok,
        "the server verified the signature with the same secret"
    );
    assert_eq!(r.api_key.as_deref(), Some("test-key-5f1c"));
    for (k, v) in [
        ("newClientOrderId", "aq-1"),
        ("type", "MARKET"),
        ("side", "BUY"),
        ("quantity", "0.002"),
        ("recvWindow", "5000"),
    ] {
        assert_eq!(r.params.get(k).map(String::as_str), Some(v), "{k}");
    }
    assert!(r
        .query
        .ends_with(&format!("&signature={}", r.params["signature"])));
    // Query it back.
    let q = client.query_order("BTCUSDT", "aq-1").await.expect("query");
    assert_eq!((q.status, q.order_id), (OrderStatus::Filled, o.order_id));
    // LIMIT: resting (NEW = accepted); then cancelled.
    let mut lim = market("aq-2", "1");
    lim.order_type = OrderType::Limit { price: d("42000.5") };
    let o2 = client.place_order(&lim).await.expect("placed");
    assert_eq!(
        (o2.status, o2.executed_qty),
        (OrderStatus::Accepted, Decimal::ZERO)
    );
    let lr = server.requests().last().cloned().expect("request");
    assert_eq!(
        (lr.params["price"].as_str(), lr.params["timeInForce"].as_str()),
        ("42000.5", "GTC")
    );
    let c = client.cancel_order("BTCUSDT", "aq-2").await.expect("cancelled");
    assert_eq!(
        (c.status, c.client_order_id.as_str()),
        (OrderStatus::Cancelled, "aq-2")
    );
    // A duplicate client order id is refused as Binance does (-2010), and recognised.
    let e = client
        .place_order(&market("aq-1", "0.002"))
        .await
        .expect_err("duplicate");
    assert!(e.is_duplicate(), "{e}");
    assert_eq!(e.code(), Some(-2010));
    assert_eq!(server.orders().len(), 2);
    // A -2010 rejection (insufficient balance) is a rejection, not a duplicate.
    server.cue(OrderCue::Reject {
        code: -2010,
        msg: "Account has insufficient balance for requested action.".into(),
    });
    let e = client
        .place_order(&market("aq-3", "100"))
        .await
        .expect_err("rejected");
    assert!(
        matches!(e, BinanceOrderError::Rejected { code: -2010, .. }) && !e.is_duplicate(),
        "{e}"
    );
    // Unknown orders.
    let e = client.query_order("BTCUSDT", "nope").await.expect_err("unknown");
    assert_eq!(e.code(), Some(-2013));
    // A 5xx leaves the outcome unknown.
    server.cue(OrderCue::Status {
        status: 503,
        retry_after: None,
    });
    let e = client.place_order(&market("aq-4", "1")).await.expect_err("5xx");
    assert!(matches!(e, BinanceOrderError::Unknown { status: 503, .. }), "{e}");
    assert!(server.requests().iter().all(|r| r.signature_ok));
}

#[tokio::test]
async fn a_wrong_secret_fails_the_signature_check() {
    let server = BinanceOrderServer::start(OrderServerConfig::default()).await;
    let key = server.config().api_key.clone();
    let lt = live(Some(&key), Some("not-the-secret"), true, &server.base_url()).expect("switched on");
    let client = BinanceOrderClient::new(lt).expect("client");
    let e = client
        .place_order(&market("aq-x", "1"))
        .await
        .expect_err("bad signature");
    assert!(
        matches!(
            e,
            BinanceOrderError::Api {
                status: 400,
                code: -1022,
                ..
            }
        ),
        "{e}"
    );
    assert!(!server.requests()[0].signature_ok);
    assert!(server.orders().is_empty());
    assert!(!e.to_string().contains("not-the-secret"));
}

#[tokio::test]
async fn rate_limits_pause_the_client() {
    let (server, client) = loopback().await;
    server.cue(OrderCue::Status {
        status: 429,
        retry_after: Some(1),
    });
    let e = client.place_order(&market("aq-r", "1")).await.expect_err("429");
    assert!(
        matches!(e, BinanceOrderError::RateLimited { status: 429, retry_after, .. } if retry_after == Duration::from_secs(1)),
        "{e}"
    );
    // Refused at once, without a request, while the pause lasts.
    let before = server.requests().len();
    let e = client
        .place_order(&market("aq-r", "1"))
        .await
        .expect_err("paused");
    assert!(
        matches!(e, BinanceOrderError::RateLimited { status: 429, .. }),
        "{e}"
    );
    assert_eq!(server.requests().len(), before);
    assert!(client.blocked_for().is_some());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let o = client
        .place_order(&market("aq-r", "1"))
        .await
        .expect("after the pause");
    assert_eq!(o.status, OrderStatus::Filled);
    // 418 (IP ban) likewise.
    server.cue(OrderCue::Status {
        status: 418,
        retry_after: Some(1),
    });
    let e = client.query_order("BTCUSDT", "aq-r").await.expect_err("418");
    assert!(
        matches!(e, BinanceOrderError::RateLimited { status: 418, .. }),
        "{e}"
    );
}

#[tokio::test]
async fn live_execution_places_one_order_per_intent() {
    let (server, client) = loopback().await;
    let mut ex = LiveExecution::new(client, "execution");
    let mut dcs = decision("live-1", OrderSide::Buy, "0.002", T0);
    dcs.symbol = "BTC-USDT".into();
    let out = ex
        .handle(AnyEvent::RiskDecision(dcs.clone()))
        .await
        .expect("placed");
    let u = updates(&out);
    let st: Vec<OrderStatus> = u.iter().map(|u| u.status).collect();
    assert_eq!(
        st,
        vec![OrderStatus::New, OrderStatus::Accepted, OrderStatus::Filled]
    );
    assert_eq!(u[2].last_fill_price, Some(Dec(d("50000"))));
    assert_eq!(
        (u[2].fee, u[2].fee_asset.as_deref()),
        (Some(Dec(d("0.1"))), Some("USDT"))
    );
    assert_eq!(u[2].venue, "binance");
    let first_fill_id = Some(u[2].meta.event_id.clone());
    assert_eq!(u[0].client_order_id, client_order_id("a1", "live-1"));
    assert_eq!(server.requests()[0].params["symbol"], "BTCUSDT");
    // The same decision again (redelivered: its outputs may not have been published): nothing
    // sent, the same updates, with the same ids, reported again.
    let again = updates(&ex.handle(AnyEvent::RiskDecision(dcs.clone())).await.expect("ok"));
    let ids = |u: &[OrderUpdate]| u.iter().map(|u| u.meta.event_id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&again), ids(&u));
    assert_eq!(server.requests().len(), 1);
    // A restarted stage (no memory) sends it, Binance refuses the duplicate, and the existing
    // order is reported: still one order.
    let c = server.config().clone();
    let lt = live(Some(&c.api_key), Some(&c.api_secret), true, &server.base_url()).expect("on");
    let mut fresh = LiveExecution::new(BinanceOrderClient::new(lt).expect("client"), "execution");
    let u = updates(&fresh.handle(AnyEvent::RiskDecision(dcs)).await.expect("reported"));
    assert_eq!(
        u.last().map(|u| (u.status, u.filled_quantity)),
        Some((OrderStatus::Filled, Dec(d("0.002"))))
    );
    assert_eq!(server.orders().len(), 1);
    let methods: Vec<(String, String)> = server
        .requests()
        .iter()
        .map(|r| (r.method.clone(), r.path.clone()))
        .collect();
    // The query's answer has no fills: the order's trades give the fill its trade id.
    assert_eq!(
        methods,
        vec![
            ("POST".into(), "/api/v3/order".into()),
            ("POST".into(), "/api/v3/order".into()),
            ("GET".into(), "/api/v3/order".into()),
            ("GET".into(), "/api/v3/myTrades".into()),
        ]
    );
    // The same fill id as the first answer's: one fill downstream.
    assert_eq!(u.last().map(|u| u.meta.event_id.clone()), first_fill_id);
    // A venue rejection becomes a rejected order update; a rate limit is a transient error.
    server.cue(OrderCue::Reject {
        code: -2010,
        msg: "Account has insufficient balance for requested action.".into(),
    });
    let u = updates(
        &ex.handle(AnyEvent::RiskDecision(decision(
            "live-2",
            OrderSide::Buy,
            "9",
            T0,
        )))
        .await
        .expect("ok"),
    );
    assert_eq!(u.last().map(|u| u.status), Some(OrderStatus::Rejected));
    assert!(u
        .last()
        .and_then(|u| u.reason.clone())
        .unwrap_or_default()
        .contains("insufficient balance"));
    server.cue(OrderCue::Status {
        status: 429,
        retry_after: Some(1),
    });
    let r = ex
        .handle(AnyEvent::RiskDecision(decision(
            "live-3",
            OrderSide::Buy,
            "1",
            T0,
        )))
        .await;
    assert!(matches!(r, Err(auroraq_stage::HandlerError::Transient(_))));
}
