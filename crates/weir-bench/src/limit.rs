//! The physical limit: each workload as a hand-written single-threaded loop over the same rows,
//! with no engine in between. `emit` receives every output row; pass a closure that
//! `black_box`es it (timing) or folds it into a [`crate::checksum::Summary`] (checking).
use crate::checksum::{CountSum, Proj};
use crate::{sparse_event, WinAvg, WinCountSum, HOP_MS, SESSION_GAP_MS, TUMBLE_MS};
use hashbrown::{HashMap, HashSet};
use std::collections::VecDeque;
use weir::prelude::BenchEvent;

/// `SELECT id, k, price, ts FROM events`.
#[inline(never)]
pub fn passthrough(n: u64, keys: u64, mut emit: impl FnMut(&BenchEvent)) {
    for id in 0..n {
        emit(&BenchEvent::of(id, keys));
    }
}

/// `SELECT id, k, price * 0.908, ts FROM events WHERE price > 5000`.
#[inline(never)]
pub fn projfilter(n: u64, keys: u64, mut emit: impl FnMut(&Proj)) {
    for id in 0..n {
        let e = BenchEvent::of(id, keys);
        if e.price > 5000 {
            emit(&Proj::of(&e));
        }
    }
}

/// `SELECT k, COUNT(*), SUM(price) FROM events GROUP BY k`, every update emitted. Returns the
/// number of keys (so the table is not optimized away).
#[inline(never)]
pub fn groupby(n: u64, keys: u64, mut emit: impl FnMut(&CountSum)) -> usize {
    let mut table: HashMap<u64, (u64, u64)> = HashMap::new();
    for id in 0..n {
        let e = BenchEvent::of(id, keys);
        let acc = table.entry(e.k).or_insert((0, 0));
        acc.0 += 1;
        acc.1 += e.price as u64;
        emit(&(e.k, acc.0, acc.1));
    }
    table.len()
}

/// The first row of each key (`ROW_NUMBER() OVER (PARTITION BY k ORDER BY proctime) = 1`).
/// Returns the number of keys.
#[inline(never)]
pub fn dedup(n: u64, keys: u64, mut emit: impl FnMut(&BenchEvent)) -> usize {
    let mut seen: HashSet<u64> = HashSet::new();
    for id in 0..n {
        let e = BenchEvent::of(id, keys);
        if seen.insert(e.k) {
            emit(&e);
        }
    }
    seen.len()
}

/// Event-time windows of `size_ms` sliding by `slide_ms` (tumbling when equal) over rows in
/// timestamp order, with a watermark of `ts − 1 s − 1 ms`: per open window a map key →
/// (count, sum of price); a window's results go to `fire(k, start, acc)` once the watermark
/// passes its end, the rest at the end of input. Returns the number of windows fired.
#[inline(always)]
fn windowed(
    n: u64,
    keys: u64,
    size_ms: i64,
    slide_ms: i64,
    mut fire: impl FnMut(u64, i64, (u64, u64)),
) -> usize {
    type Pane = HashMap<u64, (u64, u64)>;
    let mut open: VecDeque<(i64, Pane)> = VecDeque::new();
    let mut spare: Vec<Pane> = Vec::new();
    let per_record = (size_ms / slide_ms) as usize;
    let mut fired = 0;
    let mut flush = |start: i64, mut pane: Pane, spare: &mut Vec<Pane>| {
        for (k, acc) in pane.drain() {
            fire(k, start, acc);
        }
        spare.push(pane);
    };
    for id in 0..n {
        let e = BenchEvent::of(id, keys);
        let last = e.ts_ms - e.ts_ms.rem_euclid(slide_ms);
        while open.back().is_none_or(|w| w.0 < last) {
            let start = open
                .back()
                .map_or(last - size_ms + slide_ms, |w| w.0 + slide_ms);
            open.push_back((start, spare.pop().unwrap_or_default()));
        }
        let skip = open.len().saturating_sub(per_record);
        for (start, pane) in open.iter_mut().skip(skip) {
            if *start > e.ts_ms - size_ms {
                let acc = pane.entry(e.k).or_insert((0, 0));
                acc.0 += 1;
                acc.1 += e.price as u64;
            }
        }
        let wm = e.ts_ms - 1_001;
        while open.front().is_some_and(|w| w.0 + size_ms - 1 <= wm) {
            let (start, pane) = open.pop_front().unwrap();
            fired += 1;
            flush(start, pane, &mut spare);
        }
    }
    for (start, pane) in open.drain(..) {
        fired += 1;
        flush(start, pane, &mut spare);
    }
    fired
}

