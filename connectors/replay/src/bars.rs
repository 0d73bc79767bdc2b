//! OHLCV bars from CSV files, as data vendors and packages ship them.
//!
//! The header row is found by its columns (banner lines above it are skipped); columns are
//! matched by name, case-insensitively: a time column (`date`, `time`, `timestamp`, `datetime`,
//! `unix`), `open`, `high`, `low`, `close`, and optionally `symbol`/`ticker` and volumes
//! (`volume_<base>` or `volume` for the base asset; `volume_usd`/`volume` for the quote when a base
//! column exists). A file with no symbol column is named by its volume columns when they say
//! (`volume_btc` and `volume_usd`: `BTCUSD`), else the symbol must be given. Rows may come newest first; bars are returned oldest first. Prices are parsed
//! exactly. A row that cannot be read is returned as a [`BadRow`] with its line and reason, never
//! dropped silently.

use std::collections::HashMap;
use std::path::Path;

use auroraq_schemas::{AnyEvent, Dec, EventKind, Kline, Meta, Micros};

use crate::time::parse_timestamp;

/// How to name what a bar file holds.
#[derive(Clone, Debug)]
pub struct BarsOptions {
    /// Exchange or vendor (the event's `exchange` and `source`).
    pub exchange: String,
    /// Symbol when the file has no symbol column (or to override it).
    pub symbol: Option<String>,
    /// Bar length (`1h`, `1d`); inferred from the timestamps when unset.
    pub interval: Option<String>,
}

/// A row that could not be turned into a bar.
#[derive(Clone, Debug, PartialEq)]
pub struct BadRow {
    pub line: u64,
    pub reason: String,
    pub raw: String,
}

/// Why a whole file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BarsError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: no header row with open, high, low, close and a time column in the first 20 lines")]
    NoHeader { path: String },
    #[error("{path}: no symbol column; give the symbol")]
    NoSymbol { path: String },
}

/// Bars read from one file, oldest first, and the rows that were refused.
#[derive(Debug, Default)]
pub struct Bars {
    pub bars: Vec<Kline>,
    pub bad_rows: Vec<BadRow>,
    pub interval: String,
}

pub(crate) struct Columns {
    time: usize,
    symbol: Option<usize>,
    open: usize,
    high: usize,
    low: usize,
    close: usize,
    volume: Option<usize>,
    quote_volume: Option<usize>,
    /// The symbol the volume columns name (`volume_btc` + `volume_usd` → `BTCUSD`), for files
    /// with no symbol column.
    implied_symbol: Option<String>,
}

pub(crate) fn find_columns(header: &[String]) -> Option<Columns> {
    let idx: HashMap<String, usize> = header
        .iter()
        .enumerate()
        .map(|(i, h)| (h.trim().to_ascii_lowercase(), i))
        .collect();
    let get = |names: &[&str]| names.iter().find_map(|n| idx.get(*n).copied());
    let time = get(&["date", "timestamp", "time", "datetime", "unix", "open_time"])?;
    let base_vol = header.iter().enumerate().find_map(|(i, h)| {
        let h = h.trim().to_ascii_lowercase();
        (h.starts_with("volume_") && !h.ends_with("usd") && !h.ends_with("usdt")).then_some(i)
    });
    let suffix = |i: usize| {
        let h = header[i].trim().to_ascii_uppercase();
        h.strip_prefix("VOLUME_")
            .filter(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric()))
            .map(str::to_owned)
    };
    let implied_symbol = base_vol.and_then(|b| {
        let quote = header.iter().position(|h| {
            let h = h.trim().to_ascii_lowercase();
            h == "volume_usd" || h == "volume_usdt"
        })?;
        Some(format!("{}{}", suffix(b)?, suffix(quote)?))
    });
    let (volume, quote_volume) = match base_vol {
        Some(b) => (Some(b), get(&["volume_usd", "volume_usdt", "volume"])),
        None => (get(&["volume", "volumefrom"]), get(&["volumeto", "quote_volume"])),
    };
    Some(Columns {
        time,
        symbol: get(&["symbol", "ticker"]),
        open: get(&["open"])?,
        high: get(&["high"])?,
        low: get(&["low"])?,
        close: get(&["close"])?,
        volume,
        quote_volume,
        implied_symbol,
    })
}

