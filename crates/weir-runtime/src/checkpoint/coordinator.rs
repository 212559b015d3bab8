//! The checkpoint coordinator: triggers checkpoints at the sources, gathers every task's
//! acknowledgement, writes the checkpoint (state files, then the manifest), commits what
//! two-phase sinks pre-committed, and tells the tasks. It runs on its own thread, so writing
//! state never stops processing.
use super::format::{checkpoint_dir, retain, write_checkpoint, Uploads};
use super::{
    CheckpointBarrier, CheckpointConfig, CheckpointMode, Committer, OperatorSnapshot, SubtaskId,
};
use crate::priority::Background;
use crate::task::{Mail, TaskEvent, TaskKey};
use crossbeam_channel as cb;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir_types::metrics::{Counter, Gauge, MetricsRegistry};
use weir_types::{Clock, Result};

/// Commands from the executor.
#[derive(Debug, Clone)]
pub enum Command {
    /// Every task finished: write the final checkpoint, commit, and stop.
    JobFinished,
    /// The attempt is over (failure or cancellation): stop now.
    Stop,
    /// Take a savepoint.
    Savepoint(SavepointRequest),
}

/// A request for a savepoint: a checkpoint kept until deleted by hand, in `savepoint-N/`.
#[derive(Debug, Clone)]
pub struct SavepointRequest {
    /// Stop the job once the savepoint is complete.
    pub stop: bool,
    /// Before the savepoint, end the input as at the end of bounded input: the final watermark
    /// fires every timer and window (implies `stop`).
    pub drain: bool,
    /// Gets the savepoint's directory, or why it failed.
    pub reply: cb::Sender<Result<String>>,
}

/// What the coordinator needs to know about the job.
pub struct Setup {
    /// Settings.
    pub cfg: CheckpointConfig,
    /// Key groups.
    pub max_parallelism: usize,
    /// Parallelism of every operator, by uid.
    pub parallelism: BTreeMap<String, usize>,
    /// Source subtasks and their mailboxes.
    pub sources: Vec<(TaskKey, cb::Sender<Mail>)>,
    /// Every task subtask (sources included) and its mailbox.
    pub tasks: Vec<(TaskKey, cb::Sender<Mail>)>,
    /// Committers of two-phase sinks, by operator uid.
    pub committers: BTreeMap<String, Arc<dyn Committer>>,
    /// The first checkpoint id to use.
    pub next_id: u64,
    /// Trigger timestamps.
    pub clock: Arc<dyn Clock>,
    /// Metrics.
    pub metrics: MetricsRegistry,
    /// The user's cancellation, used to stop the job after a stop-with-savepoint.
    pub stop_job: crate::context::CancelToken,
}

struct Pending {
    id: u64,
    ts_ms: i64,
    started: Instant,
    acks: HashMap<TaskKey, Vec<(SubtaskId, OperatorSnapshot)>>,
    savepoint: Option<SavepointRequest>,
    /// Time spent serializing acknowledged state before the last acknowledgement (part of
    /// the asynchronous part, not the synchronous one).
    early_async: std::time::Duration,
}

/// Checkpoint metrics.
struct Metrics {
    completed: Counter,
    failed: Counter,
    last_sync_ms: Gauge,
    last_async_ms: Gauge,
    last_duration_ms: Gauge,
    last_bytes: Gauge,
    last_uploaded_bytes: Gauge,
    last_id: Gauge,
}

/// Deletes the local directories of native snapshots (once uploaded, or abandoned).
fn discard_local(snapshots: &[(SubtaskId, OperatorSnapshot)]) {
    for (_, s) in snapshots {
        if let Some(n) = &s.native {
            n.discard_local();
        }
    }
}

/// What the coordinator holds across checkpoints: finished tasks' final snapshots (their local
/// files are needed by every later checkpoint, so they are deleted when the coordinator ends,
/// however it ends) and the shared files uploaded so far.
#[derive(Default)]
struct Held {
    finished: HashMap<TaskKey, Vec<(SubtaskId, OperatorSnapshot)>>,
    uploads: Uploads,
}

impl Drop for Held {
    fn drop(&mut self) {
        for snaps in self.finished.values() {
            discard_local(snaps);
        }
    }
}

/// How the coordinator ended.
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// Checkpoints completed.
    pub completed: u64,
    /// The newest complete checkpoint.
    pub last_completed: Option<u64>,
}

