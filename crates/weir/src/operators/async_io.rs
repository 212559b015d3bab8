//! The async I/O operator behind [`DataStream::async_map`](crate::DataStream::async_map) and
//! [`DataStream::async_flat_map`](crate::DataStream::async_flat_map) (Flink's
//! `AsyncDataStream`).
//!
//! Each record becomes a request: a task on the shared I/O runtime ([`crate::io_runtime`]) that
//! runs the user's future with a timeout per attempt, retries with exponential backoff, and
//! sends its outcome back through a channel, then wakes the task thread. The operator never
//! polls futures on the task thread; it only submits requests and emits outcomes.
//!
//! ## Queue
//!
//! Submitted records wait in *segments* separated by barriers (watermarks and status changes):
//!
//! ```text
//!   front                                                          back (open)
//!   [ r0 r1 r2 | wm 9 ]  [ r3 r4 | wm 19, idle ]  [ r5 r6 r7 ]
//! ```
//!
//! Only the front segment emits. Ordered mode emits its records in sequence order; unordered
//! mode emits them as they complete. When every record of the front segment is emitted, its
//! barriers follow and the next segment becomes the front. So a watermark is never emitted
//! before a record that arrived before it, and a record is never emitted before a watermark
//! that arrived before it. Consecutive watermarks with no record between them coalesce into the
//! latest, so the queue holds at most `capacity` records and `capacity + 1` segments.
//!
//! A record occupies one of `capacity` slots from submission until it is emitted (or dropped);
//! when all are taken, `process` blocks the task thread until one frees, which back-pressures
//! upstream.
use crate::io_runtime::io_handle;
use crate::stream_async::{AsyncMode, AsyncOptions};
use crossbeam_channel as cb;
use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};
use tokio::task::AbortHandle;
use weir_runtime::operator::panic_message;
use weir_runtime::task::TaskWaker;
use weir_runtime::{BadRecordPolicy, Control, OneInputOperator, OperatorContext, Output};
use weir_types::metrics::{Counter, Gauge};
use weir_types::{BoxError, Data, Record, Result, Watermark, WatermarkStatus, WeirError};

/// How long one blocking wait for a completion lasts before it looks around again.
const WAIT_SLICE: Duration = Duration::from_millis(100);

/// How a request ended.
enum Outcome<In, R> {
    /// It succeeded.
    Done(R),
    /// Every attempt failed or timed out. `input` is kept only for dead-lettering.
    Failed { error: String, input: Option<In> },
    /// The user function (or its future) panicked.
    Panicked(String),
}

/// A finished request, sent back to the task thread.
struct Completion<In, R> {
    seq: u64,
    ts: i64,
    /// The source position of the record (`TaskShared::position`), for error messages.
    pos: Option<(usize, u64)>,
    outcome: Outcome<In, R>,
}

/// Something emitted in stream order between records.
#[derive(Clone, Copy, Debug)]
enum Barrier {
    Watermark(Watermark),
    Status(WatermarkStatus),
}

/// Records submitted between two barriers, and the barriers that follow them.
struct Segment<In, R> {
    /// Sequence number of its first record.
    start: u64,
    /// One past its last record (for the open segment: the next sequence number).
    end: u64,
    /// Records already emitted (ordered: the next to emit is `start + emitted`).
    emitted: u64,
    /// Completed records not yet emitted, by sequence number (ordered mode) or by arrival
    /// (unordered mode: emitted in completion order).
    ready: BTreeMap<u64, Completion<In, R>>,
    /// Emitted after all its records; empty only for the open (last) segment.
    after: Vec<Barrier>,
}

impl<In, R> Segment<In, R> {
    fn open_at(seq: u64) -> Self {
        Segment {
            start: seq,
            end: seq,
            emitted: 0,
            ready: BTreeMap::new(),
            after: Vec::new(),
        }
    }
    fn is_empty(&self) -> bool {
        self.start == self.end
    }
    fn all_emitted(&self) -> bool {
        self.emitted == self.end - self.start
    }
}

/// Adds a barrier after a segment; a watermark right after a watermark replaces it.
fn push_barrier(after: &mut Vec<Barrier>, b: Barrier) {
    if let (Barrier::Watermark(new), Some(Barrier::Watermark(old))) = (b, after.last_mut()) {
        *old = (*old).max(new);
        return;
    }
    after.push(b);
}

