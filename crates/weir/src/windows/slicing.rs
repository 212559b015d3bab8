//! Sliding windows by slices (panes): each record is added once, to the slice of `slide` ms that
//! holds it, and a window's result is the merge of its `size / slide` slices when it fires — the
//! technique of Flink SQL's window aggregation, against one state update per window a record
//! belongs to in the general operator ([`super::operator::WindowOp`]).
//!
//! Chosen with [`super::WindowedStream::with_slicing`] for sliding windows whose size is a
//! multiple of the slide, with the default trigger and no allowed lateness. Results equal the
//! general operator's when the aggregate's `merge` is exact (counts, integer sums, min, max).
//!
//! State: one accumulator per key and slice (namespace = slice start). Timers: per key, one at
//! the end of the next window to fire (namespace = window end); firing window `[e − size, e)`
//! emits the merge of its slices, drops the slice `e − size` (no later window holds it) and
//! registers the next window's end while any of the key's slices remain. A new slice registers
//! the first window end holding it that is not late yet; later records of the slice register
//! nothing (the chain reaches every window of the slice).
use crate::functions::{user_result, Collector};
use crate::operators::keyed::KeyFn;
use crate::windows::assigners::{window_start, TimeKind, Window};
use crate::windows::local::{MergePartials, Partial, NO_TIMESTAMP_ERROR};
use crate::windows::minibatch::BatchAccs;
use crate::windows::StateGauge;
use crate::windows::{ProcessWindowFunction, WindowContext};
use std::sync::Arc;
use weir_runtime::checkpoint::{CheckpointBarrier, OperatorSnapshot};
use weir_runtime::{OneInputOperator, OperatorContext, Output};
use weir_state::{AggregateFunction, AggregatingState, KeyedStateStore, TimerService};
use weir_types::metrics::Counter;
use weir_types::{Data, Key, Record, Result, Watermark, WeirError, NO_TIMESTAMP};

/// The slicing of an aligned sliding assigner: windows `[s, s + size)` for every `s ≡ offset
/// (mod slide)`, `size` a multiple of `slide`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slices {
    /// Window size (ms).
    pub size: i64,
    /// Slide (ms): the slice length.
    pub slide: i64,
    /// Offset of window starts (ms, in `[0, slide)`).
    pub offset: i64,
    /// Event or processing time.
    pub kind: TimeKind,
}

/// The end of the first window holding `slice` that is not late at watermark `wm` (its end − 1
/// above `wm`); past `slice + size` when every window holding it is late.
fn first_end(slices: &Slices, slice: i64, wm: i64) -> i64 {
    let slide = slices.slide;
    let end = slice.saturating_add(slide);
    if slices.kind == TimeKind::Event && end - 1 <= wm {
        // The smallest `slice + j·slide` above `wm + 1`.
        let behind = wm.saturating_add(1) - slice;
        slice.saturating_add((behind / slide + 1).saturating_mul(slide))
    } else {
        end
    }
}

/// Registers `key`'s timer for the window ending at `end` (at `end − 1`, namespace `end`).
fn register_end<K: Key>(timers: &mut TimerService<K, i64>, kind: TimeKind, key: &K, end: i64) {
    let q = if kind == TimeKind::Event {
        &mut timers.event
    } else {
        &mut timers.processing
    };
    q.register(end - 1, key, &end);
}

pub(crate) struct SlicingOp<K: Key, T, W, ACC, AOUT, R, F> {
    pub key: KeyFn<T, K>,
    pub slices: Slices,
    pub agg: Arc<dyn AggregateFunction<T, ACC, AOUT>>,
    pub func: F,
    pub late_tag: Option<String>,
    pub store: KeyedStateStore<K>,
    pub timers: TimerService<K, i64>,
    pub contents: AggregatingState<T, ACC, AOUT, i64>,
    /// The accumulators of the batch being processed, per key and slice ([`BatchAccs`]).
    pub minibatch: BatchAccs<K, i64, ACC>,
    pub late_dropped: Counter,
    pub state_entries: StateGauge,
    pub _w: std::marker::PhantomData<fn() -> (W, R)>,
}

