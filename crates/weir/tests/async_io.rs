//! The async I/O operator: ordering, capacity, retries and timeouts, failure policies,
//! watermarks, panics and cancellation.
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use weir::prelude::*;
use weir::WeirError;

/// Deterministic pseudo-random numbers (SplitMix64).
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A pseudo-random request time of 0–14 ms for record `i`.
fn delay(i: u64) -> Duration {
    Duration::from_millis(mix(i) % 15)
}

/// `(subtask, value)`: which subtask emitted each value, so order can be checked per subtask.
#[derive(Clone)]
struct TagSubtask;

impl ProcessFunction<u64, (usize, u64)> for TagSubtask {
    fn process_element(
        &mut self,
        v: u64,
        ctx: &mut ProcessContext<'_>,
        out: &mut Collector<'_, (usize, u64)>,
    ) -> FnResult {
        out.collect((ctx.subtask(), v));
        Ok(())
    }
}

/// Values emitted by each subtask, in emission order.
fn by_subtask(seen: Vec<(usize, u64)>) -> HashMap<usize, Vec<u64>> {
    let mut m: HashMap<usize, Vec<u64>> = HashMap::new();
    for (s, v) in seen {
        m.entry(s).or_default().push(v);
    }
    m
}

fn sorted(mut v: Vec<u64>) -> Vec<u64> {
    v.sort_unstable();
    v
}

#[test]
fn ordered_mode_preserves_input_order_under_random_delays() {
    for p in [1, 2] {
        let n = 300u64;
        let completed = Arc::new(Mutex::new(Vec::new()));
        let c2 = completed.clone();
        let env = StreamEnv::new().with_parallelism(p);
        let out = CollectSink::new();
        env.from_collection((0..n).collect::<Vec<u64>>())
            .async_map(AsyncOptions::ordered().with_capacity(8), move |v: u64| {
                let completed = c2.clone();
                async move {
                    tokio::time::sleep(delay(v)).await;
                    completed.lock().unwrap().push(v);
                    Ok(v * 10)
                }
            })
            .process(TagSubtask)
            .sink(out.clone());
        env.execute("ordered").unwrap();

        // Requests did complete out of order, so order had to be restored.
        let completed = completed.lock().unwrap().clone();
        assert_ne!(
            completed,
            sorted(completed.clone()),
            "p={p}: no reordering to undo"
        );

        let seen = out.values();
        assert_eq!(
            sorted(seen.iter().map(|x| x.1).collect()),
            (0..n).map(|v| v * 10).collect::<Vec<_>>(),
            "p={p}: every record exactly once"
        );
        let per = by_subtask(seen);
        assert_eq!(per.len(), p, "p={p}: every subtask got records");
        for (s, vals) in per {
            // Each subtask receives an increasing subsequence of the input (round robin from
            // the single source subtask) and must emit it in that order.
            assert_eq!(
                vals,
                sorted(vals.clone()),
                "p={p} subtask {s}: out of order"
            );
        }
    }
}

#[test]
fn unordered_mode_emits_each_record_once_as_requests_complete() {
    for p in [1, 2] {
        let n = 40u64;
        let env = StreamEnv::new().with_parallelism(p);
        let out = CollectSink::new();
        env.from_collection((0..n).collect::<Vec<u64>>())
            .async_map(
                AsyncOptions::unordered().with_capacity(n as usize),
                // Later records finish first.
                |v: u64| async move {
                    tokio::time::sleep(Duration::from_millis((40 - v) * 4)).await;
                    Ok(v)
                },
            )
            .process(TagSubtask)
            .sink(out.clone());
        env.execute("unordered").unwrap();
        let seen = out.values();
        assert_eq!(
            sorted(seen.iter().map(|x| x.1).collect()),
            (0..n).collect::<Vec<_>>(),
            "p={p}: every record exactly once"
        );
        for (s, vals) in by_subtask(seen) {
            assert_ne!(
                vals,
                sorted(vals.clone()),
                "p={p} subtask {s}: emitted in input order, not completion order"
            );
            if p == 1 {
                // Far apart completion times: emitted (mostly) in reverse.
                let inversions = vals.windows(2).filter(|w| w[0] > w[1]).count();
                assert!(inversions > (n as usize) / 2, "{vals:?}");
            }
        }
    }
}

