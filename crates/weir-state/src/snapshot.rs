//! The canonical snapshot format of keyed state: per key group, every table's entries and every
//! timer as serialized bytes. It does not depend on the backend, so a snapshot taken from the
//! memory backend restores into a disk backend and back, and at any parallelism (key groups are
//! the unit of redistribution).
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One entry of one table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EntryBytes {
    /// postcard(key).
    pub key: Vec<u8>,
    /// postcard(namespace).
    pub ns: Vec<u8>,
    /// postcard(value).
    pub value: Vec<u8>,
    /// Processing time of the last write (TTL).
    pub written_ms: i64,
}

/// One timer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TimerBytes {
    /// 0 = event time, 1 = processing time.
    pub domain: u8,
    /// When it fires.
    pub ts: i64,
    /// postcard(key).
    pub key: Vec<u8>,
    /// postcard(namespace).
    pub ns: Vec<u8>,
}

/// Everything of one key group.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct KeyGroupBlock {
    /// `(table name, value type, entries)`. The value type (its Rust type name) is checked on
    /// restore: postcard is not self-describing, so restoring bytes into another type could
    /// otherwise decode into garbage.
    pub tables: Vec<(String, String, Vec<EntryBytes>)>,
    /// Timers.
    pub timers: Vec<TimerBytes>,
}

/// Blocks by key group, being built.
pub type Blocks = BTreeMap<u32, KeyGroupBlock>;

/// Encodes blocks as `(key_group, bytes)` pairs.
pub fn encode_blocks(blocks: Blocks) -> Vec<(u32, Vec<u8>)> {
    blocks
        .into_iter()
        .map(|(kg, b)| {
            (
                kg,
                postcard::to_allocvec(&b).expect("key group blocks encode"),
            )
        })
        .collect()
}

/// Decodes `(key_group, bytes)` pairs.
pub fn decode_blocks(raw: &[(u32, Vec<u8>)]) -> Result<Vec<(u32, KeyGroupBlock)>, String> {
    raw.iter()
        .map(|(kg, b)| {
            postcard::from_bytes(b)
                .map(|blk| (*kg, blk))
                .map_err(|e| format!("key group {kg}: {e}"))
        })
        .collect()
}

/// Encodes a value for a snapshot.
pub fn to_bytes<T: Serialize + ?Sized>(v: &T) -> Vec<u8> {
    postcard::to_allocvec(v).expect("state values of Data types encode")
}
