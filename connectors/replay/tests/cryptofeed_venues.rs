//! cryptofeed captures of Binance's other venues, real ones from cryptofeed's `sample_data/`
//! (copied unchanged into `connectors/binance/tests/data/cryptofeed/`): Binance.US (the spot
//! protocol on other hosts) and USDⓈ-M futures (depth diffs chained by `pu`).
//!
//! The expected counts were worked out independently of this code, by applying Binance's
//! documented sync rules to the files with a short script (see the data's README).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use auroraq_replay::{load, Format, LoadOptions, ReadError};
use auroraq_schemas::{AnyEvent, BookUpdate, EventKind, FeedState, FeedStatus, OrderSide};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../binance/tests/data/cryptofeed")
        .join(name)
}

fn by_kind(events: &[AnyEvent]) -> BTreeMap<EventKind, usize> {
    let mut m = BTreeMap::new();
    for e in events {
        *m.entry(e.kind()).or_insert(0) += 1;
    }
    m
}

fn statuses(events: &[AnyEvent], state: FeedState) -> Vec<&FeedStatus> {
    events
        .iter()
        .filter_map(|e| match e {
            AnyEvent::FeedStatus(s) if s.status == state => Some(s),
            _ => None,
        })
        .collect()
}

fn book_updates(events: &[AnyEvent]) -> Vec<&BookUpdate> {
    events
        .iter()
        .filter_map(|e| match e {
            AnyEvent::BookUpdate(u) => Some(u),
            _ => None,
        })
        .collect()
}

fn exchange_of(e: &AnyEvent) -> Option<&str> {
    match e {
        AnyEvent::TradeTick(t) => Some(&t.exchange),
        AnyEvent::Kline(k) => Some(&k.exchange),
        AnyEvent::BookTicker(t) => Some(&t.exchange),
        AnyEvent::BookUpdate(u) => Some(&u.exchange),
        AnyEvent::MarkPrice(m) => Some(&m.exchange),
        AnyEvent::Liquidation(l) => Some(&l.exchange),
        AnyEvent::FeedStatus(s) => Some(&s.feed),
        _ => None,
    }
}

#[test]
fn a_binance_us_capture_is_read_with_the_spot_sync_rules() {
    let events = load(None, &[data("BINANCE_US.ws.1.0")], &LoadOptions::default()).unwrap();
    let kinds = by_kind(&events);
    // 336 depth frames: 4 snapshots, 332 diffs applied, 4 older than their snapshot dropped.
    assert_eq!(kinds.get(&EventKind::BookUpdate), Some(&336), "{kinds:?}");
    assert_eq!(kinds.get(&EventKind::BookTicker), Some(&128));
    assert_eq!(kinds.get(&EventKind::TradeTick), Some(&11));
    assert_eq!(kinds.get(&EventKind::Kline), Some(&5));
    assert_eq!(kinds.get(&EventKind::DeadLetter), None);
    assert_eq!(statuses(&events, FeedState::Connected).len(), 1);
    assert!(statuses(&events, FeedState::Gap).is_empty());
    let updates = book_updates(&events);
    assert_eq!(updates.iter().filter(|u| u.snapshot).count(), 4);
    assert!(events.iter().all(|e| exchange_of(e) == Some("binance_us")));
    // Spot chaining: each diff starts right after the id the book had.
    let mut last: BTreeMap<&str, i64> = BTreeMap::new();
    for u in &updates {
        if let Some(prev) = last.get(u.symbol.as_str()).filter(|_| !u.snapshot) {
            assert!(
                u.first_update_id <= prev + 1 && u.final_update_id > *prev,
                "{u:?}"
            );
        }
        last.insert(&u.symbol, u.final_update_id);
    }
}

