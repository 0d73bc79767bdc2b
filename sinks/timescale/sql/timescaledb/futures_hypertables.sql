-- Migration 4, TimescaleDB: the futures tables as hypertables (a day per chunk, as the other
-- market data), compressed after 7 days.

SELECT create_hypertable('mark_prices',  'ts', chunk_time_interval => INTERVAL '1 day', create_default_indexes => false, if_not_exists => true);
SELECT create_hypertable('liquidations', 'ts', chunk_time_interval => INTERVAL '1 day', create_default_indexes => false, if_not_exists => true);

ALTER TABLE mark_prices SET (timescaledb.compress,
    timescaledb.compress_segmentby = 'exchange, symbol',
    timescaledb.compress_orderby = 'ts DESC, event_id');
ALTER TABLE liquidations SET (timescaledb.compress,
    timescaledb.compress_segmentby = 'exchange, symbol',
    timescaledb.compress_orderby = 'ts DESC, event_id');

SELECT add_compression_policy('mark_prices',  INTERVAL '7 days', if_not_exists => true);
SELECT add_compression_policy('liquidations', INTERVAL '7 days', if_not_exists => true);
