//! The TimescaleDB/PostgreSQL sink against the real PostgreSQL (`AURORAQ_TEST_POSTGRES_URL`,
//! default postgres://postgres@127.0.0.1:5432/postgres; each test creates and drops its own
//! database) and the buses: migrations, exactly-once rows under redelivery, acks only after
//! commit, PostgreSQL going away and coming back, partitions, views, dead letters, benchmark.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use auroraq_bus::{Bus, OutMessage};
use auroraq_schemas::*;
use auroraq_sink_timescale::tables::Table;
use auroraq_sink_timescale::{
    bench, connect, migrate_url, run_subscriptions, subscribe, BenchConfig, Flavor, SinkError, SinkMetrics,
    SinkStats, TimescaleConfig, TimescaleMode,
};
use auroraq_stage::to_message;
use auroraq_tests::proxy::Proxy;
use auroraq_tests::{free_port, inproc_bus, nats_bus, unique, wait_until, wait_until_async};
use tokio::task::JoinHandle;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

fn admin_url() -> String {
    std::env::var("AURORAQ_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A database of its own for one test, dropped at the end.
struct TestDb {
    name: String,
    url: String,
}

impl TestDb {
    async fn new() -> TestDb {
        let name = unique("aq_t_").to_lowercase();
        let (admin, _t) = connect(&admin_url(), &TimescaleConfig::new(admin_url()))
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL must run at {} for these tests: {e}", admin_url()));
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create the test database");
        let url = auroraq_sink_timescale::url_with_dbname(&admin_url(), &name).expect("url");
        TestDb { name, url }
    }

    async fn client(&self) -> Client {
        let (c, _task) = connect(&self.url, &TimescaleConfig::new(self.url.clone()))
            .await
            .expect("connect to the test database");
        c
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = std::mem::take(&mut self.name);
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                rt.block_on(async move {
                    if let Ok((c, _t)) = connect(&admin_url(), &TimescaleConfig::new(admin_url())).await {
                        let _ = c
                            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                            .await;
                    }
                });
            }
        })
        .join();
    }
}

fn sink_cfg(url: &str) -> TimescaleConfig {
    let mut c = TimescaleConfig::new(url);
    c.group = unique("sinkpg");
    c.application_name = c.group.clone();
    c.batch_rows = 100;
    c.batch_delay = Duration::from_millis(20);
    c.backoff_min = Duration::from_millis(50);
    c.backoff_max = Duration::from_millis(400);
    c.timescaledb = TimescaleMode::Off;
    c.ack_wait = Duration::from_secs(5);
    c
}

struct Running {
    task: JoinHandle<Result<SinkStats, SinkError>>,
    metrics: Arc<SinkMetrics>,
    cancel: CancellationToken,
}

