//! Backtests: recorded events through the same stage code as a live run, on a simulated clock.
//!
//! The [`Engine`] holds a set of [`Processor`]s (fusion, agents, risk, execution: the very types
//! the live roles run) and feeds them events in the order AuroraQ could have had them
//! ([`available_at`]): each event moves the [`SimClock`] to its time, goes to every processor whose
//! input filters match its topic, and what they emit is queued at that time and routed the same
//! way, as the bus would. Nothing reads the wall clock, so the same input gives the same output;
//! the run's fingerprint is a SHA-256 over every emitted event's bytes, in order.

pub mod analysis;
pub mod engine;
pub mod event_study;
pub mod fingerprint;
pub mod report;

pub use analysis::{ArticlePoint, Extras, SignalPoint};
pub use engine::{available_at, BacktestError, Engine, RunOutput};
pub use fingerprint::Fingerprint;
pub use report::{report, report_with, Summary, Trade};
