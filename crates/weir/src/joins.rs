//! Joins of two streams on a key: within windows (`join`), or within a time interval of each
//! other (`interval_join`), with Flink's semantics.
//!
//! - Window join: every pair `(a, b)` with equal keys in the same window, emitted when the
//!   window fires; built as Flink builds it, from a tagged union of both streams windowed by
//!   key, so assigners, triggers and lateness all apply.
//! - Interval join: every pair with equal keys and `a.ts + lower ≤ b.ts ≤ a.ts + upper`,
//!   emitted as soon as both sides are there, with timestamp `max(a.ts, b.ts)`. Each side is
//!   buffered until the watermark passes the last time it can still match, then dropped;
//!   records behind the watermark are late (dropped and counted, or sent to a side output).
use crate::functions::{Collector, FnResult};
use crate::operators::keyed::KeyFn;
use crate::stream::{DataStream, KeyedStream, OutputTag};
use crate::windows::StateGauge;
use crate::windows::{
    ProcessWindowFunction, Window, WindowAssigner, WindowContext, WindowedStream,
};
use serde::{Deserialize, Serialize};
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;
use weir_runtime::checkpoint::{CheckpointBarrier, OperatorSnapshot};
use weir_runtime::two_input::TwoInputNode;
use weir_runtime::{OperatorContext, Output, TwoInputOperator};
use weir_state::{KeyedStateStore, MapState, TimerService};
use weir_types::metrics::Counter;
use weir_types::{Data, Key, Record, Result, Watermark, WeirError};

/// A record of either side of a join.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Either<A, B> {
    /// From the first stream.
    Left(A),
    /// From the second stream.
    Right(B),
}

/// Two streams to join on a key (Flink's `a.join(b).where(..).equalTo(..)`).
pub struct JoinedStreams<A, B, K> {
    a: DataStream<A>,
    b: DataStream<B>,
    ka: KeyFn<A, K>,
    kb: KeyFn<B, K>,
}

impl<A: Data> DataStream<A> {
    /// Starts a window join with `other`: `key_a` and `key_b` give each side's key.
    pub fn join<B: Data, K: Key>(
        &self,
        other: &DataStream<B>,
        key_a: impl Fn(&A) -> K + Send + Sync + 'static,
        key_b: impl Fn(&B) -> K + Send + Sync + 'static,
    ) -> JoinedStreams<A, B, K> {
        JoinedStreams {
            a: self.clone(),
            b: other.clone(),
            ka: Arc::new(key_a),
            kb: Arc::new(key_b),
        }
    }
}

impl<A: Data, B: Data, K: Key> JoinedStreams<A, B, K> {
    /// Joins within the windows of `assigner`; finish with `apply` (or configure the windowed
    /// stream further with `windowed`).
    pub fn window<W: WindowAssigner<Either<A, B>>>(&self, assigner: W) -> WindowJoin<A, B, K, W> {
        let left = self.a.map(Either::Left).name("join_left");
        let right = self.b.map(Either::Right).name("join_right");
        let (ka, kb) = (self.ka.clone(), self.kb.clone());
        let keyed = left
            .union(&[right])
            .key_by(move |e: &Either<A, B>| match e {
                Either::Left(a) => ka(a),
                Either::Right(b) => kb(b),
            });
        WindowJoin {
            windowed: keyed.window(assigner),
        }
    }
}

/// A window join being configured.
pub struct WindowJoin<A, B, K, W: WindowAssigner<Either<A, B>>> {
    windowed: WindowedStream<Either<A, B>, K, W>,
}

struct CrossJoin<F, A, B, R> {
    f: F,
    _p: PhantomData<fn(A, B) -> R>,
}

impl<F: Clone, A, B, R> Clone for CrossJoin<F, A, B, R> {
    fn clone(&self) -> Self {
        CrossJoin {
            f: self.f.clone(),
            _p: PhantomData,
        }
    }
}

