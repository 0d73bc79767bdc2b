//! Binance captures in cryptofeed's recording format.
//!
//! cryptofeed writes one file per connection: `<EXCHANGE>.ws.<n>.<m>` holds the WebSocket
//! traffic, a first line `<url> <-> <open_ts>` and then `<recv_ts>: <frame>` per frame;
//! `<EXCHANGE>.http.<n>.<m>` holds the REST calls made alongside, `<url> -> <recv_ts>: <body>`
//! (for Binance: the `/api/v3/depth` or `/fapi/v1/depth` snapshots the order-book sync needs).
//! Timestamps are epoch seconds with a fraction.
//!
//! `<EXCHANGE>` is cryptofeed's exchange id and names the venue ([`Venue::from_cryptofeed`]):
//! `BINANCE` (spot), `BINANCE_US` (Binance.US, the spot protocol) and `BINANCE_FUTURES`
//! (USDⓈ-M futures, whose depth diffs chain by `pu`). Events carry the venue's name as their
//! exchange (`binance`, `binance_us`, `binance_futures`). Other ids (`BINANCE_DELIVERY`,
//! `BINANCE_TR`, other exchanges) are refused.
//!
//! The reader merges a venue's files by receive time and drives the same decoder and order-book
//! sync as the live connector: frames become events, depth diffs go through [`BookSync`] with the
//! venue's rule (buffered until their snapshot, stale ones dropped, gaps reported), so a replay
//! publishes what the live run published. Futures `markPrice` and `forceOrder` frames become
//! `MarkPrice` and `Liquidation` events, as live (a bad one is a dead letter).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use auroraq_binance::{BookSync, Decoder, MarketEvent, SyncOutput, Venue};
use auroraq_schemas::{AnyEvent, EventKind, FeedState, FeedStatus, Meta, Micros};

use crate::recorded::{fit, letter, ReadError};

/// What one capture line is.
enum Item<'a> {
    Open { url: &'a str },
    Frame { text: &'a str },
    Snapshot { symbol: String, body: &'a str },
}

struct Line<'a> {
    ts: Micros,
    file: usize,
    line: u64,
    item: Item<'a>,
}

/// Seconds with a fraction (`1633998512.0633569`) to microseconds.
fn seconds(s: &str) -> Option<Micros> {
    let s = s.trim();
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    let whole: i64 = whole.parse().ok()?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits: String = frac.chars().chain(std::iter::repeat('0')).take(6).collect();
    let micros: i64 = digits.parse().ok()?;
    whole.checked_mul(1_000_000)?.checked_add(micros)
}

fn query_symbol(url: &str) -> Option<String> {
    let q = url.split_once('?')?.1;
    q.split('&')
        .find_map(|kv| kv.strip_prefix("symbol="))
        .map(|s| s.to_ascii_uppercase())
}

/// The `.http.` files beside a `.ws.` capture (`BINANCE.ws.1.0` → `BINANCE.http.*`).
pub fn sibling_http_files(ws: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (ws.parent(), ws.file_name().and_then(|n| n.to_str())) else {
        return Vec::new();
    };
    let Some((exchange, _)) = name.split_once(".ws.") else {
        return Vec::new();
    };
    let prefix = format!("{exchange}.http.");
    let mut out: Vec<PathBuf> = std::fs::read_dir(if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    })
    .into_iter()
    .flatten()
    .flatten()
    .map(|e| e.path())
    .filter(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(&prefix))
    })
    .collect();
    out.sort();
    out
}

/// cryptofeed's exchange id of a capture, from its file name (`BINANCE_US.ws.1.0` → `BINANCE_US`).
fn exchange_id(path: &Path) -> Option<&str> {
    let name = path.file_name()?.to_str()?;
    let (ex, _) = name.split_once('.')?;
    Some(ex)
}

