//! The Binance connector against the loopback Binance server (`auroraq_tests::binance_server`):
//! real recorded frames, misbehaviour on cue, events checked on the bus (in-process, and the
//! real NATS at 127.0.0.1:4222).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use auroraq_binance::{
    backfill, parse_streams, BackfillConfig, BackfillProgress, Backoff, ConnectorError, Interval, LiveConfig,
    LiveConnector, LiveStats, StatsHandle,
};
use auroraq_bus::{Bus, SubscribeOptions};
use auroraq_schemas::{event_id, AnyEvent, BookUpdate, FeedState, FeedStatus};
use auroraq_tests::binance_server::{BinanceServer, ConnPlan, RestCue, ServerConfig, Tape};
use auroraq_tests::{dyn_bus, inproc_bus, nats_bus, unique, wait_until};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(30);

/// Every event the bus delivers, with its topic, collected in the background from the moment
/// of the call.
struct Collector {
    seen: Arc<Mutex<Vec<(String, AnyEvent)>>>,
    /// Every delivery in order: its partition and, for a watermark, its time, else the event's
    /// `available_at`.
    order: Arc<Mutex<Vec<(u32, Delivered)>>>,
    task: JoinHandle<()>,
}

#[derive(Clone, Copy, Debug)]
enum Delivered {
    Watermark(i64),
    Event(i64),
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn collect(bus: Arc<dyn Bus>) -> Collector {
    let mut sub = bus
        .subscribe(SubscribeOptions::new(unique("binance"), ">").transient())
        .await
        .expect("subscribe");
    let seen: Arc<Mutex<Vec<(String, AnyEvent)>>> = Arc::default();
    let order: Arc<Mutex<Vec<(u32, Delivered)>>> = Arc::default();
    let (out, log) = (seen.clone(), order.clone());
    let task = tokio::spawn(async move {
        while let Some(Ok(d)) = sub.next().await {
            if auroraq_schemas::is_watermark(d.payload()) {
                let w = auroraq_schemas::Watermark::decode(d.payload()).expect("a decodable watermark");
                log.lock()
                    .expect("lock")
                    .push((d.partition, Delivered::Watermark(w.watermark)));
            } else {
                let ev = AnyEvent::decode(d.payload()).expect("the connector publishes decodable events");
                let at = auroraq_stage::available_at(&ev);
                log.lock()
                    .expect("lock")
                    .push((d.partition, Delivered::Event(at)));
                out.lock().expect("lock").push((d.topic().to_owned(), ev));
            }
            let _ = d.ack().await;
        }
    });
    Collector { seen, order, task }
}

impl Collector {
    fn events(&self) -> Vec<(String, AnyEvent)> {
        self.seen.lock().expect("lock").clone()
    }

