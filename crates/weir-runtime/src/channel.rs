//! Channels between tasks: bounded queues of record batches, and the writer that fills them.
//!
//! One channel joins one sending subtask to one receiving subtask. It holds at most
//! `channel_buffers_max` messages; a batch holds at most `buffer_records_max` records and is
//! sent once it reaches `buffer_bytes_max` bytes, so a channel holds at most about
//! `channel_buffers_max × buffer_bytes_max` bytes. A full channel blocks its sender: that is
//! back-pressure, and it reaches the sources through every full channel on the way.
//!
//! Between tasks of one process a batch carries the records themselves (a `Vec`, moved, never
//! encoded); its bytes are counted by [`record_bytes`] (size in memory, plus the encoded size
//! of values that own heap memory). With [`JobConfig::encode_channels`] — and on any channel
//! that leaves the process — batches are encoded ([`Buffer`]).
use crate::checkpoint::{CheckpointBarrier, FINAL_SNAPSHOT};
use crate::context::{CancelToken, JobConfig};
use crate::output::{Control, Output};
use crossbeam_channel as cb;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use weir_types::codec::{record_bytes, Batch, Buffer};
use weir_types::keygroup::{key_group_of_hash, subtask_for_key_group};
use weir_types::metrics::Gauge;
use weir_types::{Data, Record, Result, Watermark, WatermarkStatus, WeirError};

/// What travels on a channel, in order.
#[derive(Debug)]
pub enum Message {
    /// A batch of records.
    Data(Batch),
    /// The sender's watermark advanced.
    Watermark(Watermark),
    /// The sender became idle or active.
    Status(WatermarkStatus),
    /// A checkpoint barrier: everything before it belongs to the checkpoint.
    Barrier(CheckpointBarrier),
    /// The sender is done; nothing follows.
    End,
}

impl Message {
    fn bytes(&self) -> i64 {
        match self {
            Message::Data(b) => b.bytes() as i64,
            _ => 0,
        }
    }
}

/// The sending end of one channel.
///
/// `queued_bytes` counts the bytes of the messages in the queue, exactly: a message is counted
/// once it is in the queue (not while its sender waits for room), and the sender counts it only
/// after the receiver has uncounted every message it took before, so the gauge never holds more
/// than the channel's capacity in messages.
pub struct Sender {
    tx: cb::Sender<Message>,
    /// The priority lane: unaligned barriers, ahead of the queued messages.
    prio: cb::Sender<CheckpointBarrier>,
    queued_bytes: Gauge,
    cancel: CancelToken,
    capacity: u64,
    /// Messages sent (by the one thread that sends; clones only keep the channel open).
    sent: AtomicU64,
    /// Messages the receiver took and uncounted.
    taken: Arc<AtomicU64>,
}

/// The receiving end of one channel.
pub struct Receiver {
    /// The queue.
    pub rx: cb::Receiver<Message>,
    /// The priority lane: unaligned barriers, which overtake the queue. Each is followed, in
    /// the queue, by the same barrier as a marker that ends the records it overtook.
    pub prio_rx: cb::Receiver<CheckpointBarrier>,
    queued_bytes: Gauge,
    taken: Arc<AtomicU64>,
}

/// A new channel holding at most `capacity` messages. `queued_bytes` tracks the bytes in it
/// (and their high-water mark).
pub fn channel(capacity: usize, queued_bytes: Gauge, cancel: CancelToken) -> (Sender, Receiver) {
    let (tx, rx) = cb::bounded(capacity);
    // At most one barrier per checkpoint, one checkpoint at a time: small in practice.
    let (prio, prio_rx) = cb::unbounded();
    let taken = Arc::new(AtomicU64::new(0));
    (
        Sender {
            tx,
            prio,
            queued_bytes: queued_bytes.clone(),
            cancel,
            capacity: capacity as u64,
            sent: AtomicU64::new(0),
            taken: taken.clone(),
        },
        Receiver {
            rx,
            prio_rx,
            queued_bytes,
            taken,
        },
    )
}

impl Clone for Sender {
    fn clone(&self) -> Self {
        Sender {
            tx: self.tx.clone(),
            prio: self.prio.clone(),
            queued_bytes: self.queued_bytes.clone(),
            cancel: self.cancel.clone(),
            capacity: self.capacity,
            sent: AtomicU64::new(self.sent.load(Ordering::Relaxed)),
            taken: self.taken.clone(),
        }
    }
}

