//! Turns configuration into running parts: the bus, stage settings, shutdown signals.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use auroraq_bus::{Bus, InProcBus, InProcConfig};
use auroraq_stage::StageConfig;
use auroraq_util::CancellationToken;
use tracing::{info, warn};

use crate::config::{BusConfig, Config};

/// Connects to the configured bus; with metrics on, the role is then ready and its bus's consumer
/// lag is exported.
pub async fn connect_bus(cfg: &BusConfig) -> Result<Arc<dyn Bus>> {
    let bus = open_bus(cfg).await?;
    crate::telemetry::watch_lag(bus.clone());
    crate::telemetry::set_ready(true);
    Ok(bus)
}

async fn open_bus(cfg: &BusConfig) -> Result<Arc<dyn Bus>> {
    if cfg.url == auroraq_bus::BusUrl::InProc {
        return Ok(Arc::new(InProcBus::new(InProcConfig {
            partitions: cfg.partitions,
            queue_capacity: cfg.queue_capacity,
            ..InProcConfig::default()
        })));
    }
    if let auroraq_bus::BusUrl::Kafka(url) = &cfg.url {
        return open_kafka(cfg, url).await;
    }
    #[cfg(feature = "nats")]
    {
        let mut n = auroraq_bus::NatsConfig::new(cfg.url.to_string());
        n.partitions = cfg.partitions;
        n.stream = cfg.stream.clone();
        n.subject_root = cfg.subject_root.clone();
        let url = cfg.url.as_str();
        let bus = auroraq_bus::NatsBus::connect(n)
            .await
            .map_err(|e| connect_error(url, &e))?;
        Ok(Arc::new(bus))
    }
    #[cfg(not(feature = "nats"))]
    anyhow::bail!("this build has no NATS support (feature `nats`); bus.url must be \"inproc\"")
}

/// `kafka://host:port[,host:port]`: topics `<bus.subject_root>.<family>` with `bus.partitions`.
#[cfg(feature = "kafka")]
async fn open_kafka(cfg: &BusConfig, url: &str) -> Result<Arc<dyn Bus>> {
    let mut k = auroraq_bus::KafkaConfig::new(url);
    k.partitions = cfg.partitions;
    k.root = cfg.subject_root.clone();
    let bus = auroraq_bus::KafkaBus::connect(k)
        .await
        .map_err(|e| connect_error(url, &e))?;
    Ok(Arc::new(bus))
}

/// A bus's connect error: the bus quotes its URL as given, so its credentials are hidden.
#[allow(dead_code)] // unused in a build with neither networked bus
fn connect_error(url: &str, e: &auroraq_bus::BusError) -> anyhow::Error {
    anyhow::anyhow!(
        "connecting to the bus at {}: {}",
        auroraq_util::redact(url),
        auroraq_util::scrub(&e.to_string(), url)
    )
}

#[cfg(not(feature = "kafka"))]
async fn open_kafka(_cfg: &BusConfig, _url: &str) -> Result<Arc<dyn Bus>> {
    anyhow::bail!("this build has no Kafka support (feature `kafka`); bus.url must be \"inproc\" or nats://")
}

/// Stage settings from the bus section.
pub fn stage_config(cfg: &Config, name: &str, filter: &str) -> StageConfig {
    let mut s = StageConfig::new(name, filter);
    s.max_in_flight = cfg.bus.max_in_flight;
    s.ack_wait = Duration::from_secs(cfg.bus.ack_wait_secs.max(1));
    s.max_attempts = cfg.bus.max_attempts;
    s.clock = cfg.stages.clock;
    let group = cfg.stages.group(name);
    if group != name {
        s.group = Some(group);
    }
    s
}

/// A token cancelled on SIGINT or SIGTERM: stop intake, drain, ack, exit. A second signal exits
/// at once. The signal handlers are installed before this returns, so a signal that arrives
/// right after it is never missed.
pub fn stop_on_signals() -> CancellationToken {
    let cancel = CancellationToken::new();
    let token = cancel.clone();
    match Signals::install() {
        Ok(mut signals) => {
            info!("ready: signal handlers installed (SIGINT or SIGTERM stops intake and drains)");
            tokio::spawn(async move {
                let mut count = 0;
                loop {
                    signals.recv().await;
                    count += 1;
                    if count > 1 {
                        warn!("second signal: exiting without draining");
                        std::process::exit(130);
                    }
                    info!("signal received: stopping intake and draining (signal again to exit at once)");
                    token.cancel();
                }
            });
        }
        Err(e) => warn!(error = %e, "cannot install signal handlers; stop with SIGKILL"),
    }
    cancel
}

/// SIGINT and SIGTERM, installed together.
struct Signals {
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Signals {
                int: signal(SignalKind::interrupt())?,
                term: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Replay pace from `--speed`: 0 is as fast as possible, a positive factor is event time sped up.
pub fn pace(speed: f64) -> Result<auroraq_replay::Pace> {
    if !speed.is_finite() || speed < 0.0 {
        anyhow::bail!("--speed must be 0 (as fast as possible) or a positive factor, not {speed}");
    }
    Ok(if speed == 0.0 {
        auroraq_replay::Pace::Max
    } else {
        auroraq_replay::Pace::Speed(speed)
    })
}

/// A progress bar on stderr drawn with `template` (hidden unless `shown`; indicatif also hides it
/// when stderr is not a terminal).
pub fn progress_bar(shown: bool, len: u64, template: &str) -> indicatif::ProgressBar {
    let bar = if shown {
        indicatif::ProgressBar::new(len)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}
