//! `auroraq lag` against NATS JetStream: a consumer group's backlog per partition, as a table and
//! as JSON, and the backlog draining as the group acks.

use std::process::Command;
use std::time::Duration;

use auroraq_bus::{Bus, NatsBus, OutMessage, SubscribeOptions};
use serde_json::Value;

fn lag(stream: &str, root: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_auroraq"))
        .env_remove("AURORAQ_CONFIG")
        .env("AURORAQ_BUS_URL", auroraq_tests::nats_url())
        .env("AURORAQ_BUS_STREAM", stream)
        .env("AURORAQ_BUS_SUBJECT_ROOT", root)
        .env("RUST_LOG", "warn")
        .arg("lag")
        .args(args)
        .output()
        .expect("run auroraq lag")
}

/// The group's pending + unacked, by partition, from `auroraq lag --json`.
fn backlog(stream: &str, root: &str) -> (u64, Value) {
    let out = lag(stream, root, &["--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let g = v["groups"]
        .as_array()
        .and_then(|g| g.iter().find(|g| g["group"] == "lagtest").cloned())
        .unwrap_or(Value::Null);
    let total = g["pending"].as_u64().unwrap_or(u64::MAX) + g["unacked"].as_u64().unwrap_or(0);
    (total, v)
}

/// Takes `n` deliveries and acks them.
async fn ack(sub: &mut dyn auroraq_bus::Subscription, n: usize) {
    for _ in 0..n {
        let d = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .expect("a delivery in time")
            .expect("open")
            .expect("a delivery");
        d.ack().await.expect("ack");
    }
}

async fn settle(stream: &str, root: &str, want: u64) -> Value {
    let mut last = Value::Null;
    for _ in 0..50 {
        let (total, v) = backlog(stream, root);
        if total == want {
            return v;
        }
        last = v;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the group's backlog never reached {want}: {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_shows_a_groups_backlog_per_partition_and_it_drains() {
    let cfg = auroraq_tests::isolated_nats_config(&auroraq_tests::nats_url(), 4);
    let (stream, root) = (cfg.stream.clone(), cfg.subject_root.clone());
    let _cleanup = auroraq_tests::DeleteStreamOnDrop {
        stream: stream.clone(),
    };
    let bus = NatsBus::connect(cfg)
        .await
        .expect("NATS with JetStream on 127.0.0.1:4222");
    let mut sub = bus
        .subscribe(SubscribeOptions::new("lagtest", "news.>"))
        .await
        .expect("subscribe");
    let msgs = (0..30)
        .map(|i| {
            OutMessage::new(
                "news.articles.lag",
                Some(format!("asset{i}")),
                format!("{root}-{i}"),
                format!("article {i}").into_bytes().into(),
            )
        })
        .collect();
    bus.publish(msgs).await.expect("publish");
    bus.flush().await.expect("flush");

    // Nothing acked yet: all 30 are the group's backlog, spread over the 4 partitions.
    let v = settle(&stream, &root, 30).await;
    let g = v["groups"]
        .as_array()
        .and_then(|g| g.iter().find(|g| g["group"] == "lagtest"))
        .expect("the group");
    let parts = g["partitions"].as_array().expect("partitions");
    assert!(parts.len() > 1, "{v}");
    let sum: u64 = parts
        .iter()
        .map(|p| p["pending"].as_u64().unwrap_or(0) + p["unacked"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(sum, 30, "{v}");
    assert_eq!(v["bus"], "nats", "{v}");

    // Ten acked: twenty left.
    ack(&mut *sub, 10).await;
    bus.flush().await.expect("flush");
    settle(&stream, &root, 20).await;

    // The table, for one group.
    let out = lag(&stream, &root, &["--group", "lagtest"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.starts_with("GROUP"), "{table}");
    let total = table
        .lines()
        .find(|l| l.starts_with("lagtest") && l.contains(" all "))
        .expect("the group's total line");
    let nums: Vec<u64> = total.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    assert_eq!(nums.iter().sum::<u64>(), 20, "{table}");

    // Drained.
    ack(&mut *sub, 20).await;
    bus.flush().await.expect("flush");
    settle(&stream, &root, 0).await;

    // A group that is not there: a clear error, exit status 2.
    let out = lag(&stream, &root, &["--group", "nope"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no consumer group \"nope\"") && err.contains("lagtest"),
        "{err}"
    );
}
