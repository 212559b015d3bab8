//! The keyed state of one operator subtask: its tables, the current key, TTL and the backend.
use crate::bytes::{BytesTable, KvStoreFactory, MemKvFactory, SharedKv};
use crate::native::{FileSource, NativeSnapshot};
use crate::snapshot::{
    decode_blocks, encode_blocks, to_bytes, write_entry, Blocks, EntryBytes, TimerBytes,
};
use crate::table::{HeapTable, Namespace, Stamped, Table};
use std::any::Any;
use std::cell::RefCell;
use std::collections::HashMap;
use std::ops::Range;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use weir_types::keygroup::key_group_of_hash;
use weir_types::{Clock, Data, Key};

/// Creates the storage of keyed state. Chosen per job; operator code does not depend on it.
pub trait StateBackend: Send + Sync + 'static {
    /// A short name for logs and flags (`memory`, `disk`).
    fn name(&self) -> &'static str;
    /// How this backend keeps its tables.
    fn table_kind(&self) -> TableKind;
    /// The job ended (every task and the checkpoint coordinator have stopped): delete working
    /// files.
    fn job_ended(&self) {}
}

/// How a backend keeps tables.
#[derive(Clone)]
pub enum TableKind {
    /// As objects in hash maps ([`HeapTable`]): fastest, bounded by memory.
    Heap,
    /// As bytes in a key-value store per operator subtask (a disk backend).
    Bytes(Arc<dyn KvStoreFactory>),
}

/// Keyed state as bytes in memory: the disk backends' code path without a disk (tests, and
/// savepoints that cross backends).
#[derive(Debug, Default, Clone, Copy)]
pub struct BytesMemoryBackend;

impl StateBackend for BytesMemoryBackend {
    fn name(&self) -> &'static str {
        "memory-bytes"
    }
    fn table_kind(&self) -> TableKind {
        TableKind::Bytes(Arc::new(MemKvFactory))
    }
}

/// Keyed state in memory, as objects. The default.
#[derive(Debug, Default, Clone, Copy)]
pub struct MemoryBackend;

impl StateBackend for MemoryBackend {
    fn name(&self) -> &'static str {
        "memory"
    }
    fn table_kind(&self) -> TableKind {
        TableKind::Heap
    }
}

/// Time-to-live of state entries, in processing time. An entry's clock restarts when it is
/// created or written (Flink's `OnCreateAndWrite`); an expired entry is never returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateTtl {
    /// How long an entry lives after its last write.
    pub ttl_ms: i64,
}

impl StateTtl {
    /// Entries expire `ttl` after their last write.
    pub fn new(ttl: Duration) -> Self {
        StateTtl {
            ttl_ms: ttl.as_millis() as i64,
        }
    }
}

/// Misuse of keyed state.
#[derive(Debug)]
pub enum StateError {
    /// Two states share a name with different types.
    TypeMismatch(String),
    /// Restored state could not be decoded (wrong type, or damaged).
    Corrupt(String),
    /// The backend failed (could not open its store).
    Backend(String),
}

impl std::fmt::Display for StateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StateError::TypeMismatch(n) => {
                write!(f, "state '{n}' was registered twice with different types")
            }
            StateError::Corrupt(m) => write!(f, "restored state does not decode: {m}"),
            StateError::Backend(m) => write!(f, "state backend: {m}"),
        }
    }
}
impl std::error::Error for StateError {}

/// Adds a frozen table's entries to blocks, on another thread.
pub(crate) type SnapshotJob = Box<dyn FnOnce(&mut Blocks) + Send>;

/// A snapshot of keyed state whose serialization runs later, off the task thread.
pub type DeferredSnapshot = Box<dyn FnOnce() -> Vec<(u32, Vec<u8>)> + Send>;

/// A conversion of restored state bytes from one stored type to another.
struct Migration {
    from: String,
    to: String,
    convert: Box<dyn Fn(&[u8]) -> Result<Vec<u8>, String>>,
}

/// A table behind type erasure, with what every table can do without knowing its types.
pub(crate) trait ErasedTable: Any {
    fn as_any_mut(&mut self) -> &mut dyn Any;
    fn as_any(&self) -> &dyn Any;
    fn len(&self) -> usize;
    /// The stored value type's name, as snapshots record it.
    fn type_name(&self) -> &'static str;
    fn purge_expired(&mut self, now_ms: i64);
    /// [`Table::touch`] of the keys of `keys[range]` (`keys` a `&Vec<Option<K>>`) in a table
    /// without namespace; 0 otherwise.
    fn touch_all(&self, keys: &dyn Any, range: Range<usize>) -> usize;
    /// [`Table::touch`] of each (key, namespace) of `pairs` (a `&Vec<(K, N)>` of this table's
    /// types; 0 otherwise).
    fn touch_pairs(&self, pairs: &dyn Any) -> usize;
    /// Adds every live entry to `blocks`, by key group.
    fn snapshot_into(&self, name: &str, max_parallelism: usize, now_ms: i64, blocks: &mut Blocks);
    /// Freezes the entries (O(1) for the heap backend) and returns a job that adds them to
    /// `blocks` later, on another thread.
    fn snapshot_job(&mut self, name: &str, max_parallelism: usize, now_ms: i64) -> SnapshotJob;
    /// Background housekeeping; returns whether a snapshot's copy-on-write view is still in
    /// place.
    fn maintain(&mut self) -> bool;
    /// Inserts restored entries written with value type `type_name`.
    fn restore(&mut self, type_name: &str, entries: &[EntryBytes]) -> Result<(), String>;
}

/// One table's entries being encoded into a snapshot: a buffer per key group, handed to the
/// blocks at the end ([`EntryScratch::finish`]). Per entry, no map lookup and no table-name
/// comparison.
struct EntryScratch {
    key: Vec<u8>,
    ns: Vec<u8>,
    value: Vec<u8>,
    max_parallelism: usize,
    /// By key group: the number of entries and their encoding.
    groups: Vec<(u64, Vec<u8>)>,
}

