-- Helpers for the dashboard views.

-- The base asset of a trading symbol, so that prices (per symbol) meet sentiment (per asset):
-- BTCUSDT, BTC-USD, btc/usdt, BTC_USDC -> BTC; ETHBTC -> ETH. A symbol with no known quote
-- currency is its own asset (upper-cased).
CREATE OR REPLACE FUNCTION aq_base_asset(symbol text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN base = '' THEN upper(symbol)
        ELSE base
    END
    FROM (
        SELECT regexp_replace(upper(symbol),
            '[-_/:.]?(USDT|USDC|FDUSD|BUSD|TUSD|DAI|USD|EUR|GBP|JPY|TRY|BTC|ETH|BNB)$', '') AS base
    ) b
$$;
