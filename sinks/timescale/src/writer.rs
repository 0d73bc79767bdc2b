//! Writes batches of events in one transaction each, by binary COPY, idempotently; keeps the
//! connection, the prepared statements, the staging tables and the partitions it needs.

use std::collections::{HashMap, HashSet};
use std::pin::pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use auroraq_schemas::{now_micros, AnyEvent, Micros};
use auroraq_util::{redact, scrub};
use tokio::task::JoinHandle;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls, Statement};
use tracing::{debug, info, warn};

use crate::config::{CopyMode, TimescaleConfig};
use crate::error::is_connection_error;
use crate::metrics::SinkMetrics;
use crate::migrate::{self, Flavor};
use crate::tables::{copy_rows, month_index, month_start, Grouped, Table};
use crate::SinkError;

/// Why a batch was not written.
#[derive(Debug)]
pub(crate) enum WriteError {
    /// No connection, a lost one, or a timeout: reconnect and retry.
    Connection(String),
    /// The database rejected what the batch holds (a data exception or a constraint other than
    /// the key): write its events one by one to find the bad ones.
    Data(tokio_postgres::Error),
    /// A fast COPY met a row already there.
    Duplicate(tokio_postgres::Error),
    /// Anything else (a missing table, a lock timeout, a deadlock): retry later.
    Other(String),
    /// Retrying cannot help (a migration that fails, a schema that is not ours): stop the sink.
    Fatal(SinkError),
}

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriteError::Connection(why) => write!(f, "connection: {why}"),
            WriteError::Data(e) => write!(f, "rejected data: {}", db_message(e)),
            WriteError::Duplicate(e) => write!(f, "duplicate key: {}", db_message(e)),
            WriteError::Other(why) => f.write_str(why),
            WriteError::Fatal(e) => write!(f, "{e}"),
        }
    }
}

/// The server's message when there is one (tokio-postgres' Display says only "db error").
pub(crate) fn db_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {} ({})", db.severity(), db.message(), db.code().code()),
        None => match std::error::Error::source(e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        },
    }
}

/// The server refused us for good: authentication failed (SQLSTATE class 28) or the database
/// does not exist (3D000). Retrying cannot help; the sink stops and says why.
fn is_refusal(e: &tokio_postgres::Error) -> bool {
    e.code()
        .is_some_and(|c| c.code().starts_with("28") || *c == SqlState::INVALID_CATALOG_NAME)
}

fn classify(e: tokio_postgres::Error) -> WriteError {
    if is_connection_error(&e) {
        return WriteError::Connection(db_message(&e));
    }
    match e.code() {
        Some(c) if *c == SqlState::UNIQUE_VIOLATION => WriteError::Duplicate(e),
        Some(c)
            if c.code().starts_with("22")
                || c.code().starts_with("23")
                || *c == SqlState::PROGRAM_LIMIT_EXCEEDED =>
        {
            WriteError::Data(e)
        }
        _ => WriteError::Other(db_message(&e)),
    }
}

/// What one written batch did.
#[derive(Clone, Debug, Default)]
pub(crate) struct BatchOutcome {
    /// Per table: (rows inserted, rows already there).
    pub tables: Vec<(Table, u64, u64)>,
    pub staged: bool,
    /// The batch first tried a direct COPY and met a duplicate.
    pub fell_back: bool,
    pub repeats: usize,
}