#[test]
fn in_flight_requests_never_exceed_capacity() {
    let capacity = 4;
    for mode in [AsyncMode::Ordered, AsyncMode::Unordered] {
        for p in [1, 2] {
            let current = Arc::new(AtomicUsize::new(0));
            let max = Arc::new(AtomicUsize::new(0));
            let (c2, m2) = (current.clone(), max.clone());
            let env = StreamEnv::new().with_parallelism(p);
            let out = CollectSink::new();
            env.from_collection((0..120u64).collect::<Vec<u64>>())
                .async_map(
                    AsyncOptions::default()
                        .with_mode(mode)
                        .with_capacity(capacity),
                    move |v: u64| {
                        let (current, max) = (c2.clone(), m2.clone());
                        async move {
                            let now = current.fetch_add(1, Ordering::SeqCst) + 1;
                            max.fetch_max(now, Ordering::SeqCst);
                            // Record 0 is slow: in ordered mode, finished requests behind it
                            // must still count against the capacity.
                            let d = if v == 0 { 60 } else { 2 + mix(v) % 5 };
                            tokio::time::sleep(Duration::from_millis(d)).await;
                            current.fetch_sub(1, Ordering::SeqCst);
                            Ok(v)
                        }
                    },
                )
                .sink(out.clone());
            let r = env.execute("capacity").unwrap();
            assert_eq!(out.len(), 120);
            let max = max.load(Ordering::SeqCst);
            assert!(
                max <= capacity * p,
                "{mode:?} p={p}: {max} requests in flight, capacity {capacity} per subtask"
            );
            if p == 1 {
                // The source is much faster than the requests: the operator did fill up.
                assert_eq!(max, capacity, "{mode:?}: never reached the capacity");
            }
            // The operator's own view, per subtask: requests in flight, and records submitted
            // but not yet emitted (in flight or waiting for their turn).
            let m = &r.metrics;
            for g in ["async_in_flight", "async_queued"] {
                let hw = m.gauge_max("async_map", g);
                assert!(
                    hw >= 1 && hw <= capacity as i64,
                    "{mode:?} p={p}: {g} reached {hw}"
                );
            }
        }
    }
}

#[test]
fn failed_attempts_are_retried_with_exponential_backoff() {
    let attempts: Arc<Mutex<HashMap<u64, Vec<Instant>>>> = Default::default();
    let a2 = attempts.clone();
    let env = StreamEnv::new().with_parallelism(1);
    let out = CollectSink::new();
    env.from_collection((0..20u64).collect::<Vec<u64>>())
        .async_map(
            AsyncOptions::ordered()
                .with_capacity(20)
                .with_max_attempts(3)
                .with_backoff(20, 30),
            move |v: u64| {
                let attempts = a2.clone();
                async move {
                    let n = {
                        let mut a = attempts.lock().unwrap();
                        let e = a.entry(v).or_default();
                        e.push(Instant::now());
                        e.len()
                    };
                    // The first two attempts fail.
                    if n <= 2 {
                        return Err(format!("transient failure {n} of {v}").into());
                    }
                    Ok(v + 100)
                }
            },
        )
        .sink(out.clone());
    let r = env.execute("retries").unwrap();
    assert_eq!(out.values(), (100..120).collect::<Vec<u64>>());
    assert_eq!(r.metrics.counter_sum("async_map", "async_retries"), 40);
    for (v, times) in attempts.lock().unwrap().iter() {
        assert_eq!(times.len(), 3, "record {v}");
        // Pauses of 20 then min(40, 30) ms, jittered down by at most half.
        let first = times[1] - times[0];
        let second = times[2] - times[1];
        assert!(first >= Duration::from_millis(10), "{v}: {first:?}");
        assert!(second >= Duration::from_millis(15), "{v}: {second:?}");
    }
}

#[test]
fn timed_out_attempts_are_cancelled_and_retried() {
    let attempts: Arc<Mutex<HashMap<u64, usize>>> = Default::default();
    let a2 = attempts.clone();
    let env = StreamEnv::new().with_parallelism(1);
    let out = CollectSink::new();
    let started = Instant::now();
    env.from_collection((0..10u64).collect::<Vec<u64>>())
        .async_map(
            AsyncOptions::unordered()
                .with_capacity(10)
                .with_timeout_ms(50)
                .with_max_attempts(2)
                .with_backoff(1, 1),
            move |v: u64| {
                let attempts = a2.clone();
                async move {
                    let n = {
                        let mut a = attempts.lock().unwrap();
                        let e = a.entry(v).or_default();
                        *e += 1;
                        *e
                    };
                    if n == 1 {
                        // The first attempt hangs.
                        tokio::time::sleep(Duration::from_secs(60)).await;
                    }
                    Ok(v)
                }
            },
        )
        .sink(out.clone());
    let r = env.execute("timeouts").unwrap();
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(sorted(out.values()), (0..10).collect::<Vec<u64>>());
    assert_eq!(r.metrics.counter_sum("async_map", "async_timeouts"), 10);
    assert!(attempts.lock().unwrap().values().all(|&n| n == 2));
}

