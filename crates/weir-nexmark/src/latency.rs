//! End-to-end latency: events emitted on a wall-clock schedule whose event times *are* their
//! creation times, and a sink that records, per result row, the wall time at the sink minus the
//! creation time of the event that made the row final.
//!
//! [`PacedSource`] emits event `n` no earlier than the wall-clock instant `base + n / rate`,
//! which is its `dateTime` ([`NexmarkConfig::timestamp`]) when the configuration's base time
//! is the wall-clock start: an event's time is when it was created (if the job falls behind,
//! the events wait in the source, and that wait counts, as it would in a queue in front of the
//! job).
//!
//! **Which event makes a row final** ([`Finality`]):
//! - per-event rows (q0, q1, q2, q13, q14): the row's own event; the row carries its time.
//! - event-time window results (q5, q8, q11; timestamped at the window's last millisecond
//!   `end − 1`): the first event that lets the watermark pass `end − 1`. The watermark trails the
//!   highest event time by `delay + 1` ms, so that is the first event at or after `end + delay`.
//!   The `delay` (4 s by default) is the out-of-orderness the job is configured to wait for: it
//!   is not latency, the time from that event to the row is.
//! - q7 (bids joined to their window's top price, at `max(end − 1, bid time)`): as a window
//!   result of the window that ends at `end` (a bid exactly at `end` belongs to that window's
//!   result too, and is timestamped `end`).
//!
//! Rows made final by the end of the input (the last watermark closes every window still open,
//! before any event at `end + delay` exists) are not measured: [`Histogram::flushed`] counts
//! them. Latencies go into a [`Histogram`] (HDR-like: < 0.8 % error).
use crate::generator::NexmarkConfig;
use crate::model::Event;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use weir::prelude::*;
use weir::{Data, Poll, Record, Source, SourceOutput, SourceReader};

/// Wall-clock time in µs since the epoch.
pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// The events of `cfg` at `cfg.rate_per_s` per second of wall-clock time, event `n` not before
/// wall time `cfg.timestamp(n)` (set the base time a little in the future: readers wait for it).
pub struct PacedSource {
    cfg: Arc<NexmarkConfig>,
    gen: Datagen<Event>,
}

impl PacedSource {
    /// Paced events of `cfg` (bounded: `cfg.events` must be set).
    pub fn new(cfg: NexmarkConfig) -> Self {
        let cfg = Arc::new(cfg);
        let c = cfg.clone();
        let gen = Datagen::new(cfg.events.unwrap_or(0), move |n, _| c.event(n))
            .with_timestamps(Event::date_time)
            .rate(cfg.rate_per_s as f64);
        PacedSource { cfg, gen }
    }
    /// The events as a stream with per-split watermarks `delay_ms` behind.
    pub fn stream(self, env: &StreamEnv, delay_ms: u64) -> DataStream<Event> {
        env.source(self).name("nexmark_paced").assign_timestamps(
            WatermarkStrategy::bounded_out_of_orderness(Duration::from_millis(delay_ms)),
        )
    }
}

impl Source<Event> for PacedSource {
    fn create_reader(
        &self,
        subtask: usize,
        parallelism: usize,
    ) -> weir::Result<Box<dyn SourceReader<Event>>> {
        Ok(Box::new(PacedReader {
            gen: self.gen.clone(),
            subtask,
            parallelism,
            start_ms: self.cfg.base_time_ms,
            inner: None,
            restore: Vec::new(),
        }))
    }
    fn is_bounded(&self) -> bool {
        true
    }
}

/// Waits until the base time, then runs the rate-limited generator, whose schedule (`started +
/// k / rate` for its k-th event) then matches the events' times.
struct PacedReader {
    gen: Datagen<Event>,
    subtask: usize,
    parallelism: usize,
    start_ms: i64,
    inner: Option<Box<dyn SourceReader<Event>>>,
    restore: Vec<Vec<u8>>,
}

impl SourceReader<Event> for PacedReader {
    fn poll(&mut self, out: &mut SourceOutput<Event>) -> weir::Result<Poll> {
        if self.inner.is_none() {
            let wait_ms = self.start_ms - now_us() / 1000;
            if wait_ms > 0 {
                return Ok(Poll::Pending((wait_ms as u64).min(100)));
            }
            let mut r = self.gen.create_reader(self.subtask, self.parallelism)?;
            if !self.restore.is_empty() {
                r.restore(&self.restore)?;
            }
            self.inner = Some(r);
        }
        self.inner.as_mut().expect("created").poll(out)
    }
    fn snapshot(&mut self) -> weir::Result<Vec<Vec<u8>>> {
        match &mut self.inner {
            Some(r) => r.snapshot(),
            None => Ok(self.restore.clone()),
        }
    }
    fn restore(&mut self, entries: &[Vec<u8>]) -> weir::Result<()> {
        self.restore = entries.to_vec();
        Ok(())
    }
}

