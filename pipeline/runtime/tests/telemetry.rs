//! A role's operator surface: /health, /ready (503 until the bus is connected), and /metrics in
//! Prometheus text with the consumer lag of every group and partition. Its own test binary: the
//! metrics recorder is global to a process.

use std::time::Duration;

use auroraq_bus::{OutMessage, SubscribeOptions};
use auroraq_runtime::config::BusConfig;
use auroraq_runtime::telemetry::{self, MetricsConfig};
use auroraq_runtime::{wiring, CancellationToken};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.unwrap();
    let status = buf.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_serves_health_readiness_and_its_consumer_lag() {
    let cancel = CancellationToken::new();
    let cfg = MetricsConfig {
        listen: "127.0.0.1:0".into(),
        lag_interval_secs: 1,
    };
    let t = telemetry::start(&cfg, "test", cancel.clone())
        .await
        .unwrap()
        .expect("a listen address was given");
    assert_eq!(get(t.addr, "/health").await.0, 200);
    let (status, body) = get(t.addr, "/ready").await;
    assert_eq!(status, 503, "not ready before the bus is connected: {body}");

    let bus = wiring::connect_bus(&BusConfig::default()).await.unwrap();
    assert_eq!(get(t.addr, "/ready").await.0, 200, "ready once connected");

    // A group with 5 messages waiting on one partition: the lag gauge says so.
    let _sub = bus
        .subscribe(SubscribeOptions::new("scorers", "news.>"))
        .await
        .unwrap();
    let msgs: Vec<OutMessage> = (0..5)
        .map(|i| {
            OutMessage::new(
                "news.articles.test",
                Some("BTC".into()),
                format!("id-{i}"),
                bytes::Bytes::from_static(b"x"),
            )
        })
        .collect();
    bus.publish(msgs).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let body = loop {
        let (status, body) = get(t.addr, "/metrics").await;
        assert_eq!(status, 200);
        let pending: f64 = body
            .lines()
            .filter(|l| l.starts_with("auroraq_bus_pending_messages{") && l.contains("group=\"scorers\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        if pending == 5.0 {
            break body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "lag never showed 5 pending:\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        body.contains("role=\"test\""),
        "every series carries the role: {body}"
    );
    assert!(
        body.contains("# TYPE auroraq_bus_pending_messages gauge"),
        "{body}"
    );
    cancel.cancel();
}
