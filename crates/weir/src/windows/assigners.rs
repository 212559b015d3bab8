//! Windows and the assigners that put records into them.
use serde::{Deserialize, Serialize};
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;
use weir_types::Data;

/// A window: a namespace of keyed state with a last timestamp.
pub trait Window: Data + Hash + Eq + Debug {
    /// The largest timestamp that belongs to the window; the event-time trigger fires when the
    /// watermark reaches it.
    fn max_timestamp(&self) -> i64;
    /// The window `[start, end)`, for window types that are time ranges (used by slicing).
    fn from_bounds(_start: i64, _end: i64) -> Option<Self> {
        None
    }
    /// Whether [`Window::merge_cover`] is implemented (time ranges).
    fn coverable() -> bool {
        false
    }
    /// If the windows overlap or touch (Flink's `intersects`), the smallest window covering
    /// both (used by the session fast path).
    fn merge_cover(&self, _other: &Self) -> Option<Self> {
        None
    }
}

/// `[start, end)` in ms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TimeWindow {
    /// First ms of the window.
    pub start: i64,
    /// First ms after the window.
    pub end: i64,
}

impl TimeWindow {
    /// `[start, end)`.
    pub fn new(start: i64, end: i64) -> Self {
        TimeWindow { start, end }
    }
    /// Whether the windows overlap or touch (Flink merges touching session windows).
    pub fn intersects(&self, o: &TimeWindow) -> bool {
        self.start <= o.end && self.end >= o.start
    }
    /// The smallest window covering both.
    pub fn cover(&self, o: &TimeWindow) -> TimeWindow {
        TimeWindow {
            start: self.start.min(o.start),
            end: self.end.max(o.end),
        }
    }
}

impl Window for TimeWindow {
    fn max_timestamp(&self) -> i64 {
        // Java long arithmetic, as Flink: a window whose end wrapped past i64::MAX (see
        // `window_start`) keeps Flink's (wrapped) bounds instead of panicking.
        self.end.wrapping_sub(1)
    }
    fn from_bounds(start: i64, end: i64) -> Option<Self> {
        Some(TimeWindow { start, end })
    }
    fn coverable() -> bool {
        true
    }
    fn merge_cover(&self, other: &Self) -> Option<Self> {
        self.intersects(other).then(|| self.cover(other))
    }
}

/// The one window of [`GlobalWindows`] (count windows): it never ends by itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct GlobalWindow;

impl Window for GlobalWindow {
    fn max_timestamp(&self) -> i64 {
        i64::MAX
    }
}

/// The start of the window of `size` (shifted by `offset`) that holds `ts`.
///
/// Window bounds use wrapping (Java `long`) arithmetic, as Flink's assigners: within one window
/// of `i64::MIN` the start wraps to near `i64::MAX`, and near `i64::MAX` the end
/// (`start + size`) wraps to near `i64::MIN`. Flink produces exactly those windows; checked
/// arithmetic would panic instead.
pub fn window_start(ts: i64, offset: i64, size: i64) -> i64 {
    ts.wrapping_sub(ts.wrapping_sub(offset).rem_euclid(size))
}

/// Event time (record timestamps, watermarks) or processing time (the clock).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeKind {
    /// Record timestamps and watermarks.
    Event,
    /// The wall clock when the record arrives.
    Processing,
}

/// Puts records into windows.
pub trait WindowAssigner<T>: Send + Sync + 'static {
    /// The window type.
    type W: Window;
    /// The windows of a record with timestamp `ts` arriving at processing time `now_ms`.
    fn assign(&self, value: &T, ts: i64, now_ms: i64, out: &mut Vec<Self::W>)
        -> Result<(), String>;
    /// Event time or processing time.
    fn time_kind(&self) -> TimeKind;
    /// The trigger used unless another is set.
    fn default_trigger(&self) -> Arc<dyn crate::windows::Trigger<Self::W>>;
    /// Whether windows merge (sessions).
    fn is_merging(&self) -> bool {
        false
    }
    /// For merging assigners (sessions): groups of windows to merge, as `(result, merged)`
    /// for each group of more than one distinct window.
    #[allow(clippy::type_complexity)]
    fn merge(&self, _windows: &[Self::W]) -> Option<Vec<(Self::W, Vec<Self::W>)>> {
        None
    }
    /// For aligned sliding assigners (size a multiple of the slide, more than one window per
    /// record): their slicing, which [`crate::windows::WindowedStream::with_slicing`] uses.
    fn slices(&self) -> Option<crate::windows::Slices> {
        None
    }
    /// For event-time assigners that put each record in exactly one window, decided by its
    /// timestamp alone (tumbling): the window of timestamp `ts`, with the first timestamp it
    /// holds. A window aggregate over such an assigner can aggregate locally before the keyed
    /// exchange ([`crate::windows::WindowedStream::with_local_aggregation`]).
    fn event_window_of(&self, _ts: i64) -> Option<(Self::W, i64)> {
        None
    }
}