/// Runs the coordinator until `Stop`, or `JobFinished` and the final checkpoint.
pub fn run(
    setup: Setup,
    events: cb::Receiver<TaskEvent>,
    commands: cb::Receiver<Command>,
) -> Result<Report> {
    let m = Metrics {
        completed: setup.metrics.counter("checkpoints", 0, "completed"),
        failed: setup.metrics.counter("checkpoints", 0, "failed"),
        last_sync_ms: setup.metrics.gauge("checkpoints", 0, "last_sync_ms"),
        last_async_ms: setup.metrics.gauge("checkpoints", 0, "last_async_ms"),
        last_duration_ms: setup.metrics.gauge("checkpoints", 0, "last_duration_ms"),
        last_bytes: setup.metrics.gauge("checkpoints", 0, "last_size_bytes"),
        last_uploaded_bytes: setup.metrics.gauge("checkpoints", 0, "last_uploaded_bytes"),
        last_id: setup.metrics.gauge("checkpoints", 0, "last_completed_id"),
    };
    let mut report = Report::default();
    let mut next_id = setup.next_id;
    let mut pending: Option<Pending> = None;
    let mut held = Held::default();
    let pause = setup.cfg.interval.max(setup.cfg.min_pause);
    let mut next_trigger = Instant::now() + pause;
    let mut job_finished = false;
    let mut events_open = true;
    let mut queued: Option<SavepointRequest> = None;
    let mut final_savepoint: Option<SavepointRequest> = None;
    loop {
        // Complete the pending checkpoint once every task acknowledged or finished.
        if let Some(p) = &pending {
            let all = setup
                .tasks
                .iter()
                .all(|(t, _)| p.acks.contains_key(t) || held.finished.contains_key(t));
            if all {
                let p = pending.take().unwrap();
                complete(&setup, &m, p, &mut held, &mut report)?;
                next_trigger = Instant::now() + setup.cfg.min_pause.max(setup.cfg.interval);
            } else if p.started.elapsed() > setup.cfg.timeout {
                tracing::warn!(
                    "checkpoint {} expired after {:?} before every task acknowledged it",
                    p.id,
                    setup.cfg.timeout
                );
                m.failed.inc();
                for (_, tx) in &setup.tasks {
                    let _ = tx.send(Mail::Abort(p.id));
                }
                for snaps in p.acks.values() {
                    discard_local(snaps);
                }
                pending = None;
                next_trigger = Instant::now() + setup.cfg.min_pause.max(setup.cfg.interval);
            }
        }
        if job_finished && pending.is_none() {
            // The final checkpoint: every task's final state, so that a restore after the end
            // replays nothing, and the last pre-committed output gets committed.
            let id = next_id;
            let p = Pending {
                id,
                ts_ms: setup.clock.now_ms(),
                started: Instant::now(),
                early_async: std::time::Duration::ZERO,
                acks: HashMap::new(),
                savepoint: final_savepoint.take(),
            };
            complete(&setup, &m, p, &mut held, &mut report)?;
            return Ok(report);
        }
        // Trigger the next checkpoint.
        let live_sources: Vec<&(TaskKey, cb::Sender<Mail>)> = setup
            .sources
            .iter()
            .filter(|(t, _)| !held.finished.contains_key(t))
            .collect();
        if let Some(req) = queued.take() {
            if req.drain || live_sources.is_empty() {
                // Drain: the sources end; the final checkpoint becomes the savepoint.
                for (_, tx) in &live_sources {
                    let _ = tx.send(Mail::Drain);
                }
                final_savepoint = Some(req);
            } else {
                queued = Some(req);
            }
        }
        let due = Instant::now() >= next_trigger || queued.is_some();
        if pending.is_none() && !job_finished && due && !live_sources.is_empty() {
            let id = next_id;
            next_id += 1;
            let b = CheckpointBarrier {
                id,
                ts_ms: setup.clock.now_ms(),
                savepoint: queued.is_some(),
                unaligned: queued.is_none() && setup.cfg.mode == CheckpointMode::Unaligned,
            };
            for (_, tx) in live_sources {
                let _ = tx.send(Mail::Trigger(b));
            }
            pending = Some(Pending {
                id,
                ts_ms: b.ts_ms,
                started: Instant::now(),
                acks: HashMap::new(),
                savepoint: queued.take(),
                early_async: std::time::Duration::ZERO,
            });
        }
        let wait = if pending.is_some() {
            Duration::from_millis(20)
        } else {
            next_trigger
                .saturating_duration_since(Instant::now())
                .clamp(Duration::from_millis(1), Duration::from_millis(100))
        };
        // Once every task has exited, the event channel closes: only commands matter then.
        let ev = if events_open {
            cb::select! {
                recv(events) -> ev => Some(ev.map_err(|_| ())),
                recv(commands) -> c => {
                    match c {
                        Ok(Command::Savepoint(req)) => queued = Some(req),
                        c => if on_command(c.ok(), &events, &mut pending, &mut held.finished, &mut job_finished, &setup, &mut next_id) { return Ok(report); },
                    }
                    None
                }
                default(wait) => None,
            }
        } else {
            match commands.recv_timeout(wait) {
                Ok(c) => {
                    if on_command(
                        Some(c),
                        &events,
                        &mut pending,
                        &mut held.finished,
                        &mut job_finished,
                        &setup,
                        &mut next_id,
                    ) {
                        return Ok(report);
                    }
                    None
                }
                Err(cb::RecvTimeoutError::Timeout) => None,
                Err(cb::RecvTimeoutError::Disconnected) => return Ok(report),
            }
        };
        match ev {
            Some(Ok(TaskEvent::Ack {
                id,
                task,
                mut snapshots,
            })) => {
                match pending.as_mut().filter(|p| p.id == id) {
                    Some(p) => {
                        // Serialize this task's frozen state now rather than once every task
                        // has acknowledged: its tables stop paying for copy-on-write sooner.
                        let t = Instant::now();
                        let work = snapshots.iter().any(|(_, s)| s.deferred.0.is_some());
                        let bg = work.then(|| background(&setup.cfg, p.started)).flatten();
                        for (_, s) in snapshots.iter_mut() {
                            s.resolve();
                        }
                        drop(bg);
                        p.early_async += t.elapsed();
                        if let Some(old) = p.acks.insert(task, snapshots) {
                            discard_local(&old);
                        }
                    }
                    None => discard_local(&snapshots), // late: that checkpoint was abandoned
                }
            }
            Some(Ok(TaskEvent::Finished { task, snapshots })) => {
                if let Some(old) = held.finished.insert(task, snapshots) {
                    discard_local(&old);
                }
            }
            Some(Err(())) => events_open = false,
            None => {}
        }
    }
}

