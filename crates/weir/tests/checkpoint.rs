//! Checkpoints under failure. Every job here counts events per key in keyed state and writes one
//! line per event, `id,key,count`, through the exactly-once part-file sink (as `chaos_counter`):
//! whatever fails and wherever, the committed output must hold every input id exactly once and,
//! for every key, the counts 1..n exactly once.
//!
//! Failures are injected at every step of a checkpoint: in user functions (a panic once, at a
//! chosen moment), in a source's or an operator's snapshot, in the checkpoint storage (a torn
//! state file, a manifest that is not written, or written but reported failed, a failed read on
//! restore), and in the sink's committer (when the checkpoint completes, and again on restore).
mod common;

use common::*;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use weir::prelude::*;
use weir::{JobResult, Poll, Source, SourceOutput, SourceReader, WeirError};
use weir_runtime::checkpoint::storage::{CheckpointStorage, LocalStorage};
use weir_runtime::checkpoint::{
    CheckpointBarrier, CheckpointMode, Committer, OperatorSnapshot, FINAL_SNAPSHOT,
};
use weir_runtime::restart::{RestartStrategy, RestoreFrom};
use weir_runtime::{OneInputOperator, OperatorContext, Output};
use weir_types::Record;

/// One output line: id, key, the key's count after this event.
type Line = (u64, u64, u64);

/// Time between checkpoints in these tests.
const INTERVAL: Duration = Duration::from_millis(20);

/// Paced jobs (see [`Tracked`]) last at least this many checkpoints.
const PACE: u64 = 15;

/// Restarts quickly, but not forever: a job that keeps failing fails the test.
fn restart_quickly() -> RestartStrategy {
    RestartStrategy::FixedDelay {
        attempts: 10,
        delay: Duration::from_millis(10),
    }
}

// ---------------------------------------------------------------------------------------------
// Observing the job: how many manifests were written, how far the sources are.

/// What the test knows about a running job, shared with the functions that inject failures.
#[derive(Debug, Default)]
struct Progress {
    /// Manifests written (checkpoints complete), counted by [`FaultyStorage`].
    manifests: AtomicU64,
    /// The most snapshots any source reader took in the current attempt (so: the newest
    /// checkpoint some source has taken part in).
    source_rounds: AtomicU64,
    /// Source readers that reached the end of their input (over all attempts).
    sources_finished: AtomicU64,
    /// Records the sources emitted (over all attempts, replays included).
    emitted: AtomicU64,
}

impl Progress {
    fn manifests(&self) -> u64 {
        self.manifests.load(SeqCst)
    }
}

/// Fires once, ever (over every attempt and subtask).
#[derive(Clone, Default, Debug)]
struct Once(Arc<AtomicBool>);

impl Once {
    fn fire(&self) -> bool {
        !self.0.swap(true, SeqCst)
    }
    fn fired(&self) -> bool {
        self.0.load(SeqCst)
    }
}

/// Failures of a user function: `count` panics, the first once `first` checkpoints are
/// complete, each next one `gap` checkpoints after the previous (so each in its own attempt,
/// each after a checkpoint to restore).
#[derive(Debug)]
struct Chaos {
    progress: Arc<Progress>,
    gap: u64,
    state: Mutex<(u64, u64)>, // (failures left, fire once manifests >= this)
}

impl Chaos {
    fn new(progress: &Arc<Progress>, count: u64, first: u64, gap: u64) -> Arc<Self> {
        Arc::new(Chaos {
            progress: progress.clone(),
            gap,
            state: Mutex::new((count, first)),
        })
    }
    fn check(&self, what: impl std::fmt::Display) {
        let m = self.progress.manifests();
        let mut s = self.state.lock().unwrap();
        if s.0 > 0 && m >= s.1 {
            s.0 -= 1;
            s.1 = m + self.gap;
            drop(s);
            panic!("injected failure at {what} after {m} checkpoints");
        }
    }
    fn left(&self) -> u64 {
        self.state.lock().unwrap().0
    }
}

// ---------------------------------------------------------------------------------------------
// The job: count per key, one line per event.

type Hook = Arc<dyn Fn(&BenchEvent) + Send + Sync>;

/// The running count per key (as `chaos_counter`), with an optional hook called first.
#[derive(Clone, Default)]
struct Count {
    n: ValueState<u64>,
    hook: Option<Hook>,
}

impl KeyedProcessFunction<u64, BenchEvent, Line> for Count {
    fn open(&mut self, s: &mut StateRegistry<'_, u64>) -> FnResult {
        self.n = s.value_state("count")?;
        Ok(())
    }
    fn process_element(
        &mut self,
        e: BenchEvent,
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut Collector<'_, Line>,
    ) -> FnResult {
        if let Some(h) = &self.hook {
            h(&e);
        }
        let c = self.n.mutate(
            ctx,
            || 0,
            |c| {
                *c += 1;
                *c
            },
        );
        out.collect((e.id, e.k, c));
        Ok(())
    }
}

/// The same count over two connected keyed streams (shared state).
#[derive(Clone, Default)]
struct CoCount {
    n: ValueState<u64>,
    hook: Option<Hook>,
}

impl CoCount {
    fn count(
        &mut self,
        e: BenchEvent,
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut Collector<'_, Line>,
    ) -> FnResult {
        if let Some(h) = &self.hook {
            h(&e);
        }
        let c = self.n.mutate(
            ctx,
            || 0,
            |c| {
                *c += 1;
                *c
            },
        );
        out.collect((e.id, e.k, c));
        Ok(())
    }
}

impl KeyedCoProcessFunction<u64, BenchEvent, BenchEvent, Line> for CoCount {
    fn open(&mut self, s: &mut StateRegistry<'_, u64>) -> FnResult {
        self.n = s.value_state("count")?;
        Ok(())
    }
    fn process_element1(
        &mut self,
        e: BenchEvent,
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut Collector<'_, Line>,
    ) -> FnResult {
        self.count(e, ctx, out)
    }
    fn process_element2(
        &mut self,
        e: BenchEvent,
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut Collector<'_, Line>,
    ) -> FnResult {
        self.count(e, ctx, out)
    }
}

type SpyFn = Arc<dyn Fn(u64) + Send + Sync>;

/// A pass-through operator that knows how many barriers passed it (in this subtask and
/// attempt): calls `on_record(barriers)` before each record and `on_barrier(barriers)` as each
/// barrier passes.
struct Spy {
    barriers: u64,
    on_record: Option<SpyFn>,
    on_barrier: Option<SpyFn>,
}

impl OneInputOperator<Line, Line> for Spy {
    fn process(
        &mut self,
        rec: Record<Line>,
        _: &mut OperatorContext,
        out: &mut dyn Output<Line>,
    ) -> weir::Result<()> {
        if let Some(f) = &self.on_record {
            f(self.barriers);
        }
        out.collect(rec)
    }
    fn snapshot(
        &mut self,
        b: &CheckpointBarrier,
        _: &mut OperatorContext,
        _: &mut dyn Output<Line>,
    ) -> weir::Result<OperatorSnapshot> {
        if b.id != FINAL_SNAPSHOT {
            self.barriers += 1;
            if let Some(f) = &self.on_barrier {
                f(self.barriers);
            }
        }
        Ok(OperatorSnapshot::default())
    }
}

/// A source that reports its progress, may panic once while taking its `n`-th snapshot, and
/// may be paced by checkpoints: with `pace: Some(chunk)`, the sources sharing `progress` emit
/// at most `chunk` records more per completed checkpoint. So a job lasts a given number of
/// checkpoints however fast or loaded the machine is (the rate limits of the generators set
/// the pace otherwise). Only with checkpointing: nothing else lets a paced source go on.
struct Tracked<S> {
    inner: S,
    progress: Arc<Progress>,
    snapshot_fault: Option<(u64, Once)>,
    pace: Option<u64>,
}

fn tracked<S>(inner: S, progress: &Arc<Progress>, pace: Option<u64>) -> Tracked<S> {
    Tracked {
        inner,
        progress: progress.clone(),
        snapshot_fault: None,
        pace,
    }
}

struct TrackedReader<T> {
    inner: Box<dyn SourceReader<T>>,
    progress: Arc<Progress>,
    snapshot_fault: Option<(u64, Once)>,
    pace: Option<u64>,
    completed: Option<weir_types::metrics::Counter>,
    rounds: u64,
    finished: bool,
}

impl<T: weir::Data, S: Source<T>> Source<T> for Tracked<S> {
    fn create_reader(
        &self,
        subtask: usize,
        parallelism: usize,
    ) -> weir::Result<Box<dyn SourceReader<T>>> {
        self.progress.source_rounds.store(0, SeqCst);
        Ok(Box::new(TrackedReader {
            inner: self.inner.create_reader(subtask, parallelism)?,
            progress: self.progress.clone(),
            snapshot_fault: self.snapshot_fault.clone(),
            pace: self.pace,
            completed: None,
            rounds: 0,
            finished: false,
        }))
    }
    fn is_bounded(&self) -> bool {
        self.inner.is_bounded()
    }
    fn max_parallelism(&self) -> Option<usize> {
        self.inner.max_parallelism()
    }
}

