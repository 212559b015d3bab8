//! The keyed state of one operator subtask: its tables, the current key, TTL and the backend.
use crate::table::{HeapTable, Namespace, Stamped, Table};
use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use weir_types::{Clock, Data, Key};

/// Creates the storage of keyed state. Chosen per job; operator code does not depend on it.
pub trait StateBackend: Send + Sync + 'static {
    /// A short name for logs and flags (`memory`, `disk`).
    fn name(&self) -> &'static str;
    /// How this backend keeps its tables.
    fn table_kind(&self) -> TableKind;
}

/// How a backend keeps tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableKind {
    /// As objects in hash maps ([`HeapTable`]): fastest, bounded by memory.
    Heap,
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
}

impl std::fmt::Display for StateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StateError::TypeMismatch(n) => {
                write!(f, "state '{n}' was registered twice with different types")
            }
        }
    }
}
impl std::error::Error for StateError {}

/// A table behind type erasure, with what every table can do without knowing its types.
pub(crate) trait ErasedTable: Any {
    fn as_any_mut(&mut self) -> &mut dyn Any;
    fn as_any(&self) -> &dyn Any;
    fn len(&self) -> usize;
    fn purge_expired(&mut self, now_ms: i64);
}

pub(crate) struct Slot<K, N, V> {
    pub(crate) table: Box<dyn Table<K, N, Stamped<V>>>,
    pub(crate) ttl: Option<StateTtl>,
}

impl<K: 'static, N: 'static, V: 'static> ErasedTable for Slot<K, N, V> {
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn len(&self) -> usize {
        self.table.len()
    }
    fn purge_expired(&mut self, now_ms: i64) {
        if let Some(ttl) = self.ttl {
            self.table
                .retain(&mut |_, _, v| now_ms - v.written_ms < ttl.ttl_ms);
        }
    }
}

/// The keyed state of one operator subtask.
pub struct KeyedStateStore<K> {
    kind: TableKind,
    tables: Vec<Box<dyn ErasedTable>>,
    names: HashMap<String, usize>,
    current_key: Option<K>,
    clock: Arc<dyn Clock>,
    any_ttl: bool,
}

impl<K: Key> KeyedStateStore<K> {
    /// An empty store on `backend`, reading processing time from `clock` (for TTL).
    pub fn new(backend: &dyn StateBackend, clock: Arc<dyn Clock>) -> Self {
        KeyedStateStore {
            kind: backend.table_kind(),
            tables: Vec::new(),
            names: HashMap::new(),
            current_key: None,
            clock,
            any_ttl: false,
        }
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
        let table: Box<dyn Table<K, N, Stamped<V>>> = match self.kind {
            TableKind::Heap => Box::new(HeapTable::default()),
        };
        self.any_ttl |= ttl.is_some();
        self.tables.push(Box::new(Slot { table, ttl }));
        self.names.insert(name.to_string(), self.tables.len() - 1);
        Ok(self.tables.len() - 1)
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
        let now = self.clock.now_ms();
        let ttl = slot.ttl;
        slot.table.for_each(&mut |k, n, v| {
            if ttl.is_none_or(|t| now - v.written_ms < t.ttl_ms) {
                f(k, n, &v.value)
            }
        })
    }
}
