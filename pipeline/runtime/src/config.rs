//! Configuration: a TOML file, then `AURORAQ_<SECTION>_<KEY>` environment overrides, then
//! command-line flags; validated before anything starts.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub bus: BusConfig,
    pub postgres: PostgresConfig,
    pub redis: ServiceConfig,
    pub sentiment: SentimentConfig,
    pub run: RunConfig,
    /// `[binance]`: endpoints, exchange name, symbols and streams of the Binance connector (see
    /// connectors/binance).
    pub binance: auroraq_binance::BinanceSettings,
    /// `[feedly]`: the Feedly connector's stream, token and pacing (see connectors/feedly).
    pub feedly: auroraq_feedly::FeedlySettings,
    /// `[stages]`: how stages on the bus keep time.
    pub stages: StagesConfig,
    /// `[fusion]`: windows, grace, weights, outliers (see pipeline/fusion).
    pub fusion: auroraq_fusion::FusionConfig,
    /// `[risk]`: VaR, sizing, limits (see pipeline/risk).
    pub risk: auroraq_risk::RiskConfig,
    /// `[execution]`: the paper venue, fees, slippage, snapshots; the live-trading switch, the
    /// variables holding the Binance keys, the venues' base URLs (see pipeline/execution).
    pub execution: auroraq_execution::ExecutionConfig,
    /// `[agents.<name>]`: the trading agents; `auroraq` (crypto) and `macroq` (stocks) by default.
    pub agents: std::collections::BTreeMap<String, auroraq_agents::AgentConfig>,
    /// `[metrics]`: `/metrics`, `/health`, `/ready` of a role.
    pub metrics: crate::telemetry::MetricsConfig,
    /// `[tracing]`: OpenTelemetry trace export over OTLP/HTTP (off by default).
    pub tracing: crate::telemetry::TracingConfig,
    /// `[api]`: the API role (see pipeline/api).
    #[cfg(feature = "api")]
    pub api: auroraq_api::ApiConfig,
    /// `[api]` is kept as written in a build without the API.
    #[cfg(not(feature = "api"))]
    pub api: toml::Table,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bus: BusConfig::default(),
            postgres: PostgresConfig::default(),
            redis: ServiceConfig::default(),
            sentiment: SentimentConfig::default(),
            run: RunConfig::default(),
            binance: auroraq_binance::BinanceSettings::default(),
            feedly: auroraq_feedly::FeedlySettings::default(),
            stages: StagesConfig::default(),
            fusion: auroraq_fusion::FusionConfig::default(),
            risk: auroraq_risk::RiskConfig::default(),
            execution: auroraq_execution::ExecutionConfig::default(),
            agents: [
                auroraq_agents::AgentConfig::auroraq(),
                auroraq_agents::AgentConfig::macroq(),
            ]
            .into_iter()
            .map(|a| (a.name.clone(), a))
            .collect(),
            metrics: crate::telemetry::MetricsConfig::default(),
            tracing: crate::telemetry::TracingConfig::default(),
            api: Default::default(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BusConfig {
    /// `inproc` (embedded, the default), a NATS URL `nats://host:port`, or Kafka brokers
    /// `kafka://host:port[,host:port]`.
    pub url: auroraq_bus::BusUrl,
    /// Partitions per topic; every process on one bus must agree.
    pub partitions: u32,
    /// JetStream stream name.
    pub stream: String,
    /// First token of every NATS subject.
    pub subject_root: String,
    /// In-process bus: most messages a group partition holds before producers wait.
    pub queue_capacity: usize,
    /// Most unacked deliveries per consumer.
    pub max_in_flight: usize,
    /// Seconds before an unacked delivery is redelivered.
    pub ack_wait_secs: u64,
    /// Deliveries before a failing event is dead-lettered.
    pub max_attempts: u32,
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig {
            url: auroraq_bus::BusUrl::InProc,
            partitions: 8,
            stream: "AURORAQ".into(),
            subject_root: "aq".into(),
            queue_capacity: 8192,
            max_in_flight: 256,
            ack_wait_secs: 30,
            max_attempts: 5,
        }
    }
}