/// Replaces `buf` with postcard(`v`), keeping its allocation.
#[inline]
fn encode_into<T: serde::Serialize + ?Sized>(buf: &mut Vec<u8>, v: &T) {
    buf.clear();
    weir_types::encode_into(v, buf);
}

impl EntryScratch {
    fn new(max_parallelism: usize) -> Self {
        EntryScratch {
            key: Vec::new(),
            ns: Vec::new(),
            value: Vec::new(),
            max_parallelism,
            groups: Vec::new(),
        }
    }
    /// Adds the entry `(k, n) → v`.
    fn add<K: Key, N: Namespace, V: Data>(&mut self, k: &K, n: &N, v: &V, written_ms: i64) {
        encode_into(&mut self.key, k);
        encode_into(&mut self.ns, n);
        encode_into(&mut self.value, v);
        let kg = key_group_of_hash(xxhash_rust::xxh3::xxh3_64(&self.key), self.max_parallelism);
        if self.groups.is_empty() {
            self.groups
                .resize_with(self.max_parallelism, Default::default);
        }
        let g = &mut self.groups[kg];
        g.0 += 1;
        write_entry(&mut g.1, &self.key, &self.ns, &self.value, written_ms);
    }
    /// Hands the entries to `blocks` as table `name` with values of type `V`.
    fn finish<V>(self, name: &str, blocks: &mut Blocks) {
        for (kg, (n, bytes)) in self.groups.into_iter().enumerate() {
            if n > 0 {
                blocks.entry(kg as u32).or_default().add_entries(
                    name,
                    std::any::type_name::<V>(),
                    n,
                    bytes,
                );
            }
        }
    }
}

/// Whether an entry written at `written_ms` is still alive at `now_ms` under `ttl`.
#[inline]
fn alive(ttl: Option<StateTtl>, now_ms: i64, written_ms: i64) -> bool {
    ttl.is_none_or(|t| now_ms - written_ms < t.ttl_ms)
}

/// Where a table's entries live.
pub(crate) enum Cells<K, N, V> {
    /// In memory without a TTL: the values alone. No write time (8 bytes less per entry) and
    /// no dynamic call per access. Snapshots write a write time of 0, as for any state
    /// without TTL, so the canonical bytes are the same either way.
    Plain(HeapTable<K, N, V>),
    /// With a TTL, or on a byte backend: each value with the processing time of its last write.
    Stamped(Box<dyn Table<K, N, Stamped<V>>>),
}

pub(crate) struct Slot<K, N, V> {
    pub(crate) cells: Cells<K, N, V>,
    pub(crate) ttl: Option<StateTtl>,
}

impl<K: Key, N: Namespace, V: Data> Slot<K, N, V> {
    #[inline]
    fn live(&self, now_ms: i64, written_ms: i64) -> bool {
        alive(self.ttl, now_ms, written_ms)
    }

    /// Calls `f` with the live value of `(key, ns)`, if any.
    #[inline]
    pub(crate) fn read<R>(
        &self,
        key: &K,
        ns: &N,
        now_ms: i64,
        f: impl FnOnce(Option<&V>) -> R,
    ) -> R {
        let mut f = Some(f);
        let mut out = None;
        match &self.cells {
            Cells::Plain(t) => t.read(key, ns, &mut |v| out = Some((f.take().unwrap())(v))),
            Cells::Stamped(t) => t.read(key, ns, &mut |v| {
                let v = v.filter(|v| self.live(now_ms, v.written_ms));
                out = Some((f.take().unwrap())(v.map(|v| &v.value)))
            }),
        }
        out.unwrap()
    }

    /// Sets `(key, ns)` to `v`, written at `now_ms`.
    #[inline]
    pub(crate) fn write(&mut self, key: &K, ns: &N, now_ms: i64, v: V) {
        match &mut self.cells {
            Cells::Plain(t) => t.put(key, ns, v),
            Cells::Stamped(t) => t.put(
                key,
                ns,
                Stamped {
                    value: v,
                    written_ms: now_ms,
                },
            ),
        }
    }

    /// Changes the value of `(key, ns)` in place, starting from `init()` if there is no live
    /// one; the entry counts as written at `now_ms`.
    #[inline]
    pub(crate) fn mutate<R>(
        &mut self,
        key: &K,
        ns: &N,
        now_ms: i64,
        init: impl FnOnce() -> V,
        f: impl FnOnce(&mut V) -> R,
    ) -> R {
        let ttl = self.ttl;
        let mut init = Some(init);
        let mut f = Some(f);
        let mut out = None;
        match &mut self.cells {
            Cells::Plain(t) => t.upsert(key, ns, &mut |cur| match cur {
                Some(v) => {
                    out = Some((f.take().unwrap())(v));
                    None
                }
                None => {
                    let mut v = (init.take().unwrap())();
                    out = Some((f.take().unwrap())(&mut v));
                    Some(v)
                }
            }),
            Cells::Stamped(t) => t.upsert(key, ns, &mut |cur| match cur {
                Some(st) => {
                    if !alive(ttl, now_ms, st.written_ms) {
                        st.value = (init.take().unwrap())();
                    }
                    st.written_ms = now_ms;
                    out = Some((f.take().unwrap())(&mut st.value));
                    None
                }
                None => {
                    let mut v = (init.take().unwrap())();
                    out = Some((f.take().unwrap())(&mut v));
                    Some(Stamped {
                        value: v,
                        written_ms: now_ms,
                    })
                }
            }),
        }
        out.unwrap()
    }

