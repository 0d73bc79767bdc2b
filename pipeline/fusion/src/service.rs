//! Fusion on the bus: subscribe, feed the dataflow in epochs, publish, ack.
//!
//! Delivery guarantee: at-least-once. A score is acked only once every window that holds it
//! has closed on every asset it names and the fused signals of those windows (or its late dead
//! letter) are published; a market event once the epoch it was fed in is processed and that
//! epoch's outputs are published; an article once the market clock has moved past its
//! retention. A crash loses the in-memory window state, and the unacked scores and articles come
//! back and rebuild it. Outputs have deterministic ids (derived from the contributing scores and
//! the window), so a window fused again publishes the same id and the bus drops the duplicate.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use auroraq_bus::{topics, Bus, BusError, Delivery, OutMessage, SubscribeOptions, Subscription};
use auroraq_schemas::{AnyEvent, Article, Incoming, Micros, SentimentScore};
use auroraq_stage::{publish_events, send_dead_letter, to_message, StageError, StageMetrics};
use auroraq_util::{sleep_or_cancel, CancellationToken};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::config::FusionConfig;
use crate::dataflow::Engine;
use crate::feed::{check_score, Feeder};
use crate::model::{add, Control, Out, Settings, Stamp, MICROS};
use crate::{FusionError, FusionMetrics, FusionStats};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    Scores,
    Market,
    Articles,
}

impl Source {
    fn filter(self) -> &'static str {
        match self {
            Source::Scores => topics::SENTIMENT_SCORES,
            Source::Market => topics::ALL_MARKET,
            Source::Articles => topics::ALL_ARTICLES,
        }
    }
}

/// What the driver takes in: a delivery of one of its inputs or, on event time, how far the
/// inputs have come (everything before it in the channel is all there is up to that time).
enum Intake {
    Delivery(Source, Result<Delivery, BusError>),
    Progress(Micros),
}

/// The fusion stage, subscribed to its inputs. Subscribe before producers start when the bus
/// keeps messages only for existing groups (the in-process bus).
pub struct FusionStage {
    bus: Arc<dyn Bus>,
    cfg: FusionConfig,
    subs: Vec<(Source, Box<dyn Subscription>)>,
    metrics: Arc<FusionMetrics>,
}

/// Subscribes and runs until `cancel` fires or the bus closes; see [`FusionStage::run`].
pub async fn run(
    bus: Arc<dyn Bus>,
    cfg: FusionConfig,
    cancel: CancellationToken,
) -> Result<FusionStats, FusionError> {
    FusionStage::subscribe(bus, cfg).await?.run(cancel).await
}

/// Scores fed to the dataflow and not yet released by every asset they name.
struct Pending {
    deliveries: Vec<Delivery>,
    remaining: usize,
}

impl FusionStage {
    /// Joins the consumer group (`cfg.group_name()`) on `sentiment.scores`, `market.>` and, with
    /// `join_articles`, `news.articles.>`.
    pub async fn subscribe(bus: Arc<dyn Bus>, cfg: FusionConfig) -> Result<Self, FusionError> {
        cfg.validate()?;
        let group = cfg.group_name();
        let hold = Duration::from_secs(cfg.hold_ack_wait());
        // On event time the inputs are merged: each may hold what the merge holds (see
        // `auroraq_stage::watermark::MERGED_IN_FLIGHT`).
        let merged = |n: usize| {
            if cfg.merged() {
                n.max(auroraq_stage::watermark::MERGED_IN_FLIGHT)
            } else {
                n
            }
        };
        let mut subs = Vec::new();
        let scores = SubscribeOptions::new(&group, topics::SENTIMENT_SCORES)
            .max_in_flight(merged(cfg.max_in_flight_scores))
            .ack_wait(hold);
        subs.push((Source::Scores, bus.subscribe(scores).await?));
        if cfg.join_articles {
            let articles = SubscribeOptions::new(&group, topics::ALL_ARTICLES)
                .max_in_flight(merged(cfg.max_in_flight_articles))
                .ack_wait(hold);
            subs.push((Source::Articles, bus.subscribe(articles).await?));
        }
        let market =
            SubscribeOptions::new(&group, topics::ALL_MARKET).max_in_flight(merged(cfg.max_in_flight_market));
        subs.push((Source::Market, bus.subscribe(market).await?));
        Ok(FusionStage {
            bus,
            cfg,
            subs,
            metrics: Arc::new(FusionMetrics::default()),
        })
    }

