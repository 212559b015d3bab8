//! The sensor pipeline of the seed talk: readings arrive in Fahrenheit, out of order; convert
//! them to Celsius, key them by sensor, and emit each sensor's average temperature over 5-second
//! tumbling event-time windows.
//!
//!     cargo run --release --example sensors -- --sensors 100 --readings 6000 -p 2
use clap::Parser;
use weir::prelude::*;
use weir::windows::{TimeWindow, Tumbling};
use weir::AggregateFunction;

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

/// Mean temperature: accumulator (sum, count).
struct Mean;
impl AggregateFunction<SensorReading, (f64, u64), f64> for Mean {
    fn create_accumulator(&self) -> (f64, u64) {
        (0.0, 0)
    }
    fn add(&self, acc: &mut (f64, u64), r: SensorReading) {
        acc.0 += r.temperature;
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
        .window(Tumbling::event_time(PERIOD_MS))
        .aggregate_with(Mean, |sensor: &u64, w: &TimeWindow, avg: f64| {
            format!(
                "sensor {sensor:>3}  [{}, {})  avg {avg:.1} °C",
                w.start, w.end
            )
        })
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
