//! The live connector: one combined-stream WebSocket for every configured symbol and stream,
//! decoded into events and published to the bus in batches.
//!
//! - **Connection**: `<ws_base>/stream?streams=a/b/c`; pings are answered (the pong is flushed
//!   as soon as the ping is read); no frame at all for `idle_timeout` counts as a dead
//!   connection.
//! - **Reconnects**: after an error, a close or an EOF the connector publishes `disconnected`,
//!   forgets the order books and reconnects after an exponential backoff with jitter, then
//!   publishes `connected`. Events re-sent after a reconnect keep their ids and de-duplicate on
//!   the bus.
//! - **Rolls**: before Binance's 24-hour cut (`roll_after`), or when Binance announces a
//!   `serverShutdown`, a new connection is opened first; the old one is still read for
//!   `roll_overlap` while the new one's frames are held, then the old one is closed and the held
//!   frames processed, so nothing falls between them. A `rolled` status goes out.
//! - **Order books**: depth diffs go through a [`BookSync`] per symbol; a REST snapshot is
//!   fetched (in the background, within the REST client's rate limits) whenever a sync asks
//!   for one. Gaps and resyncs come out as `gap`/`resynced` statuses.
//! - **Bad frames** become dead letters on `dlq.<dead_letter_stage>` with the original bytes,
//!   are counted, and the stream goes on.
//! - **Stop**: cancel the token; the connector publishes what it holds, a `disconnected`
//!   status, closes the WebSocket and returns its [`LiveStats`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use auroraq_bus::Bus;
use auroraq_schemas::{now_micros, AnyEvent, DeadLetter, EventKind, FeedState, FeedStatus, Meta, Micros};
use auroraq_stage::{publish_events, to_message, StageError};
use futures::{SinkExt, StreamExt};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::book::{BookSync, SyncOutput};
use crate::config::{ConfigError, LiveConfig};
use crate::decode::{DecodeError, Decoder, DepthSnapshot, MarketEvent};
use crate::rest::{RestClient, RestError};
use crate::stream::{self, ConnectError, WsStream};

/// What the live connector did, by kind.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct LiveStats {
    /// Connections opened (first, reconnects and rolls).
    pub connections: u64,
    /// Connections lost (error, close, EOF, stall) and reconnected after.
    pub reconnects: u64,
    /// Planned replacements (24-hour roll, `serverShutdown`).
    pub rolls: u64,
    pub connect_failures: u64,
    /// WebSocket data frames read (text and binary).
    pub frames: u64,
    /// Pings answered.
    pub pings: u64,
    pub trades: u64,
    pub klines: u64,
    pub tickers: u64,
    pub book_updates: u64,
    /// Feed statuses produced (connection, gap, resync, rate limit).
    pub statuses: u64,
    /// Frames of stream kinds that are read but not published.
    pub ignored: u64,
    /// USDⓈ-M futures mark prices (`markPrice`) published as `MarkPrice`.
    pub mark_prices: u64,
    /// USDⓈ-M futures liquidation orders (`forceOrder`) published as `Liquidation`.
    pub liquidations: u64,
    pub dead_letters: u64,
    pub snapshots: u64,
    pub stale_snapshots: u64,
    pub snapshot_errors: u64,
    pub gaps: u64,
    pub resyncs: u64,
    /// Messages the bus stored, and dropped as duplicates of earlier ids.
    pub published: u64,
    pub duplicates: u64,
    /// Dead letters by reason.
    pub dead_letter_reasons: std::collections::BTreeMap<String, u64>,
}

/// A live view of a running connector's [`LiveStats`].
#[derive(Clone, Debug, Default)]
pub struct StatsHandle(Arc<Mutex<LiveStats>>);

impl StatsHandle {
    pub fn snapshot(&self) -> LiveStats {
        self.0.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn update(&self, f: impl FnOnce(&mut LiveStats)) {
        if let Ok(mut s) = self.0.lock() {
            f(&mut s);
        }
    }
}

/// Why the connector stopped with an error (connection trouble is not one: it reconnects).
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Rest(#[from] RestError),
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("publishing to the bus failed {tries} times: {source}")]
    Publish {
        tries: u32,
        #[source]
        source: StageError,
    },
}

