//! Window semantics (Flink's): assigners, triggers, lateness, cleanup, count and
//! processing-time windows, parallelism independence.
use std::sync::Arc;
use std::time::Duration;
use weir::prelude::*;
use weir::windows::{Count, GlobalWindow, Session, Sliding, TimeWindow, Tumbling};
use weir::{
    AggregateFunction, ManualClock, Poll, PositionKind, Record, Source, SourceOutput, SourceReader,
};

type Ev = (String, i64, i64); // key, ts, value

fn ev(k: &str, ts: i64, v: i64) -> Ev {
    (k.to_string(), ts, v)
}

/// (key, start, end, count, sum)
type Row = (String, i64, i64, u64, i64);

#[derive(Clone, Copy)]
struct CountSum;
impl AggregateFunction<Ev, (u64, i64), (u64, i64)> for CountSum {
    fn create_accumulator(&self) -> (u64, i64) {
        (0, 0)
    }
    fn add(&self, a: &mut (u64, i64), e: Ev) {
        a.0 += 1;
        a.1 += e.2;
    }
    fn get_result(&self, a: &(u64, i64)) -> (u64, i64) {
        *a
    }
    fn merge(&self, a: &mut (u64, i64), b: (u64, i64)) {
        a.0 += b.0;
        a.1 += b.1;
    }
}

#[allow(clippy::ptr_arg)] // window functions receive the key as &K
fn row(k: &String, w: &TimeWindow, r: (u64, i64)) -> Row {
    (k.clone(), w.start, w.end, r.0, r.1)
}

struct Run {
    rows: Vec<Row>,
    late: Vec<Ev>,
    result: weir::JobResult,
}

fn run_with(
    events: Vec<Ev>,
    ooo_ms: u64,
    p: usize,
    build: impl FnOnce(KeyedStream<Ev, String>, &OutputTag<Ev>) -> DataStream<Row>,
) -> Run {
    let env = StreamEnv::new().with_parallelism(p);
    let keyed = env
        .from_collection(events)
        .assign_timestamps(
            WatermarkStrategy::bounded_out_of_orderness(millis(ooo_ms))
                .with_timestamps(|e: &Ev, _| e.1)
                .per_record(),
        )
        .key_by(|e: &Ev| e.0.clone());
    run_keyed(&env, keyed, build)
}

/// Builds the windows on `keyed`, runs the job, and collects its rows and late records, sorted.
fn run_keyed(
    env: &StreamEnv,
    keyed: KeyedStream<Ev, String>,
    build: impl FnOnce(KeyedStream<Ev, String>, &OutputTag<Ev>) -> DataStream<Row>,
) -> Run {
    let rows = CollectSink::new();
    let late_sink = CollectSink::new();
    let late = OutputTag::<Ev>::new("late");
    let out = build(keyed, &late);
    out.side_output(&late).sink(late_sink.clone());
    out.sink(rows.clone());
    let result = env.execute("windows").unwrap();
    let mut rows = rows.values();
    rows.sort();
    let mut late = late_sink.values();
    late.sort();
    Run { rows, late, result }
}

fn r(k: &str, s: i64, e: i64, c: u64, sum: i64) -> Row {
    (k.to_string(), s, e, c, sum)
}

#[test]
fn tumbling_windows_with_out_of_order_records() {
    let events = vec![
        ev("a", 1000, 1),
        ev("a", 1500, 2),
        ev("b", 1200, 10),
        ev("a", 2500, 3),
        ev("a", 1800, 4),
        ev("a", 900, 5),
    ];
    // ooo 1000: wm after 2500 is 1499 -> [1000,2000) not yet closed when 1800 arrives; 900 ->
    // window [0,1000) maxTs 999 <= 1499: late.
    let res = run_with(events, 1000, 1, |k, late| {
        k.window(Tumbling::event_time(1000))
            .side_output_late_data(late)
            .aggregate_with(CountSum, row)
    });
    assert_eq!(
        res.rows,
        vec![
            r("a", 1000, 2000, 3, 7),
            r("a", 2000, 3000, 1, 3),
            r("b", 1000, 2000, 1, 10)
        ]
    );
    assert_eq!(res.late, vec![ev("a", 900, 5)]);
    assert!(res.result.metrics.gauge_max("window", "state_entries") > 0);
    let final_state: i64 = res
        .result
        .metrics
        .gauges
        .iter()
        .filter(|(id, _)| id.name == "state_entries")
        .map(|(_, v)| v.0)
        .sum();
    assert_eq!(
        final_state, 0,
        "window state and timers are cleaned up once the watermark passes"
    );
}

