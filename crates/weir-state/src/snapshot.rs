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
pub type Blocks = BTreeMap<u32, BlockBuilder>;

/// Encodes blocks as `(key_group, bytes)` pairs.
pub fn encode_blocks(blocks: Blocks) -> Vec<(u32, Vec<u8>)> {
    blocks.into_iter().map(|(kg, b)| (kg, b.finish())).collect()
}

/// Appends one entry, encoded as in postcard(`EntryBytes`), to `out`.
#[inline]
pub fn write_entry(out: &mut Vec<u8>, key: &[u8], ns: &[u8], value: &[u8], written_ms: i64) {
    for bytes in [key, ns, value] {
        weir_types::encode_into(&bytes.len(), out);
        out.extend_from_slice(bytes);
    }
    weir_types::encode_into(&written_ms, out);
}

/// A key group's block being built, entries encoded as they come into one buffer per table (no
/// allocation per entry). [`BlockBuilder::finish`] gives exactly postcard(`KeyGroupBlock`).
#[derive(Default)]
pub struct BlockBuilder {
    /// `(table name, value type, entries, their encoding)`.
    tables: Vec<(String, String, u64, Vec<u8>)>,
    timers: Vec<TimerBytes>,
}

/// Appends postcard(`v`) to `out`.
fn put<T: Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) {
    let taken = std::mem::take(out);
    *out = postcard::to_extend(v, taken).expect("snapshot fields encode");
}

impl BlockBuilder {
    /// Adds an entry of table `name` (value type `type_name`) from its encoded key, namespace
    /// and value, as `EntryBytes` would hold them.
    pub fn add_entry(
        &mut self,
        name: &str,
        type_name: &str,
        key: &[u8],
        ns: &[u8],
        value: &[u8],
        written_ms: i64,
    ) {
        if self.tables.last().is_none_or(|t| t.0 != name) {
            self.tables
                .push((name.to_string(), type_name.to_string(), 0, Vec::new()));
        }
        let t = self.tables.last_mut().expect("pushed");
        t.2 += 1;
        write_entry(&mut t.3, key, ns, value, written_ms);
    }
    /// Adds `n` entries of table `name` at once, encoded by [`write_entry`] into `bytes`. The
    /// block must not hold entries of that table yet.
    pub fn add_entries(&mut self, name: &str, type_name: &str, n: u64, bytes: Vec<u8>) {
        debug_assert!(
            self.tables.iter().all(|t| t.0 != name),
            "one section a table"
        );
        self.tables
            .push((name.to_string(), type_name.to_string(), n, bytes));
    }
    /// Adds a timer.
    pub fn add_timer(&mut self, t: TimerBytes) {
        self.timers.push(t);
    }
    /// The block's bytes: postcard(`KeyGroupBlock`).
    pub fn finish(self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(self.tables.iter().map(|t| t.3.len() + 64).sum::<usize>() + 16);
        put(&mut out, &self.tables.len());
        for (name, ty, n, bytes) in &self.tables {
            put(&mut out, name.as_str());
            put(&mut out, ty.as_str());
            put(&mut out, n);
            out.extend_from_slice(bytes);
        }
        put(&mut out, &self.timers);
        out
    }
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

#[cfg(test)]
mod builder_tests {
    use super::*;

    /// The builder's bytes are postcard's for the same block, whatever the entries (lengths
    /// across varint boundaries, negative and large timestamps, several tables, timers).
    #[test]
    fn block_builder_writes_postcard_of_the_block() {
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..50 {
            let mut b = BlockBuilder::default();
            let mut want = KeyGroupBlock::default();
            for t in 0..(next() % 4) {
                let name = format!("table-{t}-{}", "x".repeat((next() % 200) as usize));
                let ty = format!("type{round}");
                let mut entries = Vec::new();
                for _ in 0..(next() % 40) {
                    let mut bytes = |max: u64| -> Vec<u8> {
                        (0..next() % max).map(|i| (i * 7) as u8).collect()
                    };
                    let e = EntryBytes {
                        key: bytes(20),
                        ns: bytes(3),
                        value: bytes(300),
                        written_ms: (next() as i64) >> (next() % 64),
                    };
                    b.add_entry(&name, &ty, &e.key, &e.ns, &e.value, e.written_ms);
                    entries.push(e);
                }
                if entries.is_empty() {
                    continue;
                }
                want.tables.push((name, ty, entries));
            }
            for _ in 0..(next() % 5) {
                let t = TimerBytes {
                    domain: (next() % 2) as u8,
                    ts: next() as i64,
                    key: vec![1, 2, 3],
                    ns: vec![],
                };
                b.add_timer(t.clone());
                want.timers.push(t);
            }
            assert_eq!(
                b.finish(),
                postcard::to_allocvec(&want).unwrap(),
                "round {round}"
            );
        }
    }
}
