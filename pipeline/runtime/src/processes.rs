//! `auroraq run --bus nats://...`: the main job as separate processes on NATS.
//!
//! The job starts one `auroraq` process per role (sentiment, fusion, the AuroraQ agent, risk,
//! paper execution, the JSON-lines archive, and a PostgreSQL or Redis sink per `--sink`), all
//! reading the configuration it writes to `<out>/run-config.toml`, and publishes the bundled
//! bars and news itself, as the replay connector does. Each run gets its own JetStream stream
//! (`<bus.stream>_RUN_<id>`, kept for the bus's retention: `backtest --from-bus` can read it).
//!
//! The stages run on event time (`stages.clock = "event"`) and merge their inputs by watermarks
//! (`auroraq_stage::watermark`): the job publishes the data as fast as the bus takes it, each
//! batch followed by its watermark ("nothing at or before T follows") on every market family and
//! the articles, and [`Watermark::END`](auroraq_schemas::Watermark::END) at the end; every stage
//! hands its events to its logic in event-time order and announces its own progress on its
//! outputs, so each sees what a backtest would have it see, whatever the timing. The job is done
//! when every stage has announced the end on each of its outputs and every consumer group
//! (the sinks' too) has settled. The report is built from the events the stages published.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use auroraq_backtest::{available_at, Fingerprint, RunOutput};
use auroraq_bus::{Bus, SubscribeOptions};
use auroraq_schemas::{AnyEvent, EventKind};
use serde::Serialize;
use tokio::process::{Child, Command};
use tracing::{info, warn};

use crate::config::Config;
use crate::doctor::redact;
use crate::run::RunSummary;
use crate::wiring::connect_bus;

/// A role process the job ran, and what it printed when it stopped.
#[derive(Debug, Serialize)]
pub struct ProcessReport {
    pub role: String,
    pub pid: Option<u32>,
    pub exit_code: Option<i32>,
    /// Its closing JSON line (stage counters), when it printed one.
    pub stats: Option<serde_json::Value>,
    pub log: PathBuf,
    /// Times it died and was started again (rebuilding its state from the run's stream).
    pub restarts: u32,
}

