//! Windows: group a keyed stream's records by time or count and emit one result per key and
//! window, with Flink's semantics (assigners, triggers, allowed lateness, late-data side output).
//!
//! ```
//! use weir::prelude::*;
//! use weir::windows::Tumbling;
//! let env = StreamEnv::new().with_parallelism(1);
//! let out = CollectSink::new();
//! // (sensor, event time ms)
//! env.from_collection(vec![(1u32, 1i64), (1, 1_500), (1, 1_600), (2, 2_000)])
//!     .assign_timestamps(WatermarkStrategy::monotonous().with_timestamps(|e: &(u32, i64), _| e.1))
//!     .key_by(|e: &(u32, i64)| e.0)
//!     .window(Tumbling::event_time(1_000))
//!     .aggregate_with(weir::windows::Count, |k: &u32, w: &weir::windows::TimeWindow, n: u64| (*k, w.start, n))
//!     .sink(out.clone());
//! env.execute("count per second").unwrap();
//! let mut v = out.values();
//! v.sort();
//! assert_eq!(v, vec![(1, 0, 1), (1, 1_000, 2), (2, 2_000, 1)]);
//! ```
mod assigners;
mod local;
mod minibatch;
mod operator;
mod slicing;
mod triggers;

pub use slicing::Slices;

pub use assigners::{
    merge_time_windows, window_start, GlobalWindow, GlobalWindows, Session, Sliding, TimeKind,
    TimeWindow, Tumbling, Window, WindowAssigner,
};
pub use triggers::{
    ContinuousEventTimeTrigger, ContinuousProcessingTimeTrigger, CountTrigger, EventTimeTrigger,
    NeverTrigger, ProcessingTimeTrigger, PurgingTrigger, Trigger, TriggerContext, TriggerResult,
};

use crate::functions::{Collector, FnResult};
use crate::operators::keyed::KeyFn;
use crate::stream::{DataStream, KeyedStream, OutputTag};
use local::{Bucket, BucketFn, LocalAggOp, MergePartials, Merging, Partial};
use operator::{KeepLast, WindowOp};
use slicing::SlicingOp;
use std::sync::Arc;
use std::time::Duration;
use weir_runtime::OperatorContext;
use weir_state::AggregateFunction;
use weir_types::{Data, Key, Record};

/// An operator's `state_entries` gauge, refreshed on watermarks and timers at most every
/// [`StateGauge::EVERY`] of wall-clock time (and always when asked to be exact).
///
/// Counting a store's entries is not free: while an asynchronous snapshot still holds a
/// copy-on-write table, its length costs the writes since the freeze. Recounting on every
/// watermark (every millisecond with a 1 ms watermark interval) made windows and joins spend
/// most of their time counting.
pub(crate) struct StateGauge {
    gauge: weir_types::metrics::Gauge,
    last: Option<std::time::Instant>,
}

impl StateGauge {
    /// The least time between two counts that are not forced.
    pub const EVERY: Duration = Duration::from_millis(50);

    pub fn new(ctx: &OperatorContext) -> Self {
        StateGauge {
            gauge: ctx.metrics.gauge(&ctx.name, ctx.subtask, "state_entries"),
            last: None,
        }
    }

    /// Sets the gauge to `count()` if `exact` or if the last count is older than
    /// [`StateGauge::EVERY`].
    pub fn report(&mut self, exact: bool, count: impl FnOnce() -> usize) {
        let now = std::time::Instant::now();
        if !exact
            && self
                .last
                .is_some_and(|t| now.duration_since(t) < Self::EVERY)
        {
            return;
        }
        self.last = Some(now);
        self.gauge.set(count() as i64);
    }
}

/// What a window function sees besides the key, the window and the input.
pub struct WindowContext<'a> {
    pub(crate) op: &'a mut OperatorContext,
}

