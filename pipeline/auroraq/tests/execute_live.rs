//! `auroraq execute` on a live venue, end to end: the refusals (no switch, no keys), the
//! testnet as the default live venue with its startup log line, orders against the loopback
//! Binance order server over the real NATS bus, and a crash (SIGKILL) while an order is in
//! flight, after which the restarted role reconciles with the venue instead of ordering twice.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use auroraq_bus::{Bus, NatsBus, NatsConfig, SubscribeOptions, Subscription};
use auroraq_schemas::{
    AnyEvent, Dec, EventKind, Meta, OrderSide, OrderStatus, OrderUpdate, RiskDecision, Verdict,
};
use auroraq_tests::binance_orders::{BinanceOrderServer, OrderCue, OrderServerConfig};
use auroraq_tests::{nats_url, unique, DeleteStreamOnDrop};

fn repo_root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// `auroraq` with none of the caller's AuroraQ or Binance variables.
fn auroraq() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_auroraq"));
    c.current_dir(repo_root())
        .env_remove("AURORAQ_CONFIG")
        .env_remove("BINANCE_API_KEY")
        .env_remove("BINANCE_API_SECRET")
        .env_remove("AURORAQ_EXECUTION_ENABLE_LIVE_TRADING")
        .arg("--log-format")
        .arg("json");
    c
}

const KEY: &str = "KEY-5f1c-never-logged";
const SECRET: &str = "SECRET-9a2e-never-logged";

