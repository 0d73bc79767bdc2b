-- Aggregates on PostgreSQL without TimescaleDB: plain views with the same names and columns as
-- the continuous aggregates of timescaledb/aggregates.sql, so dashboards read either. They are
-- computed when queried (no materialisation): filter on `bucket` and on the grouping columns.
--
-- first/last by time are taken with array_agg(... ORDER BY ts)[1]; ties on ts break by event id.

-- 1-minute OHLCV bars from trades.
CREATE OR REPLACE VIEW trades_1m AS
SELECT date_trunc('minute', ts, 'UTC')                                    AS bucket,
       exchange,
       symbol,
       (array_agg(price ORDER BY ts, event_id))[1]                 AS open,
       max(price)                                                  AS high,
       min(price)                                                  AS low,
       (array_agg(price ORDER BY ts DESC, event_id DESC))[1]       AS close,
       sum(quantity)                                               AS volume,
       sum(price * quantity)                                       AS quote_volume,
       count(*)                                                    AS trades
FROM trades
GROUP BY 1, 2, 3;

-- 1-hour OHLCV bars from trades.
CREATE OR REPLACE VIEW trades_1h AS
SELECT date_trunc('hour', ts, 'UTC')                                      AS bucket,
       exchange,
       symbol,
       (array_agg(price ORDER BY ts, event_id))[1]                 AS open,
       max(price)                                                  AS high,
       min(price)                                                  AS low,
       (array_agg(price ORDER BY ts DESC, event_id DESC))[1]       AS close,
       sum(quantity)                                               AS volume,
       sum(price * quantity)                                       AS quote_volume,
       count(*)                                                    AS trades
FROM trades
GROUP BY 1, 2, 3;

-- 1-hour bars from closed klines of one hour or less, per source interval (a kline's ts is its
-- close, so it falls in the hour it belongs to).
CREATE OR REPLACE VIEW klines_1h AS
SELECT date_trunc('hour', ts, 'UTC')                                      AS bucket,
       exchange,
       symbol,
       "interval",
       (array_agg(open ORDER BY open_time, event_id))[1]           AS open,
       max(high)                                                   AS high,
       min(low)                                                    AS low,
       (array_agg(close ORDER BY open_time DESC, event_id DESC))[1] AS close,
       sum(volume)                                                 AS volume,
       count(*)                                                    AS bars
FROM klines
WHERE closed AND "interval" IN ('1s', '1m', '3m', '5m', '15m', '30m', '1h')
GROUP BY 1, 2, 3, 4;

-- Hourly sentiment per asset.
CREATE OR REPLACE VIEW sentiment_1h AS
SELECT date_trunc('hour', ts, 'UTC')                                      AS bucket,
       asset,
       count(*)                                                    AS scores,
       avg(sentiment_score)                                        AS avg_score,
       sum(sentiment_score * confidence) / NULLIF(sum(confidence), 0) AS weighted_score,
       avg(confidence)                                             AS avg_confidence,
       sum(CASE WHEN label = 'positive' THEN 1 ELSE 0 END)         AS positive,
       sum(CASE WHEN label = 'negative' THEN 1 ELSE 0 END)         AS negative,
       sum(CASE WHEN label = 'neutral' THEN 1 ELSE 0 END)          AS neutral
FROM sentiment_asset_scores
GROUP BY 1, 2;