/// Handles a command; returns whether the coordinator must stop now.
#[allow(clippy::too_many_arguments)]
fn on_command(
    c: Option<Command>,
    events: &cb::Receiver<TaskEvent>,
    pending: &mut Option<Pending>,
    finished: &mut HashMap<TaskKey, Vec<(SubtaskId, OperatorSnapshot)>>,
    job_finished: &mut bool,
    setup: &Setup,
    next_id: &mut u64,
) -> bool {
    match c {
        Some(Command::JobFinished) => {
            *job_finished = true;
            // Late acknowledgements and final snapshots may still be queued.
            while let Ok(ev) = events.try_recv() {
                match ev {
                    TaskEvent::Ack {
                        id,
                        task,
                        snapshots,
                    } => match pending.as_mut().filter(|p| p.id == id) {
                        Some(p) => {
                            if let Some(old) = p.acks.insert(task, snapshots) {
                                discard_local(&old);
                            }
                        }
                        None => discard_local(&snapshots),
                    },
                    TaskEvent::Finished { task, snapshots } => {
                        if let Some(old) = finished.insert(task, snapshots) {
                            discard_local(&old);
                        }
                    }
                }
            }
            if pending.as_ref().is_some_and(|p| {
                !setup
                    .tasks
                    .iter()
                    .all(|(t, _)| p.acks.contains_key(t) || finished.contains_key(t))
            }) {
                if let Some(p) = pending.take() {
                    for snaps in p.acks.values() {
                        discard_local(snaps);
                    }
                }
            }
            *next_id = (*next_id).max(pending.as_ref().map_or(*next_id, |p| p.id + 1));
            false
        }
        Some(Command::Stop) | None => true,
        Some(Command::Savepoint(req)) => {
            let _ = req.reply.send(Err(weir_types::WeirError::Internal(
                "savepoint request routed wrongly".into(),
            )));
            false
        }
    }
}

