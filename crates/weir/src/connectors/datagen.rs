use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Instant;
use weir_runtime::{Poll, PositionKind, Source, SourceOutput, SourceReader};
use weir_types::{Data, Record, Result, WeirError, NO_TIMESTAMP};

/// A small, fast, well-mixed pseudo-random generator (SplitMix64). Its output for a seed never
/// changes between versions, so generated data is reproducible.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }
    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }
    /// Uniform in `[0, 1)`.
    #[inline]
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Appends `n` records, ids `first, first + step, …`, with `seed`: the user's functions,
/// compiled into one loop (no call through a pointer per record).
type FillFn<T> = Arc<dyn Fn(&mut Vec<Record<T>>, u64, u64, u64, u64) + Send + Sync>;

/// The seed of record `id`'s random generator.
#[inline]
fn record_seed(seed: u64, id: u64) -> u64 {
    seed ^ id.wrapping_mul(0xD6E8_FEB8_6659_FD93)
}

/// A deterministic generator: record `id` (0, 1, 2, …) is `make(id, rng)` where `rng` is seeded
/// from the job seed and `id`, so the same id always yields the same record whatever the
/// parallelism. Subtask `i` of `p` generates the ids `≡ i (mod p)` in ascending order.
///
/// Bounded (`count`) or unbounded, optionally rate-limited (events per second over all
/// subtasks), with source timestamps when `with_timestamps` is given.
pub struct Datagen<T> {
    fill: FillFn<T>,
    count: Option<u64>,
    rate_per_s: Option<f64>,
    seed: u64,
    keep_open: bool,
    splits: Option<u64>,
}

impl<T> Clone for Datagen<T> {
    fn clone(&self) -> Self {
        Datagen {
            fill: self.fill.clone(),
            count: self.count,
            rate_per_s: self.rate_per_s,
            seed: self.seed,
            keep_open: self.keep_open,
            splits: self.splits,
        }
    }
}

impl<T: Data> Datagen<T> {
    /// A generator of `count` records made by `make(id, rng)`.
    pub fn new(
        count: u64,
        make: impl Fn(u64, &mut SplitMix64) -> T + Send + Sync + 'static,
    ) -> Self {
        Self::with_fill(
            count,
            Arc::new(move |buf, seed, first, step, n| {
                buf.extend((0..n).map(|i| {
                    let id = first.wrapping_add(i.wrapping_mul(step));
                    let mut rng = SplitMix64::new(record_seed(seed, id));
                    Record {
                        ts: NO_TIMESTAMP,
                        value: make(id, &mut rng),
                    }
                }))
            }),
        )
    }
    /// A generator of `count` records made by `make(id, rng)`, timestamped by `ts(&record)`:
    /// [`Datagen::new`] then [`Datagen::with_timestamps`], in one pass over each batch.
    pub fn new_timestamped(
        count: u64,
        make: impl Fn(u64, &mut SplitMix64) -> T + Send + Sync + 'static,
        ts: impl Fn(&T) -> i64 + Send + Sync + 'static,
    ) -> Self {
        Self::with_fill(
            count,
            Arc::new(move |buf, seed, first, step, n| {
                buf.extend((0..n).map(|i| {
                    let id = first.wrapping_add(i.wrapping_mul(step));
                    let mut rng = SplitMix64::new(record_seed(seed, id));
                    let value = make(id, &mut rng);
                    Record {
                        ts: ts(&value),
                        value,
                    }
                }))
            }),
        )
    }
    fn with_fill(count: u64, fill: FillFn<T>) -> Self {
        Datagen {
            fill,
            count: Some(count),
            rate_per_s: None,
            seed: 0,
            keep_open: false,
            splits: None,
        }
    }
    /// Generates in `n` splits (split `j` emits ids `j, j+n, …`; subtasks take splits round
    /// robin). The default, one split per subtask, cannot restore at another parallelism.
    pub fn splits(mut self, n: u64) -> Self {
        self.splits = Some(n.max(1));
        self
    }
    /// After the last record, stays open without emitting (an idle, unbounded source): for
    /// tests of idleness and processing time.
    pub fn keep_open(mut self) -> Self {
        self.keep_open = true;
        self
    }
    /// Never ends.
    pub fn unbounded(mut self) -> Self {
        self.count = None;
        self
    }
    /// At most `events_per_s` per second over all subtasks.
    pub fn rate(mut self, events_per_s: f64) -> Self {
        self.rate_per_s = Some(events_per_s);
        self
    }
    /// The seed of every record's random generator.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
    /// Records carry this source timestamp (event time) without a timestamp assigner.
    pub fn with_timestamps(mut self, f: impl Fn(&T) -> i64 + Send + Sync + 'static) -> Self {
        let inner = self.fill;
        self.fill = Arc::new(move |buf, seed, first, step, n| {
            let from = buf.len();
            inner(buf, seed, first, step, n);
            for r in &mut buf[from..] {
                r.ts = f(&r.value);
            }
        });
        self
    }
}

