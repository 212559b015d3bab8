//! HeapTable against a plain hashbrown map, single-threaded: upserts of random keys.
//!
//!     cargo run --release -p weir-state --example table_bench
use std::hint::black_box;
use std::time::Instant;
use weir_state::{HeapTable, Table};

fn main() {
    let keys: u64 = 1_000_000;
    let n: u64 = 20_000_000;
    let key = |id: u64| ((id.wrapping_mul(2_654_435_761) & 0xFFFF_FFFF) * keys) >> 32;
    for round in 0..3 {
        let mut m: hashbrown::HashMap<(u64, ()), (u64, u64)> = hashbrown::HashMap::new();
        let t = Instant::now();
        for id in 0..n {
            let a = m.entry((key(id), ())).or_insert((0, 0));
            a.0 += 1;
            a.1 += id;
            black_box(&*a);
        }
        let plain = t.elapsed().as_nanos() as f64 / n as f64;
        let mut h: HeapTable<u64, (), (u64, u64)> = HeapTable::default();
        let t = Instant::now();
        for id in 0..n {
            h.upsert(&key(id), &(), &mut |v| match v {
                Some(a) => {
                    a.0 += 1;
                    a.1 += id;
                    black_box(&*a);
                    None
                }
                None => Some((1, id)),
            });
        }
        let heap = t.elapsed().as_nanos() as f64 / n as f64;
        println!(
            "round {round}: hashbrown map {plain:.1} ns/op, HeapTable {heap:.1} ns/op ({} / {})",
            m.len(),
            h.len()
        );
    }
}
