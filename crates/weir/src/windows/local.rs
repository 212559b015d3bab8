//! Local aggregation before the keyed exchange: the two-phase ("local-global") aggregation of
//! Flink SQL's planner, for window aggregates of the DataStream API.
//!
//! A [`LocalAggOp`], chained after the upstream operator (in its task, no channel), folds each
//! batch's records into one [`Partial`] accumulator per key and bucket (the record's tumbling
//! window, or its slice of a sliding window), and sends the partials through the keyed
//! exchange in place of the records. The window operator ([`Merging`] around it) merges each
//! partial into its state with the aggregate's `merge`, where it would have added the records
//! one by one. With few keys per batch, the exchange carries a fraction of the records and the
//! window operator makes a fraction of the state updates, while the upstream task, which did
//! less, does the folding.
//!
//! Partials are held across batches, at most [`LOCAL_PARTIALS_MAX`] of them, and leave before
//! a watermark that fires a window holding one of their buckets (a later watermark cannot make
//! them late either), before a checkpoint barrier or an idleness status, at the end of input,
//! and when the task's input runs dry: watermarks, checkpoints (the local stage holds nothing at
//! a barrier) and results are those of the record-by-record operator. A partial whose bucket is late when
//! it arrives is dropped and counts its records as late. When a flush finds more partials than
//! half its records, folding saves nothing: records then travel as partials of one, batch by
//! batch, and folding is tried again after eight times [`LOCAL_PARTIALS_MAX`] records.
//!
//! Chosen by [`crate::windows::WindowedStream::build`] for event-time tumbling windows (one
//! window per record, decided by its timestamp) and sliced sliding windows, with the default
//! trigger, no allowed lateness, no late-data side output (the records themselves are gone) and
//! an incremental aggregate; `local_aggregation(false)` turns it off.
use crate::operators::keyed::{KeyFn, TOUCH_CHUNK};
use hashbrown::HashMap;
use serde::{Deserialize, Serialize};
use std::marker::PhantomData;
use std::sync::Arc;
use weir_runtime::checkpoint::{CheckpointBarrier, OperatorSnapshot};
use weir_runtime::{OneInputOperator, OperatorContext, Output};
use weir_state::AggregateFunction;
use weir_types::{Key, Record, Result, Watermark, WatermarkStatus, NO_TIMESTAMP};

/// What an event-time window operator says of a record without a timestamp.
pub(crate) const NO_TIMESTAMP_ERROR: &str =
    "record has no timestamp: assign timestamps (assign_timestamps) before an event-time window";

/// The accumulator of a key's records in one bucket (a window, or a slice).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Partial<K, N, ACC> {
    pub key: K,
    pub bucket: N,
    pub acc: ACC,
    /// How many records it holds (late records, if its bucket is late).
    pub records: u64,
}

/// A bucket: its id, the timestamps it holds (`first_ts..=last_ts`), and the watermark at
/// which the first window holding it fires (until then, its partials can wait).
#[derive(Clone, Debug)]
pub(crate) struct Bucket<N> {
    pub id: N,
    pub first_ts: i64,
    pub last_ts: i64,
    pub due: i64,
}

/// The bucket of an event timestamp.
pub(crate) type BucketFn<N> = Arc<dyn Fn(i64) -> Bucket<N> + Send + Sync>;

/// Partials held at most, before they go on: bounds the local stage's memory (and its maps'
/// sizes, so that they stay in the CPU caches).
pub const LOCAL_PARTIALS_MAX: usize = 32_768;

/// Buckets whose keys are looked up at once (the newest ones); a record of an older bucket
/// starts a partial of its own (merged all the same by the window operator).
const BUCKETS_MAX: usize = 4;

/// Records sent as partials of one after a flush that found more partials than half its
/// records, before folding is tried again.
const DIRECT_RECORDS: usize = 8 * LOCAL_PARTIALS_MAX;