    /// Live counters.
    pub fn metrics(&self) -> Arc<FusionMetrics> {
        self.metrics.clone()
    }

    /// Runs until `cancel` fires or every subscription has ended (the bus was closed). On cancel,
    /// the current epoch is finished, published and acked; scores of windows still open are left
    /// unacked, to be redelivered to the next run.
    pub async fn run(self, cancel: CancellationToken) -> Result<FusionStats, FusionError> {
        let FusionStage {
            bus,
            cfg,
            subs,
            metrics,
        } = self;
        info!(
            stage = %cfg.name,
            group = %cfg.group_name(),
            workers = cfg.workers,
            windows = ?cfg.windows,
            grace_secs = cfg.grace_secs,
            "fusion starting"
        );
        let (tx, rx) = mpsc::channel::<Intake>(cfg.batch_max.clamp(64, 8192));
        let mut tasks: Vec<JoinHandle<()>> = Vec::new();
        if cfg.merged() {
            // The inputs merged in event-time order by their watermarks.
            tasks.push(tokio::spawn(merged_intake(
                bus.clone(),
                cfg.clone(),
                subs,
                tx.clone(),
            )));
        } else {
            for (src, mut sub) in subs {
                let tx = tx.clone();
                let delay = if src == Source::Market {
                    Duration::from_millis(cfg.startup_delay_ms)
                } else {
                    Duration::ZERO
                };
                tasks.push(tokio::spawn(async move {
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    while let Some(d) = sub.next().await {
                        if tx.send(Intake::Delivery(src, d)).await.is_err() {
                            break;
                        }
                    }
                }));
            }
        }
        drop(tx);
        let stamp = if cfg.stamp_window_close {
            Stamp::WindowClose
        } else {
            Stamp::Wall
        };
        let settings = Arc::new(Settings::new(&cfg, stamp));
        let cfg_symbols = cfg.symbols.clone();
        let engine = Engine::start(settings, cfg.workers, metrics.clone())?;
        let mut driver = Driver {
            feeder: Feeder::new(&cfg, metrics.clone()),
            bus: bus.clone(),
            cfg,
            metrics: metrics.clone(),
            stage_metrics: StageMetrics::default(),
            pending: HashMap::new(),
            epoch_acks: Vec::new(),
            articles: BTreeMap::new(),
            article_seq: 0,
            pruned_to: None,
            progress: None,
            announced: None,
            symbols: crate::SymbolMap::new(&cfg_symbols),
            epoch_ticks: HashMap::new(),
        };
        let result = driver.run(engine, rx, &cancel).await;
        // Leave the group first, so that the deliveries released below are not handed back to
        // this member's pulls; then release them (dropped unsettled: the bus delivers them
        // again, to the next member or run).
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            let _ = t.await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let held = driver.pending.values().map(|p| p.deliveries.len()).sum::<usize>() + driver.articles.len();
        if held > 0 {
            info!(held, "releasing held scores and articles for redelivery");
        }
        drop(driver);
        if let Err(e) = bus.flush().await {
            warn!(error = %e, "flush at fusion stop failed");
        }
        let stats = metrics.snapshot();
        info!(?stats, "fusion stopped");
        result.map(|()| stats)
    }
}

struct Driver {
    bus: Arc<dyn Bus>,
    cfg: FusionConfig,
    feeder: Feeder,
    metrics: Arc<FusionMetrics>,
    stage_metrics: StageMetrics,
    pending: HashMap<String, Pending>,
    /// Settled once the current epoch's outputs are published.
    epoch_acks: Vec<Delivery>,
    /// Articles held until the market clock passes their retention.
    articles: BTreeMap<(Micros, u64), Delivery>,
    article_seq: u64,
    pruned_to: Option<Micros>,
    /// On event time: how far the inputs fed so far have come, and what was announced.
    progress: Option<Micros>,
    announced: Option<Micros>,
    symbols: crate::SymbolMap,
    /// On event time: each asset's market times fed in the current epoch (see `restamp`).
    epoch_ticks: HashMap<String, Vec<Micros>>,
}