struct Role {
    name: &'static str,
    child: Child,
    log: PathBuf,
    args: Vec<String>,
    env: Vec<(&'static str, String)>,
    /// Times the job started it again after it died.
    restarts: u32,
}

/// How the job starts a role process.
struct Launcher {
    exe: PathBuf,
    config: PathBuf,
    logs: PathBuf,
    /// The consumer group of each stage role (by role name), before any restart.
    stage_groups: BTreeMap<&'static str, String>,
}

/// Restarts of one role the job allows before it gives up.
const MAX_RESTARTS: u32 = 3;

/// Events the stages published, as the job's own transient consumer saw them.
#[derive(Default)]
struct Seen {
    by_kind: BTreeMap<EventKind, u64>,
    outputs: Vec<AnyEvent>,
    undecodable: u64,
    /// Bus message ids already counted: a delivery that comes back (its ack was late under load)
    /// is the same message, counted once.
    ids: std::collections::HashSet<String>,
    /// (producer, topic) pairs that announced the end of their output.
    ended: std::collections::BTreeSet<(String, String)>,
}

/// Kinds the stages emit (the report's input); `exec.fills` copies are skipped (`exec.orders` has them).
fn is_output(topic: &str, ev: &AnyEvent) -> bool {
    match ev {
        AnyEvent::OrderUpdate(_) => topic == auroraq_bus::topics::EXEC_ORDERS,
        AnyEvent::SentimentScore(_)
        | AnyEvent::FusedSignal(_)
        | AnyEvent::OrderIntent(_)
        | AnyEvent::RiskDecision(_)
        | AnyEvent::PortfolioSnapshot(_)
        | AnyEvent::Alert(_) => true,
        _ => false,
    }
}

pub async fn run(
    cfg: &Config,
    sinks: &[String],
    stop: auroraq_util::CancellationToken,
    progress: bool,
) -> Result<RunSummary> {
    let t0 = Instant::now();
    let out_dir = cfg.run.out_dir.clone();
    let logs = out_dir.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;
    let bundled = crate::backtest::bundled(cfg)?;

    // The job's configuration: the demo settings, event time, a stream of its own; no secrets.
    let mut job = crate::backtest::demo_config(cfg, &bundled)?;
    let run_id = auroraq_schemas::now_micros() / 1_000_000;
    job.bus.stream = format!("{}_RUN_{run_id}", cfg.bus.stream);
    job.bus.subject_root = format!("{}-run{run_id}", cfg.bus.subject_root);
    job.stages.clock = auroraq_stage::ClockKind::Event;
    job.feedly.token = auroraq_feedly::Token::default();
    #[cfg(feature = "api")]
    job.api.keys.clear();
    job.postgres.url = String::new();
    job.redis.url = String::new();
    let config_path = out_dir.join("run-config.toml");
    std::fs::write(
        &config_path,
        format!(
            "# Written by `auroraq run` for its role processes (run {run_id}); sink URLs are passed in their environment.\n{}",
            toml::to_string(&job).context("serialising the job's configuration")?
        ),
    )
    .with_context(|| format!("cannot write {}", config_path.display()))?;

    let archive = out_dir.join("events.jsonl");
    if archive.exists() {
        std::fs::remove_file(&archive).with_context(|| format!("cannot replace {}", archive.display()))?;
    }
    // (role, arguments, environment); the stages first, then the sinks (which emit nothing the
    // stages read, so the job does not wait for them between events).
    type Plan = Vec<(&'static str, Vec<String>, Vec<(&'static str, String)>)>;
    let mut plan: Plan = vec![
        ("fusion", vec!["fuse".into()], vec![]),
        (
            "agent",
            vec!["agent".into(), "--name".into(), "auroraq".into()],
            vec![],
        ),
        ("risk", vec!["risk".into()], vec![]),
        ("execution", vec!["execute".into()], vec![]),
    ];
    #[cfg(feature = "sentiment")]
    plan.insert(0, ("sentiment", vec!["score".into()], vec![]));
    let stages = plan.len();
    plan.push((
        "archive",
        vec![
            "sink".into(),
            "jsonl".into(),
            "--out".into(),
            archive.display().to_string(),
        ],
        vec![],
    ));
    let mut sink_names = Vec::new();
    for s in sinks {
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            plan.push((
                "sink-postgres",
                vec!["sink".into(), "postgres".into()],
                vec![("AURORAQ_POSTGRES_URL", s.clone())],
            ));
        } else if s.starts_with("redis://") {
            plan.push((
                "sink-redis",
                vec!["sink".into(), "redis".into()],
                vec![("AURORAQ_REDIS_URL", s.clone())],
            ));
        } else {
            bail!("--sink {:?}: give a postgres://... or redis://... URL", redact(s));
        }
        sink_names.push(redact(s));
    }

    // The job's own view of the bus, before anything is published.
    let bus = connect_bus(&job.bus).await?;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let watcher_group = format!("job-{run_id}");
    let mut sub = bus
        .subscribe(
            SubscribeOptions::new(&watcher_group, ">")
                .transient()
                .from_now()
                .max_in_flight(4096)
                // A pull lost under load comes back soon, not after the default 30 s.
                .ack_wait(Duration::from_secs(2)),
        )
        .await?;
    let watcher = {
        let seen = seen.clone();
        tokio::spawn(async move {
            while let Some(d) = sub.next().await {
                let Ok(d) = d else { continue };
                let fresh = seen
                    .lock()
                    .map(|mut s| s.ids.insert(d.id().to_owned()))
                    .unwrap_or(true);
                if !fresh {
                    let _ = d.ack().await;
                    continue;
                }
                if auroraq_schemas::is_watermark(d.payload()) {
                    if let (Ok(w), Ok(mut s)) = (auroraq_schemas::Watermark::decode(d.payload()), seen.lock())
                    {
                        if w.watermark == auroraq_schemas::Watermark::END {
                            s.ended.insert((w.producer, w.topic));
                        }
                    }
                    let _ = d.ack().await;
                    continue;
                }
                let decoded = AnyEvent::decode(d.payload());
                if let Ok(mut s) = seen.lock() {
                    match decoded {
                        Ok(ev) => {
                            *s.by_kind.entry(ev.kind()).or_insert(0) += 1;
                            if is_output(d.topic(), &ev) {
                                s.outputs.push(ev);
                            }
                        }
                        Err(_) => s.undecodable += 1,
                    }
                }
                let _ = d.ack().await;
            }
        })
    };

    // The role processes: the stages, then (once the stages have joined) the sinks.
    let launcher = Launcher {
        exe: std::env::current_exe().context("cannot find the auroraq executable to start the roles")?,
        config: config_path.clone(),
        logs: logs.clone(),
        stage_groups: BTreeMap::from([
            ("sentiment", "sentiment".to_owned()),
            ("fusion", job.fusion.group.clone()),
            ("agent", "auroraq".to_owned()),
            ("risk", job.risk.name.clone()),
            ("execution", job.execution.name.clone()),
        ]),
    };
    let mut roles = Vec::new();
    let mut stage_groups = std::collections::BTreeSet::new();
    let mut joined = std::collections::BTreeSet::from([watcher_group.clone()]);
    let sinks_plan = plan.split_off(stages);
    let mut started = Ok(());
    for (i, part) in [plan, sinks_plan].into_iter().enumerate() {
        let before = roles.len();
        for (name, args, env) in part {
            roles.push(launcher.spawn(name, args, env, 0)?);
        }
        let n = roles.len() - before;
        match wait_joined(&*bus, &mut roles, &joined, n, &logs, &stop).await {
            Ok(new) => {
                if i == 0 {
                    stage_groups = new.clone();
                }
                joined.extend(new);
            }
            Err(e) => {
                started = Err(e);
                break;
            }
        }
    }
    info!(roles = roles.len(), stage_groups = ?stage_groups, "every role has joined; publishing");
    // (group left, group joined) by the stages restarted in the run.
    let mut regrouped: Vec<(String, String)> = Vec::new();
    let mut result = match started {
        // The job is the replay connector here: as fast as the bus takes them, a watermark after
        // each batch and the end at the end (see `auroraq_replay`).
        Ok(()) => auroraq_replay::replay(&*bus, bundled, auroraq_replay::Pace::Max, stop.clone())
            .await
            .context("publishing the bundled events"),
        Err(e) => Err(e),
    };
    if result.is_ok() {
        // Every stage has ended each of its outputs, then every group (the sinks' and the job's
        // own too) has settled what it was given.
        let ends = expected_ends(&job);
        let bar = crate::wiring::progress_bar(
            progress,
            ends.len() as u64,
            "job on the bus: stage outputs ended {pos}/{len} {elapsed}",
        );
        let waited = wait_ended(&seen, &ends, &launcher, &mut roles, &mut regrouped, &bar, &stop).await;
        bar.finish_and_clear();
        if let Err(e) = waited {
            result = Err(e);
        }
    }
    if result.is_ok() {
        let mut all = joined.clone();
        all.extend(stage_groups.iter().cloned());
        for (old, new) in &regrouped {
            all.remove(old);
            all.insert(new.clone());
        }
        if let Err(e) = settle(&*bus, &mut roles, &all, &job.fusion.group, &stop).await {
            result = Err(e);
        }
    }
    let stopped_early = result.is_err();

    // Stop the roles (SIGTERM: each drains, acks and prints its counters), then the watcher.
    let mut reports = Vec::new();
    for r in &roles {
        if let Some(pid) = r.child.id() {
            // A child this process started and has not reaped: the pid is still its own.
            if let Err(e) = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            ) {
                warn!(role = r.name, error = %e, "cannot send SIGTERM");
            }
        }
    }
    for mut r in roles {
        let pid = r.child.id();
        let status = tokio::time::timeout(Duration::from_secs(30), r.child.wait()).await;
        let exit_code = match status {
            Ok(Ok(s)) => s.code(),
            _ => {
                warn!(role = r.name, "did not stop within 30 s; killed");
                let _ = r.child.kill().await;
                None
            }
        };
        let mut stdout = String::new();
        if let Some(mut o) = r.child.stdout.take() {
            use tokio::io::AsyncReadExt;
            let _ = o.read_to_string(&mut stdout).await;
        }
        let stats = stdout.lines().last().and_then(|l| serde_json::from_str(l).ok());
        reports.push(ProcessReport {
            role: r.name.to_owned(),
            pid,
            exit_code,
            stats,
            log: r.log,
            restarts: r.restarts,
        });
    }
    bus.close().await;
    let _ = tokio::time::timeout(Duration::from_secs(5), watcher).await;
    let published = result?;
    let failed: Vec<&ProcessReport> = reports.iter().filter(|r| r.exit_code != Some(0)).collect();
    if !failed.is_empty() && !stopped_early {
        warn!(roles = ?failed.iter().map(|r| &r.role).collect::<Vec<_>>(), "some roles did not exit cleanly; see their logs");
    }

    // The report, from what the stages published.
    let seen = std::mem::take(
        &mut *seen
            .lock()
            .map_err(|_| anyhow::anyhow!("watcher state poisoned"))?,
    );
    let mut outputs = seen.outputs;
    in_time_order(&mut outputs);
    let mut digest = Fingerprint::new();
    let mut by_kind = BTreeMap::new();
    for e in &outputs {
        digest.add(e).context("an output for the digest")?;
        *by_kind.entry(e.kind()).or_insert(0u64) += 1;
    }
    let interrupted = stop.is_cancelled();
    let report_dir = out_dir.join("report");
    let out = RunOutput {
        fingerprint: digest.hex(),
        inputs: published.published,
        emitted: outputs.len() as u64,
        by_kind,
        started: outputs.first().map(available_at),
        ended: outputs.last().map(available_at),
        kept: outputs,
        refused: 0,
    };
    let title = "AuroraQ main job on NATS, as separate processes";
    let notes =
        format!(
        "Run {run_id} on {} (stream {}), roles: {}. The same bundled data and settings as the embedded job; \
         the fingerprint here is a digest of the stages' outputs sorted by time and id.",
        redact(cfg.bus.url.as_str()),
        job.bus.stream,
        reports.iter().map(|r| r.role.as_str()).collect::<Vec<_>>().join(", ")
    );
    let summary = auroraq_backtest::report(&out, title, &notes, Some(&report_dir))
        .with_context(|| format!("writing the report to {}", report_dir.display()))?;
    let archived = reports
        .iter()
        .find(|r| r.role == "archive")
        .and_then(|r| r.stats.as_ref())
        .and_then(|s| s["processed"].as_u64())
        .unwrap_or(0);
    Ok(RunSummary {
        bus: bus.kind().to_owned(),
        published: published.published,
        duplicates: published.duplicates,
        archived,
        dead_letters: seen.by_kind.get(&EventKind::DeadLetter).copied().unwrap_or(0),
        by_kind: seen.by_kind,
        archive,
        interrupted,
        backtest: Some(summary),
        stream: Some(job.bus.stream.clone()),
        subject_root: Some(job.bus.subject_root.clone()),
        sinks: sink_names,
        processes: reports,
        elapsed_s: t0.elapsed().as_secs_f64(),
    })
}

