//! The keyed window operator: assigns records to windows, keeps one accumulator per key and
//! window (state namespace = window), and fires through triggers and timers. Decisions follow
//! Flink's `WindowOperator`: a window is late when its cleanup time (end − 1 + allowed lateness)
//! is at or below the watermark; a record is late when every window it belongs to is late;
//! window state and timers are cleared at the cleanup time.
use crate::functions::{user_result, Collector};
use crate::operators::keyed::{KeyFn, TOUCH_CHUNK};
use crate::windows::assigners::{TimeKind, Window, WindowAssigner};
use crate::windows::local::{MergePartials, Partial};
use crate::windows::minibatch::BatchAccs;
use crate::windows::triggers::{Trigger, TriggerContext, TriggerOps, TriggerResult};
use crate::windows::StateGauge;
use crate::windows::{ProcessWindowFunction, WindowContext};
use std::sync::Arc;
use weir_runtime::checkpoint::{CheckpointBarrier, OperatorSnapshot};
use weir_runtime::{OneInputOperator, OperatorContext, Output};
use weir_state::{AggregateFunction, AggregatingState, KeyedStateStore, TimerService, ValueState};
use weir_types::metrics::Counter;
use weir_types::{Data, Key, Record, Result, Watermark, WeirError};

struct Ops<'a, K: Key, W: Window> {
    store: &'a mut KeyedStateStore<K>,
    timers: &'a mut TimerService<K, W>,
    slots: &'a [ValueState<i64, W>],
}

impl<K: Key, W: Window> Ops<'_, K, W> {
    fn key(&self) -> K {
        self.store
            .current_key()
            .expect("window operator has a current key")
            .clone()
    }
}

impl<K: Key, W: Window> TriggerOps<W> for Ops<'_, K, W> {
    fn register_event(&mut self, ts: i64, w: &W) {
        let k = self.key();
        self.timers.event.register(ts, &k, w)
    }
    fn delete_event(&mut self, ts: i64, w: &W) {
        let k = self.key();
        self.timers.event.delete(ts, &k, w)
    }
    fn register_processing(&mut self, ts: i64, w: &W) {
        let k = self.key();
        self.timers.processing.register(ts, &k, w)
    }
    fn delete_processing(&mut self, ts: i64, w: &W) {
        let k = self.key();
        self.timers.processing.delete(ts, &k, w)
    }
    fn get(&mut self, slot: usize, w: &W) -> Option<i64> {
        self.slots[slot].get_in(self.store, w)
    }
    fn set(&mut self, slot: usize, w: &W, v: i64) {
        self.slots[slot].set_in(self.store, w, v)
    }
    fn clear(&mut self, slot: usize, w: &W) {
        self.slots[slot].clear_in(self.store, w)
    }
}

/// A merge to apply after the merging-window bookkeeping: `merged` windows became `result`,
/// whose contents live in `state_result`; `merged_state` contents fold into it.
struct MergeAction<W> {
    result: W,
    merged: Vec<W>,
    state_result: W,
    merged_state: Vec<W>,
}

fn lookup<W: PartialEq + Clone>(m: &[(W, W)], w: &W) -> Option<W> {
    m.iter().find(|(k, _)| k == w).map(|(_, s)| s.clone())
}

fn remove<W: PartialEq>(m: &mut Vec<(W, W)>, w: &W) -> Option<W> {
    m.iter()
        .position(|(k, _)| k == w)
        .map(|i| m.swap_remove(i).1)
}

fn put<W: PartialEq>(m: &mut Vec<(W, W)>, w: W, s: W) {
    match m.iter_mut().find(|(k, _)| *k == w) {
        Some(e) => e.1 = s,
        None => m.push((w, s)),
    }
}

pub(crate) struct WindowOp<K: Key, T, A: WindowAssigner<T>, ACC, AOUT, R, F> {
    pub key: KeyFn<T, K>,
    pub assigner: Arc<A>,
    pub trigger: Arc<dyn Trigger<A::W>>,
    pub func: F,
    pub lateness_ms: i64,
    pub late_tag: Option<String>,
    pub store: KeyedStateStore<K>,
    pub timers: TimerService<K, A::W>,
    pub contents: AggregatingState<T, ACC, AOUT, A::W>,
    pub merging: ValueState<Vec<(A::W, A::W)>>,
    pub slots: Vec<ValueState<i64, A::W>>,
    pub windows: Vec<A::W>,
    pub late_dropped: Counter,
    pub state_entries: StateGauge,
    /// The trigger fires only at the window's end, windows don't merge and there is no allowed
    /// lateness: one timer per key and window, no trigger calls (same results).
    pub fast: bool,
    /// The same for merging (session) windows of time ranges: per key, the open sessions and
    /// their accumulators in one state entry (`sessions`), merged in place.
    pub fast_sessions: Option<FastSessions<T, A::W, ACC, AOUT>>,
    /// The fast path's accumulators of the batch being processed ([`BatchAccs`]).
    pub minibatch: BatchAccs<K, A::W, ACC>,
    /// The session fast path's keys of the batch or timers being processed (touched before
    /// use).
    pub keys: Vec<Option<K>>,
    /// The session fast path's due timers being fired, with `keys`.
    pub due: Vec<(i64, A::W)>,
    pub _r: std::marker::PhantomData<fn() -> R>,
}