/// A temperature reading, in Fahrenheit as the seed talk's sensors send it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SensorReading {
    /// Which sensor.
    pub sensor_id: u64,
    /// Event time, ms since the epoch.
    pub ts_ms: i64,
    /// Degrees (Fahrenheit from the generator).
    pub temperature: f64,
}

/// The event time the generators start at (2023-11-14T22:13:20Z), fixed for reproducibility.
pub const GEN_START_MS: i64 = 1_700_000_000_000;

impl Datagen<SensorReading> {
    /// `count` readings from `sensors` sensors, each sensor once per second of event time, up to
    /// `out_of_order_ms` late (deterministic jitter).
    pub fn sensors_with(sensors: u64, count: u64, out_of_order_ms: u64) -> Self {
        let sensors = sensors.max(1);
        Datagen::new(count, move |id, rng| {
            let sensor_id = id % sensors;
            let jitter = if out_of_order_ms > 0 {
                rng.below(out_of_order_ms + 1) as i64
            } else {
                0
            };
            let base = 50.0 + 25.0 * ((sensor_id as f64) * 0.7).sin();
            SensorReading {
                sensor_id,
                ts_ms: GEN_START_MS + (id / sensors) as i64 * 1000 - jitter,
                temperature: (base + rng.unit() * 4.0 - 2.0
                    + ((id / sensors) as f64 / 60.0).sin() * 5.0)
                    .round(),
            }
        })
        .with_timestamps(|r| r.ts_ms)
    }
    /// Readings from `sensors` sensors, up to 2 s out of order.
    pub fn sensors(sensors: u64, count: u64) -> Self {
        Self::sensors_with(sensors, count, 2_000)
    }
}

/// The benchmark row of the Flink harness (`../shared/bench/flink`): every field is a function
/// of `id`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BenchEvent {
    /// Sequence number.
    pub id: u64,
    /// `(id·2654435761 mod 2^32)·K / 2^32`.
    pub k: u64,
    /// `1 + (id·7919 mod 10000)`.
    pub price: u32,
    /// `id / 1000` ms (1M events per event-time second).
    pub ts_ms: i64,
}

impl BenchEvent {
    /// Row `id` with `keys` keys.
    #[inline]
    pub fn of(id: u64, keys: u64) -> Self {
        BenchEvent {
            id,
            k: {
                let x = id.wrapping_mul(2_654_435_761) & 0xFFFF_FFFF;
                if keys <= 0xFFFF_FFFF {
                    // Both factors fit in 32 bits: the product fits in 64 (same value).
                    (x * keys) >> 32
                } else {
                    ((x as u128 * keys as u128) >> 32) as u64
                }
            },
            price: (1 + id.wrapping_mul(7919) % 10_000) as u32,
            ts_ms: (id / 1000) as i64,
        }
    }
}

impl Datagen<BenchEvent> {
    /// The harness rows 0..count with `keys` keys, timestamped by `ts_ms`.
    pub fn bench(count: u64, keys: u64) -> Self {
        Datagen::new_timestamped(count, move |id, _| BenchEvent::of(id, keys), |e| e.ts_ms)
    }
}

/// One split of a generator: ids `j, j + S, j + 2S, …` (S splits in all).
struct GenSplit {
    j: u64,
    next: u64,
    out: Option<usize>,
    done: bool,
}

struct Reader<T> {
    gen: Datagen<T>,
    total_splits: u64,
    splits: Vec<GenSplit>,
    cur: usize,
    started: Instant,
    emitted: u64,
    rate_per_subtask: Option<f64>,
    /// The records of one poll, emitted as one batch.
    batch: Vec<Record<T>>,
}

