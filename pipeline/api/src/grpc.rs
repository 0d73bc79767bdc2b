//! The gRPC `SentimentService` (`schemas/proto/sentiment.proto`, package `auroraq.sentiment.v1`)
//! over the same code as REST: [`routes::sentiment`](crate::routes::sentiment)'s validation,
//! scoring (cache, batcher, model), realtime view and fusion; REST's authentication and rate
//! limits ([`SentimentGrpc::admit`]); REST's error statuses mapped to gRPC codes ([`status_of`]).
//!
//! - `SubscribeFused` streams the fused signals of an asset: it subscribes to the live view first,
//!   then replays what the bus kept since `from_time`, then follows the live view, skipping event
//!   ids already sent, so there is neither a gap nor a duplicate between replay and live. A client
//!   has a bounded buffer ([`STREAM_BUFFER`]); one that falls further behind is ended with
//!   `RESOURCE_EXHAUSTED` ("slow consumer").
//! - The gRPC health checking protocol (`grpc.health.v1.Health`) answers without credentials:
//!   `SERVING` for `""` and `auroraq.sentiment.v1.SentimentService` until shutdown begins.
//! - Every call is counted in `auroraq_api_grpc_requests_total{method, code}`.

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use auroraq_bus::{topics, History, HistoryOptions};
use futures::Stream;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, mpsc};
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Request, Response, Status};
use tracing::{debug, info_span, warn, Instrument};

use crate::auth::Principal;
use crate::error::{ApiError, HttpError};
use crate::live::LiveMessage;
use crate::routes::sentiment::{self as rest, check_asset, Mode};
use crate::state::AppState;

/// The generated messages, server and client of `auroraq.sentiment.v1`.
#[allow(
    clippy::all,
    clippy::pedantic,
    missing_docs,
    unreachable_pub,
    rustdoc::invalid_html_tags
)]
pub mod pb {
    tonic::include_proto!("auroraq.sentiment.v1");
}

use pb::sentiment_service_server::{SentimentService, SentimentServiceServer};

/// Signals buffered per `SubscribeFused` client; a client that falls further behind is dropped.
pub const STREAM_BUFFER: usize = 256;
/// Live signals of the asset held while the history is replayed; more: the client is too slow.
const LIVE_BACKLOG: usize = 4096;
/// Live event ids remembered to drop redeliveries.
const RECENT_IDS: usize = 1024;
/// History signals read ahead of the client.
const HISTORY_AHEAD: usize = 64;

/// Binds `addr` (`host:port`; port 0 picks one) now, and returns the bound address and the server,
/// which serves until `state.cancel` fires, then drains the calls in flight (streams end at
/// once; what is still open after `request_timeout_secs` is dropped).
pub async fn bind(
    addr: &str,
    state: Arc<AppState>,
) -> Result<
    (
        SocketAddr,
        impl Future<Output = Result<(), ApiError>> + Send + 'static,
    ),
    ApiError,
> {
    let sock: SocketAddr = addr
        .parse()
        .map_err(|_| ApiError::Config(format!("api.grpc_listen {addr:?} is not host:port")))?;
    let listen_err = |source| ApiError::Listen {
        addr: addr.to_owned(),
        source,
    };
    let listener = tokio::net::TcpListener::bind(sock).await.map_err(listen_err)?;
    let local = listener.local_addr().map_err(listen_err)?;

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<SentimentServiceServer<SentimentGrpc>>()
        .await;
    let service = SentimentServiceServer::new(SentimentGrpc::new(state.clone()))
        .max_decoding_message_size(state.cfg.max_body_bytes);
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let cancel = state.cancel.clone();
    let grace = Duration::from_secs(state.cfg.request_timeout_secs.max(1));

    let serve = async move {
        let stop = cancel.clone();
        let shutdown = async move {
            stop.cancelled().await;
            health
                .set_not_serving::<SentimentServiceServer<SentimentGrpc>>()
                .await;
            health
                .set_service_status("", tonic_health::ServingStatus::NotServing)
                .await;
        };
        let server = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .add_service(health_service)
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, shutdown);
        tokio::select! {
            r = server => r.map_err(|e| ApiError::Serve(format!("gRPC: {e}"))),
            // A health `Watch` never ends by itself: do not wait on such calls forever.
            _ = async { cancel.cancelled().await; tokio::time::sleep(grace).await } => {
                warn!("gRPC: calls still open {}s after shutdown began; dropped", grace.as_secs());
                Ok(())
            }
        }
    };
    Ok((local, serve))
}

