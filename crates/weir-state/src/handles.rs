//! Typed state handles. A handle is created once (in an operator's `open`) and is then used with
//! a context that knows the current key:
//!
//! ```
//! use weir_state::{KeyedStateStore, MemoryBackend, StateAccess, ValueState};
//! use std::sync::Arc;
//! let mut store: KeyedStateStore<String> =
//!     KeyedStateStore::new(&MemoryBackend, Arc::new(weir_types::SystemClock));
//! let count: ValueState<u64> = ValueState::register(&mut store, "count").unwrap();
//! store.set_current_key("sensor-1".to_string());
//! count.mutate(&mut store, || 0, |c| *c += 1);
//! assert_eq!(count.get(&mut store), Some(1));
//! ```
use crate::store::{KeyedStateStore, StateError, StateTtl};
use crate::table::Namespace;
use std::collections::HashMap;
use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::Arc;
use weir_types::{Data, Key};

/// Anything that gives access to the keyed state of the current key: operator contexts, and the
/// store itself.
pub trait StateAccess<K: Key> {
    /// The store, with its current key set.
    fn keyed_store(&mut self) -> &mut KeyedStateStore<K>;
}

impl<K: Key> StateAccess<K> for KeyedStateStore<K> {
    fn keyed_store(&mut self) -> &mut KeyedStateStore<K> {
        self
    }
}

/// The untyped core of every handle: which table, and its TTL.
struct Cell<N, S> {
    idx: usize,
    ttl: Option<StateTtl>,
    _p: PhantomData<fn() -> (N, S)>,
}

impl<N, S> Clone for Cell<N, S> {
    fn clone(&self) -> Self {
        Cell {
            idx: self.idx,
            ttl: self.ttl,
            _p: PhantomData,
        }
    }
}

impl<N, S> Default for Cell<N, S> {
    fn default() -> Self {
        Cell {
            idx: usize::MAX,
            ttl: None,
            _p: PhantomData,
        }
    }
}

impl<N: Namespace, S: Data> Cell<N, S> {
    fn register<K: Key>(
        store: &mut KeyedStateStore<K>,
        name: &str,
        ttl: Option<StateTtl>,
    ) -> Result<Self, StateError> {
        Ok(Cell {
            idx: store.register::<N, S>(name, ttl)?,
            ttl,
            _p: PhantomData,
        })
    }

    /// Processing time for TTL (0 without: no clock read per access).
    #[inline]
    fn stamp<K: Key>(&self, store: &KeyedStateStore<K>) -> i64 {
        if self.ttl.is_some() {
            store.now_ms()
        } else {
            0
        }
    }

    #[inline]
    fn read<K: Key, R>(
        &self,
        ctx: &mut impl StateAccess<K>,
        ns: &N,
        f: impl FnOnce(Option<&S>) -> R,
    ) -> R {
        let store = ctx.keyed_store();
        let now = self.stamp(store);
        let (key, slot) = store.slot::<N, S>(self.idx);
        slot.read(key, ns, now, f)
    }

    #[inline]
    fn write<K: Key>(&self, ctx: &mut impl StateAccess<K>, ns: &N, v: S) {
        let store = ctx.keyed_store();
        let now = self.stamp(store);
        let (key, slot) = store.slot::<N, S>(self.idx);
        slot.write(key, ns, now, v)
    }

    /// Changes the entry in place, creating it with `init` if absent (or expired).
    #[inline]
    fn mutate<K: Key, R>(
        &self,
        ctx: &mut impl StateAccess<K>,
        ns: &N,
        init: impl FnOnce() -> S,
        f: impl FnOnce(&mut S) -> R,
    ) -> R {
        let store = ctx.keyed_store();
        let now = self.stamp(store);
        let (key, slot) = store.slot::<N, S>(self.idx);
        slot.mutate(key, ns, now, init, f)
    }

    #[inline]
    fn clear<K: Key>(&self, ctx: &mut impl StateAccess<K>, ns: &N) -> Option<S> {
        let store = ctx.keyed_store();
        let now = self.stamp(store);
        let (key, slot) = store.slot::<N, S>(self.idx);
        slot.remove(key, ns, now)
    }
}

