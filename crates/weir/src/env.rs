//! The stream environment: job settings, the graph being built, and execution.
use crate::options::{parse_duration_ms, EnvOptions};
use crate::stream::DataStream;
use clap::Parser;
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;
use weir_runtime::checkpoint::format::SnapshotCompression;
use weir_runtime::checkpoint::storage::{storage_from_location, CheckpointStorage};
use weir_runtime::checkpoint::{CheckpointConfig, CheckpointMode};
use weir_runtime::graph::{
    Graph, Node, NodeId, NodeKind, OperatorNode, TypedSource, DEAD_LETTER_TAG,
};
use weir_runtime::restart::{RestartStrategy, RestoreFrom};
use weir_runtime::{BadRecordPolicy, CancelToken, JobConfig, JobControl, JobResult, Source};
use weir_state::MemoryBackend;
use weir_types::metrics::MetricsRegistry;
use weir_types::{Clock, Data, Result, WeirError};

pub(crate) struct EnvInner {
    pub graph: Graph,
    pub cfg: JobConfig,
    pub parallelism: usize,
    pub options: EnvOptions,
    pub metrics: MetricsRegistry,
    pub dead_letter_producers: Vec<NodeId>,
    /// Mistakes found while building the graph, reported by `execute`.
    pub config_errors: Vec<String>,
}

/// A job being built: its settings and its graph. Cheap to clone (a handle).
///
/// ```
/// use weir::prelude::*;
/// let env = StreamEnv::new().with_parallelism(2);
/// let out = CollectSink::new();
/// env.from_collection(vec![1u64, 2, 3]).map(|x| x * 10).sink(out.clone());
/// env.execute("times ten").unwrap();
/// let mut v = out.values();
/// v.sort();
/// assert_eq!(v, vec![10, 20, 30]);
/// ```
#[derive(Clone)]
pub struct StreamEnv {
    pub(crate) inner: Rc<RefCell<EnvInner>>,
}

#[derive(Parser)]
#[command(about = "A Weir job")]
struct Cli {
    #[command(flatten)]
    options: EnvOptions,
}

static CTRL_C: Once = Once::new();
static RUNNING: Mutex<Vec<JobControl>> = Mutex::new(Vec::new());

/// Ctrl-C (SIGINT) cancels; SIGUSR1 takes a savepoint; SIGUSR2 stops with a savepoint.
fn install_signals() {
    CTRL_C.call_once(|| {
        let _ = ctrlc::set_handler(|| {
            eprintln!("weir: interrupted, cancelling the job");
            for t in RUNNING.lock().unwrap().iter() {
                t.cancel.cancel();
            }
        });
        if let Ok(mut signals) = signal_hook::iterator::Signals::new([
            signal_hook::consts::SIGUSR1,
            signal_hook::consts::SIGUSR2,
        ]) {
            let _ = std::thread::Builder::new()
                .name("weir:signals".into())
                .spawn(move || {
                    for sig in signals.forever() {
                        let stop = sig == signal_hook::consts::SIGUSR2;
                        let jobs: Vec<JobControl> = RUNNING.lock().unwrap().clone();
                        for j in jobs {
                            std::thread::spawn(move || match j.savepoint(stop, false) {
                                Ok(dir) => eprintln!(
                                    "weir: savepoint written: {dir}{}",
                                    if stop { "; stopping" } else { "" }
                                ),
                                Err(e) => eprintln!("weir: savepoint failed: {e}"),
                            });
                        }
                    }
                });
        }
    });
}

/// Logs to stderr, filtered by `RUST_LOG` (default `warn`). Called once by `from_args`.
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .try_init();
}

impl Default for StreamEnv {
    fn default() -> Self {
        Self::new()
    }
}

impl StreamEnv {
    /// An environment with defaults: parallelism = number of cores, 128 key groups, memory
    /// state backend.
    pub fn new() -> Self {
        let p = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        StreamEnv {
            inner: Rc::new(RefCell::new(EnvInner {
                graph: Graph::default(),
                cfg: JobConfig::default(),
                parallelism: p,
                options: EnvOptions::default(),
                metrics: MetricsRegistry::default(),
                dead_letter_producers: Vec::new(),
                config_errors: Vec::new(),
            })),
        }
    }

    /// An environment configured from the command line, `WEIR_*` variables and `--config`.
    pub fn from_args() -> Result<Self> {
        init_logging();
        Self::from_options(Cli::parse().options)
    }

