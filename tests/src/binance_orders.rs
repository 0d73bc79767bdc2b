//! A loopback server for Binance's signed order endpoints (`POST`, `GET`, `DELETE
//! /api/v3/order`, `GET /api/v3/openOrders`, `GET /api/v3/myTrades`), for the execution crate's
//! tests.
//!
//! It checks what Binance checks: the `X-MBX-APIKEY` header (`-2015`), the `signature` — the
//! hex HMAC-SHA256 of the query string before it, computed here with its own HMAC over `sha2`
//! and the same secret (`-1022`) — and that `timestamp` is within `recvWindow` of its clock
//! (`-1021`). Then it answers like the exchange: a MARKET order is `FILLED` at the configured
//! price with a fill and its commission, a LIMIT order is `NEW`, a duplicate
//! `newClientOrderId` is `-2010 Duplicate order sent.`, a query or cancel of an unknown order
//! is `-2013` / `-2011`. [`OrderCue`]s make the next order requests answer otherwise (a
//! `-2010` rejection, 429/418 with `Retry-After`, a 5xx, a `NEW` market order, an order taken
//! but never answered). [`BinanceOrderServer::fill`] fills an open order later, as the market
//! would; its trades are in `myTrades` (by `orderId`, `fromId`) and open orders in `openOrders`.
//! Every request is recorded, with whether its signature verified.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// The server's credentials and prices.
#[derive(Clone, Debug)]
pub struct OrderServerConfig {
    pub api_key: String,
    pub api_secret: String,
    /// The price MARKET orders fill at.
    pub fill_price: String,
    /// Commission rate of fills (0.001 = 0.1%), paid in `commission_asset`.
    pub commission_rate: f64,
    pub commission_asset: String,
}

impl Default for OrderServerConfig {
    fn default() -> Self {
        OrderServerConfig {
            api_key: "test-key-5f1c".to_owned(),
            api_secret: "test-secret-9a2e".to_owned(),
            fill_price: "50000.00".to_owned(),
            commission_rate: 0.001,
            commission_asset: "USDT".to_owned(),
        }
    }
}

/// How the next order request (any method) is answered, after authentication.
#[derive(Clone, Debug)]
pub enum OrderCue {
    /// HTTP 400 with this Binance code and message (e.g. `-2010`).
    Reject { code: i64, msg: String },
    /// This HTTP status (429, 418, 500, 503) with an optional `Retry-After`.
    Status { status: u16, retry_after: Option<u64> },
    /// A MARKET order stays `NEW` (no fills).
    NoFill,
    /// The order is taken (and filled, for a MARKET order), but the answer never comes: the
    /// connection stays silent until the client gives up (a crash or timeout mid-order).
    Stall,
}

/// One request as the server saw it.
#[derive(Clone, Debug)]
pub struct OrderRequest {
    pub method: String,
    pub path: String,
    /// The raw query string, as sent.
    pub query: String,
    pub params: BTreeMap<String, String>,
    pub api_key: Option<String>,
    pub signature_ok: bool,
    pub status: u16,
}

#[derive(Default)]
struct State {
    cues: VecDeque<OrderCue>,
    requests: Vec<OrderRequest>,
    orders: BTreeMap<String, Value>,
    trades: Vec<Value>,
    next_id: i64,
}

struct Shared {
    cfg: OrderServerConfig,
    state: Mutex<State>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The running server; stops when dropped.
pub struct BinanceOrderServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
}

