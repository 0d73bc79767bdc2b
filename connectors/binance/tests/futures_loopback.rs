//! The live connector and the REST client on USDⓈ-M futures, against a loopback server that
//! speaks the protocol with real recorded payloads: cryptofeed's `BINANCE_FUTURES` capture
//! (`tests/data/cryptofeed/`), its WebSocket frames sent as recorded and its `/fapi/v1/depth`
//! bodies served for the snapshots; and Binance's documented `markPrice` and `forceOrder`
//! examples (the capture has none). Nothing leaves 127.0.0.1.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use auroraq_binance::{
    parse_streams, parse_symbols, LiveConfig, LiveConnector, RestClient, RestConfig, Venue,
};
use auroraq_bus::{Bus, InProcBus, InProcConfig, SubscribeOptions};
use auroraq_schemas::{samples, AnyEvent};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

fn capture(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/cryptofeed")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The recorded `/fapi/v1/depth` bodies by symbol.
fn snapshots() -> BTreeMap<String, String> {
    capture("BINANCE_FUTURES.http.0.0")
        .lines()
        .filter_map(|l| {
            let (url, rest) = l.split_once(" -> ")?;
            let symbol = url.split("symbol=").nth(1)?.split('&').next()?.to_owned();
            Some((symbol, rest.split_once(": ")?.1.to_owned()))
        })
        .collect()
}

/// Binance's documented klines response (the same 12-element rows on `/fapi/v1/klines`).
const KLINES: &str = r#"[[1499040000000,"0.01634790","0.80000000","0.01575800","0.01577100","148976.11427815",1499644799999,"2434.19055334",308,"1756.87402397","28.46694368","0"]]"#;

/// An HTTP/1.1 server answering `/fapi/v1/depth` and `/fapi/v1/klines` as Binance would, and any
/// other path (the spot `/api/v3/...` among them) with Binance's 404 body. It records the paths asked.
async fn rest_server() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let asked = Arc::new(Mutex::new(Vec::new()));
    let log = asked.clone();
    let bodies = snapshots();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let (log, bodies) = (log.clone(), bodies.clone());
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&head);
                let target = text.split(' ').nth(1).unwrap_or("").to_owned();
                log.lock().unwrap().push(target.clone());
                let (path, query) = target.split_once('?').unwrap_or((&target, ""));
                let symbol = query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("symbol="))
                    .unwrap_or("");
                let (status, body) = match (path, bodies.get(symbol)) {
                    ("/fapi/v1/depth", Some(b)) => ("200 OK", b.clone()),
                    ("/fapi/v1/klines", _) => ("200 OK", KLINES.to_owned()),
                    _ => (
                        "404 Not Found",
                        r#"{"code":-5000,"msg":"Path not found"}"#.to_owned(),
                    ),
                };
                let reply = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                     x-mbx-used-weight-1m: 20\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(reply.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    (format!("http://{addr}"), asked)
}

/// A WebSocket server that sends the capture's frames in order, then holds the connection.
async fn ws_server() -> String {
    let frames: Vec<String> = capture("BINANCE_FUTURES.ws.1.0")
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(": ").map(|(_, f)| f.to_owned()))
        .collect();
    ws_server_of(frames, Arc::default()).await
}

/// A WebSocket server that sends `frames` in order on every connection, then holds it; the
/// request paths (with their `streams=` query) go to `asked`.
async fn ws_server_of(frames: Vec<String>, asked: Arc<Mutex<Vec<String>>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let (frames, asked) = (frames.clone(), asked.clone());
            tokio::spawn(async move {
                // The callback's type is tungstenite's, error response and all.
                #[allow(clippy::result_large_err)]
                let record = |req: &tokio_tungstenite::tungstenite::handshake::server::Request, resp| {
                    asked.lock().unwrap().push(req.uri().to_string());
                    Ok(resp)
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(sock, record).await else {
                    return;
                };
                for f in frames {
                    if ws.send(Message::text(f)).await.is_err() {
                        return;
                    }
                }
                while let Some(Ok(m)) = ws.next().await {
                    if m.is_close() {
                        return;
                    }
                }
            });
        }
    });
    format!("ws://{addr}")
}

#[tokio::test]
async fn futures_rest_uses_the_fapi_paths() {
    let (base, asked) = rest_server().await;
    let rest = RestClient::new(
        RestConfig::default()
            .with_venue(Venue::UsdmFutures)
            .with_base_url(base),
        "binance_futures",
    )
    .unwrap();
    let snap = rest.depth_snapshot("sushiusdt", 1000).await.unwrap();
    assert_eq!(snap.symbol, "SUSHIUSDT");
    assert_eq!(snap.last_update_id, 600859605926);
    assert_eq!(snap.bids[0].price.to_string(), "7.6110");
    let bars = rest
        .klines("SUSHIUSDT", "1m", Some(1499040000000), None, 10)
        .await
        .unwrap();
    assert_eq!(bars.len(), 1);
    assert_eq!(bars[0].exchange, "binance_futures");
    assert_eq!(
        asked.lock().unwrap().clone(),
        vec![
            "/fapi/v1/depth?symbol=SUSHIUSDT&limit=1000".to_owned(),
            "/fapi/v1/klines?symbol=SUSHIUSDT&interval=1m&startTime=1499040000000&limit=10".to_owned(),
        ]
    );
}

