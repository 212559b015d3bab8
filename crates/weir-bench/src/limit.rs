//! The physical limit: each workload as a hand-written single-threaded loop over the same rows,
//! with no engine in between. `emit` receives every output row; pass a closure that
//! `black_box`es it (timing) or folds it into a [`crate::checksum::Summary`] (checking).
use crate::checksum::{CountSum, Proj};
use hashbrown::{HashMap, HashSet};
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