/// `[stages]`: how the stages on the bus keep time.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StagesConfig {
    /// `wall` (live; the default): outputs are stamped with the system clock. `event`: for
    /// recorded data replayed through the live roles, a stage's time is the latest event time it
    /// has handled (as a backtest's simulated clock), scores are stamped at their article's receive
    /// time and fused signals at their window's close; `auroraq run` on NATS sets it.
    pub clock: auroraq_stage::ClockKind,
    /// On event time: appended to the consumer group of each stage (`<group>-<suffix>`), so that
    /// the stage reads its inputs from the start of the stream in a group of its own. `auroraq
    /// run` sets it (`AURORAQ_STAGES_GROUP_SUFFIX`) when it restarts a stage that died: the stage
    /// rebuilds its state by processing the run again; its outputs are the same events with the
    /// same ids, which the bus and the merged readers de-duplicate. Empty: the stage's own group.
    pub group_suffix: String,
    /// When a stage with several inputs (fusion, agents, risk, execution) merges them by
    /// watermarks (`auroraq_stage::watermark`) instead of taking them as they arrive: `event`
    /// (the default) on event time only; `always` on the wall clock too, for live deployments
    /// whose producers all announce watermarks (the Binance and Feedly connectors, the replay and
    /// every stage do; an input that says nothing for 30 s falls back to a bounded lateness of
    /// 5 s); `never`.
    pub merge: MergeMode,
}

/// `[stages] merge`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MergeMode {
    #[default]
    Event,
    Always,
    Never,
}

impl Default for StagesConfig {
    fn default() -> Self {
        StagesConfig {
            clock: auroraq_stage::ClockKind::Wall,
            group_suffix: String::new(),
            merge: MergeMode::Event,
        }
    }
}

impl StagesConfig {
    /// Whether multi-input stages merge their inputs by watermarks (see `merge`).
    pub fn merged(&self) -> bool {
        match self.merge {
            MergeMode::Always => true,
            MergeMode::Never => false,
            MergeMode::Event => self.clock == auroraq_stage::ClockKind::Event,
        }
    }

    /// The consumer group of an event-time stage whose own group is `group` (see `group_suffix`).
    pub fn group(&self, group: &str) -> String {
        if self.group_suffix.is_empty() || self.clock != auroraq_stage::ClockKind::Event {
            group.to_owned()
        } else {
            format!("{group}-{}", self.group_suffix)
        }
    }
}

/// `sentiment.device`: where the model runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    #[default]
    Cpu,
    /// The CUDA execution provider; falls back to the CPU with a warning when no GPU is there.
    Cuda,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceConfig {
    /// Connection URL; empty: not configured.
    pub url: String,
    /// Whether `doctor` (and the roles that use it) must reach it.
    pub required: bool,
}

