//! A run's fingerprint: SHA-256 over events' Avro encodings, each prefixed by its length, in
//! the order they are added. Equal events in equal order give equal fingerprints, whatever ran
//! them.

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
        let bytes = ev.encode().map_err(|e| BacktestError::Encode {
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