impl Driver {
    async fn run(
        &mut self,
        mut engine: Engine,
        mut rx: mpsc::Receiver<Intake>,
        cancel: &CancellationToken,
    ) -> Result<(), FusionError> {
        let result = self.main_loop(&mut engine, &mut rx, cancel).await;
        let finished = tokio::task::spawn_blocking(move || engine.finish())
            .await
            .map_err(|e| FusionError::Dataflow(format!("joining the dataflow: {e}")))?;
        result.and(finished)
    }

    async fn main_loop(
        &mut self,
        engine: &mut Engine,
        rx: &mut mpsc::Receiver<Intake>,
        cancel: &CancellationToken,
    ) -> Result<(), FusionError> {
        let wait = Duration::from_millis(self.cfg.batch_wait_ms.max(1));
        let retention = self.cfg.article_retention() as i64 * MICROS;
        let mut open = true;
        while open && !cancel.is_cancelled() {
            let deadline = tokio::time::Instant::now() + wait;
            // Articles are pruned by the market clock as it was before this epoch's records: an
            // epoch may hold days of market data (on event time, a replay's backlog), and the
            // windows it closes still need the articles of their time.
            let clock_before = self.feeder.clock;
            while self.feeder.len() < self.cfg.batch_max {
                let next = tokio::select! {
                    biased;
                    _ = cancel.cancelled() => break,
                    m = rx.recv() => m,
                    _ = tokio::time::sleep_until(deadline) => break,
                };
                match next {
                    None => {
                        open = false;
                        break;
                    }
                    Some(Intake::Delivery(_, Err(e))) => warn!(error = %e, "delivery error"),
                    Some(Intake::Delivery(src, Ok(d))) => self.intake(src, d).await?,
                    Some(Intake::Progress(w)) => {
                        // Everything up to `w` is in: run the epoch now, then announce it.
                        self.progress = Some(w);
                        break;
                    }
                }
            }
            if let Some(clock) = clock_before {
                let before = clock.saturating_sub(retention);
                if self.pruned_to.is_none_or(|p| p < before) {
                    self.feeder.push_control(Control::Prune(before));
                    self.pruned_to = Some(before);
                }
            }
            if !self.epoch(engine, cancel).await? {
                break;
            }
            if self.progress == Some(Micros::MAX) && self.announced != self.progress && self.cfg.close_at_end
            {
                // Every input ended: close what is still open, as a batch run does (after the
                // last inputs' epoch, so that none of them comes after its window closed).
                self.feeder.push_control(Control::Flush);
                if !self.epoch(engine, cancel).await? {
                    break;
                }
            }
            self.announce().await;
        }
        Ok(())
    }

    /// On event time: an epoch holds many market events, and the dataflow stamps a signal with its
    /// asset's clock when the epoch closed its window; as a batch run does (and a live run seeing
    /// them one by one would), it is stamped at the first market event that passed the window's
    /// close instead.
    fn restamp(&mut self, signals: &mut [AnyEvent]) {
        if !self.cfg.stamp_window_close {
            return;
        }
        let grace = self.cfg.grace_secs as i64 * MICROS;
        for ev in signals.iter_mut() {
            if let AnyEvent::FusedSignal(s) = ev {
                if let Some(t) = crate::batch::closed_by(&self.epoch_ticks, s, grace) {
                    s.meta.ts_processed = Some(t);
                }
            }
        }
        self.epoch_ticks.clear();
    }

    /// On event time, after an epoch: its inputs' progress on the fused family (its signals are
    /// published, and any later one is stamped at a later market event).
    async fn announce(&mut self) {
        let Some(w) = self.progress else { return };
        if self.announced.is_some_and(|a| a >= w) {
            return;
        }
        let progress = [topics::FUSED_PROGRESS.to_owned()];
        match auroraq_stage::watermark::publish_watermark(&*self.bus, &progress, w, &self.cfg.name).await {
            Ok(()) => self.announced = Some(w),
            Err(e) => warn!(error = %e, "cannot publish the fused signals' watermark; will retry"),
        }
    }

