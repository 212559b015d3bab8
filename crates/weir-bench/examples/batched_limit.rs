//! How fast `projfilter` can go when rows are materialized in batches, as any batch-at-a-time
//! engine (Weir included) does, next to the hand-written loop that never stores a row: the
//! same rows and work (`BenchEvent::of`, keep `price > 5000`, project), once fused in one loop,
//! once as "generate a batch of records into a vector, retain, map into another vector, read
//! it", with no engine at all. Prints ns/row for both and their ratio, for batches of 256, 1024
//! and 4096 records.
//!
//!     cargo run --release -p weir-bench --example batched_limit
use std::hint::black_box;
use std::time::Instant;
use weir::prelude::BenchEvent;
use weir::Record;
use weir_bench::checksum::Proj;

#[inline(never)]
fn fused(n: u64, keys: u64) -> u64 {
    let mut c = 0;
    for id in 0..n {
        let e = BenchEvent::of(id, keys);
        if e.price > 5000 {
            black_box(&Proj::of(&e));
            c += 1;
        }
    }
    c
}

#[inline(never)]
fn fill(buf: &mut Vec<Record<BenchEvent>>, first: u64, n: u64, keys: u64) {
    buf.extend((0..n).map(|i| {
        let v = BenchEvent::of(first + i, keys);
        Record {
            ts: v.ts_ms,
            value: v,
        }
    }))
}

#[inline(never)]
fn batched(n: u64, keys: u64, batch: usize) -> u64 {
    let mut buf: Vec<Record<BenchEvent>> = Vec::with_capacity(batch);
    let mut out: Vec<Record<Proj>> = Vec::with_capacity(batch);
    let (mut c, mut first) = (0, 0);
    while first < n {
        let m = (n - first).min(batch as u64);
        fill(&mut buf, first, m, keys);
        first += m;
        buf.retain(|r| r.value.price > 5000);
        out.extend(buf.drain(..).map(|r| Record {
            ts: r.ts,
            value: Proj::of(&r.value),
        }));
        for r in out.drain(..) {
            black_box(&r);
            c += 1;
        }
    }
    c
}

fn main() {
    let (n, keys) = (200_000_000u64, 1_000_000u64);
    for _ in 0..3 {
        let t = Instant::now();
        let c = fused(n, keys);
        let f = t.elapsed().as_secs_f64() * 1e9 / n as f64;
        for b in [256usize, 1024, 4096] {
            let t = Instant::now();
            assert_eq!(batched(n, keys, b), c);
            let m = t.elapsed().as_secs_f64() * 1e9 / n as f64;
            println!(
                "fused loop {f:.2} ns/row  batched({b}) {m:.2} ns/row  ratio {:.2}",
                f / m
            );
        }
    }
}
