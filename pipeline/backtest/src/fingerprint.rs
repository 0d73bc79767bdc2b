//! A run's fingerprint: SHA-256 over events' Avro encodings, each prefixed by its length, in
//! the order they are added. Equal events in equal order give equal fingerprints, whatever ran
//! them. The W3C trace context (`traceparent`, `tracestate`) is transport metadata and left out:
//! an event is hashed as if it carried none.

use auroraq_schemas::AnyEvent;
use sha2::{Digest, Sha256};

use crate::BacktestError;

#[derive(Clone, Default)]
pub struct Fingerprint(Sha256);

impl Fingerprint {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an event (its encoding).
    pub fn add(&mut self, ev: &AnyEvent) -> Result<(), BacktestError> {
        let m = ev.meta();
        let bytes = if m.traceparent.is_some() || m.tracestate.is_some() {
            let mut bare = ev.clone();
            let m = bare.meta_mut();
            (m.traceparent, m.tracestate) = (None, None);
            bare.encode()
        } else {
            ev.encode()
        };
        let bytes = bytes.map_err(|e| BacktestError::Encode {
            kind: ev.kind().name(),
            error: e.to_string(),
        })?;
        self.0.update((bytes.len() as u64).to_le_bytes());
        self.0.update(&bytes);
        Ok(())
    }

    /// Adds another run's fingerprint (a run made of passes chains theirs).
    pub fn add_fingerprint(&mut self, hex: &str) {
        self.0.update(hex.as_bytes());
    }

    /// The fingerprint, in lower-case hex.
    pub fn hex(self) -> String {
        self.0.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_context_is_left_out() {
        let hex = |evs: &[AnyEvent]| {
            let mut f = Fingerprint::new();
            for e in evs {
                f.add(e).unwrap();
            }
            f.hex()
        };
        let evs = auroraq_schemas::samples::all();
        let mut traced = evs.clone();
        for e in &mut traced {
            let m = e.meta_mut();
            m.traceparent = Some(format!("00-{}-{}-01", "ab".repeat(16), "cd".repeat(8)));
            m.tracestate = Some("k=v".into());
        }
        assert_eq!(hex(&evs), hex(&traced));
        let mut other = evs.clone();
        other[0].meta_mut().event_id.push('x');
        assert_ne!(hex(&evs), hex(&other));
    }
}
