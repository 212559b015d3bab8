//! The Kafka sink, with the delivery guarantees none, at-least-once and exactly-once.
//!
//! # Exactly-once with librdkafka
//!
//! Each checkpoint interval's output of a subtask is one Kafka transaction: it begins with the
//! first record after a barrier, is *pre-committed* at the next barrier (the producer is
//! flushed, so every record is acknowledged inside the open transaction) and is committed by
//! the sink's committer once the checkpoint is durable. Records written between a barrier and
//! the completion of its checkpoint belong to the next transaction, so a subtask needs (at
//! least) two producers: each subtask has a small pool of transactional ids,
//! `PREFIX-SUBTASK-N` (N < pool size, default 4), stable across restarts so that a restarted
//! job fences its zombies (`init_transactions` on an id aborts that id's open transaction).
//!
//! The hard case is a crash after a checkpoint became durable and before its transactions were
//! committed. Flink resumes such a transaction from another process by setting the producer id
//! and epoch into the Java client by reflection; librdkafka has no such API (and no KIP-939
//! two-phase commit support), so a new process can only *fence* the old transaction, which
//! aborts it. Weir therefore makes the pre-commit recoverable instead of resumable:
//!
//! - **The records are in the checkpoint.** A pre-committed transaction's pending-commit item
//!   holds its records (a write-ahead log of one checkpoint interval of this subtask's output).
//! - **The transaction says whether it committed.** Each transaction also commits a consumer
//!   group offset (`send_offsets_to_transaction`) for the group named after its transactional id,
//!   on a marker partition, whose value is a random token unique to this transaction. Offsets
//!   committed in a transaction become visible exactly when it commits.
//! - **The committer is idempotent.** In the normal case it finds the producer (same process)
//!   and calls `commit_transaction`. Otherwise (a restore in a new process), it fences the
//!   transactional id (`init_transactions`: an open transaction is aborted, one whose commit had
//!   begun completes), reads the group's committed offset, and if it is not the token, writes
//!   the records again in a new transaction with the same marker and commits it. Running it
//!   again finds the token and does nothing.
//!
//! Costs: the checkpoint carries one interval of output; a recovery re-sends at most the
//! restored checkpoint's transactions; every transaction adds one offset commit. A transaction
//! that stays open longer than `transaction.timeout.ms` (60 s here) is aborted by the broker and
//! its pre-commit fails: keep the checkpoint interval well below it (the sink warns at half).
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerGroupMetadata};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use weir::operators::{Sink, SinkSnapshot, SinkWriter};
use weir::{DeadLetter, Position, Record, Result, WeirError};
use weir_runtime::checkpoint::Committer;
use weir_runtime::OperatorContext;
use weir_types::metrics::{Counter, Gauge};

use crate::{client_config, kafka_err};

/// What the sink promises about delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryGuarantee {
    /// Fire and forget: records may be lost on failure.
    None,
    /// Every record is acknowledged by the brokers before a checkpoint completes (a delivery
    /// error fails the job); a restore may write some again.
    AtLeastOnce,
    /// One transaction per checkpoint, committed when the checkpoint completes: consumers with
    /// `isolation.level=read_committed` see every record exactly once. The prefix names the
    /// transactional ids (`PREFIX-SUBTASK-N`); it must be unique to the job and stable across
    /// its restarts.
    ExactlyOnce {
        /// Prefix of the transactional ids.
        transactional_id_prefix: String,
    },
}

/// A record to produce.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KafkaMessage {
    /// Its topic (`None`: the sink's topic).
    pub topic: Option<String>,
    /// An explicit partition (`None`: by the hash of the key, like the Java client, or any
    /// partition without a key).
    pub partition: Option<i32>,
    /// Its key.
    pub key: Option<Vec<u8>>,
    /// Its value (`None`: a tombstone).
    pub value: Option<Vec<u8>>,
    /// Its headers.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Its timestamp (ms since the epoch; `None`: the record's event time, or the current time).
    pub timestamp: Option<i64>,
}

impl KafkaMessage {
    /// A message with this value.
    pub fn value(v: impl Into<Vec<u8>>) -> Self {
        KafkaMessage {
            value: Some(v.into()),
            ..Default::default()
        }
    }
    /// Sets its key (which picks its partition).
    pub fn with_key(mut self, k: impl Into<Vec<u8>>) -> Self {
        self.key = Some(k.into());
        self
    }
    /// Sends it to this topic.
    pub fn with_topic(mut self, t: impl Into<String>) -> Self {
        self.topic = Some(t.into());
        self
    }
    /// Adds a header.
    pub fn with_header(mut self, k: impl Into<String>, v: impl Into<Vec<u8>>) -> Self {
        self.headers.push((k.into(), v.into()));
        self
    }
}

type SerializeFn<T> = Arc<dyn Fn(&T) -> std::result::Result<KafkaMessage, String> + Send + Sync>;

/// Transactions committed and aborted by one sink (all subtasks, and its committer).
#[derive(Default)]
struct TxnStats {
    committed: AtomicU64,
    aborted: AtomicU64,
    resent: AtomicU64,
}