impl BatchOutcome {
    pub fn inserted(&self) -> u64 {
        self.tables.iter().map(|t| t.1).sum()
    }
    pub fn duplicates(&self) -> u64 {
        self.tables.iter().map(|t| t.2).sum()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Stmt {
    CopyDirect,
    CopyStage,
    Merge,
}

struct Conn {
    client: Client,
    task: JoinHandle<()>,
    stmts: HashMap<(Table, Stmt), Statement>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        // Closes the socket: whatever the server was doing for us is rolled back.
        self.task.abort();
    }
}

/// Continuous aggregates and how far back their refresh policies reach (TimescaleDB).
const AGGREGATES: &[(&str, Table, i64)] = &[
    ("trades_1m", Table::Trades, 3 * 3_600_000_000),
    ("trades_1h", Table::Trades, 3 * 86_400_000_000),
    ("klines_1h", Table::Klines, 3 * 86_400_000_000),
    ("sentiment_1h", Table::SentimentAssetScores, 3 * 86_400_000_000),
];

/// The batch writer. One connection; reconnects when it is lost.
pub(crate) struct Writer {
    cfg: TimescaleConfig,
    pg: tokio_postgres::Config,
    conn: Option<Conn>,
    flavor: Option<Flavor>,
    migrated: bool,
    connected_once: bool,
    /// Monthly partitions known to exist (native partitioning).
    partitions: HashSet<(Table, i64), foldhash::fast::RandomState>,
    /// The month for which partitions ahead were last ensured.
    ahead_for: Option<i64>,
    /// Adaptive mode: write through staging until a batch brings no duplicate.
    staging: bool,
    /// TimescaleDB: per aggregate, the time range written behind its refresh window.
    backfill: HashMap<&'static str, (Micros, Micros)>,
    last_refresh: Instant,
    metrics: Arc<SinkMetrics>,
}

impl Writer {
    pub fn new(cfg: TimescaleConfig, metrics: Arc<SinkMetrics>) -> Result<Self, SinkError> {
        let mut pg = crate::postgres_config(&cfg.url)?;
        if pg.get_application_name().is_none() {
            pg.application_name(&cfg.application_name);
        }
        pg.connect_timeout(cfg.connect_timeout);
        pg.keepalives(true);
        pg.keepalives_idle(Duration::from_secs(30));
        Ok(Writer {
            cfg,
            pg,
            conn: None,
            flavor: None,
            migrated: false,
            connected_once: false,
            partitions: HashSet::default(),
            ahead_for: None,
            staging: false,
            backfill: HashMap::new(),
            last_refresh: Instant::now(),
            metrics,
        })
    }

    pub fn flavor(&self) -> Option<Flavor> {
        self.flavor
    }

    /// Drops the connection (after a failure); the next write reconnects.
    pub fn disconnect(&mut self) {
        self.conn = None;
    }

    /// Connects (and migrates, the first time) unless connected.
    pub async fn ensure_connected(&mut self) -> Result<(), WriteError> {
        if let Some(c) = &self.conn {
            if !c.client.is_closed() {
                return Ok(());
            }
            self.conn = None;
        }
        let url = redact(&self.cfg.url);
        let (client, connection) = self.pg.connect(NoTls).await.map_err(|e| {
            let reason = scrub(&db_message(&e), &self.cfg.url);
            if is_refusal(&e) {
                WriteError::Fatal(SinkError::Connect {
                    url: url.clone(),
                    reason,
                })
            } else {
                WriteError::Connection(format!("connect to {url}: {reason}"))
            }
        })?;
        let task = tokio::spawn(async move {
            if let Err(e) = connection.await {
                debug!(error = %e, "PostgreSQL connection ended");
            }
        });
        let mut conn = Conn {
            client,
            task,
            stmts: HashMap::new(),
        };
        if self.connected_once {
            self.metrics.reconnects.fetch_add(1, Ordering::Relaxed);
            info!(url = %url, "reconnected to PostgreSQL");
        } else {
            info!(url = %url, "connected to PostgreSQL");
        }
        self.connected_once = true;
        if self.cfg.migrate && !self.migrated {
            match migrate::migrate(&mut conn.client, self.cfg.timescaledb, self.cfg.partitions_ahead).await {
                Ok(report) => {
                    info!(flavor = report.flavor.name(), applied = ?report.applied, versions = ?report.versions, "schema up to date");
                    self.metrics
                        .partitions_created
                        .fetch_add(report.partitions_created.max(0) as u64, Ordering::Relaxed);
                    self.flavor = Some(report.flavor);
                    self.migrated = true;
                }
                Err(e) if e.is_connection() => return Err(WriteError::Connection(e.to_string())),
                Err(e) => return Err(WriteError::Fatal(e)),
            }
        }
        if self.flavor.is_none() {
            let row = conn
                .client
                .query_opt("SELECT flavor FROM aq_schema_migrations WHERE version = 1", &[])
                .await;
            match row {
                Ok(Some(r)) => {
                    let name: String = r.get(0);
                    self.flavor = Some(if name == "timescaledb" {
                        Flavor::Timescaledb
                    } else {
                        Flavor::Postgres
                    });
                }
                Ok(None) => {
                    return Err(WriteError::Fatal(SinkError::Schema(
                        "the database has no AuroraQ schema: run the migrations".into(),
                    )))
                }
                Err(e) if is_connection_error(&e) => return Err(WriteError::Connection(db_message(&e))),
                Err(e) => {
                    return Err(WriteError::Fatal(SinkError::Schema(format!(
                        "cannot read aq_schema_migrations ({}): run the migrations",
                        db_message(&e)
                    ))))
                }
            }
        }
        // Partitions may have been dropped while we were away: check again as needed.
        self.partitions.clear();
        self.ahead_for = None;
        self.conn = Some(conn);
        Ok(())
    }

