//! A loopback server that speaks the Binance protocol, for the connector's tests.
//!
//! - **WebSocket** (`ws://127.0.0.1:<port>/stream?streams=a/b/c`, anything else is refused with
//!   HTTP 400): replays a [`Tape`] of frames (the real recorded capture in
//!   `data/binance/cryptofeed/BINANCE.ws.1.0`, real trades from barter's recording, and whatever a
//!   test inserts), only the subscribed streams, at a steady pace. The tape is the market: it goes
//!   on across connections, and a connection after the first starts `resend_on_reconnect` frames
//!   before where the market is, re-sending frames as the real service can.
//! - **Misbehaviour on cue**, per connection ([`ConnPlan`]): drop the TCP connection mid-stream,
//!   close it with a close frame, stall (no frames, no pongs, no reads), announce a
//!   `serverShutdown`; tape edits insert malformed or binary frames and skip depth updates;
//!   [`RestCue`]s answer the next REST requests with 429/418 + `Retry-After` or 5xx.
//! - **Pings** every `ping_interval`, with the pongs that come back recorded.
//! - **REST**: `/api/v3/depth` snapshots of the server's own book (started from the recorded
//!   snapshots, advanced by every depth update the market has produced, delivered or not, so a
//!   snapshot fits the stream as on Binance), `/api/v3/klines` pages in the shape of Binance's
//!   documented example, `/api/v3/ping`; every response carries `X-MBX-USED-WEIGHT-1M`, and a
//!   weight limit answers 429 like Binance.
//! - **Records** connections (streams, open/close times, frames, pings, pongs, who closed) and
//!   REST requests (time, path, query, status, used weight).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use auroraq_binance::Interval;
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// `tests/data/binance`.
pub fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/binance")
}

fn read_data(rel: &str) -> String {
    let p = data_dir().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("test data {}: {e}", p.display()))
}

/// One frame of the tape.
#[derive(Clone, Debug)]
pub struct TapeFrame {
    /// Its `stream`, when it has one.
    pub stream: Option<String>,
    pub text: String,
    /// Sent as a binary frame.
    pub binary: bool,
    /// `false`: the market produced it (the server's book applies it) but it is never sent,
    /// as if lost.
    pub deliver: bool,
    /// Sent whatever the subscription (inserted bad frames).
    pub always: bool,
}

impl TapeFrame {
    fn text(text: String) -> Self {
        let stream = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v.get("stream").and_then(Value::as_str).map(str::to_owned));
        TapeFrame {
            stream,
            text,
            binary: false,
            deliver: true,
            always: false,
        }
    }

    fn data(&self) -> Option<Value> {
        serde_json::from_str::<Value>(&self.text)
            .ok()?
            .get("data")
            .cloned()
    }

    /// `(symbol, first, last)` of a depth update.
    fn depth(&self) -> Option<(String, i64, i64)> {
        if !self.stream.as_deref()?.contains("@depth") {
            return None;
        }
        let d = self.data()?;
        Some((
            d.get("s")?.as_str()?.to_owned(),
            d.get("U")?.as_i64()?,
            d.get("u")?.as_i64()?,
        ))
    }

    /// The connector's native id of a trade frame: `SYMBOL:t<id>` or `SYMBOL:a<id>`.
    pub fn trade_native_id(&self) -> Option<String> {
        let stream = self.stream.as_deref()?;
        let d = self.data()?;
        let sym = d.get("s")?.as_str()?;
        if stream.ends_with("@trade") {
            Some(format!("{sym}:t{}", d.get("t")?.as_i64()?))
        } else if stream.ends_with("@aggTrade") {
            Some(format!("{sym}:a{}", d.get("a")?.as_i64()?))
        } else {
            None
        }
    }
}

/// The market as a sequence of frames.
#[derive(Clone, Debug, Default)]
pub struct Tape {
    pub frames: Vec<TapeFrame>,
    /// Symbols renamed by [`Tape::rename_symbol`], `(from, to)` upper case: the server's recorded
    /// snapshots follow them.
    pub renames: Vec<(String, String)>,
}

/// The symbols of barter's recording, by instrument index.
const BARTER_INSTRUMENTS: [&str; 3] = ["BTCUSDT", "ETHUSDT", "SOLUSDT"];

