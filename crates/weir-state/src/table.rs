//! Tables: `(key, namespace) → value`, the storage under every kind of keyed state.
use hashbrown::{DefaultHashBuilder, HashTable};
use serde::{Deserialize, Serialize};
use std::hash::BuildHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use weir_types::Data;

/// What a namespace must be: `()` for plain keyed state, a window for window state.
pub trait Namespace: Data + Hash + Eq {}
impl<T: Data + Hash + Eq> Namespace for T {}

/// A stored value with the processing time (ms) it was last written, for TTL.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stamped<V> {
    /// The value.
    pub value: V,
    /// Processing time of the last write, in ms.
    pub written_ms: i64,
}

/// One piece of keyed state for every key and namespace of an operator subtask.
///
/// Reads hand out references through closures rather than returning them, so that a backend
/// keeping bytes can decode into a temporary.
pub trait Table<K, N, V> {
    /// Calls `f` with the entry, if any.
    fn read(&self, key: &K, ns: &N, f: &mut dyn FnMut(Option<&V>));
    /// If the entry exists, `f(Some(&mut v))` may change it in place (its return is ignored);
    /// if not, `f(None)` may return a value to insert.
    fn upsert(&mut self, key: &K, ns: &N, f: &mut dyn FnMut(Option<&mut V>) -> Option<V>);
    /// Sets the entry.
    fn put(&mut self, key: &K, ns: &N, v: V);
    /// Removes the entry, returning it.
    fn remove(&mut self, key: &K, ns: &N) -> Option<V>;
    /// Number of entries.
    fn len(&self) -> usize;
    /// Whether there is no entry.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Visits every entry.
    fn for_each(&self, f: &mut dyn FnMut(&K, &N, &V));
    /// Keeps only the entries for which `f` returns true.
    fn retain(&mut self, f: &mut dyn FnMut(&K, &N, &mut V) -> bool);
    /// Looks the entry up without using it, bringing it into the CPU cache: a batch of
    /// independent touches overlaps its cache misses, so the accesses that follow find their
    /// entries close. Returns whether it exists (so the lookup is not optimized away). Tables
    /// that are not in memory do nothing.
    fn touch(&self, _key: &K, _ns: &N) -> bool {
        false
    }
    /// [`Table::touch`] of every key of `keys` (one call, a tight loop: more lookups in
    /// flight at once); returns how many exist.
    fn touch_all(&self, keys: &[Option<K>], ns: &N) -> usize {
        keys.iter().flatten().filter(|k| self.touch(k, ns)).count()
    }
    /// A consistent view of every entry, to visit later on another thread while this table
    /// keeps changing (a snapshot's asynchronous part). The default copies the entries now.
    fn frozen_entries(&mut self) -> FrozenEntries<K, N, V>
    where
        K: Clone + Send + 'static,
        N: Clone + Send + 'static,
        V: Clone + Send + 'static,
    {
        let mut all = Vec::with_capacity(self.len());
        self.for_each(&mut |k, n, v| all.push((k.clone(), n.clone(), v.clone())));
        Box::new(move |f| {
            for (k, n, v) in &all {
                f(k, n, v)
            }
        })
    }
    /// Background housekeeping (merging a finished snapshot's copy-on-write delta).
    fn maintain(&mut self) {}
}

/// Borrowed `(key, namespace)`, to look up without cloning either.
struct Pair<'a, K, N>(&'a K, &'a N);

impl<K: Hash, N: Hash> Hash for Pair<'_, K, N> {
    fn hash<H: Hasher>(&self, h: &mut H) {
        // Same as the tuple's derived Hash: fields in order.
        self.0.hash(h);
        self.1.hash(h);
    }
}

/// Visits every entry of a frozen view of a table, later and on another thread.
pub type FrozenEntries<K, N, V> = Box<dyn FnOnce(&mut dyn FnMut(&K, &N, &V)) + Send>;

/// The memory backend's table: hash maps of objects. Access costs one hash and one lookup, no
/// serialization.
///
/// The entries are spread over [`SHARDS`] maps by bits of their hash. Snapshots are
/// copy-on-write by shard: [`Table::frozen_entries`] moves each map behind an `Arc` shared with
/// a background thread that serializes it (O(number of shards)); the first write to a shard
/// takes it back, copying it only if that snapshot still holds it; later writes cost nothing
/// extra, and shards not written until the snapshot is done are never copied. So a snapshot costs at most
/// one copy of the table, made in pieces of 1/[`SHARDS`], with no per-entry bookkeeping and
/// nothing to merge back. Growing a shard rehashes only that shard.
pub struct HeapTable<K, N, V> {
    /// Empty until the first write, then [`SHARDS`] maps.
    shards: Vec<Shard<((K, N), V)>>,
    hasher: DefaultHashBuilder,
    len: usize,
}

/// One map of a [`HeapTable`]: owned (written in place, no atomic operation per write), or
/// shared with a snapshot since the last freeze (the first write takes it back, copying it
/// only if the snapshot still holds it).
enum Shard<T> {
    Owned(HashTable<T>),
    Shared(Arc<HashTable<T>>),
}

