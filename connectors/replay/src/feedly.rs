//! Recorded Feedly `/v3/streams/contents` responses, one JSON document per file, read with the
//! Feedly connector's own parser (so a replay gives the articles and ids a live poll gave).

use std::path::Path;

use auroraq_feedly::parse_page;
use auroraq_schemas::AnyEvent;

use crate::recorded::ReadError;

/// Reads one recorded response. A recorded page has no receive time, so each article's is taken
/// as its crawl time (or its publication time): the same file replays the same way every time.
pub fn read_feedly_file(path: &Path) -> Result<Vec<AnyEvent>, ReadError> {
    let origin = path.display().to_string();
    let body = std::fs::read(path).map_err(|source| ReadError::Io { path: origin, source })?;
    let page = parse_page(&body, 0);
    let mut out = Vec::with_capacity(page.articles.len() + page.dead_letters.len());
    for mut a in page.articles {
        a.meta.ts_ingest = a.ts_crawled.unwrap_or(a.meta.ts_event);
        out.push(AnyEvent::Article(a));
    }
    out.extend(page.dead_letters.into_iter().map(AnyEvent::DeadLetter));
    Ok(out)
}
