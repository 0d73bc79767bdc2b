//! Feedly `/v3/streams/contents` bodies into article events and dead letters: a pure function,
//! shared by the poller and by replays of recorded Feedly JSON.
//!
//! An item becomes an [`Article`]:
//!
//! | article | from the item |
//! | --- | --- |
//! | `article_id`, event id | `id` (Feedly's entry id; the event id is derived from it, so a re-fetched item has the same event id) |
//! | `title` | `title`, markup and entities removed; `None` when missing or blank |
//! | `text` | `content.content`, else `summary.content`, HTML stripped, whitespace normalised, cut at [`ParseOptions::max_text_chars`] |
//! | `ts_event` | `published` (epoch ms → µs), else `crawled` |
//! | `ts_crawled` | `crawled` |
//! | `url` | `canonicalUrl`, else the first `canonical[].href`, else the first `alternate[].href` |
//! | `origin` | `origin.title` |
//! | `feed` | `origin.streamId`, else the page's `id` (the stream polled) |
//! | `keywords` | `keywords`, trimmed, blanks and repeats dropped |
//!
//! An item that cannot become an article (not an object, no `id`, no text, a field of the wrong
//! type) becomes a [`DeadLetter`] on `dlq.<source>` with a reason (`bad_item`, `no_id`,
//! `no_text`) and the item's JSON; a body that is not a stream page becomes one dead letter
//! with reason `bad_page`. Nothing here panics on any input.

use std::collections::HashSet;

use auroraq_bus::topics;
use auroraq_schemas::{Article, DeadLetter, EventKind, Meta, Micros};
use auroraq_text::{normalise_whitespace, strip_html, truncate_chars};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// How items become events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseOptions {
    /// The events' `source` (topic `news.articles.<source>`, dead letters on `dlq.<source>`).
    pub source: String,
    /// Longest article text, in characters; longer texts are cut (an event must fit a bus
    /// message: NATS takes 1 MiB by default).
    pub max_text_chars: usize,
    /// Most bytes of an item (or page) kept in a dead letter's `original_bytes`.
    pub max_dead_letter_bytes: usize,
}

impl Default for ParseOptions {
    fn default() -> Self {
        ParseOptions {
            source: crate::SOURCE.to_owned(),
            max_text_chars: 100_000,
            max_dead_letter_bytes: 256 << 10,
        }
    }
}

/// One stream page, read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ParsedPage {
    /// The page's `id`: the stream it belongs to.
    pub stream_id: Option<String>,
    /// The items that became articles, in page order (Feedly: newest first).
    pub articles: Vec<Article>,
    /// The items that could not (or, with `page_error`, the page itself).
    pub dead_letters: Vec<DeadLetter>,
    /// Where the next page starts; `None` on the last page.
    pub continuation: Option<String>,
    /// Items the page held.
    pub items: usize,
    /// The newest `crawled` time (epoch ms) among the page's items, readable or not.
    pub newest_crawled_ms: Option<i64>,
    /// Set when the body is not a stream page (bad JSON, no `items` array, a Feedly error
    /// object); `dead_letters` then holds one letter for the whole body and nothing else is set.
    pub page_error: Option<String>,
}

/// Why an item is not an article.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ItemError {
    #[error("item is not a well-formed Feedly entry: {0}")]
    BadItem(String),
    #[error("item has no id")]
    NoId,
    #[error("item {id} has no text: content and summary are missing or empty after removing markup")]
    NoText { id: String },
}

impl ItemError {
    /// The dead letter's machine-readable reason.
    pub fn reason(&self) -> &'static str {
        match self {
            ItemError::BadItem(_) => "bad_item",
            ItemError::NoId => "no_id",
            ItemError::NoText { .. } => "no_text",
        }
    }
}

/// [`parse_page_with`] with the default options (source `feedly`).
pub fn parse_page(body: &[u8], ts_ingest: Micros) -> ParsedPage {
    parse_page_with(body, ts_ingest, &ParseOptions::default())
}