#[test]
fn late_records_are_counted_when_no_side_output() {
    let env = StreamEnv::new().with_parallelism(1);
    let out = CollectSink::new();
    env.from_collection(vec![ev("a", 5000, 1), ev("a", 100, 1)])
        .assign_timestamps(
            WatermarkStrategy::monotonous()
                .with_timestamps(|e: &Ev, _| e.1)
                .per_record(),
        )
        .key_by(|e: &Ev| e.0.clone())
        .window(Tumbling::event_time(1000))
        .aggregate_with(CountSum, row)
        .sink(out.clone());
    let res = env.execute("late").unwrap();
    assert_eq!(out.values(), vec![r("a", 5000, 6000, 1, 1)]);
    assert_eq!(res.metrics.counter_sum("window", "late_records_dropped"), 1);
}

#[test]
fn sliding_windows_each_record_in_size_over_slide_windows() {
    let events = vec![ev("a", 0, 1), ev("a", 4, 2), ev("a", 7, 3)];
    let res = run_with(events, 0, 1, |k, _| {
        k.window(Sliding::event_time(10, 5))
            .aggregate_with(CountSum, row)
    });
    assert_eq!(
        res.rows,
        vec![
            r("a", -5, 5, 2, 3),
            r("a", 0, 10, 3, 6),
            r("a", 5, 15, 1, 3)
        ]
    );
}

#[test]
fn session_windows_merge_including_by_a_late_bridging_record() {
    // gap 10: [0,10) and [30,40) are separate; 15 arrives late-ish (ooo 20) and bridges 0..40?
    // 0 -> [0,10); 30 -> [30,40); 15 -> [15,25): touches neither [0,10) (10 < 15) nor [30,40)
    // (25 < 30); 20 -> [20,30) touches [15,25) and [30,40) -> merged [15,40); 5 -> [5,15)
    // touches [0,10) and [15,40) -> one session [0,40).
    let events = vec![
        ev("a", 0, 1),
        ev("a", 30, 2),
        ev("a", 15, 3),
        ev("a", 20, 4),
        ev("a", 5, 5),
        ev("a", 100, 6),
    ];
    // With out-of-orderness 40 the watermark stays behind 39 until 100 arrives, so the
    // bridging records merge everything into one session.
    let res = run_with(events.clone(), 40, 1, |k, _| {
        k.window(Session::<Ev>::event_time(10))
            .aggregate_with(CountSum, row)
    });
    assert_eq!(res.rows, vec![r("a", 0, 40, 5, 15), r("a", 100, 110, 1, 6)]);
    // With 20, the watermark reaches 9 when 30 arrives and [0,10) fires alone; 5 later opens
    // [5,15), which merges with [15,40) but not with the closed [0,10).
    let res = run_with(events, 20, 1, |k, _| {
        k.window(Session::<Ev>::event_time(10))
            .aggregate_with(CountSum, row)
    });
    assert_eq!(
        res.rows,
        vec![
            r("a", 0, 10, 1, 1),
            r("a", 5, 40, 4, 14),
            r("a", 100, 110, 1, 6)
        ]
    );
}

#[test]
fn session_merge_after_firing_within_allowed_lateness_refires_the_merged_window() {
    // gap 10, no out-of-orderness, lateness 100: [0,10) fires when 50 arrives (wm 49); then 8
    // arrives: window [8,18) merges with [0,10) -> [0,18), whose end is behind the watermark:
    // it fires immediately with both records.
    let events = vec![ev("a", 0, 1), ev("a", 50, 2), ev("a", 8, 3)];
    let res = run_with(events, 0, 1, |k, _| {
        k.window(Session::<Ev>::event_time(10))
            .allowed_lateness(Duration::from_millis(100))
            .aggregate_with(CountSum, row)
    });
    assert_eq!(
        res.rows,
        vec![
            r("a", 0, 10, 1, 1),
            r("a", 0, 18, 2, 4),
            r("a", 50, 60, 1, 2)
        ]
    );
}