#[tokio::test]
async fn the_live_connector_keeps_futures_books_by_the_pu_chain() {
    let (rest, asked) = rest_server().await;
    let ws = ws_server().await;
    let cfg = LiveConfig::new(
        parse_symbols("sushiusdt,akrousdt,keepusdt,ctkusdt").unwrap(),
        parse_streams("aggTrade,depth,kline_1m,bookTicker").unwrap(),
    )
    .with_venue(Venue::UsdmFutures)
    .with_endpoints(ws, rest);
    assert_eq!(cfg.exchange, "binance_futures");
    let bus: Arc<dyn Bus> = Arc::new(InProcBus::new(InProcConfig::default()));
    let connector = LiveConnector::new(cfg, bus.clone()).unwrap();
    let live = connector.stats();
    let cancel = CancellationToken::new();
    let run = tokio::spawn(connector.run(cancel.clone()));
    // 764 depth frames: 4 snapshots and 752 diffs applied, 12 older than their snapshot dropped
    // (the same as the replay of this capture); with spot's rule every book would gap.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while live.snapshot().book_updates < 756 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Give anything wrong a moment to show.
    tokio::time::sleep(Duration::from_millis(200)).await;
    cancel.cancel();
    let stats = run.await.unwrap().unwrap();
    assert_eq!(stats.book_updates, 756, "{stats:?}");
    assert_eq!(
        (stats.snapshots, stats.gaps, stats.resyncs),
        (4, 0, 0),
        "{stats:?}"
    );
    assert_eq!(
        (stats.trades, stats.klines, stats.tickers),
        (91, 67, 613),
        "{stats:?}"
    );
    assert_eq!(stats.dead_letters, 0, "{stats:?}");
    let mut paths = asked.lock().unwrap().clone();
    paths.sort();
    assert_eq!(paths.len(), 4, "{paths:?}");
    assert!(
        paths.iter().all(|p| p.starts_with("/fapi/v1/depth?symbol=")),
        "{paths:?}"
    );
}

/// Binance's documented examples ("Mark Price Stream", "Liquidation Order Streams",
/// developers.binance.com/docs/derivatives/usds-margined-futures/websocket-market-streams),
/// comments removed, in combined-stream frames as the streams subscribed name them.
const MARK_PRICE: &str = r#"{"stream":"btcusdt@markPrice@1s","data":{"e":"markPriceUpdate","E":1562305380000,"s":"BTCUSDT","p":"11794.15000000","i":"11784.62659091","P":"11784.25641265","r":"0.00038167","T":1562306400000}}"#;
const FORCE_ORDER: &str = r#"{"stream":"btcusdt@forceOrder","data":{"e":"forceOrder","E":1568014460893,"o":{"s":"BTCUSDT","S":"SELL","o":"LIMIT","f":"IOC","q":"0.014","p":"9910","ap":"9910","X":"FILLED","l":"0.014","z":"0.014","T":1568014460893}}}"#;

#[tokio::test]
async fn the_live_connector_publishes_mark_prices_and_liquidations() {
    let (rest, _) = rest_server().await;
    let asked: Arc<Mutex<Vec<String>>> = Arc::default();
    let ws = ws_server_of(vec![MARK_PRICE.to_owned(), FORCE_ORDER.to_owned()], asked.clone()).await;
    let cfg = LiveConfig::new(
        parse_symbols("btcusdt").unwrap(),
        parse_streams("markPrice,forceOrder").unwrap(),
    )
    .with_venue(Venue::UsdmFutures)
    .with_endpoints(ws, rest);
    let bus: Arc<dyn Bus> = Arc::new(InProcBus::new(InProcConfig::default()));
    let mut sub = bus
        .subscribe(SubscribeOptions::new("futures-test", "market.>").transient())
        .await
        .unwrap();
    let connector = LiveConnector::new(cfg, bus.clone()).unwrap();
    let cancel = CancellationToken::new();
    let run = tokio::spawn(connector.run(cancel.clone()));
    let mut got: Vec<(String, AnyEvent)> = Vec::new();
    while got.len() < 2 {
        let d = tokio::time::timeout(Duration::from_secs(20), sub.next())
            .await
            .expect("the two events arrive in time")
            .expect("the subscription is open")
            .unwrap();
        if auroraq_schemas::is_watermark(d.payload()) {
            // The connector's progress (every second), not an event.
            d.ack().await.unwrap();
            continue;
        }
        got.push((d.topic().to_owned(), AnyEvent::decode(d.payload()).unwrap()));
        d.ack().await.unwrap();
    }
    cancel.cancel();
    let stats = run.await.unwrap().unwrap();
    assert_eq!((stats.mark_prices, stats.liquidations), (1, 1), "{stats:?}");
    assert_eq!(stats.dead_letters, 0, "{stats:?}");
    // Binance's documented stream names were asked for.
    assert_eq!(
        asked.lock().unwrap().first().map(String::as_str),
        Some("/stream?streams=btcusdt@markPrice@1s/btcusdt@forceOrder")
    );
    // The events carry the frames' values exactly (the samples are the same documented
    // examples); only the receive time is the run's.
    got.sort_by(|a, b| a.0.cmp(&b.0));
    let [(lt, AnyEvent::Liquidation(l)), (mt, AnyEvent::MarkPrice(m))] = &got[..] else {
        panic!("{got:?}")
    };
    assert_eq!(mt, "market.mark_prices.binance_futures.btcusdt");
    assert_eq!(lt, "market.liquidations.binance_futures.btcusdt");
    let mut want = samples::mark_price();
    want.meta.ts_ingest = m.meta.ts_ingest;
    assert_eq!(m, &want);
    assert_eq!(m.mark_price.to_string(), "11794.15000000");
    assert_eq!(
        m.funding_rate.map(|r| r.to_string()).as_deref(),
        Some("0.00038167")
    );
    let mut want = samples::liquidation();
    want.meta.ts_ingest = l.meta.ts_ingest;
    assert_eq!(l, &want);
    assert_eq!(l.average_price.to_string(), "9910");
    assert!(m.meta.ts_ingest > 1_700_000_000_000_000, "received now");
}
