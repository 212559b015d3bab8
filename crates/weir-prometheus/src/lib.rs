//! # weir-prometheus
//!
//! A Prometheus remote-write 1.0 sink for Weir: [`PrometheusSink`] writes a stream of
//! [`MetricSample`]s as snappy-compressed protobuf `WriteRequest`s, batched, retried, and
//! replay-safe after a restore from a checkpoint.
//!
//! ```no_run
//! use weir::prelude::*;
//! use weir_prometheus::{MetricSample, PrometheusSink, PrometheusStreamExt};
//!
//! let env = StreamEnv::new();
//! let sink = PrometheusSink::new("http://127.0.0.1:9090/api/v1/write");
//! env.from_collection(vec![1.0f64, 2.0, 3.0])
//!     .map(|v| MetricSample::new("demo_value", 1_700_000_000_000, v).with_label("job", "demo"))
//!     .write_to_prometheus(sink);
//! env.execute("demo").unwrap();
//! ```
#![deny(missing_docs)]

mod metrics;
pub mod proto;
mod sample;
mod sink;

pub use metrics::{SinkMetrics, SinkMetricsSnapshot, LATENCY_BUCKETS_MS};
pub use reqwest::header::HeaderMap;
pub use sample::{series_partition, MetricSample};
pub use sink::{OnError, PrometheusSink, PrometheusStreamExt, RequestSigner};
