//! What the sink counts, shared by all its writers.
use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

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
