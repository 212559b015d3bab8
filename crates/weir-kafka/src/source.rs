//! The Kafka source.
//!
//! Each source subtask reads a fixed share of the partitions of its topics with its own
//! consumer, assigned by hand (no group rebalancing: Weir decides who reads what). A partition's
//! subtask depends only on its topic and number (Flink's rule, see `discovery`), so partitions
//! discovered while the job runs (every [`KafkaSource::discover_partitions_every`]: partitions
//! added to a topic, topics created that match a pattern) go to exactly one subtask and those
//! already read never move. Every partition is a split of [`SourceOutput`], so with
//! `assign_timestamps` right after the source, watermarks and idleness are tracked per
//! partition and the source's watermark is their minimum; a discovered partition is a new split.
//!
//! Positions: the offset of the next record of every partition is the source's checkpointed
//! state, the source of truth on restore (every subtask receives every entry and keeps its own
//! partitions'). When a checkpoint completes, those offsets are also committed to the consumer
//! group, for monitoring tools and for starting a new job with [`StartFrom::Committed`].
use crate::alignment::Member;
use crate::discovery::{list_partitions, owner, Topics};
use crate::record::{Deserializer, RawRecord};
use crate::{client_config, kafka_err, WatermarkAlignment};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir::{Poll, Result, Source, SourceOutput, SourceReader, WeirError};
use weir_runtime::PositionKind;
use weir_types::metrics::{Counter, Gauge};
use weir_types::NO_TIMESTAMP;

/// Where a partition starts when the job does not restore a position for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartFrom {
    /// The oldest record still in the partition.
    Earliest,
    /// The end of the partition when the reader starts.
    Latest,
    /// The first record with a timestamp at or after this (ms since the epoch); the end if none.
    Timestamp(i64),
    /// Given offsets per `(topic, partition)`; other partitions start at the earliest record.
    Offsets(HashMap<(String, i32), i64>),
    /// The consumer group's committed offsets; partitions without one start at the earliest
    /// record (`fallback_latest: false`) or at the end (`true`).
    Committed {
        /// Partitions without a committed offset start at the end instead of the beginning.
        fallback_latest: bool,
    },
}

/// Reads Kafka topics into a stream of `T`.
pub struct KafkaSource<T> {
    brokers: String,
    topics: Vec<String>,
    pattern: Option<regex_lite::Regex>,
    group_id: Option<String>,
    start: StartFrom,
    bounded: bool,
    props: Vec<(String, String)>,
    deserializer: Arc<dyn Deserializer<T>>,
    alignment: Option<WatermarkAlignment>,
    batch: usize,
    commit_on_checkpoint: bool,
    discovery: Option<Duration>,
}

/// The default interval of partition discovery (as Flink's `partition.discovery.interval.ms`).
pub const DEFAULT_DISCOVERY_INTERVAL: Duration = Duration::from_secs(5 * 60);

