//! Triggers decide when a window emits (fires) and when its contents are dropped (purged).
use crate::windows::assigners::{TimeKind, Window};
use std::any::Any;
use std::sync::Arc;

/// What a trigger decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TriggerResult {
    /// Emit the window's current result.
    pub fire: bool,
    /// Drop the window's contents (its timers and trigger state remain until cleanup).
    pub purge: bool,
}

impl TriggerResult {
    /// Nothing.
    pub const CONTINUE: TriggerResult = TriggerResult {
        fire: false,
        purge: false,
    };
    /// Emit.
    pub const FIRE: TriggerResult = TriggerResult {
        fire: true,
        purge: false,
    };
    /// Drop the contents.
    pub const PURGE: TriggerResult = TriggerResult {
        fire: false,
        purge: true,
    };
    /// Emit, then drop the contents.
    pub const FIRE_AND_PURGE: TriggerResult = TriggerResult {
        fire: true,
        purge: true,
    };
}

/// Timers and per-window trigger state of the current key, provided by the window operator.
pub(crate) trait TriggerOps<W> {
    fn register_event(&mut self, ts: i64, w: &W);
    fn delete_event(&mut self, ts: i64, w: &W);
    fn register_processing(&mut self, ts: i64, w: &W);
    fn delete_processing(&mut self, ts: i64, w: &W);
    fn get(&mut self, slot: usize, w: &W) -> Option<i64>;
    fn set(&mut self, slot: usize, w: &W, v: i64);
    fn clear(&mut self, slot: usize, w: &W);
}

/// What a trigger sees: the window, time, timers and its own state (a few `i64` slots per key
/// and window, declared by [`Trigger::state_slots`]).
pub struct TriggerContext<'a, W> {
    pub(crate) window: &'a W,
    pub(crate) watermark: i64,
    pub(crate) now: i64,
    pub(crate) ops: &'a mut dyn TriggerOps<W>,
}

impl<W> TriggerContext<'_, W> {
    /// The window this call is about.
    pub fn window(&self) -> &W {
        self.window
    }
    /// The operator's watermark.
    pub fn current_watermark(&self) -> i64 {
        self.watermark
    }
    /// Processing time now.
    pub fn current_processing_time(&self) -> i64 {
        self.now
    }
    /// Calls `on_event_time` when the watermark reaches `ts`.
    pub fn register_event_time_timer(&mut self, ts: i64) {
        self.ops.register_event(ts, self.window)
    }
    /// Cancels an event-time timer.
    pub fn delete_event_time_timer(&mut self, ts: i64) {
        self.ops.delete_event(ts, self.window)
    }
    /// Calls `on_processing_time` when the clock reaches `ts`.
    pub fn register_processing_time_timer(&mut self, ts: i64) {
        self.ops.register_processing(ts, self.window)
    }
    /// Cancels a processing-time timer.
    pub fn delete_processing_time_timer(&mut self, ts: i64) {
        self.ops.delete_processing(ts, self.window)
    }
    /// Trigger state `slot` of this key and window.
    pub fn state(&mut self, slot: usize) -> Option<i64> {
        self.ops.get(slot, self.window)
    }
    /// Sets trigger state `slot`.
    pub fn set_state(&mut self, slot: usize, v: i64) {
        self.ops.set(slot, self.window, v)
    }
    /// Clears trigger state `slot`.
    pub fn clear_state(&mut self, slot: usize) {
        self.ops.clear(slot, self.window)
    }
    /// When windows merge: folds the `slot` state of `merged` into this window's with `f`.
    pub fn merge_state(&mut self, slot: usize, merged: &[W], f: impl Fn(i64, i64) -> i64) {
        let mut acc = self.ops.get(slot, self.window);
        for m in merged {
            if let Some(v) = self.ops.get(slot, m) {
                acc = Some(acc.map_or(v, |a| f(a, v)));
            }
        }
        if let Some(v) = acc {
            self.ops.set(slot, self.window, v);
        }
    }
}