    /// An environment configured from options (e.g. flattened into your own parser).
    pub fn from_options(options: EnvOptions) -> Result<Self> {
        let o = options.resolve()?;
        let env = Self::new();
        {
            let mut i = env.inner.borrow_mut();
            if let Some(p) = o.parallelism {
                i.parallelism = p;
            }
            if let Some(m) = o.max_parallelism {
                i.cfg.max_parallelism = m;
            }
            if let Some(b) = o.buffer_bytes_max {
                i.cfg.buffer_bytes_max = b;
            }
            if let Some(c) = o.channel_buffers_max {
                i.cfg.channel_buffers_max = c.max(1);
            }
            if let Some(w) = &o.watermark_interval {
                i.cfg.auto_watermark_interval_ms = parse_duration_ms(w)?;
            }
            let interval_ms = o
                .checkpoint_interval
                .as_deref()
                .map(parse_duration_ms)
                .transpose()?;
            match (&o.checkpoint_dir, interval_ms) {
                (Some(dir), interval) => {
                    let storage = storage_from_location(&dir.to_string_lossy())?;
                    let mut c = default_checkpoints(storage, interval.unwrap_or(10_000));
                    if let Some(m) = &o.checkpoint_mode {
                        c.mode = match m.as_str() {
                            "exactly-once" => CheckpointMode::ExactlyOnce,
                            "at-least-once" => CheckpointMode::AtLeastOnce,
                            "unaligned" => CheckpointMode::Unaligned,
                            other => return Err(WeirError::Config(format!("--checkpoint-mode takes exactly-once, unaligned or at-least-once, not '{other}'"))),
                        };
                    }
                    if let Some(n) = o.checkpoints_retained {
                        c.retained = n.max(1);
                    }
                    if let Some(t) = &o.checkpoint_timeout {
                        c.timeout = Duration::from_millis(parse_duration_ms(t)? as u64);
                    }
                    if let Some(t) = &o.checkpoint_background {
                        let ms = parse_duration_ms(t)?;
                        c.background_max = (ms > 0).then(|| Duration::from_millis(ms as u64));
                    }
                    if let Some(z) = &o.checkpoint_compression {
                        c.compression = SnapshotCompression::parse(z)?;
                    }
                    i.cfg.checkpoints = Some(c);
                }
                (None, Some(_)) => {
                    return Err(WeirError::Config(
                        "--checkpoint-interval needs --checkpoint-dir".into(),
                    ))
                }
                (None, None) => {}
            }
            i.cfg.allow_non_restored_state = o.allow_non_restored_state;
            if let Some(r) = &o.restore {
                i.cfg.restore = Some(if r == "latest" {
                    RestoreFrom::Latest
                } else {
                    restore_dir(r, o.checkpoint_dir.as_deref())?
                });
            }
            if let Some(r) = &o.restart_strategy {
                i.cfg.restart = parse_restart(r)?;
            } else if i.cfg.checkpoints.is_some() {
                // As Flink: with checkpointing, restart (from the latest checkpoint) on failure.
                i.cfg.restart = RestartStrategy::FixedDelay {
                    attempts: u32::MAX,
                    delay: Duration::from_secs(1),
                };
            }
            let budget = o
                .state_memory
                .as_deref()
                .map(crate::options::parse_bytes)
                .transpose()?;
            i.cfg.state_backend =
                match o.state_backend.as_deref() {
                    None if budget.is_none() => Arc::new(MemoryBackend),
                    None => return Err(WeirError::Config(
                        "--state-memory applies to a disk state backend: add --state-backend disk"
                            .into(),
                    )),
                    Some(spec) => weir_state::registry::backend_from_spec(spec, budget)
                        .map_err(WeirError::Config)?,
                };
            i.options = o;
        }
        Ok(env)
    }

