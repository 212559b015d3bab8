use serde::{de::DeserializeOwned, Serialize};
use std::hash::Hash;

/// What every record type must be: cloneable (fan-out), shareable between threads (snapshots
/// read state from a background thread), and serializable, because exchanges between tasks
/// carry bytes (and will cross the network) and state is snapshotted. Implemented for every
/// type that qualifies.
pub trait Data: Clone + Send + Sync + Serialize + DeserializeOwned + 'static {}
impl<T: Clone + Send + Sync + Serialize + DeserializeOwned + 'static> Data for T {}

/// What a key (of `key_by`) must be: [`Data`] plus `Hash + Eq` for in-memory tables. The key
/// group of a key is computed from its serialized bytes ([`crate::keygroup::key_hash`]), so it is
/// stable across processes, machines and versions of Rust's hashers.
pub trait Key: Data + Hash + Eq {}
impl<T: Data + Hash + Eq> Key for T {}
