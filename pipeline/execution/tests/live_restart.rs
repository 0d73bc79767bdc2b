//! Live execution across restarts, against the loopback Binance order server: the journal
//! written before each order is sent, and reconciliation with the venue at start (open orders,
//! the state of orders whose answer was never seen, fills since) and on later polls.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use auroraq_execution::{
    client_order_id, BinanceOrderClient, LiveExecution, LiveTrading, LiveTradingConfig, NewOrder, OrderType,
};
use auroraq_schemas::{
    AnyEvent, Dec, EventKind, Meta, Micros, OrderSide, OrderStatus, OrderUpdate, RiskDecision, Verdict,
};
use auroraq_stage::{Handler, HandlerError};
use auroraq_tests::binance_orders::{BinanceOrderServer, OrderCue, OrderServerConfig};
use rust_decimal::Decimal;

const T0: Micros = 1_699_920_000_000_000;

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn decision(intent: &str, qty: &str) -> RiskDecision {
    RiskDecision {
        meta: Meta::raw(EventKind::RiskDecision, "risk", intent, T0, T0),
        intent_id: intent.into(),
        agent: "a1".into(),
        symbol: "BTC-USDT".into(),
        side: OrderSide::Buy,
        verdict: Verdict::Approved,
        approved_quantity: Some(Dec(d(qty))),
        reason: "ok".into(),
        checks: Default::default(),
    }
}

fn client(cfg: &OrderServerConfig, base_url: &str) -> BinanceOrderClient {
    let lt = LiveTrading::new(LiveTradingConfig {
        enable_live_trading: true,
        api_key: Some(cfg.api_key.clone()),
        api_secret: Some(cfg.api_secret.clone()),
        base_url: base_url.to_owned(),
        timeout_secs: 2,
        ..LiveTradingConfig::default()
    })
    .expect("switched on");
    BinanceOrderClient::new(lt).expect("client")
}

fn stage(cfg: &OrderServerConfig, base_url: &str, journal: &Path) -> LiveExecution {
    LiveExecution::new(client(cfg, base_url), "execution")
        .with_venue("binance-testnet")
        .with_journal(journal)
        .expect("journal")
}

fn updates(out: &[AnyEvent]) -> Vec<OrderUpdate> {
    out.iter()
        .filter_map(|e| match e {
            AnyEvent::OrderUpdate(u) => Some(u.clone()),
            _ => None,
        })
        .collect()
}

fn of<'a>(u: &'a [OrderUpdate], coid: &str) -> Vec<&'a OrderUpdate> {
    u.iter().filter(|u| u.client_order_id == coid).collect()
}

/// The id the update reporting `disc` of `d`'s order has, whoever reports it.
fn update_id(d: &RiskDecision, disc: &str) -> String {
    let coid = client_order_id(&d.agent, &d.intent_id);
    Meta::derived(
        EventKind::OrderUpdate,
        "execution",
        &[&d.meta],
        &format!("{disc}|{coid}"),
        0,
        0,
    )
    .event_id
}

