//! Runs a [`Graph`]: chains operators into tasks, wires channels, starts a thread per task
//! subtask, and waits for the end, the first failure, or cancellation.
use crate::channel::{channel, Sender};
use crate::context::{CancelToken, JobConfig, OperatorContext, SideOutputs, TaskShared};
use crate::graph::{Graph, NodeId, NodeKind, Outputs};
use crate::operator::panic_message;
use crate::output::AnyOutput;
use crate::task::{run_input_task, InputChannel, Mailbox, TaskWaker};
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
}

impl Builder<'_> {
    fn ctx(&self, node: NodeId) -> OperatorContext {
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

/// Runs a job to its end. Returns the first real failure (never a cascade of cancellations).
pub fn execute(
    mut graph: Graph,
    cfg: JobConfig,
    cancel: CancelToken,
    metrics: MetricsRegistry,
) -> Result<JobResult> {
    for i in 0..graph.edges.len() {
        let (f, t) = (graph.edges[i].from, graph.edges[i].to);
        let same = graph.nodes[f].parallelism == graph.nodes[t].parallelism;
        if let Some(ty) = graph.edges[i].ty.resolve(same) {
            graph.edges[i].ty = ty;
        }
    }
    validate(&graph, &cfg)?;
    let started = Instant::now();
    let chained = chained_edges(&graph);
    let g = Arc::new(graph);
    let chained = Arc::new(chained);

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
    // Members of each chain, to hand each thread the senders it needs.
    fn members(g: &Graph, chained: &[bool], root: NodeId, acc: &mut Vec<NodeId>) {
        acc.push(root);
        for (ei, e) in g.edges.iter().enumerate() {
            if e.from == root && chained[ei] {
                members(g, chained, e.to, acc);
            }
        }
    }
    let first_error: Arc<Mutex<Option<WeirError>>> = Arc::new(Mutex::new(None));
    let mut handles = Vec::new();
    let mut tasks = Vec::new();
    for root in (0..g.nodes.len()).filter(|&n| !chained_into[n]) {
        let mut chain = Vec::new();
        members(&g, &chained, root, &mut chain);
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
            let (g, chained, cfg, metrics, cancel, first_error) = (
                g.clone(),
                chained.clone(),
                cfg.clone(),
                metrics.clone(),
                cancel.clone(),
                first_error.clone(),
            );
            let tname = format!("weir:{}#{}", g.nodes[root].name, subtask);
            let h = std::thread::Builder::new()
                .name(tname.clone())
                .spawn(move || {
                    let r = catch_unwind(AssertUnwindSafe(|| {
                        run_task(
                            &g, &chained, &cfg, &metrics, &cancel, root, subtask, my_senders,
                            inputs,
                        )
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
    for h in handles {
        let _ = h.join();
    }
    if let Some(e) = first_error.lock().unwrap().take() {
        return Err(e);
    }
    Ok(JobResult {
        metrics: metrics.snapshot(),
        elapsed: started.elapsed(),
        cancelled: cancel.is_cancelled(),
        tasks,
    })
}

#[allow(clippy::too_many_arguments)]
fn run_task(
    g: &Graph,
    chained: &[bool],
    cfg: &JobConfig,
    metrics: &MetricsRegistry,
    cancel: &CancelToken,
    root: NodeId,
    subtask: usize,
    senders: HashMap<usize, Vec<Sender>>,
    inputs: Vec<InputChannel>,
) -> Result<()> {
    let mailbox = Mailbox::default();
    let mut b = Builder {
        g,
        chained,
        cfg,
        metrics,
        subtask,
        senders,
        shared: Rc::new(TaskShared::default()),
        waker: mailbox.waker(),
        cancel: cancel.clone(),
    };
    let outputs = b.outputs(root)?;
    let ctx = b.ctx(root);
    match &g.nodes[root].kind {
        NodeKind::Source(s) => {
            let mut t = s.build(ctx, outputs, cfg)?;
            t.run(mailbox, cfg, cancel)
        }
        NodeKind::Operator(o) => {
            let mut head = o.build_head(ctx, outputs)?;
            run_input_task(&mut *head, inputs, mailbox, cfg.clock.clone(), cancel)
        }
    }
}
