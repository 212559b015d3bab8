//! Event time and timers: bounded out-of-orderness, per-record and periodic watermarks, the
//! minimum over inputs, idleness, per-split watermarks, the final watermark, timer deletion,
//! and processing-time timers on a manual clock.
mod common;

use common::*;
use std::sync::Arc;
use weir::prelude::*;
use weir::ManualClock;
use weir_types::WatermarkStatus;

const MIN: i64 = i64::MIN;
const MAX: i64 = i64::MAX;

type Ev = (String, char, i64, i64); // (key, 'E'lement or 'T'imer, timestamp, watermark seen)

/// Logs every element and timer with the watermark it sees; each element registers an
/// event-time timer 1 s after its timestamp.
#[derive(Clone)]
struct Timers {
    log: Log<Ev>,
}

impl KeyedProcessFunction<String, (String, i64), String> for Timers {
    fn process_element(
        &mut self,
        (k, ts): (String, i64),
        ctx: &mut KeyedContext<'_, String>,
        _: &mut Collector<'_, String>,
    ) -> FnResult {
        assert_eq!(ctx.timestamp(), Some(ts));
        assert_eq!(ctx.time_domain(), None);
        self.log
            .lock()
            .unwrap()
            .push((k, 'E', ts, ctx.current_watermark()));
        ctx.register_event_time_timer(ts + 1000);
        Ok(())
    }
    fn on_timer(
        &mut self,
        ts: i64,
        ctx: &mut KeyedContext<'_, String>,
        out: &mut Collector<'_, String>,
    ) -> FnResult {
        assert_eq!(ctx.time_domain(), Some(TimeDomain::EventTime));
        assert_eq!(ctx.timestamp(), Some(ts));
        let k = ctx.current_key().clone();
        self.log
            .lock()
            .unwrap()
            .push((k.clone(), 'T', ts, ctx.current_watermark()));
        out.collect(format!("{k}@{ts}"));
        Ok(())
    }
}

fn ev(k: &str, c: char, ts: i64, wm: i64) -> Ev {
    (k.to_string(), c, ts, wm)
}

fn out_of_order_input() -> Vec<(String, i64)> {
    [
        ("a", 1000),
        ("b", 1500),
        ("a", 1200),
        ("a", 3000),
        ("b", 2600),
        ("b", 5000),
    ]
    .iter()
    .map(|(k, t)| (k.to_string(), *t))
    .collect()
}

#[test]
fn event_time_timers_fire_when_the_watermark_passes_them() {
    let env = StreamEnv::new().with_parallelism(1);
    let l = log();
    let out = CollectSink::new();
    env.from_collection(out_of_order_input())
        .assign_timestamps(
            WatermarkStrategy::bounded_out_of_orderness(millis(500))
                .with_timestamps(|r: &(String, i64), _| r.1)
                .per_record(),
        )
        .key_by(|r: &(String, i64)| r.0.clone())
        .process(Timers { log: l.clone() })
        .sink(out.clone());
    run(&env, "timers").unwrap();
    // Watermark after each record = max timestamp so far − 500 − 1.
    assert_eq!(
        entries(&l),
        vec![
            ev("a", 'E', 1000, MIN),
            ev("b", 'E', 1500, 499),
            ev("a", 'E', 1200, 999),
            ev("a", 'E', 3000, 999),
            // watermark 2499 passes a@2000 and a@2200, not b@2500
            ev("a", 'T', 2000, 2499),
            ev("a", 'T', 2200, 2499),
            ev("b", 'E', 2600, 2499),
            ev("b", 'E', 5000, 2499),
            // watermark 4499: the three due timers, in timestamp order across keys
            ev("b", 'T', 2500, 4499),
            ev("b", 'T', 3600, 4499),
            ev("a", 'T', 4000, 4499),
            // end of input: the final watermark fires the rest
            ev("b", 'T', 6000, MAX),
        ]
    );
    let recs: Vec<(String, i64)> = out.records().into_iter().map(|r| (r.value, r.ts)).collect();
    assert_eq!(
        recs,
        [
            ("a@2000", 2000),
            ("a@2200", 2200),
            ("b@2500", 2500),
            ("b@3600", 3600),
            ("a@4000", 4000),
            ("b@6000", 6000)
        ]
        .map(|(s, t)| (s.to_string(), t))
        .to_vec(),
        "records emitted in on_timer carry the timer's timestamp"
    );
}

