//! Schema migrations: versioned, each applied once in its own transaction under an advisory lock
//! (so sink members starting together do not race), recorded in `aq_schema_migrations`.
//!
//! The SQL lives in `sql/` (and the dashboard views in the repository's `dashboards/sql/`). There
//! are two flavours, chosen when the first migration runs and recorded with it:
//! - `timescaledb`: hypertables, compression, continuous aggregates with refresh policies;
//! - `postgres`: native monthly range partitions plus a default partition, and plain views with
//!   the aggregates' names and columns.

use serde::Serialize;
use tokio_postgres::Client;
use tracing::{info, warn};

use crate::config::TimescaleMode;
use crate::SinkError;

/// Which schema flavour a database has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Flavor {
    /// TimescaleDB hypertables and continuous aggregates.
    Timescaledb,
    /// Native declarative partitioning and plain views.
    Postgres,
}

impl Flavor {
    pub fn name(self) -> &'static str {
        match self {
            Flavor::Timescaledb => "timescaledb",
            Flavor::Postgres => "postgres",
        }
    }

    fn parse(s: &str) -> Option<Flavor> {
        match s {
            "timescaledb" => Some(Flavor::Timescaledb),
            "postgres" => Some(Flavor::Postgres),
            _ => None,
        }
    }
}

/// The event tables, written for native partitioning.
pub const TABLES_SQL: &str = include_str!("../sql/common/tables.sql");
/// Native partitioning: partition functions and default partitions.
pub const PARTITIONS_SQL: &str = include_str!("../sql/postgres/partitions.sql");
/// Native partitioning: aggregates as plain views.
pub const POSTGRES_AGGREGATES_SQL: &str = include_str!("../sql/postgres/aggregates.sql");
/// TimescaleDB: hypertables and compression.
pub const HYPERTABLES_SQL: &str = include_str!("../sql/timescaledb/hypertables.sql");
/// TimescaleDB: continuous aggregates and their policies.
pub const TIMESCALEDB_AGGREGATES_SQL: &str = include_str!("../sql/timescaledb/aggregates.sql");
/// Migration 4: the futures market tables (`mark_prices`, `liquidations`), written for native
/// partitioning as [`TABLES_SQL`] is.
pub const FUTURES_TABLES_SQL: &str = include_str!("../sql/common/futures_tables.sql");
/// Migration 4, native partitioning: the futures tables among the partitioned ones.
pub const FUTURES_PARTITIONS_SQL: &str = include_str!("../sql/postgres/futures_partitions.sql");
/// Migration 4, TimescaleDB: the futures tables as hypertables.
pub const FUTURES_HYPERTABLES_SQL: &str = include_str!("../sql/timescaledb/futures_hypertables.sql");

/// The dashboard views (`dashboards/sql/` at the repository root), in file order.
pub const DASHBOARD_SQL: &[(&str, &str)] = &[
    (
        "00_functions.sql",
        include_str!("../../../dashboards/sql/00_functions.sql"),
    ),
    (
        "10_prices.sql",
        include_str!("../../../dashboards/sql/10_prices.sql"),
    ),
    (
        "20_sentiment.sql",
        include_str!("../../../dashboards/sql/20_sentiment.sql"),
    ),
    (
        "30_articles.sql",
        include_str!("../../../dashboards/sql/30_articles.sql"),
    ),
    ("40_pnl.sql", include_str!("../../../dashboards/sql/40_pnl.sql")),
    (
        "50_operations.sql",
        include_str!("../../../dashboards/sql/50_operations.sql"),
    ),
];

/// The clause native partitioning adds to each table of [`TABLES_SQL`]; TimescaleDB runs the file
/// without it.
const PARTITION_CLAUSE: &str = " PARTITION BY RANGE (ts)";

/// One migration, as applied to a flavour.
#[derive(Clone, Debug)]
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: String,
}

/// The migrations of a flavour, in order.
pub fn migrations(flavor: Flavor) -> Vec<Migration> {
    let tables = match flavor {
        Flavor::Postgres => format!("{TABLES_SQL}\n{PARTITIONS_SQL}"),
        Flavor::Timescaledb => format!(
            "CREATE EXTENSION IF NOT EXISTS timescaledb;\n{}\n{HYPERTABLES_SQL}",
            TABLES_SQL.replace(PARTITION_CLAUSE, "")
        ),
    };
    let aggregates = match flavor {
        Flavor::Postgres => POSTGRES_AGGREGATES_SQL.to_owned(),
        Flavor::Timescaledb => TIMESCALEDB_AGGREGATES_SQL.to_owned(),
    };
    let futures = match flavor {
        Flavor::Postgres => format!("{FUTURES_TABLES_SQL}\n{FUTURES_PARTITIONS_SQL}"),
        Flavor::Timescaledb => format!(
            "{}\n{FUTURES_HYPERTABLES_SQL}",
            FUTURES_TABLES_SQL.replace(PARTITION_CLAUSE, "")
        ),
    };
    let dashboards = DASHBOARD_SQL
        .iter()
        .map(|(name, sql)| format!("-- dashboards/sql/{name}\n{sql}"))
        .collect::<Vec<_>>()
        .join("\n");
    vec![
        Migration {
            version: 1,
            name: "event tables",
            sql: tables,
        },
        Migration {
            version: 2,
            name: "aggregates",
            sql: aggregates,
        },
        Migration {
            version: 3,
            name: "dashboard views",
            sql: dashboards,
        },
        Migration {
            version: 4,
            name: "futures market tables",
            sql: futures,
        },
    ]
}