impl<T> SourceReader<T> for TrackedReader<T> {
    fn poll(&mut self, out: &mut SourceOutput<T>) -> weir::Result<Poll> {
        if let Some(chunk) = self.pace {
            let completed = self
                .completed
                .get_or_insert_with(|| out.ctx.metrics.counter("checkpoints", 0, "completed"))
                .get();
            if self.progress.emitted.load(SeqCst) >= (completed + 1) * chunk {
                return Ok(Poll::Pending(2));
            }
        }
        let before = out.ctx.records_in.get();
        let p = self.inner.poll(out)?;
        self.progress
            .emitted
            .fetch_add(out.ctx.records_in.get() - before, SeqCst);
        if p == Poll::Finished && !self.finished {
            self.finished = true;
            self.progress.sources_finished.fetch_add(1, SeqCst);
        }
        Ok(p)
    }
    fn snapshot(&mut self) -> weir::Result<Vec<Vec<u8>>> {
        self.rounds += 1;
        self.progress.source_rounds.fetch_max(self.rounds, SeqCst);
        if let Some((n, once)) = &self.snapshot_fault {
            if self.rounds == *n && once.fire() {
                panic!("injected failure in the source's snapshot {n}");
            }
        }
        self.inner.snapshot()
    }
    fn restore(&mut self, entries: &[Vec<u8>]) -> weir::Result<()> {
        self.inner.restore(entries)
    }
    fn notify_checkpoint_complete(&mut self, id: u64) -> weir::Result<()> {
        self.inner.notify_checkpoint_complete(id)
    }
}

// ---------------------------------------------------------------------------------------------
// Faults in the checkpoint storage and in the sink's committer.

/// What goes wrong in [`FaultyStorage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StorageFault {
    /// A state file write is torn (half of it lands) and fails: an upload that broke.
    TornStateFile,
    /// The manifest write fails; nothing is written.
    ManifestFails,
    /// The manifest is written, but the write reports a failure (a lost acknowledgement).
    ManifestLost,
    /// Reading a state file fails once (a transient I/O error while restoring).
    ReadFails,
}

#[derive(Debug)]
struct Planned {
    fault: StorageFault,
    /// Only once this many manifests are written.
    after_manifests: u64,
    /// Only once this many source readers finished.
    after_sources_finished: u64,
}

fn fault(fault: StorageFault, after_manifests: u64) -> Planned {
    Planned {
        fault,
        after_manifests,
        after_sources_finished: 0,
    }
}

/// Local storage with planned faults, each happening once; counts the manifests written.
#[derive(Debug)]
struct FaultyStorage {
    inner: LocalStorage,
    root: PathBuf,
    progress: Arc<Progress>,
    plan: Mutex<Vec<Planned>>,
    fired: Mutex<Vec<StorageFault>>,
}

impl FaultyStorage {
    fn new(root: &Path, progress: &Arc<Progress>, plan: Vec<Planned>) -> Arc<Self> {
        Arc::new(FaultyStorage {
            inner: LocalStorage::new(root).unwrap(),
            root: root.to_path_buf(),
            progress: progress.clone(),
            plan: Mutex::new(plan),
            fired: Mutex::new(Vec::new()),
        })
    }
    fn take(&self, kind: StorageFault) -> bool {
        let m = self.progress.manifests();
        let f = self.progress.sources_finished.load(SeqCst);
        let mut plan = self.plan.lock().unwrap();
        match plan.iter().position(|p| {
            p.fault == kind && m >= p.after_manifests && f >= p.after_sources_finished
        }) {
            Some(i) => {
                plan.remove(i);
                self.fired.lock().unwrap().push(kind);
                true
            }
            None => false,
        }
    }
    fn unfired(&self) -> Vec<StorageFault> {
        self.plan.lock().unwrap().iter().map(|p| p.fault).collect()
    }
}

fn injected(what: &str) -> WeirError {
    WeirError::io(
        format!("injected fault: {what}"),
        std::io::Error::other("injected"),
    )
}

impl CheckpointStorage for FaultyStorage {
    fn put(&self, path: &str, bytes: &[u8]) -> weir::Result<()> {
        if path.ends_with("_manifest") {
            if self.take(StorageFault::ManifestFails) {
                return Err(injected(&format!("writing {path}")));
            }
            self.inner.put(path, bytes)?;
            self.progress.manifests.fetch_add(1, SeqCst);
            if self.take(StorageFault::ManifestLost) {
                return Err(injected(&format!("acknowledging {path}")));
            }
            return Ok(());
        }
        if path.ends_with(".state") && self.take(StorageFault::TornStateFile) {
            let full = self.root.join(path);
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            std::fs::write(&full, &bytes[..bytes.len() / 2]).unwrap();
            return Err(injected(&format!("uploading {path}")));
        }
        self.inner.put(path, bytes)
    }
    fn get(&self, path: &str) -> weir::Result<Vec<u8>> {
        if path.ends_with(".state") && self.take(StorageFault::ReadFails) {
            return Err(injected(&format!("reading {path}")));
        }
        self.inner.get(path)
    }
    fn list(&self, prefix: &str) -> weir::Result<Vec<String>> {
        self.inner.list(prefix)
    }
    fn delete_prefix(&self, prefix: &str) -> weir::Result<()> {
        self.inner.delete_prefix(prefix)
    }
    fn describe(&self) -> String {
        format!("faulty {}", self.inner.describe())
    }
}

/// When the committer fails.
#[derive(Debug, Default)]
struct CommitPlan {
    /// Commits that succeed before the first failure.
    ok_before: u64,
    /// Failures left.
    failures: AtomicU64,
    /// Only once this many sink writers finished: with every writer finished, only the final
    /// checkpoint is left to commit (and it has something to commit: a finishing writer writes
    /// a [`SENTINEL`] line).
    after_writers_finished: Option<u64>,
    writers_finished: AtomicU64,
    commits: AtomicU64,
}

/// A line a finishing [`FlakySink`] writer adds (ignored by [`committed`]).
const SENTINEL: Line = (u64::MAX, 0, 0);

/// A sink whose committer fails as planned.
struct FlakySink<S> {
    inner: S,
    plan: Arc<CommitPlan>,
}

struct FlakyWriter {
    inner: Box<dyn SinkWriter<Line>>,
    plan: Arc<CommitPlan>,
}

impl SinkWriter<Line> for FlakyWriter {
    fn write(&mut self, rec: Record<Line>) -> weir::Result<()> {
        self.inner.write(rec)
    }
    fn flush(&mut self) -> weir::Result<()> {
        self.inner.flush()
    }
    fn finish(&mut self) -> weir::Result<()> {
        if self.plan.after_writers_finished.is_some() {
            self.inner.write(Record::untimed(SENTINEL))?;
        }
        self.plan.writers_finished.fetch_add(1, SeqCst);
        self.inner.finish()
    }
    fn snapshot(&mut self, checkpoint_id: u64) -> weir::Result<SinkSnapshot> {
        self.inner.snapshot(checkpoint_id)
    }
    fn notify_checkpoint_complete(&mut self, id: u64) -> weir::Result<()> {
        self.inner.notify_checkpoint_complete(id)
    }
    fn restore(&mut self, state: &[Vec<u8>]) -> weir::Result<()> {
        self.inner.restore(state)
    }
}

struct FlakyCommitter {
    inner: Arc<dyn Committer>,
    plan: Arc<CommitPlan>,
}

impl Committer for FlakyCommitter {
    fn commit(&self, item: &[u8]) -> weir::Result<()> {
        let p = &*self.plan;
        let ready = p.commits.load(SeqCst) >= p.ok_before
            && p.after_writers_finished
                .is_none_or(|n| p.writers_finished.load(SeqCst) >= n);
        if ready
            && p.failures
                .fetch_update(SeqCst, SeqCst, |f| f.checked_sub(1))
                .is_ok()
        {
            return Err(injected("committing"));
        }
        self.inner.commit(item)?;
        p.commits.fetch_add(1, SeqCst);
        Ok(())
    }
}