/// Folds records into one [`Partial`] per key and bucket, held until a watermark fires one of
/// their windows, a checkpoint barrier, the end of input, an idle input or
/// [`LOCAL_PARTIALS_MAX`] partials; then emitted in order of first record, each with the
/// latest timestamp of its records.
pub(crate) struct LocalAggOp<K, T, N, ACC, AOUT> {
    pub key: KeyFn<T, K>,
    pub bucket: BucketFn<N>,
    pub agg: Arc<dyn AggregateFunction<T, ACC, AOUT>>,
    /// The buckets met since the last flush (at most [`BUCKETS_MAX`], newest last), each with
    /// its keys' positions in `partials`.
    buckets: Vec<(Bucket<N>, HashMap<K, usize>)>,
    /// The bucket of the last record (an index in `buckets`).
    last: usize,
    /// Cleared maps, for new buckets.
    spare: Vec<HashMap<K, usize>>,
    partials: Vec<Record<Partial<K, N, ACC>>>,
    /// Records folded into `partials`.
    records: usize,
    /// The earliest watermark at which a window holding one of `partials`' buckets fires.
    due: i64,
    /// Records still to send one by one (as partials of one), after a flush whose partials
    /// were more than half its records.
    direct: usize,
}

impl<K, T, N, ACC, AOUT> LocalAggOp<K, T, N, ACC, AOUT> {
    pub fn new(
        key: KeyFn<T, K>,
        bucket: BucketFn<N>,
        agg: Arc<dyn AggregateFunction<T, ACC, AOUT>>,
    ) -> Self {
        LocalAggOp {
            key,
            bucket,
            agg,
            buckets: Vec::new(),
            last: 0,
            spare: Vec::new(),
            partials: Vec::new(),
            records: 0,
            due: i64::MAX,
            direct: 0,
        }
    }

    /// The index in `buckets` of the bucket of timestamp `ts` (added if new).
    #[inline]
    fn bucket_of(&mut self, ts: i64) -> usize {
        let holds = |b: &Bucket<N>| b.first_ts <= ts && ts <= b.last_ts;
        if self.buckets.get(self.last).is_some_and(|(b, _)| holds(b)) {
            return self.last;
        }
        let i = match self.buckets.iter().position(|(b, _)| holds(b)) {
            Some(i) => i,
            None => {
                if self.buckets.len() == BUCKETS_MAX {
                    let (_, mut keys) = self.buckets.remove(0);
                    keys.clear();
                    self.spare.push(keys);
                }
                let b = (self.bucket)(ts);
                self.due = self.due.min(b.due);
                self.buckets.push((b, self.spare.pop().unwrap_or_default()));
                self.buckets.len() - 1
            }
        };
        self.last = i;
        i
    }

    /// Sends the held partials on.
    fn flush(&mut self, out: &mut dyn Output<Partial<K, N, ACC>>) -> Result<()> {
        if self.partials.is_empty() {
            return Ok(());
        }
        if self.direct == 0 && self.partials.len() * 2 > self.records {
            self.direct = DIRECT_RECORDS;
        }
        for (_, mut keys) in self.buckets.drain(..) {
            keys.clear();
            self.spare.push(keys);
        }
        self.records = 0;
        self.due = i64::MAX;
        let r = out.collect_batch(&mut self.partials);
        self.partials.clear();
        r
    }
}