/// `[postgres]`: the database the PostgreSQL sink writes and the API reads.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresConfig {
    /// `postgres://user[:password]@host[:port]/database`, naming its user and database; empty:
    /// not configured. libpq key/value strings are refused.
    pub url: String,
    /// Whether `doctor` (and the roles that use it) must reach it.
    pub required: bool,
    /// The sink dead-letters events dated more than this many days before now (reason
    /// `out_of_time_range`) instead of creating partitions for them; 0: no bound.
    pub max_past_days: u32,
    /// Likewise for events dated more than this many days after now; 0: no bound.
    pub max_future_days: u32,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            url: String::new(),
            required: false,
            max_past_days: auroraq_sink_timescale::DEFAULT_MAX_PAST_DAYS,
            max_future_days: auroraq_sink_timescale::DEFAULT_MAX_FUTURE_DAYS,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SentimentConfig {
    /// Folder with `model.onnx`, `tokenizer.json`, `config.json`.
    pub model_dir: PathBuf,
    /// `libonnxruntime.so`; `ORT_DYLIB_PATH` overrides it.
    pub ort_dylib: PathBuf,
    pub required: bool,
    /// `cpu` or `cuda` (falls back to the CPU with a warning when no GPU is there).
    pub device: Device,
    /// Intra-op threads per session; 0: all cores.
    pub threads: u64,
    /// Sessions over the model: batches that run at once (each with `threads` threads).
    pub sessions: u64,
    /// Idle intra-op threads spin instead of sleeping: lower latency per batch on cores the
    /// other stages do not need (see `ModelOptions::spin`).
    pub spin: bool,
    /// Padded tokens per batch.
    pub max_batch_tokens: u64,
    /// Sequences per batch.
    pub max_batch_size: u64,
    /// Milliseconds the first waiting article waits for a batch to fill.
    pub max_wait_ms: u64,
    /// Tokenised articles waiting for inference before intake pauses.
    pub queue: u64,
    /// Asset aliases for linking articles to assets, e.g. `BTC = ["bitcoin", "btc", "xbt"]`;
    /// empty: the built-in table.
    pub aliases: std::collections::BTreeMap<String, Vec<String>>,
    /// Assets for articles that name none; empty (the default): such articles are scored but
    /// concern no asset. The main job sets it: its bundled news predates its prices.
    pub fallback_assets: Vec<String>,
}

impl Default for SentimentConfig {
    fn default() -> Self {
        SentimentConfig {
            model_dir: PathBuf::from("models/auroraq-minilm-fpb"),
            ort_dylib: PathBuf::from(".auroraq/onnxruntime/libonnxruntime.so"),
            required: false,
            device: Device::Cpu,
            threads: 0,
            sessions: 1,
            spin: false,
            max_batch_tokens: 4096,
            max_batch_size: 64,
            max_wait_ms: 10,
            queue: 512,
            aliases: Default::default(),
            fallback_assets: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    /// Bar files the embedded job replays.
    pub bars: Vec<PathBuf>,
    /// News the embedded job scores (headline CSV or JSON lines, detected per file). News of the
    /// bars' own days keeps its times; news of other days is spread over the bars' last 180 days.
    pub news: Vec<PathBuf>,
    /// Exchange or vendor of those bars.
    pub exchange: String,
    /// Where outputs go.
    pub out_dir: PathBuf,
    /// Whether the job also runs the backtest of the bundled data (sentiment, fusion, agents, risk,
    /// execution) and writes its report to `<out_dir>/report/`.
    pub backtest: bool,
    /// Days of bars kept before the first article (news of the bars' own days): the risk stage's
    /// returns lookback (720 hourly returns: 30 days) fills there before the first signal.
    pub warmup_days: u64,
    /// Serve the API (`[api]`) on this `host:port` during the embedded job, and after it until
    /// interrupted; empty: no API.
    pub api: String,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            bars: vec![PathBuf::from("data/crypto/btc_usd_1h_2024-08_2025-11.csv")],
            news: vec![PathBuf::from("data/crypto/crypto_news_2025-05_2025-08.csv.gz")],
            exchange: "cryptocompare".into(),
            out_dir: PathBuf::from("out"),
            backtest: true,
            warmup_days: 45,
            api: String::new(),
        }
    }
}

const ENV_PREFIX: &str = "AURORAQ_";

/// `AURORAQ_*` variables that are not settings: the configuration file (`AURORAQ_CONFIG`, read by
/// the command line), the tests' servers (`AURORAQ_TEST_*`), the ONNX Runtime download of
/// `scripts/onnxruntime.sh` (`AURORAQ_ORT_*`). Any other that names no section is refused.
const NOT_SETTINGS: &[&str] = &["TEST_", "ORT_"];

