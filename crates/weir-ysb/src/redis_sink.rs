//! Writes window counts to Redis as the Yahoo streaming benchmark does: per campaign and
//! window, the hash `ysb:{campaign_id}:{window_start_ms}` with fields `seen_count` and
//! `time_updated` (wall-clock ms of the write).
//!
//! Each writer hands batches of rows over a bounded channel (back-pressure) to a sender task on
//! Weir's I/O runtime, which writes a batch as one pipeline of `HSET`s on a multiplexed
//! connection, in order. At a checkpoint and at the end of input the writer waits until
//! everything handed over is written (at-least-once; the writes are idempotent per key).
use crate::WindowCount;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};
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
                let t = now_ms();
                let mut p = redis::pipe();
                for r in &rows {
                    p.cmd("HSET")
                        .arg(key(r.campaign_id, r.window_start))
                        .arg("seen_count")
                        .arg(r.count)
                        .arg("time_updated")
                        .arg(t)
                        .ignore();
                }
                if let Err(e) = p.query_async::<()>(c).await {
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