fn logs() {
    // RUST_LOG=auroraq_sink_timescale=debug shows what the sink does.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

async fn start(bus: Arc<dyn Bus>, cfg: TimescaleConfig) -> Running {
    logs();
    let subs = subscribe(&*bus, &cfg).await.expect("subscribe");
    let metrics = Arc::new(SinkMetrics::default());
    let cancel = CancellationToken::new();
    let task = tokio::spawn(run_subscriptions(bus, cfg, subs, metrics.clone(), cancel.clone()));
    Running {
        task,
        metrics,
        cancel,
    }
}

async fn publish(bus: &dyn Bus, events: &[AnyEvent], id_suffix: &str) {
    let mut batch: Vec<OutMessage> = Vec::new();
    for ev in events {
        let mut m = to_message(ev).expect("encode");
        // A different bus id makes the bus deliver it again: a redelivery the sink must absorb.
        m.id.push_str(id_suffix);
        batch.push(m);
    }
    for chunk in batch.chunks(512) {
        bus.publish(chunk.to_vec()).await.expect("publish");
    }
}

async fn count(c: &Client, sql: &str) -> i64 {
    c.query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        .get(0)
}

async fn text(c: &Client, sql: &str) -> String {
    c.query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        .get(0)
}

fn trade_at(seq: u64, ts: Micros) -> AnyEvent {
    let mut t = samples::trade(seq);
    t.meta = Meta::raw(
        EventKind::TradeTick,
        "binance",
        &format!("BTCUSDT:{seq}"),
        ts,
        ts + 350,
    );
    AnyEvent::TradeTick(t)
}

fn trades(range: std::ops::Range<u64>) -> Vec<AnyEvent> {
    range.map(|i| AnyEvent::TradeTick(samples::trade(i))).collect()
}

const ALL_TABLES: [&str; 18] = [
    "trades",
    "klines",
    "book_tickers",
    "book_updates",
    "articles",
    "sentiment_scores",
    "sentiment_asset_scores",
    "fused_signals",
    "order_intents",
    "risk_decisions",
    "orders",
    "fills",
    "portfolio_snapshots",
    "alerts",
    "dead_letters",
    "feed_statuses",
    "mark_prices",
    "liquidations",
];

#[tokio::test]
async fn migrations_apply_from_empty_and_twice() {
    let db = TestDb::new().await;
    let mut cfg = TimescaleConfig::new(db.url.clone());
    cfg.timescaledb = TimescaleMode::Auto; // no extension on this server: native partitioning
    let first = migrate_url(&db.url, &cfg).await.expect("first migration");
    assert_eq!(first.flavor, Flavor::Postgres);
    assert_eq!(first.applied, vec![1, 2, 3, 4]);
    assert_eq!(first.versions, vec![1, 2, 3, 4]);
    let again = migrate_url(&db.url, &cfg).await.expect("second migration");
    assert!(
        again.applied.is_empty(),
        "nothing to apply twice: {:?}",
        again.applied
    );
    assert_eq!(again.versions, vec![1, 2, 3, 4]);
    let c = db.client().await;
    assert_eq!(count(&c, "SELECT count(*) FROM aq_schema_migrations").await, 4);
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM aq_schema_migrations WHERE flavor = 'postgres'"
        )
        .await,
        4
    );

    // The sink's column lists and types are the tables'.
    assert_eq!(Table::ALL.len(), ALL_TABLES.len());
    for t in Table::ALL {
        let rows = c
            .query(
                "SELECT a.attname::text, ty.typname::text FROM pg_attribute a JOIN pg_type ty ON ty.oid = a.atttypid
                 WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
                &[&t.name()],
            )
            .await
            .expect("columns");
        let cols: Vec<(String, String)> = rows
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .filter(|(n, _)| n != "inserted_at")
            .collect();
        let expected: Vec<(String, String)> = t
            .columns()
            .iter()
            .zip(t.types())
            .map(|(n, ty)| ((*n).to_owned(), ty.name().to_owned()))
            .collect();
        assert_eq!(cols, expected, "columns of {}", t.name());
        // Keyed by (ts, event_id), partitioned by range of ts, with a default partition.
        let key = text(
            &c,
            &format!(
                "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = '{}'::regclass AND contype = 'p'",
                t.name()
            ),
        )
        .await;
        let want = if t == Table::SentimentAssetScores {
            "PRIMARY KEY (ts, event_id, asset)"
        } else {
            "PRIMARY KEY (ts, event_id)"
        };
        assert_eq!(key, want, "key of {}", t.name());
        assert_eq!(
            text(&c, &format!("SELECT pg_get_partkeydef('{}'::regclass)", t.name())).await,
            "RANGE (ts)"
        );
        assert_eq!(
            count(
                &c,
                &format!(
                    "SELECT count(*) FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhrelid
                     WHERE i.inhparent = '{0}'::regclass AND p.relname = '{0}_default'",
                    t.name()
                )
            )
            .await,
            1,
            "default partition of {}",
            t.name()
        );
        // This month and the two ahead.
        assert_eq!(
            count(
                &c,
                &format!(
                    "SELECT count(*) FROM generate_series(0, 2) g
                     WHERE to_regclass('{}_p' || to_char(date_trunc('month', now() AT TIME ZONE 'UTC') + g * INTERVAL '1 month', 'YYYY_MM')) IS NOT NULL",
                    t.name()
                )
            )
            .await,
            3,
            "partitions ahead of {}",
            t.name()
        );
    }
    for v in [
        "trades_1m",
        "trades_1h",
        "klines_1h",
        "sentiment_1h",
        "dash_prices",
        "dash_prices_hourly",
        "dash_assets",
        "dash_fused",
        "dash_fused_latest",
        "dash_sentiment_hourly",
        "dash_price_sentiment_hourly",
        "dash_articles_hourly",
        "dash_scores_hourly",
        "dash_pnl",
        "dash_fills_hourly",
        "dash_dead_letters_hourly",
        "dash_feed_status",
        "dash_alerts_hourly",
    ] {
        // Every view is there and answers.
        let n = count(&c, &format!("SELECT count(*) FROM {v}")).await;
        assert_eq!(n, 0, "{v} on an empty database");
    }

    // Several sinks starting at once on another empty database: one applies, the others wait.
    let db2 = TestDb::new().await;
    let runs = futures::future::join_all((0..3).map(|_| migrate_url(&db2.url, &cfg))).await;
    let mut applied = Vec::new();
    for r in runs {
        applied.extend(r.expect("concurrent migration").applied);
    }
    applied.sort();
    assert_eq!(applied, vec![1, 2, 3, 4], "each migration applied once");

    // A database set up without TimescaleDB is not taken for one that has it.
    let mut require = cfg.clone();
    require.timescaledb = TimescaleMode::Require;
    assert!(migrate_url(&db.url, &require).await.is_err());
}

