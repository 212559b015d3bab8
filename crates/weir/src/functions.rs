//! What user code implements, and what it is given.
//!
//! Functions are cloned once per subtask (so `Clone` is required) and then called from that
//! subtask's thread only. They return [`FnResult`]: an `Err` fails the job with an error that
//! names the operator, the subtask and the record's position.
use std::sync::Arc;
use weir_runtime::{OperatorContext, Output};
use weir_state::{
    AggregateFunction, AggregatingState, KeyedStateStore, ListState, MapState, ReducingState,
    StateAccess, StateTtl, TimerService, ValueState,
};
use weir_types::{BoxError, Data, Key, Record, WeirError, NO_TIMESTAMP};

pub use crate::operators::co::BroadcastProcessFunction;
pub use crate::stream::BroadcastState;
use crate::stream::OutputTag;

/// What user functions return.
pub type FnResult = Result<(), BoxError>;

/// Collects a function's results. Each record gets the timestamp of the input record (or of the
/// timer that fired), as in Flink, unless set explicitly.
pub struct Collector<'a, T> {
    out: &'a mut dyn Output<T>,
    ts: i64,
    err: Option<WeirError>,
}

impl<'a, T> Collector<'a, T> {
    pub(crate) fn new(out: &'a mut dyn Output<T>, ts: i64) -> Self {
        Collector { out, ts, err: None }
    }
    /// Emits a value.
    #[inline]
    pub fn collect(&mut self, value: T) {
        self.collect_at(value, self.ts)
    }
    /// Emits a value with an explicit event timestamp.
    #[inline]
    pub fn collect_at(&mut self, value: T, ts: i64) {
        if self.err.is_none() {
            if let Err(e) = self.out.collect(Record { ts, value }) {
                self.err = Some(e);
            }
        }
    }
    pub(crate) fn finish(self) -> weir_types::Result<()> {
        self.err.map_or(Ok(()), Err)
    }
}

/// Turns a user function's result into the job's error.
pub(crate) fn user_result(r: FnResult, ctx: &OperatorContext) -> weir_types::Result<()> {
    r.map_err(|e| match e.downcast::<WeirError>() {
        Ok(w) => *w,
        Err(e) => ctx.record_error(e.to_string()),
    })
}

/// The time domain of a firing timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeDomain {
    /// Fired by the watermark.
    EventTime,
    /// Fired by the wall clock.
    ProcessingTime,
}

/// What a non-keyed [`ProcessFunction`] sees.
pub struct ProcessContext<'a> {
    pub(crate) op: &'a mut OperatorContext,
    pub(crate) ts: i64,
}

impl ProcessContext<'_> {
    /// The record's event timestamp, if it has one.
    pub fn timestamp(&self) -> Option<i64> {
        (self.ts != NO_TIMESTAMP).then_some(self.ts)
    }
    /// The current watermark.
    pub fn current_watermark(&self) -> i64 {
        self.op.watermark
    }
    /// Processing time now (ms).
    pub fn current_processing_time(&self) -> i64 {
        self.op.clock.now_ms()
    }
    /// Emits to a side output.
    pub fn output<S: Data>(&mut self, tag: &OutputTag<S>, value: S) -> weir_types::Result<()> {
        self.op
            .side_outputs
            .emit(tag.id(), Record { ts: self.ts, value })
    }
    /// This subtask's index.
    pub fn subtask(&self) -> usize {
        self.op.subtask
    }
    /// The operator's parallelism.
    pub fn parallelism(&self) -> usize {
        self.op.parallelism
    }
}

/// A function over each record of a (non-keyed) stream, with side outputs.
pub trait ProcessFunction<In, Out>: Clone + Send + 'static {
    /// Called once per subtask before the first record.
    fn open(&mut self, _ctx: &mut ProcessContext<'_>) -> FnResult {
        Ok(())
    }
    /// One record.
    fn process_element(
        &mut self,
        value: In,
        ctx: &mut ProcessContext<'_>,
        out: &mut Collector<'_, Out>,
    ) -> FnResult;
    /// End of bounded input.
    fn on_end(&mut self, _ctx: &mut ProcessContext<'_>, _out: &mut Collector<'_, Out>) -> FnResult {
        Ok(())
    }
}

/// Registers keyed state, in [`KeyedProcessFunction::open`].
pub struct StateRegistry<'a, K: Key> {
    pub(crate) store: &'a mut KeyedStateStore<K>,
}

fn state_err(e: weir_state::StateError) -> WeirError {
    WeirError::Config(e.to_string())
}