/// Writes a stream to Kafka.
pub struct KafkaSink<T> {
    brokers: String,
    topic: Option<String>,
    serializer: SerializeFn<T>,
    guarantee: DeliveryGuarantee,
    props: Vec<(String, String)>,
    transaction_timeout: Duration,
    pool: usize,
    marker: (String, i32),
    stats: Arc<TxnStats>,
}

impl<T: 'static> KafkaSink<T> {
    /// Writes to `topic` (unless a message names its own) what `serializer` makes of each
    /// record. At-least-once by default.
    pub fn new(
        brokers: impl Into<String>,
        topic: impl Into<String>,
        serializer: impl Fn(&T) -> std::result::Result<KafkaMessage, String> + Send + Sync + 'static,
    ) -> Self {
        let topic: String = topic.into();
        KafkaSink {
            brokers: brokers.into(),
            topic: (!topic.is_empty()).then_some(topic),
            serializer: Arc::new(serializer),
            guarantee: DeliveryGuarantee::AtLeastOnce,
            props: Vec::new(),
            transaction_timeout: Duration::from_secs(60),
            pool: 4,
            marker: ("weir-transactions".to_string(), 0),
            stats: Arc::default(),
        }
    }
    /// Messages choose their topic ([`KafkaMessage::topic`] must be set).
    pub fn per_record_topic(
        brokers: impl Into<String>,
        serializer: impl Fn(&T) -> std::result::Result<KafkaMessage, String> + Send + Sync + 'static,
    ) -> Self {
        Self::new(brokers, "", serializer)
    }
    /// The delivery guarantee.
    pub fn delivery(mut self, g: DeliveryGuarantee) -> Self {
        self.guarantee = g;
        self
    }
    /// Exactly-once with transactional ids `prefix-SUBTASK-N`.
    pub fn exactly_once(self, transactional_id_prefix: impl Into<String>) -> Self {
        self.delivery(DeliveryGuarantee::ExactlyOnce {
            transactional_id_prefix: transactional_id_prefix.into(),
        })
    }
    /// A librdkafka producer property.
    pub fn property(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.props.push((k.into(), v.into()));
        self
    }
    /// `transaction.timeout.ms` (default 60 s; the broker caps it at
    /// `transaction.max.timeout.ms`, 15 min by default). Must exceed the checkpoint interval.
    pub fn transaction_timeout(mut self, d: Duration) -> Self {
        self.transaction_timeout = d;
        self
    }
    /// Transactional ids per subtask (default 4): one transaction being written plus the
    /// pre-committed ones whose checkpoint has not completed yet.
    pub fn transaction_pool(mut self, n: usize) -> Self {
        self.pool = n.max(2);
        self
    }
    /// The partition whose consumer-group offsets mark committed transactions (default
    /// `weir-transactions`, partition 0; the sink creates the topic if it does not exist, as
    /// the broker refuses offsets of unknown partitions).
    pub fn transaction_marker(mut self, topic: impl Into<String>, partition: i32) -> Self {
        self.marker = (topic.into(), partition);
        self
    }
}

impl KafkaSink<String> {
    /// Strings as UTF-8 values, without keys.
    pub fn strings(brokers: impl Into<String>, topic: impl Into<String>) -> Self {
        Self::new(brokers, topic, |s: &String| {
            Ok(KafkaMessage::value(s.as_bytes()))
        })
    }
}

impl KafkaSink<Vec<u8>> {
    /// Bytes as values, without keys.
    pub fn bytes(brokers: impl Into<String>, topic: impl Into<String>) -> Self {
        Self::new(brokers, topic, |b: &Vec<u8>| {
            Ok(KafkaMessage::value(b.clone()))
        })
    }
}

impl<T: Serialize + 'static> KafkaSink<T> {
    /// Values as JSON; the key (which picks the partition), if given, from `key`.
    pub fn json(
        brokers: impl Into<String>,
        topic: impl Into<String>,
        key: Option<fn(&T) -> Vec<u8>>,
    ) -> Self {
        Self::new(brokers, topic, move |v: &T| {
            let value = serde_json::to_vec(v).map_err(|e| format!("JSON encoding: {e}"))?;
            let mut m = KafkaMessage::value(value);
            if let Some(k) = key {
                m.key = Some(k(v));
            }
            Ok(m)
        })
    }
}

impl<T: Serialize + 'static> KafkaSink<T> {
    /// Values as Avro with `avro`'s schema and framing (plain binary, or Confluent's wire format
    /// with a fixed schema id); the key, if given, from `key`. A value the schema refuses fails
    /// the job.
    pub fn avro(
        brokers: impl Into<String>,
        topic: impl Into<String>,
        avro: crate::Avro<T>,
        key: Option<fn(&T) -> Vec<u8>>,
    ) -> Self {
        Self::new(brokers, topic, move |v: &T| {
            let mut m = KafkaMessage::value(avro.encode(v)?);
            if let Some(k) = key {
                m.key = Some(k(v));
            }
            Ok(m)
        })
    }
}

/// The header that names the dead letter's source topic (as Kafka Connect).
pub const DEAD_LETTER_HEADER_TOPIC: &str = "__connect.errors.topic";
/// The header with the source partition.
pub const DEAD_LETTER_HEADER_PARTITION: &str = "__connect.errors.partition";
/// The header with the source offset.
pub const DEAD_LETTER_HEADER_OFFSET: &str = "__connect.errors.offset";
/// The header with the error.
pub const DEAD_LETTER_HEADER_ERROR: &str = "__connect.errors.exception.message";