impl<K, T, N, ACC, AOUT> OneInputOperator<T, Partial<K, N, ACC>> for LocalAggOp<K, T, N, ACC, AOUT>
where
    K: Key,
    T: 'static,
    N: Clone + 'static,
    ACC: 'static,
    AOUT: 'static,
{
    fn process(
        &mut self,
        rec: Record<T>,
        ctx: &mut OperatorContext,
        out: &mut dyn Output<Partial<K, N, ACC>>,
    ) -> Result<()> {
        self.process_batch(&mut vec![rec], ctx, out)
    }

    fn process_batch(
        &mut self,
        batch: &mut Vec<Record<T>>,
        ctx: &mut OperatorContext,
        out: &mut dyn Output<Partial<K, N, ACC>>,
    ) -> Result<()> {
        let grouped = self.direct == 0;
        self.direct = self.direct.saturating_sub(batch.len());
        let mut r = Ok(());
        for rec in batch.drain(..) {
            if r.is_err() {
                continue;
            }
            if rec.ts == NO_TIMESTAMP {
                r = Err(ctx.record_error(NO_TIMESTAMP_ERROR));
                continue;
            }
            let key = (self.key)(&rec.value);
            let b = self.bucket_of(rec.ts);
            let (bucket, keys) = &mut self.buckets[b];
            self.records += 1;
            match grouped.then(|| keys.get(&key).copied()).flatten() {
                Some(i) => {
                    let p = &mut self.partials[i];
                    p.ts = p.ts.max(rec.ts);
                    p.value.records += 1;
                    self.agg.add(&mut p.value.acc, rec.value);
                }
                None => {
                    let mut acc = self.agg.create_accumulator();
                    self.agg.add(&mut acc, rec.value);
                    let bucket = bucket.id.clone();
                    if grouped {
                        keys.insert(key.clone(), self.partials.len());
                    }
                    self.partials.push(Record {
                        ts: rec.ts,
                        value: Partial {
                            key,
                            bucket,
                            acc,
                            records: 1,
                        },
                    });
                    if self.partials.len() >= LOCAL_PARTIALS_MAX {
                        r = self.flush(out);
                    }
                }
            }
        }
        r?;
        if !grouped {
            self.flush(out)?;
        }
        Ok(())
    }

    fn on_watermark(
        &mut self,
        wm: Watermark,
        _: &mut OperatorContext,
        out: &mut dyn Output<Partial<K, N, ACC>>,
    ) -> Result<()> {
        // Partials whose windows do not fire at `wm` can wait: none of them is late at it.
        if wm.0 >= self.due {
            self.flush(out)?;
        }
        out.watermark(wm)
    }

    fn on_status(
        &mut self,
        s: WatermarkStatus,
        _: &mut OperatorContext,
        out: &mut dyn Output<Partial<K, N, ACC>>,
    ) -> Result<()> {
        self.flush(out)?;
        out.status(s)
    }

    /// Nothing is held across a barrier: the partials go before it.
    fn snapshot(
        &mut self,
        _: &CheckpointBarrier,
        _: &mut OperatorContext,
        out: &mut dyn Output<Partial<K, N, ACC>>,
    ) -> Result<OperatorSnapshot> {
        self.flush(out)?;
        Ok(OperatorSnapshot::default())
    }

    fn on_flush(
        &mut self,
        _: &mut OperatorContext,
        out: &mut dyn Output<Partial<K, N, ACC>>,
    ) -> Result<()> {
        self.flush(out)
    }

    fn end_input(
        &mut self,
        _: &mut OperatorContext,
        out: &mut dyn Output<Partial<K, N, ACC>>,
    ) -> Result<()> {
        self.flush(out)
    }
}

/// A window operator that can take [`Partial`]s in place of records.
pub(crate) trait MergePartials<K, N, ACC> {
    /// Merges one partial aggregate into the state of its key and bucket; a partial whose
    /// bucket is late is dropped and counts its records as late.
    fn merge_partial(&mut self, p: Partial<K, N, ACC>, ctx: &mut OperatorContext) -> Result<()>;
    /// Brings the state entries of `pairs` (key, bucket) into the CPU cache.
    #[allow(clippy::ptr_arg)]
    fn touch(&self, pairs: &Vec<(K, N)>);
}