    /// Sets the default parallelism of operators added from now on.
    pub fn with_parallelism(self, p: usize) -> Self {
        self.inner.borrow_mut().parallelism = p;
        self
    }
    /// The default parallelism.
    pub fn parallelism(&self) -> usize {
        self.inner.borrow().parallelism
    }
    /// Sets the number of key groups.
    pub fn with_max_parallelism(self, m: usize) -> Self {
        self.inner.borrow_mut().cfg.max_parallelism = m;
        self
    }
    /// Uses another processing-time clock (tests: [`weir_types::ManualClock`]).
    pub fn with_clock(self, clock: Arc<dyn Clock>) -> Self {
        self.inner.borrow_mut().cfg.clock = clock;
        self
    }
    /// Sets exchange buffer and channel limits.
    pub fn with_buffers(
        self,
        buffer_bytes_max: usize,
        buffer_records_max: u32,
        channel_buffers_max: usize,
    ) -> Self {
        {
            let mut i = self.inner.borrow_mut();
            i.cfg.buffer_bytes_max = buffer_bytes_max.max(1);
            i.cfg.buffer_records_max = buffer_records_max.max(1);
            i.cfg.channel_buffers_max = channel_buffers_max.max(1);
        }
        self
    }
    /// Encodes records on every channel between tasks, as channels to other processes will
    /// (by default, batches between tasks of one process carry the records themselves). For
    /// tests of the encoded path, and to measure what encoding costs.
    pub fn with_encoded_channels(self, on: bool) -> Self {
        self.inner.borrow_mut().cfg.encode_channels = on;
        self
    }
    /// Takes a checkpoint every `interval` into `dir` (exactly-once, 3 retained, 10 min timeout;
    /// `dir` may be a URL of a registered storage, e.g. `s3://bucket/prefix`),
    /// and restarts from the latest one on failure (fixed delay of 1 s) unless another restart
    /// strategy is set.
    pub fn with_checkpointing(
        self,
        dir: impl AsRef<std::path::Path>,
        interval: Duration,
    ) -> Result<Self> {
        let storage = storage_from_location(&dir.as_ref().to_string_lossy())?;
        self.with_checkpoint_storage(storage, interval)
    }
    /// Checkpoints into any storage (e.g. an object store).
    pub fn with_checkpoint_storage(
        self,
        storage: Arc<dyn CheckpointStorage>,
        interval: Duration,
    ) -> Result<Self> {
        {
            let mut i = self.inner.borrow_mut();
            i.cfg.checkpoints = Some(default_checkpoints(storage, interval.as_millis() as i64));
            if i.cfg.restart == RestartStrategy::None {
                i.cfg.restart = RestartStrategy::FixedDelay {
                    attempts: u32::MAX,
                    delay: Duration::from_secs(1),
                };
            }
        }
        Ok(self)
    }
    /// Changes checkpoint settings (after `with_checkpointing`).
    pub fn configure_checkpoints(self, f: impl FnOnce(&mut CheckpointConfig)) -> Self {
        if let Some(c) = self.inner.borrow_mut().cfg.checkpoints.as_mut() {
            f(c);
        }
        self
    }
    /// What to do when a task fails.
    pub fn with_restart_strategy(self, r: RestartStrategy) -> Self {
        self.inner.borrow_mut().cfg.restart = r;
        self
    }
    /// Restores even if the checkpoint has state of operators this job no longer has.
    pub fn allow_non_restored_state(self) -> Self {
        self.inner.borrow_mut().cfg.allow_non_restored_state = true;
        self
    }
    /// Starts from a checkpoint: the latest complete one, or a given directory.
    pub fn with_restore(self, from: RestoreFrom) -> Self {
        self.inner.borrow_mut().cfg.restore = Some(from);
        self
    }
    /// Keeps keyed state in `backend`.
    pub fn with_state_backend(self, backend: Arc<dyn weir_state::StateBackend>) -> Self {
        self.inner.borrow_mut().cfg.state_backend = backend;
        self
    }
    /// Sets the periodic watermark interval.
    pub fn with_watermark_interval_ms(self, ms: i64) -> Self {
        self.inner.borrow_mut().cfg.auto_watermark_interval_ms = ms.max(1);
        self
    }
    /// The options the job was configured with.
    pub fn options(&self) -> EnvOptions {
        self.inner.borrow().options.clone()
    }
    /// The job's settings.
    pub fn config(&self) -> JobConfig {
        self.inner.borrow().cfg.clone()
    }
    /// The job's metrics (live while it runs).
    pub fn metrics(&self) -> MetricsRegistry {
        self.inner.borrow().metrics.clone()
    }

    pub(crate) fn add_operator_node(&self, name: &str, op: Arc<dyn OperatorNode>) -> NodeId {
        let mut i = self.inner.borrow_mut();
        let p = i.parallelism;
        i.graph.add_node(Node::new(name, p, NodeKind::Operator(op)))
    }

