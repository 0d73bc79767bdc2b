//! The Redis sink against the real Redis (`AURORAQ_TEST_REDIS_URL`, default
//! redis://127.0.0.1:6379; every test under its own key prefix, deleted at the end): latest
//! state that only moves forward in event time, a stream that holds each fused signal once,
//! whatever the order and however often events arrive, and Redis going away and coming back.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use auroraq_bus::Bus;
use auroraq_schemas::*;
use auroraq_sink_redis::{run_subscriptions, subscribe, Keys, RedisSink, RedisSinkConfig, RedisSinkMetrics};
use auroraq_stage::to_message;
use auroraq_tests::proxy::Proxy;
use auroraq_tests::{inproc_bus, unique, wait_until};
use redis::aio::MultiplexedConnection;
use tokio_util::sync::CancellationToken;

fn redis_url() -> String {
    std::env::var("AURORAQ_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

async fn conn() -> MultiplexedConnection {
    redis::Client::open(redis_url().as_str())
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("Redis must run at {} for these tests: {e}", redis_url()))
}

/// Deletes every key under the prefix.
async fn clear(prefix: &str) {
    let mut c = conn().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut c)
        .await
        .expect("KEYS");
    if !keys.is_empty() {
        let _: i64 = redis::cmd("DEL")
            .arg(&keys)
            .query_async(&mut c)
            .await
            .expect("DEL");
    }
}

fn cfg(prefix: &str) -> RedisSinkConfig {
    let mut c = RedisSinkConfig::new(redis_url());
    c.key_prefix = prefix.to_owned();
    c.group = unique("sinkredis");
    c.state_ttl = Duration::from_secs(600);
    c.dedup_ttl = Duration::from_secs(600);
    c.batch_max = 64;
    c.batch_delay = Duration::from_millis(10);
    c.backoff_min = Duration::from_millis(50);
    c.backoff_max = Duration::from_millis(400);
    c
}

fn fused(asset: &str, ts: Micros, discriminator: &str, score: f64) -> AnyEvent {
    let mut f = match samples::all()
        .into_iter()
        .find(|e| e.kind() == EventKind::FusedSignal)
    {
        Some(AnyEvent::FusedSignal(f)) => f,
        _ => panic!("a fused sample"),
    };
    f.asset = asset.to_owned();
    f.fused_score = score;
    f.window_end = ts;
    f.meta = Meta::raw(
        EventKind::FusedSignal,
        "fusion",
        &format!("{asset}:{ts}:{discriminator}"),
        ts,
        ts + 5,
    );
    AnyEvent::FusedSignal(f)
}

fn trade(symbol: &str, seq: u64, ts: Micros, price: &str) -> AnyEvent {
    let mut t = samples::trade(seq);
    t.symbol = symbol.to_owned();
    t.price = Dec::parse(price).expect("price");
    t.meta = Meta::raw(
        EventKind::TradeTick,
        "binance",
        &format!("{symbol}:{seq}"),
        ts,
        ts,
    );
    AnyEvent::TradeTick(t)
}

fn kline(symbol: &str, ts: Micros, close: &str) -> AnyEvent {
    let mut k = match samples::all().into_iter().find(|e| e.kind() == EventKind::Kline) {
        Some(AnyEvent::Kline(k)) => k,
        _ => panic!("a kline sample"),
    };
    k.symbol = symbol.to_owned();
    k.close = Dec::parse(close).expect("close");
    k.meta = Meta::raw(
        EventKind::Kline,
        "binance",
        &format!("{symbol}:kline:{ts}"),
        ts,
        ts,
    );
    AnyEvent::Kline(k)
}

fn ticker(symbol: &str, ts: Micros, bid: &str, ask: &str) -> AnyEvent {
    let mut b = match samples::all()
        .into_iter()
        .find(|e| e.kind() == EventKind::BookTicker)
    {
        Some(AnyEvent::BookTicker(b)) => b,
        _ => panic!("a ticker sample"),
    };
    b.symbol = symbol.to_owned();
    b.bid_price = Dec::parse(bid).expect("bid");
    b.ask_price = Dec::parse(ask).expect("ask");
    b.meta = Meta::raw(
        EventKind::BookTicker,
        "binance",
        &format!("{symbol}:bt:{ts}"),
        ts,
        ts,
    );
    AnyEvent::BookTicker(b)
}

