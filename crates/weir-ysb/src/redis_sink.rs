//! Writes window counts to Redis as the Yahoo streaming benchmark does: per campaign and
//! window, the hash `ysb:{campaign_id}:{window_start_ms}` with fields `seen_count` and
//! `time_updated` (wall-clock ms of the write).
//!
//! Each writer hands batches of rows over a bounded channel (back-pressure) to a sender task on
//! Weir's I/O runtime, which writes a batch as one pipeline of `HSET`s on a multiplexed
//! connection, in order. At a checkpoint and at the end of input the writer waits until
//! everything handed over is written (at-least-once; the writes are idempotent per key).
use crate::{window_start, AdEvent, WindowCount};
use hashbrown::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};
use weir::prelude::*;
use weir::{Record, WeirError};

/// Rows per pipeline, unless the task runs out of input first.
pub const BATCH_ROWS_MAX: usize = 10_000;
/// Batches in flight per writer.
const CHANNEL_BATCHES_MAX: usize = 4;

/// The Redis key of a campaign's window.
pub fn key(campaign_id: i64, window_start: i64) -> String {
    format!("ysb:{campaign_id}:{window_start}")
}

/// A sink writing [`WindowCount`]s to the Redis at `url` (`redis://host:port`).
#[derive(Clone)]
pub struct RedisSink {
    url: String,
}

impl RedisSink {
    /// A sink to the Redis at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        RedisSink { url: url.into() }
    }
}

enum Msg {
    Batch(Vec<WindowCount>),
    Sync(oneshot::Sender<()>),
}

impl Sink<WindowCount> for RedisSink {
    fn name(&self) -> String {
        "redis".into()
    }
    fn create_writer(
        &self,
        _subtask: usize,
        _parallelism: usize,
    ) -> weir::Result<Box<dyn SinkWriter<WindowCount>>> {
        let client = redis::Client::open(self.url.as_str())
            .map_err(|e| WeirError::Config(format!("Redis URL {}: {e}", self.url)))?;
        let (tx, rx) = mpsc::channel(CHANNEL_BATCHES_MAX);
        let error = Arc::new(Mutex::new(None));
        weir::io_runtime::io_handle().spawn(send(client, rx, error.clone()));
        Ok(Box::new(RedisWriter {
            url: self.url.clone(),
            buf: Vec::with_capacity(BATCH_ROWS_MAX),
            tx,
            error,
        }))
    }
}

