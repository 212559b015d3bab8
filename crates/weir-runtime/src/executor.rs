//! Runs a [`Graph`]: chains operators into tasks, wires channels, starts a thread per task
//! subtask, and waits for the end, the first failure, or cancellation.
use crate::channel::{channel, Sender};
use crate::checkpoint::coordinator::{self, Command, Report, SavepointRequest};
use crate::checkpoint::format::{
    checkpoint_id, list_checkpoints, load_checkpoint, load_latest, load_latest_where,
    LoadedCheckpoint,
};
use crate::checkpoint::RestoredState;
use crate::context::{CancelToken, JobConfig, OperatorContext, SideOutputs, TaskShared};
use crate::graph::{Graph, NodeId, NodeKind, Outputs};
use crate::operator::panic_message;
use crate::output::AnyOutput;
use crate::restart::{RestartTracker, RestoreFrom};
use crate::task::{run_input_task, CheckpointLink, InputChannel, Mailbox, TaskKey, TaskWaker};
use crossbeam_channel as cb;
use std::collections::{BTreeMap, HashMap};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use weir_types::metrics::{MetricsRegistry, MetricsSnapshot};
use weir_types::{Result, WeirError};

/// How a job ended.
#[derive(Debug, Clone)]
pub struct JobResult {
    /// Every metric at the end.
    pub metrics: MetricsSnapshot,
    /// Wall time from start to end.
    pub elapsed: Duration,
    /// Whether it was cancelled (Ctrl-C or a cancel call) rather than finished.
    pub cancelled: bool,
    /// The tasks (chains) it ran, one line each.
    pub tasks: Vec<String>,
    /// Restarts after failures.
    pub restarts: u32,
    /// Checkpoints completed (the final one included).
    pub checkpoints_completed: u64,
    /// The checkpoint the job started from, if any.
    pub restored_from: Option<u64>,
}

/// Which edges are chained: forward, equal parallelism, single-input consumer.
pub fn chained_edges(g: &Graph) -> Vec<bool> {
    let mut incoming = vec![0usize; g.nodes.len()];
    for e in &g.edges {
        incoming[e.to] += 1;
    }
    g.edges
        .iter()
        .map(|e| {
            let to = &g.nodes[e.to];
            let single_input = matches!(&to.kind, NodeKind::Operator(o) if o.inputs() == 1);
            e.ty.is_forward()
                && to.chainable
                && single_input
                && incoming[e.to] == 1
                && g.nodes[e.from].parallelism == to.parallelism
        })
        .collect()
}

fn validate(g: &Graph, cfg: &JobConfig) -> Result<()> {
    if cfg.max_parallelism == 0 {
        return Err(WeirError::Config(
            "max parallelism must be at least 1".into(),
        ));
    }
    for n in &g.nodes {
        if n.parallelism == 0 || n.parallelism > cfg.max_parallelism {
            return Err(WeirError::Config(format!(
                "operator '{}' has parallelism {}; it must be between 1 and the max parallelism {}",
                n.name, n.parallelism, cfg.max_parallelism
            )));
        }
        if let NodeKind::Source(s) = &n.kind {
            if let Some(m) = s.max_parallelism() {
                if n.parallelism > m {
                    return Err(WeirError::Config(format!(
                        "source '{}' supports at most {m} subtasks, not {}",
                        n.name, n.parallelism
                    )));
                }
            }
        }
    }
    for e in &g.edges {
        if e.ty.is_forward() && g.nodes[e.from].parallelism != g.nodes[e.to].parallelism {
            return Err(WeirError::Config(format!(
                "forward edge '{}' -> '{}' joins different parallelisms ({} and {}): use rebalance()",
                g.nodes[e.from].name, g.nodes[e.to].name, g.nodes[e.from].parallelism, g.nodes[e.to].parallelism
            )));
        }
    }
    for (i, n) in g.nodes.iter().enumerate() {
        if let NodeKind::Operator(o) = &n.kind {
            for input in 0..o.inputs() {
                if !g.edges.iter().any(|e| e.to == i && e.input == input) {
                    return Err(WeirError::Config(format!(
                        "operator '{}' has nothing on input {input}",
                        n.name
                    )));
                }
            }
        }
    }
    Ok(())
}

