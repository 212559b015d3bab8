//! Weir's output equals the hand-written loop's on the same rows, for every workload, at
//! parallelism 1 and 2 (small N: runs in CI, debug build).
use weir::StreamEnv;
use weir_bench::{run_limit, run_weir, Output, Workload};

#[test]
fn weir_matches_the_limit_loop() {
    for wl in Workload::ALL {
        for (n, k) in [(20_000u64, 1_000u64), (5_001, 100_000)] {
            let want = run_limit(wl, n, k, Output::Checksum).checksum.unwrap();
            assert!(want.emitted > 0);
            for p in [1, 2] {
                let env = StreamEnv::new().with_parallelism(p);
                let got = run_weir(&env, wl, n, k, Output::Checksum).unwrap();
                let c = got.checksum.unwrap();
                assert_eq!(
                    c.comparable(wl, p),
                    want.comparable(wl, p),
                    "{} n={n} k={k} p={p}",
                    wl.name()
                );
                // The discarding run emits as many records.
                let env = StreamEnv::new().with_parallelism(p);
                let d = run_weir(&env, wl, n, k, Output::Discard).unwrap();
                assert_eq!(d.emitted, want.emitted, "{} n={n} k={k} p={p}", wl.name());
            }
        }
    }
}

#[test]
fn limit_loop_matches_the_harness_formulas() {
    // projfilter keeps price > 5000: exactly half of every 10,000 consecutive ids.
    let c = run_limit(Workload::Projfilter, 10_000, 10, Output::Checksum)
        .checksum
        .unwrap();
    assert_eq!(c.v[0], 5_000);
    // groupby: every event counted once, every key's count summed.
    let c = run_limit(Workload::Groupby, 10_000, 10, Output::Checksum)
        .checksum
        .unwrap();
    assert_eq!((c.emitted, c.v[0], c.v[1]), (10_000, 10, 10_000));
}
