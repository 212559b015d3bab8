//! Async I/O on a stream: call external systems (databases, HTTP services) without blocking a
//! task thread, with many requests in flight (Flink's `AsyncDataStream`).
use crate::operators::async_io::AsyncOp;
use crate::stream::DataStream;
use std::future::Future;
use std::time::Duration;
use weir_runtime::BadRecordPolicy;
use weir_types::{BoxError, Data};

/// In which order an async operator emits its results.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AsyncMode {
    /// In input order: a result waits for the results of every earlier record (Flink's
    /// `orderedWait`).
    #[default]
    Ordered,
    /// As requests complete, but never across a watermark: records between two watermarks
    /// may be reordered among themselves only (Flink's `unorderedWait`). Lower latency when
    /// request times vary.
    Unordered,
}

/// Settings of an async operator ([`DataStream::async_map`]).
///
/// ```
/// use weir::{AsyncOptions, BadRecordPolicy};
/// let o = AsyncOptions::unordered()
///     .with_capacity(50)
///     .with_timeout_ms(2_000)
///     .with_max_attempts(3)
///     .with_backoff(100, 1_000)
///     .with_failure_policy(BadRecordPolicy::Drop);
/// assert_eq!(o.capacity, 50);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AsyncOptions {
    /// Ordered (default) or unordered emission.
    pub mode: AsyncMode,
    /// Most records per subtask that are submitted and not yet emitted (in flight, or done and
    /// waiting for their turn). When all are taken the operator blocks its task until one
    /// frees, which back-pressures upstream. Default 100.
    pub capacity: usize,
    /// Time limit of one attempt in ms; an attempt that exceeds it is cancelled (its future
    /// dropped) and counts as failed. Default 10 000.
    pub timeout_ms: u64,
    /// Attempts per record, the first included (1 = no retry). Failures (an `Err`) and timeouts
    /// are retried; a panic is not. Default 1.
    pub max_attempts: u32,
    /// Pause before the first retry in ms; it doubles with each further retry. Default 100.
    pub backoff_initial_ms: u64,
    /// Longest pause between attempts in ms. Default 10 000.
    pub backoff_max_ms: u64,
    /// What happens to a record whose every attempt failed or timed out: fail the job
    /// (default), drop it (counted in `records_dropped`), or send it to the dead-letter side
    /// output ([`DataStream::dead_letters`]) as JSON with the last error.
    pub on_failure: BadRecordPolicy,
}

impl Default for AsyncOptions {
    fn default() -> Self {
        AsyncOptions {
            mode: AsyncMode::Ordered,
            capacity: 100,
            timeout_ms: 10_000,
            max_attempts: 1,
            backoff_initial_ms: 100,
            backoff_max_ms: 10_000,
            on_failure: BadRecordPolicy::Fail,
        }
    }
}

impl AsyncOptions {
    /// Defaults, ordered mode.
    pub fn ordered() -> Self {
        Self::default()
    }
    /// Defaults, unordered mode.
    pub fn unordered() -> Self {
        Self::default().with_mode(AsyncMode::Unordered)
    }
    /// Sets the emission order.
    pub fn with_mode(mut self, mode: AsyncMode) -> Self {
        self.mode = mode;
        self
    }
    /// Sets the most records in flight (or waiting to be emitted) per subtask.
    pub fn with_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }
    /// Sets the time limit of one attempt.
    pub fn with_timeout_ms(mut self, ms: u64) -> Self {
        self.timeout_ms = ms;
        self
    }
    /// Sets the number of attempts per record (1 = no retry).
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts;
        self
    }
    /// Sets the exponential backoff between attempts: `initial_ms`, doubling, at most `max_ms`
    /// (each pause is jittered down by up to half).
    pub fn with_backoff(mut self, initial_ms: u64, max_ms: u64) -> Self {
        self.backoff_initial_ms = initial_ms;
        self.backoff_max_ms = max_ms;
        self
    }
    /// Sets what happens to a record whose every attempt failed.
    pub fn with_failure_policy(mut self, policy: BadRecordPolicy) -> Self {
        self.on_failure = policy;
        self
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.capacity == 0 {
            return Err("async capacity must be at least 1".into());
        }
        if self.max_attempts == 0 {
            return Err("async max_attempts must be at least 1".into());
        }
        if self.timeout_ms == 0 {
            return Err("async timeout_ms must be at least 1".into());
        }
        Ok(())
    }

    /// An upper bound of how long one request (every attempt and pause) takes.
    pub(crate) fn longest_request(&self) -> Duration {
        let attempts = u64::from(self.max_attempts);
        Duration::from_millis(
            attempts
                .saturating_mul(self.timeout_ms)
                .saturating_add((attempts - 1).saturating_mul(self.backoff_max_ms)),
        )
    }
}