impl WindowContext<'_> {
    /// The operator's watermark.
    pub fn current_watermark(&self) -> i64 {
        self.op.watermark
    }
    /// Processing time now.
    pub fn current_processing_time(&self) -> i64 {
        self.op.clock.now_ms()
    }
    /// Emits to a side output.
    pub fn output<S: Data>(
        &mut self,
        tag: &OutputTag<S>,
        value: S,
        ts: i64,
    ) -> weir_types::Result<()> {
        self.op.side_outputs.emit(tag.id(), Record { ts, value })
    }
}

/// Turns a window's aggregate (or all its records) into output, with the key and window.
/// Closures `|key, window, input| -> output` implement it.
pub trait ProcessWindowFunction<K, IN, OUT, W>: Clone + Send + Sync + 'static {
    /// Called when the window fires.
    fn process(
        &mut self,
        key: &K,
        window: &W,
        input: IN,
        ctx: &mut WindowContext<'_>,
        out: &mut Collector<'_, OUT>,
    ) -> FnResult;
}

impl<K, IN, OUT, W, F> ProcessWindowFunction<K, IN, OUT, W> for F
where
    F: FnMut(&K, &W, IN) -> OUT + Clone + Send + Sync + 'static,
{
    fn process(
        &mut self,
        key: &K,
        window: &W,
        input: IN,
        _: &mut WindowContext<'_>,
        out: &mut Collector<'_, OUT>,
    ) -> FnResult {
        out.collect(self(key, window, input));
        Ok(())
    }
}

/// Passes the aggregate through.
#[derive(Clone, Copy)]
struct Identity;
impl<K, IN, W> ProcessWindowFunction<K, IN, IN, W> for Identity {
    fn process(
        &mut self,
        _: &K,
        _: &W,
        input: IN,
        _: &mut WindowContext<'_>,
        out: &mut Collector<'_, IN>,
    ) -> FnResult {
        out.collect(input);
        Ok(())
    }
}

/// Counts records.
#[derive(Clone, Copy, Debug, Default)]
pub struct Count;
impl<T> AggregateFunction<T, u64, u64> for Count {
    fn create_accumulator(&self) -> u64 {
        0
    }
    fn add(&self, acc: &mut u64, _: T) {
        *acc += 1
    }
    fn get_result(&self, acc: &u64) -> u64 {
        *acc
    }
    fn merge(&self, acc: &mut u64, o: u64) {
        *acc += o
    }
}

struct ReduceAgg<F>(F);
impl<T: Clone, F: Fn(T, T) -> T + Send + Sync + 'static> AggregateFunction<T, Option<T>, T>
    for ReduceAgg<F>
{
    fn create_accumulator(&self) -> Option<T> {
        None
    }
    fn add(&self, acc: &mut Option<T>, v: T) {
        *acc = Some(match acc.take() {
            None => v,
            Some(a) => (self.0)(a, v),
        });
    }
    fn get_result(&self, acc: &Option<T>) -> T {
        acc.clone()
            .expect("a window with contents has a reduced value")
    }
    fn merge(&self, acc: &mut Option<T>, o: Option<T>) {
        if let Some(v) = o {
            self.add(acc, v)
        }
    }
}

struct ListAgg;
impl<T: Clone> AggregateFunction<T, Vec<T>, Vec<T>> for ListAgg {
    fn create_accumulator(&self) -> Vec<T> {
        Vec::new()
    }
    fn add(&self, acc: &mut Vec<T>, v: T) {
        acc.push(v)
    }
    fn get_result(&self, acc: &Vec<T>) -> Vec<T> {
        acc.clone()
    }
    fn merge(&self, acc: &mut Vec<T>, o: Vec<T>) {
        acc.extend(o)
    }
}

/// A keyed stream cut into windows. Finish it with `reduce`, `aggregate`, `aggregate_with` or
/// `process`.
pub struct WindowedStream<T, K, A: WindowAssigner<T>> {
    keyed: KeyedStream<T, K>,
    assigner: Arc<A>,
    trigger: Option<Arc<dyn Trigger<A::W>>>,
    lateness_ms: i64,
    late_tag: Option<String>,
    keep_last: Option<usize>,
    single: bool,
    slicing: bool,
    local: bool,
}

