//! A keyed job for checkpoint benchmarks (`scripts/bench-checkpoint`): the deterministic
//! generator's events (ids 0..N over K keys), keyed by key, each key's state a count (and, with
//! `--value-bytes B`, a value of B bytes rewritten by every event of the key), nothing written
//! out. Checkpointing, the state backend and restoring come from the usual job options.
//!
//!     checkpoint_job --events N --keys K [--value-bytes B] [--rate EVENTS_PER_S]
//!                    [--checkpoint-dir DIR|s3://bucket/prefix --checkpoint-interval 1s]
//!                    [--state-backend memory|disk[:DIR] --state-memory 64MiB] [--restore latest]
//!
//! Prints `checkpoint_job: first record at MS` (ms since the epoch) to stderr when processing
//! starts, and one JSON line to stdout at the end: events, elapsed_s, events_per_s,
//! checkpoints, restored_from, max sync/async/duration ms of a checkpoint, last checkpoint size
//! and uploaded bytes, the process's peak RSS (VmHWM) and its CPU time (user + system, every
//! thread): on a shared machine, CPU time per event is the steadier measure of what
//! checkpoints cost.
use clap::Parser;
use weir::prelude::*;

#[derive(Parser)]
#[command(about = "A keyed job with K keys of state, for checkpoint benchmarks")]
struct Cli {
    #[command(flatten)]
    weir: EnvOptions,
    /// Events (ids 0..N).
    #[arg(long, default_value_t = 10_000_000)]
    events: u64,
    /// Keys.
    #[arg(long, default_value_t = 1_000_000)]
    keys: u64,
    /// Bytes of state per key besides its count (0: a count only).
    #[arg(long, default_value_t = 0)]
    value_bytes: usize,
    /// Events per second (0: unlimited).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
}

#[derive(Clone, Default)]
struct Keep {
    n: ValueState<u64>,
    v: ValueState<Vec<u8>>,
    value_bytes: usize,
    reported: bool,
}

impl KeyedProcessFunction<u64, BenchEvent, u64> for Keep {
    fn open(&mut self, s: &mut StateRegistry<'_, u64>) -> FnResult {
        self.n = s.value_state("count")?;
        if self.value_bytes > 0 {
            self.v = s.value_state("value")?;
        }
        Ok(())
    }
    fn process_element(
        &mut self,
        e: BenchEvent,
        ctx: &mut KeyedContext<'_, u64>,
        _out: &mut Collector<'_, u64>,
    ) -> FnResult {
        if !self.reported {
            self.reported = true;
            let ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0);
            eprintln!("checkpoint_job: first record at {ms}");
        }
        let c = self.n.mutate(
            ctx,
            || 0,
            |c| {
                *c += 1;
                *c
            },
        );
        if self.value_bytes > 0 {
            // Incompressible bytes that change with every event of the key.
            let mut x = (e.id.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ c) | 1;
            let v: Vec<u8> = (0..self.value_bytes)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            self.v.set(ctx, v);
        }
        Ok(())
    }
}

/// The process's CPU time so far (user + system, every thread), in seconds.
fn cpu_s() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the command (in parentheses): utime and stime are the 12th and 13th,
            // in USER_HZ (100 per second on Linux).
            let f: Vec<&str> = s.rsplit_once(')')?.1.split_whitespace().collect();
            Some((f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?) as f64 / 100.0)
        })
        .unwrap_or(0.0)
}

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn main() -> anyhow::Result<()> {
    weir::init_logging();
    // Without the `connectors` feature: the memory backend and local checkpoint directories.
    #[cfg(feature = "connectors")]
    {
        weir_rocksdb::register(); // --state-backend disk
        weir_object_store::register(); // --checkpoint-dir s3://bucket/prefix
    }
    let cli = Cli::parse();
    let env = StreamEnv::from_options(cli.weir)?;
    let mut gen = Datagen::bench(cli.events, cli.keys);
    if cli.rate > 0.0 {
        gen = gen.rate(cli.rate);
    }
    env.source(gen)
        .uid("events")
        .key_by(|e: &BenchEvent| e.k)
        .process(Keep {
            value_bytes: cli.value_bytes,
            ..Default::default()
        })
        .uid("state")
        .sink(DiscardSink::new())
        .uid("discard");
    let r = env.execute("checkpoint_job")?;
    let m = &r.metrics;
    let secs = r.elapsed.as_secs_f64();
    println!(
        "{{\"events\":{},\"elapsed_s\":{secs:.3},\"events_per_s\":{:.0},\"checkpoints\":{},\"restored_from\":{},\"max_sync_ms\":{},\"max_async_ms\":{},\"max_duration_ms\":{},\"last_size_bytes\":{},\"last_uploaded_bytes\":{},\"rss_hwm_kib\":{},\"cpu_s\":{:.2}}}",
        cli.events,
        cli.events as f64 / secs,
        r.checkpoints_completed,
        r.restored_from.map(|c| c.to_string()).unwrap_or("null".into()),
        m.gauge_max("checkpoints", "last_sync_ms"),
        m.gauge_max("checkpoints", "last_async_ms"),
        m.gauge_max("checkpoints", "last_duration_ms"),
        m.gauge_max("checkpoints", "last_size_bytes"),
        m.gauge_max("checkpoints", "last_uploaded_bytes"),
        vm_hwm_kib(),
        cpu_s(),
    );
    Ok(())
}
