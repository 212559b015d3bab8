//! The Redis mode's trigger: the original benchmark writes every window that changed to Redis
//! once a second, and its final count when it closes.
use std::any::Any;
use weir::windows::{Trigger, TriggerContext, TriggerResult, Window};

/// Fires a window (without purging) at the first whole multiple of `interval_ms` of processing
/// time after it received records, so each window that changed emits its count once per
/// interval; and fires when the watermark passes the window's end, with the final count.
#[derive(Clone, Copy, Debug)]
pub struct EverySecond {
    interval_ms: i64,
}

impl EverySecond {
    /// Fires changed windows every `interval_ms` (1000 in the benchmark).
    pub fn new(interval_ms: i64) -> Self {
        assert!(interval_ms > 0);
        EverySecond { interval_ms }
    }
}

impl<W: Window> Trigger<W> for EverySecond {
    /// Slot 0: the pending processing-time timer, if any.
    fn state_slots(&self) -> usize {
        1
    }
    fn on_element(&self, _: &dyn Any, _: i64, ctx: &mut TriggerContext<'_, W>) -> TriggerResult {
        let max = ctx.window().max_timestamp();
        if max <= ctx.current_watermark() {
            return TriggerResult::FIRE; // a late record in an allowed-lateness window
        }
        ctx.register_event_time_timer(max);
        if ctx.state(0).is_none() {
            let now = ctx.current_processing_time();
            let next = now - now.rem_euclid(self.interval_ms) + self.interval_ms;
            ctx.set_state(0, next);
            ctx.register_processing_time_timer(next);
        }
        TriggerResult::CONTINUE
    }
    fn on_event_time(&self, time: i64, ctx: &mut TriggerContext<'_, W>) -> TriggerResult {
        if time == ctx.window().max_timestamp() {
            TriggerResult::FIRE
        } else {
            TriggerResult::CONTINUE
        }
    }
    fn on_processing_time(&self, time: i64, ctx: &mut TriggerContext<'_, W>) -> TriggerResult {
        if ctx.state(0) == Some(time) {
            ctx.clear_state(0);
            return TriggerResult::FIRE;
        }
        TriggerResult::CONTINUE
    }
    fn clear(&self, ctx: &mut TriggerContext<'_, W>) {
        let max = ctx.window().max_timestamp();
        ctx.delete_event_time_timer(max);
        if let Some(t) = ctx.state(0) {
            ctx.delete_processing_time_timer(t);
            ctx.clear_state(0);
        }
    }
}
