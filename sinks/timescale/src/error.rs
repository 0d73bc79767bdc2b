//! The sink's errors.

use auroraq_bus::BusError;
use auroraq_stage::StageError;

/// Why the sink (or its migrations, or its benchmark) stopped.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot connect to PostgreSQL at {url}: {reason}")]
    Connect { url: String, reason: String },
    /// The URL cannot be used (not `postgres://`, a libpq key/value string, no user or
    /// database): retrying cannot help. `url` is redacted.
    #[error("unusable PostgreSQL URL {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("{what}: {source}")]
    Migrate {
        what: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("database schema: {0}")]
    Schema(String),
    #[error("{what}: {source}")]
    Db {
        what: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error(transparent)]
    Stage(#[from] StageError),
    #[error("the writer task failed: {0}")]
    Task(String),
    #[error("benchmark: {0}")]
    Bench(String),
}

impl SinkError {
    /// Whether retrying later may help: the connection was lost or never made.
    pub fn is_connection(&self) -> bool {
        match self {
            SinkError::Connect { .. } => true,
            SinkError::Migrate { source, .. } | SinkError::Db { source, .. } => is_connection_error(source),
            _ => false,
        }
    }
}

/// A lost connection, a server shutting down or refusing connections: worth a reconnect.
pub(crate) fn is_connection_error(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        // No SQLSTATE: an I/O or protocol error.
        None => true,
        Some(c) => {
            let c = c.code();
            c.starts_with("08") // connection exception
                || c.starts_with("57P") // admin shutdown, crash shutdown, cannot connect now
                || c.starts_with("53") // insufficient resources (too many connections, ...)
        }
    }
}