/// State of the session fast path.
pub(crate) struct FastSessions<T, W, ACC, AOUT> {
    agg: Arc<dyn AggregateFunction<T, ACC, AOUT>>,
    /// Per key: its open sessions (pairwise apart: none overlap or touch) and accumulators.
    /// The first inside the state entry: one cache miss less per access than behind a
    /// pointer, and no allocation for the usual single open session.
    sessions: ValueState<OpenSessions<W, ACC>>,
}

/// A key's open sessions and their accumulators (serialized as a list, like a `Vec`).
type OpenSessions<W, ACC> = smallvec::SmallVec<[(W, ACC); 1]>;

impl<K, T, A, ACC, AOUT, R, F> WindowOp<K, T, A, ACC, AOUT, R, F>
where
    K: Key,
    T: Data,
    A: WindowAssigner<T>,
    ACC: Data,
    AOUT: 'static,
    R: 'static,
    F: ProcessWindowFunction<K, AOUT, R, A::W>,
{
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        ctx: &OperatorContext,
        key: KeyFn<T, K>,
        assigner: Arc<A>,
        trigger: Arc<dyn Trigger<A::W>>,
        agg: Arc<dyn AggregateFunction<T, ACC, AOUT>>,
        func: F,
        lateness_ms: i64,
        late_tag: Option<String>,
    ) -> Result<Self> {
        let mut store = crate::operators::keyed::restored_store(ctx)?;
        let cfg = |e: weir_state::StateError| WeirError::Config(e.to_string());
        let contents = AggregatingState::register(&mut store, "window-contents", agg.clone(), None)
            .map_err(cfg)?;
        let merging = ValueState::register(&mut store, "merging-windows").map_err(cfg)?;
        let at_end_only =
            lateness_ms == 0 && trigger.fires_only_at_window_end() == Some(assigner.time_kind());
        let fast_sessions = if at_end_only && assigner.is_merging() && A::W::coverable() {
            // Checkpoints before the sessions were kept inline stored them as a `Vec` (the same
            // bytes).
            store.migrate::<Vec<(A::W, ACC)>, OpenSessions<A::W, ACC>>(
                "session-windows",
                OpenSessions::from_vec,
            );
            Some(FastSessions {
                agg,
                sessions: ValueState::register(&mut store, "session-windows").map_err(cfg)?,
            })
        } else {
            None
        };
        let mut timers = TimerService::default();
        timers
            .restore(&store.take_restored_timers())
            .map_err(|e| ctx.operator_error(format!("restoring timers: {e}")))?;
        let slots = (0..trigger.state_slots())
            .map(|i| ValueState::register(&mut store, &format!("trigger-{i}")).map_err(cfg))
            .collect::<Result<Vec<_>>>()?;
        let fast = !assigner.is_merging() && at_end_only;
        Ok(WindowOp {
            fast,
            fast_sessions,
            minibatch: BatchAccs::for_backend(&*ctx.state_backend),
            keys: Vec::new(),
            due: Vec::new(),
            key,
            assigner,
            trigger,
            func,
            lateness_ms,
            late_tag,
            store,
            timers,
            contents,
            merging,
            slots,
            windows: Vec::new(),
            late_dropped: ctx.counter("late_records_dropped"),
            state_entries: StateGauge::new(ctx),
            _r: std::marker::PhantomData,
        })
    }

    fn is_event_time(&self) -> bool {
        self.assigner.time_kind() == TimeKind::Event
    }

    fn cleanup_time(&self, w: &A::W) -> i64 {
        if self.is_event_time() {
            w.max_timestamp().saturating_add(self.lateness_ms)
        } else {
            w.max_timestamp()
        }
    }

    fn is_late(&self, w: &A::W, wm: i64) -> bool {
        self.is_event_time() && self.cleanup_time(w) <= wm
    }

    fn trigger_call<X>(
        &mut self,
        w: &A::W,
        wm: i64,
        now: i64,
        f: impl FnOnce(&dyn Trigger<A::W>, &mut TriggerContext<'_, A::W>) -> X,
    ) -> X {
        let mut ops = Ops {
            store: &mut self.store,
            timers: &mut self.timers,
            slots: &self.slots,
        };
        let mut tc = TriggerContext {
            window: w,
            watermark: wm,
            now,
            ops: &mut ops,
        };
        f(&*self.trigger, &mut tc)
    }

    fn register_cleanup(&mut self, w: &A::W) {
        let t = self.cleanup_time(w);
        if t == i64::MAX {
            return;
        }
        let k = self.store.current_key().unwrap().clone();
        if self.is_event_time() {
            self.timers.event.register(t, &k, w)
        } else {
            self.timers.processing.register(t, &k, w)
        }
    }

    fn delete_cleanup(&mut self, w: &A::W) {
        let t = self.cleanup_time(w);
        if t == i64::MAX {
            return;
        }
        let k = self.store.current_key().unwrap().clone();
        if self.is_event_time() {
            self.timers.event.delete(t, &k, w)
        } else {
            self.timers.processing.delete(t, &k, w)
        }
    }

    /// Flink's `MergingWindowSet.addWindow`: updates the window → state-window mapping and
    /// returns the window the new one ended up in, with the merges to apply.
    fn add_window(
        &self,
        mapping: &mut Vec<(A::W, A::W)>,
        new: A::W,
    ) -> (A::W, Vec<MergeAction<A::W>>) {
        // A window equal to a live one joins it. (Flink's merge sees one distinct window and
        // maps the window to itself, dropping the state window of a session that had absorbed
        // others — only possible with per-record gaps; Weir keeps that session's records.)
        if lookup(mapping, &new).is_some() {
            return (new, Vec::new());
        }
        let mut all: Vec<A::W> = mapping.iter().map(|(w, _)| w.clone()).collect();
        all.push(new.clone());
        let merges = self.assigner.merge(&all).unwrap_or_default();
        let mut result = new.clone();
        let mut merged_new = false;
        let mut actions = Vec::new();
        for (merge_result, mut merged) in merges {
            if let Some(i) = merged.iter().position(|w| *w == new) {
                merged.remove(i);
                result = merge_result.clone();
                merged_new = true;
            }
            let Some(first) = merged.first() else {
                continue;
            };
            let Some(state_window) = lookup(mapping, first) else {
                continue;
            };
            let mut merged_state: Vec<A::W> =
                merged.iter().filter_map(|m| remove(mapping, m)).collect();
            put(mapping, merge_result.clone(), state_window.clone());
            if let Some(i) = merged_state.iter().position(|s| *s == state_window) {
                merged_state.remove(i);
            }
            if !(merged.contains(&merge_result) && merged.len() == 1) {
                actions.push(MergeAction {
                    result: merge_result.clone(),
                    merged,
                    state_result: lookup(mapping, &merge_result).unwrap(),
                    merged_state,
                });
            }
        }
        // Only a window that merged with nothing is its own state window (Flink's
        // `mergedNewWindow`): a merge whose result equals the new window (it covers the old
        // ones, with per-record gaps) keeps the old state window.
        if !merged_new {
            put(mapping, result.clone(), result.clone());
        }
        (result, actions)
    }

    fn emit(
        &mut self,
        w: &A::W,
        state_window: &A::W,
        ctx: &mut OperatorContext,
        out: &mut dyn Output<R>,
    ) -> Result<()> {
        let Some(result) = self.contents.get_in(&mut self.store, state_window) else {
            return Ok(());
        };
        self.emit_result(w, result, ctx, out)
    }

    fn emit_result(
        &mut self,
        w: &A::W,
        result: AOUT,
        ctx: &mut OperatorContext,
        out: &mut dyn Output<R>,
    ) -> Result<()> {
        let key = self.store.current_key().unwrap().clone();
        let mut c = Collector::new(out, w.max_timestamp());
        let r = self
            .func
            .process(&key, w, result, &mut WindowContext { op: ctx }, &mut c);
        c.finish()?;
        user_result(r, ctx)
    }

    fn apply(
        &mut self,
        r: TriggerResult,
        w: &A::W,
        state_window: &A::W,
        ctx: &mut OperatorContext,
        out: &mut dyn Output<R>,
    ) -> Result<()> {
        if r.fire {
            self.emit(w, state_window, ctx, out)?;
        }
        if r.purge {
            self.contents.clear_in(&mut self.store, state_window);
        }
        Ok(())
    }

    fn on_timer(
        &mut self,
        ts: i64,
        key: K,
        w: A::W,
        event: bool,
        ctx: &mut OperatorContext,
        out: &mut dyn Output<R>,
    ) -> Result<()> {
        self.store.set_current_key(key);
        if let Some(fs) = &self.fast_sessions {
            // Fire the session `w` if it is still open as it is (a session that grew since has
            // a later timer).
            let agg = fs.agg.clone();
            let mut found = None;
            let now_empty = fs
                .sessions
                .mutate(&mut self.store, OpenSessions::new, |open| {
                    if let Some(i) = open.iter().position(|(s, _)| *s == w) {
                        found = Some(open.swap_remove(i).1);
                    }
                    open.is_empty()
                });
            if now_empty {
                fs.sessions.clear(&mut self.store);
            }
            return match found {
                Some(acc) => self.emit_result(&w, agg.get_result(&acc), ctx, out),
                None => Ok(()),
            };
        }
        if self.fast {
            // The window's only timer: its end, which is also its cleanup time.
            return match self.contents.take_result_in(&mut self.store, &w) {
                Some(result) => self.emit_result(&w, result, ctx, out),
                None => Ok(()),
            };
        }
        let merging = self.assigner.is_merging();
        let mut mapping = if merging {
            self.merging.get(&mut self.store).unwrap_or_default()
        } else {
            Vec::new()
        };
        let state_window = if merging {
            match lookup(&mapping, &w) {
                Some(s) => s,
                None => return Ok(()), // the window is gone (merged or cleaned up)
            }
        } else {
            w.clone()
        };
        let (wm, now) = (ctx.watermark, ctx.clock.now_ms());
        let r = self.trigger_call(&w, wm, now, |t, tc| {
            if event {
                t.on_event_time(ts, tc)
            } else {
                t.on_processing_time(ts, tc)
            }
        });
        self.apply(r, &w, &state_window, ctx, out)?;
        if event == self.is_event_time() && ts == self.cleanup_time(&w) {
            self.contents.clear_in(&mut self.store, &state_window);
            self.trigger_call(&w, wm, now, |t, tc| t.clear(tc));
            if merging {
                remove(&mut mapping, &w);
            }
        }
        if merging {
            self.persist(mapping);
        }
        Ok(())
    }

    /// Brings the session entries of the keys `keys[range]` into the CPU cache: the table's
    /// entries in one tight loop, then (on the heap backend, where the first round found them)
    /// a prefetch of each entry's list of sessions. Each round's cache misses overlap, instead
    /// of costing a memory latency per record each.
    #[allow(clippy::ptr_arg)]
    fn touch_sessions(&mut self, keys: &Vec<Option<K>>, range: std::ops::Range<usize>) {
        if self.store.touch_all(keys, range.clone()) == 0 {
            return;
        }
        let fs = self.fast_sessions.as_ref().expect("fast sessions");
        for k in keys[range].iter().flatten() {
            self.store.set_current_key(k.clone());
            fs.sessions.read(&mut self.store, |open| {
                if let Some(o) = open {
                    weir_types::prefetch(o.as_ptr());
                }
            });
        }
    }

    /// Fires the timers due at `wm` of the fast paths, [`TOUCH_CHUNK`] at a time with their
    /// state touched first (a window's contents, or the key's sessions:
    /// [`Self::touch_sessions`]). In timestamp order, as one at a time: these timers register
    /// no timer when they fire.
    fn fire_touched(
        &mut self,
        wm: i64,
        ctx: &mut OperatorContext,
        out: &mut dyn Output<R>,
    ) -> Result<()> {
        let mut due = std::mem::take(&mut self.due);
        let mut keys = std::mem::take(&mut self.keys);
        let mut pairs: Vec<(K, A::W)> = Vec::new();
        let mut r = Ok(());
        while r.is_ok() {
            while due.len() < TOUCH_CHUNK {
                let Some((ts, key, w)) = self.timers.event.pop_due(wm) else {
                    break;
                };
                keys.push(Some(key));
                due.push((ts, w));
            }
            if due.is_empty() {
                break;
            }
            if self.fast_sessions.is_some() {
                self.touch_sessions(&keys, 0..keys.len());
            } else {
                pairs.extend(
                    keys.iter()
                        .flatten()
                        .cloned()
                        .zip(due.iter().map(|d| d.1.clone())),
                );
                std::hint::black_box(self.contents.touch_all_in(&self.store, &pairs));
                pairs.clear();
            }
            for ((ts, w), key) in due.drain(..).zip(keys.drain(..)) {
                if r.is_ok() {
                    r = self.on_timer(ts, key.expect("each key is taken once"), w, true, ctx, out);
                }
            }
        }
        due.clear();
        keys.clear();
        self.due = due;
        self.keys = keys;
        r
    }

    /// `process` for session windows with a trigger that fires only at the window's end and no
    /// lateness: the record's window absorbs every open session it overlaps or touches
    /// (transitively), as Flink's `MergingWindowSet` would merge them; a session whose bounds
    /// changed gets a timer at its new end (the old one, when it fires, finds nothing).
    fn process_sessions_fast(
        &mut self,
        key: K,
        rec: Record<T>,
        ctx: &mut OperatorContext,
    ) -> Result<()> {
        let event = self.is_event_time();
        let wm = ctx.watermark;
        let now = if event { 0 } else { ctx.clock.now_ms() };
        let mut windows = std::mem::take(&mut self.windows);
        windows.clear();
        if let Err(e) = self.assigner.assign(&rec.value, rec.ts, now, &mut windows) {
            return Err(ctx.record_error(e));
        }
        self.store.set_current_key(key);
        let fs = self.fast_sessions.as_ref().expect("fast sessions");
        let agg = &*fs.agg;
        let mut added = false;
        // The record's window, and rarely more: no allocation per record.
        let mut new_timers: smallvec::SmallVec<[A::W; 2]> = smallvec::SmallVec::new();
        let mut value = Some(rec.value);
        let last = windows.len().saturating_sub(1);
        for (i, w) in windows.drain(..).enumerate() {
            let mut cover = w;
            let late = &|c: &A::W| event && c.max_timestamp() <= wm;
            let value = &mut value;
            fs.sessions
                .mutate(&mut self.store, OpenSessions::new, |open| {
                    // Absorb every open session the growing cover meets.
                    let mut acc: Option<ACC> = None;
                    let mut unchanged = false;
                    while let Some(j) = open
                        .iter()
                        .position(|(s, _)| cover.merge_cover(s).is_some())
                    {
                        let (s, a) = open.swap_remove(j);
                        let merged = cover.merge_cover(&s).expect("they meet");
                        unchanged = merged == s && acc.is_none();
                        cover = merged;
                        match &mut acc {
                            None => acc = Some(a),
                            Some(m) => {
                                agg.merge(m, a);
                                unchanged = false;
                            }
                        }
                    }
                    if late(&cover) {
                        // Only when it met no open session (those are not late): drop the record.
                        if let Some(a) = acc {
                            open.push((cover, a));
                        }
                        return;
                    }
                    let mut a = acc.unwrap_or_else(|| agg.create_accumulator());
                    let v = if i == last {
                        value.take()
                    } else {
                        value.clone()
                    };
                    agg.add(&mut a, v.expect("the record is added once per window"));
                    added = true;
                    if !unchanged {
                        new_timers.push(cover.clone());
                    }
                    open.push((cover, a));
                });
        }
        self.windows = windows;
        if !new_timers.is_empty() {
            let k = self.store.current_key().unwrap().clone();
            for w in new_timers {
                let t = w.max_timestamp();
                if event {
                    self.timers.event.register_unique(t, k.clone(), w);
                } else {
                    self.timers.processing.register_unique(t, k.clone(), w);
                }
            }
        }
        if !added {
            // An empty entry may have been created: remove it.
            if fs
                .sessions
                .read(&mut self.store, |open| open.is_some_and(|o| o.is_empty()))
            {
                fs.sessions.clear(&mut self.store);
            }
            if event && rec.ts <= wm {
                let rec = Record {
                    ts: rec.ts,
                    value: value.expect("not added"),
                };
                self.late(rec, ctx)?;
            }
        }
        Ok(())
    }

    /// The windows of `rec` that are not late, left in `self.windows`, with the record's value;
    /// `None` when every window is late (the record went to [`Self::late`]).
    fn live_windows(&mut self, rec: Record<T>, ctx: &mut OperatorContext) -> Result<Option<T>> {
        let event = self.is_event_time();
        let wm = ctx.watermark;
        let now = if event { 0 } else { ctx.clock.now_ms() };
        let mut windows = std::mem::take(&mut self.windows);
        windows.clear();
        if let Err(e) = self.assigner.assign(&rec.value, rec.ts, now, &mut windows) {
            self.windows = windows;
            return Err(ctx.record_error(e));
        }
        windows.retain(|w| !self.is_late(w, wm));
        let none_live = windows.is_empty();
        self.windows = windows;
        if none_live {
            // Flink's `isElementLate` (see `process`), with no allowed lateness.
            if event && rec.ts <= wm {
                self.late(rec, ctx)?;
            }
            return Ok(None);
        }
        Ok(Some(rec.value))
    }

    /// Registers the timer of a window that just got its first record: its end, which is also
    /// its cleanup time.
    fn register_end(timers: &mut TimerService<K, A::W>, event: bool, key: K, w: A::W) {
        let t = w.max_timestamp();
        if event {
            timers.event.register_unique(t, key, w);
        } else {
            timers.processing.register_unique(t, key, w);
        }
    }

    /// `process` with a trigger that fires only at the window's end and no lateness. With
    /// `batch` (the aggregate function), into the batch's accumulators ([`BatchAccs`]: the
    /// store is read the first time the batch meets a (key, window) and written in
    /// [`Self::end_batch`]); without, straight into the store.
    fn process_fast(
        &mut self,
        rec: Record<T>,
        batch: Option<&dyn AggregateFunction<T, ACC, AOUT>>,
        ctx: &mut OperatorContext,
    ) -> Result<()> {
        let Some(value) = self.live_windows(rec, ctx)? else {
            return Ok(());
        };
        let event = self.is_event_time();
        let key = (self.key)(&value);
        let key = match batch {
            Some(_) => Some(key),
            None => {
                self.store.set_current_key(key);
                None
            }
        };
        let mut windows = std::mem::take(&mut self.windows);
        let last = windows.len() - 1;
        let mut value = Some(value);
        for (i, w) in windows.drain(..).enumerate() {
            let v = if i == last {
                value.take().unwrap()
            } else {
                value.clone().unwrap()
            };
            match (batch, &key) {
                (Some(agg), Some(key)) => {
                    self.minibatch
                        .add(&mut self.store, &self.contents, agg, key, &w, v)
                }
                _ => {
                    if self.contents.add_in(&mut self.store, &w, v) {
                        let k = self.store.current_key().unwrap().clone();
                        Self::register_end(&mut self.timers, event, k, w);
                    }
                }
            }
        }
        self.windows = windows;
        Ok(())
    }

    /// Puts the batch's accumulators back into the store, registering the end timers of the
    /// windows the batch opened (in the order the records opened them, as record by record).
    fn end_batch(&mut self, records: usize) {
        let event = self.is_event_time();
        let timers = &mut self.timers;
        self.minibatch
            .put_back(records, &mut self.store, &self.contents, |k, w| {
                Self::register_end(timers, event, k.clone(), w.clone())
            });
    }

    /// A record too late for every window: to the late-data side output, or counted.
    fn late(&mut self, rec: Record<T>, ctx: &mut OperatorContext) -> Result<()> {
        match &self.late_tag {
            Some(tag) => ctx.side_outputs.emit(tag, rec)?,
            None => self.late_dropped.inc(),
        }
        Ok(())
    }

    fn persist(&mut self, mapping: Vec<(A::W, A::W)>) {
        if mapping.is_empty() {
            self.merging.clear(&mut self.store);
        } else {
            self.merging.set(&mut self.store, mapping);
        }
    }

    fn report_state(&mut self, exact: bool) {
        let (store, timers) = (&self.store, &self.timers);
        self.state_entries.report(exact, || {
            store.total_entries() + timers.event.len() + timers.processing.len()
        });
    }
}

