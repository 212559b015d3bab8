//! Runs one Nexmark query on generated events or on event files, and writes its rows as JSON
//! lines.
//!
//!     nexmark q5 --events 1000000 --rate 10000 -p 2 --output /tmp/q5.jsonl
//!     nexmark q3 --input /tmp/nexmark.jsonl --output -
//!     nexmark q13 --csv /tmp/nexmark-csv --side-input /tmp/side.csv --discard
use clap::{Parser, ValueEnum};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;
use weir::prelude::*;
use weir::Data;
use weir_nexmark::{files, queries, NexmarkConfig, NexmarkSource};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Query {
    Q0,
    Q1,
    Q2,
    Q3,
    Q4,
    Q5,
    Q6,
    Q7,
    Q8,
    Q9,
    Q11,
    Q12,
    Q13,
    Q14,
}

#[derive(Parser)]
#[command(about = "Run a Nexmark query on Weir (generated events or event files)")]
struct Cli {
    /// The query.
    #[arg(value_enum)]
    query: Query,
    /// Generated events: how many.
    #[arg(long, default_value_t = 100_000)]
    events: u64,
    /// Generated events: the seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Generated events: events per second of event time.
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// Generated events: emit at `--rate` per second of wall-clock time (for q12).
    #[arg(long)]
    rate_limited: bool,
    /// Read events from a JSON-lines file (or directory of them) instead of generating them.
    #[arg(long, conflicts_with = "csv")]
    input: Option<PathBuf>,
    /// Read events from a CSV directory (`person.csv`, `auction.csv`, `bid.csv`).
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Watermarks trail the highest event time by this much (ms).
    #[arg(long, default_value_t = weir_nexmark::generator::DEFAULT_WATERMARK_DELAY_MS)]
    watermark_delay_ms: u64,
    /// q13's side table (CSV `key,value`; `nexmark-gen --side-input` writes one).
    #[arg(long)]
    side_input: Option<PathBuf>,
    /// Write rows as JSON lines to this file (`-`: stdout; with parallelism p > 1, `FILE.i`).
    #[arg(long, conflicts_with = "discard")]
    output: Option<PathBuf>,
    /// Only count the rows.
    #[arg(long)]
    discard: bool,
    /// Weir's options (`--parallelism`, …).
    #[command(flatten)]
    weir: EnvOptions,
}

fn emit<T: Data + Serialize>(rows: DataStream<T>, cli: &Cli, count: &DiscardSink) {
    rows.sink(count.clone());
    match cli.output.as_deref() {
        _ if cli.discard => {}
        Some(p) if p.as_os_str() != "-" => {
            rows.sink(FileSink::json_lines(p));
        }
        _ => {
            rows.sink(Stdout::with(|r: &T| {
                serde_json::to_string(r).expect("rows serialize")
            }));
        }
    }
}

fn main() -> anyhow::Result<()> {
    weir::init_logging();
    let cli = Cli::parse();
    let env = StreamEnv::from_options(cli.weir.clone())?;
    let delay = cli.watermark_delay_ms;
    let events = match (&cli.input, &cli.csv) {
        (Some(p), _) => files::read_json_lines(&env, p, delay),
        (_, Some(d)) => files::read_csv(&env, d, delay).map_err(anyhow::Error::msg)?,
        _ => {
            let cfg = NexmarkConfig::new(cli.events).seed(cli.seed).rate(cli.rate);
            cfg.validate().map_err(anyhow::Error::msg)?;
            let mut src = NexmarkSource::new(cfg).watermark_delay_ms(delay);
            if cli.rate_limited {
                src = src.rate_limited();
            }
            src.stream(&env)
        }
    };
    let count = DiscardSink::new();
    match cli.query {
        Query::Q0 => emit(queries::q0(&events), &cli, &count),
        Query::Q1 => emit(queries::q1(&events), &cli, &count),
        Query::Q2 => emit(queries::q2(&events), &cli, &count),
        Query::Q3 => emit(queries::q3(&events), &cli, &count),
        Query::Q4 => emit(queries::q4(&events), &cli, &count),
        Query::Q5 => emit(queries::q5(&events), &cli, &count),
        Query::Q6 => emit(queries::q6(&events), &cli, &count),
        Query::Q7 => emit(queries::q7(&events), &cli, &count),
        Query::Q8 => emit(queries::q8(&events), &cli, &count),
        Query::Q9 => emit(queries::q9(&events), &cli, &count),
        Query::Q11 => emit(queries::q11(&events), &cli, &count),
        Query::Q12 => emit(queries::q12(&events), &cli, &count),
        Query::Q13 => {
            let Some(side) = &cli.side_input else {
                anyhow::bail!(
                    "q13 needs --side-input FILE (nexmark-gen --side-input FILE writes one)"
                );
            };
            emit(queries::q13(&events, side), &cli, &count)
        }
        Query::Q14 => emit(queries::q14(&events), &cli, &count),
    }
    let start = Instant::now();
    let r = env.execute(&format!("nexmark {:?}", cli.query))?;
    eprintln!(
        "{:?}: {} rows in {:.3} s{}",
        cli.query,
        count.count(),
        start.elapsed().as_secs_f64(),
        if r.cancelled { " (cancelled)" } else { "" }
    );
    Ok(())
}
