//! Replay of recorded files with bounded memory: an external merge sort by receive time.
//!
//! Each file is read as a stream; each event it gives is encoded at once into the message the
//! bus will get (topic, key, id, Avro payload) with its sort key: receive time, then the file's
//! place among the inputs, then the event's place in what its reader gives. So the order is the
//! one [`crate::replay`] gives a [`crate::load`]ed list (a stable sort by receive time), and
//! nothing needs the whole input at once. Messages wait in a buffer of at most
//! [`StreamOptions::buffer_bytes`]; a full buffer is sorted and written to a temporary file (a
//! run); publishing merges the runs (a k-way merge over one record per run) and the buffer.
//!
//! What each reader holds: CSV bars read twice, one row at a time (a first pass finds the bar
//! length and the duplicates, which the file's order says when its times are monotonic; a file
//! whose times go back and forth is read whole, as before); news CSV and JSON lines (news,
//! barter) one record at a time; cryptofeed captures one line per file (a venue's files merged by
//! receive time; a file out of receive order is read whole); a barter JSON array and a Feedly
//! page (one document each) whole.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{BufRead, BufReader, BufWriter, Read, Seek, Write};
use std::path::PathBuf;

use auroraq_bus::OutMessage;
use auroraq_schemas::{AnyEvent, FeedState, Micros};
use auroraq_stage::to_message;
use bytes::Bytes;

use crate::format::{Format, LoadOptions};
use crate::recorded::{reject_if_all_bad, ReadError};

/// How much a streamed replay may hold.
#[derive(Clone, Copy, Debug)]
pub struct StreamOptions {
    /// Encoded messages held before a sorted run is written to a temporary file.
    pub buffer_bytes: usize,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            buffer_bytes: 32 << 20,
        }
    }
}

/// What [`crate::ReplayStats`] counts an event as, kept beside its message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Class {
    DeadLetter = 0,
    Trade = 1,
    Ticker = 2,
    Candle = 3,
    Book = 4,
    Article = 5,
    Status = 6,
    Gap = 7,
    Other = 8,
}

impl Class {
    pub fn of(ev: &AnyEvent) -> Class {
        match ev {
            AnyEvent::DeadLetter(_) => Class::DeadLetter,
            AnyEvent::TradeTick(_) => Class::Trade,
            AnyEvent::BookTicker(_) => Class::Ticker,
            AnyEvent::Kline(_) => Class::Candle,
            AnyEvent::BookUpdate(_) => Class::Book,
            AnyEvent::Article(_) => Class::Article,
            AnyEvent::FeedStatus(s) if s.status == FeedState::Gap => Class::Gap,
            AnyEvent::FeedStatus(_) => Class::Status,
            _ => Class::Other,
        }
    }

    fn from_u8(b: u8) -> Class {
        match b {
            0 => Class::DeadLetter,
            1 => Class::Trade,
            2 => Class::Ticker,
            3 => Class::Candle,
            4 => Class::Book,
            5 => Class::Article,
            6 => Class::Status,
            7 => Class::Gap,
            _ => Class::Other,
        }
    }
}

/// The sort key: receive time, input index, place in the input.
pub(crate) type Key = (Micros, u32, u64);

/// An event ready for the bus, with its sort key.
pub(crate) struct Prepared {
    pub(crate) key: Key,
    pub(crate) class: Class,
    pub(crate) msg: OutMessage,
}

impl Prepared {
    pub(crate) fn new(key: Key, ev: &AnyEvent) -> Result<Prepared, auroraq_schemas::CodecError> {
        Ok(Prepared {
            key,
            class: Class::of(ev),
            msg: to_message(ev)?,
        })
    }

    /// Bytes held (roughly: the strings and the payload, plus the struct).
    fn size(&self) -> usize {
        96 + self.msg.topic.len()
            + self.msg.key.as_ref().map_or(0, String::len)
            + self.msg.id.len()
            + self.msg.payload.len()
    }