impl<K, W, A: Data, B: Data, R, F> ProcessWindowFunction<K, Vec<Either<A, B>>, R, W>
    for CrossJoin<F, A, B, R>
where
    F: Fn(&A, &B) -> R + Clone + Send + Sync + 'static,
    R: 'static,
    K: 'static,
    W: 'static,
{
    fn process(
        &mut self,
        _: &K,
        _: &W,
        input: Vec<Either<A, B>>,
        _: &mut WindowContext<'_>,
        out: &mut Collector<'_, R>,
    ) -> FnResult {
        let (mut ls, mut rs) = (Vec::new(), Vec::new());
        for e in input {
            match e {
                Either::Left(a) => ls.push(a),
                Either::Right(b) => rs.push(b),
            }
        }
        for a in &ls {
            for b in &rs {
                out.collect((self.f)(a, b));
            }
        }
        Ok(())
    }
}

impl<A: Data, B: Data, K: Key, W: WindowAssigner<Either<A, B>>> WindowJoin<A, B, K, W> {
    /// Configures the underlying windowed stream (trigger, allowed lateness).
    pub fn windowed(
        mut self,
        f: impl FnOnce(WindowedStream<Either<A, B>, K, W>) -> WindowedStream<Either<A, B>, K, W>,
    ) -> Self {
        self.windowed = f(self.windowed);
        self
    }
    /// Emits `f(a, b)` for every pair of the same key and window.
    pub fn apply<R: Data>(
        self,
        f: impl Fn(&A, &B) -> R + Clone + Send + Sync + 'static,
    ) -> DataStream<R>
    where
        W::W: Window,
    {
        self.windowed
            .process(CrossJoin { f, _p: PhantomData })
            .name("window_join")
    }
}

/// An interval join being configured (Flink's `intervalJoin(..).between(..)`).
pub struct IntervalJoin<A, B, K> {
    a: KeyedStream<A, K>,
    b: KeyedStream<B, K>,
    lower_ms: i64,
    upper_ms: i64,
    lower_exclusive: bool,
    upper_exclusive: bool,
    late_left: Option<String>,
    late_right: Option<String>,
}

impl<A: Data, K: Key> KeyedStream<A, K> {
    /// Joins with `other` on the key, pairing records whose timestamps are close
    /// (`between`).
    pub fn interval_join<B: Data>(&self, other: &KeyedStream<B, K>) -> IntervalJoin<A, B, K> {
        IntervalJoin {
            a: self.clone(),
            b: other.clone(),
            lower_ms: 0,
            upper_ms: 0,
            lower_exclusive: false,
            upper_exclusive: false,
            late_left: None,
            late_right: None,
        }
    }
}

fn signed_ms(d: Duration, negative: bool) -> i64 {
    let v = d.as_millis().min(i64::MAX as u128) as i64;
    if negative {
        -v
    } else {
        v
    }
}

