//! The sink's throughput beside a bare `tokio-postgres` binary COPY loop, in the same run, on
//! the same table (a scratch database, dropped afterwards).
//!
//! Paths, each writing `rows` fresh `TradeTick` rows (4 symbols, W3C trace context) per round in
//! batches of `batch_rows`, one transaction per batch, into the migrated `trades` table (same
//! indexes and partition for all):
//! - `bare_copy`: prebuilt rows straight into `trades` by `BinaryCopyInWriter` (the baseline);
//! - `sink_writer`: the sink's batch writer on decoded events (default adaptive mode: direct COPY
//!   while no duplicate is met), including its per-batch de-duplication, partition checks and
//!   bookkeeping;
//! - `sink_writer_staged`: the same, forced through the staging table and `INSERT ... ON
//!   CONFLICT DO NOTHING`;
//! - `sink_writer_redelivered`: the previous path's rows written again (all duplicates: what a
//!   redelivery storm costs);
//! - `sink_bus`: the whole sink on an in-process bus holding the encoded events: connect, receive,
//!   Avro decode, batch, write, commit, ack (with `migrate = false`: the database was migrated
//!   before the first round; the migration check's cost is `remigrate_ms`);
//! - `avro_decode`: decoding the same payloads alone with `AnyEvent::decode` (the typed path),
//!   without a database (not a ratio).
//!
//! Every timed path starts from the same database state: autovacuum is off on the partitions of
//! `trades` (native partitioning; a TimescaleDB hypertable keeps its own settings) and a
//! `CHECKPOINT` runs before each path (when the role may run it), so that neither a
//! vacuum started by one path's inserts nor the flush of its dirty pages falls into the next path's
//! clock. On two cores shared with PostgreSQL, that background work took whole percent of the
//! machine from whichever path it happened to meet, most often the later paths of a round.
//!
//! Beside them, in [`BenchReport::references`]: `avro_decode_generic`, the same payloads decoded
//! by `AnyEvent::decode_generic` (apache-avro's `Value` tree, what `avro_decode` measured before
//! the typed decoder), and `avro_encode` / `avro_encode_generic`, the same events encoded by the
//! typed writer and by apache-avro's serde writer, so that the codec's gains are ratios within
//! one run.

use std::sync::Arc;
use std::time::Instant;

use auroraq_bus::{Bus, InProcBus, InProcConfig};
use auroraq_schemas::{samples, AnyEvent, TradeTick};
use serde::Serialize;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::ToSql;
use tracing::info;

use crate::config::{CopyMode, TimescaleConfig};
use crate::metrics::SinkMetrics;
use crate::pgtypes::Ts;
use crate::tables::Table;
use crate::writer::{db_message, Writer};
use crate::SinkError;

/// What to measure.
#[derive(Clone, Debug, Serialize)]
pub struct BenchConfig {
    /// A server and a database to connect to first; the benchmark creates its own database next
    /// to it (the role needs CREATEDB) and drops it afterwards unless `keep_database`.
    pub url: String,
    /// Rows per path and round.
    pub rows: usize,
    pub batch_rows: usize,
    pub rounds: usize,
    pub keep_database: bool,
}

impl BenchConfig {
    pub fn new(url: impl Into<String>) -> Self {
        BenchConfig {
            url: url.into(),
            rows: 200_000,
            batch_rows: 5000,
            rounds: 3,
            keep_database: false,
        }
    }
}

/// One path's figures.
#[derive(Clone, Debug, Serialize)]
pub struct BenchPath {
    pub name: String,
    /// Rows per second, per round.
    pub rounds: Vec<f64>,
    pub median: f64,
    /// `median / bare_copy median` (None for paths without a database).
    pub vs_bare: Option<f64>,
}

