//! The API's live view of the pipeline, fed from the bus: the latest fused signal per asset with
//! a short history (sparklines), the latest scored headlines, prices, portfolios, alerts, and a
//! shadow of the risk stage (the same [`RiskProcessor`] fed the same inputs) for the risk
//! endpoints. Every event it takes is also sent to the WebSocket clients.
//!
//! The subscriptions are transient and start at "now": the view holds what happened since the
//! API started; history is PostgreSQL's job (the REST endpoints read it when configured).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};

use auroraq_bus::{topics, Bus, SubscribeOptions};
use auroraq_risk::RiskProcessor;
use auroraq_schemas::{json::decimals_to_strings, AnyEvent, Micros};
use auroraq_stage::{Processor, WallClock};
use auroraq_util::CancellationToken;
use futures::future::join_all;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::broadcast;
use tracing::{debug, warn};

/// Points kept per asset for the sparkline.
const HISTORY: usize = 240;
/// Scored headlines kept.
const HEADLINES: usize = 100;
/// Alerts kept.
const ALERTS: usize = 50;
/// Article titles kept while their scores are awaited.
const TITLES: usize = 20_000;

/// One message to WebSocket clients: `{"type": ..., "key": ..., "data": ...}`.
#[derive(Clone, Debug, Serialize)]
pub struct LiveMessage {
    /// `fused`, `headline`, `trade`, `bar`, `quote`, `portfolio`, `alert`, `decision`, `order`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The asset or symbol it is about (upper-case), or the agent; empty when none.
    pub key: String,
    pub data: Value,
}

/// A scored headline.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Headline {
    pub article_id: String,
    pub title: String,
    /// The article's source (feed or publisher).
    pub source: String,
    pub url: Option<String>,
    /// Publication time, µs since the epoch.
    pub ts: Micros,
    pub assets: Vec<String>,
    pub label: String,
    pub sentiment_score: f64,
    pub confidence: f64,
}

/// The latest fused signal of an asset, with its recent values.
#[derive(Clone, Debug, Serialize)]
pub struct AssetLive {
    pub signal: Value,
    pub fused_score: f64,
    pub confidence: f64,
    pub trend: String,
    pub scores_used: i32,
    pub window_start: Micros,
    pub window_end: Micros,
    pub weights_used: BTreeMap<String, f64>,
    /// `(window end, fused score)`, oldest first.
    pub history: VecDeque<(Micros, f64)>,
}

#[derive(Default)]
struct Inner {
    fused: BTreeMap<String, AssetLive>,
    headlines: VecDeque<Headline>,
    titles: HashMap<String, (String, String, Option<String>)>,
    title_order: VecDeque<String>,
    prices: BTreeMap<String, Value>,
    portfolios: BTreeMap<String, Value>,
    alerts: VecDeque<Value>,
}

/// The live view. Shared by every request.
pub struct Live {
    inner: RwLock<Inner>,
    risk: Mutex<RiskProcessor>,
    tx: broadcast::Sender<Arc<LiveMessage>>,
    decisions: broadcast::Sender<Arc<auroraq_schemas::RiskDecision>>,
}

/// JSON of an event for clients: decimals as exact strings.
pub fn event_json<T: Serialize>(ev: &T) -> Value {
    let mut v = serde_json::to_value(ev).unwrap_or(Value::Null);
    decimals_to_strings(&mut v);
    v
}

impl Live {
    /// An empty view; `buffer` bounds how far a WebSocket client may fall behind.
    pub fn new(risk: RiskProcessor, buffer: usize) -> Arc<Live> {
        let (tx, _) = broadcast::channel(buffer.max(1));
        let (decisions, _) = broadcast::channel(1024);
        Arc::new(Live {
            inner: RwLock::new(Inner::default()),
            risk: Mutex::new(risk),
            tx,
            decisions,
        })
    }