    /// Writes a batch in one transaction and commits it. Idempotent: rows already in the tables
    /// are left as they are. `redelivered`: the batch holds redeliveries (write through staging).
    pub async fn write(
        &mut self,
        events: &[AnyEvent],
        redelivered: bool,
    ) -> Result<BatchOutcome, WriteError> {
        let g = Grouped::of(events);
        self.ensure_connected().await?;
        if self.flavor == Some(Flavor::Postgres) {
            self.ensure_partitions(&g).await?;
        }
        let adaptive = self.cfg.copy_mode == CopyMode::Adaptive;
        let staged = !adaptive || self.staging || redelivered;
        // Through staging, a duplicate key can only come from the batch itself (which Grouped
        // prevents): treat it as bad data rather than retrying forever.
        let through_staging = |e| match e {
            WriteError::Duplicate(e) => WriteError::Data(e),
            other => other,
        };
        let mut outcome = if staged {
            self.copy(&g, true).await.map_err(through_staging)?
        } else {
            match self.copy(&g, false).await {
                Err(WriteError::Duplicate(_)) => {
                    debug!("a direct COPY met rows already written; writing through staging");
                    let mut o = self.copy(&g, true).await.map_err(through_staging)?;
                    o.fell_back = true;
                    o
                }
                other => other?,
            }
        };
        if adaptive {
            self.staging = outcome.duplicates() > 0;
        }
        outcome.repeats = g.repeats;
        if self.flavor == Some(Flavor::Timescaledb) && !self.cfg.backfill_refresh.is_zero() {
            self.note_backfill(&g);
            self.refresh_backfill().await;
        }
        Ok(outcome)
    }

    /// Writes events one by one (each in its own transaction) to find those the database
    /// rejects. Returns the indices of the rejected events with the reason.
    pub async fn write_each(&mut self, events: &[AnyEvent]) -> Result<Vec<(usize, String)>, WriteError> {
        let mut bad = Vec::new();
        for (i, ev) in events.iter().enumerate() {
            match self.write(std::slice::from_ref(ev), true).await {
                Ok(o) => self.metrics.record(&o),
                Err(WriteError::Data(e)) => bad.push((i, db_message(&e))),
                Err(e) => return Err(e),
            }
        }
        Ok(bad)
    }