/// Fused signals of two assets (two with the same time for BTC: the larger id wins), trades and
/// klines of BTCUSDT, tickers of ETHUSDT, and events the sink keeps nothing of.
fn events() -> Vec<AnyEvent> {
    let t0 = 1_700_000_000_000_000i64;
    let s = 1_000_000i64;
    let mut v = Vec::new();
    for i in 0..20 {
        v.push(fused("BTC", t0 + i * 60 * s, "a", i as f64 / 20.0));
        v.push(fused("ETH", t0 + i * 61 * s, "a", -(i as f64) / 20.0));
    }
    v.push(fused("BTC", t0 + 19 * 60 * s, "b", 0.99));
    for i in 0..30u64 {
        v.push(trade(
            "BTCUSDT",
            i,
            t0 + i as i64 * 7 * s,
            &format!("{}.5", 64000 + i),
        ));
    }
    // A kline closing after the last trade: the latest price comes from it.
    v.push(kline("BTCUSDT", t0 + 30 * 7 * s, "64100.25"));
    for i in 0..10 {
        v.push(ticker(
            "ETHUSDT",
            t0 + i * s,
            &format!("{}", 3000 + i),
            &format!("{}", 3001 + i),
        ));
    }
    v.extend(samples::all().into_iter().filter(|e| {
        !matches!(
            e.kind(),
            EventKind::FusedSignal | EventKind::TradeTick | EventKind::Kline | EventKind::BookTicker
        )
    }));
    v
}

fn shuffled(mut v: Vec<AnyEvent>, seed: u64) -> Vec<AnyEvent> {
    let mut x = seed | 1;
    for i in (1..v.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
    v
}

/// Everything the sink keeps under a prefix, with the prefix taken off: hashes as maps, sets
/// sorted, the stream as the sorted list of event ids. TTLs are checked on the way.
async fn state(prefix: &str, ttl: Duration) -> BTreeMap<String, String> {
    let mut c = conn().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut c)
        .await
        .expect("KEYS");
    let mut out = BTreeMap::new();
    let mut marks = 0usize;
    for k in keys {
        let short = k.trim_start_matches(prefix).to_owned();
        let kind: String = redis::cmd("TYPE")
            .arg(&k)
            .query_async(&mut c)
            .await
            .expect("TYPE");
        let value = match kind.as_str() {
            "hash" => {
                let h: BTreeMap<String, String> = redis::cmd("HGETALL")
                    .arg(&k)
                    .query_async(&mut c)
                    .await
                    .expect("HGETALL");
                let pttl: i64 = redis::cmd("PTTL")
                    .arg(&k)
                    .query_async(&mut c)
                    .await
                    .expect("PTTL");
                assert!(
                    pttl > 0 && pttl <= ttl.as_millis() as i64,
                    "{k} expires (PTTL {pttl})"
                );
                format!("{h:?}")
            }
            "set" => {
                let s: BTreeSet<String> = redis::cmd("SMEMBERS")
                    .arg(&k)
                    .query_async(&mut c)
                    .await
                    .expect("SMEMBERS");
                format!("{s:?}")
            }
            "stream" => {
                let entries: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
                    .arg(&k)
                    .arg("-")
                    .arg("+")
                    .query_async(&mut c)
                    .await
                    .expect("XRANGE");
                let mut ids: Vec<String> = entries
                    .iter()
                    .map(|(_, f)| f.get("event_id").cloned().unwrap_or_default())
                    .collect();
                let n = ids.len();
                ids.sort();
                ids.dedup();
                assert_eq!(ids.len(), n, "each fused signal once in the stream");
                format!("{ids:?}")
            }
            // The stream's de-duplication marks: count them instead of listing them.
            "string" => {
                marks += 1;
                continue;
            }
            other => panic!("unexpected {other} at {k}"),
        };
        out.insert(short, value);
    }
    out.insert("fused:seen:* (marks)".to_owned(), marks.to_string());
    out
}

async fn field(key: &str, f: &str) -> Option<String> {
    let mut c = conn().await;
    redis::cmd("HGET")
        .arg(key)
        .arg(f)
        .query_async(&mut c)
        .await
        .expect("HGET")
}