/// Renders a bar length in the usual short form (`1m`, `1h`, `1d`, else seconds).
pub fn interval_name(micros: Micros) -> String {
    let s = micros / 1_000_000;
    match s {
        s if s > 0 && s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s > 0 && s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s > 0 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

fn parse_interval(s: &str) -> Option<Micros> {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit())?);
    let n: i64 = n.parse().ok()?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return None,
    };
    Some(n * secs * 1_000_000)
}

/// Reads a CSV bar file.
///
/// A `.gz` file is decompressed first.
pub fn read_bars(path: &Path, opts: &BarsOptions) -> Result<Bars, BarsError> {
    let io = |source| BarsError::Io {
        path: path.display().to_string(),
        source,
    };
    let text = if path.extension().is_some_and(|e| e == "gz") {
        use std::io::Read;
        let mut s = String::new();
        flate2::read::GzDecoder::new(std::fs::File::open(path).map_err(io)?)
            .read_to_string(&mut s)
            .map_err(io)?;
        s
    } else {
        std::fs::read_to_string(path).map_err(io)?
    };
    parse_bars(&text, &path.display().to_string(), opts)
}

/// Parses CSV bar text (see the module docs). `origin` names the input in errors.
pub fn parse_bars(text: &str, origin: &str, opts: &BarsOptions) -> Result<Bars, BarsError> {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes());
    let mut cols = None;
    let mut rows: Vec<(u64, csv::StringRecord)> = Vec::new();
    let mut bad_rows = Vec::new();
    for (i, rec) in rdr.records().enumerate() {
        let line = i as u64 + 1;
        let rec = match rec {
            Ok(r) => r,
            Err(e) => {
                bad_rows.push(BadRow {
                    line,
                    reason: format!("unreadable CSV: {e}"),
                    raw: String::new(),
                });
                continue;
            }
        };
        if cols.is_none() {
            let header: Vec<String> = rec.iter().map(str::to_owned).collect();
            cols = find_columns(&header);
            if cols.is_none() && line >= 20 {
                return Err(BarsError::NoHeader {
                    path: origin.to_owned(),
                });
            }
            continue;
        }
        rows.push((line, rec));
    }
    let cols = cols.ok_or_else(|| BarsError::NoHeader {
        path: origin.to_owned(),
    })?;
    if cols.symbol.is_none() && opts.symbol.is_none() && cols.implied_symbol.is_none() {
        return Err(BarsError::NoSymbol {
            path: origin.to_owned(),
        });
    }

    let mut parsed: Vec<Row> = Vec::with_capacity(rows.len());
    for (line, rec) in rows {
        match parse_row(&cols, opts, line, &rec) {
            Ok(r) => parsed.push(r),
            Err(b) => bad_rows.push(b),
        }
    }
    // Oldest first; a stable sort keeps the file's order for equal times.
    parsed.sort_by_key(|r| r.time);

    let step = step_of(opts, origin, || {
        parsed
            .windows(2)
            .map(|w| w[1].time - w[0].time)
            .filter(|d| *d > 0)
            .min()
    })?;
    let interval = interval_name(step);
    let mut bars = Vec::with_capacity(parsed.len());
    let mut last_key: Option<(String, Micros)> = None;
    for r in parsed {
        let key = (r.symbol.clone(), r.time);
        if last_key.as_ref() == Some(&key) {
            bad_rows.push(BadRow {
                line: r.line,
                reason: format!("duplicate bar for {} at {}", r.symbol, r.time),
                raw: String::new(),
            });
            continue;
        }
        last_key = Some(key);
        bars.push(kline(r, step, &interval, opts));
    }
    bad_rows.sort_by_key(|b| b.line);
    Ok(Bars {
        bars,
        bad_rows,
        interval,
    })
}

/// Opens a bar file, decompressing a `.gz` one (by name, as [`read_bars`] does).
fn open_bars(path: &Path) -> Result<Box<dyn std::io::Read>, BarsError> {
    let f = std::fs::File::open(path).map_err(|source| BarsError::Io {
        path: path.display().to_string(),
        source,
    })?;
    Ok(if path.extension().is_some_and(|e| e == "gz") {
        Box::new(flate2::read::GzDecoder::new(f))
    } else {
        Box::new(f)
    })
}