    /// Removes `(key, ns)`, returning its value if it was alive.
    #[inline]
    pub(crate) fn remove(&mut self, key: &K, ns: &N, now_ms: i64) -> Option<V> {
        match &mut self.cells {
            Cells::Plain(t) => t.remove(key, ns),
            Cells::Stamped(t) => {
                let v = t.remove(key, ns)?;
                self.live(now_ms, v.written_ms).then_some(v.value)
            }
        }
    }

    /// Visits every entry alive at `now_ms`, with its write time (0 without TTL).
    pub(crate) fn for_each_live(&self, now_ms: i64, f: &mut dyn FnMut(&K, &N, &V, i64)) {
        match &self.cells {
            Cells::Plain(t) => t.for_each(&mut |k, n, v| f(k, n, v, 0)),
            Cells::Stamped(t) => t.for_each(&mut |k, n, v| {
                if self.live(now_ms, v.written_ms) {
                    f(k, n, &v.value, v.written_ms)
                }
            }),
        }
    }
}

impl<K: Key, N: Namespace, V: Data> ErasedTable for Slot<K, N, V> {
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn len(&self) -> usize {
        match &self.cells {
            Cells::Plain(t) => t.len(),
            Cells::Stamped(t) => t.len(),
        }
    }
    fn type_name(&self) -> &'static str {
        std::any::type_name::<V>()
    }
    fn touch_all(&self, keys: &dyn Any, range: Range<usize>) -> usize {
        match (
            (&() as &dyn Any).downcast_ref::<N>(),
            keys.downcast_ref::<Vec<Option<K>>>(),
        ) {
            (Some(ns), Some(keys)) => match &self.cells {
                Cells::Plain(t) => t.touch_all(&keys[range], ns),
                Cells::Stamped(t) => t.touch_all(&keys[range], ns),
            },
            _ => 0,
        }
    }
    fn touch_pairs(&self, pairs: &dyn Any) -> usize {
        let Some(pairs) = pairs.downcast_ref::<Vec<(K, N)>>() else {
            return 0;
        };
        pairs
            .iter()
            .filter(|(k, n)| match &self.cells {
                Cells::Plain(t) => t.touch(k, n),
                Cells::Stamped(t) => t.touch(k, n),
            })
            .count()
    }
    fn purge_expired(&mut self, now_ms: i64) {
        if let (Some(ttl), Cells::Stamped(t)) = (self.ttl, &mut self.cells) {
            t.retain(&mut |_, _, v| alive(Some(ttl), now_ms, v.written_ms));
        }
    }
    fn snapshot_into(&self, name: &str, max_parallelism: usize, now_ms: i64, blocks: &mut Blocks) {
        let mut scratch = EntryScratch::new(max_parallelism);
        self.for_each_live(now_ms, &mut |k, n, v, written_ms| {
            scratch.add(k, n, v, written_ms);
        });
        scratch.finish::<V>(name, blocks);
    }
    fn snapshot_job(&mut self, name: &str, max_parallelism: usize, now_ms: i64) -> SnapshotJob {
        let ttl = self.ttl;
        let name = name.to_string();
        match &mut self.cells {
            Cells::Plain(t) => {
                let entries = t.frozen_entries();
                Box::new(move |blocks: &mut Blocks| {
                    let mut scratch = EntryScratch::new(max_parallelism);
                    entries(&mut |k, n, v| scratch.add(k, n, v, 0));
                    scratch.finish::<V>(&name, blocks);
                })
            }
            Cells::Stamped(t) => {
                let entries = t.frozen_entries();
                Box::new(move |blocks: &mut Blocks| {
                    let mut scratch = EntryScratch::new(max_parallelism);
                    entries(&mut |k, n, v| {
                        if alive(ttl, now_ms, v.written_ms) {
                            scratch.add(k, n, &v.value, v.written_ms);
                        } // expired state is not worth restoring
                    });
                    scratch.finish::<V>(&name, blocks);
                })
            }
        }
    }
    fn maintain(&mut self) -> bool {
        match &mut self.cells {
            Cells::Plain(t) => {
                t.maintain();
                t.frozen()
            }
            Cells::Stamped(t) => {
                t.maintain();
                t.frozen()
            }
        }
    }
    fn restore(&mut self, type_name: &str, entries: &[EntryBytes]) -> Result<(), String> {
        let now = std::any::type_name::<V>();
        if type_name != now {
            return Err(format!("it was written as {type_name} and is now registered as {now}; migrate it or register it under another name"));
        }
        for e in entries {
            let k: K = postcard::from_bytes(&e.key).map_err(|x| format!("key: {x}"))?;
            let n: N = postcard::from_bytes(&e.ns).map_err(|x| format!("namespace: {x}"))?;
            let v: V = postcard::from_bytes(&e.value).map_err(|x| format!("value: {x}"))?;
            self.write(&k, &n, e.written_ms, v);
        }
        Ok(())
    }
}

/// The keyed state of one operator subtask.
pub struct KeyedStateStore<K> {
    kind: TableKind,
    kv: Option<SharedKv>,
    max_parallelism: usize,
    tables: Vec<Box<dyn ErasedTable>>,
    names: HashMap<String, usize>,
    current_key: Option<K>,
    clock: Arc<dyn Clock>,
    any_ttl: bool,
    /// Operator uid and subtask, for opening a disk store.
    scope: (String, usize),
    /// Conversions of restored state from an old stored type, by state name.
    migrations: HashMap<String, Vec<Migration>>,
    /// Restored entries by table name, waiting for the table to be registered (its types are
    /// known only then).
    restored: HashMap<String, (String, Vec<EntryBytes>)>,
    restored_timers: Vec<TimerBytes>,
    /// Byte backends: tables restored straight into the store, by name, with the value type
    /// they were written as (checked when the table is registered).
    restored_types: HashMap<String, String>,
    /// The key groups this subtask owns.
    key_groups: (u32, u32),
    /// Whether tables may hold a snapshot's copy-on-write view.
    frozen: bool,
}

