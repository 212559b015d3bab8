//! Helpers shared by the engine tests: a source the test drives record by record, an operator
//! that records the watermarks reaching it, and bounded waits so that a hang fails a test
//! instead of blocking CI.
#![allow(dead_code)]

use crossbeam_channel as cb;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use weir::prelude::*;
use weir::{JobResult, Poll, Source, SourceOutput, SourceReader};
use weir_runtime::{OneInputOperator, OperatorContext, Output, PositionKind};
use weir_types::{Record, Watermark, WatermarkStatus};

/// The longest any job or wait may take before the test is declared hung.
pub const HANG: Duration = Duration::from_secs(60);

/// A shared, append-only log written by functions running in the job.
pub type Log<E> = Arc<Mutex<Vec<E>>>;

/// A new empty log.
pub fn log<E>() -> Log<E> {
    Arc::new(Mutex::new(Vec::new()))
}

/// A copy of a log's entries.
pub fn entries<E: Clone>(l: &Log<E>) -> Vec<E> {
    l.lock().unwrap().clone()
}

/// Polls `cond` until it holds; panics with `what` after [`HANG`].
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > HANG {
            panic!("timed out waiting until {what}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Runs the job in the background and waits for its end, failing the test if it takes longer
/// than [`HANG`] (a hang, not a slow machine).
pub fn run(env: &StreamEnv, name: &str) -> weir::Result<JobResult> {
    let h = env.execute_async(name)?;
    join(h)
}

/// Joins a background job, failing the test if it does not end within [`HANG`].
pub fn join(h: weir::JobHandle) -> weir::Result<JobResult> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(h.join());
    });
    rx.recv_timeout(HANG)
        .expect("the job hung: it did not end within the bound")
}

/// What a test tells a [`FeedSource`] to do.
pub enum Feed<T> {
    /// Emit a record on split `0` with this source timestamp.
    Emit(T, i64),
    /// Emit a record on a given split.
    EmitOn(usize, T, i64),
    /// Split `i` has no more records.
    FinishSplit(usize),
    /// Panic inside `poll` with this message.
    Panic(String),
    /// Fail `poll` with an error.
    Fail(String),
    /// End of input.
    Finish,
}

/// A source the test drives: every command sent on the feed is applied in order; with nothing
/// to do it reports `Pending` (an input that goes quiet), until `Finish` or until the sender is
/// dropped. One subtask only.
pub struct FeedSource<T> {
    rx: cb::Receiver<Feed<T>>,
    splits: usize,
}

/// A feed and its source (with `splits` splits, registered on the first poll).
pub fn feed<T>(splits: usize) -> (cb::Sender<Feed<T>>, FeedSource<T>) {
    let (tx, rx) = cb::unbounded();
    (tx, FeedSource { rx, splits })
}

struct FeedReader<T> {
    rx: cb::Receiver<Feed<T>>,
    splits: usize,
    ids: Vec<usize>,
    offset: u64,
}

impl<T: weir::Data> Source<T> for FeedSource<T> {
    fn create_reader(&self, _: usize, _: usize) -> weir::Result<Box<dyn SourceReader<T>>> {
        Ok(Box::new(FeedReader {
            rx: self.rx.clone(),
            splits: self.splits,
            ids: Vec::new(),
            offset: 0,
        }))
    }
    fn is_bounded(&self) -> bool {
        false
    }
    fn max_parallelism(&self) -> Option<usize> {
        Some(1)
    }
}