#[tokio::test]
async fn every_kind_lands_once_when_delivered_twice() {
    let db = TestDb::new().await;
    let bus = inproc_bus(4, 1 << 14);
    let mut cfg = sink_cfg(&db.url);
    // The sample dead letter is dated 1970: no bound on event times here.
    cfg.max_past_days = 0;
    let sink = start(bus.clone(), cfg).await;
    let mut events = samples::all();
    events.extend(trades(1000..2000));
    let n = events.len() as u64;
    publish(&*bus, &events, "").await;
    // The same events again, in another order, as a redelivery after a crash would bring them.
    let mut again = events.clone();
    again.reverse();
    publish(&*bus, &again, "#again").await;
    let m = sink.metrics.clone();
    wait_until("every delivery is acked", Duration::from_secs(60), || {
        m.acked.load(Ordering::Relaxed) >= 2 * n
    })
    .await;
    bus.close().await;
    let stats = sink.task.await.expect("join").expect("sink");
    assert_eq!(stats.received, 2 * n);
    assert_eq!(stats.acked, 2 * n);
    assert_eq!(stats.dead_letters, 0);
    // n events, plus the fill among the order updates and the sample score's one asset.
    assert_eq!(stats.rows_inserted, n + 2);
    // Each second copy was either dropped within its batch or found its rows already there.
    assert!(stats.rows_duplicate + stats.batch_repeats >= n, "{stats:?}");
    assert!(stats.rows_duplicate <= n + 2, "{stats:?}");
    assert_eq!(stats.flavor.as_deref(), Some("postgres"));

    let c = db.client().await;
    let mut expected: BTreeMap<&str, i64> = ALL_TABLES.iter().map(|t| (*t, 1)).collect();
    expected.insert("trades", 1001);
    for (t, want) in &expected {
        let got = count(&c, &format!("SELECT count(*) FROM {t}")).await;
        assert_eq!(got, *want, "rows in {t}");
        let distinct = count(&c, &format!("SELECT count(DISTINCT event_id) FROM {t}")).await;
        assert_eq!(distinct, *want, "distinct ids in {t}");
    }
    // The ids are the events'.
    let ids: HashSet<String> = events.iter().map(|e| e.meta().event_id.clone()).collect();
    for t in ALL_TABLES {
        for r in c
            .query(&format!("SELECT event_id FROM {t}"), &[])
            .await
            .expect("ids")
        {
            let id: String = r.get(0);
            assert!(ids.contains(&id), "{t} holds an unknown id {id}");
        }
    }

    // Values arrive exact.
    let t1 = samples::trade(1);
    let row = c
        .query_one(
            "SELECT price::text, quantity::text, aggressor, symbol, (extract(epoch FROM ts) * 1000000)::bigint,
                    (extract(epoch FROM ts_ingest) * 1000000)::bigint, ts_processed IS NULL
             FROM trades WHERE event_id = $1",
            &[&t1.meta.event_id],
        )
        .await
        .expect("sample trade");
    assert_eq!(row.get::<_, String>(0), "64123.45000000");
    assert_eq!(row.get::<_, String>(1), "0.00150000");
    assert_eq!(row.get::<_, String>(2), "buy");
    assert_eq!(row.get::<_, String>(3), "BTCUSDT");
    assert_eq!(row.get::<_, i64>(4), t1.meta.ts_event);
    assert_eq!(row.get::<_, i64>(5), t1.meta.ts_ingest);
    assert!(row.get::<_, bool>(6));
    let checks = [
        ("SELECT quote_volume::text FROM klines", "791234.5678"),
        (
            "SELECT \"interval\" || ' ' || extract(epoch FROM open_time)::bigint FROM klines",
            "1m 1700000000",
        ),
        (
            "SELECT bids::text FROM book_updates",
            r#"[{"price": "0.0024", "quantity": "10"}]"#,
        ),
        ("SELECT asks->0->>'quantity' FROM book_updates", "0"),
        (
            "SELECT keywords::text || tickers::text FROM articles",
            "{crypto}{BTC}",
        ),
        ("SELECT origin FROM articles", "Example News"),
        (
            "SELECT (probabilities->>'positive') || ' ' || label FROM sentiment_scores",
            "0.81 positive",
        ),
        (
            "SELECT asset || ' ' || sentiment_score FROM sentiment_asset_scores",
            "BTC 0.885",
        ),
        (
            "SELECT array_length(derived_from, 1)::text FROM sentiment_scores",
            "1",
        ),
        (
            "SELECT trend || ' ' || (weights_used->>'feedly') FROM fused_signals",
            "rising 1.0",
        ),
        (
            "SELECT quantity::text || ' ' || (notional IS NULL)::text FROM order_intents",
            "0.01 true",
        ),
        (
            "SELECT verdict || ' ' || (checks->>'max_notional') FROM risk_decisions",
            "resized resized",
        ),
        (
            "SELECT status || ' ' || fee::text FROM orders",
            "filled 0.32061725",
        ),
        (
            "SELECT price::text || ' x ' || quantity::text FROM fills",
            "64123.45 x 0.005",
        ),
        (
            "SELECT positions->0->>'avg_price' FROM portfolio_snapshots",
            "64123.45",
        ),
        ("SELECT equity::text FROM portfolio_snapshots", "100000.00"),
        (
            "SELECT severity || ' ' || kind FROM alerts",
            "warning limit_breach",
        ),
        (
            "SELECT encode(original_bytes, 'hex') FROM dead_letters",
            "009f9296ff",
        ),
        (
            "SELECT status || ' ' || (attributes->>'expected') FROM feed_statuses",
            "gap 1027025",
        ),
        (
            "SELECT mark_price::text || ' ' || index_price::text || ' ' || funding_rate::text FROM mark_prices",
            "11794.15000000 11784.62659091 0.00038167",
        ),
        (
            "SELECT (extract(epoch FROM next_funding_time) * 1000)::bigint::text FROM mark_prices",
            "1562306400000",
        ),
        (
            "SELECT side || ' ' || order_type || ' ' || time_in_force || ' ' || status FROM liquidations",
            "sell LIMIT IOC FILLED",
        ),
        (
            "SELECT quantity::text || ' @ ' || average_price::text || ' ' || filled_quantity::text FROM liquidations",
            "0.014 @ 9910 0.014",
        ),
    ];
    for (sql, want) in checks {
        assert_eq!(text(&c, sql).await, want, "{sql}");
    }
}

