//! A generator, a topic, a windowed job and an output topic, exactly once end to end.
//!
//!     kafka_pipeline generate --brokers B --topic readings --sensors 10 --readings 100000
//!                             [--rate 5000] --checkpoint-dir C1 --checkpoint-interval 500ms
//!     kafka_pipeline window   --brokers B --topic readings --output-topic means --group G
//!                             --checkpoint-dir C2 --checkpoint-interval 500ms [--bounded]
//!     kafka_pipeline all      (both in one job, unbounded; the flags of both)
//!
//! `generate` writes sensor readings as JSON (keyed by sensor) through Kafka transactions.
//! `window` reads them with `read_committed`, takes the event time from each reading's `ts_ms`
//! with watermarks per partition, averages the temperature per sensor over 5-second tumbling
//! windows, and writes one JSON result per sensor and window through transactions: restarted
//! with `--restore latest` after a crash, neither job loses or repeats anything.
use clap::{Parser, Subcommand};
use serde::{Deserialize, Serialize};
use weir::prelude::*;
use weir::windows::{TimeWindow, Tumbling};
use weir::AggregateFunction;
use weir_kafka::{Json, KafkaMessage, KafkaSink, KafkaSource, StartFrom};

#[derive(Parser)]
#[command(about = "Sensor readings through Kafka into 5-second windows, exactly once")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args, Clone)]
struct Gen {
    /// Sensors.
    #[arg(long, default_value_t = 10)]
    sensors: u64,
    /// Readings to generate (in `all` mode: unbounded).
    #[arg(long, default_value_t = 100_000)]
    readings: u64,
    /// Readings per second (default: as fast as possible).
    #[arg(long)]
    rate: Option<f64>,
}

#[derive(clap::Args, Clone)]
struct Win {
    /// Topic of the window results.
    #[arg(long)]
    output_topic: String,
    /// Consumer group of the window job.
    #[arg(long, default_value = "kafka-pipeline")]
    group: String,
    /// Stop at the offsets current at start.
    #[arg(long)]
    bounded: bool,
}

#[derive(Subcommand)]
enum Cmd {
    /// Generate readings into the topic.
    Generate {
        #[command(flatten)]
        weir: EnvOptions,
        #[arg(long)]
        brokers: String,
        #[arg(long)]
        topic: String,
        #[command(flatten)]
        gen: Gen,
    },
    /// Average readings per sensor over 5-second windows into the output topic.
    Window {
        #[command(flatten)]
        weir: EnvOptions,
        #[arg(long)]
        brokers: String,
        #[arg(long)]
        topic: String,
        #[command(flatten)]
        win: Win,
    },
    /// Both, in one job.
    All {
        #[command(flatten)]
        weir: EnvOptions,
        #[arg(long)]
        brokers: String,
        #[arg(long)]
        topic: String,
        #[command(flatten)]
        gen: Gen,
        #[command(flatten)]
        win: Win,
    },
}

/// One window's result.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct SensorWindow {
    sensor: u64,
    start: i64,
    end: i64,
    count: u64,
    mean_celsius: f64,
}

struct Mean;
impl AggregateFunction<SensorReading, (f64, u64), (f64, u64)> for Mean {
    fn create_accumulator(&self) -> (f64, u64) {
        (0.0, 0)
    }
    fn add(&self, acc: &mut (f64, u64), r: SensorReading) {
        acc.0 += (r.temperature - 32.0) * 5.0 / 9.0;
        acc.1 += 1;
    }
    fn get_result(&self, acc: &(f64, u64)) -> (f64, u64) {
        (acc.0 / acc.1.max(1) as f64, acc.1)
    }
    fn merge(&self, acc: &mut (f64, u64), o: (f64, u64)) {
        acc.0 += o.0;
        acc.1 += o.1;
    }
}

fn generate(env: &StreamEnv, brokers: &str, topic: &str, g: &Gen, unbounded: bool) {
    let mut readings = Datagen::sensors(g.sensors, g.readings);
    if unbounded {
        readings = readings.unbounded();
    }
    if let Some(r) = g.rate {
        readings = readings.rate(r);
    }
    env.source(readings)
        .uid("generator")
        .sink(
            KafkaSink::new(brokers, topic, |r: &SensorReading| {
                let v = serde_json::to_vec(r).map_err(|e| e.to_string())?;
                let mut m = KafkaMessage::value(v).with_key(r.sensor_id.to_string());
                m.timestamp = Some(r.ts_ms);
                Ok(m)
            })
            .exactly_once(format!("weir-pipeline-gen-{topic}")),
        )
        .uid("readings");
}

fn window(env: &StreamEnv, brokers: &str, topic: &str, w: &Win) {
    let mut source = KafkaSource::new(brokers, &[topic], Json::<SensorReading>::new())
        .group_id(&w.group)
        .start_from(StartFrom::Committed {
            fallback_latest: false,
        });
    if w.bounded {
        source = source.bounded();
    }
    let out = w.output_topic.clone();
    env.source(source)
        .uid("readings-in")
        .assign_timestamps(
            WatermarkStrategy::bounded_out_of_orderness(secs(5))
                .with_timestamps(|r: &SensorReading, _| r.ts_ms)
                .with_idleness(secs(10)),
        )
        .key_by(|r: &SensorReading| r.sensor_id)
        .window(Tumbling::event_time(5_000))
        .aggregate_with(
            Mean,
            |sensor: &u64, win: &TimeWindow, (mean, count): (f64, u64)| SensorWindow {
                sensor: *sensor,
                start: win.start,
                end: win.end,
                count,
                mean_celsius: (mean * 10.0).round() / 10.0,
            },
        )
        .uid("windows")
        .sink(
            KafkaSink::new(brokers, &out, |s: &SensorWindow| {
                let v = serde_json::to_vec(s).map_err(|e| e.to_string())?;
                Ok(KafkaMessage::value(v).with_key(s.sensor.to_string()))
            })
            .exactly_once(format!("weir-pipeline-win-{}-{out}", w.group)),
        )
        .uid("means");
}

fn main() -> anyhow::Result<()> {
    weir::init_logging();
    let (r, name) = match Cli::parse().cmd {
        Cmd::Generate {
            weir,
            brokers,
            topic,
            gen,
        } => {
            let env = StreamEnv::from_options(weir)?;
            generate(&env, &brokers, &topic, &gen, false);
            (env.execute("kafka_pipeline generate")?, "generate")
        }
        Cmd::Window {
            weir,
            brokers,
            topic,
            win,
        } => {
            let env = StreamEnv::from_options(weir)?;
            window(&env, &brokers, &topic, &win);
            (env.execute("kafka_pipeline window")?, "window")
        }
        Cmd::All {
            weir,
            brokers,
            topic,
            gen,
            win,
        } => {
            let env = StreamEnv::from_options(weir)?;
            generate(&env, &brokers, &topic, &gen, true);
            window(&env, &brokers, &topic, &win);
            (env.execute("kafka_pipeline")?, "all")
        }
    };
    eprintln!(
        "kafka_pipeline {name}: done in {:.2?}, {} checkpoints{}",
        r.elapsed,
        r.checkpoints_completed,
        r.restored_from
            .map(|c| format!(", restored from checkpoint {c}"))
            .unwrap_or_default()
    );
    Ok(())
}
