//! `/api/v1/sentiment/...`: scoring texts with the pipeline's model (through its batcher), the
//! realtime fused sentiment of an asset, and fusion of given scores with fusion's own arithmetic.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use auroraq_fusion::fuse::{fuse_window, FuseParams, ScoreView};
use auroraq_sentiment::scorer::ScoreError;
use auroraq_util::time::rfc3339;
use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::cache::{key as cache_key, CachedPrediction};
use crate::error::{ErrorBody, HttpError};
use crate::http::{ApiJson, ApiPath, ApiQuery};
use crate::state::AppState;

/// Longest text accepted, characters.
pub const MAX_TEXT_CHARS: usize = 10_000;
/// Most texts in one batch request.
pub const MAX_BATCH: usize = 100;
/// Keywords returned per text.
const KEYWORDS: usize = 8;

fn default_asset() -> String {
    "CRYPTO".into()
}

/// Whether the caller scores live news or replays history (reported back; both use the same model).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Live,
    Backtest,
}

impl Mode {
    /// `live` or `backtest` (any case); empty is `live`.
    pub fn parse(s: &str) -> Result<Mode, HttpError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "live" => Ok(Mode::Live),
            "backtest" => Ok(Mode::Backtest),
            other => Err(HttpError::invalid(format!(
                "mode {other:?} must be \"live\" or \"backtest\""
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Live => "live",
            Mode::Backtest => "backtest",
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AnalyzeRequest {
    /// 1 to 10,000 characters.
    pub text: String,
    #[serde(default = "default_asset")]
    pub asset: String,
    #[serde(default)]
    pub mode: Mode,
    /// When the text was published (echoed back), e.g. `2025-05-01T12:00:00Z`.
    #[serde(default)]
    pub timestamp: Option<String>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct AnalyzeResponse {
    /// 0.5 + (P(positive) - P(negative)) / 2, in [0, 1].
    pub sentiment_score: f64,
    pub label: String,
    /// Probability of the label.
    pub confidence: f64,
    pub probabilities: BTreeMap<String, f64>,
    /// The text's salient financial terms, most salient first.
    pub keywords: Vec<String>,
    /// The scenario the text belongs to (see `auroraq_text::scenario`).
    pub scenario_tag: String,
    /// Seconds this text took to score (queueing, batching and inference; 0 from the cache).
    pub processing_time: f64,
    /// `<model id>@sha256:<model file sha256>`.
    pub model_version: String,
    pub asset: String,
    pub mode: Mode,
    pub timestamp: Option<String>,
    /// The text was cut to the model's input limit.
    pub truncated: bool,
    /// Answered from the cache.
    pub cached: bool,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// 1 to 100 texts, each 1 to 10,000 characters.
    pub texts: Vec<String>,
    #[serde(default = "default_asset")]
    pub asset: String,
    #[serde(default)]
    pub mode: Mode,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BatchResponse {
    /// In the order of `texts`.
    pub results: Vec<AnalyzeResponse>,
    pub total_processed: usize,
    /// Mean of the results' `processing_time`, seconds.
    pub avg_processing_time: f64,
}

/// An asset name: 1 to 32 of `[A-Za-z0-9_-]`, upper-cased.
pub fn check_asset(asset: &str) -> Result<String, HttpError> {
    let a = asset.trim();
    if a.is_empty()
        || a.len() > 32
        || !a
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(HttpError::invalid(format!(
            "asset {asset:?} must be 1 to 32 letters, digits, '_' or '-'"
        )));
    }
    Ok(a.to_uppercase())
}

fn check_text(text: &str, what: &str) -> Result<(), HttpError> {
    let n = text.chars().count();
    if text.trim().is_empty() {
        return Err(HttpError::invalid(format!("{what} is empty")));
    }
    if n > MAX_TEXT_CHARS {
        return Err(HttpError::invalid(format!(
            "{what} has {n} characters; at most {MAX_TEXT_CHARS} are accepted"
        )));
    }
    Ok(())
}

fn score_error(e: ScoreError, what: &str) -> HttpError {
    match e {
        ScoreError::Text(t) => HttpError::invalid(format!("{what}: {t}")),
        ScoreError::Overloaded(n) => HttpError::overloaded(
            format!("the model's queue is full ({n} texts waiting); retry shortly"),
            std::time::Duration::from_secs(1),
        ),
        ScoreError::Stopped => HttpError::unavailable("the model is shutting down"),
        ScoreError::Tokenize(m) | ScoreError::Inference(m) => HttpError::internal(format!("{what}: {m}")),
    }
}

/// Scores texts: cache first (in process, then Redis), the rest through the batcher together.
async fn score_texts(st: &AppState, texts: &[&str]) -> Result<Vec<(CachedPrediction, f64, bool)>, HttpError> {
    let Some(scorer) = &st.backends.scorer else {
        return Err(HttpError::unavailable("no sentiment model is loaded in this API"));
    };
    let sha = &scorer.classifier().model_sha256;
    let keys: Vec<String> = texts.iter().map(|t| cache_key(sha, t)).collect();
    let mut out: Vec<Option<(CachedPrediction, f64, bool)>> = vec![None; texts.len()];
    for (i, k) in keys.iter().enumerate() {
        if let Some(p) = st.cache.get(k) {
            out[i] = Some((p, 0.0, true));
        }
    }
    if let Some(redis) = &st.backends.redis {
        let missing: Vec<usize> = (0..texts.len()).filter(|&i| out[i].is_none()).collect();
        if !missing.is_empty() {
            let mut cmd = redis::cmd("MGET");
            for &i in &missing {
                cmd.arg(format!("{}api:cache:{}", redis.prefix, keys[i]));
            }
            // The cache is an optimisation: a Redis failure only costs inference.
            if let Ok(values) = redis.cmd::<Vec<Option<String>>>(&cmd).await {
                for (&i, v) in missing.iter().zip(values) {
                    if let Some(p) = v.and_then(|v| serde_json::from_str::<CachedPrediction>(&v).ok()) {
                        st.cache.put(keys[i].clone(), p.clone());
                        out[i] = Some((p, 0.0, true));
                    }
                }
            }
        }
    }
    let todo: Vec<usize> = (0..texts.len()).filter(|&i| out[i].is_none()).collect();
    let hits = texts.len() - todo.len();
    metrics::counter!("auroraq_api_cache_hits_total").increment(hits as u64);
    metrics::counter!("auroraq_api_cache_misses_total").increment(todo.len() as u64);
    if !todo.is_empty() {
        let t0 = Instant::now();
        let batch: Vec<&str> = todo.iter().map(|&i| texts[i]).collect();
        let results = scorer.score_many(&batch).await;
        let elapsed = t0.elapsed().as_secs_f64();
        let mut fresh = Vec::new();
        for (&i, r) in todo.iter().zip(results) {
            let what = if texts.len() == 1 {
                "text".to_string()
            } else {
                format!("texts[{i}]")
            };
            let s = r.map_err(|e| score_error(e, &what))?;
            let p = CachedPrediction {
                label: s.prediction.label.clone(),
                sentiment_score: s.prediction.sentiment_score,
                confidence: s.prediction.confidence,
                probabilities: s.prediction.probabilities.clone(),
                truncated: s.truncated,
            };
            st.cache.put(keys[i].clone(), p.clone());
            fresh.push(i);
            out[i] = Some((p, elapsed, false));
        }
        if let Some(redis) = &st.backends.redis {
            let mut pipe = redis::cmd("MSET");
            for &i in &fresh {
                if let Some((p, _, _)) = &out[i] {
                    pipe.arg(format!("{}api:cache:{}", redis.prefix, keys[i]))
                        .arg(serde_json::to_string(p).unwrap_or_default());
                }
            }
            let _ = redis.cmd::<()>(&pipe).await;
        }
    }
    Ok(out.into_iter().flatten().collect())
}

fn response(
    st: &AppState,
    text: &str,
    (p, secs, cached): (CachedPrediction, f64, bool),
    asset: &str,
    mode: Mode,
    timestamp: Option<String>,
) -> AnalyzeResponse {
    AnalyzeResponse {
        sentiment_score: p.sentiment_score,
        label: p.label,
        confidence: p.confidence,
        probabilities: p.probabilities,
        keywords: auroraq_text::keywords::keywords(text, KEYWORDS),
        scenario_tag: st.backends.taxonomy.tag(text).tag,
        processing_time: secs,
        model_version: st.model_version.clone(),
        asset: asset.to_owned(),
        mode,
        timestamp,
        truncated: p.truncated,
        cached,
    }
}

/// Scores one text.
#[utoipa::path(post, path = "/api/v1/sentiment/analyze", request_body = AnalyzeRequest,
    responses((status = 200, body = AnalyzeResponse), (status = 400, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])), tag = "sentiment")]
pub async fn analyze(
    State(st): State<Arc<AppState>>,
    ApiJson(req): ApiJson<AnalyzeRequest>,
) -> Result<Json<AnalyzeResponse>, HttpError> {
    let mut out = analyze_texts(&st, &[req.text.as_str()], &req.asset, req.mode).await?;
    let mut r = out.pop().ok_or_else(|| HttpError::internal("no result"))?;
    r.timestamp = req.timestamp;
    Ok(Json(r))
}

/// Scores texts (validated: 1 to 100, each 1 to 10,000 characters) for REST and gRPC alike.
pub async fn analyze_texts(
    st: &AppState,
    texts: &[&str],
    asset: &str,
    mode: Mode,
) -> Result<Vec<AnalyzeResponse>, HttpError> {
    if texts.is_empty() || texts.len() > MAX_BATCH {
        return Err(HttpError::invalid(format!(
            "texts has {} entries; send 1 to {MAX_BATCH}",
            texts.len()
        )));
    }
    for (i, t) in texts.iter().enumerate() {
        check_text(
            t,
            &if texts.len() == 1 {
                "text".to_string()
            } else {
                format!("texts[{i}]")
            },
        )?;
    }
    let asset = check_asset(asset)?;
    let scored = score_texts(st, texts).await?;
    Ok(texts
        .iter()
        .zip(scored)
        .map(|(t, scored)| response(st, t, scored, &asset, mode, None))
        .collect())
}

/// Scores up to 100 texts together.
#[utoipa::path(post, path = "/api/v1/sentiment/batch", request_body = BatchRequest,
    responses((status = 200, body = BatchResponse), (status = 400, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])), tag = "sentiment")]