impl<K, T, W, ACC, AOUT, R, F> SlicingOp<K, T, W, ACC, AOUT, R, F>
where
    K: Key,
    T: Data,
    W: Window,
    ACC: Data,
    AOUT: 'static,
    R: 'static,
    F: ProcessWindowFunction<K, AOUT, R, W>,
{
    pub fn new(
        ctx: &OperatorContext,
        key: KeyFn<T, K>,
        slices: Slices,
        agg: Arc<dyn AggregateFunction<T, ACC, AOUT>>,
        func: F,
        late_tag: Option<String>,
    ) -> Result<Self> {
        assert!(
            slices.slide > 0 && slices.size > slices.slide && slices.size % slices.slide == 0,
            "slicing needs a size that is a multiple of the slide"
        );
        let mut store = crate::operators::keyed::restored_store(ctx)?;
        let cfg = |e: weir_state::StateError| WeirError::Config(e.to_string());
        let contents = AggregatingState::register(&mut store, "window-slices", agg.clone(), None)
            .map_err(cfg)?;
        let mut timers = TimerService::default();
        timers
            .restore(&store.take_restored_timers())
            .map_err(|e| ctx.operator_error(format!("restoring timers: {e}")))?;
        Ok(SlicingOp {
            key,
            slices,
            agg,
            func,
            late_tag,
            store,
            timers,
            contents,
            minibatch: BatchAccs::for_backend(&*ctx.state_backend),
            late_dropped: ctx.counter("late_records_dropped"),
            state_entries: StateGauge::new(ctx),
            _w: std::marker::PhantomData,
        })
    }

    fn event_time(&self) -> bool {
        self.slices.kind == TimeKind::Event
    }

    fn register(&mut self, end: i64) {
        let k = self.store.current_key().expect("a current key").clone();
        register_end(&mut self.timers, self.slices.kind, &k, end);
    }

    /// Fires window `[end − size, end)` of `key`, drops its first slice and chains the next
    /// window while slices remain.
    fn fire(
        &mut self,
        key: K,
        end: i64,
        ctx: &mut OperatorContext,
        out: &mut dyn Output<R>,
    ) -> Result<()> {
        self.store.set_current_key(key);
        let Slices { size, slide, .. } = self.slices;
        let start = end - size;
        let mut acc: Option<ACC> = None;
        let mut later = false;
        let mut s = start;
        while s < end {
            if let Some(a) = self.contents.accumulator_in(&mut self.store, &s) {
                later |= s > start;
                match &mut acc {
                    None => acc = Some(a),
                    Some(m) => self.agg.merge(m, a),
                }
            }
            s += slide;
        }
        self.contents.clear_in(&mut self.store, &start);
        if later {
            self.register(end + slide);
        }
        let Some(acc) = acc else {
            return Ok(());
        };
        let w = W::from_bounds(start, end).expect("sliced windows are time windows");
        let result = self.agg.get_result(&acc);
        let key = self.store.current_key().expect("a current key").clone();
        let mut c = Collector::new(out, w.max_timestamp());
        let r = self
            .func
            .process(&key, &w, result, &mut WindowContext { op: ctx }, &mut c);
        c.finish()?;
        user_result(r, ctx)
    }

    /// The record's slice, with its value; `None` when every window holding the slice is late
    /// (the record went to the late-data side output or was counted).
    fn live_slice(
        &mut self,
        rec: Record<T>,
        ctx: &mut OperatorContext,
    ) -> Result<Option<(T, i64)>> {
        let Slices {
            size,
            slide,
            offset,
            ..
        } = self.slices;
        let t = if self.event_time() {
            if rec.ts == NO_TIMESTAMP {
                return Err(ctx.record_error(NO_TIMESTAMP_ERROR));
            }
            rec.ts
        } else {
            ctx.clock.now_ms()
        };
        let slice = window_start(t, offset, slide);
        if self.event_time() && self.first_end(slice, ctx.watermark) > slice.saturating_add(size) {
            // Every window of the record is late.
            match &self.late_tag {
                Some(tag) => ctx.side_outputs.emit(tag, rec)?,
                None => self.late_dropped.inc(),
            }
            return Ok(None);
        }
        Ok(Some((rec.value, slice)))
    }

    fn first_end(&self, slice: i64, wm: i64) -> i64 {
        first_end(&self.slices, slice, wm)
    }

    fn report_state(&mut self, exact: bool) {
        let (store, timers) = (&self.store, &self.timers);
        self.state_entries.report(exact, || {
            store.total_entries() + timers.event.len() + timers.processing.len()
        });
    }
}