/// Reads cryptofeed capture files (`.ws.` and `.http.` ones; the `.http.` siblings of a `.ws.`
/// file are found by name when not given) into events, each venue's in receive order.
pub fn read_cryptofeed(files: &[PathBuf]) -> Result<Vec<AnyEvent>, ReadError> {
    let mut out = Vec::new();
    stream_cryptofeed(files, &mut |ev| {
        out.push(ev);
        Ok(())
    })?;
    Ok(out)
}

/// [`read_cryptofeed`], each event to `emit` as it is made. A venue's files are merged by
/// receive time one line at a time (each file is in receive order, as cryptofeed writes it); a
/// file that is not is read whole and sorted, as before.
pub fn stream_cryptofeed(
    files: &[PathBuf],
    emit: &mut dyn FnMut(AnyEvent) -> Result<(), ReadError>,
) -> Result<(), ReadError> {
    let mut paths: Vec<PathBuf> = files.to_vec();
    for f in files {
        for s in sibling_http_files(f) {
            if !paths.contains(&s) {
                paths.push(s);
            }
        }
    }
    // Each venue's files are one capture: their books and update ids are their own.
    let mut venues: BTreeMap<&'static str, (Venue, Vec<PathBuf>)> = BTreeMap::new();
    for p in paths {
        let id = exchange_id(&p).unwrap_or_default();
        let Some(venue) = Venue::from_cryptofeed(id) else {
            return Err(ReadError::Unsupported {
                path: p.display().to_string(),
                what: format!(
                    "cryptofeed captures of {id:?}: only Binance's (BINANCE), Binance.US's \
                     (BINANCE_US) and Binance USDⓈ-M futures' (BINANCE_FUTURES) are read"
                ),
            });
        };
        venues
            .entry(venue.name())
            .or_insert_with(|| (venue, Vec::new()))
            .1
            .push(p);
    }
    for (venue, paths) in venues.into_values() {
        read_venue(venue, &paths, emit)?;
    }
    Ok(())
}

const NOT_A_LINE: &str =
    "not a cryptofeed capture line (`<ts>: <json>`, `<url> <-> <ts>` or `<url> -> <ts>: <body>`)";

