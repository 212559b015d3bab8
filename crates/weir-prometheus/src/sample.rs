//! The records the sink writes: one float sample of one series.
use crate::proto;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use xxhash_rust::xxh3::Xxh3;

/// One sample of one series: a metric name, labels, a value and a timestamp (ms since the
/// epoch). The series is the name plus the labels; labels are kept sorted by name, each name
/// once.
///
/// ```
/// use weir_prometheus::MetricSample;
/// let s = MetricSample::new("iot_speed_kmh_avg", 1_700_000_000_000, 52.5)
///     .with_label("region", "eu-west")
///     .with_label("model", "e-compact");
/// assert_eq!(s.labels[0].0, "model");
/// assert_eq!(s.to_text(), r#"iot_speed_kmh_avg{model="e-compact",region="eu-west"} 52.5 1700000000000"#);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricSample {
    /// The metric name (the `__name__` label).
    pub name: String,
    /// Other labels, sorted by name, names unique.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
    /// Milliseconds since the Unix epoch.
    pub ts_ms: i64,
}

impl MetricSample {
    /// A sample without labels.
    pub fn new(name: impl Into<String>, ts_ms: i64, value: f64) -> Self {
        MetricSample {
            name: name.into(),
            labels: Vec::new(),
            value,
            ts_ms,
        }
    }

    /// Adds (or replaces) a label, keeping labels sorted.
    pub fn with_label(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let (name, value) = (name.into(), value.into());
        match self.labels.binary_search_by(|(n, _)| n.as_str().cmp(&name)) {
            Ok(i) => self.labels[i].1 = value,
            Err(i) => self.labels.insert(i, (name, value)),
        }
        self
    }

    /// The value of label `name`.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .binary_search_by(|(n, _)| n.as_str().cmp(name))
            .ok()
            .map(|i| self.labels[i].1.as_str())
    }

    /// A 128-bit identity of the series (xxh3 of the name and the sorted labels): equal for
    /// every sample of a series, in every process and version. The sink's partitioner and its
    /// replay state use it.
    pub fn series_id(&self) -> u128 {
        let mut h = Xxh3::new();
        h.update(self.name.as_bytes());
        for (n, v) in &self.labels {
            h.update(&[0xff]);
            h.update(n.as_bytes());
            h.update(&[0xfe]);
            h.update(v.as_bytes());
        }
        h.digest128()
    }

    /// The series' labels as the protocol wants them: `__name__` included, sorted by name.
    pub(crate) fn proto_labels(&self) -> Vec<proto::Label> {
        let mut v: Vec<proto::Label> = Vec::with_capacity(self.labels.len() + 1);
        v.push(proto::Label {
            name: "__name__".into(),
            value: self.name.clone(),
        });
        for (n, val) in &self.labels {
            v.push(proto::Label {
                name: n.clone(),
                value: val.clone(),
            });
        }
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Bytes the series' labels take in a request (an estimate of the protobuf size).
    pub(crate) fn series_bytes(&self) -> usize {
        let mut n = 8 + self.name.len() + 14;
        for (k, v) in &self.labels {
            n += k.len() + v.len() + 6;
        }
        n
    }

    /// The series selector, e.g. `up{job="a"}`.
    pub fn series_text(&self) -> String {
        let mut s = self.name.clone();
        if !self.labels.is_empty() {
            s.push('{');
            for (i, (n, v)) in self.labels.iter().enumerate() {
                if i > 0 {
                    s.push(',');
                }
                let _ = write!(
                    s,
                    "{n}=\"{}\"",
                    v.replace('\\', "\\\\").replace('"', "\\\"")
                );
            }
            s.push('}');
        }
        s
    }

    /// The Prometheus text exposition line: `name{labels} value timestamp`.
    pub fn to_text(&self) -> String {
        format!("{} {} {}", self.series_text(), self.value, self.ts_ms)
    }
}

/// The subtask (out of `n`) that writes `sample`'s series: every sample of a series goes to the
/// same sink subtask, so one request in flight per subtask keeps each series in order. Use it
/// with `DataStream::partition_custom`, or [`crate::PrometheusStreamExt::write_to_prometheus`]
/// which does.
pub fn series_partition(sample: &MetricSample, n: usize) -> usize {
    subtask_of(sample.series_id(), n)
}

pub(crate) fn subtask_of(series: u128, n: usize) -> usize {
    // Fold the high half in so every bit of the hash counts.
    (((series >> 64) as u64 ^ series as u64) % n.max(1) as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_sorted_and_series_identity() {
        let a = MetricSample::new("m", 1, 1.0)
            .with_label("b", "2")
            .with_label("a", "1");
        let b = MetricSample::new("m", 2, 5.0)
            .with_label("a", "1")
            .with_label("b", "2");
        assert_eq!(a.labels, b.labels);
        assert_eq!(a.series_id(), b.series_id());
        assert_ne!(
            a.series_id(),
            MetricSample::new("m", 1, 1.0)
                .with_label("a", "12")
                .series_id()
        );
        // Label boundaries matter: {a="1b"} is not {a="1", b=""}.
        assert_ne!(
            MetricSample::new("m", 0, 0.0)
                .with_label("a", "1b")
                .series_id(),
            MetricSample::new("m", 0, 0.0)
                .with_label("a", "1")
                .with_label("b", "")
                .series_id()
        );
        assert_eq!(a.label("b"), Some("2"));
        let names: Vec<String> = MetricSample::new("m", 0, 0.0)
            .with_label("Zone", "z")
            .with_label("job", "j")
            .proto_labels()
            .into_iter()
            .map(|l| l.name)
            .collect();
        assert_eq!(names, ["Zone", "__name__", "job"]);
        assert_eq!(series_partition(&a, 4), series_partition(&b, 4));
    }
}