/// The benchmark's result.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub database: String,
    pub server_version: String,
    pub flavor: String,
    pub rows: usize,
    pub batch_rows: usize,
    pub rounds: usize,
    /// Whether every timed path started after a `CHECKPOINT` (false when the role may not run one:
    /// it needs superuser or `pg_checkpoint`); on native partitioning, autovacuum is also off on
    /// the partitions of `trades`.
    pub quiesced: bool,
    /// Milliseconds of the migration check on the migrated database (connect, versions, partitions
    /// ahead): what a sink with `migrate = true` adds to its start. `sink_bus` runs with `migrate =
    /// false`, the database having been migrated before the first round.
    pub remigrate_ms: f64,
    pub paths: Vec<BenchPath>,
    /// Figures measured for comparison, not paths of the sink, in events/s on one thread:
    /// `avro_decode_generic`, `avro_encode` (`AnyEvent::encode`, typed) and
    /// `avro_encode_generic` (`AnyEvent::encode_generic`), on the same events as `sink_bus`.
    pub references: Vec<BenchPath>,
    /// `avro_decode` median / `avro_decode_generic` median: the typed decoder's gain.
    pub decode_typed_vs_generic: Option<f64>,
    /// `avro_encode` median / `avro_encode_generic` median: the typed encoder's gain.
    pub encode_typed_vs_generic: Option<f64>,
}

impl BenchReport {
    pub fn path(&self, name: &str) -> Option<&BenchPath> {
        self.paths.iter().find(|p| p.name == name)
    }
}

/// The URL with another database name (`postgres://` URLs and `key=value` strings).
pub fn url_with_dbname(url: &str, dbname: &str) -> Result<String, SinkError> {
    if let Some((scheme, rest)) = url.split_once("://") {
        let (before_query, query) = match rest.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (rest, None),
        };
        let authority = before_query.split('/').next().unwrap_or(before_query);
        let mut out = format!("{scheme}://{authority}/{dbname}");
        if let Some(q) = query {
            out.push('?');
            out.push_str(q);
        }
        Ok(out)
    } else if url.contains('=') {
        let mut parts: Vec<String> = url
            .split_whitespace()
            .filter(|p| !p.starts_with("dbname="))
            .map(str::to_owned)
            .collect();
        parts.push(format!("dbname={dbname}"));
        Ok(parts.join(" "))
    } else {
        Err(SinkError::Config(format!(
            "cannot tell the database of {:?}",
            auroraq_util::redact(url)
        )))
    }
}

fn bench_err(what: &'static str) -> impl Fn(tokio_postgres::Error) -> SinkError {
    move |e| SinkError::Bench(format!("{what}: {}", db_message(&e)))
}