/// The gRPC code of a REST error status.
pub fn code_of(status: u16) -> Code {
    match status {
        400 => Code::InvalidArgument,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::NotFound,
        429 => Code::ResourceExhausted,
        503 => Code::Unavailable,
        504 => Code::DeadlineExceeded,
        _ => Code::Internal,
    }
}

/// A REST error as a gRPC status: the code by [`code_of`], the message, and the REST error code
/// (`invalid_request`, ...) in the metadata `auroraq-error-code` (with `retry-after`, seconds,
/// when the error says when to retry).
pub fn status_of(e: HttpError) -> Status {
    let mut s = Status::new(code_of(e.status.as_u16()), e.message);
    if let Ok(v) = MetadataValue::try_from(e.code) {
        s.metadata_mut().insert("auroraq-error-code", v);
    }
    if let Some(after) = e.retry_after {
        let secs = after.as_secs_f64().ceil().max(1.0) as u64;
        if let Ok(v) = MetadataValue::try_from(secs.to_string()) {
            s.metadata_mut().insert("retry-after", v);
        }
    }
    s
}

/// The credential of a call: metadata `authorization` (`Bearer <key or JWT>`, or the raw key),
/// then `x-api-key` (the same rule as REST's headers).
pub fn credential(md: &MetadataMap) -> Option<String> {
    let get = |name: &str| md.get(name).and_then(|v| v.to_str().ok());
    crate::auth::credential_from(get("authorization"), get("x-api-key"))
}

fn record<T>(method: &'static str, result: &Result<T, Status>, t0: Instant) {
    let code = match result {
        Ok(_) => Code::Ok,
        Err(s) => s.code(),
    };
    metrics::counter!("auroraq_api_grpc_requests_total", "method" => method, "code" => format!("{code:?}"))
        .increment(1);
    metrics::histogram!("auroraq_api_grpc_request_seconds", "method" => method)
        .record(t0.elapsed().as_secs_f64());
}

/// REST's default asset for an empty one.
fn or_crypto(asset: &str) -> &str {
    if asset.trim().is_empty() {
        "CRYPTO"
    } else {
        asset
    }
}

fn analyze_pb(r: rest::AnalyzeResponse) -> pb::AnalyzeResponse {
    pb::AnalyzeResponse {
        sentiment_score: r.sentiment_score,
        label: r.label,
        confidence: r.confidence,
        probabilities: r.probabilities,
        keywords: r.keywords,
        scenario_tag: r.scenario_tag,
        processing_time: r.processing_time,
        model_version: r.model_version,
        asset: r.asset,
        mode: r.mode.as_str().to_owned(),
        timestamp: r.timestamp,
        truncated: r.truncated,
        cached: r.cached,
    }
}

/// A fused signal of the bus as the service sends it.
pub fn fused_pb(f: &auroraq_schemas::FusedSignal) -> pb::FusedSignal {
    pb::FusedSignal {
        event_id: f.meta.event_id.clone(),
        asset: f.asset.to_uppercase(),
        window_start: f.window_start,
        window_end: f.window_end,
        fused_score: f.fused_score,
        confidence: f.confidence,
        trend: f.trend.as_str().to_owned(),
        scores_used: f.scores_used,
        weights_used: f.weights_used.clone(),
    }
}

/// The service. Cheap to clone.
#[derive(Clone)]
pub struct SentimentGrpc {
    st: Arc<AppState>,
}

