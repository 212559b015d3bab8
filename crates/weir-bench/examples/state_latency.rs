//! Why keyed state is slow at one record at a time: the groupby loop over a 1M-key hash table
//! (Weir's heap-table entry layout), as is and with a fence after every event. The fence stops
//! the CPU from overlapping the cache misses of consecutive lookups, as a long per-record code
//! path (decode, dispatch, state handle, collector) does in the engine.
//!
//!     cargo run --release -p weir-bench --example state_latency
use hashbrown::HashMap;
use std::hint::black_box;
use std::time::Instant;
use weir::prelude::BenchEvent;

fn main() {
    let (n, keys) = (10_000_000u64, 1_000_000u64);
    for serialize in [false, true, false, true] {
        // (key, namespace) -> value: HeapTable's layout for ValueState<(u64, u64)> without TTL.
        let mut table: HashMap<(u64, ()), (u64, u64)> = HashMap::new();
        let t = Instant::now();
        for id in 0..n {
            let e = BenchEvent::of(id, keys);
            if serialize {
                // SAFETY: lfence has no preconditions.
                #[cfg(target_arch = "x86_64")]
                unsafe {
                    core::arch::x86_64::_mm_lfence()
                };
            }
            let acc = table.entry((e.k, ())).or_insert((0, 0));
            acc.0 += 1;
            acc.1 += e.price as u64;
            black_box(&(e.k, acc.0, acc.1));
        }
        let el = t.elapsed();
        println!(
            "{:<34} {:6.1} ns/event ({} keys)",
            if serialize {
                "one lookup in flight (lfence)"
            } else {
                "lookups overlapping (plain loop)"
            },
            el.as_nanos() as f64 / n as f64,
            table.len()
        );
    }
}
