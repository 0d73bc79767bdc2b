//! News headlines as CSV (`.csv` or `.csv.gz`), as news-API collectors ship them: a header row with
//! `published_utc,headline,source,url,categories` (also `published`/`time`/`date`, `title`,
//! `publisher`, `link`, `tags`/`tickers`), one article a row, read as a stream (the file is never
//! held whole in memory).
//!
//! Each row becomes an [`Article`]: its id is derived from the URL without its query string and the
//! lower-cased headline (the pair such collections de-duplicate on; a URL alone is reused when a
//! headline is edited), so the same row has the same event id on every replay; `origin` is the
//! `source` column (the publisher, which fusion's source weights use); the `categories` tags
//! (`BTC|ETH|MARKET`) go to `keywords`, where the sentiment worker's asset linker reads them as hints
//! (a `BTC` tag links the article to BTC even when the headline says "crypto"). Rows that cannot be
//! read become dead letters with their line.

use std::io::Read;
use std::path::Path;

use auroraq_schemas::{AnyEvent, Article, EventKind, Meta, MAX_EVENT_BYTES};

use crate::recorded::{fit, letter, ReadError};
use crate::time::parse_timestamp;

/// Columns this reader looks for (lower-case names, first match wins).
const TIME: &[&str] = &[
    "published_utc",
    "published",
    "published_at",
    "time",
    "date",
    "datetime",
];
const HEADLINE: &[&str] = &["headline", "title"];
const SOURCE: &[&str] = &["source", "publisher"];
const URL: &[&str] = &["url", "link"];
const TAGS: &[&str] = &["categories", "tags", "tickers"];

/// Whether a CSV header row is a news header (a time and a headline column), not bars.
pub fn is_news_header(header: &str) -> bool {
    let cols: Vec<String> = header
        .split(',')
        .map(|c| c.trim().trim_matches('"').to_ascii_lowercase())
        .collect();
    let has = |names: &[&str]| cols.iter().any(|c| names.contains(&c.as_str()));
    has(TIME) && has(HEADLINE)
}

/// Opens a file, decompressing `.gz` (by name or by its magic bytes).
pub(crate) fn open(path: &Path) -> std::io::Result<Box<dyn Read>> {
    let mut f = std::fs::File::open(path)?;
    let mut magic = [0u8; 2];
    let n = f.read(&mut magic)?;
    let f = std::fs::File::open(path)?;
    Ok(if n == 2 && magic == [0x1f, 0x8b] {
        Box::new(flate2::read::GzDecoder::new(f))
    } else {
        Box::new(f)
    })
}

/// The native id of a headline row: the URL without query or fragment, and the lower-cased
/// headline.
pub fn native_id(url: &str, headline: &str) -> String {
    let base = url.split(['?', '#']).next().unwrap_or("").trim();
    format!("{base}|{}", headline.trim().to_lowercase())
}

/// Reads a news CSV into article events from `feed` (the article topic's last token).
pub fn read_news_csv(path: &Path, feed: &str) -> Result<Vec<AnyEvent>, ReadError> {
    let mut out = Vec::new();
    stream_news_csv(path, feed, &mut |ev| {
        out.push(ev);
        Ok(())
    })?;
    Ok(out)
}