impl Sender {
    /// Sends, blocking while the channel is full; gives up if the job is cancelled or the
    /// receiver is gone.
    pub fn send(&self, msg: Message) -> Result<()> {
        let n = msg.bytes();
        let mut msg = msg;
        loop {
            match self.tx.send_timeout(msg, Duration::from_millis(50)) {
                Ok(()) => break,
                Err(cb::SendTimeoutError::Timeout(m)) => {
                    if self.cancel.is_cancelled() {
                        return Err(WeirError::Cancelled);
                    }
                    msg = m;
                }
                Err(cb::SendTimeoutError::Disconnected(_)) => return Err(WeirError::Cancelled),
            }
        }
        let sent = self.sent.fetch_add(1, Ordering::Relaxed) + 1;
        if n > 0 {
            // The send succeeded, so the receiver has taken all but the last `capacity`
            // messages; it uncounts each right after taking it. Wait for that (a few
            // instructions of the receiver), or the gauge would count the taken message and
            // this one at once.
            while sent.saturating_sub(self.taken.load(Ordering::Acquire)) > self.capacity
                && !self.cancel.is_cancelled()
            {
                std::thread::yield_now();
            }
            self.queued_bytes.add(n);
        }
        Ok(())
    }
}

impl Sender {
    /// Sends an unaligned barrier on the priority lane (it overtakes the queue).
    pub fn send_priority(&self, b: CheckpointBarrier) -> Result<()> {
        self.prio.send(b).map_err(|_| WeirError::Cancelled)
    }
}

impl Receiver {
    /// Accounts for a message taken off the queue. Call it right after taking each message.
    pub fn taken(&self, msg: &Message) {
        self.queued_bytes.add(-msg.bytes());
        self.taken.fetch_add(1, Ordering::Release);
    }
}

/// How records are spread over the receiving subtasks.
pub enum Partition<T> {
    /// Forward when both sides have the same parallelism, rebalance otherwise (resolved when
    /// the job starts, as parallelism can change until then).
    Auto,
    /// Subtask i → subtask i (equal parallelism).
    Forward,
    /// Round robin.
    Rebalance,
    /// By key: the function returns the key's stable hash ([`weir_types::keygroup::key_hash`]);
    /// key group → subtask.
    Hash(Arc<dyn Fn(&T) -> u64 + Send + Sync>),
    /// Every record to every subtask.
    Broadcast,
    /// Everything to subtask 0.
    Global,
    /// A user function choosing the subtask from the record and the number of subtasks.
    Custom(Arc<dyn Fn(&T, usize) -> usize + Send + Sync>),
}

impl<T> Clone for Partition<T> {
    fn clone(&self) -> Self {
        match self {
            Partition::Auto => Partition::Auto,
            Partition::Forward => Partition::Forward,
            Partition::Rebalance => Partition::Rebalance,
            Partition::Hash(f) => Partition::Hash(f.clone()),
            Partition::Broadcast => Partition::Broadcast,
            Partition::Global => Partition::Global,
            Partition::Custom(f) => Partition::Custom(f.clone()),
        }
    }
}

impl<T> Partition<T> {
    /// Which receiving subtasks sender `from` talks to, out of `to_parallelism`.
    pub fn targets(&self, from: usize, to_parallelism: usize) -> Vec<usize> {
        match self {
            Partition::Forward => vec![from],
            Partition::Global => vec![0],
            _ => (0..to_parallelism).collect(),
        }
    }
    /// Short name for plans and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Partition::Auto => "auto",
            Partition::Forward => "forward",
            Partition::Rebalance => "rebalance",
            Partition::Hash(_) => "hash",
            Partition::Broadcast => "broadcast",
            Partition::Global => "global",
            Partition::Custom(_) => "custom",
        }
    }
}

/// The batch being filled for one receiver.
struct Pending<T> {
    typed: Vec<Record<T>>,
    encoded: Buffer,
    bytes: usize,
}

/// Batches records per receiver and sends them: the [`Output`] at the end of a chain whose
/// consumer is in another task.
pub struct ChannelWriter<T> {
    senders: Vec<Sender>,
    pending: Vec<Pending<T>>,
    partition: Partition<T>,
    next: usize,
    max_parallelism: usize,
    bytes_max: usize,
    records_max: u32,
    encode: bool,
}

impl<T: Data> ChannelWriter<T> {
    /// A writer to `senders` (one per receiving subtask this sender talks to).
    pub fn new(
        senders: Vec<Sender>,
        partition: Partition<T>,
        from_subtask: usize,
        cfg: &JobConfig,
    ) -> Self {
        let n = senders.len();
        let encode = cfg.encode_channels;
        ChannelWriter {
            pending: (0..n)
                .map(|_| Pending {
                    typed: Vec::new(),
                    encoded: if encode {
                        Buffer::with_capacity(cfg.buffer_bytes_max + 256)
                    } else {
                        Buffer::default()
                    },
                    bytes: 0,
                })
                .collect(),
            senders,
            partition,
            next: from_subtask % n.max(1),
            max_parallelism: cfg.max_parallelism,
            bytes_max: cfg.buffer_bytes_max,
            records_max: cfg.buffer_records_max,
            encode,
        }
    }

