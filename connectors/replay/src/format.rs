//! The recorded formats the replay reads, how each is recognised, and loading files of any of them.

use std::path::{Path, PathBuf};

use auroraq_schemas::AnyEvent;

use crate::bars::{read_bars, BarsOptions};
use crate::recorded::{letter, reject_if_all_bad, ReadError};

/// A recorded format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// CSV OHLCV bars (`market/crypto`, `market/stocks`; `.csv` or `.csv.gz`).
    Bars,
    /// cryptofeed's Binance capture (`<EXCHANGE>.ws.<n>.<m>` with its `.http.` snapshots).
    Cryptofeed,
    /// barter-data's normalised Binance JSON / JSONL.
    Barter,
    /// Feedly `/v3/streams/contents` responses, one JSON document per file.
    Feedly,
    /// News articles as JSON lines (`{"id","published","title","body",...}`, e.g. Reuters-21578).
    News,
    /// News headlines as CSV (`published_utc,headline,source,url,categories`; `.csv` or `.csv.gz`),
    /// told from bars by its header.
    NewsCsv,
}

impl Format {
    pub const NAMES: &'static [&'static str] =
        &["bars", "cryptofeed", "barter", "feedly", "news", "news-csv"];

    pub fn parse(name: &str) -> Option<Format> {
        Some(match name.to_ascii_lowercase().as_str() {
            "bars" | "csv" => Format::Bars,
            "cryptofeed" => Format::Cryptofeed,
            "barter" => Format::Barter,
            "feedly" => Format::Feedly,
            "news" | "reuters" | "jsonl" => Format::News,
            "news-csv" | "news_csv" | "newscsv" => Format::NewsCsv,
            _ => return None,
        })
    }

    /// The format's name, as `--format` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Format::Bars => "bars",
            Format::Cryptofeed => "cryptofeed",
            Format::Barter => "barter",
            Format::Feedly => "feedly",
            Format::News => "news",
            Format::NewsCsv => "news-csv",
        }
    }

    /// Guesses the format of a file from its name and, for JSON (`.json`, `.jsonl`, `.ndjson`)
    /// and CSV, its content: barter items (`"Item"`, `"Reconnecting"`), a Feedly response (an
    /// object with `items` or `continuation`), news JSON lines (an object with `published` and a
    /// `title` or `body`); a CSV whose header has a time and a headline column is news, any other
    /// CSV bars (gzip is read). `None` when the content matches no format.
    pub fn detect(path: &Path) -> Option<Format> {
        let name = path.file_name()?.to_str()?.to_ascii_lowercase();
        if name.contains(".ws.") || name.contains(".http.") {
            return Some(Format::Cryptofeed);
        }
        if name.ends_with(".csv") || name.ends_with(".csv.gz") {
            let mut head = String::new();
            if let Ok(f) = crate::news_csv::open(path) {
                let _ = std::io::Read::read_to_string(&mut std::io::Read::take(f, 4096), &mut head);
            }
            let is_news = head.lines().take(20).any(crate::news_csv::is_news_header);
            return Some(if is_news { Format::NewsCsv } else { Format::Bars });
        }
        if name.ends_with(".jsonl") || name.ends_with(".ndjson") || name.ends_with(".json") {
            let mut head = Vec::with_capacity(64 << 10);
            std::io::Read::read_to_end(
                &mut std::io::Read::take(std::fs::File::open(path).ok()?, 64 << 10),
                &mut head,
            )
            .ok()?;
            return sniff_json(&String::from_utf8_lossy(&head));
        }
        None
    }
}

/// The JSON format the first bytes of a file (`head`) are in.
fn sniff_json(head: &str) -> Option<Format> {
    let head = head.trim_start_matches('\u{feff}').trim_start();
    if head.contains("\"Item\"") || head.contains("\"Reconnecting\"") {
        return Some(Format::Barter);
    }
    // The first line whole: its keys say what it is.
    let first = head.lines().next().unwrap_or("");
    if let Ok(serde_json::Value::Object(m)) = serde_json::from_str::<serde_json::Value>(first) {
        if m.contains_key("items") || m.contains_key("continuation") {
            return Some(Format::Feedly);
        }
        if m.contains_key("published") && (m.contains_key("title") || m.contains_key("body")) {
            return Some(Format::News);
        }
        return None;
    }
    if !head.starts_with('{') {
        return None;
    }
    // A pretty-printed document, or a first line longer than the head.
    if head.contains("\"items\"") || head.contains("\"continuation\"") {
        return Some(Format::Feedly);
    }
    if head.contains("\"published\"") && (head.contains("\"title\"") || head.contains("\"body\"")) {
        return Some(Format::News);
    }
    None
}

/// How to name what the files hold, where they don't say.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub bars: BarsOptions,
    /// barter instrument indexes → symbols.
    pub instruments: Vec<String>,
    /// Source name of news JSONL articles (their topic is `news.articles.<source>`).
    pub news_source: String,
    /// Source name of news CSV articles (the publisher is each row's `source` column).
    pub news_csv_source: String,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            bars: BarsOptions {
                exchange: "csv".into(),
                symbol: None,
                interval: None,
            },
            instruments: crate::barter::DEFAULT_INSTRUMENTS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            news_source: "reuters".into(),
            news_csv_source: "cryptonews".into(),
        }
    }
}

/// Reads recorded files into events (dead letters for records that could not be read). With
/// `format` unset, each file's format is detected.
pub fn load(
    format: Option<Format>,
    files: &[PathBuf],
    opts: &LoadOptions,
) -> Result<Vec<AnyEvent>, ReadError> {
    let mut events = Vec::new();
    let mut captures = Vec::new();
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
        let origin = f.display().to_string();
        let read = match fmt {
            Format::Bars => {
                let bars = read_bars(f, &opts.bars)?;
                let mut read: Vec<AnyEvent> = bars
                    .bad_rows
                    .iter()
                    .map(|r| {
                        AnyEvent::DeadLetter(letter(
                            &origin,
                            r.line,
                            "bad_record",
                            &r.reason,
                            r.raw.as_bytes(),
                            0,
                        ))
                    })
                    .collect();
                read.extend(bars.bars.into_iter().map(AnyEvent::Kline));
                read
            }
            // A capture is read as a whole: its ws and http files are merged by time.
            Format::Cryptofeed => {
                captures.push(f.clone());
                continue;
            }
            Format::Barter => crate::barter::read_barter(f, &opts.instruments)?,
            Format::Feedly => crate::feedly::read_feedly_file(f)?,
            Format::News => crate::reuters::read_news_jsonl(f, &opts.news_source)?,
            Format::NewsCsv => crate::news_csv::read_news_csv(f, &opts.news_csv_source)?,
        };
        reject_if_all_bad(&origin, fmt.name(), &read)?;
        events.extend(read);
    }
    if !captures.is_empty() {
        let read = crate::cryptofeed::read_cryptofeed(&captures)?;
        let names: Vec<String> = captures.iter().map(|p| p.display().to_string()).collect();
        reject_if_all_bad(&names.join(", "), Format::Cryptofeed.name(), &read)?;
        events.extend(read);
    }
    Ok(events)
}
