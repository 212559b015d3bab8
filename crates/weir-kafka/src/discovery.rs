//! Which partitions exist, and which source subtask reads each.
//!
//! A partition's owner depends only on its topic, its number and the parallelism, never on the
//! other partitions: Flink's rule (`KafkaSourceEnumerator.getSplitOwner`), the topic's Java
//! `hashCode` picking where its partitions start and consecutive partitions going to
//! consecutive subtasks. So the partitions found at start and those discovered later (added to
//! a topic, or in a new topic matching a pattern) are each read by exactly one subtask, and a
//! partition already read never moves.
use crate::kafka_err;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use std::time::Duration;
use weir::{Result, WeirError};

/// The subtask (of `parallelism`) that reads `partition` of `topic`.
pub(crate) fn owner(topic: &str, partition: i32, parallelism: usize) -> usize {
    let p = parallelism.max(1);
    let start = (java_hash(topic).wrapping_mul(31) & 0x7fff_ffff) as usize % p;
    (start + partition.max(0) as usize) % p
}

/// Java's `String.hashCode` (over UTF-16 code units, wrapping), so that Weir spreads
/// partitions as Flink does.
fn java_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)))
}

/// The topics to read: `topics` as given, or those matching `pattern`.
pub(crate) enum Topics<'a> {
    Named(&'a [String]),
    Pattern(&'a regex_lite::Regex),
}

/// Every partition of the topics, sorted. `strict` (at start): a named topic that does not
/// exist is an error; otherwise (discovery) it is skipped.
pub(crate) fn list_partitions<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topics: Topics<'_>,
    timeout: Duration,
    strict: bool,
) -> Result<Vec<(String, i32)>> {
    let mut all = Vec::new();
    match topics {
        Topics::Pattern(re) => {
            let md = consumer
                .fetch_metadata(None, timeout)
                .map_err(|e| kafka_err("listing topics", e))?;
            for t in md.topics() {
                if t.name().starts_with("__") || !re.is_match(t.name()) || t.error().is_some() {
                    continue;
                }
                all.extend(
                    t.partitions()
                        .iter()
                        .map(|p| (t.name().to_string(), p.id())),
                );
            }
        }
        Topics::Named(names) => {
            for t in names {
                let md = consumer
                    .fetch_metadata(Some(t), timeout)
                    .map_err(|e| kafka_err(format!("metadata of topic '{t}'"), e))?;
                let Some(mt) = md.topics().iter().find(|x| x.name() == t) else {
                    if strict {
                        return Err(WeirError::Config(format!("kafka: no topic '{t}'")));
                    }
                    continue;
                };
                if let Some(e) = mt.error() {
                    if strict {
                        return Err(kafka_err(
                            format!("metadata of topic '{t}'"),
                            format!("{e:?}"),
                        ));
                    }
                    continue;
                }
                all.extend(mt.partitions().iter().map(|p| (t.clone(), p.id())));
            }
        }
    }
    all.sort();
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_hash_matches_java() {
        // Values of `String.hashCode()` in Java.
        assert_eq!(java_hash(""), 0);
        assert_eq!(java_hash("hello"), 99_162_322);
        assert_eq!(java_hash("orders"), -1_008_770_331);
        assert_eq!(java_hash("é"), 233);
    }

    #[test]
    fn owners_are_stable_and_spread_a_topic_round_robin() {
        for p in 1..5 {
            let owners: Vec<usize> = (0..8).map(|i| owner("orders", i, p)).collect();
            // Consecutive partitions go to consecutive subtasks.
            for w in owners.windows(2) {
                assert_eq!(w[1], (w[0] + 1) % p);
            }
            // Adding partitions (or topics) changes no existing owner: the rule has no other
            // input.
            assert_eq!(owner("orders", 3, p), owners[3]);
        }
        assert_eq!(owner("t", 5, 1), 0);
    }
}