/// [`read_news_csv`], each event to `emit` as it is read (one row held at a time).
pub fn stream_news_csv(
    path: &Path,
    feed: &str,
    emit: &mut dyn FnMut(AnyEvent) -> Result<(), ReadError>,
) -> Result<(), ReadError> {
    let origin = path.display().to_string();
    let io = |source| ReadError::Io {
        path: origin.clone(),
        source,
    };
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(std::io::BufReader::with_capacity(
            1 << 16,
            open(path).map_err(io)?,
        ));
    let header: Vec<String> = rdr
        .headers()
        .map_err(|e| io(std::io::Error::other(e)))?
        .iter()
        .map(|h| h.trim().to_ascii_lowercase())
        .collect();
    let col = |names: &[&str]| names.iter().find_map(|n| header.iter().position(|h| h == n));
    let (Some(time), Some(headline)) = (col(TIME), col(HEADLINE)) else {
        return Err(ReadError::Unsupported {
            path: origin,
            what: format!("no time and headline columns in the header {header:?}"),
        });
    };
    let (source, url, tags) = (col(SOURCE), col(URL), col(TAGS));
    let mut rec = csv::StringRecord::new();
    loop {
        let line = rdr.position().line();
        match rdr.read_record(&mut rec) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                emit(AnyEvent::DeadLetter(letter(
                    &origin,
                    line,
                    "bad_record",
                    &format!("unreadable CSV: {e}"),
                    b"",
                    0,
                )))?;
                continue;
            }
        }
        let field = |i: Option<usize>| i.and_then(|i| rec.get(i)).unwrap_or("").trim();
        let bad = |why: String, ts| {
            let raw = rec.iter().collect::<Vec<_>>().join(",");
            AnyEvent::DeadLetter(letter(&origin, line, "bad_record", &why, raw.as_bytes(), ts))
        };
        let Some(ts) = parse_timestamp(field(Some(time))) else {
            emit(bad(format!("bad published time {:?}", field(Some(time))), 0))?;
            continue;
        };
        let title = field(Some(headline))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        if title.is_empty() {
            emit(bad("no headline".into(), ts))?;
            continue;
        }
        let link = field(url);
        let native = native_id(link, &title);
        // A recorded article has no receive time: ingest is its publication time.
        let meta = Meta::raw(EventKind::Article, feed, &native, ts, ts);
        let article = AnyEvent::Article(Article {
            article_id: meta.event_id.clone(),
            meta,
            feed: feed.to_owned(),
            title: Some(title),
            text: String::new(),
            url: (!link.is_empty()).then(|| link.to_owned()),
            origin: Some(field(source)).filter(|s| !s.is_empty()).map(str::to_owned),
            keywords: field(tags)
                .split(['|', ';'])
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
                .collect(),
            tickers: Vec::new(),
            ts_crawled: None,
        });
        // An article too large for a bus message is this row's dead letter.
        emit(if rec.as_slice().len() > MAX_EVENT_BYTES / 4 {
            let raw = rec.iter().collect::<Vec<_>>().join(",");
            fit(article, &origin, line, raw.as_bytes())
        } else {
            article
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CSV: &str = "published_utc,headline,source,url,categories
2025-05-02T05:04:57Z,Bitcoin Jumps Above $97K,CoinDesk,https://x.test/a?utm=1,
2025-05-02T05:29:36Z,\"Riot posts Q1 loss, beats estimates\",Cointelegraph,https://x.test/b,BTC|MINING
not a time,Broken,CoinDesk,https://x.test/c,
2025-05-02T06:00:00Z,,CoinDesk,https://x.test/d,
";

    fn read(text: &[u8], name: &str) -> Vec<AnyEvent> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        read_news_csv(&p, "cryptonews").unwrap()
    }

    #[test]
    fn rows_become_articles_with_stable_ids_and_tags() {
        let ev = read(CSV.as_bytes(), "n.csv");
        assert_eq!(ev.len(), 4);
        let AnyEvent::Article(a) = &ev[0] else { panic!() };
        assert_eq!(a.title.as_deref(), Some("Bitcoin Jumps Above $97K"));
        assert_eq!(a.origin.as_deref(), Some("CoinDesk"));
        assert_eq!(a.meta.source, "cryptonews");
        assert_eq!(a.meta.ts_event, 1_746_162_297_000_000);
        assert!(a.keywords.is_empty());
        let AnyEvent::Article(b) = &ev[1] else { panic!() };
        assert_eq!(b.keywords, vec!["BTC", "MINING"]);
        assert_eq!(b.title.as_deref(), Some("Riot posts Q1 loss, beats estimates"));
        // Same row, same id; the query string does not matter.
        let again = read(CSV.replace("a?utm=1", "a?utm=2").as_bytes(), "n.csv");
        assert_eq!(again[0].meta().event_id, a.meta.event_id);
        assert!(matches!(&ev[2], AnyEvent::DeadLetter(d) if d.error.contains("line 4")));
        assert!(matches!(&ev[3], AnyEvent::DeadLetter(d) if d.error.contains("no headline")));
    }

    #[test]
    fn gzip_is_read_by_its_magic() {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(CSV.as_bytes()).unwrap();
        let ev = read(&gz.finish().unwrap(), "n.csv.gz");
        assert_eq!(ev.len(), 4);
        assert!(is_news_header("published_utc,headline,source,url,categories"));
        assert!(!is_news_header("open_time_utc,unix,open,high,low,close"));
    }
}
