//! Sources: split into readers per subtask, with watermarks generated per split.
use crate::checkpoint::CheckpointBarrier;
use crate::context::{BadRecordPolicy, OperatorContext, PositionKind};
use crate::output::{Control, Output};
use crate::watermark::{Generator, Valve, WatermarkEmit, WatermarkStrategy};
use weir_types::{Record, Result, Watermark, WatermarkStatus, NO_TIMESTAMP};

/// What a reader's `poll` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Poll {
    /// It emitted records and has more right away.
    Ready,
    /// Nothing available now; poll again after at most this many ms.
    Pending(u64),
    /// Bounded input is exhausted.
    Finished,
}

/// A source of records: creates one reader per subtask. Must be cheap to share between threads
/// (readers do the work).
pub trait Source<T>: Send + Sync + 'static {
    /// Creates the reader of subtask `subtask` out of `parallelism`.
    fn create_reader(&self, subtask: usize, parallelism: usize)
        -> Result<Box<dyn SourceReader<T>>>;
    /// Whether the source ends by itself.
    fn is_bounded(&self) -> bool {
        true
    }
    /// The most subtasks it can use (collections: 1).
    fn max_parallelism(&self) -> Option<usize> {
        None
    }
}

/// Reads the splits of one subtask.
pub trait SourceReader<T> {
    /// Emits some records (a batch: a few hundred to a few thousand) into `out`. Must not block
    /// for long: return [`Poll::Pending`] when nothing is available.
    fn poll(&mut self, out: &mut SourceOutput<T>) -> Result<Poll>;
    /// The positions to resume from, as entries (one per split, typically). On restore every
    /// subtask receives the entries of all subtasks and keeps those of its own splits, so the
    /// parallelism may change.
    fn snapshot(&mut self) -> Result<Vec<Vec<u8>>> {
        Ok(Vec::new())
    }
    /// Resumes from snapshot entries (called once, before the first `poll`).
    fn restore(&mut self, _entries: &[Vec<u8>]) -> Result<()> {
        Ok(())
    }
    /// A checkpoint completed (e.g. commit offsets to a broker for monitoring).
    fn notify_checkpoint_complete(&mut self, _id: u64) -> Result<()> {
        Ok(())
    }
}

struct Split {
    name: String,
    gen: Generator,
    last_record_ms: i64,
    idle: bool,
}

/// Where a reader emits: applies timestamps and per-split watermarks, bad-record policy and
/// position tracking, then pushes into the task's chain.
pub struct SourceOutput<T> {
    chain: Box<dyn Output<T>>,
    strategy: Option<WatermarkStrategy<T>>,
    splits: Vec<Split>,
    valve: Valve,
    next_periodic_ms: i64,
    interval_ms: i64,
    policy: BadRecordPolicy,
    /// The source operator's context (name, subtask, metrics, side outputs).
    pub ctx: OperatorContext,
    emitted_idle: bool,
}