#[tokio::test]
async fn acks_only_after_commit_and_a_killed_sink_loses_nothing() {
    let db = TestDb::new().await;
    let (bus, _guard) = nats_bus(2).await;
    let bus: Arc<dyn Bus> = bus;
    let mut cfg = sink_cfg(&db.url);
    // Longer than the test holds deliveries, so that nothing comes back before the kill.
    cfg.ack_wait = Duration::from_secs(10);
    // Room for all 500 deliveries of the second wave in flight.
    cfg.batch_rows = 200;
    assert!(cfg.max_in_flight() >= 500);
    // The sink holds batches, not rows: batches cut by size alone (not by a timer racing the
    // deliveries, which on a busy machine cuts small ones) are what make the 500 fit.
    cfg.batch_delay = Duration::from_secs(3);
    let (app, group) = (
        cfg.application_name.clone(),
        auroraq_bus::topics::token(&cfg.group),
    );
    let first = start(bus.clone(), cfg.clone()).await;
    publish(&*bus, &trades(0..300), "").await;
    let m = first.metrics.clone();
    wait_until("the first 300 are acked", Duration::from_secs(60), || {
        m.acked.load(Ordering::Relaxed) >= 300
    })
    .await;

    // Block writes to trades (reads still work) so the next batches stall mid-transaction.
    let mut locker = db.client().await;
    let lock = locker.transaction().await.expect("begin");
    lock.batch_execute("LOCK TABLE trades IN SHARE MODE")
        .await
        .expect("lock");
    publish(&*bus, &trades(300..800), "").await;
    wait_until(
        "the sink holds all 500 new deliveries",
        Duration::from_secs(60),
        || m.received.load(Ordering::Relaxed) >= 800,
    )
    .await;
    // And the server has handed every one of them out (so each comes back as a redelivery).
    wait_until_async(
        "the server delivered all 500 new messages",
        Duration::from_secs(60),
        || async {
            bus.backlogs()
                .await
                .ok()
                .and_then(|b| b.get(&group).map(|g| (g.pending, g.unacked)))
                == Some((0, 500))
        },
    )
    .await;
    // The sink is mid-write once its session waits on the lock: what it holds is not committed.
    let c = db.client().await;
    let sessions =
        |what: &str| format!("SELECT count(*) FROM pg_stat_activity WHERE application_name = '{app}'{what}");
    let blocked = sessions(" AND wait_event_type = 'Lock'");
    wait_until_async(
        "the sink's write waits on the lock",
        Duration::from_secs(60),
        || async { count(&c, &blocked).await >= 1 },
    )
    .await;
    assert_eq!(count(&c, "SELECT count(*) FROM trades").await, 300);
    assert_eq!(
        m.acked.load(Ordering::Relaxed),
        300,
        "nothing is acked before its rows are committed"
    );

    // Kill the sink mid-batch: its tasks die with it, its connection closes.
    first.task.abort();
    let _ = first.task.await;
    lock.rollback().await.expect("unlock");
    // Once its sessions are gone the killed sink can commit nothing more.
    let any = sessions("");
    wait_until_async(
        "the killed sink's sessions end",
        Duration::from_secs(30),
        || async { count(&c, &any).await == 0 },
    )
    .await;
    assert_eq!(
        count(&c, "SELECT count(*) FROM trades").await,
        300,
        "the killed sink committed nothing more"
    );

    // A new sink in the same group gets the 500 unacked deliveries again.
    let second = start(bus.clone(), cfg).await;
    let t0 = Instant::now();
    while count(&c, "SELECT count(*) FROM trades").await < 800 {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the redeliveries are not all written"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Everything of the group settled (nothing stored undelivered, nothing delivered unacked):
    // an acked delivery that was to come back would have had to come by now.
    wait_until_async(
        "the group has settled everything",
        Duration::from_secs(60),
        || async {
            bus.backlogs()
                .await
                .ok()
                .and_then(|b| b.get(&group).map(|g| (g.pending, g.unacked)))
                == Some((0, 0))
        },
    )
    .await;
    bus.close().await;
    let stats = second.task.await.expect("join").expect("sink");
    // Only the unacked deliveries came back (the 300 acked ones did not: no duplicates), all
    // as redeliveries, and they were written.
    // (The bus may deliver a message twice; the sink absorbs that as well.)
    assert!(stats.redelivered >= 500, "{stats:?}");
    assert_eq!(stats.rows_inserted, 500, "{stats:?}");
    assert_eq!(stats.rows_duplicate, 0, "no acked delivery came back: {stats:?}");
    assert_eq!(count(&c, "SELECT count(*) FROM trades").await, 800);
    assert_eq!(
        count(&c, "SELECT count(DISTINCT event_id) FROM trades").await,
        800
    );
}

fn pg_target() -> SocketAddr {
    let cfg: tokio_postgres::Config = admin_url().parse().expect("url");
    let host = match cfg.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".to_owned(),
    };
    let port = cfg.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}")
        .parse()
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], port)))
}

#[tokio::test]
async fn postgres_down_then_up_loses_nothing() {
    let db = TestDb::new().await;
    let mut proxy = Proxy::new(pg_target()).await;
    let via_proxy = db.url.replacen(
        &format!(":{}/", pg_target().port()),
        &format!(":{}/", proxy.port),
        1,
    );
    assert_ne!(via_proxy, db.url, "the URL goes through the proxy");
    let bus = inproc_bus(4, 1 << 14);
    let cfg = sink_cfg(&via_proxy);
    let app = cfg.application_name.clone();
    let max_in_flight = cfg.max_in_flight();
    let sink = start(bus.clone(), cfg).await;
    let m = sink.metrics.clone();
    let c = db.client().await;

    publish(&*bus, &trades(0..300), "").await;
    wait_until("the first wave is acked", Duration::from_secs(60), || {
        m.acked.load(Ordering::Relaxed) >= 300
    })
    .await;

    // PostgreSQL goes away: the sink holds its batch, retries, and acks nothing.
    proxy.down().await;
    publish(&*bus, &trades(300..1300), "").await;
    wait_until("the sink retries", Duration::from_secs(30), || {
        m.retries.load(Ordering::Relaxed) >= 3
    })
    .await;
    assert_eq!(m.acked.load(Ordering::Relaxed), 300, "nothing acked while down");
    assert_eq!(count(&c, "SELECT count(*) FROM trades").await, 300);
    // Intake stops once the sink's pipeline is full, which may take a while on a busy machine.
    // Timed by the writer's retries rather than the clock: `held` is what it received once that
    // stood still across two retries; it must then stay so across three more.
    let received = || m.received.load(Ordering::Relaxed);
    let retries = || m.retries.load(Ordering::Relaxed);
    let t0 = Instant::now();
    let mut held = received();
    loop {
        let r = retries();
        wait_until("the sink retries again", Duration::from_secs(30), || {
            retries() >= r + 2
        })
        .await;
        if received() == held {
            break;
        }
        held = received();
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the sink never stops consuming while it cannot write"
        );
    }
    assert!(held <= 300 + max_in_flight as u64, "received {held} while down");
    let r = retries();
    wait_until("three more retries", Duration::from_secs(30), || {
        retries() >= r + 3
    })
    .await;
    assert_eq!(received(), held, "the sink stops consuming while it cannot write");
    assert!(held < 1300);

    // Back up: everything lands, once.
    proxy.up().await;
    wait_until("the second wave is acked", Duration::from_secs(60), || {
        m.acked.load(Ordering::Relaxed) >= 1300
    })
    .await;
    assert_eq!(count(&c, "SELECT count(*) FROM trades").await, 1300);
    assert!(m.reconnects.load(Ordering::Relaxed) >= 1);

    // The server ends the sink's session again and again while events flow.
    let killer_db = db.url.clone();
    let app2 = app.clone();
    let stop_killing = CancellationToken::new();
    let stop_k = stop_killing.clone();
    let killer = tokio::spawn(async move {
        let (k, _t) = connect(&killer_db, &TimescaleConfig::new(killer_db.clone()))
            .await
            .expect("connect");
        let mut killed = 0i64;
        while !stop_k.is_cancelled() {
            if let Ok(rows) = k
                .query(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
                    &[&app2],
                )
                .await
            {
                killed += rows.len() as i64;
            }
            tokio::select! {
                _ = stop_k.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_millis(150)) => {}
            }
        }
        killed
    });
    for chunk in (1300u64..3300).collect::<Vec<_>>().chunks(100) {
        publish(&*bus, &trades(chunk[0]..chunk[0] + chunk.len() as u64), "").await;
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop_killing.cancel();
    let killed = killer.await.expect("killer");
    assert!(killed >= 1, "the test terminated the sink's session");
    wait_until("the third wave is acked", Duration::from_secs(60), || {
        m.acked.load(Ordering::Relaxed) >= 3300
    })
    .await;
    bus.close().await;
    let stats = sink.task.await.expect("join").expect("sink");
    assert_eq!(count(&c, "SELECT count(*) FROM trades").await, 3300);
    assert_eq!(
        count(&c, "SELECT count(DISTINCT event_id) FROM trades").await,
        3300
    );
    assert!(stats.reconnects >= 2, "reconnected after each loss: {stats:?}");
    assert_eq!(stats.acked, 3300);
}

