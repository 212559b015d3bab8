//! Writes Nexmark events to files that Weir and Apache Flink both read.
//!
//!     nexmark-gen --events 1000000 --seed 1 --rate 10000 --format json --out /tmp/nexmark.jsonl
//!     nexmark-gen --events 1000000 --format csv --out /tmp/nexmark-csv --side-input /tmp/side.csv
use clap::{Parser, ValueEnum};
use std::path::PathBuf;
use std::time::Instant;
use weir_nexmark::files::{write_events, write_side_input, Format};
use weir_nexmark::NexmarkConfig;

#[derive(Clone, Copy, ValueEnum)]
enum FormatArg {
    /// JSON lines, the suite's `event_type, person, auction, bid` row layout.
    Json,
    /// `person.csv`, `auction.csv` and `bid.csv` in the `--out` directory.
    Csv,
}

#[derive(Parser)]
#[command(about = "Generate Nexmark events (Beam's model) into JSON-lines or CSV files")]
struct Cli {
    /// How many events.
    #[arg(long, default_value_t = 100_000)]
    events: u64,
    /// Seed of the random choices (same seed, same events).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Events per second of event time (sets the timestamps, not the writing speed).
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// Event time of the first event, ms since the epoch.
    #[arg(long, default_value_t = weir_nexmark::generator::DEFAULT_BASE_TIME_MS)]
    base_time_ms: i64,
    /// File format.
    #[arg(long, value_enum, default_value = "json")]
    format: FormatArg,
    /// The JSON file, or the CSV directory (a directory for JSON too with `--parts` > 1).
    #[arg(long)]
    out: PathBuf,
    /// Split into this many parts (event n in part n mod parts), each in time order.
    #[arg(long, default_value_t = 1)]
    parts: usize,
    /// Also write q13's side table here (`key,value` lines).
    #[arg(long)]
    side_input: Option<PathBuf>,
    /// Rows of the side table (keys 0..rows; q13 looks up auction mod 10000).
    #[arg(long, default_value_t = 10_000)]
    side_input_rows: u64,
    /// Hot auctions: a bid goes to the hot auction with probability 1 - 1/ratio.
    #[arg(long, default_value_t = 2)]
    hot_auction_ratio: u64,
    /// Hot sellers: an auction's seller is the hot one with probability 1 - 1/ratio.
    #[arg(long, default_value_t = 4)]
    hot_sellers_ratio: u64,
    /// Hot bidders: a bidder is the hot one with probability 1 - 1/ratio.
    #[arg(long, default_value_t = 4)]
    hot_bidders_ratio: u64,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let cfg = NexmarkConfig {
        hot_auction_ratio: cli.hot_auction_ratio,
        hot_sellers_ratio: cli.hot_sellers_ratio,
        hot_bidders_ratio: cli.hot_bidders_ratio,
        ..NexmarkConfig::new(cli.events)
            .seed(cli.seed)
            .rate(cli.rate)
            .base_time_ms(cli.base_time_ms)
    };
    let format = match cli.format {
        FormatArg::Json => Format::Json,
        FormatArg::Csv => Format::Csv,
    };
    let start = Instant::now();
    let w = write_events(&cfg, format, &cli.out, cli.parts).map_err(anyhow::Error::msg)?;
    if let Some(p) = &cli.side_input {
        write_side_input(p, cli.side_input_rows).map_err(anyhow::Error::msg)?;
    }
    eprintln!(
        "wrote {} events ({} people, {} auctions, {} bids) in {:.2} s, event time {} .. {} ms: {}",
        cli.events,
        w.persons,
        w.auctions,
        w.bids,
        start.elapsed().as_secs_f64(),
        cfg.timestamp(0),
        cfg.timestamp(cli.events.saturating_sub(1)),
        w.files
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(" ")
    );
    Ok(())
}