macro_rules! handle_common {
    ($name:ident < $($g:ident),* >) => {
        impl<$($g),*, N> Clone for $name<$($g),*, N> {
            fn clone(&self) -> Self {
                self.clone_rest()
            }
        }
        impl<$($g: Data),*, N: Namespace> $name<$($g),*, N> {
            /// Removes the entry of the current key in namespace `ns`.
            pub fn clear_in<K: Key>(&self, ctx: &mut impl StateAccess<K>, ns: &N) {
                self.cell.clear(ctx, ns);
            }
        }
        impl<$($g: Data),*> $name<$($g),*, ()> {
            /// Removes the entry of the current key.
            pub fn clear<K: Key>(&self, ctx: &mut impl StateAccess<K>) {
                self.cell.clear(ctx, &());
            }
        }
    };
}

/// One value per key (and namespace).
pub struct ValueState<V, N = ()> {
    cell: Cell<N, V>,
}

impl<V, N> ValueState<V, N> {
    fn clone_rest(&self) -> Self {
        ValueState {
            cell: self.cell.clone(),
        }
    }
}
impl<V, N> Default for ValueState<V, N> {
    /// An unregistered handle: register it in `open` before use.
    fn default() -> Self {
        ValueState {
            cell: Cell::default(),
        }
    }
}
handle_common!(ValueState<V>);

impl<V: Data, N: Namespace> ValueState<V, N> {
    /// Registers the state `name` in `store` (or finds it after a restore).
    pub fn register<K: Key>(
        store: &mut KeyedStateStore<K>,
        name: &str,
    ) -> Result<Self, StateError> {
        Ok(ValueState {
            cell: Cell::register(store, name, None)?,
        })
    }
    /// Registers the state `name` with a time-to-live.
    pub fn register_with_ttl<K: Key>(
        store: &mut KeyedStateStore<K>,
        name: &str,
        ttl: StateTtl,
    ) -> Result<Self, StateError> {
        Ok(ValueState {
            cell: Cell::register(store, name, Some(ttl))?,
        })
    }
    /// The value of the current key in namespace `ns`.
    pub fn get_in<K: Key>(&self, ctx: &mut impl StateAccess<K>, ns: &N) -> Option<V> {
        self.cell.read(ctx, ns, |v| v.cloned())
    }
    /// Sets the value of the current key in namespace `ns`.
    pub fn set_in<K: Key>(&self, ctx: &mut impl StateAccess<K>, ns: &N, v: V) {
        self.cell.write(ctx, ns, v)
    }
    /// Changes the value in place, starting from `init()` if there is none.
    pub fn mutate_in<K: Key, R>(
        &self,
        ctx: &mut impl StateAccess<K>,
        ns: &N,
        init: impl FnOnce() -> V,
        f: impl FnOnce(&mut V) -> R,
    ) -> R {
        self.cell.mutate(ctx, ns, init, f)
    }
    /// Removes and returns the value.
    pub fn take_in<K: Key>(&self, ctx: &mut impl StateAccess<K>, ns: &N) -> Option<V> {
        self.cell.clear(ctx, ns)
    }
    /// Hands `f` the value of the current key in namespace `ns` without copying it.
    pub fn read_in<K: Key, R>(
        &self,
        ctx: &mut impl StateAccess<K>,
        ns: &N,
        f: impl FnOnce(Option<&V>) -> R,
    ) -> R {
        self.cell.read(ctx, ns, f)
    }
}

impl<V: Data> ValueState<V, ()> {
    /// The value of the current key.
    pub fn get<K: Key>(&self, ctx: &mut impl StateAccess<K>) -> Option<V> {
        self.get_in(ctx, &())
    }
    /// Sets the value of the current key.
    pub fn set<K: Key>(&self, ctx: &mut impl StateAccess<K>, v: V) {
        self.set_in(ctx, &(), v)
    }
    /// Changes the value in place, starting from `init()` if there is none.
    pub fn mutate<K: Key, R>(
        &self,
        ctx: &mut impl StateAccess<K>,
        init: impl FnOnce() -> V,
        f: impl FnOnce(&mut V) -> R,
    ) -> R {
        self.mutate_in(ctx, &(), init, f)
    }
    /// Removes and returns the value.
    pub fn take<K: Key>(&self, ctx: &mut impl StateAccess<K>) -> Option<V> {
        self.take_in(ctx, &())
    }
    /// Hands `f` the value of the current key without copying it.
    pub fn read<K: Key, R>(
        &self,
        ctx: &mut impl StateAccess<K>,
        f: impl FnOnce(Option<&V>) -> R,
    ) -> R {
        self.read_in(ctx, &(), f)
    }
}

