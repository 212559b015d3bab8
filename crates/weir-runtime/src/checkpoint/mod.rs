//! Checkpoints: consistent snapshots of a running job, taken without stopping it.
//!
//! The protocol (Chandy–Lamport with barriers, as Flink):
//!
//! 1. The coordinator ([`coordinator`]) sends `Trigger(n)` to every source subtask's mailbox.
//! 2. A source snapshots its reader's position and its chained operators' state, then sends the
//!    barrier `n` down every output channel, in order with its records.
//! 3. A task with several input channels *aligns*: a channel that delivered barrier `n` is not
//!    read until every channel has (exactly-once); at-least-once mode skips the blocking. Then the
//!    task snapshots its chain (each operator as the barrier passes it) and forwards the barrier.
//! 4. Every task subtask acknowledges `n` with its snapshots; a task that has finished
//!    acknowledges with its final snapshot. When all have, the coordinator writes every state
//!    file (with a checksum) and then the manifest: a checkpoint without a manifest does not exist.
//! 5. The coordinator then commits what two-phase sinks pre-committed in `n` (idempotently) and
//!    tells every task that `n` is complete.
//!
//! State is written in a canonical, backend-independent format grouped by key group
//! ([`format`]), so a checkpoint restores into any parallelism and any state backend. A disk
//! backend may instead hand over a native snapshot (its own immutable files): the coordinator
//! uploads only the files no earlier checkpoint uploaded, under `shared/`, and every
//! checkpoint's manifest lists the shared files it uses, which are deleted once no retained
//! checkpoint does (incremental checkpoints). Savepoints are always canonical.
pub mod coordinator;
pub mod format;
pub mod storage;

use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
pub use weir_state::native::NativeSnapshot;

/// The id of the snapshot a task takes when it finishes (never sent on channels).
pub const FINAL_SNAPSHOT: u64 = u64::MAX;

/// The marker that separates records before a checkpoint from records after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointBarrier {
    /// Checkpoint id, increasing.
    pub id: u64,
    /// When it was triggered (ms since the epoch).
    pub ts_ms: i64,
    /// A savepoint: state in the canonical format only (no native snapshots), so that it
    /// restores into any backend and parallelism and does not depend on other checkpoints.
    #[serde(default)]
    pub savepoint: bool,
    /// Unaligned: the barrier overtakes queued records (on each channel's priority lane), every
    /// task snapshots when the first one reaches it, and the records it overtook are stored
    /// with the checkpoint. Never for savepoints.
    #[serde(default)]
    pub unaligned: bool,
}

/// Exactly-once aligns barriers; at-least-once does not block channels (records after the
/// barrier on a fast channel may be in the snapshot and be replayed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum CheckpointMode {
    /// Align barriers: exactly-once state.
    #[default]
    ExactlyOnce,
    /// Do not align: lower latency under skew, state at least once.
    AtLeastOnce,
    /// Exactly-once without alignment: barriers overtake queued records, which are stored with
    /// the checkpoint and replayed on restore (Flink's unaligned checkpoints). For
    /// back-pressured jobs, whose aligned barriers wait behind full channels. A checkpoint
    /// taken this way restores at the same parallelism only (savepoints are always aligned).
    Unaligned,
}

/// The uid under which a task stores the records its unaligned snapshot overtook: the uid of
/// the task's first operator plus this suffix.
pub const IN_FLIGHT_SUFFIX: &str = "@in-flight";

/// What a task's unaligned snapshot overtook on its input channels, in arrival order: one
/// entry of the in-flight pseudo-operator, per subtask.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct InFlight {
    /// The subtask that recorded it.
    pub subtask: usize,
    /// Its operator's parallelism then.
    pub parallelism: usize,
    /// `(input, records, encoded batch)`, in the order they arrived.
    pub batches: Vec<(u8, u32, Vec<u8>)>,
}