/// One venue's capture files, merged by receive time: first the dead letters of lines that are
/// no capture lines (by file and line), then what the lines give in receive order (ties in file
/// and line order).
fn read_venue(
    venue: Venue,
    paths: &[PathBuf],
    emit: &mut dyn FnMut(AnyEvent) -> Result<(), ReadError>,
) -> Result<(), ReadError> {
    let origins: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    let io = |fi: usize| {
        let path = origins[fi].clone();
        move |source| ReadError::Io { path, source }
    };
    // A first pass: the bad lines, and whether each file is in receive order.
    let mut in_order = true;
    for (fi, p) in paths.iter().enumerate() {
        let mut last = Micros::MIN;
        for l in crate::stream::lines(p)? {
            let (line, raw) = l.map_err(io(fi))?;
            if raw.trim().is_empty() {
                continue;
            }
            match parse_line(&raw) {
                Some((ts, _)) => {
                    in_order &= ts >= last;
                    last = ts;
                }
                None => emit(AnyEvent::DeadLetter(letter(
                    &origins[fi],
                    line,
                    "bad_record",
                    NOT_A_LINE,
                    raw.as_bytes(),
                    0,
                )))?,
            }
        }
    }
    let mut sync = VenueSync::new(venue, &origins);
    if !in_order {
        // Read whole and sorted.
        let mut texts = Vec::with_capacity(paths.len());
        for (fi, p) in paths.iter().enumerate() {
            texts.push(std::fs::read_to_string(p).map_err(io(fi))?);
        }
        let mut lines = Vec::new();
        for (fi, text) in texts.iter().enumerate() {
            for (li, raw) in text.lines().enumerate() {
                if raw.trim().is_empty() {
                    continue;
                }
                if let Some((ts, item)) = parse_line(raw) {
                    lines.push(Line {
                        ts,
                        file: fi,
                        line: li as u64 + 1,
                        item,
                    });
                }
            }
        }
        lines.sort_by_key(|l| (l.ts, l.file, l.line));
        for l in lines {
            sync.line(l, emit)?;
        }
        return Ok(());
    }
    // Each file in receive order: a k-way merge holding one line per file.
    let mut readers = Vec::with_capacity(paths.len());
    for p in paths {
        readers.push(crate::stream::lines(p)?);
    }
    let mut heads: Vec<Option<(Micros, u64, String)>> = Vec::with_capacity(paths.len());
    let next = |fi: usize,
                r: &mut dyn Iterator<Item = std::io::Result<(u64, String)>>|
     -> Result<Option<(Micros, u64, String)>, ReadError> {
        for l in r {
            let (line, raw) = l.map_err(io(fi))?;
            if raw.trim().is_empty() {
                continue;
            }
            if let Some((ts, _)) = parse_line(&raw) {
                return Ok(Some((ts, line, raw)));
            }
        }
        Ok(None)
    };
    let mut heap = std::collections::BinaryHeap::new();
    for (fi, r) in readers.iter_mut().enumerate() {
        let h = next(fi, r)?;
        if let Some((ts, line, _)) = &h {
            heap.push(std::cmp::Reverse((*ts, fi, *line)));
        }
        heads.push(h);
    }
    while let Some(std::cmp::Reverse((_, fi, _))) = heap.pop() {
        let Some((_, line, raw)) = heads[fi].take() else {
            continue;
        };
        let h = next(fi, &mut readers[fi])?;
        if let Some((ts, l, _)) = &h {
            heap.push(std::cmp::Reverse((*ts, fi, *l)));
        }
        heads[fi] = h;
        if let Some((ts, item)) = parse_line(&raw) {
            sync.line(
                Line {
                    ts,
                    file: fi,
                    line,
                    item,
                },
                emit,
            )?;
        }
    }
    Ok(())
}

/// A venue's decoder and books, fed capture lines in receive order.
struct VenueSync<'o> {
    exchange: String,
    rule: auroraq_binance::DepthRule,
    origins: &'o [String],
    decoder: Decoder,
    books: BTreeMap<String, BookSync>,
    /// What the current line gives.
    events: Vec<AnyEvent>,
}

impl<'o> VenueSync<'o> {
    fn new(venue: Venue, origins: &'o [String]) -> Self {
        let exchange = venue.name().to_owned();
        VenueSync {
            decoder: Decoder::new(&exchange),
            exchange,
            rule: venue.depth_rule(),
            origins,
            books: BTreeMap::new(),
            events: Vec::new(),
        }
    }

