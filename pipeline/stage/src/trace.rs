//! Trace propagation and spans, shared by the stage runner, the sentiment worker, fusion, the
//! sinks and the connectors.
//!
//! Propagation is always on and deterministic ([`auroraq_schemas::trace`]): every output a stage
//! emits gets `traceparent` = its parent's trace (the trace its first parent carried, inherited
//! by [`Meta::derived`], else the consumed event's) with span id `hash(stage, output id)`. So
//! events are the same bytes whether or not traces are exported.
//!
//! Export is off until the runtime installs an OpenTelemetry tracer provider and calls
//! [`set_enabled`]; until then [`enabled`] is one relaxed load and nothing else is built. The
//! spans are made with the OpenTelemetry API with the ids the events carry: the runtime's id
//! generator takes them from [`take_trace_id`] and [`take_span_id`] (set for the one span being built on this thread), so
//! the exported span of an output is the parent that the next stage's span names.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use auroraq_schemas::{AnyEvent, Meta, TraceContext};
use opentelemetry::trace::{
    Link, SpanContext, SpanId, SpanKind, TraceContextExt, TraceFlags, TraceId, TraceState, Tracer,
};
use opentelemetry::{Context, KeyValue};

static ENABLED: AtomicBool = AtomicBool::new(false);

thread_local! {
    static NEXT_TRACE_ID: Cell<Option<[u8; 16]>> = const { Cell::new(None) };
    static NEXT_SPAN_ID: Cell<Option<[u8; 8]>> = const { Cell::new(None) };
}

/// Whether spans are exported (a tracer provider is installed).
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Turns span export on or off (the runtime, once its provider is installed).
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// The trace id of the span being built on this thread, for the provider's id generator (used
/// when it has no parent): taken once.
pub fn take_trace_id() -> Option<[u8; 16]> {
    NEXT_TRACE_ID.with(|c| c.take())
}

/// The span id of the span being built on this thread, for the provider's id generator: taken
/// once.
pub fn take_span_id() -> Option<[u8; 8]> {
    NEXT_SPAN_ID.with(|c| c.take())
}

/// The instrumentation scope's name.
pub const TRACER: &str = "auroraq";

/// Sets `out`'s trace context for stage `stage` emitting it while handling an event with context
/// `input`: its parent is the context it inherited from its first parent, else `input`; its
/// own span is `hash(stage, event_id)`. Returns (parent, own).
pub fn stamp(stage: &str, out: &mut Meta, input: &TraceContext) -> (TraceContext, TraceContext) {
    let parent = out
        .traceparent
        .as_deref()
        .and_then(TraceContext::parse)
        .unwrap_or(*input);
    let own = parent.child(auroraq_schemas::trace::span_id(stage, &out.event_id));
    out.traceparent = Some(own.to_traceparent());
    (parent, own)
}

fn span_context(c: &TraceContext, remote: bool) -> SpanContext {
    SpanContext::new(
        TraceId::from_bytes(c.trace_id),
        SpanId::from_bytes(c.span_id),
        TraceFlags::new(c.flags),
        remote,
        TraceState::NONE,
    )
}

/// A span's name for the event it produced: `score`, `fuse`, `intent`, `risk decision`, `order`,
/// `fill`, ...
pub fn span_name(ev: &AnyEvent) -> &'static str {
    match ev {
        AnyEvent::SentimentScore(_) => "score",
        AnyEvent::FusedSignal(_) => "fuse",
        AnyEvent::OrderIntent(_) => "intent",
        AnyEvent::RiskDecision(_) => "risk decision",
        AnyEvent::OrderUpdate(u) if u.is_fill() => "fill",
        AnyEvent::OrderUpdate(_) => "order",
        AnyEvent::PortfolioSnapshot(_) => "portfolio",
        AnyEvent::Alert(_) => "alert",
        AnyEvent::DeadLetter(_) => "dead letter",
        AnyEvent::Article(_) => "receive Article",
        AnyEvent::TradeTick(_) => "receive TradeTick",
        AnyEvent::Kline(_) => "receive Kline",
        AnyEvent::BookTicker(_) => "receive BookTicker",
        AnyEvent::BookUpdate(_) => "receive BookUpdate",
        AnyEvent::MarkPrice(_) => "receive MarkPrice",
        AnyEvent::Liquidation(_) => "receive Liquidation",
        AnyEvent::FeedStatus(_) => "receive FeedStatus",
    }
}

/// One span to export, with the ids it must have.
pub struct SpanRecord<'a> {
    pub name: &'static str,
    /// Its own context (trace id and span id).
    pub ctx: TraceContext,
    /// Its parent; `None`: a root.
    pub parent: Option<TraceContext>,
    pub links: Vec<TraceContext>,
    pub kind: SpanKind,
    pub start: SystemTime,
    pub attributes: Vec<KeyValue>,
    pub stage: &'a str,
}

