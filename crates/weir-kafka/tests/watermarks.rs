//! Per-partition watermarks, idleness and watermark alignment of the Kafka source, observed
//! through event-time timers: a timer at `t` fires once the watermark reaches `t`.
mod common;
use common::*;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use weir::prelude::*;
use weir_kafka::*;

/// Registers an event-time timer at each record's timestamp; emits the timers that fired.
#[derive(Clone, Default)]
struct FireAt;

impl KeyedProcessFunction<u8, KafkaRecord, i64> for FireAt {
    fn process_element(
        &mut self,
        r: KafkaRecord,
        ctx: &mut KeyedContext<'_, u8>,
        _: &mut Collector<'_, i64>,
    ) -> FnResult {
        ctx.register_event_time_timer(r.timestamp.unwrap());
        Ok(())
    }
    fn on_timer(
        &mut self,
        ts: i64,
        _: &mut KeyedContext<'_, u8>,
        out: &mut Collector<'_, i64>,
    ) -> FnResult {
        out.collect(ts);
        Ok(())
    }
}

fn wait_until(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn fired(out: &CollectSink<i64>) -> Vec<i64> {
    let mut v = out.values();
    v.sort();
    v
}

fn timer_job(
    topic: &str,
    strategy: WatermarkStrategy<KafkaRecord>,
) -> (weir::JobHandle, CollectSink<i64>) {
    let env = StreamEnv::new().with_parallelism(1);
    let out = CollectSink::new();
    env.source(KafkaSource::new(bootstrap(), &[topic], Raw))
        .assign_timestamps(strategy)
        .key_by(|_: &KafkaRecord| 0u8)
        .process(FireAt)
        .sink(out.clone());
    (env.execute_async("timers").unwrap(), out)
}

#[test]
fn the_watermark_is_the_minimum_over_partitions_and_a_lagging_one_holds_it_back() {
    let topic = unique("wm-lag");
    create_topic(&topic, 2);
    // Partition 0 runs ahead to t=10 000; partition 1 lags at t=1 000.
    let mut recs: Vec<Rec> = (1..=10).map(|i| Rec::new(0, "x").ts(i * 1000)).collect();
    recs.push(Rec::new(1, "y").ts(1000));
    produce(&topic, &recs);
    let (job, out) = timer_job(
        &topic,
        WatermarkStrategy::bounded_out_of_orderness(Duration::ZERO),
    );
    // Watermark = min(9 999, 999): no timer fires, however long we wait.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(fired(&out), Vec::<i64>::new());
    // Partition 1 catches up to 5 000: the timers before 5 000 fire, not the later ones.
    produce(&topic, &[Rec::new(1, "y").ts(5000)]);
    wait_until(30, "timers up to 4 000", || fired(&out).len() >= 4);
    std::thread::sleep(Duration::from_millis(500));
    // (One timer per key and time: the two records at 1 000 share one.)
    assert_eq!(fired(&out), vec![1000, 2000, 3000, 4000]);
    let wm = job.metrics().gauge_max(&format!("{topic}-0"), "watermark");
    assert_eq!(wm, 9999, "partition 0's watermark gauge");
    job.cancel();
    let _ = job.join();
}

#[test]
fn an_idle_partition_stops_holding_the_watermark_back() {
    let topic = unique("wm-idle");
    create_topic(&topic, 2);
    let mut recs: Vec<Rec> = (1..=10).map(|i| Rec::new(0, "x").ts(i * 1000)).collect();
    recs.push(Rec::new(1, "y").ts(1000));
    produce(&topic, &recs);
    let (job, out) = timer_job(
        &topic,
        WatermarkStrategy::bounded_out_of_orderness(Duration::ZERO)
            .with_idleness(Duration::from_millis(300)),
    );
    // After 300 ms without records both partitions are idle (the watermark stays: min 999).
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(fired(&out), Vec::<i64>::new());
    // Partition 0 becomes active again at 11 000 while partition 1 stays idle: the watermark
    // follows partition 0 alone (10 999) and every timer up to 10 000 fires.
    produce(&topic, &[Rec::new(0, "x").ts(11_000)]);
    wait_until(30, "timers up to 10 000", || fired(&out).len() >= 10);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(fired(&out), (1..=10).map(|i| i * 1000).collect::<Vec<_>>());
    job.cancel();
    let _ = job.join();
}

#[test]
fn alignment_pauses_a_partition_that_runs_ahead_until_the_others_catch_up() {
    let topic = unique("wm-align");
    create_topic(&topic, 2);
    // Partition 0: 2 000 records, t = 1 000, 1 100, ..., 200 900. Partition 1: t = 1 000..1 900.
    // (Not 0: librdkafka replaces a timestamp of 0 with the current time.)
    let recs: Vec<Rec> = (0..2000)
        .map(|i| Rec::new(0, "x").ts(1000 + i * 100))
        .collect();
    produce(&topic, &recs);
    produce(
        &topic,
        &(0..10)
            .map(|i| Rec::new(1, "y").ts(1000 + i * 100))
            .collect::<Vec<_>>(),
    );
    let env = StreamEnv::new().with_parallelism(1);
    let seen: Arc<Mutex<Vec<(i32, i64)>>> = Arc::default();
    let s2 = seen.clone();
    let group = unique("align-group");
    env.source(
        KafkaSource::new(bootstrap(), &[&topic], Raw)
            .watermark_alignment(
                WatermarkAlignment::new(&group, Duration::from_millis(1000))
                    .with_update_interval(Duration::from_millis(20)),
            )
            // Small fetches, so that little is prefetched past a pause.
            .property("max.partition.fetch.bytes", "2000")
            .batch_size(20),
    )
    .assign_timestamps(WatermarkStrategy::bounded_out_of_orderness(Duration::ZERO))
    .map(move |r: KafkaRecord| {
        s2.lock().unwrap().push((r.partition, r.timestamp.unwrap()));
        r
    })
    .sink(DiscardSink::new());
    let job = env.execute_async("align").unwrap();
    let count = |p: i32| seen.lock().unwrap().iter().filter(|x| x.0 == p).count();
    wait_until(30, "partition 1's records", || {
        assert!(!job.is_finished(), "the job ended");
        count(1) == 10
    });
    std::thread::sleep(Duration::from_millis(1500));
    // Partition 1's watermark is 1 899: partition 0 may run to about 2 899 (a few records past
    // it between alignment updates), far from its 2 000 records.
    let ahead = count(0);
    assert!(ahead < 100, "partition 0 read {ahead} records while paused");
    let paused = job
        .metrics()
        .counter_sum(&format!("{topic}-0"), "paused_for_alignment_ms");
    assert!(paused > 500, "paused for {paused} ms");
    // The paused partition lags (its high watermark is far ahead of its position).
    let m = job.metrics();
    let lag = m
        .gauges
        .iter()
        .find(|(id, _)| id.name == "lag" && id.scope.ends_with(&format!("{topic}-0")))
        .map(|(_, (cur, _))| *cur)
        .unwrap();
    assert!(lag > 1000, "lag of the paused partition: {lag}");
    // Partition 1 catches up: partition 0 resumes and reads everything.
    produce(&topic, &[Rec::new(1, "y").ts(300_000)]);
    wait_until(60, "all of partition 0", || count(0) == 2000);
    // Records of a partition arrive in offset order, without gaps or repeats.
    let ts0: Vec<i64> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|x| x.0 == 0)
        .map(|x| x.1)
        .collect();
    assert_eq!(ts0, (0..2000).map(|i| 1000 + i * 100).collect::<Vec<_>>());
    job.cancel();
    let _ = job.join();
}