    /// Adds a source. Its parallelism is the default, capped by what the source supports.
    pub fn source<T: Data>(&self, source: impl Source<T>) -> DataStream<T> {
        let max = source.max_parallelism();
        let full = std::any::type_name_of_val(&source);
        let base = full.split('<').next().unwrap_or(full);
        let name = base.rsplit("::").next().unwrap_or("source").to_lowercase();
        self.source_named(&name, source, max)
    }

    fn source_named<T: Data>(
        &self,
        name: &str,
        source: impl Source<T>,
        max: Option<usize>,
    ) -> DataStream<T> {
        let node = {
            let mut i = self.inner.borrow_mut();
            let p = max.map_or(i.parallelism, |m| m.min(i.parallelism));
            let kind = NodeKind::Source(Arc::new(TypedSource {
                source: Arc::new(source),
                strategy: None,
                policy: BadRecordPolicy::Fail,
            }));
            i.graph.add_node(Node::new(name, p, kind))
        };
        DataStream::from_node(self.clone(), node)
    }

    /// A bounded stream of the given values, read by one subtask in order.
    pub fn from_collection<T: Data + Sync>(&self, items: Vec<T>) -> DataStream<T> {
        self.source_named(
            "collection",
            crate::connectors::Collection::new(items),
            Some(1),
        )
    }

    /// The plan: nodes, parallelism and edges.
    pub fn describe(&self) -> String {
        self.inner.borrow().graph.describe()
    }

    fn take_graph(&self) -> Result<(Graph, JobConfig, MetricsRegistry)> {
        let mut i = self.inner.borrow_mut();
        if let Some(e) = i.config_errors.first() {
            return Err(WeirError::Config(e.clone()));
        }
        let graph = std::mem::take(&mut i.graph);
        // Nothing is lost silently: a dead-letter policy needs a consumer of the dead letters.
        for (n, node) in graph.nodes.iter().enumerate() {
            let needs = match &node.kind {
                NodeKind::Source(s) => s.policy() == BadRecordPolicy::DeadLetter,
                NodeKind::Operator(_) => i.dead_letter_producers.contains(&n),
            };
            if needs
                && !graph
                    .edges
                    .iter()
                    .any(|e| e.from == n && e.tag.as_deref() == Some(DEAD_LETTER_TAG))
            {
                return Err(WeirError::Config(format!(
                    "'{}' sends bad records to dead letters, but nothing consumes them: add a sink to .dead_letters()",
                    node.name
                )));
            }
        }
        i.dead_letter_producers.clear();
        Ok((graph, i.cfg.clone(), i.metrics.clone()))
    }

    /// Runs the job until its bounded input ends, it fails, or it is cancelled (Ctrl-C, which
    /// then returns `Ok` with `cancelled = true`).
    pub fn execute(&self, name: &str) -> Result<JobResult> {
        let (graph, cfg, metrics) = self.take_graph()?;
        install_signals();
        let control = JobControl::new(CancelToken::new());
        RUNNING.lock().unwrap().push(control.clone());
        tracing::info!("starting job '{name}'");
        let r = weir_runtime::execute_with(graph, cfg, control.clone(), metrics);
        RUNNING
            .lock()
            .unwrap()
            .retain(|t| !t.cancel.same_as(&control.cancel));
        r
    }

    /// Starts the job in the background. Ctrl-C cancels it and SIGUSR1/SIGUSR2 take
    /// savepoints, as with [`StreamEnv::execute`].
    pub fn execute_async(&self, name: &str) -> Result<JobHandle> {
        let (graph, cfg, metrics) = self.take_graph()?;
        install_signals();
        let control = JobControl::new(CancelToken::new());
        RUNNING.lock().unwrap().push(control.clone());
        let c2 = control.clone();
        let m2 = metrics.clone();
        let name = name.to_string();
        let join = std::thread::Builder::new()
            .name(format!("weir-job:{name}"))
            .spawn(move || {
                tracing::info!("starting job '{name}'");
                let r = weir_runtime::execute_with(graph, cfg, c2.clone(), m2);
                RUNNING
                    .lock()
                    .unwrap()
                    .retain(|t| !t.cancel.same_as(&c2.cancel));
                r
            })
            .map_err(|e| WeirError::io("starting the job thread", e))?;
        Ok(JobHandle {
            control,
            join: Some(join),
            metrics,
        })
    }
}