fn time_of(kind: TimeKind, ts: i64, now: i64) -> Result<i64, String> {
    match kind {
        TimeKind::Processing => Ok(now),
        TimeKind::Event if ts == weir_types::NO_TIMESTAMP => {
            Err(crate::windows::local::NO_TIMESTAMP_ERROR.into())
        }
        TimeKind::Event => Ok(ts),
    }
}

fn time_trigger(kind: TimeKind) -> Arc<dyn crate::windows::Trigger<TimeWindow>> {
    match kind {
        TimeKind::Event => Arc::new(crate::windows::EventTimeTrigger),
        TimeKind::Processing => Arc::new(crate::windows::ProcessingTimeTrigger),
    }
}

/// Fixed-size, non-overlapping windows.
#[derive(Clone, Debug)]
pub struct Tumbling {
    size: i64,
    offset: i64,
    kind: TimeKind,
}

impl Tumbling {
    /// Event-time windows of `size_ms`.
    pub fn event_time(size_ms: i64) -> Self {
        assert!(size_ms > 0, "window size must be positive");
        Tumbling {
            size: size_ms,
            offset: 0,
            kind: TimeKind::Event,
        }
    }
    /// Processing-time windows of `size_ms`.
    pub fn processing_time(size_ms: i64) -> Self {
        Tumbling {
            kind: TimeKind::Processing,
            ..Self::event_time(size_ms)
        }
    }
    /// Shifts window starts by `offset_ms` (e.g. time zones for daily windows).
    pub fn with_offset(mut self, offset_ms: i64) -> Self {
        self.offset = offset_ms.rem_euclid(self.size);
        self
    }
}

impl<T> WindowAssigner<T> for Tumbling {
    type W = TimeWindow;
    fn assign(&self, _: &T, ts: i64, now: i64, out: &mut Vec<TimeWindow>) -> Result<(), String> {
        let t = time_of(self.kind, ts, now)?;
        let start = window_start(t, self.offset, self.size);
        out.push(TimeWindow::new(start, start.wrapping_add(self.size)));
        Ok(())
    }
    fn time_kind(&self) -> TimeKind {
        self.kind
    }
    fn default_trigger(&self) -> Arc<dyn crate::windows::Trigger<TimeWindow>> {
        time_trigger(self.kind)
    }
    #[inline]
    fn event_window_of(&self, ts: i64) -> Option<(TimeWindow, i64)> {
        (self.kind == TimeKind::Event).then(|| {
            let start = window_start(ts, self.offset, self.size);
            (TimeWindow::new(start, start.wrapping_add(self.size)), start)
        })
    }
}

/// Windows of `size` starting every `slide` (hopping): a record belongs to `size / slide`.
#[derive(Clone, Debug)]
pub struct Sliding {
    size: i64,
    slide: i64,
    offset: i64,
    kind: TimeKind,
}

impl Sliding {
    /// Event-time windows of `size_ms` every `slide_ms`.
    pub fn event_time(size_ms: i64, slide_ms: i64) -> Self {
        assert!(
            size_ms > 0 && slide_ms > 0,
            "window size and slide must be positive"
        );
        Sliding {
            size: size_ms,
            slide: slide_ms,
            offset: 0,
            kind: TimeKind::Event,
        }
    }
    /// Processing-time windows of `size_ms` every `slide_ms`.
    pub fn processing_time(size_ms: i64, slide_ms: i64) -> Self {
        Sliding {
            kind: TimeKind::Processing,
            ..Self::event_time(size_ms, slide_ms)
        }
    }
    /// Shifts window starts by `offset_ms`.
    pub fn with_offset(mut self, offset_ms: i64) -> Self {
        self.offset = offset_ms.rem_euclid(self.slide);
        self
    }
}