impl<T: 'static> SourceOutput<T> {
    pub(crate) fn new(
        chain: Box<dyn Output<T>>,
        strategy: Option<WatermarkStrategy<T>>,
        policy: BadRecordPolicy,
        ctx: OperatorContext,
        interval_ms: i64,
    ) -> Self {
        let strategy = strategy.filter(|s| s.generate || s.assigner.is_some());
        SourceOutput {
            chain,
            strategy,
            splits: Vec::new(),
            valve: Valve::new(0),
            next_periodic_ms: 0,
            interval_ms: interval_ms.max(1),
            policy,
            ctx,
            emitted_idle: false,
        }
    }

    /// Registers a split this reader reads; returns its index for `collect` and
    /// `set_position`. `kind` says whether positions are lines or offsets.
    pub fn add_split(&mut self, name: impl Into<String>, kind: PositionKind) -> usize {
        let name = name.into();
        self.ctx.task.splits.borrow_mut().push((name.clone(), kind));
        let delay = self.strategy.as_ref().map_or(0, |s| s.out_of_orderness_ms);
        self.splits.push(Split {
            name,
            gen: Generator::new(delay),
            last_record_ms: self.ctx.clock.now_ms(),
            idle: false,
        });
        self.valve.add_input()
    }

    /// The name of split `i`.
    pub fn split_name(&self, i: usize) -> &str {
        &self.splits[i].name
    }

    /// The watermark split `split` has generated so far (`i64::MIN` before its first event),
    /// or `None` when no watermarks are generated or the split is idle. For watermark
    /// alignment: a source pauses splits that run too far ahead of the others.
    pub fn split_watermark(&self, split: usize) -> Option<i64> {
        let generate = self.strategy.as_ref().is_some_and(|s| s.generate);
        let s = self.splits.get(split)?;
        (generate && !s.idle).then(|| s.gen.current())
    }

    /// Records where the next record comes from (line or offset in split `split`), for error
    /// messages downstream.
    #[inline]
    pub fn set_position(&mut self, split: usize, offset: u64) {
        self.ctx.task.position.set(Some((split, offset)));
    }

    /// Emits a record of split `split` with the source's own timestamp (or [`NO_TIMESTAMP`]).
    #[inline]
    pub fn collect(&mut self, split: usize, value: T, source_ts: i64) -> Result<()> {
        self.ctx.records_in.inc();
        let Some(strategy) = &self.strategy else {
            return self.chain.collect(Record {
                ts: source_ts,
                value,
            });
        };
        let ts = strategy.timestamp(&value, source_ts);
        let per_record = strategy.generate && strategy.emit == WatermarkEmit::PerRecord;
        let generate = strategy.generate;
        let has_idleness = strategy.idle_timeout_ms.is_some();
        let s = &mut self.splits[split];
        if generate && ts != NO_TIMESTAMP {
            s.gen.on_event(ts);
        }
        if has_idleness {
            s.last_record_ms = self.ctx.clock.now_ms();
        }
        if s.idle {
            s.idle = false;
            self.set_split_status(split, WatermarkStatus::Active)?;
        } else if self.emitted_idle {
            self.emitted_idle = false;
            self.emit_status(WatermarkStatus::Active)?;
        }
        self.chain.collect(Record { ts, value })?;
        if per_record {
            let wm = self.splits[split].gen.current();
            if let Some(w) = self.valve.watermark(split, wm) {
                self.emit_watermark(w)?;
            }
        }
        Ok(())
    }

    /// Emits records of split `split` as one batch; each record's `ts` is the source's own
    /// timestamp (or [`NO_TIMESTAMP`]) and is replaced by the assigned one. Equivalent to
    /// [`SourceOutput::collect`] for each in turn (with a per-record watermark strategy it is
    /// exactly that), but pushes the batch down the chain in one call. Errors downstream name
    /// the position last given to [`SourceOutput::set_position`]: set it to the batch's first
    /// record. Leaves `batch` empty.
    pub fn collect_batch(&mut self, split: usize, batch: &mut Vec<Record<T>>) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let Some(strategy) = &self.strategy else {
            self.ctx.records_in.add(batch.len() as u64);
            return self.chain.collect_batch(batch);
        };
        if strategy.generate && strategy.emit == WatermarkEmit::PerRecord {
            return weir_types::drain_each(batch, |rec| self.collect(split, rec.value, rec.ts));
        }
        self.ctx.records_in.add(batch.len() as u64);
        let generate = strategy.generate;
        let s = &mut self.splits[split];
        for rec in batch.iter_mut() {
            rec.ts = strategy.timestamp(&rec.value, rec.ts);
            if generate && rec.ts != NO_TIMESTAMP {
                s.gen.on_event(rec.ts);
            }
        }
        if strategy.idle_timeout_ms.is_some() {
            s.last_record_ms = self.ctx.clock.now_ms();
        }
        if s.idle {
            s.idle = false;
            self.set_split_status(split, WatermarkStatus::Active)?;
        } else if self.emitted_idle {
            self.emitted_idle = false;
            self.emit_status(WatermarkStatus::Active)?;
        }
        self.chain.collect_batch(batch)
    }

    /// Applies the source's bad-record policy to input at `offset` of `split` that could not be
    /// decoded.
    pub fn bad_record(
        &mut self,
        split: usize,
        offset: u64,
        raw: &[u8],
        error: impl std::fmt::Display,
    ) -> Result<()> {
        self.set_position(split, offset);
        let policy = self.policy;
        self.ctx.reject(policy, error.to_string(), || raw.to_vec())
    }

    /// Split `split` has no more records: it no longer holds the watermark back.
    pub fn finish_split(&mut self, split: usize) -> Result<()> {
        if let Some(w) = self.valve.end(split) {
            self.emit_watermark(w)?;
        }
        Ok(())
    }

    fn set_split_status(&mut self, split: usize, s: WatermarkStatus) -> Result<()> {
        let (st, wm) = self.valve.status(split, s);
        if let Some(w) = wm {
            self.emit_watermark(w)?;
        }
        if let Some(st) = st {
            self.emitted_idle = st == WatermarkStatus::Idle;
            self.emit_status(st)?;
        }
        Ok(())
    }

    /// Periodic work, called by the task between polls: periodic watermarks and idleness.
    pub(crate) fn on_time(&mut self, now: i64) -> Result<()> {
        let Some(strategy) = &self.strategy else {
            return Ok(());
        };
        if now < self.next_periodic_ms {
            return Ok(());
        }
        self.next_periodic_ms = now + self.interval_ms;
        let idle_timeout = strategy.idle_timeout_ms;
        let generate = strategy.generate;
        if self.splits.is_empty() && idle_timeout.is_some() && !self.emitted_idle {
            // A reader without splits never holds the watermark back.
            self.emitted_idle = true;
            return self.emit_status(WatermarkStatus::Idle);
        }
        for i in 0..self.splits.len() {
            if let Some(t) = idle_timeout {
                let s = &mut self.splits[i];
                if !s.idle && now - s.last_record_ms >= t {
                    s.idle = true;
                    self.set_split_status(i, WatermarkStatus::Idle)?;
                    continue;
                }
            }
            if generate {
                let wm = self.splits[i].gen.current();
                if let Some(w) = self.valve.watermark(i, wm) {
                    self.emit_watermark(w)?;
                }
            }
        }
        Ok(())
    }

    /// End of bounded input: the final watermark, then end of input.
    pub(crate) fn finish(&mut self) -> Result<()> {
        self.chain.watermark(Watermark::MAX)?;
        self.ctx.side_outputs.watermark(Watermark::MAX)?;
        self.ctx.side_outputs.end_input()?;
        self.chain.end_input()
    }

    pub(crate) fn barrier(&mut self, b: &CheckpointBarrier) -> Result<()> {
        self.ctx.side_outputs.barrier(b)?;
        self.chain.barrier(b)
    }

    pub(crate) fn control(&mut self, c: &mut Control) -> Result<()> {
        self.ctx.side_outputs.control(c)?;
        self.chain.control(c)
    }

    /// The source's watermark advanced: to the chain and the side outputs (dead letters).
    fn emit_watermark(&mut self, w: Watermark) -> Result<()> {
        self.chain.watermark(w)?;
        self.ctx.side_outputs.watermark(w)
    }

    /// The source became idle or active: to the chain and the side outputs.
    fn emit_status(&mut self, s: WatermarkStatus) -> Result<()> {
        self.chain.status(s)?;
        self.ctx.side_outputs.status(s)
    }
}
