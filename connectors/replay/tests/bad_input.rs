//! A replay is not stopped by one bad record, and does not pass a file off as a format it is not:
//! oversized records become dead letters naming their file and line, formats are told by content,
//! and a file whose every record is rejected is an error. Publishing runs on the local NATS server
//! (`AURORAQ_TEST_NATS_URL`, default `nats://127.0.0.1:4222`), whose 1 MiB message limit is real.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use auroraq_bus::{topics, Bus, NatsBus, NatsConfig, SubscribeOptions};
use auroraq_replay::{load, replay, Format, LoadOptions, Pace, ReadError};
use auroraq_schemas::{AnyEvent, DeadLetter, MAX_EVENT_BYTES};
use auroraq_util::CancellationToken;

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(rel)
}

/// The shared reference data (`/work/shared/data` beside the repository), if present.
fn shared(rel: &str) -> Option<PathBuf> {
    let p = repo("../shared/data").join(rel);
    p.exists().then_some(p)
}

fn nats_url() -> String {
    std::env::var("AURORAQ_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

async fn nats_bus() -> Arc<NatsBus> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let name = format!("replaybad{}x{}", std::process::id(), nanos % 1_000_000_000);
    let mut cfg = NatsConfig::new(nats_url());
    cfg.stream = name.to_uppercase();
    cfg.subject_root = name;
    cfg.partitions = 1;
    cfg.max_age = Duration::from_secs(600);
    Arc::new(
        NatsBus::connect(cfg)
            .await
            .unwrap_or_else(|e| panic!("NATS with JetStream must run at {}: {e}", nats_url())),
    )
}

/// The first `n` lines of the bundled Reuters articles, with a 2 MB article as line `big`.
fn news_with_a_huge_article(dir: &Path, n: usize, big: usize) -> PathBuf {
    let text = std::fs::read_to_string(repo("data/news/reuters21578.jsonl")).unwrap();
    let mut lines: Vec<String> = text.lines().take(n).map(str::to_owned).collect();
    let huge = serde_json::json!({
        "id": "huge-1",
        "published": "1987-02-26T15:30:00+00:00",
        "title": "A very long article",
        "body": "word ".repeat(400_000),
    });
    lines.insert(big - 1, huge.to_string());
    let p = dir.join("news.jsonl");
    std::fs::write(&p, lines.join("\n") + "\n").unwrap();
    p
}

fn dead_letters(events: &[AnyEvent]) -> Vec<&DeadLetter> {
    events
        .iter()
        .filter_map(|e| match e {
            AnyEvent::DeadLetter(d) => Some(d),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn an_oversized_record_is_a_dead_letter_naming_file_and_line_and_the_replay_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let file = news_with_a_huge_article(dir.path(), 10, 4);
    let events = load(None, std::slice::from_ref(&file), &LoadOptions::default()).unwrap();
    let dls = dead_letters(&events);
    assert_eq!(dls.len(), 1, "{dls:?}");
    let dl = dls[0];
    assert_eq!(dl.reason, "too_large");
    assert!(
        dl.error
            .starts_with(&format!("{} line 4: its Article is ", file.display())),
        "{}",
        &dl.error[..200.min(dl.error.len())]
    );
    assert!(
        dl.original_cut(),
        "the record is kept cut, with its size and hash"
    );
    assert!(AnyEvent::DeadLetter(dl.clone()).encode().unwrap().len() < MAX_EVENT_BYTES);
    let articles = events
        .iter()
        .filter(|e| matches!(e, AnyEvent::Article(_)))
        .count();
    assert_eq!(articles, 10);

    // Onto NATS: every article and the dead letter are published.
    let bus = nats_bus().await;
    let mut dlq = bus
        .subscribe(SubscribeOptions::new("dlq-reader", topics::dlq("replay")))
        .await
        .unwrap();
    let stats = replay(&*bus, events, Pace::Max, CancellationToken::new())
        .await
        .expect("the replay goes on past the oversized record");
    assert_eq!(
        (stats.articles, stats.dead_letters, stats.published),
        (10, 1, 11),
        "{stats:?}"
    );
    let d = tokio::time::timeout(Duration::from_secs(10), dlq.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let AnyEvent::DeadLetter(got) = AnyEvent::decode(d.payload()).unwrap() else {
        panic!("not a dead letter")
    };
    assert!(got.error.contains("line 4"), "{}", &got.error[..200]);
    bus.close().await;
    let _ = bus.delete_stream().await;
}

#[tokio::test]
async fn an_event_the_bus_refuses_becomes_a_dead_letter_and_the_replay_goes_on() {
    // Events made by hand, past the readers' check: the bus itself refuses the large one.
    let dir = tempfile::tempdir().unwrap();
    let file = news_with_a_huge_article(dir.path(), 5, 6);
    let mut events: Vec<AnyEvent> = load(None, &[file], &LoadOptions::default())
        .unwrap()
        .into_iter()
        .filter(|e| matches!(e, AnyEvent::Article(_)))
        .collect();
    let AnyEvent::Article(mut big) = events[0].clone() else {
        unreachable!()
    };
    big.meta.event_id = "f".repeat(32);
    big.article_id = "huge-by-hand".into();
    big.text = "x".repeat(1_100_000);
    events.insert(2, AnyEvent::Article(big));
    let bus = nats_bus().await;
    let mut dlq = bus
        .subscribe(SubscribeOptions::new("dlq-reader", topics::dlq("replay")))
        .await
        .unwrap();
    let stats = replay(&*bus, events, Pace::Max, CancellationToken::new())
        .await
        .expect("the replay goes on past the refused event");
    assert_eq!(
        (stats.articles, stats.events, stats.dead_letters),
        (5, 5, 1),
        "{stats:?}"
    );
    let d = tokio::time::timeout(Duration::from_secs(10), dlq.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let AnyEvent::DeadLetter(dl) = AnyEvent::decode(d.payload()).unwrap() else {
        panic!("not a dead letter")
    };
    assert_eq!(dl.reason, "publish_error");
    assert_eq!(dl.original_id.as_deref(), Some("f".repeat(32).as_str()));
    assert!(dl.original_cut());
    bus.close().await;
    let _ = bus.delete_stream().await;
}

#[test]
fn json_formats_are_told_by_content_not_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    // The bundled Reuters lines, under any JSON name.
    let reuters = std::fs::read_to_string(repo("data/news/reuters21578.jsonl")).unwrap();
    for name in ["a.jsonl", "a.json", "a.ndjson"] {
        assert_eq!(
            Format::detect(&write(name, &reuters)),
            Some(Format::News),
            "{name}"
        );
    }
    // barter JSON lines named .jsonl.
    let barter = "{\"Item\":{\"time_exchange\":\"2025-03-25T23:07:00.773674205Z\",\"time_received\":\"2025-03-25T23:07:00.8Z\",\"exchange\":\"binance_spot\",\"instrument\":0,\"kind\":{\"Trade\":{\"id\":\"1\",\"price\":87232.01,\"amount\":0.00012,\"side\":\"Buy\"}}}}\n";
    assert_eq!(Format::detect(&write("b.jsonl", barter)), Some(Format::Barter));
    // A Feedly response on one line, or pretty-printed.
    let feedly = "{\"id\":\"user/x/category/global.all\",\"updated\":1572574658046,\"items\":[]}";
    assert_eq!(Format::detect(&write("f.jsonl", feedly)), Some(Format::Feedly));
    assert_eq!(
        Format::detect(&write("f.json", "{\n  \"id\": \"x\",\n  \"items\": []\n}\n")),
        Some(Format::Feedly)
    );
    // Something else: no guess.
    assert_eq!(Format::detect(&write("o.jsonl", "{\"a\":1}\n{\"a\":2}\n")), None);
    let err = load(None, &[dir.path().join("o.jsonl")], &LoadOptions::default()).unwrap_err();
    assert!(err.to_string().contains("give --format"), "{err}");
}

#[test]
fn a_barter_capture_named_jsonl_is_read_as_barter() {
    // The case: 1,200 lines of a real barter capture as `.jsonl` gave 1,200 dead letters.
    let Some(src) = shared("binance/barter_recorded/binance_spot_trades_l1_btcusdt_ethusdt_solusdt.json")
    else {
        eprintln!("skipped: the shared barter recording is not here");
        return;
    };
    let text = std::fs::read_to_string(src).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("capture.jsonl");
    std::fs::write(&p, text.lines().take(1200).collect::<Vec<_>>().join("\n") + "\n").unwrap();
    assert_eq!(Format::detect(&p), Some(Format::Barter));
    let events = load(None, std::slice::from_ref(&p), &LoadOptions::default()).unwrap();
    assert_eq!(events.len(), 1200);
    assert!(dead_letters(&events).is_empty());
    // Forced through the news reader, every record is rejected: an error, not 1,200 dead letters.
    match load(Some(Format::News), &[p], &LoadOptions::default()) {
        Err(ReadError::Rejected { format, records, .. }) => assert_eq!((format, records), ("news", 1200)),
        other => panic!("{:?}", other.map(|e| e.len())),
    }
}

#[test]
fn a_file_whose_every_record_is_rejected_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"id\":\"1\",\"published\":\"not a time\",\"title\":\"a\"}\n{\"id\":\"2\",\"published\":\"never\",\"title\":\"b\"}\n",
    )
    .unwrap();
    let err = load(None, std::slice::from_ref(&bad), &LoadOptions::default()).unwrap_err();
    assert!(matches!(err, ReadError::Rejected { records: 2, .. }), "{err}");
    assert!(
        err.to_string().contains("all 2 records were rejected as news"),
        "{err}"
    );
    assert!(err.to_string().contains("line 1: bad published time"), "{err}");
    // One good record is enough: the bad ones are dead letters as before.
    let mixed = dir.path().join("mixed.jsonl");
    std::fs::write(
        &mixed,
        "{\"id\":\"1\",\"published\":\"not a time\",\"title\":\"a\"}\n{\"id\":\"2\",\"published\":\"1987-02-26T15:01:01+00:00\",\"title\":\"b\"}\n",
    )
    .unwrap();
    let events = load(None, &[mixed], &LoadOptions::default()).unwrap();
    assert_eq!((events.len(), dead_letters(&events).len()), (2, 1));
    // An all-bad CSV of bars too.
    let bars = dir.path().join("bars.csv");
    std::fs::write(
        &bars,
        "date,open,high,low,close,volume\nx,1,2,0.5,1.5,10\ny,1,2,0.5,1.5,10\n",
    )
    .unwrap();
    match load(None, &[bars], &LoadOptions::default()) {
        Err(ReadError::Rejected { format: "bars", .. }) | Err(ReadError::Bars(_)) => {}
        other => panic!("{:?}", other.map(|e| e.len())),
    }
}