impl<K: Key> StateRegistry<'_, K> {
    /// A value per key.
    pub fn value_state<V: Data>(&mut self, name: &str) -> weir_types::Result<ValueState<V>> {
        ValueState::register(self.store, name).map_err(state_err)
    }
    /// A value per key that expires `ttl` after its last write.
    pub fn value_state_with_ttl<V: Data>(
        &mut self,
        name: &str,
        ttl: StateTtl,
    ) -> weir_types::Result<ValueState<V>> {
        ValueState::register_with_ttl(self.store, name, ttl).map_err(state_err)
    }
    /// A list per key.
    pub fn list_state<V: Data>(&mut self, name: &str) -> weir_types::Result<ListState<V>> {
        ListState::register(self.store, name).map_err(state_err)
    }
    /// A list per key that expires `ttl` after its last write.
    pub fn list_state_with_ttl<V: Data>(
        &mut self,
        name: &str,
        ttl: StateTtl,
    ) -> weir_types::Result<ListState<V>> {
        ListState::register_with_ttl(self.store, name, ttl).map_err(state_err)
    }
    /// A map per key.
    pub fn map_state<UK: Data + std::hash::Hash + Eq, UV: Data>(
        &mut self,
        name: &str,
    ) -> weir_types::Result<MapState<UK, UV>> {
        MapState::register(self.store, name).map_err(state_err)
    }
    /// A map per key that expires `ttl` after its last write.
    pub fn map_state_with_ttl<UK: Data + std::hash::Hash + Eq, UV: Data>(
        &mut self,
        name: &str,
        ttl: StateTtl,
    ) -> weir_types::Result<MapState<UK, UV>> {
        MapState::register_with_ttl(self.store, name, ttl).map_err(state_err)
    }
    /// A value per key folded with `reduce`.
    pub fn reducing_state<V: Data>(
        &mut self,
        name: &str,
        reduce: impl Fn(V, V) -> V + Send + Sync + 'static,
        ttl: Option<StateTtl>,
    ) -> weir_types::Result<ReducingState<V>> {
        ReducingState::register(self.store, name, reduce, ttl).map_err(state_err)
    }
    /// A value per key aggregated by `agg`.
    pub fn aggregating_state<IN: 'static, ACC: Data, OUT: 'static>(
        &mut self,
        name: &str,
        agg: Arc<dyn AggregateFunction<IN, ACC, OUT>>,
        ttl: Option<StateTtl>,
    ) -> weir_types::Result<AggregatingState<IN, ACC, OUT>> {
        AggregatingState::register(self.store, name, agg, ttl).map_err(state_err)
    }
    /// Converts restored state `name` from an old stored type (call before registering it):
    /// e.g. `s.migrate::<OldRow, Row>("row", |o| Row { .. })`.
    pub fn migrate<Old: Data, New: Data>(&mut self, name: &str, f: impl Fn(Old) -> New + 'static) {
        self.store.migrate(name, f)
    }
    /// The underlying store (for namespaced state).
    pub fn store(&mut self) -> &mut KeyedStateStore<K> {
        self.store
    }
}

/// What a [`KeyedProcessFunction`] sees: the current key, its state, timers, time and side
/// outputs. Use it with state handles: `self.count.get(ctx)`.
pub struct KeyedContext<'a, K: Key> {
    pub(crate) op: &'a mut OperatorContext,
    pub(crate) store: &'a mut KeyedStateStore<K>,
    pub(crate) timers: &'a mut TimerService<K, ()>,
    pub(crate) ts: i64,
    pub(crate) domain: Option<TimeDomain>,
}

impl<K: Key> StateAccess<K> for KeyedContext<'_, K> {
    #[inline]
    fn keyed_store(&mut self) -> &mut KeyedStateStore<K> {
        self.store
    }
}

