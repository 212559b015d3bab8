//! Tables: `(key, namespace) → value`, the storage under every kind of keyed state.
use hashbrown::{Equivalent, HashMap};
use serde::{Deserialize, Serialize};
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
    /// Whether a snapshot's copy-on-write view is still in place (until [`Table::maintain`]
    /// merges it back).
    fn frozen(&self) -> bool {
        false
    }
}

/// Borrowed `(key, namespace)`: looks up a hashbrown map keyed by `(K, N)` without cloning
/// either (it hashes as the tuple does).
pub struct Pair<'a, K, N>(pub &'a K, pub &'a N);

impl<K: Hash, N: Hash> Hash for Pair<'_, K, N> {
    fn hash<H: Hasher>(&self, h: &mut H) {
        // Same as the tuple's derived Hash: fields in order.
        self.0.hash(h);
        self.1.hash(h);
    }
}

impl<K: Eq, N: Eq> Equivalent<(K, N)> for Pair<'_, K, N> {
    fn equivalent(&self, other: &(K, N)) -> bool {
        self.0 == &other.0 && self.1 == &other.1
    }
}

/// Visits every entry of a frozen view of a table, later and on another thread.
pub type FrozenEntries<K, N, V> = Box<dyn FnOnce(&mut dyn FnMut(&K, &N, &V)) + Send>;

/// The memory backend's table: a hash map of objects. Access costs one hash lookup, no
/// serialization.
///
/// Snapshots are copy-on-write: [`HeapTable::freeze`] moves the map into an `Arc` (O(1)) that a
/// background thread serializes, while new writes go to a small delta (an entry is copied from
/// the frozen map the first time it is changed). The delta is merged back once the snapshot is
/// done with the map, which costs the number of writes since the freeze, not the state size.
pub struct HeapTable<K, N, V> {
    map: HashMap<(K, N), V>,
    frozen: Option<Frozen<K, N, V>>,
}

struct Frozen<K, N, V> {
    base: Arc<HashMap<(K, N), V>>,
    /// `Some(v)`: changed or added since the freeze; `None`: removed.
    delta: HashMap<(K, N), Option<V>>,
    /// Live entries (base and delta together), kept up to date by every write so that `len`
    /// stays O(1) while a snapshot holds the base.
    len: usize,
}

impl<K, N, V> Default for HeapTable<K, N, V> {
    fn default() -> Self {
        HeapTable {
            map: HashMap::new(),
            frozen: None,
        }
    }
}

impl<K: Hash + Eq + Clone, N: Hash + Eq + Clone, V: Clone> HeapTable<K, N, V> {
    /// Merges the delta back if the snapshot no longer uses the frozen map. With `force`, also
    /// when it still does (copying the map: only when snapshots overlap).
    fn thaw(&mut self, force: bool) -> bool {
        match &self.frozen {
            None => return true,
            // Still read by the snapshot: nothing to move.
            Some(f) if !force && Arc::strong_count(&f.base) > 1 => return false,
            Some(_) => {}
        }
        let Some(f) = self.frozen.take() else {
            return true;
        };
        let base = match Arc::try_unwrap(f.base) {
            Ok(map) => map,
            Err(shared) if force => (*shared).clone(),
            Err(shared) => {
                self.frozen = Some(Frozen {
                    base: shared,
                    delta: f.delta,
                    len: f.len,
                });
                return false;
            }
        };
        let mut map = base;
        for (k, v) in f.delta {
            match v {
                Some(v) => {
                    map.insert(k, v);
                }
                None => {
                    map.remove(&k);
                }
            }
        }
        self.map = map;
        true
    }

    /// Freezes the current entries for a snapshot: O(1) (plus merging the previous snapshot's
    /// delta). Returns the frozen map.
    pub fn freeze(&mut self) -> Arc<HashMap<(K, N), V>> {
        self.thaw(true);
        let base = Arc::new(std::mem::take(&mut self.map));
        self.frozen = Some(Frozen {
            len: base.len(),
            base: base.clone(),
            delta: HashMap::new(),
        });
        base
    }