/// Writes dead letters ([`weir::DataStream::dead_letters`]) to a topic as Kafka Connect does:
/// the raw bytes as the value, and where they came from and why in headers.
pub struct DeadLetterSink;

impl DeadLetterSink {
    /// The sink (at-least-once; use [`KafkaSink::delivery`] to change it).
    #[allow(clippy::new_ret_no_self)]
    pub fn new(brokers: impl Into<String>, topic: impl Into<String>) -> KafkaSink<DeadLetter> {
        KafkaSink::new(brokers, topic, |d: &DeadLetter| {
            let mut m = KafkaMessage::value(d.raw.clone())
                .with_header(DEAD_LETTER_HEADER_ERROR, d.error.as_bytes())
                .with_header("__connect.errors.connector.name", d.operator.as_bytes())
                .with_header("__connect.errors.task.id", d.subtask.to_string());
            match &d.position {
                Some(Position::Offset { split, offset }) => {
                    // Kafka splits are named `topic-partition`.
                    let (t, p) = split.rsplit_once('-').unwrap_or((split.as_str(), ""));
                    m = m
                        .with_header(DEAD_LETTER_HEADER_TOPIC, t.as_bytes())
                        .with_header(DEAD_LETTER_HEADER_PARTITION, p.as_bytes())
                        .with_header(DEAD_LETTER_HEADER_OFFSET, offset.to_string());
                }
                Some(p @ Position::Line { .. }) => {
                    m = m.with_header("__connect.errors.position", p.to_string());
                }
                None => {}
            }
            Ok(m)
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Producers.

/// Collects delivery errors (served by `poll`/`flush`).
#[derive(Default)]
struct DeliveryCtx {
    error: Mutex<Option<String>>,
}

impl ClientContext for DeliveryCtx {}

impl ProducerContext for DeliveryCtx {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &rdkafka::producer::DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = r {
            let mut g = self.error.lock().unwrap();
            if g.is_none() {
                *g = Some(e.to_string());
            }
        }
    }
}

type Prod = BaseProducer<DeliveryCtx>;

fn producer_config(
    brokers: &str,
    props: &[(String, String)],
    txn: Option<(&str, Duration)>,
) -> ClientConfig {
    let mut c = client_config(brokers, &[]);
    c.set("partitioner", "murmur2_random")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "60000");
    if let Some((id, timeout)) = txn {
        // Short retry backoffs: fencing an open transaction makes `init_transactions` retry
        // (CONCURRENT_TRANSACTIONS) until the broker has aborted it, and recovery waits on it.
        c.set("transactional.id", id)
            .set("transaction.timeout.ms", timeout.as_millis().to_string())
            .set("enable.idempotence", "true")
            .set("retry.backoff.ms", "20")
            .set("retry.backoff.max.ms", "200");
    }
    for (k, v) in props {
        c.set(k, v);
    }
    c
}

/// Sends one message, waiting while librdkafka's queue is full.
fn send(p: &Prod, default_topic: Option<&str>, m: &KafkaMessage, ts: Option<i64>) -> Result<()> {
    let topic = m
        .topic
        .as_deref()
        .or(default_topic)
        .ok_or_else(|| WeirError::Config("kafka sink: a message without a topic".into()))?;
    let mut headers = None;
    if !m.headers.is_empty() {
        let mut h = OwnedHeaders::new_with_capacity(m.headers.len());
        for (k, v) in &m.headers {
            h = h.insert(Header {
                key: k,
                value: Some(v),
            });
        }
        headers = Some(h);
    }
    loop {
        let mut r: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic);
        if let Some(k) = &m.key {
            r = r.key(k.as_slice());
        }
        if let Some(v) = &m.value {
            r = r.payload(v.as_slice());
        }
        if let Some(pt) = m.partition {
            r = r.partition(pt);
        }
        if let Some(t) = m.timestamp.or(ts) {
            r = r.timestamp(t);
        }
        if let Some(h) = &headers {
            r = r.headers(h.clone());
        }
        match p.send(r) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                p.poll(Duration::from_millis(50));
            }
            Err((e, _)) => return Err(kafka_err(format!("producing to '{topic}'"), e)),
        }
    }
}

fn delivery_error(p: &Prod) -> Option<String> {
    p.context().error.lock().unwrap().take()
}

const OP_TIMEOUT: Duration = Duration::from_secs(60);

/// A transactional producer and the group metadata of its marker group.
struct TxnProducer {
    id: String,
    producer: Prod,
    brokers: String,
    /// The metadata of the consumer group that marks this id's committed transactions
    /// (made on first use: it takes a consumer).
    group: OnceLock<ConsumerGroupMetadata>,
}

