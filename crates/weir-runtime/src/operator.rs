//! Operators as the runtime drives them, and the stage that chains one into a task.
use crate::checkpoint::{CheckpointBarrier, OperatorSnapshot};
use crate::context::OperatorContext;
use crate::output::{Control, Output};
use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use weir_types::{Record, Result, Watermark, WatermarkStatus, WeirError};

/// An operator with one input. Only `process` is required; the hooks default to forwarding.
pub trait OneInputOperator<In, Out>: 'static {
    /// Called once before the first record.
    fn open(&mut self, _ctx: &mut OperatorContext) -> Result<()> {
        Ok(())
    }
    /// One record.
    fn process(
        &mut self,
        rec: Record<In>,
        ctx: &mut OperatorContext,
        out: &mut dyn Output<Out>,
    ) -> Result<()>;
    /// Several records in order, as if `process`ed one by one; must leave `batch` empty.
    /// Override it where a batch is cheaper than its records one at a time (one call per
    /// batch downstream, grouped state lookups). Nothing else happens between the records of
    /// a batch: no watermark, timer, or barrier.
    #[inline]
    fn process_batch(
        &mut self,
        batch: &mut Vec<Record<In>>,
        ctx: &mut OperatorContext,
        out: &mut dyn Output<Out>,
    ) -> Result<()> {
        weir_types::drain_each(batch, |rec| self.process(rec, ctx, out))
    }
    /// The input watermark advanced (fire event-time timers here); must forward it (or a
    /// lower one, later) to `out`.
    fn on_watermark(
        &mut self,
        wm: Watermark,
        _ctx: &mut OperatorContext,
        out: &mut dyn Output<Out>,
    ) -> Result<()> {
        out.watermark(wm)
    }
    /// The input became idle or active.
    fn on_status(
        &mut self,
        s: WatermarkStatus,
        _ctx: &mut OperatorContext,
        out: &mut dyn Output<Out>,
    ) -> Result<()> {
        out.status(s)
    }
    /// Processing time reached `now_ms` (fire processing-time timers here).
    fn on_processing_time(
        &mut self,
        _now_ms: i64,
        _ctx: &mut OperatorContext,
        _out: &mut dyn Output<Out>,
    ) -> Result<()> {
        Ok(())
    }
    /// The earliest processing time this operator wants `on_processing_time` at.
    fn next_deadline(&mut self) -> Option<i64> {
        None
    }
    /// Asynchronous work completed (see [`crate::task::TaskWaker`]).
    fn on_wake(&mut self, _ctx: &mut OperatorContext, _out: &mut dyn Output<Out>) -> Result<()> {
        Ok(())
    }
    /// A checkpoint barrier reached this operator: return its state (keyed state by key group,
    /// operator state, pre-committed transactions). Called between records, in the task
    /// thread; anything slow should be deferred (the returned bytes are written asynchronously).
    fn snapshot(
        &mut self,
        _barrier: &CheckpointBarrier,
        _ctx: &mut OperatorContext,
        _out: &mut dyn Output<Out>,
    ) -> Result<OperatorSnapshot> {
        Ok(OperatorSnapshot::default())
    }
    /// Checkpoint `id` is complete (durable): a two-phase operator may commit what it
    /// pre-committed for it.
    fn notify_checkpoint_complete(&mut self, _id: u64, _ctx: &mut OperatorContext) -> Result<()> {
        Ok(())
    }
    /// The task has no input ready: push out anything buffered (sinks).
    fn on_flush(&mut self, _ctx: &mut OperatorContext, _out: &mut dyn Output<Out>) -> Result<()> {
        Ok(())
    }
    /// No more input. Emit what is pending; the stage then ends the output.
    fn end_input(&mut self, _ctx: &mut OperatorContext, _out: &mut dyn Output<Out>) -> Result<()> {
        Ok(())
    }
}

/// An operator with two inputs of different types (connect / co-process, joins).
pub trait TwoInputOperator<A, B, Out>: 'static {
    /// Called once before the first record.
    fn open(&mut self, _ctx: &mut OperatorContext) -> Result<()> {
        Ok(())
    }
    /// A record of the first input.
    fn process1(
        &mut self,
        rec: Record<A>,
        ctx: &mut OperatorContext,
        out: &mut dyn Output<Out>,
    ) -> Result<()>;
    /// A record of the second input.
    fn process2(
        &mut self,
        rec: Record<B>,
        ctx: &mut OperatorContext,
        out: &mut dyn Output<Out>,
    ) -> Result<()>;
    /// The combined watermark (minimum of both inputs) advanced.
    fn on_watermark(
        &mut self,
        wm: Watermark,
        _ctx: &mut OperatorContext,
        out: &mut dyn Output<Out>,
    ) -> Result<()> {
        out.watermark(wm)
    }
    /// Processing time reached `now_ms`.
    fn on_processing_time(
        &mut self,
        _now_ms: i64,
        _ctx: &mut OperatorContext,
        _out: &mut dyn Output<Out>,
    ) -> Result<()> {
        Ok(())
    }
    /// The earliest processing time this operator wants `on_processing_time` at.
    fn next_deadline(&mut self) -> Option<i64> {
        None
    }
    /// A checkpoint barrier reached this operator: return its state (keyed state by key group,
    /// operator state, pre-committed transactions). Called between records, in the task
    /// thread; anything slow should be deferred (the returned bytes are written asynchronously).
    fn snapshot(
        &mut self,
        _barrier: &CheckpointBarrier,
        _ctx: &mut OperatorContext,
        _out: &mut dyn Output<Out>,
    ) -> Result<OperatorSnapshot> {
        Ok(OperatorSnapshot::default())
    }
    /// Checkpoint `id` is complete (durable): a two-phase operator may commit what it
    /// pre-committed for it.
    fn notify_checkpoint_complete(&mut self, _id: u64, _ctx: &mut OperatorContext) -> Result<()> {
        Ok(())
    }
    /// No more input on either side.
    fn end_input(&mut self, _ctx: &mut OperatorContext, _out: &mut dyn Output<Out>) -> Result<()> {
        Ok(())
    }
}