    /// Takes one delivery into the next epoch (or dead-letters it).
    async fn intake(&mut self, src: Source, d: Delivery) -> Result<(), FusionError> {
        if auroraq_schemas::is_watermark(d.payload()) {
            // On the wall clock a producer's progress is not used (on event time the merged
            // reader consumes it before it gets here).
            d.ack().await?;
            return Ok(());
        }
        match src {
            Source::Scores => match SentimentScore::decode_message(d.payload()) {
                Err(e) => self.dead_letter(d, "decode_error", &e.to_string()).await?,
                Ok(s) => {
                    if let Err(why) = check_score(&s) {
                        add(&self.metrics.invalid, 1);
                        return self.dead_letter(d, "invalid_score", &why).await;
                    }
                    if let Some(p) = self.pending.get_mut(&s.meta.event_id) {
                        // A redelivery of a score still held: settle both together.
                        add(&self.metrics.duplicates, 1);
                        p.deliveries.push(d);
                        return Ok(());
                    }
                    let id = s.meta.event_id.clone();
                    match self.feeder.score(s) {
                        Ok(0) => self.epoch_acks.push(d),
                        Ok(n) => {
                            self.pending.insert(
                                id,
                                Pending {
                                    deliveries: vec![d],
                                    remaining: n,
                                },
                            );
                        }
                        Err(why) => {
                            add(&self.metrics.invalid, 1);
                            self.dead_letter(d, "invalid_score", &why).await?;
                        }
                    }
                }
            },
            Source::Market => match AnyEvent::decode(d.payload()) {
                Err(e) => self.dead_letter(d, "decode_error", &e.to_string()).await?,
                Ok(ev) => {
                    if self.cfg.stamp_window_close {
                        if let Some((symbol, ts)) = crate::feed::market_time(&ev) {
                            if let Some(asset) = self.symbols.asset_of_symbol(symbol) {
                                self.epoch_ticks.entry(asset).or_default().push(ts);
                            }
                        }
                    }
                    self.feeder.market(&ev);
                    self.epoch_acks.push(d);
                }
            },
            Source::Articles => match Article::decode_message(d.payload()) {
                Err(e) => self.dead_letter(d, "decode_error", &e.to_string()).await?,
                Ok(a) => {
                    if self.feeder.article(&a) {
                        self.article_seq += 1;
                        self.articles.insert((a.meta.ts_event, self.article_seq), d);
                    } else {
                        self.epoch_acks.push(d);
                    }
                }
            },
        }
        Ok(())
    }

    async fn dead_letter(&self, d: Delivery, reason: &str, why: &str) -> Result<(), FusionError> {
        send_dead_letter(&*self.bus, &self.cfg.name, d, reason, why, &self.stage_metrics).await?;
        Ok(())
    }

    /// Runs the waiting records as one epoch, publishes its outputs and settles what they made
    /// durable. Returns false if cancelled before the outputs could be published.
    async fn epoch(&mut self, engine: &mut Engine, cancel: &CancellationToken) -> Result<bool, FusionError> {
        let (items, control) = self.feeder.take();
        let mut signals = Vec::new();
        let mut late = Vec::new();
        let mut released = Vec::new();
        if !items.is_empty() || !control.is_empty() {
            let n = items.len();
            engine.submit(items, control)?;
            engine
                .collect(&mut |o| match o {
                    Out::Signal(s) => signals.push(AnyEvent::FusedSignal(s)),
                    Out::Late(dl) => late.push(dl),
                    Out::Release(id) => released.push(id),
                    Out::Done => {}
                })
                .await?;
            add(&self.metrics.epochs, 1);
            self.restamp(&mut signals);
            debug!(
                records = n,
                signals = signals.len(),
                late = late.len(),
                "epoch done"
            );
        }
        if !signals.is_empty() {
            // A fused signal continues the trace of the first score it used (inherited by
            // `Meta::derived`) with a span of its own; the others are named in its attributes.
            let start = auroraq_stage::trace::enabled().then(std::time::SystemTime::now);
            for ev in &mut signals {
                let root = auroraq_schemas::TraceContext::of(ev.meta());
                let span = auroraq_stage::trace::stamp(&self.cfg.name, ev.meta_mut(), &root);
                if let Some(start) = start {
                    auroraq_stage::trace::record_outputs(
                        &self.cfg.name,
                        &[span],
                        std::slice::from_ref(ev),
                        None,
                        start,
                    );
                }
            }
        }
        let mut late_msgs = Vec::with_capacity(late.len());
        for dl in late {
            let key = dl.original_key.clone();
            let mut m = to_message(&AnyEvent::DeadLetter(dl)).map_err(StageError::Encode)?;
            m.topic = self.cfg.late_topic.clone();
            m.key = key;
            late_msgs.push(m);
        }
        if !self.publish(&signals, late_msgs, cancel).await? {
            return Ok(false);
        }
        let mut settle = std::mem::take(&mut self.epoch_acks);
        for id in released {
            if let Some(p) = self.pending.get_mut(&id) {
                p.remaining = p.remaining.saturating_sub(1);
                if p.remaining == 0 {
                    if let Some(p) = self.pending.remove(&id) {
                        settle.extend(p.deliveries);
                    }
                }
            }
        }
        if let Some(clock) = self.feeder.clock {
            let cutoff = clock.saturating_sub(self.cfg.article_retention() as i64 * MICROS);
            let keep = self.articles.split_off(&(cutoff, 0));
            settle.extend(std::mem::replace(&mut self.articles, keep).into_values());
        }
        let n = settle.len() as u64;
        for d in settle {
            d.ack().await?;
        }
        add(&self.metrics.acked, n);
        Ok(true)
    }

