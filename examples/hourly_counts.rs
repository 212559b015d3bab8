//! Hourly impression counts per campaign with early results every second (seed 004): a
//! one-hour tumbling event-time window whose current count is emitted every second of event
//! time while the hour is open, then a final count when it closes.
//!
//!     cargo run --release --example hourly_counts -- --campaigns 5 --impressions 20000
use clap::Parser;
use serde::{Deserialize, Serialize};
use weir::prelude::*;
use weir::windows::{Count, TimeWindow, Tumbling};

#[derive(Parser)]
#[command(about = "Hourly impression counts per campaign, with early results every second")]
struct Cli {
    #[command(flatten)]
    weir: EnvOptions,
    /// Number of campaigns.
    #[arg(long, default_value_t = 3)]
    campaigns: u64,
    /// Impressions in all, spread over event time at 1,000 per second.
    #[arg(long, default_value_t = 5_000)]
    impressions: u64,
    /// Early results every this many ms of event time.
    #[arg(long, default_value_t = 1_000)]
    early_ms: u64,
    /// Impressions per second of processing time (0: as fast as possible).
    #[arg(long, default_value_t = 2_000.0)]
    rate: f64,
}

/// Passes a (campaign, hour, count) result on only when the count changed: the trigger fires
/// every second of event time, also when nothing new arrived (as Flink's continuous trigger).
#[derive(Clone, Default)]
struct OnlyChanges {
    last: ValueState<u64>,
}

impl KeyedProcessFunction<(u64, i64), (u64, i64, u64), String> for OnlyChanges {
    fn open(&mut self, s: &mut StateRegistry<'_, (u64, i64)>) -> FnResult {
        self.last = s.value_state("last")?;
        Ok(())
    }
    fn process_element(
        &mut self,
        (campaign, start, n): (u64, i64, u64),
        ctx: &mut KeyedContext<'_, (u64, i64)>,
        out: &mut Collector<'_, String>,
    ) -> FnResult {
        if self.last.get(ctx) != Some(n) {
            self.last.set(ctx, n);
            let h = start / 3_600_000;
            out.collect(format!(
                "campaign {campaign}  hour {h:02}:00-{:02}:00  impressions so far {n}",
                h + 1
            ));
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Impression {
    campaign: u64,
    ts_ms: i64,
}

fn main() -> anyhow::Result<()> {
    weir::init_logging();
    let cli = Cli::parse();
    let env = StreamEnv::from_options(cli.weir)?;
    let campaigns = cli.campaigns.max(1);
    let impressions = Datagen::new(cli.impressions, move |id, rng| Impression {
        campaign: rng.below(campaigns),
        // 1,000 impressions per second from 09:59:58, up to 500 ms out of order
        ts_ms: 36_000_000 - 2_000 + id as i64 - rng.below(500) as i64,
    })
    .with_timestamps(|i| i.ts_ms);
    let impressions = if cli.rate > 0.0 {
        impressions.rate(cli.rate)
    } else {
        impressions
    };
    env.source(impressions)
        .assign_timestamps(WatermarkStrategy::bounded_out_of_orderness(millis(500)))
        .key_by(|i: &Impression| i.campaign)
        .window(Tumbling::event_time(3_600_000))
        .early_fire_every(millis(cli.early_ms))
        .aggregate_with(Count, |campaign: &u64, w: &TimeWindow, n: u64| {
            (*campaign, w.start, n)
        })
        .key_by(|r: &(u64, i64, u64)| (r.0, r.1))
        .process(OnlyChanges::default())
        .sink(Stdout::with(|s: &String| s.clone()));
    env.execute("hourly counts")?;
    Ok(())
}