fn per_record_sequence(fused: bool) -> Vec<Seen<i64>> {
    let env = StreamEnv::new().with_parallelism(1);
    let input = vec![1000i64, 1500, 1200, 3000, 2600, 5000];
    let strategy = WatermarkStrategy::bounded_out_of_orderness(millis(500))
        .with_timestamps(|t: &i64, _| *t)
        .per_record();
    let src = env.from_collection(input);
    let s = if fused {
        src.assign_timestamps(strategy)
    } else {
        src.map(|x| x).assign_timestamps(strategy)
    };
    let (s, l) = probe(&s);
    s.sink(DiscardSink::new());
    run(&env, "per record").unwrap();
    entries(&l)
}

#[test]
fn per_record_watermarks_follow_every_record() {
    use Seen::*;
    let want = vec![
        Record(1000, 1000),
        Watermark(499),
        Record(1500, 1500),
        Watermark(999),
        Record(1200, 1200),
        Record(3000, 3000),
        Watermark(2499),
        Record(2600, 2600),
        Record(5000, 5000),
        Watermark(4499),
        Watermark(MAX),
        End,
    ];
    assert_eq!(per_record_sequence(true), want, "generated in the source");
    assert_eq!(per_record_sequence(false), want, "generated by an operator");
}

#[test]
fn periodic_watermarks_follow_processing_time() {
    let clock = ManualClock::new(1_000_000);
    let env = StreamEnv::new()
        .with_parallelism(1)
        .with_clock(Arc::new(clock.clone()));
    let (tx, src) = feed::<i64>(1);
    let s = env.source(src).assign_timestamps(
        WatermarkStrategy::bounded_out_of_orderness(millis(500)).with_timestamps(|t: &i64, _| *t),
    );
    let (s, l) = probe(&s);
    s.sink(DiscardSink::new());
    let h = env.execute_async("periodic").unwrap();
    let n_records = |n: usize| {
        let l = l.clone();
        move || records(&l).len() >= n
    };
    // The first periodic emission happens at the first poll, which may or may not include
    // this record (watermark 0 − 500 − 1); after it, the clock is frozen.
    tx.send(Feed::Emit(0, 0)).unwrap();
    wait_until("1 record", n_records(1));
    let wms = || -> Vec<i64> { watermarks(&l).into_iter().filter(|w| *w != -501).collect() };
    tx.send(Feed::Emit(1000, 0)).unwrap();
    tx.send(Feed::Emit(2000, 0)).unwrap();
    wait_until("3 records", n_records(3));
    // A barrier record in a later poll: any watermark of the earlier poll is logged before it.
    tx.send(Feed::Emit(1500, 0)).unwrap();
    wait_until("4 records", n_records(4));
    assert_eq!(wms(), Vec::<i64>::new(), "no interval elapsed yet");
    clock.advance(200);
    wait_until("a periodic watermark", || !wms().is_empty());
    assert_eq!(wms(), vec![1499]);
    tx.send(Feed::Emit(3000, 0)).unwrap();
    wait_until("5 records", n_records(5));
    tx.send(Feed::Emit(3000, 0)).unwrap();
    wait_until("6 records", n_records(6));
    assert_eq!(wms(), vec![1499], "still no interval elapsed");
    clock.advance(200);
    wait_until("the next periodic watermark", || wms().len() == 2);
    tx.send(Feed::Finish).unwrap();
    let r = join(h).unwrap();
    assert!(!r.cancelled);
    assert_eq!(wms(), vec![1499, 2499, MAX]);
}

type Combine = fn(&DataStream<i64>, &DataStream<i64>) -> DataStream<i64>;