impl TxnProducer {
    /// Creates the producer and initializes transactions, which fences earlier producers with
    /// this id: their open transaction is aborted (one being committed completes first).
    fn init(
        brokers: &str,
        props: &[(String, String)],
        id: &str,
        timeout: Duration,
    ) -> Result<Self> {
        let started = Instant::now();
        let producer: Prod = producer_config(brokers, props, Some((id, timeout)))
            .create_with_context(DeliveryCtx::default())
            .map_err(|e| kafka_err(format!("creating transactional producer {id}"), e))?;
        // Connect first: librdkafka looks up the transaction coordinator at once and, with no
        // broker connection up yet, tries again only 500 ms later.
        let _ = producer
            .client()
            .fetch_metadata(Some("__weir_none"), OP_TIMEOUT);
        producer
            .init_transactions(OP_TIMEOUT)
            .map_err(|e| kafka_err(format!("initializing transactions of {id}"), e))?;
        tracing::debug!("kafka sink: {id} initialized in {:?}", started.elapsed());
        Ok(TxnProducer {
            id: id.to_string(),
            producer,
            brokers: brokers.to_string(),
            group: OnceLock::new(),
        })
    }

    fn group(&self) -> Result<&ConsumerGroupMetadata> {
        if let Some(g) = self.group.get() {
            return Ok(g);
        }
        let consumer: BaseConsumer = client_config(&self.brokers, &[])
            .set("group.id", &self.id)
            .create()
            .map_err(|e| kafka_err("creating a consumer for group metadata", e))?;
        let g = consumer
            .group_metadata()
            .ok_or_else(|| kafka_err(format!("group metadata of {}", self.id), "none"))?;
        Ok(self.group.get_or_init(|| g))
    }

    /// Flushes the open transaction and adds its marker: the marker group's offset becomes
    /// `token` if and only if the transaction commits.
    fn pre_commit(&self, marker: &(String, i32), token: i64) -> Result<()> {
        self.producer
            .flush(OP_TIMEOUT)
            .map_err(|e| kafka_err(format!("flushing transaction of {}", self.id), e))?;
        if let Some(e) = delivery_error(&self.producer) {
            return Err(kafka_err(
                format!("delivery in transaction of {}", self.id),
                e,
            ));
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&marker.0, marker.1, Offset::Offset(token))
            .map_err(|e| kafka_err("marker offset", e))?;
        self.producer
            .send_offsets_to_transaction(&tpl, self.group()?, OP_TIMEOUT)
            .map_err(|e| kafka_err(format!("marking transaction of {}", self.id), e))
    }
}

/// Runs a future to completion on this thread (rdkafka's admin futures need no runtime).
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    struct W(std::thread::Thread);
    impl std::task::Wake for W {
        fn wake(self: Arc<Self>) {
            self.0.unpark()
        }
    }
    let waker = Arc::new(W(std::thread::current())).into();
    let mut cx = std::task::Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park_timeout(Duration::from_millis(100));
    }
}

/// Creates the marker topic (one partition, the broker's default replication) unless it
/// exists; once per process and topic.
fn ensure_marker_topic(
    brokers: &str,
    props: &[(String, String)],
    marker: &(String, i32),
) -> Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    static DONE: OnceLock<Mutex<HashSet<(String, String)>>> = OnceLock::new();
    let key = (brokers.to_string(), marker.0.clone());
    let done = DONE.get_or_init(Default::default);
    if done.lock().unwrap().contains(&key) {
        return Ok(());
    }
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = client_config(brokers, props)
        .create()
        .map_err(|e| kafka_err("creating an admin client", e))?;
    let md = admin
        .inner()
        .fetch_metadata(Some(&marker.0), OP_TIMEOUT)
        .map_err(|e| kafka_err(format!("metadata of {}", marker.0), e))?;
    let exists = md.topics().iter().any(|t| {
        t.name() == marker.0 && t.error().is_none() && t.partitions().len() as i32 > marker.1
    });
    if !exists {
        let r = block_on(admin.create_topics(
            &[NewTopic::new(
                &marker.0,
                marker.1 + 1,
                TopicReplication::Fixed(-1),
            )],
            &AdminOptions::new().operation_timeout(Some(OP_TIMEOUT)),
        ))
        .map_err(|e| kafka_err(format!("creating topic {}", marker.0), e))?;
        for x in r {
            match x {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((t, e)) => return Err(kafka_err(format!("creating topic {t}"), e)),
            }
        }
    }
    done.lock().unwrap().insert(key);
    Ok(())
}

/// A pre-committed transaction, as the checkpoint holds it.
#[derive(Serialize, Deserialize)]
struct PendingTxn {
    transactional_id: String,
    token: i64,
    marker: (String, i32),
    /// The transaction's records (to write them again if it was lost).
    records: Vec<KafkaMessage>,
}

/// Pre-committed transactions of this process, by token, until committed; and tokens committed
/// (so a second commit of the same item is a no-op).
#[derive(Default)]
struct Registry {
    open: HashMap<i64, Arc<TxnProducer>>,
    done: HashSet<i64>,
}

fn registry() -> &'static Mutex<Registry> {
    static R: OnceLock<Mutex<Registry>> = OnceLock::new();
    R.get_or_init(Default::default)
}

