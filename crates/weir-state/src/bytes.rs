//! State kept as bytes in a key-value store (a disk backend): the same [`Table`] interface as the
//! heap backend, with keys and values serialized.
//!
//! Key layout: `[key group: u16 big-endian][postcard(key)][postcard(namespace)]`, so one key
//! group's entries are contiguous (snapshots and rescaling read ranges of key groups). Value:
//! `[written_ms: i64 little-endian][postcard(value)]`.
use crate::native::{FileSource, NativeFinish, NativeSnapshot};
use crate::table::{Stamped, Table};
use serde::{de::DeserializeOwned, Serialize};
use std::cell::RefCell;
use std::marker::PhantomData;
use std::rc::Rc;
use weir_types::keygroup::key_group_of_hash;

/// A sorted key-value store holding several tables (column families), for one operator subtask.
///
/// Reads and writes do not return errors: a store that fails (a full disk) panics with the
/// cause, which fails the operator like any other panic (and the job restarts from its last
/// checkpoint).
pub trait KvStore {
    /// The id of table `name`, created if missing (restored tables exist already).
    fn table(&mut self, name: &str) -> Result<u32, String>;
    /// The value under `key` in `table`.
    fn get(&self, table: u32, key: &[u8]) -> Option<Vec<u8>>;
    /// Sets `key` in `table`.
    fn put(&mut self, table: u32, key: &[u8], value: &[u8]);
    /// Removes `key` from `table`.
    fn delete(&mut self, table: u32, key: &[u8]);
    /// Visits every entry of `table` in key order.
    fn scan(&self, table: u32, f: &mut dyn FnMut(&[u8], &[u8]));
    /// Entries in `table` (may be an estimate for disk stores).
    fn len(&self, table: u32) -> usize;
    /// A native snapshot of every table (see [`crate::native`]) for checkpoint `id`, if the
    /// store has a native format; its key groups and tables are left for the caller to fill.
    /// This is the synchronous part of a checkpoint: make the files immutable and hand them
    /// over, with the work (if any) that must run before they are uploaded, off the task
    /// thread.
    fn native_snapshot(
        &mut self,
        _id: u64,
    ) -> Option<Result<(NativeSnapshot, Option<NativeFinish>), String>> {
        None
    }
    /// Checkpoint `id` is complete (durable in checkpoint storage): a store may release local
    /// copies of files that storage now holds.
    fn checkpoint_complete(&mut self, _id: u64) {}
}

/// Opens the store of one operator subtask.
pub trait KvStoreFactory: Send + Sync {
    /// A store for operator `uid`'s subtask `subtask` (fresh: restores write into it).
    fn open(&self, uid: &str, subtask: usize) -> Result<Box<dyn KvStore>, String>;
    /// The native snapshot format its stores write, if any.
    fn native_format(&self) -> Option<&str> {
        None
    }
    /// Whether [`KvStoreFactory::open_native`] opens snapshots of `format` (its own format,
    /// and older versions of it that it still reads).
    fn opens_native(&self, format: &str) -> bool {
        self.native_format() == Some(format)
    }
    /// A store made from a native snapshot of its own format and the same key groups.
    fn open_native(
        &self,
        _uid: &str,
        _subtask: usize,
        _snap: &NativeSnapshot,
        _files: &dyn FileSource,
    ) -> Result<Box<dyn KvStore>, String> {
        Err("this backend has no native snapshot format".into())
    }
}

/// A store shared by the tables of one operator subtask.
pub type SharedKv = Rc<RefCell<Box<dyn KvStore>>>;

/// A table of serialized entries in a [`KvStore`].
pub struct BytesTable<K, N, V> {
    kv: SharedKv,
    table: u32,
    max_parallelism: usize,
    scratch: RefCell<Vec<u8>>,
    _p: PhantomData<fn() -> (K, N, V)>,
}

impl<K, N, V> BytesTable<K, N, V> {
    /// Table `table` of `kv`.
    pub fn new(kv: SharedKv, table: u32, max_parallelism: usize) -> Self {
        BytesTable {
            kv,
            table,
            max_parallelism,
            scratch: RefCell::new(Vec::with_capacity(64)),
            _p: PhantomData,
        }
    }
}

fn encode_key<K: Serialize, N: Serialize>(
    buf: &mut Vec<u8>,
    key: &K,
    ns: &N,
    max_parallelism: usize,
) {
    buf.clear();
    buf.extend_from_slice(&[0, 0]);
    let kb = std::mem::take(buf);
    let kb = postcard::to_extend(key, kb).expect("keys serialize");
    let kg = key_group_of_hash(xxhash_rust::xxh3::xxh3_64(&kb[2..]), max_parallelism) as u16;
    let mut kb = postcard::to_extend(ns, kb).expect("namespaces serialize");
    kb[..2].copy_from_slice(&kg.to_be_bytes());
    *buf = kb;
}

fn decode_value<V: DeserializeOwned>(b: &[u8]) -> Stamped<V> {
    let written_ms = i64::from_le_bytes(b[..8].try_into().expect("value header"));
    let value = postcard::from_bytes(&b[8..]).expect("a stored value decodes as its type");
    Stamped { value, written_ms }
}

fn encode_value<V: Serialize>(v: &Stamped<V>) -> Vec<u8> {
    let mut out = v.written_ms.to_le_bytes().to_vec();
    out = postcard::to_extend(&v.value, out).expect("values serialize");
    out
}