impl<S: Sink<Line>> Sink<Line> for FlakySink<S> {
    fn name(&self) -> String {
        self.inner.name()
    }
    fn create_writer(
        &self,
        subtask: usize,
        parallelism: usize,
    ) -> weir::Result<Box<dyn SinkWriter<Line>>> {
        Ok(Box::new(FlakyWriter {
            inner: self.inner.create_writer(subtask, parallelism)?,
            plan: self.plan.clone(),
        }))
    }
    fn committer(&self) -> Option<Arc<dyn Committer>> {
        self.inner.committer().map(|c| {
            Arc::new(FlakyCommitter {
                inner: c,
                plan: self.plan.clone(),
            }) as Arc<dyn Committer>
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Checking the committed output.

fn lines_sink(dir: &Path) -> RollingFileSink<Line> {
    RollingFileSink::lines(dir, |(id, k, c): &Line| format!("{id},{k},{c}"))
}

/// Every line of the committed (visible) part files ([`SENTINEL`]s left out).
fn committed(dir: &Path) -> Vec<Line> {
    let mut v = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return v;
    };
    for e in rd {
        let e = e.unwrap();
        if !e.file_name().to_string_lossy().starts_with("part-") {
            continue;
        }
        for l in std::fs::read_to_string(e.path()).unwrap().lines() {
            let f: Vec<u64> = l.split(',').map(|x| x.parse().unwrap()).collect();
            assert_eq!(f.len(), 3, "a bad line in {}: {l}", e.path().display());
            if (f[0], f[1], f[2]) != SENTINEL {
                v.push((f[0], f[1], f[2]));
            }
        }
    }
    v
}

/// What went wrong with an output, if anything: lost and duplicated ids, keys whose counts
/// are not exactly 1..n.
#[derive(Debug, Default, PartialEq, Eq)]
struct Verdict {
    lost: Vec<u64>,
    duplicated: Vec<u64>,
    unexpected: Vec<u64>,
    wrong_keys: Vec<u64>,
}

impl Verdict {
    fn of(lines: &[Line], ids: impl IntoIterator<Item = u64>, keys: u64) -> Verdict {
        let mut seen: HashMap<u64, u64> = HashMap::new();
        let mut per_key: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        for &(id, k, c) in lines {
            *seen.entry(id).or_default() += 1;
            assert_eq!(k, BenchEvent::of(id, keys).k, "id {id} has the wrong key");
            per_key.entry(k).or_default().push(c);
        }
        let mut v = Verdict::default();
        let mut expected: BTreeMap<u64, u64> = BTreeMap::new();
        for id in ids {
            *expected.entry(BenchEvent::of(id, keys).k).or_default() += 1;
            match seen.remove(&id) {
                None => v.lost.push(id),
                Some(1) => {}
                Some(_) => v.duplicated.push(id),
            }
        }
        v.unexpected = seen.into_keys().collect();
        v.unexpected.sort();
        for (k, n) in &expected {
            let mut c = per_key.remove(k).unwrap_or_default();
            c.sort();
            if c != (1..=*n).collect::<Vec<_>>() {
                v.wrong_keys.push(*k);
            }
        }
        v.wrong_keys.extend(per_key.into_keys());
        v
    }
    fn is_ok(&self) -> bool {
        *self == Verdict::default()
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        fn few(v: &[u64]) -> String {
            let s: Vec<String> = v.iter().take(10).map(|x| x.to_string()).collect();
            format!(
                "{} [{}{}]",
                v.len(),
                s.join(","),
                if v.len() > 10 { ",…" } else { "" }
            )
        }
        write!(
            f,
            "lost {}, duplicated {}, unexpected {}, keys with wrong counts {}",
            few(&self.lost),
            few(&self.duplicated),
            few(&self.unexpected),
            few(&self.wrong_keys)
        )
    }
}

fn assert_exactly_once(lines: &[Line], ids: impl IntoIterator<Item = u64>, keys: u64, what: &str) {
    let v = Verdict::of(lines, ids, keys);
    assert!(v.is_ok(), "{what}: not exactly once: {v}");
}

/// The final count of every key (the largest count written for it).
fn final_counts(lines: &[Line]) -> BTreeMap<u64, u64> {
    let mut m = BTreeMap::new();
    for &(_, k, c) in lines {
        let e = m.entry(k).or_insert(0);
        *e = c.max(*e);
    }
    m
}

fn expected_counts(ids: impl IntoIterator<Item = u64>, keys: u64) -> BTreeMap<u64, u64> {
    let mut m = BTreeMap::new();
    for id in ids {
        *m.entry(BenchEvent::of(id, keys).k).or_insert(0) += 1;
    }
    m
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let t = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &t);
        } else {
            std::fs::copy(e.path(), t).unwrap();
        }
    }
}

fn checkpoint_dirs(root: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("chk-"))
        .collect();
    v.sort();
    v
}

fn checkpoint_id(dir: &str) -> u64 {
    dir.trim_start_matches("chk-").parse().unwrap()
}

fn completed(h: &weir::JobHandle) -> u64 {
    h.metrics().counter_sum("checkpoints", "completed")
}

// ---------------------------------------------------------------------------------------------
// 2. Failure at every step of a checkpoint.

/// A fault-injection run: events 0..events over `keys` keys, p = 2, rate-limited so that the
/// job lasts about a second and takes dozens of checkpoints.
struct FaultJob {
    events: u64,
    keys: u64,
    p: usize,
    rate: f64,
    storage: Vec<Planned>,
    commit: Option<Arc<CommitPlan>>,
    hook: Option<Hook>,
    spy_record: Option<SpyFn>,
    spy_barrier: Option<SpyFn>,
    source_snapshot_fault: Option<(u64, Once)>,
    progress: Arc<Progress>,
}

impl Default for FaultJob {
    fn default() -> Self {
        FaultJob {
            events: 20_000,
            keys: 50,
            p: 2,
            rate: 16_000.0,
            storage: Vec::new(),
            commit: None,
            hook: None,
            spy_record: None,
            spy_barrier: None,
            source_snapshot_fault: None,
            progress: Arc::new(Progress::default()),
        }
    }
}

struct FaultRun {
    result: JobResult,
    lines: Vec<Line>,
    storage: Arc<FaultyStorage>,
}

fn run_fault_job(j: FaultJob) -> FaultRun {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let storage = FaultyStorage::new(&dir.path().join("chk"), &j.progress, j.storage);
    let env = StreamEnv::new()
        .with_parallelism(j.p)
        .with_checkpoint_storage(storage.clone(), INTERVAL)
        .unwrap()
        .with_restart_strategy(restart_quickly());
    let (keys, hook) = (j.keys, j.hook.clone());
    let (on_record, on_barrier) = (j.spy_record.clone(), j.spy_barrier.clone());
    let counted = env
        .source(Tracked {
            snapshot_fault: j.source_snapshot_fault.clone(),
            ..tracked(
                Datagen::bench(j.events, keys).rate(j.rate),
                &j.progress,
                Some(j.events / PACE),
            )
        })
        .uid("events")
        .key_by(|e: &BenchEvent| e.k)
        .process(Count {
            hook,
            ..Default::default()
        })
        .uid("count")
        .add_operator("spy", move |_| {
            Ok(Spy {
                barriers: 0,
                on_record: on_record.clone(),
                on_barrier: on_barrier.clone(),
            })
        });
    let plan = j.commit.clone().unwrap_or_default();
    counted
        .sink(FlakySink {
            inner: lines_sink(&out),
            plan,
        })
        .uid("output");
    let result = run(&env, "count with faults").unwrap_or_else(|e| panic!("the job failed: {e}"));
    let lines = committed(&out);
    assert_exactly_once(&lines, 0..j.events, j.keys, "the committed output");
    assert!(
        storage.unfired().is_empty(),
        "storage faults that never happened: {:?}",
        storage.unfired()
    );
    FaultRun {
        result,
        lines,
        storage,
    }
}

#[test]
fn a_user_function_failing_between_checkpoints_is_exactly_once() {
    let progress = Arc::new(Progress::default());
    let chaos = Chaos::new(&progress, 3, 2, 3);
    let c2 = chaos.clone();
    let r = run_fault_job(FaultJob {
        hook: Some(Arc::new(move |e: &BenchEvent| {
            c2.check(format!("id {}", e.id))
        })),
        progress,
        ..Default::default()
    });
    assert_eq!(chaos.left(), 0, "every failure happened");
    assert_eq!(r.result.restarts, 3);
    assert!(r.result.checkpoints_completed >= 3);
}

#[test]
fn a_failure_after_a_source_snapshot_and_before_the_barrier_reaches_a_task_is_exactly_once() {
    // The task fails at a record that the source sent before its barrier, while the checkpoint
    // is under way: the source has taken part in more checkpoints than have passed this task.
    let progress = Arc::new(Progress::default());
    let once = Once::default();
    let (p2, o2) = (progress.clone(), once.clone());
    let r = run_fault_job(FaultJob {
        spy_record: Some(Arc::new(move |barriers_here: u64| {
            let at_source = p2.source_rounds.load(SeqCst);
            if barriers_here >= 2 && at_source > barriers_here && p2.manifests() >= 2 && o2.fire() {
                panic!("injected failure: the source took checkpoint {at_source}, this task only {barriers_here}");
            }
        })),
        progress,
        ..Default::default()
    });
    assert!(once.fired(), "the failure never happened");
    assert_eq!(r.result.restarts, 1);
}

#[test]
fn a_failure_while_a_task_snapshots_is_exactly_once() {
    let once = Once::default();
    let o2 = once.clone();
    let r = run_fault_job(FaultJob {
        spy_barrier: Some(Arc::new(move |n: u64| {
            if n == 3 && o2.fire() {
                panic!("injected failure while snapshotting for the 3rd barrier");
            }
        })),
        ..Default::default()
    });
    assert!(once.fired());
    assert_eq!(r.result.restarts, 1);
}

