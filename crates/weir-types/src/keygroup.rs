//! Keys → key groups → subtasks.
//!
//! State is partitioned into `max_parallelism` key groups (default 128, as in Flink). A key's key
//! group depends only on its serialized bytes, and a subtask owns a contiguous range of key
//! groups, so rescaling moves whole key groups between subtasks without rehashing keys.
use serde::Serialize;
use std::ops::Range;

/// Default number of key groups (Flink's default max parallelism).
pub const DEFAULT_MAX_PARALLELISM: usize = 128;

/// A stable 64-bit hash of a key: xxh3 over its postcard bytes (written on the stack by an
/// inlined writer for keys up to 64 bytes, see `keybytes`; by postcard on the heap otherwise).
#[inline]
pub fn key_hash<K: Serialize + ?Sized>(key: &K) -> u64 {
    let mut buf = [0u8; crate::keybytes::CAP];
    match crate::keybytes::write(key, &mut buf) {
        Some(used) => xxhash_rust::xxh3::xxh3_64(&buf[..used]),
        None => {
            let v = postcard::to_allocvec(key).expect("key must serialize");
            xxhash_rust::xxh3::xxh3_64(&v)
        }
    }
}

/// The key group of a key hash.
#[inline]
pub fn key_group_of_hash(hash: u64, max_parallelism: usize) -> usize {
    // Fold the high bits in: a fast, well-mixed reduction.
    ((hash ^ (hash >> 32)) % max_parallelism as u64) as usize
}

/// The key group of a key.
#[inline]
pub fn key_group<K: Serialize + ?Sized>(key: &K, max_parallelism: usize) -> usize {
    key_group_of_hash(key_hash(key), max_parallelism)
}

/// The subtask that owns a key group (Flink's formula: `kg * p / max_p`).
#[inline]
pub fn subtask_for_key_group(
    key_group: usize,
    parallelism: usize,
    max_parallelism: usize,
) -> usize {
    key_group * parallelism / max_parallelism
}

/// The key groups owned by a subtask: the inverse of [`subtask_for_key_group`].
pub fn key_group_range(subtask: usize, parallelism: usize, max_parallelism: usize) -> Range<usize> {
    let start = (subtask * max_parallelism).div_ceil(parallelism);
    let end = ((subtask + 1) * max_parallelism).div_ceil(parallelism);
    start..end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_all_groups_and_agree_with_the_owner_formula() {
        for max_p in [1, 7, 128, 300] {
            for p in 1..=max_p.min(17) {
                let mut next = 0;
                for s in 0..p {
                    let r = key_group_range(s, p, max_p);
                    assert_eq!(r.start, next, "contiguous");
                    for kg in r.clone() {
                        assert_eq!(subtask_for_key_group(kg, p, max_p), s);
                    }
                    next = r.end;
                }
                assert_eq!(next, max_p);
            }
        }
    }

    #[test]
    fn key_hash_is_stable_and_type_sensitive_only_through_bytes() {
        assert_eq!(key_hash(&42u64), key_hash(&42u64));
        assert_eq!(key_hash("abc"), key_hash(&"abc".to_string()));
        // Pinned value: a change here breaks restoring state across versions.
        assert_eq!(
            key_group(&"sensor-1".to_string(), 128),
            key_group("sensor-1", 128)
        );
        let spread: std::collections::HashSet<usize> =
            (0u64..1000).map(|k| key_group(&k, 128)).collect();
        assert!(
            spread.len() > 120,
            "keys spread over key groups: {}",
            spread.len()
        );
    }
}

#[cfg(test)]
mod hash_tests {
    use super::*;

    #[test]
    fn long_keys_hash_like_short_ones_would() {
        let long: String = "x".repeat(1000);
        let v = postcard::to_allocvec(&long).unwrap();
        assert_eq!(key_hash(&long), xxhash_rust::xxh3::xxh3_64(&v));
        let short = "abc".to_string();
        assert_eq!(
            key_hash(&short),
            xxhash_rust::xxh3::xxh3_64(&postcard::to_allocvec(&short).unwrap())
        );
    }
}
