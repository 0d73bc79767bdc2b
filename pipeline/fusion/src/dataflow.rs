//! The timely dataflow: keyed records are exchanged by asset hash to the worker that owns the
//! asset, control records (article metadata, pruning, end of input) are broadcast, and one
//! [`Fuser`] per worker keeps the window state of its assets.
//!
//! The driver feeds one epoch at a time through channels (worker 0 gets the records; the others
//! only advance their inputs) and waits until every worker's probe has passed the epoch, so
//! that all outputs of the epoch are in hand before it publishes and acks.

use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use timely::communication::initialize::WorkerGuards;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::{Capability, Input, Probe};
use timely::dataflow::ProbeHandle;
use timely::worker::Worker;
use tokio::sync::Notify;
use tracing::debug;

use crate::model::{Control, Item, Out, Settings};
use crate::state::Fuser;
use crate::{FusionError, FusionMetrics};

/// One epoch of input for one worker.
#[derive(Default)]
struct Cmd {
    items: Vec<Item>,
    control: Vec<Control>,
}

/// The running dataflow.
pub(crate) struct Engine {
    // Dropped before `guards`, so that the workers see their channels close and finish.
    senders: Vec<Sender<Cmd>>,
    out_rx: Receiver<Out>,
    notify: Arc<Notify>,
    outstanding: usize,
    guards: Option<WorkerGuards<()>>,
}

impl Engine {
    /// Starts `workers` timely worker threads.
    pub(crate) fn start(
        settings: Arc<Settings>,
        workers: usize,
        metrics: Arc<FusionMetrics>,
    ) -> Result<Self, FusionError> {
        let workers = workers.max(1);
        let (out_tx, out_rx) = mpsc::channel::<Out>();
        let notify = Arc::new(Notify::new());
        let mut senders = Vec::with_capacity(workers);
        let mut receivers = Vec::with_capacity(workers);
        for _ in 0..workers {
            let (tx, rx) = mpsc::channel::<Cmd>();
            senders.push(tx);
            receivers.push(Some(rx));
        }
        let receivers = Arc::new(Mutex::new(receivers));
        let config = if workers == 1 {
            timely::Config::thread()
        } else {
            timely::Config::process(workers)
        };
        let worker_notify = notify.clone();
        let guards = timely::execute(config, move |worker| {
            let rx = receivers
                .lock()
                .ok()
                .and_then(|mut v| v.get_mut(worker.index()).and_then(Option::take));
            if let Some(rx) = rx {
                run_worker(
                    worker,
                    rx,
                    settings.clone(),
                    metrics.clone(),
                    out_tx.clone(),
                    worker_notify.clone(),
                );
            }
        })
        .map_err(FusionError::Dataflow)?;
        Ok(Engine {
            senders,
            out_rx,
            notify,
            outstanding: 0,
            guards: Some(guards),
        })
    }

    /// Feeds one epoch: `items` in order, `control` broadcast (and applied before the items).
    pub(crate) fn submit(&mut self, items: Vec<Item>, control: Vec<Control>) -> Result<(), FusionError> {
        let mut first = Some(Cmd { items, control });
        for tx in &self.senders {
            let cmd = first.take().unwrap_or_default();
            tx.send(cmd)
                .map_err(|_| FusionError::Dataflow("a dataflow worker has stopped".into()))?;
            self.outstanding += 1;
        }
        Ok(())
    }

    /// Waits (blocking the thread) until the submitted epochs are done, passing every output to
    /// `sink`.
    pub(crate) fn collect_blocking(&mut self, sink: &mut dyn FnMut(Out)) -> Result<(), FusionError> {
        while self.outstanding > 0 {
            match self.out_rx.recv() {
                Ok(Out::Done) => self.outstanding -= 1,
                Ok(o) => sink(o),
                Err(_) => return Err(FusionError::Dataflow("the dataflow workers have stopped".into())),
            }
        }
        Ok(())
    }

    /// As [`Engine::collect_blocking`], awaiting instead of blocking.
    pub(crate) async fn collect(&mut self, sink: &mut (dyn FnMut(Out) + Send)) -> Result<(), FusionError> {
        loop {
            loop {
                match self.out_rx.try_recv() {
                    Ok(Out::Done) => self.outstanding -= 1,
                    Ok(o) => sink(o),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        return Err(FusionError::Dataflow("the dataflow workers have stopped".into()))
                    }
                }
            }
            if self.outstanding == 0 {
                return Ok(());
            }
            // Woken by each worker's end of epoch; the timeout only guards against a lost worker.
            let _ = tokio::time::timeout(Duration::from_millis(500), self.notify.notified()).await;
        }
    }

    /// Closes the inputs and joins the worker threads.
    pub(crate) fn finish(mut self) -> Result<(), FusionError> {
        self.senders.clear();
        if let Some(guards) = self.guards.take() {
            for r in guards.join() {
                r.map_err(|e| FusionError::Dataflow(format!("a dataflow worker failed: {e}")))?;
            }
        }
        Ok(())
    }
}

fn run_worker(
    worker: &mut Worker,
    rx: Receiver<Cmd>,
    settings: Arc<Settings>,
    metrics: Arc<FusionMetrics>,
    out: Sender<Out>,
    notify: Arc<Notify>,
) {
    let index = worker.index();
    let probe = ProbeHandle::<u64>::new();
    let op_out = out.clone();
    let (mut data_in, mut ctl_in) = worker.dataflow::<u64, _, _>(|scope| {
        let (data_in, data) = scope.new_input::<Vec<Item>>();
        let (ctl_in, ctl) = scope.new_input::<Vec<Control>>();
        let mut fuser = Fuser::new(settings, metrics);
        data.binary_frontier::<_, CapacityContainerBuilder<Vec<()>>, _, _, _, _>(
            ctl.broadcast(),
            Exchange::new(|i: &Item| i.route()),
            Pipeline,
            "Fuse",
            move |_cap, _info| {
                // Keyed records wait here until every control record of their epoch has arrived,
                // so that article metadata fed with an epoch is known to its window closes.
                let mut stash: Vec<(Capability<u64>, Vec<Item>)> = Vec::new();
                move |(data, _), (ctl, ctl_frontier), _output| {
                    let mut emit = |o: Out| {
                        let _ = op_out.send(o);
                    };
                    ctl.for_each(|_cap, batch| {
                        for c in batch.drain(..) {
                            fuser.control(c, &mut emit);
                        }
                    });
                    data.for_each(|cap, batch| {
                        if let Some(c) = cap.retain_least(0) {
                            stash.push((c, std::mem::take(batch)));
                        }
                    });
                    let ready = stash
                        .iter()
                        .take_while(|(cap, _)| !ctl_frontier.less_equal(cap.time()))
                        .count();
                    for (_cap, items) in stash.drain(..ready) {
                        for i in items {
                            fuser.item(i, &mut emit);
                        }
                    }
                }
            },
        )
        .probe_with(&probe);
        (data_in, ctl_in)
    });
    while let Ok(mut cmd) = rx.recv() {
        data_in.send_batch(&mut cmd.items);
        ctl_in.send_batch(&mut cmd.control);
        let next = *data_in.time() + 1;
        data_in.advance_to(next);
        ctl_in.advance_to(next);
        while probe.less_than(&next) {
            worker.step();
        }
        let _ = out.send(Out::Done);
        notify.notify_one();
    }
    debug!(worker = index, "fusion dataflow worker stopping");
}