impl<T: Data, K: Key> KeyedStream<T, K> {
    /// Windows per key.
    pub fn window<A: WindowAssigner<T>>(&self, assigner: A) -> WindowedStream<T, K, A> {
        WindowedStream {
            keyed: self.clone(),
            assigner: Arc::new(assigner),
            trigger: None,
            lateness_ms: 0,
            late_tag: None,
            keep_last: None,
            single: false,
            slicing: false,
            local: false,
        }
    }
    /// Tumbling count windows: fire and clear every `size` records of a key.
    pub fn count_window(&self, size: u64) -> WindowedStream<T, K, GlobalWindows> {
        self.window(GlobalWindows)
            .trigger(PurgingTrigger(Arc::new(CountTrigger(size))))
    }
    /// Sliding count windows: every `slide` records, fire over the last `size` records.
    pub fn count_window_sliding(
        &self,
        size: u64,
        slide: u64,
    ) -> WindowedStream<T, K, GlobalWindows> {
        let mut w = self.window(GlobalWindows).trigger(CountTrigger(slide));
        w.keep_last = Some(size as usize);
        w
    }
}

impl<T: Data> DataStream<T> {
    /// Windows over the whole stream (not keyed): one window operator subtask, as Flink's
    /// `windowAll`.
    pub fn window_all<A: WindowAssigner<T>>(&self, assigner: A) -> WindowedStream<T, (), A> {
        let mut w = self.key_by(|_| ()).window(assigner);
        w.single = true;
        w
    }
}

