//! AuroraQ's jobs and roles as a library, under the thin `auroraq` command.
//!
//! - [`config`]: the typed configuration (TOML, `AURORAQ_<SECTION>_<KEY>` overrides, validation).
//! - [`wiring`]: configuration into running parts: the bus, stage settings, the shutdown token.
//! - [`roles`]: every role of the pipeline on a bus (connectors, stages, sinks, tap).
//! - [`run`]: the main job, embedded (one process, in-process bus) or as processes ([`processes`]).
//! - [`backtest`]: backtest plans (files, the bundled data, a bus's history) and their reports.
//! - [`sentiment`]: the score role and the model tools (score, eval, bench).
//! - [`api`]: the API role (feature `api`), standalone or embedded in `run`.
//! - [`doctor`]: checks of every configured dependency.
//! - [`bench`], [`bench_decode`], [`bench_kafka`]: throughput measurements with their baselines.
//!
//! Every long-running function takes a [`CancellationToken`]: cancel it to stop intake, drain and
//! return.

#[cfg(feature = "api")]
pub mod api;
pub mod backtest;
pub mod bench;
#[cfg(feature = "api")]
pub mod bench_api;
pub mod bench_decode;
pub mod bench_kafka;
pub mod bench_scale;
pub mod config;
pub mod doctor;
pub mod lag;
pub mod processes;
pub mod roles;
pub mod run;
#[cfg(feature = "sentiment")]
pub mod sentiment;
pub mod telemetry;
pub mod wiring;

pub use auroraq_replay as replay;
pub use auroraq_util::CancellationToken;
pub use config::Config;
