//! A loopback server that speaks enough of Feedly's API for the connector's tests:
//! `GET /v3/streams/contents?streamId=&count=&newerThan=&continuation=` with a Bearer token.
//!
//! It serves the items it was given (recorded Feedly JSON) newest `crawled` first, `count` per page,
//! with an opaque `continuation` (the id of the next page's first item) while more remain; it
//! honours `newerThan` (items crawled strictly after it, epoch ms), answers 401 to a missing or
//! wrong token and 404 to an unknown stream, and misbehaves on cue: [`Fault`]s queued with
//! [`FeedlyServer::push_fault`] apply to the next stream requests, one each, in order. Every
//! request is recorded with its arrival time, query and answer ([`FeedlyServer::requests`]).
//!
//! Plain HTTP/1.1 over a tokio `TcpListener`, one request per connection (`Connection: close`).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// How the server misbehaves for one stream request (after the token check).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Serve this one normally (to place later faults further down the sequence).
    Pass,
    /// `429 Too Many Requests`, with this `Retry-After` value (seconds or an HTTP date) if any.
    RateLimited { retry_after: Option<String> },
    /// This status (e.g. 500, 503) with a small Feedly-style JSON error body.
    Status(u16),
    /// `200` with the page's JSON cut in half.
    Malformed,
    /// Headers announcing the whole page, half the body, then the connection is closed.
    DropMidResponse,
    /// Read the request, answer nothing for this long, then close the connection.
    Stall(Duration),
}

/// A request the server got.
#[derive(Clone, Debug)]
pub struct Request {
    /// When its headers had arrived.
    pub at: Instant,
    /// The same moment on the wall clock (to compare with an HTTP-date `Retry-After`).
    pub wall: SystemTime,
    pub method: String,
    pub path: String,
    /// Query parameters, percent-decoded.
    pub query: BTreeMap<String, String>,
    pub authorization: Option<String>,
    /// The status answered; 0 when the connection was dropped or stalled.
    pub status: u16,
    /// The fault applied, if any.
    pub fault: Option<Fault>,
    /// Items in the page served (0 unless a page was served, in full or in part).
    pub items: usize,
}

impl Request {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query.get(name).map(String::as_str)
    }
}

#[derive(Default)]
struct State {
    token: String,
    /// stream id → items, newest `crawled` first.
    streams: HashMap<String, Vec<Value>>,
    faults: VecDeque<Fault>,
    requests: Vec<Request>,
}

/// The server; stops when dropped.
pub struct FeedlyServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl Drop for FeedlyServer {
    fn drop(&mut self) {
        // Dropping the accept task drops its JoinSet, which aborts open connections.
        self.task.abort();
    }
}

/// The folder of the recorded Feedly responses (`tests/data/feedly`).
pub fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/feedly")
}

/// A recorded response body as JSON.
pub fn load_recorded(file: &str) -> Value {
    let path = data_dir().join(file);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// The `items` of a recorded response.
pub fn recorded_items(file: &str) -> Vec<Value> {
    load_recorded(file)["items"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("{file} has no items array"))
}

fn crawled(item: &Value) -> i64 {
    item.get("crawled").and_then(Value::as_i64).unwrap_or(0)
}

impl FeedlyServer {
    /// Starts on 127.0.0.1 on a free port, accepting `token` as `Authorization: Bearer <token>`.
    pub async fn start(token: &str) -> FeedlyServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("cannot bind the Feedly test server: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("no local address: {e}"));
        let state = Arc::new(Mutex::new(State {
            token: token.to_owned(),
            ..State::default()
        }));
        let st = state.clone();
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    // Out of descriptors, say: do not spin.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                while conns.try_join_next().is_some() {}
                conns.spawn(handle(sock, st.clone()));
            }
        });
        FeedlyServer { addr, state, task }
    }

    /// `http://127.0.0.1:<port>`: the connector's `base_url`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds items to a stream (created if new); the stream stays sorted newest `crawled` first.
    pub fn add_items(&self, stream: &str, items: impl IntoIterator<Item = Value>) {
        let mut st = self.state();
        let s = st.streams.entry(stream.to_owned()).or_default();
        s.extend(items);
        s.sort_by_key(|i| std::cmp::Reverse(crawled(i)));
    }

    /// Creates an empty stream (known, so it answers 200 with no items rather than 404).
    pub fn add_stream(&self, stream: &str) {
        self.state().streams.entry(stream.to_owned()).or_default();
    }

    /// Queues a fault for the next stream request not yet taken by an earlier fault.
    pub fn push_fault(&self, f: Fault) {
        self.state().faults.push_back(f);
    }

    /// Faults queued and not yet applied.
    pub fn pending_faults(&self) -> usize {
        self.state().faults.len()
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Request> {
        self.state().requests.clone()
    }

    /// The stream requests (path `/v3/streams/contents`) so far.
    pub fn stream_requests(&self) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == "/v3/streams/contents")
            .collect()
    }
}

