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
    let r = env.execute("eos end").unwrap();
    // One transaction per subtask, committed at the end; records and bytes counted.
    assert_eq!(r.metrics.gauge_max("kafka", "transactions_committed"), 2);
    assert_eq!(r.metrics.counter_sum("kafka", "records_out"), 100);
    assert!(r.metrics.counter_sum("kafka", "bytes_out") >= 290);
    let mut got: Vec<String> = read_all(&topic, true)
        .iter()
        .map(|r| r.value_str().into_owned())
        .collect();
    got.sort();
    let mut want = items;
    want.sort();
    assert_eq!(got, want);
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

#[derive(serde::Deserialize, Clone, Debug, PartialEq, serde::Serialize)]
struct Order {
    id: u32,
    amount: f64,
}

#[test]
fn undecodable_records_go_to_a_dead_letter_topic_with_connect_headers() {
    let topic = unique("orders");
    let dlq = unique("orders-dlq");
    create_topic(&topic, 2);
    create_topic(&dlq, 1);
    produce(
        &topic,
        &[
            Rec::new(0, r#"{"id":1,"amount":2.5}"#),
            Rec::new(0, "not json"),
            Rec::new(1, r#"{"id":2,"amount":1.0}"#),
            Rec::new(1, r#"{"id":"three"}"#),
        ],
    );
    let env = StreamEnv::new().with_parallelism(1);
    let out = CollectSink::new();
    let s = env
        .source(KafkaSource::new(bootstrap(), &[&topic], Json::<Order>::new()).bounded())
        .on_bad_record(BadRecordPolicy::DeadLetter);
    s.sink(out.clone());
    s.dead_letters()
        .sink(DeadLetterSink::new(bootstrap(), &dlq));
    env.execute("dead letters").unwrap();
    let mut ids: Vec<u32> = out.values().iter().map(|o: &Order| o.id).collect();
    ids.sort();
    assert_eq!(ids, [1, 2]);
    let mut dl = read_all(&dlq, false);
    dl.sort_by_key(|r| r.header(DEAD_LETTER_HEADER_PARTITION).map(<[u8]>::to_vec));
    assert_eq!(dl.len(), 2);
    let h = |r: &KafkaRecord, n: &str| String::from_utf8(r.header(n).unwrap().to_vec()).unwrap();
    assert_eq!(dl[0].value.as_deref(), Some(&b"not json"[..]));
    assert_eq!(h(&dl[0], DEAD_LETTER_HEADER_TOPIC), topic);
    assert_eq!(h(&dl[0], DEAD_LETTER_HEADER_PARTITION), "0");
    assert_eq!(h(&dl[0], DEAD_LETTER_HEADER_OFFSET), "1");
    assert!(h(&dl[0], DEAD_LETTER_HEADER_ERROR).contains("invalid JSON"));
    assert_eq!(dl[1].value.as_deref(), Some(&br#"{"id":"three"}"#[..]));
    assert_eq!(h(&dl[1], DEAD_LETTER_HEADER_PARTITION), "1");
    assert_eq!(h(&dl[1], DEAD_LETTER_HEADER_OFFSET), "1");
}

#[test]
fn a_bad_record_fails_the_job_naming_its_partition_and_offset() {
    let topic = unique("strict");
    create_topic(&topic, 1);
    produce(&topic, &[Rec::new(0, "{}"), Rec::new(0, "oops")]);
    let env = StreamEnv::new().with_parallelism(1);
    env.source(
        KafkaSource::new(bootstrap(), &[&topic], Json::<serde_json::Value>::new()).bounded(),
    )
    .sink(DiscardSink::new());
    let e = env.execute("strict").unwrap_err().to_string();
    assert!(e.contains(&format!("{topic}-0@1")), "{e}");
}

#[test]
fn start_positions_latest_timestamp_offsets_and_committed() {
    let topic = unique("start");
    create_topic(&topic, 1);
    produce(
        &topic,
        &(0..10)
            .map(|i| Rec::new(0, format!("{i}")).ts(1000 * (i + 1)))
            .collect::<Vec<_>>(),
    );
    let read = |start: StartFrom, group: Option<&str>| -> Vec<String> {
        let env = StreamEnv::new().with_parallelism(1);
        let out = CollectSink::new();
        let mut src = KafkaSource::new(bootstrap(), &[&topic], Utf8)
            .start_from(start)
            .bounded();
        if let Some(g) = group {
            src = src.group_id(g);
        }
        env.source(src).sink(out.clone());
        env.execute("start").unwrap();
        out.values()
    };
    assert_eq!(read(StartFrom::Latest, None), Vec::<String>::new());
    assert_eq!(read(StartFrom::Timestamp(8000), None), ["7", "8", "9"]);
    let offsets = [((topic.clone(), 0), 5)].into_iter().collect();
    assert_eq!(
        read(StartFrom::Offsets(offsets), None),
        ["5", "6", "7", "8", "9"]
    );
    // No committed offset: the fallback (earliest). A bounded job without checkpoints
    // commits nothing, so the group still has none afterwards.
    let g = unique("start-group");
    let c = StartFrom::Committed {
        fallback_latest: false,
    };
    assert_eq!(read(c.clone(), Some(&g)).len(), 10);
    let latest = StartFrom::Committed {
        fallback_latest: true,
    };
    assert_eq!(read(latest, Some(&g)).len(), 0);
}

#[test]
fn a_topic_pattern_reads_every_matching_topic() {
    let base = unique("pat");
    let (a, b, other) = (
        format!("{base}-a-in"),
        format!("{base}-b-in"),
        format!("{base}-c-out"),
    );
    for t in [&a, &b, &other] {
        create_topic(t, 2);
        produce(t, &[Rec::new(0, t.as_bytes()), Rec::new(1, t.as_bytes())]);
    }
    let env = StreamEnv::new().with_parallelism(2);
    let out = CollectSink::new();
    let src = KafkaSource::pattern(bootstrap(), &format!("{base}-.*-in"), Utf8)
        .unwrap()
        .bounded();
    env.source(src).sink(out.clone());
    env.execute("pattern").unwrap();
    let mut v = out.values();
    v.sort();
    assert_eq!(v, [a.clone(), a, b.clone(), b]);
}

#[test]
fn per_record_topics_and_partitioning_by_key() {
    let (t1, t2) = (unique("route-a"), unique("route-b"));
    create_topic(&t1, 4);
    create_topic(&t2, 4);
    let env = StreamEnv::new().with_parallelism(2);
    let items: Vec<u32> = (0..200).collect();
    let (a, b) = (t1.clone(), t2.clone());
    env.from_collection(items).rebalance().sink(
        KafkaSink::per_record_topic(bootstrap(), move |i: &u32| {
            let topic = if i.is_multiple_of(2) { &a } else { &b };
            Ok(KafkaMessage::value(i.to_string())
                .with_key(format!("k{}", i % 10))
                .with_topic(topic.as_str()))
        })
        .delivery(DeliveryGuarantee::AtLeastOnce),
    );
    env.execute("routing").unwrap();
    for (t, parity) in [(&t1, 0), (&t2, 1)] {
        let recs = read_all(t, false);
        assert_eq!(recs.len(), 100);
        let mut part_of_key: BTreeMap<Vec<u8>, i32> = BTreeMap::new();
        for r in &recs {
            let v: u32 = r.value_str().parse().unwrap();
            assert_eq!(v % 2, parity);
            let p = *part_of_key
                .entry(r.key.clone().unwrap())
                .or_insert(r.partition);
            assert_eq!(p, r.partition, "a key in two partitions");
        }
        assert!(
            part_of_key
                .values()
                .collect::<std::collections::BTreeSet<_>>()
                .len()
                > 1
        );
    }
}

#[test]
fn an_at_least_once_delivery_error_fails_the_job() {
    let topic = unique("too-large");
    create_topic(&topic, 1);
    let env = StreamEnv::new().with_parallelism(1);
    // The broker refuses records over ~1 MB; librdkafka is told to send up to 5 MB.
    env.from_collection(vec![vec![b'x'; 2_000_000]])
        .sink(KafkaSink::bytes(bootstrap(), &topic).property("message.max.bytes", "5000000"));
    let e = env.execute("too large").unwrap_err().to_string();
    assert!(e.contains("kafka: delivering a record"), "{e}");
}