pub async fn batch(
    State(st): State<Arc<AppState>>,
    ApiJson(req): ApiJson<BatchRequest>,
) -> Result<Json<BatchResponse>, HttpError> {
    let refs: Vec<&str> = req.texts.iter().map(String::as_str).collect();
    let results = analyze_texts(&st, &refs, &req.asset, req.mode).await?;
    let n = results.len();
    let avg = results.iter().map(|r| r.processing_time).sum::<f64>() / n.max(1) as f64;
    Ok(Json(BatchResponse {
        results,
        total_processed: n,
        avg_processing_time: avg,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RealtimeQuery {
    /// How far back the history and the article count reach, hours (1 to 168; default 6).
    pub hours_back: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryPoint {
    /// The window's end, RFC 3339.
    pub ts: String,
    pub fused_score: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RealtimeResponse {
    pub asset: String,
    /// The latest fused score in [0, 1]; `null` when none is known.
    pub fused_score: Option<f64>,
    pub confidence: Option<f64>,
    /// Articles naming the asset within `hours_back`.
    pub article_count: i64,
    /// `rising`, `falling` or `stable` (`unknown` without a signal).
    pub trend: String,
    /// Share of the weight per news source in the latest window.
    pub weights_used: BTreeMap<String, f64>,
    pub window_start: Option<String>,
    pub window_end: Option<String>,
    /// Fused scores within `hours_back`, oldest first.
    pub history: Vec<HistoryPoint>,
    /// Where the answer came from, in order of use: `redis`, `postgres`, `live`.
    pub sources: Vec<String>,
    pub hours_back: u32,
}

/// The latest fused sentiment of an asset: Redis live state, PostgreSQL behind it, and the API's
/// own live view when neither is configured.
#[utoipa::path(get, path = "/api/v1/sentiment/{asset}/realtime", params(("asset" = String, Path), RealtimeQuery),
    responses((status = 200, body = RealtimeResponse), (status = 400, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])), tag = "sentiment")]
pub async fn realtime(
    State(st): State<Arc<AppState>>,
    ApiPath(asset): ApiPath<String>,
    ApiQuery(q): ApiQuery<RealtimeQuery>,
) -> Result<Json<RealtimeResponse>, HttpError> {
    realtime_of(&st, &asset, q.hours_back.unwrap_or(6))
        .await
        .map(Json)
}

/// The realtime view of an asset, for REST and gRPC alike.
pub async fn realtime_of(st: &AppState, asset: &str, hours: u32) -> Result<RealtimeResponse, HttpError> {
    let asset = check_asset(asset)?;
    if !(1..=168).contains(&hours) {
        return Err(HttpError::invalid("hours_back must be 1 to 168"));
    }
    let mut r = RealtimeResponse {
        asset: asset.clone(),
        fused_score: None,
        confidence: None,
        article_count: 0,
        trend: "unknown".into(),
        weights_used: BTreeMap::new(),
        window_start: None,
        window_end: None,
        history: Vec::new(),
        sources: Vec::new(),
        hours_back: hours,
    };
    if let Some(redis) = &st.backends.redis {
        let key = format!("{}fused:latest:{}", redis.prefix, asset);
        let h: BTreeMap<String, String> = redis.cmd(redis::cmd("HGETALL").arg(&key)).await?;
        if let Some(score) = h.get("fused_score").and_then(|v| v.parse::<f64>().ok()) {
            r.fused_score = Some(score);
            r.confidence = h.get("confidence").and_then(|v| v.parse().ok());
            r.trend = h.get("trend").cloned().unwrap_or_else(|| "unknown".into());
            if let Some(j) = h
                .get("json")
                .and_then(|j| serde_json::from_str::<serde_json::Value>(j).ok())
            {
                r.weights_used = serde_json::from_value(j["weights_used"].clone()).unwrap_or_default();
                r.window_start = j["window_start"].as_i64().map(rfc3339);
                r.window_end = j["window_end"].as_i64().map(rfc3339);
            }
            r.sources.push("redis".into());
        }
    }
    if let Some(pg) = &st.backends.postgres {
        let since = hours as i32;
        let rows = pg
            .query(
                "SELECT (extract(epoch FROM window_end) * 1000000)::bigint, fused_score, confidence, trend, \
                        weights_used::text, (extract(epoch FROM window_start) * 1000000)::bigint \
                 FROM fused_signals WHERE asset = $1 AND ts > now() - make_interval(hours => $2::int) ORDER BY window_end",
                &[&asset, &since],
            )
            .await?;
        // Event time may lag the wall clock (a replay): then the latest windows are the history.
        let rows = if rows.is_empty() {
            pg.query(
                "SELECT * FROM (SELECT (extract(epoch FROM window_end) * 1000000)::bigint AS e, fused_score, \
                        confidence, trend, weights_used::text, (extract(epoch FROM window_start) * 1000000)::bigint \
                 FROM fused_signals WHERE asset = $1 ORDER BY window_end DESC LIMIT 240) t ORDER BY e",
                &[&asset],
            )
            .await?
        } else {
            rows
        };
        if let Some(last) = rows.last() {
            if r.fused_score.is_none() {
                r.fused_score = Some(last.get::<_, f64>(1));
                r.confidence = Some(last.get::<_, f64>(2));
                r.trend = last.get::<_, String>(3);
                r.weights_used = serde_json::from_str(&last.get::<_, String>(4)).unwrap_or_default();
                r.window_start = Some(rfc3339(last.get::<_, i64>(5)));
                r.window_end = Some(rfc3339(last.get::<_, i64>(0)));
            }
            let end = last.get::<_, i64>(0);
            let from = end - hours as i64 * 3_600_000_000;
            r.history = rows
                .iter()
                .filter(|row| row.get::<_, i64>(0) > from)
                .map(|row| HistoryPoint {
                    ts: rfc3339(row.get::<_, i64>(0)),
                    fused_score: row.get::<_, f64>(1),
                })
                .collect();
            let count = pg
                .query(
                    "SELECT count(DISTINCT article_id) FROM sentiment_asset_scores \
                     WHERE asset = $1 AND ts > to_timestamp($2::double precision / 1e6)",
                    &[&asset, &(from as f64)],
                )
                .await?;
            r.article_count = count.first().map(|c| c.get::<_, i64>(0)).unwrap_or(0);
            r.sources.push("postgres".into());
        }
    }
    if r.fused_score.is_none() || r.history.is_empty() {
        if let Some(l) = st.live.fused(&asset) {
            if r.fused_score.is_none() {
                r.fused_score = Some(l.fused_score);
                r.confidence = Some(l.confidence);
                r.trend = l.trend.clone();
                r.weights_used = l.weights_used.clone();
                r.window_start = Some(rfc3339(l.window_start));
                r.window_end = Some(rfc3339(l.window_end));
            }
            let from = l.window_end - hours as i64 * 3_600_000_000;
            r.history = l
                .history
                .iter()
                .filter(|(t, _)| *t > from)
                .map(|&(t, v)| HistoryPoint {
                    ts: rfc3339(t),
                    fused_score: v,
                })
                .collect();
            if r.article_count == 0 {
                r.article_count = st
                    .live
                    .headlines(Some(&asset), usize::MAX)
                    .iter()
                    .filter(|h| h.ts > from)
                    .count() as i64;
            }
            r.sources.push("live".into());
        }
    }
    Ok(r)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FusionRequest {
    /// Score in [0, 1] by source name (1 to 50 sources).
    pub sentiment_scores: BTreeMap<String, f64>,
    #[serde(default = "default_asset")]
    pub symbol: String,
    /// RFC 3339 or absent (now); only the recency weights depend on it, and all scores share it.
    #[serde(default)]
    pub timestamp: Option<String>,
    /// Confidence per source in [0, 1]; absent sources count 1.
    #[serde(default)]
    pub confidences: BTreeMap<String, f64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FusionResponse {
    pub symbol: String,
    pub fused_score: f64,
    pub confidence: f64,
    /// Share of the total weight per source.
    pub weights_used: BTreeMap<String, f64>,
    pub trend: String,
    pub sources_used: usize,
    /// Sources rejected as outliers.
    pub outliers: Vec<String>,
    pub timestamp: Option<String>,
}

/// Fuses scores from several sources with the fusion stage's own weights and outlier rejection.
#[utoipa::path(post, path = "/api/v1/sentiment/fusion", request_body = FusionRequest,
    responses((status = 200, body = FusionResponse), (status = 400, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])), tag = "sentiment")]
pub async fn fusion(
    State(st): State<Arc<AppState>>,
    ApiJson(req): ApiJson<FusionRequest>,
) -> Result<Json<FusionResponse>, HttpError> {
    fuse(&st, req).map(Json)
}

/// Fuses given scores with the fusion stage's arithmetic, for REST and gRPC alike.
pub fn fuse(st: &AppState, req: FusionRequest) -> Result<FusionResponse, HttpError> {
    let symbol = check_asset(&req.symbol)?;
    let n = req.sentiment_scores.len();
    if n == 0 || n > 50 {
        return Err(HttpError::invalid(format!(
            "sentiment_scores has {n} sources; send 1 to 50"
        )));
    }
    let mut views = Vec::with_capacity(n);
    for (i, (source, &value)) in req.sentiment_scores.iter().enumerate() {
        if source.trim().is_empty() || source.len() > 64 {
            return Err(HttpError::invalid("source names must be 1 to 64 characters"));
        }
        if !(value.is_finite() && (0.0..=1.0).contains(&value)) {
            return Err(HttpError::invalid(format!(
                "sentiment_scores[{source:?}] = {value} is not in [0, 1]"
            )));
        }
        let confidence = req.confidences.get(source).copied().unwrap_or(1.0);
        if !(confidence.is_finite() && (0.0..=1.0).contains(&confidence)) {
            return Err(HttpError::invalid(format!(
                "confidences[{source:?}] is not in [0, 1]"
            )));
        }
        let source = source.trim().to_lowercase();
        views.push(ScoreView {
            id: source.clone(),
            ts: 0,
            value,
            confidence,
            // One story per source: distinct keys, so no source is merged into another.
            keys: vec![i as u64],
            source,
        });
    }
    let params = FuseParams::from_config(&st.backends.fusion);
    let fused = fuse_window(&params, 0, &views, &mut VecDeque::new());
    Ok(FusionResponse {
        symbol,
        fused_score: fused.fused_score,
        confidence: fused.confidence,
        weights_used: fused.weights_used,
        trend: fused.trend.as_str().to_owned(),
        sources_used: fused.sources_used,
        outliers: fused.outliers,
        timestamp: req.timestamp,
    })
}
