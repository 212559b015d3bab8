//! Exactly-once under SIGKILL: counts events per key in keyed state and writes one line per
//! event, `id,key,count`, through the exactly-once part-file sink. Kill it at any moment and
//! restart it with `--restore latest`: the committed output holds every id exactly once and, for
//! every key, the counts 1..n exactly once (`scripts/chaos` checks this with random kills).
//!
//!     chaos_counter --events N --keys K --rate EVENTS_PER_S --output DIR
//!                   --checkpoint-dir C --checkpoint-interval 500ms [--restore latest]
//!                   (C: a directory, or s3://bucket/prefix with AWS_ENDPOINT_URL etc. set)
//!                   [--parallelism P] [--state-backend memory|disk[:DIR]] [--state-memory 64MiB]
use clap::Parser;
use std::path::PathBuf;
use weir::prelude::*;

#[derive(Parser)]
#[command(about = "Count events per key with exactly-once output, for kill -9 testing")]
struct Cli {
    #[command(flatten)]
    weir: EnvOptions,
    /// Events (ids 0..N).
    #[arg(long, default_value_t = 100_000)]
    events: u64,
    /// Keys (the benchmark formula: k = (id·2654435761 mod 2^32)·K / 2^32).
    #[arg(long, default_value_t = 100)]
    keys: u64,
    /// Events per second (0: unlimited).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Directory of committed part files.
    #[arg(long)]
    output: PathBuf,
}

#[derive(Clone, Default)]
struct Count {
    n: ValueState<u64>,
    reported: bool,
}

impl KeyedProcessFunction<u64, BenchEvent, (u64, u64, u64)> for Count {
    fn open(&mut self, s: &mut StateRegistry<'_, u64>) -> FnResult {
        self.n = s.value_state("count")?;
        Ok(())
    }
    fn process_element(
        &mut self,
        e: BenchEvent,
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut Collector<'_, (u64, u64, u64)>,
    ) -> FnResult {
        if !self.reported {
            // For scripts/chaos: when processing (re)started.
            self.reported = true;
            let ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0);
            eprintln!("chaos_counter: first record at {ms}");
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

fn main() -> anyhow::Result<()> {
    weir::init_logging();
    weir_rocksdb::register(); // --state-backend disk
    weir_object_store::register(); // --checkpoint-dir s3://bucket/prefix
    let cli = Cli::parse();
    let env = StreamEnv::from_options(cli.weir)?;
    let mut gen = Datagen::bench(cli.events, cli.keys);
    if cli.rate > 0.0 {
        gen = gen.rate(cli.rate);
    }
    env.source(gen)
        .uid("events")
        .key_by(|e: &BenchEvent| e.k)
        .process(Count::default())
        .uid("count")
        .sink(RollingFileSink::lines(
            &cli.output,
            |(id, k, c): &(u64, u64, u64)| format!("{id},{k},{c}"),
        ))
        .uid("output");
    let r = env.execute("chaos_counter")?;
    eprintln!(
        "chaos_counter: done in {:.2?}, {} checkpoints{}",
        r.elapsed,
        r.checkpoints_completed,
        r.restored_from
            .map(|c| format!(", restored from checkpoint {c}"))
            .unwrap_or_default()
    );
    Ok(())
}