    fn write(&self, w: &mut impl Write) -> std::io::Result<()> {
        w.write_all(&self.key.0.to_le_bytes())?;
        w.write_all(&self.key.1.to_le_bytes())?;
        w.write_all(&self.key.2.to_le_bytes())?;
        w.write_all(&[self.class as u8])?;
        let put = |w: &mut dyn Write, b: &[u8]| -> std::io::Result<()> {
            w.write_all(&(b.len() as u32).to_le_bytes())?;
            w.write_all(b)
        };
        put(w, self.msg.topic.as_bytes())?;
        match &self.msg.key {
            Some(k) => {
                w.write_all(&[1])?;
                put(w, k.as_bytes())?;
            }
            None => w.write_all(&[0])?,
        }
        put(w, self.msg.id.as_bytes())?;
        put(w, &self.msg.payload)
    }

    /// The next record of a run, `None` at its end.
    fn read(r: &mut impl Read) -> std::io::Result<Option<Prepared>> {
        let mut ts = [0u8; 8];
        match r.read_exact(&mut ts) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let mut src = [0u8; 4];
        r.read_exact(&mut src)?;
        let mut seq = [0u8; 8];
        r.read_exact(&mut seq)?;
        let mut one = [0u8; 1];
        r.read_exact(&mut one)?;
        let class = Class::from_u8(one[0]);
        let get = |r: &mut dyn Read| -> std::io::Result<Vec<u8>> {
            let mut n = [0u8; 4];
            r.read_exact(&mut n)?;
            let mut b = vec![0u8; u32::from_le_bytes(n) as usize];
            r.read_exact(&mut b)?;
            Ok(b)
        };
        let text = |b: Vec<u8>| {
            String::from_utf8(b).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
        };
        let topic = text(get(r)?)?;
        r.read_exact(&mut one)?;
        let key = if one[0] == 1 { Some(text(get(r)?)?) } else { None };
        let id = text(get(r)?)?;
        let payload = Bytes::from(get(r)?);
        Ok(Some(Prepared {
            key: (
                i64::from_le_bytes(ts),
                u32::from_le_bytes(src),
                u64::from_le_bytes(seq),
            ),
            class,
            msg: OutMessage {
                topic,
                key,
                id,
                payload,
            },
        }))
    }
}

/// Sorts prepared messages by key within a memory budget, spilling sorted runs to temporary
/// files.
pub(crate) struct Sorter {
    budget: usize,
    held: usize,
    buf: Vec<Prepared>,
    runs: Vec<std::fs::File>,
    /// The most held at once (for tests and logs).
    pub(crate) peak: usize,
}

impl Sorter {
    pub(crate) fn new(budget: usize) -> Sorter {
        Sorter {
            budget: budget.max(1),
            held: 0,
            buf: Vec::new(),
            runs: Vec::new(),
            peak: 0,
        }
    }

    pub(crate) fn push(&mut self, p: Prepared) -> std::io::Result<()> {
        self.held += p.size();
        self.peak = self.peak.max(self.held);
        self.buf.push(p);
        if self.held >= self.budget {
            self.spill()?;
        }
        Ok(())
    }

    fn spill(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.buf.sort_by_key(|p| p.key);
        let mut w = BufWriter::with_capacity(1 << 16, tempfile::tempfile()?);
        for p in self.buf.drain(..) {
            p.write(&mut w)?;
        }
        let mut f = w.into_inner().map_err(|e| e.into_error())?;
        f.rewind()?;
        self.runs.push(f);
        self.buf = Vec::new();
        self.held = 0;
        Ok(())
    }

    /// Runs written so far.
    pub(crate) fn runs(&self) -> usize {
        self.runs.len()
    }

    /// Everything pushed, in key order.
    pub(crate) fn finish(mut self) -> std::io::Result<Merged> {
        self.buf.sort_by_key(|p| p.key);
        let mut sources: Vec<Source> = self
            .runs
            .into_iter()
            .map(|f| Source::Run(BufReader::with_capacity(1 << 16, f)))
            .collect();
        sources.push(Source::Memory(std::mem::take(&mut self.buf).into_iter()));
        let mut heads = Vec::with_capacity(sources.len());
        let mut heap = BinaryHeap::with_capacity(sources.len());
        for (i, s) in sources.iter_mut().enumerate() {
            let head = s.next()?;
            if let Some(h) = &head {
                heap.push(Reverse((h.key, i)));
            }
            heads.push(head);
        }
        Ok(Merged { sources, heads, heap })
    }
}

