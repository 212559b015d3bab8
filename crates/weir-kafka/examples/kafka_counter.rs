//! Counts records per key, from a Kafka topic to a Kafka topic, exactly once.
//!
//! Reads UTF-8 values `key,payload` from `--input-topic`, keeps a count per key in keyed state,
//! and writes `key,payload,count` (keyed by `key`) to `--output-topic` through Kafka
//! transactions, one per checkpoint. Kill it at any moment (`kill -9`) and start it again with
//! `--restore latest`: a `read_committed` consumer of the output sees every input record exactly
//! once, and for every key the counts 1..n exactly once.
//!
//!     kafka_counter --brokers HOST:PORT --input-topic T --output-topic U --group G
//!                   --checkpoint-dir C --checkpoint-interval 500ms [--restore latest]
//!                   [--parallelism P] [--bounded]
//!
//! `--bounded` stops at the input offsets current at start and exits 0 once everything up to
//! them is committed.
use clap::Parser;
use weir::prelude::*;
use weir_kafka::{KafkaMessage, KafkaSink, KafkaSource, RawRecord, StartFrom};

#[derive(Parser)]
#[command(about = "Count records per key from Kafka to Kafka, exactly once")]
struct Cli {
    #[command(flatten)]
    weir: EnvOptions,
    /// Bootstrap brokers, `host:port[,host:port...]`.
    #[arg(long)]
    brokers: String,
    /// Topic of `key,payload` records.
    #[arg(long)]
    input_topic: String,
    /// Topic of `key,payload,count` records.
    #[arg(long)]
    output_topic: String,
    /// Consumer group (offsets committed on checkpoints; transactional ids derive from it).
    #[arg(long)]
    group: String,
    /// Stop at the input offsets current at start.
    #[arg(long)]
    bounded: bool,
    /// `transaction.timeout.ms` of the output transactions.
    #[arg(long, default_value = "60s")]
    transaction_timeout: String,
}

#[derive(Clone, Default)]
struct Count {
    n: ValueState<u64>,
}

impl KeyedProcessFunction<String, (String, String), String> for Count {
    fn open(&mut self, s: &mut StateRegistry<'_, String>) -> FnResult {
        self.n = s.value_state("count")?;
        Ok(())
    }
    fn process_element(
        &mut self,
        (key, payload): (String, String),
        ctx: &mut KeyedContext<'_, String>,
        out: &mut Collector<'_, String>,
    ) -> FnResult {
        let c = self.n.mutate(
            ctx,
            || 0,
            |c| {
                *c += 1;
                *c
            },
        );
        out.collect(format!("{key},{payload},{c}"));
        Ok(())
    }
}

fn parse(r: &RawRecord<'_>) -> Result<(String, String), String> {
    let v = std::str::from_utf8(r.value.unwrap_or_default()).map_err(|e| e.to_string())?;
    let (k, p) = v
        .split_once(',')
        .ok_or_else(|| format!("expected 'key,payload', got '{v}'"))?;
    Ok((k.to_string(), p.to_string()))
}

fn main() -> anyhow::Result<()> {
    weir::init_logging();
    let cli = Cli::parse();
    let timeout_ms = weir::parse_duration_ms(&cli.transaction_timeout)?;
    if let Some(i) = &cli.weir.checkpoint_interval {
        let interval = weir::parse_duration_ms(i)?;
        if interval * 2 > timeout_ms {
            eprintln!(
                "kafka_counter: warning: the checkpoint interval ({interval} ms) is more than half \
                 of transaction.timeout.ms ({timeout_ms} ms): transactions may time out before \
                 their checkpoint completes"
            );
        }
    }
    let env = StreamEnv::from_options(cli.weir)?;
    let mut source = KafkaSource::new(&cli.brokers, &[&cli.input_topic], parse)
        .group_id(&cli.group)
        .start_from(StartFrom::Committed {
            fallback_latest: false,
        });
    if cli.bounded {
        source = source.bounded();
    }
    let sink = KafkaSink::new(&cli.brokers, &cli.output_topic, |line: &String| {
        let key = line.split(',').next().unwrap_or_default();
        Ok(KafkaMessage::value(line.as_bytes()).with_key(key.as_bytes()))
    })
    .exactly_once(format!("weir-{}-{}", cli.group, cli.output_topic))
    .transaction_timeout(std::time::Duration::from_millis(timeout_ms as u64));
    env.source(source)
        .uid("input")
        .key_by(|(k, _): &(String, String)| k.clone())
        .process(Count::default())
        .uid("count")
        .sink(sink)
        .uid("output");
    let r = env.execute("kafka_counter")?;
    eprintln!(
        "kafka_counter: done in {:.2?}, {} checkpoints{}",
        r.elapsed,
        r.checkpoints_completed,
        r.restored_from
            .map(|c| format!(", restored from checkpoint {c}"))
            .unwrap_or_default()
    );
    Ok(())
}