#[test]
fn allowed_lateness_refires_with_the_late_record_then_drops_later_ones() {
    // [0,1000): fires at wm 1499 (record 1500); 500 arrives (within lateness 1000): re-fire
    // with 2 records; 2600 moves wm to 2599 >= 999 + 1000: window cleaned; 600 is late.
    let events = vec![
        ev("a", 100, 1),
        ev("a", 1500, 2),
        ev("a", 500, 3),
        ev("a", 2600, 4),
        ev("a", 600, 5),
    ];
    let res = run_with(events, 0, 1, |k, late| {
        k.window(Tumbling::event_time(1000))
            .allowed_lateness(Duration::from_millis(1000))
            .side_output_late_data(late)
            .aggregate_with(CountSum, row)
    });
    assert_eq!(
        res.rows,
        vec![
            r("a", 0, 1000, 1, 1),
            r("a", 0, 1000, 2, 4),
            r("a", 1000, 2000, 1, 2),
            r("a", 2000, 3000, 1, 4)
        ]
    );
    assert_eq!(res.late, vec![ev("a", 600, 5)]);
}

#[test]
fn early_firing_emits_partial_results_every_interval() {
    // hourly-style window of 10 s with early results every 2 s of event time.
    let events = vec![
        ev("a", 100, 1),
        ev("a", 2100, 1),
        ev("a", 4500, 1),
        ev("a", 12_000, 1),
    ];
    let res = run_with(events, 0, 1, |k, _| {
        k.window(Tumbling::event_time(10_000))
            .early_fire_every(Duration::from_secs(2))
            .aggregate_with(CountSum, row)
    });
    // The watermark after a record comes after the record: 2100 is in the window when
    // watermark 2099 fires the 2000 timer. Fires at 2000 (2 records), 4000 (3), 6000, 8000 and
    // the end 9999 (3 each); [10000,20000) fires at 14000, 16000, 18000 and 19999 on the final
    // watermark.
    let first: Vec<_> = res.rows.iter().filter(|x| x.1 == 0).map(|x| x.3).collect();
    assert_eq!(first, vec![2, 3, 3, 3, 3], "{:?}", res.rows);
    assert_eq!(
        res.rows
            .iter()
            .filter(|x| x.1 == 10_000 && x.3 == 1)
            .count(),
        4,
        "{:?}",
        res.rows
    );
}

#[test]
fn results_do_not_depend_on_parallelism() {
    let mut events = Vec::new();
    let mut rng = SplitMix64::new(7);
    for i in 0..3000 {
        let k = format!("k{}", rng.below(37));
        let ts = i * 10 - rng.below(1500) as i64;
        events.push((k, ts, rng.below(100) as i64));
    }
    let build = |k: KeyedStream<Ev, String>, late: &OutputTag<Ev>| {
        k.window(Sliding::event_time(1000, 300))
            .allowed_lateness(Duration::from_millis(200))
            .side_output_late_data(late)
            .aggregate_with(CountSum, row)
    };
    let one = run_with(events.clone(), 300, 1, build);
    let four = run_with(events, 300, 4, build);
    assert!(
        one.rows.len() > 100 && !one.late.is_empty(),
        "{} rows, {} late",
        one.rows.len(),
        one.late.len()
    );
    assert_eq!(one.rows, four.rows);
    assert_eq!(one.late, four.late);
}

#[test]
fn count_windows_tumbling_and_sliding() {
    let env = StreamEnv::new().with_parallelism(2);
    let tumbling = CollectSink::new();
    let sliding = CollectSink::new();
    let s = env.from_collection((1..=7i64).map(|i| ("k".to_string(), i)).collect::<Vec<_>>());
    s.key_by(|e: &(String, i64)| e.0.clone())
        .count_window(3)
        .aggregate_with(SumAgg, |_: &String, _: &GlobalWindow, v: i64| v)
        .sink(tumbling.clone());
    s.key_by(|e: &(String, i64)| e.0.clone())
        .count_window_sliding(3, 2)
        .aggregate_with(SumAgg, |_: &String, _: &GlobalWindow, v: i64| v)
        .sink(sliding.clone());
    env.execute("count windows").unwrap();
    // tumbling 3: 1+2+3, 4+5+6 (7 never completes); sliding 3 every 2: [1,2], [2,3,4], [4,5,6]
    assert_eq!(tumbling.values(), vec![6, 15]);
    assert_eq!(sliding.values(), vec![3, 9, 15]);
}

#[derive(Clone, Copy)]
struct SumAgg;
impl AggregateFunction<(String, i64), i64, i64> for SumAgg {
    fn create_accumulator(&self) -> i64 {
        0
    }
    fn add(&self, a: &mut i64, e: (String, i64)) {
        *a += e.1
    }
    fn get_result(&self, a: &i64) -> i64 {
        *a
    }
    fn merge(&self, a: &mut i64, b: i64) {
        *a += b
    }
}