/// One pass over a bar file's records: `header` until it returns columns, then `row` for each
/// data record (numbered as [`parse_bars`] numbers them); unreadable records go to `row` too.
fn each_row(
    path: &Path,
    opts: &BarsOptions,
    mut row: impl FnMut(&Columns, u64, Result<&csv::StringRecord, String>) -> Result<(), crate::ReadError>,
) -> Result<(), crate::ReadError> {
    let origin = path.display().to_string();
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(std::io::BufReader::with_capacity(1 << 16, open_bars(path)?));
    let mut cols: Option<Columns> = None;
    let mut pending: Vec<(u64, String)> = Vec::new();
    let mut rec = csv::StringRecord::new();
    let mut line = 0u64;
    loop {
        line += 1;
        let read = match rdr.read_record(&mut rec) {
            Ok(false) => break,
            Ok(true) => Ok(&rec),
            Err(e) => {
                // A reader error on I/O ends the file; a bad record is one bad row.
                if e.is_io_error() {
                    return Err(BarsError::Io {
                        path: origin,
                        source: std::io::Error::other(e),
                    }
                    .into());
                }
                Err(format!("unreadable CSV: {e}"))
            }
        };
        match (&cols, read) {
            (Some(c), r) => row(c, line, r)?,
            (None, Err(why)) => pending.push((line, why)),
            (None, Ok(r)) => {
                let header: Vec<String> = r.iter().map(str::to_owned).collect();
                cols = find_columns(&header);
                if cols.is_none() && line >= 20 {
                    return Err(BarsError::NoHeader { path: origin }.into());
                }
                if let Some(c) = &cols {
                    if c.symbol.is_none() && opts.symbol.is_none() && c.implied_symbol.is_none() {
                        return Err(BarsError::NoSymbol { path: origin }.into());
                    }
                    for (l, why) in pending.drain(..) {
                        row(c, l, Err(why))?;
                    }
                }
            }
        }
    }
    if cols.is_none() {
        return Err(BarsError::NoHeader { path: origin }.into());
    }
    Ok(())
}

/// The place of a bar among a file's events when they are sorted by receive time: after every
/// dead letter of the same time (`seq` of a dead letter is its line), then in the file's order.
const BAR_SEQ: u64 = 1 << 62;

/// Streams a CSV bar file's events to `emit` with their places (`seq`, see [`BAR_SEQ`]): the
/// same events [`read_bars`] gives (dead letters for bad and duplicate rows, then the bars),
/// reading the file twice and holding one row at a time. The first pass checks that the times
/// only rise or only fall (so that the file's order is the time order, or its reverse, and a
/// duplicate is next to its twin) and finds the bar length; a file whose times go back and forth
/// is read whole by [`read_bars`] instead.
pub fn stream_bars(
    path: &Path,
    opts: &BarsOptions,
    emit: &mut dyn FnMut(u64, AnyEvent) -> Result<(), crate::ReadError>,
) -> Result<(), crate::ReadError> {
    let origin = path.display().to_string();
    let (mut rising, mut falling) = (true, true);
    let mut prev: Option<Micros> = None;
    let mut min_gap: Option<Micros> = None;
    each_row(path, opts, |cols, line, rec| {
        let Ok(rec) = rec else { return Ok(()) };
        let Ok(r) = parse_row(cols, opts, line, rec) else {
            return Ok(());
        };
        if let Some(p) = prev {
            rising &= r.time >= p;
            falling &= r.time <= p;
            let gap = (r.time - p).abs();
            if gap > 0 {
                min_gap = Some(min_gap.map_or(gap, |m| m.min(gap)));
            }
        }
        prev = Some(r.time);
        Ok(())
    })?;
    let letter = |b: &BadRow| {
        AnyEvent::DeadLetter(crate::letter(
            &origin,
            b.line,
            "bad_record",
            &b.reason,
            b.raw.as_bytes(),
            0,
        ))
    };
    if !rising && !falling {
        let bars = read_bars(path, opts)?;
        for b in &bars.bad_rows {
            emit(b.line, letter(b))?;
        }
        for (i, k) in bars.bars.into_iter().enumerate() {
            emit(BAR_SEQ + i as u64, AnyEvent::Kline(k))?;
        }
        return Ok(());
    }
    let step = step_of(opts, &origin, || min_gap)?;
    let interval = interval_name(step);
    let mut last: Option<(String, Micros)> = None;
    each_row(path, opts, |cols, line, rec| {
        let rec = match rec {
            Ok(r) => r,
            Err(why) => {
                return emit(
                    line,
                    letter(&BadRow {
                        line,
                        reason: why,
                        raw: String::new(),
                    }),
                )
            }
        };
        let r = match parse_row(cols, opts, line, rec) {
            Ok(r) => r,
            Err(b) => return emit(line, letter(&b)),
        };
        if last.as_ref().is_some_and(|(s, t)| *t == r.time && *s == r.symbol) {
            let b = BadRow {
                line,
                reason: format!("duplicate bar for {} at {}", r.symbol, r.time),
                raw: String::new(),
            };
            return emit(line, letter(&b));
        }
        match &mut last {
            Some((s, t)) => {
                s.clone_from(&r.symbol);
                *t = r.time;
            }
            None => last = Some((r.symbol.clone(), r.time)),
        }
        emit(BAR_SEQ + line, AnyEvent::Kline(kline(r, step, &interval, opts)))
    })
}