impl<K: Key> KeyedContext<'_, K> {
    /// The current key.
    pub fn current_key(&self) -> &K {
        self.store
            .current_key()
            .expect("a keyed context always has a key")
    }
    /// The record's (or the firing timer's) event timestamp.
    pub fn timestamp(&self) -> Option<i64> {
        (self.ts != NO_TIMESTAMP).then_some(self.ts)
    }
    /// In `on_timer`: which kind of timer fired.
    pub fn time_domain(&self) -> Option<TimeDomain> {
        self.domain
    }
    /// The current watermark.
    pub fn current_watermark(&self) -> i64 {
        self.op.watermark
    }
    /// Processing time now (ms).
    pub fn current_processing_time(&self) -> i64 {
        self.op.clock.now_ms()
    }
    /// Calls `on_timer` when the watermark reaches `ts` (once per key and timestamp).
    pub fn register_event_time_timer(&mut self, ts: i64) {
        let k = self.current_key().clone();
        self.timers.event.register(ts, &k, &());
    }
    /// Cancels an event-time timer of the current key.
    pub fn delete_event_time_timer(&mut self, ts: i64) {
        let k = self.current_key().clone();
        self.timers.event.delete(ts, &k, &());
    }
    /// Calls `on_timer` when processing time reaches `ts`.
    pub fn register_processing_time_timer(&mut self, ts: i64) {
        let k = self.current_key().clone();
        self.timers.processing.register(ts, &k, &());
    }
    /// Cancels a processing-time timer of the current key.
    pub fn delete_processing_time_timer(&mut self, ts: i64) {
        let k = self.current_key().clone();
        self.timers.processing.delete(ts, &k, &());
    }
    /// Emits to a side output.
    pub fn output<S: Data>(&mut self, tag: &OutputTag<S>, value: S) -> weir_types::Result<()> {
        self.op
            .side_outputs
            .emit(tag.id(), Record { ts: self.ts, value })
    }
    /// This subtask's index.
    pub fn subtask(&self) -> usize {
        self.op.subtask
    }
}

/// A function over a keyed stream with keyed state and timers (Flink's `KeyedProcessFunction`).
///
/// ```
/// use weir::prelude::*;
/// #[derive(Clone, Default)]
/// struct Count { n: ValueState<u64> }
/// impl KeyedProcessFunction<String, String, (String, u64)> for Count {
///     fn open(&mut self, s: &mut StateRegistry<'_, String>) -> FnResult {
///         self.n = s.value_state("n")?;
///         Ok(())
///     }
///     fn process_element(&mut self, w: String, ctx: &mut KeyedContext<'_, String>, out: &mut Collector<'_, (String, u64)>) -> FnResult {
///         let n = self.n.mutate(ctx, || 0, |n| { *n += 1; *n });
///         out.collect((w, n));
///         Ok(())
///     }
/// }
/// ```
pub trait KeyedProcessFunction<K: Key, In, Out>: Clone + Send + 'static {
    /// Registers state; called once per subtask.
    fn open(&mut self, _state: &mut StateRegistry<'_, K>) -> FnResult {
        Ok(())
    }
    /// One record; the context's key is the record's key.
    fn process_element(
        &mut self,
        value: In,
        ctx: &mut KeyedContext<'_, K>,
        out: &mut Collector<'_, Out>,
    ) -> FnResult;
    /// A timer of the context's key fired at `ts`.
    fn on_timer(
        &mut self,
        _ts: i64,
        _ctx: &mut KeyedContext<'_, K>,
        _out: &mut Collector<'_, Out>,
    ) -> FnResult {
        Ok(())
    }
}

/// A function over two connected (non-keyed) streams.
pub trait CoProcessFunction<A, B, Out>: Clone + Send + 'static {
    /// A record of the first stream.
    fn process_element1(
        &mut self,
        value: A,
        ctx: &mut ProcessContext<'_>,
        out: &mut Collector<'_, Out>,
    ) -> FnResult;
    /// A record of the second stream.
    fn process_element2(
        &mut self,
        value: B,
        ctx: &mut ProcessContext<'_>,
        out: &mut Collector<'_, Out>,
    ) -> FnResult;
}

/// A function over two keyed streams connected by the same key type, with shared keyed state
/// and timers.
pub trait KeyedCoProcessFunction<K: Key, A, B, Out>: Clone + Send + 'static {
    /// Registers state.
    fn open(&mut self, _state: &mut StateRegistry<'_, K>) -> FnResult {
        Ok(())
    }
    /// A record of the first stream.
    fn process_element1(
        &mut self,
        value: A,
        ctx: &mut KeyedContext<'_, K>,
        out: &mut Collector<'_, Out>,
    ) -> FnResult;
    /// A record of the second stream.
    fn process_element2(
        &mut self,
        value: B,
        ctx: &mut KeyedContext<'_, K>,
        out: &mut Collector<'_, Out>,
    ) -> FnResult;
    /// A timer fired.
    fn on_timer(
        &mut self,
        _ts: i64,
        _ctx: &mut KeyedContext<'_, K>,
        _out: &mut Collector<'_, Out>,
    ) -> FnResult {
        Ok(())
    }
}