#[test]
fn process_window_function_sees_all_records_and_reduce_works() {
    let env = StreamEnv::new().with_parallelism(1);
    let all = CollectSink::new();
    let reduced = CollectSink::new();
    let s = env
        .from_collection(vec![ev("a", 1, 5), ev("a", 2, 7), ev("a", 11, 1)])
        .assign_timestamps(WatermarkStrategy::monotonous().with_timestamps(|e: &Ev, _| e.1))
        .key_by(|e: &Ev| e.0.clone());
    s.window(Tumbling::event_time(10))
        .process(|_: &String, w: &TimeWindow, evs: Vec<Ev>| {
            (w.start, evs.iter().map(|e| e.2).collect::<Vec<_>>())
        })
        .sink(all.clone());
    s.window(Tumbling::event_time(10))
        .reduce(|a: Ev, b: Ev| (a.0, a.1.max(b.1), a.2 + b.2))
        .sink(reduced.clone());
    env.execute("pwf").unwrap();
    let mut v = all.values();
    v.sort();
    assert_eq!(v, vec![(0, vec![5, 7]), (10, vec![1])]);
    let recs = reduced.records();
    assert_eq!(
        recs.iter().map(|r| r.value.2).collect::<Vec<_>>(),
        vec![12, 1]
    );
    assert_eq!(
        recs[0].ts, 9,
        "window results carry the window's max timestamp"
    );
}

#[test]
fn window_all_counts_the_whole_stream() {
    let env = StreamEnv::new().with_parallelism(3);
    let out = CollectSink::new();
    env.from_collection((0..100i64).map(|i| ev("x", i * 10, 1)).collect::<Vec<_>>())
        .assign_timestamps(WatermarkStrategy::monotonous().with_timestamps(|e: &Ev, _| e.1))
        .rebalance()
        .map(|e: Ev| e)
        .window_all(Tumbling::event_time(250))
        .aggregate_with(Count, |_: &(), w: &TimeWindow, n: u64| (w.start, n))
        .sink(out.clone());
    env.execute("window all").unwrap();
    let mut v = out.values();
    v.sort();
    assert_eq!(v, vec![(0, 25), (250, 25), (500, 25), (750, 25)]);
}

#[test]
fn processing_time_windows_fire_on_the_clock() {
    let clock = weir::ManualClock::new(1_000_000);
    let env = StreamEnv::new()
        .with_parallelism(1)
        .with_clock(std::sync::Arc::new(clock.clone()));
    let out = CollectSink::new();
    // An unbounded source that emits 5 records then waits: the window fires when the clock
    // passes its end, not at end of input.
    let src = Datagen::new(5, |i, _| i).keep_open();
    env.source(src)
        .key_by(|_: &u64| 0u8)
        .window(Tumbling::processing_time(1000))
        .aggregate_with(Count, |_: &u8, w: &TimeWindow, n: u64| (w.start, n))
        .sink(out.clone());
    let job = env.execute_async("pt").unwrap();
    let t0 = std::time::Instant::now();
    while out.is_empty() && t0.elapsed() < Duration::from_secs(20) {
        clock.advance(500);
        std::thread::sleep(Duration::from_millis(50));
    }
    job.cancel();
    job.join().unwrap();
    assert_eq!(out.values(), vec![(1_000_000, 5)]);
}

/// Random keyed events, out of order by up to `ooo` ms, some far too late.
fn random_events(seed: u64, n: i64, keys: u64, ooo: u64) -> Vec<Ev> {
    let mut rng = SplitMix64::new(seed);
    (0..n)
        .map(|i| {
            let k = format!("k{}", rng.below(keys));
            let jitter = rng.below(ooo) as i64;
            // one in 50 records is up to 20 s late
            let late = if rng.below(50) == 0 {
                rng.below(20_000) as i64
            } else {
                0
            };
            (
                k,
                i * 7 - 3_000 - jitter - late,
                rng.below(1_000) as i64 - 500,
            )
        })
        .collect()
}

