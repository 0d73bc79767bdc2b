//! `auroraq`: runs AuroraQ's roles on a bus, each alone or all in one process.

mod bench;
mod config;
mod doctor;
mod roles;
mod run;
#[cfg(feature = "sentiment")]
mod sentiment;
mod wiring;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Result};
use auroraq_replay::{BarsOptions, Pace};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::Config;
use crate::wiring::{connect_bus, stop_on_signals};

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
    /// Fusion role (coming with the fusion issue).
    Fuse,
    /// Risk role (coming with the risk issue).
    Risk,
    /// Execution role (coming with the execution issue).
    Execute,
    /// Trading agent role (coming with the agents issue).
    Agent,
    /// HTTP API role (coming with the API issue).
    Api,
}

#[derive(Args, Debug)]
struct ModelArgs {
    /// Model folder with model.onnx, tokenizer.json, config.json (default: sentiment.model_dir).
    #[arg(long)]
    model: Option<PathBuf>,
    /// cpu or cuda (default: sentiment.device); cuda falls back to the CPU with a warning.
    #[arg(long)]
    device: Option<String>,
}

#[derive(Args, Debug)]
struct ScoreArgs {
    #[command(flatten)]
    model: ModelArgs,
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
}

#[derive(Subcommand, Debug)]
enum Connect {
    /// Replay recorded files onto the bus.
    Replay(ReplayArgs),
    /// Binance market data (coming with the connectors issue).
    Binance,
    /// Feedly news (coming with the connectors issue).
    Feedly,
}

#[derive(Args, Debug)]
struct ReplayArgs {
    /// Files to replay.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Recorded format.
    #[arg(long, value_enum, default_value = "bars")]
    format: ReplayFormat,
    /// Exchange or vendor the data is from.
    #[arg(long, default_value = "csv")]
    exchange: String,
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
    /// CSV OHLCV bars.
    Bars,
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
    /// TimescaleDB/PostgreSQL tables (coming with the sinks issue).
    Postgres,
    /// Redis live state (coming with the sinks issue).
    Redis,
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
struct DoctorArgs {
    /// Print the checks as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum Bench {
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
        /// Publish batch size.
        #[arg(long, default_value_t = 256)]
        batch: usize,
        /// Rounds per path; the median is reported.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
    },
}