fn redis_error(url: &str, e: &str) -> WeirError {
    WeirError::io(
        format!("Redis at {url}"),
        std::io::Error::other(e.to_string()),
    )
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// One `HSET` per row, written at wall-clock time `t` (ms).
fn hset_pipeline(rows: &[WindowCount], t: i64) -> redis::Pipeline {
    let mut p = redis::pipe();
    for r in rows {
        p.cmd("HSET")
            .arg(key(r.campaign_id, r.window_start))
            .arg("seen_count")
            .arg(r.count)
            .arg("time_updated")
            .arg(t)
            .ignore();
    }
    p
}

/// The Redis mode's work as a hand-written single-threaded loop (its limit): [`crate::limit`]'s
/// counting, and once a second of wall-clock time the counts of the windows that changed since
/// the last write, written to the Redis at `url` in pipelines of [`BATCH_ROWS_MAX`] `HSET`s
/// (the loop waits for each), as the job's sink does; at the end, the windows changed since.
/// Returns the final counts.
pub fn limit_to_redis(
    events: impl Iterator<Item = AdEvent>,
    table: &HashMap<i64, i64>,
    url: &str,
) -> Result<HashMap<(i64, i64), u64>, String> {
    let client = redis::Client::open(url).map_err(|e| format!("Redis URL {url}: {e}"))?;
    let mut con = client
        .get_connection()
        .map_err(|e| format!("Redis at {url}: connecting: {e}"))?;
    // (campaign, window start) -> (count, whether it changed since the last write)
    let mut counts: HashMap<(i64, i64), (u64, bool)> = HashMap::new();
    let mut changed: Vec<(i64, i64)> = Vec::new();
    let mut rows: Vec<WindowCount> = Vec::with_capacity(BATCH_ROWS_MAX);
    let mut write = |counts: &mut HashMap<(i64, i64), (u64, bool)>,
                     changed: &mut Vec<(i64, i64)>|
     -> Result<(), String> {
        let t = now_ms();
        for chunk in changed.chunks(BATCH_ROWS_MAX) {
            rows.clear();
            for &(campaign_id, window_start) in chunk {
                let c = counts
                    .get_mut(&(campaign_id, window_start))
                    .expect("counted");
                c.1 = false;
                rows.push(WindowCount {
                    campaign_id,
                    window_start,
                    count: c.0,
                });
            }
            hset_pipeline(&rows, t)
                .query::<()>(&mut con)
                .map_err(|e| format!("Redis at {url}: writing {} rows: {e}", rows.len()))?;
        }
        changed.clear();
        Ok(())
    };
    let second = Duration::from_secs(1);
    let mut next = Instant::now() + second;
    for (i, e) in events.enumerate() {
        if i % 1024 == 0 && Instant::now() >= next {
            write(&mut counts, &mut changed)?;
            next += second;
        }
        if e.event_type != "view" {
            continue;
        }
        if let Some(&c) = table.get(&e.ad_id) {
            let w = (c, window_start(e.event_time));
            let entry = counts.entry(w).or_default();
            entry.0 += 1;
            if !entry.1 {
                entry.1 = true;
                changed.push(w);
            }
        }
    }
    write(&mut counts, &mut changed)?;
    Ok(counts.into_iter().map(|(w, (n, _))| (w, n)).collect())
}

/// The sender task: one pipeline per batch, in order; the first error is kept for the writer.
async fn send(
    client: redis::Client,
    mut rx: mpsc::Receiver<Msg>,
    error: Arc<Mutex<Option<String>>>,
) {
    let fail = |e: String| {
        let mut slot = error.lock().expect("not poisoned");
        slot.get_or_insert(e);
    };
    let mut con = match client.get_multiplexed_async_connection().await {
        Ok(c) => Some(c),
        Err(e) => {
            fail(format!("connecting: {e}"));
            None
        }
    };
    while let Some(m) = rx.recv().await {
        match m {
            Msg::Batch(rows) => {
                let Some(c) = con.as_mut() else { continue };
                if let Err(e) = hset_pipeline(&rows, now_ms()).query_async::<()>(c).await {
                    fail(format!("writing {} rows: {e}", rows.len()));
                }
            }
            Msg::Sync(ack) => {
                let _ = ack.send(());
            }
        }
    }
}

struct RedisWriter {
    url: String,
    buf: Vec<WindowCount>,
    tx: mpsc::Sender<Msg>,
    error: Arc<Mutex<Option<String>>>,
}

impl RedisWriter {
    fn check(&self) -> weir::Result<()> {
        match self.error.lock().expect("not poisoned").as_ref() {
            Some(e) => Err(redis_error(&self.url, e)),
            None => Ok(()),
        }
    }
    fn hand_over(&mut self) -> weir::Result<()> {
        if !self.buf.is_empty() {
            let rows = std::mem::replace(&mut self.buf, Vec::with_capacity(BATCH_ROWS_MAX));
            self.tx
                .blocking_send(Msg::Batch(rows))
                .map_err(|_| redis_error(&self.url, "the sender task stopped"))?;
        }
        self.check()
    }
    /// Waits until everything handed over is written.
    fn sync(&mut self) -> weir::Result<()> {
        self.hand_over()?;
        let (ack, done) = oneshot::channel();
        self.tx
            .blocking_send(Msg::Sync(ack))
            .map_err(|_| redis_error(&self.url, "the sender task stopped"))?;
        let _ = done.blocking_recv();
        self.check()
    }
}

impl SinkWriter<WindowCount> for RedisWriter {
    fn write(&mut self, rec: Record<WindowCount>) -> weir::Result<()> {
        self.buf.push(rec.value);
        if self.buf.len() >= BATCH_ROWS_MAX {
            self.hand_over()?;
        }
        Ok(())
    }
    fn flush(&mut self) -> weir::Result<()> {
        self.hand_over()
    }
    fn finish(&mut self) -> weir::Result<()> {
        self.sync()
    }
    fn snapshot(&mut self, _checkpoint_id: u64) -> weir::Result<SinkSnapshot> {
        self.sync()?;
        Ok(SinkSnapshot::default())
    }
}