    #[inline]
    fn push(&mut self, i: usize, rec: Record<T>) -> Result<()> {
        let p = &mut self.pending[i];
        let full = if self.encode {
            p.encoded.push(&rec);
            p.encoded.bytes.len() >= self.bytes_max || p.encoded.records >= self.records_max
        } else {
            if p.typed.capacity() == 0 {
                p.typed.reserve(self.records_max.min(1024) as usize);
            }
            p.bytes += record_bytes(&rec);
            p.typed.push(rec);
            p.bytes >= self.bytes_max || p.typed.len() >= self.records_max as usize
        };
        if full {
            self.send_buffer(i)?;
        }
        Ok(())
    }

    fn send_buffer(&mut self, i: usize) -> Result<()> {
        let p = &mut self.pending[i];
        let batch = if self.encode {
            Batch::Encoded(std::mem::replace(
                &mut p.encoded,
                Buffer::with_capacity(self.bytes_max + 256),
            ))
        } else {
            Batch::typed(std::mem::take(&mut p.typed), std::mem::take(&mut p.bytes))
        };
        self.senders[i].send(Message::Data(batch))
    }

    fn flush(&mut self) -> Result<()> {
        for i in 0..self.pending.len() {
            let p = &self.pending[i];
            if !p.typed.is_empty() || !p.encoded.is_empty() {
                self.send_buffer(i)?;
            }
        }
        Ok(())
    }

    fn send_all(&mut self, mk: impl Fn() -> Message) -> Result<()> {
        self.flush()?;
        self.senders.iter().try_for_each(|s| s.send(mk()))
    }
}