/// Checkpoint settings.
#[derive(Clone, Debug)]
pub struct CheckpointConfig {
    /// Time between the end of one checkpoint and the trigger of the next (at least
    /// `min_pause`).
    pub interval: Duration,
    /// A checkpoint not complete after this is aborted.
    pub timeout: Duration,
    /// Minimum time between the end of one checkpoint and the start of the next.
    pub min_pause: Duration,
    /// Alignment mode.
    pub mode: CheckpointMode,
    /// Completed checkpoints kept; older ones are deleted.
    pub retained: usize,
    /// Where checkpoints go.
    pub storage: Arc<dyn storage::CheckpointStorage>,
    /// The asynchronous part (serializing frozen state, writing it) runs at background
    /// priority ([`crate::priority::Background`]: only on CPU time the tasks leave idle) until
    /// this long after the trigger, then at normal priority. `None`: normal priority
    /// throughout.
    pub background_max: Option<Duration>,
    /// How state files are stored (compressed by default).
    pub compression: format::SnapshotCompression,
}

/// Keyed state whose serialization was deferred to the coordinator's thread (the
/// asynchronous part of a snapshot). Resolved once; clones share the result.
#[derive(Clone, Default)]
pub struct Deferred(Option<Arc<std::sync::Mutex<DeferredState>>>);

enum DeferredState {
    Pending(Box<dyn FnOnce() -> Vec<(u32, Vec<u8>)> + Send>),
    Done(Vec<(u32, Vec<u8>)>),
    Taken,
}

impl std::fmt::Debug for Deferred {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Deferred(..)"
        } else {
            "Deferred(none)"
        })
    }
}

impl Deferred {
    /// A job producing `(key_group, bytes)` pairs, to run later.
    pub fn new(job: Box<dyn FnOnce() -> Vec<(u32, Vec<u8>)> + Send>) -> Self {
        Deferred(Some(Arc::new(std::sync::Mutex::new(
            DeferredState::Pending(job),
        ))))
    }
    fn resolve(&self) -> Vec<(u32, Vec<u8>)> {
        let Some(m) = &self.0 else { return Vec::new() };
        let mut g = m.lock().unwrap();
        let v = match std::mem::replace(&mut *g, DeferredState::Taken) {
            DeferredState::Pending(job) => job(),
            DeferredState::Done(v) => v,
            DeferredState::Taken => Vec::new(),
        };
        // Kept for the clones that may still ask; with none left, no copy.
        if Arc::strong_count(m) > 1 {
            *g = DeferredState::Done(v.clone());
        }
        v
    }
}

/// `(key_group, bytes)` pairs with each block as bytes: one copy instead of a call per byte
/// (serde's default for a `Vec<u8>`), in both directions. Postcard writes bytes and a
/// sequence of `u8` alike, so the format is unchanged.
mod keyed_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[(u32, Vec<u8>)], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|(kg, b)| (kg, serde_bytes::Bytes::new(b))))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(u32, Vec<u8>)>, D::Error> {
        let v: Vec<(u32, serde_bytes::ByteBuf)> = Deserialize::deserialize(d)?;
        Ok(v.into_iter().map(|(kg, b)| (kg, b.into_vec())).collect())
    }
}

/// The state of one operator subtask in one checkpoint.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct OperatorSnapshot {
    /// Keyed state and timers, by key group: `(key_group, bytes)` in key-group order.
    #[serde(with = "keyed_bytes")]
    pub keyed: Vec<(u32, Vec<u8>)>,
    /// Keyed state still to serialize (see [`OperatorSnapshot::resolve`]).
    #[serde(skip)]
    pub deferred: Deferred,
    /// Non-keyed state (source positions, broadcast state), as entries that are redistributed
    /// by union on rescale: every subtask of the restored operator sees all entries of all
    /// subtasks and keeps its own.
    pub operator: Vec<Vec<u8>>,
    /// Something a two-phase sink pre-committed: committed by the coordinator once the
    /// checkpoint is complete, and again (idempotently) when restoring it.
    pub pending_commit: Vec<Vec<u8>>,
    /// Keyed state as the backend's own files (incremental checkpoints of a disk backend);
    /// `keyed` then holds only the timers. Taken by the task with the files in a local
    /// directory; the coordinator uploads the files not uploaded before and fills in where
    /// they are.
    pub native: Option<NativeSnapshot>,
}