/// Background priority for a checkpoint's asynchronous work, until `started` +
/// [`CheckpointConfig::background_max`].
fn background(cfg: &CheckpointConfig, started: Instant) -> Option<Background> {
    let left = cfg.background_max?.checked_sub(started.elapsed())?;
    Background::enter(left)
}

fn complete(
    setup: &Setup,
    m: &Metrics,
    p: Pending,
    held: &mut Held,
    report: &mut Report,
) -> Result<()> {
    let mut snapshots: BTreeMap<SubtaskId, OperatorSnapshot> = BTreeMap::new();
    for (t, snaps) in &held.finished {
        if !p.acks.contains_key(t) {
            snapshots.extend(snaps.iter().cloned());
        }
    }
    // The acknowledged snapshots' local files are not needed once this checkpoint is written
    // (or has failed): later checkpoints reference what it uploaded.
    let mut acked: Vec<(SubtaskId, OperatorSnapshot)> = Vec::new();
    for snaps in p.acks.into_values() {
        for (sid, s) in snaps {
            if s.native.is_some() {
                acked.push((sid.clone(), s.clone()));
            }
            snapshots.insert(sid, s);
        }
    }
    struct Discard(Vec<(SubtaskId, OperatorSnapshot)>);
    impl Drop for Discard {
        fn drop(&mut self) {
            discard_local(&self.0);
        }
    }
    let _discard = Discard(acked);
    // Synchronous part: from the trigger until every task acknowledged (barrier travel,
    // alignment, freezing state or linking a disk backend's files). Asynchronous part:
    // serializing and writing (uploading), here.
    let sync_ms = p
        .started
        .elapsed()
        .saturating_sub(p.early_async)
        .as_millis() as i64;
    let async_started = Instant::now() - p.early_async;
    // The asynchronous part: serialize frozen state here, off the task threads, write it, and
    // delete what older checkpoints no longer need, in the CPU time processing leaves idle (up
    // to the configured bound; until this function returns).
    let _bg = background(&setup.cfg, p.started);
    for snap in snapshots.values_mut() {
        snap.resolve();
    }
    let savepoint = p.savepoint.is_some();
    let dir = if savepoint {
        format!("savepoint-{:010}", p.id)
    } else {
        checkpoint_dir(p.id)
    };
    let storage = &*setup.cfg.storage;
    let written = write_checkpoint(
        storage,
        &dir,
        p.id,
        p.ts_ms,
        setup.max_parallelism,
        &setup.parallelism,
        &snapshots,
        savepoint,
        &mut held.uploads,
        setup.cfg.compression,
    );
    let manifest = match written {
        Ok(m) => m,
        Err(e) => {
            if let Some(req) = &p.savepoint {
                let _ = req.reply.send(Err(weir_types::WeirError::Internal(format!(
                    "savepoint {}: {e}",
                    p.id
                ))));
            }
            return Err(e);
        }
    };
    let bytes = manifest.total_bytes();
    // Durable: commit what sinks pre-committed for it (idempotent, also re-run on restore).
    for (sid, snap) in &snapshots {
        if let Some(c) = setup.committers.get(&sid.uid) {
            for item in &snap.pending_commit {
                c.commit(item)?;
            }
        }
    }
    for (_, tx) in &setup.tasks {
        let _ = tx.send(Mail::Complete(p.id));
    }
    if let Err(e) = retain(storage, setup.cfg.retained) {
        tracing::warn!("could not delete old checkpoints: {e}");
    }
    let async_ms = async_started.elapsed().as_millis() as i64;
    m.last_sync_ms.set(sync_ms);
    m.last_async_ms.set(async_ms);
    m.completed.inc();
    m.last_duration_ms
        .set(p.started.elapsed().as_millis() as i64);
    m.last_bytes.set(bytes as i64);
    m.last_uploaded_bytes.set(manifest.uploaded_bytes as i64);
    m.last_id.set(p.id as i64);
    tracing::info!(
        "checkpoint {} complete: {bytes} bytes ({} uploaded), synchronous part {sync_ms} ms, \
         asynchronous part {async_ms} ms",
        p.id,
        manifest.uploaded_bytes,
    );
    report.completed += 1;
    report.last_completed = Some(p.id);
    if let Some(req) = p.savepoint {
        tracing::info!("savepoint {} written to {}/{dir}", p.id, storage.describe());
        let _ = req.reply.send(Ok(dir));
        if req.stop {
            setup.stop_job.cancel();
        }
    }
    Ok(())
}
