//! Turns configuration into running parts: the bus, stage settings, shutdown signals.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use auroraq_bus::{Bus, InProcBus, InProcConfig};
use auroraq_stage::StageConfig;
use tracing::{info, warn};

use crate::config::{BusConfig, Config};

/// Connects to the configured bus.
pub async fn connect_bus(cfg: &BusConfig) -> Result<Arc<dyn Bus>> {
    if cfg.url == "inproc" {
        return Ok(Arc::new(InProcBus::new(InProcConfig {
            partitions: cfg.partitions,
            queue_capacity: cfg.queue_capacity,
            ..InProcConfig::default()
        })));
    }
    #[cfg(feature = "nats")]
    {
        let mut n = auroraq_bus::NatsConfig::new(cfg.url.clone());
        n.partitions = cfg.partitions;
        n.stream = cfg.stream.clone();
        n.subject_root = cfg.subject_root.clone();
        let bus = auroraq_bus::NatsBus::connect(n)
            .await
            .with_context(|| format!("connecting to the bus at {}", cfg.url))?;
        Ok(Arc::new(bus))
    }
    #[cfg(not(feature = "nats"))]
    anyhow::bail!("this build has no NATS support (feature `nats`); bus.url must be \"inproc\"")
}

/// Stage settings from the bus section.
pub fn stage_config(cfg: &Config, name: &str, filter: &str) -> StageConfig {
    let mut s = StageConfig::new(name, filter);
    s.max_in_flight = cfg.bus.max_in_flight;
    s.ack_wait = Duration::from_secs(cfg.bus.ack_wait_secs.max(1));
    s.max_attempts = cfg.bus.max_attempts;
    s.event_clock = cfg.stages.event_time();
    s
}

/// Set on SIGINT or SIGTERM: stop intake, drain, ack, exit. A second signal exits at once.
pub fn stop_on_signals() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    tokio::spawn(async move {
        let mut signals = 0;
        loop {
            wait_for_signal().await;
            signals += 1;
            if signals > 1 {
                warn!("second signal: exiting without draining");
                std::process::exit(130);
            }
            info!("signal received: stopping intake and draining (signal again to exit at once)");
            flag.store(true, Ordering::SeqCst);
        }
    });
    stop
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Resolves once `stop` is set.
pub async fn stopped(stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A cancellation token that fires when `stop` is set (for libraries that take a token).
pub fn token_for(stop: Arc<AtomicBool>) -> tokio_util::sync::CancellationToken {
    let token = tokio_util::sync::CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        while !stop.load(Ordering::SeqCst) && !t.is_cancelled() {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        t.cancel();
    });
    token
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
