//! The TimescaleDB/PostgreSQL sink: every event on the bus becomes a row of its table.
//!
//! - **Schema** ([`migrate`]): versioned migrations applied at start, idempotent, recorded in
//!   `aq_schema_migrations`. With the `timescaledb` extension: hypertables, compression of old
//!   chunks, continuous aggregates (1-minute and 1-hour bars, hourly sentiment per asset) with
//!   refresh policies. Without it: native monthly range partitions plus a default partition, and
//!   plain views with the same names and columns. The SQL is in `sql/` and `dashboards/sql/`.
//! - **Writes** ([`run`]): binary COPY in batches bounded by size and time, one transaction per
//!   batch; idempotent under redelivery (staging table + `INSERT ... ON CONFLICT DO NOTHING` on
//!   the key `(ts, event_id)`, with `ts` = the event's `ts_event`); a delivery is acked only after
//!   its row is committed; while PostgreSQL is down the sink holds its batch, stops consuming,
//!   backs off and reconnects, and loses nothing.
//! - **Benchmark** ([`bench()`]): the sink's rows/s beside a bare `tokio-postgres` binary COPY loop.

mod bench;
mod config;
mod error;
mod metrics;
pub mod migrate;
mod pgtypes;
mod sink;
pub mod tables;
mod writer;

use auroraq_util::redact;

pub use bench::{bench, url_with_dbname, BenchConfig, BenchPath, BenchReport};
pub use config::{CopyMode, TimescaleConfig, TimescaleMode};
pub use error::SinkError;
pub use metrics::{SinkMetrics, SinkStats, TableStats};
pub use migrate::{migrate, Flavor, MigrationReport};
pub use pgtypes::Ts;
pub use sink::{run, run_subscriptions, subscribe};

/// Connects to PostgreSQL (no TLS) and applies the migrations: what the sink does at start, for
/// `auroraq doctor`-like checks, scripts and tests.
pub async fn migrate_url(url: &str, cfg: &TimescaleConfig) -> Result<MigrationReport, SinkError> {
    let (mut client, task) = connect(url, cfg).await?;
    let r = migrate::migrate(&mut client, cfg.timescaledb, cfg.partitions_ahead).await;
    // Dropping the client makes the connection task say goodbye (Terminate) and end; give it
    // a moment, so that a server taking one connection at a time is free for the next.
    drop(client);
    let abort = task.abort_handle();
    if tokio::time::timeout(std::time::Duration::from_secs(2), task)
        .await
        .is_err()
    {
        abort.abort();
        tracing::debug!("PostgreSQL connection did not close in 2 s");
    }
    r
}

/// Opens a connection (no TLS) with the sink's settings; the returned task drives it.
pub async fn connect(
    url: &str,
    cfg: &TimescaleConfig,
) -> Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), SinkError> {
    let mut pg: tokio_postgres::Config = url.parse().map_err(|e| SinkError::Connect {
        url: redact(url),
        reason: format!("bad URL: {e}"),
    })?;
    if pg.get_application_name().is_none() {
        pg.application_name(&cfg.application_name);
    }
    pg.connect_timeout(cfg.connect_timeout);
    let (client, connection) = pg
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|e| SinkError::Connect {
            url: redact(url),
            reason: writer::db_message(&e),
        })?;
    let task = tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "PostgreSQL connection ended");
        }
    });
    Ok((client, task))
}
