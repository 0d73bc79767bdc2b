-- TimescaleDB: continuous aggregates with the same names and columns as the plain views of
-- postgres/aggregates.sql. Real-time (materialized_only = false): the latest, not yet materialised
-- buckets are computed at query time, so dashboards see fresh data between refreshes.
--
-- Refresh policies keep the recent window materialised. Data written far behind the policy
-- window (a replay of last year) is refreshed by the sink itself when it writes it (see the
-- crate's README), or by hand: CALL refresh_continuous_aggregate('trades_1m', NULL, NULL);

-- 1-minute OHLCV bars from trades.
CREATE MATERIALIZED VIEW IF NOT EXISTS trades_1m
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 minute', ts)  AS bucket,
       exchange,
       symbol,
       first(price, ts)                       AS open,
       max(price)                             AS high,
       min(price)                             AS low,
       last(price, ts)                        AS close,
       sum(quantity)                          AS volume,
       sum(price * quantity)                  AS quote_volume,
       count(*)                               AS trades
FROM trades
GROUP BY 1, 2, 3
WITH NO DATA;

-- 1-hour OHLCV bars from trades.
CREATE MATERIALIZED VIEW IF NOT EXISTS trades_1h
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 hour', ts)    AS bucket,
       exchange,
       symbol,
       first(price, ts)                       AS open,
       max(price)                             AS high,
       min(price)                             AS low,
       last(price, ts)                        AS close,
       sum(quantity)                          AS volume,
       sum(price * quantity)                  AS quote_volume,
       count(*)                               AS trades
FROM trades
GROUP BY 1, 2, 3
WITH NO DATA;

-- 1-hour bars from closed klines of one hour or less, per source interval.
CREATE MATERIALIZED VIEW IF NOT EXISTS klines_1h
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 hour', ts)    AS bucket,
       exchange,
       symbol,
       "interval",
       first(open, open_time)                 AS open,
       max(high)                              AS high,
       min(low)                               AS low,
       last(close, open_time)                 AS close,
       sum(volume)                            AS volume,
       count(*)                               AS bars
FROM klines
WHERE closed AND "interval" IN ('1s', '1m', '3m', '5m', '15m', '30m', '1h')
GROUP BY 1, 2, 3, 4
WITH NO DATA;

-- Hourly sentiment per asset.
CREATE MATERIALIZED VIEW IF NOT EXISTS sentiment_1h
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 hour', ts)                     AS bucket,
       asset,
       count(*)                                                AS scores,
       avg(sentiment_score)                                    AS avg_score,
       sum(sentiment_score * confidence) / NULLIF(sum(confidence), 0) AS weighted_score,
       avg(confidence)                                         AS avg_confidence,
       sum(CASE WHEN label = 'positive' THEN 1 ELSE 0 END)     AS positive,
       sum(CASE WHEN label = 'negative' THEN 1 ELSE 0 END)     AS negative,
       sum(CASE WHEN label = 'neutral' THEN 1 ELSE 0 END)      AS neutral
FROM sentiment_asset_scores
GROUP BY 1, 2
WITH NO DATA;

SELECT add_continuous_aggregate_policy('trades_1m',
    start_offset => INTERVAL '3 hours', end_offset => INTERVAL '1 minute',
    schedule_interval => INTERVAL '1 minute', if_not_exists => true);
SELECT add_continuous_aggregate_policy('trades_1h',
    start_offset => INTERVAL '3 days', end_offset => INTERVAL '1 hour',
    schedule_interval => INTERVAL '30 minutes', if_not_exists => true);
SELECT add_continuous_aggregate_policy('klines_1h',
    start_offset => INTERVAL '3 days', end_offset => INTERVAL '1 hour',
    schedule_interval => INTERVAL '30 minutes', if_not_exists => true);
SELECT add_continuous_aggregate_policy('sentiment_1h',
    start_offset => INTERVAL '3 days', end_offset => INTERVAL '1 hour',
    schedule_interval => INTERVAL '30 minutes', if_not_exists => true);

-- Compression of old materialised buckets of the busiest aggregate.
ALTER MATERIALIZED VIEW trades_1m SET (timescaledb.compress = true);
SELECT add_compression_policy('trades_1m', compress_after => INTERVAL '30 days', if_not_exists => true);
