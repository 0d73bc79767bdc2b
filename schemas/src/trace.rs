//! W3C trace context (`traceparent`) as events carry it, made deterministic.
//!
//! Trace ids and span ids come from event ids, never from a random source, so that events are
//! byte-identical from run to run whether or not traces are exported:
//!
//! - a raw event's context (set by [`Meta::raw`](crate::Meta::raw), a connector's receipt) has
//!   its event id as trace id (the id is already 16 bytes of SHA-256) and [`receipt_span_id`];
//! - a stage's output continues its parent's trace with span id [`span_id`]`(stage, output id)`.
//!
//! So a trace is found by the id of the event that started it (an article's `event_id`).

use sha2::{Digest, Sha256};

/// A parsed `traceparent`: version 00, trace id, parent span id, flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub flags: u8,
}

/// Traces are always marked sampled on the wire; whether a span is exported is the exporter's
/// (deterministic, trace-id based) decision.
pub const SAMPLED: u8 = 1;

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn parse_hex<const N: usize>(s: &[u8]) -> Option<[u8; N]> {
    if s.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, b) in out.iter_mut().enumerate() {
        *b = hex_val(s[2 * i])? << 4 | hex_val(s[2 * i + 1])?;
    }
    Some(out)
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(HEX[(b >> 4) as usize] as char);
        out.push(HEX[(b & 0xf) as usize] as char);
    }
}

fn first_bytes<const N: usize>(parts: &[&str]) -> [u8; N] {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    let d = h.finalize();
    let mut out = [0u8; N];
    out.copy_from_slice(&d[..N]);
    if out.iter().all(|b| *b == 0) {
        out[N - 1] = 1; // all-zero ids are invalid
    }
    out
}

/// The trace id of a trace started by event `event_id`: the id itself when it is 32 hex digits
/// (every id [`event_id`](crate::event_id) makes), else the first 16 bytes of its SHA-256.
pub fn root_trace_id(event_id: &str) -> [u8; 16] {
    match parse_hex::<16>(event_id.as_bytes()) {
        Some(id) if id.iter().any(|b| *b != 0) => id,
        _ => first_bytes(&[event_id]),
    }
}

/// The span id of a connector's receipt of event `event_id`: the trace id's last 8 bytes (no
/// second hash on the connectors' hot path).
pub fn receipt_span_id(event_id: &str) -> [u8; 8] {
    let t = root_trace_id(event_id);
    let mut out = [0u8; 8];
    out.copy_from_slice(&t[8..]);
    if out.iter().all(|b| *b == 0) {
        out[7] = 1;
    }
    out
}

/// The span id of stage `stage` producing the event `event_id`.
pub fn span_id(stage: &str, event_id: &str) -> [u8; 8] {
    first_bytes(&[stage, event_id])
}

impl TraceContext {
    /// Parses a version-00 `traceparent`; `None` when malformed or all-zero.
    pub fn parse(tp: &str) -> Option<Self> {
        let b = tp.as_bytes();
        if b.len() < 55 || &b[..3] != b"00-" || b[35] != b'-' || b[52] != b'-' {
            return None;
        }
        let trace_id = parse_hex::<16>(&b[3..35])?;
        let span_id = parse_hex::<8>(&b[36..52])?;
        let flags = parse_hex::<1>(&b[53..55])?[0];
        if trace_id.iter().all(|x| *x == 0) || span_id.iter().all(|x| *x == 0) {
            return None;
        }
        Some(TraceContext {
            trace_id,
            span_id,
            flags,
        })
    }

    /// The receipt context of a raw event: see the module docs.
    pub fn root(event_id: &str) -> Self {
        let trace_id = root_trace_id(event_id);
        let mut span_id = [0u8; 8];
        span_id.copy_from_slice(&trace_id[8..]);
        if span_id.iter().all(|b| *b == 0) {
            span_id[7] = 1;
        }
        TraceContext {
            trace_id,
            span_id,
            flags: SAMPLED,
        }
    }

    /// The context an event carries, or the receipt context its id implies when it has none.
    pub fn of(meta: &crate::Meta) -> Self {
        meta.traceparent
            .as_deref()
            .and_then(Self::parse)
            .unwrap_or_else(|| Self::root(&meta.event_id))
    }

    /// The same trace, with span `span_id`.
    pub fn child(&self, span_id: [u8; 8]) -> Self {
        TraceContext { span_id, ..*self }
    }

    /// The trace id in hex (32 digits).
    pub fn trace_id_hex(&self) -> String {
        let mut s = String::with_capacity(32);
        push_hex(&mut s, &self.trace_id);
        s
    }

    /// The `traceparent` header value.
    pub fn to_traceparent(&self) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut b = [b'-'; 55];
        b[..3].copy_from_slice(b"00-");
        let mut put = |at: usize, bytes: &[u8]| {
            for (i, x) in bytes.iter().enumerate() {
                b[at + 2 * i] = HEX[(x >> 4) as usize];
                b[at + 2 * i + 1] = HEX[(x & 0xf) as usize];
            }
        };
        put(3, &self.trace_id);
        put(36, &self.span_id);
        put(53, &[self.flags]);
        String::from_utf8_lossy(&b).into_owned()
    }

    /// The receipt `traceparent` of a raw event (as [`TraceContext::root`]), built straight from
    /// an id that is already 32 lower-case hex digits (every id [`event_id`](crate::event_id)
    /// makes): no parsing on the connectors' hot path.
    pub fn root_traceparent(event_id: &str) -> String {
        let b = event_id.as_bytes();
        let plain = b.len() == 32
            && b.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
            && b[16..].iter().any(|c| *c != b'0');
        if !plain {
            return Self::root(event_id).to_traceparent();
        }
        let mut s = String::with_capacity(55);
        s.push_str("00-");
        s.push_str(event_id);
        s.push('-');
        s.push_str(&event_id[16..]);
        s.push_str("-01");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_is_deterministic() {
        let id = crate::event_id("Article", "reuters", "1");
        let root = TraceContext::root(&id);
        assert_eq!(root.trace_id_hex(), id, "an event id is its trace's id");
        let tp = root.to_traceparent();
        assert_eq!(tp.len(), 55);
        assert_eq!(TraceContext::parse(&tp), Some(root));
        assert_eq!(TraceContext::root(&id), root);
        assert_eq!(TraceContext::root_traceparent(&id), tp);
        for odd in [
            "not hex",
            "ABCDEF",
            &"0".repeat(32),
            &format!("{}{}", "1".repeat(16), "0".repeat(16)),
        ] {
            assert_eq!(
                TraceContext::root_traceparent(odd),
                TraceContext::root(odd).to_traceparent()
            );
        }
        let c = root.child(span_id("sentiment", "x"));
        assert_eq!(c.trace_id, root.trace_id);
        assert_ne!(c.span_id, root.span_id);
        assert_eq!(TraceContext::root("not hex").trace_id, root_trace_id("not hex"));
        for bad in ["", "01-x", &tp[..54], &tp.replace("00-", "zz-")] {
            assert_eq!(TraceContext::parse(bad), None, "{bad}");
        }
        let zero = format!("00-{}-{}-01", "0".repeat(32), "1".repeat(16));
        assert_eq!(TraceContext::parse(&zero), None);
    }
}