#[tokio::test]
async fn latest_state_and_stream_converge_whatever_the_order() {
    let evs = events();
    let fused_ids: BTreeSet<String> = evs
        .iter()
        .filter(|e| e.kind() == EventKind::FusedSignal)
        .map(|e| e.meta().event_id.clone())
        .collect();
    let orders: Vec<(&str, Vec<AnyEvent>, usize)> = vec![
        ("forward", evs.clone(), 1000),
        ("reversed", evs.iter().rev().cloned().collect(), 7),
        ("shuffled", shuffled(evs.clone(), 42), 1),
        (
            "shuffled twice over",
            {
                let mut v = shuffled(evs.clone(), 7);
                v.extend(shuffled(evs.clone(), 99));
                v
            },
            13,
        ),
    ];
    let mut states = Vec::new();
    for (name, order, batch) in orders {
        let prefix = format!("{}:", unique("aqt"));
        let c = cfg(&prefix);
        let metrics = Arc::new(RedisSinkMetrics::default());
        let mut sink = RedisSink::new(c.clone(), metrics).expect("sink");
        let mut stale = 0;
        for chunk in order.chunks(batch) {
            let o = sink.apply(chunk).await.expect("apply");
            stale += o.state_stale;
        }
        // Replaying everything once more changes nothing.
        let before = state(&prefix, c.state_ttl).await;
        let o = sink.apply(&order).await.expect("apply again");
        assert_eq!(
            o.state_updates, 0,
            "{name}: a replay moves no state back or forth"
        );
        assert_eq!(o.stream_appended, 0, "{name}: a replay appends nothing");
        assert_eq!(o.stream_duplicates as usize, fused_ids.len());
        let after = state(&prefix, c.state_ttl).await;
        assert_eq!(before, after, "{name}");
        if name != "forward" {
            assert!(
                stale > 0,
                "{name}: older events arrived after newer ones and were refused"
            );
        }

        let keys = Keys::new(prefix.clone());
        // BTC's last two signals share a time: the larger event id wins, in every order.
        let btc_last: Vec<&AnyEvent> = evs
            .iter()
            .filter(|e| matches!(e, AnyEvent::FusedSignal(f) if f.asset == "BTC"))
            .collect();
        let newest = btc_last
            .iter()
            .max_by(|a, b| {
                (a.meta().ts_event, &a.meta().event_id).cmp(&(b.meta().ts_event, &b.meta().event_id))
            })
            .copied();
        let (newest_id, newest_score) = match newest {
            Some(AnyEvent::FusedSignal(f)) => (f.meta.event_id.clone(), f.fused_score),
            _ => panic!("BTC has fused signals"),
        };
        assert_eq!(
            field(&keys.fused_latest("BTC"), "event_id").await.as_deref(),
            Some(newest_id.as_str()),
            "{name}"
        );
        assert_eq!(
            field(&keys.fused_latest("ETH"), "fused_score").await.as_deref(),
            Some("-0.95"),
            "{name}"
        );
        assert_eq!(
            field(&keys.price_latest("binance", "BTCUSDT"), "price")
                .await
                .as_deref(),
            Some("64100.25"),
            "{name}: the kline closing last"
        );
        assert_eq!(
            field(&keys.price_latest("binance", "BTCUSDT"), "from")
                .await
                .as_deref(),
            Some("kline")
        );
        assert_eq!(
            field(&keys.quote_latest("binance", "ETHUSDT"), "mid")
                .await
                .as_deref(),
            Some("3009.5"),
            "{name}"
        );
        let json = field(&keys.fused_latest("BTC"), "json").await.unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&json).expect("json");
        assert_eq!(v["kind"], "FusedSignal");
        assert_eq!(v["fused_score"], newest_score);
        // The stream: every fused signal once.
        let mut rc = conn().await;
        let len: usize = redis::cmd("XLEN")
            .arg(keys.fused_stream())
            .query_async(&mut rc)
            .await
            .expect("XLEN");
        assert_eq!(len, fused_ids.len(), "{name}");
        assert_eq!(
            after.get("fused:stream").cloned(),
            Some(format!("{:?}", fused_ids.iter().collect::<Vec<_>>())),
            "{name}"
        );
        assert_eq!(
            after.get("fused:assets").cloned(),
            Some(r#"{"BTC", "ETH"}"#.to_owned())
        );
        clear(&prefix).await;
        states.push(after);
    }
    for s in &states[1..] {
        assert_eq!(s, &states[0], "every order ends in the same state");
    }
}