    async fn wait_for(&self, what: &str, pred: impl Fn(&[(String, AnyEvent)]) -> bool) {
        let t0 = Instant::now();
        loop {
            if pred(&self.events()) {
                return;
            }
            assert!(t0.elapsed() < WAIT, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the collector holds all `stored` messages the bus kept (a connector's
    /// `published`, final once it has stopped): nothing more can arrive after them, so what did
    /// not arrive by then never will, and absence (of a duplicate, of a status) can be asserted.
    async fn wait_for_all(&self, stored: u64) {
        let n = stored as usize;
        self.wait_for(&format!("the {n} messages the bus stored"), |evs| evs.len() >= n)
            .await;
        assert_eq!(self.events().len(), n, "no more deliveries than messages stored");
    }

    fn trade_ids(&self) -> Vec<String> {
        trade_ids(&self.events())
    }

    fn statuses(&self) -> Vec<(String, FeedStatus)> {
        statuses(&self.events())
    }
}

fn trade_ids(evs: &[(String, AnyEvent)]) -> Vec<String> {
    evs.iter()
        .filter_map(|(_, e)| match e {
            AnyEvent::TradeTick(t) => Some(t.meta.event_id.clone()),
            _ => None,
        })
        .collect()
}

fn statuses(evs: &[(String, AnyEvent)]) -> Vec<(String, FeedStatus)> {
    evs.iter()
        .filter_map(|(topic, e)| match e {
            AnyEvent::FeedStatus(s) => Some((topic.clone(), s.clone())),
            _ => None,
        })
        .collect()
}

fn count_status(evs: &[(String, AnyEvent)], state: FeedState) -> usize {
    statuses(evs).iter().filter(|(_, s)| s.status == state).count()
}

fn book_updates(evs: &[(String, AnyEvent)], symbol: &str) -> Vec<BookUpdate> {
    evs.iter()
        .filter_map(|(_, e)| match e {
            AnyEvent::BookUpdate(u) if u.symbol == symbol => Some(u.clone()),
            _ => None,
        })
        .collect()
}

/// Event ids the connector gives the trades of a tape.
fn expected_trades(tape: &Tape) -> BTreeSet<String> {
    tape.trade_ids()
        .iter()
        .map(|n| event_id("TradeTick", "binance", n))
        .collect()
}

fn live_cfg(server: &BinanceServer, symbols: &[&str], streams: &str) -> LiveConfig {
    let mut cfg = LiveConfig::new(
        symbols.iter().map(|s| s.to_string()).collect(),
        parse_streams(streams).expect("streams"),
    )
    .with_endpoints(server.ws_base(), server.rest_base());
    cfg.reconnect = Backoff::new(Duration::from_millis(20), Duration::from_millis(200));
    cfg.idle_timeout = Duration::from_secs(10);
    cfg.connect_timeout = Duration::from_secs(5);
    cfg.snapshot_retry = Duration::from_millis(100);
    cfg.batch_linger = Duration::from_millis(5);
    // Watermarks are the subject of one test, which turns them on.
    cfg.watermark_every = Duration::ZERO;
    cfg.roll_overlap = Duration::from_millis(300);
    cfg.rest.timeout = Duration::from_secs(5);
    cfg.rest.retry_backoff = Backoff::new(Duration::from_millis(50), Duration::from_millis(500));
    cfg
}

struct Running {
    cancel: CancellationToken,
    stats: StatsHandle,
    handle: JoinHandle<Result<LiveStats, ConnectorError>>,
}

fn start(cfg: LiveConfig, bus: Arc<dyn Bus>) -> Running {
    let connector = LiveConnector::new(cfg, bus).expect("valid config");
    let stats = connector.stats();
    let cancel = CancellationToken::new();
    let handle = tokio::spawn(connector.run(cancel.clone()));
    Running {
        cancel,
        stats,
        handle,
    }
}

impl Running {
    /// Stops the connector and checks that it ends cleanly and promptly.
    async fn stop(self) -> LiveStats {
        let t0 = Instant::now();
        self.cancel.cancel();
        let stats = tokio::time::timeout(Duration::from_secs(10), self.handle)
            .await
            .expect("the connector stops within 10 s")
            .expect("the connector task does not panic")
            .expect("the connector ends without error");
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "stopping took {:?}",
            t0.elapsed()
        );
        stats
    }
}

/// The server drops connection 0 mid-stream and closes connection 1 (as at the 24-hour cut);
/// each new connection re-sends 40 tape frames. Every trade arrives on the bus exactly once.
async fn reconnect_loses_and_duplicates_nothing(bus: Arc<dyn Bus>) {
    let tape = Tape::interleave(Tape::barter_trades(330), Tape::recorded());
    let expected = expected_trades(&tape);
    assert_eq!(
        expected.len(),
        332,
        "330 barter trades and the capture's 2 aggTrades"
    );
    let server = BinanceServer::start(ServerConfig {
        tape,
        plans: vec![
            ConnPlan {
                drop_after: Some(120),
                ..ConnPlan::default()
            },
            ConnPlan {
                close_after: Some(150),
                ..ConnPlan::default()
            },
        ],
        resend_on_reconnect: 40,
        ..ServerConfig::default()
    })
    .await;
    let col = collect(bus.clone()).await;
    let run = start(
        live_cfg(
            &server,
            &["btcusdt", "ethusdt", "solusdt", "nknusdt", "lrcbtc"],
            "trade,aggTrade",
        ),
        bus.clone(),
    );
    col.wait_for("every trade", |evs| {
        trade_ids(evs).into_iter().collect::<BTreeSet<_>>() == expected
    })
    .await;
    let stats = run.stop().await;
    col.wait_for("the stopped status", |evs| {
        statuses(evs)
            .iter()
            .any(|(_, s)| s.status == FeedState::Disconnected && s.detail == "stopped")
    })
    .await;
    col.wait_for_all(stats.published).await;

    let ids = col.trade_ids();
    let distinct: BTreeSet<String> = ids.iter().cloned().collect();
    assert_eq!(distinct, expected, "every trade sent arrives");
    assert_eq!(ids.len(), distinct.len(), "no trade arrives twice");
    assert!(
        stats.trades > expected.len() as u64,
        "the server re-sent trades after reconnecting: {} decoded for {} distinct",
        stats.trades,
        expected.len()
    );
    assert!(
        stats.duplicates > 0,
        "the bus dropped the re-sent ones: {stats:?}"
    );
    assert_eq!(stats.reconnects, 2, "{stats:?}");
    assert_eq!(stats.connections, 3);

    let conns = server.connections();
    assert_eq!(conns.len(), 3, "{conns:?}");
    assert_eq!(conns[0].ended_by_server, Some("drop"));
    assert_eq!(conns[1].ended_by_server, Some("close"));
    assert!(
        conns.iter().all(|c| c.streams.len() == 10),
        "5 symbols x 2 streams: {:?}",
        conns[0].streams
    );
    assert!(server.rejected().is_empty());
    wait_until("the client's close frame on stop", WAIT, || {
        server.connections()[2].client_close.is_some()
    })
    .await;

    let sts = col.statuses();
    assert!(sts
        .iter()
        .all(|(topic, s)| topic == "feeds.status.binance" && s.feed == "binance"));
    let connected = sts
        .iter()
        .filter(|(_, s)| s.status == FeedState::Connected)
        .count();
    let disconnected: Vec<&FeedStatus> = sts
        .iter()
        .filter(|(_, s)| s.status == FeedState::Disconnected)
        .map(|(_, s)| s)
        .collect();
    assert_eq!(connected, 3);
    assert_eq!(disconnected.len(), 3, "two losses and the stop: {disconnected:?}");
    assert!(disconnected
        .iter()
        .any(|s| s.detail.contains("EOF") || s.detail.contains("read error")));
    assert!(disconnected
        .iter()
        .any(|s| s.detail.contains("server closed the connection: 1001")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_loses_and_duplicates_nothing_inproc() {
    reconnect_loses_and_duplicates_nothing(dyn_bus(inproc_bus(4, 100_000))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_loses_and_duplicates_nothing_nats() {
    let (bus, _guard) = nats_bus(4).await;
    reconnect_loses_and_duplicates_nothing(dyn_bus(bus)).await;
}

/// One depth update of the recorded NKNUSDT stream (served as BTCUSDT) never arrives: the
/// connector reports the gap, takes a new snapshot, reports the resync, and the book goes on.
/// The connector's watermarks: on every partition, following its clock less the lateness, and
/// no event it publishes after one is available at or before it (through a reconnect too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watermarks_follow_the_clock_and_never_pass_an_event() {
    let bus = dyn_bus(inproc_bus(4, 8192));
    let tape = Tape::interleave(Tape::barter_trades(330), Tape::recorded());
    let server = BinanceServer::start(ServerConfig {
        tape,
        plans: vec![ConnPlan {
            drop_after: Some(120),
            ..ConnPlan::default()
        }],
        resend_on_reconnect: 40,
        ..ServerConfig::default()
    })
    .await;
    let col = collect(bus.clone()).await;
    let mut cfg = live_cfg(
        &server,
        &["btcusdt", "ethusdt", "solusdt", "nknusdt", "lrcbtc"],
        "trade,aggTrade",
    );
    cfg.watermark_every = Duration::from_millis(20);
    cfg.watermark_lateness = Duration::from_millis(200);
    let started = auroraq_schemas::now_micros();
    let run = start(cfg, bus.clone());
    col.wait_for("every trade", |evs| trade_ids(evs).len() >= 332)
        .await;
    // Watermarks keep coming while the feed is quiet.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stats = run.stop().await;
    col.wait_for_all(stats.published).await;
    let order = col.order.lock().expect("lock").clone();
    let mut last: BTreeMap<u32, i64> = BTreeMap::new();
    let mut events_after_a_mark = 0;
    for (p, d) in &order {
        match *d {
            Delivered::Watermark(w) => {
                assert!(
                    w >= started - 200_000,
                    "a watermark from before the connector started"
                );
                let l = last.entry(*p).or_insert(w);
                *l = (*l).max(w);
            }
            Delivered::Event(at) => {
                if let Some(w) = last.get(p) {
                    assert!(at > *w, "an event at {at} after partition {p}'s watermark {w}");
                    events_after_a_mark += 1;
                }
            }
        }
    }
    assert_eq!(last.len(), 4, "every partition hears the watermark: {last:?}");
    assert!(events_after_a_mark > 0, "the test saw events behind watermarks");
    // A quiet feed advances with the clock: the last watermark is recent.
    let newest = last.values().copied().min().unwrap();
    assert!(newest > auroraq_schemas::now_micros() - 5_000_000, "{newest}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn depth_gap_is_detected_and_healed_by_resync() {
    let mut tape = Tape::recorded();
    tape.rename_symbol("nknusdt", "btcusdt");
    let depth = tape.depth_indexes("BTCUSDT");
    assert_eq!(depth.len(), 150);
    let first_u = |i: usize| -> (i64, i64) {
        let v: serde_json::Value = serde_json::from_str(&tape.frames[i].text).expect("json");
        (
            v["data"]["U"].as_i64().expect("U"),
            v["data"]["u"].as_i64().expect("u"),
        )
    };
    let (skipped_first, skipped_last) = first_u(depth[60]);
    let (next_first, _) = first_u(depth[61]);
    let (_, final_u) = first_u(*depth.last().expect("last"));
    tape.skip(depth[60]);
    let server = BinanceServer::start(ServerConfig {
        tape,
        frame_interval: Duration::from_millis(2),
        ..ServerConfig::default()
    })
    .await;
    let bus = dyn_bus(inproc_bus(4, 100_000));
    let col = collect(bus.clone()).await;
    let run = start(live_cfg(&server, &["btcusdt"], "depth"), bus.clone());
    col.wait_for("the book to reach the last update", |evs| {
        book_updates(evs, "BTCUSDT")
            .last()
            .is_some_and(|u| u.final_update_id == final_u)
    })
    .await;
    let stats = run.stop().await;
    let evs = col.events();

    let sts: Vec<FeedStatus> = statuses(&evs)
        .into_iter()
        .filter(|(t, s)| t == "feeds.status.binance" && s.symbol.as_deref() == Some("BTCUSDT"))
        .map(|(_, s)| s)
        .collect();
    let gaps: Vec<&FeedStatus> = sts.iter().filter(|s| s.status == FeedState::Gap).collect();
    assert_eq!(gaps.len(), 1, "{sts:?}");
    assert_eq!(
        gaps[0].attributes.get("expected"),
        Some(&skipped_first.to_string())
    );
    assert_eq!(gaps[0].attributes.get("received"), Some(&next_first.to_string()));
    assert_eq!(
        sts.iter().filter(|s| s.status == FeedState::Resynced).count(),
        1,
        "{sts:?}"
    );
    assert_eq!((stats.gaps, stats.resyncs), (1, 1), "{stats:?}");

    let ups = book_updates(&evs, "BTCUSDT");
    let snaps: Vec<usize> = (0..ups.len()).filter(|&i| ups[i].snapshot).collect();
    assert_eq!(snaps.len(), 2, "the first snapshot and the resync's");
    // Between snapshots and after each, updates follow each other without a hole.
    for w in ups.windows(2) {
        if w[1].snapshot {
            continue;
        }
        assert!(
            w[1].first_update_id <= w[0].final_update_id + 1 && w[1].final_update_id > w[0].final_update_id,
            "update {}..{} does not follow {}",
            w[1].first_update_id,
            w[1].final_update_id,
            w[0].final_update_id
        );
    }
    assert!(
        ups.iter()
            .all(|u| u.snapshot || u.final_update_id < skipped_first || u.first_update_id > skipped_last),
        "nothing covers the missed update"
    );
    let after = ups.len() - 1 - snaps[1];
    assert!(after >= 50, "book updates continue after the resync: {after}");
    assert!(
        ups[snaps[1]].final_update_id >= skipped_last,
        "the resync snapshot includes the missed update"
    );
    let depth_requests = server
        .requests()
        .iter()
        .filter(|r| r.path == "/api/v3/depth")
        .count();
    assert_eq!(depth_requests, 2);
}

/// The connection drops and the market moves on 20 frames before the next one opens: the
/// connector forgets the book on the reconnect and rebuilds it from a new snapshot, without a
/// hole and without reporting a gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_rebuilds_the_book_from_a_new_snapshot() {
    let mut tape = Tape::recorded();
    tape.rename_symbol("nknusdt", "btcusdt");
    let depth = tape.depth_indexes("BTCUSDT");
    let last: serde_json::Value =
        serde_json::from_str(&tape.frames[*depth.last().expect("last")].text).expect("json");
    let final_u = last["data"]["u"].as_i64().expect("u");
    let server = BinanceServer::start(ServerConfig {
        tape,
        frame_interval: Duration::from_millis(2),
        plans: vec![
            ConnPlan {
                drop_after: Some(40),
                ..ConnPlan::default()
            },
            ConnPlan {
                skip_on_connect: 20,
                ..ConnPlan::default()
            },
        ],
        ..ServerConfig::default()
    })
    .await;
    let bus = dyn_bus(inproc_bus(4, 100_000));
    let col = collect(bus.clone()).await;
    let run = start(live_cfg(&server, &["btcusdt"], "depth"), bus.clone());
    col.wait_for("the book to reach the last update", |evs| {
        book_updates(evs, "BTCUSDT")
            .last()
            .is_some_and(|u| u.final_update_id == final_u)
    })
    .await;
    let stats = run.stop().await;
    let ups = book_updates(&col.events(), "BTCUSDT");
    let snaps: Vec<usize> = (0..ups.len()).filter(|&i| ups[i].snapshot).collect();
    assert_eq!(snaps.len(), 2, "a new snapshot after the reconnect");
    assert!(
        ups[snaps[1]].final_update_id > ups[snaps[1] - 1].final_update_id + 1,
        "updates were missed while disconnected"
    );
    for w in ups.windows(2).filter(|w| !w[1].snapshot) {
        assert!(
            w[1].first_update_id <= w[0].final_update_id + 1,
            "hole after {}",
            w[0].final_update_id
        );
    }
    assert_eq!(
        (stats.gaps, stats.reconnects, stats.snapshots),
        (0, 1, 2),
        "{stats:?}"
    );
    assert_eq!(server.connections().len(), 2);
}

/// Truncated, non-JSON, bad-decimal, unknown-stream and binary frames become dead letters on
/// `dlq.binance` with their bytes; the trades around them all arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_become_dead_letters_and_the_stream_goes_on() {
    let mut tape = Tape::barter_trades(100);
    let expected = expected_trades(&tape);
    let good = tape.frames[10].text.clone();
    let p = good.find("\"p\":\"").expect("price") + 5;
    let end = p + good[p..].find('"').expect("end");
    let nan = format!("{}NaN{}", &good[..p], &good[end..]);
    let bad_texts = [
        good[..good.len() / 2].to_owned(),
        "not json at all".to_owned(),
        nan,
        r#"{"stream":"btcusdt@weird","data":{}}"#.to_owned(),
    ];
    for (i, t) in bad_texts.iter().enumerate() {
        tape.insert_text(15 + 20 * i, t);
    }
    tape.insert_binary(95, b"\x00\x01binary");
    let server = BinanceServer::start(ServerConfig {
        tape,
        ..ServerConfig::default()
    })
    .await;
    let bus = dyn_bus(inproc_bus(4, 100_000));
    let col = collect(bus.clone()).await;
    let run = start(
        live_cfg(&server, &["btcusdt", "ethusdt", "solusdt"], "trade"),
        bus.clone(),
    );
    col.wait_for("every trade and 5 dead letters", |evs| {
        trade_ids(evs).into_iter().collect::<BTreeSet<_>>() == expected
            && evs
                .iter()
                .filter(|(_, e)| matches!(e, AnyEvent::DeadLetter(_)))
                .count()
                == 5
    })
    .await;
    let stats = run.stop().await;
    let evs = col.events();
    let dls: Vec<_> = evs
        .iter()
        .filter_map(|(t, e)| match e {
            AnyEvent::DeadLetter(d) => Some((t.clone(), d.clone())),
            _ => None,
        })
        .collect();
    assert!(dls
        .iter()
        .all(|(t, d)| t == "dlq.binance" && d.stage == "binance"));
    for bad in &bad_texts {
        let d = dls
            .iter()
            .find(|(_, d)| d.original_bytes == bad.as_bytes())
            .map(|(_, d)| d);
        let d = d.unwrap_or_else(|| panic!("no dead letter for {bad:?}"));
        assert_eq!(d.reason, "decode_error");
        assert!(!d.error.is_empty());
    }
    assert!(dls
        .iter()
        .any(|(_, d)| d.reason == "unexpected_binary" && d.original_bytes == b"\x00\x01binary"));
    assert_eq!(stats.dead_letters, 5);
    assert_eq!(stats.dead_letter_reasons.get("decode_error"), Some(&4));
    assert_eq!(stats.reconnects, 0, "bad frames do not cost the connection");
    assert_eq!(col.trade_ids().len(), expected.len());
}

/// The server pings every 50 ms; the connector answers each with the same payload, also while
/// no data flows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_are_answered_with_their_payload() {
    let tape = Tape::barter_trades(10);
    let server = BinanceServer::start(ServerConfig {
        tape,
        ping_interval: Some(Duration::from_millis(50)),
        ..ServerConfig::default()
    })
    .await;
    let bus = dyn_bus(inproc_bus(4, 100_000));
    let run = start(
        live_cfg(&server, &["btcusdt", "ethusdt", "solusdt"], "trade"),
        bus.clone(),
    );
    wait_until("8 pongs", WAIT, || {
        server.connections().first().is_some_and(|c| c.pongs.len() >= 8)
    })
    .await;
    assert!(run.stats.snapshot().pings >= 8, "live stats count the pings");
    let stats = run.stop().await;
    let c = &server.connections()[0];
    assert!(server.tape_done(), "the pings went on after the data");
    assert_eq!(
        c.pongs[..],
        c.pings_sent[..c.pongs.len()],
        "each pong carries its ping's payload, in order"
    );
    assert!(stats.pings >= 8, "{stats:?}");
}

/// Connection 0 goes silent (no frames, no pongs); the connector gives up on it after its idle
/// timeout and carries on from a new connection without losing a trade.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_connection_is_replaced() {
    let tape = Tape::barter_trades(100);
    let expected = expected_trades(&tape);
    let server = BinanceServer::start(ServerConfig {
        tape,
        plans: vec![ConnPlan {
            stall_after: Some(30),
            ..ConnPlan::default()
        }],
        ..ServerConfig::default()
    })
    .await;
    let bus = dyn_bus(inproc_bus(4, 100_000));
    let col = collect(bus.clone()).await;
    let mut cfg = live_cfg(&server, &["btcusdt", "ethusdt", "solusdt"], "trade");
    cfg.idle_timeout = Duration::from_millis(700);
    let t0 = Instant::now();
    let run = start(cfg, bus.clone());
    col.wait_for("every trade", |evs| {
        trade_ids(evs).into_iter().collect::<BTreeSet<_>>() == expected
    })
    .await;
    let stats = run.stop().await;
    let conns = server.connections();
    assert_eq!(conns.len(), 2, "{conns:?}");
    assert_eq!(conns[0].ended_by_server, Some("stall"));
    assert!(
        conns[1].opened - conns[0].opened >= Duration::from_millis(700),
        "not before the idle timeout"
    );
    assert!(t0.elapsed() >= Duration::from_millis(700));
    assert!(col
        .statuses()
        .iter()
        .any(|(_, s)| s.status == FeedState::Disconnected && s.detail.contains("stalled")));
    assert_eq!(stats.reconnects, 1);
    assert_eq!(col.trade_ids().len(), expected.len());
}

fn assert_rolled_cleanly(
    server: &BinanceServer,
    col: &Collector,
    expected: &BTreeSet<String>,
    stats: &LiveStats,
) {
    let conns = server.connections();
    assert!(conns.len() >= 2, "{conns:?}");
    let (old, new) = (&conns[0], &conns[1]);
    let closed = old
        .client_close
        .expect("the connector closed the old connection itself");
    assert!(
        new.opened < closed,
        "the new connection opened before the old one was closed"
    );
    assert!(old.ended_by_server.is_none());
    let sts = col.statuses();
    let rolled: Vec<&FeedStatus> = sts
        .iter()
        .filter(|(_, s)| s.status == FeedState::Rolled)
        .map(|(_, s)| s)
        .collect();
    assert!(!rolled.is_empty());
    assert_eq!(
        rolled[0]
            .attributes
            .get("previous_connection")
            .map(String::as_str),
        Some("1")
    );
    assert_eq!(
        sts.iter()
            .filter(|(_, s)| s.status == FeedState::Disconnected)
            .count(),
        1,
        "only the stop disconnects: {sts:?}"
    );
    assert_eq!(stats.reconnects, 0);
    let ids = col.trade_ids();
    assert_eq!(
        ids.iter().cloned().collect::<BTreeSet<_>>(),
        *expected,
        "nothing lost in the roll"
    );
    assert_eq!(ids.len(), expected.len(), "nothing twice");
}

/// Binance announces a `serverShutdown`: the connector opens a new connection, then closes the
/// old one, and publishes `rolled`; no trade is lost or duplicated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_shutdown_rolls_to_a_new_connection_first() {
    let tape = Tape::barter_trades(200);
    let expected = expected_trades(&tape);
    let server = BinanceServer::start(ServerConfig {
        tape,
        frame_interval: Duration::from_millis(3),
        plans: vec![ConnPlan {
            shutdown_after: Some(50),
            ..ConnPlan::default()
        }],
        ..ServerConfig::default()
    })
    .await;
    let bus = dyn_bus(inproc_bus(4, 100_000));
    let col = collect(bus.clone()).await;
    let run = start(
        live_cfg(&server, &["btcusdt", "ethusdt", "solusdt"], "trade"),
        bus.clone(),
    );
    col.wait_for("every trade", |evs| {
        trade_ids(evs).into_iter().collect::<BTreeSet<_>>() == expected
    })
    .await;
    let stats = run.stop().await;
    col.wait_for("the stop", |evs| count_status(evs, FeedState::Disconnected) == 1)
        .await;
    col.wait_for_all(stats.published).await;
    assert_eq!(stats.rolls, 1, "{stats:?}");
    assert_eq!(server.connections().len(), 2);
    assert_rolled_cleanly(&server, &col, &expected, &stats);
}

/// `roll_after` (23 h in production, 500 ms here) replaces the connection before Binance's
/// 24-hour cut, new one first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roll_after_replaces_the_connection_before_the_cut() {
    let tape = Tape::barter_trades(300);
    let expected = expected_trades(&tape);
    let server = BinanceServer::start(ServerConfig {
        tape,
        frame_interval: Duration::from_millis(4),
        ..ServerConfig::default()
    })
    .await;
    let bus = dyn_bus(inproc_bus(4, 100_000));
    let col = collect(bus.clone()).await;
    let mut cfg = live_cfg(&server, &["btcusdt", "ethusdt", "solusdt"], "trade");
    cfg.roll_after = Duration::from_millis(500);
    cfg.roll_overlap = Duration::from_millis(200);
    let run = start(cfg, bus.clone());
    col.wait_for("every trade", |evs| {
        trade_ids(evs).into_iter().collect::<BTreeSet<_>>() == expected
    })
    .await;
    let stats = run.stop().await;
    col.wait_for("the stop", |evs| count_status(evs, FeedState::Disconnected) == 1)
        .await;
    col.wait_for_all(stats.published).await;
    assert!(stats.rolls >= 1, "{stats:?}");
    let conns = server.connections();
    assert!(
        conns[1].opened - conns[0].opened >= Duration::from_millis(500),
        "not before roll_after"
    );
    assert_rolled_cleanly(&server, &col, &expected, &stats);
}

/// A depth snapshot answered 429 with `Retry-After: 1`: the connector publishes
/// `rate_limited`, waits at least a second before asking again, and the book still syncs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_rate_limit_waits_retry_after() {
    let mut tape = Tape::recorded();
    tape.rename_symbol("nknusdt", "btcusdt");
    let server = BinanceServer::start(ServerConfig {
        tape,
        frame_interval: Duration::from_millis(12),
        ..ServerConfig::default()
    })
    .await;
    server.cue(RestCue {
        path: "/api/v3/depth".into(),
        status: 429,
        retry_after: Some(1),
    });
    let bus = dyn_bus(inproc_bus(4, 100_000));
    let col = collect(bus.clone()).await;
    let run = start(live_cfg(&server, &["btcusdt"], "depth"), bus.clone());
    col.wait_for("a synced book", |evs| {
        book_updates(evs, "BTCUSDT")
            .iter()
            .filter(|u| !u.snapshot)
            .count()
            >= 5
    })
    .await;
    let stats = run.stop().await;
    let reqs: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.path == "/api/v3/depth")
        .collect();
    assert_eq!(reqs.iter().map(|r| r.status).collect::<Vec<_>>(), vec![429, 200]);
    let waited = reqs[1].at - reqs[0].at;
    assert!(
        waited >= Duration::from_secs(1),
        "asked again after {waited:?}, before Retry-After"
    );
    let limited: Vec<FeedStatus> = col
        .statuses()
        .into_iter()
        .filter(|(_, s)| s.status == FeedState::RateLimited)
        .map(|(_, s)| s)
        .collect();
    assert_eq!(limited.len(), 1);
    assert_eq!(limited[0].symbol.as_deref(), Some("BTCUSDT"));
    assert_eq!(
        limited[0].attributes.get("retry_after_ms").map(String::as_str),
        Some("1000")
    );
    assert_eq!(stats.gaps, 0);
}

const FROM_MS: i64 = 1_499_040_000_000; // 2017-07-03, the open time of Binance's documented example

fn backfill_cfg(server: &BinanceServer, bars: i64, page_limit: u32) -> BackfillConfig {
    let mut cfg = BackfillConfig::new(
        "btcusdt",
        Interval::parse("1m").expect("1m"),
        FROM_MS * 1000,
        (FROM_MS + bars * 60_000) * 1000,
    );
    cfg.rest = cfg.rest.with_base_url(server.rest_base());
    cfg.rest.retry_backoff = Backoff::new(Duration::from_millis(50), Duration::from_millis(500));
    cfg.page_limit = page_limit;
    cfg
}

fn kline_ids(evs: &[(String, AnyEvent)]) -> Vec<(String, i64)> {
    evs.iter()
        .filter_map(|(_, e)| match e {
            AnyEvent::Kline(k) => Some((k.meta.event_id.clone(), k.open_time)),
            _ => None,
        })
        .collect()
}

/// Klines 429 then 418, each with `Retry-After: 1`: each next request comes at least a second
/// later, two `rate_limited` statuses go out, and the backfill completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_waits_retry_after_on_429_and_418() {
    let server = BinanceServer::start(ServerConfig::default()).await;
    server.cue(RestCue {
        path: "/api/v3/klines".into(),
        status: 429,
        retry_after: Some(1),
    });
    server.cue(RestCue {
        path: "/api/v3/klines".into(),
        status: 418,
        retry_after: Some(1),
    });
    let bus = dyn_bus(inproc_bus(4, 100_000));
    let col = collect(bus.clone()).await;
    let cfg = backfill_cfg(&server, 150, 100);
    let report = backfill(
        &cfg,
        &*bus,
        &CancellationToken::new(),
        &mut |_: &BackfillProgress| {},
    )
    .await
    .expect("backfill");
    assert!(report.complete, "{report:?}");
    assert_eq!(report.rate_limited, 2);
    let reqs = server.requests();
    assert_eq!(
        reqs.iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![429, 418, 200, 200]
    );
    for w in reqs.windows(2).take(2) {
        let waited = w[1].at - w[0].at;
        assert!(
            waited >= Duration::from_secs(1),
            "HTTP {} answered, next request after {waited:?}",
            w[0].status
        );
    }
    col.wait_for("150 klines and 2 rate_limited statuses", |evs| {
        kline_ids(evs).len() == 150 && count_status(evs, FeedState::RateLimited) == 2
    })
    .await;
    let limited = col.statuses();
    assert!(limited.iter().all(|(topic, _)| topic == "feeds.status.binance"));
}

