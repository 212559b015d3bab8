//! Tables: `(key, namespace) → value`, the storage under every kind of keyed state.
use hashbrown::{Equivalent, HashMap};
use serde::{Deserialize, Serialize};
use std::hash::{Hash, Hasher};
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

impl<K: Eq, N: Eq> Equivalent<(K, N)> for Pair<'_, K, N> {
    fn equivalent(&self, other: &(K, N)) -> bool {
        self.0 == &other.0 && self.1 == &other.1
    }
}

/// The memory backend's table: a hash map of objects. Access costs one hash lookup, no
/// serialization.
pub struct HeapTable<K, N, V> {
    map: HashMap<(K, N), V>,
}

impl<K, N, V> Default for HeapTable<K, N, V> {
    fn default() -> Self {
        HeapTable {
            map: HashMap::new(),
        }
    }
}

impl<K: Hash + Eq + Clone, N: Hash + Eq + Clone, V> Table<K, N, V> for HeapTable<K, N, V> {
    #[inline]
    fn read(&self, key: &K, ns: &N, f: &mut dyn FnMut(Option<&V>)) {
        f(self.map.get(&Pair(key, ns)))
    }
    #[inline]
    fn upsert(&mut self, key: &K, ns: &N, f: &mut dyn FnMut(Option<&mut V>) -> Option<V>) {
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
        match self.map.get_mut(&Pair(key, ns)) {
            Some(slot) => *slot = v,
            None => {
                self.map.insert((key.clone(), ns.clone()), v);
            }
        }
    }
    #[inline]
    fn remove(&mut self, key: &K, ns: &N) -> Option<V> {
        self.map.remove(&Pair(key, ns))
    }
    fn len(&self) -> usize {
        self.map.len()
    }
    fn for_each(&self, f: &mut dyn FnMut(&K, &N, &V)) {
        for ((k, n), v) in &self.map {
            f(k, n, v)
        }
    }
    fn retain(&mut self, f: &mut dyn FnMut(&K, &N, &mut V) -> bool) {
        self.map.retain(|(k, n), v| f(k, n, v))
    }
}