impl<A: Data, B: Data, K: Key> IntervalJoin<A, B, K> {
    /// Pairs `a` with `b` when `a.ts + lower_ms ≤ b.ts ≤ a.ts + upper_ms` (ms, may be negative).
    pub fn between_ms(mut self, lower_ms: i64, upper_ms: i64) -> Self {
        self.lower_ms = lower_ms;
        self.upper_ms = upper_ms;
        self
    }
    /// `between_ms(-before, after)` with durations.
    pub fn between(self, before: Duration, after: Duration) -> Self {
        self.between_ms(signed_ms(before, true), signed_ms(after, false))
    }
    /// Excludes `b.ts == a.ts + lower`.
    pub fn lower_bound_exclusive(mut self) -> Self {
        self.lower_exclusive = true;
        self
    }
    /// Excludes `b.ts == a.ts + upper`.
    pub fn upper_bound_exclusive(mut self) -> Self {
        self.upper_exclusive = true;
        self
    }
    /// Sends late first-stream records to `tag` (otherwise dropped and counted).
    pub fn side_output_left_late_data(mut self, tag: &OutputTag<A>) -> Self {
        self.late_left = Some(tag.id().to_string());
        self
    }
    /// Sends late second-stream records to `tag`.
    pub fn side_output_right_late_data(mut self, tag: &OutputTag<B>) -> Self {
        self.late_right = Some(tag.id().to_string());
        self
    }
    /// Emits `f(a, b)` for every matching pair, timestamped `max(a.ts, b.ts)`.
    pub fn process<R: Data>(
        self,
        f: impl Fn(&A, &B) -> R + Clone + Send + Sync + 'static,
    ) -> DataStream<R> {
        let mut lower = self.lower_ms + i64::from(self.lower_exclusive);
        let mut upper = self.upper_ms - i64::from(self.upper_exclusive);
        if lower > upper {
            // An empty interval joins nothing; keep it valid for the operator.
            (lower, upper) = (1, 0);
        }
        let (ka, kb) = (self.a.key_fn(), self.b.key_fn());
        let (late_l, late_r) = (self.late_left.clone(), self.late_right.clone());
        let env = self.a.stream().env().clone();
        let node = env.add_operator_node(
            "interval_join",
            Arc::new(TwoInputNode::<
                A,
                B,
                R,
                IntervalJoinOp<K, A, B, F2<A, B, R>>,
                _,
            >::new(move |ctx: &OperatorContext| {
                let f = f.clone();
                IntervalJoinOp::new(
                    ctx,
                    ka.clone(),
                    kb.clone(),
                    lower,
                    upper,
                    Arc::new(move |a: &A, b: &B| f(a, b)),
                    late_l.clone(),
                    late_r.clone(),
                )
            })),
        );
        self.a.stream().connect_to(node, 0);
        self.b.stream().connect_to(node, 1);
        DataStream::from_node(env, node)
    }
}

type F2<A, B, R> = Arc<dyn Fn(&A, &B) -> R + Send + Sync>;

/// Side of a buffered record, in timer namespaces.
const LEFT: u8 = 0;
const RIGHT: u8 = 1;

pub(crate) struct IntervalJoinOp<K: Key, A, B, F> {
    ka: KeyFn<A, K>,
    kb: KeyFn<B, K>,
    lower: i64,
    upper: i64,
    f: F,
    store: KeyedStateStore<K>,
    timers: TimerService<K, (u8, i64)>,
    left: MapState<i64, Vec<A>>,
    right: MapState<i64, Vec<B>>,
    late_left: Option<String>,
    late_right: Option<String>,
    late_dropped: Counter,
    state_entries: StateGauge,
}

impl<K: Key, A: Data, B: Data, R> IntervalJoinOp<K, A, B, F2<A, B, R>> {
    #[allow(clippy::too_many_arguments)]
    fn new(
        ctx: &OperatorContext,
        ka: KeyFn<A, K>,
        kb: KeyFn<B, K>,
        lower: i64,
        upper: i64,
        f: F2<A, B, R>,
        late_left: Option<String>,
        late_right: Option<String>,
    ) -> Result<Self> {
        let mut store = crate::operators::keyed::restored_store(ctx)?;
        let cfg = |e: weir_state::StateError| WeirError::Config(e.to_string());
        let left = MapState::register(&mut store, "left-buffer").map_err(cfg)?;
        let right = MapState::register(&mut store, "right-buffer").map_err(cfg)?;
        let mut timers = TimerService::default();
        timers
            .restore(&store.take_restored_timers())
            .map_err(|e| ctx.operator_error(format!("restoring timers: {e}")))?;
        Ok(IntervalJoinOp {
            ka,
            kb,
            lower,
            upper,
            f,
            store,
            timers,
            left,
            right,
            late_left,
            late_right,
            late_dropped: ctx.counter("late_records_dropped"),
            state_entries: StateGauge::new(ctx),
        })
    }

    fn is_late(ts: i64, wm: i64) -> bool {
        wm != i64::MIN && ts < wm
    }