impl<T: Clone> Shard<T> {
    #[inline(always)]
    fn get(&self) -> &HashTable<T> {
        match self {
            Shard::Owned(t) => t,
            Shard::Shared(t) => t,
        }
    }
    #[inline(always)]
    fn get_mut(&mut self) -> &mut HashTable<T> {
        if let Shard::Shared(_) = self {
            self.take_back();
        }
        match self {
            Shard::Owned(t) => t,
            Shard::Shared(_) => unreachable!("taken back"),
        }
    }
    #[cold]
    fn take_back(&mut self) {
        if let Shard::Shared(t) = std::mem::replace(self, Shard::Owned(HashTable::new())) {
            *self = Shard::Owned(Arc::try_unwrap(t).unwrap_or_else(|t| (*t).clone()));
        }
    }
    /// Shares the map with a snapshot: O(1).
    fn share(&mut self) -> Arc<HashTable<T>> {
        let t = match std::mem::replace(self, Shard::Owned(HashTable::new())) {
            Shard::Owned(t) => Arc::new(t),
            Shard::Shared(t) => t,
        };
        *self = Shard::Shared(t.clone());
        t
    }
}

/// Maps per [`HeapTable`].
pub const SHARDS: usize = 64;

/// The shard of a hash: bits 51..57, clear of the bits hashbrown uses inside a map (the top 7
/// for its tags, the low ones for the bucket).
#[inline(always)]
fn shard_of(hash: u64) -> usize {
    ((hash >> 51) as usize) & (SHARDS - 1)
}

impl<K, N, V> Default for HeapTable<K, N, V> {
    fn default() -> Self {
        HeapTable {
            shards: Vec::new(),
            hasher: DefaultHashBuilder::default(),
            len: 0,
        }
    }
}

impl<K: Hash + Eq + Clone, N: Hash + Eq + Clone, V: Clone> HeapTable<K, N, V> {
    #[inline(always)]
    fn hash(&self, key: &K, ns: &N) -> u64 {
        self.hasher.hash_one(Pair(key, ns))
    }

    /// The entry of `(key, ns)` with hash `h`, if any.
    #[inline(always)]
    fn find(&self, h: u64, key: &K, ns: &N) -> Option<&V> {
        let shard = self.shards.get(shard_of(h))?;
        shard
            .get()
            .find(h, |e| e.0 .0 == *key && e.0 .1 == *ns)
            .map(|e| &e.1)
    }

    /// The shard of hash `h`, writable: copied first if a snapshot still holds it.
    #[inline(always)]
    fn shard_mut(&mut self, h: u64) -> (&mut HashTable<((K, N), V)>, &DefaultHashBuilder) {
        if self.shards.is_empty() {
            self.shards = (0..SHARDS)
                .map(|_| Shard::Owned(HashTable::new()))
                .collect();
        }
        (self.shards[shard_of(h)].get_mut(), &self.hasher)
    }
}

