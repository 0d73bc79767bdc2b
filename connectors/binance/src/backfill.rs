//! Klines backfill: `/api/v3/klines` pages over `[from, to)` published as `Kline` events.
//!
//! Pages hold up to `page_limit` bars (1000 at most); the next page starts one interval after
//! the last bar's open time. After each page is published, a checkpoint (a small JSON file with
//! the next start time) is written; a backfill started with the same checkpoint resumes there.
//! A bar's id is its symbol, interval and open time, so a re-run of a range de-duplicates on
//! the bus. Bars still open (closing after now) are not published: the backfill stops before
//! them and a later run picks them up once closed.

use std::path::{Path, PathBuf};

use auroraq_bus::Bus;
use auroraq_schemas::{now_micros, AnyEvent, Kline, Micros};
use auroraq_stage::{publish_events, StageError};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{BackfillConfig, ConfigError};
use crate::rest::{RestClient, RestError};

/// Progress after each published page.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BackfillProgress {
    /// Bars published, counting earlier runs of the same checkpoint.
    pub done: u64,
    /// Bars the range should hold (estimated from its length; exchange downtime makes fewer).
    pub total: u64,
    /// Pages fetched in this run.
    pub pages: u64,
    /// Where the next page starts, epoch microseconds.
    pub next_start: Micros,
}

/// What a backfill run did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BackfillReport {
    /// Bars published in this run (duplicates of earlier runs included).
    pub published: u64,
    /// Of those, bars the bus already had.
    pub duplicates: u64,
    pub pages: u64,
    /// Bars published over all runs of this checkpoint.
    pub done: u64,
    pub total: u64,
    /// The start read from the checkpoint, when it resumed.
    pub resumed_from: Option<Micros>,
    /// Where a next run would start.
    pub next_start: Micros,
    /// The whole range is published.
    pub complete: bool,
    /// Stopped by the cancellation token before the end.
    pub stopped: bool,
    /// The exchange has no more bars yet (the range reaches into the future, or the
    /// symbol stopped trading); a later run continues.
    pub exhausted: bool,
    /// REST `rate_limited` statuses published.
    pub rate_limited: u64,
}

/// Why a backfill failed.
#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    #[error("invalid backfill: {0}")]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Rest(#[from] RestError),
    #[error("checkpoint {path}: {source}")]
    CheckpointIo {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("checkpoint {path} is not a backfill checkpoint: {source}")]
    CheckpointFormat {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("checkpoint {path} belongs to another backfill ({found}); expected {expected}")]
    CheckpointMismatch {
        path: PathBuf,
        found: String,
        expected: String,
    },
    #[error("publishing klines to the bus: {0}")]
    Publish(#[source] StageError),
}

/// The resumable state of a backfill, as kept in its checkpoint file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub version: u32,
    pub exchange: String,
    pub symbol: String,
    pub interval: String,
    pub from: Micros,
    pub to: Micros,
    /// The next page's start (epoch microseconds).
    pub next_start: Micros,
    /// Bars published so far.
    pub done: u64,
    /// When it was written.
    pub updated: Micros,
}

impl Checkpoint {
    fn job(&self) -> String {
        format!(
            "{} {} {} from {}",
            self.exchange, self.symbol, self.interval, self.from
        )
    }