/// The (producer, output topic) pairs whose end the job waits for: every stage's outputs.
fn expected_ends(job: &Config) -> Vec<(String, String)> {
    use auroraq_bus::topics as t;
    let mut ends = vec![
        (job.fusion.name.clone(), t::FUSED_PROGRESS.to_owned()),
        ("auroraq".to_owned(), t::ORDER_INTENTS.to_owned()),
        (job.risk.name.clone(), t::RISK_DECISIONS.to_owned()),
        (job.risk.name.clone(), t::ALERTS.to_owned()),
        (job.execution.name.clone(), t::EXEC_ORDERS.to_owned()),
        (job.execution.name.clone(), t::PORTFOLIO.to_owned()),
    ];
    if cfg!(feature = "sentiment") {
        ends.push(("sentiment".to_owned(), t::SENTIMENT_SCORES.to_owned()));
    }
    ends
}

/// Starts again each role that died (at most [`MAX_RESTARTS`] times each). A stage comes back in
/// a consumer group of its own (`[stages] group_suffix`), reading the run's stream from the start:
/// it rebuilds its state by processing the run again, and what it publishes again is the same
/// events with the same ids (de-duplicated by the bus and the merged readers). A sink comes back
/// in its group, where its unsettled deliveries wait for it. `regrouped` gets (old, new) groups.
fn supervise(launcher: &Launcher, roles: &mut [Role], regrouped: &mut Vec<(String, String)>) -> Result<()> {
    for r in roles.iter_mut() {
        let Ok(Some(status)) = r.child.try_wait() else {
            continue;
        };
        if r.restarts >= MAX_RESTARTS {
            let tail = tail_of(&r.log, 5);
            bail!(
                "the {} role exited ({status}) {} times while the job ran; its log ({}) ends:\n{tail}",
                r.name,
                r.restarts + 1,
                r.log.display()
            );
        }
        let n = r.restarts + 1;
        let mut env = r.env.clone();
        if let Some(base) = launcher.stage_groups.get(r.name).cloned() {
            let suffix = format!("restart{n}");
            let old = if r.restarts == 0 {
                base.clone()
            } else {
                format!("{base}-restart{}", r.restarts)
            };
            regrouped.push((
                auroraq_bus::topics::token(&old),
                auroraq_bus::topics::token(&format!("{base}-{suffix}")),
            ));
            env.retain(|(k, _)| *k != "AURORAQ_STAGES_GROUP_SUFFIX");
            env.push(("AURORAQ_STAGES_GROUP_SUFFIX", suffix));
        }
        warn!(role = r.name, %status, restart = n, log = %r.log.display(), "a role died; starting it again");
        let fresh = launcher.spawn(r.name, r.args.clone(), env, n)?;
        *r = fresh;
    }
    Ok(())
}