/// The raw JSON text of the value of `"key":` in `line` (numbers as recorded).
fn raw_field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!("\"{key}\":");
    let i = line.find(&pat)? + pat.len();
    let rest = &line[i..];
    let end = rest.find([',', '}'])?;
    Some(rest[..end].trim().trim_matches('"'))
}

impl Tape {
    /// The real capture `cryptofeed/BINANCE.ws.1.0` (265 frames: depth, bookTicker, aggTrade,
    /// kline for NKNUSDT, BLZETH, LRCBTC, RUNEEUR).
    pub fn recorded() -> Tape {
        let text = read_data("cryptofeed/BINANCE.ws.1.0");
        let frames = text
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(": ").map(|(_, f)| f.trim()))
            .filter(|f| !f.is_empty())
            .map(|f| TapeFrame::text(f.to_owned()))
            .collect();
        Tape {
            frames,
            renames: Vec::new(),
        }
    }

    /// Up to `limit` real trades from barter's recording, as Binance `<symbol>@trade` frames.
    pub fn barter_trades(limit: usize) -> Tape {
        let text = read_data("barter_trades_l1_head1200.jsonl");
        let mut frames = Vec::new();
        for line in text.lines() {
            if frames.len() >= limit {
                break;
            }
            if !line.contains("\"Trade\"") {
                continue;
            }
            let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("barter line: {e}"));
            let item = v
                .get("Item")
                .map(|i| i.get("Ok").unwrap_or(i))
                .unwrap_or(&Value::Null);
            let sym = item
                .get("instrument")
                .and_then(Value::as_u64)
                .and_then(|i| BARTER_INSTRUMENTS.get(i as usize))
                .unwrap_or_else(|| panic!("barter instrument in {line}"));
            let t = item
                .get("kind")
                .and_then(|k| k.get("Trade"))
                .unwrap_or(&Value::Null);
            let id: i64 = t
                .get("id")
                .and_then(Value::as_str)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let sell = t.get("side").and_then(Value::as_str) == Some("Sell");
            let ts = item
                .get("time_exchange")
                .and_then(Value::as_str)
                .and_then(auroraq_replay::time::parse_timestamp)
                .unwrap_or(0)
                / 1000;
            let kind_text = &line[line.find("\"Trade\"").unwrap_or(0)..];
            let price = raw_field(kind_text, "price").unwrap_or("0");
            let qty = raw_field(kind_text, "amount").unwrap_or("0");
            let frame = format!(
                r#"{{"stream":"{}@trade","data":{{"e":"trade","E":{ts},"s":"{sym}","t":{id},"p":"{price}","q":"{qty}","T":{ts},"m":{sell},"M":true}}}}"#,
                sym.to_ascii_lowercase()
            );
            frames.push(TapeFrame::text(frame));
        }
        Tape {
            frames,
            renames: Vec::new(),
        }
    }

    /// Frames of `a` and `b` alternately.
    pub fn interleave(a: Tape, b: Tape) -> Tape {
        let mut renames = a.renames.clone();
        renames.extend(b.renames.iter().cloned());
        let mut frames = Vec::with_capacity(a.frames.len() + b.frames.len());
        let (mut ia, mut ib) = (a.frames.into_iter(), b.frames.into_iter());
        loop {
            match (ia.next(), ib.next()) {
                (None, None) => break,
                (x, y) => frames.extend(x.into_iter().chain(y)),
            }
        }
        Tape { frames, renames }
    }

    /// Rewrites one symbol into another (stream names and payloads), e.g. to serve the recorded
    /// frames for the symbols a test subscribes to.
    pub fn rename_symbol(&mut self, from: &str, to: &str) {
        let (fu, fl, tu, tl) = (
            from.to_ascii_uppercase(),
            from.to_ascii_lowercase(),
            to.to_ascii_uppercase(),
            to.to_ascii_lowercase(),
        );
        for f in &mut self.frames {
            let text = f
                .text
                .replace(&format!("\"{fl}@"), &format!("\"{tl}@"))
                .replace(&format!("\"{fu}\""), &format!("\"{tu}\""));
            let keep = (f.binary, f.deliver, f.always);
            *f = TapeFrame::text(text);
            (f.binary, f.deliver, f.always) = keep;
        }
        self.renames.push((fu, tu));
    }

    /// Inserts a text frame (e.g. a malformed one) at `at`, sent whatever the subscription.
    pub fn insert_text(&mut self, at: usize, text: &str) {
        let mut f = TapeFrame::text(text.to_owned());
        f.always = true;
        self.frames.insert(at.min(self.frames.len()), f);
    }

    /// Inserts a binary frame at `at`.
    pub fn insert_binary(&mut self, at: usize, bytes: &[u8]) {
        let f = TapeFrame {
            stream: None,
            text: String::from_utf8_lossy(bytes).into_owned(),
            binary: true,
            deliver: true,
            always: true,
        };
        self.frames.insert(at.min(self.frames.len()), f);
    }

    /// Tape indexes of `symbol`'s depth updates.
    pub fn depth_indexes(&self, symbol: &str) -> Vec<usize> {
        let s = symbol.to_ascii_uppercase();
        (0..self.frames.len())
            .filter(|&i| self.frames[i].depth().is_some_and(|d| d.0 == s))
            .collect()
    }

    /// The frame at `index` happens but is never delivered (a skipped depth sequence number).
    pub fn skip(&mut self, index: usize) {
        self.frames[index].deliver = false;
    }

    /// Native ids of the trades the tape delivers (on streams in `subscribed`, or all if `None`).
    pub fn trade_ids(&self) -> BTreeSet<String> {
        self.frames
            .iter()
            .filter(|f| f.deliver)
            .filter_map(TapeFrame::trade_native_id)
            .collect()
    }

    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }
}