/// A job running in the background.
pub struct JobHandle {
    control: JobControl,
    join: Option<std::thread::JoinHandle<Result<JobResult>>>,
    metrics: MetricsRegistry,
}

impl JobHandle {
    /// Asks the job to stop.
    pub fn cancel(&self) {
        self.control.cancel.cancel()
    }
    /// Takes a savepoint (the job goes on); returns its directory in the checkpoint storage.
    pub fn savepoint(&self) -> Result<String> {
        self.control.savepoint(false, false)
    }
    /// Takes a savepoint and stops the job. With `drain`, the input is ended first (the final
    /// watermark fires every window and timer) so the savepoint holds no pending work.
    pub fn stop_with_savepoint(&self, drain: bool) -> Result<String> {
        self.control.savepoint(true, drain)
    }
    /// Live metrics.
    pub fn metrics(&self) -> weir_types::metrics::MetricsSnapshot {
        self.metrics.snapshot()
    }
    /// Whether the job has ended.
    pub fn is_finished(&self) -> bool {
        self.join.as_ref().is_none_or(|j| j.is_finished())
    }
    /// Waits for the end.
    pub fn join(mut self) -> Result<JobResult> {
        self.join
            .take()
            .expect("joined once")
            .join()
            .unwrap_or_else(|p| {
                Err(WeirError::Internal(weir_runtime::operator::panic_message(
                    &*p,
                )))
            })
    }
}

fn default_checkpoints(storage: Arc<dyn CheckpointStorage>, interval_ms: i64) -> CheckpointConfig {
    CheckpointConfig {
        interval: Duration::from_millis(interval_ms.max(1) as u64),
        timeout: Duration::from_secs(600),
        min_pause: Duration::ZERO,
        mode: CheckpointMode::ExactlyOnce,
        retained: 3,
        storage,
        background_max: Some(Duration::from_millis(interval_ms.max(1) as u64)),
        compression: Default::default(),
    }
}

/// `--restore PATH`: a checkpoint directory inside the checkpoint dir (its name, or a path
/// under it).
fn restore_dir(r: &str, checkpoint_dir: Option<&std::path::Path>) -> Result<RestoreFrom> {
    let p = std::path::Path::new(r);
    let Some(root) = checkpoint_dir else {
        return Err(WeirError::Config(
            "--restore needs --checkpoint-dir (the directory that holds the checkpoint)".into(),
        ));
    };
    let rel = p.strip_prefix(root).unwrap_or(p);
    let name = rel.to_string_lossy().trim_matches('/').to_string();
    if name.is_empty() || name.contains('/') {
        return Err(WeirError::Config(format!(
            "--restore {r}: expected 'latest' or a chk-N directory of {}",
            root.display()
        )));
    }
    Ok(RestoreFrom::Dir(name))
}

/// `none`, `fixed-delay:ATTEMPTS:DELAY`, `exponential:INITIAL:MAX`, `failure-rate:N:INTERVAL:DELAY`.
pub fn parse_restart(s: &str) -> Result<RestartStrategy> {
    let parts: Vec<&str> = s.split(':').collect();
    let d = |x: &str| parse_duration_ms(x).map(|ms| Duration::from_millis(ms as u64));
    let bad = || {
        WeirError::Config(format!("--restart-strategy '{s}': expected none, fixed-delay:ATTEMPTS:DELAY, exponential:INITIAL:MAX or failure-rate:N:INTERVAL:DELAY"))
    };
    Ok(match parts.as_slice() {
        ["none"] => RestartStrategy::None,
        ["fixed-delay", n, delay] => RestartStrategy::FixedDelay {
            attempts: n.parse().map_err(|_| bad())?,
            delay: d(delay)?,
        },
        ["exponential", initial, max] => RestartStrategy::ExponentialBackoff {
            initial: d(initial)?,
            max: d(max)?,
            multiplier: 2.0,
            reset_after: Duration::from_secs(3600),
        },
        ["failure-rate", n, interval, delay] => RestartStrategy::FailureRate {
            max_failures: n.parse().map_err(|_| bad())?,
            interval: d(interval)?,
            delay: d(delay)?,
        },
        _ => return Err(bad()),
    })
}
