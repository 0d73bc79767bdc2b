//! `auroraq backtest` and the report of the main job: recorded data through the same sentiment,
//! fusion, agent, risk and execution code as a live run, on event time.
//!
//! Three passes, each the live code on a simulated clock:
//! 1. articles → sentiment scores (the classifier; scored at the article's receive time);
//! 2. scores, articles and market data → fused signals (the fusion dataflow over the whole input,
//!    each signal stamped at its window's end plus the grace period, when a live run emits it);
//! 3. market data and fused signals → agents → risk → execution, in event-time order, a signal
//!    used only from its processing time on, orders filled only from later prices.
//!
//! The run's fingerprint is a SHA-256 over every event the three passes emitted, in order.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use auroraq_backtest::{
    available_at, report_with, ArticlePoint, Engine, Extras, Fingerprint, RunOutput, SignalPoint, Summary,
};
use auroraq_schemas::{AnyEvent, EventKind, Micros};
use auroraq_stage::Processor;
use tracing::{info, warn};

use crate::config::Config;

/// What a backtest runs.
pub struct Plan {
    /// Recorded events: market data, articles, and maybe scores already computed.
    pub inputs: Vec<AnyEvent>,
    /// Agents to run (names in `[agents]`), with their policies.
    pub agents: Vec<auroraq_agents::Agent>,
    /// Where the report goes; none: summary only.
    pub out: Option<PathBuf>,
    pub title: String,
    pub notes: String,
    pub progress: bool,
    /// The asset and symbol the report follows (price, fused sentiment, event study); none: the
    /// first bars' symbol.
    pub focus: Option<(String, String)>,
    /// Data files (their SHA-256 goes into the report) and settings shown in the report.
    pub files: Vec<PathBuf>,
    pub settings: Vec<(String, String)>,
}

/// Spreads articles evenly over `[from, to]`, keeping their order, and says so in each article's
/// keywords (`auroraq:retimed`). The bundled news and prices are real but decades apart; this
/// puts the news on the price timeline so that the pipeline has something to react to.
pub fn retime_articles(events: &mut [AnyEvent], from: Micros, to: Micros) {
    let mut idx: Vec<usize> = events
        .iter()
        .enumerate()
        .filter(|(_, e)| matches!(e, AnyEvent::Article(_)))
        .map(|(i, _)| i)
        .collect();
    idx.sort_by_key(|&i| (events[i].meta().ts_event, i));
    let n = idx.len() as i64;
    if n == 0 || to <= from {
        return;
    }
    let step = (to - from) / n;
    for (k, i) in idx.into_iter().enumerate() {
        if let AnyEvent::Article(a) = &mut events[i] {
            let t = from + step / 2 + step * k as i64;
            a.meta.ts_event = t;
            a.meta.ts_ingest = t;
            a.ts_crawled = Some(t);
            a.keywords.push("auroraq:retimed".into());
        }
    }
}

/// Scores the articles as the sentiment stage on the event-time engine would (each at its receive
/// time, in the engine's order: time, then event id), the model run on length-sorted batches
/// (`sentiment.max_batch_size`, `max_batch_tokens`). A progress bar with rate and ETA on a
/// terminal, a log line every 10 s otherwise.
#[cfg(feature = "sentiment")]
fn score_articles(cfg: &Config, articles: Vec<AnyEvent>, progress: bool) -> Result<RunOutput> {
    if articles.is_empty() {
        return Ok(RunOutput::default());
    }
    let classifier = crate::sentiment::load(cfg, None, None)?;
    let mut p = auroraq_sentiment::processor::ScoreProcessor::new(classifier, crate::sentiment::aliases(cfg));
    let mut order: Vec<usize> = (0..articles.len()).collect();
    order.sort_by(|&a, &b| {
        available_at(&articles[a])
            .cmp(&available_at(&articles[b]))
            .then_with(|| articles[a].meta().event_id.cmp(&articles[b].meta().event_id))
    });
    let items: Vec<(&auroraq_schemas::Article, Micros)> = order
        .iter()
        .filter_map(|&i| match &articles[i] {
            AnyEvent::Article(a) => Some((a, available_at(&articles[i]))),
            _ => None,
        })
        .collect();
    let total = items.len();
    let bar = crate::wiring::progress_bar(
        progress,
        total as u64,
        "scoring {wide_bar} {pos}/{len} articles {per_sec} eta {eta}",
    );
    let t0 = std::time::Instant::now();
    let mut last_log = t0;
    let results = p.score_many(
        &items,
        cfg.sentiment.max_batch_size as usize,
        cfg.sentiment.max_batch_tokens as usize,
        &mut |done| {
            bar.set_position(done as u64);
            if !progress && (last_log.elapsed().as_secs() >= 10 || done == total) {
                last_log = std::time::Instant::now();
                let rate = done as f64 / t0.elapsed().as_secs_f64().max(1e-9);
                info!(
                    done,
                    total,
                    per_s = rate.round(),
                    eta_s = ((total - done) as f64 / rate.max(1e-9)).round(),
                    "scoring articles"
                );
            }
        },
    );
    bar.finish_and_clear();
    let mut out = RunOutput {
        inputs: total as u64,
        ..Default::default()
    };
    let mut fp = Fingerprint::new();
    for r in results {
        match r {
            Ok(ev) => {
                fp.add(&ev)?;
                out.emitted += 1;
                out.kept.push(ev);
            }
            Err(auroraq_stage::HandlerError::Permanent(why)) => {
                out.refused += 1;
                tracing::warn!(%why, "an article could not be scored");
            }
            Err(e) => anyhow::bail!("scoring failed: {e}"),
        }
    }
    out.by_kind.insert(EventKind::SentimentScore, out.emitted);
    out.fingerprint = fp.hex();
    info!(
        scored = out.emitted,
        refused = out.refused,
        seconds = t0.elapsed().as_secs_f64(),
        per_s = (out.emitted as f64 / t0.elapsed().as_secs_f64().max(1e-9)).round(),
        "scored"
    );
    Ok(out)
}

