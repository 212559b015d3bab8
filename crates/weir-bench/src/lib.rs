//! Weir's throughput benchmarks: the workloads of the Flink harness
//! (`/work/shared/bench/flink`), on identical rows, as Weir jobs and as hand-written loops (the
//! physical limit). See the crate's README.
pub mod checksum;
pub mod limit;

use checksum::{Checksum, CountSum, EventSums, GroupSums, Proj, ProjSums, Summary, SummarySink};
use std::hint::black_box;
use std::time::{Duration, Instant};
use weir::prelude::*;
use weir::{Data, DataStream};

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
}

impl Workload {
    /// Every workload.
    pub const ALL: [Workload; 4] = [
        Workload::Passthrough,
        Workload::Projfilter,
        Workload::Groupby,
        Workload::Dedup,
    ];
    /// Its name, as the Flink harness spells it.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Passthrough => "passthrough",
            Workload::Projfilter => "projfilter",
            Workload::Groupby => "groupby",
            Workload::Dedup => "dedup",
        }
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
            let t = Instant::now();
            env.execute(name)?;
            let elapsed = t.elapsed();
            Ok(Run {
                elapsed,
                emitted: sink.count(),
                checksum: None,
            })
        }
        Output::Checksum => {
            let sink = SummarySink::<S>::default();
            stream.sink(sink.clone());
            let t = Instant::now();
            env.execute(name)?;
            let elapsed = t.elapsed();
            let c = sink.checksum();
            Ok(Run {
                elapsed,
                emitted: c.emitted,
                checksum: Some(c),
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
    let events = env.source(Datagen::bench(n, keys)).name("datagen");
    let name = wl.name();
    match wl {
        Workload::Passthrough => execute::<_, EventSums>(env, name, events, output),
        Workload::Projfilter => {
            let s = events
                .filter(|e: &BenchEvent| e.price > 5000)
                .map(|e: BenchEvent| Proj::of(&e));
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
    };
    Run {
        elapsed,
        emitted,
        checksum,
    }
}
