//! A processor with two inputs, run merged on watermarks on the in-process bus: it sees its
//! events in event-time order whatever order they were published in, only once every input
//! partition's watermark has passed them; an event behind the released frontier goes to
//! `late.<stage>` and never reaches it; its frontier is announced on its output topic.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use auroraq_bus::{Bus, InProcBus, InProcConfig, SubscribeOptions};
use auroraq_schemas::{samples, AnyEvent, Micros, Watermark};
use auroraq_stage::merge::MergeConfig;
use auroraq_stage::watermark::{late_topic, publish_watermark, run_processor_merged, subscribe_inputs};
use auroraq_stage::{publish_events, Clock, ClockKind, HandlerError, Processor, StageConfig, StageMetrics};

struct Recorder {
    seen: Arc<Mutex<Vec<String>>>,
    event_clock: bool,
}

impl Processor for Recorder {
    fn name(&self) -> &str {
        "mergetest"
    }
    fn inputs(&self) -> Vec<String> {
        vec!["market.trades.alpha.>".into(), "market.trades.beta.>".into()]
    }
    fn outputs(&self) -> Vec<String> {
        vec!["alerts".into()]
    }
    fn process(&mut self, ev: &AnyEvent, clock: &dyn Clock) -> Result<Vec<AnyEvent>, HandlerError> {
        if let AnyEvent::TradeTick(t) = ev {
            if self.event_clock {
                // The event clock reads the event being processed.
                assert_eq!(clock.now(), auroraq_stage::available_at(ev));
            } else {
                // A live stage merging by watermarks: the wall clock, later than the event.
                assert!(clock.now() > auroraq_stage::available_at(ev));
            }
            self.seen
                .lock()
                .unwrap()
                .push(format!("{}{}", t.exchange, t.trade_id));
        }
        Ok(Vec::new())
    }
}

fn trade(exchange: &str, seq: u64) -> AnyEvent {
    let mut t = samples::trade(seq);
    t.exchange = exchange.into();
    t.meta.event_id = format!("{exchange}-{seq}");
    AnyEvent::TradeTick(t)
}

fn at(seq: u64) -> Micros {
    auroraq_stage::available_at(&trade("x", seq))
}

async fn wait_for(seen: &Mutex<Vec<String>>, n: usize) -> Vec<String> {
    for _ in 0..200 {
        let s = seen.lock().unwrap().clone();
        if s.len() >= n {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    seen.lock().unwrap().clone()
}

#[tokio::test]
async fn two_inputs_merge_in_event_time_and_late_events_go_to_the_late_topic() {
    merges(ClockKind::Event).await;
}

/// The same on the wall clock (`[stages] merge = "always"`): the order is the events', the
/// outputs' stamps the clock's.
#[tokio::test]
async fn a_live_stage_merges_on_the_wall_clock_too() {
    merges(ClockKind::Wall).await;
}

async fn merges(clock: ClockKind) {
    let bus = Arc::new(InProcBus::new(InProcConfig {
        partitions: 2,
        ..InProcConfig::default()
    }));
    let dynbus: Arc<dyn Bus> = bus.clone();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let p = Recorder {
        seen: seen.clone(),
        event_clock: clock == ClockKind::Event,
    };
    let mut cfg = StageConfig::new("mergetest", "");
    cfg.clock = clock;
    let subs = subscribe_inputs(&*dynbus, &cfg, &p.inputs()).await.unwrap();
    let mut late = bus
        .subscribe(SubscribeOptions::new("watch-late", late_topic("mergetest")))
        .await
        .unwrap();
    let mut out = bus
        .subscribe(SubscribeOptions::new("watch-out", "alerts"))
        .await
        .unwrap();
    let metrics = Arc::new(StageMetrics::default());
    let task = tokio::spawn(run_processor_merged(
        dynbus.clone(),
        cfg,
        subs,
        p,
        MergeConfig::default(),
        metrics.clone(),
    ));

    // Alpha runs ahead and says so; beta has said nothing yet: nothing may be processed.
    let alpha = "market.trades.alpha.btcusdt".to_owned();
    let beta = "market.trades.beta.btcusdt".to_owned();
    publish_events(
        &*dynbus,
        &[trade("alpha", 5), trade("alpha", 10), trade("alpha", 30)],
    )
    .await
    .unwrap();
    publish_watermark(&*dynbus, std::slice::from_ref(&alpha), at(30), "alpha")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(seen.lock().unwrap().is_empty(), "beta holds the frontier");

    // Beta comes to 25: everything up to 25, in time order across both inputs.
    publish_events(
        &*dynbus,
        &[trade("beta", 1), trade("beta", 20), trade("beta", 25)],
    )
    .await
    .unwrap();
    publish_watermark(&*dynbus, std::slice::from_ref(&beta), at(25), "beta")
        .await
        .unwrap();
    let s = wait_for(&seen, 5).await;
    assert_eq!(s, ["beta1", "alpha5", "alpha10", "beta20", "beta25"]);

    // An event behind the frontier: to the late topic, never to the processor.
    publish_events(&*dynbus, &[trade("beta", 2)]).await.unwrap();
    let d = tokio::time::timeout(Duration::from_secs(5), late.next())
        .await
        .expect("a late dead letter")
        .unwrap()
        .unwrap();
    let AnyEvent::DeadLetter(dl) = AnyEvent::decode(d.payload()).unwrap() else {
        panic!("not a dead letter")
    };
    assert_eq!(dl.reason, "late");
    assert_eq!(dl.original_id.as_deref(), Some("beta-2"));
    d.ack().await.unwrap();

    // Beta ends: alpha's 30 goes.
    publish_watermark(&*dynbus, &[beta], Watermark::END, "beta")
        .await
        .unwrap();
    let s = wait_for(&seen, 6).await;
    assert_eq!(s.last().map(String::as_str), Some("alpha30"));
    assert_eq!(s.len(), 6);

    // Its frontier (alpha's watermark at 30, the least) is announced on its output topic.
    let mut best = None;
    while let Ok(Some(Ok(d))) = tokio::time::timeout(Duration::from_millis(300), out.next()).await {
        let w = Watermark::decode(d.payload()).expect("a watermark");
        assert_eq!(w.producer, "mergetest");
        best = best.max(Some(w.watermark));
        d.ack().await.unwrap();
    }
    assert_eq!(best, Some(at(30)));

    bus.close().await;
    let stats = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(stats.processed, 6);
    assert_eq!(stats.dead_letters, 1);
}