/// What one connection (by index, 0 = first) does besides replaying the tape. Counts are
/// frames sent on that connection.
#[derive(Clone, Debug, Default)]
pub struct ConnPlan {
    /// Drop the TCP connection (no close frame) after this many frames.
    pub drop_after: Option<usize>,
    /// Send a close frame (1001 going away, as at Binance's 24-hour cut) after this many.
    pub close_after: Option<usize>,
    /// Stop sending, reading and answering anything after this many.
    pub stall_after: Option<usize>,
    /// Send a `serverShutdown` event after this many, and go on streaming.
    pub shutdown_after: Option<usize>,
    /// Before this connection's first frame the market moves on this many frames, which no one
    /// receives (what happens while a client is away); `resend_on_reconnect` does not apply.
    pub skip_on_connect: usize,
}

/// The next matching REST request gets this answer.
#[derive(Clone, Debug)]
pub struct RestCue {
    /// Requests whose path starts with this.
    pub path: String,
    pub status: u16,
    /// `Retry-After` seconds.
    pub retry_after: Option<u64>,
}

/// How the server behaves.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub tape: Tape,
    /// Between two frames sent on a connection.
    pub frame_interval: Duration,
    pub plans: Vec<ConnPlan>,
    /// Frames a connection after the first re-sends from before the market's position.
    pub resend_on_reconnect: usize,
    pub ping_interval: Option<Duration>,
    /// Weight window (wall-clock aligned) and the limit beyond which requests get 429.
    pub weight_window: Duration,
    pub weight_limit: Option<u32>,
    /// Weight of one `/api/v3/klines` request (Binance: 2).
    pub klines_weight: u32,
    /// Klines exist for open times in `[from, to)` (epoch ms).
    pub klines_from_ms: i64,
    pub klines_to_ms: i64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            tape: Tape::default(),
            frame_interval: Duration::from_millis(1),
            plans: Vec::new(),
            resend_on_reconnect: 0,
            ping_interval: None,
            weight_window: Duration::from_secs(60),
            weight_limit: None,
            klines_weight: 2,
            klines_from_ms: 1_499_040_000_000,
            klines_to_ms: 1_700_000_000_000,
        }
    }
}

/// One WebSocket connection as the server saw it.
#[derive(Clone, Debug)]
pub struct ConnRecord {
    pub index: usize,
    pub streams: Vec<String>,
    pub opened: Instant,
    /// When the TCP connection ended (either side).
    pub closed: Option<Instant>,
    /// When the client's close frame arrived.
    pub client_close: Option<Instant>,
    pub frames_sent: usize,
    /// Tape position of the first frame this connection considered.
    pub start_pos: usize,
    pub pings_sent: Vec<Vec<u8>>,
    pub pongs: Vec<Vec<u8>>,
    /// What the server did to end it (`drop`, `close`, `stall`), if anything.
    pub ended_by_server: Option<&'static str>,
}

