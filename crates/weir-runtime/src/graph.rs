//! The job graph: nodes and edges, with their types erased so one executor runs any job.
//!
//! The typed API (crate `weir`) builds a [`Graph`]; each node carries a factory that, inside the
//! task's thread, builds the node's operator for one subtask and chains it to its outputs.
use crate::channel::{ChannelWriter, Partition, Sender};
use crate::context::{
    BadRecordPolicy, JobConfig, OperatorContext, SideOutput, SideOutputs, TypedSideOutput,
};
use crate::output::{erase, unerase, AnyOutput, Discard, Fanout, Output};
use crate::source::{Source, SourceOutput};
use crate::task::{InputHead, Mailbox, OneInputHead};
use crate::watermark::WatermarkStrategy;
use std::any::Any;
use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;
use weir_types::{Data, Result};

/// The side-output tag that dead letters go to.
pub const DEAD_LETTER_TAG: &str = "weir.dead-letters";

/// Index of a node in its graph.
pub type NodeId = usize;

/// The outputs of one node for one subtask: its main output and its side outputs.
pub struct Outputs {
    /// `Box<dyn Output<Out>>`, erased.
    pub main: AnyOutput,
    /// Side outputs by tag.
    pub sides: HashMap<String, Box<dyn SideOutput>>,
}

impl Outputs {
    /// The main output, typed.
    pub fn main<T: 'static>(self) -> (Box<dyn Output<T>>, SideOutputs) {
        (unerase::<T>(self.main), SideOutputs::new(self.sides))
    }
}

/// Builds a source for one subtask.
pub trait SourceNode: Send + Sync {
    /// Builds the reader and the source output (with the chain behind it).
    fn build(
        &self,
        ctx: OperatorContext,
        outputs: Outputs,
        cfg: &JobConfig,
    ) -> Result<Box<dyn SourceTask>>;
    /// A discarding main output (for a source nobody consumes).
    fn discard(&self) -> AnyOutput;
    /// Most subtasks the source supports.
    fn max_parallelism(&self) -> Option<usize>;
    /// This source with timestamps and watermarks generated per split, if `strategy` is a
    /// `WatermarkStrategy` of its type and it has none yet.
    fn with_strategy(&self, strategy: &dyn Any) -> Option<Arc<dyn SourceNode>>;
    /// This source with another bad-record policy.
    fn with_policy(&self, policy: BadRecordPolicy) -> Arc<dyn SourceNode>;
    /// Its bad-record policy.
    fn policy(&self) -> BadRecordPolicy;
}

/// A built source task.
pub trait SourceTask {
    /// Runs it to completion.
    fn run(
        &mut self,
        mailbox: Mailbox,
        cfg: &JobConfig,
        cancel: &crate::CancelToken,
        link: Option<crate::task::CheckpointLink>,
        shared: std::rc::Rc<crate::context::TaskShared>,
    ) -> Result<()>;
}

/// Builds an operator for one subtask.
pub trait OperatorNode: Send + Sync {
    /// Number of inputs (1 or 2).
    fn inputs(&self) -> usize {
        1
    }
    /// Builds it as a chained stage; returns its input as `Box<dyn Output<In>>`, erased.
    fn build(&self, ctx: OperatorContext, outputs: Outputs) -> Result<AnyOutput>;
    /// Builds it as the head of a task that reads channels.
    fn build_head(&self, ctx: OperatorContext, outputs: Outputs) -> Result<Box<dyn InputHead>>;
    /// A discarding main output.
    fn discard(&self) -> AnyOutput;
}

/// What an edge knows of the type flowing on it.
pub trait EdgeType: Send + Sync {
    /// A channel writer for one sending subtask.
    fn writer(&self, senders: Vec<Sender>, from_subtask: usize, cfg: &JobConfig) -> AnyOutput;
    /// Combines several outputs of this type.
    fn fanout(&self, outs: Vec<AnyOutput>) -> AnyOutput;
    /// Wraps an output of this type as a side output.
    fn side(&self, out: AnyOutput) -> Box<dyn SideOutput>;
    /// Partitioning name.
    fn partition_name(&self) -> &'static str;
    /// Which receiving subtasks a sender talks to.
    fn targets(&self, from: usize, to_parallelism: usize) -> Vec<usize>;
    /// Whether records go to the same-index subtask only.
    fn is_forward(&self) -> bool;
    /// For [`Partition::Auto`]: the edge type once parallelisms are known.
    fn resolve(&self, same_parallelism: bool) -> Option<Arc<dyn EdgeType>>;
}

