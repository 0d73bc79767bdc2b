//! The Feedly connector against the loopback Feedly server (`auroraq_tests::feedly_server`), which
//! serves real recorded Feedly responses, with the real Redis at 127.0.0.1:6379 (or
//! `AURORAQ_TEST_REDIS_URL`) as its store, on the in-process bus and on NATS JetStream.
//!
//! Every test uses its own Redis key prefix and deletes its keys at the end.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use auroraq_bus::{Bus, SubscribeOptions, Subscription};
use auroraq_feedly::{
    parse_page, FeedlyConfig, FeedlyConnector, FeedlyError, FeedlyStats, FeedlyStore, MemoryStore,
    RedisStore, RedisStoreConfig, SeenLimits, StoreError, Token,
};
use auroraq_schemas::{event_id, AnyEvent, Article, DeadLetter, FeedState, FeedStatus};
use auroraq_tests::feedly_server::{data_dir, recorded_items, Fault, FeedlyServer};
use auroraq_tests::{free_port, inproc_bus, nats_bus, unique};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "test-token-7f3a9c";
/// The stream of the recorded `global.all` files.
const STREAM: &str = "user/f2f031bd-f3e3-4893-a447-467a291c6d1e/category/global.all";
/// 20 + 40 recorded items, served 25 a page: three pages.
const ITEMS: usize = 60;
const PAGE: u32 = 25;
/// The newest `crawled` of those 60 (in nnw_gobalall_initial.json).
const NEWEST_CRAWLED: i64 = 1_570_012_955_549;

fn redis_url() -> String {
    std::env::var("AURORAQ_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A Redis store under a fresh prefix; its keys are deleted when the guard drops.
struct RedisGuard {
    cfg: RedisStoreConfig,
}

impl Drop for RedisGuard {
    fn drop(&mut self) {
        let cfg = self.cfg.clone();
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                rt.block_on(async move {
                    if let Ok(s) = RedisStore::connect(cfg).await {
                        let _ = s.clear().await;
                    }
                });
            }
        })
        .join();
    }
}

fn store_config(prefix: &str) -> RedisStoreConfig {
    let mut cfg = RedisStoreConfig::new(redis_url());
    cfg.key_prefix = prefix.to_owned();
    cfg
}

async fn redis_store(prefix: &str) -> Arc<RedisStore> {
    let s = RedisStore::connect(store_config(prefix))
        .await
        .unwrap_or_else(|e| panic!("Redis must run at {} for these tests: {e}", redis_url()));
    Arc::new(s)
}

async fn fresh_redis() -> (Arc<RedisStore>, RedisGuard) {
    let prefix = format!("auroraq-test:{}:", unique("feedly"));
    let store = redis_store(&prefix).await;
    (
        store,
        RedisGuard {
            cfg: store_config(&prefix),
        },
    )
}

async fn redis_conn() -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// A server holding the 60 recorded items of two streams under [`STREAM`].
async fn server() -> FeedlyServer {
    let s = FeedlyServer::start(TOKEN).await;
    s.add_items(STREAM, recorded_items("nnw_feedly_macintosh_initial.json"));
    s.add_items(STREAM, recorded_items("nnw_gobalall_initial.json"));
    s
}

/// Test pacing: one poll, short backoffs and timeouts, the whole stream.
fn config(server: &FeedlyServer) -> FeedlyConfig {
    let mut c = FeedlyConfig::new(STREAM);
    c.base_url = server.base_url();
    c.token = Some(Token::new(TOKEN));
    c.count = PAGE;
    c.lookback = None;
    c.once = true;
    c.poll_interval = Duration::from_millis(100);
    c.backoff_initial = Duration::from_millis(100);
    c.backoff_max = Duration::from_millis(800);
    c.request_timeout = Duration::from_secs(5);
    c
}

async fn subscribe_all(bus: &dyn Bus, group: &str) -> Box<dyn Subscription> {
    bus.subscribe(SubscribeOptions::new(group, ">").transient())
        .await
        .unwrap()
}

/// What a subscription got, until it is quiet for `idle`.
#[derive(Default)]
struct Got {
    articles: Vec<Article>,
    dead_letters: Vec<DeadLetter>,
    statuses: Vec<FeedStatus>,
    topics: HashMap<String, usize>,
    /// Watermarks: partition, and how many articles that partition had delivered before it.
    marks: Vec<(u32, auroraq_schemas::Watermark, usize)>,
}