/// The live Binance connector.
pub struct LiveConnector {
    cfg: Arc<LiveConfig>,
    bus: Arc<dyn Bus>,
    stats: StatsHandle,
}

/// Runs a live connector until `cancel` fires (see [`LiveConnector::run`]).
pub async fn run_live(
    cfg: LiveConfig,
    bus: Arc<dyn Bus>,
    cancel: CancellationToken,
) -> Result<LiveStats, ConnectorError> {
    LiveConnector::new(cfg, bus)?.run(cancel).await
}

impl LiveConnector {
    /// Checks `cfg`; nothing is opened before [`run`](Self::run).
    pub fn new(cfg: LiveConfig, bus: Arc<dyn Bus>) -> Result<Self, ConnectorError> {
        cfg.validate()?;
        Ok(LiveConnector {
            cfg: Arc::new(cfg),
            bus,
            stats: StatsHandle::default(),
        })
    }

    /// Live counters, readable while [`run`](Self::run) goes on.
    pub fn stats(&self) -> StatsHandle {
        self.stats.clone()
    }

    /// Streams until `cancel` fires, reconnecting as needed; returns the final counters.
    /// Fails only on a configuration that cannot work (no TLS roots for `wss://`) or a bus that
    /// keeps refusing events. Close the bus only after this returns.
    pub async fn run(self, cancel: CancellationToken) -> Result<LiveStats, ConnectorError> {
        let cfg = self.cfg.clone();
        let url = cfg.url();
        if url.starts_with("wss://") {
            stream::tls_config()?;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let rest = RestClient::new(cfg.rest.clone(), &cfg.exchange)?
            .with_status_channel(tx)
            .with_cancel(cancel.child_token());
        let names = cfg.stream_names();
        let label = if names.join("/").len() <= 200 {
            names.join("/")
        } else {
            format!("{} streams", names.len())
        };
        let mut s = Session {
            cfg: cfg.clone(),
            bus: self.bus.clone(),
            stats: self.stats.clone(),
            decoder: Decoder::new(&cfg.exchange),
            rest,
            status_rx: rx,
            syncs: HashMap::new(),
            snaps: HashMap::new(),
            tasks: JoinSet::new(),
            task_symbols: HashMap::new(),
            generation: 0,
            batch: Vec::new(),
            marked: None,
            conn_seq: 0,
            run_id: now_micros(),
            url: url.clone(),
            label,
        };
        info!(url = %url, exchange = %cfg.exchange, "binance connector starting");
        let mut attempt: u32 = 0;
        let mut next: Option<(WsStream, u64)> = None;
        let mut down_reported = false;
        loop {
            if cancel.is_cancelled() {
                if let Some((mut ws, conn)) = next.take() {
                    // Stopped right after a roll: the new connection ends cleanly too.
                    let st = s.conn_status(FeedState::Disconnected, conn, "stopped".into(), &[]);
                    s.push_status(st);
                    Session::close(&mut ws, "stopped").await;
                }
                break;
            }
            let (ws, conn) = match next.take() {
                Some(x) => x,
                None => {
                    let r = tokio::select! {
                        _ = cancel.cancelled() => break,
                        r = stream::connect(&url, cfg.connect_timeout) => r,
                    };
                    match r {
                        Ok(ws) => {
                            let conn = s.opened();
                            info!(connection = conn, "connected");
                            let st = s.conn_status(FeedState::Connected, conn, "connected".into(), &[]);
                            s.push_status(st);
                            (ws, conn)
                        }
                        Err(e) => {
                            s.stats.update(|st| st.connect_failures += 1);
                            let d = cfg.reconnect.delay(attempt);
                            attempt = attempt.saturating_add(1);
                            warn!(error = %e, retry_in_ms = d.as_millis() as u64, "cannot connect");
                            if !down_reported {
                                let st = s.conn_status(
                                    FeedState::Disconnected,
                                    s.conn_seq,
                                    format!("cannot connect: {e}"),
                                    &[],
                                );
                                s.push_status(st);
                                s.flush().await?;
                                down_reported = true;
                            }
                            tokio::select! {
                                _ = cancel.cancelled() => break,
                                _ = tokio::time::sleep(d) => {}
                            }
                            continue;
                        }
                    }
                }
            };
            down_reported = false;
            let up_since = Instant::now();
            match s.serve(ws, conn, &cancel).await? {
                ConnEnd::Stopped => break,
                ConnEnd::Rolled(ws, conn) => {
                    attempt = 0;
                    next = Some((*ws, conn));
                }
                ConnEnd::Lost(reason) => {
                    warn!(connection = conn, %reason, "connection lost");
                    s.stats.update(|st| st.reconnects += 1);
                    metrics::counter!("auroraq_feed_reconnects_total", "exchange" => cfg.exchange.clone())
                        .increment(1);
                    let st = s.conn_status(FeedState::Disconnected, conn, reason, &[]);
                    s.push_status(st);
                    s.reset_books();
                    s.flush().await?;
                    down_reported = true;
                    if up_since.elapsed() >= cfg.reconnect_reset_after {
                        attempt = 0;
                    }
                    let d = cfg.reconnect.delay(attempt);
                    attempt = attempt.saturating_add(1);
                    debug!(delay_ms = d.as_millis() as u64, "reconnecting after backoff");
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(d) => {}
                    }
                }
            }
        }
        s.tasks.abort_all();
        s.flush().await?;
        let stats = self.stats.snapshot();
        info!(?stats, "binance connector stopped");
        Ok(stats)
    }
}