#[test]
fn requests_that_always_time_out_fail_the_job_naming_the_operator() {
    for p in [1, 2] {
        let env = StreamEnv::new().with_parallelism(p);
        let started = Instant::now();
        env.from_collection((0..10u64).collect::<Vec<u64>>())
            .async_map(
                AsyncOptions::ordered()
                    .with_timeout_ms(30)
                    .with_max_attempts(2)
                    .with_backoff(5, 5),
                |v: u64| async move {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    Ok(v)
                },
            )
            .name("slow_lookup")
            .sink(CollectSink::new());
        let err = env.execute("always times out").unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(&err, WeirError::Record { operator, .. } if operator == "slow_lookup"),
            "p={p}: {err:?}"
        );
        assert!(msg.contains("'slow_lookup'"), "{msg}");
        assert!(msg.contains("subtask"), "{msg}");
        assert!(msg.contains("failed after 2 attempts"), "{msg}");
        assert!(msg.contains("timed out after 30 ms"), "{msg}");
        // Failing is prompt: no wait for the 60 s futures.
        assert!(started.elapsed() < Duration::from_secs(20));
    }
}

#[test]
fn failure_policies_fail_drop_or_dead_letter() {
    // Odd records always fail.
    let f = |v: u64| async move {
        if v % 2 == 1 {
            Err(format!("no such user {v}").into())
        } else {
            Ok(v)
        }
    };
    let opts = AsyncOptions::unordered()
        .with_max_attempts(2)
        .with_backoff(1, 1);

    // Fail (the default): the error names the operator and the failed record's position,
    // not the position the source has reached by the time the failure comes back.
    let env = StreamEnv::new().with_parallelism(1);
    env.from_collection((0..50u64).map(|v| if v == 7 { 7 } else { v * 2 }).collect())
        .async_map(opts, f)
        .name("users")
        .sink(CollectSink::new());
    let msg = env.execute("fail").unwrap_err().to_string();
    assert!(msg.contains("'users'"), "{msg}");
    assert!(msg.contains("collection@7"), "{msg}");
    assert!(msg.contains("no such user 7"), "{msg}");

    // Drop: counted.
    let env = StreamEnv::new().with_parallelism(2);
    let out = CollectSink::new();
    env.from_collection((0..50u64).collect())
        .async_map(opts.with_failure_policy(BadRecordPolicy::Drop), f)
        .sink(out.clone());
    let r = env.execute("drop").unwrap();
    assert_eq!(sorted(out.values()), (0..50).step_by(2).collect::<Vec<_>>());
    assert_eq!(r.metrics.counter_sum("async_map", "records_dropped"), 25);

    // Dead letters: the record as JSON, the last error, its position. At p=2 the dead letters
    // go through a channel to a sink of parallelism 1 (and lose their positions: a task
    // reading a channel has none).
    for p in [1, 2] {
        let env = StreamEnv::new().with_parallelism(p);
        let out = CollectSink::new();
        let dead = CollectSink::new();
        let s = env
            .from_collection((0..50u64).collect())
            .async_map(opts.with_failure_policy(BadRecordPolicy::DeadLetter), f);
        s.sink(out.clone());
        s.dead_letters().sink(dead.clone()).set_parallelism(1);
        env.execute("dead letters").unwrap();
        assert_eq!(sorted(out.values()), (0..50).step_by(2).collect::<Vec<_>>());
        let dead = dead.values();
        assert_eq!(dead.len(), 25, "p={p}");
        for d in dead {
            let v: u64 = serde_json::from_slice(&d.raw).unwrap();
            assert_eq!(v % 2, 1);
            assert_eq!(d.operator, "async_map");
            assert!(
                d.error.contains("failed after 2 attempts")
                    && d.error.contains(&format!("no such user {v}")),
                "{}",
                d.error
            );
            let position = (p == 1).then(|| weir::Position::Offset {
                split: "collection".into(),
                offset: v,
            });
            assert_eq!(d.position, position);
        }
    }

    // Dead letters need a consumer.
    let env = StreamEnv::new();
    env.from_collection(vec![1u64])
        .async_map(opts.with_failure_policy(BadRecordPolicy::DeadLetter), f)
        .sink(CollectSink::new());
    assert!(matches!(env.execute("x"), Err(WeirError::Config(_))));
}