#[derive(Clone)]
struct PassThrough;

impl CoProcessFunction<i64, i64, i64> for PassThrough {
    fn process_element1(
        &mut self,
        v: i64,
        _: &mut ProcessContext<'_>,
        out: &mut Collector<'_, i64>,
    ) -> FnResult {
        out.collect(v);
        Ok(())
    }
    fn process_element2(
        &mut self,
        v: i64,
        _: &mut ProcessContext<'_>,
        out: &mut Collector<'_, i64>,
    ) -> FnResult {
        out.collect(v);
        Ok(())
    }
}

fn by_union(a: &DataStream<i64>, b: &DataStream<i64>) -> DataStream<i64> {
    a.union(std::slice::from_ref(b))
}

fn by_connect(a: &DataStream<i64>, b: &DataStream<i64>) -> DataStream<i64> {
    a.connect(b).process(PassThrough)
}

fn per_record() -> WatermarkStrategy<i64> {
    WatermarkStrategy::monotonous()
        .with_timestamps(|t: &i64, _| *t)
        .per_record()
}

fn min_over_inputs(combine: Combine) {
    let env = StreamEnv::new().with_parallelism(1);
    let (slow_tx, slow) = feed::<i64>(1);
    let (fast_tx, fast) = feed::<i64>(1);
    let a = env.source(slow).assign_timestamps(per_record());
    let b = env.source(fast).assign_timestamps(per_record());
    let (s, l) = probe(&combine(&a, &b));
    s.sink(DiscardSink::new());
    let h = env.execute_async("min").unwrap();
    let send = |tx: &crossbeam_channel::Sender<Feed<i64>>, ts: i64| {
        tx.send(Feed::Emit(ts, 0)).unwrap();
    };
    send(&slow_tx, 100);
    for ts in [1000, 2000, 3000] {
        send(&fast_tx, ts);
    }
    wait_until("4 records and watermark 99", || {
        records(&l).len() == 4 && watermarks(&l).contains(&99)
    });
    // Barriers behind every watermark already sent, on both inputs.
    send(&slow_tx, 100);
    send(&fast_tx, 3000);
    wait_until("6 records", || records(&l).len() == 6);
    assert_eq!(watermarks(&l), vec![99], "held back by the slow input");
    send(&slow_tx, 2500);
    wait_until("watermark 2499", || watermarks(&l).contains(&2499));
    // Now the fast input is the slower one.
    send(&slow_tx, 4000);
    wait_until("watermark 2999", || watermarks(&l).contains(&2999));
    // An input that ended no longer holds the watermark back.
    fast_tx.send(Feed::Finish).unwrap();
    wait_until("watermark 3999", || watermarks(&l).contains(&3999));
    slow_tx.send(Feed::Finish).unwrap();
    join(h).unwrap();
    let wms = watermarks(&l);
    assert_eq!(wms, vec![99, 2499, 2999, 3999, MAX], "min over inputs");
    assert_eq!(entries(&l).last(), Some(&Seen::End));
}

#[test]
fn union_watermark_is_the_minimum_of_its_inputs() {
    min_over_inputs(by_union);
}

#[test]
fn connect_watermark_is_the_minimum_of_its_inputs() {
    min_over_inputs(by_connect);
}

