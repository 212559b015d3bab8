//! What a task and its operators know about the job they run in.
use crate::checkpoint::{
    CheckpointBarrier, CheckpointConfig, OperatorSnapshot, RestoredState, SubtaskId,
};
use crate::output::{Control, Output};
use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use weir_state::{MemoryBackend, StateBackend};
use weir_types::metrics::{Counter, MetricsRegistry};
use weir_types::{
    Clock, Position, Record, Result, SystemClock, Watermark, WatermarkStatus, WeirError,
};

/// Settings of a running job.
#[derive(Clone)]
pub struct JobConfig {
    /// Number of key groups (the upper bound of any keyed operator's parallelism).
    pub max_parallelism: usize,
    /// A buffer is sent when it holds this many bytes (or more: it holds whole records).
    pub buffer_bytes_max: usize,
    /// A buffer is sent when it holds this many records.
    pub buffer_records_max: u32,
    /// Buffers a channel holds before its sender blocks (back-pressure).
    pub channel_buffers_max: usize,
    /// Encode records on every channel, as a channel to another process must. Off by
    /// default: between tasks of one process, batches carry the records themselves.
    pub encode_channels: bool,
    /// Processing time.
    pub clock: Arc<dyn Clock>,
    /// Where keyed state lives.
    pub state_backend: Arc<dyn StateBackend>,
    /// How often periodic watermarks are emitted (Flink's `pipeline.auto-watermark-interval`).
    pub auto_watermark_interval_ms: i64,
    /// Checkpointing, if enabled.
    pub checkpoints: Option<CheckpointConfig>,
    /// What to do when a task fails.
    pub restart: crate::restart::RestartStrategy,
    /// Restore from this checkpoint directory (relative to the checkpoint storage) or the
    /// latest complete one.
    pub restore: Option<crate::restart::RestoreFrom>,
    /// Restore even if the checkpoint has state of operators (uids) the job no longer has;
    /// that state is dropped. Off by default: a renamed operator would silently lose state.
    pub allow_non_restored_state: bool,
}

impl Default for JobConfig {
    fn default() -> Self {
        JobConfig {
            max_parallelism: weir_types::keygroup::DEFAULT_MAX_PARALLELISM,
            buffer_bytes_max: 32 * 1024,
            buffer_records_max: 1024,
            channel_buffers_max: 4,
            encode_channels: false,
            clock: Arc::new(SystemClock),
            state_backend: Arc::new(MemoryBackend),
            auto_watermark_interval_ms: 200,
            checkpoints: None,
            restart: crate::restart::RestartStrategy::None,
            restore: None,
            allow_non_restored_state: false,
        }
    }
}

impl JobConfig {
    /// The most bytes one channel can hold: its buffers, each full plus one record over.
    /// (A record larger than `buffer_bytes_max` makes its buffer that much larger.)
    pub fn channel_bytes_max(&self) -> usize {
        self.channel_buffers_max * self.buffer_bytes_max
    }
}

/// Cancels a job: Ctrl-C, an API call, or a failed task. Every loop checks it at least every
/// 100 ms, and blocking channel operations wake up to check it.
#[derive(Clone, Default, Debug)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A token not yet cancelled.
    pub fn new() -> Self {
        Self::default()
    }
    /// Cancels.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst)
    }
    /// Whether `other` is a clone of this token.
    pub fn same_as(&self, other: &CancelToken) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
    /// Whether cancelled.
    #[inline]
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// What to do with a record that cannot be parsed or that a fallible function rejects.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BadRecordPolicy {
    /// Fail the job with an error naming the operator, the subtask and the record's position.
    #[default]
    Fail,
    /// Drop the record and count it (`records_dropped`).
    Drop,
    /// Send the raw bytes and the error to the dead-letter side output.
    DeadLetter,
}

/// A rejected record: where it came from, why, and its raw bytes.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeadLetter {
    /// The operator that rejected it.
    pub operator: String,
    /// The subtask index.
    pub subtask: usize,
    /// Where the record came from.
    pub position: Option<Position>,
    /// The error.
    pub error: String,
    /// The record's raw bytes (for a parsed input, the input bytes; otherwise its JSON).
    pub raw: Vec<u8>,
}

/// How a split counts positions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PositionKind {
    /// Lines of a file (1-based).
    Line,
    /// Offsets (records, bytes, Kafka offsets).
    Offset,
}