/// A row read into a bar's fields.
pub(crate) struct Row {
    pub(crate) line: u64,
    pub(crate) time: Micros,
    pub(crate) symbol: String,
    ohlc: [Dec; 4],
    volume: Dec,
    quote_volume: Option<Dec>,
}

/// Reads one data row (`line` of the file), or says why it is no bar.
pub(crate) fn parse_row(
    cols: &Columns,
    opts: &BarsOptions,
    line: u64,
    rec: &csv::StringRecord,
) -> Result<Row, BadRow> {
    let field = |i: usize| rec.get(i).unwrap_or("").trim();
    let bad = |reason: String| BadRow {
        line,
        reason,
        raw: rec.iter().collect::<Vec<_>>().join(","),
    };
    let Some(time) = parse_timestamp(field(cols.time)) else {
        return Err(bad(format!("unreadable time {:?}", field(cols.time))));
    };
    let mut ohlc = [Dec::ZERO; 4];
    let mut err = None;
    for (slot, (name, col)) in ohlc.iter_mut().zip([
        ("open", cols.open),
        ("high", cols.high),
        ("low", cols.low),
        ("close", cols.close),
    ]) {
        match Dec::parse(field(col)) {
            Ok(d) if d.0.is_sign_negative() => err = Some(format!("negative {name} {:?}", field(col))),
            Ok(d) => *slot = d,
            Err(e) => err = Some(format!("{name}: {e}")),
        }
    }
    let [o, h, l, c] = ohlc;
    if err.is_none() && (h < l || h < o || h < c || l > o || l > c) {
        err = Some(format!("inconsistent bar: open {o} high {h} low {l} close {c}"));
    }
    if let Some(e) = err {
        return Err(bad(e));
    }
    let volume = match cols.volume.map(|i| Dec::parse(field(i))) {
        None => Dec::ZERO,
        Some(Ok(v)) => v,
        Some(Err(e)) => return Err(bad(format!("volume: {e}"))),
    };
    let quote_volume = cols.quote_volume.and_then(|i| Dec::parse(field(i)).ok());
    let symbol = opts
        .symbol
        .clone()
        .or_else(|| cols.symbol.map(|i| field(i).to_owned()))
        .or_else(|| cols.implied_symbol.clone())
        .unwrap_or_default();
    if symbol.is_empty() {
        return Err(bad("empty symbol".into()));
    }
    Ok(Row {
        line,
        time,
        symbol: symbol.to_ascii_uppercase(),
        ohlc,
        volume,
        quote_volume,
    })
}

/// The bar length: the one given, else the smallest positive gap between consecutive times
/// (`min_gap`), else a day.
pub(crate) fn step_of(
    opts: &BarsOptions,
    origin: &str,
    min_gap: impl FnOnce() -> Option<Micros>,
) -> Result<Micros, BarsError> {
    match opts.interval.as_deref().map(|s| (s, parse_interval(s))) {
        Some((_, Some(step))) => Ok(step),
        Some((s, None)) => Err(BarsError::Io {
            path: origin.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("bad interval {s:?}")),
        }),
        None => Ok(min_gap().unwrap_or(86_400_000_000)),
    }
}