    fn report_state(&mut self, exact: bool) {
        let (store, timers) = (&self.store, &self.timers);
        self.state_entries
            .report(exact, || store.total_entries() + timers.event.len());
    }
}

impl<K: Key, A: Data, B: Data, R: Data> TwoInputOperator<A, B, R>
    for IntervalJoinOp<K, A, B, F2<A, B, R>>
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

    fn process1(
        &mut self,
        rec: Record<A>,
        ctx: &mut OperatorContext,
        out: &mut dyn Output<R>,
    ) -> Result<()> {
        let ts = rec.timestamp().ok_or_else(|| {
            ctx.record_error("interval join needs timestamps: assign_timestamps first")
        })?;
        if Self::is_late(ts, ctx.watermark) {
            return match &self.late_left {
                Some(tag) => ctx.side_outputs.emit(tag, rec),
                None => {
                    self.late_dropped.inc();
                    Ok(())
                }
            };
        }
        let key = (self.ka)(&rec.value);
        self.store.set_current_key(key.clone());
        // b.ts in [ts + lower, ts + upper]
        let (lo, hi) = (ts.saturating_add(self.lower), ts.saturating_add(self.upper));
        for (bts, bs) in self.right.entries(&mut self.store) {
            if bts >= lo && bts <= hi {
                for b in &bs {
                    let r = (self.f)(&rec.value, b);
                    out.collect(Record::new(ts.max(bts), r))?;
                }
            }
        }
        let mut list = self.left.get(&mut self.store, &ts).unwrap_or_default();
        list.push(rec.value);
        self.left.put(&mut self.store, ts, list);
        // The last b that can match arrives at ts + upper; after that the bucket can go.
        let cleanup = if self.upper > 0 {
            ts.saturating_add(self.upper)
        } else {
            ts
        };
        self.timers.event.register(cleanup, &key, &(LEFT, ts));
        Ok(())
    }

    fn process2(
        &mut self,
        rec: Record<B>,
        ctx: &mut OperatorContext,
        out: &mut dyn Output<R>,
    ) -> Result<()> {
        let ts = rec.timestamp().ok_or_else(|| {
            ctx.record_error("interval join needs timestamps: assign_timestamps first")
        })?;
        if Self::is_late(ts, ctx.watermark) {
            return match &self.late_right {
                Some(tag) => ctx.side_outputs.emit(tag, rec),
                None => {
                    self.late_dropped.inc();
                    Ok(())
                }
            };
        }
        let key = (self.kb)(&rec.value);
        self.store.set_current_key(key.clone());
        // a.ts in [ts - upper, ts - lower]
        let (lo, hi) = (ts.saturating_sub(self.upper), ts.saturating_sub(self.lower));
        for (ats, as_) in self.left.entries(&mut self.store) {
            if ats >= lo && ats <= hi {
                for a in &as_ {
                    let r = (self.f)(a, &rec.value);
                    out.collect(Record::new(ts.max(ats), r))?;
                }
            }
        }
        let mut list = self.right.get(&mut self.store, &ts).unwrap_or_default();
        list.push(rec.value);
        self.right.put(&mut self.store, ts, list);
        let cleanup = if -self.lower > 0 {
            ts.saturating_sub(self.lower)
        } else {
            ts
        };
        self.timers.event.register(cleanup, &key, &(RIGHT, ts));
        Ok(())
    }

    fn on_watermark(
        &mut self,
        wm: Watermark,
        _ctx: &mut OperatorContext,
        out: &mut dyn Output<R>,
    ) -> Result<()> {
        while let Some((_, key, (side, bucket))) = self.timers.event.pop_due(wm.0) {
            self.store.set_current_key(key);
            if side == LEFT {
                self.left.remove(&mut self.store, &bucket);
            } else {
                self.right.remove(&mut self.store, &bucket);
            }
        }
        self.report_state(wm.0 == i64::MAX);
        out.watermark(wm)
    }
}
