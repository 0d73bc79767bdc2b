//! The event-time engine.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::hash::BuildHasher;

use auroraq_bus::topics;
use auroraq_schemas::{AnyEvent, EventKind, Micros};
use auroraq_stage::{topic_for, topic_key, Clock, HandlerError, Processor, SimClock};

use crate::Fingerprint;

#[derive(Debug, thiserror::Error)]
pub enum BacktestError {
    #[error("stage {stage} failed on a {kind} event: {error}")]
    Stage {
        stage: String,
        kind: &'static str,
        error: String,
    },
    #[error("cannot encode an emitted {kind} event for the fingerprint: {error}")]
    Encode { kind: &'static str, error: String },
}

pub use auroraq_stage::available_at;

/// What a run produced.
#[derive(Debug, Default)]
pub struct RunOutput {
    /// SHA-256 (hex) over every emitted event's encoding, in emission order.
    pub fingerprint: String,
    /// Input events fed.
    pub inputs: u64,
    /// Events the processors emitted.
    pub emitted: u64,
    /// Emitted events by kind (serialised by the kinds' names).
    pub by_kind: BTreeMap<EventKind, u64>,
    /// Emitted events of the kinds asked to be kept (see [`Engine::keep`]), in order.
    pub kept: Vec<AnyEvent>,
    /// Events a stage refused (permanently), as the live runner would dead-letter them.
    pub refused: u64,
    /// First and last simulated time.
    pub started: Option<Micros>,
    pub ended: Option<Micros>,
}

struct Queued {
    at: Micros,
    seq: u64,
    ev: AnyEvent,
}

impl PartialEq for Queued {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Queued {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

/// A cached route: the [`topic_key`] it is for and its index in `Engine::routes`.
type RouteEntry = (EventKind, Box<str>, Box<str>, usize);

/// Runs processors over recorded events (see the crate docs).
pub struct Engine {
    processors: Vec<Box<dyn Processor>>,
    filters: Vec<Vec<String>>,
    /// The subscribers of each topic met so far.
    routes: Vec<Box<[usize]>>,
    /// Route indices by the hash of the [`topic_key`] (keys compared on a hit), so that routing an
    /// event builds no topic string and allocates nothing once its key has been seen.
    route_keys: HashMap<u64, Vec<RouteEntry>, foldhash::fast::FixedState>,
    hasher: foldhash::fast::FixedState,
    clock: SimClock,
    keep: Vec<EventKind>,
}

impl Engine {
    pub fn new(processors: Vec<Box<dyn Processor>>) -> Self {
        let filters = processors.iter().map(|p| p.inputs()).collect();
        Engine {
            processors,
            filters,
            routes: Vec::new(),
            route_keys: HashMap::default(),
            hasher: foldhash::fast::FixedState::default(),
            clock: SimClock::new(i64::MIN),
            keep: Vec::new(),
        }
    }

    /// Keeps emitted events of these kinds (e.g. [`EventKind::OrderUpdate`]) in the output.
    pub fn keep(mut self, kinds: &[EventKind]) -> Self {
        self.keep = kinds.to_vec();
        self
    }

    pub fn processors(&self) -> &[Box<dyn Processor>] {
        &self.processors
    }

    /// The index in `routes` of the processors subscribed to `ev`'s topic: cached by
    /// [`topic_key`], so the topic is built only the first time a key is met.
    fn route(&mut self, ev: &AnyEvent) -> usize {
        let key = topic_key(ev);
        let h = self.hasher.hash_one(key);
        if let Some(entries) = self.route_keys.get(&h) {
            if let Some(e) = entries
                .iter()
                .find(|e| e.0 == key.0 && *e.1 == *key.1 && *e.2 == *key.2)
            {
                return e.3;
            }
        }
        let topic = topic_for(ev);
        let r: Box<[usize]> = self
            .filters
            .iter()
            .enumerate()
            .filter(|(_, fs)| fs.iter().any(|f| topics::matches(f, &topic)))
            .map(|(i, _)| i)
            .collect();
        let idx = match self.routes.iter().position(|x| *x == r) {
            Some(i) => i,
            None => {
                self.routes.push(r);
                self.routes.len() - 1
            }
        };
        self.route_keys
            .entry(h)
            .or_default()
            .push((key.0, key.1.into(), key.2.into(), idx));
        idx
    }