#[tokio::test]
async fn the_stream_is_trimmed_near_its_length() {
    let prefix = format!("{}:", unique("aqt"));
    let mut c = cfg(&prefix);
    c.stream_maxlen = 100;
    let mut sink = RedisSink::new(c, Arc::new(RedisSinkMetrics::default())).expect("sink");
    let evs: Vec<AnyEvent> = (0..1000)
        .map(|i| fused("SOL", 1_700_000_000_000_000 + i, "t", 0.1))
        .collect();
    for chunk in evs.chunks(100) {
        sink.apply(chunk).await.expect("apply");
    }
    let mut rc = conn().await;
    let len: usize = redis::cmd("XLEN")
        .arg(Keys::new(prefix.clone()).fused_stream())
        .query_async(&mut rc)
        .await
        .expect("XLEN");
    assert!(
        (100..=300).contains(&len),
        "XLEN {len} after 1000 appends with MAXLEN ~ 100"
    );
    clear(&prefix).await;
}

async fn publish(bus: &dyn Bus, events: &[AnyEvent], suffix: &str) {
    let mut batch = Vec::new();
    for ev in events {
        let mut m = to_message(ev).expect("encode");
        m.id.push_str(suffix);
        batch.push(m);
    }
    bus.publish(batch).await.expect("publish");
}

#[tokio::test]
async fn on_the_bus_redeliveries_and_an_outage_change_nothing() {
    let prefix = format!("{}:", unique("aqt"));
    let target: SocketAddr = {
        let info = redis::Client::open(redis_url().as_str())
            .expect("url")
            .get_connection_info()
            .clone();
        match info.addr {
            redis::ConnectionAddr::Tcp(h, p) => format!("{h}:{p}").parse().expect("addr"),
            other => panic!("a TCP Redis is needed, not {other:?}"),
        }
    };
    let mut proxy = Proxy::new(target).await;
    let mut c = cfg(&prefix);
    c.url = format!("redis://127.0.0.1:{}", proxy.port);
    c.filters = vec![">".to_owned()];
    let bus = inproc_bus(4, 1 << 14);
    let subs = subscribe(&*bus, &c).await.expect("subscribe");
    let metrics = Arc::new(RedisSinkMetrics::default());
    let task = tokio::spawn(run_subscriptions(
        bus.clone(),
        c.clone(),
        subs,
        metrics.clone(),
        CancellationToken::new(),
    ));

    let evs = events();
    let n = evs.len() as u64;
    let (first, second) = evs.split_at(evs.len() / 2);
    publish(&*bus, first, "").await;
    wait_until("the first half is acked", Duration::from_secs(30), || {
        metrics.acked.load(Ordering::Relaxed) >= first.len() as u64
    })
    .await;
    proxy.down().await;
    publish(&*bus, second, "").await;
    // Redelivered copies of everything, in another order.
    publish(&*bus, &shuffled(evs.clone(), 5), "#again").await;
    wait_until("the sink retries", Duration::from_secs(30), || {
        metrics.retries.load(Ordering::Relaxed) >= 3
    })
    .await;
    assert_eq!(
        metrics.acked.load(Ordering::Relaxed),
        first.len() as u64,
        "nothing acked while Redis is away"
    );
    proxy.up().await;
    wait_until("everything is acked", Duration::from_secs(60), || {
        metrics.acked.load(Ordering::Relaxed) >= 2 * n
    })
    .await;
    bus.close().await;
    let stats = task.await.expect("join").expect("sink");
    assert!(stats.reconnects >= 1, "{stats:?}");
    assert_eq!(stats.dead_letters, 0);

    // The same state as applying the events once, in order, without a bus.
    let reference = format!("{}:", unique("aqt"));
    let mut sink = RedisSink::new(cfg(&reference), Arc::new(RedisSinkMetrics::default())).expect("sink");
    sink.apply(&evs).await.expect("apply");
    let got = state(&prefix, c.state_ttl).await;
    let want = state(&reference, c.state_ttl).await;
    assert_eq!(got, want);
    assert!(got.contains_key("fused:stream"));
    clear(&prefix).await;
    clear(&reference).await;
}