#[test]
fn a_source_failing_in_its_snapshot_is_exactly_once() {
    let once = Once::default();
    let r = run_fault_job(FaultJob {
        source_snapshot_fault: Some((3, once.clone())),
        ..Default::default()
    });
    assert!(once.fired());
    assert_eq!(r.result.restarts, 1);
}

#[test]
fn a_torn_state_file_upload_is_exactly_once() {
    let r = run_fault_job(FaultJob {
        storage: vec![fault(StorageFault::TornStateFile, 2)],
        ..Default::default()
    });
    assert_eq!(r.result.restarts, 1);
    assert_eq!(
        *r.storage.fired.lock().unwrap(),
        vec![StorageFault::TornStateFile]
    );
}

#[test]
fn a_manifest_that_cannot_be_written_is_exactly_once() {
    let r = run_fault_job(FaultJob {
        storage: vec![
            fault(StorageFault::ManifestFails, 2),
            fault(StorageFault::ManifestFails, 4),
        ],
        ..Default::default()
    });
    assert_eq!(r.result.restarts, 2);
}

#[test]
fn a_manifest_written_but_reported_failed_is_exactly_once() {
    // The checkpoint exists, its output is not committed yet: the restore commits it.
    let r = run_fault_job(FaultJob {
        storage: vec![fault(StorageFault::ManifestLost, 2)],
        ..Default::default()
    });
    assert_eq!(r.result.restarts, 1);
}

#[test]
fn a_commit_failing_after_the_manifest_is_exactly_once() {
    let plan = Arc::new(CommitPlan {
        ok_before: 3,
        failures: AtomicU64::new(1),
        ..Default::default()
    });
    let r = run_fault_job(FaultJob {
        commit: Some(plan.clone()),
        ..Default::default()
    });
    assert_eq!(plan.failures.load(SeqCst), 0, "the commit never failed");
    assert_eq!(r.result.restarts, 1);
}

#[test]
fn a_commit_failing_again_while_restoring_is_exactly_once() {
    // The second failure is the re-commit of the restored checkpoint's pre-committed output.
    let plan = Arc::new(CommitPlan {
        ok_before: 3,
        failures: AtomicU64::new(2),
        ..Default::default()
    });
    let r = run_fault_job(FaultJob {
        commit: Some(plan.clone()),
        ..Default::default()
    });
    assert_eq!(plan.failures.load(SeqCst), 0);
    assert_eq!(r.result.restarts, 2);
}

#[test]
fn the_final_checkpoint_failing_is_exactly_once() {
    // Once every source has finished: the next manifest (the final checkpoint's, or one
    // completing with the finished tasks' final state) cannot be written.
    let r = run_fault_job(FaultJob {
        storage: vec![Planned {
            fault: StorageFault::ManifestFails,
            after_manifests: 0,
            after_sources_finished: 2,
        }],
        ..Default::default()
    });
    assert_eq!(r.result.restarts, 1);
}

#[test]
fn the_final_commit_failing_is_exactly_once() {
    // Once both sink writers have finished: the final checkpoint is written, and its commit
    // fails; the restore (of the final checkpoint itself) commits it.
    let plan = Arc::new(CommitPlan {
        failures: AtomicU64::new(1),
        after_writers_finished: Some(2),
        ..Default::default()
    });
    let r = run_fault_job(FaultJob {
        commit: Some(plan.clone()),
        ..Default::default()
    });
    assert_eq!(plan.failures.load(SeqCst), 0);
    assert_eq!(r.result.restarts, 1);
}

#[test]
fn a_failed_read_while_restoring_is_exactly_once() {
    // The read error makes the restore skip the newest checkpoint (whose output is committed)
    // for the one before: the replayed part files get the same numbers and replace the
    // committed ones whole, so nothing is duplicated.
    let progress = Arc::new(Progress::default());
    let chaos = Chaos::new(&progress, 1, 3, 1);
    let c2 = chaos.clone();
    let r = run_fault_job(FaultJob {
        storage: vec![fault(StorageFault::ReadFails, 0)],
        hook: Some(Arc::new(move |e: &BenchEvent| {
            c2.check(format!("id {}", e.id))
        })),
        progress,
        ..Default::default()
    });
    assert_eq!(chaos.left(), 0);
    assert!(r.result.restarts >= 1);
    assert!(!r.lines.is_empty());
}

// ---------------------------------------------------------------------------------------------
// 1. Barrier alignment with two inputs of different speeds.

fn fast_and_slow(
    env: &StreamEnv,
    progress: &Arc<Progress>,
    keys: u64,
    fast: u64,
    slow: u64,
) -> (DataStream<BenchEvent>, DataStream<BenchEvent>) {
    // ids 0..fast from the fast source, fast..fast+slow from the slow one: both last ~1 s.
    let pace = Some((fast + slow) / PACE);
    let a = env
        .source(tracked(
            Datagen::new(fast, move |id, _| BenchEvent::of(id, keys)).rate(fast as f64),
            progress,
            pace,
        ))
        .uid("fast");
    let b = env
        .source(tracked(
            Datagen::new(slow, move |id, _| BenchEvent::of(fast + id, keys)).rate(slow as f64),
            progress,
            pace,
        ))
        .uid("slow");
    (a, b)
}

struct TwoInputRun {
    result: JobResult,
    lines: Vec<Line>,
    ids: std::ops::Range<u64>,
    keys: u64,
}

/// Two sources of different speeds into one keyed count, through `union` or keyed `connect`,
/// failing `failures` times.
fn two_inputs(connect: bool, mode: CheckpointMode, failures: u64) -> TwoInputRun {
    let (keys, fast, slow) = (40, 16_000, 1_600);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let progress = Arc::new(Progress::default());
    let storage = FaultyStorage::new(&dir.path().join("chk"), &progress, Vec::new());
    let env = StreamEnv::new()
        .with_parallelism(2)
        .with_checkpoint_storage(storage, INTERVAL)
        .unwrap()
        .configure_checkpoints(|c| c.mode = mode)
        .with_restart_strategy(restart_quickly());
    let chaos = Chaos::new(&progress, failures, 2, 4);
    let c2 = chaos.clone();
    let hook: Hook = Arc::new(move |e: &BenchEvent| c2.check(format!("id {}", e.id)));
    let (a, b) = fast_and_slow(&env, &progress, keys, fast, slow);
    let counted = if connect {
        a.key_by(|e: &BenchEvent| e.k)
            .connect(&b.key_by(|e: &BenchEvent| e.k))
            .process(CoCount {
                hook: Some(hook),
                ..Default::default()
            })
    } else {
        a.union(&[b]).key_by(|e: &BenchEvent| e.k).process(Count {
            hook: Some(hook),
            ..Default::default()
        })
    };
    counted.uid("count").sink(lines_sink(&out)).uid("output");
    let result = run(&env, "two inputs").unwrap_or_else(|e| panic!("the job failed: {e}"));
    assert_eq!(chaos.left(), 0, "every failure happened");
    assert_eq!(result.restarts as u64, failures);
    TwoInputRun {
        result,
        lines: committed(&out),
        ids: 0..fast + slow,
        keys,
    }
}

#[test]
fn union_of_a_fast_and_a_slow_source_is_exactly_once_under_failures() {
    let r = two_inputs(false, CheckpointMode::ExactlyOnce, 2);
    assert_exactly_once(&r.lines, r.ids.clone(), r.keys, "union");
    assert!(r.result.checkpoints_completed >= 3);
}

#[test]
fn connect_of_a_fast_and_a_slow_source_is_exactly_once_under_failures() {
    let r = two_inputs(true, CheckpointMode::ExactlyOnce, 2);
    assert_exactly_once(&r.lines, r.ids.clone(), r.keys, "connect");
}

#[test]
fn at_least_once_loses_nothing_under_failures() {
    for connect in [false, true] {
        let r = two_inputs(connect, CheckpointMode::AtLeastOnce, 2);
        let v = Verdict::of(&r.lines, r.ids.clone(), r.keys);
        assert!(
            v.lost.is_empty() && v.unexpected.is_empty(),
            "at-least-once (connect: {connect}) lost records: {v}"
        );
        eprintln!(
            "at-least-once (connect: {connect}): {} duplicated",
            v.duplicated.len()
        );
    }
}

#[test]
fn unaligned_union_of_a_fast_and_a_slow_source_is_exactly_once_under_failures() {
    let r = two_inputs(false, CheckpointMode::Unaligned, 2);
    assert_exactly_once(&r.lines, r.ids.clone(), r.keys, "unaligned union");
    assert!(r.result.checkpoints_completed >= 3);
}

#[test]
fn unaligned_connect_of_a_fast_and_a_slow_source_is_exactly_once_under_failures() {
    let r = two_inputs(true, CheckpointMode::Unaligned, 2);
    assert_exactly_once(&r.lines, r.ids.clone(), r.keys, "unaligned connect");
}