/// [`OperatorSnapshot`] as written before native snapshots existed (postcard has no optional
/// trailing fields): still read, so older checkpoints and savepoints restore.
#[derive(Deserialize)]
struct OperatorSnapshotV1 {
    #[serde(with = "keyed_bytes")]
    keyed: Vec<(u32, Vec<u8>)>,
    operator: Vec<Vec<u8>>,
    pending_commit: Vec<Vec<u8>>,
}

impl OperatorSnapshot {
    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.keyed.is_empty()
            && self.operator.is_empty()
            && self.pending_commit.is_empty()
            && self.deferred.0.is_none()
            && self.native.is_none()
    }

    /// Runs the deferred serialization (on the coordinator's thread) into `keyed`.
    pub fn resolve(&mut self) {
        if self.deferred.0.is_some() {
            let more = self.deferred.resolve();
            self.keyed.extend(more);
            self.keyed.sort_by_key(|(kg, _)| *kg);
            self.deferred = Deferred::default();
        }
    }

    /// Decodes a state file, in the current layout or the one before native snapshots.
    pub fn decode(bytes: &[u8]) -> std::result::Result<Self, postcard::Error> {
        match postcard::from_bytes::<OperatorSnapshot>(bytes) {
            Ok(s) => Ok(s),
            Err(e) => match postcard::from_bytes::<OperatorSnapshotV1>(bytes) {
                Ok(v1) => Ok(OperatorSnapshot {
                    keyed: v1.keyed,
                    operator: v1.operator,
                    pending_commit: v1.pending_commit,
                    ..Default::default()
                }),
                Err(_) => Err(e),
            },
        }
    }
}

/// Identifies an operator subtask in a checkpoint: the operator's uid and the subtask index.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SubtaskId {
    /// The operator's uid (stable across job versions when set by the user).
    pub uid: String,
    /// Subtask index.
    pub subtask: usize,
}

/// Commits what a two-phase sink pre-committed. Must be idempotent: it runs once when the
/// checkpoint completes, and again after every restore of that checkpoint.
pub trait Committer: Send + Sync {
    /// Commits one pre-committed item.
    fn commit(&self, item: &[u8]) -> weir_types::Result<()>;
}

/// The state of one operator restored from a checkpoint, for one subtask.
#[derive(Clone, Debug, Default)]
pub struct RestoredState {
    /// Keyed state of the key groups this subtask owns.
    pub keyed: Vec<(u32, Vec<u8>)>,
    /// Native snapshots of the old subtasks whose key groups overlap this subtask's.
    pub native: Vec<NativeSnapshot>,
    /// Where their files are.
    pub files: Option<storage::StorageFiles>,
    /// Non-keyed entries of every subtask of the operator (union).
    pub operator: Vec<Vec<u8>>,
    /// The checkpoint id restored.
    pub checkpoint_id: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keyed blocks written as bytes are the bytes they were as sequences of `u8`: older
    /// checkpoints restore, and newer ones restore into older readers.
    #[test]
    fn keyed_blocks_encode_as_sequences_of_bytes_did() {
        #[derive(Serialize)]
        struct Plain {
            keyed: Vec<(u32, Vec<u8>)>,
            operator: Vec<Vec<u8>>,
            pending_commit: Vec<Vec<u8>>,
            native: Option<NativeSnapshot>,
        }
        let keyed = vec![
            (3u32, vec![1u8, 2, 255]),
            (7, (0..300).map(|i| i as u8).collect()),
            (9, vec![]),
        ];
        let snap = OperatorSnapshot {
            keyed: keyed.clone(),
            operator: vec![vec![9]],
            ..Default::default()
        };
        let bytes = postcard::to_allocvec(&snap).unwrap();
        let plain = Plain {
            keyed: keyed.clone(),
            operator: vec![vec![9]],
            pending_commit: vec![],
            native: None,
        };
        assert_eq!(bytes, postcard::to_allocvec(&plain).unwrap());
        let back = OperatorSnapshot::decode(&bytes).unwrap();
        assert_eq!((back.keyed, back.operator), (keyed, vec![vec![9]]));
    }
}