/// The bar of a row.
pub(crate) fn kline(r: Row, step: Micros, interval: &str, opts: &BarsOptions) -> Kline {
    let close_time = r.time + step - 1;
    let [open, high, low, close] = r.ohlc;
    Kline {
        // Recorded bars have no receive time: ingest is taken as the bar's close, so that a
        // replay is the same every time.
        meta: Meta::raw(
            EventKind::Kline,
            &opts.exchange,
            &format!("{}:{}:{}", r.symbol, interval, r.time),
            close_time,
            close_time,
        ),
        exchange: opts.exchange.clone(),
        symbol: r.symbol,
        interval: interval.to_owned(),
        open_time: r.time,
        close_time,
        open,
        high,
        low,
        close,
        volume: r.volume,
        quote_volume: r.quote_volume,
        trades: None,
        closed: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> BarsOptions {
        BarsOptions {
            exchange: "coinbase".into(),
            symbol: None,
            interval: None,
        }
    }

    const COINBASE: &str = "Timestamps are UTC timezone,https://www.CryptoDataDownload.com
date,symbol,open,high,low,close,volume_btc,volume
2019-10-17 09-AM,BTCUSD,8051,8056.83,8021.23,8035.88,61.25,492394.56
2019-10-17 08-AM,BTCUSD,7975.89,8070,7975.89,8051,370.45,2971610.86
2019-10-17 07-AM,BTCUSD,NaN,8070,7975.89,8051,370.45,2971610.86
2019-10-17 06-AM,BTCUSD,7975.89,7000,7975.89,8051,1,1
";

    #[test]
    fn reads_coinbase_layout_oldest_first() {
        let b = parse_bars(COINBASE, "t", &opts()).unwrap();
        assert_eq!(b.interval, "1h");
        assert_eq!(b.bars.len(), 2);
        assert!(b.bars[0].open_time < b.bars[1].open_time);
        let last = &b.bars[1];
        assert_eq!(last.symbol, "BTCUSD");
        assert_eq!(last.close.to_string(), "8035.88");
        assert_eq!(last.volume.to_string(), "61.25");
        assert_eq!(
            last.quote_volume.map(|d| d.to_string()).as_deref(),
            Some("492394.56")
        );
        assert_eq!(last.close_time - last.open_time, 3_600_000_000 - 1);
        // Bad rows are reported with their line and reason.
        assert_eq!(b.bad_rows.len(), 2);
        assert_eq!(b.bad_rows[0].line, 5);
        assert!(b.bad_rows[0].reason.contains("open"), "{}", b.bad_rows[0].reason);
        assert!(b.bad_rows[1].reason.contains("inconsistent"));
    }

    #[test]
    fn ids_are_stable_across_reads() {
        let a = parse_bars(COINBASE, "t", &opts()).unwrap();
        let b = parse_bars(COINBASE, "t", &opts()).unwrap();
        assert_eq!(a.bars, b.bars);
    }

    #[test]
    fn symbol_needed_without_column() {
        let text = "Date,Open,High,Low,Close,Volume\n2000-01-03,1,2,0.5,1.5,100\n";
        assert!(matches!(
            parse_bars(text, "t", &opts()),
            Err(BarsError::NoSymbol { .. })
        ));
        let o = BarsOptions {
            symbol: Some("msft".into()),
            ..opts()
        };
        let b = parse_bars(text, "t", &o).unwrap();
        assert_eq!(b.bars[0].symbol, "MSFT");
        assert_eq!(b.interval, "1d");
    }

    #[test]
    fn symbol_from_volume_columns_and_unix_times() {
        let text = "open_time_utc,unix,open,high,low,close,volume_btc,volume_usd
2024-08-01T00:00:00Z,1722470400,64617.83,64818.91,64343.12,64628.52,1266.17,81792216.11
2024-08-01T01:00:00Z,1722474000,64628.52,64785.88,64105.74,64176.11,1308.28,84214100.09
";
        let b = parse_bars(text, "t", &opts()).unwrap();
        assert_eq!(b.interval, "1h");
        assert_eq!(b.bars.len(), 2);
        assert_eq!(b.bars[0].symbol, "BTCUSD");
        assert_eq!(b.bars[0].open_time, 1_722_470_400_000_000);
        assert_eq!(b.bars[1].close.to_string(), "64176.11");
        assert_eq!(
            b.bars[1].quote_volume.map(|d| d.to_string()).as_deref(),
            Some("84214100.09")
        );
    }

    #[test]
    fn no_header_is_an_error() {
        assert!(matches!(
            parse_bars("a,b\n1,2\n", "t", &opts()),
            Err(BarsError::NoHeader { .. })
        ));
    }
}
