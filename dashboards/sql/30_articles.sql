-- News flow.

-- Articles per hour, per source (the connector) and publisher.
CREATE OR REPLACE VIEW dash_articles_hourly AS
SELECT date_trunc('hour', ts, 'UTC')        AS bucket,
       source,
       COALESCE(origin, '(unknown)') AS publisher,
       count(*)                      AS articles
FROM articles
GROUP BY 1, 2, 3;

-- Scored articles per hour and label, per asset.
CREATE OR REPLACE VIEW dash_scores_hourly AS
SELECT date_trunc('hour', ts, 'UTC') AS bucket,
       asset,
       label,
       count(*)               AS scores,
       avg(confidence)        AS avg_confidence
FROM sentiment_asset_scores
GROUP BY 1, 2, 3;