#[cfg(not(feature = "sentiment"))]
fn score_articles(_: &Config, articles: Vec<AnyEvent>, _: bool) -> Result<RunOutput> {
    if articles.is_empty() {
        return Ok(RunOutput::default());
    }
    anyhow::bail!("the input has articles but this build has no sentiment model (cargo feature `sentiment`)")
}

/// Whether a backtest reads this kind as input: what connectors record, and sentiment scores (a
/// recorded score is used as it was, from its `ts_scored` on). What the later stages emitted
/// (fused signals, intents, decisions, orders, snapshots, alerts) the backtest computes itself.
pub fn is_recorded_input(ev: &AnyEvent) -> bool {
    matches!(
        ev,
        AnyEvent::TradeTick(_)
            | AnyEvent::Kline(_)
            | AnyEvent::BookTicker(_)
            | AnyEvent::BookUpdate(_)
            | AnyEvent::MarkPrice(_)
            | AnyEvent::Liquidation(_)
            | AnyEvent::Article(_)
            | AnyEvent::SentimentScore(_)
            | AnyEvent::FeedStatus(_)
    )
}

/// Runs a plan; returns the summary (and writes the report when `plan.out` is set).
pub fn run(cfg: &Config, plan: Plan) -> Result<Summary> {
    run_observed(cfg, plan, None)
}

/// [`run`], handing `observe` every event of the run in event-time order once it is done: the
/// market data, articles and their scores, the fused signals, and what agents, risk and execution
/// emitted (so that `run --api` can show the job in the API's live view). Events are copied only
/// when there is an observer.
pub fn run_observed(cfg: &Config, plan: Plan, observe: Option<&mut dyn FnMut(&AnyEvent)>) -> Result<Summary> {
    let before = plan.inputs.len();
    let inputs: Vec<AnyEvent> = plan.inputs.into_iter().filter(is_recorded_input).collect();
    if inputs.len() < before {
        info!(
            skipped = before - inputs.len(),
            "left out recorded events of later stages (fused signals, orders...): the backtest makes its own"
        );
    }
    let (articles, rest): (Vec<AnyEvent>, Vec<AnyEvent>) = inputs
        .into_iter()
        .partition(|e| matches!(e, AnyEvent::Article(_)));
    let n_inputs = (articles.len() + rest.len()) as u64;
    let mut fingerprint = Fingerprint::new();

    // 1. Sentiment, for the articles that have no recorded score.
    let recorded: std::collections::HashSet<&str> = rest
        .iter()
        .filter_map(|e| match e {
            AnyEvent::SentimentScore(s) => Some(s.meta.derived_from.iter().map(String::as_str)),
            _ => None,
        })
        .flatten()
        .collect();
    let unscored: Vec<AnyEvent> = articles
        .iter()
        .filter(|a| !recorded.contains(a.meta().event_id.as_str()))
        .cloned()
        .collect();
    info!(
        articles = articles.len(),
        to_score = unscored.len(),
        "scoring articles without a recorded score"
    );
    let scored = score_articles(cfg, unscored, plan.progress)?;
    fingerprint.add_fingerprint(&scored.fingerprint);

    // 2. Fusion, over everything it reads, in the order it could have had it.
    let mut fusion_in: Vec<AnyEvent> = rest
        .iter()
        .filter(|e| {
            matches!(
                e,
                AnyEvent::TradeTick(_)
                    | AnyEvent::BookTicker(_)
                    | AnyEvent::Kline(_)
                    | AnyEvent::SentimentScore(_)
            )
        })
        .cloned()
        .chain(articles.iter().cloned())
        .chain(scored.kept.iter().cloned())
        .collect();
    fusion_in.sort_by_key(available_at);
    let mut observed: Vec<AnyEvent> = if observe.is_some() {
        fusion_in.clone()
    } else {
        Vec::new()
    };
    info!(events = fusion_in.len(), "fusing");
    let fused = auroraq_fusion::fuse_batch(&cfg.fusion, fusion_in).context("fusion")?;
    if observe.is_some() {
        observed.extend(fused.signals.iter().cloned().map(AnyEvent::FusedSignal));
    }
    for s in &fused.signals {
        fingerprint.add(&AnyEvent::FusedSignal(s.clone()))?;
    }
    info!(signals = fused.signals.len(), late = fused.late.len(), "fused");
    if !fused.late.is_empty() {
        warn!(
            late = fused.late.len(),
            "scores came after their fusion windows had closed and were left out; scores recorded on a bus \
             by a `score` role on the wall clock carry today's time, not their articles': record them with \
             stages.clock = \"event\" (AURORAQ_STAGES_CLOCK=event)"
        );
    }

    let extras = extras(
        cfg,
        &plan.focus,
        &plan.files,
        &plan.settings,
        &rest,
        &articles,
        &scored.kept,
        &fused.signals,
    );

    // 3. Agents, risk, execution.
    let mut processors: Vec<Box<dyn Processor>> = Vec::new();
    for a in plan.agents {
        processors.push(Box::new(a));
    }
    processors.push(Box::new(auroraq_risk::RiskProcessor::new(cfg.risk.clone())?));
    processors.push(Box::new(auroraq_execution::ExecutionProcessor::new(
        cfg.execution.clone(),
    )?));
    let mut engine = Engine::new(processors).keep(&[
        EventKind::OrderUpdate,
        EventKind::PortfolioSnapshot,
        EventKind::RiskDecision,
        EventKind::OrderIntent,
        EventKind::Alert,
    ]);
    let mut inputs: Vec<AnyEvent> = rest;
    inputs.extend(fused.signals.into_iter().map(AnyEvent::FusedSignal));
    let bar = crate::wiring::progress_bar(
        plan.progress,
        inputs.len() as u64,
        "backtest {wide_bar} {pos}/{len} events {per_sec} eta {eta}",
    );
    let mut out = engine.run(inputs, &mut |done, _| bar.set_position(done))?;
    bar.finish_and_clear();
    if let Some(observe) = observe {
        observed.extend(out.kept.iter().cloned());
        observed.sort_by_key(|e| e.meta().ts_event);
        observed.iter().for_each(observe);
    }
    fingerprint.add_fingerprint(&out.fingerprint);
    out.fingerprint = fingerprint.hex();
    out.inputs = n_inputs;
    out.emitted += scored.emitted + fused.stats.signals;
    *out.by_kind.entry(EventKind::SentimentScore).or_insert(0) += scored.emitted;
    *out.by_kind.entry(EventKind::FusedSignal).or_insert(0) += fused.stats.signals;
    let summary = report_with(&out, &extras, &plan.title, &plan.notes, plan.out.as_deref())
        .with_context(|| format!("writing the report to {:?}", plan.out))?;
    Ok(summary)
}