impl<T: 'static> KafkaSource<T> {
    /// Reads `topics` from the cluster at `brokers` (`host:port,...`), decoding values with
    /// `deserializer` ([`Raw`](crate::Raw), [`Bytes`](crate::Bytes), [`Utf8`](crate::Utf8),
    /// [`Json`](crate::Json), [`Avro`](crate::Avro) or a function of [`RawRecord`]). Starts at
    /// the earliest offsets, unbounded, discovering partitions every 5 minutes.
    pub fn new(
        brokers: impl Into<String>,
        topics: &[&str],
        deserializer: impl Deserializer<T>,
    ) -> Self {
        KafkaSource {
            brokers: brokers.into(),
            topics: topics.iter().map(|t| t.to_string()).collect(),
            pattern: None,
            group_id: None,
            start: StartFrom::Earliest,
            bounded: false,
            props: Vec::new(),
            deserializer: Arc::new(deserializer),
            alignment: None,
            batch: 500,
            commit_on_checkpoint: true,
            discovery: Some(DEFAULT_DISCOVERY_INTERVAL),
        }
    }
    /// Reads every topic whose whole name matches the regular expression `pattern` (internal
    /// topics, starting with `__`, excepted). Topics created later are picked up by partition
    /// discovery ([`discover_partitions_every`](Self::discover_partitions_every)).
    pub fn pattern(
        brokers: impl Into<String>,
        pattern: &str,
        deserializer: impl Deserializer<T>,
    ) -> Result<Self> {
        let re = regex_lite::Regex::new(&format!("^(?:{pattern})$"))
            .map_err(|e| WeirError::Config(format!("kafka topic pattern '{pattern}': {e}")))?;
        let mut s = Self::new(brokers, &[], deserializer);
        s.pattern = Some(re);
        Ok(s)
    }
    /// The consumer group: offsets are committed to it when checkpoints complete, and
    /// [`StartFrom::Committed`] reads them.
    pub fn group_id(mut self, g: impl Into<String>) -> Self {
        self.group_id = Some(g.into());
        self
    }
    /// Where partitions start when no checkpoint position is restored for them.
    pub fn start_from(mut self, s: StartFrom) -> Self {
        self.start = s;
        self
    }
    /// Bounded: every partition stops at its end offset as of when the reader starts, and the
    /// source finishes when all have. No partition discovery.
    pub fn bounded(mut self) -> Self {
        self.bounded = true;
        self
    }
    /// How often each reader lists the topics again (default every 5 minutes,
    /// [`DEFAULT_DISCOVERY_INTERVAL`], as Flink's `partition.discovery.interval.ms`;
    /// `Duration::ZERO` turns discovery off; bounded sources never discover). Partitions added
    /// to the topics, and for a [`pattern`](Self::pattern) the partitions of new matching
    /// topics, are read from their earliest offset by the subtask that owns them, as new splits
    /// with their own watermarks; their offsets are checkpointed like the others'. Listing
    /// blocks the reader's task for one metadata request (at most 10 s; a failure is logged and
    /// retried at the next interval).
    pub fn discover_partitions_every(mut self, interval: Duration) -> Self {
        self.discovery = (!interval.is_zero()).then_some(interval);
        self
    }
    /// A librdkafka consumer property (e.g. `isolation.level`, which defaults to
    /// `read_committed` here).
    pub fn property(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.props.push((k.into(), v.into()));
        self
    }
    /// Pauses partitions whose watermark runs ahead of the group's (see [`WatermarkAlignment`]).
    /// Needs `assign_timestamps` right after the source, which generates the watermarks.
    pub fn watermark_alignment(mut self, a: WatermarkAlignment) -> Self {
        self.alignment = Some(a);
        self
    }
    /// Don't commit offsets to the group when checkpoints complete.
    pub fn no_offset_commits(mut self) -> Self {
        self.commit_on_checkpoint = false;
        self
    }
    /// Most records one poll emits (default 500).
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch = n.max(1);
        self
    }
}

impl<T: 'static> Source<T> for KafkaSource<T> {
    fn create_reader(
        &self,
        subtask: usize,
        parallelism: usize,
    ) -> Result<Box<dyn SourceReader<T>>> {
        let mut c = client_config(&self.brokers, &[]);
        c.set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true")
            .set("isolation.level", "read_committed")
            .set("auto.offset.reset", "earliest")
            .set("client.id", format!("weir-source-{subtask}"));
        // librdkafka needs a group id even to assign partitions by hand (it never joins the
        // group: assignments are Weir's); offsets are committed only to a group the user named.
        c.set(
            "group.id",
            self.group_id.as_deref().unwrap_or("weir-unnamed"),
        );
        for (k, v) in &self.props {
            c.set(k, v);
        }
        let consumer: BaseConsumer<SourceCtx> = c
            .create_with_context(SourceCtx)
            .map_err(|e| kafka_err("creating a consumer", e))?;
        Ok(Box::new(KafkaReader {
            consumer,
            topics: self.topics.clone(),
            pattern: self.pattern.clone(),
            group_id: self.group_id.clone(),
            start: self.start.clone(),
            bounded: self.bounded,
            deserializer: self.deserializer.clone(),
            subtask,
            parallelism,
            started: false,
            restored: None,
            parts: Vec::new(),
            index: HashMap::new(),
            headers: Vec::new(),
            last_snapshot: Vec::new(),
            alignment: self.alignment.clone().map(|a| (Member::join(&a.group), a)),
            next_periodic: Instant::now(),
            max_allowed: None,
            batch: self.batch,
            commit: self.commit_on_checkpoint && self.group_id.is_some(),
            bytes_in: None,
            discovery: self.discovery.filter(|_| !self.bounded),
            next_discovery: Instant::now(),
        }))
    }
    fn is_bounded(&self) -> bool {
        self.bounded
    }
}