/// A 503 is retried after a backoff; a 418 whose `Retry-After` is longer than the client will
/// wait (an hour here, 10 minutes allowed) is an error that names the URL, at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_and_long_bans_fail_fast() {
    let server = BinanceServer::start(ServerConfig::default()).await;
    server.cue(RestCue {
        path: "/api/v3/klines".into(),
        status: 503,
        retry_after: None,
    });
    let bus = dyn_bus(inproc_bus(4, 100_000));
    let cfg = backfill_cfg(&server, 20, 100);
    let report = backfill(
        &cfg,
        &*bus,
        &CancellationToken::new(),
        &mut |_: &BackfillProgress| {},
    )
    .await
    .expect("a 503 is retried");
    assert!(report.complete && report.published == 20, "{report:?}");
    let reqs = server.requests();
    assert_eq!(reqs.iter().map(|r| r.status).collect::<Vec<_>>(), vec![503, 200]);
    assert!(
        reqs[1].at - reqs[0].at >= Duration::from_millis(25),
        "backed off before retrying"
    );

    server.cue(RestCue {
        path: "/api/v3/klines".into(),
        status: 418,
        retry_after: Some(3600),
    });
    let t0 = Instant::now();
    let err = backfill(
        &cfg,
        &*bus,
        &CancellationToken::new(),
        &mut |_: &BackfillProgress| {},
    )
    .await
    .expect_err("banned for an hour");
    assert!(t0.elapsed() < Duration::from_secs(5));
    let msg = err.to_string();
    assert!(
        msg.contains("HTTP 418") && msg.contains("/api/v3/klines?symbol=BTCUSDT"),
        "{msg}"
    );
    assert_eq!(server.requests().len(), 3, "nothing more is sent while banned");
}

