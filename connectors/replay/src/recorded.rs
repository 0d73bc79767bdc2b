//! What the readers of recorded files share: their errors and the dead letter for a record that
//! could not be read.

use auroraq_schemas::{DeadLetter, EventKind, Meta, Micros};

/// Why a whole file could not be read (a bad record inside a readable file is a dead letter).
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {what}")]
    Unsupported { path: String, what: String },
    #[error(transparent)]
    Bars(#[from] crate::bars::BarsError),
    #[error("{path}: not valid JSON: {source}")]
    Json {
        path: String,
        #[source]
        source: serde_json::Error,
    },
}

/// A dead letter for record `line` of `origin` that could not become an event, kept whole.
///
/// Its id depends only on the origin and line, and its time is the record's own (`ts`, 0 when
/// unknown), so a replay produces the same dead letter every time.
pub fn letter(origin: &str, line: u64, reason: &str, error: &str, raw: &[u8], ts: Micros) -> DeadLetter {
    DeadLetter {
        meta: Meta::derived(
            EventKind::DeadLetter,
            "replay",
            &[],
            &format!("{origin}:{line}"),
            ts,
            ts,
        ),
        stage: "replay".into(),
        reason: reason.into(),
        error: format!("{origin} line {line}: {error}"),
        original_topic: origin.to_owned(),
        original_key: None,
        original_id: None,
        original_bytes: raw.to_vec(),
        attempts: 1,
    }
}
