//! Applies the sink's migrations to a database and reports what the schema holds: the
//! migrations, the tables, and (TimescaleDB) hypertables, compression settings, continuous
//! aggregates and their jobs; (PostgreSQL) partitions and views. `scripts/timescaledb-smoke.sh`
//! runs it against TimescaleDB in PGlite.
//!
//! ```sh
//! cargo run -p auroraq-sink-timescale --example migrate -- postgres://postgres@127.0.0.1:5432/test [auto|require|off]
//! ```
//!
//! With `--check-data` it then inserts a few rows with plain `INSERT`s (PGlite cannot take the
//! sink's binary COPY), refreshes the continuous aggregates and queries the aggregates and the
//! dashboard views, printing what they return.
//!
//! Exits non-zero when a migration fails or, with `require`, when the TimescaleDB objects are
//! not all there or the data check does not return what it should.

use auroraq_sink_timescale::{connect, migrate, TimescaleConfig, TimescaleMode};

async fn list(
    client: &tokio_postgres::Client,
    title: &str,
    sql: &str,
) -> Result<usize, tokio_postgres::Error> {
    let rows = client.simple_query(sql).await?;
    let mut n = 0;
    println!("-- {title}");
    for r in rows {
        if let tokio_postgres::SimpleQueryMessage::Row(row) = r {
            let cells: Vec<&str> = (0..row.len()).map(|i| row.get(i).unwrap_or("NULL")).collect();
            println!("   {}", cells.join(" | "));
            n += 1;
        }
    }
    Ok(n)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let url = args
        .first()
        .cloned()
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".into());
    let mode: TimescaleMode = args
        .get(1)
        .filter(|a| !a.starts_with("--"))
        .map_or(Ok(TimescaleMode::Auto), |m| m.parse())?;
    let check_data = args.iter().any(|a| a == "--check-data");
    let mut cfg = TimescaleConfig::new(url.clone());
    cfg.timescaledb = mode;
    // One connection for everything: pglite-socket serves one client at a time.
    let (mut client, _task) = connect(&url, &cfg).await?;
    let first = migrate(&mut client, cfg.timescaledb, cfg.partitions_ahead).await?;
    println!(
        "first run: flavor {:?}, applied {:?}",
        first.flavor, first.applied
    );
    let again = migrate(&mut client, cfg.timescaledb, cfg.partitions_ahead).await?;
    println!(
        "second run: applied {:?} (versions {:?})",
        again.applied, again.versions
    );
    if !again.applied.is_empty() {
        return Err("migrations are not idempotent".into());
    }
    list(
        &client,
        "migrations",
        "SELECT version, name, flavor FROM aq_schema_migrations ORDER BY version",
    )
    .await?;
    if first.flavor == auroraq_sink_timescale::Flavor::Timescaledb {
        list(
            &client,
            "extension",
            "SELECT extname, extversion FROM pg_extension WHERE extname = 'timescaledb'",
        )
        .await?;
        let hyper = list(
            &client,
            "hypertables",
            "SELECT hypertable_name, num_dimensions, compression_enabled FROM timescaledb_information.hypertables ORDER BY 1",
        )
        .await?;
        let compressed = list(
            &client,
            "compression settings (segmentby / orderby)",
            "SELECT hypertable_name, string_agg(attname || CASE WHEN segmentby_column_index IS NOT NULL THEN ' segmentby' ELSE ' orderby ' || orderby_column_index::text || CASE WHEN orderby_asc THEN '' ELSE ' desc' END END, ', ' ORDER BY coalesce(segmentby_column_index, 0), orderby_column_index) FROM timescaledb_information.compression_settings GROUP BY 1 ORDER BY 1",
        )
        .await?;
        let caggs = list(
            &client,
            "continuous aggregates",
            "SELECT view_name, materialized_only, compression_enabled FROM timescaledb_information.continuous_aggregates ORDER BY 1",
        )
        .await?;
        let jobs = list(
            &client,
            "jobs",
            "SELECT proc_name, hypertable_name, schedule_interval, config::text FROM timescaledb_information.jobs WHERE proc_name IN ('policy_refresh_continuous_aggregate', 'policy_compression') ORDER BY 1, 2",
        )
        .await?;
        list(&client, "views", "SELECT count(*) AS dashboard_views FROM pg_views WHERE schemaname = current_schema() AND viewname LIKE 'dash\\_%'").await?;
        if mode == TimescaleMode::Require && (hyper < 16 || compressed < 8 || caggs < 4 || jobs < 13) {
            return Err(format!(
                "expected 16 hypertables, 8 compressed, 4 continuous aggregates, 13 jobs; got {hyper}, {compressed}, {caggs}, {jobs}"
            )
            .into());
        }
        if check_data {
            data_check(&client).await?;
        }
    } else {
        if check_data {
            data_check(&client).await?;
        }
        list(
            &client,
            "partitioned tables",
            "SELECT count(*) FROM aq_partitioned_tables()",
        )
        .await?;
        list(
            &client,
            "partitions",
            "SELECT i.inhparent::regclass::text, count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhparent AND c.relkind = 'p' GROUP BY 1 ORDER BY 1",
        )
        .await?;
        list(&client, "views", "SELECT viewname FROM pg_views WHERE schemaname = current_schema() AND (viewname LIKE 'dash\\_%' OR viewname ~ '_1[mh]$') ORDER BY 1").await?;
    }
    Ok(())
}