/// `tumble`: per key and 1 s window, count and sum of price.
#[inline(never)]
pub fn tumble(n: u64, keys: u64, mut emit: impl FnMut(&WinCountSum)) -> usize {
    windowed(n, keys, TUMBLE_MS, TUMBLE_MS, |k, start, (cnt, sum)| {
        emit(&(k, start, start + TUMBLE_MS, cnt, sum))
    })
}

/// `hop`: per key and 10 s window sliding by 2 s, the average price. By slices, as the fastest
/// engines do: each record updates the (count, sum) of its 2 s slice; a window merges its 5
/// slices when the watermark passes its end. Returns the number of windows fired.
#[inline(never)]
pub fn hop(n: u64, keys: u64, mut emit: impl FnMut(&WinAvg)) -> usize {
    let (size, slide) = HOP_MS;
    type Pane = HashMap<u64, (u64, u64)>;
    let mut slices: VecDeque<(i64, Pane)> = VecDeque::new();
    let mut spare: Vec<Pane> = Vec::new();
    let mut merged: Pane = HashMap::new();
    let mut next_end: Option<i64> = None;
    let mut fired = 0;
    // Fires the window ending at `end` and drops its first slice.
    let mut fire = |end: i64, slices: &mut VecDeque<(i64, Pane)>, spare: &mut Vec<Pane>| {
        let start = end - size;
        for (s, pane) in slices.iter() {
            if *s >= start && *s < end {
                for (k, a) in pane {
                    let m = merged.entry(*k).or_insert((0, 0));
                    m.0 += a.0;
                    m.1 += a.1;
                }
            }
        }
        if !merged.is_empty() {
            fired += 1;
        }
        for (k, (cnt, sum)) in merged.drain() {
            emit(&(k, start, end, sum as f64 / cnt as f64));
        }
        while slices.front().is_some_and(|s| s.0 <= start) {
            let (_, mut pane) = slices.pop_front().unwrap();
            pane.clear();
            spare.push(pane);
        }
    };
    for id in 0..n {
        let e = BenchEvent::of(id, keys);
        let slice = e.ts_ms - e.ts_ms.rem_euclid(slide);
        if slices.back().is_none_or(|s| s.0 < slice) {
            slices.push_back((slice, spare.pop().unwrap_or_default()));
        }
        let next = *next_end.get_or_insert(slice + slide);
        let acc = slices.back_mut().unwrap().1.entry(e.k).or_insert((0, 0));
        acc.0 += 1;
        acc.1 += e.price as u64;
        let wm = e.ts_ms - 1_001;
        let mut end = next;
        while end - 1 <= wm {
            fire(end, &mut slices, &mut spare);
            end += slide;
        }
        next_end = Some(end);
    }
    if let Some(mut end) = next_end {
        while !slices.is_empty() {
            fire(end, &mut slices, &mut spare);
            end += slide;
        }
    }
    fired
}

/// `session`: per key, sessions of events at most 1 s apart (touching windows merge, as in
/// Flink), count and sum of price, over the sparser rows. Returns the number of keys.
#[inline(never)]
pub fn session(n: u64, keys: u64, mut emit: impl FnMut(&WinCountSum)) -> usize {
    let gap = SESSION_GAP_MS;
    // key → (start, last timestamp, count, sum)
    let mut open: HashMap<u64, (i64, i64, u64, u64)> = HashMap::new();
    for id in 0..n {
        let e = sparse_event(id, keys);
        let s = open.entry(e.k).or_insert((e.ts_ms, e.ts_ms, 0, 0));
        if e.ts_ms > s.1 + gap {
            emit(&(e.k, s.0, s.1 + gap, s.2, s.3));
            *s = (e.ts_ms, e.ts_ms, 0, 0);
        }
        s.1 = s.1.max(e.ts_ms);
        s.2 += 1;
        s.3 += e.price as u64;
    }
    let keys_seen = open.len();
    for (k, (start, last, cnt, sum)) in open {
        emit(&(k, start, last + gap, cnt, sum));
    }
    keys_seen
}