/// Waits until every (producer, topic) of `ends` has announced its end, restarting roles that die.
async fn wait_ended(
    seen: &Mutex<Seen>,
    ends: &[(String, String)],
    launcher: &Launcher,
    roles: &mut [Role],
    regrouped: &mut Vec<(String, String)>,
    bar: &indicatif::ProgressBar,
    stop: &auroraq_util::CancellationToken,
) -> Result<()> {
    let started = Instant::now();
    let mut last_change = Instant::now();
    let mut last = 0;
    loop {
        let missing: Vec<&(String, String)> = {
            let s = seen
                .lock()
                .map_err(|_| anyhow::anyhow!("watcher state poisoned"))?;
            ends.iter().filter(|e| !s.ended.contains(*e)).collect()
        };
        if missing.is_empty() || stop.is_cancelled() {
            return Ok(());
        }
        if missing.len() != last {
            last = missing.len();
            last_change = Instant::now();
            bar.set_position((ends.len() - missing.len()) as u64);
        }
        if last_change.elapsed() > Duration::from_secs(600) {
            bail!(
                "the stages did not all end within 600 s of the last one that did (after {:.0} s); still running: {missing:?}",
                started.elapsed().as_secs_f64()
            );
        }
        supervise(launcher, roles, regrouped)?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The consumer groups of the run's stream. The broker may be slow to answer under load: a
/// request that times out is asked again (7 tries, backing off up to 5 s) before the job fails.
async fn backlogs(bus: &dyn Bus) -> Result<std::collections::BTreeMap<String, auroraq_bus::Backlog>> {
    let mut backoff = auroraq_util::Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        match bus.backlogs().await {
            Ok(g) => return Ok(g),
            Err(e) if backoff.failures() < 6 && !matches!(e, auroraq_bus::BusError::Closed) => {
                let wait = backoff.next_delay();
                tracing::warn!(error = %e, ?wait, "reading the consumer groups failed; asking again");
                tokio::time::sleep(wait).await;
            }
            Err(e) => return Err(anyhow::Error::new(e).context("reading the consumer groups")),
        }
    }
}

/// Waits until no stage's consumer group has anything pending or unacked (the holding group:
/// nothing pending, its unacked count steady), seen twice in a row.
async fn settle(
    bus: &dyn Bus,
    roles: &mut [Role],
    stage_groups: &std::collections::BTreeSet<String>,
    holding: &str,
    stop: &auroraq_util::CancellationToken,
) -> Result<()> {
    let started = Instant::now();
    let mut quiet = 0;
    let mut held: HashMap<String, u64> = HashMap::new();
    let mut pause = Duration::from_micros(500);
    loop {
        let groups = backlogs(bus).await?;
        let busy = groups
            .iter()
            .filter(|(g, _)| stage_groups.contains(*g))
            .any(|(g, b)| {
                b.pending > 0
                    || if g == holding || g.starts_with(&format!("{holding}-")) {
                        held.insert(g.clone(), b.unacked)
                            .is_some_and(|before| before != b.unacked)
                    } else {
                        b.unacked > 0
                    }
            });
        quiet = if busy { 0 } else { quiet + 1 };
        if quiet >= 2 || stop.is_cancelled() {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(300) {
            bail!("the stages did not catch up within 300 s: {groups:?}");
        }
        if started.elapsed() > Duration::from_secs(1) {
            check_alive(roles)?;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

fn check_alive(roles: &mut [Role]) -> Result<()> {
    for r in roles.iter_mut() {
        if let Ok(Some(status)) = r.child.try_wait() {
            let tail = tail_of(&r.log, 5);
            bail!(
                "the {} role exited ({status}) while the job ran; its log ({}) ends:\n{tail}",
                r.name,
                r.log.display()
            );
        }
    }
    Ok(())
}

/// By [`available_at`], then event id: one order for the same events, however they arrived.
fn in_time_order(events: &mut [AnyEvent]) {
    events.sort_by(|a, b| {
        available_at(a)
            .cmp(&available_at(b))
            .then_with(|| a.meta().event_id.cmp(&b.meta().event_id))
    });
}

fn tail_of(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl Launcher {
    /// Starts the role `name` (its `restarts`-th restart: a log of its own).
    fn spawn(
        &self,
        name: &'static str,
        args: Vec<String>,
        env: Vec<(&'static str, String)>,
        restarts: u32,
    ) -> Result<Role> {
        let log = if restarts == 0 {
            self.logs.join(format!("{name}.log"))
        } else {
            self.logs.join(format!("{name}.restart{restarts}.log"))
        };
        let file = std::fs::File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let mut cmd = Command::new(&self.exe);
        cmd.arg("--config")
            .arg(&self.config)
            .args(["--log-format", "json"])
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(file))
            .kill_on_drop(true);
        // The written configuration is the whole of it: no overrides from this environment.
        for (k, _) in std::env::vars() {
            if k.starts_with("AURORAQ_") {
                cmd.env_remove(k);
            }
        }
        // Traces (when `[tracing]` exports them): one service per role.
        cmd.env("OTEL_SERVICE_NAME", format!("auroraq-{name}"));
        for (k, v) in &env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start the {name} role ({})", self.exe.display()))?;
        info!(role = name, pid = child.id(), log = %log.display(), restarts, "role started");
        Ok(Role {
            name,
            child,
            log,
            args,
            env,
            restarts,
        })
    }
}

/// Waits until `n` roles have joined: as many consumer groups besides `known`, and the number of
/// consumers steady for a second (a role with several inputs joins one group per input filter).
/// Returns the new groups.
async fn wait_joined(
    bus: &dyn Bus,
    roles: &mut [Role],
    known: &std::collections::BTreeSet<String>,
    n: usize,
    logs: &Path,
    stop: &auroraq_util::CancellationToken,
) -> Result<std::collections::BTreeSet<String>> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last: Option<(Vec<String>, Instant)> = None;
    loop {
        check_alive(roles)?;
        let groups: Vec<String> = backlogs(bus)
            .await?
            .into_keys()
            .filter(|g| !known.contains(g))
            .collect();
        match &last {
            Some((g, since)) if *g == groups => {
                if groups.len() >= n && since.elapsed() > Duration::from_secs(1) {
                    return Ok(groups.into_iter().collect());
                }
            }
            _ => last = Some((groups.clone(), Instant::now())),
        }
        if Instant::now() > deadline {
            bail!(
                "the roles did not all join the bus within 120 s ({} new groups for {n} roles); see {}",
                groups.len(),
                logs.display()
            );
        }
        if stop.is_cancelled() {
            return Ok(groups.into_iter().collect());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