#[test]
fn a_binance_futures_capture_follows_the_pu_chain() {
    let events = load(None, &[data("BINANCE_FUTURES.ws.1.0")], &LoadOptions::default()).unwrap();
    let kinds = by_kind(&events);
    // 764 depth frames: 4 snapshots, 752 diffs applied, 12 with u < lastUpdateId dropped. With
    // spot's rule (U = previous u + 1) every symbol would gap at its second diff.
    assert_eq!(kinds.get(&EventKind::BookUpdate), Some(&756), "{kinds:?}");
    assert_eq!(kinds.get(&EventKind::BookTicker), Some(&613));
    assert_eq!(kinds.get(&EventKind::TradeTick), Some(&91));
    assert_eq!(kinds.get(&EventKind::Kline), Some(&67));
    assert_eq!(kinds.get(&EventKind::DeadLetter), None);
    assert!(statuses(&events, FeedState::Gap).is_empty());
    assert!(events.iter().all(|e| exchange_of(e) == Some("binance_futures")));
    let updates = book_updates(&events);
    let snapshots: Vec<(&str, i64)> = updates
        .iter()
        .filter(|u| u.snapshot)
        .map(|u| (u.symbol.as_str(), u.final_update_id))
        .collect();
    assert_eq!(
        snapshots,
        vec![
            ("SUSHIUSDT", 600859605926),
            ("AKROUSDT", 600859605486),
            ("KEEPUSDT", 600859619434),
            ("CTKUSDT", 600859618836),
        ]
    );
    // SUSHIUSDT's first diff after its snapshot is the recorded one with U = lastUpdateId.
    let first_sushi = updates
        .iter()
        .find(|u| u.symbol == "SUSHIUSDT" && !u.snapshot)
        .unwrap();
    assert_eq!(
        (first_sushi.first_update_id, first_sushi.final_update_id),
        (600859605926, 600859607423)
    );
    // Futures book tickers carry their event time (`E`).
    let AnyEvent::BookTicker(t) = events
        .iter()
        .find(|e| matches!(e, AnyEvent::BookTicker(_)))
        .unwrap()
    else {
        unreachable!()
    };
    assert_eq!(t.symbol, "SUSHIUSDT");
    assert_eq!(
        (t.meta.ts_event, t.meta.ts_ingest),
        (1_626_992_741_017_000, 1_626_992_741_062_170)
    );
}

/// The futures capture with one applied SUSHIUSDT diff removed: the next one's `pu` names the
/// missing diff's `u`, which is a gap.
#[test]
fn a_missing_futures_diff_is_a_gap_by_pu() {
    let dir = tempfile::tempdir().unwrap();
    let ws = std::fs::read_to_string(data("BINANCE_FUTURES.ws.1.0")).unwrap();
    let missing = "\"U\":600859607950,\"u\":600859609417,\"pu\":600859607423";
    assert_eq!(ws.matches(missing).count(), 1);
    let cut: Vec<&str> = ws.lines().filter(|l| !l.contains(missing)).collect();
    let path = dir.path().join("BINANCE_FUTURES.ws.1.0");
    std::fs::write(&path, cut.join("\n") + "\n").unwrap();
    std::fs::copy(
        data("BINANCE_FUTURES.http.0.0"),
        dir.path().join("BINANCE_FUTURES.http.0.0"),
    )
    .unwrap();
    let events = load(Some(Format::Cryptofeed), &[path], &LoadOptions::default()).unwrap();
    let gaps = statuses(&events, FeedState::Gap);
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    let g = gaps[0];
    assert_eq!(g.symbol.as_deref(), Some("SUSHIUSDT"));
    assert_eq!(
        g.attributes.get("expected").map(String::as_str),
        Some("600859607423")
    );
    assert_eq!(
        g.attributes.get("received").map(String::as_str),
        Some("600859609417")
    );
    // No later snapshot in the capture: the book stays unsynced, nothing of it is published after.
    let after_gap = book_updates(&events)
        .iter()
        .filter(|u| u.symbol == "SUSHIUSDT" && u.final_update_id > 600859607423)
        .count();
    assert_eq!(after_gap, 0);
    assert!(statuses(&events, FeedState::Resynced).is_empty());
}

