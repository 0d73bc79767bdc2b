//! `auroraq`: parses arguments and dispatches into `auroraq-runtime`, where every job and role
//! lives. Nothing here but the command line, logging set-up and printing of results.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use auroraq_runtime::replay::{BarsOptions, Format, LoadOptions};
use auroraq_runtime::wiring::{connect_bus, pace, stop_on_signals};
use auroraq_runtime::{backtest, bench, bench_decode, doctor, roles, run, CancellationToken, Config};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;

/// Events are many small allocations (ids, symbols, payload copies, delivery records): mimalloc
/// serves them faster than the system allocator (`BENCHMARKS.md`, "Allocator"). Built with its
/// `override`, it also serves the C libraries' `malloc` (librdkafka allocates per record).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "auroraq",
    version,
    about = "AuroraQ: an event-driven pipeline for AI-assisted trading on market data and news"
)]
struct Cli {
    /// Configuration file (TOML). Default: ./auroraq.toml when present. AURORAQ_<SECTION>_<KEY> variables override it.
    #[arg(long, global = true, env = "AURORAQ_CONFIG")]
    config: Option<PathBuf>,
    /// Bus to use: `inproc` or `nats://host:port` (overrides bus.url).
    #[arg(long, global = true)]
    bus: Option<String>,
    /// Serve Prometheus /metrics, /health and /ready on this address, e.g. 0.0.0.0:9464 (overrides
    /// metrics.listen).
    #[arg(long, global = true, env = "AURORAQ_METRICS_LISTEN")]
    metrics_listen: Option<String>,
    /// Log format on stderr; `auto` is human on a terminal and JSON otherwise.
    #[arg(long, global = true, value_enum, default_value = "auto")]
    log_format: LogFormat,
    /// More logging (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Auto,
    Human,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run every role in one process (in-process bus unless --bus says otherwise) over the bundled data.
    Run(RunArgs),
    /// Replay recorded files (market data captures, bars, news) onto the bus; --stats prints counts.
    Replay(ReplayArgs),
    /// Backtest: recorded files (or the bundled data) through sentiment, fusion, agents, risk and
    /// execution on event time; report with plot, JSON summary (fingerprint, trades, return...) last.
    Backtest(BacktestArgs),
    /// Fetch history onto the bus (resumable).
    #[command(subcommand)]
    Backfill(Backfill),
    /// Run a connector: publish market data or news onto the bus.
    #[command(subcommand)]
    Connect(Connect),
    /// Run a sink: write events from the bus somewhere durable.
    #[command(subcommand)]
    Sink(Sink),
    /// Print events from the bus as JSON lines.
    Tap(TapArgs),
    /// Check every configured dependency and print what is reachable.
    Doctor(DoctorArgs),
    /// Consumer lag: per group and partition, messages not yet delivered and delivered but not
    /// yet acked (NATS consumer info; a table, or --json).
    Lag(LagArgs),
    /// Print the topic naming convention.
    Topics,
    /// Measure throughput.
    #[command(subcommand)]
    Bench(Bench),
    /// Sentiment worker role: score articles from news.articles.* onto sentiment.scores.
    Score(ScoreArgs),
    /// Sentiment model tools: score texts, evaluate, benchmark.
    #[command(subcommand)]
    Sentiment(SentimentCmd),
    /// Fusion role: sentiment.scores + articles + market ticks -> sentiment.fused.<asset> ([fusion]).
    Fuse,
    /// Risk role: agents.intents -> risk.decisions, alerts ([risk]).
    Risk,
    /// Execution role: risk.decisions -> exec.orders, exec.fills (and exec.portfolio on paper)
    /// ([execution]). Live venues need [execution] enable_live_trading and the keys in the
    /// environment (BINANCE_API_KEY, BINANCE_API_SECRET by default).
    Execute(ExecuteArgs),
    /// Trading agent role: fused signals + prices -> agents.intents ([agents.<name>]).
    Agent {
        /// Which configured agent: auroraq (crypto) or macroq (stocks).
        #[arg(long, default_value = "auroraq")]
        name: String,
        /// An ONNX policy instead of the seed's rule (observation [1, 8] -> logits [hold, buy, sell]).
        #[arg(long)]
        policy: Option<PathBuf>,
    },
    /// API role: REST under /api/v1, WebSockets, gRPC SentimentService, the status page at /,
    /// /health, /ready, /metrics ([api]).
    Api(ApiArgs),
}