#[tokio::test]
async fn partitions_are_created_for_new_months() {
    let db = TestDb::new().await;
    let bus = inproc_bus(4, 4096);
    let mut cfg = sink_cfg(&db.url);
    // No bound on event times here: 1970 and 30 years ahead are written (see
    // `events_outside_the_time_range_become_dead_letters` for the default bounds).
    cfg.max_past_days = 0;
    cfg.max_future_days = 0;
    let sink = start(bus.clone(), cfg).await;
    let m = sink.metrics.clone();
    let c0 = db.client().await;
    // Wait for the schema (the sink migrates on its first batch).
    publish(&*bus, &[trade_at(0, 1_615_809_600_000_000)], "").await; // 2021-03-15 12:00
    wait_until("the first event is acked", Duration::from_secs(30), || {
        m.acked.load(Ordering::Relaxed) >= 1
    })
    .await;

    let now = now_micros();
    let month = 31 * 86_400_000_000i64;
    let events = vec![
        trade_at(1, 1_617_235_200_000_000 - 1), // 2021-03-31 23:59:59.999999
        trade_at(2, 1_617_235_200_000_000),     // 2021-04-01 00:00:00
        trade_at(3, now + 4 * month),           // beyond the partitions made ahead
        trade_at(4, now + 30 * 12 * month),     // far future: the default partition
        trade_at(5, 0),                         // 1970-01
    ];
    publish(&*bus, &events, "").await;
    // A row of May 2019 lands in the default partition when written by someone else...
    c0.batch_execute(
        "INSERT INTO trades (ts, event_id, source, ts_ingest, exchange, symbol, trade_id, price, quantity, aggressor, aggregated)
         VALUES ('2019-05-10 00:00:00+00', 'other', 'test', now(), 'x', 'BTCUSDT', '1', 1, 1, 'buy', false)",
    )
    .await
    .expect("insert");
    wait_until("the events are acked", Duration::from_secs(30), || {
        m.acked.load(Ordering::Relaxed) >= 6
    })
    .await;
    // ...and moves into its month's partition when the sink first writes that month.
    publish(&*bus, &[trade_at(6, 1_558_310_400_000_000)], "").await; // 2019-05-20
    let mut fused = match samples::all()
        .into_iter()
        .find(|e| e.kind() == EventKind::FusedSignal)
    {
        Some(AnyEvent::FusedSignal(f)) => f,
        _ => panic!("a fused sample"),
    };
    fused.meta.ts_event = 1_656_892_800_000_000; // 2022-07-04
    publish(&*bus, &[AnyEvent::FusedSignal(fused)], "").await;
    wait_until("the events are acked", Duration::from_secs(30), || {
        m.acked.load(Ordering::Relaxed) >= 8
    })
    .await;

    let c = db.client().await;
    let where_rows: BTreeMap<String, i64> = c
        .query(
            "SELECT tableoid::regclass::text, count(*) FROM trades GROUP BY 1",
            &[],
        )
        .await
        .expect("routing")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let ahead: String = text(
        &c,
        &format!(
            "SELECT 'trades_p' || to_char(to_timestamp({} / 1e6) AT TIME ZONE 'UTC', 'YYYY_MM')",
            now + 4 * month
        ),
    )
    .await;
    let expected: BTreeMap<String, i64> = [
        ("trades_p2021_03".to_owned(), 2),
        ("trades_p2021_04".to_owned(), 1),
        ("trades_p1970_01".to_owned(), 1),
        ("trades_p2019_05".to_owned(), 2),
        ("trades_default".to_owned(), 1),
        (ahead, 1),
    ]
    .into_iter()
    .collect();
    assert_eq!(where_rows, expected);
    assert!(
        count(
            &c,
            "SELECT count(*) FROM pg_class WHERE relname = 'fused_signals_p2022_07'"
        )
        .await
            == 1,
        "partitions are per table"
    );
    assert!(m.partitions_created.load(Ordering::Relaxed) >= 6);
    bus.close().await;
    sink.task.await.expect("join").expect("sink");
}

fn price_trade(seq: u64, symbol: &str, ts: Micros, price: &str, qty: &str) -> AnyEvent {
    let mut t = samples::trade(seq);
    t.symbol = symbol.to_owned();
    t.price = Dec::parse(price).expect("price");
    t.quantity = Dec::parse(qty).expect("qty");
    t.meta = Meta::raw(
        EventKind::TradeTick,
        "binance",
        &format!("{symbol}:{seq}"),
        ts,
        ts,
    );
    AnyEvent::TradeTick(t)
}