/// What [`migrate`] did.
#[derive(Clone, Debug, Serialize)]
pub struct MigrationReport {
    pub flavor: Flavor,
    /// Versions applied by this call.
    pub applied: Vec<i32>,
    /// Every version the database now has.
    pub versions: Vec<i32>,
    /// Monthly partitions created ahead (native partitioning).
    pub partitions_created: i64,
}

/// FNV-1a 64 of a migration's text, recorded to notice edited migrations.
fn checksum(sql: &str) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in sql.as_bytes() {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")
}

/// Key of the advisory lock migrations take.
const LOCK_KEY: i64 = 0x4155_524f_5241_5131; // "AURORAQ1"

fn db_err(what: &'static str) -> impl Fn(tokio_postgres::Error) -> SinkError {
    move |e| SinkError::Migrate {
        what: what.to_owned(),
        source: e,
    }
}

/// Brings the database's schema up to date: creates the migrations table, picks the flavour on
/// a new database (by `mode`; a database keeps the flavour it was created with), and applies the
/// migrations it lacks. Idempotent. Native partitioning: also creates the monthly partitions
/// from the current month to `partitions_ahead` months ahead.
pub async fn migrate(
    client: &mut Client,
    mode: TimescaleMode,
    partitions_ahead: u32,
) -> Result<MigrationReport, SinkError> {
    {
        let tx = client
            .transaction()
            .await
            .map_err(db_err("begin migrations table"))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY])
            .await
            .map_err(db_err("lock for migrations"))?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS aq_schema_migrations (
                version     integer PRIMARY KEY,
                name        text NOT NULL,
                flavor      text NOT NULL,
                checksum    text NOT NULL,
                applied_at  timestamptz NOT NULL DEFAULT now()
            )",
        )
        .await
        .map_err(db_err("create aq_schema_migrations"))?;
        tx.commit().await.map_err(db_err("commit migrations table"))?;
    }
    let flavor = choose_flavor(client, mode).await?;
    let mut applied = Vec::new();
    for m in migrations(flavor) {
        let tx = client.transaction().await.map_err(db_err("begin migration"))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY])
            .await
            .map_err(db_err("lock for migrations"))?;
        let row = tx
            .query_opt(
                "SELECT checksum FROM aq_schema_migrations WHERE version = $1",
                &[&m.version],
            )
            .await
            .map_err(db_err("read aq_schema_migrations"))?;
        let sum = checksum(&m.sql);
        if let Some(row) = row {
            let recorded: String = row.get(0);
            if recorded != sum {
                warn!(
                    version = m.version,
                    name = m.name,
                    "migration changed since it was applied; not re-applied"
                );
            }
            continue;
        }
        info!(
            version = m.version,
            name = m.name,
            flavor = flavor.name(),
            "applying migration"
        );
        tx.batch_execute(&m.sql).await.map_err(|e| SinkError::Migrate {
            what: format!("migration {} ({}) for {}", m.version, m.name, flavor.name()),
            source: e,
        })?;
        tx.execute(
            "INSERT INTO aq_schema_migrations (version, name, flavor, checksum) VALUES ($1, $2, $3, $4)",
            &[&m.version, &m.name, &flavor.name(), &sum],
        )
        .await
        .map_err(db_err("record migration"))?;
        tx.commit().await.map_err(db_err("commit migration"))?;
        applied.push(m.version);
    }
    let partitions_created = if flavor == Flavor::Postgres {
        ensure_partitions_ahead(client, partitions_ahead).await?
    } else {
        0
    };
    let versions = client
        .query("SELECT version FROM aq_schema_migrations ORDER BY version", &[])
        .await
        .map_err(db_err("read aq_schema_migrations"))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    Ok(MigrationReport {
        flavor,
        applied,
        versions,
        partitions_created,
    })
}

