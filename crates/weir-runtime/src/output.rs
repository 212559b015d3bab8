//! The push interface between chained operators.
use crate::checkpoint::CheckpointBarrier;
use std::any::Any;
use weir_types::{Record, Result, Watermark, WatermarkStatus};

/// Task-level control, passed down a chain so every operator and writer sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Processing time is now this (ms): fire due processing-time timers.
    Tick(i64),
    /// The task has no input ready: send partially filled buffers.
    Flush,
    /// Something asynchronous finished (async I/O): collect results.
    Wake,
    /// Asks for the earliest processing-time deadline; each stage lowers the value.
    NextDeadline(Option<i64>),
    /// Checkpoint `n` is complete (two-phase operators may commit).
    CheckpointComplete(u64),
}

impl Control {
    /// Lowers a `NextDeadline` query to `d`.
    pub fn offer_deadline(&mut self, d: Option<i64>) {
        if let (Control::NextDeadline(cur), Some(d)) = (self, d) {
            *cur = Some(cur.map_or(d, |c| c.min(d)));
        }
    }
}

/// Where an operator sends its results: the next chained operator, a fan-out, or a channel
/// writer. Methods are called in stream order.
pub trait Output<T> {
    /// One record.
    fn collect(&mut self, rec: Record<T>) -> Result<()>;
    /// Several records, in order, as if collected one by one; leaves `batch` empty (its
    /// allocation stays with the caller, to be refilled). Stages that can work a batch at a
    /// time (map, filter, keyed state with grouped lookups, sinks) override it.
    #[inline]
    fn collect_batch(&mut self, batch: &mut Vec<Record<T>>) -> Result<()> {
        weir_types::drain_each(batch, |rec| self.collect(rec))
    }
    /// Event time advanced.
    fn watermark(&mut self, wm: Watermark) -> Result<()>;
    /// The stream became idle or active.
    fn status(&mut self, s: WatermarkStatus) -> Result<()>;
    /// No more input will come (after the final watermark, for bounded input).
    fn end_input(&mut self) -> Result<()>;
    /// Task control (timers, flush, wake-ups).
    fn control(&mut self, c: &mut Control) -> Result<()>;
    /// A checkpoint barrier: snapshot, then pass it on.
    fn barrier(&mut self, b: &CheckpointBarrier) -> Result<()>;
}

/// Sends every element to several outputs (a stream consumed more than once).
pub struct Fanout<T> {
    outs: Vec<Box<dyn Output<T>>>,
}

impl<T> Fanout<T> {
    /// A fan-out to `outs`.
    pub fn new(outs: Vec<Box<dyn Output<T>>>) -> Self {
        Fanout { outs }
    }
}

impl<T: Clone> Output<T> for Fanout<T> {
    fn collect(&mut self, rec: Record<T>) -> Result<()> {
        let (last, rest) = self.outs.split_last_mut().expect("fan-out has outputs");
        for o in rest {
            o.collect(rec.clone())?;
        }
        last.collect(rec)
    }
    fn watermark(&mut self, wm: Watermark) -> Result<()> {
        self.outs.iter_mut().try_for_each(|o| o.watermark(wm))
    }
    fn status(&mut self, s: WatermarkStatus) -> Result<()> {
        self.outs.iter_mut().try_for_each(|o| o.status(s))
    }
    fn end_input(&mut self) -> Result<()> {
        self.outs.iter_mut().try_for_each(|o| o.end_input())
    }
    fn control(&mut self, c: &mut Control) -> Result<()> {
        self.outs.iter_mut().try_for_each(|o| o.control(c))
    }
    fn barrier(&mut self, b: &CheckpointBarrier) -> Result<()> {
        self.outs.iter_mut().try_for_each(|o| o.barrier(b))
    }
}

/// Gathers the records an operator emits while it works a batch, so they go on as one batch;
/// everything else is an error (an operator emits only records from `process`).
pub struct VecOutput<T> {
    /// The records collected so far.
    pub buf: Vec<Record<T>>,
}

impl<T> Default for VecOutput<T> {
    fn default() -> Self {
        VecOutput { buf: Vec::new() }
    }
}

impl<T> Output<T> for VecOutput<T> {
    #[inline]
    fn collect(&mut self, rec: Record<T>) -> Result<()> {
        self.buf.push(rec);
        Ok(())
    }
    fn collect_batch(&mut self, batch: &mut Vec<Record<T>>) -> Result<()> {
        self.buf.append(batch);
        Ok(())
    }
    fn watermark(&mut self, _: Watermark) -> Result<()> {
        Err(weir_types::WeirError::Internal(
            "watermark emitted while processing records".into(),
        ))
    }
    fn status(&mut self, _: WatermarkStatus) -> Result<()> {
        Err(weir_types::WeirError::Internal(
            "status emitted while processing records".into(),
        ))
    }
    fn end_input(&mut self) -> Result<()> {
        Err(weir_types::WeirError::Internal(
            "end of input emitted while processing records".into(),
        ))
    }
    fn control(&mut self, _: &mut Control) -> Result<()> {
        Ok(())
    }
    fn barrier(&mut self, _: &CheckpointBarrier) -> Result<()> {
        Err(weir_types::WeirError::Internal(
            "barrier emitted while processing records".into(),
        ))
    }
}

/// Drops everything: the output of a stream nobody consumes.
pub struct Discard;

impl<T> Output<T> for Discard {
    fn collect(&mut self, _: Record<T>) -> Result<()> {
        Ok(())
    }
    fn collect_batch(&mut self, batch: &mut Vec<Record<T>>) -> Result<()> {
        batch.clear();
        Ok(())
    }
    fn watermark(&mut self, _: Watermark) -> Result<()> {
        Ok(())
    }
    fn status(&mut self, _: WatermarkStatus) -> Result<()> {
        Ok(())
    }
    fn end_input(&mut self) -> Result<()> {
        Ok(())
    }
    fn control(&mut self, _: &mut Control) -> Result<()> {
        Ok(())
    }
    fn barrier(&mut self, _: &CheckpointBarrier) -> Result<()> {
        Ok(())
    }
}

/// A typed output behind `dyn Any`, as the type-erased graph builder passes them around.
pub type AnyOutput = Box<dyn Any>;

/// Boxes a typed output for the graph builder.
pub fn erase<T: 'static>(o: Box<dyn Output<T>>) -> AnyOutput {
    Box::new(o)
}

/// Recovers a typed output from the graph builder.
pub fn unerase<T: 'static>(o: AnyOutput) -> Box<dyn Output<T>> {
    *o.downcast::<Box<dyn Output<T>>>().unwrap_or_else(|_| {
        panic!(
            "internal: output type mismatch (expected {})",
            std::any::type_name::<T>()
        )
    })
}
