//! The Kafka connector against a real broker (started through `scripts/services`).
mod common;
use common::*;
use std::collections::BTreeMap;
use weir::prelude::*;
use weir_kafka::*;

#[test]
fn bounded_source_reads_every_partition_once_across_subtasks() {
    let topic = unique("bounded");
    create_topic(&topic, 3);
    let recs: Vec<Rec> = (0..30).map(|i| Rec::new(i % 3, format!("v{i}"))).collect();
    produce(&topic, &recs);
    let env = StreamEnv::new().with_parallelism(2);
    let out = CollectSink::new();
    env.source(KafkaSource::new(bootstrap(), &[&topic], Raw).bounded())
        .sink(out.clone());
    env.execute("bounded").unwrap();
    let mut got: Vec<String> = out
        .values()
        .iter()
        .map(|r: &KafkaRecord| r.value_str().into_owned())
        .collect();
    got.sort();
    let mut want: Vec<String> = (0..30).map(|i| format!("v{i}")).collect();
    want.sort();
    assert_eq!(got, want);
    // Offsets per partition are 0..10 and in order.
    let mut by_part: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for r in out.values() {
        by_part.entry(r.partition).or_default().push(r.offset);
    }
    for (_, offs) in by_part {
        assert_eq!(offs, (0..10).collect::<Vec<_>>());
    }
}

#[test]
fn exactly_once_sink_without_checkpoints_commits_at_the_end() {
    let topic = unique("eos-end");
    create_topic(&topic, 2);
    let env = StreamEnv::new().with_parallelism(2);
    let items: Vec<String> = (0..100).map(|i| format!("r{i}")).collect();
    env.from_collection(items.clone())
        .rebalance()
        .sink(KafkaSink::strings(bootstrap(), &topic).exactly_once(unique("eos-end-tx")));
    env.execute("eos end").unwrap();
    let mut got: Vec<String> = read_all(&topic, true)
        .iter()
        .map(|r| r.value_str().into_owned())
        .collect();
    got.sort();
    let mut want = items;
    want.sort();
    assert_eq!(got, want);
}

/// Waits until `f` holds (or panics after `secs`).
fn wait_until(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !f() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn unbounded_source_reads_records_that_arrive_later() {
    let topic = unique("unbounded");
    create_topic(&topic, 2);
    produce(&topic, &[Rec::new(0, "a"), Rec::new(1, "b")]);
    let env = StreamEnv::new().with_parallelism(1);
    let out = CollectSink::new();
    env.source(KafkaSource::new(bootstrap(), &[&topic], Utf8))
        .sink(out.clone());
    let job = env.execute_async("unbounded").unwrap();
    wait_until(30, "the first records", || out.len() == 2);
    produce(&topic, &[Rec::new(0, "c"), Rec::new(1, "d")]);
    wait_until(30, "later records", || out.len() == 4);
    job.cancel();
    let _ = job.join();
    let mut v = out.values();
    v.sort();
    assert_eq!(v, ["a", "b", "c", "d"]);
}
