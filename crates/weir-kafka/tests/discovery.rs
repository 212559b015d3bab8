//! Partition discovery against a real broker: partitions added to a topic and topics created
//! that match the pattern are read while the job runs, and their offsets are checkpointed.
mod common;
use common::*;
use std::time::Duration;
use weir::prelude::*;
use weir_kafka::*;
use weir_runtime::restart::RestoreFrom;

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn new_partitions_and_matching_topics_are_read_and_checkpointed() {
    let base = unique("disc");
    let (a, b) = (format!("{base}-a"), format!("{base}-b"));
    create_topic(&a, 2);
    produce(&a, &[Rec::new(0, "a0-1"), Rec::new(1, "a1-1")]);
    let group = unique("disc-group");
    let dir = tempfile::tempdir().unwrap();
    let source = || {
        KafkaSource::pattern(bootstrap(), &format!("{base}-.*"), Utf8)
            .unwrap()
            .group_id(&group)
            .discover_partitions_every(Duration::from_millis(300))
    };
    let env = StreamEnv::new()
        .with_parallelism(2)
        .with_checkpointing(dir.path(), Duration::from_millis(200))
        .unwrap();
    let out = CollectSink::new();
    env.source(source()).uid("src").sink(out.clone()).uid("out");
    let job = env.execute_async("discovery").unwrap();
    wait_until(60, "the first records", || out.len() == 2);

    // While it runs: two more partitions of `a`, and a new topic `b` matching the pattern.
    add_partitions(&a, 4);
    create_topic(&b, 2);
    produce(&a, &[Rec::new(2, "a2-1"), Rec::new(3, "a3-1")]);
    produce(&b, &[Rec::new(0, "b0-1"), Rec::new(1, "b1-1")]);
    wait_until(60, "the records of the discovered partitions", || {
        out.len() >= 6
    });
    // Offsets are committed to the group when a checkpoint holding them completes.
    wait_until(60, "a checkpoint with the discovered partitions", || {
        group_offsets(&group, &a, 4) == [1, 1, 1, 1] && group_offsets(&group, &b, 2) == [1, 1]
    });
    job.cancel();
    let _ = job.join();
    assert_eq!(
        sorted(out.values()),
        ["a0-1", "a1-1", "a2-1", "a3-1", "b0-1", "b1-1"]
    );

    // Restored (at another parallelism, bounded so that it ends): only what came after.
    let more: Vec<String> = (0..4)
        .map(|p| format!("a{p}-2"))
        .chain((0..2).map(|p| format!("b{p}-2")))
        .collect();
    produce(
        &a,
        &(0..4)
            .map(|p| Rec::new(p, format!("a{p}-2")))
            .collect::<Vec<_>>(),
    );
    produce(
        &b,
        &(0..2)
            .map(|p| Rec::new(p, format!("b{p}-2")))
            .collect::<Vec<_>>(),
    );
    let env = StreamEnv::new()
        .with_parallelism(3)
        .with_checkpointing(dir.path(), Duration::from_millis(200))
        .unwrap()
        .with_restore(RestoreFrom::Latest);
    let out = CollectSink::new();
    env.source(source().bounded())
        .uid("src")
        .sink(out.clone())
        .uid("out");
    let r = env.execute("discovery restored").unwrap();
    assert!(r.restored_from.is_some());
    assert_eq!(sorted(out.values()), sorted(more));
}

#[test]
fn discovery_off_reads_only_the_partitions_found_at_start() {
    let topic = unique("no-disc");
    create_topic(&topic, 1);
    produce(&topic, &[Rec::new(0, "p0")]);
    let env = StreamEnv::new().with_parallelism(1);
    let out = CollectSink::new();
    env.source(
        KafkaSource::new(bootstrap(), &[&topic], Utf8).discover_partitions_every(Duration::ZERO),
    )
    .sink(out.clone());
    let job = env.execute_async("no discovery").unwrap();
    wait_until(60, "the first record", || out.len() == 1);
    add_partitions(&topic, 2);
    produce(&topic, &[Rec::new(1, "p1"), Rec::new(0, "p0-2")]);
    // The record of partition 0 produced after the one of partition 1 arrives; that of the
    // new partition 1 never does.
    wait_until(60, "the second record of partition 0", || out.len() >= 2);
    std::thread::sleep(Duration::from_millis(500));
    job.cancel();
    let _ = job.join();
    assert_eq!(sorted(out.values()), ["p0", "p0-2"]);
}
