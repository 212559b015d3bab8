//! Failures: panics in user functions and sources, user errors, and cancellation. Every job
//! runs in the background with a bound, so a hang fails the test instead of blocking CI.
mod common;

use common::*;
use weir::prelude::*;
use weir::{Position, WeirError};

/// How many times racy failure paths are exercised: the reported error must always be the
/// real failure, never the cascade it causes in other tasks.
const REPEAT: usize = 10;

fn assert_panic(e: &WeirError, op: &str, msg: &str) {
    match e {
        WeirError::Panic {
            operator, message, ..
        } => {
            assert_eq!(operator, op, "{e}");
            assert!(message.contains(msg), "{e}");
        }
        other => panic!("expected a panic of '{op}', got: {other:?}"),
    }
    let text = e.to_string();
    assert!(
        text.contains(&format!("'{op}'")) && text.contains(msg),
        "{text}"
    );
}

#[test]
fn panic_in_map_fails_the_job_with_message_and_operator() {
    for _ in 0..REPEAT {
        let env = StreamEnv::new().with_parallelism(2);
        // The other input never ends: only the failure can stop the job.
        let forever = env.source(Datagen::new(0, |id, _| id).unbounded());
        env.source(Datagen::new(1_000, |id, _| id))
            .map(|x| {
                if x == 500 {
                    panic!("boom at {x}");
                }
                x
            })
            .union(&[forever])
            .key_by(|x: &u64| x % 10)
            .process(Noop)
            .sink(DiscardSink::new());
        let e = run(&env, "map panics").unwrap_err();
        assert_panic(&e, "map", "boom at 500");
    }
}

#[derive(Clone)]
struct Noop;

impl KeyedProcessFunction<u64, u64, u64> for Noop {
    fn process_element(
        &mut self,
        x: u64,
        _: &mut KeyedContext<'_, u64>,
        out: &mut Collector<'_, u64>,
    ) -> FnResult {
        out.collect(x);
        Ok(())
    }
}

#[derive(Clone)]
struct PanicsOn(u64);

impl KeyedProcessFunction<u64, u64, u64> for PanicsOn {
    fn process_element(
        &mut self,
        x: u64,
        _: &mut KeyedContext<'_, u64>,
        out: &mut Collector<'_, u64>,
    ) -> FnResult {
        if x == self.0 {
            panic!("keyed boom {x}");
        }
        out.collect(x);
        Ok(())
    }
}

#[test]
fn panic_in_keyed_process_function_fails_the_job() {
    for _ in 0..REPEAT {
        let env = StreamEnv::new().with_parallelism(2);
        env.source(Datagen::new(0, |id, _| id).unbounded())
            .key_by(|x: &u64| *x)
            .process(PanicsOn(20_000))
            .rebalance()
            .map(|x| x + 1)
            .sink(DiscardSink::new());
        let e = run(&env, "keyed panics").unwrap_err();
        assert_panic(&e, "keyed_process", "keyed boom 20000");
    }
}

#[derive(Clone)]
struct PanicsInOpen;

impl KeyedProcessFunction<u64, u64, u64> for PanicsInOpen {
    fn open(&mut self, _: &mut StateRegistry<'_, u64>) -> FnResult {
        panic!("cannot open");
    }
    fn process_element(
        &mut self,
        _: u64,
        _: &mut KeyedContext<'_, u64>,
        _: &mut Collector<'_, u64>,
    ) -> FnResult {
        Ok(())
    }
}

#[test]
fn panic_in_open_fails_the_job() {
    for _ in 0..REPEAT {
        let env = StreamEnv::new().with_parallelism(2);
        env.source(Datagen::new(0, |id, _| id).unbounded())
            .key_by(|x: &u64| *x)
            .process(PanicsInOpen)
            .sink(DiscardSink::new());
        let e = run(&env, "open panics").unwrap_err();
        assert_panic(&e, "keyed_process", "cannot open");
    }
}

#[test]
fn panic_in_a_source_fails_the_job() {
    for _ in 0..REPEAT {
        let env = StreamEnv::new().with_parallelism(2);
        let (tx, src) = feed::<u64>(1);
        for i in 0..100 {
            tx.send(Feed::Emit(i, 0)).unwrap();
        }
        tx.send(Feed::Panic("source boom".into())).unwrap();
        env.source(src)
            .key_by(|x: &u64| *x)
            .process(Noop)
            .sink(DiscardSink::new());
        let e = run(&env, "source panics").unwrap_err();
        assert_panic(&e, "feedsource", "source boom");
        drop(tx);
    }
}

