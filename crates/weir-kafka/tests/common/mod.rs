//! Test helpers: a real Kafka broker (started once per test binary through `scripts/services`,
//! unless `KAFKA_BOOTSTRAP` names one already), topics, producing and reading back.
#![allow(dead_code)]
use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use weir_kafka::KafkaRecord;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The broker's `host:port`: `KAFKA_BOOTSTRAP`, or a broker this test binary starts.
pub fn bootstrap() -> &'static str {
    static B: OnceLock<String> = OnceLock::new();
    B.get_or_init(|| {
        if let Ok(b) = std::env::var("KAFKA_BOOTSTRAP") {
            if !b.is_empty() {
                return b;
            }
        }
        let dir = std::env::var("WEIR_SERVICES_DIR")
            .unwrap_or_else(|_| format!("{}/weir-services", env!("CARGO_TARGET_TMPDIR")));
        let out = Command::new(repo_root().join("scripts/services"))
            .args(["start", "kafka"])
            .env("WEIR_SERVICES_DIR", &dir)
            .output()
            .expect("running scripts/services");
        assert!(
            out.status.success(),
            "scripts/services start kafka failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        stdout
            .lines()
            .find_map(|l| l.strip_prefix("KAFKA_BOOTSTRAP="))
            .expect("KAFKA_BOOTSTRAP in the output")
            .to_string()
    })
}

/// A topic name unique to this test run.
pub fn unique(name: &str) -> String {
    let ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{name}-{}-{}", std::process::id(), ns % 1_000_000_000)
}

pub fn create_topic(name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .create()
        .unwrap();
    let rt = tokio_rt();
    let r = rt
        .block_on(admin.create_topics(
            &[NewTopic::new(name, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        ))
        .unwrap();
    for x in r {
        x.unwrap_or_else(|(t, e)| panic!("creating topic {t}: {e}"));
    }
}

/// Grows `topic` to `total` partitions.
pub fn add_partitions(topic: &str, total: usize) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .create()
        .unwrap();
    let r = tokio_rt()
        .block_on(admin.create_partitions(
            &[NewPartitions::new(topic, total)],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        ))
        .unwrap();
    for x in r {
        x.unwrap_or_else(|(t, e)| panic!("adding partitions to {t}: {e}"));
    }
}

/// Waits until `f` holds (or panics after `secs`).
pub fn wait_until(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn tokio_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// One record to produce.
#[derive(Clone, Default)]
pub struct Rec {
    pub partition: Option<i32>,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub ts: Option<i64>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Rec {
    pub fn new(partition: i32, value: impl Into<Vec<u8>>) -> Rec {
        Rec {
            partition: Some(partition),
            value: value.into(),
            ..Default::default()
        }
    }
    pub fn ts(mut self, ts: i64) -> Rec {
        self.ts = Some(ts);
        self
    }
}

pub fn produce(topic: &str, recs: &[Rec]) {
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("linger.ms", "5")
        .set("partitioner", "murmur2_random")
        .create()
        .unwrap();
    for r in recs {
        let mut b: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).payload(&r.value[..]);
        if let Some(pt) = r.partition {
            b = b.partition(pt);
        }
        if let Some(k) = &r.key {
            b = b.key(&k[..]);
        }
        if let Some(t) = r.ts {
            b = b.timestamp(t);
        }
        if !r.headers.is_empty() {
            let mut h = OwnedHeaders::new();
            for (k, v) in &r.headers {
                h = h.insert(Header {
                    key: k,
                    value: Some(v),
                });
            }
            b = b.headers(h);
        }
        loop {
            match p.send(b) {
                Ok(()) => break,
                Err((_, back)) => {
                    b = back;
                    p.poll(Duration::from_millis(20));
                }
            }
        }
    }
    p.flush(Duration::from_secs(30)).unwrap();
}

/// Everything in `topic` (read_committed or not), until every partition is at its end.
pub fn read_all(topic: &str, read_committed: bool) -> Vec<KafkaRecord> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("enable.partition.eof", "true")
        .set("group.id", "weir-test-reader")
        .set(
            "isolation.level",
            if read_committed {
                "read_committed"
            } else {
                "read_uncommitted"
            },
        )
        .create()
        .unwrap();
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let parts: Vec<i32> = md.topics()[0].partitions().iter().map(|p| p.id()).collect();
    let mut tpl = TopicPartitionList::new();
    for p in &parts {
        tpl.add_partition_offset(topic, *p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut eof = std::collections::HashSet::new();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while eof.len() < parts.len() {
        assert!(Instant::now() < deadline, "reading {topic} timed out");
        match c.poll(Duration::from_millis(100)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(p))) => {
                eof.insert(p);
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            Some(Ok(m)) => {
                eof.remove(&m.partition());
                out.push(KafkaRecord {
                    topic: m.topic().to_string(),
                    partition: m.partition(),
                    offset: m.offset(),
                    timestamp: m.timestamp().to_millis(),
                    key: m.key().map(<[u8]>::to_vec),
                    value: m.payload().map(<[u8]>::to_vec),
                    headers: m
                        .headers()
                        .map(|h| {
                            h.iter()
                                .map(|x| (x.key.to_string(), x.value.map(<[u8]>::to_vec)))
                                .collect()
                        })
                        .unwrap_or_default(),
                });
            }
        }
    }
    out
}

/// The offsets `group` committed for partitions `0..n` of `topic` (-1: none).
pub fn group_offsets(group: &str, topic: &str, n: i32) -> Vec<i64> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..n {
        tpl.add_partition(topic, p);
    }
    let r = c.committed_offsets(tpl, Duration::from_secs(30)).unwrap();
    r.elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => o,
            _ => -1,
        })
        .collect()
}
