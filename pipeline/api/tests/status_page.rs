//! The status page in a real browser: Debian's headless chromium (installed by
//! scripts/chromium.sh) loads `/` from a running API fed on its bus with real headlines and
//! fused signals, logs in with the key in the URL fragment, and the test reads the DOM the page's
//! JavaScript built. A screenshot is kept as an artifact (`<target>/status-page.png`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use auroraq_api::{ApiConfig, Backends, Secret};
use auroraq_schemas::*;
use auroraq_stage::to_message;
use auroraq_tests::browser::{chromium, console_errors, headless};
use auroraq_tests::{dyn_bus, inproc_bus};
use auroraq_util::CancellationToken;

mod common;

const KEY: &str = "page-key-0123456789abcdef";

/// The page at `url` after its scripts ran (5 s of virtual time).
fn browse(bin: &str, url: &str, extra: &[String]) -> (String, String) {
    let mut args = vec![
        "--virtual-time-budget=5000".to_string(),
        "--window-size=1280,1000".to_string(),
    ];
    args.extend_from_slice(extra);
    headless(bin, url, &args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_shows_live_data_in_a_browser() {
    let Some(bin) = chromium() else {
        eprintln!("SKIPPED: chromium is not installed (scripts/chromium.sh installs it)");
        return;
    };
    let bus = dyn_bus(inproc_bus(4, 10_000));
    let cfg = ApiConfig {
        listen: "127.0.0.1:0".into(),
        keys: vec![Secret(KEY.into())],
        jwt_secret_env: String::new(),
        ..ApiConfig::default()
    };
    let cancel = CancellationToken::new();
    let api = auroraq_api::start(cfg, Backends::bus_only(bus.clone()), cancel.clone())
        .await
        .expect("start the API");

    // Real headlines (data/crypto), their scores, fused signals for BTC, a portfolio.
    let articles = common::real_articles(4);
    let mut events = Vec::new();
    for a in &articles {
        events.push(AnyEvent::Article(a.clone()));
    }
    for (i, a) in articles.iter().enumerate() {
        events.push(AnyEvent::SentimentScore(common::score_of(
            a,
            if i % 2 == 0 { "positive" } else { "negative" },
            if i % 2 == 0 { 0.8 } else { 0.3 },
        )));
    }
    let t0 = 1_746_172_800_000_000;
    for k in 0..6 {
        let end = t0 + k * 3_600_000_000;
        events.push(AnyEvent::FusedSignal(FusedSignal {
            meta: Meta::raw(EventKind::FusedSignal, "fusion", &format!("BTC-{end}"), end, end),
            asset: "BTC".into(),
            window_start: end - 3_600_000_000,
            window_end: end,
            fused_score: 0.55 + 0.01 * k as f64,
            confidence: 0.8,
            scores_used: 2,
            scores_rejected: 0,
            sources_used: 2,
            weights_used: [("coindesk".to_string(), 1.0)].into_iter().collect(),
            trend: Trend::Rising,
        }));
    }
    let msgs: Vec<_> = events.iter().map(|e| to_message(e).expect("encode")).collect();
    bus.publish(msgs).await.expect("publish");
    // The live view has them before the browser asks.
    let snapshot_ready = async {
        loop {
            let s = api.state.live.headlines(None, 10);
            if s.len() == 4
                && s.iter().all(|h| h.title != h.article_id)
                && api.state.live.fused("BTC").is_some_and(|f| f.history.len() == 6)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), snapshot_ready)
        .await
        .expect("live view filled");

    let url = format!("http://{}/#key={KEY}", api.addr);
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let bin = bin.to_owned();
    let (dom, log) = tokio::task::spawn_blocking({
        let url = url.clone();
        move || browse(&bin, &url, &["--dump-dom".to_string()])
    })
    .await
    .expect("browser");
    assert!(
        dom.contains("data-loaded=\"true\""),
        "the page did not render the snapshot: {log}\n{dom}"
    );
    assert!(!dom.contains("data-error="), "the page shows an error: {dom}");
    // The fused value of BTC (0.600) with a sparkline of 6 points.
    let card = dom
        .find("data-asset=\"BTC\"")
        .map(|i| &dom[i..])
        .expect("a BTC card");
    assert!(card.contains("0.600"), "fused value not shown: {card}");
    assert!(card.contains("data-points=\"6\""), "sparkline points: {card}");
    // Every real headline, with its label.
    for a in &articles {
        let title = a.title.clone().unwrap_or_default().replace('&', "&amp;");
        assert!(dom.contains(&title), "headline {title:?} not on the page");
    }
    assert!(dom.contains("class=\"headline\"") || dom.contains("headline\" data-label"));
    assert!(dom.contains("data-label=\"negative\"") && dom.contains("data-label=\"positive\""));
    let errors = console_errors(&log);
    assert!(errors.is_empty(), "console errors: {errors:?}");

    // A wrong key shows the login form, not data.
    let bad = format!("http://{}/#key=not-the-key-0123456789", api.addr);
    let bin2 = chromium().unwrap_or("chromium").to_owned();
    let (dom_bad, _) = tokio::task::spawn_blocking(move || browse(&bin2, &bad, &["--dump-dom".to_string()]))
        .await
        .expect("browser");
    assert!(
        !dom_bad.contains("data-loaded=\"true\""),
        "data shown with a wrong key"
    );
    assert!(dom_bad.contains("data-error="), "no error shown for a wrong key");

    // The screenshot, kept as the test's artifact.
    let bin3 = chromium().unwrap_or("chromium").to_owned();
    let arg = format!("--screenshot={}", shot.display());
    tokio::task::spawn_blocking(move || browse(&bin3, &url, &[arg]))
        .await
        .expect("browser");
    assert!(
        std::fs::metadata(&shot)
            .map(|m| m.len() > 10_000)
            .unwrap_or(false),
        "no screenshot at {}",
        shot.display()
    );
    eprintln!("screenshot: {}", shot.display());
    cancel.cancel();
    let _ = Arc::clone(&bus);
}