fn new_token() -> i64 {
    use std::hash::{BuildHasher, Hasher};
    static N: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(N.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    (h.finish() & (i64::MAX as u64)) as i64
}

/// Commits pre-committed transactions; see the module documentation.
struct TxnCommitter {
    brokers: String,
    props: Vec<(String, String)>,
    timeout: Duration,
    stats: Arc<TxnStats>,
}

impl Committer for TxnCommitter {
    fn commit(&self, item: &[u8]) -> Result<()> {
        let p: PendingTxn = postcard::from_bytes(item)
            .map_err(|e| WeirError::Internal(format!("kafka pending transaction: {e}")))?;
        let found = {
            let mut r = registry().lock().unwrap();
            if r.done.contains(&p.token) {
                return Ok(());
            }
            r.open.remove(&p.token)
        };
        if let Some(tp) = found {
            failpoint("abort-before-commit");
            let committed = tp.producer.commit_transaction(OP_TIMEOUT);
            if committed.is_ok() {
                failpoint("abort-after-commit");
            }
            match committed {
                Ok(()) => {
                    self.stats.committed.fetch_add(1, Ordering::Relaxed);
                    registry().lock().unwrap().done.insert(p.token);
                    return Ok(());
                }
                Err(e) => {
                    // Fall through to recovery (it finds out whether the commit happened).
                    tracing::warn!(
                        "kafka sink: committing {}: {e}; recovering the transaction",
                        p.transactional_id
                    );
                }
            }
        }
        self.recover(&p)?;
        registry().lock().unwrap().done.insert(p.token);
        Ok(())
    }
}

/// Fault injection for tests: `WEIR_KAFKA_FAILPOINT=NAME` aborts the process (as a `kill -9`
/// would stop it) when the committer reaches `NAME`: `abort-before-commit` (the checkpoint is
/// durable, its transactions are not committed) or `abort-after-commit`.
fn failpoint(name: &str) {
    static FP: OnceLock<Option<String>> = OnceLock::new();
    if FP
        .get_or_init(|| std::env::var("WEIR_KAFKA_FAILPOINT").ok())
        .as_deref()
        == Some(name)
    {
        eprintln!("weir-kafka: failpoint {name}: aborting the process");
        std::process::abort();
    }
}

impl TxnCommitter {
    /// Makes sure the transaction `p` ends committed, from any process: fence its id, look
    /// for its marker, and write its records again if the marker is not there.
    fn recover(&self, p: &PendingTxn) -> Result<()> {
        ensure_marker_topic(&self.brokers, &self.props, &p.marker)?;
        let tp = TxnProducer::init(
            &self.brokers,
            &self.props,
            &p.transactional_id,
            self.timeout,
        )?;
        if committed_marker(&self.brokers, &p.transactional_id, &p.marker)? == Some(p.token) {
            tracing::info!(
                "kafka sink: transaction of {} (token {}) was committed",
                p.transactional_id,
                p.token
            );
            return Ok(());
        }
        self.stats.aborted.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            "kafka sink: transaction of {} (token {}) was lost; writing its {} records again",
            p.transactional_id,
            p.token,
            p.records.len()
        );
        tp.producer
            .begin_transaction()
            .map_err(|e| kafka_err(format!("beginning a transaction of {}", tp.id), e))?;
        for m in &p.records {
            send(&tp.producer, None, m, None)?;
        }
        tp.pre_commit(&p.marker, p.token)?;
        tp.producer
            .commit_transaction(OP_TIMEOUT)
            .map_err(|e| kafka_err(format!("committing a transaction of {}", tp.id), e))?;
        self.stats.resent.fetch_add(1, Ordering::Relaxed);
        self.stats.committed.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// The offset committed for the marker partition by the group named `group` (stable: after a
/// fence no transactional offset commit of it is pending).
fn committed_marker(brokers: &str, group: &str, marker: &(String, i32)) -> Result<Option<i64>> {
    let consumer: BaseConsumer = client_config(brokers, &[])
        .set("group.id", group)
        .set("isolation.level", "read_committed")
        .create()
        .map_err(|e| kafka_err("creating a consumer for the marker", e))?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(&marker.0, marker.1);
    let r = consumer
        .committed_offsets(tpl, OP_TIMEOUT)
        .map_err(|e| kafka_err(format!("reading the marker of {group}"), e))?;
    Ok(r.elements().first().and_then(|e| match e.offset() {
        Offset::Offset(o) => Some(o),
        _ => None,
    }))
}

// ---------------------------------------------------------------------------------------------
// Writers.

impl<T: 'static> Sink<T> for KafkaSink<T> {
    fn name(&self) -> String {
        match &self.topic {
            Some(t) => format!("kafka {t}"),
            None => "kafka".to_string(),
        }
    }
    fn create_writer(&self, subtask: usize, parallelism: usize) -> Result<Box<dyn SinkWriter<T>>> {
        let common = Common {
            topic: self.topic.clone(),
            serializer: self.serializer.clone(),
            records_out: None,
            bytes_out: None,
        };
        match &self.guarantee {
            DeliveryGuarantee::ExactlyOnce {
                transactional_id_prefix,
            } => Ok(Box::new(TxnWriter {
                common,
                brokers: self.brokers.clone(),
                props: self.props.clone(),
                timeout: self.transaction_timeout,
                prefix: transactional_id_prefix.clone(),
                marker: self.marker.clone(),
                subtask,
                parallelism,
                pool: self.pool,
                slots: Vec::new(),
                free: Vec::new(),
                current: None,
                pending: Vec::new(),
                stats: self.stats.clone(),
                gauges: None,
            })),
            g => {
                let producer: Prod = producer_config(&self.brokers, &self.props, None)
                    .set(
                        "enable.idempotence",
                        if *g == DeliveryGuarantee::AtLeastOnce {
                            "true"
                        } else {
                            "false"
                        },
                    )
                    .create_with_context(DeliveryCtx::default())
                    .map_err(|e| kafka_err("creating a producer", e))?;
                Ok(Box::new(PlainWriter {
                    common,
                    producer,
                    at_least_once: *g == DeliveryGuarantee::AtLeastOnce,
                    since_poll: 0,
                }))
            }
        }
    }
    fn committer(&self) -> Option<Arc<dyn Committer>> {
        match self.guarantee {
            DeliveryGuarantee::ExactlyOnce { .. } => Some(Arc::new(TxnCommitter {
                brokers: self.brokers.clone(),
                props: self.props.clone(),
                timeout: self.transaction_timeout,
                stats: self.stats.clone(),
            })),
            _ => None,
        }
    }
}

struct Common<T> {
    topic: Option<String>,
    serializer: SerializeFn<T>,
    records_out: Option<Counter>,
    bytes_out: Option<Counter>,
}

impl<T> Common<T> {
    fn open(&mut self, ctx: &OperatorContext) {
        self.records_out = Some(ctx.counter("records_out"));
        self.bytes_out = Some(ctx.counter("bytes_out"));
    }
    fn message(&self, rec: &Record<T>) -> Result<(KafkaMessage, Option<i64>)> {
        let m = (self.serializer)(&rec.value)
            .map_err(|e| WeirError::Internal(format!("kafka sink: serializing a record: {e}")))?;
        if let Some(c) = &self.records_out {
            c.inc();
        }
        if let Some(c) = &self.bytes_out {
            c.add(
                (m.value.as_ref().map_or(0, Vec::len) + m.key.as_ref().map_or(0, Vec::len)) as u64,
            );
        }
        let ts = (rec.ts != weir_types::NO_TIMESTAMP && rec.ts >= 0).then_some(rec.ts);
        Ok((m, ts))
    }
}

/// Delivery none or at-least-once: one idempotent producer.
struct PlainWriter<T> {
    common: Common<T>,
    producer: Prod,
    at_least_once: bool,
    since_poll: u32,
}

impl<T> PlainWriter<T> {
    fn check(&self) -> Result<()> {
        match delivery_error(&self.producer) {
            Some(e) if self.at_least_once => Err(kafka_err("delivering a record", e)),
            Some(e) => {
                tracing::warn!("kafka sink: a record was lost: {e}");
                Ok(())
            }
            None => Ok(()),
        }
    }
    fn flush_all(&mut self) -> Result<()> {
        self.producer
            .flush(OP_TIMEOUT)
            .map_err(|e| kafka_err("flushing the producer", e))?;
        self.check()
    }
}

impl<T> SinkWriter<T> for PlainWriter<T> {
    fn open(&mut self, ctx: &OperatorContext) -> Result<()> {
        self.common.open(ctx);
        Ok(())
    }
    fn write(&mut self, rec: Record<T>) -> Result<()> {
        let (m, ts) = self.common.message(&rec)?;
        send(&self.producer, self.common.topic.as_deref(), &m, ts)?;
        self.since_poll += 1;
        if self.since_poll >= 1000 {
            self.since_poll = 0;
            self.producer.poll(Duration::ZERO);
            self.check()?;
        }
        Ok(())
    }
    fn flush(&mut self) -> Result<()> {
        self.producer.poll(Duration::ZERO);
        self.check()
    }
    fn finish(&mut self) -> Result<()> {
        self.flush_all()
    }
    fn snapshot(&mut self, _checkpoint_id: u64) -> Result<SinkSnapshot> {
        if self.at_least_once {
            // Everything before the barrier is acknowledged before the checkpoint can complete.
            self.flush_all()?;
        }
        Ok(SinkSnapshot::default())
    }
}

struct Current {
    slot: usize,
    token: i64,
    records: Vec<KafkaMessage>,
    began: Instant,
}

struct PendingSlot {
    checkpoint: u64,
    slot: usize,
    token: i64,
    item: Vec<u8>,
}

struct TxnGauges {
    committed: Gauge,
    aborted: Gauge,
    resent: Gauge,
    open: Gauge,
}

/// Exactly-once: a transaction per checkpoint over a pool of transactional producers.
struct TxnWriter<T> {
    common: Common<T>,
    brokers: String,
    props: Vec<(String, String)>,
    timeout: Duration,
    prefix: String,
    marker: (String, i32),
    subtask: usize,
    parallelism: usize,
    pool: usize,
    /// Producer `N` has the transactional id `prefix-subtask-N`; empty until initialized.
    slots: Vec<Arc<TxnProducer>>,
    free: Vec<usize>,
    current: Option<Current>,
    pending: Vec<PendingSlot>,
    stats: Arc<TxnStats>,
    gauges: Option<TxnGauges>,
}

/// State of a subtask in a checkpoint.
#[derive(Serialize, Deserialize)]
struct WriterState {
    subtask: u64,
    pool: u64,
}

fn txn_id(prefix: &str, subtask: usize, n: usize) -> String {
    format!("{prefix}-{subtask}-{n}")
}

/// Initializes (and so fences) the given transactional ids, in parallel.
fn init_all(
    brokers: &str,
    props: &[(String, String)],
    ids: &[String],
    timeout: Duration,
) -> Result<Vec<TxnProducer>> {
    std::thread::scope(|s| {
        let hs: Vec<_> = ids
            .iter()
            .map(|id| s.spawn(move || TxnProducer::init(brokers, props, id, timeout)))
            .collect();
        hs.into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(WeirError::Internal("panic in init".into())))
            })
            .collect()
    })
}

