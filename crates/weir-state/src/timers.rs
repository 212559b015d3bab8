//! Timers: at most one per `(key, namespace, timestamp)`, fired in timestamp order.
use hashbrown::HashSet;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::hash::Hash;

/// A queue of timers of one time domain.
///
/// `by_time` orders timers; `live` deduplicates and makes deletion O(1): a deleted timer stays
/// in `by_time` and is skipped when popped. Timers registered with
/// [`TimerQueue::register_unique`] skip `live` (no hash insert or remove): the caller knows they
/// are not registered yet and never deletes them.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(bound(serialize = "K: Serialize + Eq + Hash, N: Serialize + Eq + Hash"))]
#[serde(bound(deserialize = "K: Deserialize<'de> + Eq + Hash, N: Deserialize<'de> + Eq + Hash"))]
pub struct TimerQueue<K, N> {
    /// Per timestamp, in registration order: (key, namespace, whether tracked in `live`).
    by_time: BTreeMap<i64, VecDeque<(K, N, bool)>>,
    live: HashSet<(i64, K, N)>,
    /// Timers registered with `register_unique` not popped yet.
    unique: usize,
}

impl<K, N> Default for TimerQueue<K, N> {
    fn default() -> Self {
        TimerQueue {
            by_time: BTreeMap::new(),
            live: HashSet::new(),
            unique: 0,
        }
    }
}

impl<K: Hash + Eq + Clone, N: Hash + Eq + Clone> TimerQueue<K, N> {
    /// Registers a timer; a second registration of the same timer is a no-op.
    pub fn register(&mut self, ts: i64, key: &K, ns: &N) {
        if self.live.insert((ts, key.clone(), ns.clone())) {
            self.by_time
                .entry(ts)
                .or_default()
                .push_back((key.clone(), ns.clone(), true));
        }
    }

    /// Registers a timer the caller knows is not registered, and will not delete: cheaper
    /// than [`TimerQueue::register`] (no deduplication). A window operator whose trigger only
    /// fires at the window's end registers one when the window gets its first record.
    pub fn register_unique(&mut self, ts: i64, key: K, ns: N) {
        self.unique += 1;
        self.by_time
            .entry(ts)
            .or_default()
            .push_back((key, ns, false));
    }

    /// Deletes a timer, if registered.
    pub fn delete(&mut self, ts: i64, key: &K, ns: &N) {
        self.live.remove(&(ts, key.clone(), ns.clone()));
    }

    /// Pops the earliest live timer at or before `up_to`.
    pub fn pop_due(&mut self, up_to: i64) -> Option<(i64, K, N)> {
        loop {
            let mut entry = self.by_time.first_entry()?;
            let ts = *entry.key();
            if ts > up_to {
                return None;
            }
            let list = entry.get_mut();
            // Fire in registration order.
            let Some((k, n, tracked)) = list.pop_front() else {
                entry.remove();
                continue;
            };
            if list.is_empty() {
                entry.remove();
            }
            if !tracked {
                self.unique -= 1;
                return Some((ts, k, n));
            }
            if self.live.remove(&(ts, k.clone(), n.clone())) {
                return Some((ts, k, n));
            }
        }
    }

    /// The earliest live timer's timestamp.
    pub fn next_time(&mut self) -> Option<i64> {
        // Drop deleted timers at the front so the answer is exact (each dropped once: O(1)
        // amortized per timer, however many share a timestamp).
        loop {
            let mut entry = self.by_time.first_entry()?;
            let ts = *entry.key();
            let list = entry.get_mut();
            while let Some((k, n, tracked)) = list.front() {
                if !tracked || self.live.contains(&(ts, k.clone(), n.clone())) {
                    return Some(ts);
                }
                list.pop_front();
            }
            entry.remove();
        }
    }

    /// Number of live timers.
    pub fn len(&self) -> usize {
        self.live.len() + self.unique
    }

    /// Whether no timer is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every live timer, in no particular order.
    pub fn for_each_live(&self, mut f: impl FnMut(i64, &K, &N)) {
        for (ts, k, n) in &self.live {
            f(*ts, k, n);
        }
        if self.unique > 0 {
            for (ts, list) in &self.by_time {
                for (k, n, _) in list.iter().filter(|e| !e.2) {
                    f(*ts, k, n);
                }
            }
        }
    }
}

