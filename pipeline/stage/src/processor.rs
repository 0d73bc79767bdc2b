//! Deterministic stages: the same code live on the bus and in a backtest.
//!
//! A [`Processor`] is a stage's logic as a state machine: one event in, events out, no I/O, and
//! time only from the [`Clock`] it is given. Live, [`ProcessorHandler`] runs it under the stage
//! runner with the wall clock; in a backtest an engine feeds it recorded events in event-time
//! order with a simulated clock, so the same input gives the same output, ids and timestamps
//! included.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use auroraq_schemas::{now_micros, AnyEvent, Micros};

use crate::{Handler, HandlerError};

/// Time as a stage sees it.
pub trait Clock: Send + Sync {
    /// Microseconds since the epoch.
    fn now(&self) -> Micros;
}

/// The wall clock, for live runs.
#[derive(Clone, Copy, Debug, Default)]
pub struct WallClock;

impl Clock for WallClock {
    fn now(&self) -> Micros {
        now_micros()
    }
}

/// A clock a backtest moves: it reads the event time of the event being processed.
#[derive(Clone, Debug, Default)]
pub struct SimClock(Arc<AtomicI64>);

impl SimClock {
    pub fn new(t: Micros) -> Self {
        SimClock(Arc::new(AtomicI64::new(t)))
    }

    /// Moves the clock; it never goes back.
    pub fn advance_to(&self, t: Micros) {
        self.0.fetch_max(t, Ordering::SeqCst);
    }
}

impl Clock for SimClock {
    fn now(&self) -> Micros {
        self.0.load(Ordering::SeqCst)
    }
}

/// A stage's logic as a deterministic state machine.
pub trait Processor: Send {
    /// The stage name: dead letters go to `dlq.<name>`, and it names the consumer group.
    fn name(&self) -> &str;
    /// Topic filters it consumes, e.g. `sentiment.fused.>`.
    fn inputs(&self) -> Vec<String>;
    /// Handles one event. Time comes from `clock` only, never from the system.
    fn process(&mut self, event: &AnyEvent, clock: &dyn Clock) -> Result<Vec<AnyEvent>, HandlerError>;
    /// Called once when the input ends (a backtest's last event, or a drained shutdown): emit
    /// what is still pending (open windows, final snapshots).
    fn finish(&mut self, _clock: &dyn Clock) -> Vec<AnyEvent> {
        Vec::new()
    }
    /// Live runs only: called after an event that produced outputs, to export the processor's
    /// state as metrics (a risk book's VaR, ...). Backtests never call it.
    fn observe(&self) {}
    /// The topics it publishes on, which get its watermark when it runs merged on event time
    /// (`crate::watermark::run_processor_merged`). None: it announces no watermark.
    fn outputs(&self) -> Vec<String> {
        Vec::new()
    }
    /// Those of [`Processor::inputs`] that carry what its own outputs cause (feedback): they
    /// cannot hold its event-time frontier at the time they are caused at (see
    /// `crate::watermark`).
    fn feedback(&self) -> Vec<String> {
        Vec::new()
    }
    /// Those of [`Processor::inputs`] whose events can make it publish on `output` (one of
    /// [`Processor::outputs`]): merged on event time, the stage's watermark on `output` follows
    /// them alone. Every input unless it says otherwise.
    fn triggers(&self, _output: &str) -> Vec<String> {
        self.inputs()
    }
    /// Those of [`Processor::inputs`] handled as they arrive, outside the event-time merge:
    /// controls such as an operator's reset, which no producer puts in event-time order.
    fn unordered(&self) -> Vec<String> {
        Vec::new()
    }
}

/// The metrics an output event stands for: order updates and fills by venue, risk decisions by
/// agent and verdict.
fn count_outputs(outs: &[AnyEvent]) {
    for ev in outs {
        match ev {
            AnyEvent::OrderUpdate(u) => {
                metrics::counter!(
                    "auroraq_execution_orders_total",
                    "venue" => u.venue.clone(),
                    "status" => u.status.as_str()
                )
                .increment(1);
                if u.is_fill() {
                    metrics::counter!("auroraq_execution_fills_total", "venue" => u.venue.clone())
                        .increment(1);
                }
            }
            AnyEvent::RiskDecision(d) => {
                metrics::counter!(
                    "auroraq_risk_decisions_total",
                    "agent" => d.agent.clone(),
                    "verdict" => d.verdict.as_str()
                )
                .increment(1);
            }
            _ => {}
        }
    }
}

