//! News articles as JSON lines (the Reuters-21578 extract in `news/`):
//! `{"id","published","title","topics","tickers","body"}` per line.

use std::path::Path;

use auroraq_schemas::{AnyEvent, Article, EventKind, Meta};
use serde::Deserialize;

use crate::recorded::{fit, letter, ReadError};
use crate::time::parse_timestamp;

#[derive(Deserialize)]
struct Row {
    id: String,
    published: String,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    topics: Vec<String>,
    #[serde(default)]
    tickers: Vec<String>,
    #[serde(default)]
    body: String,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    publisher: Option<String>,
}

/// Reads a news JSONL file into article events from `source` (the article topic's last token).
pub fn read_news_jsonl(path: &Path, source: &str) -> Result<Vec<AnyEvent>, ReadError> {
    let mut out = Vec::new();
    stream_news_jsonl(path, source, &mut |ev| {
        out.push(ev);
        Ok(())
    })?;
    Ok(out)
}

/// [`read_news_jsonl`], each event to `emit` as it is read (one line held at a time).
pub fn stream_news_jsonl(
    path: &Path,
    source: &str,
    emit: &mut dyn FnMut(AnyEvent) -> Result<(), ReadError>,
) -> Result<(), ReadError> {
    let origin = path.display().to_string();
    for l in crate::stream::lines(path)? {
        let (n, line) = l.map_err(|source| ReadError::Io {
            path: origin.clone(),
            source,
        })?;
        let line = line.as_str();
        if line.trim().is_empty() {
            continue;
        }
        let bad = |why: String, ts| {
            AnyEvent::DeadLetter(letter(&origin, n, "bad_record", &why, line.as_bytes(), ts))
        };
        let row: Row = match serde_json::from_str(line) {
            Ok(r) => r,
            Err(e) => {
                emit(bad(e.to_string(), 0))?;
                continue;
            }
        };
        let Some(ts) = parse_timestamp(&row.published) else {
            emit(bad(format!("bad published time {:?}", row.published), 0))?;
            continue;
        };
        let body = row.body.split_whitespace().collect::<Vec<_>>().join(" ");
        let title = row
            .title
            .map(|t| t.split_whitespace().collect::<Vec<_>>().join(" "))
            .filter(|t| !t.is_empty());
        if body.is_empty() && title.is_none() {
            emit(bad("no title and no body".into(), ts))?;
            continue;
        }
        let publisher = row
            .publisher
            .or_else(|| row.id.starts_with("reuters").then(|| "Reuters".to_owned()));
        let article = AnyEvent::Article(Article {
            // A recorded article has no receive time: ingest is its publication time.
            meta: Meta::raw(EventKind::Article, source, &row.id, ts, ts),
            article_id: row.id,
            feed: source.to_owned(),
            title,
            text: body,
            url: row.url,
            origin: publisher,
            keywords: row.topics,
            tickers: row.tickers,
            ts_crawled: None,
        });
        // An article too large for a bus message is this line's dead letter.
        emit(fit(article, &origin, n, line.as_bytes()))?;
    }
    Ok(())
}