#[test]
fn sliced_sliding_windows_equal_the_general_operator() {
    // size/slide pairs, offsets, parallelism; timestamps start negative (windows before 0).
    for (seed, size, slide, offset, p) in [
        (1, 1_000, 250, 0, 1),
        (2, 10_000, 2_000, 0, 2),
        (3, 900, 300, 100, 4),
        (4, 600, 200, 0, 3),
    ] {
        let events = random_events(seed, 4_000, 23, 400);
        let general = run_with(events.clone(), 300, 1, |k, late| {
            k.window(Sliding::event_time(size, slide).with_offset(offset))
                .side_output_late_data(late)
                .aggregate_with(CountSum, row)
        });
        let sliced = run_with(events, 300, p, |k, late| {
            k.window(Sliding::event_time(size, slide).with_offset(offset))
                .with_slicing()
                .side_output_late_data(late)
                .aggregate_with(CountSum, row)
        });
        assert!(
            general.rows.len() > 100 && !general.late.is_empty(),
            "{} rows, {} late",
            general.rows.len(),
            general.late.len()
        );
        assert_eq!(sliced.rows, general.rows, "size {size} slide {slide} p {p}");
        assert_eq!(sliced.late, general.late, "size {size} slide {slide} p {p}");
        // Every slice and timer is gone once the final watermark has passed.
        let m = sliced
            .result
            .metrics
            .gauges
            .iter()
            .filter(|(id, _)| id.name == "state_entries" && id.scope.contains("window"));
        for (id, (now, max)) in m {
            assert_eq!(*now, 0, "{id} holds state after the job (max {max})");
        }
    }
}

#[test]
fn slicing_is_ignored_where_it_does_not_apply() {
    // Allowed lateness re-fires windows: the general operator runs, with its semantics.
    let events = random_events(9, 2_000, 11, 300);
    let build = |sliced: bool| {
        move |k: KeyedStream<Ev, String>, late: &OutputTag<Ev>| {
            let w = k
                .window(Sliding::event_time(1_000, 250))
                .allowed_lateness(Duration::from_millis(700))
                .side_output_late_data(late);
            let w = if sliced { w.with_slicing() } else { w };
            w.aggregate_with(CountSum, row)
        }
    };
    let a = run_with(events.clone(), 200, 1, build(false));
    let b = run_with(events, 200, 2, build(true));
    assert_eq!(a.rows, b.rows);
    assert_eq!(a.late, b.late);
}

#[test]
fn sliced_processing_time_windows_fire_on_the_clock() {
    let clock = weir::ManualClock::new(1_000_000);
    let env = StreamEnv::new()
        .with_parallelism(1)
        .with_clock(std::sync::Arc::new(clock.clone()));
    let out = CollectSink::new();
    let src = Datagen::new(5, |i, _| i).keep_open();
    env.source(src)
        .key_by(|_: &u64| 0u8)
        .window(Sliding::processing_time(1000, 500))
        .with_slicing()
        .aggregate_with(Count, |_: &u8, w: &TimeWindow, n: u64| (w.start, n))
        .sink(out.clone());
    let job = env.execute_async("pt").unwrap();
    let t0 = std::time::Instant::now();
    while out.len() < 2 && t0.elapsed() < Duration::from_secs(20) {
        clock.advance(250);
        std::thread::sleep(Duration::from_millis(50));
    }
    job.cancel();
    job.join().unwrap();
    // The 5 records arrive together (at 1,000,000 unless the clock moved first): the two
    // windows holding that instant, 500 ms apart, fire with all five.
    let mut v = out.values();
    v.sort();
    assert_eq!(v.len(), 2, "{v:?}");
    assert_eq!((v[0].1, v[1].1), (5, 5), "{v:?}");
    assert_eq!(v[1].0 - v[0].0, 500, "{v:?}");
    assert!(v[0].0 >= 999_500 && v[0].0 % 500 == 0, "{v:?}");
}

/// The event-time trigger, hidden behind a wrapper: the window operator takes its general path.
struct General(weir::windows::EventTimeTrigger);
impl<W: weir::windows::Window> weir::windows::Trigger<W> for General {
    fn on_element(
        &self,
        e: &dyn std::any::Any,
        ts: i64,
        ctx: &mut weir::windows::TriggerContext<'_, W>,
    ) -> weir::windows::TriggerResult {
        self.0.on_element(e, ts, ctx)
    }
    fn on_event_time(
        &self,
        t: i64,
        ctx: &mut weir::windows::TriggerContext<'_, W>,
    ) -> weir::windows::TriggerResult {
        self.0.on_event_time(t, ctx)
    }
    fn on_processing_time(
        &self,
        t: i64,
        ctx: &mut weir::windows::TriggerContext<'_, W>,
    ) -> weir::windows::TriggerResult {
        weir::windows::Trigger::<W>::on_processing_time(&self.0, t, ctx)
    }
    fn can_merge(&self) -> bool {
        true
    }
    fn on_merge(&self, merged: &[W], ctx: &mut weir::windows::TriggerContext<'_, W>) {
        self.0.on_merge(merged, ctx)
    }
    fn clear(&self, ctx: &mut weir::windows::TriggerContext<'_, W>) {
        self.0.clear(ctx)
    }
}

