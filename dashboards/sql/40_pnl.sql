-- Trading results.

-- Portfolio snapshots with the PnL a dashboard plots: total (realised + unrealised), change of
-- equity since the account's first snapshot, and drawdown from the running peak of equity.
CREATE OR REPLACE VIEW dash_pnl AS
SELECT ts,
       account,
       equity,
       cash,
       realized_pnl,
       unrealized_pnl,
       realized_pnl + unrealized_pnl                                        AS total_pnl,
       equity - first_value(equity) OVER w                                  AS equity_change,
       equity / NULLIF(max(equity) OVER (w ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW), 0) - 1
                                                                            AS drawdown,
       jsonb_array_length(positions)                                        AS positions
FROM portfolio_snapshots
WINDOW w AS (PARTITION BY account ORDER BY ts, event_id);

-- Fills per hour and symbol: count, quantity, notional and fees.
CREATE OR REPLACE VIEW dash_fills_hourly AS
SELECT date_trunc('hour', ts, 'UTC') AS bucket,
       symbol,
       side,
       count(*)               AS fills,
       sum(quantity)          AS quantity,
       sum(price * quantity)  AS notional,
       sum(fee)               AS fees
FROM fills
GROUP BY 1, 2, 3;