struct Builder<'a> {
    g: &'a Graph,
    chained: &'a [bool],
    cfg: &'a JobConfig,
    metrics: &'a MetricsRegistry,
    subtask: usize,
    senders: HashMap<usize, Vec<Sender>>,
    shared: Rc<TaskShared>,
    waker: TaskWaker,
    cancel: CancelToken,
    uids: Vec<String>,
    restored: HashMap<NodeId, RestoredState>,
}

impl Builder<'_> {
    fn ctx(&mut self, node: NodeId) -> OperatorContext {
        let n = &self.g.nodes[node];
        OperatorContext {
            name: n.name.clone(),
            subtask: self.subtask,
            parallelism: n.parallelism,
            max_parallelism: self.cfg.max_parallelism,
            clock: self.cfg.clock.clone(),
            state_backend: self.cfg.state_backend.clone(),
            metrics: self.metrics.clone(),
            records_in: self.metrics.counter(&n.name, self.subtask, "records_in"),
            records_dropped: self
                .metrics
                .counter(&n.name, self.subtask, "records_dropped"),
            watermark: i64::MIN,
            side_outputs: SideOutputs::default(),
            task: self.shared.clone(),
            waker: self.waker.clone(),
            cancel: self.cancel.clone(),
            uid: self.uids[node].clone(),
            restored: self.restored.remove(&node),
            checkpointing: self.cfg.checkpoints.is_some(),
        }
    }

    fn outputs(&mut self, node: NodeId) -> Result<Outputs> {
        let mut groups: BTreeMap<Option<String>, Vec<(usize, AnyOutput)>> = BTreeMap::new();
        for (ei, e) in self
            .g
            .edges
            .iter()
            .enumerate()
            .filter(|(_, e)| e.from == node)
        {
            let out = if self.chained[ei] {
                self.chained_stage(e.to)?
            } else {
                let s = self
                    .senders
                    .remove(&ei)
                    .expect("senders wired for every non-chained edge");
                e.ty.writer(s, self.subtask, self.cfg)
            };
            groups.entry(e.tag.clone()).or_default().push((ei, out));
        }
        let combine = |g: &Graph, mut list: Vec<(usize, AnyOutput)>| -> AnyOutput {
            if list.len() == 1 {
                list.pop().unwrap().1
            } else {
                let ty = g.edges[list[0].0].ty.clone();
                ty.fanout(list.into_iter().map(|x| x.1).collect())
            }
        };
        let main = match groups.remove(&None) {
            Some(list) => combine(self.g, list),
            None => match &self.g.nodes[node].kind {
                NodeKind::Source(s) => s.discard(),
                NodeKind::Operator(o) => o.discard(),
            },
        };
        let sides = groups
            .into_iter()
            .map(|(tag, list)| {
                let ty = self.g.edges[list[0].0].ty.clone();
                (tag.unwrap(), ty.side(combine(self.g, list)))
            })
            .collect();
        Ok(Outputs { main, sides })
    }

    fn chained_stage(&mut self, node: NodeId) -> Result<AnyOutput> {
        let outputs = self.outputs(node)?;
        let ctx = self.ctx(node);
        match &self.g.nodes[node].kind {
            NodeKind::Operator(o) => o.build(ctx, outputs),
            NodeKind::Source(_) => Err(WeirError::Internal(
                "a source cannot be chained behind an operator".into(),
            )),
        }
    }
}

/// Controls a running job from outside: cancel it, or take savepoints.
#[derive(Clone)]
pub struct JobControl {
    /// Cancels the job.
    pub cancel: CancelToken,
    tx: cb::Sender<SavepointRequest>,
    rx: cb::Receiver<SavepointRequest>,
}

impl Default for JobControl {
    fn default() -> Self {
        Self::new(CancelToken::new())
    }
}

impl JobControl {
    /// A control around `cancel`.
    pub fn new(cancel: CancelToken) -> Self {
        let (tx, rx) = cb::unbounded();
        JobControl { cancel, tx, rx }
    }
    /// Takes a savepoint and returns its directory (relative to the checkpoint storage);
    /// `stop` then stops the job; `drain` first ends the input (final watermark: every window
    /// and timer fires) and stops. Blocks until the savepoint is written or fails.
    pub fn savepoint(&self, stop: bool, drain: bool) -> Result<String> {
        let (reply, rx) = cb::bounded(1);
        self.tx
            .send(SavepointRequest {
                stop: stop || drain,
                drain,
                reply,
            })
            .map_err(|_| WeirError::Internal("the job is gone".into()))?;
        rx.recv().map_err(|_| {
            WeirError::Internal("the job ended before the savepoint completed".into())
        })?
    }
}