fn idle_input_stops_holding_back(combine: Combine, fused: bool) {
    let clock = ManualClock::new(1_000_000);
    let env = StreamEnv::new()
        .with_parallelism(1)
        .with_clock(Arc::new(clock.clone()));
    let (quiet_tx, quiet) = feed::<i64>(1);
    let (busy_tx, busy) = feed::<i64>(1);
    let quiet = env.source(quiet);
    // Idleness detected in the source (per split), or by the timestamps operator.
    let quiet = if fused { quiet } else { quiet.map(|x| x) };
    let a = quiet.assign_timestamps(per_record().with_idleness(millis(500)));
    let b = env.source(busy).assign_timestamps(per_record());
    let (s, l) = probe(&combine(&a, &b));
    s.sink(DiscardSink::new());
    let h = env.execute_async("idleness").unwrap();
    quiet_tx.send(Feed::Emit(100, 0)).unwrap();
    busy_tx.send(Feed::Emit(1000, 0)).unwrap();
    busy_tx.send(Feed::Emit(2000, 0)).unwrap();
    wait_until("3 records and watermark 99", || {
        records(&l).len() == 3 && watermarks(&l).contains(&99)
    });
    busy_tx.send(Feed::Emit(2000, 0)).unwrap();
    wait_until("barrier", || records(&l).len() == 4);
    assert_eq!(
        watermarks(&l),
        vec![99],
        "the quiet input holds the watermark back until it is idle"
    );
    clock.advance(1_000);
    wait_until("the busy input's watermark", || {
        watermarks(&l).contains(&1999)
    });
    // The quiet input comes back behind the watermark: no regression, and it does not hold
    // the watermark back until it catches up.
    quiet_tx.send(Feed::Emit(50, 0)).unwrap();
    wait_until("late record", || records(&l).len() == 5);
    busy_tx.send(Feed::Emit(3000, 0)).unwrap();
    wait_until("watermark 2999", || watermarks(&l).contains(&2999));
    quiet_tx.send(Feed::Emit(5000, 0)).unwrap();
    wait_until("record 5000", || records(&l).len() == 7);
    busy_tx.send(Feed::Emit(6000, 0)).unwrap();
    wait_until("watermark 4999", || watermarks(&l).contains(&4999));
    quiet_tx.send(Feed::Finish).unwrap();
    wait_until("watermark 5999", || watermarks(&l).contains(&5999));
    busy_tx.send(Feed::Finish).unwrap();
    join(h).unwrap();
    let wms = watermarks(&l);
    assert_monotonic(&wms);
    assert_eq!(wms, vec![99, 1999, 2999, 4999, 5999, MAX]);
    assert!(
        !entries(&l).contains(&Seen::Status(WatermarkStatus::Idle)),
        "one input active: the combined stream is not idle"
    );
}

#[test]
fn idle_input_of_a_union_stops_holding_back_the_watermark() {
    idle_input_stops_holding_back(by_union, true);
}

#[test]
fn idle_input_of_a_connect_stops_holding_back_the_watermark() {
    idle_input_stops_holding_back(by_connect, true);
}

#[test]
fn idleness_detected_by_a_timestamps_operator() {
    idle_input_stops_holding_back(by_union, false);
}

fn split_watermarks(fused: bool) -> Vec<Seen<i64>> {
    let env = StreamEnv::new().with_parallelism(1);
    let (tx, src) = feed::<i64>(2);
    for (split, ts) in [
        (0, 1000),
        (1, 100),
        (0, 2000),
        (0, 5000),
        (0, 10_000),
        (1, 4000),
    ] {
        tx.send(Feed::EmitOn(split, ts, 0)).unwrap();
    }
    tx.send(Feed::FinishSplit(1)).unwrap();
    tx.send(Feed::Finish).unwrap();
    let strategy = WatermarkStrategy::bounded_out_of_orderness(millis(0))
        .with_timestamps(|t: &i64, _| *t)
        .per_record();
    let s = env.source(src);
    let s = if fused {
        s.assign_timestamps(strategy)
    } else {
        s.map(|x| x).assign_timestamps(strategy)
    };
    let (s, l) = probe(&s);
    s.sink(DiscardSink::new());
    run(&env, "splits").unwrap();
    entries(&l)
}

#[test]
fn watermarks_are_generated_per_split_in_the_source() {
    use Seen::*;
    assert_eq!(
        split_watermarks(true),
        vec![
            Record(1000, 1000),
            Record(100, 100),
            Watermark(99),
            Record(2000, 2000),
            Record(5000, 5000),
            Record(10_000, 10_000),
            // split 1 lags: the source's watermark is the minimum over its splits
            Record(4000, 4000),
            Watermark(3999),
            // split 1 finished: it no longer holds the watermark back
            Watermark(9999),
            Watermark(MAX),
            End,
        ]
    );
    // The same strategy as an operator sees one interleaved stream: the lagging split's
    // record comes after the watermark passed it (late), which per-split generation avoids.
    let op = split_watermarks(false);
    let late = op.iter().position(|e| *e == Record(4000, 4000)).unwrap();
    assert!(op[..late].contains(&Watermark(9999)), "{op:?}");
}