    /// Reads a checkpoint; `None` if the file does not exist.
    pub async fn read(path: &Path) -> Result<Option<Checkpoint>, BackfillError> {
        match tokio::fs::read(path).await {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|source| BackfillError::CheckpointFormat {
                        path: path.to_owned(),
                        source,
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(BackfillError::CheckpointIo {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Writes it atomically (a temporary file renamed over the old one).
    pub async fn write(&self, path: &Path) -> Result<(), BackfillError> {
        let io = |source| BackfillError::CheckpointIo {
            path: path.to_owned(),
            source,
        };
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let body = serde_json::to_vec_pretty(self).map_err(|source| BackfillError::CheckpointFormat {
            path: path.to_owned(),
            source,
        })?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(dir).await.map_err(io)?;
        }
        tokio::fs::write(&tmp, body).await.map_err(io)?;
        tokio::fs::rename(&tmp, path).await.map_err(io)
    }
}

/// Epoch microseconds to Binance's milliseconds, rounding up (a start inside a millisecond
/// begins at the next one).
fn ceil_ms(us: Micros) -> i64 {
    us.div_euclid(1000) + i64::from(us.rem_euclid(1000) != 0)
}

/// Backfills `cfg`'s range onto `bus`, calling `progress` after each published page. Stops
/// cleanly (checkpoint written, `stopped: true`) when `cancel` fires.
pub async fn backfill(
    cfg: &BackfillConfig,
    bus: &dyn Bus,
    cancel: &CancellationToken,
    progress: &mut (dyn FnMut(&BackfillProgress) + Send),
) -> Result<BackfillReport, BackfillError> {
    cfg.validate()?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let rest = RestClient::new(cfg.rest.clone(), &cfg.exchange)?
        .with_status_channel(tx)
        .with_cancel(cancel.child_token());
    let interval = cfg.interval.name();
    let step_us = cfg.interval.millis().map(|m| m * 1000);
    let total = {
        let iv = cfg.interval.approx_millis() * 1000;
        ((cfg.to - cfg.from + iv - 1) / iv).max(0) as u64
    };
    let mut cp = Checkpoint {
        version: 1,
        exchange: cfg.exchange.clone(),
        symbol: cfg.symbol.clone(),
        interval: interval.to_owned(),
        from: cfg.from,
        to: cfg.to,
        next_start: cfg.from,
        done: 0,
        updated: now_micros(),
    };
    let mut report = BackfillReport {
        total,
        ..BackfillReport::default()
    };
    if let Some(path) = &cfg.checkpoint {
        if let Some(old) = Checkpoint::read(path).await? {
            if old.job() != cp.job() {
                return Err(BackfillError::CheckpointMismatch {
                    path: path.clone(),
                    found: old.job(),
                    expected: cp.job(),
                });
            }
            info!(path = %path.display(), next_start = old.next_start, done = old.done, "resuming backfill");
            cp.next_start = old.next_start;
            cp.done = old.done;
            report.resumed_from = Some(old.next_start);
        }
    }
    let end_ms = ceil_ms(cfg.to) - 1;
    loop {
        report.next_start = cp.next_start;
        report.done = cp.done;
        if cp.next_start >= cfg.to {
            report.complete = true;
            break;
        }
        if cancel.is_cancelled() {
            report.stopped = true;
            break;
        }
        let start_ms = ceil_ms(cp.next_start);
        let page = {
            let fetch = rest.klines(
                &cfg.symbol,
                interval,
                Some(start_ms),
                Some(end_ms),
                cfg.page_limit,
            );
            tokio::pin!(fetch);
            loop {
                tokio::select! {
                    r = &mut fetch => break r,
                    Some(st) = rx.recv() => {
                        report.rate_limited += 1;
                        publish_events(bus, &[AnyEvent::FeedStatus(st)]).await.map_err(BackfillError::Publish)?;
                    }
                }
            }
        };
        while let Ok(st) = rx.try_recv() {
            report.rate_limited += 1;
            publish_events(bus, &[AnyEvent::FeedStatus(st)])
                .await
                .map_err(BackfillError::Publish)?;
        }
        let rows = match page {
            Ok(rows) => rows,
            Err(RestError::Cancelled { .. }) => {
                report.stopped = true;
                break;
            }
            Err(e) => return Err(e.into()),
        };
        report.pages += 1;
        let raw_len = rows.len();
        let mut open_bar = false;
        let mut bars: Vec<Kline> = Vec::with_capacity(raw_len);
        for k in rows {
            if k.open_time < cp.next_start || k.open_time >= cfg.to {
                continue;
            }
            if !k.closed {
                open_bar = true;
                break;
            }
            bars.push(k);
        }
        let Some(last) = bars.last() else {
            report.exhausted = true;
            break;
        };
        let next = match step_us {
            Some(step) => last.open_time + step,
            None => last.close_time + 1000,
        };
        let events: Vec<AnyEvent> = bars.into_iter().map(AnyEvent::Kline).collect();
        auroraq_stage::trace::record_receipts("binance-backfill", &events);
        let rep = publish_events(bus, &events)
            .await
            .map_err(BackfillError::Publish)?;
        report.published += events.len() as u64;
        report.duplicates += rep.duplicates as u64;
        cp.done += events.len() as u64;
        cp.next_start = next;
        cp.updated = now_micros();
        if let Some(path) = &cfg.checkpoint {
            cp.write(path).await?;
        }
        report.next_start = cp.next_start;
        report.done = cp.done;
        progress(&BackfillProgress {
            done: cp.done,
            total,
            pages: report.pages,
            next_start: cp.next_start,
        });
        if open_bar || (raw_len as u32) < cfg.page_limit {
            if cp.next_start >= cfg.to {
                report.complete = true;
            } else {
                report.exhausted = true;
            }
            break;
        }
    }
    if report.exhausted {
        warn!(symbol = %cfg.symbol, next_start = cp.next_start, "no more closed bars on the exchange yet");
    }
    info!(?report, "backfill finished");
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millisecond_rounding() {
        assert_eq!(ceil_ms(1_000_000), 1000);
        assert_eq!(ceil_ms(1_000_001), 1001);
        assert_eq!(ceil_ms(0), 0);
    }

    #[tokio::test]
    async fn checkpoint_roundtrip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/cp.json");
        assert_eq!(Checkpoint::read(&path).await.expect("absent is fine"), None);
        let cp = Checkpoint {
            version: 1,
            exchange: "binance".into(),
            symbol: "BTCUSDT".into(),
            interval: "1m".into(),
            from: 1,
            to: 2,
            next_start: 3,
            done: 4,
            updated: 5,
        };
        cp.write(&path).await.expect("writes");
        assert_eq!(Checkpoint::read(&path).await.expect("reads"), Some(cp));
        tokio::fs::write(&path, b"{not json").await.expect("overwrite");
        assert!(matches!(
            Checkpoint::read(&path).await,
            Err(BackfillError::CheckpointFormat { .. })
        ));
    }
}