/// State shared by the operators of one task (one thread): the position of the record being
/// processed, for error messages. Setting it costs two integer stores.
#[derive(Default)]
pub struct TaskShared {
    /// `(split index, offset or line)` of the source record now flowing through the chain.
    pub position: Cell<Option<(usize, u64)>>,
    /// The source's splits: name and how positions count.
    pub splits: RefCell<Vec<(String, PositionKind)>>,
    /// Snapshots taken by the task's operators as the current barrier passed them.
    pub snapshots: RefCell<Vec<(SubtaskId, OperatorSnapshot)>>,
}

impl TaskShared {
    /// The current position, if the task's source reports one.
    pub fn current_position(&self) -> Option<Position> {
        let (split, off) = self.position.get()?;
        let splits = self.splits.borrow();
        let (name, kind) = splits.get(split)?;
        Some(match kind {
            PositionKind::Line => Position::Line {
                file: name.clone(),
                line: off,
            },
            PositionKind::Offset => Position::Offset {
                split: name.clone(),
                offset: off,
            },
        })
    }
}

/// A side output with its type erased: records go through `as_any_mut` (downcast to
/// `Box<dyn Output<S>>`), while watermarks, status, end of input and task control reach it
/// like the main output.
pub trait SideOutput {
    /// The typed output, as `Box<dyn Output<S>>`.
    fn as_any_mut(&mut self) -> &mut dyn Any;
    /// Forwards a watermark.
    fn watermark(&mut self, wm: Watermark) -> Result<()>;
    /// Forwards a status change.
    fn status(&mut self, s: WatermarkStatus) -> Result<()>;
    /// Forwards end of input.
    fn end_input(&mut self) -> Result<()>;
    /// Forwards task control.
    fn control(&mut self, c: &mut Control) -> Result<()>;
    /// Forwards a checkpoint barrier.
    fn barrier(&mut self, b: &CheckpointBarrier) -> Result<()>;
}

/// The typed [`SideOutput`].
pub struct TypedSideOutput<S>(pub Box<dyn Output<S>>);

impl<S: 'static> SideOutput for TypedSideOutput<S> {
    fn as_any_mut(&mut self) -> &mut dyn Any {
        &mut self.0
    }
    fn watermark(&mut self, wm: Watermark) -> Result<()> {
        self.0.watermark(wm)
    }
    fn status(&mut self, s: WatermarkStatus) -> Result<()> {
        self.0.status(s)
    }
    fn end_input(&mut self) -> Result<()> {
        self.0.end_input()
    }
    fn control(&mut self, c: &mut Control) -> Result<()> {
        self.0.control(c)
    }
    fn barrier(&mut self, b: &CheckpointBarrier) -> Result<()> {
        self.0.barrier(b)
    }
}

/// The side outputs of one operator subtask, by tag name.
#[derive(Default)]
pub struct SideOutputs {
    outs: Vec<(String, Box<dyn SideOutput>)>,
}

impl SideOutputs {
    /// Side outputs from the graph builder.
    pub fn new(outs: HashMap<String, Box<dyn SideOutput>>) -> Self {
        let mut outs: Vec<_> = outs.into_iter().collect();
        outs.sort_by(|a, b| a.0.cmp(&b.0));
        SideOutputs { outs }
    }
    /// Whether somebody consumes `tag`.
    pub fn has(&self, tag: &str) -> bool {
        self.outs.iter().any(|(t, _)| t == tag)
    }
    /// Sends a record to side output `tag`; dropped if nobody consumes it.
    pub fn emit<S: 'static>(&mut self, tag: &str, rec: Record<S>) -> Result<()> {
        match self.outs.iter_mut().find(|(t, _)| t == tag) {
            Some((_, o)) => o
                .as_any_mut()
                .downcast_mut::<Box<dyn Output<S>>>()
                .ok_or_else(|| {
                    WeirError::Internal(format!("side output '{tag}' used with another type"))
                })?
                .collect(rec),
            None => Ok(()),
        }
    }
    /// Forwards a watermark to every side output.
    pub fn watermark(&mut self, wm: Watermark) -> Result<()> {
        self.outs.iter_mut().try_for_each(|(_, o)| o.watermark(wm))
    }
    /// Forwards a status change to every side output.
    pub fn status(&mut self, s: WatermarkStatus) -> Result<()> {
        self.outs.iter_mut().try_for_each(|(_, o)| o.status(s))
    }
    /// Forwards end of input to every side output.
    pub fn end_input(&mut self) -> Result<()> {
        self.outs.iter_mut().try_for_each(|(_, o)| o.end_input())
    }
    /// Forwards task control to every side output.
    pub fn control(&mut self, c: &mut Control) -> Result<()> {
        self.outs.iter_mut().try_for_each(|(_, o)| o.control(c))
    }
    /// Forwards a checkpoint barrier to every side output.
    pub fn barrier(&mut self, b: &CheckpointBarrier) -> Result<()> {
        self.outs.iter_mut().try_for_each(|(_, o)| o.barrier(b))
    }
}