#[test]
fn end_of_input_fires_every_pending_event_time_timer() {
    let env = StreamEnv::new().with_parallelism(2);
    let l = log();
    let out = CollectSink::new();
    env.source(Datagen::new(200, |id, _| {
        (format!("k{}", id % 50), id as i64)
    }))
    .assign_timestamps(WatermarkStrategy::monotonous().with_timestamps(|r: &(String, i64), _| r.1))
    .key_by(|r: &(String, i64)| r.0.clone())
    // timers far beyond any record: only the final watermark reaches them
    .process(FarTimers { log: l.clone() })
    .sink(out.clone());
    run(&env, "final watermark").unwrap();
    let fired = entries(&l);
    assert_eq!(
        fired.len(),
        50,
        "one timer per key (registered 4 times each)"
    );
    assert!(
        fired.iter().all(|e| e.3 == MAX),
        "fired by the final watermark"
    );
    let mut keys: Vec<String> = fired.iter().map(|e| e.0.clone()).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 50);
    for r in out.records() {
        assert_eq!(r.ts, 1_000_000_000 + r.value.1);
    }
}

#[derive(Clone)]
struct FarTimers {
    log: Log<Ev>,
}

impl KeyedProcessFunction<String, (String, i64), (String, i64)> for FarTimers {
    fn process_element(
        &mut self,
        (k, _): (String, i64),
        ctx: &mut KeyedContext<'_, String>,
        _: &mut Collector<'_, (String, i64)>,
    ) -> FnResult {
        // The same timer each time: a timer is unique per key and timestamp.
        let n: i64 = k[1..].parse()?;
        ctx.register_event_time_timer(1_000_000_000 + n);
        Ok(())
    }
    fn on_timer(
        &mut self,
        ts: i64,
        ctx: &mut KeyedContext<'_, String>,
        out: &mut Collector<'_, (String, i64)>,
    ) -> FnResult {
        let k = ctx.current_key().clone();
        self.log
            .lock()
            .unwrap()
            .push((k.clone(), 'T', ts, ctx.current_watermark()));
        out.collect((k.clone(), k[1..].parse()?));
        Ok(())
    }
}

/// Elements: `(key, action, timestamp)`; action `r` registers timers at ts+1000 and ts+2000,
/// `d` deletes the timer at ts+500 (registered by an `r` at ts−500), `x` deletes a timer that
/// does not exist.
#[derive(Clone)]
struct Deleting {
    log: Log<(String, i64)>,
}

impl KeyedProcessFunction<String, (String, char, i64), ()> for Deleting {
    fn process_element(
        &mut self,
        (_, action, ts): (String, char, i64),
        ctx: &mut KeyedContext<'_, String>,
        _: &mut Collector<'_, ()>,
    ) -> FnResult {
        match action {
            'r' => {
                ctx.register_event_time_timer(ts + 1000);
                ctx.register_event_time_timer(ts + 2000);
            }
            'd' => ctx.delete_event_time_timer(ts + 500),
            'x' => ctx.delete_event_time_timer(123),
            _ => {}
        }
        Ok(())
    }
    fn on_timer(
        &mut self,
        ts: i64,
        ctx: &mut KeyedContext<'_, String>,
        _: &mut Collector<'_, ()>,
    ) -> FnResult {
        self.log
            .lock()
            .unwrap()
            .push((ctx.current_key().clone(), ts));
        Ok(())
    }
}