    /// Receives every live message from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<LiveMessage>> {
        self.tx.subscribe()
    }

    /// Receives every risk decision from now on (for `POST /orders/place`).
    pub fn decisions(&self) -> broadcast::Receiver<Arc<auroraq_schemas::RiskDecision>> {
        self.decisions.subscribe()
    }

    /// WebSocket clients connected now.
    pub fn clients(&self) -> usize {
        self.tx.receiver_count()
    }

    /// Runs `f` on the risk shadow, mutably (a check registers an agent it has not seen).
    pub fn with_risk_mut<T>(&self, f: impl FnOnce(&mut RiskProcessor) -> T) -> T {
        let mut r = self.risk.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut r)
    }

    /// Runs `f` on the risk shadow.
    pub fn with_risk<T>(&self, f: impl FnOnce(&RiskProcessor) -> T) -> T {
        let r = self.risk.lock().unwrap_or_else(|p| p.into_inner());
        f(&r)
    }

    pub fn fused(&self, asset: &str) -> Option<AssetLive> {
        self.read().fused.get(&asset.to_uppercase()).cloned()
    }

    pub fn all_fused(&self) -> BTreeMap<String, AssetLive> {
        self.read().fused.clone()
    }

    /// The latest scored headlines, newest first; only those naming `asset` when given.
    pub fn headlines(&self, asset: Option<&str>, limit: usize) -> Vec<Headline> {
        let asset = asset.map(|a| a.to_uppercase());
        self.read()
            .headlines
            .iter()
            .rev()
            .filter(|h| {
                asset
                    .as_ref()
                    .is_none_or(|a| a == "CRYPTO" || h.assets.contains(a))
            })
            .take(limit)
            .cloned()
            .collect()
    }

    pub fn price(&self, symbol: &str) -> Option<Value> {
        self.read().prices.get(&symbol.to_uppercase()).cloned()
    }

    pub fn portfolios(&self) -> BTreeMap<String, Value> {
        self.read().portfolios.clone()
    }

    pub fn alerts(&self, limit: usize) -> Vec<Value> {
        self.read().alerts.iter().rev().take(limit).cloned().collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn send(&self, kind: &'static str, key: String, data: Value) {
        // No receiver is fine: nobody is watching.
        let _ = self.tx.send(Arc::new(LiveMessage { kind, key, data }));
    }

    /// Takes one event into the view.
    pub fn apply(&self, ev: &AnyEvent) {
        if matches!(
            ev,
            AnyEvent::OrderIntent(_)
                | AnyEvent::OrderUpdate(_)
                | AnyEvent::TradeTick(_)
                | AnyEvent::Kline(_)
                | AnyEvent::BookTicker(_)
                | AnyEvent::Alert(_)
        ) {
            let mut r = self.risk.lock().unwrap_or_else(|p| p.into_inner());
            if let Err(e) = r.process(ev, &WallClock) {
                debug!(error = %e, "risk shadow refused an event");
            }
        }
        match ev {
            AnyEvent::FusedSignal(f) => {
                let asset = f.asset.to_uppercase();
                let data = event_json(f);
                {
                    let mut w = self.inner.write().unwrap_or_else(|p| p.into_inner());
                    let entry = w.fused.entry(asset.clone()).or_insert_with(|| AssetLive {
                        signal: Value::Null,
                        fused_score: 0.0,
                        confidence: 0.0,
                        trend: String::new(),
                        scores_used: 0,
                        window_start: 0,
                        window_end: 0,
                        weights_used: BTreeMap::new(),
                        history: VecDeque::new(),
                    });
                    // Latest by event time: a late or redelivered older signal does not win.
                    if f.window_end >= entry.window_end {
                        entry.signal = data.clone();
                        entry.fused_score = f.fused_score;
                        entry.confidence = f.confidence;
                        entry.trend = f.trend.as_str().to_owned();
                        entry.scores_used = f.scores_used;
                        entry.window_start = f.window_start;
                        entry.window_end = f.window_end;
                        entry.weights_used = f.weights_used.clone();
                    }
                    if entry.history.back().is_none_or(|&(t, _)| t < f.window_end) {
                        entry.history.push_back((f.window_end, f.fused_score));
                        if entry.history.len() > HISTORY {
                            entry.history.pop_front();
                        }
                    }
                }
                self.send("fused", asset, data);
            }
            AnyEvent::Article(a) => {
                let mut w = self.inner.write().unwrap_or_else(|p| p.into_inner());
                let title = a
                    .title
                    .clone()
                    .unwrap_or_else(|| a.text.chars().take(200).collect());
                let source = a.origin.clone().unwrap_or_else(|| a.feed.clone());
                // Articles and scores arrive on different topics, in either order: a headline
                // scored before its article arrived gets its title now.
                if let Some(h) = w.headlines.iter_mut().find(|h| h.article_id == a.article_id) {
                    h.title = title.clone();
                    h.source = source.clone();
                    h.url = a.url.clone();
                }
                if w.titles
                    .insert(a.article_id.clone(), (title, source, a.url.clone()))
                    .is_none()
                {
                    w.title_order.push_back(a.article_id.clone());
                }
                while w.title_order.len() > TITLES {
                    if let Some(old) = w.title_order.pop_front() {
                        w.titles.remove(&old);
                    }
                }
            }
            AnyEvent::SentimentScore(s) => {
                let h = {
                    let mut w = self.inner.write().unwrap_or_else(|p| p.into_inner());
                    let (title, source, url) = w
                        .titles
                        .get(&s.article_id)
                        .cloned()
                        .unwrap_or_else(|| (s.article_id.clone(), s.meta.source.clone(), None));
                    let h = Headline {
                        article_id: s.article_id.clone(),
                        title,
                        source,
                        url,
                        ts: s.meta.ts_event,
                        assets: s.assets.iter().map(|a| a.to_uppercase()).collect(),
                        label: s.label.clone(),
                        sentiment_score: s.sentiment_score,
                        confidence: s.confidence,
                    };
                    if !w.headlines.iter().any(|x| x.article_id == h.article_id) {
                        w.headlines.push_back(h.clone());
                        if w.headlines.len() > HEADLINES {
                            w.headlines.pop_front();
                        }
                    }
                    h
                };
                let key = h.assets.first().cloned().unwrap_or_default();
                self.send("headline", key, serde_json::to_value(&h).unwrap_or(Value::Null));
            }
            AnyEvent::TradeTick(t) => self.price_update("trade", &t.symbol, event_json(t)),
            AnyEvent::Kline(k) => self.price_update("bar", &k.symbol, event_json(k)),
            AnyEvent::BookTicker(b) => self.price_update("quote", &b.symbol, event_json(b)),
            AnyEvent::PortfolioSnapshot(p) => {
                let data = event_json(p);
                self.inner
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .portfolios
                    .insert(p.account.clone(), data.clone());
                self.send("portfolio", p.account.clone(), data);
            }
            AnyEvent::Alert(a) => {
                let data = event_json(a);
                {
                    let mut w = self.inner.write().unwrap_or_else(|p| p.into_inner());
                    w.alerts.push_back(data.clone());
                    if w.alerts.len() > ALERTS {
                        w.alerts.pop_front();
                    }
                }
                self.send("alert", a.subject.clone().unwrap_or_default(), data);
            }
            AnyEvent::RiskDecision(d) => {
                let _ = self.decisions.send(Arc::new(d.clone()));
                self.send("decision", d.agent.clone(), event_json(d));
            }
            AnyEvent::OrderUpdate(u) => self.send("order", u.agent.clone(), event_json(u)),
            _ => {}
        }
    }

    fn price_update(&self, kind: &'static str, symbol: &str, data: Value) {
        let sym = symbol.to_uppercase();
        if kind != "bar" || !self.read().prices.contains_key(&sym) {
            let mut v = data.clone();
            if let Value::Object(m) = &mut v {
                m.insert("type".into(), Value::String(kind.into()));
            }
            self.inner
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .prices
                .insert(sym.clone(), v);
        }
        self.send(kind, sym, data);
    }
}

