//! Opening a combined-stream WebSocket: rustls with the ring provider and the system's root
//! certificates for `wss://`, plain TCP for `ws://` (a loopback server).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

/// An open combined-stream connection.
pub type WsStream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("connecting to {url}: no handshake within {after:?}")]
    Timeout { url: String, after: Duration },
    #[error("connecting to {url}: HTTP {status} on the WebSocket handshake")]
    Refused { url: String, status: u16 },
    #[error("connecting to {url}: {source}")]
    Ws {
        url: String,
        #[source]
        source: Box<tungstenite::Error>,
    },
}

/// A rustls client configuration with the ring provider and the platform's root certificates
/// (built once per process).
pub fn tls_config() -> Result<Arc<rustls::ClientConfig>, ConnectError> {
    static CFG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CFG.get_or_init(|| {
        let mut roots = rustls::RootCertStore::empty();
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::warn!(error = %e, "reading a system root certificate failed");
        }
        let (added, ignored) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            return Err(format!(
                "no usable root certificates found on this system ({ignored} unparsable)"
            ));
        }
        let cfg =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots)
                .with_no_client_auth();
        Ok(Arc::new(cfg))
    })
    .clone()
    .map_err(ConnectError::Tls)
}

/// Opens `url` (`wss://` with rustls, `ws://` in the clear) within `timeout`.
pub async fn connect(url: &str, timeout: Duration) -> Result<WsStream, ConnectError> {
    let connector = if url.starts_with("wss://") {
        Connector::Rustls(tls_config()?)
    } else {
        Connector::Plain
    };
    let fut = tokio_tungstenite::connect_async_tls_with_config(url, None, true, Some(connector));
    match tokio::time::timeout(timeout, fut).await {
        Err(_) => Err(ConnectError::Timeout {
            url: url.to_owned(),
            after: timeout,
        }),
        Ok(Ok((ws, _resp))) => Ok(ws),
        Ok(Err(tungstenite::Error::Http(resp))) => Err(ConnectError::Refused {
            url: url.to_owned(),
            status: resp.status().as_u16(),
        }),
        Ok(Err(e)) => Err(ConnectError::Ws {
            url: url.to_owned(),
            source: Box::new(e),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_uses_the_system_roots() {
        let roots = rustls_native_certs::load_native_certs().certs.len();
        match tls_config() {
            Ok(cfg) => assert!(roots > 0 && cfg.alpn_protocols.is_empty()),
            Err(ConnectError::Tls(why)) => assert!(roots == 0 || why.contains("root"), "{why}"),
            Err(e) => panic!("{e}"),
        }
    }

    #[tokio::test]
    async fn a_closed_port_is_a_connect_error_naming_the_url() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let url = format!("ws://127.0.0.1:{port}/stream?streams=btcusdt@trade");
        let err = connect(&url, Duration::from_secs(2))
            .await
            .expect_err("nothing listens");
        assert!(err.to_string().contains(&url), "{err}");
    }
}