#[test]
fn deleted_timers_do_not_fire() {
    let env = StreamEnv::new().with_parallelism(2);
    let l = log();
    let input: Vec<(String, char, i64)> = vec![
        ("a".into(), 'r', 1000), // a: 2000, 3000
        ("b".into(), 'r', 1000), // b: 2000, 3000
        ("a".into(), 'd', 1500), // a: delete 2000
        ("b".into(), 'x', 1600), // b: delete nothing
        ("b".into(), '-', 2600), // watermark 2599: b@2000 fires
        ("b".into(), 'd', 2500), // b: delete 3000
        ("a".into(), '-', 9000),
    ];
    env.from_collection(input)
        .assign_timestamps(
            WatermarkStrategy::monotonous()
                .with_timestamps(|r: &(String, char, i64), _| r.2)
                .per_record(),
        )
        .key_by(|r: &(String, char, i64)| r.0.clone())
        .process(Deleting { log: l.clone() })
        .sink(DiscardSink::new());
    run(&env, "delete").unwrap();
    assert_eq!(
        sort(entries(&l)),
        vec![("a".to_string(), 3000), ("b".to_string(), 2000)]
    );
}

type PEv = (String, char, i64, Option<i64>, Option<TimeDomain>);

/// Processing-time timers: element `(key, delay)` registers a timer at now+delay and one at
/// now+delay+500 that it deletes right away; delay 0 registers nothing.
#[derive(Clone)]
struct ProcTimers {
    log: Log<PEv>,
}

impl KeyedProcessFunction<String, (String, i64), String> for ProcTimers {
    fn process_element(
        &mut self,
        (k, delay): (String, i64),
        ctx: &mut KeyedContext<'_, String>,
        _: &mut Collector<'_, String>,
    ) -> FnResult {
        let now = ctx.current_processing_time();
        if delay > 0 {
            ctx.register_processing_time_timer(now + delay);
            ctx.register_processing_time_timer(now + delay + 500);
            ctx.delete_processing_time_timer(now + delay + 500);
        }
        self.log.lock().unwrap().push((k, 'E', now, None, None));
        Ok(())
    }
    fn on_timer(
        &mut self,
        ts: i64,
        ctx: &mut KeyedContext<'_, String>,
        out: &mut Collector<'_, String>,
    ) -> FnResult {
        let k = ctx.current_key().clone();
        self.log.lock().unwrap().push((
            k.clone(),
            'T',
            ts,
            Some(ctx.current_processing_time()),
            ctx.time_domain(),
        ));
        out.collect(k);
        Ok(())
    }
}

#[test]
fn processing_time_timers_follow_the_clock() {
    let clock = ManualClock::new(10_000);
    let env = StreamEnv::new()
        .with_parallelism(1)
        .with_clock(Arc::new(clock.clone()));
    let (tx, src) = feed::<(String, i64)>(1);
    let l = log();
    let out = CollectSink::new();
    env.source(src)
        .key_by(|r: &(String, i64)| r.0.clone())
        .process(ProcTimers { log: l.clone() })
        .sink(out.clone());
    let h = env.execute_async("processing time").unwrap();
    let emit = |k: &str, d: i64| tx.send(Feed::Emit((k.to_string(), d), 0)).unwrap();
    let count = |c: char| entries(&l).iter().filter(|e| e.1 == c).count();
    emit("a", 1000); // timer at 11_000 (and 11_500, deleted)
    emit("b", 500); // timer at 10_500 (and 11_000, deleted)
    wait_until("2 elements", || count('E') == 2);
    clock.set(10_499);
    emit("barrier", 0);
    wait_until("barrier 1", || count('E') == 3);
    assert_eq!(count('T'), 0, "no timer is due at 10499");
    clock.set(10_500);
    wait_until("b's timer", || count('T') == 1);
    clock.set(11_999);
    wait_until("a's timer", || count('T') == 2);
    emit("barrier", 0);
    wait_until("barrier 2", || count('E') == 4);
    tx.send(Feed::Finish).unwrap();
    join(h).unwrap();
    let timers: Vec<PEv> = entries(&l).into_iter().filter(|e| e.1 == 'T').collect();
    assert_eq!(
        timers,
        vec![
            (
                "b".into(),
                'T',
                10_500,
                Some(10_500),
                Some(TimeDomain::ProcessingTime)
            ),
            (
                "a".into(),
                'T',
                11_000,
                Some(11_999),
                Some(TimeDomain::ProcessingTime)
            ),
        ],
        "deleted timers never fire; due ones fire once, in order"
    );
    let recs = out.records();
    assert_eq!(recs.len(), 2);
    assert!(
        recs.iter().all(|r| r.timestamp().is_none()),
        "processing-time timer output has no event timestamp"
    );
}

