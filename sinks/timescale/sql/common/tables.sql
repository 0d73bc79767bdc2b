-- AuroraQ event tables: one per event kind (plus `fills`, the fills among order updates, and
-- `sentiment_asset_scores`, one row per (score, asset)).
--
-- Every table starts with the event header: `ts` is the event's `ts_event` (deterministic, so a
-- redelivered event has the same key), then its id, source, ingest/processing times, lineage and
-- W3C trace context; `inserted_at` is when the sink committed the row. Decimals are `numeric`
-- (exact, with the scale the source gave), times `timestamptz`, maps and nested lists `jsonb`,
-- lists of strings `text[]`.
--
-- The key is (ts, event_id): unique per event, and it holds the partitioning column, as both
-- native partitioning and TimescaleDB hypertables require. `ts` first keeps index inserts at the
-- right edge of the B-tree, and serves time-range scans. Event ids are hex: they compare
-- bytewise (COLLATE "C"), whatever the database's collation.
--
-- This file is written for native partitioning (PostgreSQL without TimescaleDB): each table is
-- partitioned by range of `ts` (monthly partitions and a default one, see partitions.sql). On
-- TimescaleDB the migration runs the same file without the `PARTITION BY RANGE (ts)` clauses and
-- turns each table into a hypertable instead (timescaledb/hypertables.sql). Same names, same
-- columns either way.