/// Event-time and processing-time timers of one operator subtask.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(bound(serialize = "K: Serialize + Eq + Hash, N: Serialize + Eq + Hash"))]
#[serde(bound(deserialize = "K: Deserialize<'de> + Eq + Hash, N: Deserialize<'de> + Eq + Hash"))]
pub struct TimerService<K, N> {
    /// Fired as the watermark passes them.
    pub event: TimerQueue<K, N>,
    /// Fired as processing time passes them.
    pub processing: TimerQueue<K, N>,
}

impl<K, N> Default for TimerService<K, N> {
    fn default() -> Self {
        TimerService {
            event: TimerQueue::default(),
            processing: TimerQueue::default(),
        }
    }
}

impl<K, N> TimerService<K, N>
where
    K: Serialize + serde::de::DeserializeOwned + Hash + Eq + Clone,
    N: Serialize + serde::de::DeserializeOwned + Hash + Eq + Clone,
{
    /// Every live timer as `(ts, domain, key bytes, namespace bytes)`, for a snapshot
    /// (domain 0 = event time, 1 = processing time).
    pub fn snapshot(&self) -> Vec<(i64, u8, Vec<u8>, Vec<u8>)> {
        let mut out = Vec::with_capacity(self.event.len() + self.processing.len());
        for (domain, q) in [(0u8, &self.event), (1u8, &self.processing)] {
            q.for_each_live(|ts, k, n| {
                out.push((
                    ts,
                    domain,
                    crate::snapshot::to_bytes(k),
                    crate::snapshot::to_bytes(n),
                ))
            });
        }
        out
    }

    /// Registers restored timers.
    pub fn restore(&mut self, timers: &[crate::snapshot::TimerBytes]) -> Result<(), String> {
        for t in timers {
            let k: K = postcard::from_bytes(&t.key).map_err(|e| format!("timer key: {e}"))?;
            let n: N = postcard::from_bytes(&t.ns).map_err(|e| format!("timer namespace: {e}"))?;
            if t.domain == 0 {
                self.event.register(t.ts, &k, &n);
            } else {
                self.processing.register(t.ts, &k, &n);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_in_timestamp_order_once_and_skips_deleted() {
        let mut q: TimerQueue<&str, ()> = TimerQueue::default();
        q.register(30, &"a", &());
        q.register(10, &"b", &());
        q.register(10, &"b", &()); // duplicate
        q.register(20, &"c", &());
        q.register(15, &"d", &());
        q.delete(15, &"d", &());
        assert_eq!(q.len(), 3);
        assert_eq!(q.next_time(), Some(10));
        let mut fired = vec![];
        while let Some((t, k, _)) = q.pop_due(25) {
            fired.push((t, k));
        }
        assert_eq!(fired, vec![(10, "b"), (20, "c")]);
        assert_eq!(q.pop_due(i64::MAX), Some((30, "a", ())));
        assert!(q.is_empty());
    }

    #[test]
    fn unique_timers_fire_in_order_with_the_others_and_are_snapshotted() {
        let mut q: TimerQueue<u32, ()> = TimerQueue::default();
        q.register(20, &1, &());
        q.register_unique(10, 2, ());
        q.register_unique(20, 3, ());
        q.register(20, &4, &());
        q.delete(20, &4, &());
        assert_eq!(q.len(), 3);
        let mut seen = vec![];
        q.for_each_live(|t, k, _| seen.push((t, *k)));
        seen.sort();
        assert_eq!(seen, vec![(10, 2), (20, 1), (20, 3)]);
        assert_eq!(q.next_time(), Some(10));
        let mut fired = vec![];
        while let Some((t, k, _)) = q.pop_due(i64::MAX) {
            fired.push((t, k));
        }
        assert_eq!(fired, vec![(10, 2), (20, 1), (20, 3)]);
        assert!(q.is_empty() && q.next_time().is_none());
    }

    #[test]
    fn delete_then_register_again_fires_once() {
        let mut q: TimerQueue<u32, ()> = TimerQueue::default();
        q.register(5, &1, &());
        q.delete(5, &1, &());
        q.register(5, &1, &());
        assert_eq!(q.pop_due(10), Some((5, 1, ())));
        assert_eq!(q.pop_due(10), None);
    }
}
