//! The JSON-lines sink: every event it consumes becomes one line of JSON (`AnyEvent::to_json`:
//! the event's fields plus `kind`, decimals as exact strings), written and flushed before the
//! delivery is acked. For archives, debugging and small deployments without a database.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use auroraq_schemas::AnyEvent;
use auroraq_stage::{Handler, HandlerError};

/// Appends events to a file, one JSON object per line.
pub struct JsonlSink {
    path: PathBuf,
    out: BufWriter<File>,
    pub lines: u64,
}

impl JsonlSink {
    /// Opens (creating or appending to) `path`, creating its folder.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let f = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(JsonlSink {
            path: path.to_owned(),
            out: BufWriter::new(f),
            lines: 0,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[async_trait]
impl Handler<AnyEvent> for JsonlSink {
    async fn handle(&mut self, ev: AnyEvent) -> Result<Vec<AnyEvent>, HandlerError> {
        let line = ev.to_json().to_string();
        // A full disk is outside the event: retry (and dead-letter after max attempts).
        let io = |e: std::io::Error| HandlerError::Transient(format!("writing {}: {e}", self.path.display()));
        self.out.write_all(line.as_bytes()).map_err(io)?;
        self.out.write_all(b"\n").map_err(io)?;
        self.out.flush().map_err(io)?;
        self.lines += 1;
        if auroraq_stage::trace::enabled() {
            let target = self.path.display().to_string();
            let start = std::time::SystemTime::now();
            auroraq_stage::trace::record_sink_batch("jsonl", &target, std::iter::once(ev.meta()), start);
        }
        Ok(Vec::new())
    }
}
