//! Watermark strategies and the logic that combines watermarks of several inputs.
use std::sync::Arc;
use std::time::Duration;
use weir_types::{Watermark, WatermarkStatus};

/// When a generator emits watermarks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatermarkEmit {
    /// Every `pipeline.auto-watermark-interval` of processing time (default 200 ms), as Flink.
    Periodic,
    /// After every record: deterministic, for tests and conformance runs.
    PerRecord,
}

/// How records get event timestamps and how watermarks follow them.
///
/// ```
/// use weir_runtime::WatermarkStrategy;
/// use std::time::Duration;
/// #[derive(Clone)] struct Reading { ts: i64 }
/// let s = WatermarkStrategy::<Reading>::bounded_out_of_orderness(Duration::from_secs(5))
///     .with_timestamps(|r: &Reading, _| r.ts)
///     .with_idleness(Duration::from_secs(30));
/// ```
pub struct WatermarkStrategy<T> {
    pub(crate) assigner: Option<Arc<dyn Fn(&T, i64) -> i64 + Send + Sync>>,
    pub(crate) out_of_orderness_ms: i64,
    pub(crate) idle_timeout_ms: Option<i64>,
    pub(crate) emit: WatermarkEmit,
    pub(crate) generate: bool,
}

impl<T> Clone for WatermarkStrategy<T> {
    fn clone(&self) -> Self {
        WatermarkStrategy {
            assigner: self.assigner.clone(),
            out_of_orderness_ms: self.out_of_orderness_ms,
            idle_timeout_ms: self.idle_timeout_ms,
            emit: self.emit,
            generate: self.generate,
        }
    }
}

impl<T> WatermarkStrategy<T> {
    /// Watermark = highest timestamp seen − `max` − 1 ms: records up to `max` out of order are
    /// on time (Flink's `forBoundedOutOfOrderness`).
    pub fn bounded_out_of_orderness(max: Duration) -> Self {
        WatermarkStrategy {
            assigner: None,
            out_of_orderness_ms: max.as_millis() as i64,
            idle_timeout_ms: None,
            emit: WatermarkEmit::Periodic,
            generate: true,
        }
    }
    /// Timestamps only ever increase (Flink's `forMonotonousTimestamps`).
    pub fn monotonous() -> Self {
        Self::bounded_out_of_orderness(Duration::ZERO)
    }
    /// Timestamps, but no watermarks (only the final one at the end of bounded input).
    pub fn no_watermarks() -> Self {
        WatermarkStrategy {
            generate: false,
            ..Self::monotonous()
        }
    }
    /// Takes the event time from the record: `f(record, timestamp_from_source)`.
    pub fn with_timestamps(mut self, f: impl Fn(&T, i64) -> i64 + Send + Sync + 'static) -> Self {
        self.assigner = Some(Arc::new(f));
        self
    }
    /// An input (a source split) with no record for `timeout` is idle and stops holding the
    /// watermark back.
    pub fn with_idleness(mut self, timeout: Duration) -> Self {
        self.idle_timeout_ms = Some(timeout.as_millis() as i64);
        self
    }
    /// Emits a watermark after every record (deterministic mode).
    pub fn per_record(mut self) -> Self {
        self.emit = WatermarkEmit::PerRecord;
        self
    }
    /// The configured out-of-orderness in ms.
    pub fn out_of_orderness_ms(&self) -> i64 {
        self.out_of_orderness_ms
    }
    /// The idleness timeout in ms, if any.
    pub fn idle_timeout(&self) -> Option<i64> {
        self.idle_timeout_ms
    }
    /// When watermarks are emitted.
    pub fn emit_mode(&self) -> WatermarkEmit {
        self.emit
    }
    /// The timestamp of `value` whose source timestamp is `source_ts`.
    #[inline]
    pub fn timestamp(&self, value: &T, source_ts: i64) -> i64 {
        match &self.assigner {
            Some(f) => f(value, source_ts),
            None => source_ts,
        }
    }
}

/// Bounded-out-of-orderness watermark generation for one input (a split, or a whole stream).
#[derive(Clone, Copy, Debug)]
pub struct Generator {
    max_ts: i64,
    delay: i64,
    active: bool,
}

impl Generator {
    /// A generator allowing `delay_ms` of out-of-orderness.
    pub fn new(delay_ms: i64) -> Self {
        Generator {
            max_ts: i64::MIN,
            delay: delay_ms,
            active: false,
        }
    }
    /// Sees one record's timestamp.
    #[inline]
    pub fn on_event(&mut self, ts: i64) {
        self.active = true;
        if ts > self.max_ts {
            self.max_ts = ts;
        }
    }
    /// The current watermark (`i64::MIN` before any record).
    #[inline]
    pub fn current(&self) -> i64 {
        if !self.active {
            i64::MIN
        } else {
            self.max_ts.saturating_sub(self.delay).saturating_sub(1)
        }
    }
}