enum ConnEnd {
    Stopped,
    Lost(String),
    Rolled(Box<WsStream>, u64),
}

#[derive(Default)]
struct SnapState {
    in_flight: bool,
    not_before: Option<Instant>,
}

type SnapResult = (u64, String, Result<DepthSnapshot, RestError>);

struct Session {
    cfg: Arc<LiveConfig>,
    bus: Arc<dyn Bus>,
    stats: StatsHandle,
    decoder: Decoder,
    rest: RestClient,
    status_rx: mpsc::UnboundedReceiver<FeedStatus>,
    syncs: HashMap<String, BookSync>,
    snaps: HashMap<String, SnapState>,
    tasks: JoinSet<SnapResult>,
    task_symbols: HashMap<tokio::task::Id, String>,
    /// Bumped when the books are reset, so snapshots asked for before are dropped.
    generation: u64,
    batch: Vec<AnyEvent>,
    /// When the last watermark went out.
    marked: Option<Instant>,
    conn_seq: u64,
    run_id: Micros,
    url: String,
    label: String,
}

/// The `stream` of a frame that could not be decoded, if it names one.
fn stream_of(text: &str) -> Option<&str> {
    let i = text.find("\"stream\":\"")? + 10;
    let rest = &text[i..];
    let end = rest.find('"')?;
    Some(&rest[..end]).filter(|s| s.len() <= 100)
}

const SERVER_SHUTDOWN: &str = "!serverShutdown";

/// Frames of the new connection held at most during a roll's overlap.
const MAX_HELD: usize = 100_000;

impl Session {
    fn opened(&mut self) -> u64 {
        self.conn_seq += 1;
        self.stats.update(|s| s.connections += 1);
        self.conn_seq
    }

    fn conn_status(
        &self,
        state: FeedState,
        conn: u64,
        detail: String,
        extra: &[(&str, String)],
    ) -> FeedStatus {
        let ts = now_micros();
        let native = format!("ws:{}:{conn}:{state:?}:{ts}", self.run_id);
        let mut attributes: std::collections::BTreeMap<String, String> =
            extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
        attributes.insert("connection".into(), conn.to_string());
        attributes.insert("url".into(), self.cfg.ws_base.clone());
        FeedStatus {
            meta: Meta::raw(EventKind::FeedStatus, &self.cfg.exchange, &native, ts, ts),
            feed: self.cfg.exchange.clone(),
            stream: self.label.clone(),
            symbol: None,
            status: state,
            detail,
            attributes,
        }
    }

