//! Named counters and gauges, per operator subtask.
//!
//! A [`MetricsRegistry`] is shared by every task of a job. Each operator subtask registers its
//! counters once (at build time) and then updates them with a relaxed atomic add: no lock, no
//! allocation on the record path. [`MetricsRegistry::snapshot`] reads them all, for logs, tests
//! and (later) the Prometheus endpoint.
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A monotonically increasing count.
#[derive(Clone, Debug, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    /// Adds `n`.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        self.add(1)
    }
    /// The current count.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down; also keeps its high-water mark.
#[derive(Clone, Debug, Default)]
pub struct Gauge(Arc<(AtomicI64, AtomicI64)>);

impl Gauge {
    /// Adds `d` (may be negative) and updates the high-water mark.
    #[inline]
    pub fn add(&self, d: i64) {
        let now = self.0 .0.fetch_add(d, Ordering::Relaxed) + d;
        self.0 .1.fetch_max(now, Ordering::Relaxed);
    }
    /// Sets the value.
    pub fn set(&self, v: i64) {
        self.0 .0.store(v, Ordering::Relaxed);
        self.0 .1.fetch_max(v, Ordering::Relaxed);
    }
    /// The current value.
    pub fn get(&self) -> i64 {
        self.0 .0.load(Ordering::Relaxed)
    }
    /// The largest value seen.
    pub fn max(&self) -> i64 {
        self.0 .1.load(Ordering::Relaxed)
    }
}

/// Identifies one metric: `operator[subtask].name`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MetricId {
    /// Operator (or channel) name.
    pub scope: String,
    /// Subtask index.
    pub subtask: usize,
    /// Metric name, e.g. `records_in`.
    pub name: String,
}

impl std::fmt::Display for MetricId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}[{}].{}", self.scope, self.subtask, self.name)
    }
}

#[derive(Default)]
struct Inner {
    counters: BTreeMap<MetricId, Counter>,
    gauges: BTreeMap<MetricId, Gauge>,
}

/// All metrics of a job.
#[derive(Clone, Default)]
pub struct MetricsRegistry(Arc<Mutex<Inner>>);

/// A point-in-time read of every metric.
#[derive(Clone, Debug, Default)]
pub struct MetricsSnapshot {
    /// Counter values.
    pub counters: BTreeMap<MetricId, u64>,
    /// Gauge values: (current, high-water mark).
    pub gauges: BTreeMap<MetricId, (i64, i64)>,
}

impl MetricsSnapshot {
    /// Sum of a counter over every scope and subtask whose scope contains `scope_part`.
    pub fn counter_sum(&self, scope_part: &str, name: &str) -> u64 {
        self.counters
            .iter()
            .filter(|(id, _)| id.name == name && id.scope.contains(scope_part))
            .map(|(_, v)| *v)
            .sum()
    }
    /// Largest high-water mark of a gauge over matching scopes.
    pub fn gauge_max(&self, scope_part: &str, name: &str) -> i64 {
        self.gauges
            .iter()
            .filter(|(id, _)| id.name == name && id.scope.contains(scope_part))
            .map(|(_, v)| v.1)
            .max()
            .unwrap_or(0)
    }
}

impl MetricsRegistry {
    /// The counter with this id (created at zero on first use).
    pub fn counter(&self, scope: &str, subtask: usize, name: &str) -> Counter {
        let id = MetricId {
            scope: scope.into(),
            subtask,
            name: name.into(),
        };
        self.0
            .lock()
            .unwrap()
            .counters
            .entry(id)
            .or_default()
            .clone()
    }
    /// The gauge with this id (created at zero on first use).
    pub fn gauge(&self, scope: &str, subtask: usize, name: &str) -> Gauge {
        let id = MetricId {
            scope: scope.into(),
            subtask,
            name: name.into(),
        };
        self.0.lock().unwrap().gauges.entry(id).or_default().clone()
    }
    /// Reads every metric.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let g = self.0.lock().unwrap();
        MetricsSnapshot {
            counters: g
                .counters
                .iter()
                .map(|(k, v)| (k.clone(), v.get()))
                .collect(),
            gauges: g
                .gauges
                .iter()
                .map(|(k, v)| (k.clone(), (v.get(), v.max())))
                .collect(),
        }
    }
}