impl<K, T, A, ACC, AOUT, R, F> OneInputOperator<T, R> for WindowOp<K, T, A, ACC, AOUT, R, F>
where
    K: Key,
    T: Data,
    A: WindowAssigner<T>,
    ACC: Data,
    AOUT: 'static,
    R: Data,
    F: ProcessWindowFunction<K, AOUT, R, A::W>,
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
        out: &mut dyn Output<R>,
    ) -> Result<()> {
        self.store.thaw_when_released();
        if self.fast {
            return self.process_fast(rec, None, ctx);
        }
        if self.fast_sessions.is_some() {
            let key = (self.key)(&rec.value);
            return self.process_sessions_fast(key, rec, ctx);
        }
        let key = (self.key)(&rec.value);
        self.store.set_current_key(key);
        let (wm, now) = (ctx.watermark, ctx.clock.now_ms());
        let mut windows = std::mem::take(&mut self.windows);
        windows.clear();
        if let Err(e) = self.assigner.assign(&rec.value, rec.ts, now, &mut windows) {
            return Err(ctx.record_error(e));
        }
        let mut skipped = true;
        let merging = self.assigner.is_merging();
        if merging {
            let mut mapping = self.merging.get(&mut self.store).unwrap_or_default();
            for w in windows.drain(..) {
                let (actual, merges) = self.add_window(&mut mapping, w);
                for m in merges {
                    self.trigger_call(&m.result, wm, now, |t, tc| t.on_merge(&m.merged, tc));
                    for old in &m.merged {
                        self.trigger_call(old, wm, now, |t, tc| t.clear(tc));
                        self.delete_cleanup(old);
                    }
                    self.contents.merge_namespaces(
                        &mut self.store,
                        &m.state_result,
                        &m.merged_state,
                    );
                }
                if self.is_late(&actual, wm) {
                    remove(&mut mapping, &actual);
                    continue;
                }
                skipped = false;
                let state_window =
                    lookup(&mapping, &actual).expect("a live window has a state window");
                self.contents
                    .add_in(&mut self.store, &state_window, rec.value.clone());
                let r = self.trigger_call(&actual, wm, now, |t, tc| {
                    t.on_element(&rec.value, rec.ts, tc)
                });
                self.apply(r, &actual, &state_window, ctx, out)?;
                self.register_cleanup(&actual);
            }
            self.persist(mapping);
        } else {
            for w in windows.drain(..) {
                if self.is_late(&w, wm) {
                    continue;
                }
                skipped = false;
                self.contents.add_in(&mut self.store, &w, rec.value.clone());
                let r =
                    self.trigger_call(&w, wm, now, |t, tc| t.on_element(&rec.value, rec.ts, tc));
                self.apply(r, &w, &w, ctx, out)?;
                self.register_cleanup(&w);
            }
        }
        self.windows = windows;
        // Flink's `isElementLate`: `timestamp + allowedLateness <= watermark` in Java longs
        // (with a huge allowed lateness the sum wraps and the record counts as late).
        if skipped && self.is_event_time() && rec.ts.wrapping_add(self.lateness_ms) <= wm {
            self.late(rec, ctx)?;
        }
        Ok(())
    }

    /// The fast path accumulates a batch in [`BatchAccs`] (one state read and write per key
    /// and window of the batch). Sessions touch the state of [`TOUCH_CHUNK`] records' keys
    /// before working through them, so that their cache misses overlap.
    fn process_batch(
        &mut self,
        batch: &mut Vec<Record<T>>,
        ctx: &mut OperatorContext,
        out: &mut dyn Output<R>,
    ) -> Result<()> {
        if self.fast && self.minibatch.use_for_batch(batch.len()) {
            self.store.thaw_when_released();
            let agg = self.contents.function().clone();
            let n = batch.len();
            let r = weir_types::drain_each(batch, |rec| self.process_fast(rec, Some(&*agg), ctx));
            self.end_batch(n);
            return r;
        }
        if self.fast_sessions.is_none() {
            return weir_types::drain_each(batch, |rec| self.process(rec, ctx, out));
        }
        self.store.thaw_when_released();
        let mut keys = std::mem::take(&mut self.keys);
        keys.extend(batch.iter().map(|r| Some((self.key)(&r.value))));
        let mut r = Ok(());
        let mut recs = batch.drain(..);
        for from in (0..keys.len()).step_by(TOUCH_CHUNK) {
            let to = (from + TOUCH_CHUNK).min(keys.len());
            self.touch_sessions(&keys, from..to);
            for (key, rec) in keys[from..to].iter_mut().zip(recs.by_ref()) {
                if r.is_ok() {
                    let key = key.take().expect("each key is taken once");
                    r = self.process_sessions_fast(key, rec, ctx);
                }
            }
        }
        drop(recs);
        keys.clear();
        self.keys = keys;
        r
    }

    fn on_watermark(
        &mut self,
        wm: Watermark,
        ctx: &mut OperatorContext,
        out: &mut dyn Output<R>,
    ) -> Result<()> {
        if (self.fast || self.fast_sessions.is_some()) && self.is_event_time() {
            self.fire_touched(wm.0, ctx, out)?;
        }
        while let Some((ts, key, w)) = self.timers.event.pop_due(wm.0) {
            self.on_timer(ts, key, w, true, ctx, out)?;
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
        while let Some((ts, key, w)) = self.timers.processing.pop_due(now) {
            self.on_timer(ts, key, w, false, ctx, out)?;
        }
        self.report_state(false);
        Ok(())
    }

    fn end_input(&mut self, _: &mut OperatorContext, _: &mut dyn Output<R>) -> Result<()> {
        self.report_state(true);
        Ok(())
    }
}