async fn drain(sub: &mut Box<dyn Subscription>, idle: Duration) -> Got {
    let mut got = Got::default();
    let mut per_partition: HashMap<u32, usize> = HashMap::new();
    while let Ok(Some(d)) = tokio::time::timeout(idle, sub.next()).await {
        let d = d.unwrap();
        if auroraq_schemas::is_watermark(d.payload()) {
            let w = auroraq_schemas::Watermark::decode(d.payload()).unwrap();
            let before = per_partition.get(&d.partition).copied().unwrap_or(0);
            got.marks.push((d.partition, w, before));
            d.ack().await.unwrap();
            continue;
        }
        if d.topic().starts_with("news.articles.") {
            *per_partition.entry(d.partition).or_default() += 1;
        }
        *got.topics.entry(d.topic().to_owned()).or_default() += 1;
        match AnyEvent::decode(d.payload()).unwrap() {
            AnyEvent::Article(a) => got.articles.push(a),
            AnyEvent::DeadLetter(l) => got.dead_letters.push(l),
            AnyEvent::FeedStatus(s) => got.statuses.push(s),
            other => panic!("unexpected event {:?}", other.kind()),
        }
        d.ack().await.unwrap();
    }
    got
}

async fn run_once(bus: &dyn Bus, store: Arc<dyn FeedlyStore>, cfg: FeedlyConfig) -> FeedlyStats {
    let c = FeedlyConnector::new(cfg, store).unwrap();
    tokio::time::timeout(Duration::from_secs(60), c.run(bus, CancellationToken::new()))
        .await
        .expect("the poll must finish")
        .unwrap()
}