enum Source {
    Run(BufReader<std::fs::File>),
    Memory(std::vec::IntoIter<Prepared>),
}

impl Source {
    fn next(&mut self) -> std::io::Result<Option<Prepared>> {
        match self {
            Source::Run(r) => Prepared::read(r),
            Source::Memory(it) => Ok(it.next()),
        }
    }
}

/// The k-way merge of a [`Sorter`]'s runs: one record per run in memory.
pub(crate) struct Merged {
    sources: Vec<Source>,
    heads: Vec<Option<Prepared>>,
    heap: BinaryHeap<Reverse<(Key, usize)>>,
}

impl Iterator for Merged {
    type Item = std::io::Result<Prepared>;

    fn next(&mut self) -> Option<Self::Item> {
        let Reverse((_, i)) = self.heap.pop()?;
        let out = self.heads[i].take()?;
        match self.sources[i].next() {
            Ok(Some(h)) => {
                self.heap.push(Reverse((h.key, i)));
                self.heads[i] = Some(h);
            }
            Ok(None) => {}
            Err(e) => return Some(Err(e)),
        }
        Some(Ok(out))
    }
}

/// Reads every file as a stream into `sorter`, each event keyed by (receive time, input index,
/// place). Input indexes follow [`crate::load`]'s order: the files in the order given, cryptofeed
/// captures (read together) after them. Fails like `load` does: an unknown format, an
/// unreadable file, a file whose every record was rejected.
pub(crate) fn read_all(
    format: Option<Format>,
    files: &[PathBuf],
    opts: &LoadOptions,
    sorter: &mut Sorter,
) -> Result<u64, ReadError> {
    let mut captures = Vec::new();
    let mut total = 0u64;
    let mut src = 0u32;
    for f in files {
        let fmt = match format.or_else(|| Format::detect(f)) {
            Some(x) => x,
            None => {
                return Err(ReadError::Unsupported {
                    path: f.display().to_string(),
                    what: format!(
                        "cannot tell its format from its name or content; give --format ({})",
                        Format::NAMES.join(", ")
                    ),
                })
            }
        };
        if fmt == Format::Cryptofeed {
            captures.push(f.clone());
            continue;
        }
        let origin = f.display().to_string();
        let mut sink = FileSink::new(origin.clone(), src, sorter);
        match fmt {
            Format::Bars => crate::bars::stream_bars(f, &opts.bars, &mut |seq, ev| sink.push(seq, ev))?,
            Format::NewsCsv => {
                crate::news_csv::stream_news_csv(f, &opts.news_csv_source, &mut |ev| sink.next(ev))?
            }
            Format::News => crate::reuters::stream_news_jsonl(f, &opts.news_source, &mut |ev| sink.next(ev))?,
            Format::Barter => crate::barter::stream_barter(f, &opts.instruments, &mut |ev| sink.next(ev))?,
            Format::Feedly => {
                for ev in crate::feedly::read_feedly_file(f)? {
                    sink.next(ev)?;
                }
            }
            Format::Cryptofeed => {}
        }
        total += sink.finish(fmt.name())?;
        src += 1;
    }
    if !captures.is_empty() {
        let names: Vec<String> = captures.iter().map(|p| p.display().to_string()).collect();
        let mut sink = FileSink::new(names.join(", "), src, sorter);
        crate::cryptofeed::stream_cryptofeed(&captures, &mut |ev| sink.next(ev))?;
        total += sink.finish(Format::Cryptofeed.name())?;
    }
    Ok(total)
}

/// One input's events into the sorter, noting whether every one was a dead letter.
struct FileSink<'a> {
    origin: String,
    src: u32,
    sorter: &'a mut Sorter,
    seq: u64,
    events: u64,
    good: bool,
    first_bad: Option<AnyEvent>,
}

impl<'a> FileSink<'a> {
    fn new(origin: String, src: u32, sorter: &'a mut Sorter) -> Self {
        FileSink {
            origin,
            src,
            sorter,
            seq: 0,
            events: 0,
            good: false,
            first_bad: None,
        }
    }