/// The message of a panic payload.
pub fn panic_message(p: &(dyn Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_string()
    }
}

/// Runs user code, turning a panic into an error naming the operator.
#[inline]
pub fn guard<R>(ctx: &OperatorContext, f: impl FnOnce() -> Result<R>) -> Result<R> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => Err(WeirError::Panic {
            operator: ctx.name.clone(),
            subtask: ctx.subtask_label(),
            message: panic_message(&*p),
        }),
    }
}

/// A one-input operator placed in a chain: it is the [`Output`] of the operator before it.
pub struct Stage<Op, In, Out> {
    op: Op,
    ctx: OperatorContext,
    out: Box<dyn Output<Out>>,
    _in: std::marker::PhantomData<fn(In)>,
}

impl<Op, In, Out> Stage<Op, In, Out> {
    /// Chains `op` in front of `out`. Call [`Stage::open`] before use.
    pub fn new(op: Op, ctx: OperatorContext, out: Box<dyn Output<Out>>) -> Self {
        Stage {
            op,
            ctx,
            out,
            _in: std::marker::PhantomData,
        }
    }
}

impl<In, Out, Op: OneInputOperator<In, Out>> Stage<Op, In, Out> {
    /// Opens the operator.
    pub fn open(&mut self) -> Result<()> {
        let Stage { op, ctx, .. } = self;
        match catch_unwind(AssertUnwindSafe(|| op.open(ctx))) {
            Ok(r) => r,
            Err(p) => Err(WeirError::Panic {
                operator: ctx.name.clone(),
                subtask: ctx.subtask_label(),
                message: panic_message(&*p),
            }),
        }
    }
}

macro_rules! guarded {
    ($self:ident, |$op:ident, $ctx:ident, $out:ident| $body:expr) => {{
        let Stage {
            op: $op,
            ctx: $ctx,
            out,
            ..
        } = $self;
        let $out: &mut dyn Output<_> = &mut **out;
        match catch_unwind(AssertUnwindSafe(|| $body)) {
            Ok(r) => r,
            Err(p) => Err(WeirError::Panic {
                operator: $ctx.name.clone(),
                subtask: $ctx.subtask_label(),
                message: panic_message(&*p),
            }),
        }
    }};
}

impl<In, Out, Op: OneInputOperator<In, Out>> Output<In> for Stage<Op, In, Out> {
    fn barrier(&mut self, b: &CheckpointBarrier) -> Result<()> {
        let snap = guarded!(self, |op, ctx, out| op.snapshot(b, ctx, out))?;
        self.ctx.add_snapshot(snap);
        self.ctx.side_outputs.barrier(b)?;
        self.out.barrier(b)
    }
    #[inline]
    fn collect(&mut self, rec: Record<In>) -> Result<()> {
        self.ctx.records_in.inc();
        guarded!(self, |op, ctx, out| op.process(rec, ctx, out))
    }
    #[inline]
    fn collect_batch(&mut self, batch: &mut Vec<Record<In>>) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        self.ctx.records_in.add(batch.len() as u64);
        let r = guarded!(self, |op, ctx, out| op.process_batch(batch, ctx, out));
        batch.clear();
        r
    }
    fn watermark(&mut self, wm: Watermark) -> Result<()> {
        self.ctx.watermark = wm.0;
        guarded!(self, |op, ctx, out| op.on_watermark(wm, ctx, out))?;
        self.ctx.side_outputs.watermark(wm)
    }
    fn status(&mut self, s: WatermarkStatus) -> Result<()> {
        guarded!(self, |op, ctx, out| op.on_status(s, ctx, out))?;
        self.ctx.side_outputs.status(s)
    }
    fn end_input(&mut self) -> Result<()> {
        guarded!(self, |op, ctx, out| op.end_input(ctx, out))?;
        self.ctx.side_outputs.end_input()?;
        self.out.end_input()
    }
    fn control(&mut self, c: &mut Control) -> Result<()> {
        match *c {
            Control::Tick(now) => {
                if self.op.next_deadline().is_some_and(|d| d <= now) {
                    guarded!(self, |op, ctx, out| op.on_processing_time(now, ctx, out))?;
                }
            }
            Control::Wake => guarded!(self, |op, ctx, out| op.on_wake(ctx, out))?,
            Control::NextDeadline(_) => c.offer_deadline(self.op.next_deadline()),
            Control::Flush => guarded!(self, |op, ctx, out| op.on_flush(ctx, out))?,
            Control::CheckpointComplete(id) => {
                guarded!(self, |op, ctx, _out| op.notify_checkpoint_complete(id, ctx))?
            }
        }
        self.ctx.side_outputs.control(c)?;
        self.out.control(c)
    }
}
