//! The replay connector on real recorded files: counts that follow the protocol rules, the same
//! events every time, and bad records kept as dead letters.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use auroraq_bus::{Bus, SubscribeOptions};
use auroraq_replay::{load, replay, Format, LoadOptions, Pace};
use auroraq_schemas::{is_watermark, AnyEvent, EventKind, FeedState, Watermark};
use tokio_util::sync::CancellationToken;

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(p)
}

fn capture() -> PathBuf {
    repo("tests/data/binance/cryptofeed/BINANCE.ws.1.0")
}

fn by_kind(events: &[AnyEvent]) -> BTreeMap<EventKind, usize> {
    let mut m = BTreeMap::new();
    for e in events {
        *m.entry(e.kind()).or_insert(0) += 1;
    }
    m
}

#[test]
fn cryptofeed_capture_follows_the_book_sync_rules() {
    let events = load(Some(Format::Cryptofeed), &[capture()], &LoadOptions::default()).unwrap();
    let kinds = by_kind(&events);
    assert_eq!(kinds.get(&EventKind::BookUpdate), Some(&176), "{kinds:?}");
    assert_eq!(kinds.get(&EventKind::BookTicker), Some(&84));
    assert_eq!(kinds.get(&EventKind::TradeTick), Some(&2));
    assert_eq!(kinds.get(&EventKind::Kline), Some(&2));
    assert_eq!(kinds.get(&EventKind::DeadLetter), None);
    assert!(!events
        .iter()
        .any(|e| matches!(e, AnyEvent::FeedStatus(s) if s.status == FeedState::Gap)));

    // Per symbol: a snapshot first, then diffs that each continue the last applied id.
    let mut last: BTreeMap<String, i64> = BTreeMap::new();
    let mut snapshots = 0;
    for e in &events {
        let AnyEvent::BookUpdate(u) = e else { continue };
        if u.snapshot {
            snapshots += 1;
            assert!(!last.contains_key(&u.symbol), "one snapshot per symbol here");
            last.insert(u.symbol.clone(), u.final_update_id);
            continue;
        }
        let prev = *last
            .get(&u.symbol)
            .unwrap_or_else(|| panic!("{} diff before its snapshot", u.symbol));
        assert!(
            u.final_update_id > prev,
            "stale diff published: {} after {prev}",
            u.final_update_id
        );
        assert!(
            u.first_update_id <= prev + 1,
            "gap published: {} after {prev}",
            u.first_update_id
        );
        last.insert(u.symbol.clone(), u.final_update_id);
    }
    assert_eq!(snapshots, 4);
    assert_eq!(last.len(), 4);
}

#[test]
fn the_same_files_give_the_same_events() {
    let files = [
        capture(),
        repo("tests/data/binance/binance_spot_market_data_with_disconnect_events.json"),
    ];
    let a = load(None, &files, &LoadOptions::default()).unwrap();
    let b = load(None, &files, &LoadOptions::default()).unwrap();
    assert_eq!(a, b);
    let ids: BTreeSet<&str> = a.iter().map(|e| e.meta().event_id.as_str()).collect();
    assert_eq!(ids.len(), a.len(), "every event has its own id");
}

#[test]
fn every_format_reads_its_real_files() {
    let opts = LoadOptions::default();
    let barter = load(
        None,
        &[repo(
            "tests/data/binance/binance_spot_market_data_with_disconnect_events.json",
        )],
        &opts,
    )
    .unwrap();
    let k = by_kind(&barter);
    assert_eq!(
        (k.get(&EventKind::TradeTick), k.get(&EventKind::FeedStatus)),
        (Some(&21), Some(&3)),
        "{k:?}"
    );
    let symbols: BTreeSet<String> = barter
        .iter()
        .filter_map(|e| match e {
            AnyEvent::TradeTick(t) => Some(t.symbol.clone()),
            _ => None,
        })
        .collect();
    assert!(
        symbols.contains("BTCUSDT") && symbols.contains("SOLUSDT"),
        "{symbols:?}"
    );

    let feedly: Vec<PathBuf> = [
        "nnw_feedStream.json",
        "nnw_feedly_macintosh_initial.json",
        "nnw_global.all_empty.json",
    ]
    .iter()
    .map(|f| repo(&format!("tests/data/feedly/{f}")))
    .collect();
    let articles = load(Some(Format::Feedly), &feedly, &opts).unwrap();
    assert_eq!(
        by_kind(&articles).get(&EventKind::Article),
        Some(&23),
        "{:?}",
        by_kind(&articles)
    );
    assert!(articles.iter().all(|e| e.meta().ts_ingest > 0));

    let news = load(None, &[repo("data/news/reuters21578.jsonl")], &opts).unwrap();
    assert_eq!(by_kind(&news).get(&EventKind::Article), Some(&79));
    let AnyEvent::Article(first) = &news[0] else {
        panic!("not an article")
    };
    assert_eq!(first.title.as_deref(), Some("BAHIA COCOA REVIEW"));
    assert_eq!(first.origin.as_deref(), Some("Reuters"));
    assert!(first
        .text
        .starts_with("Showers continued throughout the week in the Bahia cocoa zone"));

    let mut stocks = opts.clone();
    stocks.bars.exchange = "nasdaq".into();
    let bars = load(
        None,
        &[Path::new("/work/shared/data/market/stocks/bokeh-sampledata-2026.1_stocks.csv.gz").to_path_buf()],
        &stocks,
    );
    // The shared data is not in every checkout; when it is, the gzip bars read.
    if let Ok(bars) = bars {
        assert_eq!(by_kind(&bars).get(&EventKind::Kline), Some(&12_154));
    }
}