/// SHA-256 of a file, hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    let mut f = std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    std::io::copy(&mut f, &mut h)?;
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// What the report shows beside the run's events: the focus symbol's prices, its asset's fused
/// signals, every scored article with its headline and publisher, the model and the data files.
#[allow(clippy::too_many_arguments)]
fn extras(
    cfg: &Config,
    focus: &Option<(String, String)>,
    files: &[PathBuf],
    settings: &[(String, String)],
    market: &[AnyEvent],
    articles: &[AnyEvent],
    scores: &[AnyEvent],
    signals: &[auroraq_schemas::FusedSignal],
) -> Extras {
    let (asset, symbol) = focus.clone().unwrap_or_else(|| {
        let symbol = market
            .iter()
            .find_map(|e| match e {
                AnyEvent::Kline(k) => Some(k.symbol.clone()),
                _ => None,
            })
            .unwrap_or_default();
        let asset = auroraq_fusion::SymbolMap::new(&cfg.fusion.symbols)
            .asset_of_symbol(&symbol)
            .unwrap_or_else(|| symbol.clone());
        (asset, symbol)
    });
    let prices = market
        .iter()
        .filter_map(|e| match e {
            AnyEvent::Kline(k) if k.symbol == symbol => k
                .close
                .0
                .to_string()
                .parse::<f64>()
                .ok()
                .map(|c| (k.close_time, c)),
            _ => None,
        })
        .collect::<std::collections::BTreeMap<_, _>>()
        .into_iter()
        .collect();
    let mut signals: Vec<SignalPoint> = signals
        .iter()
        .filter(|s| s.asset == asset)
        .map(|s| SignalPoint {
            at: available_at(&AnyEvent::FusedSignal(s.clone())),
            window_start: s.window_start,
            window_end: s.window_end,
            score: s.fused_score,
            confidence: s.confidence,
            scores_used: s.scores_used,
        })
        .collect();
    signals.sort_by_key(|s| (s.at, s.window_start));
    let by_id: std::collections::HashMap<&str, &auroraq_schemas::Article> = articles
        .iter()
        .filter_map(|e| match e {
            AnyEvent::Article(a) => Some((a.meta.event_id.as_str(), a)),
            _ => None,
        })
        .collect();
    let mut model = Vec::new();
    let mut points = Vec::new();
    let mut unlinked = 0;
    for e in scores {
        let AnyEvent::SentimentScore(s) = e else { continue };
        if model.is_empty() {
            model.push((format!("{} (model.onnx)", s.model_id), s.model_sha256.clone()));
            model.push((
                format!("{} (tokenizer.json)", s.model_id),
                s.tokenizer_sha256.clone(),
            ));
        }
        if s.assets.is_empty() {
            unlinked += 1;
        }
        let a = s.meta.derived_from.first().and_then(|id| by_id.get(id.as_str()));
        points.push(ArticlePoint {
            at: available_at(e),
            source: a
                .and_then(|a| a.origin.clone())
                .or_else(|| a.map(|a| a.feed.clone()))
                .unwrap_or_else(|| s.meta.source.clone()),
            headline: a
                .map(|a| {
                    a.title
                        .clone()
                        .unwrap_or_else(|| a.text.chars().take(160).collect())
                })
                .unwrap_or_else(|| s.article_id.clone()),
            score: s.sentiment_score,
            label: s.label.clone(),
            assets: s.assets.clone(),
        });
    }
    if unlinked > 0 {
        info!(
            unlinked,
            "articles named no configured asset: scored, counted, fused for no asset"
        );
    }
    let files = files
        .iter()
        .map(|f| {
            let h = sha256_file(f).unwrap_or_else(|e| format!("unreadable: {e:#}"));
            (f.display().to_string(), h)
        })
        .collect();
    Extras {
        symbol,
        asset,
        prices,
        signals,
        articles: points,
        unlinked,
        settings: settings.to_vec(),
        files,
        model,
    }
}

/// How much of the bars' time span the bundled news is spread over (its end).
pub const NEWS_SPAN_DAYS: i64 = 180;

const DAY: Micros = 86_400_000_000;

