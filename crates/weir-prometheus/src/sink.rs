//! The remote-write sink: configuration, the writer on the task thread, and the sender task on
//! the I/O runtime that batches, sends, retries and isolates rejected samples.
use crate::metrics::{JobMeters, Meters, SinkMetrics};
use crate::proto::{self, TimeSeries, WriteRequest};
use crate::sample::{subtask_of, MetricSample};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{mpsc, oneshot};
use weir::operators::{Sink, SinkSnapshot, SinkWriter};
use weir::{DataStream, Record, WeirError};

/// Samples handed from the task thread to the sender at once.
const CHUNK: usize = 512;

/// What happens to samples the receiver refuses for good.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnError {
    /// Fail the job with the receiver's message.
    Fail,
    /// Drop the samples and count them by reason ([`crate::SinkMetricsSnapshot::samples_dropped`]).
    Drop,
}

/// Signs each request, e.g. with AWS SigV4 for Amazon Managed Prometheus: called before every
/// attempt with the final headers and body.
pub trait RequestSigner: Send + Sync + 'static {
    /// Adds or changes headers. An error fails the job.
    fn sign(&self, url: &str, headers: &mut HeaderMap, body: &[u8]) -> Result<(), String>;
}

#[derive(Clone)]
enum Auth {
    None,
    Basic(String, String),
    Bearer(String),
}

/// Settings of the sink; see [`PrometheusSink`]'s builder methods.
#[derive(Clone)]
struct Config {
    url: String,
    max_samples_per_request: usize,
    max_bytes_per_request: usize,
    max_delay: Duration,
    max_buffered_samples: usize,
    request_timeout: Duration,
    connect_timeout: Duration,
    max_retries: u32,
    backoff_initial: Duration,
    backoff_max: Duration,
    retry_after_max: Duration,
    on_retries_exhausted: OnError,
    on_rejected: OnError,
    auth: Auth,
    headers: Vec<(String, String)>,
    ca_cert_pem: Option<Vec<u8>>,
    identity_pem: Option<Vec<u8>>,
    accept_invalid_certs: bool,
    signer: Option<Arc<dyn RequestSigner>>,
    replay_safe: bool,
    forget_series_after: Option<Duration>,
}

/// A Prometheus remote-write 1.0 sink: protobuf `WriteRequest`s, snappy-compressed, POSTed
/// with `Content-Encoding: snappy`, `Content-Type: application/x-protobuf` and
/// `X-Prometheus-Remote-Write-Version: 0.1.0`.
///
/// - **Batching**: a request holds at most `max_samples_per_request` samples and about
///   `max_bytes_per_request` bytes (uncompressed), and a sample waits at most `max_delay`.
///   Each subtask buffers at most `max_buffered_samples`; beyond that `write` blocks the task
///   (back-pressure).
/// - **Order**: each subtask has one request in flight; with the series partitioner
///   ([`crate::PrometheusStreamExt::write_to_prometheus`]) all samples of a series go through
///   one subtask, so they arrive in order.
/// - **Retries**: 5xx, 429 and connection errors are retried with exponential backoff and
///   jitter, waiting at least the `Retry-After` the server gave; after `max_retries` the job
///   fails or the samples are dropped and counted ([`PrometheusSink::on_retries_exhausted`]).
/// - **Refusals**: 401, 403 and 404 fail the job with the server's message. Other 4xx (out of
///   order, duplicate, too old, bad labels, too large) are narrowed down by bisection to the
///   samples at fault, so every acceptable sample of the request is still stored; those are
///   dropped and counted by reason, or fail the job ([`PrometheusSink::on_rejected`]).
/// - **Replay-safe**: per series, the newest timestamp handed to the receiver is kept and
///   checkpointed; a sample at or before it is skipped (Prometheus would refuse it). After a
///   restore, samples written between the checkpoint and the failure come again and Prometheus
///   refuses them as out of order; they are isolated as above and counted as replayed
///   duplicates, not errors. A deterministic job therefore stores the same samples whether or
///   not it failed and restored in between. Cost: isolating a refused sample takes about two
///   requests (some 2 000 refused samples/s against a local Prometheus). Prometheus accepts an
///   exact duplicate of a series' newest sample, so only series that got two or more samples
///   between the restored checkpoint and the failure have samples refused: a checkpoint
///   interval no longer than the series' period makes a restore cost no isolation at all.
/// - **Security**: basic auth, a bearer token, extra headers, TLS through rustls (extra CA,
///   client certificate), a pluggable [`RequestSigner`].
/// - **Metrics**: [`PrometheusSink::metrics`].
#[derive(Clone)]
pub struct PrometheusSink {
    cfg: Config,
    metrics: Arc<SinkMetrics>,
}