/// A back-pressured job (a busy channel whose records are slow to process, behind small
/// buffers): unaligned barriers overtake the backlog, the overtaken records are stored with
/// each checkpoint, and a failure restores one of them — replaying what it overtook — with
/// every record counted exactly once.
#[test]
fn unaligned_checkpoints_store_the_backlog_they_overtake_and_restore_it() {
    let (keys, events) = (20, 1_500);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let env = StreamEnv::new()
        .with_parallelism(1)
        .with_buffers(1024, 16, 2)
        .with_checkpointing(dir.path().join("chk"), Duration::from_millis(30))
        .unwrap()
        .configure_checkpoints(|c| c.mode = CheckpointMode::Unaligned)
        .with_restart_strategy(restart_quickly());
    let s = env
        .source(Datagen::bench(events, keys).rate(500.0))
        .uid("events");
    let sparse = s.filter(|e: &BenchEvent| e.id.is_multiple_of(10));
    let busy = s.filter(|e: &BenchEvent| !e.id.is_multiple_of(10));
    let failed = Arc::new(AtomicBool::new(false));
    let f2 = failed.clone();
    sparse
        .union(&[busy])
        .key_by(|e: &BenchEvent| e.k)
        .process(Count {
            hook: Some(Arc::new(move |e: &BenchEvent| {
                if !e.id.is_multiple_of(10) {
                    std::thread::sleep(Duration::from_millis(3));
                }
                if e.id == 900 && !f2.swap(true, SeqCst) {
                    panic!("injected failure at id 900");
                }
            })),
            ..Default::default()
        })
        .uid("count")
        .sink(lines_sink(&out))
        .uid("output");
    let r = run(&env, "unaligned backlog").unwrap();
    assert!(failed.load(SeqCst));
    assert_eq!(r.restarts, 1);
    assert!(r.checkpoints_completed >= 2, "{}", r.checkpoints_completed);
    let overtaken = r
        .metrics
        .counter_sum("keyed_process", "checkpoint_overtaken_bytes");
    assert!(overtaken > 0, "no checkpoint overtook anything");
    assert_exactly_once(&committed(&out), 0..events, keys, "unaligned backlog");
}

/// Emits the given records one per poll, so that it takes checkpoint triggers between any two
/// records even when back-pressured. Not restorable (it starts over).
struct OneByOne(Arc<Vec<BenchEvent>>);

struct OneByOneReader {
    records: Arc<Vec<BenchEvent>>,
    next: usize,
    split: Option<usize>,
}

impl Source<BenchEvent> for OneByOne {
    fn create_reader(&self, _: usize, _: usize) -> weir::Result<Box<dyn SourceReader<BenchEvent>>> {
        Ok(Box::new(OneByOneReader {
            records: self.0.clone(),
            next: 0,
            split: None,
        }))
    }
    fn max_parallelism(&self) -> Option<usize> {
        Some(1)
    }
}

impl SourceReader<BenchEvent> for OneByOneReader {
    fn poll(&mut self, out: &mut SourceOutput<BenchEvent>) -> weir::Result<Poll> {
        let split = *self
            .split
            .get_or_insert_with(|| out.add_split("records", weir_runtime::PositionKind::Offset));
        let Some(e) = self.records.get(self.next) else {
            return Ok(Poll::Finished);
        };
        self.next += 1;
        out.collect(split, *e, 0)?;
        Ok(Poll::Ready)
    }
}

/// One source task feeds one task over two channels (a fan-out joined by a union): a sparse
/// channel and a busy one whose records are slow to process. The checkpoint timeout is shorter
/// than barriers take to get through the busy channel's backlog, so checkpoints expire after
/// the task has taken the sparse channel's barrier and before the busy one's. The late barrier
/// of the expired checkpoint must not start a new alignment blocking the busy channel: the
/// source would block on it and never send the next barrier, a deadlock.
#[test]
fn expired_checkpoints_do_not_block_channels() {
    let keys = 20;
    let events = 600;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let env = StreamEnv::new()
        .with_parallelism(1)
        .with_buffers(1024, 16, 2)
        .with_checkpointing(dir.path().join("chk"), Duration::from_millis(5))
        .unwrap()
        .configure_checkpoints(|c| {
            c.timeout = Duration::from_millis(3);
            // After an expired checkpoint, the next comes later: nothing else unblocks.
            c.min_pause = Duration::from_millis(100);
        })
        .with_restart_strategy(RestartStrategy::None);
    let records = (0..events).map(|id| BenchEvent::of(id, keys)).collect();
    let s = env.source(OneByOne(Arc::new(records))).uid("events");
    // The sparse channel first: the source sends it the barrier first.
    let sparse = s.filter(|e: &BenchEvent| e.id.is_multiple_of(10));
    let busy = s.filter(|e: &BenchEvent| !e.id.is_multiple_of(10));
    sparse
        .union(&[busy])
        .key_by(|e: &BenchEvent| e.k)
        .process(Count {
            hook: Some(Arc::new(|e: &BenchEvent| {
                if !e.id.is_multiple_of(10) {
                    std::thread::sleep(Duration::from_millis(2))
                }
            })),
            ..Default::default()
        })
        .uid("count")
        .sink(lines_sink(&out))
        .uid("output");
    let r = run(&env, "expiring checkpoints").unwrap();
    assert!(
        r.metrics.counter_sum("checkpoints", "failed") > 0,
        "no checkpoint expired: the test does not test anything"
    );
    assert_exactly_once(&committed(&out), 0..events, keys, "expiring checkpoints");
}

// ---------------------------------------------------------------------------------------------
// 3. Corrupted and truncated checkpoints.

/// Counts per key and reports the final count at the end of input (an event-time timer that
/// only the final watermark reaches): the output is the restored state plus what was replayed.
#[derive(Clone, Default)]
struct FinalCount {
    n: ValueState<u64>,
}

impl KeyedProcessFunction<u64, BenchEvent, (u64, u64)> for FinalCount {
    fn open(&mut self, s: &mut StateRegistry<'_, u64>) -> FnResult {
        self.n = s.value_state("count")?;
        Ok(())
    }
    fn process_element(
        &mut self,
        _: BenchEvent,
        ctx: &mut KeyedContext<'_, u64>,
        _: &mut Collector<'_, (u64, u64)>,
    ) -> FnResult {
        self.n.mutate(ctx, || 0, |c| *c += 1);
        ctx.register_event_time_timer(i64::MAX / 2);
        Ok(())
    }
    fn on_timer(
        &mut self,
        _: i64,
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut Collector<'_, (u64, u64)>,
    ) -> FnResult {
        let k = *ctx.current_key();
        let n = self.n.get(ctx).unwrap_or(0);
        out.collect((k, n));
        Ok(())
    }
}

const CORRUPT_EVENTS: u64 = 20_000;
const CORRUPT_KEYS: u64 = 30;

/// The job, rate-limited and paced by checkpoints if `slow`.
fn final_count_job(env: &StreamEnv, slow: bool) -> CollectSink<(u64, u64)> {
    let out = CollectSink::new();
    let mut gen = Datagen::bench(CORRUPT_EVENTS, CORRUPT_KEYS);
    if slow {
        gen = gen.rate(5_000.0);
    }
    let pace = slow.then_some(CORRUPT_EVENTS / PACE);
    env.source(tracked(gen, &Arc::default(), pace))
        .uid("events")
        .key_by(|e: &BenchEvent| e.k)
        .process(FinalCount::default())
        .uid("count")
        .sink(out.clone());
    out
}

/// Runs the final-count job until `n` checkpoints are complete, then cancels it.
fn checkpoints_then_cancel(chk: &Path, n: u64) {
    let env = StreamEnv::new()
        .with_parallelism(2)
        .with_checkpointing(chk, INTERVAL)
        .unwrap()
        .configure_checkpoints(|c| c.retained = 10)
        .with_restart_strategy(RestartStrategy::None);
    final_count_job(&env, true);
    let h = env.execute_async("checkpoints, then cancel").unwrap();
    wait_until("checkpoints are complete", || {
        completed(&h) >= n || h.is_finished()
    });
    h.cancel();
    let r = join(h).unwrap();
    assert!(r.cancelled, "the job ended before it was cancelled");
}

/// Restores the final-count job from `chk` and runs it to the end, capturing the log.
fn restore_with_log(
    chk: &Path,
    from: RestoreFrom,
) -> (weir::Result<JobResult>, BTreeMap<u64, u64>, String) {
    #[derive(Clone)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let chk = chk.to_path_buf();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let buf = Buf(Arc::new(Mutex::new(Vec::new())));
        let b2 = buf.clone();
        let sub = tracing_subscriber::fmt()
            .with_writer(move || b2.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        let (r, out) = tracing::subscriber::with_default(sub, || {
            let env = StreamEnv::new()
                .with_parallelism(2)
                .with_checkpointing(&chk, INTERVAL)
                .unwrap()
                .with_restart_strategy(RestartStrategy::None)
                .with_restore(from);
            let out = final_count_job(&env, false);
            (env.execute("restore"), out)
        });
        let log = String::from_utf8_lossy(&buf.0.lock().unwrap()).into_owned();
        let _ = tx.send((r, out.values().into_iter().collect(), log));
    });
    rx.recv_timeout(HANG).expect("the restore hung")
}