impl<T: weir::Data> SourceReader<T> for FeedReader<T> {
    fn poll(&mut self, out: &mut SourceOutput<T>) -> weir::Result<Poll> {
        if self.ids.is_empty() {
            for i in 0..self.splits {
                self.ids
                    .push(out.add_split(format!("feed-{i}"), PositionKind::Offset));
            }
        }
        for _ in 0..64 {
            match self.rx.try_recv() {
                Ok(Feed::Emit(v, ts)) => self.emit(out, 0, v, ts)?,
                Ok(Feed::EmitOn(s, v, ts)) => self.emit(out, s, v, ts)?,
                Ok(Feed::FinishSplit(s)) => out.finish_split(self.ids[s])?,
                Ok(Feed::Panic(m)) => panic!("{m}"),
                Ok(Feed::Fail(m)) => return Err(weir::WeirError::Internal(m)),
                Ok(Feed::Finish) | Err(cb::TryRecvError::Disconnected) => {
                    return Ok(Poll::Finished)
                }
                Err(cb::TryRecvError::Empty) => return Ok(Poll::Pending(1)),
            }
        }
        Ok(Poll::Ready)
    }
}

impl<T: weir::Data> FeedReader<T> {
    fn emit(&mut self, out: &mut SourceOutput<T>, s: usize, v: T, ts: i64) -> weir::Result<()> {
        out.set_position(self.ids[s], self.offset);
        self.offset += 1;
        out.collect(self.ids[s], v, ts)
    }
}

/// What reached a [`Probe`], in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen<T> {
    /// A record and its timestamp.
    Record(T, i64),
    /// A watermark.
    Watermark(i64),
    /// An idleness change.
    Status(WatermarkStatus),
    /// End of input.
    End,
}

/// A pass-through operator that logs everything reaching it: records, watermarks, status.
pub struct Probe<T> {
    log: Log<Seen<T>>,
}

impl<T: Clone + 'static> OneInputOperator<T, T> for Probe<T> {
    fn process(
        &mut self,
        rec: Record<T>,
        _: &mut OperatorContext,
        out: &mut dyn Output<T>,
    ) -> weir::Result<()> {
        self.log
            .lock()
            .unwrap()
            .push(Seen::Record(rec.value.clone(), rec.ts));
        out.collect(rec)
    }
    fn on_watermark(
        &mut self,
        wm: Watermark,
        _: &mut OperatorContext,
        out: &mut dyn Output<T>,
    ) -> weir::Result<()> {
        self.log.lock().unwrap().push(Seen::Watermark(wm.0));
        out.watermark(wm)
    }
    fn on_status(
        &mut self,
        s: WatermarkStatus,
        _: &mut OperatorContext,
        out: &mut dyn Output<T>,
    ) -> weir::Result<()> {
        self.log.lock().unwrap().push(Seen::Status(s));
        out.status(s)
    }
    fn end_input(&mut self, _: &mut OperatorContext, _: &mut dyn Output<T>) -> weir::Result<()> {
        self.log.lock().unwrap().push(Seen::End);
        Ok(())
    }
}

/// Adds a [`Probe`] after `s`; returns the stream and the probe's log.
pub fn probe<T: weir::Data>(s: &DataStream<T>) -> (DataStream<T>, Log<Seen<T>>) {
    let l = log();
    let l2 = l.clone();
    let out = s.add_operator("probe", move |_| Ok(Probe { log: l2.clone() }));
    (out, l)
}

/// The watermarks a probe saw, in order.
pub fn watermarks<T: Clone>(l: &Log<Seen<T>>) -> Vec<i64> {
    entries(l)
        .into_iter()
        .filter_map(|e| match e {
            Seen::Watermark(w) => Some(w),
            _ => None,
        })
        .collect()
}

/// The records a probe saw, in order.
pub fn records<T: Clone>(l: &Log<Seen<T>>) -> Vec<(T, i64)> {
    entries(l)
        .into_iter()
        .filter_map(|e| match e {
            Seen::Record(v, ts) => Some((v, ts)),
            _ => None,
        })
        .collect()
}

/// Asserts that watermarks never go back.
pub fn assert_monotonic(wms: &[i64]) {
    for w in wms.windows(2) {
        assert!(w[0] < w[1], "watermarks must strictly advance: {wms:?}");
    }
}

/// The sorted values of a collect sink.
pub fn sorted<T: Clone + Ord>(s: &CollectSink<T>) -> Vec<T> {
    let mut v = s.values();
    v.sort();
    v
}

/// Sorts a vector.
pub fn sort<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}
