#!/bin/bash
# TimescaleDB init script (compose.yaml mounts it into /docker-entrypoint-initdb.d): runs once, when
# the container initialises an empty data volume. Creates `grafana_reader`, the read-only role
# Grafana's "AuroraQ PostgreSQL" data source logs in with, and gives it SELECT on everything the
# AuroraQ sink creates later in `public` (tables, views, continuous aggregates), as
# dashboards/README.md recommends. Password: GRAFANA_DB_PASSWORD (from .env).
# On an existing volume run the same statements by hand (docs/operations.md).
set -euo pipefail
if [ -z "${GRAFANA_DB_PASSWORD:-}" ]; then
  echo "[grafana-reader] GRAFANA_DB_PASSWORD is empty: no read-only role for Grafana" >&2
  exit 0
fi
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v pw="$GRAFANA_DB_PASSWORD" -v db="$POSTGRES_DB" -v owner="$POSTGRES_USER" <<'SQL'
CREATE ROLE grafana_reader LOGIN PASSWORD :'pw';
GRANT CONNECT ON DATABASE :"db" TO grafana_reader;
GRANT USAGE ON SCHEMA public TO grafana_reader;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO grafana_reader;
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA public GRANT SELECT ON TABLES TO grafana_reader;
SQL
echo "[grafana-reader] created role grafana_reader (read-only on $POSTGRES_DB.public)" >&2
