//! The sensor pipeline of the seed talk: readings arrive in Fahrenheit, out of order; convert
//! them to Celsius, key them by sensor, and every 5 seconds of event time emit each sensor's
//! average temperature (event-time timers + aggregating state).
//!
//!     cargo run --release --example sensors -- --sensors 100 --readings 6000 -p 2
use clap::Parser;
use std::sync::Arc;
use weir::prelude::*;
use weir::{AggregateFunction, AggregatingState};

#[derive(Parser)]
#[command(about = "Average temperature per sensor over 5-second event-time periods")]
struct Cli {
    #[command(flatten)]
    weir: EnvOptions,
    /// Number of sensors.
    #[arg(long, default_value_t = 10)]
    sensors: u64,
    /// Readings in all (each sensor reports once per second of event time).
    #[arg(long, default_value_t = 600)]
    readings: u64,
    /// Never stop (until Ctrl-C).
    #[arg(long)]
    unbounded: bool,
    /// Readings per second (all sensors together); unlimited when absent.
    #[arg(long)]
    rate: Option<f64>,
}

/// Mean of f64 values: accumulator (sum, count).
struct Mean;
impl AggregateFunction<f64, (f64, u64), f64> for Mean {
    fn create_accumulator(&self) -> (f64, u64) {
        (0.0, 0)
    }
    fn add(&self, acc: &mut (f64, u64), v: f64) {
        acc.0 += v;
        acc.1 += 1;
    }
    fn get_result(&self, acc: &(f64, u64)) -> f64 {
        acc.0 / acc.1.max(1) as f64
    }
    fn merge(&self, acc: &mut (f64, u64), o: (f64, u64)) {
        acc.0 += o.0;
        acc.1 += o.1;
    }
}

const PERIOD_MS: i64 = 5_000;

/// The mean per sensor and period: state namespaced by the period's last millisecond, so
/// periods stay apart however late the watermark comes.
#[derive(Clone, Default)]
struct AveragePerPeriod {
    mean: AggregatingState<f64, (f64, u64), f64, i64>,
}

impl KeyedProcessFunction<u64, SensorReading, String> for AveragePerPeriod {
    fn open(&mut self, s: &mut StateRegistry<'_, u64>) -> FnResult {
        self.mean = AggregatingState::register(s.store(), "mean", Arc::new(Mean), None)?;
        Ok(())
    }
    fn process_element(
        &mut self,
        r: SensorReading,
        ctx: &mut KeyedContext<'_, u64>,
        _: &mut Collector<'_, String>,
    ) -> FnResult {
        // Emit at the end of the 5 s period this reading belongs to.
        let end = r.ts_ms - r.ts_ms.rem_euclid(PERIOD_MS) + PERIOD_MS - 1;
        self.mean.add_in(ctx, &end, r.temperature);
        ctx.register_event_time_timer(end);
        Ok(())
    }
    fn on_timer(
        &mut self,
        ts: i64,
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut Collector<'_, String>,
    ) -> FnResult {
        if let Some(avg) = self.mean.get_in(ctx, &ts) {
            let start = ts + 1 - PERIOD_MS;
            out.collect(format!(
                "sensor {:>3}  [{start}, {})  avg {avg:.1} °C",
                ctx.current_key(),
                ts + 1
            ));
        }
        self.mean.clear_in(ctx, &ts);
        Ok(())
    }
}

fn main() -> anyhow::Result<()> {
    weir::init_logging();
    let cli = Cli::parse();
    let env = StreamEnv::from_options(cli.weir)?;
    let mut readings = Datagen::sensors(cli.sensors, cli.readings);
    if cli.unbounded {
        readings = readings.unbounded();
    }
    if let Some(r) = cli.rate {
        readings = readings.rate(r);
    }
    env.source(readings)
        .assign_timestamps(
            WatermarkStrategy::bounded_out_of_orderness(secs(5)).with_idleness(secs(30)),
        )
        .map(|r: SensorReading| SensorReading {
            temperature: (r.temperature - 32.0) * 5.0 / 9.0,
            ..r
        })
        .key_by(|r: &SensorReading| r.sensor_id)
        .process(AveragePerPeriod::default())
        .sink(Stdout::with(|s: &String| s.clone()));
    let result = env.execute("sensors")?;
    let how = if result.cancelled {
        "cancelled"
    } else {
        "done"
    };
    eprintln!(
        "{how} after {:.2?}: {}",
        result.elapsed,
        result.tasks.join("; ")
    );
    Ok(())
}
