//! Savepoints: on demand, stop with savepoint (with and without draining), restore by uid.
use std::collections::BTreeMap;
use std::time::Duration;
use weir::prelude::*;
use weir::windows::{TimeWindow, Tumbling};
use weir_runtime::restart::RestoreFrom;

#[derive(Clone, Default)]
struct Totals {
    count: ValueState<u64>,
}

impl KeyedProcessFunction<u64, BenchEvent, (u64, u64)> for Totals {
    fn open(&mut self, s: &mut StateRegistry<'_, u64>) -> FnResult {
        self.count = s.value_state("count")?;
        Ok(())
    }
    fn process_element(
        &mut self,
        _: BenchEvent,
        ctx: &mut KeyedContext<'_, u64>,
        _: &mut Collector<'_, (u64, u64)>,
    ) -> FnResult {
        if self.count.mutate(
            ctx,
            || 0,
            |c| {
                *c += 1;
                *c
            },
        ) == 1
        {
            ctx.register_event_time_timer(i64::MAX);
        }
        Ok(())
    }
    fn on_timer(
        &mut self,
        _: i64,
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut Collector<'_, (u64, u64)>,
    ) -> FnResult {
        let k = *ctx.current_key();
        out.collect((k, self.count.get(ctx).unwrap_or(0)));
        Ok(())
    }
}

const N: u64 = 20_000;

fn expected() -> BTreeMap<u64, u64> {
    let mut m = BTreeMap::new();
    for id in 0..N {
        *m.entry(BenchEvent::of(id, 20).k).or_insert(0) += 1;
    }
    m
}

fn env(dir: &std::path::Path, p: usize) -> StreamEnv {
    StreamEnv::new()
        .with_parallelism(p)
        .with_checkpointing(dir, Duration::from_secs(3600))
        .unwrap()
}

fn job(
    env: &StreamEnv,
    rate: Option<f64>,
    totals: &CollectSink<(u64, u64)>,
    windows: &CollectSink<(u64, i64, u64)>,
) {
    let mut g = Datagen::bench(N, 20).splits(4);
    if let Some(r) = rate {
        g = g.rate(r);
    }
    let s = env.source(g).uid("src");
    s.key_by(|e: &BenchEvent| e.k)
        .process(Totals::default())
        .uid("totals")
        .sink(totals.clone());
    s.key_by(|e: &BenchEvent| e.k)
        .window(Tumbling::event_time(5))
        .aggregate_with(weir::windows::Count, |k: &u64, w: &TimeWindow, n: u64| {
            (*k, w.start, n)
        })
        .uid("windows")
        .sink(windows.clone());
}

#[test]
fn stop_with_savepoint_then_restore_at_another_parallelism_is_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let e1 = env(dir.path(), 2);
    let (t1, w1) = (CollectSink::new(), CollectSink::new());
    job(&e1, Some(20_000.0), &t1, &w1);
    let h = e1.execute_async("first").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let sp = h.stop_with_savepoint(false).unwrap();
    assert!(sp.starts_with("savepoint-"), "{sp}");
    let r = h.join().unwrap();
    assert!(r.cancelled, "stopped, not finished");
    assert!(t1.is_empty(), "stopped before the end of input: no totals");
    assert!(dir.path().join(&sp).join("_manifest").exists());
    // Restore the savepoint (not picked by `latest`, which only sees checkpoints).
    let e2 = env(dir.path(), 3).with_restore(RestoreFrom::Dir(sp.clone()));
    let (t2, w2) = (CollectSink::new(), CollectSink::new());
    job(&e2, None, &t2, &w2);
    let r2 = e2.execute("second").unwrap();
    assert!(r2.restored_from.is_some());
    let totals: BTreeMap<u64, u64> = t2.values().into_iter().collect();
    assert_eq!(totals, expected());
    let windows: u64 = w1
        .values()
        .iter()
        .chain(w2.values().iter())
        .map(|x| x.2)
        .sum();
    assert_eq!(
        windows, N,
        "every record in exactly one window result across both runs"
    );
}

#[test]
fn a_savepoint_while_running_does_not_stop_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let e = env(dir.path(), 2);
    let (t, w) = (CollectSink::new(), CollectSink::new());
    job(&e, Some(40_000.0), &t, &w);
    let h = e.execute_async("running").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let sp = h.savepoint().unwrap();
    let r = h.join().unwrap();
    assert!(!r.cancelled);
    assert!(dir.path().join(sp).join("_manifest").exists());
    assert_eq!(
        t.values().into_iter().collect::<BTreeMap<_, _>>(),
        expected()
    );
}

#[test]
fn draining_fires_windows_before_the_savepoint() {
    let dir = tempfile::tempdir().unwrap();
    let e = env(dir.path(), 2);
    let (t, w) = (CollectSink::new(), CollectSink::new());
    job(&e, Some(20_000.0), &t, &w);
    let h = e.execute_async("drain").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let sp = h.stop_with_savepoint(true).unwrap();
    h.join().unwrap();
    let n: u64 = w.values().iter().map(|x| x.2).sum();
    let seen: u64 = t.values().iter().map(|x| x.1).sum();
    assert!(
        n > 0 && n < N,
        "windows fired on the final watermark of the drain: {n}"
    );
    assert_eq!(
        n, seen,
        "every record processed before the drain is in a fired window"
    );
    assert!(dir.path().join(sp).join("_manifest").exists());
}

#[test]
fn savepoints_need_checkpointing_and_orphaned_state_needs_consent() {
    let e = StreamEnv::new().with_parallelism(1);
    let (t, w) = (CollectSink::new(), CollectSink::new());
    job(&e, Some(1_000.0), &t, &w);
    let h = e.execute_async("no checkpoints").unwrap();
    assert!(h
        .savepoint()
        .unwrap_err()
        .to_string()
        .contains("checkpoint"));
    h.cancel();
    let _ = h.join();

    // A checkpoint with state of uid "totals", restored into a job without it.
    let dir = tempfile::tempdir().unwrap();
    let e = env(dir.path(), 1);
    let (t, w) = (CollectSink::new(), CollectSink::new());
    job(&e, None, &t, &w);
    e.execute("full").unwrap();
    let other = |allow: bool| {
        let mut e = env(dir.path(), 1).with_restore(RestoreFrom::Latest);
        if allow {
            e = e.allow_non_restored_state();
        }
        let w = CollectSink::new();
        e.source(Datagen::bench(N, 20).splits(4))
            .uid("src")
            .key_by(|x: &BenchEvent| x.k)
            .window(Tumbling::event_time(5))
            .aggregate_with(weir::windows::Count, |k: &u64, win: &TimeWindow, n: u64| {
                (*k, win.start, n)
            })
            .uid("windows")
            .sink(w);
        e.execute("without totals")
    };
    let err = other(false).unwrap_err().to_string();
    assert!(err.contains("totals") && err.contains("allow"), "{err}");
    assert!(other(true).is_ok());
}