/// With a 100-weight budget per 500 ms window (soft limit 80) and klines weighing 30, the
/// client sends at most 3 requests per window and the server never has to refuse one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_keeps_below_the_weight_budget() {
    let window = Duration::from_millis(500);
    let server = BinanceServer::start(ServerConfig {
        weight_window: window,
        weight_limit: Some(100),
        klines_weight: 30,
        ..ServerConfig::default()
    })
    .await;
    let bus = dyn_bus(inproc_bus(4, 100_000));
    let mut cfg = backfill_cfg(&server, 100, 10);
    cfg.rest.weight_budget = 100;
    cfg.rest.weight_window = window;
    let report = backfill(
        &cfg,
        &*bus,
        &CancellationToken::new(),
        &mut |_: &BackfillProgress| {},
    )
    .await
    .expect("backfill");
    assert!(report.complete);
    assert_eq!(report.pages, 10);
    let reqs = server.requests();
    assert_eq!(reqs.len(), 10, "no request refused and retried");
    assert!(
        reqs.iter().all(|r| r.status == 200 && r.used_weight <= 100),
        "{reqs:?}"
    );
    let mut per_window: BTreeMap<i64, usize> = BTreeMap::new();
    for r in &reqs {
        *per_window
            .entry(r.wall_ms / window.as_millis() as i64)
            .or_default() += 1;
    }
    assert!(per_window.values().all(|&n| n <= 3), "{per_window:?}");
    assert!(
        per_window.len() >= 4,
        "the requests spread over windows: {per_window:?}"
    );
}