CREATE TABLE IF NOT EXISTS trades (
    ts            timestamptz NOT NULL,
    event_id      text COLLATE "C" NOT NULL,
    source        text        NOT NULL,
    ts_ingest     timestamptz NOT NULL,
    ts_processed  timestamptz,
    derived_from  text[]      NOT NULL DEFAULT '{}',
    traceparent   text,
    tracestate    text,
    exchange      text        NOT NULL,
    symbol        text        NOT NULL,
    trade_id      text        NOT NULL,
    price         numeric     NOT NULL,
    quantity      numeric     NOT NULL,
    aggressor     text        NOT NULL,   -- buy | sell | unknown (the taker's side)
    aggregated    boolean     NOT NULL,
    inserted_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (ts, event_id)
) PARTITION BY RANGE (ts);
CREATE INDEX IF NOT EXISTS trades_symbol_ts ON trades (symbol, ts);

CREATE TABLE IF NOT EXISTS klines (
    ts            timestamptz NOT NULL,   -- ts_event: the bar's close
    event_id      text COLLATE "C" NOT NULL,
    source        text        NOT NULL,
    ts_ingest     timestamptz NOT NULL,
    ts_processed  timestamptz,
    derived_from  text[]      NOT NULL DEFAULT '{}',
    traceparent   text,
    tracestate    text,
    exchange      text        NOT NULL,
    symbol        text        NOT NULL,
    "interval"    text        NOT NULL,   -- 1m, 1h, 1d, ...
    open_time     timestamptz NOT NULL,
    close_time    timestamptz NOT NULL,
    open          numeric     NOT NULL,
    high          numeric     NOT NULL,
    low           numeric     NOT NULL,
    close         numeric     NOT NULL,
    volume        numeric     NOT NULL,
    quote_volume  numeric,
    trades        bigint,
    closed        boolean     NOT NULL,
    inserted_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (ts, event_id)
) PARTITION BY RANGE (ts);
CREATE INDEX IF NOT EXISTS klines_symbol_ts ON klines (symbol, "interval", ts);

CREATE TABLE IF NOT EXISTS book_tickers (
    ts            timestamptz NOT NULL,
    event_id      text COLLATE "C" NOT NULL,
    source        text        NOT NULL,
    ts_ingest     timestamptz NOT NULL,
    ts_processed  timestamptz,
    derived_from  text[]      NOT NULL DEFAULT '{}',
    traceparent   text,
    tracestate    text,
    exchange      text        NOT NULL,
    symbol        text        NOT NULL,
    update_id     bigint,
    bid_price     numeric     NOT NULL,
    bid_qty       numeric     NOT NULL,
    ask_price     numeric     NOT NULL,
    ask_qty       numeric     NOT NULL,
    inserted_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (ts, event_id)
) PARTITION BY RANGE (ts);
CREATE INDEX IF NOT EXISTS book_tickers_symbol_ts ON book_tickers (symbol, ts);

CREATE TABLE IF NOT EXISTS book_updates (
    ts               timestamptz NOT NULL,
    event_id         text COLLATE "C" NOT NULL,
    source           text        NOT NULL,
    ts_ingest        timestamptz NOT NULL,
    ts_processed     timestamptz,
    derived_from     text[]      NOT NULL DEFAULT '{}',
    traceparent      text,
    tracestate       text,
    exchange         text        NOT NULL,
    symbol           text        NOT NULL,
    first_update_id  bigint      NOT NULL,
    final_update_id  bigint      NOT NULL,
    snapshot         boolean     NOT NULL,
    bids             jsonb       NOT NULL,   -- [{"price": "64123.44", "quantity": "1.5"}, ...], exact strings
    asks             jsonb       NOT NULL,
    inserted_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (ts, event_id)
) PARTITION BY RANGE (ts);
CREATE INDEX IF NOT EXISTS book_updates_symbol_ts ON book_updates (symbol, ts);

CREATE TABLE IF NOT EXISTS articles (
    ts            timestamptz NOT NULL,   -- publication time
    event_id      text COLLATE "C" NOT NULL,
    source        text        NOT NULL,
    ts_ingest     timestamptz NOT NULL,
    ts_processed  timestamptz,
    derived_from  text[]      NOT NULL DEFAULT '{}',
    traceparent   text,
    tracestate    text,
    article_id    text        NOT NULL,
    feed          text        NOT NULL,
    title         text,
    text          text        NOT NULL,
    url           text,
    origin        text,                   -- publisher
    keywords      text[]      NOT NULL DEFAULT '{}',
    tickers       text[]      NOT NULL DEFAULT '{}',
    ts_crawled    timestamptz,
    inserted_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (ts, event_id)
) PARTITION BY RANGE (ts);
CREATE INDEX IF NOT EXISTS articles_article_id ON articles (article_id);

CREATE TABLE IF NOT EXISTS sentiment_scores (
    ts                timestamptz NOT NULL,
    event_id          text COLLATE "C" NOT NULL,
    source            text        NOT NULL,
    ts_ingest         timestamptz NOT NULL,
    ts_processed      timestamptz,
    derived_from      text[]      NOT NULL DEFAULT '{}',
    traceparent       text,
    tracestate        text,
    article_id        text        NOT NULL,
    assets            text[]      NOT NULL DEFAULT '{}',
    label             text        NOT NULL,
    probabilities     jsonb       NOT NULL,   -- {"positive": 0.81, ...}
    sentiment_score   double precision NOT NULL,
    confidence        double precision NOT NULL,
    model_id          text        NOT NULL,
    model_sha256      text        NOT NULL,
    tokenizer_sha256  text        NOT NULL,
    truncated         boolean     NOT NULL,
    inserted_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (ts, event_id)
) PARTITION BY RANGE (ts);
CREATE INDEX IF NOT EXISTS sentiment_scores_article_id ON sentiment_scores (article_id);

-- One row per (sentiment score, asset it names): what per-asset aggregates group by.
CREATE TABLE IF NOT EXISTS sentiment_asset_scores (
    ts               timestamptz NOT NULL,
    event_id         text COLLATE "C" NOT NULL,   -- the score's event id
    asset            text        NOT NULL,
    source           text        NOT NULL,
    ts_ingest        timestamptz NOT NULL,
    article_id       text        NOT NULL,
    label            text        NOT NULL,
    sentiment_score  double precision NOT NULL,
    confidence       double precision NOT NULL,
    model_id         text        NOT NULL,
    inserted_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (ts, event_id, asset)
) PARTITION BY RANGE (ts);
CREATE INDEX IF NOT EXISTS sentiment_asset_scores_asset_ts ON sentiment_asset_scores (asset, ts);

CREATE TABLE IF NOT EXISTS fused_signals (
    ts               timestamptz NOT NULL,
    event_id         text COLLATE "C" NOT NULL,
    source           text        NOT NULL,
    ts_ingest        timestamptz NOT NULL,
    ts_processed     timestamptz,
    derived_from     text[]      NOT NULL DEFAULT '{}',
    traceparent      text,
    tracestate       text,
    asset            text        NOT NULL,
    window_start     timestamptz NOT NULL,
    window_end       timestamptz NOT NULL,
    fused_score      double precision NOT NULL,
    confidence       double precision NOT NULL,
    scores_used      integer     NOT NULL,
    scores_rejected  integer     NOT NULL,
    sources_used     integer     NOT NULL,
    weights_used     jsonb       NOT NULL,
    trend            text        NOT NULL,   -- rising | falling | stable
    inserted_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (ts, event_id)
) PARTITION BY RANGE (ts);
CREATE INDEX IF NOT EXISTS fused_signals_asset_ts ON fused_signals (asset, ts);

CREATE TABLE IF NOT EXISTS order_intents (
    ts            timestamptz NOT NULL,
    event_id      text COLLATE "C" NOT NULL,
    source        text        NOT NULL,
    ts_ingest     timestamptz NOT NULL,
    ts_processed  timestamptz,
    derived_from  text[]      NOT NULL DEFAULT '{}',
    traceparent   text,
    tracestate    text,
    intent_id     text        NOT NULL,
    agent         text        NOT NULL,
    symbol        text        NOT NULL,
    side          text        NOT NULL,   -- buy | sell
    quantity      numeric,
    notional      numeric,
    limit_price   numeric,
    reason        text        NOT NULL,
    inserted_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (ts, event_id)
) PARTITION BY RANGE (ts);

CREATE TABLE IF NOT EXISTS risk_decisions (
    ts                 timestamptz NOT NULL,
    event_id           text COLLATE "C" NOT NULL,
    source             text        NOT NULL,
    ts_ingest          timestamptz NOT NULL,
    ts_processed       timestamptz,
    derived_from       text[]      NOT NULL DEFAULT '{}',
    traceparent        text,
    tracestate         text,
    intent_id          text        NOT NULL,
    agent              text        NOT NULL,
    symbol             text        NOT NULL,
    side               text        NOT NULL,
    verdict            text        NOT NULL,   -- approved | resized | rejected
    approved_quantity  numeric,
    reason             text        NOT NULL,
    checks             jsonb       NOT NULL,
    inserted_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (ts, event_id)
) PARTITION BY RANGE (ts);

-- Every order state change (OrderUpdate).
CREATE TABLE IF NOT EXISTS orders (
    ts                  timestamptz NOT NULL,
    event_id            text COLLATE "C" NOT NULL,
    source              text        NOT NULL,
    ts_ingest           timestamptz NOT NULL,
    ts_processed        timestamptz,
    derived_from        text[]      NOT NULL DEFAULT '{}',
    traceparent         text,
    tracestate          text,
    client_order_id     text        NOT NULL,
    venue_order_id      text,
    venue               text        NOT NULL,
    agent               text        NOT NULL,
    symbol              text        NOT NULL,
    side                text        NOT NULL,
    status              text        NOT NULL,   -- new | accepted | partially_filled | filled | cancelled | rejected
    quantity            numeric     NOT NULL,
    filled_quantity     numeric     NOT NULL,
    last_fill_price     numeric,
    last_fill_quantity  numeric,
    fee                 numeric,
    fee_asset           text,
    reason              text,
    inserted_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (ts, event_id)
) PARTITION BY RANGE (ts);
CREATE INDEX IF NOT EXISTS orders_client_order_id ON orders (client_order_id);

-- The order updates that carry a fill (last fill quantity > 0 at a known price).
CREATE TABLE IF NOT EXISTS fills (
    ts               timestamptz NOT NULL,
    event_id         text COLLATE "C" NOT NULL,   -- the order update's event id
    source           text        NOT NULL,
    ts_ingest        timestamptz NOT NULL,
    client_order_id  text        NOT NULL,
    venue_order_id   text,
    venue            text        NOT NULL,
    agent            text        NOT NULL,
    symbol           text        NOT NULL,
    side             text        NOT NULL,
    status           text        NOT NULL,
    price            numeric     NOT NULL,
    quantity         numeric     NOT NULL,
    filled_quantity  numeric     NOT NULL,   -- cumulative, after this fill
    fee              numeric,
    fee_asset        text,
    inserted_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (ts, event_id)
) PARTITION BY RANGE (ts);
CREATE INDEX IF NOT EXISTS fills_symbol_ts ON fills (symbol, ts);

CREATE TABLE IF NOT EXISTS portfolio_snapshots (
    ts              timestamptz NOT NULL,
    event_id        text COLLATE "C" NOT NULL,
    source          text        NOT NULL,
    ts_ingest       timestamptz NOT NULL,
    ts_processed    timestamptz,
    derived_from    text[]      NOT NULL DEFAULT '{}',
    traceparent     text,
    tracestate      text,
    account         text        NOT NULL,
    positions       jsonb       NOT NULL,   -- [{"symbol", "quantity", "avg_price", "market_price", "unrealized_pnl"}], exact strings
    cash            numeric     NOT NULL,
    equity          numeric     NOT NULL,
    realized_pnl    numeric     NOT NULL,
    unrealized_pnl  numeric     NOT NULL,
    performance     jsonb       NOT NULL,
    inserted_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (ts, event_id)
) PARTITION BY RANGE (ts);
CREATE INDEX IF NOT EXISTS portfolio_snapshots_account_ts ON portfolio_snapshots (account, ts);

CREATE TABLE IF NOT EXISTS alerts (
    ts            timestamptz NOT NULL,
    event_id      text COLLATE "C" NOT NULL,
    source        text        NOT NULL,
    ts_ingest     timestamptz NOT NULL,
    ts_processed  timestamptz,
    derived_from  text[]      NOT NULL DEFAULT '{}',
    traceparent   text,
    tracestate    text,
    severity      text        NOT NULL,   -- info | warning | critical
    kind          text        NOT NULL,
    subject       text,
    message       text        NOT NULL,
    attributes    jsonb       NOT NULL,
    inserted_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (ts, event_id)
) PARTITION BY RANGE (ts);

CREATE TABLE IF NOT EXISTS dead_letters (
    ts              timestamptz NOT NULL,
    event_id        text COLLATE "C" NOT NULL,
    source          text        NOT NULL,
    ts_ingest       timestamptz NOT NULL,
    ts_processed    timestamptz,
    derived_from    text[]      NOT NULL DEFAULT '{}',
    traceparent     text,
    tracestate      text,
    stage           text        NOT NULL,
    reason          text        NOT NULL,
    error           text        NOT NULL,
    original_topic  text        NOT NULL,
    original_key    text,
    original_id     text,
    original_bytes  bytea       NOT NULL,
    attempts        integer     NOT NULL,
    inserted_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (ts, event_id)
) PARTITION BY RANGE (ts);

CREATE TABLE IF NOT EXISTS feed_statuses (
    ts            timestamptz NOT NULL,
    event_id      text COLLATE "C" NOT NULL,
    source        text        NOT NULL,
    ts_ingest     timestamptz NOT NULL,
    ts_processed  timestamptz,
    derived_from  text[]      NOT NULL DEFAULT '{}',
    traceparent   text,
    tracestate    text,
    feed          text        NOT NULL,
    stream        text        NOT NULL,
    symbol        text,
    status        text        NOT NULL,   -- connected | disconnected | gap | resynced | rolled | rate_limited | unknown
    detail        text        NOT NULL,
    attributes    jsonb       NOT NULL,
    inserted_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (ts, event_id)
) PARTITION BY RANGE (ts);