/// Reports librdkafka's events through `tracing`: commit failures as warnings, end-of-partition
/// events (which `poll` also returns) not as errors.
struct SourceCtx;

impl rdkafka::ClientContext for SourceCtx {
    fn error(&self, error: KafkaError, reason: &str) {
        if matches!(
            error.rdkafka_error_code(),
            Some(rdkafka::types::RDKafkaErrorCode::PartitionEOF)
        ) {
            tracing::trace!("kafka source: {reason}");
        } else {
            tracing::warn!("kafka source: {error}: {reason}");
        }
    }
}

impl ConsumerContext for SourceCtx {
    fn commit_callback(
        &self,
        result: rdkafka::error::KafkaResult<()>,
        offsets: &TopicPartitionList,
    ) {
        match result {
            Ok(()) => tracing::debug!("kafka source: committed {offsets:?}"),
            Err(e) => tracing::warn!("kafka source: committing offsets to the group failed: {e}"),
        }
    }
}

/// A checkpointed position: the next offset of a partition.
#[derive(Serialize, Deserialize)]
struct PartitionPosition {
    topic: String,
    partition: i32,
    next: i64,
}

struct Part {
    topic: String,
    partition: i32,
    split: usize,
    /// The offset of the next record to emit.
    next: i64,
    /// Bounded mode: stop before this offset.
    stop: Option<i64>,
    finished: bool,
    paused_since: Option<Instant>,
    last_wm: Option<i64>,
    lag: Gauge,
    watermark: Gauge,
    paused_ms: Counter,
}

struct KafkaReader<T> {
    consumer: BaseConsumer<SourceCtx>,
    topics: Vec<String>,
    pattern: Option<regex_lite::Regex>,
    group_id: Option<String>,
    start: StartFrom,
    bounded: bool,
    deserializer: Arc<dyn Deserializer<T>>,
    subtask: usize,
    parallelism: usize,
    started: bool,
    /// Restored next offsets, when the job restored a checkpoint.
    restored: Option<HashMap<(String, i32), i64>>,
    parts: Vec<Part>,
    /// topic → partition number → index in `parts`.
    index: HashMap<String, Vec<Option<usize>>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
    /// The offsets of the newest snapshot, committed to the group when it completes.
    last_snapshot: Vec<(String, i32, i64)>,
    alignment: Option<(Member, WatermarkAlignment)>,
    next_periodic: Instant,
    /// Alignment: the highest watermark a partition may reach before it is paused (the group's
    /// minimum plus the allowed drift, as of the last update).
    max_allowed: Option<i64>,
    batch: usize,
    commit: bool,
    bytes_in: Option<Counter>,
    /// Partition discovery's interval (`None`: off).
    discovery: Option<Duration>,
    next_discovery: Instant,
}

const TIMEOUT: Duration = Duration::from_secs(30);
/// A discovery blocks the task thread: a shorter bound than at start (it is retried anyway).
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(10);