impl<K, T, A, ACC, AOUT, R, F> MergePartials<K, A::W, ACC> for WindowOp<K, T, A, ACC, AOUT, R, F>
where
    K: Key,
    T: Data,
    A: WindowAssigner<T>,
    ACC: Data,
    AOUT: 'static,
    R: 'static,
    F: ProcessWindowFunction<K, AOUT, R, A::W>,
{
    /// The fast path (event time, one window per partial) with a partial aggregate.
    fn merge_partial(&mut self, p: Partial<K, A::W, ACC>, ctx: &mut OperatorContext) -> Result<()> {
        debug_assert!(self.fast && self.is_event_time());
        self.store.thaw_when_released();
        if self.is_late(&p.bucket, ctx.watermark) {
            self.late_dropped.add(p.records);
            return Ok(());
        }
        self.store.set_current_key(p.key);
        if self.contents.merge_in(&mut self.store, &p.bucket, p.acc) {
            let k = self.store.current_key().expect("set above").clone();
            Self::register_end(&mut self.timers, true, k, p.bucket);
        }
        Ok(())
    }
    fn touch(&self, pairs: &Vec<(K, A::W)>) {
        std::hint::black_box(self.contents.touch_all_in(&self.store, pairs));
    }
}

/// Keeps the last `keep` records and aggregates them when asked: count windows that slide
/// (Flink's `CountEvictor` in front of the function).
pub(crate) struct KeepLast<T, ACC, AOUT> {
    pub inner: Arc<dyn AggregateFunction<T, ACC, AOUT>>,
    pub keep: usize,
}