impl<T> WindowAssigner<T> for Sliding {
    type W = TimeWindow;
    fn slices(&self) -> Option<crate::windows::Slices> {
        (self.size > self.slide && self.size % self.slide == 0).then_some(crate::windows::Slices {
            size: self.size,
            slide: self.slide,
            offset: self.offset,
            kind: self.kind,
        })
    }
    fn assign(&self, _: &T, ts: i64, now: i64, out: &mut Vec<TimeWindow>) -> Result<(), String> {
        let t = time_of(self.kind, ts, now)?;
        let mut start = window_start(t, self.offset, self.slide);
        // As Flink: `for (start = last; start > t - size; start -= slide)` in Java longs. Where
        // Flink's `start -= slide` would wrap past i64::MIN (and run away), stop.
        while start > t.wrapping_sub(self.size) {
            out.push(TimeWindow::new(start, start.wrapping_add(self.size)));
            match start.checked_sub(self.slide) {
                Some(s) => start = s,
                None => break,
            }
        }
        Ok(())
    }
    fn time_kind(&self) -> TimeKind {
        self.kind
    }
    fn default_trigger(&self) -> Arc<dyn crate::windows::Trigger<TimeWindow>> {
        time_trigger(self.kind)
    }
}

/// Sessions: a record opens `[t, t + gap)`; windows that overlap or touch merge.
pub struct Session<T> {
    gap: SessionGap<T>,
    kind: TimeKind,
}

enum SessionGap<T> {
    Static(i64),
    Dynamic(Arc<dyn Fn(&T) -> i64 + Send + Sync>),
}

impl<T> Clone for Session<T> {
    fn clone(&self) -> Self {
        let gap = match &self.gap {
            SessionGap::Static(g) => SessionGap::Static(*g),
            SessionGap::Dynamic(f) => SessionGap::Dynamic(f.clone()),
        };
        Session {
            gap,
            kind: self.kind,
        }
    }
}

impl<T> Session<T> {
    /// Event-time sessions closed by `gap_ms` of inactivity.
    pub fn event_time(gap_ms: i64) -> Self {
        assert!(gap_ms > 0, "session gap must be positive");
        Session {
            gap: SessionGap::Static(gap_ms),
            kind: TimeKind::Event,
        }
    }
    /// Processing-time sessions.
    pub fn processing_time(gap_ms: i64) -> Self {
        Session {
            kind: TimeKind::Processing,
            ..Self::event_time(gap_ms)
        }
    }
    /// Event-time sessions whose gap is computed per record.
    pub fn event_time_dynamic(gap_ms: impl Fn(&T) -> i64 + Send + Sync + 'static) -> Self {
        Session {
            gap: SessionGap::Dynamic(Arc::new(gap_ms)),
            kind: TimeKind::Event,
        }
    }
}

/// Merges overlapping or touching windows, as Flink's `TimeWindow.mergeWindows`: sorted by start,
/// each group reported with its distinct members when it has more than one.
pub fn merge_time_windows(windows: &[TimeWindow]) -> Vec<(TimeWindow, Vec<TimeWindow>)> {
    let mut sorted = windows.to_vec();
    sorted.sort_by_key(|w| w.start);
    let mut out = Vec::new();
    let mut cur: Option<(TimeWindow, Vec<TimeWindow>)> = None;
    for w in sorted {
        match &mut cur {
            Some((m, set)) if m.intersects(&w) => {
                *m = m.cover(&w);
                if !set.contains(&w) {
                    set.push(w);
                }
            }
            _ => {
                if let Some(c) = cur.take() {
                    if c.1.len() > 1 {
                        out.push(c);
                    }
                }
                cur = Some((w, vec![w]));
            }
        }
    }
    if let Some(c) = cur {
        if c.1.len() > 1 {
            out.push(c);
        }
    }
    out
}

