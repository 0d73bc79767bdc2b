//! WebSockets fed from the bus through the live view: `/ws/market/{symbol}` (trades, bars,
//! quotes of a symbol), `/ws/sentiment/{asset}` (fused signals and scored headlines of an asset),
//! `/ws/status` (everything the status page shows). Each message is `{"type", "key", "data"}`.
//!
//! A client has a bounded buffer (`api.ws_buffer` messages): the bus never waits for a client.
//! One that falls further behind, or does not take a message within [`SEND_TIMEOUT`], is closed
//! with code 1013 ("try again later") and the reason `slow consumer`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use tokio::sync::broadcast::error::RecvError;
use tracing::debug;

use crate::error::HttpError;
use crate::http::ApiPath;
use crate::live::LiveMessage;
use crate::routes::sentiment::check_asset;
use crate::state::AppState;

/// How long one message may take to reach a client.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// Close code for a client dropped for being slow (RFC 6455 1013: try again later).
pub const SLOW_CLOSE: u16 = 1013;

type Filter = Box<dyn Fn(&LiveMessage) -> bool + Send>;

pub async fn market(
    State(st): State<Arc<AppState>>,
    ApiPath(symbol): ApiPath<String>,
    ws: WebSocketUpgrade,
) -> Result<Response, HttpError> {
    let symbol = check_asset(&symbol)?;
    let f: Filter = Box::new(move |m| matches!(m.kind, "trade" | "bar" | "quote") && m.key == symbol);
    Ok(upgrade(st, ws, f))
}

pub async fn sentiment(
    State(st): State<Arc<AppState>>,
    ApiPath(asset): ApiPath<String>,
    ws: WebSocketUpgrade,
) -> Result<Response, HttpError> {
    let asset = check_asset(&asset)?;
    let f: Filter = Box::new(move |m| match m.kind {
        "fused" => m.key == asset || asset == "CRYPTO",
        "headline" => {
            asset == "CRYPTO"
                || m.data["assets"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|x| x.as_str() == Some(asset.as_str())))
        }
        _ => false,
    });
    Ok(upgrade(st, ws, f))
}

pub async fn status(State(st): State<Arc<AppState>>, ws: WebSocketUpgrade) -> Response {
    let f: Filter = Box::new(|m| {
        matches!(
            m.kind,
            "fused" | "headline" | "portfolio" | "alert" | "trade" | "bar"
        )
    });
    upgrade(st, ws, f)
}

fn upgrade(st: Arc<AppState>, ws: WebSocketUpgrade, filter: Filter) -> Response {
    // Subscribe now, before the upgrade completes, so nothing after the 101 is missed.
    let rx = st.live.subscribe();
    ws.max_message_size(64 * 1024)
        .on_upgrade(move |socket| serve(st, socket, rx, filter))
}

async fn serve(
    st: Arc<AppState>,
    mut socket: WebSocket,
    mut rx: tokio::sync::broadcast::Receiver<Arc<LiveMessage>>,
    filter: Filter,
) {
    let close = |reason: &str| {
        Message::Close(Some(CloseFrame {
            code: SLOW_CLOSE,
            reason: reason.to_owned().into(),
        }))
    };
    loop {
        tokio::select! {
            _ = st.cancel.cancelled() => {
                let _ = socket.send(Message::Close(Some(CloseFrame { code: 1001, reason: "server shutting down".into() }))).await;
                break;
            }
            incoming = socket.recv() => match incoming {
                // Clients only listen; pings are answered by axum, anything else is ignored.
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            msg = rx.recv() => match msg {
                Ok(m) => {
                    if !filter(&m) {
                        continue;
                    }
                    let text = match serde_json::to_string(&*m) {
                        Ok(t) => t,
                        Err(_) => continue,
                    };
                    match tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Text(text.into()))).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => break,
                        Err(_) => {
                            metrics::counter!("auroraq_api_ws_dropped_total", "reason" => "send_timeout").increment(1);
                            debug!("websocket client too slow to take a message; closing");
                            let _ = tokio::time::timeout(Duration::from_secs(1), socket.send(close("slow consumer"))).await;
                            break;
                        }
                    }
                }
                Err(RecvError::Lagged(n)) => {
                    metrics::counter!("auroraq_api_ws_dropped_total", "reason" => "lagged").increment(1);
                    debug!(missed = n, "websocket client fell behind its buffer; closing");
                    let _ = tokio::time::timeout(Duration::from_secs(1), socket.send(close("slow consumer"))).await;
                    break;
                }
                Err(RecvError::Closed) => break,
            },
        }
    }
}