    /// Feeds `inputs` (in any order: they are sorted by [`available_at`], ties recorded before derived,
    /// then by event id) through the
    /// processors, then lets each finish. `progress(done, total)` is called every 10,000 inputs.
    pub fn run(
        &mut self,
        inputs: Vec<AnyEvent>,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<RunOutput, BacktestError> {
        let total = inputs.len() as u64;
        // Events are read in place, in availability order (recordings are usually in order
        // already; otherwise an index is sorted, never the events).
        // Ties in time: recorded events before derived ones (a fused signal stamped at the bar
        // that closed its window comes after that bar, as on the bus), then by event id, so that
        // the order the events came in (from a file, from a bus) does not matter.
        let keys: Vec<Micros> = inputs.iter().map(available_at).collect();
        let mut order: Vec<u32> = (0..inputs.len() as u32).collect();
        let tie = |a: &u32, b: &u32| {
            let (ma, mb) = (inputs[*a as usize].meta(), inputs[*b as usize].meta());
            ma.ts_processed
                .is_some()
                .cmp(&mb.ts_processed.is_some())
                .then_with(|| ma.event_id.cmp(&mb.event_id))
        };
        if keys.windows(2).all(|w| w[0] <= w[1]) {
            // In time order already: only the runs of equal times need ordering, which is what
            // the full stable sort below makes of them.
            let mut start = 0;
            while start < order.len() {
                let end = start + keys[start..].iter().take_while(|&&k| k == keys[start]).count();
                if end - start > 1 {
                    order[start..end].sort_by(tie);
                }
                start = end;
            }
        } else {
            order.sort_by(|a, b| keys[*a as usize].cmp(&keys[*b as usize]).then_with(|| tie(a, b)));
        }
        let mut next_input = 0usize;
        // Emitted events wait here, ordered by (time, emission order); recorded inputs at the same
        // time go first, as they reached the bus before anything derived from them.
        let mut queue: BinaryHeap<Reverse<Queued>> = BinaryHeap::new();
        let mut seq = 0u64;
        let mut out = RunOutput::default();
        let mut hasher = Fingerprint::new();
        let mut finished = false;
        loop {
            let input_at = order.get(next_input).map(|&i| keys[i as usize]);
            let from_queue = match (input_at, queue.peek()) {
                (Some(t), Some(Reverse(q))) => q.at < t,
                (None, Some(_)) => true,
                (Some(_), None) => false,
                (None, None) => {
                    if finished {
                        break;
                    }
                    finished = true;
                    let mut emitted = Vec::new();
                    for p in self.processors.iter_mut() {
                        emitted.extend(p.finish(&self.clock));
                    }
                    let now = self.clock.now();
                    for ev in emitted {
                        self.record(&mut out, &mut hasher, &ev)?;
                        queue.push(Reverse(Queued { at: now, seq, ev }));
                        seq += 1;
                    }
                    continue;
                }
            };
            let queued;
            let (at, ev): (Micros, &AnyEvent) = if from_queue {
                match queue.pop() {
                    Some(Reverse(q)) => {
                        queued = q;
                        (queued.at, &queued.ev)
                    }
                    None => continue,
                }
            } else {
                let i = order[next_input] as usize;
                next_input += 1;
                out.inputs += 1;
                if out.inputs % 10_000 == 0 {
                    progress(out.inputs, total);
                }
                (keys[i], &inputs[i])
            };
            self.clock.advance_to(at);
            out.started.get_or_insert(at);
            out.ended = Some(self.clock.now());
            let route = self.route(ev);
            for k in 0..self.routes[route].len() {
                let i = self.routes[route][k];
                let p = &mut self.processors[i];
                match p.process(ev, &self.clock) {
                    Ok(emitted) => {
                        let now = self.clock.now();
                        for e in emitted {
                            self.record(&mut out, &mut hasher, &e)?;
                            queue.push(Reverse(Queued { at: now, seq, ev: e }));
                            seq += 1;
                        }
                    }
                    Err(HandlerError::Permanent(why)) => {
                        out.refused += 1;
                        tracing::debug!(stage = p.name(), kind = ev.kind().name(), %why, "refused");
                    }
                    Err(HandlerError::Transient(error)) => {
                        return Err(BacktestError::Stage {
                            stage: p.name().to_owned(),
                            kind: ev.kind().name(),
                            error,
                        })
                    }
                }
            }
        }
        progress(out.inputs, total);
        out.fingerprint = hasher.hex();
        Ok(out)
    }

    fn record(
        &self,
        out: &mut RunOutput,
        hasher: &mut Fingerprint,
        ev: &AnyEvent,
    ) -> Result<(), BacktestError> {
        let kind = ev.kind();
        hasher.add(ev)?;
        out.emitted += 1;
        *out.by_kind.entry(kind).or_insert(0) += 1;
        if self.keep.contains(&kind) {
            out.kept.push(ev.clone());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use auroraq_schemas::{samples, Alert, Meta, Severity};

    /// Emits an alert for every trade, and counts alerts it sees (its own output comes back).
    struct Echo {
        alerts_seen: u64,
        times: Vec<Micros>,
    }

    impl Processor for Echo {
        fn name(&self) -> &str {
            "echo"
        }
        fn inputs(&self) -> Vec<String> {
            vec!["market.trades.>".into(), "alerts".into()]
        }
        fn process(&mut self, ev: &AnyEvent, clock: &dyn Clock) -> Result<Vec<AnyEvent>, HandlerError> {
            self.times.push(clock.now());
            Ok(match ev {
                AnyEvent::TradeTick(t) => vec![AnyEvent::Alert(Alert {
                    meta: Meta::derived(
                        EventKind::Alert,
                        "echo",
                        &[&t.meta],
                        "",
                        t.meta.ts_event,
                        clock.now(),
                    ),
                    severity: Severity::Info,
                    kind: "seen".into(),
                    subject: Some(t.symbol.clone()),
                    message: t.trade_id.clone(),
                    attributes: Default::default(),
                })],
                AnyEvent::Alert(_) => {
                    self.alerts_seen += 1;
                    vec![]
                }
                _ => vec![],
            })
        }
    }

    fn run(order: &[u64]) -> RunOutput {
        let inputs: Vec<AnyEvent> = order
            .iter()
            .map(|&i| AnyEvent::TradeTick(samples::trade(i)))
            .collect();
        let mut e = Engine::new(vec![Box::new(Echo {
            alerts_seen: 0,
            times: vec![],
        })])
        .keep(&[EventKind::Alert]);
        e.run(inputs, &mut |_, _| {}).expect("runs")
    }

    #[test]
    fn event_time_order_and_fingerprints() {
        let a = run(&[1, 2, 3, 4]);
        let b = run(&[4, 2, 3, 1]);
        assert_eq!(
            a.fingerprint, b.fingerprint,
            "input order does not matter, event time does"
        );
        assert_eq!(a.emitted, 4);
        assert_eq!(a.inputs, 4);
        let msgs: Vec<String> = a
            .kept
            .iter()
            .map(|e| match e {
                AnyEvent::Alert(x) => x.message.clone(),
                _ => String::new(),
            })
            .collect();
        assert_eq!(msgs, vec!["1", "2", "3", "4"]);
        assert_ne!(a.fingerprint, run(&[1, 2, 3]).fingerprint);
    }

    #[test]
    fn ties_in_time_go_by_event_id_in_order_or_not() {
        // Trades 1..=4 at one time, trade 9 later.
        let at = |seq: u64| {
            let mut t = samples::trade(seq);
            if seq != 9 {
                let same = samples::trade(1).meta;
                (t.meta.ts_event, t.meta.ts_ingest) = (same.ts_event, same.ts_ingest);
            }
            AnyEvent::TradeTick(t)
        };
        let run = |order: &[u64]| {
            let mut e = Engine::new(vec![Box::new(Echo {
                alerts_seen: 0,
                times: vec![],
            })])
            .keep(&[EventKind::Alert]);
            let out = e
                .run(order.iter().map(|&i| at(i)).collect(), &mut |_, _| {})
                .expect("runs");
            let msgs: Vec<String> = out
                .kept
                .iter()
                .map(|e| match e {
                    AnyEvent::Alert(x) => x.message.clone(),
                    _ => String::new(),
                })
                .collect();
            (out.fingerprint, msgs)
        };
        let first = run(&[1, 2, 3, 4, 9]);
        let mut by_id: Vec<(String, String)> = (1..=4u64)
            .map(|i| (at(i).meta().event_id.clone(), i.to_string()))
            .collect();
        by_id.sort();
        let mut want: Vec<String> = by_id.into_iter().map(|(_, m)| m).collect();
        want.push("9".into());
        assert_eq!(first.1, want);
        for order in [[4, 3, 2, 1, 9], [2, 4, 1, 3, 9], [9, 3, 1, 4, 2], [3, 9, 2, 4, 1]] {
            assert_eq!(run(&order), first, "{order:?}");
        }
    }

    #[test]
    fn outputs_come_back_to_subscribers_at_their_time() {
        let inputs: Vec<AnyEvent> = [1u64, 2]
            .iter()
            .map(|&i| AnyEvent::TradeTick(samples::trade(i)))
            .collect();
        let mut e = Engine::new(vec![Box::new(Echo {
            alerts_seen: 0,
            times: vec![],
        })]);
        let out = e.run(inputs, &mut |_, _| {}).expect("runs");
        assert_eq!(out.by_kind.get(&EventKind::Alert), Some(&2));
        // trade 1, its alert, trade 2, its alert: the clock never goes back
        assert_eq!(
            out.started,
            Some(available_at(&AnyEvent::TradeTick(samples::trade(1))))
        );
    }
}