/// Latencies in µs, in buckets of < 0.8 % relative width (HDR histogram's layout: exact below
/// 256, then 128 buckets per power of two).
#[derive(Clone, Debug)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
    /// Rows whose computed latency was negative (counted as 0).
    pub negative: u64,
    /// Rows made final by the end of the input, not by an event (not measured).
    pub flushed: u64,
}

const SUB: u32 = 7; // 2^7 = 128 buckets per power of two
const HALF: u64 = 1 << SUB;

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; (2 * HALF + (64 - SUB as u64 - 1) * HALF) as usize],
            total: 0,
            max: 0,
            negative: 0,
            flushed: 0,
        }
    }
}

impl Histogram {
    fn index(v: u64) -> usize {
        if v < 2 * HALF {
            return v as usize;
        }
        let msb = 63 - v.leading_zeros(); // ≥ SUB + 1
        let sub = (v >> (msb - SUB)) - HALF; // 0..HALF
        (2 * HALF + (msb - SUB - 1) as u64 * HALF + sub) as usize
    }
    /// The highest value that falls in bucket `i` (what a quantile reports).
    fn upper(i: usize) -> u64 {
        let i = i as u64;
        if i < 2 * HALF {
            return i;
        }
        let k = i - 2 * HALF;
        let msb = k / HALF + SUB as u64 + 1;
        let sub = k % HALF;
        let shift = msb - SUB as u64;
        ((HALF + sub) << shift) + (1 << shift) - 1
    }
    /// Adds a latency in µs (negative: counted as 0 and in `negative`).
    pub fn record(&mut self, us: i64) {
        let v = if us < 0 {
            self.negative += 1;
            0
        } else {
            us as u64
        };
        self.counts[Self::index(v)] += 1;
        self.total += 1;
        self.max = self.max.max(v);
    }
    /// Adds another histogram's counts.
    pub fn merge(&mut self, o: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&o.counts) {
            *a += b;
        }
        self.total += o.total;
        self.max = self.max.max(o.max);
        self.negative += o.negative;
        self.flushed += o.flushed;
    }
    /// How many values.
    pub fn count(&self) -> u64 {
        self.total
    }
    /// The largest value.
    pub fn max(&self) -> u64 {
        self.max
    }
    /// The value at quantile `q` (0..=1), in µs: the smallest bucket bound with at least
    /// `⌈q · count⌉` values at or below it (0 when empty).
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Self::upper(i).min(self.max);
            }
        }
        self.max
    }
    /// `(upper bound µs, cumulative fraction)` of every non-empty bucket: the CDF.
    pub fn cdf(&self) -> Vec<(u64, f64)> {
        let mut seen = 0;
        let mut out = Vec::new();
        for (i, c) in self.counts.iter().enumerate() {
            if *c > 0 {
                seen += c;
                out.push((
                    Self::upper(i).min(self.max),
                    seen as f64 / self.total as f64,
                ));
            }
        }
        out
    }
}

/// Which event makes a row final, from the row's timestamp (see the module's documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finality {
    /// The row's own event: final at its timestamp.
    PerEvent,
    /// An event-time window result at `end − 1`: final at `end + delay_ms`.
    WindowEnd {
        /// How far the watermark trails the highest event time (less 1 ms).
        delay_ms: i64,
    },
    /// q7's rows, at `max(end − 1, bid time)` for the window `[end − size, end)`: final at
    /// `end + delay_ms`.
    TopBids {
        /// The tumbling window's size.
        size_ms: i64,
        /// How far the watermark trails the highest event time (less 1 ms).
        delay_ms: i64,
    },
}

impl Finality {
    /// The creation time (ms) of the event that makes a row timestamped `ts` final.
    pub fn final_at(self, ts: i64) -> i64 {
        match self {
            Finality::PerEvent => ts,
            Finality::WindowEnd { delay_ms } => ts + 1 + delay_ms,
            Finality::TopBids { size_ms, delay_ms } => {
                // A bid exactly at a window's end is stamped `end`; every other row `end − 1`.
                let end = if ts.rem_euclid(size_ms) == 0 {
                    ts
                } else {
                    ts + 1
                };
                end + delay_ms
            }
        }
    }
}