/// A backfill of 451 one-minute bars in pages of 100, stopped after two pages, resumes from its
/// checkpoint; a third run finds it complete. On NATS: every bar once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_paginates_and_resumes_from_its_checkpoint() {
    let server = BinanceServer::start(ServerConfig::default()).await;
    let (nats, _guard) = nats_bus(4).await;
    let bus = dyn_bus(nats);
    let col = collect(bus.clone()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = backfill_cfg(&server, 450, 100);
    cfg.to += 30_000_000; // half a bar more: the bar opening at +450 min is in the range
    cfg.checkpoint = Some(dir.path().join("btcusdt-1m.json"));

    let cancel = CancellationToken::new();
    let mut seen: Vec<BackfillProgress> = Vec::new();
    let report = {
        let cancel = cancel.clone();
        let mut progress = |p: &BackfillProgress| {
            seen.push(p.clone());
            if p.pages == 2 {
                cancel.cancel();
            }
        };
        backfill(&cfg, &*bus, &cancel, &mut progress)
            .await
            .expect("first run")
    };
    assert!(report.stopped && !report.complete, "{report:?}");
    assert_eq!((report.published, report.pages, report.total), (200, 2, 451));
    assert_eq!(seen.iter().map(|p| p.done).collect::<Vec<_>>(), vec![100, 200]);
    let cp: serde_json::Value = serde_json::from_slice(
        &std::fs::read(cfg.checkpoint.as_ref().expect("path")).expect("checkpoint written"),
    )
    .expect("json");
    assert_eq!(cp["next_start"].as_i64(), Some((FROM_MS + 200 * 60_000) * 1000));
    let first_run_requests = server.requests().len();
    assert_eq!(first_run_requests, 2);

    let mut seen2: Vec<BackfillProgress> = Vec::new();
    let report2 = backfill(
        &cfg,
        &*bus,
        &CancellationToken::new(),
        &mut |p: &BackfillProgress| seen2.push(p.clone()),
    )
    .await
    .expect("second run");
    assert!(report2.complete, "{report2:?}");
    assert_eq!(report2.resumed_from, Some((FROM_MS + 200 * 60_000) * 1000));
    assert_eq!((report2.published, report2.pages, report2.done), (251, 3, 451));
    assert_eq!(
        seen2.iter().map(|p| p.done).collect::<Vec<_>>(),
        vec![300, 400, 451]
    );
    assert!(seen2.iter().all(|p| p.total == 451));
    let starts: Vec<i64> = server
        .requests()
        .iter()
        .map(|r| {
            r.query
                .get("startTime")
                .and_then(|s| s.parse().ok())
                .expect("startTime")
        })
        .collect();
    let want: Vec<i64> = (0..5).map(|i| FROM_MS + i * 100 * 60_000).collect();
    assert_eq!(
        starts, want,
        "each page starts one interval after the last bar; the second run at the checkpoint"
    );

    let report3 = backfill(
        &cfg,
        &*bus,
        &CancellationToken::new(),
        &mut |_: &BackfillProgress| {},
    )
    .await
    .expect("third run");
    assert!(report3.complete && report3.published == 0, "{report3:?}");
    assert_eq!(
        server.requests().len(),
        5,
        "a complete checkpoint asks for nothing"
    );

    col.wait_for("451 klines", |evs| kline_ids(evs).len() >= 451)
        .await;
    let stored = [&report, &report2, &report3]
        .iter()
        .map(|r| r.published - r.duplicates + r.rate_limited)
        .sum();
    col.wait_for_all(stored).await;
    let ks = kline_ids(&col.events());
    let distinct: BTreeSet<&String> = ks.iter().map(|(id, _)| id).collect();
    assert_eq!((ks.len(), distinct.len()), (451, 451), "every bar exactly once");
    let opens: BTreeSet<i64> = ks.iter().map(|(_, o)| *o).collect();
    assert_eq!(opens.first().copied(), Some(FROM_MS * 1000));
    assert_eq!(opens.last().copied(), Some((FROM_MS + 450 * 60_000) * 1000));

    // The same range again without the checkpoint: the bus de-duplicates every bar.
    let mut again = cfg.clone();
    again.checkpoint = None;
    let report4 = backfill(
        &again,
        &*bus,
        &CancellationToken::new(),
        &mut |_: &BackfillProgress| {},
    )
    .await
    .expect("re-run");
    assert_eq!((report4.published, report4.duplicates), (451, 451), "{report4:?}");
}

