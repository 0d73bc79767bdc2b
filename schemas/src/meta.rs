//! What every event carries: its id, its source, its timestamps, its lineage and its trace context.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::codec::EventKind;

/// Microseconds since the Unix epoch, UTC. All AuroraQ timestamps use this unit.
pub type Micros = i64;

/// The wall clock now, in microseconds since the epoch.
pub fn now_micros() -> Micros {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as Micros)
        .unwrap_or(0)
}

/// Derives an event id from the event's kind, its source and the source's native id.
///
/// The id is the first 16 bytes of SHA-256 over the three parts (length-prefixed so that
/// `("ab", "c")` and `("a", "bc")` differ), in hex: the same input always gives the same id, so a
/// re-sent or replayed event de-duplicates on the bus and in the sinks. [`Meta::raw`] and
/// [`Meta::derived`] pass the kind's name ([`EventKind::as_str`], e.g. `"TradeTick"`).
pub fn event_id(kind: &str, source: &str, native_id: &str) -> String {
    let mut h = Sha256::new();
    for part in [kind, source, native_id] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    let digest = h.finalize();
    let mut out = String::with_capacity(32);
    for b in &digest[..16] {
        out.push(char::from_digit((b >> 4) as u32, 16).unwrap_or('0'));
        out.push(char::from_digit((b & 0xf) as u32, 16).unwrap_or('0'));
    }
    out
}

/// The header fields shared by every event type (flattened into each record on the wire).
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    /// Deterministic id, see [`event_id`].
    pub event_id: String,
    /// The exchange, feed or stage that produced the event.
    pub source: String,
    /// When it happened or was published.
    pub ts_event: Micros,
    /// When AuroraQ received it.
    pub ts_ingest: Micros,
    /// When a stage derived it; `None` on raw events.
    pub ts_processed: Option<Micros>,
    /// Ids of the events it was derived from.
    pub derived_from: Vec<String>,
    /// W3C trace context.
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
}

impl Clone for Meta {
    fn clone(&self) -> Self {
        let Meta {
            event_id,
            source,
            ts_event,
            ts_ingest,
            ts_processed,
            derived_from,
            traceparent,
            tracestate,
        } = self;
        Meta {
            event_id: event_id.clone(),
            source: source.clone(),
            ts_event: *ts_event,
            ts_ingest: *ts_ingest,
            ts_processed: *ts_processed,
            derived_from: derived_from.clone(),
            traceparent: traceparent.clone(),
            tracestate: tracestate.clone(),
        }
    }

    /// Reuses `self`'s buffers (a stage that keeps the last event's header copies it per event).
    fn clone_from(&mut self, src: &Self) {
        let Meta {
            event_id,
            source,
            ts_event,
            ts_ingest,
            ts_processed,
            derived_from,
            traceparent,
            tracestate,
        } = src;
        self.event_id.clone_from(event_id);
        self.source.clone_from(source);
        self.ts_event = *ts_event;
        self.ts_ingest = *ts_ingest;
        self.ts_processed = *ts_processed;
        self.derived_from.clone_from(derived_from);
        self.traceparent.clone_from(traceparent);
        self.tracestate.clone_from(tracestate);
    }
}

impl Meta {
    /// Header of a raw event from `source`, identified there by `native_id`, with the trace
    /// context of its receipt ([`TraceContext::root`](crate::TraceContext::root): deterministic,
    /// a trace that starts here).
    pub fn raw(kind: EventKind, source: &str, native_id: &str, ts_event: Micros, ts_ingest: Micros) -> Self {
        let event_id = event_id(kind.as_str(), source, native_id);
        let traceparent = Some(crate::TraceContext::root_traceparent(&event_id));
        Meta {
            event_id,
            source: source.to_owned(),
            ts_event,
            ts_ingest,
            traceparent,
            ..Meta::default()
        }
    }

    /// Header of an event that stage `source` derived from `parents` at `ts_processed`.
    ///
    /// The id is a function of the stage, the kind and the parents' ids (plus `discriminator`,
    /// for a stage that derives several events from the same parents), so that reprocessing the
    /// same input yields the same id. The trace context is inherited from the first parent.
    pub fn derived(
        kind: EventKind,
        source: &str,
        parents: &[&Meta],
        discriminator: &str,
        ts_event: Micros,
        ts_processed: Micros,
    ) -> Self {
        let mut native = String::new();
        for p in parents {
            native.push_str(&p.event_id);
            native.push(',');
        }
        native.push_str(discriminator);
        let ts_ingest = parents.iter().map(|p| p.ts_ingest).max().unwrap_or(ts_processed);
        Meta {
            event_id: event_id(kind.as_str(), source, &native),
            source: source.to_owned(),
            ts_event,
            ts_ingest,
            ts_processed: Some(ts_processed),
            derived_from: parents.iter().map(|p| p.event_id.clone()).collect(),
            traceparent: parents.first().and_then(|p| p.traceparent.clone()),
            tracestate: parents.first().and_then(|p| p.tracestate.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_deterministic_and_distinct() {
        let a = event_id("TradeTick", "binance", "12345");
        assert_eq!(a, event_id("TradeTick", "binance", "12345"));
        assert_eq!(a.len(), 32);
        assert_ne!(a, event_id("TradeTick", "binance", "12346"));
        assert_ne!(a, event_id("TradeTick", "binance.us", "12345"));
        // length prefixes keep part boundaries apart
        assert_ne!(event_id("k", "ab", "c"), event_id("k", "a", "bc"));
    }

    /// The ids are pinned: they are computed over the kind's name, as before kinds were typed.
    #[test]
    fn typed_kinds_give_the_ids_of_their_names() {
        assert_eq!(
            Meta::raw(EventKind::TradeTick, "binance", "BTCUSDT:1", 1, 2).event_id,
            event_id("TradeTick", "binance", "BTCUSDT:1")
        );
        assert_eq!(
            event_id("TradeTick", "binance", "12345"),
            "73bbfb3f089009c54e454a818a1db0d1"
        );
        let p = Meta::raw(EventKind::Article, "feedly", "a1", 10, 20);
        assert_eq!(
            Meta::derived(EventKind::SentimentScore, "sentiment", &[&p], "", 11, 30).event_id,
            event_id("SentimentScore", "sentiment", &format!("{},", p.event_id))
        );
    }

    #[test]
    fn derived_meta_names_parents() {
        let p1 = Meta::raw(EventKind::Article, "feedly", "a1", 10, 20);
        let p2 = Meta::raw(EventKind::Article, "feedly", "a2", 11, 25);
        let d = Meta::derived(EventKind::SentimentScore, "sentiment", &[&p1, &p2], "", 11, 30);
        assert_eq!(d.derived_from, vec![p1.event_id.clone(), p2.event_id.clone()]);
        assert_eq!(d.ts_ingest, 25);
        assert_eq!(d.ts_processed, Some(30));
        let again = Meta::derived(EventKind::SentimentScore, "sentiment", &[&p1, &p2], "", 11, 99);
        assert_eq!(d.event_id, again.event_id, "reprocessing gives the same id");
    }
}