/// Makes checkpoints, then damages the newest with `damage(chk dir, newest)`: a restore of the
/// latest falls back to the one before, says so in the log, and the final counts are exact; a
/// restore of the damaged one by name fails and names `culprit(newest)`.
fn corrupted(damage: impl Fn(&Path, &str), culprit: impl Fn(&str) -> String) {
    let dir = tempfile::tempdir().unwrap();
    let chk = dir.path().join("chk");
    checkpoints_then_cancel(&chk, 3);
    let dirs = checkpoint_dirs(&chk);
    assert!(dirs.len() >= 3, "{dirs:?}");
    let newest = dirs.last().unwrap().clone();
    let previous = dirs[dirs.len() - 2].clone();
    damage(&chk, &newest);
    // By name: an error naming the file.
    let (r, _, _) = restore_with_log(&chk, RestoreFrom::Dir(newest.clone()));
    let e = r.expect_err("restoring a damaged checkpoint by name must fail");
    let text = e.to_string();
    assert!(
        text.contains(&culprit(&newest)),
        "the error does not name {}: {text}",
        culprit(&newest)
    );
    // The latest: falls back, logged.
    let (r, counts, log) = restore_with_log(&chk, RestoreFrom::Latest);
    let r = r.unwrap();
    assert_eq!(r.restored_from, Some(checkpoint_id(&previous)), "{log}");
    assert!(
        log.contains("WARN") && log.contains(&format!("skipping checkpoint {newest}")),
        "the fall-back is not logged: {log}"
    );
    assert_eq!(
        counts,
        expected_counts(0..CORRUPT_EVENTS, CORRUPT_KEYS),
        "the counts restored from {previous}"
    );
}

fn keyed_state_file(chk: &Path, dir: &str) -> PathBuf {
    chk.join(dir).join("count").join("0.state")
}

#[test]
fn a_flipped_byte_in_a_state_file_falls_back_to_the_previous_checkpoint() {
    corrupted(
        |chk, d| {
            let f = keyed_state_file(chk, d);
            let mut b = std::fs::read(&f).unwrap();
            let i = b.len() / 2;
            b[i] ^= 0x20;
            std::fs::write(&f, b).unwrap();
        },
        |d| format!("{d}/count/0.state"),
    );
}

#[test]
fn a_truncated_state_file_falls_back_to_the_previous_checkpoint() {
    corrupted(
        |chk, d| {
            let f = keyed_state_file(chk, d);
            let len = std::fs::metadata(&f).unwrap().len();
            std::fs::OpenOptions::new()
                .write(true)
                .open(&f)
                .unwrap()
                .set_len(len / 2)
                .unwrap();
        },
        |d| format!("{d}/count/0.state"),
    );
}

#[test]
fn a_missing_manifest_falls_back_to_the_previous_checkpoint() {
    corrupted(
        |chk, d| std::fs::remove_file(chk.join(d).join("_manifest")).unwrap(),
        |d| format!("{d}/_manifest"),
    );
}