#[test]
fn panic_in_a_generator_fails_the_job() {
    for _ in 0..REPEAT {
        let env = StreamEnv::new().with_parallelism(2);
        env.source(
            Datagen::new(0, |id, _| {
                if id == 5_000 {
                    panic!("generator boom");
                }
                id
            })
            .unbounded(),
        )
        .key_by(|x: &u64| x % 7)
        .process(Noop)
        .sink(DiscardSink::new());
        let e = run(&env, "generator panics").unwrap_err();
        assert_panic(&e, "datagen", "generator boom");
    }
}

#[test]
fn source_error_fails_the_job() {
    let env = StreamEnv::new().with_parallelism(2);
    let (tx, src) = feed::<u64>(1);
    tx.send(Feed::Emit(1, 0)).unwrap();
    tx.send(Feed::Fail("broker gone".into())).unwrap();
    env.source(src)
        .key_by(|x: &u64| *x)
        .process(Noop)
        .sink(DiscardSink::new());
    let e = run(&env, "source fails").unwrap_err();
    assert!(e.to_string().contains("broker gone"), "{e}");
}

/// Fails on 3 with a user error.
#[derive(Clone)]
struct RejectThree;

impl ProcessFunction<u64, u64> for RejectThree {
    fn process_element(
        &mut self,
        x: u64,
        _: &mut ProcessContext<'_>,
        out: &mut Collector<'_, u64>,
    ) -> FnResult {
        if x == 3 {
            return Err(format!("cannot handle {x}").into());
        }
        out.collect(x);
        Ok(())
    }
}

#[test]
fn user_error_fails_the_job_with_the_position() {
    for _ in 0..REPEAT {
        let env = StreamEnv::new().with_parallelism(2);
        // Chained to the source (same parallelism): the position is known.
        env.from_collection((0u64..10).collect())
            .process(RejectThree)
            .set_parallelism(1)
            .key_by(|x: &u64| *x)
            .process(Noop)
            .sink(DiscardSink::new());
        let e = run(&env, "user error").unwrap_err();
        match &e {
            WeirError::Record {
                operator,
                subtask,
                position,
                message,
            } => {
                assert_eq!(operator, "process");
                assert_eq!(subtask, "0/1");
                assert_eq!(
                    position,
                    &Some(Position::Offset {
                        split: "collection".into(),
                        offset: 3
                    })
                );
                assert_eq!(message, "cannot handle 3");
            }
            other => panic!("expected a record error, got {other:?}"),
        }
        assert!(e.to_string().contains("collection@3"), "{e}");
    }
}

#[derive(Clone)]
struct KeyedReject;

impl KeyedProcessFunction<u64, u64, u64> for KeyedReject {
    fn process_element(
        &mut self,
        x: u64,
        _: &mut KeyedContext<'_, u64>,
        _: &mut Collector<'_, u64>,
    ) -> FnResult {
        if x == 7 {
            return Err("seven is not allowed".into());
        }
        Ok(())
    }
}

#[test]
fn user_error_in_a_keyed_function_names_the_operator() {
    let env = StreamEnv::new().with_parallelism(2);
    env.from_collection((0u64..10).collect())
        .key_by(|x: &u64| *x)
        .process(KeyedReject)
        .sink(DiscardSink::new());
    let e = run(&env, "keyed user error").unwrap_err();
    assert!(
        matches!(&e, WeirError::Record { operator, message, .. }
            if operator == "keyed_process" && message == "seven is not allowed"),
        "{e:?}"
    );
}

#[test]
fn cancelling_an_unbounded_job_returns_ok_and_cancelled() {
    let env = StreamEnv::new().with_parallelism(2);
    env.source(Datagen::new(0, |id, _| id).unbounded())
        .key_by(|x: &u64| x % 100)
        .process(Noop)
        .sink(DiscardSink::new());
    let h = env.execute_async("forever").unwrap();
    wait_until("records flow", || {
        h.metrics().counter_sum("keyed_process", "records_in") > 10_000
    });
    assert!(!h.is_finished(), "an unbounded job runs until cancelled");
    h.cancel();
    let r = join(h).expect("cancellation is not a failure");
    assert!(r.cancelled);
    assert!(r.metrics.counter_sum("keyed_process", "records_in") > 10_000);
}