#[tokio::test]
async fn views_answer_the_dashboards_questions() {
    let db = TestDb::new().await;
    let bus = inproc_bus(4, 4096);
    let sink = start(bus.clone(), sink_cfg(&db.url)).await;
    let h10 = 1_704_189_600_000_000i64; // 2024-01-02 10:00 UTC
    let s = 1_000_000i64;
    let mut events = vec![
        price_trade(1, "BTCUSDT", h10, "100", "1"),
        price_trade(2, "BTCUSDT", h10 + 10 * s, "110", "2"),
        price_trade(3, "BTCUSDT", h10 + 20 * s, "90", "1"),
        price_trade(4, "BTCUSDT", h10 + 50 * s, "105", "1"),
        price_trade(5, "BTCUSDT", h10 + 65 * s, "106", "3"),
        price_trade(6, "ETHUSDT", h10 + 5 * s, "50", "1"),
    ];
    // Hourly klines of BTC-USD (ts = close).
    let kline = |open_time: Micros, close: &str| {
        let mut k = match samples::all().into_iter().find(|e| e.kind() == EventKind::Kline) {
            Some(AnyEvent::Kline(k)) => k,
            _ => panic!("a kline sample"),
        };
        k.symbol = "BTC-USD".into();
        k.exchange = "coinbase".into();
        k.interval = "1h".into();
        k.open_time = open_time;
        k.close_time = open_time + 3600 * s - 1;
        k.close = Dec::parse(close).expect("close");
        k.meta = Meta::raw(
            EventKind::Kline,
            "coinbase",
            &format!("BTC-USD:1h:{open_time}"),
            k.close_time,
            k.close_time,
        );
        AnyEvent::Kline(k)
    };
    events.push(kline(h10, "104"));
    events.push(kline(h10 + 3600 * s, "108"));
    // Scores: BTC 0.8 (conf 0.9), BTC+ETH -0.5 (conf 0.5), ETH 0.2 (conf 1.0).
    let base_score = match samples::all()
        .into_iter()
        .find(|e| e.kind() == EventKind::SentimentScore)
    {
        Some(AnyEvent::SentimentScore(x)) => x,
        _ => panic!("a score sample"),
    };
    for (i, (assets, score, conf, label)) in [
        (vec!["BTC"], 0.8, 0.9, "positive"),
        (vec!["BTC", "ETH"], -0.5, 0.5, "negative"),
        (vec!["ETH"], 0.2, 1.0, "neutral"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut x = base_score.clone();
        x.assets = assets.into_iter().map(String::from).collect();
        x.sentiment_score = score;
        x.confidence = conf;
        x.label = label.into();
        x.meta = Meta::raw(
            EventKind::SentimentScore,
            "sentiment",
            &format!("s{i}"),
            h10 + (i as i64 + 1) * 60 * s,
            h10,
        );
        events.push(AnyEvent::SentimentScore(x));
    }
    let base_fused = match samples::all()
        .into_iter()
        .find(|e| e.kind() == EventKind::FusedSignal)
    {
        Some(AnyEvent::FusedSignal(x)) => x,
        _ => panic!("a fused sample"),
    };
    for (i, (min, score)) in [(30, 0.4), (45, 0.6)].into_iter().enumerate() {
        let mut f = base_fused.clone();
        f.fused_score = score;
        f.meta = Meta::raw(
            EventKind::FusedSignal,
            "fusion",
            &format!("f{i}"),
            h10 + min * 60 * s,
            h10,
        );
        events.push(AnyEvent::FusedSignal(f));
    }
    let base_article = match samples::all()
        .into_iter()
        .find(|e| e.kind() == EventKind::Article)
    {
        Some(AnyEvent::Article(x)) => x,
        _ => panic!("an article sample"),
    };
    for (i, (min, origin)) in [
        (5, "Reuters"),
        (20, "Reuters"),
        (40, "Bloomberg"),
        (70, "Reuters"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut a = base_article.clone();
        a.origin = Some(origin.into());
        a.meta = Meta::raw(
            EventKind::Article,
            "feedly",
            &format!("a{i}"),
            h10 + min * 60 * s,
            h10,
        );
        events.push(AnyEvent::Article(a));
    }
    let base_pf = match samples::all()
        .into_iter()
        .find(|e| e.kind() == EventKind::PortfolioSnapshot)
    {
        Some(AnyEvent::PortfolioSnapshot(x)) => x,
        _ => panic!("a portfolio sample"),
    };
    for (i, equity) in ["1000", "1100", "990", "1050"].into_iter().enumerate() {
        let mut p = base_pf.clone();
        p.equity = Dec::parse(equity).expect("equity");
        p.realized_pnl = Dec::new(i as i64 * 10, 0);
        p.unrealized_pnl = Dec::new(5, 0);
        p.meta = Meta::raw(
            EventKind::PortfolioSnapshot,
            "execution.paper",
            &format!("p{i}"),
            h10 + i as i64 * 60 * s,
            h10,
        );
        events.push(AnyEvent::PortfolioSnapshot(p));
    }
    let n = events.len() as u64;
    publish(&*bus, &events, "").await;
    let m = sink.metrics.clone();
    wait_until("everything is acked", Duration::from_secs(30), || {
        m.acked.load(Ordering::Relaxed) >= n
    })
    .await;
    bus.close().await;
    sink.task.await.expect("join").expect("sink");

    let c = db.client().await;
    let q = |sql: &'static str| {
        let c = &c;
        async move { text(c, sql).await }
    };
    assert_eq!(
        q(
            "SELECT concat_ws(' ', open, high, low, close, volume, quote_volume, trades) FROM trades_1m
           WHERE symbol = 'BTCUSDT' AND bucket = '2024-01-02 10:00+00'"
        )
        .await,
        "100 110 90 105 5 515 4"
    );
    assert_eq!(
        q("SELECT concat_ws(' ', open, close, trades) FROM trades_1m WHERE symbol = 'BTCUSDT' AND bucket = '2024-01-02 10:01+00'").await,
        "106 106 1"
    );
    assert_eq!(
        q("SELECT concat_ws(' ', open, high, low, close, volume, trades) FROM trades_1h WHERE symbol = 'BTCUSDT'").await,
        "100 110 90 106 8 5"
    );
    assert_eq!(
        q("SELECT string_agg(to_char(bucket AT TIME ZONE 'UTC', 'HH24') || ':' || close, ',' ORDER BY bucket) FROM klines_1h").await,
        "10:104,11:108"
    );
    assert_eq!(
        q("SELECT concat_ws(' ', scores, round(avg_score::numeric, 4), round(weighted_score::numeric, 4), positive, negative, neutral)
           FROM sentiment_1h WHERE asset = 'BTC'").await,
        "2 0.1500 0.3357 1 1 0"
    );
    assert_eq!(
        q("SELECT concat_ws(' ', scores, round(avg_score::numeric, 4), round(weighted_score::numeric, 4)) FROM sentiment_1h WHERE asset = 'ETH'").await,
        "2 -0.1500 -0.0333"
    );
    assert_eq!(
        q("SELECT concat_ws(' ', scores, signals, fused_avg, fused_last, trend_last) FROM dash_sentiment_hourly WHERE asset = 'BTC'").await,
        "2 2 0.5 0.6 rising"
    );
    assert_eq!(
        q("SELECT concat_ws(' ', asset, fused_score) FROM dash_fused_latest").await,
        "BTC 0.6"
    );
    // Hourly price per asset: mean of BTCUSDT's trade bar close (106) and BTC-USD's kline (104).
    assert_eq!(
        q("SELECT concat_ws(' ', price, round(weighted_score::numeric, 4), fused_last) FROM dash_price_sentiment_hourly
           WHERE asset = 'BTC' AND bucket = '2024-01-02 10:00+00'").await,
        "105.0000000000000000 0.3357 0.6"
    );
    assert_eq!(
        q("SELECT string_agg(origin || ':' || asset || ':' || granularity || ':' || close, ',' ORDER BY origin, symbol, bucket) FROM dash_prices").await,
        "klines:BTC:1h:104,klines:BTC:1h:108,trades:BTC:1m:105,trades:BTC:1m:106,trades:ETH:1m:50"
    );
    assert_eq!(
        q("SELECT string_agg(to_char(bucket AT TIME ZONE 'UTC', 'HH24') || ' ' || source || ' ' || publisher || ' ' || articles, ', ' ORDER BY bucket, publisher)
           FROM dash_articles_hourly").await,
        "10 feedly Bloomberg 1, 10 feedly Reuters 2, 11 feedly Reuters 1"
    );
    assert_eq!(
        q("SELECT string_agg(concat_ws(' ', equity, total_pnl, equity_change, round(drawdown, 4)), ', ' ORDER BY ts) FROM dash_pnl").await,
        "1000 5 0 0.0000, 1100 15 100 0.0000, 990 25 -10 -0.1000, 1050 35 50 -0.0455"
    );
    assert_eq!(
        q("SELECT string_agg(asset, ',' ORDER BY asset) FROM dash_assets").await,
        "BTC,ETH"
    );
    assert_eq!(
        q("SELECT concat_ws(',', aq_base_asset('BTCUSDT'), aq_base_asset('btc-usd'), aq_base_asset('ETHBTC'), aq_base_asset('XYZ'), aq_base_asset('USDT'))").await,
        "BTC,BTC,ETH,XYZ,USDT"
    );
}

#[tokio::test]
async fn bad_events_become_dead_letters_and_the_rest_land() {
    let db = TestDb::new().await;
    let bus = inproc_bus(4, 4096);
    let mut cfg = sink_cfg(&db.url);
    cfg.batch_rows = 50;
    cfg.batch_delay = Duration::from_millis(200);
    let group = cfg.group.clone();
    let sink = start(bus.clone(), cfg).await;
    let mut events = trades(0..40);
    // PostgreSQL cannot hold a time this early.
    let mut early = samples::trade(100);
    early.meta.ts_event = i64::MIN / 2;
    events.push(AnyEvent::TradeTick(early));
    // Nor index a symbol this long (the database rejects the row: program limit exceeded).
    let mut long = samples::trade(101);
    // (Random CJK characters: about 9 KB that no compression brings under the 2.7 KB limit.)
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    long.symbol = (0..3000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from_u32(0x4E00 + (x % 20_000) as u32).unwrap_or('?')
        })
        .collect();
    events.push(AnyEvent::TradeTick(long));
    // NUL characters are replaced, not rejected.
    let mut nul = samples::trade(102);
    nul.trade_id = "a\0b".into();
    events.push(AnyEvent::TradeTick(nul));
    publish(&*bus, &events, "").await;
    bus.publish(vec![OutMessage::new(
        "market.trades.x.y",
        None,
        "garbage-1",
        vec![1u8, 2, 3].into(),
    )])
    .await
    .expect("publish garbage");
    let m = sink.metrics.clone();
    // 44 deliveries, then the three dead letters come back through `dlq.>` and are stored.
    wait_until("all is settled", Duration::from_secs(60), || {
        m.acked.load(Ordering::Relaxed) >= 41 + 3 && m.dead_letters.load(Ordering::Relaxed) >= 3
    })
    .await;
    bus.close().await;
    let stats = sink.task.await.expect("join").expect("sink");
    assert_eq!(stats.dead_letters, 3, "{stats:?}");
    let c = db.client().await;
    assert_eq!(count(&c, "SELECT count(*) FROM trades").await, 41);
    assert_eq!(
        text(&c, "SELECT trade_id FROM trades WHERE trade_id LIKE 'a%b'").await,
        "a\u{FFFD}b"
    );
    assert_eq!(
        text(
            &c,
            &format!(
                "SELECT string_agg(reason, ',' ORDER BY reason) FROM dead_letters WHERE stage = '{}'",
                group
            )
        )
        .await,
        "decode_error,invalid_event,rejected_by_database"
    );
}

#[tokio::test]
async fn events_outside_the_time_range_become_dead_letters() {
    let db = TestDb::new().await;
    let bus = inproc_bus(4, 4096);
    let mut cfg = sink_cfg(&db.url);
    cfg.max_past_days = 3650;
    cfg.max_future_days = 30;
    let group = cfg.group.clone();
    let sink = start(bus.clone(), cfg).await;
    let m = sink.metrics.clone();
    let now = now_micros();
    let day = 86_400_000_000i64;
    // Forty years of monthly events from 1970 (each would make a partition), a day-old one at
    // the bound's edge, and events of now and 60 days ahead.
    let mut events: Vec<AnyEvent> = (0..480u64).map(|i| trade_at(i, i as i64 * 31 * day)).collect();
    events.push(trade_at(1000, now - 3649 * day));
    events.push(trade_at(1001, now));
    events.push(trade_at(1002, now + 60 * day));
    publish(&*bus, &events, "").await;
    wait_until("all is settled", Duration::from_secs(60), || {
        m.acked.load(Ordering::Relaxed) + m.dead_letters.load(Ordering::Relaxed) >= 483
            && m.dead_letters.load(Ordering::Relaxed) >= 481
    })
    .await;
    // The dead letters come back through `dlq.>` and are stored.
    wait_until("the dead letters are stored", Duration::from_secs(60), || {
        m.acked.load(Ordering::Relaxed) >= 2 + 481
    })
    .await;
    bus.close().await;
    let stats = sink.task.await.expect("join").expect("sink");
    assert_eq!(stats.dead_letters, 481, "{stats:?}");
    let c = db.client().await;
    assert_eq!(count(&c, "SELECT count(*) FROM trades").await, 2);
    assert_eq!(
        count(
            &c,
            &format!(
                "SELECT count(*) FROM dead_letters WHERE stage = '{group}' AND reason = 'out_of_time_range'"
            )
        )
        .await,
        481
    );
    let why = text(
        &c,
        &format!("SELECT error FROM dead_letters WHERE stage = '{group}' ORDER BY error LIMIT 1"),
    )
    .await;
    assert!(
        why.contains("1970-") && why.contains("3650 days before now"),
        "{why}"
    );
    // No partition of trades before the bound: only the months written and those made ahead.
    let old_partitions = count(
        &c,
        "SELECT count(*) FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent JOIN pg_class k ON k.oid = i.inhrelid
         WHERE p.relname = 'trades' AND k.relname LIKE 'trades\\_p%' AND k.relname < 'trades_p2000'",
    )
    .await;
    assert_eq!(
        old_partitions, 0,
        "partitions for months before the accepted range"
    );
}

#[tokio::test]
async fn benchmark_runs_and_reports_every_path() {
    let mut cfg = BenchConfig::new(admin_url());
    cfg.rows = 2000;
    cfg.batch_rows = 500;
    cfg.rounds = 1;
    let r = bench(&cfg).await.expect("bench");
    let names: Vec<&str> = r.paths.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "bare_copy",
            "sink_writer",
            "sink_writer_staged",
            "sink_writer_redelivered",
            "sink_bus",
            "avro_decode"
        ]
    );
    for p in &r.paths {
        assert!(p.median > 0.0 && p.rounds.len() == 1, "{p:?}");
    }
    assert_eq!(r.path("bare_copy").and_then(|p| p.vs_bare), Some(1.0));
    // The role here is a superuser: every path started after a CHECKPOINT, and the start-up
    // figure kept apart from the sink's clock was measured.
    assert!(r.quiesced, "{r:?}");
    assert!(r.remigrate_ms > 0.0 && r.remigrate_ms.is_finite(), "{r:?}");
    // The scratch database is gone.
    let (c, _t) = connect(&admin_url(), &TimescaleConfig::new(admin_url()))
        .await
        .expect("connect");
    assert_eq!(
        count(
            &c,
            &format!(
                "SELECT count(*) FROM pg_database WHERE datname = '{}'",
                r.database
            )
        )
        .await,
        0
    );
}

#[tokio::test]
async fn stop_gives_up_waiting_and_leaves_the_batch_unacked() {
    let db = TestDb::new().await;
    let bus = inproc_bus(4, 4096);
    // Nothing listens on this port: the sink cannot connect.
    let mut cfg = sink_cfg(&format!("postgres://postgres@127.0.0.1:{}/postgres", free_port()));
    cfg.group = unique("sinkstop");
    let sink = start(bus.clone(), cfg.clone()).await;
    publish(&*bus, &trades(0..50), "").await;
    let m = sink.metrics.clone();
    wait_until("the sink retries", Duration::from_secs(30), || {
        m.retries.load(Ordering::Relaxed) >= 2
    })
    .await;
    sink.cancel.cancel();
    let stats = tokio::time::timeout(Duration::from_secs(10), sink.task)
        .await
        .expect("stop ends the sink")
        .expect("join")
        .expect("a clean return");
    assert_eq!(stats.acked, 0);
    assert!(stats.received >= 50, "{stats:?}");
    // The same group, now with the database: everything comes back and lands.
    cfg.url = db.url.clone();
    let again = start(bus.clone(), cfg).await;
    let m2 = again.metrics.clone();
    wait_until("all acked", Duration::from_secs(30), || {
        m2.acked.load(Ordering::Relaxed) >= 50
    })
    .await;
    bus.close().await;
    again.task.await.expect("join").expect("sink");
    let c = db.client().await;
    assert_eq!(count(&c, "SELECT count(*) FROM trades").await, 50);
}

/// Watermarks (event-time progress on a topic, not events) that reach the sink on a topic it
/// reads are acked and skipped: no row, no dead letter, and the events around them land.
#[tokio::test]
async fn watermarks_are_skipped_not_stored_or_dead_lettered() {
    let db = TestDb::new().await;
    let bus = inproc_bus(4, 4096);
    let mut cfg = sink_cfg(&db.url);
    cfg.batch_rows = 50;
    cfg.batch_delay = Duration::from_millis(200);
    let sink = start(bus.clone(), cfg).await;
    let events = trades(0..20);
    publish(&*bus, &events[..10], "").await;
    let topic = auroraq_stage::topic_for(&events[0]);
    auroraq_stage::watermark::publish_watermark(&*bus, &[topic], 1_700_000_000_000_000, "test")
        .await
        .expect("publish watermarks");
    publish(&*bus, &events[10..], "").await;
    let m = sink.metrics.clone();
    wait_until("the trades are acked", Duration::from_secs(60), || {
        m.acked.load(Ordering::Relaxed) >= 20
    })
    .await;
    bus.close().await;
    let stats = sink.task.await.expect("join").expect("sink");
    assert_eq!((stats.received, stats.dead_letters), (20, 0), "{stats:?}");
    let c = db.client().await;
    assert_eq!(count(&c, "SELECT count(*) FROM trades").await, 20);
    assert_eq!(count(&c, "SELECT count(*) FROM dead_letters").await, 0);
}