#[test]
fn bad_records_become_dead_letters_and_the_rest_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(capture()).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines.insert(
        3,
        "1633998512.1: {\"stream\":\"nknusdt@trade\",\"data\":{\"e\":\"trade\"".into(),
    );
    lines.insert(5, "not a capture line".into());
    lines.insert(7, "1633998512.2: {\"stream\":\"nknusdt@aggTrade\",\"data\":{\"e\":\"aggTrade\",\"E\":1,\"s\":\"NKNUSDT\",\"a\":1,\"p\":\"NaN\",\"q\":\"1\",\"f\":1,\"l\":1,\"T\":1,\"m\":true}}".into());
    let ws = dir.path().join("BINANCE.ws.1.0");
    std::fs::write(&ws, lines.join("\n")).unwrap();
    std::fs::copy(
        repo("tests/data/binance/cryptofeed/BINANCE.http.0.0"),
        dir.path().join("BINANCE.http.0.0"),
    )
    .unwrap();
    let events = load(None, &[ws], &LoadOptions::default()).unwrap();
    let letters: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            AnyEvent::DeadLetter(d) => Some(d),
            _ => None,
        })
        .collect();
    assert_eq!(letters.len(), 3, "{letters:#?}");
    assert!(letters.iter().any(|d| d.reason == "bad_record"));
    assert!(letters.iter().any(|d| d.error.contains("not a finite decimal")));
    assert_eq!(
        by_kind(&events).get(&EventKind::BookUpdate),
        Some(&176),
        "the rest is read as before"
    );
}

#[tokio::test]
async fn replayed_events_arrive_on_their_topics() {
    let bus = auroraq_tests::inproc_bus(4, 4096);
    let mut sub = bus
        .subscribe(SubscribeOptions::new("t", "market.>"))
        .await
        .unwrap();
    let events = load(Some(Format::Cryptofeed), &[capture()], &LoadOptions::default()).unwrap();
    let n = events.len() - 1; // the connected status goes to feeds.status.binance
    let stats = replay(&*bus, events, Pace::Max, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(stats.book_updates, 176);
    let mut topics: BTreeMap<String, usize> = BTreeMap::new();
    // The replay's watermarks: per partition, the latest, and whether one came before its data.
    let mut marks: BTreeMap<u32, i64> = BTreeMap::new();
    let mut data = 0;
    while data < n || marks.values().filter(|w| **w == Watermark::END).count() < 4 {
        let d = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .expect("delivery in time")
            .expect("open")
            .expect("delivery");
        if is_watermark(d.payload()) {
            let w = Watermark::decode(d.payload()).unwrap();
            assert_eq!(w.producer, "replay");
            assert_eq!(
                w.partition as u32, d.partition,
                "a watermark rides its own partition"
            );
            let last = marks.entry(d.partition).or_insert(i64::MIN);
            *last = (*last).max(w.watermark);
        } else {
            // Nothing already promised comes after the promise.
            let ev = AnyEvent::decode(d.payload()).unwrap();
            if let Some(w) = marks.get(&d.partition) {
                assert!(
                    auroraq_stage::available_at(&ev) > *w,
                    "an event behind its partition's watermark"
                );
            }
            let family: String = d.topic().split('.').take(2).collect::<Vec<_>>().join(".");
            *topics.entry(family).or_insert(0) += 1;
            data += 1;
        }
        d.ack().await.unwrap();
    }
    assert_eq!(data, n);
    assert_eq!(topics.get("market.book"), Some(&176), "{topics:?}");
    assert_eq!(topics.get("market.tickers"), Some(&84));
    assert_eq!(topics.get("market.trades"), Some(&2));
    assert_eq!(topics.get("market.klines"), Some(&2));
}