/// Evens to the main output, odds to a side output.
#[derive(Clone)]
struct Odds(OutputTag<i64>);

impl ProcessFunction<i64, i64> for Odds {
    fn process_element(
        &mut self,
        x: i64,
        ctx: &mut ProcessContext<'_>,
        out: &mut Collector<'_, i64>,
    ) -> FnResult {
        if x % 2 == 0 {
            out.collect(x)
        } else {
            ctx.output(&self.0, x)?
        }
        Ok(())
    }
}

#[test]
fn side_outputs_carry_watermarks() {
    let env = StreamEnv::new().with_parallelism(1);
    let tag = OutputTag::new("odd");
    let s = env
        .from_collection(vec![1i64, 2, 3, 10, 11])
        .assign_timestamps(per_record())
        .process(Odds(tag.clone()));
    s.sink(DiscardSink::new());
    let (side, l) = probe(&s.side_output(&tag).rebalance());
    side.sink(DiscardSink::new());
    run(&env, "side watermarks").unwrap();
    use Seen::*;
    // A watermark follows each record; the side output's records come in between.
    assert_eq!(
        entries(&l),
        vec![
            Record(1, 1),
            Watermark(0),
            Watermark(1),
            Record(3, 3),
            Watermark(2),
            Watermark(9),
            Record(11, 11),
            Watermark(10),
            Watermark(MAX),
            End
        ]
    );
}

#[test]
fn end_of_input_fires_timers_even_when_every_input_was_idle() {
    let clock = ManualClock::new(1_000_000);
    let env = StreamEnv::new()
        .with_parallelism(1)
        .with_clock(Arc::new(clock.clone()));
    let (a_tx, a) = feed::<(String, i64)>(1);
    let (b_tx, b) = feed::<(String, i64)>(1);
    let strategy = || {
        WatermarkStrategy::monotonous()
            .with_timestamps(|r: &(String, i64), _| r.1)
            .per_record()
            .with_idleness(millis(500))
    };
    let a = env.source(a).assign_timestamps(strategy());
    let b = env.source(b).assign_timestamps(strategy());
    let l = log();
    let out = CollectSink::new();
    let (u, seen) = probe(&a.union(&[b]));
    u.key_by(|r: &(String, i64)| r.0.clone())
        .process(Timers { log: l.clone() })
        .sink(out.clone());
    let h = env.execute_async("idle at the end").unwrap();
    a_tx.send(Feed::Emit(("a".into(), 100), 0)).unwrap();
    b_tx.send(Feed::Emit(("b".into(), 200), 0)).unwrap();
    wait_until("2 elements", || entries(&l).len() == 2);
    // Both inputs go idle, then end.
    clock.advance(1_000);
    wait_until("the union is idle", || {
        entries(&seen).contains(&Seen::Status(WatermarkStatus::Idle))
    });
    a_tx.send(Feed::Finish).unwrap();
    b_tx.send(Feed::Finish).unwrap();
    join(h).unwrap();
    assert_eq!(
        sort(out.values()),
        vec!["a@1100".to_string(), "b@1200".to_string()],
        "the final watermark fires every pending timer, idle inputs or not"
    );
}

/// Matches a name (first input) with a payment (second input) by id; a name still unmatched
/// 100 ms of event time later is reported by a timer. Logs what it sees.
#[derive(Clone, Default)]
struct Timeout {
    log: Log<String>,
    pending: ValueState<String>,
}