/// A sink recording each row's latency: wall time now − the creation time of the event that
/// made the row final, in µs, into a histogram shared by its subtasks. Rows that only the end
/// of the input made final (their closing event would come after the last event) are counted
/// in [`Histogram::flushed`] instead.
pub struct LatencySink {
    finality: Finality,
    last_event_ms: i64,
    hist: Arc<Mutex<Histogram>>,
}

impl LatencySink {
    /// A sink for rows made final as `finality` says, on input whose last event is created at
    /// `last_event_ms`.
    pub fn new(finality: Finality, last_event_ms: i64) -> Self {
        LatencySink {
            finality,
            last_event_ms,
            hist: Arc::default(),
        }
    }
    /// The latencies of every subtask that finished.
    pub fn histogram(&self) -> Histogram {
        self.hist.lock().expect("not poisoned").clone()
    }
}

impl Clone for LatencySink {
    fn clone(&self) -> Self {
        LatencySink {
            finality: self.finality,
            last_event_ms: self.last_event_ms,
            hist: self.hist.clone(),
        }
    }
}

impl<T: Data> Sink<T> for LatencySink {
    fn name(&self) -> String {
        "latency".into()
    }
    fn create_writer(&self, _: usize, _: usize) -> weir::Result<Box<dyn SinkWriter<T>>> {
        Ok(Box::new(LatencyWriter {
            finality: self.finality,
            last_event_ms: self.last_event_ms,
            local: Histogram::default(),
            shared: self.hist.clone(),
            trace: std::env::var_os("WEIR_LATENCY_TRACE").is_some(),
        }))
    }
}

struct LatencyWriter {
    finality: Finality,
    last_event_ms: i64,
    local: Histogram,
    shared: Arc<Mutex<Histogram>>,
    /// `WEIR_LATENCY_TRACE` set: every measured row to stderr (`latency-row final_ms=…
    /// sink_us=… latency_us=…`), to line outliers up with checkpoints and the logs.
    trace: bool,
}

impl<T: Data> SinkWriter<T> for LatencyWriter {
    fn write(&mut self, rec: Record<T>) -> weir::Result<()> {
        let at = self.finality.final_at(rec.ts);
        if at > self.last_event_ms {
            self.local.flushed += 1;
        } else {
            let now = now_us();
            self.local.record(now - at * 1000);
            if self.trace {
                eprintln!(
                    "latency-row final_ms={at} sink_us={now} latency_us={}",
                    now - at * 1000
                );
            }
        }
        Ok(())
    }
    fn finish(&mut self) -> weir::Result<()> {
        let local = std::mem::take(&mut self.local);
        self.shared.lock().expect("not poisoned").merge(&local);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_round_trip_within_their_width() {
        for v in (0..300u64).chain([1000, 4095, 4096, 123_456, 9_999_999, 1 << 40]) {
            let i = Histogram::index(v);
            let up = Histogram::upper(i);
            assert!(up >= v, "{v} -> bucket {i} up {up}");
            assert!(up - v <= v / 128 + 1, "{v}: {up}");
            if i > 0 {
                assert!(Histogram::upper(i - 1) < v, "{v}");
            }
        }
    }

    #[test]
    fn quantiles() {
        let mut h = Histogram::default();
        for v in 1..=1000 {
            h.record(v);
        }
        h.record(-5);
        assert_eq!(h.count(), 1001);
        assert_eq!(h.negative, 1);
        assert!(
            (495..=505).contains(&h.quantile(0.5)),
            "{}",
            h.quantile(0.5)
        );
        assert!((985..=1000).contains(&h.quantile(0.99)));
        assert_eq!(h.quantile(1.0), 1000);
        assert_eq!(h.cdf().last().map(|c| c.1), Some(1.0));
    }

    #[test]
    fn rows_are_final_at_the_event_that_closes_them() {
        assert_eq!(Finality::PerEvent.final_at(1234), 1234);
        let w = Finality::WindowEnd { delay_ms: 4000 };
        // window [0, 10 000) at 9 999: final once an event at 14 000 moves the watermark to 9 999
        assert_eq!(w.final_at(9_999), 14_000);
        let q7 = Finality::TopBids {
            size_ms: 10_000,
            delay_ms: 4000,
        };
        assert_eq!(q7.final_at(9_999), 14_000);
        assert_eq!(
            q7.final_at(10_000),
            14_000,
            "a bid at the end of the window"
        );
        assert_eq!(q7.final_at(19_999), 24_000);
    }
}
