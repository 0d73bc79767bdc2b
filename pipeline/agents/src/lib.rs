//! Trading agents: from fused sentiment and market data to order intents.
//!
//! An [`Agent`] is a deterministic stage ([`auroraq_stage::Processor`]): it keeps the latest
//! price per symbol and its own position (from its fills), and on each fused signal for one of
//! its assets asks its [`Policy`] for an action, which becomes an `OrderIntent` on
//! `agents.intents` when it changes the position. Two policies: [`RulePolicy`], the seed's rule,
//! and (feature `onnx`) [`onnx::OnnxPolicy`], any ONNX model that maps the [`Observation`] vector
//! to an action, e.g. a trained PPO policy. AuroraQ (crypto) and MacroQ (stocks) are two
//! configurations of the same agent ([`AgentConfig::auroraq`], [`AgentConfig::macroq`]).

pub mod agent;
#[cfg(feature = "onnx")]
pub mod onnx;
pub mod policy;

pub use agent::{Agent, AgentConfig, AgentStats};
pub use policy::{Action, Observation, Policy, PolicyError, RulePolicy, RuleThresholds, OBSERVATION_LEN};
