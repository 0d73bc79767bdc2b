//! The operator's surface of every role: Prometheus metrics at `/metrics`, liveness at `/health`,
//! readiness at `/ready`, on `--metrics-listen ADDR` (`[metrics] listen`), and the consumer lag of
//! every group and partition of the role's bus as gauges.
//!
//! Libraries record with the `metrics` facade (`auroraq_*` names, Prometheus conventions); nothing
//! is recorded until [`start`] installs the Prometheus recorder, so a role without a listen address
//! pays nothing.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{Context, Result};
use auroraq_bus::Bus;
use auroraq_util::CancellationToken;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

/// `[metrics]`: where a role serves its metrics.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// `host:port` for `/metrics`, `/health`, `/ready`; empty (the default): no server.
    pub listen: String,
    /// Seconds between reads of the bus's consumer backlogs (the lag gauges).
    pub lag_interval_secs: u64,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: String::new(),
            lag_interval_secs: 5,
        }
    }
}

impl MetricsConfig {
    pub fn validate(&self) -> Result<()> {
        if !self.listen.is_empty() {
            self.listen.parse::<SocketAddr>().with_context(|| {
                format!(
                    "metrics.listen {:?} is not host:port (e.g. 0.0.0.0:9464)",
                    self.listen
                )
            })?;
        }
        anyhow::ensure!(
            self.lag_interval_secs > 0,
            "metrics.lag_interval_secs must be at least 1"
        );
        Ok(())
    }
}

struct State {
    handle: PrometheusHandle,
    ready: AtomicBool,
    lag_interval: Duration,
}

static STATE: OnceLock<State> = OnceLock::new();

/// Histogram buckets (seconds) for latencies: 50 µs .. 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
/// Buckets for batch sizes.
const SIZE_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0];

/// The running server; dropping it changes nothing (the server stops with the token).
pub struct Telemetry {
    pub addr: SocketAddr,
}

/// Installs the Prometheus recorder and serves `/metrics`, `/health` and `/ready` on
/// `cfg.listen` until `cancel` fires. `None` when no address is configured. `/ready` answers 503
/// until [`set_ready`] (the role calls it once its bus is connected and its inputs subscribed).
pub async fn start(cfg: &MetricsConfig, role: &str, cancel: CancellationToken) -> Result<Option<Telemetry>> {
    if cfg.listen.is_empty() {
        return Ok(None);
    }
    cfg.validate()?;
    let addr: SocketAddr = cfg.listen.parse().context("metrics.listen")?;
    let state = match STATE.get() {
        Some(s) => s,
        None => {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_size".into()), SIZE_BUCKETS))
                .context("histogram buckets")?
                .add_global_label("role", role)
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder)
                .map_err(|e| anyhow::anyhow!("cannot install the metrics recorder: {e}"))?;
            describe();
            let _ = STATE.set(State {
                handle,
                ready: AtomicBool::new(false),
                lag_interval: Duration::from_secs(cfg.lag_interval_secs),
            });
            STATE.get().context("metrics state")?
        }
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for metrics on {addr}"))?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(|| async { state.handle.render() }))
        .route("/health", axum::routing::get(|| async { "ok\n" }))
        .route(
            "/ready",
            axum::routing::get(|| async {
                if state.ready.load(Ordering::Acquire) {
                    (axum::http::StatusCode::OK, "ready\n")
                } else {
                    (
                        axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        "starting: the bus is not connected yet\n",
                    )
                }
            }),
        );
    tokio::spawn(async move {
        let serve =
            axum::serve(listener, app).with_graceful_shutdown(async move { cancel.cancelled().await });
        if let Err(e) = serve.await {
            warn!(error = %e, "metrics server stopped");
        }
    });
    info!(%addr, "serving /metrics, /health and /ready");
    Ok(Some(Telemetry { addr }))
}