#[test]
fn live_venues_are_refused_without_the_switch_or_the_keys() {
    // Keys but no switch: refused before the bus is touched (this bus does not exist).
    let out = auroraq()
        .env("BINANCE_API_KEY", KEY)
        .env("BINANCE_API_SECRET", SECRET)
        .args([
            "--bus",
            "nats://127.0.0.1:9",
            "execute",
            "--venue",
            "binance-testnet",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("live trading refused") && err.contains("enable_live_trading"),
        "{err}"
    );
    assert!(!err.contains("bus"), "refused before connecting: {err}");
    assert!(!err.contains(KEY) && !err.contains(SECRET), "{err}");
    // The switch but no keys, for real funds: names both variables.
    let out = auroraq()
        .env("AURORAQ_EXECUTION_ENABLE_LIVE_TRADING", "true")
        .args(["--bus", "nats://127.0.0.1:9", "execute", "--venue", "binance"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--venue binance:")
            && err.contains("BINANCE_API_KEY")
            && err.contains("BINANCE_API_SECRET"),
        "{err}"
    );
    // An unknown venue: the command line says which exist.
    let out = auroraq().args(["execute", "--venue", "kraken"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("binance-testnet"), "{err}");
}

fn decision(intent: &str, qty: &str) -> RiskDecision {
    let now = auroraq_schemas::now_micros();
    RiskDecision {
        meta: Meta::raw(EventKind::RiskDecision, "risk", intent, now, now),
        intent_id: intent.into(),
        agent: "auroraq".into(),
        symbol: "BTC-USDT".into(),
        side: OrderSide::Buy,
        verdict: Verdict::Approved,
        approved_quantity: Some(Dec(rust_decimal::Decimal::from_str(qty).unwrap())),
        reason: "ok".into(),
        checks: Default::default(),
    }
}

/// A role process whose stderr is collected.
struct Role {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Role {
    fn start(envs: &[(&str, String)]) -> Role {
        let mut c = auroraq();
        c.env("RUST_LOG", "warn,auroraq_runtime=info,auroraq_execution=info")
            .arg("execute")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in envs {
            c.env(k, v);
        }
        let mut child = c.spawn().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let l = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut g = l.lock().unwrap();
                g.push_str(&line);
                g.push('\n');
            }
        });
        Role { child, log }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    async fn wait_for(&mut self, what: &str) -> String {
        let t0 = Instant::now();
        loop {
            let log = self.log();
            if let Some(line) = log.lines().find(|l| l.contains(what)) {
                return line.to_owned();
            }
            assert!(
                self.child.try_wait().unwrap().is_none(),
                "the role exited before logging {what:?}: {log}"
            );
            assert!(t0.elapsed() < Duration::from_secs(60), "no {what:?} in: {log}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Role {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Order updates from `sub` until `done` holds of what came, or a timeout.
async fn collect(
    sub: &mut Box<dyn Subscription>,
    got: &mut Vec<OrderUpdate>,
    done: impl Fn(&[OrderUpdate]) -> bool,
) {
    let t0 = Instant::now();
    while !done(got) {
        assert!(t0.elapsed() < Duration::from_secs(30), "timed out; got {got:#?}");
        let Ok(Some(Ok(d))) = tokio::time::timeout(Duration::from_millis(500), sub.next()).await else {
            continue;
        };
        if let Ok(AnyEvent::OrderUpdate(u)) = AnyEvent::decode(d.payload()) {
            got.push(u);
        }
        d.ack().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execute_trades_on_the_testnet_by_default_and_reconciles_after_a_crash_mid_order() {
    let server = BinanceOrderServer::start(OrderServerConfig {
        api_key: KEY.into(),
        api_secret: SECRET.into(),
        ..OrderServerConfig::default()
    })
    .await;
    let name = unique("exlive");
    let _cleanup = DeleteStreamOnDrop {
        stream: name.to_uppercase(),
    };
    let state = tempfile::tempdir().unwrap();
    let envs = [
        ("AURORAQ_BUS_URL", nats_url()),
        ("AURORAQ_BUS_STREAM", name.to_uppercase()),
        ("AURORAQ_BUS_SUBJECT_ROOT", name.clone()),
        ("AURORAQ_BUS_ACK_WAIT_SECS", "2".to_owned()),
        // The switch, and no --venue: the testnet, here the loopback server.
        ("AURORAQ_EXECUTION_ENABLE_LIVE_TRADING", "true".to_owned()),
        ("AURORAQ_EXECUTION_BINANCE_TESTNET_URL", server.base_url()),
        ("AURORAQ_EXECUTION_HTTP_TIMEOUT_SECS", "30".to_owned()),
        ("AURORAQ_EXECUTION_STATE_DIR", state.path().display().to_string()),
        ("BINANCE_API_KEY", KEY.to_owned()),
        ("BINANCE_API_SECRET", SECRET.to_owned()),
    ];
    let mut first = Role::start(&envs);
    let line = first.wait_for("execution venue").await;
    assert!(
        line.contains("binance-testnet") && line.contains(&server.base_url()),
        "{line}"
    );
    first.wait_for("order state reconciled with the venue").await;

    let mut nc = NatsConfig::new(nats_url());
    nc.stream = name.to_uppercase();
    nc.subject_root = name.clone();
    nc.partitions = 8;
    let bus = NatsBus::connect(nc).await.unwrap();
    let mut sub = bus
        .subscribe(SubscribeOptions::new("observer", "exec.orders"))
        .await
        .unwrap();

    // A: placed and filled on the venue, reported on the bus.
    let a = decision(&unique("a"), "0.002");
    let a_id = auroraq_execution_coid(&a);
    auroraq_stage::publish_events(&bus, &[AnyEvent::RiskDecision(a.clone())])
        .await
        .unwrap();
    let mut got = Vec::new();
    collect(&mut sub, &mut got, |u| {
        u.iter()
            .any(|u| u.client_order_id == a_id && u.status == OrderStatus::Filled)
    })
    .await;
    assert!(got.iter().all(|u| u.venue == "binance-testnet"), "{got:#?}");

    // B: the venue takes it, the answer never comes, and the role is killed meanwhile.
    let b = decision(&unique("b"), "0.003");
    let b_id = auroraq_execution_coid(&b);
    server.cue(OrderCue::Stall);
    auroraq_stage::publish_events(&bus, &[AnyEvent::RiskDecision(b.clone())])
        .await
        .unwrap();
    let t0 = Instant::now();
    while !server.orders().contains_key(&b_id) {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "B never reached the venue"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    assert!(
        !got.iter().any(|u| u.client_order_id == b_id),
        "nothing of B was reported before the crash"
    );

    // Restarted: B is reconciled from the venue (new, accepted, filled); its decision, never
    // acked, comes back and places nothing.
    let mut second = Role::start(&envs);
    second.wait_for("order state reconciled with the venue").await;
    let mut got_b = Vec::new();
    collect(&mut sub, &mut got_b, |u| {
        u.iter()
            .any(|u| u.client_order_id == b_id && u.status == OrderStatus::Filled)
    })
    .await;
    let filled = got_b
        .iter()
        .find(|u| u.client_order_id == b_id && u.status == OrderStatus::Filled)
        .unwrap();
    assert_eq!(filled.filled_quantity, b.approved_quantity.unwrap());
    assert_eq!(filled.venue, "binance-testnet");
    assert!(got_b
        .iter()
        .any(|u| u.client_order_id == b_id && u.status == OrderStatus::Accepted));
    // Past the ack wait: the redelivered decision has been handled.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let posts_b = server
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.params.get("newClientOrderId") == Some(&b_id))
        .count();
    assert_eq!(posts_b, 1, "B was ordered once");
    assert_eq!(server.orders().len(), 2);
    assert!(server.requests().iter().all(|r| r.signature_ok));
    assert!(second.child.try_wait().unwrap().is_none(), "{}", second.log());
    // Stopped with SIGTERM: a clean exit. No key or secret in any log line.
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(second.child.id().to_string())
        .status();
    let status = second.child.wait().unwrap();
    assert!(status.success(), "{status:?}: {}", second.log());
    for log in [first.log(), second.log()] {
        assert!(!log.contains(KEY) && !log.contains(SECRET), "{log}");
    }
    bus.close().await;
}

/// The client order id `auroraq execute` gives a decision's order.
fn auroraq_execution_coid(d: &RiskDecision) -> String {
    format!(
        "aq-{}",
        auroraq_schemas::event_id("ClientOrderId", &d.agent, &d.intent_id)
    )
}