/// The uid of node `i`: the user's, or `<index>-<name>`.
pub fn node_uid(g: &Graph, i: NodeId) -> String {
    g.nodes[i]
        .uid
        .clone()
        .unwrap_or_else(|| format!("{i}-{}", g.nodes[i].name))
}

/// Runs a job to its end: restores the checkpoint asked for, restarts from the latest
/// checkpoint after failures as the restart strategy allows, and returns the first real
/// failure otherwise (never a cascade of cancellations).
pub fn execute(
    graph: Graph,
    cfg: JobConfig,
    cancel: CancelToken,
    metrics: MetricsRegistry,
) -> Result<JobResult> {
    execute_with(graph, cfg, JobControl::new(cancel), metrics)
}

/// [`execute`] with a [`JobControl`] for savepoints.
pub fn execute_with(
    mut graph: Graph,
    cfg: JobConfig,
    control: JobControl,
    metrics: MetricsRegistry,
) -> Result<JobResult> {
    let cancel = control.cancel.clone();
    for i in 0..graph.edges.len() {
        let (f, t) = (graph.edges[i].from, graph.edges[i].to);
        let same = graph.nodes[f].parallelism == graph.nodes[t].parallelism;
        if let Some(ty) = graph.edges[i].ty.resolve(same) {
            graph.edges[i].ty = ty;
        }
    }
    validate(&graph, &cfg)?;
    let started = Instant::now();
    let chained = Arc::new(chained_edges(&graph));
    let g = Arc::new(graph);
    let initial: Option<LoadedCheckpoint> = match (&cfg.restore, &cfg.checkpoints) {
        (None, _) => None,
        (Some(_), None) => {
            return Err(WeirError::Config(
                "restoring needs a checkpoint directory".into(),
            ))
        }
        (Some(RestoreFrom::Latest), Some(c)) => {
            let l = load_latest(&*c.storage)?;
            if l.is_none() {
                tracing::info!(
                    "no complete checkpoint in {}: starting fresh",
                    c.storage.describe()
                );
            }
            l
        }
        (Some(RestoreFrom::Dir(d)), Some(c)) => Some(load_checkpoint(&*c.storage, d)?),
    };
    if let Some(r) = &initial {
        let uids: Vec<String> = (0..g.nodes.len()).map(|i| node_uid(&g, i)).collect();
        // Records overtaken by unaligned barriers belong to their task's first operator.
        let owner = |u: &String| -> String {
            u.strip_suffix(crate::checkpoint::IN_FLIGHT_SUFFIX)
                .unwrap_or(u)
                .to_string()
        };
        for (sid, snap) in &r.snapshots {
            if owner(&sid.uid) == sid.uid {
                continue;
            }
            let base = owner(&sid.uid);
            let now = uids
                .iter()
                .position(|u| *u == base)
                .map(|i| g.nodes[i].parallelism);
            for e in &snap.operator {
                let f: crate::checkpoint::InFlight = postcard::from_bytes(e).map_err(|e| {
                    WeirError::Config(format!("{}: in-flight records do not decode: {e}", r.dir))
                })?;
                if now.is_some_and(|p| p != f.parallelism) {
                    return Err(WeirError::Config(format!(
                        "checkpoint {} is unaligned and holds records in flight to '{base}' at \
                         parallelism {}; it restores at that parallelism only (rescale from a \
                         savepoint, which is always aligned)",
                        r.dir, f.parallelism
                    )));
                }
            }
        }
        let orphans: Vec<String> = r
            .snapshots
            .keys()
            .map(|s| owner(&s.uid))
            .filter(|u| !uids.contains(u))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        if !orphans.is_empty() && !cfg.allow_non_restored_state {
            return Err(WeirError::Config(format!(
                "checkpoint {} has state for operators this job does not have ({}); set their uids, or allow dropping it (--allow-non-restored-state)",
                r.dir,
                orphans.join(", ")
            )));
        }
    }
    if let Some(r) = &initial {
        // Keyed state is stored by key group: with another number of key groups, keys fall
        // in other groups, and restored state would sit in subtasks that never see its keys.
        let keyed = r
            .snapshots
            .values()
            .any(|s| !s.keyed.is_empty() || s.native.is_some());
        if keyed && r.manifest.max_parallelism != cfg.max_parallelism {
            return Err(WeirError::Config(format!(
                "checkpoint {} holds keyed state in {} key groups (max parallelism), and the job \
                 has {}: keyed state cannot be restored into another max parallelism (set it \
                 back to {})",
                r.dir, r.manifest.max_parallelism, cfg.max_parallelism, r.manifest.max_parallelism
            )));
        }
    }
    let restored_from = initial.as_ref().map(|r| r.manifest.id);
    // The checkpoints this execution takes are numbered above every checkpoint already in the
    // storage. After a failure it restarts from the newest of its own, or else from where it
    // started: never from a checkpoint of another run that happens to share the storage (an
    // earlier run of a job started fresh, or checkpoints newer than the one it restored).
    let first_own_id = match &cfg.checkpoints {
        Some(c) => {
            let newest = list_checkpoints(&*c.storage)?
                .iter()
                .find_map(|d| checkpoint_id(d))
                .unwrap_or(0);
            newest.max(restored_from.unwrap_or(0)) + 1
        }
        None => 0,
    };
    let mut latest_own: Option<LoadedCheckpoint> = None;
    // However the job ends, the state backend deletes its working files after the last
    // attempt (every task and the coordinator have stopped by then).
    struct JobEnd(Arc<dyn weir_state::StateBackend>);
    impl Drop for JobEnd {
        fn drop(&mut self) {
            self.0.job_ended();
        }
    }
    let _job_end = JobEnd(cfg.state_backend.clone());
    let mut tracker = RestartTracker::new(cfg.restart.clone());
    let mut tasks = Vec::new();
    let mut checkpoints_completed = 0;
    loop {
        let attempt = run_attempt(
            &g,
            &chained,
            &cfg,
            &control,
            &metrics,
            latest_own.as_ref().or(initial.as_ref()),
            &mut tasks,
        );
        checkpoints_completed += attempt.1.completed;
        match attempt.0 {
            Ok(()) => {
                return Ok(JobResult {
                    metrics: metrics.snapshot(),
                    elapsed: started.elapsed(),
                    cancelled: cancel.is_cancelled(),
                    tasks,
                    restarts: tracker.restarts(),
                    checkpoints_completed,
                    restored_from,
                })
            }
            Err(e) => {
                let Some(delay) = tracker.on_failure(Instant::now()) else {
                    return Err(e);
                };
                tracing::warn!(
                    "job failed: {e}; restarting in {delay:?} (restart {})",
                    tracker.restarts()
                );
                metrics.counter("job", 0, "restarts").inc();
                std::thread::sleep(delay);
                if cancel.is_cancelled() {
                    // Cancelled while waiting to restart: the job ends as cancelled.
                    return Ok(JobResult {
                        metrics: metrics.snapshot(),
                        elapsed: started.elapsed(),
                        cancelled: true,
                        tasks,
                        restarts: tracker.restarts(),
                        checkpoints_completed,
                        restored_from,
                    });
                }
                latest_own = match &cfg.checkpoints {
                    Some(c) => load_latest_where(&*c.storage, |id| id >= first_own_id)?,
                    None => None,
                };
            }
        }
    }
}