/// What the handler decided for one request.
enum Answer {
    Full {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Headers for `body`, then only the first half of it, then close.
    Cut {
        body: Vec<u8>,
    },
    Stall(Duration),
}

async fn handle(mut sock: TcpStream, state: Arc<Mutex<State>>) {
    let Some(head) = read_head(&mut sock).await else {
        return;
    };
    let at = Instant::now();
    let wall = SystemTime::now();
    let (method, target, headers) = parse_head(&head);
    let (path, query) = split_target(&target);
    let authorization = headers.get("authorization").cloned();
    let (answer, fault, items) = {
        let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
        decide(&mut st, &method, &path, &query, authorization.as_deref())
    };
    let status = match &answer {
        Answer::Full { status, .. } => *status,
        Answer::Cut { .. } | Answer::Stall(_) => 0,
    };
    state
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .requests
        .push(Request {
            at,
            wall,
            method,
            path,
            query,
            authorization,
            status,
            fault,
            items,
        });
    match answer {
        Answer::Full {
            status,
            headers,
            body,
        } => {
            let _ = sock.write_all(&response_head(status, &headers, body.len())).await;
            let _ = sock.write_all(&body).await;
            let _ = sock.flush().await;
            let _ = sock.shutdown().await;
        }
        Answer::Cut { body } => {
            let _ = sock.write_all(&response_head(200, &[], body.len())).await;
            let _ = sock.write_all(&body[..body.len() / 2]).await;
            let _ = sock.flush().await;
            // Closing with unread data would reset; drop it as is: the client sees a short body.
        }
        Answer::Stall(d) => {
            tokio::time::sleep(d).await;
        }
    }
}

fn decide(
    st: &mut State,
    method: &str,
    path: &str,
    query: &BTreeMap<String, String>,
    authorization: Option<&str>,
) -> (Answer, Option<Fault>, usize) {
    let json_answer = |status: u16, v: Value| Answer::Full {
        status,
        headers: Vec::new(),
        body: v.to_string().into_bytes(),
    };
    let error = |status: u16, msg: &str| {
        json_answer(
            status,
            json!({"errorCode": status, "errorId": "test-server", "errorMessage": msg}),
        )
    };
    if path != "/v3/streams/contents" {
        return (error(404, "no such endpoint"), None, 0);
    }
    if method != "GET" {
        return (error(405, "GET only"), None, 0);
    }
    let expected = format!("Bearer {}", st.token);
    if authorization != Some(expected.as_str()) {
        return (error(401, "token invalid"), None, 0);
    }
    let fault = st.faults.pop_front();
    match &fault {
        Some(Fault::RateLimited { retry_after }) => {
            let headers = retry_after
                .iter()
                .map(|v| ("Retry-After".to_owned(), v.clone()))
                .collect();
            let body =
                json!({"errorCode": 429, "errorId": "test-server", "errorMessage": "API rate limit reached"});
            let a = Answer::Full {
                status: 429,
                headers,
                body: body.to_string().into_bytes(),
            };
            return (a, fault, 0);
        }
        Some(Fault::Status(code)) => return (error(*code, "server trouble"), fault, 0),
        Some(Fault::Stall(d)) => return (Answer::Stall(*d), fault, 0),
        _ => {}
    }
    let (page, items) = match page(st, query) {
        Ok(p) => p,
        Err((code, msg)) => return (error(code, &msg), fault, 0),
    };
    let body = page.to_string().into_bytes();
    let answer = match fault {
        Some(Fault::Malformed) => Answer::Full {
            status: 200,
            headers: Vec::new(),
            body: body[..body.len() / 2].to_vec(),
        },
        Some(Fault::DropMidResponse) => Answer::Cut { body },
        _ => Answer::Full {
            status: 200,
            headers: Vec::new(),
            body,
        },
    };
    (answer, fault, items)
}

/// The page a stream request asks for, and its item count; or an error status and message.
fn page(st: &State, q: &BTreeMap<String, String>) -> Result<(Value, usize), (u16, String)> {
    let stream = q
        .get("streamId")
        .ok_or((400, "streamId is required".to_owned()))?;
    let items = st
        .streams
        .get(stream)
        .ok_or((404, format!("stream {stream} not found")))?;
    let count: usize = match q.get("count") {
        None => 20,
        Some(c) => c
            .parse()
            .map_err(|_| (400, format!("count {c:?} is not a number")))?,
    };
    let count = count.clamp(1, 1000);
    let newer_than: Option<i64> = match q.get("newerThan") {
        None => None,
        Some(n) => Some(
            n.parse()
                .map_err(|_| (400, format!("newerThan {n:?} is not a number")))?,
        ),
    };
    let selected: Vec<&Value> = items
        .iter()
        .filter(|i| newer_than.is_none_or(|n| crawled(i) > n))
        .collect();
    let start = match q.get("continuation") {
        None => 0,
        Some(c) => selected
            .iter()
            .position(|i| i.get("id").and_then(Value::as_str) == Some(c.as_str()))
            .ok_or((400, format!("continuation {c:?} is not valid")))?,
    };
    let end = (start + count).min(selected.len());
    let page_items: Vec<Value> = selected[start..end].iter().map(|v| (*v).clone()).collect();
    let n = page_items.len();
    let mut page = json!({
        "id": stream,
        "updated": selected.first().map(|i| crawled(i)).unwrap_or(0),
        "items": page_items,
    });
    if let Some(next) = selected.get(end).and_then(|i| i.get("id")) {
        page["continuation"] = next.clone();
    }
    Ok((page, n))
}

/// Reads up to the blank line ending the request head (64 KiB at most, 5 s at most).
async fn read_head(sock: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::with_capacity(2048);
    let mut chunk = [0u8; 2048];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let n = tokio::time::timeout_at(deadline, sock.read(&mut chunk))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(String::from_utf8_lossy(&buf[..end]).into_owned());
        }
        if buf.len() > 64 << 10 {
            return None;
        }
    }
}

fn parse_head(head: &str) -> (String, String, HashMap<String, String>) {
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split_whitespace();
    let method = first.next().unwrap_or("").to_owned();
    let target = first.next().unwrap_or("").to_owned();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (method, target, headers)
}

fn split_target(target: &str) -> (String, BTreeMap<String, String>) {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let params = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    (path.to_owned(), params)
}

/// Decodes `%XX` and `+` (form encoding, as clients write query strings).
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(b[i + 1]), hex(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

fn response_head(status: u16, headers: &[(String, String)], len: usize) -> Vec<u8> {
    let mut h = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: application/json;charset=UTF-8\r\nContent-Length: {len}\r\nConnection: close\r\n",
        reason(status)
    );
    for (k, v) in headers {
        h.push_str(&format!("{k}: {v}\r\n"));
    }
    h.push_str("\r\n");
    h.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_queries() {
        assert_eq!(
            percent_decode("user%2Fabc%2Fcategory%2Fglobal.all"),
            "user/abc/category/global.all"
        );
        assert_eq!(percent_decode("a+b%20c"), "a b c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("%4"), "%4");
    }
}
