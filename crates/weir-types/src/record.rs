//! Records and event-time progress.
use serde::{Deserialize, Serialize};

/// The timestamp of a record that has none (no timestamp assigner ran).
pub const NO_TIMESTAMP: i64 = i64::MIN;

/// A value travelling through a job, with its event time in milliseconds since the epoch
/// ([`NO_TIMESTAMP`] when it has none).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record<T> {
    /// Event time in ms, or [`NO_TIMESTAMP`].
    pub ts: i64,
    /// The payload.
    pub value: T,
}

impl<T> Record<T> {
    /// A record with an event timestamp.
    #[inline]
    pub fn new(ts: i64, value: T) -> Self {
        Record { ts, value }
    }
    /// A record without a timestamp.
    #[inline]
    pub fn untimed(value: T) -> Self {
        Record {
            ts: NO_TIMESTAMP,
            value,
        }
    }
    /// The timestamp, if there is one.
    #[inline]
    pub fn timestamp(&self) -> Option<i64> {
        (self.ts != NO_TIMESTAMP).then_some(self.ts)
    }
}

/// Event-time progress: no record with a timestamp at or below this will follow
/// (records that do are *late*). Flink's convention: a watermark `t` fires timers at `<= t`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Watermark(pub i64);

impl Watermark {
    /// Before any watermark: everything is on time.
    pub const MIN: Watermark = Watermark(i64::MIN);
    /// The final watermark, sent at the end of bounded input: it fires every event-time timer.
    pub const MAX: Watermark = Watermark(i64::MAX);
}

/// Whether an input currently holds the watermark back. An idle input (a source split or a
/// channel with no data for a while) is left out of the minimum over inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WatermarkStatus {
    /// Producing data; its watermark counts.
    Active,
    /// Idle; its watermark is ignored until it becomes active again.
    Idle,
}

/// Takes every record out of `batch`, in order, into `f`, and stops calling `f` at its first
/// error (the batch is emptied all the same): how a batch is handled record by record.
#[inline]
pub fn drain_each<T, E>(
    batch: &mut Vec<Record<T>>,
    mut f: impl FnMut(Record<T>) -> Result<(), E>,
) -> Result<(), E> {
    let mut r = Ok(());
    for rec in batch.drain(..) {
        if r.is_ok() {
            r = f(rec);
        }
    }
    r
}
