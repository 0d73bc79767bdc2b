//! The stores behind the API: PostgreSQL/TimescaleDB (the sink's tables) and Redis (the Redis
//! sink's live state). Each connects on first use and again after a failure, so the API starts and
//! answers (with `503` naming the store) while a store is down. Connection strings are redacted
//! in every message.

use std::time::Duration;

use auroraq_util::redact;
use tokio::sync::Mutex;
use tracing::{info, warn};

use crate::error::HttpError;

/// How long a store may take to connect or answer before the request gets `503`.
const TIMEOUT: Duration = Duration::from_secs(5);

/// PostgreSQL, connected lazily.
pub struct Pg {
    url: String,
    client: Mutex<Option<std::sync::Arc<tokio_postgres::Client>>>,
}

impl Pg {
    /// `url` must be a `postgres://` URL.
    pub fn new(url: &str) -> Result<Pg, String> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(format!(
                "postgres url must be postgres://..., not {}",
                redact(url)
            ));
        }
        Ok(Pg {
            url: url.to_owned(),
            client: Mutex::new(None),
        })
    }

    async fn client(&self) -> Result<std::sync::Arc<tokio_postgres::Client>, HttpError> {
        let mut guard = self.client.lock().await;
        if let Some(c) = guard.as_ref() {
            if !c.is_closed() {
                return Ok(c.clone());
            }
        }
        let connect = tokio_postgres::connect(&self.url, tokio_postgres::NoTls);
        let (client, conn) = match tokio::time::timeout(TIMEOUT, connect).await {
            Ok(Ok(x)) => x,
            Ok(Err(e)) => {
                warn!(url = %redact(&self.url), error = %e, "postgres: cannot connect");
                return Err(HttpError::unavailable("postgres is unreachable"));
            }
            Err(_) => return Err(HttpError::unavailable("postgres did not answer in time")),
        };
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                warn!(error = %e, "postgres connection closed");
            }
        });
        info!(url = %redact(&self.url), "postgres connected");
        let client = std::sync::Arc::new(client);
        *guard = Some(client.clone());
        Ok(client)
    }

    /// Runs a query; any failure is a `503` naming PostgreSQL (the error is logged).
    pub async fn query(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, HttpError> {
        let client = self.client().await?;
        match tokio::time::timeout(TIMEOUT, client.query(sql, params)).await {
            Ok(Ok(rows)) => Ok(rows),
            Ok(Err(e)) => {
                // A missing table (the sink has not migrated yet) is "no data", not an outage.
                if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) {
                    return Ok(Vec::new());
                }
                // A data exception (a time that does not exist, a number out of range) is the
                // caller's: 400 with PostgreSQL's words.
                if let Some(db) = e.as_db_error().filter(|d| d.code().code().starts_with("22")) {
                    return Err(HttpError::invalid(format!("invalid parameter: {}", db.message())));
                }
                warn!(error = %e, "postgres query failed");
                Err(HttpError::unavailable("postgres query failed"))
            }
            Err(_) => Err(HttpError::unavailable("postgres did not answer in time")),
        }
    }

    pub async fn ping(&self) -> Result<(), HttpError> {
        self.query("SELECT 1", &[]).await.map(|_| ())
    }
}

/// Redis, connected lazily (one multiplexed connection).
pub struct Redis {
    client: redis::Client,
    url: String,
    conn: Mutex<Option<redis::aio::MultiplexedConnection>>,
    /// Key prefix of the Redis sink (`aq:`).
    pub prefix: String,
}

impl Redis {
    pub fn new(url: &str, prefix: &str) -> Result<Redis, String> {
        let client = redis::Client::open(url).map_err(|e| format!("redis url {}: {e}", redact(url)))?;
        Ok(Redis {
            client,
            url: url.to_owned(),
            conn: Mutex::new(None),
            prefix: prefix.to_owned(),
        })
    }

    async fn conn(&self) -> Result<redis::aio::MultiplexedConnection, HttpError> {
        let mut guard = self.conn.lock().await;
        if let Some(c) = guard.as_ref() {
            return Ok(c.clone());
        }
        match tokio::time::timeout(TIMEOUT, self.client.get_multiplexed_async_connection()).await {
            Ok(Ok(c)) => {
                *guard = Some(c.clone());
                Ok(c)
            }
            Ok(Err(e)) => {
                warn!(url = %redact(&self.url), error = %e, "redis: cannot connect");
                Err(HttpError::unavailable("redis is unreachable"))
            }
            Err(_) => Err(HttpError::unavailable("redis did not answer in time")),
        }
    }

    /// Runs a command; a failure drops the connection (the next call reconnects).
    pub async fn cmd<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, HttpError> {
        let mut c = self.conn().await?;
        match tokio::time::timeout(TIMEOUT, cmd.query_async::<T>(&mut c)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                warn!(error = %e, "redis command failed");
                *self.conn.lock().await = None;
                Err(HttpError::unavailable("redis command failed"))
            }
            Err(_) => {
                *self.conn.lock().await = None;
                Err(HttpError::unavailable("redis did not answer in time"))
            }
        }
    }

    pub async fn ping(&self) -> Result<(), HttpError> {
        self.cmd::<String>(&redis::cmd("PING")).await.map(|_| ())
    }
}
