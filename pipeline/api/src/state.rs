//! What every request shares.

use std::sync::Arc;
use std::time::Instant;

use auroraq_bus::Bus;
use auroraq_sentiment::scorer::Scorer;
use auroraq_util::CancellationToken;
use tokio::sync::Semaphore;

use crate::auth::Authenticator;
use crate::cache::LocalCache;
use crate::config::ApiConfig;
use crate::limits::RateLimiter;
use crate::live::Live;
use crate::stores::{Pg, Redis};

/// Renders the process's Prometheus metrics (installed by the runtime).
pub type MetricsRender = Arc<dyn Fn() -> String + Send + Sync>;

/// What the API serves from. Only the bus is required: without a model the sentiment endpoints
/// answer `503`, without PostgreSQL the history endpoints fall back to the live view or `503`.
pub struct Backends {
    pub bus: Arc<dyn Bus>,
    pub scorer: Option<Scorer>,
    pub postgres: Option<Pg>,
    pub redis: Option<Redis>,
    pub fusion: auroraq_fusion::FusionConfig,
    pub risk: auroraq_risk::RiskConfig,
    pub taxonomy: auroraq_text::scenario::Taxonomy,
    pub metrics: Option<MetricsRender>,
}

impl Backends {
    /// Only a bus; every other part at its default or absent.
    pub fn bus_only(bus: Arc<dyn Bus>) -> Backends {
        Backends {
            bus,
            scorer: None,
            postgres: None,
            redis: None,
            fusion: auroraq_fusion::FusionConfig::default(),
            risk: auroraq_risk::RiskConfig::default(),
            taxonomy: auroraq_text::scenario::Taxonomy::default(),
            metrics: None,
        }
    }
}

/// Shared by every request.
pub struct AppState {
    pub cfg: ApiConfig,
    pub auth: Authenticator,
    pub key_limits: RateLimiter,
    pub ip_limits: RateLimiter,
    pub in_flight: Arc<Semaphore>,
    pub live: Arc<Live>,
    pub backends: Backends,
    pub cache: LocalCache,
    pub started: Instant,
    pub cancel: CancellationToken,
    /// `<model id>@sha256:<model sha256>`, or empty without a model.
    pub model_version: String,
}

impl AppState {
    pub fn new(
        cfg: ApiConfig,
        auth: Authenticator,
        backends: Backends,
        live: Arc<Live>,
        cancel: CancellationToken,
    ) -> Arc<AppState> {
        let model_version = backends
            .scorer
            .as_ref()
            .map(|s| {
                let c = s.classifier();
                format!("{}@sha256:{}", c.model_id, c.model_sha256)
            })
            .unwrap_or_default();
        Arc::new(AppState {
            key_limits: RateLimiter::new(cfg.rate_per_key, cfg.burst_per_key),
            ip_limits: RateLimiter::new(cfg.rate_per_ip, cfg.burst_per_ip),
            in_flight: Arc::new(Semaphore::new(cfg.max_in_flight)),
            cache: LocalCache::new(cfg.cache_entries),
            cfg,
            auth,
            live,
            backends,
            started: Instant::now(),
            cancel,
            model_version,
        })
    }
}
