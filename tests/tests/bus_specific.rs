//! What only one bus can show: the in-process bus pushing back on a producer, and JetStream
//! surviving a server restart.

use std::collections::HashSet;
use std::time::Duration;

use auroraq_bus::{Bus, NatsBus, OutMessage, SubscribeOptions};
use auroraq_tests::*;
use bytes::Bytes;

fn msg(i: usize) -> OutMessage {
    OutMessage::new(
        "contract.bp",
        Some(format!("k{}", i % 3)),
        format!("m{i}"),
        Bytes::from(vec![7u8; 200]),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inproc_slow_consumer_slows_the_producer() {
    let capacity = 32;
    let bus = inproc_bus(1, capacity);
    let mut sub = bus
        .subscribe(SubscribeOptions::new("slow", "contract.>").max_in_flight(4))
        .await
        .unwrap();
    let producer = {
        let bus = bus.clone();
        tokio::spawn(async move {
            for i in 0..500 {
                bus.publish(vec![msg(i)]).await.unwrap();
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !producer.is_finished(),
        "the producer must wait while the consumer is stalled"
    );
    let depth = bus.group_depth("slow", "contract.>");
    assert!(
        depth <= capacity,
        "queued + unacked {depth} exceeds the bound {capacity}"
    );
    assert_eq!(depth, capacity, "the queue fills up to its bound");

    let mut seen = HashSet::new();
    while seen.len() < 500 {
        let d = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.insert(d.id().to_owned());
        d.ack().await.unwrap();
        assert!(bus.group_depth("slow", "contract.>") <= capacity);
    }
    tokio::time::timeout(Duration::from_secs(10), producer)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inproc_close_drains_then_ends() {
    let bus = inproc_bus(2, 64);
    let mut sub = bus
        .subscribe(SubscribeOptions::new("drain", "contract.>"))
        .await
        .unwrap();
    bus.publish((0..10).map(msg).collect()).await.unwrap();
    bus.close().await;
    assert!(bus.publish(vec![msg(99)]).await.is_err(), "no intake after close");
    let mut n = 0;
    while let Some(d) = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .unwrap()
    {
        d.unwrap().ack().await.unwrap();
        n += 1;
    }
    assert_eq!(n, 10, "what was queued before close is still delivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_keeps_acked_state_across_a_server_restart() {
    let mut server = PrivateNats::start();
    let mut cfg = isolated_nats_config(&server.url(), 2);
    cfg.connect_timeout = Duration::from_secs(2);
    let bus = NatsBus::connect(cfg).await.unwrap();
    let opts = SubscribeOptions::new("restart", "contract.>").ack_wait(Duration::from_secs(2));
    let mut sub = bus.subscribe(opts).await.unwrap();

    bus.publish((0..40).map(msg).collect()).await.unwrap();
    let mut acked = HashSet::new();
    for _ in 0..20 {
        let d = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        acked.insert(d.id().to_owned());
        d.ack().await.unwrap();
    }
    bus.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    server.stop();
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.restart();

    // Publishing resumes once the client has reconnected.
    let mut published = false;
    for _ in 0..100 {
        if bus.publish((40..60).map(msg).collect()).await.is_ok() {
            published = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(published, "publish works again after the restart");

    // The same subscription goes on: every message not acked before the restart arrives, and
    // none that was acked.
    let mut rest = HashSet::new();
    while rest.len() < 40 {
        let d = tokio::time::timeout(Duration::from_secs(20), sub.next())
            .await
            .expect("deliveries resume after the restart")
            .unwrap()
            .unwrap();
        assert!(
            !acked.contains(d.id()),
            "{} was acked before the restart but came back",
            d.id()
        );
        rest.insert(d.id().to_owned());
        d.ack().await.unwrap();
    }
    let expected: HashSet<String> = (0..60)
        .map(|i| format!("m{i}"))
        .filter(|id| !acked.contains(id))
        .collect();
    assert_eq!(rest, expected);
    bus.close().await;
}