/// Creates the monthly partitions of every table from this month to `ahead` months on.
pub async fn ensure_partitions_ahead(client: &Client, ahead: u32) -> Result<i64, SinkError> {
    let row = client
        .query_one(
            "SELECT aq_ensure_partitions(date_trunc('month', now() AT TIME ZONE 'UTC')::date,
                (date_trunc('month', now() AT TIME ZONE 'UTC') + make_interval(months => $1))::date)::bigint",
            &[&(ahead as i32)],
        )
        .await
        .map_err(db_err("create partitions ahead"))?;
    Ok(row.get(0))
}

/// The flavour recorded by the first migration, or the one `mode` picks on a new database.
async fn choose_flavor(client: &mut Client, mode: TimescaleMode) -> Result<Flavor, SinkError> {
    let recorded = client
        .query_opt("SELECT flavor FROM aq_schema_migrations WHERE version = 1", &[])
        .await
        .map_err(db_err("read aq_schema_migrations"))?;
    if let Some(row) = recorded {
        let name: String = row.get(0);
        let flavor =
            Flavor::parse(&name).ok_or_else(|| SinkError::Schema(format!("unknown flavor {name:?}")))?;
        if flavor == Flavor::Postgres && mode == TimescaleMode::Require {
            return Err(SinkError::Schema(
                "timescaledb is required but this database was set up with native partitioning".into(),
            ));
        }
        return Ok(flavor);
    }
    if mode == TimescaleMode::Off {
        return Ok(Flavor::Postgres);
    }
    let available = client
        .query_opt(
            "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'",
            &[],
        )
        .await
        .map_err(db_err("look for the timescaledb extension"))?
        .is_some();
    if available {
        // Creating it can still fail (not in shared_preload_libraries, no privilege): try it
        // in a transaction of its own.
        let tx = client.transaction().await.map_err(db_err("begin"))?;
        match tx
            .batch_execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
            .await
        {
            Ok(()) => {
                tx.commit().await.map_err(db_err("commit create extension"))?;
                return Ok(Flavor::Timescaledb);
            }
            Err(e) if mode == TimescaleMode::Require => {
                return Err(SinkError::Migrate {
                    what: "CREATE EXTENSION timescaledb".into(),
                    source: e,
                })
            }
            Err(e) => {
                warn!(error = %e, "the timescaledb extension is available but cannot be created; using native partitioning");
            }
        }
    } else if mode == TimescaleMode::Require {
        return Err(SinkError::Schema(
            "timescaledb is required but the extension is not available on this server".into(),
        ));
    }
    info!("no TimescaleDB: native partitioning and plain views");
    Ok(Flavor::Postgres)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_is_partitioned_on_postgres_and_not_on_timescaledb() {
        let tables = [TABLES_SQL, FUTURES_TABLES_SQL];
        let creates: usize = tables
            .iter()
            .map(|t| t.matches("CREATE TABLE IF NOT EXISTS").count())
            .sum();
        assert_eq!(creates, crate::tables::Table::ALL.len());
        let partitioned: usize = tables.iter().map(|t| t.matches(PARTITION_CLAUSE).count()).sum();
        assert_eq!(partitioned, creates);
        for m in migrations(Flavor::Timescaledb) {
            assert!(!m.sql.contains(") PARTITION BY"), "migration {}", m.version);
        }
        assert_eq!(
            HYPERTABLES_SQL.matches("create_hypertable(").count()
                + FUTURES_HYPERTABLES_SQL.matches("create_hypertable(").count(),
            creates,
            "every table becomes a hypertable"
        );
        // Native partitioning knows every table (monthly and default partitions).
        for t in crate::tables::Table::ALL {
            assert!(
                FUTURES_PARTITIONS_SQL.contains(&format!("'{}'", t.name())),
                "{} is not in aq_partitioned_tables()",
                t.name()
            );
        }
    }

    #[test]
    fn both_flavours_define_the_same_aggregates() {
        for name in ["trades_1m", "trades_1h", "klines_1h", "sentiment_1h"] {
            assert!(POSTGRES_AGGREGATES_SQL.contains(&format!("CREATE OR REPLACE VIEW {name} AS")));
            assert!(TIMESCALEDB_AGGREGATES_SQL
                .contains(&format!("CREATE MATERIALIZED VIEW IF NOT EXISTS {name}")));
            assert!(TIMESCALEDB_AGGREGATES_SQL.contains(&format!("add_continuous_aggregate_policy('{name}'")));
        }
    }

    #[test]
    fn versions_are_dense_and_checksums_stable() {
        for f in [Flavor::Postgres, Flavor::Timescaledb] {
            let ms = migrations(f);
            for (i, m) in ms.iter().enumerate() {
                assert_eq!(m.version, i as i32 + 1);
            }
        }
        assert_eq!(checksum("a"), checksum("a"));
        assert_ne!(checksum("a"), checksum("b"));
    }
}