impl<T> TxnWriter<T> {
    /// Initializes every producer of the pool (fencing what a previous run left open).
    fn ensure_init(&mut self) -> Result<()> {
        if !self.slots.is_empty() {
            return Ok(());
        }
        ensure_marker_topic(&self.brokers, &self.props, &self.marker)?;
        let ids: Vec<String> = (0..self.pool)
            .map(|n| txn_id(&self.prefix, self.subtask, n))
            .collect();
        // Producers of a failed attempt in this process are fenced now: forget them.
        registry()
            .lock()
            .unwrap()
            .open
            .retain(|_, p| !ids.contains(&p.id));
        self.slots = init_all(&self.brokers, &self.props, &ids, self.timeout)?
            .into_iter()
            .map(Arc::new)
            .collect();
        self.free = (0..self.pool).rev().collect();
        // Before this subtask's first transaction: record that the subtask exists (so that a
        // later run with fewer subtasks fences its ids), and on subtask 0 fence the ids of every
        // recorded subtask this run does not have.
        self.register_subtask()?;
        if self.subtask == 0 {
            let gone: Vec<String> = self
                .registered_subtasks()?
                .into_iter()
                .filter(|s| *s >= self.parallelism)
                .flat_map(|s| (0..self.pool).map(move |n| (s, n)))
                .map(|(s, n)| txn_id(&self.prefix, s, n))
                .collect();
            if !gone.is_empty() {
                tracing::info!(
                    "kafka sink: fencing {} transactional ids of subtasks this run does not have",
                    gone.len()
                );
                init_all(&self.brokers, &self.props, &gone, self.timeout)?;
            }
        }
        Ok(())
    }