    fn push_status(&mut self, st: FeedStatus) {
        let exchange = self.cfg.exchange.clone();
        match st.status {
            FeedState::Connected | FeedState::Resynced => {
                metrics::gauge!("auroraq_feed_up", "exchange" => exchange).set(1.0)
            }
            FeedState::Disconnected => metrics::gauge!("auroraq_feed_up", "exchange" => exchange).set(0.0),
            FeedState::Gap => metrics::counter!(
                "auroraq_book_gaps_total",
                "exchange" => exchange,
                "symbol" => st.symbol.clone().unwrap_or_default()
            )
            .increment(1),
            _ => {}
        }
        self.stats.update(|s| {
            s.statuses += 1;
            match st.status {
                FeedState::Gap => s.gaps += 1,
                FeedState::Resynced => s.resyncs += 1,
                _ => {}
            }
        });
        self.batch.push(AnyEvent::FeedStatus(st));
    }

    fn push_sync(&mut self, outs: Vec<SyncOutput>) {
        for o in outs {
            match o {
                SyncOutput::Update(u) => {
                    self.stats.update(|s| s.book_updates += 1);
                    self.batch.push(AnyEvent::BookUpdate(u));
                }
                SyncOutput::Status(st) => {
                    if st.status == FeedState::Gap {
                        warn!(symbol = ?st.symbol, detail = %st.detail, "order-book gap");
                    } else {
                        info!(symbol = ?st.symbol, detail = %st.detail, "order book resynced");
                    }
                    self.push_status(st);
                }
            }
        }
    }

    fn dead_letter(&mut self, bytes: &[u8], reason: &str, error: &str, origin: &str) {
        warn!(reason, error, origin, "dead letter");
        let digest = Sha256::digest(bytes);
        let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
        let now = now_micros();
        let stage = &self.cfg.dead_letter_stage;
        let dl = DeadLetter {
            meta: Meta::raw(
                EventKind::DeadLetter,
                stage,
                &format!("{origin}|{hex}|{reason}"),
                now,
                now,
            ),
            stage: stage.clone(),
            reason: reason.to_owned(),
            error: error.to_owned(),
            original_topic: origin.to_owned(),
            original_key: None,
            original_id: None,
            original_bytes: bytes.to_vec(),
            attempts: 1,
        };
        self.stats.update(|s| {
            s.dead_letters += 1;
            *s.dead_letter_reasons.entry(reason.to_owned()).or_default() += 1;
        });
        self.batch.push(AnyEvent::DeadLetter(dl));
    }

    /// Decodes one text frame; `true` when it announces a server shutdown.
    fn on_text(&mut self, text: &str, ts: Micros) -> bool {
        self.stats.update(|s| s.frames += 1);
        match self.decoder.frame(text, ts) {
            Ok(MarketEvent::Trade(t)) => {
                self.stats.update(|s| s.trades += 1);
                self.batch.push(AnyEvent::TradeTick(t));
            }
            Ok(MarketEvent::Kline(k)) => {
                self.stats.update(|s| s.klines += 1);
                self.batch.push(AnyEvent::Kline(k));
            }
            Ok(MarketEvent::Ticker(t)) => {
                self.stats.update(|s| s.tickers += 1);
                self.batch.push(AnyEvent::BookTicker(t));
            }
            Ok(MarketEvent::Depth(d)) => {
                let (exchange, max) = (&self.cfg.exchange, self.cfg.max_buffer);
                let rule = self.cfg.venue.depth_rule();
                let sync = self
                    .syncs
                    .entry(d.symbol.clone())
                    .or_insert_with(|| BookSync::new(exchange, &d.symbol, max).with_rule(rule));
                let outs = sync.on_diff(d);
                self.push_sync(outs);
                self.request_snapshots();
            }
            Ok(MarketEvent::MarkPrice(m)) => {
                self.stats.update(|s| s.mark_prices += 1);
                self.batch.push(AnyEvent::MarkPrice(m));
            }
            Ok(MarketEvent::Liquidation(l)) => {
                self.stats.update(|s| s.liquidations += 1);
                self.batch.push(AnyEvent::Liquidation(l));
            }
            Ok(MarketEvent::Ignored(_)) => self.stats.update(|s| s.ignored += 1),
            Err(DecodeError::UnknownStream(s)) if s == SERVER_SHUTDOWN => {
                info!("binance announced a server shutdown; rolling the connection");
                return true;
            }
            Err(e) => {
                let origin = format!("ws:{}", stream_of(text).unwrap_or("unknown"));
                self.dead_letter(text.as_bytes(), "decode_error", &e.to_string(), &origin);
            }
        }
        false
    }