/// One attempt: build every task, run until the end, a failure, or cancellation.
fn run_attempt(
    g: &Arc<Graph>,
    chained: &Arc<Vec<bool>>,
    cfg: &JobConfig,
    external: &JobControl,
    metrics: &MetricsRegistry,
    restore: Option<&LoadedCheckpoint>,
    tasks: &mut Vec<String>,
) -> (Result<()>, Report) {
    match run_attempt_inner(g, chained, cfg, external, metrics, restore, tasks) {
        Ok(r) => r,
        Err(e) => (Err(e), Report::default()),
    }
}

fn run_attempt_inner(
    g: &Arc<Graph>,
    chained: &Arc<Vec<bool>>,
    cfg: &JobConfig,
    control: &JobControl,
    metrics: &MetricsRegistry,
    restore: Option<&LoadedCheckpoint>,
    tasks: &mut Vec<String>,
) -> Result<(Result<()>, Report)> {
    // Tasks of this attempt cancel each other; the user's token cancels them all.
    let cancel = CancelToken::new();
    let uids: Vec<String> = (0..g.nodes.len()).map(|i| node_uid(g, i)).collect();
    if let Some(r) = restore {
        tracing::info!("restoring checkpoint {} ({})", r.manifest.id, r.dir);
        // What sinks pre-committed in the restored checkpoint is committed again (idempotent).
        for (uid, item) in r.pending_commits() {
            if let Some(c) = uids
                .iter()
                .position(|u| *u == uid)
                .and_then(|i| g.nodes[i].committer.clone())
            {
                c.commit(&item)?;
            }
        }
    }

    // Channels for every non-chained edge, per (sender subtask, receiver subtask).
    let mut edge_senders: HashMap<(usize, usize), Vec<Sender>> = HashMap::new(); // (edge, from subtask)
    let mut receivers: HashMap<(NodeId, usize), Vec<InputChannel>> = HashMap::new();
    for (ei, e) in g.edges.iter().enumerate() {
        if chained[ei] {
            continue;
        }
        let (pf, pt) = (g.nodes[e.from].parallelism, g.nodes[e.to].parallelism);
        for a in 0..pf {
            // One gauge per channel: `channel A[a] -> B`, subtask b.
            let scope = format!(
                "channel {}[{a}] -> {}",
                g.nodes[e.from].name, g.nodes[e.to].name
            );
            let mut list = Vec::new();
            for b in e.ty.targets(a, pt) {
                let gauge = metrics.gauge(&scope, b, "queued_bytes");
                let (tx, rx) = channel(cfg.channel_buffers_max, gauge, cancel.clone());
                list.push(tx);
                receivers
                    .entry((e.to, b))
                    .or_default()
                    .push(InputChannel { rx, input: e.input });
            }
            edge_senders.insert((ei, a), list);
        }
    }

    // Chain roots: nodes without a chained input.
    let mut chained_into = vec![false; g.nodes.len()];
    for (ei, e) in g.edges.iter().enumerate() {
        if chained[ei] {
            chained_into[e.to] = true;
        }
    }
    fn members(g: &Graph, chained: &[bool], root: NodeId, acc: &mut Vec<NodeId>) {
        acc.push(root);
        for (ei, e) in g.edges.iter().enumerate() {
            if e.from == root && chained[ei] {
                members(g, chained, e.to, acc);
            }
        }
    }
    let roots: Vec<NodeId> = (0..g.nodes.len()).filter(|&n| !chained_into[n]).collect();

    // Mailboxes first: the coordinator needs them.
    let mut mailboxes: HashMap<TaskKey, Mailbox> = HashMap::new();
    for &root in &roots {
        for s in 0..g.nodes[root].parallelism {
            mailboxes.insert((root, s), Mailbox::default());
        }
    }
    let (events_tx, events_rx) = cb::unbounded();
    let (cmd_tx, cmd_rx) = cb::unbounded();
    let coordinator = match &cfg.checkpoints {
        Some(c) => {
            let mut sources = Vec::new();
            let mut all = Vec::new();
            for (k, m) in &mailboxes {
                all.push((*k, m.control_sender()));
                if matches!(g.nodes[k.0].kind, NodeKind::Source(_)) {
                    sources.push((*k, m.control_sender()));
                }
            }
            let parallelism = (0..g.nodes.len())
                .map(|i| (uids[i].clone(), g.nodes[i].parallelism))
                .collect();
            let committers = (0..g.nodes.len())
                .filter_map(|i| g.nodes[i].committer.clone().map(|c| (uids[i].clone(), c)))
                .collect();
            let existing = list_checkpoints(&*c.storage)?
                .iter()
                .find_map(|d| checkpoint_id(d))
                .unwrap_or(0);
            let setup = coordinator::Setup {
                cfg: c.clone(),
                max_parallelism: cfg.max_parallelism,
                parallelism,
                sources,
                tasks: all,
                committers,
                next_id: existing.max(restore.map_or(0, |r| r.manifest.id)) + 1,
                clock: cfg.clock.clone(),
                metrics: metrics.clone(),
                stop_job: control.cancel.clone(),
            };
            let cancel = cancel.clone();
            Some(
                std::thread::Builder::new()
                    .name("weir:checkpoint-coordinator".into())
                    .spawn(move || {
                        let r = coordinator::run(setup, events_rx, cmd_rx);
                        if r.is_err() {
                            cancel.cancel();
                        }
                        r
                    })
                    .map_err(|e| WeirError::io("starting the checkpoint coordinator", e))?,
            )
        }
        None => None,
    };

    let first_error: Arc<Mutex<Option<WeirError>>> = Arc::new(Mutex::new(None));
    let mut handles = Vec::new();
    tasks.clear();
    for &root in &roots {
        let mut chain = Vec::new();
        members(g, chained, root, &mut chain);
        tasks.push(format!(
            "{} (p={})",
            chain
                .iter()
                .map(|&n| g.nodes[n].name.as_str())
                .collect::<Vec<_>>()
                .join(" -> "),
            g.nodes[root].parallelism
        ));
        for subtask in 0..g.nodes[root].parallelism {
            let mut my_senders = HashMap::new();
            for (ei, e) in g.edges.iter().enumerate() {
                if chain.contains(&e.from) && !chained[ei] {
                    if let Some(s) = edge_senders.remove(&(ei, subtask)) {
                        my_senders.insert(ei, s);
                    }
                }
            }
            // Holds this task's channels open until its failure (if any) is recorded: the
            // tasks it feeds then find the job cancelled, not an upstream that vanished.
            let keepalive: Vec<Sender> = my_senders.values().flatten().cloned().collect();
            let inputs = receivers.remove(&(root, subtask)).unwrap_or_default();
            let mailbox = mailboxes
                .remove(&(root, subtask))
                .expect("a mailbox per task");
            let link = cfg.checkpoints.as_ref().map(|c| CheckpointLink {
                events: events_tx.clone(),
                task: (root, subtask),
                mode: c.mode,
                alignment_ms: metrics.counter(
                    &g.nodes[root].name,
                    subtask,
                    "checkpoint_alignment_ms",
                ),
                overtaken_bytes: metrics.counter(
                    &g.nodes[root].name,
                    subtask,
                    "checkpoint_overtaken_bytes",
                ),
                in_flight: (
                    format!("{}{}", uids[root], crate::checkpoint::IN_FLIGHT_SUFFIX),
                    subtask,
                    g.nodes[root].parallelism,
                ),
            });
            // What an unaligned checkpoint being restored had overtaken at this subtask.
            let replay: Vec<(u8, u32, Vec<u8>)> = match restore {
                Some(r) => r
                    .restore_for(
                        &format!("{}{}", uids[root], crate::checkpoint::IN_FLIGHT_SUFFIX),
                        subtask,
                        g.nodes[root].parallelism,
                    )
                    .map(|s| {
                        s.operator
                            .iter()
                            .filter_map(|e| {
                                postcard::from_bytes::<crate::checkpoint::InFlight>(e).ok()
                            })
                            .filter(|f| f.subtask == subtask)
                            .flat_map(|f| f.batches)
                            .collect()
                    })
                    .unwrap_or_default(),
                None => Vec::new(),
            };
            let files = cfg
                .checkpoints
                .as_ref()
                .map(|c| crate::checkpoint::storage::StorageFiles(c.storage.clone()));
            let restored: HashMap<NodeId, RestoredState> = match restore {
                Some(r) => chain
                    .iter()
                    .filter_map(|&n| {
                        r.restore_for(&uids[n], subtask, g.nodes[n].parallelism)
                            .map(|mut s| {
                                s.files = files.clone();
                                (n, s)
                            })
                    })
                    .collect(),
                None => HashMap::new(),
            };
            let (g, chained, cfg, metrics, cancel, first_error, uids) = (
                g.clone(),
                chained.clone(),
                cfg.clone(),
                metrics.clone(),
                cancel.clone(),
                first_error.clone(),
                uids.clone(),
            );
            let tname = format!("weir:{}#{}", g.nodes[root].name, subtask);
            let h = std::thread::Builder::new()
                .name(tname.clone())
                .spawn(move || {
                    let r = catch_unwind(AssertUnwindSafe(|| {
                        let t = TaskSpec {
                            root,
                            subtask,
                            senders: my_senders,
                            inputs,
                            mailbox,
                            link,
                            restored,
                            uids,
                            replay,
                        };
                        run_task(&g, &chained, &cfg, &metrics, &cancel, t)
                    }));
                    let r = match r {
                        Ok(r) => r,
                        Err(p) => Err(WeirError::Internal(format!(
                            "task {tname} panicked: {}",
                            panic_message(&*p)
                        ))),
                    };
                    if let Err(e) = r {
                        if !matches!(e, WeirError::Cancelled) {
                            let mut fe = first_error.lock().unwrap();
                            if fe.is_none() {
                                tracing::error!("{e}");
                                *fe = Some(e);
                            }
                        }
                        cancel.cancel();
                    }
                    drop(keepalive);
                })
                .map_err(|e| WeirError::io("starting a task thread", e))?;
            handles.push(h);
        }
    }
    drop(events_tx);
    // Wait for the tasks, passing the user's cancellation on.
    let external = &control.cancel;
    while handles.iter().any(|h| !h.is_finished()) {
        if external.is_cancelled() {
            cancel.cancel();
        }
        while let Ok(req) = control.rx.try_recv() {
            if coordinator.is_some() {
                let _ = cmd_tx.send(Command::Savepoint(req));
            } else {
                let _ = req.reply.send(Err(WeirError::Config(
                    "savepoints need checkpointing (--checkpoint-dir)".into(),
                )));
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    for h in handles {
        let _ = h.join();
    }
    let failure = first_error.lock().unwrap().take();
    let ok = failure.is_none() && !cancel.is_cancelled();
    let mut report = Report::default();
    if let Some(c) = coordinator {
        let _ = cmd_tx.send(if ok {
            Command::JobFinished
        } else {
            Command::Stop
        });
        match c.join() {
            Ok(Ok(r)) => report = r,
            Ok(Err(e)) => return Ok((Err(failure.unwrap_or(e)), report)),
            Err(p) => {
                return Ok((
                    Err(WeirError::Internal(format!(
                        "checkpoint coordinator panicked: {}",
                        panic_message(&*p)
                    ))),
                    report,
                ))
            }
        }
    }
    if let Some(e) = failure {
        return Ok((Err(e), report));
    }
    if cancel.is_cancelled() && !external.is_cancelled() {
        return Ok((
            Err(WeirError::Internal(
                "the job was cancelled without a recorded failure".into(),
            )),
            report,
        ));
    }
    Ok((Ok(()), report))
}

/// What one task thread is given.
struct TaskSpec {
    root: NodeId,
    subtask: usize,
    senders: HashMap<usize, Vec<Sender>>,
    inputs: Vec<InputChannel>,
    mailbox: Mailbox,
    link: Option<CheckpointLink>,
    restored: HashMap<NodeId, RestoredState>,
    uids: Vec<String>,
    replay: Vec<(u8, u32, Vec<u8>)>,
}

fn run_task(
    g: &Graph,
    chained: &[bool],
    cfg: &JobConfig,
    metrics: &MetricsRegistry,
    cancel: &CancelToken,
    t: TaskSpec,
) -> Result<()> {
    let shared = Rc::new(TaskShared::default());
    let mut b = Builder {
        g,
        chained,
        cfg,
        metrics,
        subtask: t.subtask,
        senders: t.senders,
        shared: shared.clone(),
        waker: t.mailbox.waker(),
        cancel: cancel.clone(),
        uids: t.uids,
        restored: t.restored,
    };
    let outputs = b.outputs(t.root)?;
    let ctx = b.ctx(t.root);
    match &g.nodes[t.root].kind {
        NodeKind::Source(s) => {
            let mut task = s.build(ctx, outputs, cfg)?;
            task.run(t.mailbox, cfg, cancel, t.link, shared)
        }
        NodeKind::Operator(o) => {
            let mut head = o.build_head(ctx, outputs)?;
            run_input_task(
                &mut *head,
                t.inputs,
                t.mailbox,
                cfg.clock.clone(),
                cancel,
                t.link,
                shared,
                t.replay,
            )
        }
    }
}
