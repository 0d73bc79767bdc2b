//! The live execution stage's order journal: the orders it has sent and not yet seen done, kept
//! in a JSON file so that a restarted stage knows what to reconcile with the venue.
//!
//! An order enters the journal **before** it is sent (write-ahead: a crash while the request is
//! in flight leaves it there, its outcome unknown) and leaves it when the venue reports it done
//! (filled, cancelled, rejected, expired); its client order id is then remembered in `done`
//! (the most recent `remember`), so a redelivered decision never places a second order. The file
//! is replaced atomically (written beside it, then renamed). It holds no key or secret.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

use auroraq_schemas::{OrderUpdate, RiskDecision};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// One order the stage sent and has not seen done.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JournalOrder {
    /// The decision it carries out (its updates derive from it).
    pub decision: RiskDecision,
    /// Binance's symbol.
    pub symbol: String,
    pub quantity: Decimal,
    /// Binance's order id, once the venue's answer was seen; none: the outcome of the request is
    /// unknown (the stage stopped, or the answer was lost, while it was in flight).
    pub venue_order_id: Option<i64>,
    /// Trade ids already reported as fills.
    pub trades: BTreeSet<i64>,
    /// Quantity reported filled so far.
    pub filled: Decimal,
    /// The updates reported so far (sent again, same ids, when its decision is redelivered).
    pub updates: Vec<OrderUpdate>,
}

/// What the journal file holds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Journal {
    /// Orders sent and not yet done, by client order id.
    pub open: BTreeMap<String, JournalOrder>,
    /// Client order ids of orders that are done, oldest first.
    pub done: VecDeque<String>,
}

/// The journal file cannot be read or written.
#[derive(Debug, thiserror::Error)]
#[error("order journal {}: {why}", .path.display())]
pub struct JournalError {
    pub path: PathBuf,
    pub why: String,
}

/// The journal's file.
#[derive(Clone, Debug)]
pub struct JournalFile {
    path: PathBuf,
}

impl JournalFile {
    /// Opens `path` (its folder is created; a missing file is an empty journal).
    pub fn open(path: &Path) -> Result<(JournalFile, Journal), JournalError> {
        let err = |why: String| JournalError {
            path: path.to_owned(),
            why,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| err(format!("cannot create its folder: {e}")))?;
        }
        let journal = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| err(format!("does not decode: {e}")))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Journal::default(),
            Err(e) => return Err(err(format!("cannot read: {e}"))),
        };
        Ok((
            JournalFile {
                path: path.to_owned(),
            },
            journal,
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Replaces the file with `j`, atomically.
    pub fn save(&self, j: &Journal) -> Result<(), JournalError> {
        let err = |why: String| JournalError {
            path: self.path.clone(),
            why,
        };
        let bytes = serde_json::to_vec(j).map_err(|e| err(format!("does not encode: {e}")))?;
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()
        };
        write().map_err(|e| err(format!("cannot write: {e}")))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| err(format!("cannot replace: {e}")))
    }
}