    fn on_binary(&mut self, bytes: &[u8]) {
        self.stats.update(|s| s.frames += 1);
        self.dead_letter(
            bytes,
            "unexpected_binary",
            "binary frame on a JSON stream",
            "ws:binary",
        );
    }

    /// Starts a snapshot fetch for every book that wants one and has none in flight.
    fn request_snapshots(&mut self) {
        let now = Instant::now();
        for (sym, sync) in &self.syncs {
            if !sync.needs_snapshot() {
                continue;
            }
            let st = self.snaps.entry(sym.clone()).or_default();
            if st.in_flight || st.not_before.is_some_and(|t| now < t) {
                continue;
            }
            st.in_flight = true;
            let (rest, gen, symbol, limit) = (
                self.rest.clone(),
                self.generation,
                sym.clone(),
                self.cfg.depth_limit,
            );
            debug!(symbol = %symbol, "fetching a depth snapshot");
            let handle = self.tasks.spawn(async move {
                let r = rest.depth_snapshot(&symbol, limit).await;
                (gen, symbol, r)
            });
            self.task_symbols.insert(handle.id(), sym.clone());
        }
    }

    fn on_snapshot(&mut self, res: Result<(tokio::task::Id, SnapResult), tokio::task::JoinError>) {
        let (id, (gen, sym, r)) = match res {
            Ok(x) => x,
            Err(e) => {
                warn!(error = %e, "snapshot task failed");
                if let Some(sym) = self.task_symbols.remove(&e.id()) {
                    if let Some(st) = self.snaps.get_mut(&sym) {
                        st.in_flight = false;
                    }
                }
                return;
            }
        };
        self.task_symbols.remove(&id);
        if gen != self.generation {
            return;
        }
        let retry = Instant::now() + self.cfg.snapshot_retry;
        match r {
            Ok(snap) => {
                self.stats.update(|s| s.snapshots += 1);
                let Some(sync) = self.syncs.get_mut(&sym) else {
                    return;
                };
                let outs = sync.on_snapshot(snap);
                let again = sync.needs_snapshot();
                self.push_sync(outs);
                let st = self.snaps.entry(sym).or_default();
                st.in_flight = false;
                if again {
                    st.not_before = Some(retry);
                    self.stats.update(|s| s.stale_snapshots += 1);
                } else {
                    st.not_before = None;
                }
            }
            Err(RestError::Cancelled { .. }) => {}
            Err(e) => {
                warn!(symbol = %sym, error = %e, "depth snapshot failed; will retry");
                self.stats.update(|s| s.snapshot_errors += 1);
                let st = self.snaps.entry(sym).or_default();
                st.in_flight = false;
                // The client already retried; wait longer before the next try.
                st.not_before = Some(Instant::now() + self.cfg.snapshot_retry * 5);
            }
        }
    }

    /// Forgets every book (after a reconnect diffs may have been missed).
    fn reset_books(&mut self) {
        for s in self.syncs.values_mut() {
            s.reset();
        }
        self.snaps.clear();
        self.generation += 1;
    }

    /// After a flush begun at `now`: the watermark, when one is due (see
    /// [`LiveConfig::watermark_every`]).
    async fn watermark(&mut self, now: Micros) {
        let every = self.cfg.watermark_every;
        if every.is_zero() || self.marked.is_some_and(|m| m.elapsed() < every) || !self.batch.is_empty() {
            return;
        }
        let Some(symbol) = self.cfg.symbols.first() else {
            return;
        };
        let (exchange, symbol) = (
            auroraq_bus::topics::token(&self.cfg.exchange),
            auroraq_bus::topics::token(symbol),
        );
        let topics: Vec<String> = ["trades", "tickers", "klines", "book"]
            .iter()
            .map(|f| format!("market.{f}.{exchange}.{symbol}"))
            .collect();
        let w = now.saturating_sub(self.cfg.watermark_lateness.as_micros() as Micros);
        match auroraq_stage::watermark::publish_watermark(&*self.bus, &topics, w, &self.cfg.exchange).await {
            Ok(()) => self.marked = Some(Instant::now()),
            Err(e) => warn!(error = %e, "cannot publish the watermark; will try again"),
        }
    }

