-- Prices per asset over time.

-- Bars from every source: 1-minute bars built from trades, and the klines as received (closed
-- ones), with the asset each symbol trades. `granularity` says which: '1m' for trade bars, the
-- kline interval otherwise. Filter on `bucket` (bar open time) and `asset`.
CREATE OR REPLACE VIEW dash_prices AS
SELECT bucket,
       aq_base_asset(symbol) AS asset,
       exchange,
       symbol,
       'trades'::text        AS origin,
       '1m'::text            AS granularity,
       open, high, low, close, volume
FROM trades_1m
UNION ALL
SELECT open_time             AS bucket,
       aq_base_asset(symbol) AS asset,
       exchange,
       symbol,
       'klines'::text        AS origin,
       "interval"            AS granularity,
       open, high, low, close, volume
FROM klines
WHERE closed;

-- One hourly close per asset: the mean of its symbols' last closes in the hour, from trade bars
-- and from klines of an hour or less.
CREATE OR REPLACE VIEW dash_prices_hourly AS
SELECT bucket,
       asset,
       avg(close)              AS close,
       count(DISTINCT symbol)  AS symbols
FROM (
    SELECT bucket, aq_base_asset(symbol) AS asset, symbol, close FROM trades_1h
    UNION ALL
    SELECT bucket, aq_base_asset(symbol) AS asset, symbol, close FROM klines_1h
) p
GROUP BY bucket, asset;

-- Every asset seen in prices, sentiment or fused signals (for a dashboard's asset picker).
CREATE OR REPLACE VIEW dash_assets AS
SELECT DISTINCT asset FROM (
    SELECT asset FROM fused_signals
    UNION ALL SELECT asset FROM sentiment_asset_scores
    UNION ALL SELECT aq_base_asset(symbol) FROM (SELECT DISTINCT symbol FROM klines) k
    UNION ALL SELECT aq_base_asset(symbol) FROM (SELECT DISTINCT symbol FROM trades
                                                  WHERE ts > now() - INTERVAL '30 days') t
) a;