/// Splits a stored key back into key and namespace.
fn decode_key<K: DeserializeOwned, N: DeserializeOwned>(b: &[u8]) -> (K, N) {
    let (k, rest) = postcard::take_from_bytes::<K>(&b[2..]).expect("a stored key decodes");
    let n = postcard::from_bytes::<N>(rest).expect("a stored namespace decodes");
    (k, n)
}

impl<K, N, V> Table<K, N, Stamped<V>> for BytesTable<K, N, V>
where
    K: Serialize + DeserializeOwned,
    N: Serialize + DeserializeOwned,
    V: Serialize + DeserializeOwned,
{
    fn read(&self, key: &K, ns: &N, f: &mut dyn FnMut(Option<&Stamped<V>>)) {
        let mut buf = self.scratch.borrow_mut();
        encode_key(&mut buf, key, ns, self.max_parallelism);
        let v = self
            .kv
            .borrow()
            .get(self.table, &buf)
            .map(|b| decode_value::<V>(&b));
        f(v.as_ref())
    }
    fn upsert(
        &mut self,
        key: &K,
        ns: &N,
        f: &mut dyn FnMut(Option<&mut Stamped<V>>) -> Option<Stamped<V>>,
    ) {
        let mut buf = self.scratch.borrow_mut();
        encode_key(&mut buf, key, ns, self.max_parallelism);
        let mut kv = self.kv.borrow_mut();
        match kv.get(self.table, &buf) {
            Some(b) => {
                let mut v = decode_value::<V>(&b);
                f(Some(&mut v));
                kv.put(self.table, &buf, &encode_value(&v));
            }
            None => {
                if let Some(v) = f(None) {
                    kv.put(self.table, &buf, &encode_value(&v));
                }
            }
        }
    }
    fn put(&mut self, key: &K, ns: &N, v: Stamped<V>) {
        let mut buf = self.scratch.borrow_mut();
        encode_key(&mut buf, key, ns, self.max_parallelism);
        self.kv
            .borrow_mut()
            .put(self.table, &buf, &encode_value(&v));
    }
    fn remove(&mut self, key: &K, ns: &N) -> Option<Stamped<V>> {
        let mut buf = self.scratch.borrow_mut();
        encode_key(&mut buf, key, ns, self.max_parallelism);
        let mut kv = self.kv.borrow_mut();
        let old = kv.get(self.table, &buf).map(|b| decode_value::<V>(&b));
        if old.is_some() {
            kv.delete(self.table, &buf);
        }
        old
    }
    fn len(&self) -> usize {
        self.kv.borrow().len(self.table)
    }
    fn for_each(&self, f: &mut dyn FnMut(&K, &N, &Stamped<V>)) {
        self.kv.borrow().scan(self.table, &mut |k, v| {
            let (key, ns) = decode_key::<K, N>(k);
            f(&key, &ns, &decode_value::<V>(v));
        })
    }
    fn retain(&mut self, f: &mut dyn FnMut(&K, &N, &mut Stamped<V>) -> bool) {
        let mut dead = Vec::new();
        self.kv.borrow().scan(self.table, &mut |k, v| {
            let (key, ns) = decode_key::<K, N>(k);
            let mut val = decode_value::<V>(v);
            if !f(&key, &ns, &mut val) {
                dead.push(k.to_vec());
            }
        });
        let mut kv = self.kv.borrow_mut();
        for k in dead {
            kv.delete(self.table, &k);
        }
    }
}

/// A [`KvStore`] in memory (a sorted map per table): the byte path without a disk, for tests
/// and for checking that operators work the same on both kinds of backends.
#[derive(Default)]
pub struct MemKv {
    names: std::collections::HashMap<String, u32>,
    tables: std::collections::BTreeMap<u32, std::collections::BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl KvStore for MemKv {
    fn table(&mut self, name: &str) -> Result<u32, String> {
        let next = self.names.len() as u32;
        Ok(*self.names.entry(name.to_string()).or_insert(next))
    }
    fn get(&self, table: u32, key: &[u8]) -> Option<Vec<u8>> {
        self.tables.get(&table).and_then(|t| t.get(key).cloned())
    }
    fn put(&mut self, table: u32, key: &[u8], value: &[u8]) {
        self.tables
            .entry(table)
            .or_default()
            .insert(key.to_vec(), value.to_vec());
    }
    fn delete(&mut self, table: u32, key: &[u8]) {
        if let Some(t) = self.tables.get_mut(&table) {
            t.remove(key);
        }
    }
    fn scan(&self, table: u32, f: &mut dyn FnMut(&[u8], &[u8])) {
        if let Some(t) = self.tables.get(&table) {
            for (k, v) in t {
                f(k, v)
            }
        }
    }
    fn len(&self, table: u32) -> usize {
        self.tables.get(&table).map_or(0, |t| t.len())
    }
}

/// Opens [`MemKv`] stores.
#[derive(Default, Clone, Copy, Debug)]
pub struct MemKvFactory;

impl KvStoreFactory for MemKvFactory {
    fn open(&self, _uid: &str, _subtask: usize) -> Result<Box<dyn KvStore>, String> {
        Ok(Box::new(MemKv::default()))
    }
}
