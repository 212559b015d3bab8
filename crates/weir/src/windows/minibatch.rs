//! Mini-batch accumulation for window aggregates: while a window operator works through one
//! batch of records, the accumulators it touches live in a small map of its own, keyed by
//! (key, namespace); each is taken out of the state store the first time the batch needs it and
//! put back once at the end of the batch. A key with many records in a batch costs one state
//! read and one write per batch instead of one state update per record (Flink's mini-batch
//! aggregation, `table.exec.mini-batch`, does the same against its state backends).
//!
//! The store holds every accumulator between batches, so snapshots (taken between batches),
//! timers and state gauges see exactly what the per-record path would leave. When most records
//! of a batch have a (key, namespace) of their own, the map only adds work: the operator then
//! goes record by record, and measures again every [`RESAMPLE_BATCHES`] batches.
//!
//! Only for backends that keep state as bytes (the disk backend, `memory-bytes`), where a state
//! update decodes and encodes the accumulator and looks the key up in a key-value store: there
//! a batch of `tumble` at 100 keys runs 2.6× faster. On the heap backend an update is already
//! an in-place hash map update; the batch's map measured the same or up to 10 % slower, so the
//! heap backend goes record by record.
use hashbrown::HashMap;
use std::hash::Hash;
use weir_state::{
    AggregateFunction, AggregatingState, KeyedStateStore, Namespace, Pair, StateBackend, TableKind,
};
use weir_types::{Data, Key};

/// Batches run record by record after a batch whose pairs were mostly distinct, before the
/// next batch measures again.
pub(crate) const RESAMPLE_BATCHES: u32 = 16;

/// The accumulators of the current batch, in order of first use.
pub(crate) struct BatchAccs<K, N, ACC> {
    index: HashMap<(K, N), usize>,
    /// (key, namespace, accumulator, whether the batch created it).
    entries: Vec<(K, N, ACC, bool)>,
    /// Batches still to run record by record.
    direct: u32,
    /// Whether batches use the map at all ([`BatchAccs::for_backend`]).
    enabled: bool,
}

impl<K, N, ACC> Default for BatchAccs<K, N, ACC> {
    fn default() -> Self {
        BatchAccs {
            index: HashMap::new(),
            entries: Vec::new(),
            direct: 0,
            enabled: true,
        }
    }
}

impl<K, N, ACC> BatchAccs<K, N, ACC> {
    /// Enabled where state is kept as bytes ([`TableKind::Bytes`]).
    pub fn for_backend(backend: &dyn StateBackend) -> Self {
        BatchAccs {
            enabled: matches!(backend.table_kind(), TableKind::Bytes(_)),
            ..Default::default()
        }
    }
}

impl<K: Hash + Eq + Clone, N: Hash + Eq + Clone, ACC> BatchAccs<K, N, ACC> {
    /// Whether the next batch should be accumulated here (else record by record).
    pub fn use_for_batch(&mut self, records: usize) -> bool {
        if !self.enabled || records < 2 {
            return false;
        }
        if self.direct > 0 {
            self.direct -= 1;
            return false;
        }
        true
    }

    /// The accumulator of `(key, ns)` in this batch; the first time, `load` provides it (taken
    /// from the store, with whether it is new).
    #[inline]
    pub fn get_or_load(&mut self, key: &K, ns: &N, load: impl FnOnce() -> (ACC, bool)) -> &mut ACC {
        let i = match self.index.get(&Pair(key, ns)) {
            Some(&i) => i,
            None => {
                let (acc, created) = load();
                let i = self.entries.len();
                self.entries.push((key.clone(), ns.clone(), acc, created));
                self.index.insert((key.clone(), ns.clone()), i);
                i
            }
        };
        &mut self.entries[i].2
    }

    /// Adds `value` to the accumulator of `(key, ns)` in this batch; the first time, it is
    /// taken out of `contents` (or created).
    #[inline]
    pub fn add<T: 'static, AOUT: 'static>(
        &mut self,
        store: &mut KeyedStateStore<K>,
        contents: &AggregatingState<T, ACC, AOUT, N>,
        agg: &dyn AggregateFunction<T, ACC, AOUT>,
        key: &K,
        ns: &N,
        value: T,
    ) where
        K: Key,
        N: Namespace,
        ACC: Data,
    {
        let acc = self.get_or_load(key, ns, || {
            store.set_current_key(key.clone());
            match contents.take_accumulator_in(store, ns) {
                Some(acc) => (acc, false),
                None => (agg.create_accumulator(), true),
            }
        });
        agg.add(acc, value);
    }

    /// Ends a batch of `records` records: puts its accumulators back into `contents`, in order
    /// of first use, calling `created` for each one the batch created (to register its timer,
    /// where the record that created it would have).
    pub fn put_back<T: 'static, AOUT: 'static>(
        &mut self,
        records: usize,
        store: &mut KeyedStateStore<K>,
        contents: &AggregatingState<T, ACC, AOUT, N>,
        mut created: impl FnMut(&K, &N),
    ) where
        K: Key,
        N: Namespace,
        ACC: Data,
    {
        for (key, ns, acc, new) in self.finish(records) {
            if new {
                created(&key, &ns);
            }
            store.set_current_key(key);
            contents.put_accumulator_in(store, &ns, acc);
        }
    }

    /// Ends a batch of `records` records: its accumulators, in order of first use, to put back
    /// into the store.
    pub fn finish(&mut self, records: usize) -> std::vec::Drain<'_, (K, N, ACC, bool)> {
        if self.entries.len() * 2 > records {
            self.direct = RESAMPLE_BATCHES;
        }
        self.index.clear();
        self.entries.drain(..)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accumulators_are_loaded_once_per_batch_and_come_back_in_order_of_first_use() {
        let mut b: BatchAccs<u64, i64, u64> = BatchAccs::default();
        assert!(b.use_for_batch(6));
        let mut loads = 0;
        for (k, ns) in [(1, 0), (2, 0), (1, 0), (1, 5), (2, 0), (1, 0)] {
            *b.get_or_load(&k, &ns, || {
                loads += 1;
                (100 * k, k == 2)
            }) += 1;
        }
        assert_eq!(loads, 3);
        let out: Vec<_> = b.finish(6).collect();
        assert_eq!(
            out,
            vec![(1, 0, 103, false), (2, 0, 202, true), (1, 5, 101, false)]
        );
        // Half the records distinct: the next batch uses the map again.
        assert!(b.use_for_batch(6));
    }

    #[test]
    fn mostly_distinct_pairs_go_record_by_record_until_the_next_measure() {
        let mut b: BatchAccs<u64, (), u64> = BatchAccs::default();
        assert!(b.use_for_batch(4));
        for k in 0..4 {
            b.get_or_load(&k, &(), || (0, true));
        }
        assert_eq!(b.finish(4).count(), 4);
        for _ in 0..RESAMPLE_BATCHES {
            assert!(!b.use_for_batch(4));
        }
        assert!(b.use_for_batch(4));
        assert!(!b.use_for_batch(1), "a single record is not worth a map");
    }
}