/// A list of values per key (and namespace).
pub struct ListState<V, N = ()> {
    cell: Cell<N, Vec<V>>,
}
impl<V, N> ListState<V, N> {
    fn clone_rest(&self) -> Self {
        ListState {
            cell: self.cell.clone(),
        }
    }
}
impl<V, N> Default for ListState<V, N> {
    /// An unregistered handle: register it in `open` before use.
    fn default() -> Self {
        ListState {
            cell: Cell::default(),
        }
    }
}
handle_common!(ListState<V>);

impl<V: Data, N: Namespace> ListState<V, N> {
    /// Registers the state `name` in `store`.
    pub fn register<K: Key>(
        store: &mut KeyedStateStore<K>,
        name: &str,
    ) -> Result<Self, StateError> {
        Ok(ListState {
            cell: Cell::register(store, name, None)?,
        })
    }
    /// Registers the state `name` with a time-to-live (of the whole list, from its last write).
    pub fn register_with_ttl<K: Key>(
        store: &mut KeyedStateStore<K>,
        name: &str,
        ttl: StateTtl,
    ) -> Result<Self, StateError> {
        Ok(ListState {
            cell: Cell::register(store, name, Some(ttl))?,
        })
    }
    /// Appends a value.
    pub fn add_in<K: Key>(&self, ctx: &mut impl StateAccess<K>, ns: &N, v: V) {
        self.cell.mutate(ctx, ns, Vec::new, |l| l.push(v))
    }
    /// The values (empty if none).
    pub fn get_in<K: Key>(&self, ctx: &mut impl StateAccess<K>, ns: &N) -> Vec<V> {
        self.cell.read(ctx, ns, |v| v.cloned().unwrap_or_default())
    }
    /// Visits the values without copying them.
    pub fn for_each_in<K: Key>(
        &self,
        ctx: &mut impl StateAccess<K>,
        ns: &N,
        mut f: impl FnMut(&V),
    ) {
        self.cell
            .read(ctx, ns, |v| v.into_iter().flatten().for_each(&mut f))
    }
    /// Replaces the values.
    pub fn update_in<K: Key>(&self, ctx: &mut impl StateAccess<K>, ns: &N, values: Vec<V>) {
        if values.is_empty() {
            self.cell.clear(ctx, ns);
        } else {
            self.cell.write(ctx, ns, values)
        }
    }
    /// Removes and returns the values.
    pub fn take_in<K: Key>(&self, ctx: &mut impl StateAccess<K>, ns: &N) -> Vec<V> {
        self.cell.clear(ctx, ns).unwrap_or_default()
    }
}

impl<V: Data> ListState<V, ()> {
    /// Appends a value.
    pub fn add<K: Key>(&self, ctx: &mut impl StateAccess<K>, v: V) {
        self.add_in(ctx, &(), v)
    }
    /// The values (empty if none).
    pub fn get<K: Key>(&self, ctx: &mut impl StateAccess<K>) -> Vec<V> {
        self.get_in(ctx, &())
    }
    /// Replaces the values.
    pub fn update<K: Key>(&self, ctx: &mut impl StateAccess<K>, values: Vec<V>) {
        self.update_in(ctx, &(), values)
    }
    /// Removes and returns the values.
    pub fn take<K: Key>(&self, ctx: &mut impl StateAccess<K>) -> Vec<V> {
        self.take_in(ctx, &())
    }
}

/// A map per key (and namespace).
pub struct MapState<UK, UV, N = ()> {
    cell: Cell<N, HashMap<UK, UV>>,
}
impl<UK, UV, N> MapState<UK, UV, N> {
    fn clone_rest(&self) -> Self {
        MapState {
            cell: self.cell.clone(),
        }
    }
}
impl<UK, UV, N> Default for MapState<UK, UV, N> {
    /// An unregistered handle: register it in `open` before use.
    fn default() -> Self {
        MapState {
            cell: Cell::default(),
        }
    }
}
impl<UK, UV, N> Clone for MapState<UK, UV, N> {
    fn clone(&self) -> Self {
        self.clone_rest()
    }
}
impl<UK: Data + Hash + Eq, UV: Data, N: Namespace> MapState<UK, UV, N> {
    /// Removes the map of the current key in namespace `ns`.
    pub fn clear_in<K: Key>(&self, ctx: &mut impl StateAccess<K>, ns: &N) {
        self.cell.clear(ctx, ns);
    }
}
impl<UK: Data + Hash + Eq, UV: Data> MapState<UK, UV, ()> {
    /// Removes the map of the current key.
    pub fn clear<K: Key>(&self, ctx: &mut impl StateAccess<K>) {
        self.cell.clear(ctx, &());
    }
}