#[test]
fn default_trigger_fast_paths_equal_the_general_operator() {
    for (seed, p) in [(11, 1), (12, 2), (13, 4)] {
        // Sparse keys so sessions both merge and split; out of order and some far too late.
        let mut events = random_events(seed, 3_000, 7, 900);
        for (i, e) in events.iter_mut().enumerate() {
            e.1 = e.1 * 3 + (i as i64 % 5) * 40;
        }
        for gap in [250, 1_000] {
            let general = run_with(events.clone(), 400, 1, |k, late| {
                k.window(Session::event_time(gap))
                    .trigger(General(weir::windows::EventTimeTrigger))
                    .side_output_late_data(late)
                    .aggregate_with(CountSum, row)
            });
            let fast = run_with(events.clone(), 400, p, |k, late| {
                k.window(Session::event_time(gap))
                    .side_output_late_data(late)
                    .aggregate_with(CountSum, row)
            });
            assert!(
                general.rows.len() > 50 && !general.late.is_empty(),
                "{} rows {} late",
                general.rows.len(),
                general.late.len()
            );
            assert!(general.rows.iter().any(|r| r.3 > 1), "some sessions merge");
            assert_eq!(fast.rows, general.rows, "sessions gap {gap} p {p}");
            assert_eq!(fast.late, general.late, "sessions gap {gap} p {p}");
        }
        // Dynamic gaps.
        let dynamic =
            || Session::event_time_dynamic(|e: &Ev| 100 + (e.2.unsigned_abs() as i64 % 7) * 100);
        let general = run_with(events.clone(), 400, 1, |k, late| {
            k.window(dynamic())
                .trigger(General(weir::windows::EventTimeTrigger))
                .side_output_late_data(late)
                .aggregate_with(CountSum, row)
        });
        let fast = run_with(events.clone(), 400, p, |k, late| {
            k.window(dynamic())
                .side_output_late_data(late)
                .aggregate_with(CountSum, row)
        });
        assert_eq!(fast.rows, general.rows, "dynamic sessions p {p}");
        assert_eq!(fast.late, general.late, "dynamic sessions p {p}");
        // Tumbling and sliding windows.
        for (size, slide) in [(500, 500), (900, 300)] {
            let general = run_with(events.clone(), 400, 1, |k, late| {
                k.window(Sliding::event_time(size, slide))
                    .trigger(General(weir::windows::EventTimeTrigger))
                    .side_output_late_data(late)
                    .aggregate_with(CountSum, row)
            });
            let fast = run_with(events.clone(), 400, p, |k, late| {
                k.window(Sliding::event_time(size, slide))
                    .side_output_late_data(late)
                    .aggregate_with(CountSum, row)
            });
            assert_eq!(fast.rows, general.rows, "sliding {size}/{slide} p {p}");
            assert_eq!(fast.late, general.late, "sliding {size}/{slide} p {p}");
        }
    }
}

/// Per-record gaps make windows that contain or equal earlier sessions; both paths keep every
/// record (a window merged into a session it covers keeps the session's state).
#[test]
fn per_record_gap_sessions_keep_every_record_on_both_paths() {
    let dynamic = || Session::event_time_dynamic(|e: &Ev| e.2);
    let mut rng = SplitMix64::new(5);
    for _ in 0..300 {
        let n = 2 + rng.below(6) as usize;
        let events: Vec<Ev> = (0..n)
            .map(|_| {
                ev(
                    "a",
                    rng.below(20) as i64 * 50,
                    50 + rng.below(8) as i64 * 50,
                )
            })
            .collect();
        let general = run_with(events.clone(), 10_000, 1, |k, late| {
            k.window(dynamic())
                .trigger(General(weir::windows::EventTimeTrigger))
                .side_output_late_data(late)
                .aggregate_with(CountSum, row)
        });
        let fast = run_with(events.clone(), 10_000, 1, |k, late| {
            k.window(dynamic())
                .side_output_late_data(late)
                .aggregate_with(CountSum, row)
        });
        assert_eq!(fast.rows, general.rows, "events {events:?}");
        let count: u64 = fast.rows.iter().map(|r| r.3).sum();
        assert_eq!(count as usize, n, "every record counted once: {events:?}");
    }
}