/// Marks the role ready (`/ready` answers 200) or not.
pub fn set_ready(ready: bool) {
    if let Some(s) = STATE.get() {
        s.ready.store(ready, Ordering::Release);
    }
}

/// Whether [`start`] installed the recorder in this process.
pub fn enabled() -> bool {
    STATE.get().is_some()
}

/// Publishes the consumer lag of every group and partition of `bus` as gauges
/// (`auroraq_bus_pending_messages`, `auroraq_bus_unacked_messages`), every `lag_interval_secs`,
/// until the bus closes. Does nothing when metrics are off.
pub fn watch_lag(bus: Arc<dyn Bus>) {
    let Some(state) = STATE.get() else { return };
    let every = state.lag_interval;
    tokio::spawn(async move {
        let mut warned = false;
        loop {
            match bus.partition_backlogs().await {
                Ok(parts) => {
                    for p in parts {
                        let labels = [("group", p.group.clone()), ("partition", p.partition.to_string())];
                        metrics::gauge!("auroraq_bus_pending_messages", &labels)
                            .set(p.backlog.pending as f64);
                        metrics::gauge!("auroraq_bus_unacked_messages", &labels)
                            .set(p.backlog.unacked as f64);
                    }
                }
                Err(auroraq_bus::BusError::Closed) => return,
                Err(e) => {
                    if !warned {
                        warn!(error = %e, "cannot read consumer backlogs; lag gauges stay stale");
                        warned = true;
                    }
                }
            }
            tokio::time::sleep(every).await;
        }
    });
}

/// Help texts of the metrics every role may export.
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        "auroraq_events_consumed_total",
        "Events a stage consumed, by stage and topic."
    );
    describe_counter!(
        "auroraq_events_published_total",
        "Events a stage published, by stage and topic."
    );
    describe_counter!(
        "auroraq_dead_letters_total",
        "Events dead-lettered, by stage and reason."
    );
    describe_histogram!(
        "auroraq_handler_seconds",
        Unit::Seconds,
        "Time a stage spent on one delivery."
    );
    describe_gauge!(
        "auroraq_bus_pending_messages",
        "Consumer lag: messages stored for a group and partition, not yet delivered."
    );
    describe_gauge!(
        "auroraq_bus_unacked_messages",
        "Messages delivered to a group and partition, not yet acked."
    );
    describe_histogram!("auroraq_sentiment_batch_size", "Sequences per inference batch.");
    describe_gauge!(
        "auroraq_sentiment_padding_efficiency",
        "Real tokens over padded tokens in the last inference batch (0..1)."
    );
    describe_histogram!(
        "auroraq_sentiment_inference_seconds",
        Unit::Seconds,
        "Time of one inference batch."
    );
    describe_gauge!("auroraq_fusion_windows_open", "Fusion windows open.");
    describe_counter!(
        "auroraq_fusion_late_scores_total",
        "Scores that arrived after their window closed."
    );
    describe_gauge!(
        "auroraq_risk_var",
        "Value at risk of an agent's book, quote currency."
    );
    describe_gauge!(
        "auroraq_risk_exposure",
        "Gross exposure of an agent's book, quote currency."
    );
    describe_counter!(
        "auroraq_execution_orders_total",
        "Order updates, by venue and status."
    );
    describe_counter!("auroraq_execution_fills_total", "Fills, by venue.");
    describe_counter!("auroraq_sink_rows_total", "Rows written by a sink, by table.");
    describe_histogram!(
        "auroraq_sink_copy_seconds",
        Unit::Seconds,
        "Time of one COPY into a table."
    );
    describe_gauge!(
        "auroraq_feed_up",
        "1 while a market-data feed is connected, by exchange."
    );
    describe_counter!("auroraq_feed_reconnects_total", "Feed reconnects, by exchange.");
    describe_counter!(
        "auroraq_book_gaps_total",
        "Order book sequence gaps (resyncs), by exchange and symbol."
    );
}