impl<UK: Data + Hash + Eq, UV: Data, N: Namespace> MapState<UK, UV, N> {
    /// Registers the state `name` in `store`.
    pub fn register<K: Key>(
        store: &mut KeyedStateStore<K>,
        name: &str,
    ) -> Result<Self, StateError> {
        Ok(MapState {
            cell: Cell::register(store, name, None)?,
        })
    }
    /// Registers the state `name` with a time-to-live (of the whole map, from its last write).
    pub fn register_with_ttl<K: Key>(
        store: &mut KeyedStateStore<K>,
        name: &str,
        ttl: StateTtl,
    ) -> Result<Self, StateError> {
        Ok(MapState {
            cell: Cell::register(store, name, Some(ttl))?,
        })
    }
    /// The value under `uk`.
    pub fn get_in<K: Key>(&self, ctx: &mut impl StateAccess<K>, ns: &N, uk: &UK) -> Option<UV> {
        self.cell
            .read(ctx, ns, |m| m.and_then(|m| m.get(uk).cloned()))
    }
    /// Sets the value under `uk`.
    pub fn put_in<K: Key>(&self, ctx: &mut impl StateAccess<K>, ns: &N, uk: UK, uv: UV) {
        self.cell.mutate(ctx, ns, HashMap::new, |m| {
            m.insert(uk, uv);
        })
    }
    /// Removes the value under `uk`; the map entry goes when it is empty.
    pub fn remove_in<K: Key>(&self, ctx: &mut impl StateAccess<K>, ns: &N, uk: &UK) -> Option<UV> {
        let (out, empty) = self
            .cell
            .mutate(ctx, ns, HashMap::new, |m| (m.remove(uk), m.is_empty()));
        if empty {
            self.cell.clear(ctx, ns);
        }
        out
    }
    /// Every entry, in no particular order.
    pub fn entries_in<K: Key>(&self, ctx: &mut impl StateAccess<K>, ns: &N) -> Vec<(UK, UV)> {
        self.cell.read(ctx, ns, |m| {
            m.map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default()
        })
    }
    /// Whether the map has `uk`.
    pub fn contains_in<K: Key>(&self, ctx: &mut impl StateAccess<K>, ns: &N, uk: &UK) -> bool {
        self.cell
            .read(ctx, ns, |m| m.is_some_and(|m| m.contains_key(uk)))
    }
}

impl<UK: Data + Hash + Eq, UV: Data> MapState<UK, UV, ()> {
    /// The value under `uk`.
    pub fn get<K: Key>(&self, ctx: &mut impl StateAccess<K>, uk: &UK) -> Option<UV> {
        self.get_in(ctx, &(), uk)
    }
    /// Sets the value under `uk`.
    pub fn put<K: Key>(&self, ctx: &mut impl StateAccess<K>, uk: UK, uv: UV) {
        self.put_in(ctx, &(), uk, uv)
    }
    /// Removes the value under `uk`.
    pub fn remove<K: Key>(&self, ctx: &mut impl StateAccess<K>, uk: &UK) -> Option<UV> {
        self.remove_in(ctx, &(), uk)
    }
    /// Every entry.
    pub fn entries<K: Key>(&self, ctx: &mut impl StateAccess<K>) -> Vec<(UK, UV)> {
        self.entries_in(ctx, &())
    }
    /// Whether the map has `uk`.
    pub fn contains<K: Key>(&self, ctx: &mut impl StateAccess<K>, uk: &UK) -> bool {
        self.contains_in(ctx, &(), uk)
    }
}

/// A value per key that new values are folded into with a reduce function.
pub struct ReducingState<V, N = ()> {
    cell: Cell<N, V>,
    reduce: Option<Arc<dyn Fn(V, V) -> V + Send + Sync>>,
}
impl<V, N> ReducingState<V, N> {
    fn clone_rest(&self) -> Self {
        ReducingState {
            cell: self.cell.clone(),
            reduce: self.reduce.clone(),
        }
    }
}
impl<V, N> Default for ReducingState<V, N> {
    /// An unregistered handle: register it in `open` before use.
    fn default() -> Self {
        ReducingState {
            cell: Cell::default(),
            reduce: None,
        }
    }
}
handle_common!(ReducingState<V>);

