//! The API role: AuroraQ's model, live state and history for clients.
//!
//! - REST under `/api/v1` ([`routes`]): sentiment (analyze, batch, realtime, fusion), market
//!   data, news, risk, orders (placed as `OrderIntent`s on the bus, so they pass risk like any
//!   agent's), portfolio and performance; `GET /openapi.json` generated from the handlers' types.
//! - WebSockets ([`ws`]): `/ws/market/{symbol}`, `/ws/sentiment/{asset}`, `/ws/status`, fed from
//!   the bus through the [`live`] view, each client behind a bounded buffer.
//! - gRPC `SentimentService` ([`grpc`], feature `grpc`).
//! - A status page at `/` ([`page`]), embedded in the binary.
//! - `/health`, `/ready`, `/metrics`.
//!
//! Every request passes [`http::guard`]: request id, tracing span, metrics, load shedding, rate
//! limits per client IP and per credential, authentication ([`auth`]), timeout. The API meets the
//! pipeline only through the bus, the stores the sinks write (PostgreSQL, Redis) and the crates'
//! own code (the sentiment model and batcher, fusion's arithmetic, risk's checks).

pub mod auth;
pub mod cache;
pub mod config;
pub mod error;
#[cfg(feature = "grpc")]
pub mod grpc;
pub mod http;
pub mod limits;
pub mod live;
pub mod openapi;
pub mod page;
pub mod routes;
pub mod state;
pub mod stores;
pub mod ws;

use std::net::SocketAddr;
use std::sync::Arc;

use auroraq_util::CancellationToken;
use tracing::{info, warn};

pub use config::{ApiConfig, Secret};
pub use error::{ApiError, HttpError};
pub use live::Live;
pub use state::{AppState, Backends};

/// A running API.
pub struct RunningApi {
    /// Where REST, WebSockets and the page listen.
    pub addr: SocketAddr,
    /// Where gRPC listens, when configured.
    pub grpc_addr: Option<SocketAddr>,
    pub state: Arc<AppState>,
    task: tokio::task::JoinHandle<Result<(), ApiError>>,
}

impl RunningApi {
    /// Waits until the servers stop (after `cancel` fired and in-flight requests drained).
    pub async fn wait(self) -> Result<(), ApiError> {
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(ApiError::Serve(format!("server task: {e}"))),
        }
    }
}

/// Starts the API: checks the configuration and credentials, subscribes the live view to the
/// bus, binds the listeners and serves until `cancel` fires; then stops taking connections and
/// drains the requests in flight.
pub async fn start(
    cfg: ApiConfig,
    backends: Backends,
    cancel: CancellationToken,
) -> Result<RunningApi, ApiError> {
    let auth = preflight(&cfg)?;
    start_with(cfg, auth, backends, cancel).await
}

/// Checks the configuration and the credentials (from it and the environment) before anything
/// costly is loaded: a misconfigured API fails in milliseconds, not after loading its model.
pub fn preflight(cfg: &ApiConfig) -> Result<auth::Authenticator, ApiError> {
    cfg.validate()?;
    auth::Authenticator::from_config(cfg, |v| std::env::var(v).ok())
}

/// [`start`] with the authenticator [`preflight`] built.
pub async fn start_with(
    cfg: ApiConfig,
    auth: auth::Authenticator,
    backends: Backends,
    cancel: CancellationToken,
) -> Result<RunningApi, ApiError> {
    let risk = auroraq_risk::RiskProcessor::new(backends.risk.clone())
        .map_err(|e| ApiError::Config(e.to_string()))?;
    let live = Live::new(risk, cfg.ws_buffer);
    // Every API process sees every event: a consumer group of its own (replicas must not share).
    let group = format!(
        "api-live-{}-{}",
        std::process::id(),
        auroraq_schemas::now_micros() % 1_000_000_000
    );
    let follower = live::follow(backends.bus.clone(), live.clone(), &group, cancel.clone()).await?;
    let state = AppState::new(cfg.clone(), auth, backends, live, cancel.clone());

    let addr: SocketAddr = cfg
        .listen
        .parse()
        .map_err(|_| ApiError::Config(format!("api.listen {:?} is not host:port", cfg.listen)))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ApiError::Listen {
            addr: cfg.listen.clone(),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ApiError::Listen {
        addr: cfg.listen.clone(),
        source,
    })?;
    let app = http::router(state.clone());

    #[cfg(feature = "grpc")]
    let grpc = match cfg.grpc_listen.as_str() {
        "" => None,
        g => Some(grpc::bind(g, state.clone()).await?),
    };
    #[cfg(not(feature = "grpc"))]
    let grpc: Option<(SocketAddr, std::future::Ready<Result<(), ApiError>>)> = {
        if !cfg.grpc_listen.is_empty() {
            return Err(ApiError::Config(
                "api.grpc_listen is set but this build has no gRPC (feature `grpc`)".into(),
            ));
        }
        None
    };
    let grpc_addr = grpc.as_ref().map(|(a, _)| *a);

    info!(%addr, grpc = ?grpc_addr, auth = !state.auth.disabled(), "API listening");
    let stop = cancel.clone();
    let task = tokio::spawn(async move {
        let rest = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async move { stop.cancelled().await });
        let rest = async { rest.await.map_err(|e| ApiError::Serve(e.to_string())) };
        let result = match grpc {
            Some((_, g)) => {
                let (a, b) = tokio::join!(rest, g);
                a.and(b)
            }
            None => rest.await,
        };
        follower.abort();
        if let Err(e) = &result {
            warn!(error = %e, "API server stopped with an error");
        }
        info!("API stopped");
        result
    });
    Ok(RunningApi {
        addr,
        grpc_addr,
        state,
        task,
    })
}