impl SentimentGrpc {
    pub fn new(st: Arc<AppState>) -> Self {
        SentimentGrpc { st }
    }

    /// REST's admission for one call ([`AppState::admit`]): rate limit per client IP,
    /// authentication, rate limit per credential.
    pub fn admit(&self, md: &MetadataMap, remote: Option<SocketAddr>) -> Result<Principal, Status> {
        let ip = remote.map(|a| a.ip().to_string()).unwrap_or_else(|| "-".into());
        self.st
            .admit(&ip, credential(md).as_deref(), false)
            .map_err(status_of)
    }

    fn permit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, Status> {
        self.st.permit().map_err(status_of)
    }

    /// One unary call: load shedding, [`admit`](Self::admit), the handler within the request
    /// timeout, metrics.
    async fn unary<T, R, F, Fut>(
        &self,
        method: &'static str,
        req: Request<T>,
        f: F,
    ) -> Result<Response<R>, Status>
    where
        F: FnOnce(Arc<AppState>, T) -> Fut,
        Fut: Future<Output = Result<R, HttpError>>,
    {
        let t0 = Instant::now();
        let result = async {
            let _permit = self.permit()?;
            let who = self.admit(req.metadata(), req.remote_addr())?;
            let span = info_span!("grpc", method, caller = %who.id());
            let timeout = Duration::from_secs(self.st.cfg.request_timeout_secs);
            match tokio::time::timeout(timeout, f(self.st.clone(), req.into_inner()).instrument(span)).await {
                Ok(r) => r.map(Response::new).map_err(status_of),
                Err(_) => Err(Status::deadline_exceeded(format!(
                    "the request took longer than {}s",
                    timeout.as_secs()
                ))),
            }
        }
        .await;
        record(method, &result, t0);
        result
    }

    async fn open_subscription(&self, req: Request<pb::SubscribeRequest>) -> Result<FusedStream, Status> {
        let _permit = self.permit()?;
        let who = self.admit(req.metadata(), req.remote_addr())?;
        let r = req.into_inner();
        let asset = check_asset(&r.asset).map_err(status_of)?;
        if r.from_time < 0 {
            return Err(Status::invalid_argument(
                "from_time must be microseconds since the Unix epoch, or 0 for only live signals",
            ));
        }
        // Live first: whatever is published while the history is read arrives here too.
        let live = self.st.live.subscribe();
        // One slot more than the buffer: the feeder never fills it with a signal, so the status
        // that ends a slow client always fits.
        let (tx, rx) = mpsc::channel(STREAM_BUFFER + 1);
        let span = info_span!("grpc_subscribe", caller = %who.id(), asset = %asset, from_time = r.from_time);
        tokio::spawn(feed(self.st.clone(), asset, r.from_time, live, tx).instrument(span));
        let stream = futures::stream::unfold((rx, false), |(mut rx, ended)| async move {
            if ended {
                return None;
            }
            let item = rx.recv().await?;
            let ended = item.is_err();
            Some((item, (rx, ended)))
        });
        Ok(Box::pin(stream))
    }
}