#[tokio::test]
async fn a_restart_mid_order_reconciles_open_orders_and_fills_since() {
    let server = BinanceOrderServer::start(OrderServerConfig::default()).await;
    let cfg = server.config().clone();
    let dir = tempfile::tempdir().expect("tempdir");
    let journal = dir.path().join("state").join("execution-binance-testnet.json");
    let mut first = stage(&cfg, &server.base_url(), &journal);

    // A: a market order the venue leaves open (NEW), reported as accepted.
    let a = decision("r-1", "0.002");
    let a_id = client_order_id("a1", "r-1");
    server.cue(OrderCue::NoFill);
    let u = updates(
        &first
            .handle(AnyEvent::RiskDecision(a.clone()))
            .await
            .expect("placed"),
    );
    let st: Vec<OrderStatus> = u.iter().map(|u| u.status).collect();
    assert_eq!(st, vec![OrderStatus::New, OrderStatus::Accepted]);
    assert_eq!(u[0].venue, "binance-testnet");

    // B: taken by the venue (and filled), but the stage dies before the answer comes.
    let b = decision("r-2", "0.005");
    let b_id = client_order_id("a1", "r-2");
    server.cue(OrderCue::Stall);
    let crashed = tokio::time::timeout(
        Duration::from_millis(500),
        first.handle(AnyEvent::RiskDecision(b.clone())),
    )
    .await;
    assert!(crashed.is_err(), "the answer never came");
    drop(first);
    assert_eq!(server.orders()[&b_id]["status"], "FILLED", "the venue has it");

    // The journal on disk holds both orders, B with its outcome unknown, and no credentials.
    let text = std::fs::read_to_string(&journal).expect("journal written");
    assert!(
        !text.contains(&cfg.api_key) && !text.contains(&cfg.api_secret),
        "{text}"
    );
    let j: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert!(j["open"][&a_id]["venue_order_id"].is_i64(), "{text}");
    assert!(j["open"][&b_id]["venue_order_id"].is_null(), "{text}");

    // While it is down, A fills in part, and someone places an order by hand.
    server.fill(&a_id, "0.001", "50100.00");
    let hand = client(&cfg, &server.base_url());
    server.cue(OrderCue::NoFill);
    hand.place_order(&NewOrder {
        symbol: "BTCUSDT".into(),
        side: OrderSide::Sell,
        order_type: OrderType::Limit { price: d("99000") },
        quantity: d("1"),
        client_order_id: "by-hand-1".into(),
    })
    .await
    .expect("placed by hand");

    // Restart: reconciliation reports what was missed, without sending an order.
    let before = server.requests().len();
    let mut second = stage(&cfg, &server.base_url(), &journal);
    assert_eq!(second.journal().open.len(), 2, "read back from the file");
    let u = updates(&second.reconcile().await.expect("reconciled"));
    let seen: Vec<(String, String)> = server.requests()[before..]
        .iter()
        .map(|r| (r.method.clone(), r.path.clone()))
        .collect();
    assert!(
        seen.iter().all(|(m, _)| m == "GET"),
        "nothing but queries: {seen:?}"
    );
    assert!(
        seen.contains(&("GET".into(), "/api/v3/openOrders".into())),
        "{seen:?}"
    );
    assert!(seen.contains(&("GET".into(), "/api/v3/order".into())), "{seen:?}");
    assert!(
        seen.contains(&("GET".into(), "/api/v3/myTrades".into())),
        "{seen:?}"
    );
    assert!(server.requests()[before..].iter().all(|r| r.signature_ok));

    // B: new, accepted, filled, as the lost answer would have said, with the same ids.
    let ub = of(&u, &b_id);
    let st: Vec<OrderStatus> = ub.iter().map(|u| u.status).collect();
    assert_eq!(
        st,
        vec![OrderStatus::New, OrderStatus::Accepted, OrderStatus::Filled]
    );
    let b_venue_id = server.orders()[&b_id]["orderId"].as_i64().expect("id");
    let trade = server
        .trades()
        .into_iter()
        .find(|t| t["orderId"].as_i64() == Some(b_venue_id))
        .expect("B's trade");
    let trade_id = trade["id"].as_i64().expect("trade id");
    assert_eq!(ub[2].meta.event_id, update_id(&b, &format!("fill|{trade_id}")));
    assert_eq!(ub[0].meta.event_id, update_id(&b, "new"));
    assert_eq!(
        (
            ub[2].filled_quantity,
            ub[2].last_fill_price,
            ub[2].fee_asset.as_deref()
        ),
        (Dec(d("0.005")), Some(Dec(d("50000.00"))), Some("USDT"))
    );
    assert_eq!(ub[2].venue_order_id, Some(b_venue_id.to_string()));
    // A: the fill made while the stage was down, and nothing it had reported already.
    let ua = of(&u, &a_id);
    assert_eq!(ua.len(), 1, "{ua:?}");
    assert_eq!(
        (ua[0].status, ua[0].filled_quantity, ua[0].last_fill_price),
        (
            OrderStatus::PartiallyFilled,
            Dec(d("0.001")),
            Some(Dec(d("50100.00")))
        )
    );
    // The order placed by hand is left alone and not reported.
    assert!(of(&u, "by-hand-1").is_empty());
    assert_eq!(server.orders()["by-hand-1"]["status"], "NEW");
    // B is done; A is still open.
    let open: Vec<&String> = second.journal().open.keys().collect();
    assert_eq!(open, vec![&a_id]);

    // B's decision comes back (it was never acked): no second order, the same updates again.
    let posts = |s: &BinanceOrderServer| s.requests().iter().filter(|r| r.method == "POST").count();
    let posted = posts(&server);
    let again = updates(
        &second
            .handle(AnyEvent::RiskDecision(b.clone()))
            .await
            .expect("ok"),
    );
    assert_eq!(posts(&server), posted);
    let ids = |u: &[&OrderUpdate]| u.iter().map(|u| u.meta.event_id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&again.iter().collect::<Vec<_>>()), ids(&ub));
    assert_eq!(
        server.orders().len(),
        3,
        "A, B and the order by hand: nothing twice"
    );

    // The rest of A fills; the next poll reports it, and A leaves the journal.
    server.fill(&a_id, "0.001", "50200.00");
    let u = updates(&second.poll().await.expect("polled"));
    assert_eq!(
        u.iter()
            .map(|u| (u.status, u.filled_quantity))
            .collect::<Vec<_>>(),
        vec![(OrderStatus::Filled, Dec(d("0.002")))]
    );
    assert!(second.journal().open.is_empty());
    // Nothing open: a poll asks nothing.
    let n = server.requests().len();
    assert!(second.poll().await.expect("polled").is_empty());
    assert_eq!(server.requests().len(), n);
    // And a third start finds nothing to report.
    let mut third = stage(&cfg, &server.base_url(), &journal);
    assert!(third.reconcile().await.expect("reconciled").is_empty());
    assert!(
        third
            .handle(AnyEvent::RiskDecision(a))
            .await
            .expect("ok")
            .is_empty(),
        "a done order's decision places nothing after a restart"
    );
    assert_eq!(posts(&server), posted);
}