impl<T: 'static> KafkaReader<T> {
    /// Finds this subtask's partitions and where each starts; assigns them.
    fn start(&mut self, out: &mut SourceOutput<T>) -> Result<()> {
        self.started = true;
        self.bytes_in = Some(out.ctx.counter("bytes_in"));
        if let Some(d) = self.discovery {
            self.next_discovery = Instant::now() + d;
        }
        let all = list_partitions(&self.consumer, self.topics(), TIMEOUT, true)?;
        let mine: Vec<(String, i32)> = all
            .into_iter()
            .filter(|(t, p)| owner(t, *p, self.parallelism) == self.subtask)
            .collect();
        let starts = self.start_offsets(mine, true)?;
        let tpl = self.add_parts(starts, out)?;
        tracing::info!(
            "kafka source subtask {}/{}: {} partitions: {}",
            self.subtask,
            self.parallelism,
            self.parts.len(),
            self.parts
                .iter()
                .map(|p| format!("{}-{}@{}", p.topic, p.partition, p.next))
                .collect::<Vec<_>>()
                .join(", ")
        );
        self.consumer
            .assign(&tpl)
            .map_err(|e| kafka_err("assigning partitions", e))?;
        Ok(())
    }

    fn topics(&self) -> Topics<'_> {
        match &self.pattern {
            Some(re) => Topics::Pattern(re),
            None => Topics::Named(&self.topics),
        }
    }

    /// Partition discovery: lists the topics again and starts reading, from their earliest
    /// offsets, the partitions this subtask owns that it does not read yet. A failure to list
    /// them is only logged: the next discovery tries again.
    fn discover(&mut self, out: &mut SourceOutput<T>) -> Result<()> {
        let all = match list_partitions(&self.consumer, self.topics(), DISCOVERY_TIMEOUT, false) {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!("kafka source: partition discovery: {e}");
                return Ok(());
            }
        };
        let new: Vec<(String, i32)> = all
            .into_iter()
            .filter(|(t, p)| {
                owner(t, *p, self.parallelism) == self.subtask && self.part_of(t, *p).is_none()
            })
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        let starts = match self.start_offsets(new, false) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("kafka source: partition discovery: {e}");
                return Ok(());
            }
        };
        let first = self.parts.len();
        let tpl = self.add_parts(starts, out)?;
        tracing::info!(
            "kafka source subtask {}/{}: discovered {}",
            self.subtask,
            self.parallelism,
            self.parts[first..]
                .iter()
                .map(|p| format!("{}-{}@{}", p.topic, p.partition, p.next))
                .collect::<Vec<_>>()
                .join(", ")
        );
        // Adds to the assignment; the partitions already assigned keep their fetch positions.
        self.consumer
            .incremental_assign(&tpl)
            .map_err(|e| kafka_err("assigning discovered partitions", e))
    }

    /// Where each partition starts, with its end offset: `(topic, partition, next, high)`.
    /// Positions restored from a checkpoint win; otherwise partitions found at start (`initial`)
    /// follow [`StartFrom`], and discovered ones start at their earliest offset (as Flink's).
    fn start_offsets(
        &self,
        mine: Vec<(String, i32)>,
        initial: bool,
    ) -> Result<Vec<(String, i32, i64, i64)>> {
        let start = if initial {
            &self.start
        } else {
            &StartFrom::Earliest
        };
        // Concrete start offsets for everything (never "latest": a restore must not skip).
        let mut committed: HashMap<(String, i32), i64> = HashMap::new();
        if matches!(start, StartFrom::Committed { .. }) && !mine.is_empty() {
            if self.group_id.is_none() {
                return Err(WeirError::Config(
                    "kafka: StartFrom::Committed needs a group id".into(),
                ));
            }
            let mut tpl = TopicPartitionList::new();
            for (t, p) in &mine {
                tpl.add_partition(t, *p);
            }
            let c = self
                .consumer
                .committed_offsets(tpl, TIMEOUT)
                .map_err(|e| kafka_err("reading committed offsets", e))?;
            for e in c.elements() {
                if let Offset::Offset(o) = e.offset() {
                    committed.insert((e.topic().to_string(), e.partition()), o);
                }
            }
        }
        let mut by_time: HashMap<(String, i32), i64> = HashMap::new();
        if let StartFrom::Timestamp(ts) = start {
            if !mine.is_empty() {
                let mut tpl = TopicPartitionList::new();
                for (t, p) in &mine {
                    tpl.add_partition_offset(t, *p, Offset::Offset(*ts))
                        .map_err(|e| kafka_err("offsets for a timestamp", e))?;
                }
                let r = self
                    .consumer
                    .offsets_for_times(tpl, TIMEOUT)
                    .map_err(|e| kafka_err("offsets for a timestamp", e))?;
                for e in r.elements() {
                    if let Offset::Offset(o) = e.offset() {
                        by_time.insert((e.topic().to_string(), e.partition()), o);
                    }
                }
            }
        }
        let mut starts = Vec::with_capacity(mine.len());
        for (t, p) in mine {
            let (low, high) = self
                .consumer
                .fetch_watermarks(&t, p, TIMEOUT)
                .map_err(|e| kafka_err(format!("offsets of {t}-{p}"), e))?;
            let key = (t, p);
            let restored = self.restored.as_ref().map(|r| r.get(&key).copied());
            let next = match restored {
                Some(Some(r)) => r,
                // A partition the checkpoint does not know (new): from its beginning.
                Some(None) => low,
                None => match start {
                    StartFrom::Earliest => low,
                    StartFrom::Latest => high,
                    StartFrom::Timestamp(_) => by_time.get(&key).copied().unwrap_or(high),
                    StartFrom::Offsets(m) => m.get(&key).copied().unwrap_or(low),
                    StartFrom::Committed { fallback_latest } => committed
                        .get(&key)
                        .copied()
                        .unwrap_or(if *fallback_latest { high } else { low }),
                },
            }
            .max(low);
            starts.push((key.0, key.1, next, high));
        }
        Ok(starts)
    }

    /// Makes each partition a split of `out` and one of `self.parts`; returns those to assign
    /// (in bounded mode, those already at their end are finished instead).
    fn add_parts(
        &mut self,
        starts: Vec<(String, i32, i64, i64)>,
        out: &mut SourceOutput<T>,
    ) -> Result<TopicPartitionList> {
        let mut tpl = TopicPartitionList::new();
        let name = out.ctx.name.clone();
        for (t, p, next, high) in starts {
            let split = out.add_split(format!("{t}-{p}"), PositionKind::Offset);
            let scope = format!("{name}.{t}-{p}");
            let metrics = &out.ctx.metrics;
            let part = Part {
                topic: t.clone(),
                partition: p,
                split,
                next,
                stop: self.bounded.then_some(high),
                finished: false,
                paused_since: None,
                last_wm: None,
                lag: metrics.gauge(&scope, self.subtask, "lag"),
                watermark: metrics.gauge(&scope, self.subtask, "watermark"),
                paused_ms: metrics.counter(&scope, self.subtask, "paused_for_alignment_ms"),
            };
            part.lag.set(high - next);
            let i = self.parts.len();
            let slots = self.index.entry(t.clone()).or_default();
            if slots.len() <= p as usize {
                slots.resize(p as usize + 1, None);
            }
            slots[p as usize] = Some(i);
            if part.stop.is_some_and(|s| next >= s) {
                self.parts.push(part);
                self.finish_part(i, out)?;
                continue;
            }
            tpl.add_partition_offset(&t, p, Offset::Offset(next))
                .map_err(|e| kafka_err("assigning partitions", e))?;
            self.parts.push(part);
        }
        Ok(tpl)
    }

    fn finish_part(&mut self, i: usize, out: &mut SourceOutput<T>) -> Result<()> {
        let p = &mut self.parts[i];
        if p.finished {
            return Ok(());
        }
        p.finished = true;
        p.lag.set(0);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&p.topic, p.partition);
        // Stop fetching it (an error only means it was not assigned yet).
        let _ = self.consumer.pause(&tpl);
        out.finish_split(p.split)
    }

    fn part_of(&self, topic: &str, partition: i32) -> Option<usize> {
        *self.index.get(topic)?.get(partition as usize)?
    }

    /// Publishes this reader's minimum watermark to its alignment group and recomputes the
    /// highest watermark a partition may reach.
    fn refresh_alignment(&mut self, out: &SourceOutput<T>) {
        let Some((member, a)) = &self.alignment else {
            return;
        };
        // The minimum over this reader's active partitions; paused ones count with their last
        // watermark (they are ahead, they never hold the group back).
        let local = self
            .parts
            .iter()
            .filter(|p| !p.finished)
            .filter_map(|p| {
                if p.paused_since.is_some() {
                    p.last_wm
                } else {
                    out.split_watermark(p.split)
                }
            })
            .min();
        // As Flink: a partition without records yet holds the group at the minimum, so the
        // others wait for it (or for its idleness).
        self.max_allowed = member
            .update(local)
            .map(|g| g.saturating_add(a.max_drift.as_millis() as i64));
    }

    /// Periodic work: lag and watermark gauges, watermark alignment.
    fn periodic(&mut self, out: &mut SourceOutput<T>) -> Result<()> {
        let now = Instant::now();
        if now < self.next_periodic {
            return Ok(());
        }
        let interval = self
            .alignment
            .as_ref()
            .map_or(Duration::from_millis(500), |(_, a)| a.update_interval);
        self.next_periodic = now + interval;
        let rk = self.consumer.client().native_ptr();
        for p in &mut self.parts {
            if let Some(w) = out.split_watermark(p.split) {
                p.last_wm = Some(w);
                p.watermark.set(w);
            }
            if !p.finished {
                // The high watermark from the latest fetch response (no request).
                let (mut low, mut high) = (0i64, 0i64);
                let topic = std::ffi::CString::new(p.topic.as_str()).unwrap_or_default();
                // SAFETY: a live client handle, a NUL-terminated topic, out-pointers to locals.
                let r = unsafe {
                    rdkafka::bindings::rd_kafka_get_watermark_offsets(
                        rk,
                        topic.as_ptr(),
                        p.partition,
                        &mut low,
                        &mut high,
                    )
                };
                if r == rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0 {
                    p.lag.set((high - p.next).max(0));
                }
            }
            if let Some(since) = p.paused_since {
                p.paused_ms.add(since.elapsed().as_millis() as u64);
                p.paused_since = Some(now);
            }
        }
        if self.alignment.is_none() {
            return Ok(());
        }
        self.refresh_alignment(out);
        for p in &mut self.parts {
            if p.finished {
                continue;
            }
            let ahead = match (self.max_allowed, p.last_wm) {
                (Some(m), Some(w)) => w > m,
                _ => false,
            };
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(&p.topic, p.partition);
            if ahead && p.paused_since.is_none() {
                self.consumer
                    .pause(&tpl)
                    .map_err(|e| kafka_err("pausing a partition", e))?;
                p.paused_since = Some(now);
                tracing::debug!(
                    "kafka: paused {}-{} (watermark {:?} beyond the group's minimum plus the \
                     allowed drift, {:?})",
                    p.topic,
                    p.partition,
                    p.last_wm,
                    self.max_allowed
                );
            } else if !ahead && p.paused_since.is_some() {
                self.consumer
                    .resume(&tpl)
                    .map_err(|e| kafka_err("resuming a partition", e))?;
                p.paused_since = None;
                tracing::debug!("kafka: resumed {}-{}", p.topic, p.partition);
            }
        }
        Ok(())
    }
}

