//! Back-pressure: a slow sink behind a keyed exchange slows a fast unbounded generator down,
//! with the bytes queued in channels and the records in flight bounded by the configuration.
mod common;

use common::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use weir::prelude::*;
use weir::Record;

/// Takes about 1 ms per record.
#[derive(Clone, Default)]
struct SlowSink {
    written: Arc<AtomicU64>,
}

struct SlowWriter {
    written: Arc<AtomicU64>,
}

impl<T: 'static> Sink<T> for SlowSink {
    fn name(&self) -> String {
        "slow".into()
    }
    fn create_writer(&self, _: usize, _: usize) -> weir::Result<Box<dyn SinkWriter<T>>> {
        Ok(Box::new(SlowWriter {
            written: self.written.clone(),
        }))
    }
}

impl<T> SinkWriter<T> for SlowWriter {
    fn write(&mut self, _: Record<T>) -> weir::Result<()> {
        std::thread::sleep(Duration::from_millis(1));
        self.written.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

const PAYLOAD: usize = 100;
/// An upper bound of one record as a channel counts it: encoded, the timestamp (8), id varint
/// (≤ 10), string length varint (≤ 2) and the payload; in memory, the record's size plus the
/// same encoded value (an estimate of the memory it owns).
const RECORD_MAX: usize = std::mem::size_of::<Record<(u64, String)>>() + 10 + 2 + PAYLOAD;

#[test]
fn slow_sink_bounds_queued_bytes_and_records_in_flight() {
    slow_sink_bounds(false);
}

#[test]
fn slow_sink_bounds_encoded_channels_too() {
    slow_sink_bounds(true);
}

fn slow_sink_bounds(encoded: bool) {
    let (bytes_max, records_max, buffers_max) = (4096usize, 64u32, 2usize);
    let p = 2;
    let env = StreamEnv::new()
        .with_parallelism(p)
        .with_buffers(bytes_max, records_max, buffers_max)
        .with_encoded_channels(encoded);
    let sink = SlowSink::default();
    env.source(Datagen::new(0, |id, _| (id, "x".repeat(PAYLOAD))).unbounded())
        .key_by(|r: &(u64, String)| r.0 % 16)
        .stream()
        .sink(sink.clone());
    let h = env.execute_async("back-pressure").unwrap();
    wait_until("the sink has written 300 records", || {
        sink.written.load(Ordering::SeqCst) >= 300
    });
    h.cancel();
    let r = join(h).unwrap();
    assert!(r.cancelled);

    // Bytes: a channel holds at most `buffers_max` buffers, each sent once it reaches
    // `bytes_max` (so at most one record over).
    let bound = (buffers_max * (bytes_max + RECORD_MAX)) as i64;
    let high = r.metrics.gauge_max("channel", "queued_bytes");
    assert!(
        high <= bound,
        "a channel held {high} bytes; the bound is {bound}"
    );
    assert!(
        high > bytes_max as i64,
        "the channels filled up (high-water mark {high})"
    );

    // Records: in flight between the source and the sink, per channel (p × p of them): the
    // buffers queued, the one its sender is blocked on, and the one being filled; per
    // receiving subtask: the buffer being written. A buffer holds at most `records_max`. Per
    // source subtask: the batch of one poll (the generator's is 1024 records), counted as
    // emitted when the batch enters the chain.
    let emitted = r.metrics.counter_sum("datagen", "records_in");
    let received = r.metrics.counter_sum("slow", "records_in");
    let in_flight_max = ((p * p * (buffers_max + 2) + p) * records_max as usize + p * 1024) as u64;
    assert!(received >= 300, "{received}");
    assert!(
        emitted - received <= in_flight_max,
        "emitted {emitted}, received {received}: {} in flight, bound {in_flight_max}",
        emitted - received
    );
}