    /// Entries changed since the last freeze (tests and metrics).
    pub fn delta_len(&self) -> usize {
        self.frozen.as_ref().map_or(0, |f| f.delta.len())
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
        match &self.frozen {
            None => f(self.map.get(&Pair(key, ns))),
            Some(fr) => match fr.delta.get(&Pair(key, ns)) {
                Some(v) => f(v.as_ref()),
                None => f(fr.base.get(&Pair(key, ns))),
            },
        }
    }
    #[inline]
    fn touch(&self, key: &K, ns: &N) -> bool {
        match &self.frozen {
            None => self.map.contains_key(&Pair(key, ns)),
            Some(fr) => fr.base.contains_key(&Pair(key, ns)),
        }
    }
    fn touch_all(&self, keys: &[Option<K>], ns: &N) -> usize {
        let map = match &self.frozen {
            None => &self.map,
            Some(fr) => &*fr.base,
        };
        keys.iter()
            .flatten()
            .filter(|k| map.contains_key(&Pair(*k, ns)))
            .count()
    }
    #[inline]
    fn upsert(&mut self, key: &K, ns: &N, f: &mut dyn FnMut(Option<&mut V>) -> Option<V>) {
        if let Some(fr) = &mut self.frozen {
            if let Some(slot) = fr.delta.get_mut(&Pair(key, ns)) {
                match slot {
                    Some(v) => {
                        f(Some(v));
                    }
                    None => {
                        *slot = f(None);
                        fr.len += usize::from(slot.is_some());
                    }
                }
                return;
            }
            let mut cur = fr.base.get(&Pair(key, ns)).cloned();
            let new = match cur.as_mut() {
                Some(v) => {
                    f(Some(v));
                    cur
                }
                None => {
                    let new = f(None);
                    fr.len += usize::from(new.is_some());
                    new
                }
            };
            if new.is_some() || fr.base.contains_key(&Pair(key, ns)) {
                fr.delta.insert((key.clone(), ns.clone()), new);
            }
            return;
        }
        match self.map.get_mut(&Pair(key, ns)) {
            Some(v) => {
                f(Some(v));
            }
            None => {
                if let Some(v) = f(None) {
                    self.map.insert((key.clone(), ns.clone()), v);
                }
            }
        }
    }
    #[inline]
    fn put(&mut self, key: &K, ns: &N, v: V) {
        if let Some(fr) = &mut self.frozen {
            match fr.delta.get_mut(&Pair(key, ns)) {
                Some(slot) => {
                    fr.len += usize::from(slot.is_none());
                    *slot = Some(v);
                }
                None => {
                    fr.len += usize::from(!fr.base.contains_key(&Pair(key, ns)));
                    fr.delta.insert((key.clone(), ns.clone()), Some(v));
                }
            }
            return;
        }
        match self.map.get_mut(&Pair(key, ns)) {
            Some(slot) => *slot = v,
            None => {
                self.map.insert((key.clone(), ns.clone()), v);
            }
        }
    }
    #[inline]
    fn remove(&mut self, key: &K, ns: &N) -> Option<V> {
        if let Some(fr) = &mut self.frozen {
            let old = match fr.delta.get_mut(&Pair(key, ns)) {
                Some(slot) => slot.take(),
                None => {
                    let old = fr.base.get(&Pair(key, ns)).cloned();
                    if old.is_some() {
                        fr.delta.insert((key.clone(), ns.clone()), None);
                    }
                    old
                }
            };
            fr.len -= usize::from(old.is_some());
            return old;
        }
        self.map.remove(&Pair(key, ns))
    }
    fn len(&self) -> usize {
        match &self.frozen {
            None => self.map.len(),
            Some(fr) => fr.len,
        }
    }
    fn for_each(&self, f: &mut dyn FnMut(&K, &N, &V)) {
        match &self.frozen {
            None => {
                for ((k, n), v) in &self.map {
                    f(k, n, v)
                }
            }
            Some(fr) => {
                for ((k, n), v) in fr.base.iter() {
                    if !fr.delta.contains_key(&Pair(k, n)) {
                        f(k, n, v)
                    }
                }
                for ((k, n), v) in &fr.delta {
                    if let Some(v) = v {
                        f(k, n, v)
                    }
                }
            }
        }
    }
    fn retain(&mut self, f: &mut dyn FnMut(&K, &N, &mut V) -> bool) {
        self.thaw(true);
        self.map.retain(|(k, n), v| f(k, n, v))
    }
    fn frozen_entries(&mut self) -> FrozenEntries<K, N, V> {
        let base = self.freeze();
        Box::new(move |f| {
            for ((k, n), v) in base.iter() {
                f(k, n, v)
            }
        })
    }
    fn maintain(&mut self) {
        self.thaw(false);
    }
    fn frozen(&self) -> bool {
        self.frozen.is_some()
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
        // Still held by the snapshot: stays frozen.
        t.maintain();
        assert!(t.frozen());
        let mut snap = Vec::new();
        frozen(&mut |k, _, v| snap.push((*k, *v)));
        snap.sort();
        assert_eq!(
            snap,
            vec![(0, 0), (1, 1), (2, 2), (3, 3), (4, 4)],
            "the snapshot sees the table as at the freeze"
        );
        // The snapshot is done with the frozen map: merging costs only the delta.
        assert_eq!(t.delta_len(), 4);
        t.maintain();
        assert!(!t.frozen());
        assert_eq!(t.delta_len(), 0);
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
