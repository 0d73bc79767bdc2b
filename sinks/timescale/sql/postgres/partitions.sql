-- Native partitioning (PostgreSQL without TimescaleDB): monthly partitions `<table>_pYYYY_MM`
-- covering [first of the month, first of the next month) in UTC, plus `<table>_default` for
-- anything no monthly partition covers yet.
--
-- The sink calls aq_ensure_partition(table, month) for each month its next batch touches before
-- writing it, and aq_ensure_partitions(from, to) for the months ahead at start and when the month
-- changes, so rows land in monthly partitions; the default partition only catches rows written
-- by others, or too far in the future (the sink's `max_future_months`).

-- The partitioned tables AuroraQ owns, in the current schema.
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
                        'portfolio_snapshots', 'alerts', 'dead_letters', 'feed_statuses')
    ORDER BY 1
$$;

-- Creates the monthly partition of `parent` holding `month` (any day of it) unless it exists.
-- Rows of that month already in the default partition move into the new partition, so attaching
-- it cannot fail. Safe to call concurrently (a lock on the parent). Returns whether it created
-- the partition.
CREATE OR REPLACE FUNCTION aq_ensure_partition(parent text, month date) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    m     date        := date_trunc('month', month)::date;
    part  text        := format('%s_p%s', parent, to_char(m, 'YYYY_MM'));
    lo    timestamptz := m::timestamp AT TIME ZONE 'UTC';
    hi    timestamptz := (m + interval '1 month')::timestamp AT TIME ZONE 'UTC';
BEGIN
    IF to_regclass(quote_ident(part)) IS NOT NULL THEN
        RETURN false;
    END IF;
    -- Serialises creators of partitions of this table (without blocking its writers), and
    -- makes this session see partitions that others created meanwhile.
    EXECUTE format('LOCK TABLE %I IN SHARE UPDATE EXCLUSIVE MODE', parent);
    IF to_regclass(quote_ident(part)) IS NOT NULL THEN
        RETURN false;
    END IF;
    EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', part, parent);
    IF to_regclass(quote_ident(parent || '_default')) IS NOT NULL THEN
        EXECUTE format(
            'WITH moved AS (DELETE FROM %I WHERE ts >= $1 AND ts < $2 RETURNING *) INSERT INTO %I SELECT * FROM moved',
            parent || '_default', part) USING lo, hi;
    END IF;
    EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', parent, part, lo, hi);
    RETURN true;
END
$$;

-- Ensures the monthly partitions of every AuroraQ table for the months from `first` to `last`
-- (inclusive). Returns how many it created.
CREATE OR REPLACE FUNCTION aq_ensure_partitions(first date, last date) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    t  text;
    m  date;
    n  integer := 0;
BEGIN
    FOR t IN SELECT aq_partitioned_tables() LOOP
        m := date_trunc('month', first)::date;
        WHILE m <= last LOOP
            IF aq_ensure_partition(t, m) THEN
                n := n + 1;
            END IF;
            m := (m + interval '1 month')::date;
        END LOOP;
    END LOOP;
    RETURN n;
END
$$;

-- A default partition per table, for rows outside every monthly partition.
DO $$
DECLARE
    t text;
BEGIN
    FOR t IN SELECT aq_partitioned_tables() LOOP
        EXECUTE format('CREATE TABLE IF NOT EXISTS %I PARTITION OF %I DEFAULT', t || '_default', t);
    END LOOP;
END
$$;