/// Combines the watermarks of several inputs (channels or splits): the output watermark is the
/// minimum over active inputs, never goes back, and the output is idle when every input is.
///
/// An input that comes back from idleness behind the output watermark does not pull it back; it
/// rejoins the minimum once it catches up (as Flink's status watermark valve).
#[derive(Debug)]
pub struct Valve {
    inputs: Vec<InputState>,
    last: i64,
    idle: bool,
}

#[derive(Debug, Clone, Copy)]
struct InputState {
    wm: i64,
    idle: bool,
    ended: bool,
    aligned: bool,
}

impl Valve {
    /// A valve over `n` inputs, all active, none with a watermark yet.
    pub fn new(n: usize) -> Self {
        Valve {
            inputs: vec![
                InputState {
                    wm: i64::MIN,
                    idle: false,
                    ended: false,
                    aligned: true
                };
                n
            ],
            last: i64::MIN,
            idle: false,
        }
    }

    /// Adds an input (a split assigned later). Returns its index.
    pub fn add_input(&mut self) -> usize {
        self.inputs.push(InputState {
            wm: i64::MIN,
            idle: false,
            ended: false,
            aligned: self.last == i64::MIN,
        });
        self.inputs.len() - 1
    }

    /// The output watermark so far.
    pub fn current(&self) -> i64 {
        self.last
    }

    /// Whether the output is idle.
    pub fn is_idle(&self) -> bool {
        self.idle
    }

    /// Input `i`'s watermark advanced; returns the new output watermark if it advanced.
    pub fn watermark(&mut self, i: usize, wm: i64) -> Option<Watermark> {
        let inp = &mut self.inputs[i];
        if wm > inp.wm {
            inp.wm = wm;
        }
        if !inp.aligned && inp.wm >= self.last {
            inp.aligned = true;
        }
        self.recompute()
    }

    /// Input `i` became idle or active; returns the output status if it changed, and the new
    /// output watermark if it advanced.
    pub fn status(
        &mut self,
        i: usize,
        s: WatermarkStatus,
    ) -> (Option<WatermarkStatus>, Option<Watermark>) {
        let inp = &mut self.inputs[i];
        match s {
            WatermarkStatus::Idle => inp.idle = true,
            WatermarkStatus::Active => {
                if inp.idle {
                    inp.idle = false;
                    inp.aligned = inp.wm >= self.last;
                }
            }
        }
        let wm = self.recompute();
        let idle_now =
            self.inputs.iter().all(|x| x.idle || x.ended) && self.inputs.iter().any(|x| !x.ended);
        let change = (idle_now != self.idle).then(|| {
            self.idle = idle_now;
            if idle_now {
                WatermarkStatus::Idle
            } else {
                WatermarkStatus::Active
            }
        });
        (change, wm)
    }

    /// Input `i` ended; returns the new output watermark if it advanced.
    pub fn end(&mut self, i: usize) -> Option<Watermark> {
        self.inputs[i].ended = true;
        self.recompute()
    }

    /// Whether every input ended.
    pub fn all_ended(&self) -> bool {
        self.inputs.iter().all(|x| x.ended)
    }

    fn recompute(&mut self) -> Option<Watermark> {
        let mut min = None::<i64>;
        for x in &self.inputs {
            if !x.idle && !x.ended && x.aligned {
                min = Some(min.map_or(x.wm, |m| m.min(x.wm)));
            }
        }
        match min {
            Some(m) if m > self.last => {
                self.last = m;
                Some(Watermark(m))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generator_follows_flink_formula() {
        let mut g = Generator::new(5);
        assert_eq!(g.current(), i64::MIN);
        g.on_event(100);
        g.on_event(90);
        assert_eq!(g.current(), 94);
    }

    #[test]
    fn valve_is_min_over_active_inputs_and_never_regresses() {
        let mut v = Valve::new(2);
        assert_eq!(v.watermark(0, 10), None, "input 1 has no watermark yet");
        assert_eq!(v.watermark(1, 5), Some(Watermark(5)));
        assert_eq!(v.watermark(1, 20), Some(Watermark(10)));
        // input 0 idles: min over input 1 only
        let (st, wm) = v.status(0, WatermarkStatus::Idle);
        assert_eq!(st, None);
        assert_eq!(wm, Some(Watermark(20)));
        // input 0 comes back behind: no regression, and it does not hold the output back
        let (_, wm) = v.status(0, WatermarkStatus::Active);
        assert_eq!(wm, None);
        assert_eq!(v.watermark(1, 30), Some(Watermark(30)));
        assert_eq!(v.watermark(0, 25), None);
        assert_eq!(
            v.watermark(0, 40),
            None,
            "rejoined at 30 once caught up; min is 30"
        );
        assert_eq!(v.watermark(1, 50), Some(Watermark(40)));
        // all idle -> output idle
        v.status(0, WatermarkStatus::Idle);
        let (st, _) = v.status(1, WatermarkStatus::Idle);
        assert_eq!(st, Some(WatermarkStatus::Idle));
        let (st, _) = v.status(1, WatermarkStatus::Active);
        assert_eq!(st, Some(WatermarkStatus::Active));
        // ended inputs drop out
        assert_eq!(v.end(0), None);
        assert_eq!(v.watermark(1, 60), Some(Watermark(60)));
    }
}