/// One REST request as the server saw it.
#[derive(Clone, Debug)]
pub struct RequestRecord {
    pub at: Instant,
    /// Wall clock, epoch milliseconds (for weight windows).
    pub wall_ms: i64,
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub status: u16,
    /// The weight reported back (`X-MBX-USED-WEIGHT-1M`).
    pub used_weight: u32,
}

#[derive(Debug, Default)]
struct ServerBook {
    last_id: i64,
    bids: HashMap<String, String>,
    asks: HashMap<String, String>,
}

fn set_levels(side: &mut HashMap<String, String>, levels: Option<&Value>) {
    for l in levels.and_then(Value::as_array).into_iter().flatten() {
        let (Some(p), Some(q)) = (l.get(0).and_then(Value::as_str), l.get(1).and_then(Value::as_str)) else {
            continue;
        };
        if q.parse::<f64>().map(|x| x == 0.0).unwrap_or(false) {
            side.remove(p);
        } else {
            side.insert(p.to_owned(), q.to_owned());
        }
    }
}

impl ServerBook {
    fn body(&self, limit: usize) -> String {
        let sorted = |side: &HashMap<String, String>, desc: bool| {
            let mut v: Vec<(&String, &String)> = side.iter().collect();
            v.sort_by(|a, b| {
                let (x, y) = (
                    a.0.parse::<f64>().unwrap_or(0.0),
                    b.0.parse::<f64>().unwrap_or(0.0),
                );
                if desc {
                    y.total_cmp(&x)
                } else {
                    x.total_cmp(&y)
                }
            });
            v.into_iter()
                .take(limit)
                .map(|(p, q)| serde_json::json!([p, q]))
                .collect::<Vec<_>>()
        };
        serde_json::json!({"lastUpdateId": self.last_id, "bids": sorted(&self.bids, true), "asks": sorted(&self.asks, false)})
            .to_string()
    }
}

#[derive(Default)]
struct State {
    cursor: usize,
    books: HashMap<String, ServerBook>,
    conns: Vec<ConnRecord>,
    requests: Vec<RequestRecord>,
    rejected: Vec<String>,
    cues: VecDeque<RestCue>,
    weights: HashMap<i64, u32>,
}