/// The typed [`EdgeType`].
pub struct TypedEdge<T> {
    /// How records are partitioned.
    pub partition: Partition<T>,
}

impl<T: Data> EdgeType for TypedEdge<T> {
    fn writer(&self, senders: Vec<Sender>, from_subtask: usize, cfg: &JobConfig) -> AnyOutput {
        erase::<T>(Box::new(ChannelWriter::new(
            senders,
            self.partition.clone(),
            from_subtask,
            cfg,
        )))
    }
    fn fanout(&self, outs: Vec<AnyOutput>) -> AnyOutput {
        erase::<T>(Box::new(Fanout::new(
            outs.into_iter().map(unerase::<T>).collect(),
        )))
    }
    fn side(&self, out: AnyOutput) -> Box<dyn SideOutput> {
        Box::new(TypedSideOutput(unerase::<T>(out)))
    }
    fn partition_name(&self) -> &'static str {
        self.partition.name()
    }
    fn targets(&self, from: usize, to_parallelism: usize) -> Vec<usize> {
        self.partition.targets(from, to_parallelism)
    }
    fn is_forward(&self) -> bool {
        matches!(self.partition, Partition::Forward)
    }
    fn resolve(&self, same_parallelism: bool) -> Option<Arc<dyn EdgeType>> {
        match self.partition {
            Partition::Auto => Some(Arc::new(TypedEdge::<T> {
                partition: if same_parallelism {
                    Partition::Forward
                } else {
                    Partition::Rebalance
                },
            })),
            _ => None,
        }
    }
}

/// What a node is.
pub enum NodeKind {
    /// A source.
    Source(Arc<dyn SourceNode>),
    /// An operator.
    Operator(Arc<dyn OperatorNode>),
}

/// A node: a source or an operator, with its parallelism.
pub struct Node {
    /// Its name (in errors, metrics, logs).
    pub name: String,
    /// Subtasks.
    pub parallelism: usize,
    /// What it is.
    pub kind: NodeKind,
    /// Whether it may be chained to its input.
    pub chainable: bool,
    /// Its identity in checkpoints; default `<index>-<name>`.
    pub uid: Option<String>,
    /// For two-phase sinks: commits what its subtasks pre-committed.
    pub committer: Option<Arc<dyn crate::checkpoint::Committer>>,
}

impl Node {
    /// A node with default uid and no committer.
    pub fn new(name: impl Into<String>, parallelism: usize, kind: NodeKind) -> Self {
        Node {
            name: name.into(),
            parallelism,
            kind,
            chainable: true,
            uid: None,
            committer: None,
        }
    }
}

/// An edge from a node's output (or side output) to an input of another node.
pub struct Edge {
    /// Producer.
    pub from: NodeId,
    /// Consumer.
    pub to: NodeId,
    /// Which input of the consumer (0 or 1).
    pub input: usize,
    /// The producer's side output, or `None` for its main output.
    pub tag: Option<String>,
    /// The record type and partitioning.
    pub ty: Arc<dyn EdgeType>,
}

/// A job: nodes and edges.
#[derive(Default)]
pub struct Graph {
    /// Nodes, indexed by [`NodeId`].
    pub nodes: Vec<Node>,
    /// Edges.
    pub edges: Vec<Edge>,
}

impl Graph {
    /// Adds a node.
    pub fn add_node(&mut self, node: Node) -> NodeId {
        self.nodes.push(node);
        self.nodes.len() - 1
    }
    /// Adds an edge.
    pub fn add_edge(&mut self, edge: Edge) {
        self.edges.push(edge);
    }
    /// A human-readable plan.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        for (i, n) in self.nodes.iter().enumerate() {
            s.push_str(&format!("#{i} {} (p={})\n", n.name, n.parallelism));
            for e in self.edges.iter().filter(|e| e.to == i) {
                s.push_str(&format!(
                    "    <- #{} {}{}\n",
                    e.from,
                    e.ty.partition_name(),
                    e.tag
                        .as_ref()
                        .map(|t| format!(" [side output {t}]"))
                        .unwrap_or_default()
                ));
            }
        }
        s
    }
}