/// Metrics of one subtask, shared with its requests.
#[derive(Clone)]
struct AsyncMetrics {
    retries: Counter,
    timeouts: Counter,
    in_flight: Gauge,
}

/// The async I/O operator. `F` maps an input to a future of `R`, an iterator of outputs.
pub(crate) struct AsyncOp<In, Out, R, F> {
    f: Arc<F>,
    opts: AsyncOptions,
    tx: cb::Sender<Completion<In, R>>,
    rx: cb::Receiver<Completion<In, R>>,
    /// Set at open.
    waker: Option<TaskWaker>,
    handle: tokio::runtime::Handle,
    next_seq: u64,
    /// Completions received so far (the key of `ready` in unordered mode).
    arrivals: u64,
    /// Never empty: the last one is open.
    segments: VecDeque<Segment<In, R>>,
    /// Records submitted and not yet emitted or dropped (≤ capacity).
    unemitted: usize,
    /// Requests running on the I/O runtime, aborted if the operator is dropped.
    in_flight: HashMap<u64, AbortHandle>,
    metrics: Option<AsyncMetrics>,
    queued: Option<Gauge>,
    seed: u64,
    _p: PhantomData<fn(In) -> Out>,
}

impl<In, Out, R, F> AsyncOp<In, Out, R, F> {
    /// An operator for one subtask; fails on invalid options.
    pub(crate) fn new(f: F, opts: AsyncOptions, ctx: &OperatorContext) -> Result<Self> {
        opts.validate()
            .map_err(|m| WeirError::Config(format!("operator '{}': {m}", ctx.name)))?;
        let (tx, rx) = cb::unbounded();
        let mut h = RandomState::new().build_hasher();
        h.write_usize(ctx.subtask);
        Ok(AsyncOp {
            f: Arc::new(f),
            opts,
            tx,
            rx,
            waker: None,
            handle: io_handle(),
            next_seq: 0,
            arrivals: 0,
            segments: VecDeque::from([Segment::open_at(0)]),
            unemitted: 0,
            in_flight: HashMap::new(),
            metrics: None,
            queued: None,
            seed: h.finish(),
            _p: PhantomData,
        })
    }
}

impl<In, Out, R, F> Drop for AsyncOp<In, Out, R, F> {
    fn drop(&mut self) {
        // Cancelled or failed job: do not leave requests running (or retrying) in the
        // background.
        for (_, h) in self.in_flight.drain() {
            h.abort();
        }
    }
}

/// SplitMix64: jitter without a dependency.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The pause after failed attempt `attempt` (1-based): `initial · 2^(attempt−1)`, capped at
/// `max`, with "equal jitter" (uniform in the upper half of that), so retries of many requests
/// that failed together spread out.
pub(crate) fn backoff_ms(opts: &AsyncOptions, attempt: u32, random: u64) -> u64 {
    let exp = opts
        .backoff_initial_ms
        .saturating_mul(1u64 << (attempt.saturating_sub(1)).min(62));
    let d = exp.min(opts.backoff_max_ms);
    let half = d / 2;
    d - half + random % (half + 1)
}

