//! Keyed state and timers.
//!
//! Operator code sees typed handles ([`ValueState`], [`ListState`], [`MapState`],
//! [`ReducingState`], [`AggregatingState`]) created once in `open` and used with the operator's
//! context, which carries the current key. Behind the handles, each piece of state is a
//! [`Table`] of `(key, namespace) → value` created by a [`StateBackend`]; the namespace is `()`
//! for plain keyed state and the window for window state. A backend that keeps objects (the
//! [`MemoryBackend`]) and one that keeps bytes (the disk backend of `weir-rocksdb`) implement the
//! same [`Table`] trait, so operator code never changes with the backend. A byte backend may
//! also snapshot natively ([`native`]): its own files, uploaded incrementally.
//!
//! Every entry carries the processing time it was last written, for TTL
//! ([`StateTtl`]): an expired entry is never returned, and is removed when touched or purged.
//!
//! The [`TimerService`] holds event-time and processing-time timers per `(key, namespace,
//! timestamp)`, at most one each, fired in timestamp order.
#![deny(missing_docs)]

pub mod bytes;
mod handles;
pub mod native;
pub mod registry;
pub mod snapshot;
mod store;
mod table;
mod timers;

pub use handles::{
    AggregateFunction, AggregatingState, ListState, MapState, ReducingState, StateAccess,
    ValueState,
};
pub use store::{
    BytesMemoryBackend, KeyedStateStore, MemoryBackend, StateBackend, StateError, StateSnapshot,
    StateTtl, TableKind,
};
pub use table::{HeapTable, Namespace, Pair, Stamped, Table};
pub use timers::{TimerQueue, TimerService};