/// Decides when a window fires. Implement it for custom firing rules.
pub trait Trigger<W: Window>: Send + Sync + 'static {
    /// How many `i64` state slots per key and window it uses.
    fn state_slots(&self) -> usize {
        0
    }
    /// A record was added to the window (`element` can be downcast to the record type).
    fn on_element(
        &self,
        element: &dyn Any,
        ts: i64,
        ctx: &mut TriggerContext<'_, W>,
    ) -> TriggerResult;
    /// An event-time timer of this window fired.
    fn on_event_time(&self, time: i64, ctx: &mut TriggerContext<'_, W>) -> TriggerResult;
    /// A processing-time timer of this window fired.
    fn on_processing_time(&self, time: i64, ctx: &mut TriggerContext<'_, W>) -> TriggerResult;
    /// Whether it supports merging windows (sessions).
    fn can_merge(&self) -> bool {
        false
    }
    /// `merged` windows became `ctx.window()`.
    fn on_merge(&self, _merged: &[W], _ctx: &mut TriggerContext<'_, W>) {}
    /// The window is being cleaned up: delete timers and state.
    fn clear(&self, ctx: &mut TriggerContext<'_, W>);
    /// `Some(kind)` for a trigger that keeps no state, registers only a `kind` timer at the
    /// window's max timestamp and fires there without purging (the default triggers). The
    /// window operator then takes a faster path with the same results: one timer per key and
    /// window, registered with the window's first record, and no trigger calls.
    fn fires_only_at_window_end(&self) -> Option<TimeKind> {
        None
    }
}

/// Fires when the watermark passes the window's end (the default for event time).
#[derive(Clone, Copy, Debug, Default)]
pub struct EventTimeTrigger;

impl<W: Window> Trigger<W> for EventTimeTrigger {
    fn fires_only_at_window_end(&self) -> Option<TimeKind> {
        Some(TimeKind::Event)
    }
    fn on_element(&self, _: &dyn Any, _: i64, ctx: &mut TriggerContext<'_, W>) -> TriggerResult {
        let max = ctx.window.max_timestamp();
        if max <= ctx.watermark {
            TriggerResult::FIRE
        } else {
            ctx.register_event_time_timer(max);
            TriggerResult::CONTINUE
        }
    }
    fn on_event_time(&self, time: i64, ctx: &mut TriggerContext<'_, W>) -> TriggerResult {
        if time == ctx.window.max_timestamp() {
            TriggerResult::FIRE
        } else {
            TriggerResult::CONTINUE
        }
    }
    fn on_processing_time(&self, _: i64, _: &mut TriggerContext<'_, W>) -> TriggerResult {
        TriggerResult::CONTINUE
    }
    fn can_merge(&self) -> bool {
        true
    }
    fn on_merge(&self, _: &[W], ctx: &mut TriggerContext<'_, W>) {
        // Only if the watermark has not passed the merged end: otherwise on_element fires.
        let max = ctx.window.max_timestamp();
        if max > ctx.watermark {
            ctx.register_event_time_timer(max);
        }
    }
    fn clear(&self, ctx: &mut TriggerContext<'_, W>) {
        let max = ctx.window.max_timestamp();
        ctx.delete_event_time_timer(max);
    }
}

/// Fires when the clock passes the window's end (the default for processing time).
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcessingTimeTrigger;

impl<W: Window> Trigger<W> for ProcessingTimeTrigger {
    fn fires_only_at_window_end(&self) -> Option<TimeKind> {
        Some(TimeKind::Processing)
    }
    fn on_element(&self, _: &dyn Any, _: i64, ctx: &mut TriggerContext<'_, W>) -> TriggerResult {
        let max = ctx.window.max_timestamp();
        ctx.register_processing_time_timer(max);
        TriggerResult::CONTINUE
    }
    fn on_event_time(&self, _: i64, _: &mut TriggerContext<'_, W>) -> TriggerResult {
        TriggerResult::CONTINUE
    }
    fn on_processing_time(&self, _: i64, _: &mut TriggerContext<'_, W>) -> TriggerResult {
        TriggerResult::FIRE
    }
    fn can_merge(&self) -> bool {
        true
    }
    fn on_merge(&self, _: &[W], ctx: &mut TriggerContext<'_, W>) {
        let max = ctx.window.max_timestamp();
        if max > ctx.now {
            ctx.register_processing_time_timer(max);
        }
    }
    fn clear(&self, ctx: &mut TriggerContext<'_, W>) {
        let max = ctx.window.max_timestamp();
        ctx.delete_processing_time_timer(max);
    }
}

/// Fires every `n` records (then counts again).
#[derive(Clone, Copy, Debug)]
pub struct CountTrigger(pub u64);

impl<W: Window> Trigger<W> for CountTrigger {
    fn state_slots(&self) -> usize {
        1
    }
    fn on_element(&self, _: &dyn Any, _: i64, ctx: &mut TriggerContext<'_, W>) -> TriggerResult {
        let c = ctx.state(0).unwrap_or(0) + 1;
        if c as u64 >= self.0 {
            ctx.clear_state(0);
            TriggerResult::FIRE
        } else {
            ctx.set_state(0, c);
            TriggerResult::CONTINUE
        }
    }
    fn on_event_time(&self, _: i64, _: &mut TriggerContext<'_, W>) -> TriggerResult {
        TriggerResult::CONTINUE
    }
    fn on_processing_time(&self, _: i64, _: &mut TriggerContext<'_, W>) -> TriggerResult {
        TriggerResult::CONTINUE
    }
    fn can_merge(&self) -> bool {
        true
    }
    fn on_merge(&self, merged: &[W], ctx: &mut TriggerContext<'_, W>) {
        ctx.merge_state(0, merged, |a, b| a + b);
    }
    fn clear(&self, ctx: &mut TriggerContext<'_, W>) {
        ctx.clear_state(0);
    }
}

/// Fires every `interval` of event time while the window is open (early results), and at its
/// end, as Flink's `ContinuousEventTimeTrigger`.
#[derive(Clone, Copy, Debug)]
pub struct ContinuousEventTimeTrigger(pub i64);

impl ContinuousEventTimeTrigger {
    fn register_next<W: Window>(&self, from: i64, ctx: &mut TriggerContext<'_, W>) {
        // Deliberately saturating where Flink computes `time + interval` in Java longs: within
        // one interval of i64::MAX that sum wraps to near i64::MIN, and Flink then fires the
        // window again every `interval` from there, a practically endless series.
        let next = from.saturating_add(self.0).min(ctx.window.max_timestamp());
        let cur = ctx.state(0);
        ctx.set_state(0, cur.map_or(next, |c| c.min(next)));
        ctx.register_event_time_timer(next);
    }
}

impl<W: Window> Trigger<W> for ContinuousEventTimeTrigger {
    fn state_slots(&self) -> usize {
        1
    }
    fn on_element(&self, _: &dyn Any, ts: i64, ctx: &mut TriggerContext<'_, W>) -> TriggerResult {
        let max = ctx.window.max_timestamp();
        if max <= ctx.watermark {
            return TriggerResult::FIRE;
        }
        ctx.register_event_time_timer(max);
        if ctx.state(0).is_none() {
            // Java's truncating `%`, as Flink computes it (differs from floor for negative times).
            self.register_next(ts - ts % self.0, ctx);
        }
        TriggerResult::CONTINUE
    }
    fn on_event_time(&self, time: i64, ctx: &mut TriggerContext<'_, W>) -> TriggerResult {
        if time == ctx.window.max_timestamp() {
            return TriggerResult::FIRE;
        }
        if ctx.state(0) == Some(time) {
            ctx.clear_state(0);
            self.register_next(time, ctx);
            return TriggerResult::FIRE;
        }
        TriggerResult::CONTINUE
    }
    fn on_processing_time(&self, _: i64, _: &mut TriggerContext<'_, W>) -> TriggerResult {
        TriggerResult::CONTINUE
    }
    fn can_merge(&self) -> bool {
        true
    }
    fn on_merge(&self, merged: &[W], ctx: &mut TriggerContext<'_, W>) {
        ctx.merge_state(0, merged, i64::min);
        if let Some(next) = ctx.state(0) {
            ctx.register_event_time_timer(next);
        }
    }
    fn clear(&self, ctx: &mut TriggerContext<'_, W>) {
        if let Some(t) = ctx.state(0) {
            ctx.delete_event_time_timer(t);
            ctx.clear_state(0);
        }
    }
}

/// Fires every `interval` of processing time while the window is open.
#[derive(Clone, Copy, Debug)]
pub struct ContinuousProcessingTimeTrigger(pub i64);

impl ContinuousProcessingTimeTrigger {
    fn register_next<W: Window>(&self, from: i64, ctx: &mut TriggerContext<'_, W>) {
        let next = from.saturating_add(self.0).min(ctx.window.max_timestamp());
        let cur = ctx.state(0);
        ctx.set_state(0, cur.map_or(next, |c| c.min(next)));
        ctx.register_processing_time_timer(next);
    }
}

impl<W: Window> Trigger<W> for ContinuousProcessingTimeTrigger {
    fn state_slots(&self) -> usize {
        1
    }
    fn on_element(&self, _: &dyn Any, _: i64, ctx: &mut TriggerContext<'_, W>) -> TriggerResult {
        if ctx.state(0).is_none() {
            let now = ctx.now;
            self.register_next(now - now % self.0, ctx);
        }
        TriggerResult::CONTINUE
    }
    fn on_event_time(&self, _: i64, _: &mut TriggerContext<'_, W>) -> TriggerResult {
        TriggerResult::CONTINUE
    }
    fn on_processing_time(&self, time: i64, ctx: &mut TriggerContext<'_, W>) -> TriggerResult {
        if ctx.state(0) == Some(time) {
            ctx.clear_state(0);
            self.register_next(time, ctx);
            return TriggerResult::FIRE;
        }
        TriggerResult::CONTINUE
    }
    fn can_merge(&self) -> bool {
        true
    }
    fn on_merge(&self, merged: &[W], ctx: &mut TriggerContext<'_, W>) {
        ctx.merge_state(0, merged, i64::min);
        if let Some(next) = ctx.state(0) {
            ctx.register_processing_time_timer(next);
        }
    }
    fn clear(&self, ctx: &mut TriggerContext<'_, W>) {
        if let Some(t) = ctx.state(0) {
            ctx.delete_processing_time_timer(t);
            ctx.clear_state(0);
        }
    }
}

/// Turns every fire of the inner trigger into fire-and-purge.
pub struct PurgingTrigger<W>(pub Arc<dyn Trigger<W>>);

impl<W: Window> Trigger<W> for PurgingTrigger<W> {
    fn state_slots(&self) -> usize {
        self.0.state_slots()
    }
    fn on_element(&self, e: &dyn Any, ts: i64, ctx: &mut TriggerContext<'_, W>) -> TriggerResult {
        purge(self.0.on_element(e, ts, ctx))
    }
    fn on_event_time(&self, t: i64, ctx: &mut TriggerContext<'_, W>) -> TriggerResult {
        purge(self.0.on_event_time(t, ctx))
    }
    fn on_processing_time(&self, t: i64, ctx: &mut TriggerContext<'_, W>) -> TriggerResult {
        purge(self.0.on_processing_time(t, ctx))
    }
    fn can_merge(&self) -> bool {
        self.0.can_merge()
    }
    fn on_merge(&self, merged: &[W], ctx: &mut TriggerContext<'_, W>) {
        self.0.on_merge(merged, ctx)
    }
    fn clear(&self, ctx: &mut TriggerContext<'_, W>) {
        self.0.clear(ctx)
    }
}

fn purge(r: TriggerResult) -> TriggerResult {
    if r.fire {
        TriggerResult::FIRE_AND_PURGE
    } else {
        r
    }
}

/// Never fires (the default of global windows: set a trigger).
#[derive(Clone, Copy, Debug, Default)]
pub struct NeverTrigger;

impl<W: Window> Trigger<W> for NeverTrigger {
    fn on_element(&self, _: &dyn Any, _: i64, _: &mut TriggerContext<'_, W>) -> TriggerResult {
        TriggerResult::CONTINUE
    }
    fn on_event_time(&self, _: i64, _: &mut TriggerContext<'_, W>) -> TriggerResult {
        TriggerResult::CONTINUE
    }
    fn on_processing_time(&self, _: i64, _: &mut TriggerContext<'_, W>) -> TriggerResult {
        TriggerResult::CONTINUE
    }
    fn can_merge(&self) -> bool {
        true
    }
    fn clear(&self, _: &mut TriggerContext<'_, W>) {}
}
