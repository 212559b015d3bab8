//! Jobs on the disk backend: the same results as on the memory backend; native (incremental)
//! checkpoints restore into the disk backend at the same and at another parallelism, and into
//! the memory backend; canonical checkpoints of the memory backend restore into the disk
//! backend; savepoints stay canonical; working files are deleted at the end of the job.
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use weir::prelude::*;
use weir::windows::{TimeWindow, Tumbling};
use weir_rocksdb::{DiskBackend, DiskBackendConfig};
use weir_runtime::checkpoint::format::{load_latest, Manifest};
use weir_runtime::restart::{RestartStrategy, RestoreFrom};
use weir_state::{MemoryBackend, StateBackend};

const N: u64 = 10_000;
const KEYS: u64 = 50;

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

fn expected() -> BTreeMap<u64, (u64, u64)> {
    let mut m = BTreeMap::new();
    for id in 0..N {
        let e = BenchEvent::of(id, KEYS);
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
    let mut gen = Datagen::bench(N, KEYS).splits(4);
    if let Some(r) = rate {
        gen = gen.rate(r);
    }
    if fail {
        // No end of input (and so no totals) before the injected failure, however slowly the
        // keyed operator runs.
        gen = gen.keep_open();
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

fn disk(dir: &std::path::Path) -> Arc<dyn StateBackend> {
    Arc::new(
        DiskBackendConfig {
            dir: Some(dir.to_path_buf()),
            memory_budget_bytes: 16 << 20,
            ..Default::default()
        }
        .build(),
    )
}

fn latest_manifest(chk: &std::path::Path) -> Manifest {
    let storage = weir_runtime::checkpoint::storage::LocalStorage::new(chk).unwrap();
    load_latest(&storage).unwrap().unwrap().manifest
}

#[test]
fn disk_and_memory_backends_give_the_same_results() {
    let work = tempfile::tempdir().unwrap();
    let mut results = Vec::new();
    for backend in [
        Arc::new(MemoryBackend) as Arc<dyn StateBackend>,
        disk(work.path()),
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
    assert_eq!(results[0].0, expected());
    assert_eq!(results[0], results[1]);
    assert_eq!(results[0].1.iter().map(|x| x.2).sum::<u64>(), N);
    let left: Vec<_> = std::fs::read_dir(work.path()).unwrap().collect();
    assert!(
        left.is_empty(),
        "working files deleted at the end: {left:?}"
    );
}

/// Runs the job until its injected failure (no restart) on `from`, then restores the latest
/// checkpoint on `to` at parallelism `p2`; returns the first run's latest manifest.
fn fail_then_restore(
    from: Arc<dyn StateBackend>,
    to: Arc<dyn StateBackend>,
    p2: usize,
) -> Manifest {
    let dir = tempfile::tempdir().unwrap();
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
    let manifest = latest_manifest(dir.path());
    let env = StreamEnv::new()
        .with_parallelism(p2)
        .with_state_backend(to)
        .with_checkpointing(dir.path(), Duration::from_millis(30))
        .unwrap()
        .with_restore(RestoreFrom::Latest);
    let (out, win2) = (CollectSink::new(), CollectSink::new());
    job(&env, &out, &win2, None, false);
    let r = env.execute("second").unwrap();
    assert_eq!(r.restored_from, Some(manifest.id));
    assert_eq!(
        totals(&out),
        expected(),
        "exactly-once state across the restore"
    );
    manifest
}

fn native_files(m: &Manifest) -> usize {
    m.operators.values().map(|o| o.native_files.len()).sum()
}

#[test]
fn a_disk_checkpoint_is_native_and_restores_natively_at_the_same_parallelism() {
    let work = tempfile::tempdir().unwrap();
    let m = fail_then_restore(disk(work.path()), disk(work.path()), 2);
    assert!(
        native_files(&m) > 0,
        "the disk backend checkpoints natively"
    );
    assert!(m.operators["totals"]
        .native_files
        .iter()
        .any(|f| f.path.starts_with("shared/")));
}

#[test]
fn a_disk_checkpoint_restores_into_disk_at_another_parallelism() {
    let work = tempfile::tempdir().unwrap();
    // Scale out (a new subtask reads parts of two old instances) and in (one subtask reads both).
    fail_then_restore(disk(work.path()), disk(work.path()), 3);
    fail_then_restore(disk(work.path()), disk(work.path()), 1);
}

#[test]
fn a_disk_checkpoint_restores_into_memory_and_a_memory_one_into_disk() {
    let work = tempfile::tempdir().unwrap();
    let m = fail_then_restore(disk(work.path()), Arc::new(MemoryBackend), 3);
    assert!(native_files(&m) > 0);
    let m = fail_then_restore(Arc::new(MemoryBackend), disk(work.path()), 1);
    assert_eq!(native_files(&m), 0, "the memory backend is canonical");
}

#[test]
fn savepoints_of_the_disk_backend_are_canonical() {
    let dir = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let env = StreamEnv::new()
        .with_parallelism(2)
        .with_state_backend(disk(work.path()))
        .with_checkpointing(dir.path(), Duration::from_secs(3600))
        .unwrap();
    let (out, win) = (CollectSink::new(), CollectSink::new());
    job(&env, &out, &win, Some(20_000.0), false);
    let h = env.execute_async("savepoint").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let sp = h.stop_with_savepoint(false).unwrap();
    h.join().unwrap();
    let storage = weir_runtime::checkpoint::storage::LocalStorage::new(dir.path()).unwrap();
    let loaded = weir_runtime::checkpoint::format::load_checkpoint(&storage, &sp).unwrap();
    assert_eq!(
        native_files(&loaded.manifest),
        0,
        "a savepoint is canonical"
    );
    // It restores into the memory backend at another parallelism.
    let env = StreamEnv::new()
        .with_parallelism(3)
        .with_checkpointing(dir.path(), Duration::from_secs(3600))
        .unwrap()
        .with_restore(RestoreFrom::Dir(sp));
    let (out, win2) = (CollectSink::new(), CollectSink::new());
    job(&env, &out, &win2, None, false);
    env.execute("from savepoint").unwrap();
    assert_eq!(totals(&out), expected());
}

#[test]
fn the_backend_is_named_disk_on_the_command_line() {
    weir_rocksdb::register();
    let work = tempfile::tempdir().unwrap();
    let spec = format!("disk:{}", work.path().display());
    let b = weir_state::registry::backend_from_spec(&spec, Some(64 << 20)).unwrap();
    assert_eq!(b.name(), "disk");
    let _ = DiskBackend::default();
}

/// Keeps the latest value per key; emits whether the key had one already.
#[derive(Clone, Default)]
struct Latest {
    v: ValueState<Vec<u8>>,
}

impl KeyedProcessFunction<u64, (u64, Vec<u8>), bool> for Latest {
    fn open(&mut self, s: &mut StateRegistry<'_, u64>) -> FnResult {
        self.v = s.value_state("v")?;
        Ok(())
    }
    fn process_element(
        &mut self,
        e: (u64, Vec<u8>),
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut Collector<'_, bool>,
    ) -> FnResult {
        out.collect(self.v.get(ctx).is_some());
        self.v.set(ctx, e.1);
        Ok(())
    }
}

/// `count` records `(key, 100 incompressible bytes)`, keys `0, step, 2·step, …`.
fn keyed_values(count: u64, step: u64) -> Datagen<(u64, Vec<u8>)> {
    Datagen::new(count, move |id, rng| {
        let mut v = Vec::with_capacity(104);
        while v.len() < 100 {
            v.extend_from_slice(&rng.next_u64().to_le_bytes());
        }
        (id * step, v)
    })
    .splits(2)
}

#[test]
fn a_restored_job_that_changes_one_percent_of_its_keys_uploads_only_the_change() {
    const KEYS: u64 = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    // The default budget: the state (11 MB) fits in the memtables, so run 1 writes no SST file
    // before its checkpoint and no compaction runs in either run (which would rewrite files).
    let backend = || -> Arc<dyn StateBackend> {
        Arc::new(
            DiskBackendConfig {
                dir: Some(work.path().to_path_buf()),
                ..Default::default()
            }
            .build(),
        )
    };
    // Run 1 loads every key; its only checkpoint is the final one (the interval is never
    // reached), so its state is one flush: every SST file is new and uploaded.
    let env = StreamEnv::new()
        .with_parallelism(2)
        .with_state_backend(backend())
        .with_checkpointing(dir.path(), Duration::from_secs(3600))
        .unwrap();
    let out = CollectSink::new();
    env.source(keyed_values(KEYS, 1))
        .uid("load")
        .key_by(|e: &(u64, Vec<u8>)| e.0)
        .process(Latest::default())
        .uid("latest")
        .sink(out.clone());
    env.execute("load").unwrap();
    assert_eq!(out.values().len() as u64, KEYS);
    let m1 = latest_manifest(dir.path());
    // Run 2 restores it (natively: same parallelism, same backend) and changes 1% of the keys
    // (another source: the first one's state is left behind).
    let env = StreamEnv::new()
        .with_parallelism(2)
        .with_state_backend(backend())
        .with_checkpointing(dir.path(), Duration::from_secs(3600))
        .unwrap()
        .with_restore(RestoreFrom::Latest)
        .allow_non_restored_state();
    let out = CollectSink::new();
    env.source(keyed_values(KEYS / 100, 100))
        .uid("update")
        .key_by(|e: &(u64, Vec<u8>)| e.0)
        .process(Latest::default())
        .uid("latest")
        .sink(out.clone());
    let r = env.execute("update").unwrap();
    assert_eq!(r.restored_from, Some(m1.id));
    let had = out.values();
    assert_eq!(had.len() as u64, KEYS / 100);
    assert!(
        had.iter().all(|x| *x),
        "every updated key had its restored value"
    );
    let m2 = latest_manifest(dir.path());
    assert!(m2.id > m1.id);
    eprintln!(
        "checkpoint {}: {} bytes, {} uploaded; checkpoint {}: {} bytes, {} uploaded",
        m1.id,
        m1.total_bytes(),
        m1.uploaded_bytes,
        m2.id,
        m2.total_bytes(),
        m2.uploaded_bytes
    );
    assert!(
        m1.uploaded_bytes >= KEYS * 100,
        "the first checkpoint uploads the whole state"
    );
    assert!(
        m2.total_bytes() >= m1.total_bytes(),
        "the second checkpoint still holds the whole state"
    );
    assert!(
        m2.uploaded_bytes * 10 < m1.uploaded_bytes,
        "incremental: the second checkpoint uploads {} bytes, the first {}",
        m2.uploaded_bytes,
        m1.uploaded_bytes
    );
    // Every file the first checkpoint shared is referenced again, not uploaded again.
    let shared1: Vec<&str> = m1.shared_paths().collect();
    let shared2: Vec<&str> = m2.shared_paths().collect();
    assert!(!shared1.is_empty());
    assert!(shared1.iter().all(|p| shared2.contains(p)));
}