#[test]
fn a_missing_state_file_falls_back_to_the_previous_checkpoint() {
    corrupted(
        |chk, d| std::fs::remove_file(keyed_state_file(chk, d)).unwrap(),
        |d| format!("{d}/count/0.state"),
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Restoring at another parallelism.

const RESCALE_EVENTS: u64 = 24_000;
const RESCALE_KEYS: u64 = 64;

/// One run of the rescalable count job (generator in 8 splits) at parallelism `p`: stopped
/// (cancelled) once `stop_after` checkpoints are complete, or run to the end.
fn rescale_leg(
    chk: &Path,
    out: &Path,
    p: usize,
    restore: bool,
    stop_after: Option<u64>,
) -> JobResult {
    let mut env = StreamEnv::new()
        .with_parallelism(p)
        .with_checkpointing(chk, INTERVAL)
        .unwrap()
        .with_restart_strategy(RestartStrategy::None);
    if restore {
        env = env.with_restore(RestoreFrom::Latest);
    }
    env.source(tracked(
        Datagen::bench(RESCALE_EVENTS, RESCALE_KEYS)
            .splits(8)
            .rate(12_000.0),
        &Arc::default(),
        Some(RESCALE_EVENTS / PACE),
    ))
    .uid("events")
    .key_by(|e: &BenchEvent| e.k)
    .process(Count::default())
    .uid("count")
    .sink(lines_sink(out))
    .uid("output");
    let h = env.execute_async("rescale").unwrap();
    if let Some(n) = stop_after {
        wait_until("checkpoints are complete", || {
            completed(&h) >= n || h.is_finished()
        });
        h.cancel();
    }
    let r = join(h).unwrap_or_else(|e| panic!("the job at p={p} failed: {e}"));
    assert_eq!(
        r.cancelled,
        stop_after.is_some(),
        "the job at p={p} ended before it was stopped"
    );
    r
}

/// Runs the legs at the given parallelisms (each stopped after 3 checkpoints, the last run to
/// the end), and returns the committed output.
fn rescaled(ps: &[usize]) -> Vec<Line> {
    let dir = tempfile::tempdir().unwrap();
    let (chk, out) = (dir.path().join("chk"), dir.path().join("out"));
    let mut last_restored = None;
    for (i, &p) in ps.iter().enumerate() {
        let last = i + 1 == ps.len();
        let r = rescale_leg(&chk, &out, p, i > 0, (!last).then_some(3));
        if i > 0 {
            assert!(
                r.restored_from > last_restored,
                "leg {i} at p={p} restored {:?} after {:?}",
                r.restored_from,
                last_restored
            );
            last_restored = r.restored_from;
        }
    }
    committed(&out)
}

#[test]
fn restoring_at_parallelism_1_then_4_then_2_gives_the_uninterrupted_result() {
    let lines = rescaled(&[1, 4, 2]);
    assert_exactly_once(&lines, 0..RESCALE_EVENTS, RESCALE_KEYS, "1 -> 4 -> 2");
    // The same job without interruption (and without checkpoints).
    let dir = tempfile::tempdir().unwrap();
    let env = StreamEnv::new().with_parallelism(2);
    env.source(Datagen::bench(RESCALE_EVENTS, RESCALE_KEYS).splits(8))
        .key_by(|e: &BenchEvent| e.k)
        .process(Count::default())
        .sink(lines_sink(dir.path()));
    run(&env, "uninterrupted").unwrap();
    let reference = committed(dir.path());
    assert_exactly_once(&reference, 0..RESCALE_EVENTS, RESCALE_KEYS, "uninterrupted");
    assert_eq!(final_counts(&lines), final_counts(&reference));
    let ids = |v: &[Line]| {
        let mut x: Vec<(u64, u64)> = v.iter().map(|l| (l.0, l.1)).collect();
        x.sort();
        x
    };
    assert_eq!(ids(&lines), ids(&reference));
}

#[test]
fn scaling_down_then_up_again_keeps_committed_part_files() {
    // Subtasks 2 and 3 vanish at p=2 and come back at p=4: their part numbers must not start
    // again at 0 and replace part files committed at the first p=4.
    let lines = rescaled(&[4, 2, 4]);
    assert_exactly_once(&lines, 0..RESCALE_EVENTS, RESCALE_KEYS, "4 -> 2 -> 4");
}

// ---------------------------------------------------------------------------------------------
// Restarts from this job's own checkpoints only.

/// A bounded count job writing part files to `out`, checkpointing to `chk`; paced by
/// checkpoints if `paced`.
fn simple_count_job(
    chk: &Path,
    out: &Path,
    events: u64,
    keys: u64,
    interval: Duration,
    hook: Option<Hook>,
    paced: bool,
) -> StreamEnv {
    let env = StreamEnv::new()
        .with_parallelism(2)
        .with_checkpointing(chk, interval)
        .unwrap()
        .configure_checkpoints(|c| c.retained = 100)
        .with_restart_strategy(restart_quickly());
    env.source(tracked(
        Datagen::bench(events, keys).rate(events as f64 * 2.0),
        &Arc::default(),
        paced.then_some(events / PACE),
    ))
    .uid("events")
    .key_by(|e: &BenchEvent| e.k)
    .process(Count {
        hook,
        ..Default::default()
    })
    .uid("count")
    .sink(lines_sink(out))
    .uid("output");
    env
}

fn fail_once_at(id: u64) -> (Hook, Once) {
    let once = Once::default();
    let o2 = once.clone();
    let hook: Hook = Arc::new(move |e: &BenchEvent| {
        if e.id == id && o2.fire() {
            panic!("injected failure at id {id}");
        }
    });
    (hook, once)
}

#[test]
fn a_fresh_job_restarts_fresh_even_with_old_checkpoints_in_its_directory() {
    let (events, keys) = (4_000, 20);
    let dir = tempfile::tempdir().unwrap();
    let chk = dir.path().join("chk");
    // An earlier run of the job, to the end: its final checkpoint has every source finished.
    let env = simple_count_job(
        &chk,
        &dir.path().join("out1"),
        events,
        keys,
        INTERVAL,
        None,
        true,
    );
    run(&env, "first run").unwrap();
    // A new run, not restored, fails before its first checkpoint: it must start over, not
    // continue from the earlier run's checkpoint.
    let (hook, once) = fail_once_at(1_000);
    let out2 = dir.path().join("out2");
    let env = simple_count_job(
        &chk,
        &out2,
        events,
        keys,
        Duration::from_secs(3600),
        Some(hook),
        false,
    );
    let r = run(&env, "second run").unwrap();
    assert!(once.fired());
    assert_eq!(r.restarts, 1);
    assert_exactly_once(&committed(&out2), 0..events, keys, "the second run");
}

#[test]
fn a_job_restored_from_an_older_checkpoint_restarts_from_it_not_from_a_newer_one() {
    let (events, keys) = (6_000, 20);
    let dir = tempfile::tempdir().unwrap();
    let chk = dir.path().join("chk");
    let env = simple_count_job(
        &chk,
        &dir.path().join("out1"),
        events,
        keys,
        INTERVAL,
        None,
        true,
    );
    let r = run(&env, "first run").unwrap();
    assert!(r.checkpoints_completed >= 4, "{r:?}");
    let dirs = checkpoint_dirs(&chk);
    let old = dirs[1].clone();
    // Restored from an old checkpoint (newer ones exist), with and without a failure before
    // the first checkpoint of the restored run: the same output.
    let mut outs = Vec::new();
    for fail in [false, true] {
        let chk2 = dir.path().join(format!("chk-copy-{fail}"));
        copy_dir(&chk, &chk2);
        let out = dir.path().join(format!("out-{fail}"));
        let (hook, once) = fail_once_at(5_000);
        let env = simple_count_job(
            &chk2,
            &out,
            events,
            keys,
            Duration::from_secs(3600),
            fail.then_some(hook),
            false,
        )
        .with_restore(RestoreFrom::Dir(old.clone()));
        let r = run(&env, "restored").unwrap();
        assert_eq!(r.restored_from, Some(checkpoint_id(&old)));
        assert_eq!(once.fired(), fail);
        let mut lines = committed(&out);
        lines.sort();
        assert!(!lines.is_empty());
        outs.push(lines);
    }
    assert_eq!(
        final_counts(&outs[0]),
        final_counts(&outs[1]),
        "a failure changed the final counts"
    );
    let ids = |v: &[Line]| v.iter().map(|l| l.0).collect::<Vec<_>>();
    let (mut a, mut b) = (ids(&outs[0]), ids(&outs[1]));
    a.sort();
    b.sort();
    assert_eq!(a, b, "a failure changed what was written");
}

// ---------------------------------------------------------------------------------------------
// 5. Restart strategies.

/// A job that panics at record 10 in the first `fail` attempts (every attempt if `None`),
/// logging when.
fn failing_job(
    strategy: RestartStrategy,
    fail: Option<u64>,
) -> (weir::Result<JobResult>, Vec<Instant>) {
    let failures: Log<Instant> = log();
    let f2 = failures.clone();
    let env = StreamEnv::new()
        .with_parallelism(1)
        .with_restart_strategy(strategy);
    env.source(Datagen::new(100, |id, _| id))
        .map(move |x: u64| {
            if x == 10 {
                // (The lock is released before the panic: a poisoned log would fail the next
                // attempt for another reason.)
                let n = {
                    let mut f = f2.lock().unwrap();
                    let fails = fail.is_none_or(|n| (f.len() as u64) < n);
                    if fails {
                        f.push(Instant::now());
                    }
                    fails.then_some(f.len())
                };
                if let Some(n) = n {
                    panic!("failure {n}");
                }
            }
            x
        })
        .sink(DiscardSink::new());
    let r = run(&env, "failing");
    (r, entries(&failures))
}

fn assert_failed_with(r: &weir::Result<JobResult>, msg: &str) {
    match r {
        Err(WeirError::Panic { message, .. }) => {
            assert_eq!(message, msg, "not the last failure")
        }
        other => panic!("expected the panic '{msg}', got {other:?}"),
    }
}

#[test]
fn fixed_delay_gives_up_after_its_attempts_with_the_last_error() {
    let delay = Duration::from_millis(30);
    let (r, failures) = failing_job(RestartStrategy::FixedDelay { attempts: 3, delay }, None);
    assert_failed_with(&r, "failure 4");
    assert_eq!(failures.len(), 4);
    for w in failures.windows(2) {
        assert!(w[1] - w[0] >= delay, "restarted before the delay");
    }
    // Within its attempts, it recovers.
    let (r, failures) = failing_job(RestartStrategy::FixedDelay { attempts: 3, delay }, Some(3));
    assert_eq!(r.unwrap().restarts, 3);
    assert_eq!(failures.len(), 3);
}

#[test]
fn failure_rate_gives_up_only_when_failures_come_too_fast() {
    let (r, failures) = failing_job(
        RestartStrategy::FailureRate {
            max_failures: 2,
            interval: Duration::from_secs(60),
            delay: Duration::from_millis(5),
        },
        None,
    );
    assert_failed_with(&r, "failure 3");
    assert_eq!(failures.len(), 3);
    // Failures further apart than the interval: it keeps restarting.
    let (r, failures) = failing_job(
        RestartStrategy::FailureRate {
            max_failures: 1,
            interval: Duration::from_millis(50),
            delay: Duration::from_millis(80),
        },
        Some(4),
    );
    let r = r.unwrap_or_else(|e| panic!("gave up although failures were spread out: {e}"));
    assert_eq!(r.restarts, 4);
    assert_eq!(failures.len(), 4);
}

#[test]
fn exponential_backoff_waits_longer_after_each_failure_up_to_its_maximum() {
    let (r, failures) = failing_job(
        RestartStrategy::ExponentialBackoff {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(70),
            multiplier: 2.0,
            reset_after: Duration::from_secs(3600),
        },
        Some(5),
    );
    let r = r.unwrap();
    assert_eq!(r.restarts, 5);
    let gaps: Vec<Duration> = failures.windows(2).map(|w| w[1] - w[0]).collect();
    for (g, min) in gaps.iter().zip([20, 40, 70, 70]) {
        assert!(
            *g >= Duration::from_millis(min),
            "waited {g:?}, less than {min} ms: {gaps:?}"
        );
    }
    assert!(r.elapsed >= Duration::from_millis(20 + 40 + 70 + 70 + 70));
}

// ---------------------------------------------------------------------------------------------
// 6. Retention.

#[test]
fn only_the_retained_checkpoints_are_kept_and_incomplete_ones_are_ignored() {
    let (events, keys) = (6_000, 20);
    let dir = tempfile::tempdir().unwrap();
    let chk = dir.path().join("chk");
    let out = dir.path().join("out");
    let env = simple_count_job(&chk, &out, events, keys, INTERVAL, None, true)
        .configure_checkpoints(|c| c.retained = 2);
    let r = run(&env, "retention").unwrap();
    assert!(r.checkpoints_completed >= 4, "{r:?}");
    let dirs = checkpoint_dirs(&chk);
    assert_eq!(dirs.len(), 2, "{dirs:?}");
    for d in &dirs {
        assert!(chk.join(d).join("_manifest").exists(), "{d} is incomplete");
    }
    let newest = checkpoint_id(dirs.last().unwrap());
    // A crash left an incomplete checkpoint, newer than any complete one: a restore ignores it.
    let crashed = format!("chk-{:010}", newest + 1);
    std::fs::create_dir_all(chk.join(&crashed).join("count")).unwrap();
    std::fs::write(chk.join(&crashed).join("count").join("0.state"), b"half").unwrap();
    let env = simple_count_job(&chk, &out, events, keys, INTERVAL, None, true)
        .configure_checkpoints(|c| c.retained = 2)
        .with_restore(RestoreFrom::Latest);
    let r = run(&env, "restored").unwrap();
    assert_eq!(r.restored_from, Some(newest));
    // The restored job's checkpoints are numbered after the incomplete one, which is deleted
    // once a newer checkpoint is complete; two are kept.
    let after = checkpoint_dirs(&chk);
    assert_eq!(after.len(), 2, "{after:?}");
    assert!(!after.contains(&crashed), "{after:?}");
    assert_eq!(
        checkpoint_id(&after[1]),
        newest + 1 + r.checkpoints_completed,
        "{after:?}"
    );
    // Restored from the final checkpoint, nothing more was written.
    assert_exactly_once(&committed(&out), 0..events, keys, "after the restore");
}

// ---------------------------------------------------------------------------------------------
// Restoring into a job that does not match the checkpoint.

#[test]
fn restoring_keyed_state_with_another_max_parallelism_is_refused() {
    // Keyed state is stored by key group, and the number of key groups (the max parallelism)
    // decides which key groups a key falls in: with another number, restored state would sit
    // in subtasks that never see its keys.
    let dir = tempfile::tempdir().unwrap();
    let chk = dir.path().join("chk");
    checkpoints_then_cancel(&chk, 2);
    let env = StreamEnv::new()
        .with_parallelism(2)
        .with_max_parallelism(64)
        .with_checkpointing(&chk, INTERVAL)
        .unwrap()
        .with_restart_strategy(RestartStrategy::None)
        .with_restore(RestoreFrom::Latest);
    let out = final_count_job(&env, false);
    match run(&env, "another max parallelism") {
        Err(WeirError::Config(m)) => assert!(m.contains("max parallelism"), "{m}"),
        Err(e) => panic!("expected a configuration error, got: {e}"),
        Ok(_) => panic!(
            "restored with another max parallelism; counts {}",
            if out.values().into_iter().collect::<BTreeMap<u64, u64>>()
                == expected_counts(0..CORRUPT_EVENTS, CORRUPT_KEYS)
            {
                "right (by luck)"
            } else {
                "wrong"
            }
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// More of the job under failures: an input that ends early, event-time windows.

#[test]
fn an_input_that_finished_stays_finished_after_failures() {
    // The short input finishes at once; its final snapshot stands for it in every later
    // checkpoint, and the failures come after: restored, it must not replay nor lose anything.
    let (keys, short, long) = (30, 3_000, 3_000);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let progress = Arc::new(Progress::default());
    let storage = FaultyStorage::new(&dir.path().join("chk"), &progress, Vec::new());
    let env = StreamEnv::new()
        .with_parallelism(2)
        .with_checkpoint_storage(storage, INTERVAL)
        .unwrap()
        .with_restart_strategy(restart_quickly());
    let chaos = Chaos::new(&progress, 2, 0, 2);
    let (c2, p2) = (chaos.clone(), progress.clone());
    let hook: Hook = Arc::new(move |e: &BenchEvent| {
        // Once both readers of the short input are done.
        if p2.sources_finished.load(SeqCst) >= 2 {
            c2.check(format!("id {}", e.id))
        }
    });
    let a = env
        .source(tracked(
            Datagen::new(short, move |id, _| BenchEvent::of(id, keys)),
            &progress,
            None,
        ))
        .uid("short");
    let b = env
        .source(tracked(
            Datagen::new(long, move |id, _| BenchEvent::of(short + id, keys)).rate(2_000.0),
            &Arc::default(),
            Some(long / PACE),
        ))
        .uid("long");
    a.union(&[b])
        .key_by(|e: &BenchEvent| e.k)
        .process(Count {
            hook: Some(hook),
            ..Default::default()
        })
        .uid("count")
        .sink(lines_sink(&out))
        .uid("output");
    let r = run(&env, "one input ends early").unwrap();
    assert_eq!(chaos.left(), 0, "every failure happened");
    assert_eq!(r.restarts, 2);
    assert_exactly_once(&committed(&out), 0..short + long, keys, "early end");
}

/// Counts records.
struct CountAgg;

impl weir::AggregateFunction<BenchEvent, u64, u64> for CountAgg {
    fn create_accumulator(&self) -> u64 {
        0
    }
    fn add(&self, acc: &mut u64, _: BenchEvent) {
        *acc += 1;
    }
    fn get_result(&self, acc: &u64) -> u64 {
        *acc
    }
    fn merge(&self, acc: &mut u64, other: u64) {
        *acc += other;
    }
}

#[test]
fn event_time_windows_fire_exactly_once_under_failures() {
    windows_exactly_once_under_failures(false);
}

/// The same with local aggregation: partials held by the local stage at a barrier go before
/// it, so nothing is lost or counted twice.
#[test]
fn locally_aggregated_windows_fire_exactly_once_under_failures() {
    windows_exactly_once_under_failures(true);
}

fn windows_exactly_once_under_failures(local: bool) {
    // Tumbling windows of 2 ms of event time (2000 events each: ts = id / 1000) per key:
    // every (key, window) count is committed once, and right.
    let (events, keys) = (20_000, 20);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let progress = Arc::new(Progress::default());
    let storage = FaultyStorage::new(&dir.path().join("chk"), &progress, Vec::new());
    let env = StreamEnv::new()
        .with_parallelism(2)
        .with_checkpoint_storage(storage, INTERVAL)
        .unwrap()
        .with_restart_strategy(restart_quickly());
    let chaos = Chaos::new(&progress, 3, 2, 3);
    let c2 = chaos.clone();
    let windows = env
        .source(tracked(
            Datagen::bench(events, keys).rate(16_000.0),
            &progress,
            Some(events / PACE),
        ))
        .uid("events")
        .assign_timestamps(
            WatermarkStrategy::bounded_out_of_orderness(millis(0))
                .with_timestamps(|e: &BenchEvent, _| e.ts_ms),
        )
        .map(move |e: BenchEvent| {
            c2.check(format!("id {}", e.id));
            e
        })
        .key_by(|e: &BenchEvent| e.k)
        .window(weir::windows::Tumbling::event_time(2));
    let windows = if local {
        windows.with_local_aggregation()
    } else {
        windows
    };
    windows
        .aggregate_with(
            CountAgg,
            |k: &u64, w: &weir::windows::TimeWindow, n: u64| -> Line { (*k, w.start as u64, n) },
        )
        .uid("windows")
        .sink(lines_sink(&out))
        .uid("output");
    let r = run(&env, "windows under failures").unwrap();
    if local {
        // The local stage ran (its records are the source's, replays included).
        assert!(r.metrics.counter_sum("_local", "records_in") >= events);
    }
    assert_eq!(chaos.left(), 0, "every failure happened");
    assert_eq!(r.restarts, 3);
    let mut expected: BTreeMap<(u64, u64), u64> = BTreeMap::new();
    for id in 0..events {
        let e = BenchEvent::of(id, keys);
        *expected.entry((e.k, (e.ts_ms / 2 * 2) as u64)).or_default() += 1;
    }
    let mut got: BTreeMap<(u64, u64), Vec<u64>> = BTreeMap::new();
    for (k, start, n) in committed(&out) {
        got.entry((k, start)).or_default().push(n);
    }
    let got_once: BTreeMap<(u64, u64), u64> = got
        .iter()
        .filter(|(_, v)| v.len() == 1)
        .map(|(w, v)| (*w, v[0]))
        .collect();
    let twice: Vec<_> = got.iter().filter(|(_, v)| v.len() > 1).collect();
    assert!(twice.is_empty(), "windows fired more than once: {twice:?}");
    assert_eq!(got_once, expected);
}

#[test]
fn a_file_source_resumes_exactly_once_after_failures_and_at_another_parallelism() {
    // Four files of ids (file j: j, j+4, …), read at p=2 with a failure and stopped, then
    // restored at p=3 with another failure and run to the end.
    let (events, keys) = (20_000u64, 25);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    for j in 0..4 {
        let text: String = (j..events).step_by(4).map(|id| format!("{id}\n")).collect();
        std::fs::write(input.join(format!("ids-{j}.txt")), text).unwrap();
    }
    let (chk, out) = (dir.path().join("chk"), dir.path().join("out"));
    for (leg, p) in [(0, 2), (1, 3)] {
        let progress = Arc::new(Progress::default());
        let storage = FaultyStorage::new(&chk, &progress, Vec::new());
        let mut env = StreamEnv::new()
            .with_parallelism(p)
            .with_checkpoint_storage(storage, INTERVAL)
            .unwrap()
            .with_restart_strategy(restart_quickly());
        if leg == 1 {
            env = env.with_restore(RestoreFrom::Latest);
        }
        let chaos = Chaos::new(&progress, 1, 2, 1);
        let c2 = chaos.clone();
        env.source(tracked(
            FileSource::text(&input),
            &Arc::default(),
            Some(events / PACE / 2),
        ))
        .uid("lines")
        .map(move |l: String| BenchEvent::of(l.parse().unwrap(), keys))
        .key_by(|e: &BenchEvent| e.k)
        .process(Count {
            hook: Some(Arc::new(move |e: &BenchEvent| {
                c2.check(format!("id {}", e.id))
            })),
            ..Default::default()
        })
        .uid("count")
        .sink(lines_sink(&out))
        .uid("output");
        let h = env.execute_async("file source").unwrap();
        if leg == 0 {
            wait_until("checkpoints are complete", || {
                completed(&h) >= 6 || h.is_finished()
            });
            h.cancel();
        }
        let r = join(h).unwrap();
        assert_eq!(r.cancelled, leg == 0, "leg {leg}");
        assert_eq!(chaos.left(), 0, "leg {leg}: the failure did not happen");
        assert_eq!(r.restarts, 1);
    }
    assert_exactly_once(&committed(&out), 0..events, keys, "file source");
}