impl<T: Data> DataStream<T> {
    /// Calls an async function for each record, with up to `options.capacity` calls in flight
    /// per subtask, and emits its results (with the input record's timestamp) in input order
    /// or as they complete ([`AsyncMode`]).
    ///
    /// The futures run on Weir's I/O runtime ([`crate::io_runtime`]), never on the task
    /// thread, so they may await Tokio I/O and timers; they must not block their thread. Each
    /// attempt is limited to `options.timeout_ms`; failed and timed-out attempts are retried
    /// up to `options.max_attempts` with exponential backoff; a record whose every attempt
    /// failed follows `options.on_failure`. A panic in `f` or its future fails the job with
    /// the panic message and the operator's name.
    ///
    /// Watermarks keep their place in the stream: one is emitted only after every record
    /// received before it, and no record received after it is emitted before it (in both
    /// modes), so async I/O never makes records late. At the end of input the operator waits
    /// for every request.
    ///
    /// ```
    /// use weir::prelude::*;
    /// use std::time::Duration;
    ///
    /// let env = StreamEnv::new().with_parallelism(2);
    /// let out = CollectSink::new();
    /// env.from_collection(vec![1u64, 2, 3])
    ///     .async_map(
    ///         AsyncOptions::ordered().with_capacity(10).with_timeout_ms(1_000),
    ///         |id: u64| async move {
    ///             // Stands for a lookup in an external service.
    ///             tokio::time::sleep(Duration::from_millis(5)).await;
    ///             Ok(format!("user-{id}"))
    ///         },
    ///     )
    ///     .name("lookup_user")
    ///     .sink(out.clone());
    /// env.execute("enrich").unwrap();
    /// let mut v = out.values();
    /// v.sort();
    /// assert_eq!(v, ["user-1", "user-2", "user-3"]);
    /// ```
    pub fn async_map<Out: Data, Fut>(
        &self,
        options: AsyncOptions,
        f: impl Fn(T) -> Fut + Clone + Send + Sync + 'static,
    ) -> DataStream<Out>
    where
        Fut: Future<Output = Result<Out, BoxError>> + Send + 'static,
    {
        self.add_async("async_map", options, move |t: T| {
            let fut = f(t);
            async move { fut.await.map(Some) }
        })
    }

    /// Like [`DataStream::async_map`], but each call returns zero or more results, emitted
    /// together (all with the input record's timestamp).
    pub fn async_flat_map<Out: Data, Fut>(
        &self,
        options: AsyncOptions,
        f: impl Fn(T) -> Fut + Clone + Send + Sync + 'static,
    ) -> DataStream<Out>
    where
        Fut: Future<Output = Result<Vec<Out>, BoxError>> + Send + 'static,
    {
        self.add_async("async_flat_map", options, f)
    }

    fn add_async<Out: Data, R, Fut>(
        &self,
        name: &str,
        options: AsyncOptions,
        f: impl Fn(T) -> Fut + Clone + Send + Sync + 'static,
    ) -> DataStream<Out>
    where
        R: IntoIterator<Item = Out> + Send + 'static,
        Fut: Future<Output = Result<R, BoxError>> + Send + 'static,
    {
        let s = self.add_operator(name, move |ctx| {
            AsyncOp::<T, Out, R, _>::new(f.clone(), options, ctx)
        });
        if options.on_failure == BadRecordPolicy::DeadLetter {
            self.env
                .inner
                .borrow_mut()
                .dead_letter_producers
                .push(s.node());
        }
        s
    }
}
