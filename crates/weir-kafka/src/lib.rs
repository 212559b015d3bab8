//! # weir-kafka
//!
//! Apache Kafka for Weir, on `rdkafka` with its bundled librdkafka (built from source).
//!
//! - [`KafkaSource`]: topics by name or pattern, partitions spread over the source subtasks
//!   (and discovered while running), each partition a split with its own watermark (and
//!   idleness) when `assign_timestamps` follows the source;
//!   offsets live in checkpoints (the source of truth) and are committed to the consumer group
//!   when a checkpoint completes (for monitoring, and for [`StartFrom::Committed`]); start from
//!   earliest, latest, a timestamp, given offsets or the group's committed offsets; bounded mode
//!   stops at the offsets current at start; watermark alignment pauses partitions that run
//!   ahead of their group; undecodable records go through the source's bad-record policy.
//! - Formats: raw bytes, UTF-8, JSON and [`Avro`] (plain binary or Confluent's wire format) with
//!   a schema, both ways.
//! - [`KafkaSink`]: serializers, a fixed topic or one per record, partitioning by key, and the
//!   delivery guarantees none / at-least-once / exactly-once (a transaction per checkpoint;
//!   see [`sink`] for how it survives crashes with librdkafka).
//! - [`DeadLetterSink`]: writes the dead letters of a source to a topic with Kafka Connect's
//!   error headers.
#![deny(missing_docs)]

mod alignment;
pub mod avro;
mod discovery;
pub mod record;
pub mod sink;
pub mod source;

pub use alignment::WatermarkAlignment;
pub use avro::Avro;
pub use record::{Bytes, Deserializer, Json, KafkaRecord, Raw, RawRecord, Utf8};
pub use sink::{
    DeadLetterSink, DeliveryGuarantee, KafkaMessage, KafkaSink, DEAD_LETTER_HEADER_ERROR,
    DEAD_LETTER_HEADER_OFFSET, DEAD_LETTER_HEADER_PARTITION, DEAD_LETTER_HEADER_TOPIC,
};
pub use source::{KafkaSource, StartFrom, DEFAULT_DISCOVERY_INTERVAL};

/// Client properties shared by sources and sinks: `bootstrap.servers` plus the user's.
pub(crate) fn client_config(
    brokers: &str,
    props: &[(String, String)],
) -> rdkafka::config::ClientConfig {
    let mut c = rdkafka::config::ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    c.set("log_level", "4");
    for (k, v) in props {
        c.set(k, v);
    }
    c
}

/// A Kafka error as a Weir error (an external system failed).
pub(crate) fn kafka_err(
    what: impl std::fmt::Display,
    e: impl std::fmt::Display,
) -> weir::WeirError {
    weir::WeirError::io(
        format!("kafka: {what}"),
        std::io::Error::other(e.to_string()),
    )
}
