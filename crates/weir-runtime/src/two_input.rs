//! Nodes and task heads for operators with two inputs.
use crate::checkpoint::CheckpointBarrier;
use crate::context::OperatorContext;
use crate::graph::{OperatorNode, Outputs};
use crate::operator::{panic_message, TwoInputOperator};
use crate::output::{erase, AnyOutput, Control, Discard, Output};
use crate::task::InputHead;
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};
use weir_types::codec::Batch;
use weir_types::{Data, Result, Watermark, WatermarkStatus, WeirError};

/// An operator node with two inputs; always the head of its task.
pub struct TwoInputNode<A, B, Out, Op, F> {
    make: F,
    _p: PhantomData<fn() -> (A, B, Out, Op)>,
}

impl<A, B, Out, Op, F> TwoInputNode<A, B, Out, Op, F> {
    /// A node whose subtasks run `make(subtask_context)`.
    pub fn new(make: F) -> Self {
        TwoInputNode {
            make,
            _p: PhantomData,
        }
    }
}

struct TwoInputHead<Op, A, B, Out> {
    op: Op,
    ctx: OperatorContext,
    out: Box<dyn Output<Out>>,
    _in: PhantomData<fn(A, B)>,
}

impl<Op, A, B, Out> TwoInputHead<Op, A, B, Out> {
    fn guarded(
        &mut self,
        f: impl FnOnce(&mut Op, &mut OperatorContext, &mut dyn Output<Out>) -> Result<()>,
    ) -> Result<()> {
        let TwoInputHead { op, ctx, out, .. } = self;
        match catch_unwind(AssertUnwindSafe(|| f(op, ctx, &mut **out))) {
            Ok(r) => r,
            Err(p) => Err(WeirError::Panic {
                operator: ctx.name.clone(),
                subtask: ctx.subtask_label(),
                message: panic_message(&*p),
            }),
        }
    }
}

impl<A: Data, B: Data, Out, Op: TwoInputOperator<A, B, Out>> InputHead
    for TwoInputHead<Op, A, B, Out>
{
    fn barrier(&mut self, b: &CheckpointBarrier) -> Result<()> {
        let TwoInputHead { op, ctx, out, .. } = self;
        let snap = match catch_unwind(AssertUnwindSafe(|| op.snapshot(b, ctx, &mut **out))) {
            Ok(r) => r?,
            Err(p) => {
                return Err(WeirError::Panic {
                    operator: ctx.name.clone(),
                    subtask: ctx.subtask_label(),
                    message: panic_message(&*p),
                })
            }
        };
        self.ctx.add_snapshot(snap);
        self.ctx.side_outputs.barrier(b)?;
        self.out.barrier(b)
    }
    fn on_data(&mut self, input: usize, batch: Batch) -> Result<()> {
        if input == 0 {
            let mut recs = Vec::new();
            batch.into_records::<A>(&mut recs)?;
            for rec in recs {
                self.ctx.records_in.inc();
                self.guarded(|op, ctx, out| op.process1(rec, ctx, out))?;
            }
        } else {
            let mut recs = Vec::new();
            batch.into_records::<B>(&mut recs)?;
            for rec in recs {
                self.ctx.records_in.inc();
                self.guarded(|op, ctx, out| op.process2(rec, ctx, out))?;
            }
        }
        Ok(())
    }
    fn encoded_copy(&self, input: usize, batch: &Batch) -> Result<weir_types::codec::Buffer> {
        if input == 0 {
            batch.encoded_copy::<A>()
        } else {
            batch.encoded_copy::<B>()
        }
    }
    fn on_watermark(&mut self, wm: Watermark) -> Result<()> {
        self.ctx.watermark = wm.0;
        self.guarded(|op, ctx, out| op.on_watermark(wm, ctx, out))?;
        self.ctx.side_outputs.watermark(wm)
    }
    fn on_status(&mut self, s: WatermarkStatus) -> Result<()> {
        self.ctx.side_outputs.status(s)?;
        self.out.status(s)
    }
    fn end_input(&mut self) -> Result<()> {
        self.guarded(|op, ctx, out| op.end_input(ctx, out))?;
        self.ctx.side_outputs.end_input()?;
        self.out.end_input()
    }
    fn control(&mut self, c: &mut Control) -> Result<()> {
        match *c {
            Control::Tick(now) if self.op.next_deadline().is_some_and(|d| d <= now) => {
                self.guarded(|op, ctx, out| op.on_processing_time(now, ctx, out))?;
            }
            Control::NextDeadline(_) => c.offer_deadline(self.op.next_deadline()),
            Control::CheckpointComplete(id) => {
                self.guarded(|op, ctx, _| op.notify_checkpoint_complete(id, ctx))?
            }
            _ => {}
        }
        self.ctx.side_outputs.control(c)?;
        self.out.control(c)
    }
}

impl<A, B, Out, Op, F> OperatorNode for TwoInputNode<A, B, Out, Op, F>
where
    A: Data,
    B: Data,
    Out: Data,
    Op: TwoInputOperator<A, B, Out>,
    F: Fn(&OperatorContext) -> Result<Op> + Send + Sync,
{
    fn inputs(&self) -> usize {
        2
    }
    fn build(&self, _ctx: OperatorContext, _outputs: Outputs) -> Result<AnyOutput> {
        Err(WeirError::Internal(
            "a two-input operator cannot be chained to its input".into(),
        ))
    }
    fn build_head(&self, mut ctx: OperatorContext, outputs: Outputs) -> Result<Box<dyn InputHead>> {
        let mut op = (self.make)(&ctx)?;
        let (out, sides) = outputs.main::<Out>();
        ctx.side_outputs = sides;
        let name = ctx.name.clone();
        let label = ctx.subtask_label();
        match catch_unwind(AssertUnwindSafe(|| op.open(&mut ctx))) {
            Ok(r) => r?,
            Err(p) => {
                return Err(WeirError::Panic {
                    operator: name,
                    subtask: label,
                    message: panic_message(&*p),
                })
            }
        }
        Ok(Box::new(TwoInputHead::<Op, A, B, Out> {
            op,
            ctx,
            out,
            _in: PhantomData,
        }))
    }
    fn discard(&self) -> AnyOutput {
        erase::<Out>(Box::new(Discard))
    }
}