type FusedStream = Pin<Box<dyn Stream<Item = Result<pb::FusedSignal, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl SentimentService for SentimentGrpc {
    async fn analyze_text(
        &self,
        request: Request<pb::AnalyzeRequest>,
    ) -> Result<Response<pb::AnalyzeResponse>, Status> {
        self.unary("AnalyzeText", request, |st, r| async move {
            let mode = Mode::parse(&r.mode)?;
            let mut out = rest::analyze_texts(&st, &[r.text.as_str()], or_crypto(&r.asset), mode).await?;
            let mut one = out.pop().ok_or_else(|| HttpError::internal("no result"))?;
            one.timestamp = r.timestamp;
            Ok(analyze_pb(one))
        })
        .await
    }

    async fn analyze_batch(
        &self,
        request: Request<pb::BatchRequest>,
    ) -> Result<Response<pb::BatchResponse>, Status> {
        self.unary("AnalyzeBatch", request, |st, r| async move {
            let mode = Mode::parse(&r.mode)?;
            let texts: Vec<&str> = r.texts.iter().map(String::as_str).collect();
            let results = rest::analyze_texts(&st, &texts, or_crypto(&r.asset), mode).await?;
            let n = results.len();
            let avg = results.iter().map(|x| x.processing_time).sum::<f64>() / n.max(1) as f64;
            Ok(pb::BatchResponse {
                results: results.into_iter().map(analyze_pb).collect(),
                total_processed: n as u32,
                avg_processing_time: avg,
            })
        })
        .await
    }

    async fn get_realtime_sentiment(
        &self,
        request: Request<pb::RealtimeRequest>,
    ) -> Result<Response<pb::RealtimeResponse>, Status> {
        self.unary("GetRealtimeSentiment", request, |st, r| async move {
            let hours = if r.hours_back == 0 { 6 } else { r.hours_back };
            let x = rest::realtime_of(&st, &r.asset, hours).await?;
            Ok(pb::RealtimeResponse {
                asset: x.asset,
                fused_score: x.fused_score,
                confidence: x.confidence,
                article_count: x.article_count,
                trend: x.trend,
                weights_used: x.weights_used,
                window_start: x.window_start,
                window_end: x.window_end,
                history: x
                    .history
                    .into_iter()
                    .map(|h| pb::HistoryPoint {
                        ts: h.ts,
                        fused_score: h.fused_score,
                    })
                    .collect(),
                sources: x.sources,
                hours_back: x.hours_back,
            })
        })
        .await
    }

    async fn fuse_sentiments(
        &self,
        request: Request<pb::FusionRequest>,
    ) -> Result<Response<pb::FusionResponse>, Status> {
        self.unary("FuseSentiments", request, |st, r| async move {
            let x = rest::fuse(
                &st,
                rest::FusionRequest {
                    sentiment_scores: r.sentiment_scores,
                    symbol: or_crypto(&r.symbol).to_owned(),
                    timestamp: r.timestamp,
                    confidences: r.confidences,
                },
            )?;
            Ok(pb::FusionResponse {
                symbol: x.symbol,
                fused_score: x.fused_score,
                confidence: x.confidence,
                weights_used: x.weights_used,
                trend: x.trend,
                sources_used: x.sources_used as u32,
                outliers: x.outliers,
                timestamp: x.timestamp,
            })
        })
        .await
    }

    type SubscribeFusedStream = FusedStream;

    async fn subscribe_fused(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeFusedStream>, Status> {
        let t0 = Instant::now();
        let result = self.open_subscription(request).await.map(Response::new);
        record("SubscribeFused", &result, t0);
        result
    }
}

/// Event ids already sent to one client.
#[derive(Default)]
struct Sent {
    /// Every id replayed from the history: the live view may still bring any of them.
    replayed: HashSet<String>,
    /// The latest live ids, against redeliveries.
    recent: HashSet<String>,
    order: VecDeque<String>,
}

impl Sent {
    /// Whether a live signal is new (and remembers it).
    fn live_first(&mut self, id: &str) -> bool {
        if id.is_empty() {
            return true;
        }
        if self.replayed.contains(id) || !self.recent.insert(id.to_owned()) {
            return false;
        }
        self.order.push_back(id.to_owned());
        while self.order.len() > RECENT_IDS {
            if let Some(old) = self.order.pop_front() {
                self.recent.remove(&old);
            }
        }
        true
    }

    /// Whether a replayed signal is new (and remembers it).
    fn replay_first(&mut self, id: &str) -> bool {
        id.is_empty() || self.replayed.insert(id.to_owned())
    }
}

/// The signal of a live message, when it is a fused signal of `asset`.
fn live_signal(m: &LiveMessage, asset: &str) -> Option<pb::FusedSignal> {
    if m.kind != "fused" || m.key != asset {
        return None;
    }
    match serde_json::from_value::<auroraq_schemas::FusedSignal>(m.data.clone()) {
        Ok(f) => Some(fused_pb(&f)),
        Err(e) => {
            metrics::counter!("auroraq_api_grpc_undecodable_total").increment(1);
            debug!(error = %e, "SubscribeFused: live signal not understood; skipped");
            None
        }
    }
}

fn slow_consumer() -> Status {
    metrics::counter!("auroraq_api_grpc_slow_consumers_total").increment(1);
    Status::resource_exhausted("slow consumer")
}

type Out = mpsc::Sender<Result<pb::FusedSignal, Status>>;

/// Ends a client's stream with `status` (there is always room: see `open_subscription`).
fn end(tx: &Out, status: Status) {
    let _ = tx.try_send(Err(status));
}

/// Reads the history into `out`, decoded, in the bus's order; skips (and counts) what does not
/// decode as a fused signal of `asset`.
async fn read_history(mut history: Box<dyn History>, asset: String, out: mpsc::Sender<pb::FusedSignal>) {
    while let Some(next) = history.next().await {
        let stored = match next {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "SubscribeFused: reading the history failed; going on with live signals");
                return;
            }
        };
        match auroraq_schemas::decode::<auroraq_schemas::FusedSignal>(&stored.message.payload) {
            Ok(f) if f.asset.eq_ignore_ascii_case(&asset) => {
                if out.send(fused_pb(&f)).await.is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(e) => {
                metrics::counter!("auroraq_api_grpc_undecodable_total").increment(1);
                debug!(sequence = stored.sequence, error = %e, "SubscribeFused: undecodable stored signal skipped");
            }
        }
    }
}

