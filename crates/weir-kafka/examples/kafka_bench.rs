//! Throughput of the Kafka sink and source against a broker (see `scripts/bench-kafka`).
//!
//!     kafka_bench produce --brokers B --topic T --records N --size S --mode none|alo|eo
//!                         [--parallelism P] [--partitions K] [--checkpoint-interval-ms 1000]
//!     kafka_bench consume --brokers B --topic T [--parallelism P]
//!     kafka_bench create-topic --brokers B --topic T [--partitions K]
//!
//! `produce` creates the topic (K partitions, default 4) if it does not exist and writes N
//! generated values of S bytes with `KafkaSink::bytes` and the given delivery guarantee,
//! checkpointing every second in every mode (so that only the sink's work differs); the time is
//! the job's, from start to the last record acknowledged (exactly-once: committed). `consume`
//! reads the topic with a bounded `KafkaSource` (the `Bytes` deserializer) into a discarding
//! sink. Each prints one line of `key=value` figures; MB are 10^6 bytes of values.
use clap::{Parser, Subcommand, ValueEnum};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::types::RDKafkaErrorCode;
use std::time::Duration;
use weir::prelude::*;
use weir::JobResult;
use weir_kafka::{Bytes, DeliveryGuarantee, KafkaSink, KafkaSource};
use weir_runtime::restart::RestartStrategy;

#[derive(Parser)]
#[command(about = "Throughput of Weir's Kafka sink and source")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Writes generated records with the sink.
    Produce {
        #[arg(long)]
        brokers: String,
        #[arg(long)]
        topic: String,
        /// Records to write.
        #[arg(long, default_value_t = 1_000_000)]
        records: u64,
        /// Bytes per value.
        #[arg(long, default_value_t = 100)]
        size: usize,
        #[arg(long, value_enum)]
        mode: Mode,
        #[arg(long, default_value_t = 1)]
        parallelism: usize,
        /// Partitions of the topic, when it is created.
        #[arg(long, default_value_t = 4)]
        partitions: i32,
        #[arg(long, default_value_t = 1000)]
        checkpoint_interval_ms: u64,
    },
    /// Creates a topic (for the broker's own tools, to write the same topic layout).
    CreateTopic {
        #[arg(long)]
        brokers: String,
        #[arg(long)]
        topic: String,
        #[arg(long, default_value_t = 4)]
        partitions: i32,
    },
    /// Reads a topic to its end with the source.
    Consume {
        #[arg(long)]
        brokers: String,
        #[arg(long)]
        topic: String,
        #[arg(long, default_value_t = 1)]
        parallelism: usize,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    /// `DeliveryGuarantee::None`.
    None,
    /// At-least-once: flushed at every barrier.
    Alo,
    /// Exactly-once: a transaction per checkpoint.
    Eo,
}

fn create_topic(brokers: &str, topic: &str, partitions: i32) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let r = rt.block_on(admin.create_topics(
        &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
        &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
    ))?;
    for x in r {
        match x {
            Ok(_) => {}
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, e)) => anyhow::bail!("creating topic {t}: {e}"),
        }
    }
    Ok(())
}

fn report(what: &str, records: u64, bytes: u64, r: &JobResult) {
    let secs = r.elapsed.as_secs_f64();
    println!(
        "kafka_bench {what} records={records} value_bytes={bytes} secs={secs:.3} \
         records_per_s={:.0} mb_per_s={:.2} checkpoints={}",
        records as f64 / secs,
        bytes as f64 / secs / 1e6,
        r.checkpoints_completed
    );
}

fn main() -> anyhow::Result<()> {
    weir::init_logging();
    match Cli::parse().cmd {
        Cmd::Produce {
            brokers,
            topic,
            records,
            size,
            mode,
            parallelism,
            partitions,
            checkpoint_interval_ms,
        } => {
            create_topic(&brokers, &topic, partitions)?;
            let dir = tempfile::tempdir()?;
            let env = StreamEnv::new()
                .with_parallelism(parallelism)
                .with_checkpointing(dir.path(), Duration::from_millis(checkpoint_interval_ms))?
                .with_restart_strategy(RestartStrategy::None);
            let (guarantee, name) = match mode {
                Mode::None => (DeliveryGuarantee::None, "none"),
                Mode::Alo => (DeliveryGuarantee::AtLeastOnce, "at-least-once"),
                Mode::Eo => (
                    DeliveryGuarantee::ExactlyOnce {
                        transactional_id_prefix: format!("weir-bench-{topic}"),
                    },
                    "exactly-once",
                ),
            };
            let gen = Datagen::new(records, move |id, _| {
                let mut v = vec![b'x'; size];
                let n = size.min(8);
                v[..n].copy_from_slice(&id.to_le_bytes()[..n]);
                v
            });
            env.source(gen)
                .sink(KafkaSink::bytes(&brokers, &topic).delivery(guarantee));
            let r = env.execute("kafka_bench produce")?;
            report(
                &format!("produce mode={name}"),
                records,
                records * size as u64,
                &r,
            );
        }
        Cmd::CreateTopic {
            brokers,
            topic,
            partitions,
        } => create_topic(&brokers, &topic, partitions)?,
        Cmd::Consume {
            brokers,
            topic,
            parallelism,
        } => {
            let env = StreamEnv::new().with_parallelism(parallelism);
            env.source(KafkaSource::new(&brokers, &[&topic], Bytes).bounded())
                .name("kafka-source")
                .sink(DiscardSink::new());
            let r = env.execute("kafka_bench consume")?;
            let records = r.metrics.counter_sum("kafka-source", "records_in");
            let bytes = r.metrics.counter_sum("kafka-source", "bytes_in");
            report("consume", records, bytes, &r);
        }
    }
    Ok(())
}
