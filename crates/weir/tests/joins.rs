//! Window joins and interval joins.
use std::time::Duration;
use weir::prelude::*;
use weir::windows::{Session, Sliding, Tumbling};

type Ev = (u32, i64, &'static str);

fn source(env: &StreamEnv, evs: Vec<(u32, i64, String)>) -> DataStream<(u32, i64, String)> {
    env.from_collection(evs).assign_timestamps(
        WatermarkStrategy::monotonous().with_timestamps(|e: &(u32, i64, String), _| e.1),
    )
}

fn evs(v: &[Ev]) -> Vec<(u32, i64, String)> {
    v.iter().map(|(k, t, s)| (*k, *t, s.to_string())).collect()
}

#[test]
fn tumbling_window_join_pairs_equal_keys_in_the_same_window() {
    for p in [1, 3] {
        let env = StreamEnv::new().with_parallelism(p);
        let out = CollectSink::new();
        let a = source(
            &env,
            evs(&[
                (1, 100, "a1"),
                (1, 900, "a2"),
                (2, 150, "a3"),
                (1, 1100, "a4"),
            ]),
        );
        let b = source(
            &env,
            evs(&[
                (1, 500, "b1"),
                (2, 1500, "b2"),
                (1, 1900, "b3"),
                (3, 100, "b4"),
            ]),
        );
        a.join(
            &b,
            |x: &(u32, i64, String)| x.0,
            |y: &(u32, i64, String)| y.0,
        )
        .window(Tumbling::event_time(1000))
        .apply(|x: &(u32, i64, String), y: &(u32, i64, String)| (x.2.clone(), y.2.clone()))
        .sink(out.clone());
        env.execute("window join").unwrap();
        let mut v = out.values();
        v.sort();
        let pairs = |v: &[(&str, &str)]| {
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            v,
            pairs(&[("a1", "b1"), ("a2", "b1"), ("a4", "b3")]),
            "p={p}"
        );
    }
}

#[test]
fn sliding_and_session_window_joins() {
    let env = StreamEnv::new().with_parallelism(2);
    let sliding = CollectSink::new();
    let session = CollectSink::new();
    let a = source(&env, evs(&[(1, 0, "a1"), (1, 30, "a2")]));
    let b = source(&env, evs(&[(1, 12, "b1"), (1, 33, "b2")]));
    a.join(
        &b,
        |x: &(u32, i64, String)| x.0,
        |y: &(u32, i64, String)| y.0,
    )
    .window(Sliding::event_time(20, 10))
    .apply(|x: &(u32, i64, String), y: &(u32, i64, String)| format!("{}{}", x.2, y.2))
    .sink(sliding.clone());
    // sessions with gap 10: {0, 12} -> [0,22) is one session (12 < 0+10? no: [0,10) and
    // [12,22) do not touch) so a1 and b1 are apart; {30, 33} -> one session: a2b2.
    a.join(
        &b,
        |x: &(u32, i64, String)| x.0,
        |y: &(u32, i64, String)| y.0,
    )
    .window(Session::event_time(10))
    .apply(|x: &(u32, i64, String), y: &(u32, i64, String)| format!("{}{}", x.2, y.2))
    .sink(session.clone());
    env.execute("joins").unwrap();
    let mut v = sliding.values();
    v.sort();
    // windows [0,20): a1 b1; [10,30): b1 only; [20,40): a2 b2; [30,50): a2 b2
    assert_eq!(v, vec!["a1b1", "a2b2", "a2b2"]);
    assert_eq!(session.values(), vec!["a2b2"]);
}

#[test]
fn interval_join_matches_within_bounds_and_cleans_up() {
    for p in [1, 2] {
        let env = StreamEnv::new().with_parallelism(p);
        let out = CollectSink::new();
        // orders and shipments: a shipment matches an order 0..=1000 ms after it.
        let orders = source(
            &env,
            evs(&[(1, 1000, "o1"), (2, 1000, "o2"), (1, 5000, "o3")]),
        );
        let ships = source(
            &env,
            evs(&[
                (1, 1500, "s1"),
                (1, 2000, "s2"),
                (1, 2001, "s3"),
                (2, 999, "s4"),
                (1, 5000, "s5"),
            ]),
        );
        orders
            .key_by(|x: &(u32, i64, String)| x.0)
            .interval_join(&ships.key_by(|y: &(u32, i64, String)| y.0))
            .between_ms(0, 1000)
            .process(|x: &(u32, i64, String), y: &(u32, i64, String)| format!("{}-{}", x.2, y.2))
            .sink(out.clone());
        let res = env.execute("interval join").unwrap();
        let mut recs: Vec<(String, i64)> =
            out.records().into_iter().map(|r| (r.value, r.ts)).collect();
        recs.sort();
        assert_eq!(
            recs,
            vec![
                ("o1-s1".into(), 1500),
                ("o1-s2".into(), 2000),
                ("o3-s5".into(), 5000)
            ],
            "p={p}: bounds inclusive, s3 one ms too late, s4 before o2; timestamp is the max"
        );
        let final_state: i64 = res
            .metrics
            .gauges
            .iter()
            .filter(|(id, _)| id.name == "state_entries")
            .map(|(_, v)| v.0)
            .sum();
        assert_eq!(
            final_state, 0,
            "buffers and timers are dropped once the watermark passes"
        );
    }
}

#[test]
fn interval_join_exclusive_bounds_and_negative_lower_bound() {
    let env = StreamEnv::new().with_parallelism(1);
    let out = CollectSink::new();
    // (Lateness is not asserted here: the join's watermark is the minimum of two independent
    // inputs, so whether a record is behind it depends on thread timing.)
    let a = source(&env, evs(&[(1, 1000, "a1"), (1, 3000, "a2")]));
    let b = source(
        &env,
        evs(&[(1, 500, "b1"), (1, 1500, "b2"), (1, 2900, "b3")]),
    );
    let joined = a
        .key_by(|x: &(u32, i64, String)| x.0)
        .interval_join(&b.key_by(|y: &(u32, i64, String)| y.0))
        .between(Duration::from_millis(500), Duration::from_millis(500))
        .lower_bound_exclusive()
        .process(|x: &(u32, i64, String), y: &(u32, i64, String)| format!("{}-{}", x.2, y.2));
    joined.sink(out.clone());
    env.execute("interval join 2").unwrap();
    let mut v = out.values();
    v.sort();
    // a1: (500, 1500] -> b2 (b1 at 500 excluded); a2: (2500, 3500] -> b3
    assert_eq!(v, vec!["a1-b2", "a2-b3"]);
}
