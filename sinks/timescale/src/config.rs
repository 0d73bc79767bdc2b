//! How the sink connects, batches and retries.

use std::time::Duration;

use auroraq_schemas::Micros;
use serde::{Deserialize, Serialize};

/// Whether to use TimescaleDB.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimescaleMode {
    /// TimescaleDB when the extension can be created, else native partitioning.
    #[default]
    Auto,
    /// TimescaleDB or fail.
    Require,
    /// Native partitioning even where TimescaleDB is available.
    Off,
}

impl std::str::FromStr for TimescaleMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(TimescaleMode::Auto),
            "require" | "required" | "on" | "yes" | "true" => Ok(TimescaleMode::Require),
            "off" | "no" | "false" => Ok(TimescaleMode::Off),
            other => Err(format!(
                "timescaledb mode must be auto, require or off, not {other:?}"
            )),
        }
    }
}

/// How a batch is written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CopyMode {
    /// Binary COPY straight into the tables while batches bring no duplicates; a batch that meets
    /// one (unique violation) is rolled back and written through staging, and so are the batches
    /// after it until one brings no duplicate, and every batch holding a redelivery. Same rows in
    /// the end as `Staged`, faster on fresh data.
    #[default]
    Adaptive,
    /// Always binary COPY into a temporary staging table, then `INSERT ... SELECT ... ON CONFLICT
    /// DO NOTHING`.
    Staged,
}

impl std::str::FromStr for CopyMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "adaptive" => Ok(CopyMode::Adaptive),
            "staged" => Ok(CopyMode::Staged),
            other => Err(format!("copy mode must be adaptive or staged, not {other:?}")),
        }
    }
}

/// Default of [`TimescaleConfig::max_past_days`]: 20 years (2006 onwards, as of 2026).
pub const DEFAULT_MAX_PAST_DAYS: u32 = 7305;
/// Default of [`TimescaleConfig::max_future_days`]: 2 years.
pub const DEFAULT_MAX_FUTURE_DAYS: u32 = 731;

const DAY_MICROS: i64 = 86_400_000_000;

/// Settings of the TimescaleDB/PostgreSQL sink.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TimescaleConfig {
    /// `postgres://user[:password]@host[:port]/database[?options]` (TLS is not supported).
    pub url: String,
    /// Consumer group, and the dead-letter topic `dlq.<group>`.
    pub group: String,
    /// Topic filters to consume; each joins the group with its own subscription.
    pub filters: Vec<String>,
    pub member: u32,
    pub members: u32,
    /// Most rows (events) per batch.
    pub batch_rows: usize,
    /// Longest a delivery waits for its batch to fill before the batch is written anyway.
    pub batch_delay: Duration,
    /// Batches waiting while one is written (the next one is decoded meanwhile).
    pub pipeline: usize,
    /// The bus redelivers what is not acked within this time (also while PostgreSQL is down;
    /// redeliveries are de-duplicated by the table keys).
    pub ack_wait: Duration,
    pub timescaledb: TimescaleMode,
    pub copy_mode: CopyMode,
    /// Apply migrations at start.
    pub migrate: bool,
    /// Native partitioning: monthly partitions created ahead of the current month.
    pub partitions_ahead: u32,
    /// Native partitioning: rows further in the future than this many months go to the default
    /// partition instead of creating partitions (a wrong clock should not create hundreds).
    pub max_future_months: u32,
    /// Events whose `ts_event` is more than this many days before now are not written: they
    /// become dead letters (reason `out_of_time_range`), so that events dated decades back do not
    /// make the sink create a partition per month. Zero: no bound.
    pub max_past_days: u32,
    /// Likewise for events more than this many days after now. Zero: no bound.
    pub max_future_days: u32,
    /// First retry delay after a failure; doubles up to `backoff_max`.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    pub connect_timeout: Duration,
    /// A batch write taking longer is abandoned, the connection dropped and the batch retried.
    pub write_timeout: Duration,
    /// TimescaleDB: how often to refresh continuous aggregates over data written behind their
    /// refresh policies' windows (a replay of old data); zero: never.
    pub backfill_refresh: Duration,
    /// Shown in `pg_stat_activity`.
    pub application_name: String,
}

impl TimescaleConfig {
    pub fn new(url: impl Into<String>) -> Self {
        TimescaleConfig {
            url: url.into(),
            group: "sink-timescale".into(),
            filters: vec![">".into()],
            member: 0,
            members: 1,
            batch_rows: 5000,
            batch_delay: Duration::from_millis(200),
            pipeline: 2,
            ack_wait: Duration::from_secs(60),
            timescaledb: TimescaleMode::Auto,
            copy_mode: CopyMode::Adaptive,
            migrate: true,
            partitions_ahead: 2,
            max_future_months: 24,
            max_past_days: DEFAULT_MAX_PAST_DAYS,
            max_future_days: DEFAULT_MAX_FUTURE_DAYS,
            backoff_min: Duration::from_millis(200),
            backoff_max: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(120),
            backfill_refresh: Duration::from_secs(60),
            application_name: "auroraq-sink-timescale".into(),
        }
    }

    /// Most deliveries the sink holds unacked: the batch being filled, those queued, the one
    /// being decoded ahead and the one being written.
    pub fn max_in_flight(&self) -> usize {
        self.batch_rows.max(1) * (self.pipeline.max(1) + 3)
    }

    /// Whether an event at `ts` (epoch µs) is inside the accepted range around `now`; if not,
    /// why.
    pub fn check_time(&self, ts: Micros, now: Micros) -> Result<(), String> {
        if self.max_past_days > 0 {
            let min = now.saturating_sub(self.max_past_days as i64 * DAY_MICROS);
            if ts < min {
                return Err(format!(
                    "ts_event {} is more than {} days before now (max_past_days); earliest accepted {}",
                    auroraq_util::time::rfc3339(ts),
                    self.max_past_days,
                    auroraq_util::time::rfc3339(min)
                ));
            }
        }
        if self.max_future_days > 0 {
            let max = now.saturating_add(self.max_future_days as i64 * DAY_MICROS);
            if ts > max {
                return Err(format!(
                    "ts_event {} is more than {} days after now (max_future_days); latest accepted {}",
                    auroraq_util::time::rfc3339(ts),
                    self.max_future_days,
                    auroraq_util::time::rfc3339(max)
                ));
            }
        }
        Ok(())
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.url.is_empty() {
            return Err("no PostgreSQL URL".into());
        }
        crate::postgres_config(&self.url).map_err(|e| e.to_string())?;
        if self.filters.is_empty() {
            return Err("no topic filter".into());
        }
        if self.batch_rows == 0 {
            return Err("batch_rows must be at least 1".into());
        }
        if self.backoff_min.is_zero() || self.backoff_max < self.backoff_min {
            return Err("backoff_min must be positive and at most backoff_max".into());
        }
        Ok(())
    }
}
