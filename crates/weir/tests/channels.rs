//! Channels between tasks carry the records themselves by default and encoded bytes when asked
//! (as a channel to another process will): every kind of exchange gives the same results both
//! ways, for values that own heap memory and for plain ones.
use weir::prelude::*;

/// Word counts per key through a hash exchange, plus a rebalance and a broadcast, with
/// parallelism 3: (word, count) updates, the rebalanced lengths, the broadcast copies.
fn run(encoded: bool) -> (Vec<(String, u64)>, Vec<u64>, usize) {
    let env = StreamEnv::new()
        .with_parallelism(3)
        .with_buffers(256, 7, 2)
        .with_encoded_channels(encoded);
    let words = env.source(Datagen::new(5_000, |id, rng| {
        format!("w{}-{}", id % 37, "x".repeat(rng.below(20) as usize))
    }));
    let counts = CollectSink::new();
    words
        .map(|w: String| (w.split('-').next().unwrap().to_string(), 1u64))
        .key_by(|p: &(String, u64)| p.0.clone())
        .reduce(|a, b| (a.0, a.1 + b.1))
        .sink(counts.clone());
    let lengths = CollectSink::new();
    words
        .rebalance()
        .map(|w: String| w.len() as u64)
        .sink(lengths.clone());
    let copies = CollectSink::new();
    words
        .broadcast()
        .map(|w: String| w.len())
        .sink(copies.clone());
    env.execute("channels").unwrap();
    let mut c = counts.values();
    c.sort();
    let mut l = lengths.values();
    l.sort();
    (c, l, copies.len())
}

#[test]
fn typed_and_encoded_channels_give_the_same_results() {
    let typed = run(false);
    let encoded = run(true);
    assert_eq!(typed, encoded);
    let (counts, lengths, copies) = typed;
    assert_eq!(counts.len(), 5_000, "one update per word");
    // Per prefix, the updates count 1, 2, ..., n: every word arrived exactly once.
    for p in 0..37u64 {
        let key = format!("w{p}");
        let mut seen: Vec<u64> = counts
            .iter()
            .filter(|(w, _)| *w == key)
            .map(|x| x.1)
            .collect();
        seen.sort();
        let n = (0..5_000u64).filter(|i| i % 37 == p).count() as u64;
        assert_eq!(seen, (1..=n).collect::<Vec<_>>(), "{key}");
    }
    assert_eq!(lengths.len(), 5_000);
    assert!(lengths.iter().all(|&l| (3..=23).contains(&l)));
    assert_eq!(copies, 3 * 5_000, "a broadcast reaches every subtask");
}