/// Days of bars the main job keeps after the last article's day (so that the last signals have
/// 24-hour forward returns in the event study).
pub const AFTER_NEWS_DAYS: i64 = 1;

/// The bundled data of the main job: the bars of `run.bars` and the news of `run.news` (format
/// detected per file: news JSON lines or headline CSV).
///
/// News from the bars' own days (the default data: crypto headlines and BTC-USD bars of
/// 2025) keeps its times; the bars are cut to `run.warmup_days` before the first article (the
/// agent's and risk's lookbacks fill there) through [`AFTER_NEWS_DAYS`] after the last article's
/// day. News from other days (the Reuters fixtures of 1987) is spread over the last
/// [`NEWS_SPAN_DAYS`] of the bars ([`retime_articles`]).
pub fn bundled(cfg: &Config) -> Result<Vec<AnyEvent>> {
    let mut opts = auroraq_replay::LoadOptions::default();
    opts.bars.exchange = cfg.run.exchange.clone();
    let mut events = auroraq_replay::load(Some(auroraq_replay::Format::Bars), &cfg.run.bars, &opts)
        .context("bundled bars")?;
    let (from, to) = events
        .iter()
        .map(|e| e.meta().ts_event)
        .fold((i64::MAX, i64::MIN), |(a, b), t| (a.min(t), b.max(t)));
    if !cfg.run.news.is_empty() {
        let mut news = auroraq_replay::load(None, &cfg.run.news, &opts).context("bundled news")?;
        let span = |evs: &[AnyEvent], article: bool| {
            evs.iter()
                .filter(|e| {
                    matches!(e, AnyEvent::Article(_)) == article && !matches!(e, AnyEvent::DeadLetter(_))
                })
                .map(|e| e.meta().ts_event)
                .fold((i64::MAX, i64::MIN), |(a, b), t| (a.min(t), b.max(t)))
        };
        let (bars_from, bars_to) = span(&events, false);
        let (news_from, news_to) = span(&news, true);
        if news_from <= news_to && news_from >= bars_from && news_to <= bars_to {
            let keep_from = news_from - cfg.run.warmup_days as i64 * DAY;
            let keep_to = (news_to.div_euclid(DAY) + 1 + AFTER_NEWS_DAYS) * DAY;
            let before = events.len();
            events.retain(|e| {
                !matches!(e, AnyEvent::Kline(_)) || (keep_from..keep_to).contains(&e.meta().ts_event)
            });
            info!(
                bars_kept = events.len(),
                bars_left_out = before - events.len(),
                articles = news.len(),
                warmup_days = cfg.run.warmup_days,
                "news and bars of the same days: bars from the warm-up before the first article"
            );
        } else {
            retime_articles(&mut news, from.max(to - NEWS_SPAN_DAYS * DAY), to);
        }
        events.extend(news);
    }
    Ok(events)
}

/// Whether the main job's news was spread over the bars ([`retime_articles`]) rather than read on
/// its own days.
pub fn is_retimed(inputs: &[AnyEvent]) -> bool {
    inputs
        .iter()
        .any(|e| matches!(e, AnyEvent::Article(a) if a.keywords.iter().any(|k| k == "auroraq:retimed")))
}

/// Fusion windows of the main job on news of the bars' own days: one family of hourly tumbling
/// windows. The default data has about 13 headlines an hour (29,778 over 92 days), so an hour
/// holds enough scores for a median-robust mean and a confidence near 1 at the default
/// `evidence_scale` (3), and it matches the hourly bars the agent trades on (a window closes at
/// the bar after its end: finer windows would wait for the same bar). The default 5-minute and
/// 1-hour sliding families would emit 12 signals an hour from 1 to 2 headlines each.
pub const SAME_DAYS_WINDOW_SECS: u64 = 3600;

/// The rule's thresholds in the main job on news of the bars' own days, unless
/// `[agents.auroraq.rule]` sets others. The seed's (buy above 0.7, sell below 0.3, confidence
/// above 0.8) never trade on hourly windows of this data: an hour's fused score is a mean of about
/// 13 headlines (5th..95th percentile 0.39..0.67) and its confidence, which falls when the scores
/// disagree, has a median of 0.58. These act on about the top and bottom 5% of windows with at
/// least middling agreement.
pub const SAME_DAYS_RULE: auroraq_agents::RuleThresholds = auroraq_agents::RuleThresholds {
    buy_above: 0.65,
    sell_below: 0.4,
    min_confidence: 0.5,
};

/// Publishers weighted down in the main job's fusion on the default data: coinotag, a fifth of
/// the headlines and often promotional, counts half (every other source 1).
pub const DOWNWEIGHTED_SOURCES: &[(&str, f64)] = &[("coinotag", 0.5)];