    /// The consumer group whose existence records that subtask `s` has used its ids.
    fn subtask_group(&self, s: usize) -> String {
        format!("{}.weir-subtask-{s}", self.prefix)
    }

    fn register_subtask(&self) -> Result<()> {
        let consumer: BaseConsumer = client_config(&self.brokers, &self.props)
            .set("group.id", self.subtask_group(self.subtask))
            .create()
            .map_err(|e| kafka_err("creating a consumer to register a subtask", e))?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.marker.0, self.marker.1, Offset::Offset(1))
            .map_err(|e| kafka_err("registering a subtask", e))?;
        consumer
            .commit(&tpl, rdkafka::consumer::CommitMode::Sync)
            .map_err(|e| kafka_err("registering a subtask", e))
    }

    /// Subtasks that have registered under this prefix (in any run).
    fn registered_subtasks(&self) -> Result<Vec<usize>> {
        let consumer: BaseConsumer = client_config(&self.brokers, &self.props)
            .create()
            .map_err(|e| kafka_err("creating a consumer to list groups", e))?;
        let groups = consumer
            .fetch_group_list(None, OP_TIMEOUT)
            .map_err(|e| kafka_err("listing consumer groups", e))?;
        let prefix = format!("{}.weir-subtask-", self.prefix);
        Ok(groups
            .groups()
            .iter()
            .filter_map(|g| g.name().strip_prefix(&prefix)?.parse().ok())
            .collect())
    }

    fn begin(&mut self) -> Result<()> {
        self.ensure_init()?;
        self.reclaim();
        let Some(slot) = self.free.pop() else {
            return Err(WeirError::Operator {
                operator: format!("kafka sink ({})", self.prefix),
                subtask: format!("{}/{}", self.subtask, self.parallelism),
                message: format!(
                    "all {} transactional producers hold pre-committed transactions whose \
                     checkpoints have not completed (checkpoints keep failing?); raise \
                     transaction_pool",
                    self.pool
                ),
            });
        };
        self.slots[slot].producer.begin_transaction().map_err(|e| {
            kafka_err(
                format!("beginning a transaction of {}", self.slots[slot].id),
                e,
            )
        })?;
        self.current = Some(Current {
            slot,
            token: new_token(),
            records: Vec::new(),
            began: Instant::now(),
        });
        if let Some(g) = &self.gauges {
            g.open.set(1);
        }
        Ok(())
    }

    /// Frees the producers whose transactions the committer has committed.
    fn reclaim(&mut self) {
        let mut r = registry().lock().unwrap();
        let free = &mut self.free;
        self.pending.retain(|p| {
            if r.done.remove(&p.token) {
                free.push(p.slot);
                false
            } else {
                true
            }
        });
    }

    fn update_gauges(&self) {
        if let Some(g) = &self.gauges {
            g.committed
                .set(self.stats.committed.load(Ordering::Relaxed) as i64);
            g.aborted
                .set(self.stats.aborted.load(Ordering::Relaxed) as i64);
            g.resent
                .set(self.stats.resent.load(Ordering::Relaxed) as i64);
        }
    }
}