impl<K, N, V> Table<K, N, V> for HeapTable<K, N, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    N: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    #[inline]
    fn read(&self, key: &K, ns: &N, f: &mut dyn FnMut(Option<&V>)) {
        f(self.find(self.hash(key, ns), key, ns))
    }
    #[inline]
    fn touch(&self, key: &K, ns: &N) -> bool {
        self.find(self.hash(key, ns), key, ns).is_some()
    }
    fn touch_all(&self, keys: &[Option<K>], ns: &N) -> usize {
        keys.iter()
            .flatten()
            .filter(|k| self.find(self.hash(k, ns), k, ns).is_some())
            .count()
    }
    #[inline]
    fn upsert(&mut self, key: &K, ns: &N, f: &mut dyn FnMut(Option<&mut V>) -> Option<V>) {
        let h = self.hash(key, ns);
        let (shard, hasher) = self.shard_mut(h);
        match shard.find_mut(h, |e| e.0 .0 == *key && e.0 .1 == *ns) {
            Some(e) => {
                f(Some(&mut e.1));
            }
            None => {
                if let Some(v) = f(None) {
                    shard.insert_unique(h, ((key.clone(), ns.clone()), v), |e| {
                        hasher.hash_one(Pair(&e.0 .0, &e.0 .1))
                    });
                    self.len += 1;
                }
            }
        }
    }
    #[inline]
    fn put(&mut self, key: &K, ns: &N, v: V) {
        self.upsert(key, ns, &mut |cur| match cur {
            Some(slot) => {
                *slot = v.clone();
                None
            }
            None => Some(v.clone()),
        })
    }
    #[inline]
    fn remove(&mut self, key: &K, ns: &N) -> Option<V> {
        let h = self.hash(key, ns);
        // Only copy a shard a snapshot holds if there is something to remove.
        self.find(h, key, ns)?;
        let (shard, _) = self.shard_mut(h);
        let e = shard
            .find_entry(h, |e| e.0 .0 == *key && e.0 .1 == *ns)
            .ok()?;
        let v = e.remove().0 .1;
        self.len -= 1;
        Some(v)
    }
    fn len(&self) -> usize {
        self.len
    }
    fn for_each(&self, f: &mut dyn FnMut(&K, &N, &V)) {
        for shard in &self.shards {
            for ((k, n), v) in shard.get().iter() {
                f(k, n, v)
            }
        }
    }
    fn retain(&mut self, f: &mut dyn FnMut(&K, &N, &mut V) -> bool) {
        let mut len = 0;
        for shard in &mut self.shards {
            let shard = shard.get_mut();
            shard.retain(|((k, n), v)| f(k, n, v));
            len += shard.len();
        }
        self.len = len;
    }
    fn frozen_entries(&mut self) -> FrozenEntries<K, N, V> {
        let shards: Vec<_> = self.shards.iter_mut().map(Shard::share).collect();
        Box::new(move |f| {
            for shard in &shards {
                for ((k, n), v) in shard.iter() {
                    f(k, n, v)
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(t: &HeapTable<u32, (), i64>) -> Vec<(u32, i64)> {
        let mut v = Vec::new();
        t.for_each(&mut |k, _, x| v.push((*k, *x)));
        v.sort();
        v
    }

    #[test]
    fn a_frozen_snapshot_keeps_its_values_while_the_table_changes() {
        let mut t: HeapTable<u32, (), i64> = HeapTable::default();
        for k in 0..5 {
            t.put(&k, &(), k as i64);
        }
        let frozen = t.frozen_entries();
        // Change, add and remove after the freeze.
        t.upsert(&0, &(), &mut |v| {
            *v.unwrap() += 100;
            None
        });
        t.put(&1, &(), 11);
        t.put(&9, &(), 9);
        assert_eq!(t.remove(&2, &()), Some(2));
        assert_eq!(t.remove(&2, &()), None);
        t.upsert(&2, &(), &mut |v| {
            assert!(v.is_none(), "removed after the freeze");
            Some(22)
        });
        assert_eq!(t.len(), 6);
        assert_eq!(
            view(&t),
            vec![(0, 100), (1, 11), (2, 22), (3, 3), (4, 4), (9, 9)]
        );
        let mut snap = Vec::new();
        frozen(&mut |k, _, v| snap.push((*k, *v)));
        snap.sort();
        assert_eq!(
            snap,
            vec![(0, 0), (1, 1), (2, 2), (3, 3), (4, 4)],
            "the snapshot sees the table as at the freeze"
        );
        t.maintain();
        assert_eq!(
            view(&t),
            vec![(0, 100), (1, 11), (2, 22), (3, 3), (4, 4), (9, 9)]
        );
        let mut got = None;
        t.read(&0, &(), &mut |v| got = v.copied());
        assert_eq!(got, Some(100));
    }

    #[test]
    fn a_second_freeze_while_the_first_snapshot_is_still_reading_copies_instead() {
        let mut t: HeapTable<u32, (), i64> = HeapTable::default();
        t.put(&1, &(), 1);
        let first = t.frozen_entries();
        t.put(&1, &(), 2);
        let second = t.frozen_entries();
        t.put(&1, &(), 3);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        first(&mut |_, _, v| a.push(*v));
        second(&mut |_, _, v| b.push(*v));
        assert_eq!((a, b), (vec![1], vec![2]));
        let mut got = None;
        t.read(&1, &(), &mut |v| got = v.copied());
        assert_eq!(got, Some(3));
    }

    #[test]
    fn len_counts_live_entries_through_freezes_and_writes() {
        // Every kind of write, frozen or not, checked against a plain map.
        let mut t: HeapTable<u32, (), i64> = HeapTable::default();
        let mut model = std::collections::HashMap::new();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut frozen = Vec::new();
        for step in 0..20_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let k = (x % 64) as u32;
            match (x >> 8) % 5 {
                0 => {
                    t.put(&k, &(), step as i64);
                    model.insert(k, step as i64);
                }
                1 => assert_eq!(t.remove(&k, &()), model.remove(&k)),
                2 => {
                    let m = model.get(&k).copied();
                    t.upsert(&k, &(), &mut |v| match v {
                        Some(v) => {
                            *v += 1;
                            None
                        }
                        None => Some(7),
                    });
                    model.insert(k, m.map_or(7, |m| m + 1));
                }
                // An upsert that leaves an absent entry absent.
                3 => t.upsert(&k, &(), &mut |_| None),
                _ if step % 97 == 0 => frozen.push(t.frozen_entries()),
                _ if step % 89 == 0 => {
                    frozen.clear();
                    t.maintain();
                }
                _ => {}
            }
            assert_eq!(t.len(), model.len(), "step {step}");
        }
        let mut v = view(&t);
        let mut m: Vec<(u32, i64)> = model.into_iter().collect();
        v.sort();
        m.sort();
        assert_eq!(v, m);
    }
}