#[tokio::test]
async fn an_order_that_never_reached_the_venue_is_placed_when_its_decision_comes_back() {
    let cfg = OrderServerConfig::default();
    let dir = tempfile::tempdir().expect("tempdir");
    let journal = dir.path().join("j.json");
    // The venue is unreachable: the order is journaled, its outcome unknown, the decision retried.
    let nowhere = format!("http://127.0.0.1:{}", auroraq_tests::free_port());
    let mut first = stage(&cfg, &nowhere, &journal);
    let dcs = decision("n-1", "0.003");
    let coid = client_order_id("a1", "n-1");
    let r = first.handle(AnyEvent::RiskDecision(dcs.clone())).await;
    assert!(matches!(r, Err(HandlerError::Transient(_))), "{r:?}");
    assert!(first.journal().open.contains_key(&coid));
    drop(first);

    let server = BinanceOrderServer::start(cfg.clone()).await;
    let mut second = stage(&cfg, &server.base_url(), &journal);
    let u = second.reconcile().await.expect("reconciled");
    assert!(u.is_empty(), "{u:?}");
    assert!(second.journal().open.is_empty(), "the venue does not know it");
    assert!(server.orders().is_empty());
    let u = updates(&second.handle(AnyEvent::RiskDecision(dcs)).await.expect("placed"));
    assert_eq!(u.last().map(|u| u.status), Some(OrderStatus::Filled));
    assert_eq!(server.orders().len(), 1);
    assert!(server.orders().contains_key(&coid));
}