    /// Publishes the batch; retries a bus that refuses, and dead-letters events that cannot be
    /// encoded.
    async fn flush(&mut self) -> Result<(), ConnectorError> {
        let mut tries = 0u32;
        // The receipt: where each event's trace starts (exported only when traces are on).
        auroraq_stage::trace::record_receipts("binance", &self.batch);
        while !self.batch.is_empty() {
            match publish_events(&*self.bus, &self.batch).await {
                Ok(rep) => {
                    self.stats.update(|s| {
                        s.published += rep.stored as u64;
                        s.duplicates += rep.duplicates as u64;
                    });
                    self.batch.clear();
                }
                Err(StageError::Encode(e)) => {
                    warn!(error = %e, "an event does not encode; dead-lettering it");
                    let events = std::mem::take(&mut self.batch);
                    for ev in events {
                        match to_message(&ev) {
                            Ok(_) => self.batch.push(ev),
                            Err(err) => {
                                let bytes = ev.to_json().to_string().into_bytes();
                                self.dead_letter(&bytes, "encode_error", &err.to_string(), "encode");
                            }
                        }
                    }
                }
                Err(e) => {
                    tries += 1;
                    if tries >= 5 {
                        return Err(ConnectorError::Publish { tries, source: e });
                    }
                    let d = Duration::from_millis(100u64 << tries);
                    warn!(error = %e, retry_in_ms = d.as_millis() as u64, "publishing failed; retrying");
                    tokio::time::sleep(d).await;
                }
            }
        }
        Ok(())
    }

    async fn close(ws: &mut WsStream, reason: &'static str) {
        let frame = CloseFrame {
            code: CloseCode::Normal,
            reason: reason.into(),
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(Some(frame))).await;
    }

