//! What every request shares.

use std::sync::Arc;
use std::time::Instant;

use auroraq_bus::Bus;
use auroraq_sentiment::scorer::Scorer;
use auroraq_util::CancellationToken;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::auth::{Authenticator, Principal};
use crate::cache::LocalCache;
use crate::config::ApiConfig;
use crate::error::HttpError;
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

impl AppState {
    /// Load shedding: one of `api.max_in_flight` slots, held until the permit drops; none free is a
    /// 503 with `Retry-After`.
    pub fn permit(&self) -> Result<OwnedSemaphorePermit, HttpError> {
        let p = self.in_flight.clone().try_acquire_owned().map_err(|_| {
            metrics::counter!("auroraq_api_shed_total").increment(1);
            HttpError::overloaded(
                "the server is at its limit of requests in flight",
                std::time::Duration::from_secs(1),
            )
        })?;
        metrics::gauge!("auroraq_api_in_flight").set(self.in_flight_now() as f64);
        Ok(p)
    }

    /// Requests in flight now.
    pub fn in_flight_now(&self) -> usize {
        self.cfg.max_in_flight - self.in_flight.available_permits()
    }

    /// Who may call, the same for REST, WebSockets and gRPC: the rate limit of the client's IP,
    /// then authentication of `credential` (unless `public`), then the rate limit of the caller.
    pub fn admit(&self, ip: &str, credential: Option<&str>, public: bool) -> Result<Principal, HttpError> {
        let limited = |wait| {
            metrics::counter!("auroraq_api_rate_limited_total").increment(1);
            HttpError::rate_limited(wait)
        };
        self.ip_limits.take(ip).map_err(limited)?;
        if public {
            return Ok(Principal::Anonymous);
        }
        let who = self.auth.check(credential).inspect_err(|_| {
            metrics::counter!("auroraq_api_auth_failures_total").increment(1);
        })?;
        if who != Principal::Anonymous {
            self.key_limits.take(&who.id()).map_err(limited)?;
        }
        Ok(who)
    }
}