/// What a live receive means for the stream.
enum LiveStep {
    Signal(pb::FusedSignal),
    Other,
    /// The client fell behind the live view.
    Lagged,
    /// The live view is gone (the server is stopping).
    Closed,
}

fn live_step(r: Result<Arc<LiveMessage>, RecvError>, asset: &str) -> LiveStep {
    match r {
        Ok(m) => live_signal(&m, asset).map_or(LiveStep::Other, LiveStep::Signal),
        Err(RecvError::Lagged(_)) => LiveStep::Lagged,
        Err(RecvError::Closed) => LiveStep::Closed,
    }
}

/// Feeds one `SubscribeFused` client: the history since `from_time` (when asked for and the bus
/// keeps one), holding the live signals that arrive meanwhile, then those, then live signals as
/// they come; each event id once. Ends when the client leaves, falls behind, or the server stops.
async fn feed(
    st: Arc<AppState>,
    asset: String,
    from_time: i64,
    mut live: broadcast::Receiver<Arc<LiveMessage>>,
    tx: Out,
) {
    let cancel = st.cancel.clone();
    let mut sent = Sent::default();
    let mut held: VecDeque<pb::FusedSignal> = VecDeque::new();

    if from_time > 0 {
        let opts = HistoryOptions {
            filter: topics::fused(&asset),
            since: Some(from_time),
            until: None,
        };
        match st.backends.bus.history(opts).await {
            Err(e) => warn!(error = %e, "SubscribeFused: no history to replay; only live signals"),
            Ok(history) => {
                let (htx, mut hrx) = mpsc::channel(HISTORY_AHEAD);
                // Its own task: a history read is never cancelled half-way by the select below.
                let reader = tokio::spawn(read_history(history, asset.clone(), htx));
                let _stop_reader = AbortOnDrop(reader);
                let mut next: Option<pb::FusedSignal> = None;
                let mut history_done = false;
                while !(history_done && next.is_none()) {
                    tokio::select! {
                        biased;
                        _ = cancel.cancelled() => return,
                        _ = tx.closed() => return,
                        r = live.recv() => match live_step(r, &asset) {
                            LiveStep::Signal(s) => {
                                if held.len() >= LIVE_BACKLOG {
                                    return end(&tx, slow_consumer());
                                }
                                held.push_back(s);
                            }
                            LiveStep::Other => {}
                            LiveStep::Lagged => return end(&tx, slow_consumer()),
                            LiveStep::Closed => return,
                        },
                        // Two free slots: one stays free for the status that may end the stream.
                        permits = tx.reserve_many(2), if next.is_some() => match permits {
                            Ok(mut p) => {
                                if let (Some(permit), Some(s)) = (p.next(), next.take()) {
                                    permit.send(Ok(s));
                                }
                            }
                            Err(_) => return,
                        },
                        h = hrx.recv(), if next.is_none() && !history_done => match h {
                            Some(s) => {
                                if sent.replay_first(&s.event_id) {
                                    next = Some(s);
                                }
                            }
                            None => history_done = true,
                        },
                    }
                }
                debug!(
                    replayed = sent.replayed.len(),
                    held = held.len(),
                    "SubscribeFused: replay done"
                );
            }
        }
    }

    // What arrived during the replay, then live.
    loop {
        let s = match held.pop_front() {
            Some(s) => s,
            None => {
                let r = tokio::select! {
                    biased;
                    _ = cancel.cancelled() => return,
                    _ = tx.closed() => return,
                    r = live.recv() => r,
                };
                match live_step(r, &asset) {
                    LiveStep::Signal(s) => s,
                    LiveStep::Other => continue,
                    LiveStep::Lagged => return end(&tx, slow_consumer()),
                    LiveStep::Closed => return,
                }
            }
        };
        if !sent.live_first(&s.event_id) {
            continue;
        }
        if tx.is_closed() {
            return;
        }
        if tx.capacity() < 2 {
            return end(&tx, slow_consumer());
        }
        let _ = tx.try_send(Ok(s));
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        assert_eq!(code_of(400), Code::InvalidArgument);
        assert_eq!(code_of(401), Code::Unauthenticated);
        assert_eq!(code_of(403), Code::PermissionDenied);
        assert_eq!(code_of(404), Code::NotFound);
        assert_eq!(code_of(429), Code::ResourceExhausted);
        assert_eq!(code_of(503), Code::Unavailable);
        assert_eq!(code_of(500), Code::Internal);
        let s = status_of(HttpError::unavailable("bus down"));
        assert_eq!(s.code(), Code::Unavailable);
        assert_eq!(s.message(), "bus down");
        assert_eq!(
            s.metadata()
                .get("auroraq-error-code")
                .and_then(|v| v.to_str().ok()),
            Some("unavailable")
        );
        assert_eq!(
            s.metadata().get("retry-after").and_then(|v| v.to_str().ok()),
            Some("1")
        );
    }

    #[test]
    fn credentials_from_metadata() {
        let mut md = MetadataMap::new();
        assert_eq!(credential(&md), None);
        md.insert("x-api-key", MetadataValue::from_static(" k1 "));
        assert_eq!(credential(&md).as_deref(), Some("k1"));
        md.insert("authorization", MetadataValue::from_static("Bearer k2"));
        assert_eq!(credential(&md).as_deref(), Some("k2"));
        md.insert("authorization", MetadataValue::from_static("k3"));
        assert_eq!(credential(&md).as_deref(), Some("k3"));
        md.insert("authorization", MetadataValue::from_static("Bearer  "));
        assert_eq!(credential(&md).as_deref(), Some("k1"));
    }

    #[test]
    fn modes() {
        assert_eq!(Mode::parse("").ok(), Some(Mode::Live));
        assert_eq!(Mode::parse("Backtest").ok(), Some(Mode::Backtest));
        assert!(Mode::parse("paper").is_err());
    }

    #[test]
    fn sent_ids() {
        let mut s = Sent::default();
        assert!(s.replay_first("a"));
        assert!(!s.replay_first("a"));
        assert!(!s.live_first("a"));
        assert!(s.live_first("b"));
        assert!(!s.live_first("b"));
        for i in 0..RECENT_IDS {
            assert!(s.live_first(&format!("x{i}")));
        }
        // "b" was forgotten; replayed ids never are.
        assert!(s.live_first("b"));
        assert!(!s.live_first("a"));
    }
}