/// What a snapshot of keyed state holds.
pub struct StateSnapshot {
    /// The backend's native snapshot of the tables, if it took one.
    pub native: Option<NativeSnapshot>,
    /// Serializes the rest as canonical blocks by key group, later and on another thread:
    /// every table and timer, or only the timers when `native` holds the tables.
    pub deferred: DeferredSnapshot,
}

impl<K: Key> KeyedStateStore<K> {
    /// An empty store on `backend`, reading processing time from `clock` (for TTL).
    pub fn new(backend: &dyn StateBackend, clock: Arc<dyn Clock>) -> Self {
        KeyedStateStore {
            kind: backend.table_kind(),
            kv: None,
            max_parallelism: weir_types::keygroup::DEFAULT_MAX_PARALLELISM,
            tables: Vec::new(),
            names: HashMap::new(),
            current_key: None,
            clock,
            any_ttl: false,
            restored: HashMap::new(),
            restored_timers: Vec::new(),
            scope: (String::new(), 0),
            migrations: HashMap::new(),
            restored_types: HashMap::new(),
            key_groups: (0, weir_types::keygroup::DEFAULT_MAX_PARALLELISM as u32),
            frozen: false,
        }
    }

    /// Converts restored state `name` stored as `Old` into `New` (the stored type: the value
    /// type for value and reducing state, `Vec<T>` for list state, `HashMap<K, V>` for map
    /// state, the accumulator for aggregating state). Call before registering the state.
    pub fn migrate<Old: Data, New: Data>(&mut self, name: &str, f: impl Fn(Old) -> New + 'static) {
        let m: Migration = Migration {
            from: std::any::type_name::<Old>().to_string(),
            to: std::any::type_name::<New>().to_string(),
            convert: Box::new(move |b: &[u8]| {
                let old: Old =
                    postcard::from_bytes(b).map_err(|e| format!("decoding the old type: {e}"))?;
                Ok(to_bytes(&f(old)))
            }),
        };
        self.migrations.entry(name.to_string()).or_default().push(m);
    }

    /// Applies registered migrations to restored entries of `name` written as `type_name`.
    fn migrated(
        &self,
        name: &str,
        mut type_name: String,
        mut entries: Vec<EntryBytes>,
    ) -> Result<(String, Vec<EntryBytes>), StateError> {
        // Follow a chain of migrations (v1 -> v2 -> v3), each at most once.
        for _ in 0..8 {
            let Some(m) = self
                .migrations
                .get(name)
                .and_then(|ms| ms.iter().find(|m| m.from == type_name))
            else {
                break;
            };
            for e in &mut entries {
                e.value = (m.convert)(&e.value)
                    .map_err(|x| StateError::Corrupt(format!("migrating state '{name}': {x}")))?;
            }
            type_name = m.to.clone();
        }
        Ok((type_name, entries))
    }

    /// Names the operator subtask (a disk backend keeps its files under it), its parallelism
    /// and the number of key groups.
    pub fn with_scope(
        mut self,
        uid: &str,
        subtask: usize,
        parallelism: usize,
        max_parallelism: usize,
    ) -> Self {
        self.scope = (uid.to_string(), subtask);
        self.max_parallelism = max_parallelism;
        let r = weir_types::keygroup::key_group_range(subtask, parallelism, max_parallelism);
        self.key_groups = (r.start as u32, r.end as u32);
        self
    }

    /// The byte store, opened on first use.
    fn kv(&mut self) -> Result<Option<SharedKv>, StateError> {
        if self.kv.is_none() {
            if let TableKind::Bytes(factory) = &self.kind {
                let kv = factory
                    .open(&self.scope.0, self.scope.1)
                    .map_err(StateError::Backend)?;
                self.kv = Some(Rc::new(RefCell::new(kv)));
            }
        }
        Ok(self.kv.clone())
    }

    /// Notes that table `name` was restored into the byte store as `type_name`.
    fn restored_type(&mut self, name: &str, type_name: &str) -> Result<(), StateError> {
        match self.restored_types.get(name) {
            Some(t) if t != type_name => Err(StateError::Corrupt(format!(
                "state '{name}' was restored as {t} and as {type_name}"
            ))),
            Some(_) => Ok(()),
            None => {
                self.restored_types
                    .insert(name.to_string(), type_name.to_string());
                Ok(())
            }
        }
    }

    /// Loads a snapshot's key-group blocks (restore). Entries go into their tables when the
    /// tables are registered (a byte backend writes them into its store at once: its stored
    /// layout needs no types); timers wait for [`KeyedStateStore::take_restored_timers`].
    pub fn restore_blocks(&mut self, raw: &[(u32, Vec<u8>)]) -> Result<(), StateError> {
        let blocks = decode_blocks(raw).map_err(StateError::Corrupt)?;
        // Opened only for blocks with tables: a native restore may still make the store.
        let kv = if blocks.iter().any(|(_, b)| !b.tables.is_empty()) {
            self.kv()?
        } else {
            None
        };
        let mut key = Vec::with_capacity(64);
        let mut value = Vec::with_capacity(64);
        for (_, b) in blocks {
            for (name, type_name, entries) in b.tables {
                match (self.names.get(&name), &kv) {
                    (Some(&i), _) => self.tables[i]
                        .restore(&type_name, &entries)
                        .map_err(|e| StateError::Corrupt(format!("state '{name}': {e}")))?,
                    (None, Some(kv)) => {
                        self.restored_type(&name, &type_name)?;
                        let mut kv = kv.borrow_mut();
                        let id = kv.table(&name).map_err(StateError::Backend)?;
                        for e in &entries {
                            // The key group again, from the key: it depends on the job's
                            // number of key groups, which the stored layout carries.
                            let kg = key_group_of_hash(
                                xxhash_rust::xxh3::xxh3_64(&e.key),
                                self.max_parallelism,
                            ) as u16;
                            key.clear();
                            key.extend_from_slice(&kg.to_be_bytes());
                            key.extend_from_slice(&e.key);
                            key.extend_from_slice(&e.ns);
                            value.clear();
                            value.extend_from_slice(&e.written_ms.to_le_bytes());
                            value.extend_from_slice(&e.value);
                            kv.put(id, &key, &value);
                        }
                    }
                    (None, None) => self
                        .restored
                        .entry(name)
                        .or_insert_with(|| (type_name, Vec::new()))
                        .1
                        .extend(entries),
                }
            }
            self.restored_timers.extend(b.timers);
        }
        Ok(())
    }