/// `(value, timestamp, downstream watermark when it arrived, subtask)`.
type Seen = (u64, Option<i64>, i64, usize);

#[derive(Clone)]
struct WatermarkProbe;

impl ProcessFunction<u64, Seen> for WatermarkProbe {
    fn process_element(
        &mut self,
        v: u64,
        ctx: &mut ProcessContext<'_>,
        out: &mut Collector<'_, Seen>,
    ) -> FnResult {
        out.collect((v, ctx.timestamp(), ctx.current_watermark(), ctx.subtask()));
        Ok(())
    }
}

#[test]
fn watermarks_neither_overtake_nor_are_overtaken_by_records() {
    // Groups of 5 records share a timestamp; with monotonous per-record watermarks, the
    // source emits watermark ts−1 after the first record of each group, so the async operator
    // sees: r0 wm(−1) r1..r5 wm(99) r6..r10 wm(199) ... — segments of 5 records that unordered
    // mode may reorder among themselves, but not across the watermarks.
    let n = 200u64;
    let ts = |i: u64| (i / 5) as i64 * 100;
    for mode in [AsyncMode::Ordered, AsyncMode::Unordered] {
        for p in [1, 2] {
            let env = StreamEnv::new().with_parallelism(p);
            let out = CollectSink::new();
            env.from_collection((0..n).collect::<Vec<u64>>())
                .assign_timestamps(
                    WatermarkStrategy::monotonous()
                        .with_timestamps(move |v: &u64, _| ts(*v))
                        .per_record(),
                )
                .async_map(
                    AsyncOptions::default().with_mode(mode).with_capacity(8),
                    |v: u64| async move {
                        tokio::time::sleep(delay(v)).await;
                        Ok(v)
                    },
                )
                .process(WatermarkProbe)
                .sink(out.clone());
            env.execute("watermarks").unwrap();
            let seen = out.values();
            assert_eq!(
                sorted(seen.iter().map(|s| s.0).collect()),
                (0..n).collect::<Vec<_>>(),
                "{mode:?} p={p}"
            );
            let mut reordered = 0;
            let mut last: HashMap<usize, u64> = HashMap::new();
            for &(v, t, wm, subtask) in &seen {
                assert_eq!(t, Some(ts(v)), "{mode:?} p={p}: timestamp of {v} not kept");
                // Not late: no watermark ≥ its timestamp was emitted before it.
                assert!(
                    wm < ts(v),
                    "{mode:?} p={p}: record {v} (ts {}) emitted after watermark {wm}",
                    ts(v)
                );
                // Not early: the watermark the source emitted before it was emitted before it.
                let before = if v == 0 { i64::MIN } else { ts(v - 1) - 1 };
                assert!(
                    wm >= before,
                    "{mode:?} p={p}: record {v} emitted before watermark {before} (saw {wm})"
                );
                if let Some(prev) = last.insert(subtask, v) {
                    if prev > v {
                        reordered += 1;
                    }
                }
            }
            match mode {
                AsyncMode::Ordered => assert_eq!(reordered, 0, "p={p}"),
                // Random delays within segments of 5 (p=1): some reordering happened, so the
                // barrier checks above were exercised.
                AsyncMode::Unordered if p == 1 => assert!(reordered > 0),
                AsyncMode::Unordered => {}
            }
        }
    }
}

#[test]
fn async_flat_map_emits_every_result_with_the_input_timestamp() {
    let env = StreamEnv::new().with_parallelism(1);
    let out = CollectSink::new();
    env.from_collection((0..30u64).collect::<Vec<u64>>())
        .assign_timestamps(
            WatermarkStrategy::monotonous().with_timestamps(|v: &u64, _| *v as i64 * 7),
        )
        .async_flat_map(
            AsyncOptions::ordered().with_capacity(5),
            |v: u64| async move {
                tokio::time::sleep(delay(v)).await;
                Ok((0..v % 3).map(|k| v * 10 + k).collect())
            },
        )
        .sink(out.clone());
    env.execute("flat").unwrap();
    let expected: Vec<(i64, u64)> = (0..30u64)
        .flat_map(|v| (0..v % 3).map(move |k| (v as i64 * 7, v * 10 + k)))
        .collect();
    let got: Vec<(i64, u64)> = out.records().into_iter().map(|r| (r.ts, r.value)).collect();
    assert_eq!(got, expected);
}