/// Runs one request to its end: attempts with timeouts, backoff between them.
async fn run_request<In, R, F, Fut>(
    f: Arc<F>,
    input: In,
    opts: AsyncOptions,
    random: u64,
    keep_input: bool,
    metrics: AsyncMetrics,
) -> Outcome<In, R>
where
    In: Clone,
    F: Fn(In) -> Fut,
    Fut: Future<Output = std::result::Result<R, BoxError>>,
{
    let max = opts.max_attempts;
    let timeout = Duration::from_millis(opts.timeout_ms);
    let mut input = Some(input);
    let mut last_error = String::new();
    for attempt in 1..=max {
        // The last attempt may consume the input, unless a dead letter will need it.
        let arg = if attempt == max && !keep_input {
            input.take()
        } else {
            input.clone()
        }
        .expect("the input is kept until the last attempt");
        // A panic may come from the call itself or from polling the future.
        let fut = match catch_unwind(AssertUnwindSafe(|| f(arg))) {
            Ok(fut) => fut,
            Err(p) => return Outcome::Panicked(panic_message(&*p)),
        };
        let mut fut = pin!(fut);
        let guarded = std::future::poll_fn(|cx| {
            match catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
                Ok(Poll::Ready(r)) => Poll::Ready(Ok(r)),
                Ok(Poll::Pending) => Poll::Pending,
                Err(p) => Poll::Ready(Err(panic_message(&*p))),
            }
        });
        match tokio::time::timeout(timeout, guarded).await {
            Ok(Ok(Ok(r))) => return Outcome::Done(r),
            Ok(Ok(Err(e))) => last_error = e.to_string(),
            Ok(Err(panic)) => return Outcome::Panicked(panic),
            Err(_) => {
                metrics.timeouts.inc();
                last_error = format!("timed out after {} ms", opts.timeout_ms);
            }
        }
        if attempt < max {
            metrics.retries.inc();
            let pause = backoff_ms(&opts, attempt, mix(random ^ u64::from(attempt)));
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
    }
    let error = if max == 1 {
        format!("async request failed: {last_error}")
    } else {
        format!("async request failed after {max} attempts, the last one: {last_error}")
    };
    Outcome::Failed {
        error,
        input: input.filter(|_| keep_input),
    }
}

