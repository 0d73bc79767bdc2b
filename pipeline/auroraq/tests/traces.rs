//! One OpenTelemetry trace from article to order: the main job as separate `auroraq` processes on
//! NATS, each exporting OTLP/HTTP to a receiver this test runs on 127.0.0.1, decoded with
//! `opentelemetry-proto`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};

use auroraq_tests::{nats_url, unique};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[derive(Clone, Debug)]
struct Span {
    service: String,
    name: String,
    trace: String,
    id: String,
    parent: String,
    links: Vec<String>,
    start: u64,
    attrs: HashMap<String, String>,
}

/// A minimal OTLP/HTTP receiver: POST /v1/traces with a protobuf body, answered 200.
fn receiver() -> (String, Arc<Mutex<Vec<Span>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let spans = Arc::new(Mutex::new(Vec::new()));
    let out = spans.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let spans = spans.clone();
            std::thread::spawn(move || {
                let mut w = conn.try_clone().unwrap();
                let mut r = BufReader::new(conn);
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let mut len = 0usize;
                    loop {
                        let mut h = String::new();
                        if r.read_line(&mut h).unwrap_or(0) == 0 {
                            return;
                        }
                        let h = h.trim_end();
                        if h.is_empty() {
                            break;
                        }
                        if let Some((k, v)) = h.split_once(':') {
                            if k.eq_ignore_ascii_case("content-length") {
                                len = v.trim().parse().unwrap();
                            }
                        }
                    }
                    let mut body = vec![0u8; len];
                    r.read_exact(&mut body).unwrap();
                    assert!(line.starts_with("POST /v1/traces"), "{line}");
                    let req = ExportTraceServiceRequest::decode(&body[..]).expect("OTLP protobuf");
                    let mut got = spans.lock().unwrap();
                    for rs in req.resource_spans {
                        let service = rs
                            .resource
                            .iter()
                            .flat_map(|r| &r.attributes)
                            .find(|a| a.key == "service.name")
                            .map(|a| value(a.value.as_ref()))
                            .unwrap_or_default();
                        for ss in rs.scope_spans {
                            for s in ss.spans {
                                got.push(Span {
                                    service: service.clone(),
                                    name: s.name.clone(),
                                    trace: hex(&s.trace_id),
                                    id: hex(&s.span_id),
                                    parent: hex(&s.parent_span_id),
                                    links: s.links.iter().map(|l| hex(&l.span_id)).collect(),
                                    start: s.start_time_unix_nano,
                                    attrs: s
                                        .attributes
                                        .iter()
                                        .map(|a| (a.key.clone(), value(a.value.as_ref())))
                                        .collect(),
                                });
                            }
                        }
                    }
                    drop(got);
                    let resp = "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
                    if w.write_all(resp.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, out)
}

fn value(v: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    match v.and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

#[test]
fn one_trace_from_article_to_fill_across_processes() {
    let (endpoint, spans) = receiver();
    let dir = tempfile::tempdir().unwrap();
    // The newest 1,500 bundled bars: with the bundled news, the job trades on them.
    let text = std::fs::read_to_string(repo_root().join("data/market/Coinbase_BTCUSD_1h.csv")).unwrap();
    let bars = dir.path().join("bars.csv");
    std::fs::write(&bars, text.lines().take(1502).collect::<Vec<_>>().join("\n")).unwrap();
    let name = unique("traces");
    let out_dir = dir.path().join("out");
    let out = Command::new(env!("CARGO_BIN_EXE_auroraq"))
        .current_dir(repo_root())
        .env_remove("AURORAQ_CONFIG")
        .env_remove("OTEL_SERVICE_NAME")
        .env("RUST_LOG", "warn")
        .env("AURORAQ_BUS_URL", nats_url())
        .env("AURORAQ_BUS_STREAM", name.to_uppercase())
        .env("AURORAQ_BUS_SUBJECT_ROOT", &name)
        .env("AURORAQ_BUS_PARTITIONS", "1")
        // The Reuters articles spread over these bars: the job trades on them.
        .env("AURORAQ_RUN_NEWS", "data/news/reuters21578.jsonl")
        .env("AURORAQ_RUN_EXCHANGE", "coinbase")
        .env("AURORAQ_TRACING_ENABLED", "true")
        .env("AURORAQ_TRACING_ENDPOINT", &endpoint)
        .args(["--log-format", "json", "run", "--bars"])
        .arg(&bars)
        .arg("--out")
        .arg(&out_dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or("{}")).unwrap();
    let _stream = auroraq_tests::DeleteStreamOnDrop {
        stream: summary["stream"].as_str().unwrap_or_default().to_owned(),
    };
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let spans = spans.lock().unwrap().clone();
    let by_id: HashMap<(&str, &str), &Span> = spans.iter().map(|s| ((&*s.trace, &*s.id), s)).collect();
    let fill = spans
        .iter()
        .find(|s| s.name == "fill")
        .unwrap_or_else(|| panic!("no fill span among {} spans: {summary}", spans.len()));

    // From the fill up its parents to the article's receipt: one trace, in order, one role each.
    let mut chain = vec![fill];
    while !chain.last().unwrap().parent.is_empty() {
        let s = chain.last().unwrap();
        let p = by_id
            .get(&(&*s.trace, &*s.parent))
            .unwrap_or_else(|| panic!("the parent of {s:?} was not exported"));
        chain.push(p);
    }
    chain.reverse();
    let names: Vec<(&str, &str)> = chain.iter().map(|s| (&*s.name, &*s.service)).collect();
    eprintln!("{} spans exported; the fill's trace: {names:?}", spans.len());
    assert_eq!(
        names,
        [
            ("receive Article", "auroraq-run"),
            ("score", "auroraq-sentiment"),
            ("fuse", "auroraq-fusion"),
            ("intent", "auroraq-agent"),
            ("risk decision", "auroraq-risk"),
            ("fill", "auroraq-execution"),
        ]
    );
    let trace = &fill.trace;
    // The order: a sibling of the fill under the risk decision, before it.
    let decision = chain[4];
    let order = spans
        .iter()
        .find(|s| s.name == "order" && &s.trace == trace && s.parent == decision.id)
        .expect("the order's span");
    assert!(order.start <= fill.start);
    // The fill happened on a market event: linked to it.
    assert_eq!(fill.links.len(), 1, "{fill:?}");
    // Spans say what they carried.
    assert_eq!(
        chain[1].attrs["messaging.destination.name"],
        "news.articles.reuters"
    );
    assert!(chain[1].attrs.contains_key("auroraq.partition"), "{:?}", chain[1]);
    assert_eq!(
        chain[1].attrs["auroraq.input.event_id"],
        chain[0].attrs["auroraq.event_id"]
    );

    // The events carry the trace: the trace id is the article's event id, and the archive holds
    // the fill with the fill span's context, written under a span of the sink's own.
    assert_eq!(&chain[0].attrs["auroraq.event_id"], trace);
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(out_dir.join("events.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let fill_id = &fill.attrs["auroraq.event_id"];
    let row = lines
        .iter()
        .find(|l| l["event_id"] == **fill_id)
        .expect("the fill in the archive");
    assert_eq!(row["traceparent"], format!("00-{trace}-{}-01", fill.id), "{row}");
    assert!(
        spans
            .iter()
            .any(|s| s.name == "sink write" && &s.trace == trace && s.parent == fill.id),
        "the archive's write of the fill"
    );
    let article = lines
        .iter()
        .find(|l| l["event_id"] == **trace)
        .expect("the article in the archive");
    assert_eq!(article["kind"], "Article");
}