impl PrometheusSink {
    /// A sink writing to `url`, e.g. `http://127.0.0.1:9090/api/v1/write`.
    pub fn new(url: impl Into<String>) -> Self {
        PrometheusSink {
            cfg: Config {
                url: url.into(),
                max_samples_per_request: 2_000,
                max_bytes_per_request: 4 << 20,
                max_delay: Duration::from_secs(1),
                max_buffered_samples: 20_000,
                request_timeout: Duration::from_secs(30),
                connect_timeout: Duration::from_secs(10),
                max_retries: 10,
                backoff_initial: Duration::from_millis(100),
                backoff_max: Duration::from_secs(10),
                retry_after_max: Duration::from_secs(300),
                on_retries_exhausted: OnError::Fail,
                on_rejected: OnError::Drop,
                auth: Auth::None,
                headers: Vec::new(),
                ca_cert_pem: None,
                identity_pem: None,
                accept_invalid_certs: false,
                signer: None,
                replay_safe: true,
                forget_series_after: Some(Duration::from_secs(6 * 3600)),
            },
            metrics: Arc::default(),
        }
    }
    /// Most samples in one request (default 2 000).
    pub fn max_samples_per_request(mut self, n: usize) -> Self {
        self.cfg.max_samples_per_request = n.max(1);
        self
    }
    /// About the most bytes of one request before compression (default 4 MiB).
    pub fn max_bytes_per_request(mut self, n: usize) -> Self {
        self.cfg.max_bytes_per_request = n.max(64);
        self
    }
    /// Longest time a sample waits in the buffer before its request is sent (default 1 s).
    pub fn max_delay(mut self, d: Duration) -> Self {
        self.cfg.max_delay = d;
        self
    }
    /// Most samples buffered per subtask before `write` blocks (default 20 000).
    pub fn max_buffered_samples(mut self, n: usize) -> Self {
        self.cfg.max_buffered_samples = n.max(CHUNK);
        self
    }
    /// Time limit of one HTTP attempt (default 30 s).
    pub fn request_timeout(mut self, d: Duration) -> Self {
        self.cfg.request_timeout = d;
        self
    }
    /// Retries of a request after 5xx, 429 or connection errors (default 10), and the
    /// exponential backoff between them (default 100 ms doubling to 10 s, jittered).
    pub fn retries(mut self, max_retries: u32, initial: Duration, max: Duration) -> Self {
        self.cfg.max_retries = max_retries;
        self.cfg.backoff_initial = initial;
        self.cfg.backoff_max = max.max(initial);
        self
    }
    /// Longest `Retry-After` honoured (default 5 min); a longer one waits this long.
    pub fn retry_after_max(mut self, d: Duration) -> Self {
        self.cfg.retry_after_max = d;
        self
    }
    /// What to do once a request's retries are used up (default: fail the job).
    pub fn on_retries_exhausted(mut self, p: OnError) -> Self {
        self.cfg.on_retries_exhausted = p;
        self
    }
    /// What to do with samples refused with a 4xx other than 401/403/404 (default: drop and
    /// count). Replayed duplicates after a restore are always counted, never fatal.
    pub fn on_rejected(mut self, p: OnError) -> Self {
        self.cfg.on_rejected = p;
        self
    }
    /// HTTP basic authentication.
    pub fn basic_auth(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.cfg.auth = Auth::Basic(user.into(), password.into());
        self
    }
    /// `Authorization: Bearer TOKEN`.
    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        self.cfg.auth = Auth::Bearer(token.into());
        self
    }
    /// An extra header on every request (e.g. `X-Scope-OrgID` for Mimir or Cortex).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.cfg.headers.push((name.into(), value.into()));
        self
    }
    /// Trusts this CA (PEM) besides the built-in roots.
    pub fn ca_cert_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.cfg.ca_cert_pem = Some(pem.into());
        self
    }
    /// A client certificate and key (PEM, both in one buffer) for mutual TLS.
    pub fn client_identity_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.cfg.identity_pem = Some(pem.into());
        self
    }
    /// Accepts any server certificate. For tests only.
    pub fn danger_accept_invalid_certs(mut self, yes: bool) -> Self {
        self.cfg.accept_invalid_certs = yes;
        self
    }
    /// Signs every request.
    pub fn signer(mut self, s: impl RequestSigner) -> Self {
        self.cfg.signer = Some(Arc::new(s));
        self
    }
    /// Keeps (default) or drops the per-series newest-timestamp guard and its checkpoint state.
    pub fn replay_safe(mut self, yes: bool) -> Self {
        self.cfg.replay_safe = yes;
        self
    }
    /// Forgets a series in the replay guard once the newest sample of the subtask is this much
    /// newer than the series' (default 6 h, far beyond what Prometheus still accepts); `None`
    /// keeps every series.
    pub fn forget_series_after(mut self, d: Option<Duration>) -> Self {
        self.cfg.forget_series_after = d;
        self
    }
    /// The sink's counters (shared by its writers; read them any time, also after the job).
    pub fn metrics(&self) -> Arc<SinkMetrics> {
        self.metrics.clone()
    }

    fn client(&self) -> Result<reqwest::Client, WeirError> {
        let c = &self.cfg;
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(c.request_timeout)
            .connect_timeout(c.connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(1)
            .danger_accept_invalid_certs(c.accept_invalid_certs);
        if let Some(pem) = &c.ca_cert_pem {
            let cert = reqwest::Certificate::from_pem(pem)
                .map_err(|e| WeirError::Config(format!("prometheus sink: CA certificate: {e}")))?;
            b = b.add_root_certificate(cert);
        }
        if let Some(pem) = &c.identity_pem {
            let id = reqwest::Identity::from_pem(pem).map_err(|e| {
                WeirError::Config(format!("prometheus sink: client certificate: {e}"))
            })?;
            b = b.identity(id);
        }
        b.build()
            .map_err(|e| WeirError::Config(format!("prometheus sink: HTTP client: {e}")))
    }

    fn headers(&self) -> Result<HeaderMap, WeirError> {
        let mut h = HeaderMap::new();
        let bad = |e: String| WeirError::Config(format!("prometheus sink: header: {e}"));
        h.insert("content-encoding", HeaderValue::from_static("snappy"));
        h.insert(
            "content-type",
            HeaderValue::from_static("application/x-protobuf"),
        );
        h.insert(
            "x-prometheus-remote-write-version",
            HeaderValue::from_static("0.1.0"),
        );
        h.insert(
            "user-agent",
            HeaderValue::from_static("weir-prometheus/0.1"),
        );
        let auth = match &self.cfg.auth {
            Auth::None => None,
            Auth::Basic(u, p) => Some(format!("Basic {}", base64(format!("{u}:{p}").as_bytes()))),
            Auth::Bearer(t) => Some(format!("Bearer {t}")),
        };
        if let Some(a) = auth {
            let mut v = HeaderValue::from_str(&a).map_err(|e| bad(e.to_string()))?;
            v.set_sensitive(true);
            h.insert("authorization", v);
        }
        for (n, v) in &self.cfg.headers {
            let name =
                HeaderName::from_bytes(n.as_bytes()).map_err(|e| bad(format!("{n}: {e}")))?;
            let value = HeaderValue::from_str(v).map_err(|e| bad(format!("{n}: {e}")))?;
            h.insert(name, value);
        }
        Ok(h)
    }
}

