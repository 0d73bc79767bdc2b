//! What the readers of recorded files share: their errors and the dead letter for a record that
//! could not be read.

use auroraq_schemas::{AnyEvent, DeadLetter, EventKind, Meta, Micros, MAX_EVENT_BYTES};

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
    /// Every record of a file became a dead letter: it is most likely not in the format it was
    /// read as.
    #[error("{path}: all {records} records were rejected as {format} (first: {first}); give --format if it is another format")]
    Rejected {
        path: String,
        format: &'static str,
        records: u64,
        first: String,
    },
}

/// A dead letter for record `line` of `origin` that could not become an event, with the record's
/// bytes ([bounded](DeadLetter::bounded): a record of more than
/// [`DeadLetter::MAX_ORIGINAL_BYTES`] keeps its first bytes, its size and SHA-256 noted in `error`).
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
    .bounded()
}

/// `ev`, read from record `line` of `origin` (`raw`), if it fits a bus message
/// ([`MAX_EVENT_BYTES`] encoded); otherwise the record's dead letter (`too_large`), so that one
/// oversized record does not stop a replay. An event is made of its record's text plus fields of
/// fixed size, so one from a record under a quarter of the limit is not encoded to be measured.
pub fn fit(ev: AnyEvent, origin: &str, line: u64, raw: &[u8]) -> AnyEvent {
    if raw.len() <= MAX_EVENT_BYTES / 4 || matches!(ev, AnyEvent::DeadLetter(_)) {
        return ev;
    }
    let ts = ev.meta().ts_ingest;
    let why = match ev.encode() {
        Ok(bytes) if bytes.len() <= MAX_EVENT_BYTES => return ev,
        Ok(bytes) => format!(
            "its {} is {} bytes encoded, more than a bus message takes ({MAX_EVENT_BYTES})",
            ev.kind(),
            bytes.len()
        ),
        Err(e) => return AnyEvent::DeadLetter(letter(origin, line, "encode_error", &e.to_string(), raw, ts)),
    };
    AnyEvent::DeadLetter(letter(origin, line, "too_large", &why, raw, ts))
}

/// Fails when `events`, all read from `path` as `format`, are all dead letters (and there is at
/// least one): the file is not in that format.
pub fn reject_if_all_bad(path: &str, format: &'static str, events: &[AnyEvent]) -> Result<(), ReadError> {
    let mut first = None;
    for ev in events {
        match ev {
            AnyEvent::DeadLetter(d) => {
                first.get_or_insert(d);
            }
            _ => return Ok(()),
        }
    }
    match first {
        None => Ok(()),
        Some(d) => Err(ReadError::Rejected {
            path: path.to_owned(),
            format,
            records: events.len() as u64,
            first: d.error.chars().take(300).collect(),
        }),
    }
}
