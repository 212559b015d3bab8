//! What the sink counts, shared by all its writers.
use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use weir::metrics::{Counter, Gauge};

/// Upper bounds (ms) of the request-latency histogram buckets; a last bucket takes the rest.
pub const LATENCY_BUCKETS_MS: [u64; 12] =
    [1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 5_000, 30_000];

/// Counters of a [`crate::PrometheusSink`], over all its subtasks. Cheap to read at any time.
#[derive(Default, Debug)]
pub struct SinkMetrics {
    pub(crate) samples_sent: AtomicU64,
    pub(crate) requests_sent: AtomicU64,
    pub(crate) requests_retried: AtomicU64,
    pub(crate) requests_rejected: AtomicU64,
    pub(crate) samples_skipped_stale: AtomicU64,
    pub(crate) samples_replayed: AtomicU64,
    pub(crate) dropped: Mutex<BTreeMap<String, u64>>,
    pub(crate) latency_count: AtomicU64,
    pub(crate) latency_sum_us: AtomicU64,
    pub(crate) latency_max_us: AtomicU64,
    pub(crate) latency_buckets: [AtomicU64; LATENCY_BUCKETS_MS.len() + 1],
}

impl SinkMetrics {
    pub(crate) fn drop_samples(&self, reason: &str, n: u64) {
        *self
            .dropped
            .lock()
            .unwrap()
            .entry(reason.to_string())
            .or_default() += n;
    }

    pub(crate) fn observe_latency(&self, d: Duration) {
        let us = d.as_micros().min(u64::MAX as u128) as u64;
        self.latency_count.fetch_add(1, Relaxed);
        self.latency_sum_us.fetch_add(us, Relaxed);
        self.latency_max_us.fetch_max(us, Relaxed);
        let ms = us / 1000;
        let i = LATENCY_BUCKETS_MS
            .iter()
            .position(|&b| ms < b)
            .unwrap_or(LATENCY_BUCKETS_MS.len());
        self.latency_buckets[i].fetch_add(1, Relaxed);
    }

    /// A copy of every counter now.
    pub fn snapshot(&self) -> SinkMetricsSnapshot {
        let count = self.latency_count.load(Relaxed);
        SinkMetricsSnapshot {
            samples_sent: self.samples_sent.load(Relaxed),
            requests_sent: self.requests_sent.load(Relaxed),
            requests_retried: self.requests_retried.load(Relaxed),
            requests_rejected: self.requests_rejected.load(Relaxed),
            samples_skipped_stale: self.samples_skipped_stale.load(Relaxed),
            samples_replayed: self.samples_replayed.load(Relaxed),
            samples_dropped: self.dropped.lock().unwrap().clone(),
            request_latency_avg: Duration::from_micros(
                self.latency_sum_us.load(Relaxed) / count.max(1),
            ),
            request_latency_max: Duration::from_micros(self.latency_max_us.load(Relaxed)),
            request_latency_buckets: self
                .latency_buckets
                .iter()
                .map(|b| b.load(Relaxed))
                .collect(),
        }
    }
}

/// The sink's counters at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SinkMetricsSnapshot {
    /// Samples the receiver accepted (2xx).
    pub samples_sent: u64,
    /// Requests the receiver accepted (2xx).
    pub requests_sent: u64,
    /// Attempts repeated after a 5xx, a 429 or a connection error.
    pub requests_retried: u64,
    /// Requests refused with a 4xx (each refused request of an isolation counts).
    pub requests_rejected: u64,
    /// Samples not sent because their series already had a sample at or after their timestamp
    /// (written before, or restored from a checkpoint): Prometheus would refuse them.
    pub samples_skipped_stale: u64,
    /// Samples refused as out of order or duplicate after a restore: written before the
    /// failure, replayed since. Not errors.
    pub samples_replayed: u64,
    /// Samples dropped, by reason (`out_of_order`, `duplicate_timestamp`, `too_old`,
    /// `invalid_labels`, `bad_request`, `rejected_<status>`, `retries_exhausted`).
    pub samples_dropped: BTreeMap<String, u64>,
    /// Mean time of one HTTP attempt.
    pub request_latency_avg: Duration,
    /// Longest HTTP attempt.
    pub request_latency_max: Duration,
    /// Attempts per latency bucket ([`LATENCY_BUCKETS_MS`], then the rest).
    pub request_latency_buckets: Vec<u64>,
}

impl SinkMetricsSnapshot {
    /// Samples dropped for any reason.
    pub fn dropped_total(&self) -> u64 {
        self.samples_dropped.values().sum()
    }
    /// An approximate latency quantile (the upper bound of the bucket holding it).
    pub fn latency_quantile_ms(&self, q: f64) -> Option<u64> {
        let total: u64 = self.request_latency_buckets.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = (q * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.request_latency_buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(LATENCY_BUCKETS_MS.get(i).copied().unwrap_or(u64::MAX));
            }
        }
        None
    }
}