/// Reads one `/v3/streams/contents` response body into articles, dead letters and the
/// continuation. `ts_ingest` stamps every event (the time the body was received; a replay passes
/// the recorded time). Pure: the same body and time give the same events, ids included.
pub fn parse_page_with(body: &[u8], ts_ingest: Micros, opts: &ParseOptions) -> ParsedPage {
    let page_error = |why: String| ParsedPage {
        dead_letters: vec![page_letter(body, &why, ts_ingest, opts)],
        page_error: Some(why),
        ..ParsedPage::default()
    };
    let value: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return page_error(format!("body is not JSON ({} bytes): {e}", body.len())),
    };
    let Some(obj) = value.as_object() else {
        return page_error(format!("body is JSON but not an object: {}", excerpt(&value)));
    };
    let Some(items) = obj.get("items").and_then(Value::as_array) else {
        let what = match (obj.get("errorCode"), obj.get("errorMessage")) {
            (Some(code), msg) => format!(
                "Feedly error object instead of a page: errorCode {code}{}",
                msg.map(|m| format!(", errorMessage {m}")).unwrap_or_default()
            ),
            _ => format!("no \"items\" array in the page: {}", excerpt(&value)),
        };
        return page_error(what);
    };
    let stream_id = obj.get("id").and_then(Value::as_str).map(str::to_owned);
    let continuation = obj
        .get("continuation")
        .and_then(Value::as_str)
        .filter(|c| !c.trim().is_empty())
        .map(str::to_owned);
    let mut page = ParsedPage {
        stream_id,
        continuation,
        items: items.len(),
        ..ParsedPage::default()
    };
    for item in items {
        if let Some(c) = item.get("crawled").and_then(Value::as_i64) {
            page.newest_crawled_ms = Some(page.newest_crawled_ms.map_or(c, |n| n.max(c)));
        }
        match parse_item(item, page.stream_id.as_deref(), ts_ingest, opts) {
            Ok(a) => page.articles.push(a),
            Err(e) => page.dead_letters.push(item_letter(item, &e, ts_ingest, opts)),
        }
    }
    page
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Item {
    id: Option<String>,
    title: Option<String>,
    content: Option<TextBlock>,
    summary: Option<TextBlock>,
    published: Option<i64>,
    crawled: Option<i64>,
    origin: Option<Origin>,
    canonical_url: Option<String>,
    canonical: Option<Vec<Link>>,
    alternate: Option<Vec<Link>>,
    keywords: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct TextBlock {
    content: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Origin {
    title: Option<String>,
    stream_id: Option<String>,
}

#[derive(Deserialize)]
struct Link {
    href: Option<String>,
}

/// One item (an element of a page's `items`) as an article. `page_stream` is the page's `id`,
/// the feed of last resort.
pub fn parse_item(
    item: &Value,
    page_stream: Option<&str>,
    ts_ingest: Micros,
    opts: &ParseOptions,
) -> Result<Article, ItemError> {
    if !item.is_object() {
        return Err(ItemError::BadItem(format!("not an object: {}", excerpt(item))));
    }
    let it = Item::deserialize(item).map_err(|e| ItemError::BadItem(e.to_string()))?;
    let id = it
        .id
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .ok_or(ItemError::NoId)?;
    let body = |b: &Option<TextBlock>| {
        b.as_ref()
            .and_then(|b| b.content.as_deref())
            .map(strip_html)
            .filter(|t| !t.is_empty())
    };
    let mut text = body(&it.content)
        .or_else(|| body(&it.summary))
        .ok_or_else(|| ItemError::NoText { id: id.clone() })?;
    truncate_chars(&mut text, opts.max_text_chars);
    let title = it.title.as_deref().map(strip_html).filter(|t| !t.is_empty());
    let crawled = it.crawled.and_then(ms_to_micros);
    let ts_event = it
        .published
        .and_then(ms_to_micros)
        .or(crawled)
        .unwrap_or(ts_ingest);
    let nonblank = |s: Option<&str>| s.map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned);
    let first_href =
        |links: &Option<Vec<Link>>| links.iter().flatten().find_map(|l| nonblank(l.href.as_deref()));
    let url = nonblank(it.canonical_url.as_deref())
        .or_else(|| first_href(&it.canonical))
        .or_else(|| first_href(&it.alternate));
    let origin = it
        .origin
        .as_ref()
        .and_then(|o| o.title.as_deref())
        .map(strip_html)
        .filter(|t| !t.is_empty());
    let feed = it
        .origin
        .as_ref()
        .and_then(|o| nonblank(o.stream_id.as_deref()))
        .or_else(|| nonblank(page_stream))
        .unwrap_or_default();
    let mut seen = HashSet::new();
    let keywords = it
        .keywords
        .unwrap_or_default()
        .iter()
        .map(|k| normalise_whitespace(k))
        .filter(|k| !k.is_empty() && seen.insert(k.clone()))
        .collect();
    Ok(Article {
        meta: Meta::raw(EventKind::Article, &opts.source, &id, ts_event, ts_ingest),
        article_id: id,
        feed,
        title,
        text,
        url,
        origin,
        keywords,
        tickers: Vec::new(),
        ts_crawled: crawled,
    })
}

/// Epoch milliseconds as microseconds, for times between 1970 and 9999.
fn ms_to_micros(ms: i64) -> Option<Micros> {
    (0..=253_402_300_799_999)
        .contains(&ms)
        .then(|| ms.saturating_mul(1000))
}

fn item_letter(item: &Value, e: &ItemError, ts_ingest: Micros, opts: &ParseOptions) -> DeadLetter {
    let raw = serde_json::to_vec(item).unwrap_or_default();
    let id = item
        .get("id")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    let native = id.clone().unwrap_or_else(|| hash_hex(&raw));
    dead_letter(
        &format!("item|{}|{native}", e.reason()),
        e.reason(),
        &e.to_string(),
        id,
        &raw,
        ts_ingest,
        opts,
    )
}

fn page_letter(body: &[u8], why: &str, ts_ingest: Micros, opts: &ParseOptions) -> DeadLetter {
    dead_letter(
        &format!("page|{}", hash_hex(body)),
        "bad_page",
        why,
        None,
        body,
        ts_ingest,
        opts,
    )
}

fn dead_letter(
    discriminator: &str,
    reason: &str,
    error: &str,
    key: Option<String>,
    raw: &[u8],
    ts_ingest: Micros,
    opts: &ParseOptions,
) -> DeadLetter {
    let mut error = error.to_owned();
    let kept = raw.len().min(opts.max_dead_letter_bytes);
    if kept < raw.len() {
        error.push_str(&format!(" (original cut to {kept} of {} bytes)", raw.len()));
    }
    DeadLetter {
        meta: Meta::derived(
            EventKind::DeadLetter,
            &opts.source,
            &[],
            discriminator,
            ts_ingest,
            ts_ingest,
        ),
        stage: opts.source.clone(),
        reason: reason.to_owned(),
        error,
        original_topic: topics::articles(&opts.source),
        original_key: key,
        original_id: None,
        original_bytes: raw[..kept].to_vec(),
        attempts: 1,
    }
}

/// The first 16 bytes of SHA-256, in hex.
fn hash_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A short rendering of a JSON value, for error messages.
fn excerpt(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(120) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: Micros = 1_700_000_000_000_000;

    fn page(items: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({"id": "user/u/category/c", "items": items, "continuation": "next1"}))
            .unwrap()
    }

    fn one(item: Value) -> Result<Article, ItemError> {
        parse_item(&item, Some("user/u/category/c"), NOW, &ParseOptions::default())
    }

    #[test]
    fn full_item() {
        let a = one(json!({
            "id": "e1", "title": "Apple &amp; Co <b>up</b>", "published": 1570012843000i64, "crawled": 1570012955549i64,
            "content": {"content": "<p>Shares&nbsp;rose</p>\n\n<p>5%</p>"}, "summary": {"content": "short"},
            "origin": {"title": "iMore", "streamId": "feed/http://www.imore.com/rss.xml", "htmlUrl": "https://www.imore.com/"},
            "canonical": [{"href": "https://www.imore.com/x", "type": "text/html"}],
            "alternate": [{"href": "http://feeds.imore.com/x", "type": "text/html"}],
            "keywords": ["Apple", " Apple ", "", "iPhone"]
        }))
        .unwrap();
        assert_eq!(a.article_id, "e1");
        assert_eq!(
            a.meta.event_id,
            auroraq_schemas::event_id("Article", "feedly", "e1")
        );
        assert_eq!(a.meta.source, "feedly");
        assert_eq!(a.title.as_deref(), Some("Apple & Co up"));
        assert_eq!(a.text, "Shares rose 5%");
        assert_eq!(a.meta.ts_event, 1_570_012_843_000_000);
        assert_eq!(a.meta.ts_ingest, NOW);
        assert_eq!(a.ts_crawled, Some(1_570_012_955_549_000));
        assert_eq!(a.url.as_deref(), Some("https://www.imore.com/x"));
        assert_eq!(a.origin.as_deref(), Some("iMore"));
        assert_eq!(a.feed, "feed/http://www.imore.com/rss.xml");
        assert_eq!(a.keywords, vec!["Apple", "iPhone"]);
        assert!(a.tickers.is_empty());
    }

    #[test]
    fn missing_title_and_summary_only() {
        let a = one(
            json!({"id": "e2", "crawled": 5, "summary": {"content": "Only a <i>summary</i>."},
                           "alternate": [{"href": ""}, {"href": "https://a/2"}]}),
        )
        .unwrap();
        assert_eq!(a.title, None);
        assert_eq!(a.text, "Only a summary.");
        // published missing: crawled is the event time.
        assert_eq!(a.meta.ts_event, 5000);
        assert_eq!(a.url.as_deref(), Some("https://a/2"));
        assert_eq!(a.origin, None);
        assert_eq!(
            a.feed, "user/u/category/c",
            "the page's stream when origin is missing"
        );
        // A blank title is no title; canonicalUrl wins over canonical and alternate.
        let a = one(json!({"id": "e3", "title": " <br> ", "content": {"content": "x"}, "canonicalUrl": "https://c/3",
                           "canonical": [{"href": "https://c/other"}], "alternate": [{"href": "https://a/3"}]}))
        .unwrap();
        assert_eq!(a.title, None);
        assert_eq!(a.url.as_deref(), Some("https://c/3"));
        // No times at all: the ingest time.
        assert_eq!(a.meta.ts_event, NOW);
        assert_eq!(a.ts_crawled, None);
    }

    #[test]
    fn empty_content_falls_back_to_summary() {
        let a = one(
            json!({"id": "e4", "content": {"content": "<img src='x'>"}, "summary": {"content": "Words"}}),
        )
        .unwrap();
        assert_eq!(a.text, "Words");
    }

    #[test]
    fn html_entities() {
        let a = one(json!({"id": "e5", "title": "Tim Cook&#8217;s &ldquo;plan&rdquo;",
                           "summary": {"content": "Rock &amp; roll &lt;3 &#x1F600; caf&eacute; &bogus; AT&T"}}))
        .unwrap();
        assert_eq!(a.title.as_deref(), Some("Tim Cook’s “plan”"));
        assert_eq!(a.text, "Rock & roll <3 😀 café &bogus; AT&T");
    }

    #[test]
    fn huge_text_is_cut_on_a_char_boundary() {
        let huge = format!("<p>{}</p>", "é word ".repeat(400_000));
        let a = one(json!({"id": "e6", "content": {"content": huge}})).unwrap();
        assert_eq!(a.text.chars().count(), ParseOptions::default().max_text_chars);
        let opts = ParseOptions {
            max_text_chars: 10,
            ..ParseOptions::default()
        };
        let a = parse_item(
            &json!({"id": "e7", "summary": {"content": "ééééééééééééé"}}),
            None,
            NOW,
            &opts,
        )
        .unwrap();
        assert_eq!(a.text, "éééééééééé");
    }

    #[test]
    fn bad_items_become_dead_letters() {
        let body = page(json!([
            {"id": "ok", "summary": {"content": "fine"}, "crawled": 10},
            {"summary": {"content": "no id"}, "crawled": 30},
            {"id": "   ", "summary": {"content": "blank id"}},
            {"id": "notext", "title": "Only a title", "summary": {"content": "<div></div>"}},
            {"id": "badtype", "summary": {"content": "x"}, "published": "yesterday"},
            "not an object",
            {"id": "badkw", "summary": {"content": "x"}, "keywords": [1, 2]}
        ]));
        let p = parse_page(&body, NOW);
        assert_eq!(p.items, 7);
        assert_eq!(p.page_error, None);
        assert_eq!(p.continuation.as_deref(), Some("next1"));
        assert_eq!(p.stream_id.as_deref(), Some("user/u/category/c"));
        assert_eq!(
            p.newest_crawled_ms,
            Some(30),
            "unreadable items count for the cursor too"
        );
        assert_eq!(p.articles.len(), 1);
        let reasons: Vec<&str> = p.dead_letters.iter().map(|d| d.reason.as_str()).collect();
        assert_eq!(
            reasons,
            ["no_id", "no_id", "no_text", "bad_item", "bad_item", "bad_item"]
        );
        for d in &p.dead_letters {
            assert_eq!(d.stage, "feedly");
            assert_eq!(d.original_topic, "news.articles.feedly");
            assert!(!d.original_bytes.is_empty());
            assert!(!d.error.is_empty());
        }
        assert!(p.dead_letters[3].error.contains("yesterday") || p.dead_letters[3].error.contains("string"));
        assert_eq!(p.dead_letters[2].original_key.as_deref(), Some("notext"));
        // Deterministic: the same body gives the same ids.
        let again = parse_page(&body, NOW);
        assert_eq!(p, again);
        let ids: HashSet<_> = p.dead_letters.iter().map(|d| d.meta.event_id.clone()).collect();
        assert_eq!(ids.len(), 6, "distinct items give distinct dead letters");
    }

    #[test]
    fn malformed_bodies_never_panic() {
        let cases: [&[u8]; 9] = [
            b"",
            b"{\"id\": \"s\", \"items\": [{\"id\": \"a\"",
            b"null",
            b"[1,2]",
            b"{\"items\": 5}",
            b"{\"id\": \"s\"}",
            b"{\"errorCode\": 401, \"errorMessage\": \"token expired\"}",
            b"\xff\xfe\x00garbage",
            b"{\"items\": [], \"continuation\": 7}",
        ];
        for (i, body) in cases.iter().enumerate() {
            let p = parse_page(body, NOW);
            if i == 8 {
                assert_eq!(p.page_error, None);
                assert_eq!(p.continuation, None, "a non-string continuation is none");
                continue;
            }
            let why = p
                .page_error
                .clone()
                .unwrap_or_else(|| panic!("case {i} must be a page error"));
            assert_eq!(p.dead_letters.len(), 1, "case {i}");
            assert_eq!(p.dead_letters[0].reason, "bad_page");
            assert!(p.articles.is_empty() && p.continuation.is_none());
            if i == 6 {
                assert!(why.contains("401") && why.contains("token expired"), "{why}");
            }
        }
        let big = vec![b'x'; 1 << 20];
        let p = parse_page(&big, NOW);
        assert_eq!(p.dead_letters[0].original_bytes.len(), 256 << 10);
        assert!(p.dead_letters[0].error.contains("cut to"));
    }

    #[test]
    fn empty_stream_recorded() {
        // The recorded empty global.all stream: no items, no continuation.
        let body = br#"{"id": "user/f2f031bd/category/global.all", "updated": 1572574658046, "items": []}"#;
        let p = parse_page(body, NOW);
        assert_eq!(p.page_error, None);
        assert_eq!(p.items, 0);
        assert!(p.articles.is_empty() && p.dead_letters.is_empty());
        assert_eq!(p.continuation, None);
        assert_eq!(p.newest_crawled_ms, None);
    }

    #[test]
    fn out_of_range_times_are_ignored() {
        let a = one(json!({"id": "t", "summary": {"content": "x"}, "published": -5, "crawled": i64::MAX}))
            .unwrap();
        assert_eq!(a.meta.ts_event, NOW);
        assert_eq!(a.ts_crawled, None);
    }
}