/// When AuroraQ could first have had an event: the latest of its event time, its receive time
/// and, for a derived event, its processing time (so a score is used only after `ts_scored`).
pub fn available_at(ev: &AnyEvent) -> Micros {
    let m = ev.meta();
    m.ts_event
        .max(m.ts_ingest)
        .max(m.ts_processed.unwrap_or(i64::MIN))
}

/// Runs a [`Processor`] under the stage runner: with the wall clock (live), or on event time
/// (replays of recorded data through the live roles: the clock is the latest [`available_at`] of
/// the events handled so far, as a backtest's simulated clock).
pub struct ProcessorHandler<P> {
    pub processor: P,
    pub clock: Arc<dyn Clock>,
    /// Moved to each event's [`available_at`] before it is handled (event time); none: wall clock.
    pub event_clock: Option<SimClock>,
}

impl<P: Processor> ProcessorHandler<P> {
    pub fn live(processor: P) -> Self {
        ProcessorHandler {
            processor,
            clock: Arc::new(WallClock),
            event_clock: None,
        }
    }

    /// On event time: see the type's docs.
    pub fn on_event_time(processor: P) -> Self {
        let clock = SimClock::new(i64::MIN);
        ProcessorHandler {
            processor,
            clock: Arc::new(clock.clone()),
            event_clock: Some(clock),
        }
    }
}

#[async_trait]
impl<P: Processor> Handler<AnyEvent> for ProcessorHandler<P> {
    async fn handle(&mut self, event: AnyEvent) -> Result<Vec<AnyEvent>, HandlerError> {
        if let Some(c) = &self.event_clock {
            c.advance_to(available_at(&event));
        }
        let outs = self.processor.process(&event, &*self.clock)?;
        if !outs.is_empty() {
            count_outputs(&outs);
            self.processor.observe();
        }
        Ok(outs)
    }
}

/// Deliveries of several subscriptions as one.
struct Merged {
    rx: tokio::sync::mpsc::Receiver<Result<auroraq_bus::Delivery, auroraq_bus::BusError>>,
}

#[async_trait]
impl auroraq_bus::Subscription for Merged {
    async fn next(&mut self) -> Option<Result<auroraq_bus::Delivery, auroraq_bus::BusError>> {
        self.rx.recv().await
    }
}

/// Subscribes a processor's inputs: one subscription per input filter in the stage's group
/// (`cfg.filter` is ignored), merged into one. Subscribe before producers start on the in-process
/// bus, which keeps messages only for groups that exist.
pub async fn subscribe_processor(
    bus: &dyn auroraq_bus::Bus,
    cfg: &crate::StageConfig,
    inputs: &[String],
) -> Result<Box<dyn auroraq_bus::Subscription>, crate::StageError> {
    let (tx, rx) = tokio::sync::mpsc::channel(cfg.max_in_flight.max(16));
    for filter in inputs {
        let mut c = cfg.clone();
        c.filter = filter.clone();
        let mut sub = crate::subscribe_stage(bus, &c).await?;
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(d) = sub.next().await {
                if tx.send(d).await.is_err() {
                    break;
                }
            }
        });
    }
    Ok(Box::new(Merged { rx }))
}

/// Runs a [`Processor`] live on the bus, with the wall clock or on event time
/// (`cfg.event_clock`): its inputs merged (see [`subscribe_processor`]), each event processed,
/// outputs published (fills copied to `exec.fills`), then acked; failures dead-lettered as by
/// [`crate::run_subscription`].
pub async fn run_processor<P: Processor + 'static>(
    bus: Arc<dyn auroraq_bus::Bus>,
    cfg: crate::StageConfig,
    sub: Box<dyn auroraq_bus::Subscription>,
    processor: P,
    metrics: Arc<crate::StageMetrics>,
) -> Result<crate::StageStats, crate::StageError> {
    let handler = if cfg.clock == crate::ClockKind::Event {
        ProcessorHandler::on_event_time(processor)
    } else {
        ProcessorHandler::live(processor)
    };
    crate::run_subscription::<AnyEvent, _>(bus, cfg, sub, handler, metrics).await
}