fn recorded_by_id() -> HashMap<String, Value> {
    [
        "nnw_feedly_macintosh_initial.json",
        "nnw_gobalall_initial.json",
        "nnw_feedStream.json",
    ]
    .iter()
    .flat_map(|f| recorded_items(f))
    .map(|i| (i["id"].as_str().unwrap().to_owned(), i))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_items_become_articles_with_their_fields() {
    let server = server().await;
    let (store, _guard) = fresh_redis().await;
    let bus = inproc_bus(4, 10_000);
    let mut sub = subscribe_all(&*bus, "all").await;

    let stats = run_once(&*bus, store.clone(), config(&server)).await;
    assert_eq!(stats.pages, 3, "{stats:?}");
    assert_eq!(stats.items, ITEMS as u64);
    assert_eq!(stats.articles, ITEMS as u64);
    assert_eq!(
        (
            stats.dead_letters,
            stats.duplicates,
            stats.retries,
            stats.bus_duplicates
        ),
        (0, 0, 0, 0)
    );
    assert_eq!(stats.polls, 1);

    let got = drain(&mut sub, Duration::from_millis(500)).await;
    assert_eq!(got.articles.len(), ITEMS);
    assert_eq!(got.topics.get("news.articles.feedly"), Some(&ITEMS));
    assert!(got.dead_letters.is_empty());
    assert_eq!(got.statuses.len(), 1);
    assert_eq!(got.statuses[0].status, FeedState::Connected);
    assert_eq!(got.statuses[0].stream, STREAM);
    assert_eq!(got.topics.get("feeds.status.feedly"), Some(&1));

    let recorded = recorded_by_id();
    let by_id: HashMap<&str, &Article> = got.articles.iter().map(|a| (a.article_id.as_str(), a)).collect();
    assert_eq!(by_id.len(), ITEMS, "ids are distinct");
    for a in &got.articles {
        let r = &recorded[&a.article_id];
        assert_eq!(a.meta.event_id, event_id("Article", "feedly", &a.article_id));
        assert_eq!(a.meta.source, "feedly");
        assert_eq!(a.meta.ts_event, r["published"].as_i64().unwrap() * 1000);
        assert_eq!(a.ts_crawled, Some(r["crawled"].as_i64().unwrap() * 1000));
        assert_eq!(a.title.as_deref(), r["title"].as_str().map(str::trim));
        assert_eq!(a.origin.as_deref(), r["origin"]["title"].as_str());
        assert_eq!(a.feed, r["origin"]["streamId"].as_str().unwrap());
        assert!(
            !a.text.is_empty() && !a.text.contains("<p>") && !a.text.contains("&quot;"),
            "{}",
            a.article_id
        );
        assert!(!a.text.contains("  ") && a.text.trim() == a.text);
        let kws: Vec<String> = r["keywords"]
            .as_array()
            .map(|k| k.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default();
        assert_eq!(a.keywords, kws);
    }

    // Checked by hand against nnw_gobalall_initial.json.
    // Content and summary: the text is the content's (which goes on past the summary).
    let a = by_id["AxO6mug+YPRclcA3EJcsykvvS1qcjXH62IXONGWCBII=_16d8c10839d:1e1:fc4690a0"];
    assert_eq!(
        a.title.as_deref(),
        Some("It's not just you: Twitter and TweekDeck are experiencing an outage")
    );
    assert!(
        a.text.starts_with(
            "Twitter is not having a good morning What you need to know Twitter is experiencing API irregularity affecting all of its services."
        ),
        "{}",
        a.text
    );
    assert!(
        a.text.contains("As per Twitter's API Status website\""),
        "{}",
        a.text
    );
    assert_eq!(
        a.url.as_deref(),
        Some("https://www.imore.com/twitter-api-irregularity-affecting-ios-tweetdeck")
    );
    assert_eq!(
        a.origin.as_deref(),
        Some("iMore - The #1 iPhone, iPad, and iPod touch blog")
    );
    assert_eq!(a.feed, "feed/http://www.imore.com/rss.xml");
    assert_eq!(a.meta.ts_event, 1_570_012_843_000_000);
    assert_eq!(a.ts_crawled, Some(1_570_012_955_549_000));
    // Summary only, no canonical link: the alternate link.
    let a = by_id["RFlzskW4NhJjlZfijOSI8IXqM9+zz6V9qnDVl1gxaJs=_16d88ed77ca:510a4:18991ffa"];
    assert_eq!(a.title.as_deref(), Some("Concurrency by Tutorials [SUBSCRIBER]"));
    assert_eq!(
        a.text,
        "The book that teaches you everything there is to know about how to write performant and concurrent code for your apps."
    );
    assert_eq!(
        a.url.as_deref(),
        Some("https://www.raywenderlich.com/2942532-concurrency-by-tutorials")
    );
    assert_eq!(a.meta.ts_event, 1_569_958_464_000_000);
    assert!(a.keywords.is_empty());
    // The two items without a title.
    for id in [
        "+jHfsXnBCVfCstSIW1WDumAyigT4rnsUPnI5WFxgnAU=_16d89254704:5121b:18991ffa",
        "ITR2bp1hhxjNSFKlSuZR7gUTTcxmHRq2TwhCgV9CifI=_16d8924f769:5121a:18991ffa",
    ] {
        assert_eq!(by_id[id].title, None, "{id}");
        assert!(!by_id[id].text.is_empty());
    }
    // Keywords (nnw_feedly_macintosh_initial.json: every item has ["Apple"]... or its own).
    let with_kw = got.articles.iter().filter(|a| !a.keywords.is_empty()).count();
    assert!(with_kw >= 20, "{with_kw}");

    // Pagination: three requests, the later ones continuing where the previous page ended.
    let reqs = server.stream_requests();
    assert_eq!(reqs.len(), 3);
    for r in &reqs {
        assert_eq!(r.status, 200);
        assert_eq!(r.param("streamId"), Some(STREAM));
        assert_eq!(r.param("count"), Some("25"));
        assert_eq!(r.param("newerThan"), None, "no cursor and no lookback yet");
        assert_eq!(
            r.authorization.as_deref(),
            Some(format!("Bearer {TOKEN}").as_str())
        );
    }
    assert_eq!(reqs.iter().map(|r| r.items).collect::<Vec<_>>(), [25, 25, 10]);
    assert_eq!(reqs[0].param("continuation"), None);
    let c1 = reqs[1].param("continuation").unwrap();
    let c2 = reqs[2].param("continuation").unwrap();
    assert_ne!(c1, c2);
    assert!(recorded.contains_key(c1) && recorded.contains_key(c2));

    // What Redis keeps: the cursor, and every id in a set that expires.
    assert_eq!(store.cursor(STREAM).await.unwrap(), Some(NEWEST_CRAWLED));
    let mut conn = redis_conn().await;
    let n: usize = redis::cmd("ZCARD")
        .arg(store.seen_key())
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(n, ITEMS);
    let ttl: i64 = redis::cmd("PTTL")
        .arg(store.seen_key())
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(ttl > 0, "the seen set must expire, PTTL {ttl}");
    let raw: String = redis::cmd("GET")
        .arg(store.cursor_key(STREAM))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(raw, NEWEST_CRAWLED.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_publishes_nothing_twice() {
    let server = server().await;
    let prefix = format!("auroraq-test:{}:", unique("feedly"));
    let _guard = RedisGuard {
        cfg: store_config(&prefix),
    };
    let bus = inproc_bus(4, 10_000);
    let mut sub = subscribe_all(&*bus, "all").await;
    let mut cfg = config(&server);
    // Ask again for everything of the last 30 days before the cursor: all 60 come back, and
    // only the seen-id store keeps them from being published twice.
    cfg.cursor_overlap = Duration::from_secs(30 * 24 * 3600);

    let first = run_once(&*bus, redis_store(&prefix).await, cfg.clone()).await;
    assert_eq!(first.articles, ITEMS as u64);

    // A new connector with a new store on the same keys: as after a process restart.
    let second = run_once(&*bus, redis_store(&prefix).await, cfg.clone()).await;
    assert_eq!(
        second.items, ITEMS as u64,
        "everything was fetched again: {second:?}"
    );
    assert_eq!(second.articles, 0, "{second:?}");
    assert_eq!(second.duplicates, ITEMS as u64);
    assert_eq!(
        second.bus_duplicates, 0,
        "nothing was even offered to the bus twice"
    );

    // New items arrive; a third process publishes exactly those.
    let newer = recorded_items("nnw_feedStream.json");
    let new_ids: HashSet<String> = newer
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect();
    server.add_items(STREAM, newer);
    let third = run_once(&*bus, redis_store(&prefix).await, cfg.clone()).await;
    assert_eq!(third.articles, 3, "{third:?}");
    assert_eq!(third.duplicates, ITEMS as u64);
    assert_eq!(third.bus_duplicates, 0);

    // The stored cursor was used: the later polls asked only for items after it (less the overlap).
    let reqs = server.stream_requests();
    let first_of_each: Vec<Option<&str>> = reqs
        .iter()
        .filter(|r| r.param("continuation").is_none())
        .map(|r| r.param("newerThan"))
        .collect();
    let overlap = cfg.cursor_overlap.as_millis() as i64;
    assert_eq!(
        first_of_each,
        [
            None,
            Some((NEWEST_CRAWLED - overlap).to_string().as_str()),
            Some((NEWEST_CRAWLED - overlap).to_string().as_str()),
        ]
    );
    let store = redis_store(&prefix).await;
    assert_eq!(
        store.cursor(STREAM).await.unwrap(),
        Some(1_575_325_551_366),
        "the newest of nnw_feedStream.json"
    );

    let got = drain(&mut sub, Duration::from_millis(500)).await;
    assert_eq!(got.articles.len(), ITEMS + 3, "each article once on the bus");
    let ids: HashSet<&str> = got.articles.iter().map(|a| a.article_id.as_str()).collect();
    assert_eq!(ids.len(), ITEMS + 3);
    assert!(new_ids.iter().all(|i| ids.contains(i.as_str())));
    // The MacRumors item, checked by hand: entities and inline links in the summary.
    let a = got
        .articles
        .iter()
        .find(|a| a.article_id == "i5dK0N4LYkCdW27N2hxMjfOjdU7G+cHFwqWTCuim9HU=_16ec84a47ff:10035:40944486")
        .unwrap();
    assert_eq!(
        a.title.as_deref(),
        Some("Apple Shares New 'Snowbrawl' Shot on iPhone 11 Pro Video")
    );
    assert!(
        a.text.starts_with(
            "Apple this afternoon shared a new video in its long running \"Shot on iPhone\" series, this time showing off the photographic capabilities of the iPhone 11 Pro."
        ),
        "{}",
        a.text
    );
    assert_eq!(a.keywords, ["Apple ads", "Shot on iPhone"]);
    assert_eq!(
        a.url.as_deref(),
        Some("https://www.macrumors.com/2019/12/02/apple-shot-on-iphone-11-snowbrawl-video/")
    );
    assert_eq!(a.meta.ts_event, 1_575_317_751_000_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_wait_as_long_as_retry_after_says() {
    let server = server().await;
    let (store, _guard) = fresh_redis().await;
    let bus = inproc_bus(4, 10_000);
    let mut sub = subscribe_all(&*bus, "all").await;
    // First request: 429 with Retry-After in seconds. Then one page, then 429 with an HTTP date.
    server.push_fault(Fault::RateLimited {
        retry_after: Some("1".into()),
    });
    server.push_fault(Fault::Pass);
    let until = SystemTime::now() + Duration::from_secs(3);
    server.push_fault(Fault::RateLimited {
        retry_after: Some(httpdate::fmt_http_date(until)),
    });

    let stats = run_once(&*bus, store, config(&server)).await;
    assert_eq!(stats.rate_limits, 2, "{stats:?}");
    assert_eq!(stats.articles, ITEMS as u64);
    assert_eq!(stats.requests, 5);

    let reqs = server.stream_requests();
    let statuses: Vec<u16> = reqs.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [429, 200, 429, 200, 200]);
    let gap = reqs[1].at - reqs[0].at;
    assert!(
        gap >= Duration::from_secs(1),
        "retried after {gap:?}, Retry-After: 1"
    );
    assert!(gap < Duration::from_secs(3), "no needless wait: {gap:?}");
    // The HTTP date has whole seconds: the retry must not come before the second it names.
    let named = httpdate::parse_http_date(&httpdate::fmt_http_date(until)).unwrap();
    assert!(
        reqs[3].wall >= named,
        "retried at {:?}, before the Retry-After date {:?}",
        reqs[3].wall,
        named
    );
    // The rate-limited request is asked again as it was (same page).
    assert_eq!(reqs[3].param("continuation"), reqs[2].param("continuation"));
    assert!(reqs[2].param("continuation").is_some());

    let got = drain(&mut sub, Duration::from_millis(500)).await;
    let limited: Vec<&FeedStatus> = got
        .statuses
        .iter()
        .filter(|s| s.status == FeedState::RateLimited)
        .collect();
    assert_eq!(limited.len(), 2);
    assert_eq!(
        limited[0].attributes.get("retry_after").map(String::as_str),
        Some("1")
    );
    assert_eq!(
        limited[0].attributes.get("http_status").map(String::as_str),
        Some("429")
    );
    let waited: u64 = limited[0].attributes["retry_after_ms"].parse().unwrap();
    assert!((1000..=1100).contains(&waited), "{waited}");
    assert_eq!(got.articles.len(), ITEMS);
    // After each rate limit the link is reported up again.
    let seq: Vec<FeedState> = got.statuses.iter().map(|s| s.status).collect();
    assert_eq!(
        seq,
        [
            FeedState::RateLimited,
            FeedState::Connected,
            FeedState::RateLimited,
            FeedState::Connected
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_drops_and_stalls_are_retried_with_backoff() {
    let server = server().await;
    let bus = inproc_bus(4, 10_000);
    let mut sub = subscribe_all(&*bus, "all").await;
    server.push_fault(Fault::Status(500));
    server.push_fault(Fault::Status(503));
    server.push_fault(Fault::DropMidResponse);
    server.push_fault(Fault::Stall(Duration::from_secs(20)));
    let mut cfg = config(&server);
    cfg.request_timeout = Duration::from_millis(700);

    let t0 = Instant::now();
    let stats = run_once(&*bus, Arc::new(MemoryStore::default()), cfg).await;
    let took = t0.elapsed();
    assert_eq!(stats.articles, ITEMS as u64, "{stats:?}");
    assert_eq!(stats.retries, 4);
    assert_eq!(stats.requests, 7);
    assert!(
        took < Duration::from_secs(10),
        "the stall was cut by the request timeout: {took:?}"
    );

    let reqs = server.stream_requests();
    let faults: Vec<Option<Fault>> = reqs.iter().map(|r| r.fault.clone()).collect();
    assert_eq!(faults[4], None, "{faults:?}");
    // Backoff with equal jitter: the n-th retry waits at least 100 ms · 2ⁿ⁻¹ / 2.
    let gaps: Vec<Duration> = reqs.windows(2).map(|w| w[1].at - w[0].at).collect();
    assert!(gaps[0] >= Duration::from_millis(50), "{gaps:?}");
    assert!(gaps[1] >= Duration::from_millis(100), "{gaps:?}");
    assert!(gaps[2] >= Duration::from_millis(200), "{gaps:?}");
    // The stalled request: the timeout, then the backoff.
    assert!(gaps[3] >= Duration::from_millis(700 + 400), "{gaps:?}");
    // The same first page was asked each time.
    assert!(reqs[..5].iter().all(|r| r.param("continuation").is_none()));
    assert_eq!(reqs[4].status, 200);

    let got = drain(&mut sub, Duration::from_millis(500)).await;
    let seq: Vec<FeedState> = got.statuses.iter().map(|s| s.status).collect();
    assert_eq!(
        seq,
        [FeedState::Disconnected, FeedState::Connected],
        "reported once per outage"
    );
    assert_eq!(
        got.statuses[0].attributes.get("http_status").map(String::as_str),
        Some("500")
    );
    assert_eq!(got.articles.len(), ITEMS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_page_is_dead_lettered_and_polling_goes_on() {
    let server = server().await;
    let (store, _guard) = fresh_redis().await;
    let bus = inproc_bus(4, 10_000);
    let mut sub = subscribe_all(&*bus, "all").await;
    // The second page comes back cut in half.
    server.push_fault(Fault::Pass);
    server.push_fault(Fault::Malformed);
    let mut cfg = config(&server);
    cfg.once = false;
    cfg.poll_interval = Duration::from_millis(200);
    let connector = Arc::new(FeedlyConnector::new(cfg, store).unwrap());
    let cancel = CancellationToken::new();
    let task = {
        let (c, bus, cancel) = (connector.clone(), bus.clone(), cancel.clone());
        tokio::spawn(async move { c.run(&*bus, cancel).await })
    };
    // Let it poll a few more times after the bad page.
    let t0 = Instant::now();
    while connector.stats().polls < 3 {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "polling stalled: {:?}",
            connector.stats()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cancel.cancel();
    let stats = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("stops promptly")
        .unwrap()
        .unwrap();
    assert_eq!(stats.malformed_pages, 1, "{stats:?}");
    assert_eq!(stats.dead_letters, 1);
    assert_eq!(stats.articles, ITEMS as u64);
    assert!(stats.polls >= 3);

    let reqs = server.stream_requests();
    assert_eq!(reqs[1].fault, Some(Fault::Malformed));
    assert!(reqs[1].param("continuation").is_some());
    assert_eq!(
        reqs[2].param("continuation"),
        reqs[1].param("continuation"),
        "the bad page is asked again"
    );
    // Later polls start from the stored cursor.
    assert!(reqs
        .iter()
        .skip(4)
        .all(|r| r.param("newerThan").is_some() && r.status == 200));

    let got = drain(&mut sub, Duration::from_millis(500)).await;
    assert_eq!(got.dead_letters.len(), 1);
    assert_eq!(got.topics.get("dlq.feedly"), Some(&1));
    let dl = &got.dead_letters[0];
    assert_eq!(dl.reason, "bad_page");
    assert_eq!(dl.stage, "feedly");
    assert!(dl.error.contains("not JSON"), "{}", dl.error);
    assert!(dl.original_bytes.starts_with(b"{\""), "the cut body is kept");
    assert!(serde_json::from_slice::<Value>(&dl.original_bytes).is_err());
    assert_eq!(got.articles.len(), ITEMS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_items_are_dead_lettered_once() {
    let server = server().await;
    let prefix = format!("auroraq-test:{}:", unique("feedly"));
    let _guard = RedisGuard {
        cfg: store_config(&prefix),
    };
    server.add_items(
        STREAM,
        [
            json!({"title": "no id", "crawled": 1_570_000_000_000i64, "summary": {"content": "text"}}),
            json!({"id": "bad/notext", "title": "title only", "crawled": 1_570_000_000_001i64}),
            json!({"id": "bad/type", "crawled": 1_570_000_000_002i64, "published": "yesterday", "summary": {"content": "x"}}),
        ],
    );
    let bus = inproc_bus(4, 10_000);
    let mut sub = subscribe_all(&*bus, "all").await;
    let mut cfg = config(&server);
    cfg.cursor_overlap = Duration::from_secs(30 * 24 * 3600);
    let first = run_once(&*bus, redis_store(&prefix).await, cfg.clone()).await;
    assert_eq!(first.articles, ITEMS as u64, "{first:?}");
    assert_eq!(first.dead_letters, 3);
    assert_eq!(first.items, ITEMS as u64 + 3);
    let again = run_once(&*bus, redis_store(&prefix).await, cfg).await;
    assert_eq!(
        (again.articles, again.dead_letters, again.duplicates),
        (0, 0, ITEMS as u64),
        "{again:?}"
    );

    let got = drain(&mut sub, Duration::from_millis(500)).await;
    let mut reasons: Vec<&str> = got.dead_letters.iter().map(|d| d.reason.as_str()).collect();
    reasons.sort();
    assert_eq!(reasons, ["bad_item", "no_id", "no_text"]);
    for d in &got.dead_letters {
        let item: Value = serde_json::from_slice(&d.original_bytes).unwrap();
        assert!(item.is_object());
        assert_eq!(d.original_topic, "news.articles.feedly");
    }
    assert!(got.dead_letters.iter().any(
        |d| d.reason == "bad_item" && (d.error.contains("yesterday") || d.error.contains("invalid type"))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_token_is_a_clear_error() {
    let server = server().await;
    let mut cfg = config(&server);
    cfg.token = None;
    cfg.token_env = unique("AURORAQ_TEST_FEEDLY_TOKEN_UNSET_");
    let err = FeedlyConnector::new(cfg.clone(), Arc::new(MemoryStore::default())).unwrap_err();
    assert!(matches!(err, FeedlyError::MissingToken { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&cfg.token_env) && msg.contains("token"), "{msg}");
    // The shortcut fails the same way, before any request.
    let bus = inproc_bus(1, 100);
    let err = auroraq_feedly::run(
        &*bus,
        Arc::new(MemoryStore::default()),
        cfg,
        CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, FeedlyError::MissingToken { .. }));
    assert!(server.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_stops_with_401_and_is_never_shown() {
    let server = server().await;
    let mut cfg = config(&server);
    cfg.token = Some(Token::new("wrong-secret-token"));
    let bus = inproc_bus(1, 100);
    let mut sub = subscribe_all(&*bus, "all").await;
    let c = FeedlyConnector::new(cfg, Arc::new(MemoryStore::default())).unwrap();
    assert!(!format!("{c:?}").contains("wrong-secret-token"));
    let err = tokio::time::timeout(Duration::from_secs(10), c.run(&*bus, CancellationToken::new()))
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(err, FeedlyError::Unauthorized { status: 401, .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("401") && msg.contains("token invalid"), "{msg}");
    assert!(!msg.contains("wrong-secret-token") && !format!("{err:?}").contains("wrong-secret-token"));
    assert_eq!(server.requests().len(), 1, "a rejected token is not retried");
    let got = drain(&mut sub, Duration::from_millis(300)).await;
    assert_eq!(got.statuses.len(), 1);
    assert_eq!(got.statuses[0].status, FeedState::Disconnected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_empty_stream_works() {
    // The recorded empty stream, read by the parser as it is…
    let body = std::fs::read(data_dir().join("nnw_global.all_empty.json")).unwrap();
    let page = parse_page(&body, 1);
    assert_eq!(
        (page.items, page.page_error.clone(), page.continuation.clone()),
        (0, None, None)
    );
    assert_eq!(page.stream_id.as_deref(), Some(STREAM));

    // …and served.
    let server = FeedlyServer::start(TOKEN).await;
    server.add_stream(STREAM);
    let (store, _guard) = fresh_redis().await;
    let bus = inproc_bus(2, 1000);
    let mut sub = subscribe_all(&*bus, "all").await;
    let stats = run_once(&*bus, store.clone(), config(&server)).await;
    assert_eq!(
        (stats.pages, stats.items, stats.articles, stats.dead_letters),
        (1, 0, 0, 0),
        "{stats:?}"
    );
    assert_eq!(stats.polls, 1);
    assert_eq!(server.stream_requests().len(), 1);
    assert_eq!(store.cursor(STREAM).await.unwrap(), None, "no items: no cursor");
    let got = drain(&mut sub, Duration::from_millis(300)).await;
    assert!(got.articles.is_empty() && got.dead_letters.is_empty());
    assert_eq!(got.statuses.len(), 1);
    // After the poll, the watermark on each partition: the clock less the lateness (5 s), so a
    // quiet stream still advances its readers.
    let now = auroraq_schemas::now_micros();
    let parts: std::collections::BTreeSet<u32> = got.marks.iter().map(|(p, _, _)| *p).collect();
    assert_eq!(parts.len(), 2, "{:?}", got.marks);
    for (p, w, _) in &got.marks {
        assert_eq!((w.producer.as_str(), w.partition as u32), ("feedly", *p));
        assert!(
            w.watermark <= now - 5_000_000 && w.watermark > now - 60_000_000,
            "{w:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_poll_reads_back_only_the_lookback() {
    let server = server().await;
    let bus = inproc_bus(2, 1000);
    let mut cfg = config(&server);
    cfg.lookback = Some(Duration::from_secs(24 * 3600));
    let before = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let stats = run_once(&*bus, Arc::new(MemoryStore::default()), cfg).await;
    assert_eq!(stats.articles, 0, "the recorded items are from 2019");
    let r = &server.stream_requests()[0];
    let newer_than: i64 = r.param("newerThan").unwrap().parse().unwrap();
    let expected = before - 24 * 3600 * 1000;
    assert!(
        (newer_than - expected).abs() < 5_000,
        "{newer_than} vs {expected}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_nats_each_article_is_stored_once() {
    let server = server().await;
    let (store, _guard) = fresh_redis().await;
    let (bus, _stream) = nats_bus(4).await;
    let mut cfg = config(&server);
    cfg.cursor_overlap = Duration::from_secs(30 * 24 * 3600);
    let first = run_once(&*bus, store.clone(), cfg.clone()).await;
    assert_eq!(first.articles, ITEMS as u64, "{first:?}");
    assert_eq!(first.bus_duplicates, 0);
    let second = run_once(&*bus, store, cfg).await;
    assert_eq!(
        (second.articles, second.duplicates, second.bus_duplicates),
        (0, ITEMS as u64, 0)
    );

    // A group made now reads the stream's whole history: each article once.
    let mut sub = bus
        .subscribe(SubscribeOptions::new("check", "news.articles.>").transient())
        .await
        .unwrap();
    let got = drain(&mut sub, Duration::from_secs(2)).await;
    assert_eq!(got.articles.len(), ITEMS);
    let ids: HashSet<&str> = got.articles.iter().map(|a| a.article_id.as_str()).collect();
    assert_eq!(ids.len(), ITEMS);
    let a = got
        .articles
        .iter()
        .find(|a| a.article_id == "RFlzskW4NhJjlZfijOSI8IXqM9+zz6V9qnDVl1gxaJs=_16d88ed77ca:510a4:18991ffa")
        .unwrap();
    assert_eq!(a.origin.as_deref(), Some("Ray Wenderlich | High quality programming tutorials: iOS, Android, Swift, Kotlin, Unity, and more"));
    assert_eq!(a.ts_crawled, Some(1_569_960_327_114_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_bounds_forgets_and_clears() {
    let prefix = format!("auroraq-test:{}:", unique("feedly"));
    let _guard = RedisGuard {
        cfg: store_config(&prefix),
    };
    let mut cfg = store_config(&prefix);
    cfg.limits = SeenLimits {
        seen_ttl: Duration::from_secs(1),
        max_seen: 5,
    };
    let store = RedisStore::connect(cfg).await.unwrap();
    let keys: Vec<String> = (0..8).map(|i| format!("id{i}")).collect();
    for k in &keys {
        store.mark_seen(std::slice::from_ref(k)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let seen = store.seen(&keys).await.unwrap();
    assert_eq!(
        seen,
        [false, false, false, true, true, true, true, true],
        "the newest 5 are kept"
    );
    let mut conn = redis_conn().await;
    let ttl: i64 = redis::cmd("PTTL")
        .arg(store.seen_key())
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(ttl > 0 && ttl <= 1000, "PTTL {ttl}");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        store.seen(&keys[5..]).await.unwrap(),
        [false, false, false],
        "forgotten after the TTL"
    );

    store.set_cursor("s/1", 42).await.unwrap();
    assert_eq!(store.cursor("s/1").await.unwrap(), Some(42));
    let _: () = redis::cmd("SET")
        .arg(store.cursor_key("s/2"))
        .arg("not a number")
        .query_async(&mut conn)
        .await
        .unwrap();
    let err = store.cursor("s/2").await.unwrap_err();
    assert!(matches!(err, StoreError::BadCursor { .. }), "{err}");
    assert!(err.to_string().contains("not a number"));
    store.mark_seen(&keys).await.unwrap();
    assert!(store.clear().await.unwrap() >= 3);
    assert_eq!(store.cursor("s/1").await.unwrap(), None);
    let left: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_redis_is_a_clear_error() {
    let port = free_port();
    let err = RedisStore::connect(RedisStoreConfig::new(format!("redis://127.0.0.1:{port}")))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Connect { .. }), "{err:?}");
    assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
}
