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
    let state = install(role, Duration::from_secs(cfg.lag_interval_secs))?;
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

/// Installs the Prometheus recorder once per process (labelled with `role`).
fn install(role: &str, lag_interval: Duration) -> Result<&'static State> {
    if let Some(s) = STATE.get() {
        return Ok(s);
    }
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
        lag_interval,
    });
    STATE.get().context("metrics state")
}

/// Installs the recorder (when [`start`] did not) and returns a function rendering every metric
/// in the Prometheus text format: for a role that serves `/metrics` on its own port (the API).
pub fn render_fn(role: &str) -> Result<Arc<dyn Fn() -> String + Send + Sync>> {
    let state = install(role, Duration::from_secs(5))?;
    Ok(Arc::new(move || state.handle.render()))
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

/// `[tracing]`: OpenTelemetry traces over OTLP/HTTP (protobuf). Off by default.
///
/// Events carry their W3C trace context whether or not this is on (deterministic ids, see
/// `auroraq_stage::trace`); this only decides whether spans are exported.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracingConfig {
    /// Export spans (`AURORAQ_TRACING_ENABLED=true`).
    pub enabled: bool,
    /// OTLP/HTTP base URL, e.g. `http://otel-collector:4318` (`/v1/traces` is appended); empty:
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `OTEL_EXPORTER_OTLP_ENDPOINT`, else
    /// `http://localhost:4318`.
    pub endpoint: String,
    /// Fraction of traces exported (0..=1), decided by trace id: every role keeps or drops the
    /// same traces.
    pub sample_ratio: f64,
    /// The `service.name`; empty: `OTEL_SERVICE_NAME`, else `auroraq-<role>`.
    pub service_name: String,
}

impl Default for TracingConfig {
    fn default() -> Self {
        TracingConfig {
            enabled: false,
            endpoint: String::new(),
            sample_ratio: 1.0,
            service_name: String::new(),
        }
    }
}

impl TracingConfig {
    pub fn validate(&self) -> Result<()> {
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.sample_ratio),
            "tracing.sample_ratio must be in 0..=1, not {}",
            self.sample_ratio
        );
        if !self.endpoint.is_empty() {
            anyhow::ensure!(
                self.endpoint.starts_with("http://") || self.endpoint.starts_with("https://"),
                "tracing.endpoint {:?} must be an http:// or https:// URL (OTLP/HTTP)",
                self.endpoint
            );
        }
        Ok(())
    }

    /// The service name a role reports: see [`TracingConfig::service_name`].
    pub fn service_name_for(&self, role: &str) -> String {
        if !self.service_name.is_empty() {
            return self.service_name.clone();
        }
        match std::env::var("OTEL_SERVICE_NAME") {
            Ok(s) if !s.is_empty() => s,
            _ => format!("auroraq-{role}"),
        }
    }

    /// The traces URL from `endpoint` (a base URL); `None`: the exporter reads the environment.
    pub fn traces_url(&self) -> Option<String> {
        if self.endpoint.is_empty() {
            return None;
        }
        let base = self.endpoint.trim_end_matches('/');
        Some(if base.ends_with("/v1/traces") {
            base.to_owned()
        } else {
            format!("{base}/v1/traces")
        })
    }
}

/// Flushes and stops the trace exporter when dropped (or at [`TraceGuard::shutdown`]). Keep it
/// until the process is done; drop it outside the async runtime.
#[derive(Default)]
pub struct TraceGuard {
    #[cfg(feature = "otel")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl TraceGuard {
    /// Exports what is buffered and stops the exporter.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        #[cfg(feature = "otel")]
        if let Some(p) = self.provider.take() {
            auroraq_stage::trace::set_enabled(false);
            if let Err(e) = p.force_flush() {
                warn!(error = %e, "cannot flush traces");
            }
            let _ = p.shutdown();
        }
    }
}

impl Drop for TraceGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Ids of the pipeline's spans come from its events (`auroraq_stage::trace`); other spans get
/// random ones.
#[cfg(feature = "otel")]
#[derive(Debug)]
struct EventIds(opentelemetry_sdk::trace::RandomIdGenerator);