impl<In, Out, R, F, Fut> AsyncOp<In, Out, R, F>
where
    In: Data,
    Out: Data,
    R: IntoIterator<Item = Out> + Send + 'static,
    F: Fn(In) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = std::result::Result<R, BoxError>> + Send + 'static,
{
    /// Starts a request for `rec`; a slot must be free.
    fn submit(&mut self, rec: Record<In>, ctx: &OperatorContext) {
        debug_assert!(self.unemitted < self.opts.capacity);
        let seq = self.next_seq;
        self.next_seq += 1;
        let open = self.segments.back_mut().expect("an open segment");
        debug_assert_eq!(open.end, seq);
        open.end = self.next_seq;
        self.unemitted += 1;
        if let Some(g) = &self.queued {
            g.add(1);
        }
        let metrics = self.metrics.clone().expect("opened");
        metrics.in_flight.add(1);
        let waker = self.waker.clone().expect("opened");
        let tx = self.tx.clone();
        let ts = rec.ts;
        let pos = ctx.task.position.get();
        let keep = self.opts.on_failure == BadRecordPolicy::DeadLetter;
        let random = mix(self.seed ^ seq);
        let request = run_request(self.f.clone(), rec.value, self.opts, random, keep, metrics);
        let task = self.handle.spawn(async move {
            let outcome = request.await;
            let _ = tx.send(Completion {
                seq,
                ts,
                pos,
                outcome,
            });
            waker.wake();
        });
        self.in_flight.insert(seq, task.abort_handle());
    }

    /// Files a completion under its segment.
    fn accept(&mut self, c: Completion<In, R>) {
        if self.in_flight.remove(&c.seq).is_some() {
            if let Some(m) = &self.metrics {
                m.in_flight.add(-1);
            }
        }
        let i = self.segments.partition_point(|s| s.start <= c.seq);
        debug_assert!(i > 0 && c.seq < self.segments[i - 1].end);
        let key = match self.opts.mode {
            AsyncMode::Ordered => c.seq,
            AsyncMode::Unordered => {
                self.arrivals += 1;
                self.arrivals
            }
        };
        self.segments[i - 1].ready.insert(key, c);
    }

    /// Takes every completion already there; then emits what may be emitted.
    fn pump(&mut self, ctx: &mut OperatorContext, out: &mut dyn Output<Out>) -> Result<()> {
        while let Ok(c) = self.rx.try_recv() {
            self.accept(c);
        }
        self.emit_ready(ctx, out)
    }

    /// Emits from the front segment: its ready records (in order, for ordered mode), then, once
    /// all its records are out, its barriers; and so on with the next segment.
    fn emit_ready(&mut self, ctx: &mut OperatorContext, out: &mut dyn Output<Out>) -> Result<()> {
        let ordered = self.opts.mode == AsyncMode::Ordered;
        loop {
            let last = self.segments.len() == 1;
            let front = self.segments.front_mut().expect("an open segment");
            loop {
                let next = if ordered {
                    let seq = front.start + front.emitted;
                    front.ready.remove(&seq)
                } else {
                    front.ready.pop_first().map(|(_, c)| c)
                };
                let Some(c) = next else { break };
                front.emitted += 1;
                self.unemitted -= 1;
                if let Some(g) = &self.queued {
                    g.add(-1);
                }
                emit(c, self.opts.on_failure, ctx, out)?;
            }
            if last || !front.all_emitted() {
                return Ok(());
            }
            let done = self.segments.pop_front().expect("a front segment");
            for b in done.after {
                self.emit_barrier(b, ctx, out)?;
            }
        }
    }

    /// Blocks until at least one request completes, then emits what may be emitted.
    fn wait(&mut self, ctx: &mut OperatorContext, out: &mut dyn Output<Out>) -> Result<()> {
        // Send what is buffered downstream before blocking.
        out.control(&mut Control::Flush)?;
        let started = Instant::now();
        let limit = self.opts.longest_request() + Duration::from_secs(60);
        loop {
            match self.rx.recv_timeout(WAIT_SLICE) {
                Ok(c) => {
                    self.accept(c);
                    return self.pump(ctx, out);
                }
                Err(cb::RecvTimeoutError::Timeout) => {
                    if ctx.cancel.is_cancelled() {
                        return Err(WeirError::Cancelled);
                    }
                    // Every attempt has a timeout, so a request ends within
                    // `longest_request`; past that, the I/O runtime is stuck (a future blocking
                    // its threads): fail rather than hang.
                    if started.elapsed() > limit {
                        return Err(ctx.operator_error(format!(
                            "no async request completed for {} s although every attempt times out after {} ms; \
                             is an async function blocking the weir-io threads?",
                            started.elapsed().as_secs(),
                            self.opts.timeout_ms
                        )));
                    }
                }
                Err(cb::RecvTimeoutError::Disconnected) => {
                    return Err(WeirError::Internal(
                        "async I/O completion channel closed".into(),
                    ))
                }
            }
        }
    }

    fn emit_barrier(
        &self,
        b: Barrier,
        _ctx: &mut OperatorContext,
        out: &mut dyn Output<Out>,
    ) -> Result<()> {
        match b {
            Barrier::Watermark(w) => out.watermark(w),
            Barrier::Status(s) => out.status(s),
        }
    }

    /// A watermark or status change: emitted now if nothing is queued, else after the records
    /// that came before it.
    fn barrier(
        &mut self,
        b: Barrier,
        ctx: &mut OperatorContext,
        out: &mut dyn Output<Out>,
    ) -> Result<()> {
        self.pump(ctx, out)?;
        if self.unemitted == 0 {
            // Everything before it is out (and so is every earlier barrier).
            debug_assert_eq!(self.segments.len(), 1);
            self.segments[0] = Segment::open_at(self.next_seq);
            return self.emit_barrier(b, ctx, out);
        }
        let n = self.segments.len();
        if self.segments[n - 1].is_empty() {
            // No record since the previous barrier: it joins that one.
            push_barrier(&mut self.segments[n - 2].after, b);
        } else {
            push_barrier(&mut self.segments[n - 1].after, b);
            self.segments.push_back(Segment::open_at(self.next_seq));
        }
        Ok(())
    }
}

/// Emits one completed request, or applies the failure policy to it.
fn emit<In: Data, Out, R: IntoIterator<Item = Out>>(
    c: Completion<In, R>,
    policy: BadRecordPolicy,
    ctx: &mut OperatorContext,
    out: &mut dyn Output<Out>,
) -> Result<()> {
    match c.outcome {
        Outcome::Done(values) => {
            for value in values {
                out.collect(Record { ts: c.ts, value })?;
            }
            Ok(())
        }
        Outcome::Failed { error, input } => {
            // Errors and dead letters name the failed record's position, not the current one.
            let current = ctx.task.position.replace(c.pos);
            let r = ctx.reject(policy, error, || {
                input
                    .and_then(|v| serde_json::to_vec(&v).ok())
                    .unwrap_or_default()
            });
            ctx.task.position.set(current);
            r
        }
        Outcome::Panicked(message) => Err(WeirError::Panic {
            operator: ctx.name.clone(),
            subtask: ctx.subtask_label(),
            message,
        }),
    }
}

