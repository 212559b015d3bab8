//! Weir's throughput benchmarks: the workloads of the Flink harness
//! (`/work/shared/bench/flink`), on identical rows, as Weir jobs and as hand-written loops (the
//! physical limit). See the crate's README.
pub mod checksum;
pub mod limit;

use checksum::{
    Checksum, CountSum, EventSums, GroupSums, HopSums, Proj, ProjSums, SessionSums, Summary,
    SummarySink, WindowSums,
};
use std::hint::black_box;
use std::time::{Duration, Instant};
use weir::prelude::*;
use weir::windows::{Session, Sliding, TimeWindow, Tumbling};
use weir::{AggregateFunction, Data, DataStream};

/// A benchmark workload (same names as the Flink harness).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// Generator → discard.
    Passthrough,
    /// Keep `price > 5000`, emit `(id, k, price·0.908, ts)`.
    Projfilter,
    /// Per key running count and sum of price; every update emitted.
    Groupby,
    /// First event per key.
    Dedup,
    /// Per key, 1 s tumbling event-time windows of count and sum of price.
    Tumble,
    /// Per key, 10 s windows sliding by 2 s of the average price.
    Hop,
    /// Per key, session windows (gap 1 s) of count and sum of price, over the sparser rows
    /// ([`sparse_event`]: 100,000 events per event-time second).
    Session,
}

impl Workload {
    /// Every workload.
    pub const ALL: [Workload; 7] = [
        Workload::Passthrough,
        Workload::Projfilter,
        Workload::Groupby,
        Workload::Dedup,
        Workload::Tumble,
        Workload::Hop,
        Workload::Session,
    ];
    /// Its name, as the Flink harness spells it.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Passthrough => "passthrough",
            Workload::Projfilter => "projfilter",
            Workload::Groupby => "groupby",
            Workload::Dedup => "dedup",
            Workload::Tumble => "tumble",
            Workload::Hop => "hop",
            Workload::Session => "session",
        }
    }
    /// Whether the workload is windowed in event time (its source assigns a watermark of
    /// `ts − 1 s`, as the Flink harness's `WATERMARK FOR ts AS ts - INTERVAL '1' SECOND`).
    pub fn windowed(self) -> bool {
        matches!(self, Workload::Tumble | Workload::Hop | Workload::Session)
    }
}

/// Tumbling window size of `tumble` (ms).
pub const TUMBLE_MS: i64 = 1_000;
/// Window size and slide of `hop` (ms).
pub const HOP_MS: (i64, i64) = (10_000, 2_000);
/// Session gap of `session` (ms).
pub const SESSION_GAP_MS: i64 = 1_000;

/// The sparser rows of `session`: the harness's row `id`, with `ts = id / 100` ms (100,000
/// events per event-time second instead of 1,000,000). With K = 100,000 keys a key's events come
/// 0.6–1.6 s apart (the key is a multiplicative hash of the id), so a 1 s gap both merges and
/// splits sessions.
#[inline]
pub fn sparse_event(id: u64, keys: u64) -> BenchEvent {
    BenchEvent {
        ts_ms: (id / 100) as i64,
        ..BenchEvent::of(id, keys)
    }
}

/// A window's result: `(k, window_start_ms, window_end_ms, count, sum of price)`.
pub type WinCountSum = (u64, i64, i64, u64, u64);
/// A `hop` result: `(k, window_start_ms, window_end_ms, average price)`.
pub type WinAvg = (u64, i64, i64, f64);

/// `COUNT(*), SUM(price)` as an incremental aggregate.
#[derive(Clone, Copy, Default)]
pub struct CountSumAgg;

impl AggregateFunction<BenchEvent, (u64, u64), (u64, u64)> for CountSumAgg {
    #[inline]
    fn create_accumulator(&self) -> (u64, u64) {
        (0, 0)
    }
    #[inline]
    fn add(&self, acc: &mut (u64, u64), e: BenchEvent) {
        acc.0 += 1;
        acc.1 += e.price as u64;
    }
    #[inline]
    fn get_result(&self, acc: &(u64, u64)) -> (u64, u64) {
        *acc
    }
    fn merge(&self, acc: &mut (u64, u64), o: (u64, u64)) {
        acc.0 += o.0;
        acc.1 += o.1;
    }
}

/// Where a job's output goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// [`DiscardSink`] (counts only), like Flink's `blackhole`: for timing.
    Discard,
    /// A sink computing the full [`Checksum`]: for checking.
    Checksum,
}