/// The main job's settings over the bundled data (`inputs`, from [`bundled`]): the configuration
/// with the AuroraQ agent on the bundled bars' symbol, the news attributed to its asset, and
/// daily fusion windows. The embedded job and the job on NATS (where each role reads it from
/// the configuration file the job writes) use the same.
pub fn demo_config(cfg: &Config, inputs: &[AnyEvent]) -> Result<Config> {
    let symbol = inputs
        .iter()
        .find_map(|e| match e {
            AnyEvent::Kline(k) => Some(k.symbol.clone()),
            _ => None,
        })
        .context("the bundled data has no bars")?;
    let asset = auroraq_fusion::SymbolMap::new(&cfg.fusion.symbols)
        .asset_of_symbol(&symbol)
        .unwrap_or_else(|| symbol.clone());
    let mut demo = cfg.clone();
    if !is_retimed(inputs) {
        // News of the bars' own days: articles link to the assets they name (or are tagged with);
        // those naming none are counted, not attributed.
        let mut ac = cfg
            .agents
            .get("auroraq")
            .cloned()
            .unwrap_or_else(auroraq_agents::AgentConfig::auroraq);
        ac.assets = [(asset.clone(), symbol.clone())].into_iter().collect();
        if ac.rule == auroraq_agents::RuleThresholds::default() {
            ac.rule = SAME_DAYS_RULE;
        }
        demo.agents = [("auroraq".to_owned(), ac)].into_iter().collect();
        demo.fusion.windows = vec![auroraq_fusion::WindowSpec::tumbling(SAME_DAYS_WINDOW_SECS)];
        for (source, w) in DOWNWEIGHTED_SOURCES {
            demo.fusion
                .source_weights
                .entry((*source).to_owned())
                .or_insert(*w);
        }
        demo.fusion.close_at_end = false;
        return Ok(demo);
    }
    let mut ac = cfg
        .agents
        .get("auroraq")
        .cloned()
        .unwrap_or_else(auroraq_agents::AgentConfig::auroraq);
    ac.assets = [(asset.clone(), symbol.clone())].into_iter().collect();
    demo.agents = [("auroraq".to_owned(), ac)].into_iter().collect();
    // The bundled news names no crypto asset: it is attributed to the bars' asset.
    demo.sentiment.fallback_assets = vec![asset];
    // News is sparse here (79 articles over 180 days): daily windows, and a single confident score
    // counts as nearly full evidence (evidence_scale 0.25), so that the seed's thresholds (0.7 / 0.8)
    // can be crossed.
    demo.fusion.windows = vec![auroraq_fusion::WindowSpec {
        size_secs: 86_400,
        slide_secs: 86_400,
    }];
    demo.fusion.half_life_secs = 86_400.0;
    demo.fusion.evidence_scale = 0.25;
    // Windows still open after the last bar stay open, as in a live run (no price to act on).
    demo.fusion.close_at_end = false;
    Ok(demo)
}