    fn line(
        &mut self,
        l: Line<'_>,
        emit: &mut dyn FnMut(AnyEvent) -> Result<(), ReadError>,
    ) -> Result<(), ReadError> {
        let VenueSync {
            exchange,
            rule,
            origins,
            decoder,
            books,
            events,
        } = self;
        let (exchange, rule, decoder) = (&*exchange, *rule, &*decoder);
        // What this line gives; each event too large for a bus message becomes its dead letter.
        let before = events.len();
        let raw = match &l.item {
            Item::Open { url } => *url,
            Item::Frame { text } => *text,
            Item::Snapshot { body, .. } => *body,
        };
        match l.item {
            Item::Open { url } => {
                // A (re)connect: what a book knew may have missed updates.
                for b in books.values_mut() {
                    b.reset();
                }
                events.push(AnyEvent::FeedStatus(FeedStatus {
                    meta: Meta::raw(
                        EventKind::FeedStatus,
                        exchange,
                        &format!("connected:{}", l.ts),
                        l.ts,
                        l.ts,
                    ),
                    feed: exchange.clone(),
                    stream: url.rsplit('/').next().unwrap_or(url).chars().take(200).collect(),
                    symbol: None,
                    status: FeedState::Connected,
                    detail: format!("connected to {}", url.split('?').next().unwrap_or(url)),
                    attributes: BTreeMap::new(),
                }));
            }
            Item::Frame { text } => match decoder.frame(text, l.ts) {
                Ok(MarketEvent::Trade(t)) => events.push(AnyEvent::TradeTick(t)),
                Ok(MarketEvent::Kline(k)) => events.push(AnyEvent::Kline(k)),
                Ok(MarketEvent::Ticker(t)) => events.push(AnyEvent::BookTicker(t)),
                Ok(MarketEvent::Depth(d)) => {
                    let sync = books
                        .entry(d.symbol.clone())
                        .or_insert_with(|| BookSync::new(exchange, &d.symbol, 10_000).with_rule(rule));
                    push_sync(events, sync.on_diff(d));
                }
                Ok(MarketEvent::MarkPrice(m)) => events.push(AnyEvent::MarkPrice(m)),
                Ok(MarketEvent::Liquidation(l)) => events.push(AnyEvent::Liquidation(l)),
                Ok(MarketEvent::Ignored(_)) => {}
                Err(e) => events.push(AnyEvent::DeadLetter(letter(
                    &origins[l.file],
                    l.line,
                    "decode_error",
                    &e.to_string(),
                    text.as_bytes(),
                    l.ts,
                ))),
            },
            Item::Snapshot { symbol, body } => match auroraq_binance::decode::snapshot(&symbol, body, l.ts) {
                Ok(snap) => {
                    let sync = books
                        .entry(symbol.clone())
                        .or_insert_with(|| BookSync::new(exchange, &symbol, 10_000).with_rule(rule));
                    push_sync(events, sync.on_snapshot(snap));
                }
                Err(e) => events.push(AnyEvent::DeadLetter(letter(
                    &origins[l.file],
                    l.line,
                    "decode_error",
                    &e.to_string(),
                    body.as_bytes(),
                    l.ts,
                ))),
            },
        }
        let big = raw.len() > auroraq_schemas::MAX_EVENT_BYTES / 4;
        for e in events.drain(before..) {
            emit(if big {
                fit(e, &origins[l.file], l.line, raw.as_bytes())
            } else {
                e
            })?;
        }
        Ok(())
    }
}

fn push_sync(events: &mut Vec<AnyEvent>, out: Vec<SyncOutput>) {
    for o in out {
        events.push(match o {
            SyncOutput::Update(u) => AnyEvent::BookUpdate(u),
            SyncOutput::Status(s) => AnyEvent::FeedStatus(s),
        });
    }
}

fn parse_line(raw: &str) -> Option<(Micros, Item<'_>)> {
    if let Some((url, rest)) = raw.split_once(" -> ") {
        let (ts, body) = rest.split_once(": ")?;
        let symbol = query_symbol(url)?;
        return Some((seconds(ts)?, Item::Snapshot { symbol, body }));
    }
    if let Some((url, ts)) = raw.split_once(" <-> ") {
        return Some((seconds(ts)?, Item::Open { url }));
    }
    let (ts, text) = raw.split_once(": ")?;
    Some((seconds(ts)?, Item::Frame { text }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_keep_microseconds() {
        assert_eq!(seconds("1633998512.0633569"), Some(1_633_998_512_063_356));
        assert_eq!(seconds("1633998512"), Some(1_633_998_512_000_000));
        assert_eq!(seconds("x"), None);
        assert_eq!(seconds("1.2e3"), None);
    }

    #[test]
    fn symbols_from_urls() {
        assert_eq!(
            query_symbol("https://api.binance.com/api/v3/depth?symbol=NKNUSDT&limit=1000"),
            Some("NKNUSDT".into())
        );
        assert_eq!(query_symbol("https://api.binance.com/api/v3/depth"), None);
    }
}