/// The outcome of one run.
#[derive(Clone, Debug)]
pub struct Run {
    /// From job start to job end.
    pub elapsed: Duration,
    /// Records emitted to the sink.
    pub emitted: u64,
    /// The full checksum, if computed.
    pub checksum: Option<Checksum>,
    /// Keyed state entries (accumulators and timers) at their peak, summed over subtasks, for
    /// operators that report them (windows).
    pub state_entries_peak: u64,
    /// Resident memory before the job and at the process's peak (KiB, from /proc).
    pub rss_kib: (u64, u64),
}

/// `VmRSS` and `VmHWM` of this process in KiB (0 where /proc is missing).
pub fn rss_kib() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

impl Run {
    /// Peak resident memory growth during the job per state entry (bytes), if entries were
    /// reported: an upper bound on the state's bytes per entry (it also counts buffers).
    pub fn bytes_per_state_entry(&self) -> Option<f64> {
        (self.state_entries_peak > 0).then(|| {
            self.rss_kib.1.saturating_sub(self.rss_kib.0) as f64 * 1024.0
                / self.state_entries_peak as f64
        })
    }
}

fn state_entries_peak(m: &weir::MetricsSnapshot) -> u64 {
    m.gauges
        .iter()
        .filter(|(id, _)| id.name == "state_entries")
        .map(|(_, (_, max))| (*max).max(0) as u64)
        .sum()
}

impl Run {
    /// Input events per second.
    pub fn events_per_s(&self, n: u64) -> f64 {
        n as f64 / self.elapsed.as_secs_f64()
    }
}

/// Per key: count and sum of price (`SELECT k, COUNT(*), SUM(price) ... GROUP BY k`).
#[derive(Clone, Default)]
pub struct CountAndSum {
    acc: ValueState<(u64, u64)>,
}

impl KeyedProcessFunction<u64, BenchEvent, CountSum> for CountAndSum {
    fn open(&mut self, s: &mut StateRegistry<'_, u64>) -> FnResult {
        self.acc = s.value_state("count_sum")?;
        Ok(())
    }
    #[inline]
    fn process_element(
        &mut self,
        e: BenchEvent,
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut Collector<'_, CountSum>,
    ) -> FnResult {
        let (cnt, sum) = self.acc.mutate(
            ctx,
            || (0, 0),
            |a| {
                a.0 += 1;
                a.1 += e.price as u64;
                *a
            },
        );
        out.collect((e.k, cnt, sum));
        Ok(())
    }
}

/// Keeps the first event of each key.
#[derive(Clone, Default)]
pub struct FirstPerKey {
    seen: ValueState<bool>,
}

impl KeyedProcessFunction<u64, BenchEvent, BenchEvent> for FirstPerKey {
    fn open(&mut self, s: &mut StateRegistry<'_, u64>) -> FnResult {
        self.seen = s.value_state("seen")?;
        Ok(())
    }
    #[inline]
    fn process_element(
        &mut self,
        e: BenchEvent,
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut Collector<'_, BenchEvent>,
    ) -> FnResult {
        let first = self
            .seen
            .mutate(ctx, || false, |seen| !std::mem::replace(seen, true));
        if first {
            out.collect(e);
        }
        Ok(())
    }
}

fn execute<T: Data, S: Summary<Item = T>>(
    env: &StreamEnv,
    name: &str,
    stream: DataStream<T>,
    output: Output,
) -> weir::Result<Run> {
    match output {
        Output::Discard => {
            let sink = DiscardSink::new();
            stream.sink(sink.clone());
            let base = rss_kib().0;
            let t = Instant::now();
            let res = env.execute(name)?;
            let elapsed = t.elapsed();
            Ok(Run {
                elapsed,
                emitted: sink.count(),
                checksum: None,
                state_entries_peak: state_entries_peak(&res.metrics),
                rss_kib: (base, rss_kib().1),
            })
        }
        Output::Checksum => {
            let sink = SummarySink::<S>::default();
            stream.sink(sink.clone());
            let base = rss_kib().0;
            let t = Instant::now();
            let res = env.execute(name)?;
            let elapsed = t.elapsed();
            let c = sink.checksum();
            Ok(Run {
                elapsed,
                emitted: c.emitted,
                checksum: Some(c),
                state_entries_peak: state_entries_peak(&res.metrics),
                rss_kib: (base, rss_kib().1),
            })
        }
    }
}