#[derive(Args, Debug, Default)]
struct ExecuteArgs {
    /// Where orders go: paper (simulated fills), binance-testnet (real orders, test funds) or
    /// binance (real funds). Default: binance-testnet when [execution] enable_live_trading is
    /// true, else paper.
    #[arg(long, value_enum)]
    venue: Option<VenueArg>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum VenueArg {
    Paper,
    BinanceTestnet,
    Binance,
}

impl From<VenueArg> for roles::Venue {
    fn from(v: VenueArg) -> Self {
        use roles::Venue;
        match v {
            VenueArg::Paper => Venue::Paper,
            VenueArg::BinanceTestnet => Venue::BinanceTestnet,
            VenueArg::Binance => Venue::Binance,
        }
    }
}

#[derive(Args, Debug, Default)]
struct ApiArgs {
    /// REST, WebSockets and the page: host:port (default: api.listen, 127.0.0.1:8001).
    #[arg(long)]
    listen: Option<String>,
    /// gRPC SentimentService: host:port, e.g. 127.0.0.1:50051 (default: api.grpc_listen, none).
    #[arg(long)]
    grpc_listen: Option<String>,
    /// Serve without authentication (local use only; logs a warning).
    #[arg(long)]
    insecure_no_auth: bool,
    /// Model folder (default: sentiment.model_dir).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Serve without a model (the sentiment endpoints answer 503).
    #[arg(long)]
    no_model: bool,
}

#[derive(Args, Debug)]
struct ModelArgs {
    /// Model folder with model.onnx, tokenizer.json, config.json (default: sentiment.model_dir).
    #[arg(long)]
    model: Option<PathBuf>,
    /// cpu or cuda (default: sentiment.device); cuda falls back to the CPU with a warning.
    #[arg(long, value_enum)]
    device: Option<DeviceArg>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum DeviceArg {
    Cpu,
    Cuda,
}

impl From<DeviceArg> for auroraq_runtime::config::Device {
    fn from(d: DeviceArg) -> Self {
        match d {
            DeviceArg::Cpu => auroraq_runtime::config::Device::Cpu,
            DeviceArg::Cuda => auroraq_runtime::config::Device::Cuda,
        }
    }
}

#[derive(Args, Debug)]
struct ScoreArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// This worker's place in the `sentiment` group's static split: it takes the partitions p
    /// with p % members == member (Kafka scaling; on NATS, workers left at 0 of 1 share them all).
    #[arg(long, default_value_t = 0)]
    member: u32,
    /// Workers in the static split (see --member).
    #[arg(long, default_value_t = 1)]
    members: u32,
}

#[derive(Subcommand, Debug)]
enum SentimentCmd {
    /// Score texts: one JSON object per text.
    Score {
        #[command(flatten)]
        model: ModelArgs,
        /// Texts to score.
        #[arg(required = true)]
        texts: Vec<String>,
    },
    /// Accuracy, macro-F1, per-class figures and the confusion matrix on a CSV with columns label,sentence.
    Eval {
        #[command(flatten)]
        model: ModelArgs,
        /// Labelled sentences.
        #[arg(long, default_value = "data/fpb/validation.csv")]
        data: PathBuf,
    },
    /// Sequences/s and latency of the Rust paths beside Python onnxruntime and a transformers pipeline.
    Bench {
        #[command(flatten)]
        model: ModelArgs,
        /// Sentences (CSV with a sentence column).
        #[arg(long, default_value = "data/fpb/validation.csv")]
        data: PathBuf,
        /// How many sentences.
        #[arg(long, default_value_t = 512)]
        n: usize,
        /// Batch sizes to try.
        #[arg(long, value_delimiter = ',', default_value = "8,16,32,64")]
        batch_sizes: Vec<usize>,
        /// Python with onnxruntime (and transformers + torch for the pipeline baseline); none: Rust only.
        #[arg(long)]
        python: Option<String>,
        /// Fine-tuned Hugging Face weights for the pipeline baseline.
        #[arg(long, default_value = ".auroraq/models/auroraq-minilm-fpb-hf")]
        hf_dir: PathBuf,
    },
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Bar files to replay (default: run.bars, the bundled data).
    #[arg(long = "bars")]
    bars: Vec<PathBuf>,
    /// Replay speed against event time (e.g. 3600 = an hour a second); 0: as fast as possible.
    #[arg(long, default_value_t = 0.0)]
    speed: f64,
    /// Output folder (default: run.out_dir).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Also write the results to this sink (postgres://... or redis://...); needs --bus nats://...
    /// (the job then runs as separate processes, one per role). Repeatable.
    #[arg(long = "sink")]
    sinks: Vec<String>,
    /// Serve the API on host:port during the job and after it until Ctrl-C (embedded only;
    /// credentials from [api] / AURORAQ_API_KEYS, or --insecure-no-auth).
    #[arg(long)]
    api: Option<String>,
    /// With --api: serve without authentication (local use only).
    #[arg(long, requires = "api")]
    insecure_no_auth: bool,
}

#[derive(Subcommand, Debug)]
enum Connect {
    /// Replay recorded files onto the bus (the same as `auroraq replay`).
    Replay(ReplayArgs),
    /// Binance market data over WebSocket combined streams (endpoints in [binance]).
    Binance {
        /// Symbols, e.g. btcusdt,ethusdt (default: binance.symbols).
        #[arg(long)]
        symbols: Option<String>,
        /// Streams: trade, aggTrade, kline_<interval>, bookTicker, depth (default: binance.streams).
        #[arg(long)]
        streams: Option<String>,
    },
    /// Feedly news: polls a stream's /v3/streams/contents onto news.articles.feedly.
    Feedly {
        /// Stream id (default: feedly.stream_id), e.g. user/<id>/category/global.all.
        #[arg(long)]
        stream: Option<String>,
        /// One poll (every page), then exit.
        #[arg(long)]
        once: bool,
    },
}

#[derive(Args, Debug)]
struct BacktestArgs {
    /// Recorded files (formats as `replay`); none: the bundled data of the main job.
    files: Vec<PathBuf>,
    /// Recorded format; detected from each file when unset.
    #[arg(long, value_enum)]
    format: Option<ReplayFormat>,
    /// Agents to run (names in [agents]).
    #[arg(long, value_delimiter = ',', default_value = "auroraq")]
    agents: Vec<String>,
    /// An ONNX policy for the agents instead of the seed's rule.
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Report folder.
    #[arg(long, default_value = "out/backtest")]
    out: PathBuf,
    /// Exchange of bar files.
    #[arg(long, default_value = "csv")]
    exchange: String,
    /// Symbol of bar files without a symbol column.
    #[arg(long)]
    symbol: Option<String>,
    /// Send the input through the configured bus (--bus) and back before the backtest: what a bus
    /// consumer sees; the fingerprint is the same on every bus.
    #[arg(long)]
    via_bus: bool,
    /// Read the input from what the configured bus kept (NATS JetStream: --bus nats://...): market
    /// data, news and recorded scores, each event once, instead of files.
    #[arg(long, conflicts_with_all = ["files", "via_bus"])]
    from_bus: bool,
    /// With --from-bus: the first message stored at or after this time (RFC 3339, `2026-11-26 09:00`,
    /// or epoch seconds); default: the oldest the bus kept. Bus time: when it was published.
    #[arg(long, requires = "from_bus")]
    since: Option<String>,
    /// With --from-bus: the last message stored at or before this time; default: the end of the
    /// stream when the backtest starts.
    #[arg(long, requires = "from_bus")]
    until: Option<String>,
}

#[derive(Subcommand, Debug)]
enum Backfill {
    /// Binance klines over a time range via REST, paginated, with a progress bar.
    Binance(BackfillArgs),
}

/// Arguments of `auroraq backfill binance`.
#[derive(Args, Debug)]
struct BackfillArgs {
    /// Symbol, e.g. BTCUSDT.
    #[arg(long)]
    symbol: String,
    /// Kline interval: 1s, 1m, 3m, 5m, 15m, 30m, 1h, 2h, 4h, 6h, 8h, 12h, 1d, 3d, 1w, 1M.
    #[arg(long, default_value = "1m")]
    interval: String,
    /// Start (inclusive): 2024-01-01, RFC 3339, or epoch seconds/milliseconds.
    #[arg(long)]
    from: String,
    /// End (exclusive).
    #[arg(long)]
    to: String,
    /// Checkpoint file (default under .auroraq/backfill/); a rerun resumes from it.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
}

impl From<BackfillArgs> for roles::BackfillArgs {
    fn from(a: BackfillArgs) -> Self {
        roles::BackfillArgs {
            symbol: a.symbol,
            interval: a.interval,
            from: a.from,
            to: a.to,
            checkpoint: a.checkpoint,
        }
    }
}

#[derive(Args, Debug)]
struct ReplayArgs {
    /// Files to replay (a cryptofeed `.ws.` capture finds its `.http.` snapshots beside it).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Recorded format; detected from each file when unset.
    #[arg(long, value_enum)]
    format: Option<ReplayFormat>,
    /// Print counts by event type as a JSON object, the last line of output.
    #[arg(long)]
    stats: bool,
    /// Exchange or vendor of bar files.
    #[arg(long, default_value = "csv")]
    exchange: String,
    /// barter recordings: the instruments, in the recording's index order.
    #[arg(long, value_delimiter = ',', default_value = "BTCUSDT,ETHUSDT,SOLUSDT")]
    instruments: Vec<String>,
    /// News JSONL: the source name (topic news.articles.<source>).
    #[arg(long, default_value = "reuters")]
    news_source: String,
    /// Symbol, for files without a symbol column.
    #[arg(long)]
    symbol: Option<String>,
    /// Bar length, e.g. 1h; inferred when unset.
    #[arg(long)]
    interval: Option<String>,
    /// Replay speed against event time; 0: as fast as possible.
    #[arg(long, default_value_t = 0.0)]
    speed: f64,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ReplayFormat {
    /// CSV OHLCV bars (.csv, .csv.gz).
    Bars,
    /// cryptofeed Binance capture (<EXCHANGE>.ws.N.M and its .http. snapshots).
    Cryptofeed,
    /// barter-data's normalised Binance JSON / JSONL.
    Barter,
    /// Feedly /v3/streams/contents responses.
    Feedly,
    /// News JSON lines (id, published, title, body, ...), e.g. Reuters-21578.
    News,
    /// News headlines as CSV (published_utc, headline, source, url, categories; .csv, .csv.gz).
    NewsCsv,
}

impl From<ReplayFormat> for Format {
    fn from(f: ReplayFormat) -> Format {
        match f {
            ReplayFormat::Bars => Format::Bars,
            ReplayFormat::Cryptofeed => Format::Cryptofeed,
            ReplayFormat::Barter => Format::Barter,
            ReplayFormat::Feedly => Format::Feedly,
            ReplayFormat::News => Format::News,
            ReplayFormat::NewsCsv => Format::NewsCsv,
        }
    }
}

#[derive(Subcommand, Debug)]
enum Sink {
    /// Append every event to a JSON-lines file.
    Jsonl {
        /// Output file.
        #[arg(long)]
        out: PathBuf,
        /// Topic filter.
        #[arg(long, default_value = ">")]
        filter: String,
    },
    /// Every event into PostgreSQL/TimescaleDB tables (migrations first), acked once committed.
    Postgres {
        /// postgres://user@host/db (default: postgres.url).
        #[arg(long)]
        url: Option<String>,
    },
    /// Latest fused signal and price per asset, and the fused-signal stream, in Redis.
    Redis {
        /// redis://host:port (default: redis.url).
        #[arg(long)]
        url: Option<String>,
    },
}

#[derive(Args, Debug)]
struct TapArgs {
    /// Topic filter, e.g. 'market.>' or 'dlq.>'.
    #[arg(default_value = ">")]
    filter: String,
    /// Stop after this many events.
    #[arg(long)]
    count: Option<u64>,
}

#[derive(Args, Debug)]
struct LagArgs {
    /// Only this consumer group (e.g. sentiment).
    #[arg(long)]
    group: Option<String>,
    /// One JSON object per print instead of a table.
    #[arg(long)]
    json: bool,
    /// Print again every this many seconds until interrupted.
    #[arg(long, value_name = "SECS")]
    watch: Option<u64>,
}

#[derive(Args, Debug)]
struct DoctorArgs {
    /// Print the checks as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum Bench {
    /// POST /api/v1/sentiment/analyze requests/s and p50/p99 at several client counts, this API beside
    /// a baseline server (scripts/bench/api.sh starts the seed's FastAPI design and runs this).
    Api {
        #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
        clients: Vec<usize>,
        /// Seconds per point.
        #[arg(long, default_value_t = 20)]
        duration: u64,
        /// The baseline's analyze URL on loopback, e.g. http://127.0.0.1:18001/api/v1/sentiment/analyze.
        #[arg(long)]
        baseline: Option<String>,
        /// Rounds over every client count (this API's point and the baseline's side by side in each);
        /// the summary gives medians over rounds.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// PostgreSQL sink rows/s beside a bare tokio-postgres binary COPY loop of the same rows.
    Sink {
        /// postgres://user@host/db (default: postgres.url); the bench creates and drops its own database.
        #[arg(long)]
        url: Option<String>,
        #[arg(long, default_value_t = 200_000)]
        rows: usize,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// Backtest events/s through agents, risk and execution beside a plain loop (no inference).
    Backtest {
        /// One-minute bars (plus a fused signal every 500 bars).
        #[arg(long, default_value_t = 1_000_000)]
        events: usize,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// Fusion events/s on timely beside a plain per-asset loop over the same scores.
    Fusion {
        /// Stories (scores are about 1.1 per story; 20 market ticks per score).
        #[arg(long, default_value_t = 50_000)]
        scores: usize,
        /// Timely worker counts to measure.
        #[arg(long, value_delimiter = ',', default_value = "1,2")]
        workers: Vec<usize>,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// Binance frames decoded per second on one core, beside a serde_json::Value parse.
    Decode {
        /// A cryptofeed Binance capture whose depth frames are decoded.
        #[arg(long, default_value = "tests/data/binance/cryptofeed/BINANCE.ws.1.0")]
        capture: PathBuf,
        /// Frames per round and kind.
        #[arg(long, default_value_t = 1_000_000)]
        frames: usize,
        /// Rounds per path; the median is reported.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
    },
    /// Score workers scaled by consumer group: for each worker count, a fresh backlog of real
    /// headlines on a namespace of its own and that many `auroraq score` processes; articles/s
    /// from the first score to the last (--bus nats://... or kafka://...).
    Scale {
        /// Worker counts to measure.
        #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
        workers: Vec<usize>,
        /// Articles in each backlog.
        #[arg(long, default_value_t = 5_000)]
        articles: usize,
        /// Partitions of each namespace (12 splits evenly over 1, 2, 3, 4, 6 Kafka members).
        #[arg(long, default_value_t = 12)]
        partitions: u32,
        /// ONNX Runtime threads per worker (default: the cores divided by the workers, at least 1).
        #[arg(long)]
        threads: Option<u64>,
        /// Rounds over every worker count, interleaved; the median is reported.
        #[arg(long, default_value_t = 1)]
        rounds: usize,
    },
    /// Bus throughput, publish to ack, beside bare baselines.
    Bus {
        /// Events through the in-process paths.
        #[arg(long, default_value_t = 1_000_000)]
        events: usize,
        /// Events through the NATS paths.
        #[arg(long, default_value_t = 200_000)]
        nats_events: usize,
        /// Also measure NATS at this URL.
        #[arg(long)]
        nats: Option<String>,
        /// Also measure the Kafka bus at kafka://host:port beside bare rdkafka loops.
        #[arg(long)]
        kafka: Option<String>,
        /// Events through the Kafka paths.
        #[arg(long, default_value_t = 100_000)]
        kafka_events: usize,
        /// Publish batch size.
        #[arg(long, default_value_t = 256)]
        batch: usize,
        /// Rounds per path; the median is reported.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
    },
}

/// Logs to stderr and, with `[tracing] enabled`, spans to OTLP: the returned guard flushes them.
fn init_logging(
    format: LogFormat,
    verbose: u8,
    traces: &auroraq_runtime::telemetry::TracingConfig,
    role: &str,
) -> auroraq_runtime::telemetry::TraceGuard {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::{EnvFilter, Layer as _};
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Human => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = if json { fmt.json().boxed() } else { fmt.boxed() };
    let (otel, guard) = match auroraq_runtime::telemetry::tracing_layer(traces, role) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("warning: traces are not exported: {e:#}");
            (None, Default::default())
        }
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .init();
    guard
}

impl Command {
    /// The role name on metrics (the `role` label).
    fn role(&self) -> &'static str {
        match self {
            Command::Run(_) => "run",
            Command::Replay(_) | Command::Connect(Connect::Replay(_)) => "replay",
            Command::Connect(Connect::Binance { .. }) => "connect-binance",
            Command::Connect(Connect::Feedly { .. }) => "connect-feedly",
            Command::Backtest(_) => "backtest",
            Command::Backfill(_) => "backfill",
            Command::Sink(Sink::Jsonl { .. }) => "sink-jsonl",
            Command::Sink(Sink::Postgres { .. }) => "sink-postgres",
            Command::Sink(Sink::Redis { .. }) => "sink-redis",
            Command::Tap(_) => "tap",
            Command::Doctor(_) => "doctor",
            Command::Lag(_) => "lag",
            Command::Topics => "topics",
            Command::Bench(_) => "bench",
            Command::Score(_) => "score",
            Command::Sentiment(_) => "sentiment",
            Command::Fuse => "fuse",
            Command::Risk => "risk",
            Command::Execute(_) => "execute",
            Command::Agent { .. } => "agent",
            Command::Api(_) => "api",
        }
    }
}

#[cfg(any(not(feature = "api"), not(feature = "sentiment")))]
fn not_yet(role: &str, issue: &str) -> Result<ExitCode> {
    anyhow::bail!(
        "the {role} role is not in this build yet (it arrives with the {issue} work); \
         `auroraq --help` lists what is"
    )
}

/// The result as one JSON line on stdout (the last line of every command's output).
fn emit<T: Serialize>(result: &T) -> Result<()> {
    println!("{}", serde_json::to_string(result)?);
    Ok(())
}

fn replay_options(a: &ReplayArgs) -> LoadOptions {
    LoadOptions {
        bars: BarsOptions {
            exchange: a.exchange.clone(),
            symbol: a.symbol.clone(),
            interval: a.interval.clone(),
        },
        instruments: a.instruments.clone(),
        news_source: a.news_source.clone(),
        ..LoadOptions::default()
    }
}

fn backtest_job(a: BacktestArgs, progress: bool) -> backtest::Job {
    let source = if a.from_bus {
        backtest::Source::Bus {
            since: a.since,
            until: a.until,
        }
    } else if a.files.is_empty() {
        backtest::Source::Bundled
    } else {
        backtest::Source::Files {
            files: a.files,
            format: a.format.map(Format::from),
            exchange: a.exchange,
            symbol: a.symbol,
        }
    };
    backtest::Job {
        source,
        agents: a.agents,
        policy: a.policy,
        out: a.out,
        via_bus: a.via_bus,
        progress,
    }
}

#[cfg(feature = "api")]
fn api_options(a: ApiArgs) -> auroraq_runtime::api::ApiOptions {
    auroraq_runtime::api::ApiOptions {
        listen: a.listen,
        grpc_listen: a.grpc_listen,
        insecure_no_auth: a.insecure_no_auth,
        model: a.model,
        no_model: a.no_model,
    }
}

async fn real_main(cli: Cli) -> Result<ExitCode> {
    let mut cfg = Config::load(cli.config.as_deref(), std::env::vars())?;
    if let Some(bus) = cli.bus {
        cfg.set_bus_url(&bus)?;
    }
    if let Some(listen) = cli.metrics_listen {
        cfg.metrics.listen = listen;
        cfg.validate()?;
    }
    let progress = std::io::stderr().is_terminal();
    let _telemetry =
        auroraq_runtime::telemetry::start(&cfg.metrics, cli.command.role(), CancellationToken::new()).await?;
    match cli.command {
        Command::Run(a) => {
            cfg.run.apply(a.bars, a.out);
            if let Some(api) = a.api {
                cfg.serve_api_in_run(api, a.insecure_no_auth);
            }
            let summary = run::run(&cfg, pace(a.speed)?, &a.sinks, stop_on_signals(), progress).await?;
            emit(&summary)?;
        }
        Command::Connect(Connect::Replay(a)) | Command::Replay(a) => {
            let (opts, format) = (replay_options(&a), a.format.map(Format::from));
            let stats =
                roles::connect_replay(&cfg, format, &a.files, &opts, pace(a.speed)?, stop_on_signals())
                    .await?;
            if a.stats {
                emit(&stats)?;
            }
        }
        Command::Connect(Connect::Binance { symbols, streams }) => {
            let bus = connect_bus(&cfg.bus).await?;
            emit(&roles::connect_binance(&cfg, bus, symbols, streams, stop_on_signals()).await?)?;
        }
        Command::Connect(Connect::Feedly { stream, once }) => {
            let bus = connect_bus(&cfg.bus).await?;
            emit(&roles::connect_feedly(&cfg, bus, stream, once, stop_on_signals()).await?)?;
        }
        Command::Backtest(a) => {
            let summary = backtest::run_job(&cfg, backtest_job(a, progress)).await?;
            if let Some(r) = &summary.report {
                eprintln!("report: {}", r.display());
            }
            emit(&summary)?;
        }
        Command::Backfill(Backfill::Binance(a)) => {
            let bus = connect_bus(&cfg.bus).await?;
            emit(&roles::backfill_binance(&cfg, bus, a.into(), stop_on_signals()).await?)?;
        }
        Command::Sink(Sink::Jsonl { out, filter }) => {
            let bus = connect_bus(&cfg.bus).await?;
            emit(&roles::sink_jsonl(&cfg, bus, &out, &filter, stop_on_signals()).await?)?;
        }
        Command::Sink(Sink::Postgres { url }) => {
            let bus = connect_bus(&cfg.bus).await?;
            emit(&roles::sink_postgres(&cfg, bus, url, stop_on_signals()).await?)?;
        }
        Command::Sink(Sink::Redis { url }) => {
            let bus = connect_bus(&cfg.bus).await?;
            emit(&roles::sink_redis(&cfg, bus, url, stop_on_signals()).await?)?;
        }
        Command::Tap(a) => {
            let bus = connect_bus(&cfg.bus).await?;
            roles::tap(bus, &a.filter, a.count, stop_on_signals()).await?;
        }
        Command::Doctor(a) => {
            let checks = doctor::run(&cfg).await;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&checks)?);
            } else {
                doctor::print(&checks);
            }
            return Ok(if doctor::all_required_ok(&checks) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            });
        }
        Command::Lag(a) => {
            let bus = connect_bus(&cfg.bus).await?;
            let every = a.watch.map(|s| std::time::Duration::from_secs(s.max(1)));
            auroraq_runtime::lag::print(&*bus, a.group.as_deref(), a.json, every, stop_on_signals()).await?;
        }
        Command::Topics => roles::print_topics(),
        #[cfg(feature = "api")]
        Command::Bench(Bench::Api {
            clients,
            duration,
            baseline,
            rounds,
        }) => {
            let d = std::time::Duration::from_secs(duration.max(1));
            emit(&auroraq_runtime::bench_api::api(&cfg, &clients, d, baseline.as_deref(), rounds).await?)?;
        }
        #[cfg(not(feature = "api"))]
        Command::Bench(Bench::Api { .. }) => return not_yet("bench api", "`api` cargo feature"),
        Command::Bench(Bench::Sink { url, rows, rounds }) => {
            emit(&bench::sink(&cfg, url, rows, rounds).await?)?;
        }
        Command::Bench(Bench::Backtest { events, rounds }) => {
            let r = backtest::bench(&cfg, events.max(1000), rounds)?;
            r.print();
            emit(&r)?;
        }
        Command::Bench(Bench::Fusion {
            scores,
            workers,
            rounds,
        }) => {
            emit(&bench::fusion(&cfg, scores, workers, rounds)?)?;
        }
        Command::Bench(Bench::Decode {
            capture,
            frames,
            rounds,
        }) => {
            let r = bench_decode::run(&capture, frames.max(1), rounds)?;
            r.print();
            emit(&r)?;
        }
        Command::Bench(Bench::Bus {
            events,
            nats_events,
            nats,
            kafka,
            kafka_events,
            batch,
            rounds,
        }) => {
            let mut r = bench::bus(events, nats_events, nats.as_deref(), batch.max(1), rounds).await?;
            if let Some(url) = kafka.as_deref() {
                auroraq_runtime::bench_kafka::add_to(&mut r, url, kafka_events, batch.max(1), rounds).await?;
            }
            r.print();
            emit(&r)?;
        }
        Command::Bench(Bench::Scale {
            workers,
            articles,
            partitions,
            threads,
            rounds,
        }) => {
            let opts = auroraq_runtime::bench_scale::BenchOptions {
                workers,
                articles,
                partitions: partitions.max(1),
                threads,
                news: cfg.run.news.first().cloned().unwrap_or_default(),
                rounds,
            };
            let r = auroraq_runtime::bench_scale::bench(&cfg, &opts).await?;
            r.print();
            emit(&r)?;
        }
        #[cfg(feature = "sentiment")]
        Command::Score(a) => {
            use auroraq_runtime::sentiment;
            emit(
                &sentiment::role(
                    &cfg,
                    a.model.model,
                    a.model.device.map(Into::into),
                    (a.member, a.members),
                    stop_on_signals(),
                )
                .await?,
            )?;
        }
        #[cfg(feature = "sentiment")]
        Command::Sentiment(cmd) => return sentiment_command(&cfg, cmd).await,
        #[cfg(not(feature = "sentiment"))]
        Command::Score(_) | Command::Sentiment(_) => {
            return not_yet("sentiment", "`sentiment` cargo feature")
        }
        Command::Fuse => {
            let bus = connect_bus(&cfg.bus).await?;
            emit(&roles::fuse(&cfg, bus, stop_on_signals()).await?)?;
        }
        Command::Risk => emit(&roles::risk(&cfg, stop_on_signals()).await?)?,
        Command::Execute(a) => {
            emit(&roles::execute(&cfg, a.venue.map(Into::into), stop_on_signals()).await?)?;
        }
        Command::Agent { name, policy } => {
            emit(&roles::agent_role(&cfg, &name, policy.as_deref(), stop_on_signals()).await?)?;
        }
        #[cfg(feature = "api")]
        Command::Api(a) => auroraq_runtime::api::role(&cfg, &api_options(a), stop_on_signals()).await?,
        #[cfg(not(feature = "api"))]
        Command::Api(_) => return not_yet("api", "`api` cargo feature"),
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(feature = "sentiment")]
async fn sentiment_command(cfg: &Config, cmd: SentimentCmd) -> Result<ExitCode> {
    use auroraq_runtime::sentiment;
    match cmd {
        SentimentCmd::Score { model, texts } => {
            let c = sentiment::load(cfg, model.model.as_deref(), model.device.map(Into::into))?;
            for line in sentiment::score_texts(&c, &texts)? {
                println!("{line}");
            }
        }
        SentimentCmd::Eval { model, data } => {
            let c = sentiment::load(cfg, model.model.as_deref(), model.device.map(Into::into))?;
            let r = sentiment::eval(&c, &data, &sentiment::batching(cfg))?;
            sentiment::print_report(&r);
            emit(&r)?;
        }
        SentimentCmd::Bench {
            model,
            data,
            n,
            batch_sizes,
            python,
            hf_dir,
        } => {
            let r = sentiment::bench(
                cfg,
                model.model.as_deref(),
                &data,
                n,
                &batch_sizes,
                python.as_deref(),
                Some(&hf_dir),
            )
            .await?;
            r.print();
            emit(&r)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `[tracing]` is read here, before logging starts (real_main reads, and checks, the rest).
    let traces = Config::load(cli.config.as_deref(), std::env::vars())
        .map(|c| c.tracing)
        .unwrap_or_default();
    let traces_guard = init_logging(cli.log_format, cli.verbose, &traces, cli.command.role());
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let code = match rt.block_on(real_main(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    };
    drop(rt);
    // The spans still buffered go out before the process ends.
    traces_guard.shutdown();
    code
}