/// The WebSocket handshake must ask for `/stream?streams=`; the server refuses anything else
/// and the connector keeps retrying with backoff, publishing one `disconnected` status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_handshake_is_retried_with_backoff() {
    let server = BinanceServer::start(ServerConfig {
        tape: Tape::barter_trades(5),
        ..ServerConfig::default()
    })
    .await;
    let bus = dyn_bus(inproc_bus(4, 100_000));
    let col = collect(bus.clone()).await;
    let mut cfg = live_cfg(&server, &["btcusdt"], "trade");
    cfg.ws_base = format!("{}/ws", server.ws_base());
    let run = start(cfg, bus.clone());
    wait_until("4 refused handshakes", WAIT, || server.rejected().len() >= 4).await;
    let stats = run.stop().await;
    assert!(
        server
            .rejected()
            .iter()
            .all(|t| t.starts_with("/ws/stream?streams=")),
        "{:?}",
        server.rejected()
    );
    assert!(server.connections().is_empty());
    assert!(stats.connect_failures >= 4 && stats.connections == 0, "{stats:?}");
    col.wait_for("one disconnected status", |evs| {
        count_status(evs, FeedState::Disconnected) == 1
    })
    .await;
    let sts = col.statuses();
    assert!(sts[0].1.detail.contains("HTTP 400"), "{:?}", sts[0].1.detail);
}