/// Runs workload `wl` as a Weir job over rows `0..n` with `keys` keys on `env` (whose
/// parallelism is the job's). Timed from job start to job end.
pub fn run_weir(
    env: &StreamEnv,
    wl: Workload,
    n: u64,
    keys: u64,
    output: Output,
) -> weir::Result<Run> {
    let events = if wl == Workload::Session {
        env.source(
            Datagen::new(n, move |id, _| sparse_event(id, keys)).with_timestamps(|e| e.ts_ms),
        )
    } else {
        env.source(Datagen::bench(n, keys))
    }
    .name("datagen");
    let events = if wl.windowed() {
        events.assign_timestamps(WatermarkStrategy::bounded_out_of_orderness(secs(1)))
    } else {
        events
    };
    let name = wl.name();
    let with_bounds = |k: &u64, w: &TimeWindow, (cnt, sum): (u64, u64)| -> WinCountSum {
        (*k, w.start, w.end, cnt, sum)
    };
    match wl {
        Workload::Passthrough => execute::<_, EventSums>(env, name, events, output),
        Workload::Projfilter => {
            // One operator, as Flink's planner compiles the query into one `Calc`.
            let s = events.filter_map(|e: BenchEvent| (e.price > 5000).then(|| Proj::of(&e)));
            execute::<_, ProjSums>(env, name, s, output)
        }
        Workload::Groupby => {
            let s = events
                .key_by(|e: &BenchEvent| e.k)
                .process(CountAndSum::default());
            execute::<_, GroupSums>(env, name, s, output)
        }
        Workload::Dedup => {
            let s = events
                .key_by(|e: &BenchEvent| e.k)
                .process(FirstPerKey::default());
            execute::<_, EventSums>(env, name, s, output)
        }
        Workload::Tumble => {
            let s = events
                .key_by(|e: &BenchEvent| e.k)
                .window(Tumbling::event_time(TUMBLE_MS))
                .with_local_aggregation()
                .aggregate_with(CountSumAgg, with_bounds);
            execute::<_, WindowSums>(env, name, s, output)
        }
        Workload::Hop => {
            let s = events
                .key_by(|e: &BenchEvent| e.k)
                .window(Sliding::event_time(HOP_MS.0, HOP_MS.1))
                .with_slicing()
                .with_local_aggregation()
                .aggregate_with(
                    CountSumAgg,
                    |k: &u64, w: &TimeWindow, (cnt, sum): (u64, u64)| -> WinAvg {
                        (*k, w.start, w.end, sum as f64 / cnt as f64)
                    },
                );
            execute::<_, HopSums>(env, name, s, output)
        }
        Workload::Session => {
            let s = events
                .key_by(|e: &BenchEvent| e.k)
                .window(Session::event_time(SESSION_GAP_MS))
                .aggregate_with(CountSumAgg, with_bounds);
            execute::<_, SessionSums>(env, name, s, output)
        }
    }
}

/// Times `$body` (a limit loop) with `$emit` bound to a closure that black-boxes and counts
/// each output row, or folds it into a `$S` summary. Expanded per workload so that the loop and
/// the closure are compiled together (no dynamic call per row).
macro_rules! timed {
    ($output:expr, $S:ty, |$emit:ident| $body:expr) => {
        match $output {
            Output::Discard => {
                let mut emitted = 0u64;
                let t = Instant::now();
                {
                    let $emit = |x: &<$S as Summary>::Item| {
                        black_box(x);
                        emitted += 1;
                    };
                    black_box($body);
                }
                (t.elapsed(), emitted, None)
            }
            Output::Checksum => {
                let mut s = <$S>::default();
                let t = Instant::now();
                {
                    let $emit = |x: &<$S as Summary>::Item| s.add(x);
                    black_box($body);
                }
                let c = s.checksum();
                (t.elapsed(), c.emitted, Some(c))
            }
        }
    };
}

/// Runs workload `wl` as the hand-written loop ([`limit`]), single-threaded.
pub fn run_limit(wl: Workload, n: u64, keys: u64, output: Output) -> Run {
    let (elapsed, emitted, checksum) = match wl {
        Workload::Passthrough => {
            timed!(output, EventSums, |emit| limit::passthrough(n, keys, emit))
        }
        Workload::Projfilter => timed!(output, ProjSums, |emit| limit::projfilter(n, keys, emit)),
        Workload::Groupby => timed!(output, GroupSums, |emit| limit::groupby(n, keys, emit)),
        Workload::Dedup => timed!(output, EventSums, |emit| limit::dedup(n, keys, emit)),
        Workload::Tumble => timed!(output, WindowSums, |emit| limit::tumble(n, keys, emit)),
        Workload::Hop => timed!(output, HopSums, |emit| limit::hop(n, keys, emit)),
        Workload::Session => timed!(output, SessionSums, |emit| limit::session(n, keys, emit)),
    };
    Run {
        elapsed,
        emitted,
        checksum,
        state_entries_peak: 0,
        rss_kib: rss_kib(),
    }
}