impl<T: 'static> SourceReader<T> for KafkaReader<T> {
    fn poll(&mut self, out: &mut SourceOutput<T>) -> Result<Poll> {
        if !self.started {
            self.start(out)?;
        }
        self.periodic(out)?;
        if let Some(d) = self.discovery {
            let now = Instant::now();
            if now >= self.next_discovery {
                self.discover(out)?;
                self.next_discovery = Instant::now() + d;
            }
        }
        if self.bounded && self.parts.iter().all(|p| p.finished) {
            return Ok(Poll::Finished);
        }
        let wants_headers = self.deserializer.wants_headers();
        let mut emitted = 0;
        while emitted < self.batch {
            let m = match self.consumer.poll(Duration::ZERO) {
                None => break,
                Some(Ok(m)) => m,
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    // End of a partition (or of its committed records): bounded mode may be done.
                    // The position may be past control records that were never delivered.
                    let pos = self.consumer.position().ok();
                    for i in 0..self.parts.len() {
                        let part = &self.parts[i];
                        if part.partition != p || part.finished {
                            continue;
                        }
                        let at = pos
                            .as_ref()
                            .and_then(|l| l.find_partition(&part.topic, p))
                            .and_then(|e| match e.offset() {
                                Offset::Offset(o) => Some(o),
                                _ => None,
                            })
                            .unwrap_or(part.next)
                            .max(part.next);
                        self.parts[i].next = at;
                        if self.parts[i].stop.is_some_and(|s| at >= s) {
                            self.finish_part(i, out)?;
                        }
                    }
                    continue;
                }
                Some(Err(e)) => {
                    if let Some((code, reason)) = self.consumer.client().fatal_error() {
                        return Err(kafka_err("consumer", format!("{code:?}: {reason}")));
                    }
                    tracing::warn!("kafka source: {e}");
                    continue;
                }
            };
            let Some(i) = self.part_of(m.topic(), m.partition()) else {
                continue;
            };
            let offset = m.offset();
            let part = &self.parts[i];
            if part.finished || offset < part.next {
                continue;
            }
            if part.stop.is_some_and(|s| offset >= s) {
                self.finish_part(i, out)?;
                continue;
            }
            let split = part.split;
            self.headers.clear();
            if wants_headers {
                if let Some(h) = m.headers() {
                    for x in h.iter() {
                        self.headers
                            .push((x.key.to_string(), x.value.map(<[u8]>::to_vec)));
                    }
                }
            }
            let raw = RawRecord {
                topic: m.topic(),
                partition: m.partition(),
                offset,
                timestamp: m.timestamp().to_millis(),
                key: m.key(),
                value: m.payload(),
                headers: &self.headers,
            };
            if let Some(b) = &self.bytes_in {
                b.add((m.payload_len() + m.key().map_or(0, <[u8]>::len)) as u64);
            }
            out.set_position(split, offset as u64);
            match self.deserializer.deserialize(&raw) {
                Ok(v) => out.collect(split, v, raw.timestamp.unwrap_or(NO_TIMESTAMP))?,
                Err(e) => out.bad_record(split, offset as u64, m.payload().unwrap_or(&[]), e)?,
            }
            emitted += 1;
            self.parts[i].next = offset + 1;
            if let Some(m) = self.max_allowed {
                // Alignment between updates: pause as soon as the partition runs ahead (after
                // checking with the group again: it may be the one that holds it back). What
                // librdkafka fetched beyond this record is dropped and fetched again on resume.
                let w = out.split_watermark(split).filter(|w| *w > m);
                if w.is_some() && self.parts[i].paused_since.is_none() {
                    self.refresh_alignment(out);
                }
                let max_allowed = self.max_allowed;
                let part = &mut self.parts[i];
                if part.paused_since.is_none() {
                    if let Some(w) = w.filter(|w| max_allowed.is_some_and(|m| *w > m)) {
                        part.last_wm = Some(w);
                        let mut tpl = TopicPartitionList::new();
                        tpl.add_partition(&part.topic, part.partition);
                        self.consumer
                            .pause(&tpl)
                            .map_err(|e| kafka_err("pausing a partition", e))?;
                        part.paused_since = Some(Instant::now());
                    }
                }
            }
            let part = &self.parts[i];
            if part.stop.is_some_and(|s| part.next >= s) {
                self.finish_part(i, out)?;
            }
        }
        if self.bounded && self.parts.iter().all(|p| p.finished) {
            return Ok(Poll::Finished);
        }
        Ok(if emitted > 0 {
            Poll::Ready
        } else {
            Poll::Pending(10)
        })
    }

    fn snapshot(&mut self) -> Result<Vec<Vec<u8>>> {
        if !self.started {
            // Not started yet: the restored positions still stand.
            return Ok(self
                .restored
                .iter()
                .flatten()
                .map(|((topic, partition), next)| {
                    postcard::to_allocvec(&PartitionPosition {
                        topic: topic.clone(),
                        partition: *partition,
                        next: *next,
                    })
                    .expect("encodes")
                })
                .collect());
        }
        self.last_snapshot = self
            .parts
            .iter()
            .map(|p| (p.topic.clone(), p.partition, p.next))
            .collect();
        Ok(self
            .parts
            .iter()
            .map(|p| {
                postcard::to_allocvec(&PartitionPosition {
                    topic: p.topic.clone(),
                    partition: p.partition,
                    next: p.next,
                })
                .expect("encodes")
            })
            .collect())
    }

    fn restore(&mut self, entries: &[Vec<u8>]) -> Result<()> {
        let mut m = HashMap::new();
        for e in entries {
            let p: PartitionPosition = postcard::from_bytes(e)
                .map_err(|x| WeirError::Config(format!("kafka source state: {x}")))?;
            // A subtask that had not started yet when the checkpoint was taken repeats the
            // positions it was restored with: offsets only advance, so the highest one wins.
            let next = m.entry((p.topic, p.partition)).or_insert(p.next);
            *next = (*next).max(p.next);
        }
        self.restored = Some(m);
        Ok(())
    }

    fn notify_checkpoint_complete(&mut self, _id: u64) -> Result<()> {
        // Checkpoints complete in order and one at a time: the newest snapshot is the one
        // that completed. Committing is informational; a failure is only logged.
        if !self.commit || self.last_snapshot.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for (t, p, o) in &self.last_snapshot {
            if tpl.add_partition_offset(t, *p, Offset::Offset(*o)).is_err() {
                return Ok(());
            }
        }
        if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
            tracing::warn!("kafka source: committing offsets to the group: {e}");
        }
        Ok(())
    }
}