impl<V: Data, N: Namespace> ReducingState<V, N> {
    /// Registers the state `name`, folding with `reduce(accumulated, new)`.
    pub fn register<K: Key>(
        store: &mut KeyedStateStore<K>,
        name: &str,
        reduce: impl Fn(V, V) -> V + Send + Sync + 'static,
        ttl: Option<StateTtl>,
    ) -> Result<Self, StateError> {
        Ok(ReducingState {
            cell: Cell::register(store, name, ttl)?,
            reduce: Some(Arc::new(reduce)),
        })
    }
    /// Folds `v` in.
    pub fn add_in<K: Key>(&self, ctx: &mut impl StateAccess<K>, ns: &N, v: V) {
        let reduce = self.reduce.as_ref().expect("registered");
        // The first value becomes the accumulator; later ones are folded in.
        let v = std::cell::Cell::new(Some(v));
        self.cell.mutate(
            ctx,
            ns,
            || v.take().unwrap(),
            |acc| {
                if let Some(v) = v.take() {
                    *acc = reduce(acc.clone(), v);
                }
            },
        );
    }
    /// The folded value.
    pub fn get_in<K: Key>(&self, ctx: &mut impl StateAccess<K>, ns: &N) -> Option<V> {
        self.cell.read(ctx, ns, |v| v.cloned())
    }
}

impl<V: Data> ReducingState<V, ()> {
    /// Folds `v` in.
    pub fn add<K: Key>(&self, ctx: &mut impl StateAccess<K>, v: V) {
        self.add_in(ctx, &(), v)
    }
    /// The folded value.
    pub fn get<K: Key>(&self, ctx: &mut impl StateAccess<K>) -> Option<V> {
        self.get_in(ctx, &())
    }
}

/// An incremental aggregation: inputs are added to an accumulator, accumulators can merge
/// (session windows), and a result is read from an accumulator. Used by [`AggregatingState`] and
/// by window aggregations, so they keep O(1) state per key and window.
pub trait AggregateFunction<IN, ACC, OUT>: Send + Sync + 'static {
    /// A new, empty accumulator.
    fn create_accumulator(&self) -> ACC;
    /// Adds one input.
    fn add(&self, acc: &mut ACC, value: IN);
    /// The result of an accumulator.
    fn get_result(&self, acc: &ACC) -> OUT;
    /// Merges `other` into `acc`.
    fn merge(&self, acc: &mut ACC, other: ACC);
}

/// A value per key aggregated from its inputs by an [`AggregateFunction`].
pub struct AggregatingState<IN, ACC, OUT, N = ()> {
    cell: Cell<N, ACC>,
    agg: Option<Arc<dyn AggregateFunction<IN, ACC, OUT>>>,
}

impl<IN, ACC, OUT, N> Clone for AggregatingState<IN, ACC, OUT, N> {
    fn clone(&self) -> Self {
        AggregatingState {
            cell: self.cell.clone(),
            agg: self.agg.clone(),
        }
    }
}
impl<IN, ACC, OUT, N> Default for AggregatingState<IN, ACC, OUT, N> {
    /// An unregistered handle: register it in `open` before use.
    fn default() -> Self {
        AggregatingState {
            cell: Cell::default(),
            agg: None,
        }
    }
}