impl<T: Data, ACC: 'static, AOUT: 'static> AggregateFunction<T, std::collections::VecDeque<T>, AOUT>
    for KeepLast<T, ACC, AOUT>
{
    fn create_accumulator(&self) -> std::collections::VecDeque<T> {
        std::collections::VecDeque::new()
    }
    fn add(&self, acc: &mut std::collections::VecDeque<T>, v: T) {
        acc.push_back(v);
        while acc.len() > self.keep {
            acc.pop_front();
        }
    }
    fn get_result(&self, acc: &std::collections::VecDeque<T>) -> AOUT {
        let mut a = self.inner.create_accumulator();
        for v in acc {
            self.inner.add(&mut a, v.clone());
        }
        self.inner.get_result(&a)
    }
    fn merge(&self, acc: &mut std::collections::VecDeque<T>, other: std::collections::VecDeque<T>) {
        for v in other {
            self.add(acc, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::OpenSessions;
    use crate::windows::TimeWindow;
    use std::sync::Arc;
    use weir_state::{KeyedStateStore, MemoryBackend, ValueState};
    use weir_types::ManualClock;

    /// Session state written before the first session was kept inline (a `Vec`) restores
    /// through the operator's migration: the same bytes, read as the inline list.
    #[test]
    fn session_state_written_as_a_vec_restores_inline() {
        type Acc = (u64, u64);
        let clock = Arc::new(ManualClock::new(0));
        let mut old: KeyedStateStore<u64> = KeyedStateStore::new(&MemoryBackend, clock.clone());
        let s: ValueState<Vec<(TimeWindow, Acc)>> =
            ValueState::register(&mut old, "session-windows").unwrap();
        let sessions = |k: u64| -> Vec<(TimeWindow, Acc)> {
            (0..k % 3)
                .map(|i| (TimeWindow::new(k as i64 * 100 + i as i64 * 10, 5), (k, i)))
                .collect()
        };
        for k in 0..20u64 {
            old.set_current_key(k);
            s.set(&mut old, sessions(k));
        }
        let blocks = old.snapshot_blocks(128, vec![]);
        let mut new: KeyedStateStore<u64> = KeyedStateStore::new(&MemoryBackend, clock);
        new.migrate::<Vec<(TimeWindow, Acc)>, OpenSessions<TimeWindow, Acc>>(
            "session-windows",
            OpenSessions::from_vec,
        );
        new.restore_blocks(&blocks).unwrap();
        let s2: ValueState<OpenSessions<TimeWindow, Acc>> =
            ValueState::register(&mut new, "session-windows").unwrap();
        for k in 0..20u64 {
            new.set_current_key(k);
            assert_eq!(
                s2.get(&mut new).map(|o| o.into_vec()),
                Some(sessions(k)),
                "key {k}"
            );
        }
    }
}