/// A few rows by plain INSERT, then the aggregates and dashboard views over them.
async fn data_check(client: &tokio_postgres::Client) -> Result<(), Box<dyn std::error::Error>> {
    let meta = "source, ts_ingest";
    client
        .batch_execute(&format!(
            "INSERT INTO trades (ts, event_id, {meta}, exchange, symbol, trade_id, price, quantity, aggressor, aggregated) VALUES
               ('2024-01-02 10:00:00+00', 't1', 'binance', now(), 'binance', 'BTCUSDT', '1', 100, 1, 'buy', false),
               ('2024-01-02 10:00:10+00', 't2', 'binance', now(), 'binance', 'BTCUSDT', '2', 110, 2, 'sell', false),
               ('2024-01-02 10:00:20+00', 't3', 'binance', now(), 'binance', 'BTCUSDT', '3', 90, 1, 'buy', false),
               ('2024-01-02 10:00:50+00', 't4', 'binance', now(), 'binance', 'BTCUSDT', '4', 105, 1, 'buy', false),
               ('2024-01-02 10:01:05+00', 't5', 'binance', now(), 'binance', 'BTCUSDT', '5', 106, 3, 'buy', false)
             ON CONFLICT DO NOTHING;
             INSERT INTO sentiment_asset_scores (ts, event_id, asset, {meta}, article_id, label, sentiment_score, confidence, model_id) VALUES
               ('2024-01-02 10:01:00+00', 's1', 'BTC', 'sentiment', now(), 'a1', 'positive', 0.8, 0.9, 'm'),
               ('2024-01-02 10:02:00+00', 's2', 'BTC', 'sentiment', now(), 'a2', 'negative', -0.5, 0.5, 'm')
             ON CONFLICT DO NOTHING;
             INSERT INTO fused_signals (ts, event_id, {meta}, asset, window_start, window_end, fused_score, confidence,
                                        scores_used, scores_rejected, sources_used, weights_used, trend) VALUES
               ('2024-01-02 10:30:00+00', 'f1', 'fusion', now(), 'BTC', '2024-01-02 10:25+00', '2024-01-02 10:30+00', 0.4, 0.9, 2, 0, 1, '{{}}', 'rising'),
               ('2024-01-02 10:45:00+00', 'f2', 'fusion', now(), 'BTC', '2024-01-02 10:40+00', '2024-01-02 10:45+00', 0.6, 0.9, 2, 0, 1, '{{}}', 'rising')
             ON CONFLICT DO NOTHING;
             INSERT INTO articles (ts, event_id, {meta}, article_id, feed, text, origin) VALUES
               ('2024-01-02 10:05:00+00', 'a1', 'feedly', now(), 'a1', 'f', 'x', 'Reuters'),
               ('2024-01-02 10:20:00+00', 'a2', 'feedly', now(), 'a2', 'f', 'y', 'Reuters')
             ON CONFLICT DO NOTHING;
             INSERT INTO portfolio_snapshots (ts, event_id, {meta}, account, positions, cash, equity, realized_pnl, unrealized_pnl, performance) VALUES
               ('2024-01-02 10:00:00+00', 'p1', 'execution', now(), 'auroraq', '[]', 1000, 1000, 0, 5, '{{}}'),
               ('2024-01-02 11:00:00+00', 'p2', 'execution', now(), 'auroraq', '[]', 1000, 1100, 10, 5, '{{}}'),
               ('2024-01-02 12:00:00+00', 'p3', 'execution', now(), 'auroraq', '[]', 1000, 990, 20, 5, '{{}}')
             ON CONFLICT DO NOTHING;"
        ))
        .await?;
    // Data far behind the refresh policies' windows: refresh by hand, as the sink does for
    // backfills (real-time aggregation would show it too, but only above the watermark).
    for agg in ["trades_1m", "trades_1h", "sentiment_1h"] {
        if client
            .query_opt("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'", &[])
            .await?
            .is_some()
        {
            client
                .batch_execute(&format!(
                    "CALL refresh_continuous_aggregate('{agg}', '2024-01-01 00:00+00', '2024-01-03 00:00+00')"
                ))
                .await?;
        }
    }
    let checks = [
        (
            "trades_1m BTCUSDT 10:00 (open high low close volume quote_volume trades)",
            "SELECT concat_ws(' ', open, high, low, close, volume, quote_volume, trades) FROM trades_1m WHERE symbol = 'BTCUSDT' AND bucket = '2024-01-02 10:00+00'",
            "100 110 90 105 5 515 4",
        ),
        (
            "trades_1h BTCUSDT 10:00 (open high low close volume trades)",
            "SELECT concat_ws(' ', open, high, low, close, volume, trades) FROM trades_1h WHERE symbol = 'BTCUSDT'",
            "100 110 90 106 8 5",
        ),
        (
            "sentiment_1h BTC (scores avg weighted positive negative)",
            "SELECT concat_ws(' ', scores, round(avg_score::numeric, 4), round(weighted_score::numeric, 4), positive, negative) FROM sentiment_1h WHERE asset = 'BTC'",
            "2 0.1500 0.3357 1 1",
        ),
        (
            "dash_sentiment_hourly BTC (scores signals fused_avg fused_last)",
            "SELECT concat_ws(' ', scores, signals, fused_avg, fused_last) FROM dash_sentiment_hourly WHERE asset = 'BTC'",
            "2 2 0.5 0.6",
        ),
        (
            "dash_prices BTC 1m closes",
            "SELECT string_agg(close::text, ',' ORDER BY bucket) FROM dash_prices WHERE asset = 'BTC'",
            "105,106",
        ),
        (
            "dash_articles_hourly",
            "SELECT string_agg(publisher || ' ' || articles, ',') FROM dash_articles_hourly",
            "Reuters 2",
        ),
        (
            "dash_pnl (equity_change drawdown)",
            "SELECT string_agg(equity_change || ' ' || round(drawdown, 2), ', ' ORDER BY ts) FROM dash_pnl",
            "0 0.00, 100 0.00, -10 -0.10",
        ),
    ];
    println!("-- data check");
    let mut failed = 0;
    for (what, sql, want) in checks {
        let got: Option<String> = client.query_one(sql, &[]).await?.get(0);
        let got = got.unwrap_or_else(|| "NULL".into());
        let ok = got == want;
        failed += usize::from(!ok);
        println!(
            "   {} {what}: {got}{}",
            if ok { "ok  " } else { "FAIL" },
            if ok {
                String::new()
            } else {
                format!(" (want {want})")
            }
        );
    }
    if failed > 0 {
        return Err(format!("{failed} data checks failed").into());
    }
    Ok(())
}