impl<K, T, W, ACC, AOUT, R, F> MergePartials<K, i64, ACC> for SlicingOp<K, T, W, ACC, AOUT, R, F>
where
    K: Key,
    T: Data,
    W: Window,
    ACC: Data,
    AOUT: 'static,
    R: 'static,
    F: ProcessWindowFunction<K, AOUT, R, W>,
{
    /// A partial aggregate of one slice (event time).
    fn merge_partial(&mut self, p: Partial<K, i64, ACC>, ctx: &mut OperatorContext) -> Result<()> {
        debug_assert!(self.event_time());
        self.store.thaw_when_released();
        let slice = p.bucket;
        let end = self.first_end(slice, ctx.watermark);
        if end > slice.saturating_add(self.slices.size) {
            // Every window of the slice is late.
            self.late_dropped.add(p.records);
            return Ok(());
        }
        self.store.set_current_key(p.key);
        if self.contents.merge_in(&mut self.store, &slice, p.acc) {
            self.register(end);
        }
        Ok(())
    }
    fn touch(&self, pairs: &Vec<(K, i64)>) {
        std::hint::black_box(self.contents.touch_all_in(&self.store, pairs));
    }
}

impl<K, T, W, ACC, AOUT, R, F> OneInputOperator<T, R> for SlicingOp<K, T, W, ACC, AOUT, R, F>
where
    K: Key,
    T: Data,
    W: Window,
    ACC: Data,
    AOUT: 'static,
    R: Data,
    F: ProcessWindowFunction<K, AOUT, R, W>,
{
    fn snapshot(
        &mut self,
        b: &CheckpointBarrier,
        ctx: &mut OperatorContext,
        _: &mut dyn Output<R>,
    ) -> Result<OperatorSnapshot> {
        crate::operators::keyed::keyed_snapshot(&mut self.store, &self.timers, b, ctx)
    }
    fn notify_checkpoint_complete(&mut self, id: u64, _: &mut OperatorContext) -> Result<()> {
        self.store.checkpoint_complete(id);
        Ok(())
    }

    fn process(
        &mut self,
        rec: Record<T>,
        ctx: &mut OperatorContext,
        _: &mut dyn Output<R>,
    ) -> Result<()> {
        self.store.thaw_when_released();
        let Some((value, slice)) = self.live_slice(rec, ctx)? else {
            return Ok(());
        };
        self.store.set_current_key((self.key)(&value));
        // A slice that already holds records has a pending timer at a window end holding it
        // (registered when it got its first record, then chained window by window until its
        // last window), so only a new slice registers one.
        if self.contents.add_in(&mut self.store, &slice, value) {
            self.register(self.first_end(slice, ctx.watermark));
        }
        Ok(())
    }

    /// Per key and slice, one state read and one write per batch ([`BatchAccs`]).
    fn process_batch(
        &mut self,
        batch: &mut Vec<Record<T>>,
        ctx: &mut OperatorContext,
        out: &mut dyn Output<R>,
    ) -> Result<()> {
        if !self.minibatch.use_for_batch(batch.len()) {
            return weir_types::drain_each(batch, |rec| self.process(rec, ctx, out));
        }
        self.store.thaw_when_released();
        let agg = self.agg.clone();
        let n = batch.len();
        let r = weir_types::drain_each(batch, |rec| {
            let Some((value, slice)) = self.live_slice(rec, ctx)? else {
                return Ok(());
            };
            let key = (self.key)(&value);
            self.minibatch
                .add(&mut self.store, &self.contents, &*agg, &key, &slice, value);
            Ok(())
        });
        // Back into the store; the new slices' timers in the order the records opened them.
        let wm = ctx.watermark;
        let (slices, timers) = (self.slices, &mut self.timers);
        self.minibatch
            .put_back(n, &mut self.store, &self.contents, |k, &slice| {
                register_end(timers, slices.kind, k, first_end(&slices, slice, wm))
            });
        r
    }

    fn on_watermark(
        &mut self,
        wm: Watermark,
        ctx: &mut OperatorContext,
        out: &mut dyn Output<R>,
    ) -> Result<()> {
        while let Some((_, key, end)) = self.timers.event.pop_due(wm.0) {
            self.fire(key, end, ctx, out)?;
        }
        self.report_state(wm.0 == i64::MAX);
        out.watermark(wm)
    }

    fn next_deadline(&mut self) -> Option<i64> {
        self.timers.processing.next_time()
    }

    fn on_processing_time(
        &mut self,
        now: i64,
        ctx: &mut OperatorContext,
        out: &mut dyn Output<R>,
    ) -> Result<()> {
        while let Some((_, key, end)) = self.timers.processing.pop_due(now) {
            self.fire(key, end, ctx, out)?;
        }
        self.report_state(false);
        Ok(())
    }

    fn end_input(&mut self, _: &mut OperatorContext, _: &mut dyn Output<R>) -> Result<()> {
        self.report_state(true);
        Ok(())
    }
}
