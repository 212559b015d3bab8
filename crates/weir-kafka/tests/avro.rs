//! Avro through a real broker: the sink writes it, the source reads it back into the same serde
//! type; bad Avro is a dead letter with its raw bytes; Confluent's framing both ways.
mod common;
use common::*;
use serde::{Deserialize, Serialize};
use weir::prelude::*;
use weir_kafka::*;

const SCHEMA: &str = r#"{
    "type": "record", "name": "Reading", "namespace": "weir.test",
    "fields": [
        {"name": "sensor", "type": "string"},
        {"name": "seq", "type": "long"},
        {"name": "celsius", "type": "double"},
        {"name": "note", "type": ["null", "string"], "default": null}
    ]}"#;

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Reading {
    sensor: String,
    seq: i64,
    celsius: f64,
    note: Option<String>,
}

fn readings(n: i64) -> Vec<Reading> {
    (0..n)
        .map(|i| Reading {
            sensor: format!("s{}", i % 3),
            seq: i,
            celsius: 20.0 + i as f64 / 4.0,
            note: (i % 5 == 0).then(|| format!("n{i}")),
        })
        .collect()
}

/// Writes `items` with `avro` through the sink, then reads the topic back with the source.
fn round_trip(avro: Avro<Reading>, items: Vec<Reading>) -> (Vec<Reading>, Vec<KafkaRecord>) {
    let topic = unique("avro");
    create_topic(&topic, 2);
    let env = StreamEnv::new().with_parallelism(2);
    env.from_collection(items).rebalance().sink(KafkaSink::avro(
        bootstrap(),
        &topic,
        avro.clone(),
        Some(|r: &Reading| r.sensor.clone().into_bytes()),
    ));
    env.execute("avro out").unwrap();
    let env = StreamEnv::new().with_parallelism(2);
    let out = CollectSink::new();
    env.source(KafkaSource::new(bootstrap(), &[&topic], avro).bounded())
        .sink(out.clone());
    env.execute("avro in").unwrap();
    let mut got = out.values();
    got.sort_by_key(|r: &Reading| r.seq);
    (got, read_all(&topic, false))
}

#[test]
fn avro_round_trip_through_the_broker() {
    let (got, raw) = round_trip(Avro::new(SCHEMA).unwrap(), readings(50));
    assert_eq!(got, readings(50));
    // Plain Avro binary: the first field is the sensor name's length (zig-zag) and bytes.
    let r = raw
        .iter()
        .find(|r| r.key.as_deref() == Some(b"s1"))
        .unwrap();
    assert_eq!(&r.value.as_deref().unwrap()[..3], &[4, b's', b'1']);
}

#[test]
fn confluent_framing_round_trip() {
    let (got, raw) = round_trip(Avro::confluent(SCHEMA, 7).unwrap(), readings(20));
    assert_eq!(got, readings(20));
    for r in raw {
        assert_eq!(&r.value.as_deref().unwrap()[..5], &[0, 0, 0, 0, 7]);
    }
}

#[test]
fn malformed_avro_is_dead_lettered_with_its_raw_bytes() {
    let (topic, dlq) = (unique("avro-bad"), unique("avro-bad-dlq"));
    create_topic(&topic, 1);
    create_topic(&dlq, 1);
    let avro = Avro::<Reading>::confluent(SCHEMA, 7).unwrap();
    let mut good = readings(2).into_iter().map(|r| avro.encode(&r).unwrap());
    let wrong_id = Avro::<Reading>::confluent(SCHEMA, 8)
        .unwrap()
        .encode(&readings(1)[0])
        .unwrap();
    let truncated = avro.encode(&readings(1)[0]).unwrap()[..8].to_vec();
    produce(
        &topic,
        &[
            Rec::new(0, good.next().unwrap()),
            Rec::new(0, truncated.clone()),
            Rec::new(0, wrong_id.clone()),
            Rec::new(0, good.next().unwrap()),
        ],
    );
    let env = StreamEnv::new().with_parallelism(1);
    let out = CollectSink::new();
    let s = env
        .source(KafkaSource::new(bootstrap(), &[&topic], avro).bounded())
        .on_bad_record(BadRecordPolicy::DeadLetter);
    s.sink(out.clone());
    s.dead_letters()
        .sink(DeadLetterSink::new(bootstrap(), &dlq));
    env.execute("bad avro").unwrap();
    assert_eq!(out.values(), readings(2));
    let mut dl = read_all(&dlq, false);
    dl.sort_by_key(|r| r.header(DEAD_LETTER_HEADER_OFFSET).map(<[u8]>::to_vec));
    assert_eq!(dl.len(), 2);
    let h = |r: &KafkaRecord, n: &str| String::from_utf8(r.header(n).unwrap().to_vec()).unwrap();
    assert_eq!(dl[0].value.as_deref(), Some(&truncated[..]));
    assert_eq!(h(&dl[0], DEAD_LETTER_HEADER_TOPIC), topic);
    assert_eq!(h(&dl[0], DEAD_LETTER_HEADER_PARTITION), "0");
    assert_eq!(h(&dl[0], DEAD_LETTER_HEADER_OFFSET), "1");
    assert!(
        h(&dl[0], DEAD_LETTER_HEADER_ERROR).contains("invalid Avro"),
        "{}",
        h(&dl[0], DEAD_LETTER_HEADER_ERROR)
    );
    assert_eq!(dl[1].value.as_deref(), Some(&wrong_id[..]));
    assert_eq!(h(&dl[1], DEAD_LETTER_HEADER_OFFSET), "2");
    assert!(h(&dl[1], DEAD_LETTER_HEADER_ERROR).contains("schema id 8"));
}