impl<T: Data> Output<T> for ChannelWriter<T> {
    #[inline]
    fn collect(&mut self, rec: Record<T>) -> Result<()> {
        let n = self.senders.len();
        let i = match &self.partition {
            Partition::Forward | Partition::Global => 0,
            Partition::Rebalance | Partition::Auto => {
                let i = self.next;
                self.next = if i + 1 == n { 0 } else { i + 1 };
                i
            }
            Partition::Hash(f) => subtask_for_key_group(
                key_group_of_hash(f(&rec.value), self.max_parallelism),
                n,
                self.max_parallelism,
            ),
            Partition::Custom(f) => {
                let i = f(&rec.value, n);
                if i >= n {
                    return Err(WeirError::Config(format!(
                        "custom partitioner chose subtask {i} of {n}"
                    )));
                }
                i
            }
            Partition::Broadcast => {
                for i in 1..n {
                    self.push(i, rec.clone())?;
                }
                return self.push(0, rec);
            }
        };
        self.push(i, rec)
    }
    /// A batch going to one subtask (forward, global, or any partitioning with one receiver)
    /// moves into its pending buffer a run at a time, without a partitioning call per record:
    /// at parallelism 1 a keyed exchange neither hashes keys nor branches per record.
    fn collect_batch(&mut self, batch: &mut Vec<Record<T>>) -> Result<()> {
        let single = match &self.partition {
            Partition::Forward | Partition::Global => true,
            Partition::Hash(_) | Partition::Rebalance | Partition::Auto => self.senders.len() == 1,
            Partition::Custom(_) | Partition::Broadcast => false,
        };
        if !single || self.encode {
            return weir_types::drain_each(batch, |rec| self.collect(rec));
        }
        let inline = std::mem::size_of::<Record<T>>().max(1);
        let fixed = !std::mem::needs_drop::<T>();
        let mut recs = batch.drain(..);
        while recs.len() > 0 {
            let p = &mut self.pending[0];
            if p.typed.capacity() == 0 {
                p.typed.reserve(self.records_max.min(1024) as usize);
            }
            let room = (self.records_max as usize)
                .saturating_sub(p.typed.len())
                .max(1);
            if fixed {
                // Every record weighs `inline` bytes: the run that fills the buffer, at once.
                let room_bytes = self
                    .bytes_max
                    .saturating_sub(p.bytes)
                    .div_ceil(inline)
                    .max(1);
                let run = room.min(room_bytes).min(recs.len());
                p.typed.extend(recs.by_ref().take(run));
                p.bytes += run * inline;
            } else {
                for rec in recs.by_ref().take(room) {
                    p.bytes += record_bytes(&rec);
                    p.typed.push(rec);
                    if p.bytes >= self.bytes_max {
                        break;
                    }
                }
            }
            if p.bytes >= self.bytes_max || p.typed.len() >= self.records_max as usize {
                self.send_buffer(0)?;
            }
        }
        Ok(())
    }
    fn watermark(&mut self, wm: Watermark) -> Result<()> {
        self.send_all(|| Message::Watermark(wm))
    }
    fn status(&mut self, s: WatermarkStatus) -> Result<()> {
        self.send_all(|| Message::Status(s))
    }
    fn end_input(&mut self) -> Result<()> {
        self.send_all(|| Message::End)
    }
    fn barrier(&mut self, b: &CheckpointBarrier) -> Result<()> {
        if b.id == FINAL_SNAPSHOT {
            return Ok(());
        }
        let b = *b;
        if b.unaligned {
            // Overtake what is queued; the marker behind the queue ends what was overtaken.
            for s in &self.senders {
                s.send_priority(b)?;
            }
        }
        self.send_all(|| Message::Barrier(b))
    }
    fn control(&mut self, c: &mut Control) -> Result<()> {
        if let Control::Flush = c {
            self.flush()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(bytes: usize) -> Message {
        Message::Data(Batch::Encoded(Buffer {
            bytes: vec![0; bytes],
            records: 1,
        }))
    }

    /// What a writer sent: per buffer, the records' values.
    fn sent<T: Data + Clone>(rx: &Receiver) -> Vec<Vec<T>> {
        let mut out = Vec::new();
        while let Ok(m) = rx.rx.try_recv() {
            rx.taken(&m);
            if let Message::Data(Batch::Typed { records, .. }) = m {
                let v = records.downcast::<Vec<Record<T>>>().expect("typed records");
                out.push(v.iter().map(|r| r.value.clone()).collect());
            }
        }
        out
    }

    #[test]
    fn a_batch_to_one_receiver_splits_where_single_records_would() {
        for (records_max, bytes_max, values) in
            [(7u32, 1 << 20, 40u64), (1000, 100, 33), (3, 64, 10)]
        {
            let cfg = JobConfig {
                buffer_records_max: records_max,
                buffer_bytes_max: bytes_max,
                encode_channels: false,
                ..JobConfig::default()
            };
            let key: Arc<dyn Fn(&u64) -> u64 + Send + Sync> = Arc::new(|v: &u64| *v);
            let one_by_one = {
                let (tx, rx) = channel(1000, Gauge::default(), CancelToken::new());
                let mut w = ChannelWriter::new(vec![tx], Partition::Hash(key.clone()), 0, &cfg);
                for v in 0..values {
                    w.collect(Record { ts: 0, value: v }).unwrap();
                }
                w.flush().unwrap();
                sent::<u64>(&rx)
            };
            let (tx, rx) = channel(1000, Gauge::default(), CancelToken::new());
            let mut w = ChannelWriter::new(vec![tx], Partition::Hash(key), 0, &cfg);
            // Uneven batches, so that runs start in a partly filled buffer.
            let mut next = 0;
            for len in [1, 5, 13, 2, 100].iter().cycle() {
                if next == values {
                    break;
                }
                let end = (next + len).min(values);
                let mut batch: Vec<Record<u64>> =
                    (next..end).map(|value| Record { ts: 0, value }).collect();
                w.collect_batch(&mut batch).unwrap();
                assert!(batch.is_empty());
                next = end;
            }
            w.flush().unwrap();
            let batched = sent::<u64>(&rx);
            assert_eq!(
                batched, one_by_one,
                "records_max {records_max}, bytes_max {bytes_max}"
            );
            assert!(batched.len() > 1, "the limits split the records");
            assert_eq!(batched.concat(), (0..values).collect::<Vec<_>>());
        }
    }

    #[test]
    fn sender_and_receiver_can_be_shared_between_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<Sender>();
        shareable::<Receiver>();
    }

    #[test]
    fn queued_bytes_count_what_is_in_the_queue() {
        let gauge = Gauge::default();
        let (tx, rx) = channel(2, gauge.clone(), CancelToken::new());
        tx.send(data(100)).unwrap();
        tx.send(Message::Watermark(Watermark(1))).unwrap();
        assert_eq!(gauge.get(), 100);
        let m = rx.rx.recv().unwrap();
        rx.taken(&m);
        assert_eq!(gauge.get(), 0);
        // A sender blocked on a full channel does not count its message until it is in.
        tx.send(data(10)).unwrap();
        let t = std::thread::spawn(move || {
            tx.send(data(1000)).unwrap();
            tx
        });
        // (If the thread has not reached its send yet, this holds trivially.)
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(gauge.get(), 10, "the blocked message is not counted");
        for _ in 0..3 {
            let m = rx.rx.recv().unwrap();
            rx.taken(&m);
        }
        let _tx = t.join().unwrap();
        assert_eq!(gauge.get(), 0);
        assert!(gauge.max() <= 1010, "at most two messages: {}", gauge.max());
    }
}
