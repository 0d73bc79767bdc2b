-- Pipeline health.

-- Dead letters per hour, stage and reason.
CREATE OR REPLACE VIEW dash_dead_letters_hourly AS
SELECT date_trunc('hour', ts, 'UTC') AS bucket,
       stage,
       reason,
       count(*)               AS dead_letters
FROM dead_letters
GROUP BY 1, 2, 3;

-- The latest status of each feed stream.
CREATE OR REPLACE VIEW dash_feed_status AS
SELECT DISTINCT ON (feed, stream)
       feed, stream, symbol, status, detail, ts
FROM feed_statuses
ORDER BY feed, stream, ts DESC, event_id DESC;

-- Alerts per hour and severity.
CREATE OR REPLACE VIEW dash_alerts_hourly AS
SELECT date_trunc('hour', ts, 'UTC') AS bucket,
       severity,
       kind,
       count(*)               AS alerts
FROM alerts
GROUP BY 1, 2, 3;