impl Config {
    /// Loads `path` (if given, it must exist; if not, `auroraq.toml` is used when present), then
    /// applies environment overrides from `env`, then validates.
    pub fn load(path: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> Result<Config> {
        let mut table: toml::Table = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read config file {}", p.display()))?;
                toml::from_str(&text)
                    .with_context(|| format!("config file {} is not valid TOML", p.display()))?
            }
            None if Path::new("auroraq.toml").exists() => {
                let text = std::fs::read_to_string("auroraq.toml").context("cannot read auroraq.toml")?;
                toml::from_str(&text).context("auroraq.toml is not valid TOML")?
            }
            None => toml::Table::new(),
        };
        let defaults = toml::Table::try_from(Config::default()).context("defaults")?;
        // AURORAQ_* variables that name no section: refused below unless they are not settings.
        let mut unknown: Vec<String> = Vec::new();
        // AURORAQ_<SECTION>_<KEY> variables whose section has no such key: likewise.
        let mut no_setting: Vec<(String, String)> = Vec::new();
        for (k, v) in env {
            let Some(rest) = k.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            if rest == "CONFIG" || NOT_SETTINGS.iter().any(|p| rest.starts_with(p)) {
                continue;
            }
            let rest = rest.to_ascii_lowercase();
            let section_defaults =
                rest.split_once('_')
                    .and_then(|(section, key)| match defaults.get(section) {
                        Some(toml::Value::Table(t)) => Some((section, key, t)),
                        _ => None,
                    });
            let Some((section, key, sec_defaults)) = section_defaults else {
                unknown.push(k);
                continue;
            };
            let Some(default) = sec_defaults.get(key) else {
                // Refused below, unless the configuration names it for a secret.
                no_setting.push((k, format!("[{section}] has no setting {key:?}")));
                continue;
            };
            let value =
                parse_env_value(&v, default).with_context(|| format!("environment variable {k}={v:?}"))?;
            let sec = table
                .entry(section.to_owned())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            match sec {
                toml::Value::Table(t) => {
                    t.insert(key.to_owned(), value);
                }
                _ => bail!("config: {section} must be a table"),
            }
        }
        let cfg: Config = toml::Value::Table(table)
            .try_into()
            .context("invalid configuration")?;
        // The variables the configuration names for secrets are read where they are used.
        let named = cfg.secret_env_names();
        unknown.retain(|k| !named.iter().any(|n| n == k));
        no_setting.retain(|(k, _)| !named.iter().any(|n| n == k));
        if let Some((k, why)) = no_setting.first() {
            bail!("environment variable {k}: {why}");
        }
        if let Some(k) = unknown.first() {
            let sections: Vec<&str> = defaults
                .iter()
                .filter(|(_, v)| v.is_table())
                .map(|(s, _)| s.as_str())
                .collect();
            bail!(
                "environment variable {k}: no such setting; AURORAQ_<SECTION>_<KEY> names one of the sections {}",
                sections.join(", ")
            );
        }
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<()> {
        let b = &self.bus;
        if b.partitions == 0 || b.partitions > 1024 {
            bail!("bus.partitions must be in 1..=1024, not {}", b.partitions);
        }
        if b.max_in_flight == 0 || b.queue_capacity == 0 {
            bail!("bus.max_in_flight and bus.queue_capacity must be at least 1");
        }
        if b.max_attempts == 0 {
            bail!("bus.max_attempts must be at least 1");
        }
        if b.stream.is_empty() || b.stream.contains(['.', ' ', '*', '>']) {
            bail!(
                "bus.stream {:?} must be non-empty with no dots, spaces or wildcards",
                b.stream
            );
        }
        auroraq_bus::topics::validate_topic(&b.subject_root)
            .map_err(|e| anyhow::anyhow!("bus.subject_root: {e}"))?;
        if !self.postgres.url.is_empty() {
            auroraq_sink_timescale::postgres_config(&self.postgres.url)
                .map_err(|e| anyhow::anyhow!("postgres.url: {e}"))?;
        }
        if self.sentiment.max_batch_size == 0
            || self.sentiment.max_batch_tokens == 0
            || self.sentiment.queue == 0
        {
            bail!("sentiment.max_batch_size, max_batch_tokens and queue must be at least 1");
        }
        self.execution
            .validate()
            .map_err(|e| anyhow::anyhow!("[execution]: {e}"))?;
        self.metrics.validate()?;
        self.tracing.validate()?;
        if !self.redis.url.is_empty() && !self.redis.url.starts_with("redis://") {
            bail!(
                "redis.url must be a redis:// URL, not {:?}",
                auroraq_util::redact(&self.redis.url)
            );
        }
        Ok(())
    }
}