struct Shared {
    cfg: ServerConfig,
    state: Mutex<State>,
    kline_template: Vec<Value>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The running server; stops when dropped.
pub struct BinanceServer {
    ws_addr: SocketAddr,
    rest_addr: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
}

impl Drop for BinanceServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn recorded_snapshots() -> HashMap<String, ServerBook> {
    let mut out = HashMap::new();
    for line in read_data("cryptofeed/BINANCE.http.0.0").lines() {
        let Some((url, rest)) = line.split_once(" -> ") else {
            continue;
        };
        let Some((_, body)) = rest.split_once(": ") else {
            continue;
        };
        let Some(sym) = url.split("symbol=").nth(1).and_then(|s| s.split('&').next()) else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<Value>(body) else {
            continue;
        };
        let mut b = ServerBook {
            last_id: v.get("lastUpdateId").and_then(Value::as_i64).unwrap_or(0),
            ..Default::default()
        };
        set_levels(&mut b.bids, v.get("bids"));
        set_levels(&mut b.asks, v.get("asks"));
        out.insert(sym.to_owned(), b);
    }
    out
}

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl BinanceServer {
    /// Binds the WebSocket and REST listeners on 127.0.0.1 and starts serving.
    pub async fn start(cfg: ServerConfig) -> BinanceServer {
        let ws = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("bind ws: {e}"));
        let rest = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("bind rest: {e}"));
        let (ws_addr, rest_addr) = (
            ws.local_addr().unwrap_or_else(|e| panic!("addr: {e}")),
            rest.local_addr().unwrap_or_else(|e| panic!("addr: {e}")),
        );
        let kline_template: Vec<Value> =
            serde_json::from_str::<Value>(&read_data("doc_payloads/rest_klines.json"))
                .ok()
                .and_then(|v| v.get(0).and_then(Value::as_array).cloned())
                .unwrap_or_default();
        let mut books = recorded_snapshots();
        for (from, to) in &cfg.tape.renames {
            if let Some(b) = books.remove(from) {
                books.insert(to.clone(), b);
            }
        }
        let mut state = State {
            books,
            ..State::default()
        };
        // Snapshots follow renamed symbols too.
        let tape_symbols: BTreeSet<String> = cfg
            .tape
            .frames
            .iter()
            .filter_map(|f| f.depth().map(|d| d.0))
            .collect();
        state
            .books
            .retain(|k, _| tape_symbols.contains(k) || tape_symbols.is_empty());
        let shared = Arc::new(Shared {
            cfg,
            state: Mutex::new(state),
            kline_template,
        });
        let stop = CancellationToken::new();
        {
            let (shared, stop) = (shared.clone(), stop.clone());
            tokio::spawn(async move {
                loop {
                    let accepted = tokio::select! {
                        _ = stop.cancelled() => return,
                        a = ws.accept() => a,
                    };
                    let Ok((sock, _)) = accepted else { continue };
                    let (shared, stop) = (shared.clone(), stop.clone());
                    tokio::spawn(async move {
                        tokio::select! {
                            _ = stop.cancelled() => {}
                            _ = ws_connection(sock, shared) => {}
                        }
                    });
                }
            });
        }
        {
            let (shared, stop) = (shared.clone(), stop.clone());
            tokio::spawn(async move {
                loop {
                    let accepted = tokio::select! {
                        _ = stop.cancelled() => return,
                        a = rest.accept() => a,
                    };
                    let Ok((sock, _)) = accepted else { continue };
                    let (shared, stop) = (shared.clone(), stop.clone());
                    tokio::spawn(async move {
                        tokio::select! {
                            _ = stop.cancelled() => {}
                            _ = http_connection(sock, shared) => {}
                        }
                    });
                }
            });
        }
        BinanceServer {
            ws_addr,
            rest_addr,
            shared,
            stop,
        }
    }

    /// `ws://127.0.0.1:<port>`: the connector's `ws_base`.
    pub fn ws_base(&self) -> String {
        format!("ws://{}", self.ws_addr)
    }

    /// `http://127.0.0.1:<port>`: the REST base URL.
    pub fn rest_base(&self) -> String {
        format!("http://{}", self.rest_addr)
    }

    pub fn connections(&self) -> Vec<ConnRecord> {
        self.shared.state().conns.clone()
    }

    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.state().requests.clone()
    }

    /// Request targets of refused WebSocket handshakes.
    pub fn rejected(&self) -> Vec<String> {
        self.shared.state().rejected.clone()
    }

    /// Queues an answer for the next request to `cue.path`.
    pub fn cue(&self, cue: RestCue) {
        self.shared.state().cues.push_back(cue);
    }

    /// How far the market (the tape) has gone.
    pub fn position(&self) -> usize {
        self.shared.state().cursor
    }

    /// Whether every tape frame has been produced.
    pub fn tape_done(&self) -> bool {
        self.position() >= self.shared.cfg.tape.len()
    }
}

fn update_conn(shared: &Shared, index: usize, f: impl FnOnce(&mut ConnRecord)) {
    if let Some(c) = shared.state().conns.get_mut(index) {
        f(c);
    }
}

/// The market moves to `pos` (inclusive): the server's books apply the depth updates.
fn advance(shared: &Shared, pos: usize) {
    let mut st = shared.state();
    advance_in(&shared.cfg, &mut st, pos);
}

fn advance_in(cfg: &ServerConfig, st: &mut State, pos: usize) {
    while st.cursor <= pos && st.cursor < cfg.tape.len() {
        let f = &cfg.tape.frames[st.cursor];
        if let (Some((sym, first, last)), Some(d)) = (f.depth(), f.data()) {
            let book = st.books.entry(sym).or_insert_with(|| ServerBook {
                last_id: first - 1,
                ..Default::default()
            });
            if last > book.last_id {
                set_levels(&mut book.bids, d.get("b"));
                set_levels(&mut book.asks, d.get("a"));
                book.last_id = last;
            }
        }
        st.cursor += 1;
    }
}

