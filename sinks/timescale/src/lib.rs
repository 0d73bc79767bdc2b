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

use auroraq_util::{redact, scrub};

pub use bench::{bench, url_with_dbname, BenchConfig, BenchPath, BenchReport};
pub use config::{CopyMode, TimescaleConfig, TimescaleMode, DEFAULT_MAX_FUTURE_DAYS, DEFAULT_MAX_PAST_DAYS};
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

/// Parses a PostgreSQL URL the one way every AuroraQ part accepts it:
/// `postgres://user[:password]@host[:port]/database[?options]` (or `postgresql://`), naming its
/// user, database and host. libpq key/value strings (`host=... user=...`) are refused, and so is
/// a URL without a user or database (the driver would otherwise connect as the operating
/// system's user to the database of that name). Errors name the URL redacted.
pub fn postgres_config(url: &str) -> Result<tokio_postgres::Config, SinkError> {
    let bad = |reason: String| SinkError::Url {
        url: redact(url),
        reason,
    };
    let t = url.trim();
    if !(t.starts_with("postgres://") || t.starts_with("postgresql://")) {
        return Err(bad(if !t.contains("://") && t.contains('=') {
            "libpq key/value strings are not accepted: give postgres://user[:password]@host[:port]/database"
                .into()
        } else {
            "not a postgres:// URL: give postgres://user[:password]@host[:port]/database".into()
        }));
    }
    let pg: tokio_postgres::Config = t.parse().map_err(|e: tokio_postgres::Error| {
        let why = match std::error::Error::source(&e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        };
        bad(scrub(&why, url))
    })?;
    if pg.get_user().is_none_or(str::is_empty) {
        return Err(bad(
            "names no user (postgres://user@host/database); AuroraQ does not connect as the operating system's user".into(),
        ));
    }
    if pg.get_dbname().is_none_or(str::is_empty) {
        return Err(bad(
            "names no database (postgres://user@host/database); AuroraQ does not pick one for you".into(),
        ));
    }
    if pg.get_hosts().is_empty() {
        return Err(bad("names no host".into()));
    }
    Ok(pg)
}

/// Opens a connection (no TLS) with the sink's settings; the returned task drives it.
pub async fn connect(
    url: &str,
    cfg: &TimescaleConfig,
) -> Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), SinkError> {
    let mut pg = postgres_config(url)?;
    if pg.get_application_name().is_none() {
        pg.application_name(&cfg.application_name);
    }
    pg.connect_timeout(cfg.connect_timeout);
    let (client, connection) = pg
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|e| SinkError::Connect {
            url: redact(url),
            reason: scrub(&writer::db_message(&e), url),
        })?;
    let task = tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "PostgreSQL connection ended");
        }
    });
    Ok((client, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_urls_name_user_database_and_host_and_errors_hide_secrets() {
        let ok = postgres_config("postgres://u:pw@127.0.0.1:5432/d?sslmode=disable").expect("valid");
        assert_eq!((ok.get_user(), ok.get_dbname()), (Some("u"), Some("d")));
        assert!(postgres_config("postgresql://u@h/d").is_ok());
        for (url, why) in [
            ("mysql://x", "not a postgres:// URL"),
            ("", "not a postgres:// URL"),
            (
                "host=h user=u password=TOPSECRET dbname=d",
                "key/value strings are not accepted",
            ),
            ("postgres://127.0.0.1:5432/d?password=TOPSECRET", "names no user"),
            ("postgres://u:TOPSECRET@127.0.0.1:5432", "names no database"),
            ("postgres://u:TOPSECRET@127.0.0.1:5432/", "names no database"),
            ("postgres://u:TOPSECRET@h/d?port=x", "invalid"),
            ("postgres://u:TOPSECRET@h/d?password=TOPSECRET&bogus=1", "bogus"),
        ] {
            let e = postgres_config(url).expect_err(url).to_string();
            assert!(e.contains(why), "{url}: {e}");
            assert!(!e.contains("TOPSECRET"), "{url}: {e}");
            let cfg = TimescaleConfig::new(url);
            assert!(cfg.validate().is_err(), "the sink refuses {url} before it starts");
        }
    }

    #[test]
    fn the_accepted_time_range_is_bounded_both_ways() {
        let day = 86_400_000_000i64;
        let now = 1_765_000_000_000_000; // 2025-12-06
        let mut cfg = TimescaleConfig::new("postgres://u@h/d");
        assert!(cfg.check_time(now, now).is_ok());
        assert!(cfg.check_time(now - 7305 * day, now).is_ok());
        let e = cfg.check_time(0, now).expect_err("1970");
        assert!(
            e.contains("1970-01-01T00:00:00") && e.contains("7305 days before now"),
            "{e}"
        );
        assert!(cfg.check_time(now + 731 * day, now).is_ok());
        let e = cfg.check_time(now + 732 * day, now).expect_err("too far ahead");
        assert!(e.contains("731 days after now"), "{e}");
        assert!(cfg.check_time(i64::MIN, now).is_err());
        assert!(cfg.check_time(i64::MAX, now).is_err());
        cfg.max_past_days = 0;
        cfg.max_future_days = 0;
        assert!(cfg.check_time(0, now).is_ok() && cfg.check_time(i64::MAX, now).is_ok());
    }
}
