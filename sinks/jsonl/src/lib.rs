//! The JSON-lines sink: every event it consumes becomes one line of JSON (`AnyEvent::to_json`:
//! the event's fields plus `kind`, decimals as exact strings), written before the delivery is
//! acked. For archives, debugging and small deployments without a database.
//!
//! - **Once per event**: a delivery whose event (kind and event id) is among the last
//!   [`DEFAULT_DEDUP_WINDOW`] written is acked without a second line, as the PostgreSQL sink's
//!   keys do: redeliveries after a bus outage (acks that did not arrive) and the copy of a fill on
//!   `exec.fills` leave one line. The window is filled from the end of an existing file at open,
//!   so a restarted sink does not repeat what it wrote before.
//! - **Write failures** (a full disk, a file system gone read-only) are logged and counted
//!   ([`JsonlStats::write_failures`], `auroraq_sink_write_failures_total{sink="jsonl"}`), the
//!   part of a line that was written is cut off again, and the delivery is retried by the stage
//!   runner (dead-lettered after `bus.max_attempts`).

use std::collections::{HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use auroraq_schemas::AnyEvent;
use auroraq_stage::{Handler, HandlerError};
use tracing::{debug, info, warn};

/// Events remembered for de-duplication by default (about 10 MB of ids).
pub const DEFAULT_DEDUP_WINDOW: usize = 100_000;

/// At most this much of an existing file's end is read at open to fill the window.
const TAIL_BYTES: u64 = 64 << 20;

/// While writes keep failing, at most one warning per this interval (each failure is counted).
const WARN_EVERY: Duration = Duration::from_secs(10);

/// What the sink did, shared with whoever holds [`JsonlSink::stats`].
#[derive(Debug, Default)]
pub struct JsonlStats {
    /// Lines written.
    pub lines: AtomicU64,
    /// Deliveries of an event already written (within the window): acked, not written again.
    pub duplicates: AtomicU64,
    /// Writes that failed (each retried by the stage runner).
    pub write_failures: AtomicU64,
}

/// The recent events' identities, oldest first.
struct Window {
    capacity: usize,
    seen: HashSet<(String, String)>,
    order: VecDeque<(String, String)>,
}

impl Window {
    fn new(capacity: usize) -> Self {
        Window {
            capacity,
            seen: HashSet::new(),
            order: VecDeque::new(),
        }
    }

    fn contains(&self, id: &(String, String)) -> bool {
        self.seen.contains(id)
    }

    fn insert(&mut self, id: (String, String)) {
        if self.capacity == 0 || self.seen.contains(&id) {
            return;
        }
        if self.order.len() >= self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        self.seen.insert(id.clone());
        self.order.push_back(id);
    }
}

/// Appends events to a file, one JSON object per line.
pub struct JsonlSink {
    path: PathBuf,
    out: File,
    /// Bytes of whole lines in the file: a failed write is cut back to it.
    len: u64,
    window: Window,
    stats: Arc<JsonlStats>,
    /// Failures since the last successful write, and when the last warning was logged.
    failing: u64,
    warned: Option<Instant>,
    pub lines: u64,
}

impl JsonlSink {
    /// Opens (creating or appending to) `path`, creating its folder, with the default
    /// de-duplication window.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        Self::open_with_window(path, DEFAULT_DEDUP_WINDOW)
    }

    /// Opens `path` remembering the last `window` events for de-duplication (0: none). A last
    /// line left unfinished by a crash is cut off (its delivery was not acked and comes back).
    pub fn open_with_window(path: &Path, window: usize) -> std::io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut out = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)?;
        let mut w = Window::new(window);
        let is_file = out.metadata()?.is_file();
        let len = if is_file { read_tail(&mut out, &mut w)? } else { 0 };
        if is_file && out.metadata()?.len() > len {
            warn!(path = %path.display(), kept = len, "cutting off an unfinished last line");
            out.set_len(len)?;
        }
        if !w.order.is_empty() {
            debug!(path = %path.display(), events = w.order.len(), "de-duplication window filled from the file");
        }
        Ok(JsonlSink {
            path: path.to_owned(),
            out,
            len,
            window: w,
            stats: Arc::new(JsonlStats::default()),
            failing: 0,
            warned: None,
            lines: 0,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The sink's counters, readable while it runs and after.
    pub fn stats(&self) -> Arc<JsonlStats> {
        self.stats.clone()
    }

    fn write_line(&mut self, line: &[u8]) -> std::io::Result<()> {
        if let Err(e) = self.out.write_all(line) {
            // Cut off what part of the line was written, so that the retry does not leave a
            // broken line behind (best effort: the disk may refuse that too).
            if self
                .out
                .metadata()
                .is_ok_and(|m| m.is_file() && m.len() > self.len)
            {
                let _ = self.out.set_len(self.len);
            }
            return Err(e);
        }
        self.len += line.len() as u64;
        Ok(())
    }

    fn note_failure(&mut self, e: &std::io::Error) {
        self.failing += 1;
        self.stats.write_failures.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("auroraq_sink_write_failures_total", "sink" => "jsonl").increment(1);
        if self.warned.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
            self.warned = Some(Instant::now());
            warn!(
                path = %self.path.display(),
                error = %e,
                failures = self.failing,
                total_failures = self.stats.write_failures.load(Ordering::Relaxed),
                "cannot write to the archive; the event stays unacked and is retried"
            );
        }
    }
}