/// What an operator subtask knows about itself and its job.
pub struct OperatorContext {
    /// The operator's name.
    pub name: String,
    /// Its subtask index.
    pub subtask: usize,
    /// Its parallelism.
    pub parallelism: usize,
    /// The job's max parallelism (number of key groups).
    pub max_parallelism: usize,
    /// Processing time.
    pub clock: Arc<dyn Clock>,
    /// Where keyed state lives.
    pub state_backend: Arc<dyn StateBackend>,
    /// The job's metrics.
    pub metrics: MetricsRegistry,
    /// Records that reached this operator.
    pub records_in: Counter,
    /// Records this operator dropped (bad input, late data, policy `Drop`).
    pub records_dropped: Counter,
    /// The current watermark at this operator's input.
    pub watermark: i64,
    /// Side outputs, by tag.
    pub side_outputs: SideOutputs,
    /// Shared with the other operators of the task.
    pub task: Rc<TaskShared>,
    /// Wakes the task (for async completions).
    pub waker: crate::task::TaskWaker,
    /// The job's cancellation: long waits inside an operator must give up when it is set.
    pub cancel: CancelToken,
    /// The operator's uid: its identity in checkpoints (set it to keep state across changes
    /// to the job graph).
    pub uid: String,
    /// This subtask's state from the checkpoint being restored, if any.
    pub restored: Option<RestoredState>,
    /// Whether the job takes checkpoints (two-phase sinks commit at the end otherwise).
    pub checkpointing: bool,
}

impl OperatorContext {
    /// `index/parallelism`, as errors print it.
    pub fn subtask_label(&self) -> String {
        format!("{}/{}", self.subtask, self.parallelism)
    }
    /// The position of the source record now being processed, if known.
    pub fn position(&self) -> Option<Position> {
        self.task.current_position()
    }
    /// An error about the current record.
    pub fn record_error(&self, message: impl Into<String>) -> WeirError {
        WeirError::Record {
            operator: self.name.clone(),
            subtask: self.subtask_label(),
            position: self.position(),
            message: message.into(),
        }
    }
    /// An error of this operator not tied to a record.
    pub fn operator_error(&self, message: impl Into<String>) -> WeirError {
        WeirError::Operator {
            operator: self.name.clone(),
            subtask: self.subtask_label(),
            message: message.into(),
        }
    }
    /// Records a snapshot of this operator subtask for the barrier now passing.
    pub fn add_snapshot(&self, snap: OperatorSnapshot) {
        if !snap.is_empty() {
            self.task.snapshots.borrow_mut().push((
                SubtaskId {
                    uid: self.uid.clone(),
                    subtask: self.subtask,
                },
                snap,
            ));
        }
    }
    /// A counter of this operator subtask.
    pub fn counter(&self, name: &str) -> Counter {
        self.metrics.counter(&self.name, self.subtask, name)
    }
    /// Applies `policy` to a rejected record; `raw` is only computed for dead-lettering.
    pub fn reject(
        &mut self,
        policy: BadRecordPolicy,
        error: String,
        raw: impl FnOnce() -> Vec<u8>,
    ) -> Result<()> {
        match policy {
            BadRecordPolicy::Fail => Err(self.record_error(error)),
            BadRecordPolicy::Drop => {
                self.records_dropped.inc();
                Ok(())
            }
            BadRecordPolicy::DeadLetter => {
                self.counter("records_dead_lettered").inc();
                let dl = DeadLetter {
                    operator: self.name.clone(),
                    subtask: self.subtask,
                    position: self.position(),
                    error,
                    raw: raw(),
                };
                self.side_outputs
                    .emit(crate::graph::DEAD_LETTER_TAG, Record::untimed(dl))
            }
        }
    }
}