    /// The next event in the reader's order.
    fn next(&mut self, ev: AnyEvent) -> Result<(), ReadError> {
        let seq = self.seq;
        self.seq += 1;
        self.push(seq, ev)
    }

    /// An event whose place among this input's events is `seq`.
    fn push(&mut self, seq: u64, ev: AnyEvent) -> Result<(), ReadError> {
        self.events += 1;
        if matches!(ev, AnyEvent::DeadLetter(_)) {
            if self.first_bad.is_none() && !self.good {
                self.first_bad = Some(ev.clone());
            }
        } else {
            self.good = true;
            self.first_bad = None;
        }
        let p =
            Prepared::new((ev.meta().ts_ingest, self.src, seq), &ev).map_err(|e| ReadError::Unsupported {
                path: String::new(),
                what: format!("cannot encode an event: {e}"),
            })?;
        self.sorter.push(p).map_err(|source| ReadError::Io {
            path: "temporary run file".into(),
            source,
        })
    }

    fn finish(self, format: &'static str) -> Result<u64, ReadError> {
        let origin = self.origin.as_str();
        if !self.good {
            if let Some(first) = self.first_bad {
                // `reject_if_all_bad` with the count: every record was a dead letter.
                return match reject_if_all_bad(origin, format, std::slice::from_ref(&first)) {
                    Err(ReadError::Rejected {
                        path, format, first, ..
                    }) => Err(ReadError::Rejected {
                        path,
                        format,
                        records: self.events,
                        first,
                    }),
                    other => other.map(|()| self.events),
                };
            }
        }
        Ok(self.events)
    }
}