fn ms(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

impl<T: Data, K: Key, A: WindowAssigner<T>> WindowedStream<T, K, A> {
    /// Fires with `trigger` instead of the assigner's default.
    pub fn trigger(mut self, trigger: impl Trigger<A::W>) -> Self {
        self.trigger = Some(Arc::new(trigger));
        self
    }
    /// Keeps windows `lateness` past their end: a late record within it updates the window and
    /// fires it again.
    pub fn allowed_lateness(mut self, lateness: Duration) -> Self {
        self.lateness_ms = ms(lateness);
        self
    }
    /// Sends records too late for every window to the side output `tag` (otherwise they are
    /// counted in `late_records_dropped`).
    pub fn side_output_late_data(mut self, tag: &OutputTag<T>) -> Self {
        self.late_tag = Some(tag.id().to_string());
        self
    }
    /// Also emits the current result every `interval` before the window closes (early results),
    /// in the assigner's time.
    ///
    /// Panics if `interval` is under 1 ms: Flink's continuous triggers have no meaning for it
    /// (their first fire time divides by the interval, and the job fails).
    pub fn early_fire_every(self, interval: Duration) -> Self {
        let i = ms(interval);
        assert!(i > 0, "early-firing interval must be at least 1 ms");
        match self.assigner.time_kind() {
            TimeKind::Event => self.trigger(ContinuousEventTimeTrigger(i)),
            TimeKind::Processing => self.trigger(ContinuousProcessingTimeTrigger(i)),
        }
    }

    /// Computes sliding windows by slices, as Flink SQL's window aggregation does: each record
    /// updates one accumulator (its slice of `slide` ms) instead of one per window it belongs
    /// to (`size / slide` of them), and a window's result is the merge of its slices' when it
    /// fires. Much faster for many windows per record; the aggregate's `merge` must be exact
    /// (counts, integer sums, min, max; float sums may differ in the last bits from adding
    /// record by record). Applies to sliding windows whose size is a multiple of the slide,
    /// with the default trigger, no allowed lateness and an incremental aggregate (`reduce`,
    /// `aggregate`); otherwise ignored.
    pub fn with_slicing(mut self) -> Self {
        self.slicing = true;
        self
    }

    /// Aggregates each batch of records locally, in the upstream task, before the keyed
    /// exchange (the two-phase, local-global aggregation of Flink SQL's window aggregates): one
    /// partial accumulator per key and window (or slice) of a batch crosses the exchange instead
    /// of its records, and the window operator merges it in. Much faster when a batch holds
    /// several records per key; when it does not, records go on as partials of one. Needs an
    /// exact `merge`, as [`Self::with_slicing`]. Applies to event-time tumbling windows and
    /// sliced sliding windows with the default trigger, no allowed lateness, no late-data side
    /// output and an incremental aggregate (`reduce`, `aggregate`); otherwise ignored. Adds an
    /// operator to the job (`NAME_local`, chained after the upstream): operators without an
    /// explicit `uid` after it get new default uids.
    pub fn with_local_aggregation(mut self) -> Self {
        self.local = true;
        self
    }

    /// Whether [`Self::with_local_aggregation`] applies, for an operator taking records of
    /// the default trigger's windows (or slices).
    fn local_applies(&self, name: &str) -> bool {
        self.local
            && self.trigger.is_none()
            && self.lateness_ms == 0
            && self.late_tag.is_none()
            && self.keep_last.is_none()
            && name != "window_process"
            && self.assigner.time_kind() == TimeKind::Event
    }

    /// The local stage ([`LocalAggOp`]) of `bucket`s, then the keyed exchange of its partials
    /// into the window operator `make` builds, fed partials ([`Merging`]).
    fn build_two_phase<N, ACC, AOUT, R, Op>(
        &self,
        name: &str,
        bucket: BucketFn<N>,
        agg: Arc<dyn AggregateFunction<T, ACC, AOUT>>,
        make: impl Fn(&OperatorContext) -> weir_types::Result<Op> + Send + Sync + 'static,
    ) -> DataStream<R>
    where
        N: Data + std::hash::Hash + Eq,
        ACC: Data,
        AOUT: 'static,
        R: Data,
        Op: weir_runtime::OneInputOperator<T, R> + MergePartials<K, N, ACC>,
    {
        let key = self.keyed.key_fn();
        let partials = self
            .keyed
            .stream()
            .add_chained_operator(&format!("{name}_local"), move |_| {
                Ok(LocalAggOp::new(key.clone(), bucket.clone(), agg.clone()))
            });
        partials
            .key_by(|p: &Partial<K, N, ACC>| p.key.clone())
            .stream()
            .add_operator(name, move |ctx| {
                Ok(Merging {
                    op: make(ctx)?,
                    _t: std::marker::PhantomData,
                })
            })
    }

    fn build<ACC: Data, AOUT: 'static, R: Data>(
        self,
        name: &str,
        agg: Arc<dyn AggregateFunction<T, ACC, AOUT>>,
        func: impl ProcessWindowFunction<K, AOUT, R, A::W>,
    ) -> DataStream<R> {
        let key: KeyFn<T, K> = self.keyed.key_fn();
        let sliced = self.assigner.slices().filter(|_| {
            self.slicing
                && self.trigger.is_none()
                && self.lateness_ms == 0
                && self.keep_last.is_none()
                && name != "window_process"
        });
        if let Some(slices) = sliced {
            let late = self.late_tag.clone();
            let (key, agg2) = (key.clone(), agg.clone());
            let make = move |ctx: &OperatorContext| {
                SlicingOp::new(
                    ctx,
                    key.clone(),
                    slices,
                    agg2.clone(),
                    func.clone(),
                    late.clone(),
                )
            };
            let s = if self.local_applies(name) {
                // A slice is first needed by the window that ends with it.
                let bucket: BucketFn<i64> = Arc::new(move |ts| {
                    let s = window_start(ts, slices.offset, slices.slide);
                    let last_ts = s.saturating_add(slices.slide - 1);
                    Bucket {
                        id: s,
                        first_ts: s,
                        last_ts,
                        due: last_ts,
                    }
                });
                self.build_two_phase(name, bucket, agg, make)
            } else {
                self.keyed.stream().add_operator(name, make)
            };
            return if self.single { s.set_parallelism(1) } else { s };
        }
        let trigger = self
            .trigger
            .clone()
            .unwrap_or_else(|| self.assigner.default_trigger());
        let (assigner, lateness, late) = (
            self.assigner.clone(),
            self.lateness_ms,
            self.late_tag.clone(),
        );
        let agg2 = agg.clone();
        let make = move |ctx: &OperatorContext| {
            WindowOp::new(
                ctx,
                key.clone(),
                assigner.clone(),
                trigger.clone(),
                agg2.clone(),
                func.clone(),
                lateness,
                late.clone(),
            )
        };
        let s = if self.local_applies(name) && self.assigner.event_window_of(0).is_some() {
            let assigner = self.assigner.clone();
            let bucket: BucketFn<A::W> = Arc::new(move |ts| {
                let (w, first_ts) = assigner
                    .event_window_of(ts)
                    .expect("a single-window event-time assigner");
                let last_ts = w.max_timestamp();
                Bucket {
                    id: w,
                    first_ts,
                    last_ts,
                    due: last_ts,
                }
            });
            self.build_two_phase(name, bucket, agg, make)
        } else {
            self.keyed.stream().add_operator(name, make)
        };
        if self.single {
            s.set_parallelism(1)
        } else {
            s
        }
    }

    fn build_agg<ACC: Data, AOUT: Data, R: Data>(
        self,
        name: &str,
        agg: Arc<dyn AggregateFunction<T, ACC, AOUT>>,
        func: impl ProcessWindowFunction<K, AOUT, R, A::W>,
    ) -> DataStream<R> {
        match self.keep_last {
            Some(keep) => {
                let wrapped: Arc<dyn AggregateFunction<T, std::collections::VecDeque<T>, AOUT>> =
                    Arc::new(KeepLast { inner: agg, keep });
                self.build(name, wrapped, func)
            }
            None => self.build(name, agg, func),
        }
    }

    /// Reduces each window's records with `f` (O(1) state per key and window).
    pub fn reduce(self, f: impl Fn(T, T) -> T + Send + Sync + 'static) -> DataStream<T> {
        self.build_agg("window_reduce", Arc::new(ReduceAgg(f)), Identity)
    }
    /// Reduces, then hands the result to a window function with the key and window.
    pub fn reduce_with<R: Data>(
        self,
        f: impl Fn(T, T) -> T + Send + Sync + 'static,
        func: impl ProcessWindowFunction<K, T, R, A::W>,
    ) -> DataStream<R> {
        self.build_agg("window_reduce", Arc::new(ReduceAgg(f)), func)
    }
    /// Aggregates incrementally (O(1) state per key and window).
    pub fn aggregate<ACC: Data, AOUT: Data>(
        self,
        agg: impl AggregateFunction<T, ACC, AOUT>,
    ) -> DataStream<AOUT> {
        self.build_agg("window_aggregate", Arc::new(agg), Identity)
    }
    /// Aggregates incrementally, then hands the result to a window function with the key and
    /// window (Flink's aggregate + ProcessWindowFunction).
    pub fn aggregate_with<ACC: Data, AOUT: Data, R: Data>(
        self,
        agg: impl AggregateFunction<T, ACC, AOUT>,
        func: impl ProcessWindowFunction<K, AOUT, R, A::W>,
    ) -> DataStream<R> {
        self.build_agg("window_aggregate", Arc::new(agg), func)
    }
    /// Hands all records of the window to `func` (keeps every record until the window fires).
    pub fn process<R: Data>(
        self,
        func: impl ProcessWindowFunction<K, Vec<T>, R, A::W>,
    ) -> DataStream<R> {
        self.build_agg("window_process", Arc::new(ListAgg), func)
    }
}