/// Fills `w` with the identities of the whole lines at the end of `f` (at most [`TAIL_BYTES`]);
/// returns the length of the file's whole lines.
fn read_tail(f: &mut File, w: &mut Window) -> std::io::Result<u64> {
    let size = f.metadata()?.len();
    let start = size.saturating_sub(TAIL_BYTES);
    f.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::with_capacity((size - start) as usize);
    f.read_to_end(&mut buf)?;
    let whole = match buf.iter().rposition(|&b| b == b'\n') {
        Some(i) => i + 1,
        None if start == 0 => 0,
        // One line longer than the tail read: keep it whole.
        None => return Ok(size),
    };
    let mut lines = buf[..whole].split(|&b| b == b'\n');
    if start > 0 {
        // The first piece may be the end of a line that began before the tail.
        lines.next();
    }
    if w.capacity > 0 {
        let ids: Vec<(String, String)> = lines.filter_map(identity_of_line).collect();
        for id in ids.into_iter().rev().take(w.capacity).rev() {
            w.insert(id);
        }
    }
    Ok(start + whole as u64)
}

fn identity_of_line(line: &[u8]) -> Option<(String, String)> {
    let v: serde_json::Value = serde_json::from_slice(line).ok()?;
    let kind = v.get("kind")?.as_str()?;
    // The header fields are flattened into the record.
    let id = v.get("event_id")?.as_str()?;
    Some((kind.to_owned(), id.to_owned()))
}