    /// Creates the monthly partitions the batch's rows need (native partitioning).
    async fn ensure_partitions(&mut self, g: &Grouped<'_>) -> Result<(), WriteError> {
        let Some(conn) = &self.conn else {
            return Err(WriteError::Connection("not connected".into()));
        };
        let now_month = month_index(now_micros());
        if self.ahead_for != Some(now_month) {
            let n = migrate::ensure_partitions_ahead(&conn.client, self.cfg.partitions_ahead)
                .await
                .map_err(|e| match e {
                    SinkError::Migrate { source, .. } => classify(source),
                    other => WriteError::Other(other.to_string()),
                })?;
            self.metrics
                .partitions_created
                .fetch_add(n.max(0) as u64, Ordering::Relaxed);
            for t in Table::ALL {
                for m in now_month..=now_month + self.cfg.partitions_ahead as i64 {
                    self.partitions.insert((t, m));
                }
            }
            self.ahead_for = Some(now_month);
        }
        let newest = now_month + self.cfg.max_future_months as i64;
        let oldest = 1970 * 12;
        let mut needed: Vec<(Table, i64)> = Vec::new();
        for t in Table::ALL {
            if g.rows(t) == 0 {
                continue;
            }
            // Consecutive rows are mostly in the same day: skip the date arithmetic for them.
            let mut same: Option<(Micros, Micros)> = None;
            for ts in g.times(t) {
                if same.is_some_and(|(lo, hi)| ts >= lo && ts < hi) {
                    continue;
                }
                let m = month_index(ts);
                if m >= oldest
                    && m <= newest
                    && !self.partitions.contains(&(t, m))
                    && !needed.contains(&(t, m))
                {
                    needed.push((t, m));
                }
                same = Some(day_bounds(ts));
            }
        }
        for (t, m) in needed {
            let start = month_start(m);
            let row = conn
                .client
                .query_one(
                    "SELECT aq_ensure_partition($1, $2::text::date)",
                    &[&t.name(), &start],
                )
                .await
                .map_err(classify)?;
            let created: bool = row.get(0);
            if created {
                info!(table = t.name(), month = %start, "created partition");
                self.metrics.partitions_created.fetch_add(1, Ordering::Relaxed);
            }
            self.partitions.insert((t, m));
        }
        Ok(())
    }

    /// Prepares the statements (and creates the staging tables) a write needs, outside of its
    /// transaction, so that a rolled-back batch cannot take a staging table with it.
    async fn prepare(&mut self, g: &Grouped<'_>, staged: bool) -> Result<(), WriteError> {
        let Some(conn) = &mut self.conn else {
            return Err(WriteError::Connection("not connected".into()));
        };
        for t in Table::ALL {
            if g.rows(t) == 0 {
                continue;
            }
            let cols = t.column_list();
            let name = t.name();
            let kinds: &[Stmt] = if staged {
                &[Stmt::CopyStage, Stmt::Merge]
            } else {
                &[Stmt::CopyDirect]
            };
            for &k in kinds {
                if conn.stmts.contains_key(&(t, k)) {
                    continue;
                }
                if k == Stmt::CopyStage {
                    conn.client
                        .batch_execute(&format!(
                            "CREATE TEMP TABLE IF NOT EXISTS aq_stage_{name} ON COMMIT DELETE ROWS AS \
                             SELECT {cols} FROM {name} WITH NO DATA"
                        ))
                        .await
                        .map_err(classify)?;
                }
                let sql = match k {
                    Stmt::CopyDirect => format!("COPY {name} ({cols}) FROM STDIN (FORMAT binary)"),
                    Stmt::CopyStage => format!("COPY aq_stage_{name} ({cols}) FROM STDIN (FORMAT binary)"),
                    Stmt::Merge => format!(
                        "INSERT INTO {name} ({cols}) SELECT {cols} FROM aq_stage_{name} ON CONFLICT DO NOTHING"
                    ),
                };
                let st = conn.client.prepare(&sql).await.map_err(classify)?;
                conn.stmts.insert((t, k), st);
            }
        }
        Ok(())
    }