#[cfg(feature = "otel")]
impl opentelemetry_sdk::trace::IdGenerator for EventIds {
    fn new_trace_id(&self) -> opentelemetry::trace::TraceId {
        match auroraq_stage::trace::take_trace_id() {
            Some(id) => opentelemetry::trace::TraceId::from_bytes(id),
            None => self.0.new_trace_id(),
        }
    }
    fn new_span_id(&self) -> opentelemetry::trace::SpanId {
        match auroraq_stage::trace::take_span_id() {
            Some(id) => opentelemetry::trace::SpanId::from_bytes(id),
            None => self.0.new_span_id(),
        }
    }
}

/// A boxed layer for the subscriber `init_logging` builds.
pub type BoxedLayer<S> = Box<dyn tracing_subscriber::Layer<S> + Send + Sync + 'static>;

/// The trace exporter of role `role` as a `tracing_subscriber` layer (the `tracing` spans go to
/// OpenTelemetry too), and the guard that flushes it. `None` when `cfg.enabled` is false (or
/// the build has no `otel` feature: then a warning says so). Installs the provider globally and
/// turns on the pipeline's spans (`auroraq_stage::trace`). Call it outside the async runtime
/// (the OTLP/HTTP client is a blocking one on the exporter's own thread).
pub fn tracing_layer<S>(cfg: &TracingConfig, role: &str) -> Result<(Option<BoxedLayer<S>>, TraceGuard)>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a> + Send + Sync,
{
    if !cfg.enabled {
        return Ok((None, TraceGuard::default()));
    }
    cfg.validate()?;
    #[cfg(feature = "otel")]
    {
        use opentelemetry::trace::TracerProvider as _;
        use opentelemetry_otlp::WithExportConfig as _;
        let mut exporter = opentelemetry_otlp::SpanExporter::builder().with_http();
        if let Some(url) = cfg.traces_url() {
            exporter = exporter.with_endpoint(url);
        }
        let exporter = exporter
            .build()
            .context("cannot build the OTLP/HTTP trace exporter")?;
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name(cfg.service_name_for(role))
            .build();
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(opentelemetry_sdk::trace::Sampler::TraceIdRatioBased(
                cfg.sample_ratio,
            ))
            .with_id_generator(EventIds(opentelemetry_sdk::trace::RandomIdGenerator::default()))
            .with_resource(resource)
            .build();
        opentelemetry::global::set_tracer_provider(provider.clone());
        auroraq_stage::trace::set_enabled(true);
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer(auroraq_stage::trace::TRACER));
        Ok((
            Some(Box::new(layer)),
            TraceGuard {
                provider: Some(provider),
            },
        ))
    }
    #[cfg(not(feature = "otel"))]
    {
        let _ = role;
        eprintln!(
            "warning: tracing.enabled is set, but this build has no `otel` feature: no traces are exported"
        );
        Ok((None, TraceGuard::default()))
    }
}

#[cfg(test)]
mod tracing_config_tests {
    use super::*;

    #[test]
    fn tracing_is_off_by_default_and_checked() {
        let c = crate::config::Config::load(None, Vec::<(String, String)>::new()).unwrap();
        assert!(!c.tracing.enabled);
        assert_eq!(
            c.tracing.traces_url(),
            None,
            "the exporter reads OTEL_EXPORTER_OTLP_ENDPOINT"
        );
        let env = |k: &str, v: &str| vec![(k.to_owned(), v.to_owned())];
        let c = crate::config::Config::load(None, env("AURORAQ_TRACING_ENDPOINT", "http://c:4318/")).unwrap();
        assert_eq!(c.tracing.traces_url().as_deref(), Some("http://c:4318/v1/traces"));
        let c = crate::config::Config::load(None, env("AURORAQ_TRACING_SAMPLE_RATIO", "0.25")).unwrap();
        assert_eq!(c.tracing.sample_ratio, 0.25);
        assert!(crate::config::Config::load(None, env("AURORAQ_TRACING_SAMPLE_RATIO", "2")).is_err());
        assert!(crate::config::Config::load(None, env("AURORAQ_TRACING_ENDPOINT", "otel:4317")).is_err());
        let named = TracingConfig {
            service_name: "x".into(),
            ..TracingConfig::default()
        };
        assert_eq!(named.service_name_for("score"), "x");
    }
}