/// A source node from a typed [`Source`].
pub struct TypedSource<T> {
    /// The source.
    pub source: Arc<dyn Source<T>>,
    /// Timestamps and watermarks generated inside the source, per split.
    pub strategy: Option<WatermarkStrategy<T>>,
    /// What to do with undecodable input.
    pub policy: BadRecordPolicy,
}

struct SourceTaskImpl<T> {
    reader: Box<dyn crate::source::SourceReader<T>>,
    out: SourceOutput<T>,
}

impl<T: 'static> SourceTask for SourceTaskImpl<T> {
    fn run(
        &mut self,
        mailbox: Mailbox,
        cfg: &JobConfig,
        cancel: &crate::CancelToken,
        link: Option<crate::task::CheckpointLink>,
        shared: std::rc::Rc<crate::context::TaskShared>,
    ) -> Result<()> {
        crate::task::run_source_task(
            &mut *self.reader,
            &mut self.out,
            mailbox,
            cfg.clock.clone(),
            cancel,
            link,
            shared,
        )
    }
}

impl<T: Data> SourceNode for TypedSource<T> {
    fn build(
        &self,
        mut ctx: OperatorContext,
        outputs: Outputs,
        cfg: &JobConfig,
    ) -> Result<Box<dyn SourceTask>> {
        let (main, sides) = outputs.main::<T>();
        ctx.side_outputs = sides;
        let mut reader = self.source.create_reader(ctx.subtask, ctx.parallelism)?;
        if let Some(r) = &ctx.restored {
            reader.restore(&r.operator)?;
        }
        let out = SourceOutput::new(
            main,
            self.strategy.clone(),
            self.policy,
            ctx,
            cfg.auto_watermark_interval_ms,
        );
        Ok(Box::new(SourceTaskImpl { reader, out }))
    }
    fn discard(&self) -> AnyOutput {
        erase::<T>(Box::new(Discard))
    }
    fn max_parallelism(&self) -> Option<usize> {
        self.source.max_parallelism()
    }
    fn with_strategy(&self, strategy: &dyn Any) -> Option<Arc<dyn SourceNode>> {
        let s = strategy.downcast_ref::<WatermarkStrategy<T>>()?;
        if self.strategy.is_some() {
            return None;
        }
        Some(Arc::new(TypedSource {
            source: self.source.clone(),
            strategy: Some(s.clone()),
            policy: self.policy,
        }))
    }
    fn with_policy(&self, policy: BadRecordPolicy) -> Arc<dyn SourceNode> {
        Arc::new(TypedSource {
            source: self.source.clone(),
            strategy: self.strategy.clone(),
            policy,
        })
    }
    fn policy(&self) -> BadRecordPolicy {
        self.policy
    }
}

/// An operator node from a function that builds a typed one-input operator per subtask.
pub struct OneInputNode<In, Out, Op, F> {
    make: F,
    _p: PhantomData<fn() -> (In, Out, Op)>,
}

impl<In, Out, Op, F> OneInputNode<In, Out, Op, F> {
    /// A node whose subtasks run `make(subtask_context)`.
    pub fn new(make: F) -> Self {
        OneInputNode {
            make,
            _p: PhantomData,
        }
    }
}

impl<In, Out, Op, F> OperatorNode for OneInputNode<In, Out, Op, F>
where
    In: Data,
    Out: Data,
    Op: crate::operator::OneInputOperator<In, Out>,
    F: Fn(&OperatorContext) -> Result<Op> + Send + Sync,
{
    fn build(&self, mut ctx: OperatorContext, outputs: Outputs) -> Result<AnyOutput> {
        let op = (self.make)(&ctx)?;
        let (main, sides) = outputs.main::<Out>();
        ctx.side_outputs = sides;
        let mut stage = crate::operator::Stage::new(op, ctx, main);
        stage.open()?;
        Ok(erase::<In>(Box::new(stage)))
    }
    fn build_head(&self, ctx: OperatorContext, outputs: Outputs) -> Result<Box<dyn InputHead>> {
        let stage = unerase::<In>(self.build(ctx, outputs)?);
        Ok(Box::new(OneInputHead::new(stage)))
    }
    fn discard(&self) -> AnyOutput {
        erase::<Out>(Box::new(Discard))
    }
}

/// Downcasts helper for nodes that need it.
pub fn downcast<T: 'static>(b: Box<dyn Any>) -> Option<Box<T>> {
    b.downcast::<T>().ok()
}