/// Emits `chunks` one per poll, advancing `clock` by a second before each: with a periodic
/// watermark strategy on that clock, a watermark falls between every two chunks, so a window
/// operator receives each chunk as one batch (records late for the previous watermark inside).
struct Chunks {
    chunks: Vec<Vec<Ev>>,
    clock: Arc<ManualClock>,
}

struct ChunkReader {
    chunks: std::vec::IntoIter<Vec<Ev>>,
    clock: Arc<ManualClock>,
    split: Option<usize>,
}

impl Source<Ev> for Chunks {
    fn create_reader(&self, _: usize, _: usize) -> weir::Result<Box<dyn SourceReader<Ev>>> {
        Ok(Box::new(ChunkReader {
            chunks: self.chunks.clone().into_iter(),
            clock: self.clock.clone(),
            split: None,
        }))
    }
    fn max_parallelism(&self) -> Option<usize> {
        Some(1)
    }
}

impl SourceReader<Ev> for ChunkReader {
    fn poll(&mut self, out: &mut SourceOutput<Ev>) -> weir::Result<Poll> {
        let split = *self
            .split
            .get_or_insert_with(|| out.add_split("chunks", PositionKind::Offset));
        self.clock.advance(1_000);
        match self.chunks.next() {
            Some(chunk) => {
                let mut batch: Vec<Record<Ev>> = chunk
                    .into_iter()
                    .map(|value| Record {
                        ts: weir_types::NO_TIMESTAMP,
                        value,
                    })
                    .collect();
                out.collect_batch(split, &mut batch)?;
                // Pending: the task looks at its timers (the periodic watermark) right away.
                Ok(Poll::Pending(0))
            }
            None => {
                out.finish_split(split)?;
                Ok(Poll::Finished)
            }
        }
    }
}

fn run_chunked(
    chunks: Vec<Vec<Ev>>,
    p: usize,
    backend: Arc<dyn weir_state::StateBackend>,
    build: impl FnOnce(KeyedStream<Ev, String>, &OutputTag<Ev>) -> DataStream<Row>,
) -> Run {
    let clock = Arc::new(ManualClock::new(0));
    let env = StreamEnv::new()
        .with_parallelism(p)
        .with_state_backend(backend)
        .with_clock(clock.clone())
        .with_watermark_interval_ms(1);
    let keyed = env
        .source(Chunks { chunks, clock })
        .assign_timestamps(
            WatermarkStrategy::bounded_out_of_orderness(millis(200))
                .with_timestamps(|e: &Ev, _| e.1),
        )
        .key_by(|e: &Ev| e.0.clone());
    run_keyed(&env, keyed, build)
}

/// The fast paths take a batch at a time (on a backend of bytes, mini-batch accumulators: one
/// state read and write per key and window of a batch): with watermarks between batches and
/// late records inside them, tumbling, sliding and sliced windows give the general operator's
/// rows and late records.
#[test]
fn batched_fast_paths_equal_the_general_operator() {
    let heap: Arc<dyn weir_state::StateBackend> = Arc::new(weir_state::MemoryBackend);
    let bytes: Arc<dyn weir_state::StateBackend> = Arc::new(weir_state::BytesMemoryBackend);
    for (seed, keys, p, backend) in [
        (21, 3, 1, &bytes),
        (22, 40, 2, &bytes),
        (23, 2_000, 1, &bytes),
        (24, 40, 2, &heap),
    ] {
        let events = random_events(seed, 6_000, keys, 300);
        let chunks: Vec<Vec<Ev>> = events.chunks(150).map(|c| c.to_vec()).collect();
        for (size, slide) in [(500, 500), (900, 300), (2_000, 100)] {
            let general = run_chunked(chunks.clone(), 1, heap.clone(), |k, late| {
                general_sliding(k, late, size, slide)
            });
            assert!(
                !general.late.is_empty() && general.rows.len() > 20,
                "{} late, {} rows",
                general.late.len(),
                general.rows.len()
            );
            let fast = run_chunked(chunks.clone(), p, backend.clone(), |k, late| {
                k.window(Sliding::event_time(size, slide))
                    .side_output_late_data(late)
                    .aggregate_with(CountSum, row)
            });
            assert_eq!(fast.rows, general.rows, "{size}/{slide} keys {keys} p {p}");
            assert_eq!(fast.late, general.late, "{size}/{slide} keys {keys} p {p}");
            if size > slide {
                let sliced = run_chunked(chunks.clone(), p, backend.clone(), |k, late| {
                    k.window(Sliding::event_time(size, slide))
                        .with_slicing()
                        .side_output_late_data(late)
                        .aggregate_with(CountSum, row)
                });
                assert_eq!(
                    sliced.rows, general.rows,
                    "sliced {size}/{slide} keys {keys}"
                );
                assert_eq!(
                    sliced.late, general.late,
                    "sliced {size}/{slide} keys {keys}"
                );
            }
        }
    }
}