    /// One transaction: each table's rows by binary COPY, straight into the table or through
    /// its staging table and `INSERT ... ON CONFLICT DO NOTHING`.
    async fn copy(&mut self, g: &Grouped<'_>, staged: bool) -> Result<BatchOutcome, WriteError> {
        self.prepare(g, staged).await?;
        let Some(conn) = &mut self.conn else {
            return Err(WriteError::Connection("not connected".into()));
        };
        let Conn { client, stmts, .. } = conn;
        let tx = client.transaction().await.map_err(classify)?;
        let mut outcome = BatchOutcome {
            staged,
            ..BatchOutcome::default()
        };
        for t in Table::ALL {
            let rows = g.rows(t) as u64;
            if rows == 0 {
                continue;
            }
            let copy = stmts
                .get(&(t, if staged { Stmt::CopyStage } else { Stmt::CopyDirect }))
                .ok_or_else(|| WriteError::Other(format!("no COPY statement for {}", t.name())))?;
            let started = Instant::now();
            let sink = tx.copy_in(copy).await.map_err(classify)?;
            let mut w = pin!(BinaryCopyInWriter::new(sink, t.types()));
            copy_rows(w.as_mut(), t, g).await.map_err(classify)?;
            let copied = w.finish().await.map_err(classify)?;
            metrics::histogram!("auroraq_sink_copy_seconds", "table" => t.name())
                .record(started.elapsed().as_secs_f64());
            if staged {
                let merge = stmts
                    .get(&(t, Stmt::Merge))
                    .ok_or_else(|| WriteError::Other(format!("no INSERT statement for {}", t.name())))?;
                let inserted = tx.execute(merge, &[]).await.map_err(classify)?;
                outcome
                    .tables
                    .push((t, inserted, copied.saturating_sub(inserted)));
            } else {
                outcome.tables.push((t, copied, 0));
            }
        }
        tx.commit().await.map_err(classify)?;
        for &(t, written, _) in &outcome.tables {
            metrics::counter!("auroraq_sink_rows_total", "table" => t.name()).increment(written);
        }
        Ok(outcome)
    }

    /// Notes rows written behind the continuous aggregates' refresh windows.
    fn note_backfill(&mut self, g: &Grouped<'_>) {
        let now = now_micros();
        for &(agg, table, reach) in AGGREGATES {
            if g.rows(table) == 0 {
                continue;
            }
            let behind = now - reach;
            for ts in g.times(table) {
                if ts < behind {
                    let e = self.backfill.entry(agg).or_insert((ts, ts));
                    e.0 = e.0.min(ts);
                    e.1 = e.1.max(ts);
                }
            }
        }
    }

    /// Refreshes the continuous aggregates over what was written behind their windows, at most
    /// once per `backfill_refresh`. Failures are logged and retried next time.
    async fn refresh_backfill(&mut self) {
        if self.backfill.is_empty() || self.last_refresh.elapsed() < self.cfg.backfill_refresh {
            return;
        }
        self.last_refresh = Instant::now();
        let Some(conn) = &self.conn else { return };
        let pending: Vec<_> = self.backfill.iter().map(|(a, r)| (*a, *r)).collect();
        for (agg, (lo, hi)) in pending {
            // Whole days around the range: every bucket it touches is recomputed.
            let day = 86_400_000_000i64;
            let from = lo.div_euclid(day) * day;
            let to = (hi.div_euclid(day) + 1) * day;
            let sql = format!(
                "CALL refresh_continuous_aggregate('{agg}', \
                 'epoch'::timestamptz + {from} * INTERVAL '1 microsecond', \
                 'epoch'::timestamptz + {to} * INTERVAL '1 microsecond')"
            );
            match conn.client.batch_execute(&sql).await {
                Ok(()) => {
                    info!(
                        aggregate = agg,
                        "refreshed a continuous aggregate over backfilled data"
                    );
                    self.backfill.remove(agg);
                }
                Err(e) => {
                    warn!(aggregate = agg, error = %db_message(&e), "cannot refresh a continuous aggregate; will retry")
                }
            }
        }
    }
}

/// [start, end) of the UTC day holding `ts`: days never straddle months, so rows in the same
/// day need no new month computed.
fn day_bounds(ts: Micros) -> (Micros, Micros) {
    let day = 86_400_000_000i64;
    let start = ts.div_euclid(day) * day;
    (start, start.saturating_add(day))
}
