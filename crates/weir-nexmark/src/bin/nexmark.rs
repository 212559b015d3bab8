//! Runs one Nexmark query on generated events or on event files, and writes its rows as JSON
//! lines.
//!
//!     nexmark q5 --events 1000000 --rate 10000 -p 2 --output /tmp/q5.jsonl
//!     nexmark q3 --input /tmp/nexmark.jsonl --output -
//!     nexmark q13 --csv /tmp/nexmark-csv --side-input /tmp/side.csv --discard
//!     nexmark q5 --latency --rate 500000 --events 5000000 --checkpoint-interval 1s ...
//!
//! The last stderr line is a JSON detail prefixed with `# `: engine, query, parallelism,
//! events (generated, or `--input-events`), rows, seconds (from `execute` to its return),
//! events_per_s, peak_rss_mib (VmHWM), and with `--latency` the latency quantiles in µs.
use clap::{Parser, ValueEnum};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;
use weir::prelude::*;
use weir::Data;
use weir_nexmark::latency::{self, Finality, LatencySink, PacedSource};
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
    /// With `--input`/`--csv`: how many events the files hold (only for the report).
    #[arg(long)]
    input_events: Option<u64>,
    /// Latency run: generated events paced at `--rate` per second of wall-clock time, whose
    /// event times are their creation times; rows go to a latency histogram (no output): per
    /// row, the time from the creation of the event that made it final (its own, or the first
    /// that moves the watermark past its window) to the sink. For q0–q2, q5, q7, q8, q11, q13,
    /// q14.
    #[arg(long, conflicts_with_all = ["input", "csv", "output", "rate_limited"])]
    latency: bool,
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

fn emit<T: Data + Serialize>(
    rows: DataStream<T>,
    cli: &Cli,
    count: &DiscardSink,
    latency: &Option<LatencySink>,
) {
    rows.sink(count.clone());
    if let Some(l) = latency {
        rows.sink(l.clone());
        return;
    }
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
    // per-event rows are final when made; window results when the watermark passes their end
    let finality = match cli.query {
        Query::Q0 | Query::Q1 | Query::Q2 | Query::Q13 | Query::Q14 => Some(Finality::PerEvent),
        Query::Q5 | Query::Q8 | Query::Q11 => Some(Finality::WindowEnd {
            delay_ms: delay as i64,
        }),
        Query::Q7 => Some(Finality::TopBids {
            size_ms: queries::WINDOW_MS,
            delay_ms: delay as i64,
        }),
        // joins whose rows are made by a record or a timer that the row's time does not tell
        Query::Q3 | Query::Q4 | Query::Q6 | Query::Q9 | Query::Q12 => None,
    };
    let mut lat = None;
    let events = match (&cli.input, &cli.csv) {
        (Some(p), _) => files::read_json_lines(&env, p, delay),
        (_, Some(d)) => files::read_csv(&env, d, delay).map_err(anyhow::Error::msg)?,
        _ if cli.latency => {
            // the events' times are their wall-clock creation times, from 1 s from now
            let start_ms = latency::now_us() / 1000 + 1000;
            let cfg = NexmarkConfig::new(cli.events)
                .seed(cli.seed)
                .rate(cli.rate)
                .base_time_ms(start_ms);
            cfg.validate().map_err(anyhow::Error::msg)?;
            let Some(finality) = finality else {
                anyhow::bail!("--latency: not defined for {:?}'s rows", cli.query);
            };
            let last = cfg.timestamp(cli.events.saturating_sub(1));
            lat = Some(LatencySink::new(finality, last));
            PacedSource::new(cfg).stream(&env, delay)
        }
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
        Query::Q0 => emit(queries::q0(&events), &cli, &count, &lat),
        Query::Q1 => emit(queries::q1(&events), &cli, &count, &lat),
        Query::Q2 => emit(queries::q2(&events), &cli, &count, &lat),
        Query::Q3 => emit(queries::q3(&events), &cli, &count, &lat),
        Query::Q4 => emit(queries::q4(&events), &cli, &count, &lat),
        Query::Q5 => emit(queries::q5(&events), &cli, &count, &lat),
        Query::Q6 => emit(queries::q6(&events), &cli, &count, &lat),
        Query::Q7 => emit(queries::q7(&events), &cli, &count, &lat),
        Query::Q8 => emit(queries::q8(&events), &cli, &count, &lat),
        Query::Q9 => emit(queries::q9(&events), &cli, &count, &lat),
        Query::Q11 => emit(queries::q11(&events), &cli, &count, &lat),
        Query::Q12 => emit(queries::q12(&events), &cli, &count, &lat),
        Query::Q13 => {
            let Some(side) = &cli.side_input else {
                anyhow::bail!(
                    "q13 needs --side-input FILE (nexmark-gen --side-input FILE writes one)"
                );
            };
            emit(queries::q13(&events, side), &cli, &count, &lat)
        }
        Query::Q14 => emit(queries::q14(&events), &cli, &count, &lat),
    }
    let start = Instant::now();
    let r = env.execute(&format!("nexmark {:?}", cli.query))?;
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "{:?}: {} rows in {:.3} s{}",
        cli.query,
        count.count(),
        secs,
        if r.cancelled { " (cancelled)" } else { "" }
    );
    let events = match (&cli.input, &cli.csv) {
        (None, None) => Some(cli.events),
        _ => cli.input_events,
    };
    let mut detail = serde_json::json!({
        "engine": "weir",
        "query": format!("{:?}", cli.query).to_lowercase(),
        "parallelism": env.parallelism(),
        "events": events,
        "rows": count.count(),
        "seconds": secs,
        "events_per_s": events.map(|n| n as f64 / secs),
        "peak_rss_mib": peak_rss_kib() / 1024,
    });
    if let Some(l) = &lat {
        let h = l.histogram();
        let q = |x: f64| h.quantile(x);
        let cdf: Vec<_> = h.cdf().into_iter().map(|(us, f)| [us as f64, f]).collect();
        detail["latency"] = serde_json::json!({
            "rate": cli.rate, "finality": finality.map(|f| format!("{f:?}")), "rows": h.count(),
            "flushed": h.flushed, "negative": h.negative, "p50_us": q(0.5), "p90_us": q(0.9), "p99_us": q(0.99),
            "p999_us": q(0.999), "max_us": h.max(), "cdf": cdf,
        });
    }
    eprintln!("# {detail}");
    Ok(())
}

/// The process's peak resident memory (VmHWM) in KiB, 0 where /proc is missing.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