fn base64(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for c in input.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Writes a stream of samples to Prometheus with the series partitioner in front of the sink.
pub trait PrometheusStreamExt {
    /// `partition_custom(series_partition)` then `sink(sink)`: every series through one
    /// subtask, in order.
    fn write_to_prometheus(&self, sink: PrometheusSink) -> DataStream<()>;
}

impl PrometheusStreamExt for DataStream<MetricSample> {
    fn write_to_prometheus(&self, sink: PrometheusSink) -> DataStream<()> {
        self.partition_custom(crate::series_partition)
            .sink(sink)
            .name("prometheus_remote_write")
    }
}

impl Sink<MetricSample> for PrometheusSink {
    fn name(&self) -> String {
        "prometheus_remote_write".into()
    }
    fn create_writer(
        &self,
        subtask: usize,
        parallelism: usize,
    ) -> weir::Result<Box<dyn SinkWriter<MetricSample>>> {
        Ok(Box::new(PromWriter {
            sink: self.clone(),
            client: Some(self.client()?),
            headers: Some(self.headers()?),
            subtask,
            parallelism,
            tx: None,
            task: None,
            failure: Arc::default(),
            chunk: Vec::with_capacity(CHUNK),
            newest: HashMap::new(),
            max_ts: i64::MIN,
            restored: false,
            meters: Meters {
                shared: self.metrics.clone(),
                job: None,
            },
        }))
    }
}

/// Checkpointed state of one writer.
#[derive(serde::Serialize, serde::Deserialize)]
struct WriterState {
    /// (series id, newest timestamp handed to the receiver).
    newest: Vec<(u128, i64)>,
}

enum Msg {
    Samples(Vec<(u128, MetricSample)>),
    /// Send everything buffered, then reply.
    Flush(oneshot::Sender<()>),
}

/// The writer of one subtask (task thread side).
struct PromWriter {
    sink: PrometheusSink,
    client: Option<reqwest::Client>,
    headers: Option<HeaderMap>,
    subtask: usize,
    parallelism: usize,
    tx: Option<mpsc::Sender<Msg>>,
    task: Option<tokio::task::AbortHandle>,
    /// Set by the sender when it gave up: the job must fail with this.
    failure: Arc<Mutex<Option<String>>>,
    chunk: Vec<(u128, MetricSample)>,
    /// Per series, the newest timestamp handed to the sender.
    newest: HashMap<u128, i64>,
    max_ts: i64,
    restored: bool,
    /// Counters: the sink's, and the job registry's once open.
    meters: Meters,
}

impl PromWriter {
    fn error(&self, what: &str) -> WeirError {
        let msg = self
            .failure
            .lock()
            .unwrap()
            .clone()
            .unwrap_or_else(|| format!("the remote-write sender stopped ({what})"));
        WeirError::Io {
            context: format!(
                "prometheus remote write to {} (subtask {}/{})",
                self.sink.cfg.url, self.subtask, self.parallelism
            ),
            source: std::io::Error::other(msg),
        }
    }

    fn check(&self) -> weir::Result<()> {
        if self.failure.lock().unwrap().is_some() {
            return Err(self.error("failed"));
        }
        Ok(())
    }

    fn sender(&mut self) -> &mpsc::Sender<Msg> {
        if self.tx.is_none() {
            let cap = (self.sink.cfg.max_buffered_samples / CHUNK).max(1);
            let (tx, rx) = mpsc::channel(cap);
            let s = Sender {
                url: self.sink.cfg.url.clone(),
                cfg: self.sink.cfg.clone(),
                client: self.client.take().expect("client"),
                headers: self.headers.take().expect("headers"),
                metrics: self.meters.clone(),
                restored: self.restored,
                rng: 0x9E37_79B9_7F4A_7C15 ^ (self.subtask as u64) ^ now_nanos(),
                failure: self.failure.clone(),
            };
            let failure = self.failure.clone();
            let h = weir::io_runtime::io_handle().spawn(async move {
                let mut rx = rx;
                if let Err(e) = s.run(&mut rx).await {
                    tracing::error!("prometheus remote write: {e}");
                    // Before `rx` is dropped, so a writer that finds the channel closed finds
                    // the reason too.
                    failure.lock().unwrap().get_or_insert(e);
                }
                drop(rx);
            });
            self.task = Some(h.abort_handle());
            self.tx = Some(tx);
        }
        self.tx.as_ref().unwrap()
    }

    fn send_chunk(&mut self) -> weir::Result<()> {
        if self.chunk.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.chunk, Vec::with_capacity(CHUNK));
        if self.sender().blocking_send(Msg::Samples(chunk)).is_err() {
            return Err(self.error("while sending"));
        }
        Ok(())
    }

    /// Sends everything buffered and waits until the receiver has it (or it is dropped).
    fn drain(&mut self) -> weir::Result<()> {
        self.check()?;
        self.send_chunk()?;
        let (tx, rx) = oneshot::channel();
        if self.sender().blocking_send(Msg::Flush(tx)).is_err() || rx.blocking_recv().is_err() {
            return Err(self.error("while flushing"));
        }
        self.check()
    }
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

impl SinkWriter<MetricSample> for PromWriter {
    fn open(&mut self, ctx: &weir::OperatorContext) -> weir::Result<()> {
        self.meters.job = Some(JobMeters::register(ctx));
        Ok(())
    }
    fn write(&mut self, rec: Record<MetricSample>) -> weir::Result<()> {
        let s = rec.value;
        let id = s.series_id();
        if self.sink.cfg.replay_safe {
            match self.newest.get_mut(&id) {
                Some(t) if *t >= s.ts_ms => {
                    self.meters.skipped_stale();
                    return Ok(());
                }
                Some(t) => *t = s.ts_ms,
                None => {
                    self.newest.insert(id, s.ts_ms);
                }
            }
            self.max_ts = self.max_ts.max(s.ts_ms);
        }
        self.chunk.push((id, s));
        if self.chunk.len() >= CHUNK {
            self.check()?;
            self.send_chunk()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> weir::Result<()> {
        self.check()?;
        self.send_chunk()
    }

    fn finish(&mut self) -> weir::Result<()> {
        self.drain()
    }

    fn snapshot(&mut self, _checkpoint_id: u64) -> weir::Result<SinkSnapshot> {
        self.drain()?;
        if !self.sink.cfg.replay_safe {
            return Ok(SinkSnapshot::default());
        }
        if let Some(d) = self.sink.cfg.forget_series_after {
            let horizon = self.max_ts.saturating_sub(d.as_millis() as i64);
            self.newest.retain(|_, t| *t >= horizon);
        }
        let state = WriterState {
            newest: self.newest.iter().map(|(k, v)| (*k, *v)).collect(),
        };
        let bytes = postcard::to_allocvec(&state)
            .map_err(|e| WeirError::Internal(format!("prometheus sink state: {e}")))?;
        Ok(SinkSnapshot {
            state: vec![bytes],
            pending_commit: Vec::new(),
        })
    }

    fn restore(&mut self, state: &[Vec<u8>]) -> weir::Result<()> {
        self.restored = true;
        for entry in state {
            let s: WriterState = postcard::from_bytes(entry)
                .map_err(|e| WeirError::Internal(format!("prometheus sink state: {e}")))?;
            for (id, ts) in s.newest {
                if subtask_of(id, self.parallelism) == self.subtask {
                    let t = self.newest.entry(id).or_insert(ts);
                    *t = (*t).max(ts);
                    self.max_ts = self.max_ts.max(ts);
                }
            }
        }
        Ok(())
    }
}

impl Drop for PromWriter {
    fn drop(&mut self) {
        // Cancelled or done: nothing may be written after the task ends.
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// How a request ended for good.
enum PostError {
    /// A 4xx other than 401/403/404: the samples (some of them) are refused.
    Rejected { status: u16, message: String },
    /// Retries used up.
    Exhausted(String),
    /// The job must fail.
    Fatal(String),
}

/// The sender task of one subtask: batches, one request at a time.
struct Sender {
    url: String,
    cfg: Config,
    client: reqwest::Client,
    headers: HeaderMap,
    metrics: Meters,
    restored: bool,
    rng: u64,
    failure: Arc<Mutex<Option<String>>>,
}

struct Batch {
    samples: Vec<(u128, MetricSample)>,
    series: HashSet<u128>,
    bytes: usize,
    deadline: Option<tokio::time::Instant>,
}

impl Sender {
    async fn run(mut self, rx: &mut mpsc::Receiver<Msg>) -> Result<(), String> {
        let mut batch = Batch {
            samples: Vec::new(),
            series: HashSet::new(),
            bytes: 0,
            deadline: None,
        };
        loop {
            let msg = match batch.deadline {
                Some(d) => match tokio::time::timeout_at(d, rx.recv()).await {
                    Ok(m) => m,
                    Err(_) => {
                        self.send_batch(&mut batch).await?;
                        continue;
                    }
                },
                None => rx.recv().await,
            };
            match msg {
                None => return self.send_batch(&mut batch).await,
                Some(Msg::Flush(reply)) => {
                    if let Err(e) = self.send_batch(&mut batch).await {
                        // Before `reply` is dropped: the waiting writer reads the reason.
                        *self.failure.lock().unwrap() = Some(e.clone());
                        return Err(e);
                    }
                    let _ = reply.send(());
                }
                Some(Msg::Samples(v)) => {
                    for (id, s) in v {
                        let extra = if batch.series.contains(&id) {
                            22
                        } else {
                            22 + s.series_bytes()
                        };
                        if !batch.samples.is_empty()
                            && batch.bytes + extra > self.cfg.max_bytes_per_request
                        {
                            self.send_batch(&mut batch).await?;
                        }
                        if batch.series.insert(id) {
                            batch.bytes += 22 + s.series_bytes();
                        } else {
                            batch.bytes += 22;
                        }
                        batch.samples.push((id, s));
                        if batch.deadline.is_none() {
                            batch.deadline = Some(tokio::time::Instant::now() + self.cfg.max_delay);
                        }
                        if batch.samples.len() >= self.cfg.max_samples_per_request {
                            self.send_batch(&mut batch).await?;
                        }
                    }
                }
            }
        }
    }

    async fn send_batch(&mut self, batch: &mut Batch) -> Result<(), String> {
        batch.deadline = None;
        batch.bytes = 0;
        batch.series.clear();
        if batch.samples.is_empty() {
            return Ok(());
        }
        let samples = std::mem::take(&mut batch.samples);
        self.deliver(&samples).await
    }

    /// Sends `samples`; a refused request is split in halves until the refused samples are
    /// alone, so every acceptable sample is stored (in order: left half first).
    async fn deliver(&mut self, samples: &[(u128, MetricSample)]) -> Result<(), String> {
        let mut todo = vec![(0, samples.len())];
        while let Some((lo, hi)) = todo.pop() {
            let part = &samples[lo..hi];
            let body = proto::encode(&build_request(part));
            match self.post(body).await {
                Ok(()) => {
                    self.metrics.sent(part.len() as u64);
                }
                Err(PostError::Fatal(m)) => return Err(m),
                Err(PostError::Exhausted(m)) => match self.cfg.on_retries_exhausted {
                    OnError::Fail => {
                        return Err(format!(
                            "giving up after {} retries: {m}",
                            self.cfg.max_retries
                        ))
                    }
                    OnError::Drop => {
                        tracing::warn!(
                            "prometheus remote write: dropping {} samples after {} retries: {m}",
                            part.len(),
                            self.cfg.max_retries
                        );
                        self.metrics.dropped("retries_exhausted", part.len() as u64)
                    }
                },
                Err(PostError::Rejected { status, message }) => {
                    self.metrics.rejected();
                    if part.len() > 1 {
                        let mid = lo + part.len() / 2;
                        todo.push((mid, hi));
                        todo.push((lo, mid));
                        continue;
                    }
                    let reason = reason(status, &message);
                    let s = &part[0].1;
                    if self.restored
                        && (reason == "out_of_order" || reason == "duplicate_timestamp")
                    {
                        self.metrics.replayed();
                        continue;
                    }
                    match self.cfg.on_rejected {
                        OnError::Fail => {
                            return Err(format!(
                                "sample {} refused: HTTP {status}: {}",
                                s.to_text(),
                                message.trim()
                            ))
                        }
                        OnError::Drop => {
                            tracing::debug!(
                                "prometheus remote write: dropping {} ({reason}): {}",
                                s.to_text(),
                                message.trim()
                            );
                            self.metrics.dropped(reason, 1)
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn jitter(&mut self) -> f64 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// One request, with retries.
    async fn post(&mut self, body: Vec<u8>) -> Result<(), PostError> {
        let mut attempt = 0u32;
        loop {
            let mut headers = self.headers.clone();
            if let Some(s) = &self.cfg.signer {
                s.sign(&self.url, &mut headers, &body)
                    .map_err(|e| PostError::Fatal(format!("signing the request: {e}")))?;
            }
            let start = Instant::now();
            let res = self
                .client
                .post(&self.url)
                .headers(headers)
                .body(body.clone())
                .send()
                .await;
            let (message, retry_after) = match res {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let retry_after = resp
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(parse_retry_after);
                    let text = resp.text().await.unwrap_or_default();
                    self.metrics.latency(start.elapsed());
                    match status {
                        200..=299 => return Ok(()),
                        401 | 403 | 404 => {
                            return Err(PostError::Fatal(format!(
                                "HTTP {status} from {}: {}",
                                self.url,
                                text.trim()
                            )))
                        }
                        429 | 500..=599 => (format!("HTTP {status}: {}", text.trim()), retry_after),
                        400..=499 => {
                            return Err(PostError::Rejected {
                                status,
                                message: text,
                            })
                        }
                        _ => {
                            return Err(PostError::Fatal(format!(
                                "unexpected HTTP {status} from {}: {}",
                                self.url,
                                text.trim()
                            )))
                        }
                    }
                }
                Err(e) => {
                    self.metrics.latency(start.elapsed());
                    if e.is_builder() {
                        return Err(PostError::Fatal(format!("request to {}: {e}", self.url)));
                    }
                    (format!("{e} ({})", error_chain(&e)), None)
                }
            };
            if attempt >= self.cfg.max_retries {
                return Err(PostError::Exhausted(message));
            }
            let backoff = self
                .cfg
                .backoff_initial
                .saturating_mul(1u32 << attempt.min(20))
                .min(self.cfg.backoff_max);
            // Half fixed, half random ("equal jitter").
            let mut pause = backoff.mul_f64(0.5 + 0.5 * self.jitter());
            if let Some(ra) = retry_after {
                pause = pause.max(ra.min(self.cfg.retry_after_max));
            }
            attempt += 1;
            self.metrics.retried();
            tracing::debug!("prometheus remote write: {message}; retry {attempt} in {pause:?}");
            tokio::time::sleep(pause).await;
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = Vec::new();
    let mut cur = e.source();
    while let Some(s) = cur {
        parts.push(s.to_string());
        cur = s.source();
    }
    parts.join(": ")
}

/// `Retry-After`: seconds, or an HTTP date.
fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(s) = v.parse::<u64>() {
        return Some(Duration::from_secs(s));
    }
    if let Ok(s) = v.parse::<f64>() {
        if s.is_finite() && s >= 0.0 {
            return Some(Duration::from_secs_f64(s));
        }
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(when.duration_since(SystemTime::now()).unwrap_or_default())
}

/// Why a receiver refused samples, from its status and message (Prometheus' wording).
fn reason(status: u16, message: &str) -> &'static str {
    let m = message.to_ascii_lowercase();
    if m.contains("out of order") {
        "out_of_order"
    } else if m.contains("duplicate sample") {
        "duplicate_timestamp"
    } else if m.contains("out of bounds") || m.contains("too old") {
        "too_old"
    } else if m.contains("label") {
        "invalid_labels"
    } else if status == 413 {
        "too_large"
    } else if status == 400 {
        "bad_request"
    } else {
        "rejected"
    }
}

/// Groups samples by series, keeping each series' samples in order.
fn build_request(samples: &[(u128, MetricSample)]) -> WriteRequest {
    let mut index: HashMap<u128, usize> = HashMap::with_capacity(samples.len());
    let mut timeseries: Vec<TimeSeries> = Vec::new();
    for (id, s) in samples {
        let i = *index.entry(*id).or_insert_with(|| {
            timeseries.push(TimeSeries {
                labels: s.proto_labels(),
                samples: Vec::new(),
            });
            timeseries.len() - 1
        });
        timeseries[i].samples.push(proto::Sample {
            value: s.value,
            timestamp: s.ts_ms,
        });
    }
    WriteRequest { timeseries }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"user:pass"), "dXNlcjpwYXNz");
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after("0.5"), Some(Duration::from_millis(500)));
        let soon = SystemTime::now() + Duration::from_secs(30);
        let d = parse_retry_after(&httpdate::fmt_http_date(soon)).unwrap();
        assert!(
            d > Duration::from_secs(25) && d <= Duration::from_secs(30),
            "{d:?}"
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn reasons_from_prometheus_messages() {
        assert_eq!(reason(400, "out of order sample\n"), "out_of_order");
        assert_eq!(
            reason(400, "duplicate sample for timestamp"),
            "duplicate_timestamp"
        );
        assert_eq!(reason(400, "out of bounds"), "too_old");
        assert_eq!(
            reason(400, "label name \"a\" is not unique: invalid sample"),
            "invalid_labels"
        );
        assert_eq!(reason(413, "x"), "too_large");
        assert_eq!(reason(422, "x"), "rejected");
    }

    #[test]
    fn request_groups_series_in_order() {
        let a = MetricSample::new("a", 1, 1.0);
        let b = MetricSample::new("b", 1, 2.0);
        let a2 = MetricSample::new("a", 2, 3.0);
        let v: Vec<_> = [a, b, a2].into_iter().map(|s| (s.series_id(), s)).collect();
        let r = build_request(&v);
        assert_eq!(r.timeseries.len(), 2);
        assert_eq!(r.timeseries[0].samples.len(), 2);
        assert_eq!(r.timeseries[0].samples[1].timestamp, 2);
        assert_eq!(r.timeseries[1].labels[0].value, "b");
    }
}