impl Config {
    /// Environment variables the configuration names for secrets (the API's JWT secret, the
    /// Feedly token, the Binance API key and secret of live execution), read by their parts
    /// rather than as settings.
    fn secret_env_names(&self) -> Vec<String> {
        #[cfg(feature = "api")]
        let jwt = self.api.jwt_secret_env.clone();
        #[cfg(not(feature = "api"))]
        let jwt = self
            .api
            .get("jwt_secret_env")
            .and_then(|v| v.as_str())
            .unwrap_or("AURORAQ_JWT_SECRET")
            .to_owned();
        vec![
            jwt,
            self.feedly.token_env.clone(),
            self.execution.api_key_env.clone(),
            self.execution.api_secret_env.clone(),
        ]
    }

    /// Serves the API on `listen` beside the embedded job (`run --api`); `insecure_no_auth` lets
    /// it run without keys. A build without the API keeps the address, and the job says so.
    pub fn serve_api_in_run(&mut self, listen: String, insecure_no_auth: bool) {
        self.run.api = listen;
        #[cfg(feature = "api")]
        {
            self.api.insecure_no_auth |= insecure_no_auth;
        }
        #[cfg(not(feature = "api"))]
        let _ = insecure_no_auth;
    }

    /// Points the configuration at another bus (`--bus`).
    pub fn set_bus_url(&mut self, url: &str) -> Result<()> {
        self.bus.url = auroraq_bus::BusUrl::parse(url).map_err(anyhow::Error::msg)?;
        self.validate()
    }
}

impl RunConfig {
    /// The main job's command-line overrides: bar files (none: keep `run.bars`) and the output folder.
    pub fn apply(&mut self, bars: Vec<PathBuf>, out: Option<PathBuf>) {
        if !bars.is_empty() {
            self.bars = bars;
        }
        if let Some(out) = out {
            self.out_dir = out;
        }
    }
}

