//! The Yahoo streaming benchmark: generate its files, run it on Weir (to Redis or kept in the
//! job), or run the hand-written loop.
//!
//!     ysb gen --events 5000000 --campaigns 100 --out /tmp/ysb.csv          # + /tmp/ysb.csv.ads.csv
//!     ysb run --input /tmp/ysb.csv --redis redis://127.0.0.1:6379 -p 2     # counts to Redis
//!     ysb run --input /tmp/ysb.csv -p 2                                    # kept in the job
//!     ysb run --input /tmp/ysb.csv --checksum                              # final counts' checksum
//!     ysb run --input /tmp/ysb.csv --limit                                 # the loop
//!     ysb run --input /tmp/ysb.csv --limit --redis redis://127.0.0.1:6379  # the loop, to Redis
//!
//! `run`'s last stderr line is a JSON detail prefixed with `# ` (engine, mode, parallelism,
//! events, windows, seconds, events_per_s, peak_rss_mib); with `--checksum` the last stdout line
//! is `[rows,Σcount,Σcampaign·count,Σwindow_s·count]`.
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use weir::prelude::*;
use weir_ysb::redis_sink::limit_to_redis;
use weir_ysb::redis_sink::RedisSink;
use weir_ysb::{checksum, counts, files, limit, YsbConfig};

#[derive(Parser)]
#[command(about = "The Yahoo streaming benchmark on Weir")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Write ad events (CSV) and the ad -> campaign table (`OUT.ads.csv`).
    Gen {
        /// How many events.
        #[arg(long)]
        events: u64,
        /// Campaigns (the window keys).
        #[arg(long, default_value_t = 100)]
        campaigns: u64,
        /// Ads per campaign (default: 10, as the original, while that makes at most 1,000,000
        /// ads; else 1, so the join table stays at the number of campaigns).
        #[arg(long)]
        ads_per_campaign: Option<u64>,
        /// Seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Events per second of event time.
        #[arg(long, default_value_t = 100_000)]
        rate: u64,
        /// The events: a CSV file, or a directory of `--parts` files.
        #[arg(long)]
        out: PathBuf,
        /// Split into this many parts (event n in part n mod parts), each in time order.
        #[arg(long, default_value_t = 1)]
        parts: usize,
    },
    /// Run the benchmark's job on Weir (or the loop).
    Run {
        /// The events (a CSV file or a directory of parts).
        #[arg(long)]
        input: PathBuf,
        /// The ad -> campaign table (default: `INPUT.ads.csv`).
        #[arg(long)]
        ads: Option<PathBuf>,
        /// Write the counts to this Redis every second (else they stay in the job).
        #[arg(long, env = "YSB_REDIS_URL")]
        redis: Option<String>,
        /// Print the checksum of the final window counts.
        #[arg(long, conflicts_with = "redis")]
        checksum: bool,
        /// Run the hand-written single-threaded loop instead (with `--redis`, writing the
        /// changed counts to Redis every second, as the Redis mode does).
        #[arg(long, conflicts_with = "checksum")]
        limit: bool,
        /// How many events the input holds (only for the report).
        #[arg(long)]
        input_events: Option<u64>,
        /// Watermarks trail the highest event time by this much (ms).
        #[arg(long, default_value_t = 1000)]
        watermark_delay_ms: u64,
        /// Weir's options (`--parallelism`, …).
        #[command(flatten)]
        weir: Box<EnvOptions>,
    },
}

/// The table next to an events file or directory: `PATH.ads.csv`.
fn ads_path(input: &Path) -> PathBuf {
    let mut s = input.as_os_str().to_owned();
    s.push(".ads.csv");
    PathBuf::from(s)
}

fn peak_rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        / 1024
}

fn main() -> anyhow::Result<()> {
    weir::init_logging();
    match Cli::parse().cmd {
        Cmd::Gen {
            events,
            campaigns,
            ads_per_campaign,
            seed,
            rate,
            out,
            parts,
        } => {
            let per = ads_per_campaign.unwrap_or(if campaigns * 10 <= 1_000_000 { 10 } else { 1 });
            let cfg = YsbConfig {
                ads_per_campaign: per,
                seed,
                rate_per_s: rate,
                ..YsbConfig::new(events, campaigns)
            };
            let start = Instant::now();
            files::write_events(&cfg, &out, parts).map_err(anyhow::Error::msg)?;
            files::write_ads(&cfg, &ads_path(&out)).map_err(anyhow::Error::msg)?;
            eprintln!(
                "wrote {events} events, {campaigns} campaigns x {per} ads in {:.2} s: {}",
                start.elapsed().as_secs_f64(),
                out.display()
            );
        }
        Cmd::Run {
            input,
            ads,
            redis,
            checksum: want_checksum,
            limit: run_limit,
            input_events,
            watermark_delay_ms,
            weir,
        } => {
            let ads = ads.unwrap_or_else(|| ads_path(&input));
            let table = files::read_ads(&ads).map_err(anyhow::Error::msg)?;
            if run_limit {
                let start = Instant::now();
                let mut n = 0u64;
                let events = files::events_iter(&input).inspect(|_| n += 1);
                let (windows, mode) = match &redis {
                    Some(url) => (
                        limit_to_redis(events, &table, url)
                            .map_err(anyhow::Error::msg)?
                            .len(),
                        "redis",
                    ),
                    None => (std::hint::black_box(limit(events, &table)).len(), "loop"),
                };
                let secs = start.elapsed().as_secs_f64();
                eprintln!(
                    "# {{\"engine\":\"limit\",\"mode\":\"{mode}\",\"events\":{n},\"windows\":{windows},\"seconds\":{secs},\"events_per_s\":{},\"peak_rss_mib\":{}}}",
                    n as f64 / secs,
                    peak_rss_mib()
                );
                return Ok(());
            }
            let env = StreamEnv::from_options(*weir)?;
            let events = files::read_events(&env, &input, watermark_delay_ms);
            let rows = counts(&events, Arc::new(table), redis.is_some());
            let count = DiscardSink::new();
            rows.sink(count.clone());
            let collected = CollectSink::new();
            let mode = match &redis {
                Some(url) => {
                    rows.sink(RedisSink::new(url.clone()));
                    "redis"
                }
                None if want_checksum => {
                    rows.sink(collected.clone());
                    "checksum"
                }
                None => "job",
            };
            let start = Instant::now();
            env.execute("ysb")?;
            let secs = start.elapsed().as_secs_f64();
            eprintln!(
                "# {{\"engine\":\"weir\",\"mode\":\"{mode}\",\"parallelism\":{},\"events\":{},\"rows\":{},\"seconds\":{secs},\"events_per_s\":{},\"peak_rss_mib\":{}}}",
                env.parallelism(),
                input_events.map_or("null".into(), |n| n.to_string()),
                count.count(),
                input_events.map_or("null".into(), |n| (n as f64 / secs).to_string()),
                peak_rss_mib()
            );
            if want_checksum {
                let rows: Vec<_> = collected.values();
                let s = checksum(&rows);
                println!("[{},{},{},{}]", s[0], s[1], s[2], s[3]);
            }
        }
    }
    Ok(())
}