impl<IN: 'static, ACC: Data, OUT: 'static, N: Namespace> AggregatingState<IN, ACC, OUT, N> {
    /// Registers the state `name` aggregating with `agg`.
    pub fn register<K: Key>(
        store: &mut KeyedStateStore<K>,
        name: &str,
        agg: Arc<dyn AggregateFunction<IN, ACC, OUT>>,
        ttl: Option<StateTtl>,
    ) -> Result<Self, StateError> {
        Ok(AggregatingState {
            cell: Cell::register(store, name, ttl)?,
            agg: Some(agg),
        })
    }
    fn agg(&self) -> &Arc<dyn AggregateFunction<IN, ACC, OUT>> {
        self.agg.as_ref().expect("registered")
    }
    /// Adds one input. Returns whether the entry was created by it.
    pub fn add_in<K: Key>(&self, ctx: &mut impl StateAccess<K>, ns: &N, v: IN) -> bool {
        let agg = self.agg();
        self.mutate_created(ctx, ns, || agg.create_accumulator(), |acc| agg.add(acc, v))
    }
    /// Changes the accumulator in place, starting from `init()` if there is none; returns
    /// whether the entry was created.
    fn mutate_created<K: Key>(
        &self,
        ctx: &mut impl StateAccess<K>,
        ns: &N,
        init: impl FnOnce() -> ACC,
        f: impl FnOnce(&mut ACC),
    ) -> bool {
        let mut created = false;
        self.cell.mutate(
            ctx,
            ns,
            || {
                created = true;
                init()
            },
            f,
        );
        created
    }
    /// Brings the entries of the (key, namespace) pairs of `pairs` into the CPU cache (a
    /// memory backend; elsewhere nothing): touching the next few entries before working
    /// through them overlaps their cache misses. Returns how many exist.
    #[allow(clippy::ptr_arg)]
    pub fn touch_all_in<K: Key>(&self, store: &KeyedStateStore<K>, pairs: &Vec<(K, N)>) -> usize {
        store.touch_pairs(self.cell.idx, pairs)
    }
    /// Merges accumulator `acc` (a partial aggregate made elsewhere) in; with no entry yet, it
    /// becomes the entry. Returns whether the entry was created by it.
    pub fn merge_in<K: Key>(&self, ctx: &mut impl StateAccess<K>, ns: &N, acc: ACC) -> bool {
        let agg = self.agg();
        let acc = std::cell::Cell::new(Some(acc));
        self.mutate_created(
            ctx,
            ns,
            || acc.take().expect("taken once"),
            |a| {
                if let Some(other) = acc.take() {
                    agg.merge(a, other);
                }
            },
        )
    }
    /// The aggregate function.
    pub fn function(&self) -> &Arc<dyn AggregateFunction<IN, ACC, OUT>> {
        self.agg()
    }
    /// Removes and returns the accumulator of the current key in namespace `ns` (to work on it
    /// outside the store and put it back with [`AggregatingState::put_accumulator_in`]).
    pub fn take_accumulator_in<K: Key>(
        &self,
        ctx: &mut impl StateAccess<K>,
        ns: &N,
    ) -> Option<ACC> {
        self.cell.clear(ctx, ns)
    }
    /// Sets the accumulator of the current key in namespace `ns`.
    pub fn put_accumulator_in<K: Key>(&self, ctx: &mut impl StateAccess<K>, ns: &N, acc: ACC) {
        self.cell.write(ctx, ns, acc)
    }
    /// Removes the entry of the current key in namespace `ns`, returning its result.
    pub fn take_result_in<K: Key>(&self, ctx: &mut impl StateAccess<K>, ns: &N) -> Option<OUT> {
        let agg = self.agg();
        self.cell.clear(ctx, ns).map(|acc| agg.get_result(&acc))
    }
    /// The current result, if anything was added.
    pub fn get_in<K: Key>(&self, ctx: &mut impl StateAccess<K>, ns: &N) -> Option<OUT> {
        let agg = self.agg().clone();
        self.cell
            .read(ctx, ns, |acc| acc.map(|a| agg.get_result(a)))
    }
    /// The accumulator.
    pub fn accumulator_in<K: Key>(&self, ctx: &mut impl StateAccess<K>, ns: &N) -> Option<ACC> {
        self.cell.read(ctx, ns, |acc| acc.cloned())
    }
    /// Merges the accumulators of `sources` into `target`, removing the sources (session windows).
    pub fn merge_namespaces<K: Key>(
        &self,
        ctx: &mut impl StateAccess<K>,
        target: &N,
        sources: &[N],
    ) {
        let agg = self.agg().clone();
        for s in sources {
            if s == target {
                continue;
            }
            if let Some(acc) = self.cell.clear(ctx, s) {
                let mut acc = Some(acc);
                self.cell.mutate(
                    ctx,
                    target,
                    || agg.create_accumulator(),
                    |t| agg.merge(t, acc.take().unwrap()),
                );
            }
        }
    }
    /// Removes the entry of the current key in namespace `ns`.
    pub fn clear_in<K: Key>(&self, ctx: &mut impl StateAccess<K>, ns: &N) {
        self.cell.clear(ctx, ns);
    }
}

impl<IN: 'static, ACC: Data, OUT: 'static> AggregatingState<IN, ACC, OUT, ()> {
    /// Adds one input.
    pub fn add<K: Key>(&self, ctx: &mut impl StateAccess<K>, v: IN) {
        self.add_in(ctx, &(), v);
    }
    /// The current result.
    pub fn get<K: Key>(&self, ctx: &mut impl StateAccess<K>) -> Option<OUT> {
        self.get_in(ctx, &())
    }
    /// Removes the entry of the current key.
    pub fn clear<K: Key>(&self, ctx: &mut impl StateAccess<K>) {
        self.clear_in(ctx, &())
    }
}
