//! Sinks: where a stream ends.
use weir_runtime::{OneInputOperator, OperatorContext, Output};
use weir_types::{Record, Result};

/// A destination for records. Creates one writer per subtask.
pub trait Sink<T>: Send + Sync + 'static {
    /// A short name for errors and metrics.
    fn name(&self) -> String;
    /// The writer of subtask `subtask` out of `parallelism`.
    fn create_writer(&self, subtask: usize, parallelism: usize) -> Result<Box<dyn SinkWriter<T>>>;
}

/// Writes the records of one subtask.
pub trait SinkWriter<T> {
    /// One record.
    fn write(&mut self, rec: Record<T>) -> Result<()>;
    /// The task has no input ready: push buffered output out.
    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
    /// End of input: write everything and close.
    fn finish(&mut self) -> Result<()> {
        self.flush()
    }
}

pub(crate) struct SinkOp<T> {
    pub writer: Box<dyn SinkWriter<T>>,
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
    fn on_watermark(
        &mut self,
        _: weir_types::Watermark,
        _: &mut OperatorContext,
        _: &mut dyn Output<()>,
    ) -> Result<()> {
        Ok(())
    }
    fn end_input(&mut self, _: &mut OperatorContext, _: &mut dyn Output<()>) -> Result<()> {
        self.writer.finish()
    }
    fn on_flush(&mut self, _: &mut OperatorContext, _: &mut dyn Output<()>) -> Result<()> {
        self.writer.flush()
    }
}
