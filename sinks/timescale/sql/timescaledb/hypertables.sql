-- TimescaleDB: every event table (created by common/tables.sql without its PARTITION BY clause)
-- becomes a hypertable on `ts`. The primary key (ts, event_id) already indexes time, so no
-- default index is added. Chunk intervals follow volume: a day for market data, a week for bars,
-- a month for the rest.

SELECT create_hypertable('trades',                 'ts', chunk_time_interval => INTERVAL '1 day',   create_default_indexes => false, if_not_exists => true);
SELECT create_hypertable('book_tickers',           'ts', chunk_time_interval => INTERVAL '1 day',   create_default_indexes => false, if_not_exists => true);
SELECT create_hypertable('book_updates',           'ts', chunk_time_interval => INTERVAL '1 day',   create_default_indexes => false, if_not_exists => true);
SELECT create_hypertable('klines',                 'ts', chunk_time_interval => INTERVAL '7 days',  create_default_indexes => false, if_not_exists => true);
SELECT create_hypertable('articles',               'ts', chunk_time_interval => INTERVAL '30 days', create_default_indexes => false, if_not_exists => true);
SELECT create_hypertable('sentiment_scores',       'ts', chunk_time_interval => INTERVAL '30 days', create_default_indexes => false, if_not_exists => true);
SELECT create_hypertable('sentiment_asset_scores', 'ts', chunk_time_interval => INTERVAL '30 days', create_default_indexes => false, if_not_exists => true);
SELECT create_hypertable('fused_signals',          'ts', chunk_time_interval => INTERVAL '30 days', create_default_indexes => false, if_not_exists => true);
SELECT create_hypertable('order_intents',          'ts', chunk_time_interval => INTERVAL '30 days', create_default_indexes => false, if_not_exists => true);
SELECT create_hypertable('risk_decisions',         'ts', chunk_time_interval => INTERVAL '30 days', create_default_indexes => false, if_not_exists => true);
SELECT create_hypertable('orders',                 'ts', chunk_time_interval => INTERVAL '30 days', create_default_indexes => false, if_not_exists => true);
SELECT create_hypertable('fills',                  'ts', chunk_time_interval => INTERVAL '30 days', create_default_indexes => false, if_not_exists => true);
SELECT create_hypertable('portfolio_snapshots',    'ts', chunk_time_interval => INTERVAL '30 days', create_default_indexes => false, if_not_exists => true);
SELECT create_hypertable('alerts',                 'ts', chunk_time_interval => INTERVAL '30 days', create_default_indexes => false, if_not_exists => true);
SELECT create_hypertable('dead_letters',           'ts', chunk_time_interval => INTERVAL '30 days', create_default_indexes => false, if_not_exists => true);
SELECT create_hypertable('feed_statuses',          'ts', chunk_time_interval => INTERVAL '30 days', create_default_indexes => false, if_not_exists => true);

-- Compression of old chunks, for the tables that grow: segmented by what queries filter on,
-- ordered by time (the key's event_id last, so the unique key stays checkable).
ALTER TABLE trades SET (timescaledb.compress,
    timescaledb.compress_segmentby = 'exchange, symbol',
    timescaledb.compress_orderby = 'ts DESC, event_id');
ALTER TABLE book_tickers SET (timescaledb.compress,
    timescaledb.compress_segmentby = 'exchange, symbol',
    timescaledb.compress_orderby = 'ts DESC, event_id');
ALTER TABLE book_updates SET (timescaledb.compress,
    timescaledb.compress_segmentby = 'exchange, symbol',
    timescaledb.compress_orderby = 'ts DESC, event_id');
ALTER TABLE klines SET (timescaledb.compress,
    timescaledb.compress_segmentby = 'exchange, symbol, "interval"',
    timescaledb.compress_orderby = 'ts DESC, event_id');
ALTER TABLE articles SET (timescaledb.compress,
    timescaledb.compress_segmentby = 'source',
    timescaledb.compress_orderby = 'ts DESC, event_id');
ALTER TABLE sentiment_scores SET (timescaledb.compress,
    timescaledb.compress_segmentby = 'source',
    timescaledb.compress_orderby = 'ts DESC, event_id');
ALTER TABLE sentiment_asset_scores SET (timescaledb.compress,
    timescaledb.compress_segmentby = 'asset',
    timescaledb.compress_orderby = 'ts DESC, event_id');
ALTER TABLE fused_signals SET (timescaledb.compress,
    timescaledb.compress_segmentby = 'asset',
    timescaledb.compress_orderby = 'ts DESC, event_id');

SELECT add_compression_policy('trades',                 INTERVAL '7 days',  if_not_exists => true);
SELECT add_compression_policy('book_tickers',           INTERVAL '7 days',  if_not_exists => true);
SELECT add_compression_policy('book_updates',           INTERVAL '7 days',  if_not_exists => true);
SELECT add_compression_policy('klines',                 INTERVAL '30 days', if_not_exists => true);
SELECT add_compression_policy('articles',               INTERVAL '90 days', if_not_exists => true);
SELECT add_compression_policy('sentiment_scores',       INTERVAL '90 days', if_not_exists => true);
SELECT add_compression_policy('sentiment_asset_scores', INTERVAL '90 days', if_not_exists => true);
SELECT add_compression_policy('fused_signals',          INTERVAL '90 days', if_not_exists => true);