/// The main job's plan over the bundled data (`inputs`, from [`bundled`]), and the configuration
/// to run it with (see [`demo_config`]).
pub fn bundled_plan(
    cfg: &Config,
    inputs: Vec<AnyEvent>,
    out: Option<&Path>,
    progress: bool,
) -> Result<(Config, Plan)> {
    let demo = demo_config(cfg, &inputs)?;
    let ac = demo.agents.get("auroraq").cloned().context("the demo agent")?;
    let (asset, symbol) = ac
        .assets
        .iter()
        .next()
        .map(|(a, s)| (a.clone(), s.clone()))
        .context("the demo agent's asset")?;
    let retimed = is_retimed(&inputs);
    let rule = ac.rule;
    let agent = auroraq_agents::Agent::new(ac, Box::new(auroraq_agents::RulePolicy { t: rule }));
    let windows: Vec<String> = demo
        .fusion
        .windows
        .iter()
        .map(|w| format!("{} s every {} s", w.size_secs, w.slide_secs))
        .collect();
    let settings: Vec<(String, String)> = [
        (
            "run.bars",
            cfg.run
                .bars
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        ),
        (
            "run.news",
            cfg.run
                .news
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        ),
        ("run.exchange", cfg.run.exchange.clone()),
        (
            "run.warmup_days",
            if retimed {
                "not used (news retimed)".into()
            } else {
                cfg.run.warmup_days.to_string()
            },
        ),
        ("agent", format!("auroraq on {asset} → {symbol}, the rule policy")),
        (
            "rule",
            format!(
                "buy when fused > {} and confidence > {}, sell when fused < {}",
                rule.buy_above, rule.min_confidence, rule.sell_below
            ),
        ),
        ("fusion.windows", windows.join("; ")),
        ("fusion.grace_secs", demo.fusion.grace_secs.to_string()),
        ("fusion.half_life_secs", demo.fusion.half_life_secs.to_string()),
        ("fusion.evidence_scale", demo.fusion.evidence_scale.to_string()),
        (
            "fusion.source_weights",
            format!(
                "{:?} (others {})",
                demo.fusion.source_weights, demo.fusion.default_source_weight
            ),
        ),
        ("fusion.outlier_k", demo.fusion.outlier_k.to_string()),
        (
            "sentiment.model_dir",
            demo.sentiment.model_dir.display().to_string(),
        ),
        (
            "sentiment.fallback_assets",
            format!("{:?}", demo.sentiment.fallback_assets),
        ),
        ("risk.lookback (returns)", demo.risk.lookback.to_string()),
        ("risk.initial_equity", demo.risk.initial_equity.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let files = cfg.run.bars.iter().chain(&cfg.run.news).cloned().collect();
    let notes = if retimed {
        format!(
            "Real data, but not from the same days: hourly {symbol} bars from {} and Reuters-21578 \
             newswire articles from 1987, spread evenly over the bars' last {NEWS_SPAN_DAYS} days and attributed to \
             {asset}; daily fusion windows. The run shows the pipeline working end to end; it says nothing \
             about a trading edge.",
            cfg.run.bars.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        )
    } else {
        format!(
            "Real news and real prices of the same days: hourly {symbol} bars from {} ({} days of warm-up before \
             the first article, for the risk stage's volatility and VaR lookbacks) and the headlines of {}, each \
             scored by the model, linked to the assets it names or is tagged with, fused per asset in hourly \
             event-time windows, and traded by the AuroraQ agent's rule on {asset} (thresholds below, chosen for hourly windows). The event study \
             below says whether the sentiment was followed by price moves; a backtest of one rule over three \
             months is no evidence of a trading edge.",
            cfg.run.bars.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "),
            cfg.run.warmup_days,
            cfg.run.news.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        )
    };
    let plan = Plan {
        inputs,
        agents: vec![agent],
        out: out.map(Path::to_path_buf),
        title: format!("AuroraQ main job: {symbol} with news sentiment"),
        notes,
        progress,
        focus: Some((asset, symbol)),
        files,
        settings,
    };
    Ok((demo, plan))
}

/// `auroraq bench backtest`: events/s of the replay path without inference (agents, risk and
/// execution on the event-time engine) beside a plain loop over the same events, same run.
#[derive(Debug, serde::Serialize)]
pub struct BacktestBench {
    pub events: usize,
    pub signals: usize,
    pub engine_events_per_s: f64,
    pub loop_events_per_s: f64,
    pub ratio: f64,
    pub trades: u64,
    pub rounds: Vec<(f64, f64)>,
}

/// One-minute bars of a random walk (seeded) for `symbol`, and a fused signal every `every` bars
/// alternating bullish and bearish, so that the agent trades.
pub fn synthetic(n: usize, every: usize) -> Vec<AnyEvent> {
    use auroraq_schemas::{Dec, FusedSignal, Kline, Meta, Trend};
    let mut out = Vec::with_capacity(n + n / every.max(1) + 1);
    let mut price: i64 = 3_000_000; // cents
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let t0: i64 = 1_700_000_000_000_000;
    for i in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let step = (x % 201) as i64 - 100;
        let open = price;
        price = (price + step).max(1_000);
        let close_time = t0 + (i as i64 + 1) * 60_000_000;
        let d = |c: i64| Dec::new(c, 2);
        out.push(AnyEvent::Kline(Kline {
            meta: Meta::raw(
                EventKind::Kline,
                "bench",
                &format!("BTCUSDT:{i}"),
                close_time,
                close_time,
            ),
            exchange: "bench".into(),
            symbol: "BTCUSDT".into(),
            interval: "1m".into(),
            open_time: close_time - 60_000_000,
            close_time,
            open: d(open),
            high: d(open.max(price) + 5),
            low: d(open.min(price) - 5),
            close: d(price),
            volume: Dec::new(12, 1),
            quote_volume: None,
            trades: Some(10),
            closed: true,
        }));
        if every > 0 && i % every == every - 1 {
            let bull = (i / every).is_multiple_of(2);
            out.push(AnyEvent::FusedSignal(FusedSignal {
                meta: Meta::derived(
                    EventKind::FusedSignal,
                    "fusion",
                    &[],
                    &format!("BTC:{i}"),
                    close_time,
                    close_time,
                ),
                asset: "BTC".into(),
                window_start: close_time - 300_000_000,
                window_end: close_time,
                fused_score: if bull { 0.9 } else { 0.1 },
                confidence: 0.95,
                scores_used: 3,
                scores_rejected: 0,
                sources_used: 2,
                weights_used: Default::default(),
                trend: Trend::Stable,
            }));
        }
    }
    out
}

pub fn bench(cfg: &Config, n: usize, rounds: usize) -> Result<BacktestBench> {
    let events = synthetic(n, 500);
    let signals = events
        .iter()
        .filter(|e| matches!(e, AnyEvent::FusedSignal(_)))
        .count();
    let mut results = Vec::new();
    let mut trades = 0;
    for _ in 0..rounds.max(1) {
        // The plain loop: the same events in the same order, a price map, the seed's rule on each
        // signal and a position flag: what a hand-written backtest of this strategy does.
        let input = events.clone();
        let t = std::time::Instant::now();
        let keys: Vec<Micros> = input.iter().map(available_at).collect();
        let mut order: Vec<usize> = (0..input.len()).collect();
        if !keys.is_sorted() {
            order.sort_by_key(|&i| keys[i]);
        }
        let sorted = order.iter().map(|&i| &input[i]);
        let mut last = std::collections::HashMap::<String, rust_decimal::Decimal>::new();
        let (mut long, mut cash, mut qty) = (
            false,
            rust_decimal::Decimal::from(100_000),
            rust_decimal::Decimal::ZERO,
        );
        for e in sorted {
            match e {
                AnyEvent::Kline(k) => {
                    last.insert(k.symbol.clone(), k.close.0);
                }
                AnyEvent::FusedSignal(f) if f.confidence > 0.8 => {
                    if let Some(p) = last.get("BTCUSDT").copied() {
                        if f.fused_score > 0.7 && !long {
                            qty = (cash / p).round_dp(6);
                            cash -= qty * p;
                            long = true;
                        } else if f.fused_score < 0.3 && long {
                            cash += qty * p;
                            long = false;
                        }
                    }
                }
                _ => {}
            }
        }
        std::hint::black_box((cash, qty));
        let loop_s = t.elapsed().as_secs_f64();

        let input = events.clone();
        let t = std::time::Instant::now();
        let mut ac = auroraq_agents::AgentConfig::auroraq();
        ac.assets = [("BTC".to_owned(), "BTCUSDT".to_owned())].into_iter().collect();
        let processors: Vec<Box<dyn Processor>> = vec![
            Box::new(auroraq_agents::Agent::new(
                ac,
                Box::new(auroraq_agents::RulePolicy::default()),
            )),
            Box::new(auroraq_risk::RiskProcessor::new(cfg.risk.clone())?),
            Box::new(auroraq_execution::ExecutionProcessor::new(cfg.execution.clone())?),
        ];
        let out = Engine::new(processors).run(input, &mut |_, _| {})?;
        let engine_s = t.elapsed().as_secs_f64();
        trades = out.by_kind.get(&EventKind::OrderUpdate).copied().unwrap_or(0);
        results.push((events.len() as f64 / engine_s, events.len() as f64 / loop_s));
    }
    let mut e: Vec<f64> = results.iter().map(|r| r.0).collect();
    let mut l: Vec<f64> = results.iter().map(|r| r.1).collect();
    e.sort_by(f64::total_cmp);
    l.sort_by(f64::total_cmp);
    let (em, lm) = (e[e.len() / 2], l[l.len() / 2]);
    Ok(BacktestBench {
        events: events.len(),
        signals,
        engine_events_per_s: em,
        loop_events_per_s: lm,
        ratio: em / lm,
        trades,
        rounds: results,
    })
}

/// The topics a backtest reads from a bus's history: market data, news and recorded scores.
pub const HISTORY_FILTERS: &[&str] = &["market.>", "news.>", "sentiment.scores"];

/// What a read of the bus's history found.
#[derive(Debug, Default, serde::Serialize)]
pub struct HistoryStats {
    /// Messages stored in the range.
    pub stored: u64,
    /// Distinct events decoded.
    pub events: u64,
    /// Events stored more than once (same event id), kept once.
    pub duplicates: u64,
    /// Messages that are not AuroraQ events; skipped and counted.
    pub undecodable: u64,
}

/// Reads the backtest's input from what the configured bus kept (NATS JetStream): every market-data,
/// news and score message stored from `since` (the oldest kept when none) until `until` (the end of
/// the stream when the read began when none), by the time the bus stored them. Each event once.
pub async fn from_bus(
    cfg: &Config,
    since: Option<Micros>,
    until: Option<Micros>,
    progress: bool,
) -> Result<(Vec<AnyEvent>, HistoryStats)> {
    let bus = crate::wiring::connect_bus(&cfg.bus).await?;
    let mut readers = Vec::new();
    for f in HISTORY_FILTERS {
        let mut opts = auroraq_bus::HistoryOptions::new(*f);
        opts.since = since;
        opts.until = until;
        readers.push(
            bus.history(opts)
                .await
                .with_context(|| format!("reading {f} from the {} bus", bus.kind()))?,
        );
    }
    let total: u64 = readers.iter().map(|r| r.total()).sum();
    let bar = crate::wiring::progress_bar(
        progress,
        total,
        "reading the bus {wide_bar} {pos}/{len} messages {per_sec}",
    );
    let mut seen = std::collections::HashSet::new();
    let mut stats = HistoryStats::default();
    let mut out = Vec::new();
    for mut r in readers {
        while let Some(stored) = r.next().await {
            let stored = stored?;
            bar.inc(1);
            if auroraq_schemas::is_watermark(&stored.message.payload) {
                // A producer's progress, not an event.
                continue;
            }
            stats.stored += 1;
            match AnyEvent::decode(&stored.message.payload) {
                Ok(ev) => {
                    if seen.insert(ev.meta().event_id.clone()) {
                        out.push(ev);
                    } else {
                        stats.duplicates += 1;
                    }
                }
                Err(e) => {
                    stats.undecodable += 1;
                    tracing::warn!(topic = %stored.message.topic, sequence = stored.sequence, error = %e,
                        "a stored message is not an AuroraQ event; skipped");
                }
            }
        }
    }
    bar.finish_and_clear();
    stats.events = out.len() as u64;
    info!(?stats, bus = %bus.kind(), "read the backtest's input from the bus");
    bus.close().await;
    if out.is_empty() {
        anyhow::bail!(
            "the bus kept no market data, news or scores in that time range ({} messages read); \
             check --since/--until, the bus (--bus) and its retention (JetStream keeps 7 days)",
            stats.stored
        );
    }
    Ok((out, stats))
}

/// Sends `events` through the configured bus and back: publishes them (as the replay connector
/// does) while a transient consumer of every topic reads them, decodes them and hands them back,
/// once each. A backtest of what comes back is the backtest of what a bus consumer sees; its
/// fingerprint is the same on the in-process bus and on NATS when the bus loses and changes nothing.
pub async fn through_bus(cfg: &Config, events: Vec<AnyEvent>) -> Result<Vec<AnyEvent>> {
    use auroraq_bus::SubscribeOptions;
    let bus = crate::wiring::connect_bus(&cfg.bus).await?;
    let mut expected: std::collections::HashSet<String> =
        events.iter().map(|e| e.meta().event_id.clone()).collect();
    let mut sub = bus
        .subscribe(SubscribeOptions::new(format!("backtest-{}", std::process::id()), ">").transient())
        .await?;
    let publisher = {
        let bus = bus.clone();
        let stop = auroraq_util::CancellationToken::new(); // never cancelled
        tokio::spawn(
            async move { auroraq_replay::replay(&*bus, events, auroraq_replay::Pace::Max, stop).await },
        )
    };
    let mut out = Vec::with_capacity(expected.len());
    while !expected.is_empty() {
        let next = tokio::time::timeout(std::time::Duration::from_secs(30), sub.next())
            .await
            .with_context(|| {
                format!(
                    "the bus went quiet with {} events still to come back",
                    expected.len()
                )
            })?;
        let Some(d) = next else {
            anyhow::bail!("the bus closed with {} events still to come back", expected.len())
        };
        let d = d?;
        if auroraq_schemas::is_watermark(d.payload()) {
            d.ack().await?;
            continue;
        }
        let ev = AnyEvent::decode(d.payload()).context("an event came back from the bus undecodable")?;
        d.ack().await?;
        if expected.remove(&ev.meta().event_id) {
            out.push(ev);
        }
    }
    let stats = publisher.await.context("publisher task")??;
    info!(?stats, received = out.len(), bus = %bus.kind(), "events went through the bus");
    bus.close().await;
    Ok(out)
}

/// Where a backtest's input comes from.
#[derive(Clone, Debug)]
pub enum Source {
    /// The main job's bundled data (`run.bars`, `run.news`) with its demo settings.
    Bundled,
    /// Recorded files, in `format` (detected per file when `None`).
    Files {
        files: Vec<PathBuf>,
        format: Option<auroraq_replay::Format>,
        /// Exchange of bar files.
        exchange: String,
        /// Symbol of bar files without a symbol column.
        symbol: Option<String>,
    },
    /// What the configured bus kept between `since` and `until` (as typed by the user: RFC 3339,
    /// `2026-11-26 09:00` or epoch seconds; `None`: the oldest kept / the end).
    Bus {
        since: Option<String>,
        until: Option<String>,
    },
}

/// `auroraq backtest`: what to run and where the report goes.
#[derive(Clone, Debug)]
pub struct Job {
    pub source: Source,
    /// Agents to run (names in `[agents]`); not used with [`Source::Bundled`] (the demo agent).
    pub agents: Vec<String>,
    /// An ONNX policy for the agents instead of the seed's rule.
    pub policy: Option<PathBuf>,
    /// Report folder.
    pub out: PathBuf,
    /// Send the input through the configured bus and back first.
    pub via_bus: bool,
    /// Progress bars on stderr.
    pub progress: bool,
}

fn parse_time(s: &Option<String>, what: &str) -> Result<Option<Micros>> {
    s.as_deref()
        .map(|t| {
            auroraq_replay::time::parse_timestamp(t).with_context(|| {
                format!("{what} {t:?} is not a time (e.g. 2026-11-26T09:00:00Z or epoch seconds)")
            })
        })
        .transpose()
}

/// Turns a [`Job`] into the configuration to run with and its [`Plan`] (reading files or the bus).
pub async fn plan(cfg: &Config, job: &Job) -> Result<(Config, Plan)> {
    let (inputs, title, notes) = match &job.source {
        Source::Bundled => {
            let inputs = bundled(cfg)?;
            return bundled_plan(cfg, inputs, Some(&job.out), job.progress);
        }
        Source::Bus { since, until } => {
            let (s, u) = (parse_time(since, "--since")?, parse_time(until, "--until")?);
            let (inputs, stats) = from_bus(cfg, s, u, job.progress).await?;
            let notes = format!(
                "{} stream {} from {} to {}: {} events ({} stored twice, {} undecodable)",
                crate::doctor::redact(cfg.bus.url.as_str()),
                cfg.bus.stream,
                since.as_deref().unwrap_or("the oldest kept"),
                until.as_deref().unwrap_or("the end"),
                stats.events,
                stats.duplicates,
                stats.undecodable
            );
            (inputs, "AuroraQ backtest from the bus", notes)
        }
        Source::Files {
            files,
            format,
            exchange,
            symbol,
        } => {
            let mut opts = auroraq_replay::LoadOptions::default();
            opts.bars.exchange = exchange.clone();
            opts.bars.symbol = symbol.clone();
            let inputs = auroraq_replay::load(*format, files, &opts)?;
            let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
            let notes = format!("{} file(s): {}", names.len(), names.join(", "));
            (inputs, "AuroraQ backtest", notes)
        }
    };
    let agents = job
        .agents
        .iter()
        .map(|n| crate::roles::agent(cfg, n, job.policy.as_deref()))
        .collect::<Result<Vec<_>>>()?;
    let files = match &job.source {
        Source::Files { files, .. } => files.clone(),
        _ => Vec::new(),
    };
    let plan = Plan {
        inputs,
        agents,
        out: Some(job.out.clone()),
        title: title.into(),
        notes,
        progress: job.progress,
        focus: None,
        files,
        settings: Vec::new(),
    };
    Ok((cfg.clone(), plan))
}

/// `auroraq backtest`: plans the [`Job`], sends the input through the bus when asked, runs it and
/// writes the report.
pub async fn run_job(cfg: &Config, job: Job) -> Result<Summary> {
    let (cfg, mut plan) = plan(cfg, &job).await?;
    if job.via_bus {
        plan.inputs = through_bus(&cfg, std::mem::take(&mut plan.inputs)).await?;
    }
    tokio::task::block_in_place(|| run(&cfg, plan))
}

impl BacktestBench {
    /// One human line on stderr.
    pub fn print(&self) {
        eprintln!(
            "engine (agents, risk, execution) {:>12.0} events/s; plain loop {:>12.0} events/s; ratio {:.3}",
            self.engine_events_per_s, self.loop_events_per_s, self.ratio
        );
    }
}

#[cfg(test)]
mod tests {
    use super::is_recorded_input;
    use auroraq_schemas::{samples, AnyEvent};

    #[test]
    fn recorded_inputs_are_what_connectors_record_and_scores() {
        let recorded: Vec<&str> = samples::all()
            .iter()
            .filter(|e| is_recorded_input(e))
            .map(|e| e.kind().as_str())
            .collect();
        for kind in [
            "TradeTick",
            "Kline",
            "BookTicker",
            "BookUpdate",
            "MarkPrice",
            "Liquidation",
            "Article",
        ] {
            assert!(
                recorded.contains(&kind),
                "{kind} is read as a recorded input: {recorded:?}"
            );
        }
        let fused = samples::all()
            .into_iter()
            .find(|e| matches!(e, AnyEvent::FusedSignal(_)));
        assert!(
            fused.is_some_and(|f| !is_recorded_input(&f)),
            "a fused signal is the backtest's own"
        );
    }
}