fn parse_env_value(v: &str, like: &toml::Value) -> Result<toml::Value> {
    Ok(match like {
        toml::Value::Integer(_) => toml::Value::Integer(v.trim().parse().context("expected an integer")?),
        toml::Value::Float(_) => toml::Value::Float(v.trim().parse().context("expected a number")?),
        toml::Value::Boolean(_) => toml::Value::Boolean(match v.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => true,
            "0" | "false" | "no" | "off" => false,
            _ => bail!("expected true or false"),
        }),
        toml::Value::Array(_) => toml::Value::Array(
            v.split(',')
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.trim().into()))
                .collect(),
        ),
        _ => toml::Value::String(v.to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_embedded() {
        let c = Config::load(None, env(&[])).unwrap();
        assert_eq!(c.bus.url, auroraq_bus::BusUrl::InProc);
        assert_eq!(c.bus.partitions, 8);
    }

    #[test]
    fn file_then_env() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.toml");
        std::fs::write(&p, "[bus]\nurl = \"nats://127.0.0.1:4222\"\npartitions = 4\n").unwrap();
        let c = Config::load(
            Some(&p),
            env(&[
                ("AURORAQ_BUS_PARTITIONS", "16"),
                ("AURORAQ_POSTGRES_REQUIRED", "yes"),
            ]),
        )
        .unwrap();
        assert_eq!(c.bus.url.as_str(), "nats://127.0.0.1:4222");
        assert_eq!(c.bus.partitions, 16);
        assert!(c.postgres.required);
        assert_eq!(c.bus.max_in_flight, 256, "unset keys keep defaults");
    }

    #[test]
    fn example_file_is_valid() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../auroraq.example.toml");
        let c = Config::load(Some(&p), env(&[])).unwrap();
        assert_eq!(c.redis.url, "redis://127.0.0.1:6379");
        assert_eq!(c.run.bars.len(), 1);
    }

    #[test]
    fn clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.toml");
        std::fs::write(&p, "[bus]\nurll = \"x\"\n").unwrap();
        let e = format!("{:#}", Config::load(Some(&p), env(&[])).unwrap_err());
        assert!(e.contains("urll"), "{e}");
        let e = format!(
            "{:#}",
            Config::load(None, env(&[("AURORAQ_BUS_PARTITIONS", "many")])).unwrap_err()
        );
        assert!(
            e.contains("AURORAQ_BUS_PARTITIONS") && e.contains("integer"),
            "{e}"
        );
        let e = format!(
            "{:#}",
            Config::load(None, env(&[("AURORAQ_BUS_COLOUR", "red")])).unwrap_err()
        );
        assert!(e.contains("colour"), "{e}");
        let e = format!(
            "{:#}",
            Config::load(None, env(&[("AURORAQ_BUS_URL", "amqp://x")])).unwrap_err()
        );
        assert!(e.contains("bus.url"), "{e}");
        let e = format!(
            "{:#}",
            Config::load(None, env(&[("AURORAQ_BUS_PARTITIONS", "0")])).unwrap_err()
        );
        assert!(e.contains("partitions"), "{e}");
        let missing = dir.path().join("missing.toml");
        let e = format!("{:#}", Config::load(Some(&missing), env(&[])).unwrap_err());
        assert!(e.contains("missing.toml"), "{e}");
        // Variables of other tools under the prefix are ignored.
        assert!(Config::load(None, env(&[("AURORAQ_TEST_NATS_URL", "x")])).is_ok());
    }

    #[test]
    fn unknown_variables_under_the_prefix_are_refused() {
        // An unknown key of a known section, and a section that does not exist: both refused.
        for k in [
            "AURORAQ_BUS_UNKNOWN",
            "AURORAQ_UNKNOWN_X",
            "AURORAQ_POSTGRESS_URL",
            "AURORAQ_NOSECTION",
        ] {
            let e = format!("{:#}", Config::load(None, env(&[(k, "1")])).unwrap_err());
            assert!(e.contains(k), "{k}: {e}");
        }
        let e = format!(
            "{:#}",
            Config::load(None, env(&[("AURORAQ_UNKNOWN_X", "1")])).unwrap_err()
        );
        assert!(
            e.contains("postgres") && e.contains("bus"),
            "names the sections: {e}"
        );
        // Not settings: the file, the tests' servers, the ONNX Runtime download, and the
        // variables the configuration names for its secrets.
        let c = Config::load(
            None,
            env(&[
                ("AURORAQ_CONFIG", "x.toml"),
                ("AURORAQ_TEST_NATS_URL", "nats://x"),
                ("AURORAQ_ORT_VERSION", "1.2.3"),
                ("AURORAQ_JWT_SECRET", "s"),
                ("OTHER_TOOL_X", "1"),
            ]),
        );
        assert!(c.is_ok(), "{c:?}");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.toml");
        std::fs::write(&p, "[feedly]\ntoken_env = \"AURORAQ_MY_FEEDLY\"\n").unwrap();
        assert!(Config::load(Some(&p), env(&[("AURORAQ_MY_FEEDLY", "t")])).is_ok());
        assert!(Config::load(None, env(&[("AURORAQ_MY_FEEDLY", "t")])).is_err());
    }

    #[test]
    fn postgres_urls_are_checked_as_the_sink_checks_them_and_never_echoed() {
        for (url, why) in [
            ("host=h user=u password=TOPSECRET dbname=d", "key/value"),
            ("mysql://u:TOPSECRET@h/d", "not a postgres:// URL"),
            ("postgres://127.0.0.1/d?password=TOPSECRET", "names no user"),
            ("postgres://u:TOPSECRET@127.0.0.1", "names no database"),
        ] {
            let e = format!(
                "{:#}",
                Config::load(None, env(&[("AURORAQ_POSTGRES_URL", url)])).unwrap_err()
            );
            assert!(e.contains("postgres.url") && e.contains(why), "{url}: {e}");
            assert!(!e.contains("TOPSECRET"), "{url}: {e}");
        }
        let e = format!(
            "{:#}",
            Config::load(None, env(&[("AURORAQ_REDIS_URL", "http://:TOPSECRET@h")])).unwrap_err()
        );
        assert!(e.contains("redis.url") && !e.contains("TOPSECRET"), "{e}");
        let c = Config::load(
            None,
            env(&[
                ("AURORAQ_POSTGRES_URL", "postgresql://u:pw@127.0.0.1:5432/d"),
                ("AURORAQ_POSTGRES_MAX_PAST_DAYS", "30"),
                ("AURORAQ_POSTGRES_MAX_FUTURE_DAYS", "0"),
            ]),
        )
        .unwrap();
        assert_eq!((c.postgres.max_past_days, c.postgres.max_future_days), (30, 0));
        let d = Config::load(None, env(&[])).unwrap();
        assert_eq!(d.postgres.max_past_days, 7305);
        assert_eq!(d.postgres.max_future_days, 731);
    }

    #[test]
    fn connector_sections_file_then_env() {
        use auroraq_binance::{Interval, StreamKind};
        let d = Config::load(None, env(&[])).unwrap();
        assert_eq!(d.binance, auroraq_binance::BinanceSettings::default());
        assert_eq!(d.feedly, auroraq_feedly::FeedlySettings::default());

        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.toml");
        std::fs::write(
            &p,
            "[binance]\nexchange = \"binance_us\"\nstreams = [\"aggTrade\", \"kline_5m\"]\n\
             [feedly]\nstream_id = \"feed/x\"\ncount = 50\n",
        )
        .unwrap();
        let c = Config::load(
            Some(&p),
            env(&[
                ("AURORAQ_BINANCE_WS_URL", "ws://127.0.0.1:9"),
                ("AURORAQ_BINANCE_SYMBOLS", "solusdt,adausdt"),
                ("AURORAQ_FEEDLY_TOKEN", "s3cr3t"),
                ("AURORAQ_FEEDLY_LOOKBACK_HOURS", "0"),
            ]),
        )
        .unwrap();
        assert_eq!(c.binance.exchange, "binance_us");
        assert_eq!(c.binance.ws_url, "ws://127.0.0.1:9");
        assert_eq!(c.binance.rest_url, auroraq_binance::DEFAULT_REST_BASE);
        assert_eq!(c.binance.symbols, vec!["solusdt", "adausdt"]);
        assert_eq!(
            c.binance.streams,
            vec![
                StreamKind::AggTrade,
                StreamKind::Kline(Interval::parse("5m").unwrap())
            ]
        );
        assert_eq!(c.feedly.stream_id, "feed/x");
        assert_eq!(c.feedly.count, 50);
        assert_eq!(c.feedly.token.expose(), "s3cr3t");
        assert_eq!(c.feedly.lookback_hours, 0);
        assert!(!format!("{c:?}").contains("s3cr3t"), "the token is redacted");
        let live = c.binance.live_config().unwrap();
        assert_eq!(live.symbols, vec!["SOLUSDT", "ADAUSDT"]);
        assert_eq!(c.feedly.connector_config().lookback, None);

        // Streams from the environment are typed too; an unknown one is named.
        let c = Config::load(None, env(&[("AURORAQ_BINANCE_STREAMS", "trade, depth")])).unwrap();
        assert_eq!(c.binance.streams, vec![StreamKind::Trade, StreamKind::Depth]);
        let e = format!(
            "{:#}",
            Config::load(None, env(&[("AURORAQ_BINANCE_STREAMS", "trade,depth20")])).unwrap_err()
        );
        assert!(e.contains("depth20"), "{e}");
        let e = format!(
            "{:#}",
            Config::load(None, env(&[("AURORAQ_FEEDLY_TOKN", "x")])).unwrap_err()
        );
        assert!(e.contains("AURORAQ_FEEDLY_TOKN") && e.contains("tokn"), "{e}");

        // What `auroraq run` writes for its role processes reads back the same.
        let text = toml::to_string(&c).unwrap();
        assert!(text.contains("streams = [\"trade\", \"depth\"]"), "{text}");
        let back = dir.path().join("run-config.toml");
        std::fs::write(&back, text).unwrap();
        let r = Config::load(Some(&back), env(&[])).unwrap();
        assert_eq!((r.binance, r.feedly), (c.binance, c.feedly));
    }

    #[test]
    fn execution_section_takes_the_live_switch_and_names_the_key_variables() {
        use auroraq_execution::Venue;
        let d = Config::load(None, env(&[])).unwrap();
        assert!(!d.execution.enable_live_trading);
        assert_eq!(d.execution.venue(None), Venue::Paper);
        assert_eq!(
            d.execution.binance_testnet_url,
            auroraq_execution::TESTNET_BASE_URL
        );
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.toml");
        std::fs::write(
            &p,
            "[execution]\nenable_live_trading = true\nbinance_testnet_url = \"http://127.0.0.1:9\"\n",
        )
        .unwrap();
        let c = Config::load(Some(&p), env(&[])).unwrap();
        assert!(c.execution.enable_live_trading);
        assert_eq!(
            c.execution.venue(None),
            Venue::BinanceTestnet,
            "the default live venue"
        );
        assert_eq!(c.execution.venue(Some(Venue::Binance)), Venue::Binance);
        let c = Config::load(
            None,
            env(&[
                ("AURORAQ_EXECUTION_ENABLE_LIVE_TRADING", "true"),
                ("AURORAQ_EXECUTION_BINANCE_URL", "http://127.0.0.1:8"),
                ("BINANCE_API_KEY", "k"),
            ]),
        )
        .unwrap();
        assert!(c.execution.enable_live_trading);
        assert_eq!(c.execution.binance_url, "http://127.0.0.1:8");
        let e = format!(
            "{:#}",
            Config::load(None, env(&[("AURORAQ_EXECUTION_BINANCE_URL", "ftp://x")])).unwrap_err()
        );
        assert!(e.contains("binance_url"), "{e}");
        // Key variables under the prefix: allowed when the configuration names them, even under
        // a section's name; refused, saying why, when it does not.
        std::fs::write(
            &p,
            "[execution]\napi_key_env = \"AURORAQ_BINANCE_API_KEY\"\napi_secret_env = \"AURORAQ_BINANCE_API_SECRET\"\n",
        )
        .unwrap();
        let named = env(&[
            ("AURORAQ_BINANCE_API_KEY", "KEY-abc123"),
            ("AURORAQ_BINANCE_API_SECRET", "SECRET-xyz789"),
        ]);
        let c = Config::load(Some(&p), named.clone()).unwrap();
        assert_eq!(c.execution.api_key_env, "AURORAQ_BINANCE_API_KEY");
        let e = format!("{:#}", Config::load(None, named).unwrap_err());
        assert!(
            e.contains("AURORAQ_BINANCE_API_KEY") && e.contains("[binance] has no setting"),
            "{e}"
        );
        assert!(!e.contains("KEY-abc123") && !e.contains("SECRET-xyz789"), "{e}");
        // A key of the section itself is still refused when unknown.
        let e = format!(
            "{:#}",
            Config::load(None, env(&[("AURORAQ_EXECUTION_ENABLE_LIVE", "true")])).unwrap_err()
        );
        assert!(e.contains("enable_live"), "{e}");
    }
}