#[async_trait]
impl Handler<AnyEvent> for JsonlSink {
    async fn handle(&mut self, ev: AnyEvent) -> Result<Vec<AnyEvent>, HandlerError> {
        let id = (ev.kind().name().to_owned(), ev.meta().event_id.clone());
        if self.window.contains(&id) {
            self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("auroraq_sink_duplicates_total", "sink" => "jsonl").increment(1);
            debug!(kind = %id.0, event_id = %id.1, "already archived; not written again");
            return Ok(Vec::new());
        }
        let mut line = ev.to_json().to_string().into_bytes();
        line.push(b'\n');
        if let Err(e) = self.write_line(&line) {
            self.note_failure(&e);
            // Outside the event: retry (and dead-letter after max attempts).
            return Err(HandlerError::Transient(format!(
                "writing {}: {e}",
                self.path.display()
            )));
        }
        if self.failing > 0 {
            info!(path = %self.path.display(), failures = self.failing, "writing to the archive works again");
            self.failing = 0;
            self.warned = None;
        }
        self.window.insert(id);
        self.lines += 1;
        self.stats.lines.fetch_add(1, Ordering::Relaxed);
        if auroraq_stage::trace::enabled() {
            let target = self.path.display().to_string();
            let start = std::time::SystemTime::now();
            auroraq_stage::trace::record_sink_batch("jsonl", &target, std::iter::once(ev.meta()), start);
        }
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use auroraq_schemas::samples;

    use super::*;

    fn events(n: usize) -> Vec<AnyEvent> {
        let base = samples::all()
            .into_iter()
            .find(|e| matches!(e, AnyEvent::TradeTick(_)))
            .expect("a trade sample");
        (0..n)
            .map(|i| {
                let mut e = base.clone();
                e.meta_mut().event_id = format!("trade-{i}");
                e
            })
            .collect()
    }

    fn ids_in(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .expect("read")
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("every line is JSON");
                v["event_id"].as_str().expect("id").to_owned()
            })
            .collect()
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
    }

    #[test]
    fn redelivered_events_are_written_once() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("a.jsonl");
        let mut sink = JsonlSink::open(&path).expect("open");
        let evs = events(60);
        rt().block_on(async {
            // Every event, then a third of them again (acks lost in a bus outage), then all again.
            for e in evs.iter().chain(evs.iter().step_by(3)).chain(evs.iter()) {
                sink.handle(e.clone()).await.expect("write");
            }
        });
        let ids = ids_in(&path);
        assert_eq!(ids.len(), 60, "one line per event id");
        let unique: HashSet<&String> = ids.iter().collect();
        assert_eq!(unique.len(), 60);
        let stats = sink.stats();
        assert_eq!(stats.lines.load(Ordering::Relaxed), 60);
        assert_eq!(stats.duplicates.load(Ordering::Relaxed), 80);
    }

    #[test]
    fn the_window_is_bounded_and_same_id_of_another_kind_is_kept() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("a.jsonl");
        let mut sink = JsonlSink::open_with_window(&path, 2).expect("open");
        let evs = events(3);
        let mut other = samples::all()
            .into_iter()
            .find(|e| matches!(e, AnyEvent::Kline(_)))
            .expect("a kline sample");
        other.meta_mut().event_id = "trade-2".into();
        rt().block_on(async {
            for e in [&evs[0], &evs[1], &evs[2], &evs[2], &evs[0], &other] {
                sink.handle(e.clone()).await.expect("write");
            }
        });
        // trade-0 left the window of 2 when trade-2 came: written again; the kline is another event.
        assert_eq!(
            ids_in(&path),
            ["trade-0", "trade-1", "trade-2", "trade-0", "trade-2"]
        );
    }

    #[test]
    fn a_reopened_archive_remembers_what_it_holds_and_cuts_an_unfinished_line() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("a.jsonl");
        let evs = events(5);
        {
            let mut sink = JsonlSink::open(&path).expect("open");
            rt().block_on(async {
                for e in &evs[..3] {
                    sink.handle(e.clone()).await.expect("write");
                }
            });
        }
        // A crash in the middle of the fourth line.
        let mut f = OpenOptions::new().append(true).open(&path).expect("append");
        f.write_all(b"{\"event_id\":\"trade-3\",\"kind\":")
            .expect("partial");
        drop(f);
        let mut sink = JsonlSink::open(&path).expect("reopen");
        rt().block_on(async {
            // The restarted sink gets the unacked deliveries again, and new ones.
            for e in &evs[1..] {
                sink.handle(e.clone()).await.expect("write");
            }
        });
        assert_eq!(
            ids_in(&path),
            ["trade-0", "trade-1", "trade-2", "trade-3", "trade-4"]
        );
        assert_eq!(sink.stats().duplicates.load(Ordering::Relaxed), 2);
    }

    /// Collects what `tracing` logs, for asserting on the log lines.
    #[derive(Clone, Default)]
    struct Logs(Arc<Mutex<Vec<u8>>>);

    impl Write for Logs {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            if let Ok(mut v) = self.0.lock() {
                v.extend_from_slice(b);
            }
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_full_disk_is_logged_counted_and_retried() {
        // /dev/full takes the open and refuses every write with ENOSPC, as a full disk does.
        let path = Path::new("/dev/full");
        let mut sink = JsonlSink::open(path).expect("open /dev/full");
        let stats = sink.stats();
        let logs = Logs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let evs = events(2);
        let results: Vec<_> = tracing::subscriber::with_default(subscriber, || {
            rt().block_on(async {
                let mut r = Vec::new();
                for e in [&evs[0], &evs[0], &evs[1]] {
                    r.push(sink.handle(e.clone()).await);
                }
                r
            })
        });
        for r in &results {
            match r {
                Err(HandlerError::Transient(why)) => assert!(why.contains("/dev/full"), "{why}"),
                other => panic!("a write to a full disk must be a transient failure: {other:?}"),
            }
        }
        assert_eq!(stats.write_failures.load(Ordering::Relaxed), 3);
        assert_eq!(stats.lines.load(Ordering::Relaxed), 0);
        assert_eq!(
            stats.duplicates.load(Ordering::Relaxed),
            0,
            "a failed event is not remembered as written"
        );
        let text = String::from_utf8(logs.0.lock().expect("logs").clone()).expect("utf-8");
        let warnings: Vec<&str> = text.lines().filter(|l| l.contains("WARN")).collect();
        assert_eq!(warnings.len(), 1, "one warning per 10 s while failing: {text}");
        assert!(
            warnings[0].contains("cannot write to the archive") && warnings[0].contains("/dev/full"),
            "{text}"
        );
    }
}