#[test]
fn a_panic_in_the_async_function_fails_the_job_naming_the_operator() {
    for in_future in [true, false] {
        for p in [1, 2] {
            let env = StreamEnv::new().with_parallelism(p);
            env.from_collection((0..40u64).collect::<Vec<u64>>())
                .async_map(AsyncOptions::unordered(), move |v: u64| {
                    if !in_future && v == 13 {
                        panic!("boom before the future on {v}");
                    }
                    async move {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        if v == 13 {
                            panic!("boom on {v}");
                        }
                        Ok(v)
                    }
                })
                .name("exploding_lookup")
                .sink(CollectSink::new());
            let err = env.execute("panics").unwrap_err();
            match &err {
                WeirError::Panic {
                    operator, message, ..
                } => {
                    assert_eq!(operator, "exploding_lookup");
                    let want = if in_future {
                        "boom on 13"
                    } else {
                        "boom before the future on 13"
                    };
                    assert!(message.contains(want), "{message}");
                }
                other => panic!("p={p}: expected a panic error, got {other:?}"),
            }
        }
    }
}

/// Counts futures dropped (completed, timed out, or aborted).
struct DropCount(Arc<AtomicUsize>);

impl Drop for DropCount {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn a_failed_job_aborts_requests_still_in_flight() {
    let started = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(AtomicUsize::new(0));
    let (s2, d2) = (started.clone(), dropped.clone());
    let env = StreamEnv::new().with_parallelism(1);
    let t0 = Instant::now();
    env.from_collection((0..10u64).collect::<Vec<u64>>())
        .async_map(
            AsyncOptions::unordered().with_timeout_ms(120_000),
            move |v: u64| {
                let (started, guard) = (s2.clone(), DropCount(d2.clone()));
                async move {
                    let _guard = guard;
                    started.fetch_add(1, Ordering::SeqCst);
                    if v == 3 {
                        return Err("fatal".into());
                    }
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    Ok(v)
                }
            },
        )
        .sink(CollectSink::new());
    let err = env.execute("abort").unwrap_err();
    assert!(err.to_string().contains("fatal"), "{err}");
    assert!(
        t0.elapsed() < Duration::from_secs(20),
        "waited for hanging requests"
    );
    // Every request still in flight is dropped soon after: nothing keeps running.
    let deadline = Instant::now() + Duration::from_secs(5);
    while dropped.load(Ordering::SeqCst) < started.load(Ordering::SeqCst)
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    // (A request aborted before its first poll never called the function.)
    let started = started.load(Ordering::SeqCst);
    assert!(started >= 4, "{started}");
    assert_eq!(dropped.load(Ordering::SeqCst), started);
}

#[test]
fn cancelling_while_waiting_for_requests_does_not_hang() {
    let env = StreamEnv::new().with_parallelism(1);
    env.from_collection((0..10u64).collect::<Vec<u64>>())
        .async_map(
            AsyncOptions::ordered()
                .with_timeout_ms(300)
                .with_failure_policy(BadRecordPolicy::Drop),
            |v: u64| async move {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok(v)
            },
        )
        .sink(CollectSink::new());
    let job = env.execute_async("cancel").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let t0 = Instant::now();
    job.cancel();
    let r = job.join();
    // The operator cannot see the cancellation (the runtime does not give operators the
    // token); its wait ends when the requests time out.
    assert!(t0.elapsed() < Duration::from_secs(10));
    assert!(matches!(r, Ok(ref r) if r.cancelled) || matches!(r, Err(WeirError::Cancelled)));
}

#[test]
fn invalid_options_are_a_configuration_error() {
    for opts in [
        AsyncOptions::default().with_capacity(0),
        AsyncOptions::default().with_max_attempts(0),
        AsyncOptions::default().with_timeout_ms(0),
    ] {
        let env = StreamEnv::new().with_parallelism(1);
        env.from_collection(vec![1u64])
            .async_map(opts, |v: u64| async move { Ok(v) })
            .sink(CollectSink::new());
        let err = env.execute("bad options").unwrap_err();
        assert!(matches!(err, WeirError::Config(_)), "{err:?}");
        assert!(err.to_string().contains("async_map"), "{err}");
    }
}
