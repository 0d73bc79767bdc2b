-- Sentiment per asset over time.

-- Fused signals as the fusion stage emitted them.
CREATE OR REPLACE VIEW dash_fused AS
SELECT ts, asset, fused_score, confidence, trend, scores_used, scores_rejected, sources_used,
       window_start, window_end, source
FROM fused_signals;

-- The latest fused signal per asset.
CREATE OR REPLACE VIEW dash_fused_latest AS
SELECT DISTINCT ON (asset)
       asset, ts, fused_score, confidence, trend, scores_used, sources_used
FROM fused_signals
ORDER BY asset, ts DESC, event_id DESC;

-- Per asset and hour: the article sentiment (from sentiment_1h) and the fused signal (mean of
-- the hour's fused scores, and the last one).
CREATE OR REPLACE VIEW dash_sentiment_hourly AS
WITH fused AS (
    SELECT date_trunc('hour', ts, 'UTC')                                   AS bucket,
           asset,
           avg(fused_score)                                         AS fused_avg,
           (array_agg(fused_score ORDER BY ts DESC, event_id DESC))[1] AS fused_last,
           (array_agg(trend ORDER BY ts DESC, event_id DESC))[1]       AS trend_last,
           count(*)                                                 AS signals
    FROM fused_signals
    GROUP BY 1, 2
)
SELECT COALESCE(s.bucket, f.bucket)   AS bucket,
       COALESCE(s.asset, f.asset)     AS asset,
       COALESCE(s.scores, 0)          AS scores,
       s.avg_score,
       s.weighted_score,
       s.avg_confidence,
       COALESCE(s.positive, 0)        AS positive,
       COALESCE(s.negative, 0)        AS negative,
       COALESCE(s.neutral, 0)         AS neutral,
       COALESCE(f.signals, 0)         AS signals,
       f.fused_avg,
       f.fused_last,
       f.trend_last
FROM sentiment_1h s
FULL OUTER JOIN fused f ON f.bucket = s.bucket AND f.asset = s.asset;

-- Price and sentiment side by side, per asset and hour.
CREATE OR REPLACE VIEW dash_price_sentiment_hourly AS
SELECT COALESCE(p.bucket, s.bucket)   AS bucket,
       COALESCE(p.asset, s.asset)     AS asset,
       p.close                        AS price,
       s.weighted_score,
       s.scores,
       s.fused_avg,
       s.fused_last
FROM dash_prices_hourly p
FULL OUTER JOIN dash_sentiment_hourly s ON s.bucket = p.bucket AND s.asset = p.asset;