/// Runs `f` on `items` [`TOUCH_CHUNK`] at a time, the state entries of each chunk's (key,
/// bucket) pairs (`pair` of an item) touched first ([`MergePartials::touch`]): the cache
/// misses of a chunk overlap instead of costing a memory latency per item each. Empties
/// `items`; stops calling `f` at its first error.
pub(crate) fn in_touched_chunks<Op, K, N, ACC, I>(
    op: &mut Op,
    items: impl IntoIterator<Item = I>,
    pair: impl Fn(&I) -> (K, N),
    mut f: impl FnMut(&mut Op, I) -> Result<()>,
) -> Result<()>
where
    Op: MergePartials<K, N, ACC>,
{
    let mut items = items.into_iter().peekable();
    let mut chunk: Vec<I> = Vec::with_capacity(TOUCH_CHUNK);
    let mut pairs: Vec<(K, N)> = Vec::with_capacity(TOUCH_CHUNK);
    let mut r = Ok(());
    while items.peek().is_some() {
        chunk.extend(items.by_ref().take(TOUCH_CHUNK));
        pairs.extend(chunk.iter().map(&pair));
        op.touch(&pairs);
        pairs.clear();
        for item in chunk.drain(..) {
            if r.is_ok() {
                r = f(op, item);
            }
        }
    }
    r
}

/// Window operator `op` (of records `T`) fed [`Partial`]s by a [`LocalAggOp`].
pub(crate) struct Merging<Op, T> {
    pub op: Op,
    pub _t: PhantomData<fn() -> T>,
}

impl<K, N, ACC, T, R, Op> OneInputOperator<Partial<K, N, ACC>, R> for Merging<Op, T>
where
    Op: OneInputOperator<T, R> + MergePartials<K, N, ACC>,
    K: Clone + 'static,
    N: Clone + 'static,
    ACC: 'static,
    T: 'static,
    R: 'static,
{
    fn open(&mut self, ctx: &mut OperatorContext) -> Result<()> {
        self.op.open(ctx)
    }
    fn process(
        &mut self,
        rec: Record<Partial<K, N, ACC>>,
        ctx: &mut OperatorContext,
        _: &mut dyn Output<R>,
    ) -> Result<()> {
        self.op.merge_partial(rec.value, ctx)
    }
    fn process_batch(
        &mut self,
        batch: &mut Vec<Record<Partial<K, N, ACC>>>,
        ctx: &mut OperatorContext,
        _: &mut dyn Output<R>,
    ) -> Result<()> {
        in_touched_chunks(
            &mut self.op,
            batch.drain(..),
            |rec| (rec.value.key.clone(), rec.value.bucket.clone()),
            |op, rec| op.merge_partial(rec.value, ctx),
        )
    }
    fn on_watermark(
        &mut self,
        wm: Watermark,
        ctx: &mut OperatorContext,
        out: &mut dyn Output<R>,
    ) -> Result<()> {
        self.op.on_watermark(wm, ctx, out)
    }
    fn on_status(
        &mut self,
        s: WatermarkStatus,
        ctx: &mut OperatorContext,
        out: &mut dyn Output<R>,
    ) -> Result<()> {
        self.op.on_status(s, ctx, out)
    }
    fn on_processing_time(
        &mut self,
        now_ms: i64,
        ctx: &mut OperatorContext,
        out: &mut dyn Output<R>,
    ) -> Result<()> {
        self.op.on_processing_time(now_ms, ctx, out)
    }
    fn next_deadline(&mut self) -> Option<i64> {
        self.op.next_deadline()
    }
    fn on_wake(&mut self, ctx: &mut OperatorContext, out: &mut dyn Output<R>) -> Result<()> {
        self.op.on_wake(ctx, out)
    }
    fn snapshot(
        &mut self,
        b: &CheckpointBarrier,
        ctx: &mut OperatorContext,
        out: &mut dyn Output<R>,
    ) -> Result<OperatorSnapshot> {
        self.op.snapshot(b, ctx, out)
    }
    fn notify_checkpoint_complete(&mut self, id: u64, ctx: &mut OperatorContext) -> Result<()> {
        self.op.notify_checkpoint_complete(id, ctx)
    }
    fn on_flush(&mut self, ctx: &mut OperatorContext, out: &mut dyn Output<R>) -> Result<()> {
        self.op.on_flush(ctx, out)
    }
    fn end_input(&mut self, ctx: &mut OperatorContext, out: &mut dyn Output<R>) -> Result<()> {
        self.op.end_input(ctx, out)
    }
}