impl KeyedCoProcessFunction<u64, (u64, String, i64), (u64, i64), String> for Timeout {
    fn open(&mut self, s: &mut StateRegistry<'_, u64>) -> FnResult {
        self.pending = s.value_state("pending")?;
        Ok(())
    }
    fn process_element1(
        &mut self,
        (id, name, ts): (u64, String, i64),
        ctx: &mut KeyedContext<'_, u64>,
        _: &mut Collector<'_, String>,
    ) -> FnResult {
        self.log.lock().unwrap().push(format!("name {id}"));
        self.pending.set(ctx, name);
        ctx.register_event_time_timer(ts + 100);
        Ok(())
    }
    fn process_element2(
        &mut self,
        (id, _): (u64, i64),
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut Collector<'_, String>,
    ) -> FnResult {
        if let Some(n) = self.pending.take(ctx) {
            self.log.lock().unwrap().push(format!("paid {id} {n}"));
            out.collect(format!("paid {id} {n}"));
        }
        Ok(())
    }
    fn on_timer(
        &mut self,
        ts: i64,
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut Collector<'_, String>,
    ) -> FnResult {
        assert!(ctx.current_watermark() >= ts);
        if let Some(n) = self.pending.take(ctx) {
            let m = format!(
                "unpaid {} {n} at {}",
                ctx.current_key(),
                ctx.current_watermark()
            );
            self.log.lock().unwrap().push(m.clone());
            out.collect(m);
        }
        Ok(())
    }
}

#[test]
fn keyed_co_process_timers_follow_the_minimum_watermark() {
    let env = StreamEnv::new().with_parallelism(2);
    let out = CollectSink::new();
    let (names_tx, names) = feed::<(u64, String, i64)>(1);
    let (pay_tx, payments) = feed::<(u64, i64)>(1);
    let names = env.source(names).assign_timestamps(
        WatermarkStrategy::monotonous()
            .with_timestamps(|r: &(u64, String, i64), _| r.2)
            .per_record(),
    );
    let payments = env.source(payments).assign_timestamps(
        WatermarkStrategy::monotonous()
            .with_timestamps(|r: &(u64, i64), _| r.1)
            .per_record(),
    );
    let l = log();
    names
        .key_by(|r: &(u64, String, i64)| r.0)
        .connect(&payments.key_by(|r: &(u64, i64)| r.0))
        .process(Timeout {
            log: l.clone(),
            ..Default::default()
        })
        .sink(out.clone());
    let h = env.execute_async("keyed co timers").unwrap();
    let has = |m: &str| entries(&l).iter().any(|e| e == m);
    for (id, n) in [(1, "ann"), (2, "bob"), (3, "cy")] {
        names_tx.send(Feed::Emit((id, n.into(), 1000), 0)).unwrap();
    }
    wait_until("3 names", || {
        entries(&l).iter().filter(|e| e.starts_with("name")).count() == 3
    });
    pay_tx.send(Feed::Emit((1, 1050), 0)).unwrap();
    wait_until("ann paid", || has("paid 1 ann"));
    // The payments' watermark passes the timers (1299), the names' (999) does not.
    pay_tx.send(Feed::Emit((3, 1300), 0)).unwrap();
    wait_until("cy paid", || has("paid 3 cy"));
    assert!(!entries(&l).iter().any(|e| e.starts_with("unpaid")));
    // Now the names' watermark is 1999: the minimum is the payments' 1299.
    names_tx
        .send(Feed::Emit((4, "dan".into(), 2000), 0))
        .unwrap();
    wait_until("bob's timer", || has("unpaid 2 bob at 1299"));
    names_tx.send(Feed::Finish).unwrap();
    pay_tx.send(Feed::Finish).unwrap();
    join(h).unwrap();
    assert_eq!(
        sort(out.values()),
        vec![
            "paid 1 ann".to_string(),
            "paid 3 cy".into(),
            "unpaid 2 bob at 1299".into(),
            format!("unpaid 4 dan at {MAX}"),
        ]
    );
}