// The handshake callback's `Result<Response, ErrorResponse>` is tungstenite's signature.
#[allow(clippy::result_large_err)]
async fn ws_connection(sock: TcpStream, shared: Arc<Shared>) {
    let target: Arc<Mutex<Option<String>>> = Arc::default();
    let seen = target.clone();
    let callback = move |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        let t = req.uri().to_string();
        let ok = req.uri().path() == "/stream"
            && req
                .uri()
                .query()
                .and_then(|q| q.strip_prefix("streams="))
                .is_some_and(|s| !s.is_empty());
        if let Ok(mut g) = seen.lock() {
            *g = Some(t);
        }
        if ok {
            Ok(resp)
        } else {
            let mut r = ErrorResponse::new(Some("expected /stream?streams=<a>/<b>".into()));
            *r.status_mut() = StatusCode::BAD_REQUEST;
            Err(r)
        }
    };
    let accepted = tokio_tungstenite::accept_hdr_async(sock, callback).await;
    let target = target.lock().ok().and_then(|g| g.clone()).unwrap_or_default();
    let Ok(mut ws) = accepted else {
        shared.state().rejected.push(target);
        return;
    };
    let streams: Vec<String> = target
        .split_once("streams=")
        .map(|(_, s)| {
            s.split('&')
                .next()
                .unwrap_or("")
                .split('/')
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let subscribed: BTreeSet<String> = streams.iter().cloned().collect();
    let cfg = &shared.cfg;
    let (index, mut pos) = {
        let mut st = shared.state();
        let index = st.conns.len();
        let skip = cfg.plans.get(index).map_or(0, |p| p.skip_on_connect);
        let pos = if index == 0 {
            0
        } else {
            st.cursor.saturating_sub(cfg.resend_on_reconnect)
        };
        // The market moved on while nobody was connected: those frames are lost to the client.
        let pos = if skip > 0 {
            (st.cursor + skip).min(cfg.tape.len())
        } else {
            pos
        };
        if skip > 0 && pos > 0 {
            advance_in(cfg, &mut st, pos - 1);
        }
        st.conns.push(ConnRecord {
            index,
            streams: streams.clone(),
            opened: Instant::now(),
            closed: None,
            client_close: None,
            frames_sent: 0,
            start_pos: pos,
            pings_sent: Vec::new(),
            pongs: Vec::new(),
            ended_by_server: None,
        });
        (index, pos)
    };
    let plan = cfg.plans.get(index).cloned().unwrap_or_default();
    let mut sent = 0usize;
    let mut shutdown_sent = false;
    let mut pings = 0u64;
    let mut ping_tick = tokio::time::interval(cfg.ping_interval.unwrap_or(Duration::from_secs(3600)));
    ping_tick.tick().await;
    let mut next_send = tokio::time::Instant::now();
    let closed = |shared: &Shared, by: Option<&'static str>| {
        update_conn(shared, index, |c| {
            c.closed.get_or_insert_with(Instant::now);
            if by.is_some() {
                c.ended_by_server = by;
            }
        })
    };
    loop {
        let more = pos < cfg.tape.len() || plan.shutdown_after.is_some_and(|n| n == sent && !shutdown_sent);
        tokio::select! {
            m = ws.next() => match m {
                Some(Ok(Message::Pong(p))) => update_conn(&shared, index, |c| c.pongs.push(p.to_vec())),
                Some(Ok(Message::Close(_))) => {
                    update_conn(&shared, index, |c| {
                        c.client_close.get_or_insert_with(Instant::now);
                    });
                }
                Some(Ok(_)) => {}
                None | Some(Err(_)) => {
                    closed(&shared, None);
                    return;
                }
            },
            _ = ping_tick.tick(), if cfg.ping_interval.is_some() => {
                pings += 1;
                let payload = format!("ping-{index}-{pings}").into_bytes();
                update_conn(&shared, index, |c| c.pings_sent.push(payload.clone()));
                if ws.send(Message::Ping(payload.into())).await.is_err() {
                    closed(&shared, None);
                    return;
                }
            }
            _ = tokio::time::sleep_until(next_send), if more => {
                if plan.drop_after == Some(sent) {
                    closed(&shared, Some("drop"));
                    return; // drops the socket: no close frame
                }
                if plan.close_after == Some(sent) {
                    let frame = CloseFrame { code: CloseCode::Away, reason: "going away".into() };
                    let _ = ws.send(Message::Close(Some(frame))).await;
                    update_conn(&shared, index, |c| c.ended_by_server = Some("close"));
                    // Reads on until the client's close reply ends the connection.
                    let _ = tokio::time::timeout(Duration::from_secs(2), async {
                        while let Some(Ok(_)) = ws.next().await {}
                    })
                    .await;
                    closed(&shared, None);
                    return;
                }
                if plan.stall_after == Some(sent) {
                    update_conn(&shared, index, |c| c.ended_by_server = Some("stall"));
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    closed(&shared, None);
                    return;
                }
                if plan.shutdown_after == Some(sent) && !shutdown_sent {
                    shutdown_sent = true;
                    let text = format!(r#"{{"stream":"!serverShutdown","data":{{"e":"serverShutdown","E":{}}}}}"#, wall_ms());
                    if ws.send(Message::text(text)).await.is_err() {
                        closed(&shared, None);
                        return;
                    }
                    continue;
                }
                // The next frame this connection delivers.
                while pos < cfg.tape.len() {
                    let f = &cfg.tape.frames[pos];
                    advance(&shared, pos);
                    pos += 1;
                    let wanted = f.always || f.stream.as_ref().is_none_or(|s| subscribed.contains(s));
                    if !f.deliver || !wanted {
                        continue;
                    }
                    let msg = if f.binary { Message::binary(f.text.clone().into_bytes()) } else { Message::text(f.text.clone()) };
                    if ws.send(msg).await.is_err() {
                        closed(&shared, None);
                        return;
                    }
                    sent += 1;
                    update_conn(&shared, index, |c| c.frames_sent = sent);
                    break;
                }
                next_send = tokio::time::Instant::now() + cfg.frame_interval;
            }
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        418 => "I'm a teapot",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

async fn http_connection(sock: TcpStream, shared: Arc<Shared>) {
    let (r, mut w) = sock.into_split();
    let mut r = BufReader::new(r);
    loop {
        let mut line = String::new();
        match r.read_line(&mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let mut close = false;
        loop {
            let mut h = String::new();
            match r.read_line(&mut h).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if h.to_ascii_lowercase().starts_with("connection:") && h.to_ascii_lowercase().contains("close") {
                close = true;
            }
        }
        let mut parts = line.split_whitespace();
        let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let (status, extra, body) = route(&shared, method, target);
        let mut head = format!(
            "HTTP/1.1 {status} {}\r\nContent-Type: application/json;charset=UTF-8\r\nContent-Length: {}\r\n",
            reason(status),
            body.len()
        );
        for (k, v) in extra {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        if w.write_all(head.as_bytes()).await.is_err() || w.write_all(body.as_bytes()).await.is_err() {
            return;
        }
        if close {
            return;
        }
    }
}

fn depth_weight(limit: usize) -> u32 {
    match limit {
        0..=100 => 5,
        101..=500 => 25,
        501..=1000 => 50,
        _ => 250,
    }
}

fn route(shared: &Shared, method: &str, target: &str) -> (u16, Vec<(String, String)>, String) {
    let cfg = &shared.cfg;
    let (path, q) = target.split_once('?').unwrap_or((target, ""));
    let query: BTreeMap<String, String> = q
        .split('&')
        .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect();
    let weight = match path {
        "/api/v3/depth" => depth_weight(query.get("limit").and_then(|l| l.parse().ok()).unwrap_or(100)),
        "/api/v3/klines" => cfg.klines_weight,
        _ => 1,
    };
    let mut st = shared.state();
    let win_ms = cfg.weight_window.as_millis().max(1) as i64;
    let now_ms = wall_ms();
    let window = now_ms / win_ms;
    let used_before = st.weights.get(&window).copied().unwrap_or(0);
    let cue_at = st.cues.iter().position(|c| path.starts_with(&c.path));
    let (status, mut extra, body, used) = if let Some(i) = cue_at {
        let cue = st.cues.remove(i).unwrap_or_else(|| RestCue {
            path: String::new(),
            status: 500,
            retry_after: None,
        });
        let mut extra = Vec::new();
        if let Some(s) = cue.retry_after {
            extra.push(("Retry-After".to_owned(), s.to_string()));
        }
        let body = match cue.status {
            429 => r#"{"code":-1003,"msg":"Too many requests; please use the websocket for live updates."}"#
                .to_owned(),
            418 => r#"{"code":-1003,"msg":"Way too many requests; IP banned."}"#.to_owned(),
            _ => {
                r#"{"code":-1000,"msg":"An unknown error occurred while processing the request."}"#.to_owned()
            }
        };
        (cue.status, extra, body, used_before)
    } else if cfg.weight_limit.is_some_and(|l| used_before + weight > l) {
        let left_ms = win_ms - now_ms % win_ms;
        let secs = ((left_ms + 999) / 1000).max(1);
        (
            429,
            vec![("Retry-After".to_owned(), secs.to_string())],
            r#"{"code":-1003,"msg":"Too much request weight used."}"#.to_owned(),
            used_before,
        )
    } else {
        let used = used_before + weight;
        st.weights.insert(window, used);
        let (status, body) = if method != "GET" {
            (400, r#"{"code":-1000,"msg":"GET only"}"#.to_owned())
        } else {
            match path {
                "/api/v3/ping" => (200, "{}".to_owned()),
                "/api/v3/depth" => {
                    let sym = query.get("symbol").cloned().unwrap_or_default();
                    let limit = query
                        .get("limit")
                        .and_then(|l| l.parse().ok())
                        .unwrap_or(100usize);
                    match st.books.get(&sym) {
                        Some(b) => (200, b.body(limit)),
                        None => (400, r#"{"code":-1121,"msg":"Invalid symbol."}"#.to_owned()),
                    }
                }
                "/api/v3/klines" => klines(shared, &query),
                _ => (404, r#"{"code":-1,"msg":"no such endpoint"}"#.to_owned()),
            }
        };
        (status, Vec::new(), body, used)
    };
    extra.push(("X-MBX-USED-WEIGHT-1M".to_owned(), used.to_string()));
    st.requests.push(RequestRecord {
        at: Instant::now(),
        wall_ms: now_ms,
        path: path.to_owned(),
        query,
        status,
        used_weight: used,
    });
    (status, extra, body)
}

/// Klines in the documented shape: open times on the interval's grid from `startTime`, up to
/// `endTime` and `limit`, within the server's data range; prices vary with the open time.
fn klines(shared: &Shared, q: &BTreeMap<String, String>) -> (u16, String) {
    let cfg = &shared.cfg;
    let Some(iv) = q
        .get("interval")
        .and_then(|i| Interval::parse(i).ok())
        .and_then(|i| i.millis())
    else {
        return (400, r#"{"code":-1120,"msg":"Invalid interval."}"#.to_owned());
    };
    if q.get("symbol").is_none_or(|s| s.is_empty()) {
        return (
            400,
            r#"{"code":-1102,"msg":"Mandatory parameter 'symbol' was not sent."}"#.to_owned(),
        );
    }
    let limit = q
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(500)
        .clamp(1, 1000);
    let end = q
        .get("endTime")
        .and_then(|e| e.parse::<i64>().ok())
        .unwrap_or(i64::MAX);
    let start = q
        .get("startTime")
        .and_then(|s| s.parse::<i64>().ok())
        .unwrap_or(cfg.klines_from_ms)
        .max(cfg.klines_from_ms);
    let mut open = (start + iv - 1).div_euclid(iv) * iv;
    let t = &shared.kline_template;
    let num = |i: usize, default: f64| {
        t.get(i)
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(default)
    };
    let (o, h, l, c, v, qv) = (
        num(1, 1.0),
        num(2, 1.1),
        num(3, 0.9),
        num(4, 1.0),
        num(5, 100.0),
        num(7, 100.0),
    );
    let mut rows = Vec::new();
    while rows.len() < limit && open <= end && open < cfg.klines_to_ms {
        let k = 1.0 + ((open / iv) % 50) as f64 / 1000.0;
        rows.push(serde_json::json!([
            open,
            format!("{:.8}", o * k),
            format!("{:.8}", h * k),
            format!("{:.8}", l * k),
            format!("{:.8}", c * k),
            format!("{:.8}", v * k),
            open + iv - 1,
            format!("{:.8}", qv * k),
            t.get(8).and_then(Value::as_i64).unwrap_or(1) + (open / iv) % 7,
            "0",
            "0",
            "0"
        ]));
        open += iv;
    }
    (200, Value::Array(rows).to_string())
}