fn init_logging(format: LogFormat, verbose: u8) {
    use tracing_subscriber::EnvFilter;
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
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn not_yet(role: &str, issue: &str) -> Result<ExitCode> {
    bail!(
        "the {role} role is not in this build yet (it arrives with the {issue} work); \
         available now: run, connect replay, sink jsonl, tap, score, sentiment, doctor, topics, bench bus"
    )
}

fn pace(speed: f64) -> Result<Pace> {
    if !speed.is_finite() || speed < 0.0 {
        bail!("--speed must be 0 (as fast as possible) or a positive factor, not {speed}");
    }
    Ok(if speed == 0.0 {
        Pace::Max
    } else {
        Pace::Speed(speed)
    })
}

async fn real_main(cli: Cli) -> Result<ExitCode> {
    let mut cfg = Config::load(cli.config.as_deref(), std::env::vars())?;
    if let Some(bus) = cli.bus {
        cfg.bus.url = bus;
        cfg.validate()?;
    }
    match cli.command {
        Command::Run(a) => {
            if !a.bars.is_empty() {
                cfg.run.bars = a.bars;
            }
            if let Some(out) = a.out {
                cfg.run.out_dir = out;
            }
            let stop = stop_on_signals();
            let summary = run::run(&cfg, pace(a.speed)?, stop).await?;
            println!("{}", serde_json::to_string(&summary)?);
        }
        Command::Connect(Connect::Replay(a)) => {
            let ReplayFormat::Bars = a.format;
            let opts = BarsOptions {
                exchange: a.exchange,
                symbol: a.symbol,
                interval: a.interval,
            };
            let bus = connect_bus(&cfg.bus).await?;
            let stop = stop_on_signals();
            let stats = roles::connect_replay(bus.clone(), &a.files, &opts, pace(a.speed)?, stop).await?;
            bus.close().await;
            println!("{}", serde_json::to_string(&stats)?);
        }
        Command::Connect(Connect::Binance) => return not_yet("connect binance", "connectors"),
        Command::Connect(Connect::Feedly) => return not_yet("connect feedly", "connectors"),
        Command::Sink(Sink::Jsonl { out, filter }) => {
            let bus = connect_bus(&cfg.bus).await?;
            let stop = stop_on_signals();
            let stats = roles::sink_jsonl(&cfg, bus, &out, &filter, stop).await?;
            println!("{}", serde_json::to_string(&stats)?);
        }
        Command::Sink(Sink::Postgres) => return not_yet("sink postgres", "sinks"),
        Command::Sink(Sink::Redis) => return not_yet("sink redis", "sinks"),
        Command::Tap(a) => {
            let bus = connect_bus(&cfg.bus).await?;
            let stop = stop_on_signals();
            roles::tap(bus, &a.filter, a.count, stop).await?;
        }
        Command::Doctor(a) => {
            let checks = doctor::run(&cfg).await;
            let ok = if a.json {
                println!("{}", serde_json::to_string_pretty(&checks)?);
                checks
                    .iter()
                    .all(|c| !c.required || c.status == doctor::Status::Ok)
            } else {
                doctor::print(&checks)
            };
            return Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) });
        }
        Command::Topics => {
            for (pattern, events) in auroraq_bus::topics::TABLE {
                println!("{pattern:<40} {events}");
            }
        }
        Command::Bench(Bench::Bus {
            events,
            nats_events,
            nats,
            batch,
            rounds,
        }) => {
            let r = bench::bus(events, nats_events, nats.as_deref(), batch.max(1), rounds).await?;
            for f in &r.figures {
                eprintln!(
                    "{:<36} {:>10} events {:>8.3} s {:>12.0} events/s",
                    f.path, f.events, f.seconds, f.events_per_s
                );
            }
            println!("{}", serde_json::to_string(&r)?);
        }
        #[cfg(feature = "sentiment")]
        Command::Score(a) => {
            let stop = stop_on_signals();
            let stats = sentiment::role(&cfg, a.model.model, a.model.device, stop).await?;
            println!("{}", serde_json::to_string(&stats)?);
        }
        #[cfg(feature = "sentiment")]
        Command::Sentiment(SentimentCmd::Score { model, texts }) => {
            let c = sentiment::load(&cfg, model.model.as_deref(), model.device.as_deref())?;
            for line in sentiment::score_texts(&c, &texts)? {
                println!("{line}");
            }
        }
        #[cfg(feature = "sentiment")]
        Command::Sentiment(SentimentCmd::Eval { model, data }) => {
            let c = sentiment::load(&cfg, model.model.as_deref(), model.device.as_deref())?;
            let r = sentiment::eval(&c, &data, &sentiment::batching(&cfg))?;
            sentiment::print_report(&r);
            println!("{}", serde_json::to_string(&r)?);
        }
        #[cfg(feature = "sentiment")]
        Command::Sentiment(SentimentCmd::Bench {
            model,
            data,
            n,
            batch_sizes,
            python,
            hf_dir,
        }) => {
            let r = sentiment::bench(
                &cfg,
                model.model.as_deref(),
                &data,
                n,
                &batch_sizes,
                python.as_deref(),
                Some(&hf_dir),
            )
            .await?;
            for f in &r.figures {
                eprintln!(
                    "{:<40} {:>9.1} seq/s  p50 {:>7.2} ms  p99 {:>7.2} ms",
                    f.path, f.sequences_per_s, f.p50_ms, f.p99_ms
                );
            }
            println!("{}", serde_json::to_string(&r)?);
        }
        #[cfg(not(feature = "sentiment"))]
        Command::Score(_) | Command::Sentiment(_) => {
            return not_yet("sentiment", "`sentiment` cargo feature")
        }
        Command::Fuse => return not_yet("fuse", "fusion"),
        Command::Risk => return not_yet("risk", "risk and execution"),
        Command::Execute => return not_yet("execute", "risk and execution"),
        Command::Agent => return not_yet("agent", "agents"),
        Command::Api => return not_yet("api", "API"),
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format, cli.verbose);
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(real_main(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