    /// Reads one connection until it ends, is rolled, or `cancel` fires.
    async fn serve(
        &mut self,
        mut ws: WsStream,
        conn: u64,
        cancel: &CancellationToken,
    ) -> Result<ConnEnd, ConnectorError> {
        let idle = self.cfg.idle_timeout;
        let mut roll_at = Instant::now() + self.cfg.roll_after;
        let mut last_frame = Instant::now();
        let mut tick = tokio::time::interval(self.cfg.batch_linger.max(Duration::from_millis(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let mut roll_now: Option<&'static str> = None;
            tokio::select! {
                _ = cancel.cancelled() => {
                    let st = self.conn_status(FeedState::Disconnected, conn, "stopped".into(), &[]);
                    self.push_status(st);
                    self.flush().await?;
                    Self::close(&mut ws, "stopped").await;
                    return Ok(ConnEnd::Stopped);
                }
                _ = tokio::time::sleep_until(roll_at) => roll_now = Some("roll_after"),
                _ = tokio::time::sleep_until(last_frame + idle) => {
                    return Ok(ConnEnd::Lost(format!("no frame for {} s: connection stalled", idle.as_secs_f64())));
                }
                msg = ws.next() => {
                    last_frame = Instant::now();
                    match msg {
                        None => return Ok(ConnEnd::Lost("connection closed by the server (EOF)".into())),
                        Some(Err(e)) => return Ok(ConnEnd::Lost(format!("read error: {e}"))),
                        Some(Ok(Message::Text(t))) => {
                            if self.on_text(t.as_str(), now_micros()) {
                                roll_now = Some("server_shutdown");
                            }
                        }
                        Some(Ok(Message::Binary(b))) => self.on_binary(&b),
                        Some(Ok(Message::Ping(_))) => {
                            self.stats.update(|s| s.pings += 1);
                            // Sends the pong tungstenite queued for this ping.
                            if let Err(e) = ws.flush().await {
                                return Ok(ConnEnd::Lost(format!("cannot answer a ping: {e}")));
                            }
                        }
                        Some(Ok(Message::Close(f))) => {
                            let _ = ws.flush().await;
                            let why = f.map(|f| format!("{} {}", u16::from(f.code), f.reason)).unwrap_or_default();
                            return Ok(ConnEnd::Lost(format!("server closed the connection: {why}").trim().to_owned()));
                        }
                        Some(Ok(_)) => {}
                    }
                }
                Some(st) = self.status_rx.recv() => self.push_status(st),
                Some(res) = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => self.on_snapshot(res),
                _ = tick.tick() => {
                    let now = now_micros();
                    self.flush().await?;
                    self.watermark(now).await;
                    self.request_snapshots();
                }
            }
            if self.batch.len() >= self.cfg.batch_max {
                self.flush().await?;
            }
            if let Some(why) = roll_now {
                match self.roll(&mut ws, conn, why, cancel).await? {
                    Some((new_ws, new_conn)) => return Ok(ConnEnd::Rolled(Box::new(new_ws), new_conn)),
                    None => roll_at = Instant::now() + self.cfg.reconnect.max().max(Duration::from_secs(1)),
                }
            }
        }
    }

    /// Opens a new connection, reads the old one for the overlap while holding the new one's
    /// frames, closes the old one and processes the held frames. `None` if the new connection
    /// could not be opened (the old one goes on; the roll is tried again later).
    async fn roll(
        &mut self,
        old: &mut WsStream,
        old_conn: u64,
        why: &'static str,
        cancel: &CancellationToken,
    ) -> Result<Option<(WsStream, u64)>, ConnectorError> {
        info!(connection = old_conn, why, "rolling the connection");
        self.flush().await?;
        let mut new = match stream::connect(&self.url, self.cfg.connect_timeout).await {
            Ok(ws) => ws,
            Err(e) => {
                warn!(error = %e, "cannot open the replacement connection; keeping the old one");
                self.stats.update(|s| s.connect_failures += 1);
                return Ok(None);
            }
        };
        let new_conn = self.opened();
        enum Held {
            Text(String, Micros),
            Binary(Vec<u8>),
        }
        let mut held: Vec<Held> = Vec::new();
        let until = Instant::now() + self.cfg.roll_overlap;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => break,
                _ = cancel.cancelled() => break,
                m = old.next() => match m {
                    Some(Ok(Message::Text(t))) => {
                        self.on_text(t.as_str(), now_micros());
                    }
                    Some(Ok(Message::Binary(b))) => self.on_binary(&b),
                    Some(Ok(Message::Ping(_))) => {
                        self.stats.update(|s| s.pings += 1);
                        let _ = old.flush().await;
                    }
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                    Some(Ok(_)) => {}
                },
                m = new.next() => match m {
                    Some(Ok(Message::Text(t))) => held.push(Held::Text(t.as_str().to_owned(), now_micros())),
                    Some(Ok(Message::Binary(b))) => held.push(Held::Binary(b.to_vec())),
                    Some(Ok(Message::Ping(_))) => {
                        self.stats.update(|s| s.pings += 1);
                        let _ = new.flush().await;
                    }
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                        warn!(connection = new_conn, "the replacement connection ended during the overlap; keeping the old one");
                        for h in held {
                            match h {
                                Held::Text(t, ts) => {
                                    self.on_text(&t, ts);
                                }
                                Held::Binary(b) => self.on_binary(&b),
                            }
                        }
                        return Ok(None);
                    }
                    Some(Ok(_)) => {}
                },
            }
            if self.batch.len() >= self.cfg.batch_max {
                self.flush().await?;
            }
            if held.len() >= MAX_HELD {
                break;
            }
        }
        Self::close(old, "rolled").await;
        self.stats.update(|s| s.rolls += 1);
        let st = self.conn_status(
            FeedState::Rolled,
            new_conn,
            format!("connection {old_conn} replaced by {new_conn} ({why})"),
            &[
                ("previous_connection", old_conn.to_string()),
                ("reason", why.to_owned()),
            ],
        );
        self.push_status(st);
        for h in held {
            match h {
                Held::Text(t, ts) => {
                    self.on_text(&t, ts);
                }
                Held::Binary(b) => self.on_binary(&b),
            }
            if self.batch.len() >= self.cfg.batch_max {
                self.flush().await?;
            }
        }
        self.flush().await?;
        info!(old = old_conn, new = new_conn, "connection rolled");
        Ok(Some((new, new_conn)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_of_bad_frames() {
        assert_eq!(
            stream_of(r#"{"stream":"btcusdt@trade","data":{"p":"NaN"}}"#),
            Some("btcusdt@trade")
        );
        assert_eq!(stream_of(r#"{"stream":"btcusdt@tr"#), None);
        assert_eq!(stream_of("garbage"), None);
    }
}