impl<T: Data> Source<T> for Datagen<T> {
    fn create_reader(
        &self,
        subtask: usize,
        parallelism: usize,
    ) -> Result<Box<dyn SourceReader<T>>> {
        let total = self.splits.unwrap_or(parallelism as u64).max(1);
        let splits = (0..total)
            .filter(|j| (*j % parallelism as u64) as usize == subtask)
            .map(|j| GenSplit {
                j,
                next: j,
                out: None,
                done: false,
            })
            .collect();
        Ok(Box::new(Reader {
            gen: self.clone(),
            total_splits: total,
            splits,
            cur: 0,
            started: Instant::now(),
            emitted: 0,
            rate_per_subtask: self.rate_per_s.map(|r| r / parallelism as f64),
            batch: Vec::new(),
        }))
    }
    fn is_bounded(&self) -> bool {
        self.count.is_some() && !self.keep_open
    }
}

impl<T: Data> SourceReader<T> for Reader<T> {
    fn poll(&mut self, out: &mut SourceOutput<T>) -> Result<Poll> {
        let count = self.gen.count.unwrap_or(u64::MAX);
        for s in &mut self.splits {
            if s.out.is_none() {
                let idx = out.add_split(format!("datagen-{}", s.j), PositionKind::Offset);
                s.out = Some(idx);
                if s.next >= count {
                    s.done = true;
                    out.finish_split(idx)?;
                }
            }
        }
        let mut batch = 1024u64;
        if let Some(rate) = self.rate_per_subtask {
            let allowed = (self.started.elapsed().as_secs_f64() * rate) as u64 + 1;
            if self.emitted >= allowed {
                let wait_ms = ((self.emitted + 1 - allowed) as f64 * 1000.0 / rate).ceil() as u64;
                return Ok(Poll::Pending(wait_ms.clamp(1, 100)));
            }
            batch = batch.min(allowed - self.emitted);
        }
        let n = self.splits.len();
        let Some(cur) = (0..n)
            .map(|k| (self.cur + k) % n.max(1))
            .find(|&k| !self.splits[k].done)
        else {
            return Ok(if self.gen.keep_open {
                Poll::Pending(100)
            } else {
                Poll::Finished
            });
        };
        self.cur = (cur + 1) % n;
        let step = self.total_splits;
        let s = &mut self.splits[cur];
        let idx = s.out.expect("registered");
        // Errors downstream name the batch's first id (the records of a batch are processed
        // together).
        out.set_position(idx, s.next);
        let n = batch.min(count.saturating_sub(s.next).div_ceil(step));
        self.batch.reserve(n as usize);
        (self.gen.fill)(&mut self.batch, self.gen.seed, s.next, step, n);
        s.next += n * step;
        self.emitted += n;
        out.collect_batch(idx, &mut self.batch)?;
        if s.next >= count {
            s.done = true;
            out.finish_split(idx)?;
        }
        Ok(Poll::Ready)
    }

    fn snapshot(&mut self) -> Result<Vec<Vec<u8>>> {
        Ok(self
            .splits
            .iter()
            .map(|s| postcard::to_allocvec(&(self.total_splits, s.j, s.next)).expect("encodes"))
            .collect())
    }

    fn restore(&mut self, entries: &[Vec<u8>]) -> Result<()> {
        for e in entries {
            let (total, j, next): (u64, u64, u64) = postcard::from_bytes(e).map_err(|x| {
                WeirError::Config(format!(
                    "datagen position in the checkpoint does not decode: {x}"
                ))
            })?;
            if total != self.total_splits {
                return Err(WeirError::Config(format!(
                    "the generator was checkpointed with {total} splits and now has {}: set Datagen::splits to restore at another parallelism",
                    self.total_splits
                )));
            }
            if let Some(s) = self.splits.iter_mut().find(|s| s.j == j) {
                s.next = next;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_rows_follow_the_harness_formulas() {
        let e = BenchEvent::of(12_345, 1_000_000);
        assert_eq!(e.price, (1 + 12_345u64 * 7919 % 10_000) as u32);
        assert_eq!(
            e.k,
            ((12_345u64 * 2_654_435_761) % (1 << 32)) * 1_000_000 / (1 << 32)
        );
        assert_eq!(e.ts_ms, 12);
        assert!((0..100_000).all(|i| BenchEvent::of(i, 100).k < 100));
    }
}