impl<T: 'static> WindowAssigner<T> for Session<T> {
    type W = TimeWindow;
    fn assign(
        &self,
        value: &T,
        ts: i64,
        now: i64,
        out: &mut Vec<TimeWindow>,
    ) -> Result<(), String> {
        let t = time_of(self.kind, ts, now)?;
        let gap = match &self.gap {
            SessionGap::Static(g) => *g,
            SessionGap::Dynamic(f) => f(value),
        };
        if gap <= 0 {
            return Err(format!("session gap must be positive, got {gap} ms"));
        }
        // `t + gap` in Java longs, as Flink's session assigners (it wraps near i64::MAX).
        out.push(TimeWindow::new(t, t.wrapping_add(gap)));
        Ok(())
    }
    fn time_kind(&self) -> TimeKind {
        self.kind
    }
    fn default_trigger(&self) -> Arc<dyn crate::windows::Trigger<TimeWindow>> {
        time_trigger(self.kind)
    }
    fn is_merging(&self) -> bool {
        true
    }
    fn merge(&self, windows: &[TimeWindow]) -> Option<Vec<(TimeWindow, Vec<TimeWindow>)>> {
        Some(merge_time_windows(windows))
    }
}

/// One window per key holding everything; fires only by its trigger (count windows).
#[derive(Clone, Debug, Default)]
pub struct GlobalWindows;

impl<T> WindowAssigner<T> for GlobalWindows {
    type W = GlobalWindow;
    fn assign(&self, _: &T, _: i64, _: i64, out: &mut Vec<GlobalWindow>) -> Result<(), String> {
        out.push(GlobalWindow);
        Ok(())
    }
    fn time_kind(&self) -> TimeKind {
        TimeKind::Event
    }
    fn default_trigger(&self) -> Arc<dyn crate::windows::Trigger<GlobalWindow>> {
        Arc::new(crate::windows::NeverTrigger)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assign<A: WindowAssigner<()>>(a: &A, ts: i64) -> Vec<A::W> {
        let mut v = Vec::new();
        a.assign(&(), ts, 0, &mut v).unwrap();
        v
    }

    #[test]
    fn tumbling_boundaries_including_negative_time() {
        let t = Tumbling::event_time(10);
        assert_eq!(assign(&t, 0), vec![TimeWindow::new(0, 10)]);
        assert_eq!(assign(&t, 9), vec![TimeWindow::new(0, 10)]);
        assert_eq!(assign(&t, 10), vec![TimeWindow::new(10, 20)]);
        assert_eq!(assign(&t, -1), vec![TimeWindow::new(-10, 0)]);
        assert_eq!(
            assign(&Tumbling::event_time(10).with_offset(3), 2),
            vec![TimeWindow::new(-7, 3)]
        );
    }

    #[test]
    fn sliding_assigns_size_over_slide_windows() {
        let s = Sliding::event_time(10, 5);
        assert_eq!(
            assign(&s, 15),
            vec![TimeWindow::new(15, 25), TimeWindow::new(10, 20)]
        );
        assert_eq!(
            assign(&s, 14),
            vec![TimeWindow::new(10, 20), TimeWindow::new(5, 15)]
        );
        assert_eq!(assign(&Sliding::event_time(10, 3), 0).len(), 4);
    }

    #[test]
    fn sessions_merge_overlapping_and_touching_windows() {
        let m = merge_time_windows(&[
            TimeWindow::new(0, 10),
            TimeWindow::new(10, 20),
            TimeWindow::new(30, 40),
        ]);
        assert_eq!(
            m,
            vec![(
                TimeWindow::new(0, 20),
                vec![TimeWindow::new(0, 10), TimeWindow::new(10, 20)]
            )]
        );
        assert!(
            merge_time_windows(&[TimeWindow::new(0, 10), TimeWindow::new(0, 10)]).is_empty(),
            "duplicates are one window"
        );
    }

    #[test]
    fn event_time_windows_need_timestamps() {
        let mut v = Vec::new();
        assert!(WindowAssigner::<()>::assign(
            &Tumbling::event_time(5),
            &(),
            weir_types::NO_TIMESTAMP,
            0,
            &mut v
        )
        .is_err());
    }
}
