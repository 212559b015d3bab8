//! The same job on the heap backend and on the byte (disk-shaped) backend; state checkpointed
//! from one restores into the other.
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use weir::prelude::*;
use weir::windows::{TimeWindow, Tumbling};
use weir_runtime::restart::{RestartStrategy, RestoreFrom};
use weir_state::{BytesMemoryBackend, MemoryBackend, StateBackend};

/// Final count and sum per key, emitted at the end of input.
#[derive(Clone, Default)]
struct Totals {
    count: ValueState<u64>,
    sum: MapState<String, u64>,
    /// Set: panic once at record 8000.
    fail_once: Option<Arc<AtomicBool>>,
}

impl KeyedProcessFunction<u64, BenchEvent, (u64, u64, u64)> for Totals {
    fn open(&mut self, s: &mut StateRegistry<'_, u64>) -> FnResult {
        self.count = s.value_state("count")?;
        self.sum = s.map_state("sum")?;
        Ok(())
    }
    fn process_element(
        &mut self,
        e: BenchEvent,
        ctx: &mut KeyedContext<'_, u64>,
        _: &mut Collector<'_, (u64, u64, u64)>,
    ) -> FnResult {
        if e.id == 8_000
            && self
                .fail_once
                .as_ref()
                .is_some_and(|f| f.swap(false, Ordering::SeqCst))
        {
            panic!("injected failure");
        }
        let n = self.count.mutate(
            ctx,
            || 0,
            |c| {
                *c += 1;
                *c
            },
        );
        let s = self.sum.get(ctx, &"price".to_string()).unwrap_or(0) + e.price as u64;
        self.sum.put(ctx, "price".to_string(), s);
        if n == 1 {
            ctx.register_event_time_timer(i64::MAX);
        }
        Ok(())
    }
    fn on_timer(
        &mut self,
        _: i64,
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut Collector<'_, (u64, u64, u64)>,
    ) -> FnResult {
        let k = *ctx.current_key();
        out.collect((
            k,
            self.count.get(ctx).unwrap_or(0),
            self.sum.get(ctx, &"price".to_string()).unwrap_or(0),
        ));
        Ok(())
    }
}

fn expected(n: u64, keys: u64) -> BTreeMap<u64, (u64, u64)> {
    let mut m = BTreeMap::new();
    for id in 0..n {
        let e = BenchEvent::of(id, keys);
        let x = m.entry(e.k).or_insert((0, 0));
        x.0 += 1;
        x.1 += e.price as u64;
    }
    m
}

fn job(
    env: &StreamEnv,
    out: &CollectSink<(u64, u64, u64)>,
    windows: &CollectSink<(u64, i64, u64)>,
    rate: Option<f64>,
    fail: bool,
) {
    let mut gen = Datagen::bench(10_000, 50).splits(4);
    if let Some(r) = rate {
        gen = gen.rate(r);
    }
    let s = env.source(gen).uid("src");
    let f = Totals {
        fail_once: fail.then(|| Arc::new(AtomicBool::new(true))),
        ..Default::default()
    };
    s.key_by(|e: &BenchEvent| e.k)
        .process(f)
        .uid("totals")
        .sink(out.clone());
    s.key_by(|e: &BenchEvent| e.k)
        .window(Tumbling::event_time(2))
        .aggregate_with(weir::windows::Count, |k: &u64, w: &TimeWindow, n: u64| {
            (*k, w.start, n)
        })
        .uid("windows")
        .sink(windows.clone());
}

fn totals(out: &CollectSink<(u64, u64, u64)>) -> BTreeMap<u64, (u64, u64)> {
    out.values()
        .into_iter()
        .map(|(k, c, s)| (k, (c, s)))
        .collect()
}

#[test]
fn both_backends_give_the_same_results() {
    let mut results = Vec::new();
    for backend in [
        Arc::new(MemoryBackend) as Arc<dyn StateBackend>,
        Arc::new(BytesMemoryBackend),
    ] {
        let env = StreamEnv::new()
            .with_parallelism(2)
            .with_state_backend(backend);
        let (out, win) = (CollectSink::new(), CollectSink::new());
        job(&env, &out, &win, None, false);
        env.execute("backends").unwrap();
        let mut w = win.values();
        w.sort();
        results.push((totals(&out), w));
    }
    assert_eq!(results[0].0, expected(10_000, 50));
    assert_eq!(results[0], results[1]);
    assert_eq!(results[0].1.iter().map(|x| x.2).sum::<u64>(), 10_000);
}

#[test]
fn a_checkpoint_restores_into_the_other_backend_and_another_parallelism() {
    for (from, to) in [
        (
            Arc::new(MemoryBackend) as Arc<dyn StateBackend>,
            Arc::new(BytesMemoryBackend) as Arc<dyn StateBackend>,
        ),
        (Arc::new(BytesMemoryBackend), Arc::new(MemoryBackend)),
    ] {
        let dir = tempfile::tempdir().unwrap();
        // First run: fails at record 8000 without restarting, after some checkpoints.
        let env = StreamEnv::new()
            .with_parallelism(2)
            .with_state_backend(from)
            .with_checkpointing(dir.path(), Duration::from_millis(30))
            .unwrap()
            .with_restart_strategy(RestartStrategy::None);
        let (out, win) = (CollectSink::new(), CollectSink::new());
        job(&env, &out, &win, Some(20_000.0), true);
        let err = env.execute("first").unwrap_err();
        assert!(err.to_string().contains("injected failure"), "{err}");
        assert!(out.is_empty(), "totals come only at the end of input");
        // Second run: restores the latest checkpoint into the other backend, at parallelism 3.
        let env = StreamEnv::new()
            .with_parallelism(3)
            .with_state_backend(to)
            .with_checkpointing(dir.path(), Duration::from_millis(30))
            .unwrap()
            .with_restore(RestoreFrom::Latest);
        let (out, win2) = (CollectSink::new(), CollectSink::new());
        job(&env, &out, &win2, None, false);
        let r = env.execute("second").unwrap();
        assert!(
            r.restored_from.is_some(),
            "a checkpoint completed before the failure"
        );
        assert_eq!(
            totals(&out),
            expected(10_000, 50),
            "exactly-once state across backends and parallelism"
        );
    }
}
