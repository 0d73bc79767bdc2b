//! The API role (`auroraq api`, and `auroraq run --api ADDR`): wires `auroraq-api` to this
//! process's bus, model, stores and metrics.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use auroraq_api::{Backends, RunningApi};
use auroraq_bus::Bus;
use auroraq_sentiment::scorer::Scorer;
use auroraq_util::CancellationToken;
use tracing::{info, warn};

use crate::config::Config;
use crate::wiring::connect_bus;

/// Command-line choices of the API role; each overrides `[api]`.
#[derive(Clone, Debug, Default)]
pub struct ApiOptions {
    pub listen: Option<String>,
    pub grpc_listen: Option<String>,
    pub insecure_no_auth: bool,
    /// Model folder (default: `sentiment.model_dir`).
    pub model: Option<PathBuf>,
    /// Serve without a model: the sentiment endpoints answer 503.
    pub no_model: bool,
}

impl ApiOptions {
    /// `cfg.api` with these choices applied.
    pub fn apply(&self, cfg: &Config) -> auroraq_api::ApiConfig {
        let mut api = cfg.api.clone();
        if let Some(l) = &self.listen {
            api.listen = l.clone();
        }
        if let Some(g) = &self.grpc_listen {
            api.grpc_listen = g.clone();
        }
        api.insecure_no_auth |= self.insecure_no_auth;
        api
    }
}

/// What the API serves from, in this process: the bus, the model behind the batcher, PostgreSQL
/// and Redis when configured, fusion's and risk's configuration, and the metrics.
pub fn backends(cfg: &Config, bus: Arc<dyn Bus>, opts: &ApiOptions) -> Result<Backends> {
    let scorer = if opts.no_model {
        warn!("--no-model: the sentiment endpoints answer 503");
        None
    } else {
        let c = crate::sentiment::load(cfg, opts.model.as_deref(), None)?;
        let mut batching = crate::sentiment::batching(cfg);
        batching.max_wait = std::time::Duration::from_millis(cfg.api.batch_wait_ms);
        Some(Scorer::start(Arc::new(c), batching))
    };
    let postgres = match cfg.postgres.url.as_str() {
        "" => None,
        url => Some(auroraq_api::stores::Pg::new(url).map_err(anyhow::Error::msg)?),
    };
    let redis = match cfg.redis.url.as_str() {
        "" => None,
        url => Some(auroraq_api::stores::Redis::new(url, "aq:").map_err(anyhow::Error::msg)?),
    };
    Ok(Backends {
        bus,
        scorer,
        postgres,
        redis,
        fusion: cfg.fusion.clone(),
        risk: cfg.risk.clone(),
        taxonomy: match &cfg.api.scenarios {
            Some(t) => auroraq_text::scenario::Taxonomy::new(t.clone()).context("api.scenarios")?,
            None => auroraq_text::scenario::Taxonomy::default(),
        },
        metrics: Some(crate::telemetry::render_fn("api")?),
    })
}

/// Starts the API on `bus` (the caller's: embedded in `run`, or its own).
pub async fn start(
    cfg: &Config,
    bus: Arc<dyn Bus>,
    opts: &ApiOptions,
    stop: CancellationToken,
) -> Result<RunningApi> {
    let api_cfg = opts.apply(cfg);
    // Credentials first: refusing to start must not wait for the model to load.
    let auth = auroraq_api::preflight(&api_cfg).context("cannot start the API")?;
    let backends = backends(cfg, bus, opts)?;
    let running = auroraq_api::start_with(api_cfg, auth, backends, stop)
        .await
        .context("cannot start the API")?;
    crate::telemetry::set_ready(true);
    Ok(running)
}

/// `auroraq api`: serves until `stop` fires, then drains the requests in flight.
pub async fn role(cfg: &Config, opts: &ApiOptions, stop: CancellationToken) -> Result<()> {
    let bus = connect_bus(&cfg.bus).await?;
    let running = start(cfg, bus.clone(), opts, stop.clone()).await?;
    info!(addr = %running.addr, grpc = ?running.grpc_addr, "ready: API serving");
    running.wait().await?;
    bus.close().await;
    Ok(())
}