/// Lines of a file, one at a time, numbered from 1, with `\r\n` endings cut as `str::lines`
/// cuts them.
pub(crate) fn lines(
    path: &std::path::Path,
) -> Result<impl Iterator<Item = std::io::Result<(u64, String)>>, ReadError> {
    let f = std::fs::File::open(path).map_err(|source| ReadError::Io {
        path: path.display().to_string(),
        source,
    })?;
    Ok(BufReader::with_capacity(1 << 16, f)
        .lines()
        .enumerate()
        .map(|(i, l)| l.map(|l| (i as u64 + 1, l))))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn repo(p: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(p)
    }

    type Wire = (String, Option<String>, String, Bytes, Class);

    /// What `replay(load(files))` publishes, in its order.
    fn loaded(format: Option<Format>, files: &[PathBuf], opts: &LoadOptions) -> Vec<Wire> {
        let mut events = crate::load(format, files, opts).expect("loads");
        events.sort_by_key(|e| e.meta().ts_ingest);
        events
            .iter()
            .map(|e| {
                let m = to_message(e).expect("encodes");
                (m.topic, m.key, m.id, m.payload, Class::of(e))
            })
            .collect()
    }

    /// What the streamed replay publishes, in its order, with a buffer of `budget` bytes.
    fn streamed(
        format: Option<Format>,
        files: &[PathBuf],
        opts: &LoadOptions,
        budget: usize,
    ) -> (Vec<Wire>, usize) {
        let mut sorter = Sorter::new(budget);
        let n = read_all(format, files, opts, &mut sorter).expect("reads");
        let runs = sorter.runs();
        let out: Vec<Wire> = sorter
            .finish()
            .expect("merges")
            .map(|p| {
                let p = p.expect("reads back");
                (p.msg.topic, p.msg.key, p.msg.id, p.msg.payload, p.class)
            })
            .collect();
        assert_eq!(out.len() as u64, n);
        (out, runs)
    }

    fn same(format: Option<Format>, files: &[PathBuf], opts: &LoadOptions, budget: usize) -> usize {
        let want = loaded(format, files, opts);
        let (got, runs) = streamed(format, files, opts, budget);
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g, w, "message {i} of {files:?}");
        }
        runs
    }

    #[test]
    fn every_format_streams_the_same_messages_in_the_same_order_as_load_then_replay() {
        let opts = LoadOptions::default();
        let files = vec![
            repo("data/market/Coinbase_BTCUSD_1h.csv"),
            repo("data/crypto/btc_usd_1h_2024-08_2025-11.csv"),
            repo("data/news/reuters21578.jsonl"),
            repo("tests/data/binance/cryptofeed/BINANCE.ws.1.0"),
            repo("connectors/binance/tests/data/cryptofeed/BINANCE_US.ws.1.0"),
            repo("connectors/binance/tests/data/cryptofeed/BINANCE_FUTURES.ws.1.0"),
            repo("tests/data/binance/binance_spot_market_data_with_disconnect_events.json"),
            repo("tests/data/binance/barter_trades_l1_head1200.jsonl"),
            repo("tests/data/feedly/nnw_feedStream.json"),
            repo("data/crypto/crypto_news_2025-05_2025-08.csv.gz"),
        ];
        let files: Vec<PathBuf> = files.into_iter().filter(|f| f.exists()).collect();
        assert!(files.len() >= 8, "{files:?}");
        // A small buffer: many runs, merged.
        let runs = same(None, &files, &opts, 256 << 10);
        assert!(runs > 10, "{runs} runs");
        // A buffer larger than everything: no run at all.
        assert_eq!(same(None, &files, &opts, 1 << 40), 0);
    }

    #[test]
    fn bars_with_bad_rows_and_duplicates_stream_as_they_load_in_any_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let header = "Timestamps are UTC\ndate,symbol,open,high,low,close,volume_btc,volume\n";
        let rows = [
            "2019-10-17 06-AM,BTCUSD,1,2,0.5,1.5,1,1",
            "2019-10-17 06-AM,BTCUSD,1,2,0.5,1.5,1,1",
            "2019-10-17 06-AM,ETHUSD,1,2,0.5,1.5,1,1",
            "2019-10-17 06-AM,BTCUSD,1,2,0.5,1.5,1,1",
            "2019-10-17 07-AM,BTCUSD,NaN,2,0.5,1.5,1,1",
            "2019-10-17 08-AM,BTCUSD,1,2,0.5,1.5,1,1",
            "2019-10-17 08-AM,BTCUSD,1,2,0.5,1.5,1,1",
            "bad time,BTCUSD,1,2,0.5,1.5,1,1",
            "2019-10-17 11-AM,BTCUSD,1,2,0.5,1.5,1,1",
            "2019-10-17 11-AM,BTCUSD,1,0.2,0.5,1.5,1,1",
        ];
        let write = |name: &str, rows: Vec<&str>| {
            let p = dir.path().join(name);
            std::fs::write(&p, format!("{header}{}\n", rows.join("\n"))).expect("write");
            p
        };
        let rising = write("rising.csv", rows.to_vec());
        let falling = write("falling.csv", rows.iter().rev().copied().collect());
        let mut mixed = rows.to_vec();
        mixed.swap(0, 8);
        let mixed = write("mixed.csv", mixed);
        let opts = LoadOptions::default();
        for f in [&rising, &falling, &mixed] {
            same(Some(Format::Bars), std::slice::from_ref(f), &opts, 1);
            same(Some(Format::Bars), std::slice::from_ref(f), &opts, 1 << 30);
        }
        same(None, &[rising, falling, mixed], &opts, 1);
    }

    #[test]
    fn a_capture_with_bad_lines_or_out_of_receive_order_streams_as_it_loads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = repo("tests/data/binance/cryptofeed");
        let ws = std::fs::read_to_string(src.join("BINANCE.ws.1.0")).expect("capture");
        let http = std::fs::read_to_string(src.join("BINANCE.http.0.0")).expect("snapshots");
        let mut lines: Vec<&str> = ws.lines().collect();
        lines.insert(5, "garbage that is no capture line");
        lines.insert(9, "");
        let write = |sub: &str, lines: &[&str]| {
            let d = dir.path().join(sub);
            std::fs::create_dir_all(&d).expect("dir");
            std::fs::write(d.join("BINANCE.ws.1.0"), lines.join("\n")).expect("write");
            std::fs::write(d.join("BINANCE.http.0.0"), &http).expect("write");
            d.join("BINANCE.ws.1.0")
        };
        let opts = LoadOptions::default();
        let in_order = write("a", &lines);
        same(None, &[in_order], &opts, 1);
        // Two frames swapped: the file is read whole and sorted, as before.
        lines.swap(20, 40);
        let swapped = write("b", &lines);
        same(None, &[swapped], &opts, 1);
    }
}