/// Trades `first..first + n`, as a connector would make them (4 symbols, trace context).
fn trades(first: u64, n: usize) -> Vec<TradeTick> {
    const SYMBOLS: [&str; 4] = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT"];
    (first..first + n as u64)
        .map(|seq| {
            let mut t = samples::trade(seq);
            let sym = SYMBOLS[(seq % 4) as usize];
            t.symbol = sym.to_owned();
            t.meta = auroraq_schemas::Meta::raw(
                auroraq_schemas::EventKind::TradeTick,
                "binance",
                &format!("{sym}:{seq}"),
                t.meta.ts_event,
                t.meta.ts_ingest,
            );
            t.meta.traceparent = Some(format!("00-{:032x}-{:016x}-01", seq as u128 * 7919, seq));
            t
        })
        .collect()
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    match s.len() {
        0 => 0.0,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// The baseline: prebuilt rows into `trades` with `BinaryCopyInWriter`, a transaction per batch.
async fn bare_copy(
    client: &mut tokio_postgres::Client,
    rows: &[TradeTick],
    batch: usize,
) -> Result<(), SinkError> {
    let cols = Table::Trades.column_list();
    let stmt = client
        .prepare(&format!("COPY trades ({cols}) FROM STDIN (FORMAT binary)"))
        .await
        .map_err(bench_err("prepare COPY"))?;
    for chunk in rows.chunks(batch.max(1)) {
        let tx = client.transaction().await.map_err(bench_err("begin"))?;
        let sink = tx.copy_in(&stmt).await.map_err(bench_err("COPY"))?;
        let mut w = std::pin::pin!(BinaryCopyInWriter::new(sink, Table::Trades.types()));
        for t in chunk {
            let m = &t.meta;
            let values: [&(dyn ToSql + Sync); 15] = [
                &Ts(m.ts_event),
                &m.event_id,
                &m.source,
                &Ts(m.ts_ingest),
                &m.ts_processed.map(Ts),
                &m.derived_from,
                &m.traceparent,
                &m.tracestate,
                &t.exchange,
                &t.symbol,
                &t.trade_id,
                &t.price.0,
                &t.quantity.0,
                &t.aggressor.as_str(),
                &t.aggregated,
            ];
            w.as_mut().write(&values).await.map_err(bench_err("COPY row"))?;
        }
        w.finish().await.map_err(bench_err("COPY finish"))?;
        tx.commit().await.map_err(bench_err("commit"))?;
    }
    Ok(())
}

async fn writer_path(
    w: &mut Writer,
    events: &[AnyEvent],
    batch: usize,
    redelivered: bool,
) -> Result<(), SinkError> {
    for chunk in events.chunks(batch.max(1)) {
        w.write(chunk, redelivered)
            .await
            .map_err(|e| SinkError::Bench(format!("sink write: {e}")))?;
    }
    Ok(())
}

/// Runs the benchmark; see the module's documentation for the paths.
pub async fn bench(cfg: &BenchConfig) -> Result<BenchReport, SinkError> {
    if cfg.rows == 0 || cfg.rounds == 0 {
        return Err(SinkError::Config("rows and rounds must be positive".into()));
    }
    let base = TimescaleConfig::new(cfg.url.clone());
    let (admin, admin_task) = crate::connect(&cfg.url, &base).await?;
    let db = format!(
        "aq_bench_{}_{}",
        std::process::id(),
        auroraq_schemas::now_micros() % 1_000_000_000
    );
    admin
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .await
        .map_err(bench_err("CREATE DATABASE (the role needs CREATEDB)"))?;
    let url = url_with_dbname(&cfg.url, &db)?;
    let result = run_bench(cfg, &url, &db).await;
    if !cfg.keep_database {
        if let Err(e) = admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
            .await
        {
            tracing::warn!(error = %db_message(&e), database = %db, "cannot drop the benchmark database");
        }
    }
    drop(admin);
    admin_task.abort();
    result
}

async fn run_bench(cfg: &BenchConfig, url: &str, db: &str) -> Result<BenchReport, SinkError> {
    let mut tcfg = TimescaleConfig::new(url.to_owned());
    tcfg.batch_rows = cfg.batch_rows;
    let report = crate::migrate_url(url, &tcfg).await?;
    let (mut client, task) = crate::connect(url, &tcfg).await?;
    let server_version: String = client
        .query_one("SHOW server_version", &[])
        .await
        .map_err(bench_err("server version"))?
        .get(0);
    // Every path's rows fall in November 2023: make its partition before the baseline writes.
    if report.flavor == crate::Flavor::Postgres {
        client
            .execute("SELECT aq_ensure_partition('trades', '2023-11-01')", &[])
            .await
            .map_err(bench_err("partition"))?;
    }
    // No vacuum of one path's rows may run during another path (the scratch table is never
    // updated or deleted from, so nothing is lost by it): autovacuum off on every partition of
    // `trades`, whatever the migrations name them.
    if report.flavor == crate::Flavor::Postgres {
        client
            .batch_execute(
                "DO $$ DECLARE p regclass; BEGIN \
                 FOR p IN SELECT inhrelid::regclass FROM pg_inherits WHERE inhparent = 'trades'::regclass LOOP \
                 EXECUTE format('ALTER TABLE %s SET (autovacuum_enabled = false)', p); \
                 END LOOP; END $$",
            )
            .await
            .map_err(bench_err("autovacuum off"))?;
    }
    let mut quiesced = true;
    // What a sink with `migrate = true` pays at each start on a database already migrated.
    let t = Instant::now();
    crate::migrate_url(url, &tcfg).await?;
    let remigrate_ms = t.elapsed().as_secs_f64() * 1000.0;
    let metrics = Arc::new(SinkMetrics::default());
    let mut adaptive = Writer::new(tcfg.clone(), metrics.clone())?;
    let mut staged_cfg = tcfg.clone();
    staged_cfg.copy_mode = CopyMode::Staged;
    let mut staged = Writer::new(staged_cfg, metrics.clone())?;

    let names = [
        "bare_copy",
        "sink_writer",
        "sink_writer_staged",
        "sink_writer_redelivered",
        "sink_bus",
        "avro_decode",
    ];
    let mut figures: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    // avro_decode_generic, avro_encode, avro_encode_generic.
    let mut refs: Vec<Vec<f64>> = vec![Vec::new(); 3];
    let mut seq = 0u64;
    let mut next_rows = |n: usize| {
        let r = trades(seq, n);
        seq += n as u64;
        r
    };
    for round in 0..cfg.rounds {
        let n = cfg.rows;
        let rate = |t: Instant| n as f64 / t.elapsed().as_secs_f64();

        let rows = next_rows(n);
        quiesce(&client, &mut quiesced).await;
        let t = Instant::now();
        bare_copy(&mut client, &rows, cfg.batch_rows).await?;
        figures[0].push(rate(t));

        let events: Vec<AnyEvent> = next_rows(n).into_iter().map(AnyEvent::TradeTick).collect();
        quiesce(&client, &mut quiesced).await;
        let t = Instant::now();
        writer_path(&mut adaptive, &events, cfg.batch_rows, false).await?;
        figures[1].push(rate(t));

        let staged_events: Vec<AnyEvent> = next_rows(n).into_iter().map(AnyEvent::TradeTick).collect();
        quiesce(&client, &mut quiesced).await;
        let t = Instant::now();
        writer_path(&mut staged, &staged_events, cfg.batch_rows, false).await?;
        figures[2].push(rate(t));

        quiesce(&client, &mut quiesced).await;
        let t = Instant::now();
        writer_path(&mut staged, &staged_events, cfg.batch_rows, true).await?;
        figures[3].push(rate(t));

        // The whole sink on an in-process bus that already holds the encoded events.
        let bus = Arc::new(InProcBus::new(InProcConfig {
            partitions: 4,
            queue_capacity: n + 1024,
            ..InProcConfig::default()
        }));
        let bus_events: Vec<AnyEvent> = next_rows(n).into_iter().map(AnyEvent::TradeTick).collect();
        let mut sink_cfg = tcfg.clone();
        sink_cfg.group = format!("bench-{round}");
        // The scratch database was migrated above: the sink starts as one does on a migrated
        // database with `migrate = false` (connect, one query for the schema's flavour). What the
        // migration check adds to a start is `remigrate_ms` in the report.
        sink_cfg.migrate = false;
        let subs = crate::subscribe(&*bus, &sink_cfg).await?;
        let mut payloads = Vec::with_capacity(n);
        for chunk in bus_events.chunks(4096) {
            let mut batch = Vec::with_capacity(chunk.len());
            for ev in chunk {
                let m = auroraq_stage::to_message(ev).map_err(|e| SinkError::Bench(e.to_string()))?;
                payloads.push(m.payload.clone());
                batch.push(m);
            }
            bus.publish(batch).await?;
        }
        bus.close().await;
        let sink_metrics = Arc::new(SinkMetrics::default());
        quiesce(&client, &mut quiesced).await;
        let t = Instant::now();
        let stats = crate::run_subscriptions(
            bus.clone(),
            sink_cfg,
            subs,
            sink_metrics,
            auroraq_util::CancellationToken::new(),
        )
        .await?;
        figures[4].push(rate(t));
        if stats.rows_inserted != n as u64 || stats.acked != n as u64 {
            return Err(SinkError::Bench(format!(
                "the sink wrote {} rows and acked {} of {n}",
                stats.rows_inserted, stats.acked
            )));
        }

        let t = Instant::now();
        let mut ok = 0usize;
        for p in &payloads {
            ok += AnyEvent::decode(p).is_ok() as usize;
        }
        figures[5].push(rate(t));
        if ok != n {
            return Err(SinkError::Bench(format!("{ok} of {n} payloads decoded")));
        }

        let t = Instant::now();
        let mut ok = 0usize;
        for p in &payloads {
            ok += AnyEvent::decode_generic(p).is_ok() as usize;
        }
        refs[0].push(rate(t));
        if ok != n {
            return Err(SinkError::Bench(format!(
                "{ok} of {n} payloads decoded on the generic path"
            )));
        }
        // Encoding the same events, both ways (what every producing stage pays per event).
        for (i, generic) in [(1, false), (2, true)] {
            let t = Instant::now();
            let mut bytes = 0usize;
            for ev in &bus_events {
                let e = if generic { ev.encode_generic() } else { ev.encode() };
                bytes += e.map_err(|e| SinkError::Bench(e.to_string()))?.len();
            }
            refs[i].push(rate(t));
            std::hint::black_box(bytes);
        }
        info!(
            round,
            bare = figures[0][round],
            sink = figures[1][round],
            "bench round"
        );
    }
    let bare = median(&figures[0]);
    let ratio = |a: f64, b: f64| (b > 0.0).then(|| a / b);
    let decode_typed_vs_generic = ratio(median(&figures[5]), median(&refs[0]));
    let encode_typed_vs_generic = ratio(median(&refs[1]), median(&refs[2]));
    let references = ["avro_decode_generic", "avro_encode", "avro_encode_generic"]
        .iter()
        .zip(refs)
        .map(|(name, rounds)| BenchPath {
            name: (*name).to_owned(),
            median: median(&rounds),
            vs_bare: None,
            rounds,
        })
        .collect();
    let paths = names
        .iter()
        .zip(figures)
        .map(|(name, rounds)| {
            let m = median(&rounds);
            BenchPath {
                name: (*name).to_owned(),
                median: m,
                vs_bare: (*name != "avro_decode" && bare > 0.0).then(|| m / bare),
                rounds,
            }
        })
        .collect();
    drop(client);
    task.abort();
    Ok(BenchReport {
        database: db.to_owned(),
        server_version,
        flavor: report.flavor.name().to_owned(),
        rows: cfg.rows,
        batch_rows: cfg.batch_rows,
        rounds: cfg.rounds,
        quiesced,
        remigrate_ms,
        paths,
        references,
        decode_typed_vs_generic,
        encode_typed_vs_generic,
    })
}

/// Flushes what earlier paths left dirty, so that the next path's clock does not pay for it. Once
/// the role is refused a `CHECKPOINT`, says so and stops trying.
async fn quiesce(client: &tokio_postgres::Client, quiesced: &mut bool) {
    if !*quiesced {
        return;
    }
    if let Err(e) = client.batch_execute("CHECKPOINT").await {
        tracing::warn!(error = %db_message(&e), "no CHECKPOINT between paths (needs superuser or pg_checkpoint): paths may meet each other's background writes");
        *quiesced = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names_are_replaced() {
        assert_eq!(
            url_with_dbname("postgres://u@h:5432/postgres?sslmode=disable", "x").ok(),
            Some("postgres://u@h:5432/x?sslmode=disable".to_owned())
        );
        assert_eq!(
            url_with_dbname("postgres://u@h", "x").ok(),
            Some("postgres://u@h/x".to_owned())
        );
        assert_eq!(
            url_with_dbname("host=h dbname=a user=u", "x").ok(),
            Some("host=h user=u dbname=x".to_owned())
        );
        assert!(url_with_dbname("nonsense", "x").is_err());
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0]), 2.5);
    }
}