impl<In, Out, R, F, Fut> OneInputOperator<In, Out> for AsyncOp<In, Out, R, F>
where
    In: Data,
    Out: Data,
    R: IntoIterator<Item = Out> + Send + 'static,
    F: Fn(In) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = std::result::Result<R, BoxError>> + Send + 'static,
{
    fn open(&mut self, ctx: &mut OperatorContext) -> Result<()> {
        self.waker = Some(ctx.waker.clone());
        self.metrics = Some(AsyncMetrics {
            retries: ctx.counter("async_retries"),
            timeouts: ctx.counter("async_timeouts"),
            in_flight: ctx.metrics.gauge(&ctx.name, ctx.subtask, "async_in_flight"),
        });
        self.queued = Some(ctx.metrics.gauge(&ctx.name, ctx.subtask, "async_queued"));
        Ok(())
    }

    fn process(
        &mut self,
        rec: Record<In>,
        ctx: &mut OperatorContext,
        out: &mut dyn Output<Out>,
    ) -> Result<()> {
        self.pump(ctx, out)?;
        while self.unemitted >= self.opts.capacity {
            self.wait(ctx, out)?;
        }
        self.submit(rec, ctx);
        Ok(())
    }

    fn on_watermark(
        &mut self,
        wm: Watermark,
        ctx: &mut OperatorContext,
        out: &mut dyn Output<Out>,
    ) -> Result<()> {
        self.barrier(Barrier::Watermark(wm), ctx, out)
    }

    fn on_status(
        &mut self,
        s: WatermarkStatus,
        ctx: &mut OperatorContext,
        out: &mut dyn Output<Out>,
    ) -> Result<()> {
        self.barrier(Barrier::Status(s), ctx, out)
    }

    fn on_wake(&mut self, ctx: &mut OperatorContext, out: &mut dyn Output<Out>) -> Result<()> {
        self.pump(ctx, out)
    }

    fn snapshot(
        &mut self,
        _: &weir_runtime::checkpoint::CheckpointBarrier,
        ctx: &mut OperatorContext,
        out: &mut dyn Output<Out>,
    ) -> Result<weir_runtime::checkpoint::OperatorSnapshot> {
        // Exactly-once without storing requests: every request made before the barrier is
        // completed and emitted before the barrier passes.
        self.pump(ctx, out)?;
        while self.unemitted > 0 {
            self.wait(ctx, out)?;
        }
        Ok(Default::default())
    }

    fn end_input(&mut self, ctx: &mut OperatorContext, out: &mut dyn Output<Out>) -> Result<()> {
        self.pump(ctx, out)?;
        while self.unemitted > 0 {
            self.wait(ctx, out)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter_in_the_upper_half() {
        let o = AsyncOptions::default().with_backoff(100, 1_000);
        for r in [0, 1, 7, 49, 50, 99, u64::MAX] {
            let d: Vec<u64> = (1..=6).map(|a| backoff_ms(&o, a, mix(r))).collect();
            let full = [100, 200, 400, 800, 1_000, 1_000];
            for (d, full) in d.iter().zip(full) {
                assert!(*d >= full / 2 && *d <= full, "{d} vs {full}");
            }
        }
        // Huge attempt numbers do not overflow.
        assert!(backoff_ms(&o, 200, 3) <= 1_000);
    }

    #[test]
    fn watermarks_coalesce_but_statuses_do_not() {
        let mut a = Vec::new();
        push_barrier(&mut a, Barrier::Watermark(Watermark(1)));
        push_barrier(&mut a, Barrier::Watermark(Watermark(5)));
        push_barrier(&mut a, Barrier::Status(WatermarkStatus::Idle));
        push_barrier(&mut a, Barrier::Watermark(Watermark(7)));
        assert_eq!(a.len(), 3);
        assert!(matches!(a[0], Barrier::Watermark(Watermark(5))));
        assert!(matches!(a[2], Barrier::Watermark(Watermark(7))));
    }
}
