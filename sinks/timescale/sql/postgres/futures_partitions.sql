-- Migration 4, native partitioning: the futures tables join the partitioned tables (monthly
-- partitions made ahead and on demand as for the others) and get their default partitions.

CREATE OR REPLACE FUNCTION aq_partitioned_tables() RETURNS SETOF text
LANGUAGE sql STABLE AS $$
    SELECT c.relname::text
    FROM pg_partitioned_table p
    JOIN pg_class c ON c.oid = p.partrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = current_schema()
      AND c.relname IN ('trades', 'klines', 'book_tickers', 'book_updates', 'articles',
                        'sentiment_scores', 'sentiment_asset_scores', 'fused_signals',
                        'order_intents', 'risk_decisions', 'orders', 'fills',
                        'portfolio_snapshots', 'alerts', 'dead_letters', 'feed_statuses',
                        'mark_prices', 'liquidations')
    ORDER BY 1
$$;

CREATE TABLE IF NOT EXISTS mark_prices_default PARTITION OF mark_prices DEFAULT;
CREATE TABLE IF NOT EXISTS liquidations_default PARTITION OF liquidations DEFAULT;