impl Drop for BinanceOrderServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// HMAC-SHA256, written out here independently of the client's.
pub fn hmac_hex(key: &[u8], msg: &[u8]) -> String {
    let mut k = if key.len() > 64 {
        Sha256::digest(key).to_vec()
    } else {
        key.to_vec()
    };
    k.resize(64, 0);
    let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    let mut inner = Sha256::new();
    inner.update(&ipad);
    inner.update(msg);
    let mut outer = Sha256::new();
    outer.update(&opad);
    outer.update(inner.finalize());
    outer.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn decode(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(x) = u8::from_str_radix(&v[i + 1..i + 3], 16) {
                out.push(x);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl BinanceOrderServer {
    /// Binds 127.0.0.1 on a free port and serves.
    pub async fn start(cfg: OrderServerConfig) -> BinanceOrderServer {
        let l = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("bind: {e}"));
        let addr = l.local_addr().unwrap_or_else(|e| panic!("addr: {e}"));
        let shared = Arc::new(Shared {
            cfg,
            state: Mutex::new(State {
                next_id: 1000,
                ..State::default()
            }),
        });
        let stop = CancellationToken::new();
        {
            let (shared, stop) = (shared.clone(), stop.clone());
            tokio::spawn(async move {
                loop {
                    let accepted = tokio::select! {
                        _ = stop.cancelled() => return,
                        a = l.accept() => a,
                    };
                    let Ok((sock, _)) = accepted else { continue };
                    let (shared, stop) = (shared.clone(), stop.clone());
                    tokio::spawn(async move {
                        tokio::select! {
                            _ = stop.cancelled() => {}
                            _ = connection(sock, shared) => {}
                        }
                    });
                }
            });
        }
        BinanceOrderServer { addr, shared, stop }
    }

    /// `http://127.0.0.1:<port>`: the client's `base_url`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn config(&self) -> &OrderServerConfig {
        &self.shared.cfg
    }

    /// The next order request gets this answer.
    pub fn cue(&self, c: OrderCue) {
        self.shared.state().cues.push_back(c);
    }

    pub fn requests(&self) -> Vec<OrderRequest> {
        self.shared.state().requests.clone()
    }

    /// Orders placed, by client order id, as the server keeps them.
    pub fn orders(&self) -> BTreeMap<String, Value> {
        self.shared.state().orders.clone()
    }

    /// The account's trades (fills), oldest first.
    pub fn trades(&self) -> Vec<Value> {
        self.shared.state().trades.clone()
    }

    /// Fills `qty` of the open order `client_order_id` at `price`, as the market would: a trade
    /// in `myTrades`, the order `PARTIALLY_FILLED` or `FILLED`. Panics if there is no such open
    /// order (a test's mistake).
    pub fn fill(&self, client_order_id: &str, qty: &str, price: &str) {
        let mut guard = self.shared.state();
        let st = &mut *guard;
        let o = st
            .orders
            .get_mut(client_order_id)
            .unwrap_or_else(|| panic!("no order {client_order_id}"));
        assert!(
            o["status"] == "NEW" || o["status"] == "PARTIALLY_FILLED",
            "order {client_order_id} is not open: {}",
            o["status"]
        );
        let num = |v: &Value| v.as_str().and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
        let (q, p) = (
            qty.parse::<f64>().unwrap_or(0.0),
            price.parse::<f64>().unwrap_or(0.0),
        );
        let executed = num(&o["executedQty"]) + q;
        let quote = num(&o["cummulativeQuoteQty"]) + q * p;
        let orig = num(&o["origQty"]);
        o["executedQty"] = json!(format!("{executed:.8}"));
        o["cummulativeQuoteQty"] = json!(format!("{quote:.8}"));
        o["status"] = json!(if executed + 1e-12 >= orig {
            "FILLED"
        } else {
            "PARTIALLY_FILLED"
        });
        let now = wall_ms();
        o["updateTime"] = json!(now);
        let order_id = o["orderId"].as_i64().unwrap_or(0);
        let n = st
            .trades
            .iter()
            .filter(|t| t["orderId"].as_i64() == Some(order_id))
            .count() as i64;
        let trade = json!({
            "symbol": o["symbol"],
            "id": order_id * 10 + n,
            "orderId": order_id,
            "orderListId": -1,
            "price": price,
            "qty": qty,
            "quoteQty": format!("{:.8}", q * p),
            "commission": format!("{:.8}", q * p * self.shared.cfg.commission_rate),
            "commissionAsset": self.shared.cfg.commission_asset,
            "time": now,
            "isBuyer": o["side"] == "BUY",
            "isMaker": false,
            "isBestMatch": true,
        });
        st.trades.push(trade);
    }
}

async fn connection(sock: TcpStream, shared: Arc<Shared>) {
    let (r, mut w) = sock.into_split();
    let mut r = BufReader::new(r);
    loop {
        let mut line = String::new();
        match r.read_line(&mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let mut api_key = None;
        let mut length = 0usize;
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
            if let Some((k, v)) = h.split_once(':') {
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
                match k.as_str() {
                    "x-mbx-apikey" => api_key = Some(v.to_owned()),
                    "content-length" => length = v.parse().unwrap_or(0),
                    "connection" if v.eq_ignore_ascii_case("close") => close = true,
                    _ => {}
                }
            }
        }
        let mut body = vec![0u8; length];
        if length > 0 && r.read_exact(&mut body).await.is_err() {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let (status, extra, text) = route(&shared, method, target, api_key);
        if status == STALL {
            // Taken, never answered: hold the connection until the client drops it.
            let mut sink = [0u8; 64];
            while matches!(r.read(&mut sink).await, Ok(n) if n > 0) {}
            return;
        }
        let mut head = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: application/json;charset=UTF-8\r\nContent-Length: {}\r\n",
            text.len()
        );
        for (k, v) in extra {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        if w.write_all(head.as_bytes()).await.is_err() || w.write_all(text.as_bytes()).await.is_err() {
            return;
        }
        if close {
            return;
        }
    }
}

/// `route`'s status for a request to leave unanswered ([`OrderCue::Stall`]).
const STALL: u16 = 0;

/// An order as `GET /api/v3/order` and `openOrders` show it.
fn shown(o: &Value) -> Value {
    let mut o = o.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("fills");
        let t = m.remove("transactTime").unwrap_or(Value::Null);
        m.insert("time".into(), t.clone());
        if !m.contains_key("updateTime") {
            m.insert("updateTime".into(), t);
        }
        m.insert("isWorking".into(), Value::Bool(true));
    }
    o
}

fn err(code: i64, msg: &str) -> String {
    json!({"code": code, "msg": msg}).to_string()
}

fn route(
    shared: &Shared,
    method: &str,
    target: &str,
    api_key: Option<String>,
) -> (u16, Vec<(String, String)>, String) {
    let cfg = &shared.cfg;
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let params: BTreeMap<String, String> = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), decode(v)))
        .collect();
    let signature_ok = match query.rsplit_once("&signature=") {
        Some((payload, sig)) => hmac_hex(cfg.api_secret.as_bytes(), payload.as_bytes()) == sig,
        None => false,
    };
    let mut st = shared.state();
    let (status, extra, body) = (|| {
        if !matches!(path, "/api/v3/order" | "/api/v3/openOrders" | "/api/v3/myTrades") {
            return (404, vec![], err(-1, "no such endpoint"));
        }
        if api_key.as_deref() != Some(cfg.api_key.as_str()) {
            return (
                401,
                vec![],
                err(-2015, "Invalid API-key, IP, or permissions for action."),
            );
        }
        if !signature_ok {
            return (
                400,
                vec![],
                err(-1022, "Signature for this request is not valid."),
            );
        }
        let ts: i64 = params.get("timestamp").and_then(|t| t.parse().ok()).unwrap_or(0);
        let window: i64 = params
            .get("recvWindow")
            .and_then(|t| t.parse().ok())
            .unwrap_or(5000);
        if (wall_ms() - ts).abs() > window {
            return (
                400,
                vec![],
                err(-1021, "Timestamp for this request is outside of the recvWindow."),
            );
        }
        let cue = st.cues.pop_front();
        match &cue {
            Some(OrderCue::Reject { code, msg }) => return (400, vec![], err(*code, msg)),
            Some(OrderCue::Status { status, retry_after }) => {
                let extra = retry_after
                    .map(|s| vec![("Retry-After".to_owned(), s.to_string())])
                    .unwrap_or_default();
                let body = match status {
                    429 => err(
                        -1003,
                        "Too many requests; current limit is 50 orders per 10 SECOND.",
                    ),
                    418 => err(-1003, "Way too many requests; IP banned."),
                    _ => err(-1000, "An unknown error occurred while processing the request."),
                };
                return (*status, extra, body);
            }
            _ => {}
        }
        let p = |k: &str| params.get(k).cloned().unwrap_or_default();
        match (method, path) {
            ("GET", "/api/v3/openOrders") => {
                let symbol = p("symbol");
                let open: Vec<Value> = st
                    .orders
                    .values()
                    .filter(|o| o["status"] == "NEW" || o["status"] == "PARTIALLY_FILLED")
                    .filter(|o| symbol.is_empty() || o["symbol"] == symbol.as_str())
                    .map(shown)
                    .collect();
                return (200, vec![], Value::Array(open).to_string());
            }
            ("GET", "/api/v3/myTrades") => {
                let symbol = p("symbol");
                if symbol.is_empty() {
                    return (
                        400,
                        vec![],
                        err(
                            -1102,
                            "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.",
                        ),
                    );
                }
                let order_id: Option<i64> = params.get("orderId").and_then(|v| v.parse().ok());
                let from_id: Option<i64> = params.get("fromId").and_then(|v| v.parse().ok());
                let limit: usize = params.get("limit").and_then(|v| v.parse().ok()).unwrap_or(500);
                let trades: Vec<Value> = st
                    .trades
                    .iter()
                    .filter(|t| t["symbol"] == symbol.as_str())
                    .filter(|t| order_id.is_none() || t["orderId"].as_i64() == order_id)
                    .filter(|t| from_id.is_none_or(|f| t["id"].as_i64().unwrap_or(0) >= f))
                    .take(limit)
                    .cloned()
                    .collect();
                return (200, vec![], Value::Array(trades).to_string());
            }
            (_, "/api/v3/openOrders" | "/api/v3/myTrades") => {
                return (405, vec![], err(-1, "method not allowed"));
            }
            _ => {}
        }
        let reply = match method {
            "POST" => {
                let coid = p("newClientOrderId");
                if coid.is_empty() || p("symbol").is_empty() || p("quantity").is_empty() {
                    return (
                        400,
                        vec![],
                        err(
                            -1102,
                            "Mandatory parameter was not sent, was empty/null, or malformed.",
                        ),
                    );
                }
                if st.orders.contains_key(&coid) {
                    return (400, vec![], err(-2010, "Duplicate order sent."));
                }
                st.next_id += 1;
                let id = st.next_id;
                let qty_s = p("quantity");
                let qty: f64 = qty_s.parse().unwrap_or(0.0);
                let market = p("type") == "MARKET";
                let filled = market && !matches!(cue, Some(OrderCue::NoFill));
                let price_s = if market {
                    cfg.fill_price.clone()
                } else {
                    p("price")
                };
                let price: f64 = price_s.parse().unwrap_or(0.0);
                let now = wall_ms();
                let mut order = json!({
                    "symbol": p("symbol"),
                    "orderId": id,
                    "orderListId": -1,
                    "clientOrderId": coid,
                    "transactTime": now,
                    "price": if market { "0.00000000".to_owned() } else { price_s.clone() },
                    "origQty": qty_s,
                    "executedQty": if filled { qty_s.clone() } else { "0.00000000".to_owned() },
                    "cummulativeQuoteQty": if filled { format!("{:.8}", qty * price) } else { "0.00000000".to_owned() },
                    "status": if filled { "FILLED" } else { "NEW" },
                    "timeInForce": if p("timeInForce").is_empty() { "GTC".to_owned() } else { p("timeInForce") },
                    "type": p("type"),
                    "side": p("side"),
                    "workingTime": now,
                    "selfTradePreventionMode": "NONE",
                    "fills": [],
                });
                if filled {
                    order["fills"] = json!([{
                        "price": price_s,
                        "qty": qty_s,
                        "commission": format!("{:.8}", qty * price * cfg.commission_rate),
                        "commissionAsset": cfg.commission_asset,
                        "tradeId": id * 10,
                    }]);
                    st.trades.push(json!({
                        "symbol": p("symbol"),
                        "id": id * 10,
                        "orderId": id,
                        "orderListId": -1,
                        "price": price_s,
                        "qty": qty_s,
                        "quoteQty": format!("{:.8}", qty * price),
                        "commission": format!("{:.8}", qty * price * cfg.commission_rate),
                        "commissionAsset": cfg.commission_asset,
                        "time": now,
                        "isBuyer": p("side") == "BUY",
                        "isMaker": false,
                        "isBestMatch": true,
                    }));
                }
                st.orders.insert(coid, order.clone());
                (200, vec![], order.to_string())
            }
            "GET" => match st.orders.get(&p("origClientOrderId")) {
                Some(o) => (200, vec![], shown(o).to_string()),
                None => (400, vec![], err(-2013, "Order does not exist.")),
            },
            "DELETE" => {
                let coid = p("origClientOrderId");
                match st.orders.get_mut(&coid) {
                    Some(o) if o["status"] == "NEW" || o["status"] == "PARTIALLY_FILLED" => {
                        o["status"] = json!("CANCELED");
                        let mut a = o.clone();
                        if let Some(m) = a.as_object_mut() {
                            m.remove("fills");
                            m.insert("origClientOrderId".into(), json!(coid));
                            m.insert("clientOrderId".into(), json!("cancel-by-test"));
                        }
                        (200, vec![], a.to_string())
                    }
                    _ => (400, vec![], err(-2011, "Unknown order sent.")),
                }
            }
            _ => (405, vec![], err(-1, "method not allowed")),
        };
        if matches!(cue, Some(OrderCue::Stall)) {
            return (STALL, vec![], String::new());
        }
        reply
    })();
    st.requests.push(OrderRequest {
        method: method.to_owned(),
        path: path.to_owned(),
        query: query.to_owned(),
        params,
        api_key,
        signature_ok,
        status,
    });
    (status, extra, body)
}