impl fmt::Display for SinkMetricsSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} samples in {} requests sent, {} retried, {} rejected, {} stale skipped, {} replayed duplicates, dropped {:?}, latency avg {:.1?} max {:.1?}",
            self.samples_sent,
            self.requests_sent,
            self.requests_retried,
            self.requests_rejected,
            self.samples_skipped_stale,
            self.samples_replayed,
            self.samples_dropped,
            self.request_latency_avg,
            self.request_latency_max
        )
    }
}

/// The sink's counters in the job's metrics registry, per subtask (scope: the sink operator),
/// so they show wherever the job's metrics go (`JobResult::metrics`, the metrics endpoint):
/// `samples_sent`, `requests_sent`, `requests_retried`, `requests_rejected`,
/// `samples_skipped_stale`, `samples_replayed`, `samples_dropped` (every reason) and
/// `samples_dropped_<reason>`, `request_latency_us_sum` and the gauge `request_latency_us`
/// (last attempt; its high-water mark is the slowest).
#[derive(Clone)]
pub(crate) struct JobMeters {
    ctx_metrics: weir::metrics::MetricsRegistry,
    scope: String,
    subtask: usize,
    samples_sent: Counter,
    requests_sent: Counter,
    requests_retried: Counter,
    requests_rejected: Counter,
    samples_skipped_stale: Counter,
    samples_replayed: Counter,
    samples_dropped: Counter,
    latency_sum_us: Counter,
    latency_us: Gauge,
}

impl JobMeters {
    pub(crate) fn register(ctx: &weir::OperatorContext) -> Self {
        JobMeters {
            ctx_metrics: ctx.metrics.clone(),
            scope: ctx.name.clone(),
            subtask: ctx.subtask,
            samples_sent: ctx.counter("samples_sent"),
            requests_sent: ctx.counter("requests_sent"),
            requests_retried: ctx.counter("requests_retried"),
            requests_rejected: ctx.counter("requests_rejected"),
            samples_skipped_stale: ctx.counter("samples_skipped_stale"),
            samples_replayed: ctx.counter("samples_replayed"),
            samples_dropped: ctx.counter("samples_dropped"),
            latency_sum_us: ctx.counter("request_latency_us_sum"),
            latency_us: ctx
                .metrics
                .gauge(&ctx.name, ctx.subtask, "request_latency_us"),
        }
    }
}

/// Where a writer and its sender task count: the sink-wide [`SinkMetrics`] and, once the
/// writer is open, the job's registry.
#[derive(Clone, Default)]
pub(crate) struct Meters {
    pub shared: Arc<SinkMetrics>,
    pub job: Option<JobMeters>,
}

impl Meters {
    pub(crate) fn sent(&self, samples: u64) {
        self.shared.samples_sent.fetch_add(samples, Relaxed);
        self.shared.requests_sent.fetch_add(1, Relaxed);
        if let Some(j) = &self.job {
            j.samples_sent.add(samples);
            j.requests_sent.inc();
        }
    }
    pub(crate) fn retried(&self) {
        self.shared.requests_retried.fetch_add(1, Relaxed);
        if let Some(j) = &self.job {
            j.requests_retried.inc();
        }
    }
    pub(crate) fn rejected(&self) {
        self.shared.requests_rejected.fetch_add(1, Relaxed);
        if let Some(j) = &self.job {
            j.requests_rejected.inc();
        }
    }
    pub(crate) fn skipped_stale(&self) {
        self.shared.samples_skipped_stale.fetch_add(1, Relaxed);
        if let Some(j) = &self.job {
            j.samples_skipped_stale.inc();
        }
    }
    pub(crate) fn replayed(&self) {
        self.shared.samples_replayed.fetch_add(1, Relaxed);
        if let Some(j) = &self.job {
            j.samples_replayed.inc();
        }
    }
    pub(crate) fn dropped(&self, reason: &str, n: u64) {
        self.shared.drop_samples(reason, n);
        if let Some(j) = &self.job {
            j.samples_dropped.add(n);
            j.ctx_metrics
                .counter(&j.scope, j.subtask, &format!("samples_dropped_{reason}"))
                .add(n);
        }
    }
    pub(crate) fn latency(&self, d: Duration) {
        self.shared.observe_latency(d);
        if let Some(j) = &self.job {
            let us = d.as_micros().min(i64::MAX as u128) as i64;
            j.latency_sum_us.add(us as u64);
            j.latency_us.set(us);
        }
    }
}