/// The topics the live view reads.
pub fn filters() -> Vec<String> {
    vec![
        topics::ALL_FUSED.to_owned(),
        topics::SENTIMENT_SCORES.to_owned(),
        topics::ALL_ARTICLES.to_owned(),
        "market.trades.>".to_owned(),
        "market.klines.>".to_owned(),
        "market.tickers.>".to_owned(),
        topics::PORTFOLIO.to_owned(),
        topics::ALERTS.to_owned(),
        topics::ORDER_INTENTS.to_owned(),
        topics::RISK_DECISIONS.to_owned(),
        topics::EXEC_ORDERS.to_owned(),
    ]
}

/// Subscribes to [`filters`] (transient, from now) and feeds `live` until `cancel` fires or the
/// bus closes. Returns once every subscription is made, so that nothing published after it
/// returns is missed.
pub async fn follow(
    bus: Arc<dyn Bus>,
    live: Arc<Live>,
    group: &str,
    cancel: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, auroraq_bus::BusError> {
    let mut subs = Vec::new();
    for f in filters() {
        let opts = SubscribeOptions::new(format!("{group}-{}", topics::token(&f)), f)
            .transient()
            .from_now();
        subs.push(bus.subscribe(opts).await?);
    }
    Ok(tokio::spawn(async move {
        let tasks = subs.into_iter().map(|mut sub| {
            let live = live.clone();
            let cancel = cancel.clone();
            async move {
                loop {
                    let next = tokio::select! {
                        _ = cancel.cancelled() => return,
                        n = sub.next() => n,
                    };
                    let Some(next) = next else { return };
                    let d = match next {
                        Ok(d) => d,
                        Err(e) => {
                            warn!(error = %e, "live view: delivery error");
                            continue;
                        }
                    };
                    match AnyEvent::decode(d.payload()) {
                        Ok(ev) => live.apply(&ev),
                        // A producer's progress, not an event.
                        Err(_) if auroraq_schemas::is_watermark(d.payload()) => {}
                        Err(e) => {
                            metrics::counter!("auroraq_api_live_undecodable_total").increment(1);
                            debug!(topic = d.topic(), error = %e, "live view: undecodable event skipped");
                        }
                    }
                    if let Err(e) = d.ack().await {
                        debug!(error = %e, "live view: ack failed");
                    }
                }
            }
        });
        join_all(tasks).await;
    }))
}