/// The futures capture with Binance's documented `markPrice` and `forceOrder` examples ("Mark
/// Price Stream", "Liquidation Order Streams") appended as frames received after it, and a
/// `forceOrder` frame with a side Binance does not send: the two become events with the decoded
/// values, on their topics; the bad one a dead letter.
#[test]
fn futures_mark_prices_and_liquidations_are_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let mut ws = std::fs::read_to_string(data("BINANCE_FUTURES.ws.1.0")).unwrap();
    if !ws.ends_with('\n') {
        ws.push('\n');
    }
    let mark = r#"{"stream":"btcusdt@markPrice","data":{"e":"markPriceUpdate","E":1562305380000,"s":"BTCUSDT","p":"11794.15000000","i":"11784.62659091","P":"11784.25641265","r":"0.00038167","T":1562306400000}}"#;
    let force = r#"{"stream":"btcusdt@forceOrder","data":{"e":"forceOrder","E":1568014460893,"o":{"s":"BTCUSDT","S":"SELL","o":"LIMIT","f":"IOC","q":"0.014","p":"9910","ap":"9910","X":"FILLED","l":"0.014","z":"0.014","T":1568014460893}}}"#;
    ws.push_str(&format!("1626992772.000001: {mark}\n"));
    ws.push_str(&format!("1626992772.5: {force}\n"));
    ws.push_str(&format!(
        "1626992773.25: {}\n",
        force.replace(r#""S":"SELL""#, r#""S":"HOLD""#)
    ));
    let path = dir.path().join("BINANCE_FUTURES.ws.1.0");
    std::fs::write(&path, ws).unwrap();
    std::fs::copy(
        data("BINANCE_FUTURES.http.0.0"),
        dir.path().join("BINANCE_FUTURES.http.0.0"),
    )
    .unwrap();
    let events = load(Some(Format::Cryptofeed), &[path], &LoadOptions::default()).unwrap();
    let kinds = by_kind(&events);
    assert_eq!(kinds.get(&EventKind::MarkPrice), Some(&1), "{kinds:?}");
    assert_eq!(kinds.get(&EventKind::Liquidation), Some(&1), "{kinds:?}");
    assert_eq!(kinds.get(&EventKind::DeadLetter), Some(&1), "{kinds:?}");
    // The rest of the capture is read as before.
    assert_eq!(kinds.get(&EventKind::BookUpdate), Some(&756), "{kinds:?}");
    let m = events
        .iter()
        .find_map(|e| match e {
            AnyEvent::MarkPrice(m) => Some(m),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        (m.exchange.as_str(), m.symbol.as_str()),
        ("binance_futures", "BTCUSDT")
    );
    assert_eq!(
        (m.meta.ts_event, m.meta.ts_ingest),
        (1_562_305_380_000_000, 1_626_992_772_000_001)
    );
    assert_eq!(m.mark_price.to_string(), "11794.15000000");
    assert_eq!(
        m.index_price.map(|d| d.to_string()).as_deref(),
        Some("11784.62659091")
    );
    assert_eq!(
        m.estimated_settle_price.map(|d| d.to_string()).as_deref(),
        Some("11784.25641265")
    );
    assert_eq!(
        m.funding_rate.map(|d| d.to_string()).as_deref(),
        Some("0.00038167")
    );
    assert_eq!(m.next_funding_time, Some(1_562_306_400_000_000));
    let l = events
        .iter()
        .find_map(|e| match e {
            AnyEvent::Liquidation(l) => Some(l),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        (l.exchange.as_str(), l.symbol.as_str()),
        ("binance_futures", "BTCUSDT")
    );
    assert_eq!(l.side, OrderSide::Sell);
    assert_eq!(
        (l.order_type.as_str(), l.time_in_force.as_str(), l.status.as_str()),
        ("LIMIT", "IOC", "FILLED")
    );
    assert_eq!(
        [
            &l.quantity,
            &l.price,
            &l.average_price,
            &l.last_filled_quantity,
            &l.filled_quantity
        ]
        .map(|d| d.to_string()),
        ["0.014", "9910", "9910", "0.014", "0.014"]
    );
    assert_eq!(
        (l.meta.ts_event, l.meta.ts_ingest, l.trade_time),
        (
            1_568_014_460_893_000,
            1_626_992_772_500_000,
            1_568_014_460_893_000
        )
    );
    let topics: Vec<String> = events
        .iter()
        .filter(|e| matches!(e, AnyEvent::MarkPrice(_) | AnyEvent::Liquidation(_)))
        .map(auroraq_stage::topic_for)
        .collect();
    assert_eq!(
        topics,
        [
            "market.mark_prices.binance_futures.btcusdt",
            "market.liquidations.binance_futures.btcusdt"
        ]
    );
    let AnyEvent::DeadLetter(dl) = events
        .iter()
        .find(|e| matches!(e, AnyEvent::DeadLetter(_)))
        .unwrap()
    else {
        unreachable!()
    };
    assert!(dl.error.contains("HOLD"), "{}", dl.error);
}

#[test]
fn captures_of_several_venues_are_read_each_by_its_own_rules() {
    let spot =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/binance/cryptofeed/BINANCE.ws.1.0");
    let files = [spot, data("BINANCE_US.ws.1.0"), data("BINANCE_FUTURES.ws.1.0")];
    let events = load(None, &files, &LoadOptions::default()).unwrap();
    let mut per: BTreeMap<&str, usize> = BTreeMap::new();
    for u in book_updates(&events) {
        *per.entry(&u.exchange).or_default() += 1;
    }
    assert_eq!(
        per,
        BTreeMap::from([("binance", 176), ("binance_futures", 756), ("binance_us", 336)])
    );
    assert!(statuses(&events, FeedState::Gap).is_empty());
}

#[test]
fn other_cryptofeed_exchanges_are_still_refused() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["BINANCE_DELIVERY.ws.1.0", "BINANCE_TR.ws.1.0", "KRAKEN.ws.1.0"] {
        let p = dir.path().join(name);
        std::fs::write(&p, "1633998274.7: {\"stream\":\"x@trade\",\"data\":{}}\n").unwrap();
        let e = load(None, &[p], &LoadOptions::default()).unwrap_err();
        assert!(
            matches!(&e, ReadError::Unsupported { what, .. } if what.contains("BINANCE_FUTURES")),
            "{name}: {e}"
        );
    }
}