/// The general operator (a trigger that is not the default) over sliding windows, late
/// records to `late`: the reference the fast paths are compared with.
fn general_sliding(
    k: KeyedStream<Ev, String>,
    late: &OutputTag<Ev>,
    size: i64,
    slide: i64,
) -> DataStream<Row> {
    k.window(Sliding::event_time(size, slide))
        .trigger(General(weir::windows::EventTimeTrigger))
        .side_output_late_data(late)
        .aggregate_with(CountSum, row)
}

/// Tumbling windows when `size == slide`, else sliced sliding windows, locally aggregated or
/// not.
fn tumbling_or_sliced(
    k: KeyedStream<Ev, String>,
    size: i64,
    slide: i64,
    local: bool,
) -> DataStream<Row> {
    if size == slide {
        let w = k.window(Tumbling::event_time(size));
        let w = if local { w.with_local_aggregation() } else { w };
        w.aggregate_with(CountSum, row)
    } else {
        let w = k.window(Sliding::event_time(size, slide)).with_slicing();
        let w = if local { w.with_local_aggregation() } else { w };
        w.aggregate_with(CountSum, row)
    }
}

/// Local aggregation (partials folded before the keyed exchange, merged by the window
/// operator) gives the record-by-record operator's rows and late-record count, with watermarks
/// between batches and late records inside them, for tumbling and sliced sliding windows on
/// both backends; with a few keys, the exchange carries far fewer partials than records. The
/// same with a watermark after every record (partials held across watermarks until one fires
/// their window).
#[test]
fn local_aggregation_equals_the_record_by_record_operator() {
    let heap: Arc<dyn weir_state::StateBackend> = Arc::new(weir_state::MemoryBackend);
    let bytes: Arc<dyn weir_state::StateBackend> = Arc::new(weir_state::BytesMemoryBackend);
    for (seed, keys, p, backend) in [
        (31, 3, 1, &heap),
        (32, 40, 2, &bytes),
        (33, 2_000, 1, &heap),
        (34, 40, 2, &heap),
    ] {
        let events = random_events(seed, 6_000, keys, 300);
        let chunks: Vec<Vec<Ev>> = events.chunks(150).map(|c| c.to_vec()).collect();
        for (size, slide) in [(500, 500), (900, 300), (2_000, 100)] {
            let what = format!("{size}/{slide} keys {keys} p {p}");
            let general = run_chunked(chunks.clone(), 1, heap.clone(), |k, late| {
                general_sliding(k, late, size, slide)
            });
            assert!(
                !general.late.is_empty() && general.rows.len() > 20,
                "{what}"
            );
            let local = run_chunked(chunks.clone(), p, backend.clone(), |k, _| {
                tumbling_or_sliced(k, size, slide, true)
            });
            assert_eq!(local.rows, general.rows, "{what}");
            let m = &local.result.metrics;
            assert_eq!(
                m.counter_sum("window_aggregate", "late_records_dropped") as usize,
                general.late.len(),
                "{what}"
            );
            let (records, partials) = (
                m.counter_sum("window_aggregate_local", "records_in"),
                m.counter_sum("window_aggregate", "records_in")
                    - m.counter_sum("window_aggregate_local", "records_in"),
            );
            assert_eq!(records, 6_000, "{what}");
            if keys == 3 && size == slide {
                assert!(partials * 10 < records, "{what}: {partials} partials");
            }
            // Without local aggregation, the same.
            let plain = run_chunked(chunks.clone(), p, backend.clone(), |k, _| {
                tumbling_or_sliced(k, size, slide, false)
            });
            assert_eq!(plain.rows, general.rows, "{what}");
            // A watermark after every record, and no idle input.
            let per_record = run_with(events.clone(), 300, p, |k, _| {
                tumbling_or_sliced(k, size, slide, true)
            });
            let general_per_record = run_with(events.clone(), 300, 1, |k, late| {
                general_sliding(k, late, size, slide)
            });
            assert_eq!(
                per_record.rows, general_per_record.rows,
                "per record {what}"
            );
        }
    }
}
