-- Migration 4: futures market data (Binance USDⓈ-M `markPrice` and `forceOrder`), with the same
-- header columns and key as the tables of common/tables.sql. Native partitioning adds the
-- PARTITION BY clause and postgres/futures_partitions.sql; TimescaleDB runs this without the
-- clause, then timescaledb/futures_hypertables.sql.

CREATE TABLE IF NOT EXISTS mark_prices (
    ts                      timestamptz NOT NULL,   -- the venue's event time
    event_id                text COLLATE "C" NOT NULL,
    source                  text        NOT NULL,
    ts_ingest               timestamptz NOT NULL,
    ts_processed            timestamptz,
    derived_from            text[]      NOT NULL DEFAULT '{}',
    traceparent             text,
    tracestate              text,
    exchange                text        NOT NULL,
    symbol                  text        NOT NULL,
    mark_price              numeric     NOT NULL,
    index_price             numeric,
    estimated_settle_price  numeric,
    funding_rate            numeric,                -- NULL for contracts without funding
    next_funding_time       timestamptz,
    inserted_at             timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (ts, event_id)
) PARTITION BY RANGE (ts);
CREATE INDEX IF NOT EXISTS mark_prices_symbol_ts ON mark_prices (symbol, ts);

CREATE TABLE IF NOT EXISTS liquidations (
    ts                    timestamptz NOT NULL,   -- the venue's event time
    event_id              text COLLATE "C" NOT NULL,
    source                text        NOT NULL,
    ts_ingest             timestamptz NOT NULL,
    ts_processed          timestamptz,
    derived_from          text[]      NOT NULL DEFAULT '{}',
    traceparent           text,
    tracestate            text,
    exchange              text        NOT NULL,
    symbol                text        NOT NULL,
    side                  text        NOT NULL,   -- buy | sell
    order_type            text        NOT NULL,   -- as the venue names it, e.g. LIMIT
    time_in_force         text        NOT NULL,   -- e.g. IOC
    quantity              numeric     NOT NULL,   -- original quantity
    price                 numeric     NOT NULL,
    average_price         numeric     NOT NULL,
    status                text        NOT NULL,   -- e.g. FILLED
    last_filled_quantity  numeric     NOT NULL,
    filled_quantity       numeric     NOT NULL,   -- accumulated
    trade_time            timestamptz NOT NULL,
    inserted_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (ts, event_id)
) PARTITION BY RANGE (ts);
CREATE INDEX IF NOT EXISTS liquidations_symbol_ts ON liquidations (symbol, ts);
