//! Risk: VaR and expected shortfall, position sizing, per-agent limits; every order intent
//! approved, resized or rejected with its reason.
//!
//! [`RiskProcessor`] is the stage (a deterministic [`auroraq_stage::Processor`]): it reads
//! `agents.intents`, `exec.orders`, market data and `alerts`, and writes `RiskDecision`s
//! (`risk.decisions`) and `Alert`s (`alerts`). The statistics ([`stats`]), the return grid
//! ([`returns`]) and the sizing ([`sizing`]) are plain functions, usable on their own.

pub mod book;
pub mod config;
pub mod processor;
pub mod returns;
pub mod sizing;
pub mod stats;

pub use book::{AgentBook, Holding};
pub use config::{ConfigError, LimitOverrides, Limits, RiskConfig, SizingConfig};
pub use processor::{wire, AgentStatus, Check, RiskProcessor, RESET_KIND};
pub use returns::ReturnSeries;
pub use sizing::{floor_to_lot, vol_target_quantity, Sizing};
pub use stats::{
    covariance_matrix, historical_es, historical_var, normal_quantile, parametric_es, parametric_var,
    portfolio_var, PortfolioVar, VarEstimate, VarMethod,
};