    /// Loads native snapshots (restore): those whose key groups overlap this subtask's. One
    /// snapshot of exactly this subtask's key groups, in this backend's own format, becomes the
    /// store itself (its files are fetched, not read); otherwise (another parallelism, another
    /// backend) the entries of this subtask's key groups are read through the format's
    /// registered [`crate::native::NativeReader`] and loaded as a canonical restore would.
    pub fn restore_native(
        &mut self,
        snaps: &[NativeSnapshot],
        files: &dyn FileSource,
    ) -> Result<(), StateError> {
        let mine = self.key_groups;
        let snaps: Vec<&NativeSnapshot> = snaps
            .iter()
            .filter(|s| s.key_groups.0 < mine.1 && mine.0 < s.key_groups.1)
            .collect();
        for s in &snaps {
            if s.max_parallelism as usize != self.max_parallelism {
                return Err(StateError::Corrupt(format!(
                    "the checkpoint has {} key groups and the job {}: the number of key groups (max parallelism) cannot change",
                    s.max_parallelism, self.max_parallelism
                )));
            }
        }
        if let (TableKind::Bytes(factory), [s], None) = (&self.kind, snaps.as_slice(), &self.kv) {
            if s.key_groups == mine && factory.opens_native(&s.format) {
                let kv = factory
                    .open_native(&self.scope.0, self.scope.1, s, files)
                    .map_err(StateError::Backend)?;
                self.kv = Some(Rc::new(RefCell::new(kv)));
                for (n, t) in &s.tables {
                    self.restored_type(n, t)?;
                }
                return Ok(());
            }
        }
        for s in snaps {
            let reader = crate::native::reader(&s.format).ok_or_else(|| {
                StateError::Backend(format!(
                    "the checkpoint holds state in the native format '{}', which no linked backend reads (restore with the backend that wrote it, or from a savepoint)",
                    s.format
                ))
            })?;
            let range = s.key_groups.0.max(mine.0)..s.key_groups.1.min(mine.1);
            let types: HashMap<&str, &str> = s
                .tables
                .iter()
                .map(|(n, t)| (n.as_str(), t.as_str()))
                .collect();
            match self.kv()? {
                Some(kv) => {
                    for (n, t) in &s.tables {
                        self.restored_type(n, t)?;
                    }
                    let mut ids: HashMap<String, u32> = HashMap::new();
                    let mut kv = kv.borrow_mut();
                    reader
                        .read(s, files, range, &mut |table, k, v| {
                            let id = match ids.get(table) {
                                Some(&id) => id,
                                None => {
                                    let id = kv.table(table)?;
                                    ids.insert(table.to_string(), id);
                                    id
                                }
                            };
                            kv.put(id, k, v);
                            Ok(())
                        })
                        .map_err(StateError::Corrupt)?;
                }
                None => {
                    let mut got: HashMap<String, Vec<EntryBytes>> = HashMap::new();
                    reader
                        .read(s, files, range, &mut |table, k, v| {
                            got.entry(table.to_string())
                                .or_default()
                                .push(entry_of_raw::<K>(k, v)?);
                            Ok(())
                        })
                        .map_err(StateError::Corrupt)?;
                    for (table, entries) in got {
                        let t = types.get(table.as_str()).copied().unwrap_or("unknown");
                        match self.names.get(&table) {
                            Some(&i) => self.tables[i].restore(t, &entries).map_err(|e| {
                                StateError::Corrupt(format!("state '{table}': {e}"))
                            })?,
                            None => self
                                .restored
                                .entry(table)
                                .or_insert_with(|| (t.to_string(), Vec::new()))
                                .1
                                .extend(entries),
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The restored timers, once (the operator owns its timer service).
    pub fn take_restored_timers(&mut self) -> Vec<TimerBytes> {
        std::mem::take(&mut self.restored_timers)
    }

    /// A snapshot in two parts: now, the tables are frozen (O(1) each for the heap backend,
    /// copy-on-write) and `timers` taken; the returned job serializes everything by key group
    /// later, on another thread, while processing goes on.
    pub fn snapshot_deferred(
        &mut self,
        max_parallelism: usize,
        timers: Vec<(i64, u8, Vec<u8>, Vec<u8>)>,
    ) -> DeferredSnapshot {
        self.deferred(max_parallelism, timers, true)
    }

    /// The job of [`KeyedStateStore::snapshot_deferred`], with the tables or only the timers.
    fn deferred(
        &mut self,
        max_parallelism: usize,
        timers: Vec<(i64, u8, Vec<u8>, Vec<u8>)>,
        with_tables: bool,
    ) -> DeferredSnapshot {
        let now = self.clock.now_ms();
        let mut names: Vec<(String, usize)> =
            self.names.iter().map(|(n, i)| (n.clone(), *i)).collect();
        names.sort();
        let jobs: Vec<SnapshotJob> = names
            .iter()
            .filter(|_| with_tables)
            .map(|(n, i)| self.tables[*i].snapshot_job(n, max_parallelism, now))
            .collect();
        Box::new(move || {
            let mut blocks = Blocks::new();
            for j in jobs {
                j(&mut blocks);
            }
            for (ts, domain, key, ns) in timers {
                let kg =
                    key_group_of_hash(xxhash_rust::xxh3::xxh3_64(&key), max_parallelism) as u32;
                blocks.entry(kg).or_default().add_timer(TimerBytes {
                    domain,
                    ts,
                    key,
                    ns,
                });
            }
            encode_blocks(blocks)
        })
    }

    /// Merges copy-on-write deltas of finished snapshots back (cheap; call now and then).
    pub fn maintain(&mut self) {
        let mut frozen = false;
        for t in &mut self.tables {
            frozen |= t.maintain();
        }
        self.frozen = frozen;
    }

    /// [`KeyedStateStore::maintain`] while a snapshot's copy-on-write views are in place, else
    /// nothing: call it before every batch, so that the tables stop paying for copy-on-write
    /// (two lookups a read, a copy a first write) as soon as the snapshot has been serialized,
    /// not when the checkpoint completes.
    #[inline]
    pub fn thaw_when_released(&mut self) {
        if self.frozen {
            self.maintain();
        }
    }

    /// Every table's live entries, plus `timers`, grouped by key group.
    pub fn snapshot_blocks(
        &self,
        max_parallelism: usize,
        timers: Vec<(i64, u8, Vec<u8>, Vec<u8>)>,
    ) -> Vec<(u32, Vec<u8>)> {
        self.blocks(max_parallelism, timers)
    }

    /// A snapshot for checkpoint `id`, in two parts. Now: the backend's native snapshot when
    /// `native` is set and the backend has a native format (a disk backend flushes and links
    /// its immutable files), else the tables are frozen (copy-on-write for the heap backend);
    /// `timers` are taken. Later, on another thread, [`StateSnapshot::deferred`] serializes by
    /// key group the timers and, without a native snapshot, every table (canonical: savepoints,
    /// and backends without a native format).
    pub fn snapshot(
        &mut self,
        id: u64,
        native: bool,
        timers: Vec<(i64, u8, Vec<u8>, Vec<u8>)>,
    ) -> Result<StateSnapshot, StateError> {
        let snap = match (&self.kv, native) {
            (Some(kv), true) => kv.borrow_mut().native_snapshot(id),
            _ => None,
        };
        let (native, finish) = match snap {
            None => (None, None),
            Some(Err(e)) => return Err(StateError::Backend(format!("native snapshot: {e}"))),
            Some(Ok((mut n, finish))) => {
                n.key_groups = self.key_groups;
                n.max_parallelism = self.max_parallelism as u32;
                let mut tables: Vec<(String, String)> = self
                    .names
                    .iter()
                    .map(|(name, &i)| (name.clone(), self.tables[i].type_name().to_string()))
                    .collect();
                for (name, t) in &self.restored_types {
                    if !self.names.contains_key(name) {
                        tables.push((name.clone(), t.clone()));
                    }
                }
                tables.sort();
                n.tables = tables;
                (Some(n), finish)
            }
        };
        self.frozen |= native.is_none();
        let deferred = self.deferred(self.max_parallelism, timers, native.is_none());
        let deferred: DeferredSnapshot = match finish {
            None => deferred,
            // The native snapshot's own deferred work first (it writes files to upload). A
            // failure leaves a file missing, so the upload, and the checkpoint, fail.
            Some(finish) => Box::new(move || {
                if let Err(e) = finish() {
                    tracing::error!("completing a native snapshot: {e}");
                }
                deferred()
            }),
        };
        Ok(StateSnapshot { native, deferred })
    }

    /// Checkpoint `id` completed: merges copy-on-write deltas back (as
    /// [`KeyedStateStore::maintain`]) and tells a byte store, which may release local files.
    pub fn checkpoint_complete(&mut self, id: u64) {
        self.maintain();
        if let Some(kv) = &self.kv {
            kv.borrow_mut().checkpoint_complete(id);
        }
    }

    fn blocks(
        &self,
        max_parallelism: usize,
        timers: Vec<(i64, u8, Vec<u8>, Vec<u8>)>,
    ) -> Vec<(u32, Vec<u8>)> {
        let mut blocks = Blocks::new();
        let now = self.clock.now_ms();
        let mut names: Vec<(&String, &usize)> = self.names.iter().collect();
        names.sort();
        for (name, &i) in names {
            self.tables[i].snapshot_into(name, max_parallelism, now, &mut blocks);
        }
        for (ts, domain, key, ns) in timers {
            let kg = key_group_of_hash(xxhash_rust::xxh3::xxh3_64(&key), max_parallelism) as u32;
            blocks.entry(kg).or_default().add_timer(TimerBytes {
                domain,
                ts,
                key,
                ns,
            });
        }
        encode_blocks(blocks)
    }

    /// Registers (or finds, if registered before) the table `name` with namespace `N` and
    /// stored type `V`. Returns its index.
    pub fn register<N: Namespace, V: Data>(
        &mut self,
        name: &str,
        ttl: Option<StateTtl>,
    ) -> Result<usize, StateError> {
        if let Some(&i) = self.names.get(name) {
            return if self.tables[i].as_any().is::<Slot<K, N, V>>() {
                Ok(i)
            } else {
                Err(StateError::TypeMismatch(name.to_string()))
            };
        }
        let cells = match self.kv()? {
            None if ttl.is_none() => Cells::Plain(HeapTable::default()),
            None => Cells::Stamped(Box::new(HeapTable::default())),
            Some(kv) => {
                let id = kv.borrow_mut().table(name).map_err(StateError::Backend)?;
                if let Some(written) = self.restored_types.remove(name) {
                    self.migrate_stored(name, &written, std::any::type_name::<V>(), &kv, id)?;
                }
                Cells::Stamped(Box::new(BytesTable::<K, N, V>::new(
                    kv,
                    id,
                    self.max_parallelism,
                )))
            }
        };
        self.any_ttl |= ttl.is_some();
        let mut slot = Slot::<K, N, V> { cells, ttl };
        if let Some((type_name, entries)) = self.restored.remove(name) {
            let (type_name, entries) = self.migrated(name, type_name, entries)?;
            slot.restore(&type_name, &entries)
                .map_err(|e| StateError::Corrupt(format!("state '{name}': {e}")))?;
        }
        self.tables.push(Box::new(slot));
        self.names.insert(name.to_string(), self.tables.len() - 1);
        Ok(self.tables.len() - 1)
    }

    /// Checks that table `name`, restored into the byte store as `written`, is registered as
    /// `now`, converting its values in place if migrations lead from one to the other.
    fn migrate_stored(
        &self,
        name: &str,
        written: &str,
        now: &str,
        kv: &SharedKv,
        id: u32,
    ) -> Result<(), StateError> {
        if written == now {
            return Ok(());
        }
        let mut chain: Vec<&Migration> = Vec::new();
        let mut t = written;
        for _ in 0..8 {
            match self
                .migrations
                .get(name)
                .and_then(|ms| ms.iter().find(|m| m.from == t))
            {
                Some(m) => {
                    chain.push(m);
                    t = &m.to;
                }
                None => break,
            }
        }
        if t != now {
            return Err(StateError::Corrupt(format!(
                "state '{name}': it was written as {written} and is now registered as {now}; migrate it or register it under another name"
            )));
        }
        let mut converted = Vec::new();
        let mut failure = None;
        kv.borrow().scan(id, &mut |k, v| {
            let mut value = v[8..].to_vec();
            for m in &chain {
                match (m.convert)(&value) {
                    Ok(x) => value = x,
                    Err(e) => {
                        failure.get_or_insert(e);
                        return;
                    }
                }
            }
            let mut out = v[..8].to_vec();
            out.extend_from_slice(&value);
            converted.push((k.to_vec(), out));
        });
        if let Some(e) = failure {
            return Err(StateError::Corrupt(format!(
                "migrating state '{name}': {e}"
            )));
        }
        let mut kv = kv.borrow_mut();
        for (k, v) in converted {
            kv.put(id, &k, &v);
        }
        Ok(())
    }

    /// Brings the entries of the keys of `keys[range]` in every table without namespace into
    /// the CPU cache (see [`Table::touch`]); returns how many exist. Touching a few records'
    /// keys before working through them overlaps their cache misses. (`None`s are skipped; a
    /// `Vec` passes through `dyn Any` to the typed tables, a slice could not.)
    #[allow(clippy::ptr_arg)]
    pub fn touch_all(&self, keys: &Vec<Option<K>>, range: Range<usize>) -> usize {
        self.tables
            .iter()
            .map(|t| t.touch_all(keys, range.clone()))
            .sum()
    }

    /// [`Table::touch`] of each (key, namespace) of `pairs` in table `idx` (a `Vec<(K, N)>`
    /// of its types); returns how many exist.
    pub(crate) fn touch_pairs(&self, idx: usize, pairs: &dyn Any) -> usize {
        self.tables[idx].touch_pairs(pairs)
    }

    /// Sets the key that state access applies to.
    #[inline]
    pub fn set_current_key(&mut self, key: K) {
        self.current_key = Some(key);
    }

    /// The current key.
    #[inline]
    pub fn current_key(&self) -> Option<&K> {
        self.current_key.as_ref()
    }

    /// Current processing time, as the TTL sees it.
    #[inline]
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    pub(crate) fn slot<N: Namespace, V: Data>(&mut self, idx: usize) -> (&K, &mut Slot<K, N, V>) {
        let key = self
            .current_key
            .as_ref()
            .expect("keyed state accessed outside of a keyed context");
        let slot = self.tables[idx]
            .as_any_mut()
            .downcast_mut::<Slot<K, N, V>>()
            .expect("state handle used with the store it was registered in");
        (key, slot)
    }

    /// Removes expired entries from every table with a TTL.
    pub fn purge_expired(&mut self) {
        if self.any_ttl {
            let now = self.clock.now_ms();
            for t in &mut self.tables {
                t.purge_expired(now);
            }
        }
    }

    /// Whether any table has a TTL.
    pub fn has_ttl(&self) -> bool {
        self.any_ttl
    }

    /// Total entries over all tables (for tests and metrics: window cleanup must bring it to 0).
    pub fn total_entries(&self) -> usize {
        self.tables.iter().map(|t| t.len()).sum()
    }

    /// Entries of the table `name`.
    pub fn entries_of(&self, name: &str) -> usize {
        self.names
            .get(name)
            .map(|&i| self.tables[i].len())
            .unwrap_or(0)
    }

    /// Visits every key (and namespace) that has an entry in table `idx` of type `(N, V)`,
    /// without a current key: for `apply_to_keyed_state` and timers over all keys.
    pub fn for_each_entry<N: Namespace, V: Data>(&self, idx: usize, f: &mut dyn FnMut(&K, &N, &V)) {
        let slot = self.tables[idx]
            .as_any()
            .downcast_ref::<Slot<K, N, V>>()
            .expect("typed");
        slot.for_each_live(self.clock.now_ms(), &mut |k, n, v, _| f(k, n, v))
    }
}

/// A raw stored entry (the byte layout of [`crate::bytes`]) as a canonical entry: the key
/// type says where the key ends and the namespace begins.
fn entry_of_raw<K: Key>(k: &[u8], v: &[u8]) -> Result<EntryBytes, String> {
    if k.len() < 2 || v.len() < 8 {
        return Err("a stored entry is too short".into());
    }
    let rest = postcard::take_from_bytes::<K>(&k[2..])
        .map_err(|e| format!("a stored key does not decode: {e}"))?
        .1;
    let key_end = k.len() - rest.len();
    Ok(EntryBytes {
        key: k[2..key_end].to_vec(),
        ns: rest.to_vec(),
        value: v[8..].to_vec(),
        written_ms: i64::from_le_bytes(v[..8].try_into().expect("8 bytes")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handles::{MapState, ValueState};
    use crate::timers::TimerService;
    use weir_types::keygroup::{key_group_range, subtask_for_key_group};
    use weir_types::ManualClock;

    #[test]
    fn snapshot_restores_whole_and_split_by_key_group() {
        let clock = Arc::new(ManualClock::new(1000));
        let mut a: KeyedStateStore<u64> = KeyedStateStore::new(&MemoryBackend, clock.clone());
        let count: ValueState<u64> = ValueState::register(&mut a, "count").unwrap();
        let tags: MapState<String, i64> = MapState::register(&mut a, "tags").unwrap();
        let mut timers: TimerService<u64, ()> = TimerService::default();
        for k in 0..200u64 {
            a.set_current_key(k);
            count.set(&mut a, k * 10);
            tags.put(&mut a, format!("t{k}"), k as i64);
            timers.event.register(k as i64 + 5, &k, &());
        }
        let blocks = a.snapshot_blocks(128, timers.snapshot());
        assert!(blocks.len() > 64, "spread over key groups");

        // Restore whole: state registered after the blocks are loaded.
        let mut b: KeyedStateStore<u64> = KeyedStateStore::new(&MemoryBackend, clock.clone());
        b.restore_blocks(&blocks).unwrap();
        let count_b: ValueState<u64> = ValueState::register(&mut b, "count").unwrap();
        let tags_b: MapState<String, i64> = MapState::register(&mut b, "tags").unwrap();
        let mut timers_b: TimerService<u64, ()> = TimerService::default();
        timers_b.restore(&b.take_restored_timers()).unwrap();
        for k in 0..200u64 {
            b.set_current_key(k);
            assert_eq!(count_b.get(&mut b), Some(k * 10));
            assert_eq!(tags_b.get(&mut b, &format!("t{k}")), Some(k as i64));
        }
        assert_eq!(timers_b.event.len(), 200);

        // Split over 3 subtasks: each gets exactly the keys whose key group it owns.
        let mut total = 0;
        for s in 0..3 {
            let range = key_group_range(s, 3, 128);
            let mine: Vec<(u32, Vec<u8>)> = blocks
                .iter()
                .filter(|(kg, _)| range.contains(&(*kg as usize)))
                .cloned()
                .collect();
            let mut c: KeyedStateStore<u64> = KeyedStateStore::new(&MemoryBackend, clock.clone());
            c.restore_blocks(&mine).unwrap();
            let count_c: ValueState<u64> = ValueState::register(&mut c, "count").unwrap();
            for k in 0..200u64 {
                c.set_current_key(k);
                let owner = subtask_for_key_group(weir_types::keygroup::key_group(&k, 128), 3, 128);
                assert_eq!(count_c.get(&mut c).is_some(), owner == s, "key {k}");
            }
            total += c.total_entries();
        }
        assert_eq!(total, 200);
    }

    #[test]
    fn restoring_into_another_type_is_an_error_not_garbage() {
        let clock = Arc::new(ManualClock::new(0));
        let mut a: KeyedStateStore<u64> = KeyedStateStore::new(&MemoryBackend, clock.clone());
        let s: ValueState<String> = ValueState::register(&mut a, "s").unwrap();
        a.set_current_key(1);
        s.set(&mut a, "hello".into());
        let blocks = a.snapshot_blocks(128, vec![]);
        let mut b: KeyedStateStore<u64> = KeyedStateStore::new(&MemoryBackend, clock);
        b.restore_blocks(&blocks).unwrap();
        assert!(ValueState::<Vec<u64>>::register(&mut b, "s").is_err());
    }
}

#[cfg(test)]
mod migration_tests {
    use super::*;
    use crate::handles::ValueState;
    use serde::{Deserialize, Serialize};
    use weir_types::ManualClock;

    #[derive(Clone, Serialize, Deserialize, PartialEq, Debug)]
    struct V1 {
        count: u32,
    }
    #[derive(Clone, Serialize, Deserialize, PartialEq, Debug)]
    struct V2 {
        count: u64,
        label: String,
    }

    #[test]
    fn state_written_as_an_old_type_migrates_to_the_new_one() {
        let clock = Arc::new(ManualClock::new(0));
        let mut a: KeyedStateStore<u64> = KeyedStateStore::new(&MemoryBackend, clock.clone());
        let s: ValueState<V1> = ValueState::register(&mut a, "s").unwrap();
        for k in 0..10u64 {
            a.set_current_key(k);
            s.set(&mut a, V1 { count: k as u32 });
        }
        let blocks = a.snapshot_blocks(128, vec![]);
        // Without a migration: refused, naming both types.
        let mut b: KeyedStateStore<u64> = KeyedStateStore::new(&MemoryBackend, clock.clone());
        b.restore_blocks(&blocks).unwrap();
        let err = ValueState::<V2>::register(&mut b, "s")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("V1") && err.contains("V2"), "{err}");
        // With one: converted.
        let mut c: KeyedStateStore<u64> = KeyedStateStore::new(&MemoryBackend, clock);
        c.migrate::<V1, V2>("s", |o| V2 {
            count: o.count as u64 * 10,
            label: "migrated".into(),
        });
        c.restore_blocks(&blocks).unwrap();
        let s2: ValueState<V2> = ValueState::register(&mut c, "s").unwrap();
        for k in 0..10u64 {
            c.set_current_key(k);
            assert_eq!(
                s2.get(&mut c),
                Some(V2 {
                    count: k * 10,
                    label: "migrated".into()
                })
            );
        }
    }
}
