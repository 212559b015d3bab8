//! Sinks: where a stream ends. A sink that takes part in checkpoints pre-commits at each
//! barrier (its snapshot's `pending_commit`) and its [`Committer`] commits once the checkpoint
//! is complete — again after a restore, so commits must be idempotent.
use std::sync::Arc;
use weir_runtime::checkpoint::{CheckpointBarrier, Committer, OperatorSnapshot, FINAL_SNAPSHOT};
use weir_runtime::{OneInputOperator, OperatorContext, Output};
use weir_types::{Record, Result};

/// A destination for records. Creates one writer per subtask.
pub trait Sink<T>: Send + Sync + 'static {
    /// A short name for errors and metrics.
    fn name(&self) -> String;
    /// The writer of subtask `subtask` out of `parallelism`.
    fn create_writer(&self, subtask: usize, parallelism: usize) -> Result<Box<dyn SinkWriter<T>>>;
    /// For two-phase sinks: commits what writers pre-committed.
    fn committer(&self) -> Option<Arc<dyn Committer>> {
        None
    }
}

/// What a sink writer hands to a checkpoint.
#[derive(Debug, Default, Clone)]
pub struct SinkSnapshot {
    /// Its state (e.g. the next part number), restored by [`SinkWriter::restore`].
    pub state: Vec<Vec<u8>>,
    /// Everything pre-committed and not yet known committed: the committer commits these once
    /// the checkpoint is complete.
    pub pending_commit: Vec<Vec<u8>>,
}

/// Writes the records of one subtask.
pub trait SinkWriter<T> {
    /// Called once when the writer's task starts, before `restore` (e.g. to register metrics).
    fn open(&mut self, _ctx: &OperatorContext) -> Result<()> {
        Ok(())
    }
    /// One record.
    fn write(&mut self, rec: Record<T>) -> Result<()>;
    /// Several records in order, as if written one by one; leaves `batch` empty.
    fn write_batch(&mut self, batch: &mut Vec<Record<T>>) -> Result<()> {
        weir_types::drain_each(batch, |rec| self.write(rec))
    }
    /// The task has no input ready: push buffered output out.
    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
    /// End of input: write everything (a two-phase writer pre-commits in its final snapshot).
    fn finish(&mut self) -> Result<()> {
        self.flush()
    }
    /// A checkpoint barrier: pre-commit and return what the checkpoint must hold.
    fn snapshot(&mut self, _checkpoint_id: u64) -> Result<SinkSnapshot> {
        self.flush()?;
        Ok(SinkSnapshot::default())
    }
    /// Checkpoint `id` is complete: what was pre-committed up to it is committed.
    fn notify_checkpoint_complete(&mut self, _id: u64) -> Result<()> {
        Ok(())
    }
    /// Resumes from snapshot state entries (of every subtask: keep your own) and cleans up what
    /// a failed attempt left behind.
    fn restore(&mut self, _state: &[Vec<u8>]) -> Result<()> {
        Ok(())
    }
}

pub(crate) struct SinkOp<T> {
    pub writer: Box<dyn SinkWriter<T>>,
    pub committer: Option<Arc<dyn Committer>>,
}

impl<T: 'static> OneInputOperator<T, ()> for SinkOp<T> {
    #[inline]
    fn process(
        &mut self,
        rec: Record<T>,
        _: &mut OperatorContext,
        _: &mut dyn Output<()>,
    ) -> Result<()> {
        self.writer.write(rec)
    }
    #[inline]
    fn process_batch(
        &mut self,
        batch: &mut Vec<Record<T>>,
        _: &mut OperatorContext,
        _: &mut dyn Output<()>,
    ) -> Result<()> {
        self.writer.write_batch(batch)
    }
    fn on_watermark(
        &mut self,
        _: weir_types::Watermark,
        _: &mut OperatorContext,
        _: &mut dyn Output<()>,
    ) -> Result<()> {
        Ok(())
    }
    fn end_input(&mut self, ctx: &mut OperatorContext, _: &mut dyn Output<()>) -> Result<()> {
        self.writer.finish()?;
        if !ctx.checkpointing {
            // No checkpoints will commit it: commit at the end of input (batch semantics).
            if let Some(c) = &self.committer {
                for item in self.writer.snapshot(FINAL_SNAPSHOT)?.pending_commit {
                    c.commit(&item)?;
                }
                self.writer.notify_checkpoint_complete(FINAL_SNAPSHOT)?;
            }
        }
        Ok(())
    }
    fn on_flush(&mut self, _: &mut OperatorContext, _: &mut dyn Output<()>) -> Result<()> {
        self.writer.flush()
    }
    fn snapshot(
        &mut self,
        b: &CheckpointBarrier,
        _: &mut OperatorContext,
        _: &mut dyn Output<()>,
    ) -> Result<OperatorSnapshot> {
        let s = self.writer.snapshot(b.id)?;
        Ok(OperatorSnapshot {
            operator: s.state,
            pending_commit: s.pending_commit,
            ..Default::default()
        })
    }
    fn notify_checkpoint_complete(&mut self, id: u64, _: &mut OperatorContext) -> Result<()> {
        self.writer.notify_checkpoint_complete(id)
    }
}
