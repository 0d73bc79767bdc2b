//! `replay_files` (streamed, bounded memory) publishes what `replay(load(..))` publishes: the
//! same counts, the same messages, and fails the same way on files it cannot read.

use std::path::{Path, PathBuf};

use auroraq_bus::{Bus, InProcBus};
use auroraq_replay::{
    load, replay, replay_files, Format, LoadOptions, Pace, ReadError, ReplayError, StreamOptions,
};
use auroraq_util::CancellationToken;

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(p)
}

#[tokio::test]
async fn streamed_and_loaded_replays_count_the_same() {
    let files: Vec<PathBuf> = [
        "data/market/Coinbase_BTCUSD_1h.csv",
        "data/news/reuters21578.jsonl",
        "tests/data/binance/cryptofeed/BINANCE.ws.1.0",
        "tests/data/binance/binance_spot_market_data_with_disconnect_events.json",
    ]
    .iter()
    .map(|f| repo(f))
    .collect();
    let opts = LoadOptions::default();
    let loaded = {
        let bus = InProcBus::default();
        let events = load(None, &files, &opts).expect("loads");
        replay(&bus, events, Pace::Max, CancellationToken::new())
            .await
            .expect("replays")
    };
    let streamed = {
        let bus = InProcBus::default();
        let small = StreamOptions {
            buffer_bytes: 64 << 10,
        };
        replay_files(
            &bus,
            None,
            &files,
            &opts,
            small,
            Pace::Max,
            CancellationToken::new(),
        )
        .await
        .expect("replays")
    };
    assert_eq!(streamed, loaded);
    assert!(
        streamed.candles > 20_000 && streamed.book_updates > 100,
        "{streamed:?}"
    );
    assert_eq!(streamed.published, streamed.events + streamed.dead_letters);
}

#[tokio::test]
async fn a_file_whose_every_record_is_rejected_fails_before_anything_is_published() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("n.jsonl");
    std::fs::write(
        &bad,
        "{\"published\":\"x\",\"title\":\"t\"}\n{\"published\":\"y\",\"title\":\"u\"}\n",
    )
    .expect("write");
    let bus = InProcBus::default();
    let r = replay_files(
        &bus,
        Some(Format::News),
        &[bad],
        &LoadOptions::default(),
        StreamOptions::default(),
        Pace::Max,
        CancellationToken::new(),
    )
    .await;
    match r {
        Err(ReplayError::Read(ReadError::Rejected {
            records: 2,
            format: "news",
            ..
        })) => {}
        other => panic!("{other:?}"),
    }
    bus.flush().await.expect("flush");
}