    /// Publishes until it succeeds (outputs have deterministic ids, so a retry that had in fact
    /// gone through de-duplicates). Returns false if cancelled first.
    async fn publish(
        &self,
        signals: &[AnyEvent],
        late: Vec<OutMessage>,
        cancel: &CancellationToken,
    ) -> Result<bool, FusionError> {
        if signals.is_empty() && late.is_empty() {
            return Ok(true);
        }
        let mut delay = Duration::from_millis(100);
        loop {
            let mut result = Ok(());
            if !signals.is_empty() {
                result = publish_events(&*self.bus, signals).await.map(|_| ());
            }
            if result.is_ok() && !late.is_empty() {
                result = self
                    .bus
                    .publish(late.clone())
                    .await
                    .map(|_| ())
                    .map_err(StageError::from);
            }
            match result {
                Ok(()) => {
                    add(&self.metrics.published, (signals.len() + late.len()) as u64);
                    return Ok(true);
                }
                Err(StageError::Encode(e)) => return Err(StageError::Encode(e).into()),
                Err(e) => {
                    warn!(error = %e, retry_in = ?delay, "publishing fused signals failed");
                    if !sleep_or_cancel(delay, cancel).await {
                        return Ok(false);
                    }
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

/// On event time: reads the inputs merged in event-time order and feeds them to the driver, with
/// how far they have come whenever nothing more is ready.
async fn merged_intake(
    bus: Arc<dyn Bus>,
    cfg: FusionConfig,
    subs: Vec<(Source, Box<dyn Subscription>)>,
    tx: mpsc::Sender<Intake>,
) {
    use auroraq_stage::watermark::{EventTimeReader, Next};
    let scfg = auroraq_stage::StageConfig::new(&cfg.name, "");
    let sources: Vec<Source> = subs.iter().map(|(s, _)| *s).collect();
    let subs = subs
        .into_iter()
        .map(|(s, sub)| (s.filter().to_owned(), sub))
        .collect();
    let metrics = Arc::new(StageMetrics::default());
    let mut reader = EventTimeReader::new(
        bus,
        &scfg,
        subs,
        Vec::new(),
        Vec::new(),
        auroraq_stage::merge::MergeConfig::default(),
        metrics,
    );
    loop {
        let next = match reader.next().await {
            Ok(n) => n,
            Err(e) => {
                warn!(error = %e, "reading the inputs in event time failed");
                return;
            }
        };
        let item = match next {
            Next::Event(h) => {
                let src = sources
                    .iter()
                    .copied()
                    .find(|s| s.filter() == h.filter)
                    .unwrap_or(Source::Market);
                Intake::Delivery(src, Ok(h.delivery))
            }
            Next::Idle => {
                let mut w: Option<Micros> = None;
                for s in &sources {
                    match reader.bound(s.filter()) {
                        Some(b) => w = Some(w.map_or(b, |m| m.min(b))),
                        None => {
                            w = None;
                            break;
                        }
                    }
                }
                match w {
                    Some(w) => Intake::Progress(w),
                    None => continue,
                }
            }
            Next::End => {
                let _ = tx.send(Intake::Progress(Micros::MAX)).await;
                if let Err(e) = reader.drain_late().await {
                    warn!(error = %e, "after the end of the inputs");
                }
                return;
            }
        };
        if tx.send(item).await.is_err() {
            return;
        }
    }
}
