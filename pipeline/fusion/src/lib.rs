//! Fusion: event-time windows of sentiment scores per asset, on timely dataflow.
//!
//! Scores (`sentiment.scores`) are keyed by asset and windowed by their article's publication
//! time; each asset's market data (`market.>`) drives its watermark, so windows close on the
//! dense market clock even when news is sparse. A closed window's scores are de-duplicated
//! (syndicated copies count once), filtered for outliers (Hampel), weighted by source
//! reliability, model confidence and recency, and fused into a [`FusedSignal`] on
//! `sentiment.fused.<asset>`. Scores that arrive after their window closed (plus a grace
//! period) go to a late topic as dead letters.
//!
//! Entry points: [`fuse_batch`] (finite input, synchronous, for backtests and tests),
//! [`FusionStage`] / [`run`] (on the bus), [`bench`] (throughput against a plain loop).
//! See the crate README for the design and the delivery guarantee.

mod batch;
mod bench;
mod config;
mod dataflow;
mod feed;
pub mod fuse;
mod model;
mod service;
mod state;
mod symbols;
pub mod synth;

pub use auroraq_schemas::FusedSignal;
pub use batch::{fuse_baseline, fuse_batch, FusionOutput};
pub use bench::{bench, BenchOptions, BenchReport};
pub use config::{FusionConfig, SymbolConfig, WindowSpec};
pub use model::{FusionMetrics, FusionStats};
pub use service::{run, FusionStage};
pub use symbols::SymbolMap;

/// What can stop fusion (single bad events never do: they are dead-lettered and counted).
#[derive(Debug, thiserror::Error)]
pub enum FusionError {
    #[error("invalid fusion config: {0}")]
    Config(String),
    #[error("dataflow: {0}")]
    Dataflow(String),
    #[error(transparent)]
    Bus(#[from] auroraq_bus::BusError),
    #[error(transparent)]
    Stage(#[from] auroraq_stage::StageError),
}