impl<T> SinkWriter<T> for TxnWriter<T> {
    fn open(&mut self, ctx: &OperatorContext) -> Result<()> {
        self.common.open(ctx);
        self.gauges = Some(TxnGauges {
            committed: ctx
                .metrics
                .gauge(&ctx.name, ctx.subtask, "transactions_committed"),
            aborted: ctx
                .metrics
                .gauge(&ctx.name, ctx.subtask, "transactions_aborted"),
            resent: ctx
                .metrics
                .gauge(&ctx.name, ctx.subtask, "transactions_resent"),
            open: ctx
                .metrics
                .gauge(&ctx.name, ctx.subtask, "transaction_open"),
        });
        Ok(())
    }

    fn write(&mut self, rec: Record<T>) -> Result<()> {
        if self.current.is_none() {
            self.begin()?;
        }
        let (mut m, ts) = self.common.message(&rec)?;
        if m.topic.is_none() {
            m.topic = self.common.topic.clone();
        }
        if m.timestamp.is_none() {
            m.timestamp = ts;
        }
        let cur = self.current.as_mut().expect("begun");
        send(&self.slots[cur.slot].producer, None, &m, None)?;
        cur.records.push(m);
        if cur.records.len().is_multiple_of(1000) {
            let p = &self.slots[cur.slot].producer;
            p.poll(Duration::ZERO);
            if let Some(e) = delivery_error(p) {
                return Err(kafka_err("delivering a record in a transaction", e));
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if let Some(cur) = &self.current {
            let p = &self.slots[cur.slot].producer;
            p.poll(Duration::ZERO);
            if let Some(e) = delivery_error(p) {
                return Err(kafka_err("delivering a record in a transaction", e));
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        // The final snapshot pre-commits the last transaction.
        self.flush()
    }

    fn snapshot(&mut self, checkpoint_id: u64) -> Result<SinkSnapshot> {
        self.reclaim();
        if let Some(cur) = self.current.take() {
            let tp = self.slots[cur.slot].clone();
            let age = cur.began.elapsed();
            if age * 2 > self.timeout {
                tracing::warn!(
                    "kafka sink: transaction of {} was open {:?} at checkpoint {}, more than \
                     half of transaction.timeout.ms ({:?}): the broker aborts it at the timeout; \
                     shorten the checkpoint interval or raise the timeout",
                    tp.id,
                    age,
                    checkpoint_id,
                    self.timeout
                );
            }
            tp.pre_commit(&self.marker, cur.token)?;
            let item = postcard::to_allocvec(&PendingTxn {
                transactional_id: tp.id.clone(),
                token: cur.token,
                marker: self.marker.clone(),
                records: cur.records,
            })
            .expect("encodes");
            registry().lock().unwrap().open.insert(cur.token, tp);
            self.pending.push(PendingSlot {
                checkpoint: checkpoint_id,
                slot: cur.slot,
                token: cur.token,
                item,
            });
            if let Some(g) = &self.gauges {
                g.open.set(0);
            }
        }
        self.update_gauges();
        Ok(SinkSnapshot {
            state: vec![postcard::to_allocvec(&WriterState {
                subtask: self.subtask as u64,
                pool: self.pool as u64,
            })
            .expect("encodes")],
            pending_commit: self.pending.iter().map(|p| p.item.clone()).collect(),
        })
    }

    fn notify_checkpoint_complete(&mut self, id: u64) -> Result<()> {
        self.reclaim();
        if self.pending.iter().any(|p| p.checkpoint <= id) {
            // Committed by the committer before this notification, unless it had no item.
            tracing::debug!("kafka sink: checkpoint {id} complete with transactions still pending");
        }
        self.update_gauges();
        Ok(())
    }

    fn restore(&mut self, state: &[Vec<u8>]) -> Result<()> {
        // The committer already made sure the restored checkpoint's transactions are committed.
        // Fence what this subtask's ids (and, on subtask 0, those of subtasks this run does not
        // have: the checkpoint's, and any a failed run registered) left open after it.
        self.ensure_init()?;
        if self.subtask == 0 {
            let mut gone = Vec::new();
            for e in state {
                let s: WriterState = postcard::from_bytes(e)
                    .map_err(|x| WeirError::Config(format!("kafka sink state: {x}")))?;
                if s.subtask as usize >= self.parallelism && (s.pool as usize) > self.pool {
                    for n in self.pool..s.pool as usize {
                        gone.push(txn_id(&self.prefix, s.subtask as usize, n));
                    }
                }
            }
            init_all(&self.brokers, &self.props, &gone, self.timeout)?;
        }
        Ok(())
    }
}

impl<T> Drop for TxnWriter<T> {
    fn drop(&mut self) {
        // An open transaction of a cancelled or failed attempt: abort it now rather than at
        // the timeout (pre-committed ones stay for the committer, or the next attempt's fence).
        if let Some(cur) = self.current.take() {
            let p = &self.slots[cur.slot];
            if p.producer.abort_transaction(Duration::from_secs(5)).is_ok() {
                self.stats.aborted.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