/// Exports `rec` (ended now) when export is on; nothing otherwise.
pub fn record(rec: SpanRecord<'_>) {
    if !enabled() {
        return;
    }
    use opentelemetry::trace::Span as _;
    let tracer = opentelemetry::global::tracer(TRACER);
    let mut attributes = rec.attributes;
    attributes.push(KeyValue::new("auroraq.stage", rec.stage.to_owned()));
    let links = rec
        .links
        .iter()
        .filter(|l| Some(**l) != rec.parent)
        .map(|l| Link::with_context(span_context(l, true)))
        .collect::<Vec<_>>();
    let builder = tracer
        .span_builder(rec.name)
        .with_kind(rec.kind)
        .with_start_time(rec.start)
        .with_attributes(attributes)
        .with_links(links);
    let cx = match rec.parent {
        Some(p) => Context::new().with_remote_span_context(span_context(&p, true)),
        None => Context::new(),
    };
    NEXT_TRACE_ID.with(|c| c.set(Some(rec.ctx.trace_id)));
    NEXT_SPAN_ID.with(|c| c.set(Some(rec.ctx.span_id)));
    let mut span = tracer.build_with_context(builder, &cx);
    NEXT_TRACE_ID.with(|c| c.set(None));
    NEXT_SPAN_ID.with(|c| c.set(None));
    span.end();
}

/// Exports the spans of a stage's outputs, stamped by [`stamp`]: one per output, a child of its
/// parent, linked to the consumed event's span when that is another one. `batch`: outputs of the
/// delivery; `input`: the consumed event's id, topic, partition and context.
pub fn record_outputs(
    stage: &str,
    outs: &[(TraceContext, TraceContext)],
    events: &[AnyEvent],
    input: Option<(&str, &str, Option<u32>, TraceContext)>,
    start: SystemTime,
) {
    if !enabled() {
        return;
    }
    for ((parent, own), ev) in outs.iter().zip(events) {
        let mut attributes = vec![
            KeyValue::new("auroraq.event_id", ev.meta().event_id.clone()),
            KeyValue::new("auroraq.kind", ev.kind().name()),
            KeyValue::new("auroraq.batch_size", events.len() as i64),
            KeyValue::new(
                "auroraq.derived_from",
                opentelemetry::Value::Array(opentelemetry::Array::String(
                    ev.meta().derived_from.iter().map(|s| s.clone().into()).collect(),
                )),
            ),
        ];
        let mut links = Vec::new();
        if let Some((id, topic, partition, cx)) = input {
            attributes.push(KeyValue::new("auroraq.input.event_id", id.to_owned()));
            attributes.push(KeyValue::new("messaging.destination.name", topic.to_owned()));
            if let Some(p) = partition {
                attributes.push(KeyValue::new("auroraq.partition", p as i64));
            }
            links.push(cx);
        }
        record(SpanRecord {
            name: span_name(ev),
            ctx: *own,
            parent: Some(*parent),
            links,
            kind: SpanKind::Consumer,
            start,
            attributes,
            stage,
        });
    }
}

/// A connector's receipt of raw events: one root span per event that starts its trace here
/// (events with a context of their own, made elsewhere, are skipped).
pub fn record_receipts(source: &str, events: &[AnyEvent]) {
    if !enabled() {
        return;
    }
    let now = SystemTime::now();
    for ev in events {
        let m = ev.meta();
        if !m.derived_from.is_empty() {
            continue;
        }
        let ctx = TraceContext::of(m);
        if ctx != TraceContext::root(&m.event_id) {
            continue;
        }
        record(SpanRecord {
            name: span_name(ev),
            ctx,
            parent: None,
            links: Vec::new(),
            kind: SpanKind::Producer,
            start: now,
            attributes: vec![
                KeyValue::new("auroraq.event_id", m.event_id.clone()),
                KeyValue::new("auroraq.kind", ev.kind().name()),
                KeyValue::new("auroraq.source", m.source.clone()),
                KeyValue::new("messaging.destination.name", crate::topic_for(ev)),
                KeyValue::new("auroraq.batch_size", events.len() as i64),
            ],
            stage: source,
        });
    }
}

/// A sink's write of a batch to `target` (a table, a file): see [`record_batch`].
pub fn record_sink_batch<'a>(
    sink: &str,
    target: &str,
    metas: impl Iterator<Item = &'a Meta>,
    start: SystemTime,
) {
    record_batch(
        sink,
        "sink write",
        vec![KeyValue::new("auroraq.sink.target", target.to_owned())],
        metas,
        start,
    );
}

/// A span over a batch of events (a sink's write, an inference batch): a child of the first
/// event's context, linked to every event's, its span id a hash of the stage and the events' ids.
pub fn record_batch<'a>(
    stage: &str,
    name: &'static str,
    mut attributes: Vec<KeyValue>,
    metas: impl Iterator<Item = &'a Meta>,
    start: SystemTime,
) {
    if !enabled() {
        return;
    }
    let mut links = Vec::new();
    let mut ids = Vec::new();
    for m in metas {
        links.push(TraceContext::of(m));
        ids.push(m.event_id.clone());
    }
    if links.is_empty() {
        return;
    }
    // Its own id from the batch's events: deterministic as the rest, a child of the first.
    let first = links[0];
    let key = ids.join(",");
    let ctx = first.child(auroraq_schemas::trace::span_id(stage, &key));
    attributes.push(KeyValue::new("auroraq.batch_size", ids.len() as i64));
    attributes.push(KeyValue::new(
        "auroraq.event_ids",
        opentelemetry::Value::Array(opentelemetry::Array::String(
            ids.into_iter().map(Into::into).collect(),
        )),
    ));
    record(SpanRecord {
        name,
        ctx,
        parent: Some(first),
        links,
        kind: SpanKind::Consumer,
        start,
        attributes,
        stage,
    });
}
