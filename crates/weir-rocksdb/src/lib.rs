//! The disk state backend: keyed state in RocksDB, for state larger than memory.
//!
//! Each keyed operator subtask gets its own RocksDB instance, with one column family per state
//! (table), in a working directory of the job (a temporary directory unless one is given),
//! deleted when the job ends. Every instance of the backend shares one block cache and one
//! write-buffer manager charged to that cache, both sized from `memory_budget_bytes`: memtables
//! plus cached blocks (data, index and filter blocks) stay within the budget whatever the size
//! of the state, which lives on disk.
//!
//! Checkpoints are native and incremental ([`weir_state::native`]): at the barrier the subtask
//! flushes its memtables and makes a RocksDB checkpoint (hard links of the SST files, a copy of
//! the small MANIFEST); the checkpoint coordinator then uploads only the SST files that no
//! earlier checkpoint uploaded. Savepoints are canonical. A native snapshot restores as the
//! instance itself at the same parallelism; otherwise it is read through [`RocksReader`] (also
//! registered for other backends) by key-group range.
//!
//! ```no_run
//! use std::sync::Arc;
//! let backend = weir_rocksdb::DiskBackendConfig {
//!     memory_budget_bytes: 512 << 20,
//!     ..Default::default()
//! }
//! .build();
//! // env.with_state_backend(Arc::new(backend)), or `--state-backend disk` after:
//! weir_rocksdb::register();
//! ```
#![deny(missing_docs)]

mod kv;
mod reader;
mod workdir;

pub use reader::RocksReader;

use rocksdb::{BlockBasedOptions, Cache, DBCompressionType, Options, WriteBufferManager};
use std::path::PathBuf;
use std::sync::Arc;
use weir_state::bytes::{KvStore, KvStoreFactory};
use weir_state::native::{FileSource, NativeSnapshot};
use weir_state::registry::BackendSpec;
use weir_state::{StateBackend, TableKind};
use workdir::WorkDir;

/// The native snapshot format: a RocksDB checkpoint of one instance, one column family per
/// table, keys and values in the layout of [`weir_state::bytes`].
pub const FORMAT: &str = "rocksdb-v1";

/// The default memory budget: 256 MiB.
pub const DEFAULT_MEMORY_BUDGET_BYTES: u64 = 256 << 20;

/// Settings of the disk backend; [`DiskBackendConfig::build`] makes it.
#[derive(Clone, Debug)]
pub struct DiskBackendConfig {
    /// Where the working files go: a directory per job is made under it (default: the system's
    /// temporary directory). Directories left by processes that no longer run are deleted.
    pub dir: Option<PathBuf>,
    /// Memory for the shared block cache, which also accounts for the memtables (half of it at
    /// most, through the write-buffer manager). At least 8 MiB is used.
    pub memory_budget_bytes: u64,
}

impl Default for DiskBackendConfig {
    fn default() -> Self {
        DiskBackendConfig {
            dir: None,
            memory_budget_bytes: DEFAULT_MEMORY_BUDGET_BYTES,
        }
    }
}

impl DiskBackendConfig {
    /// The backend (and the native reader registered for every backend of the process).
    pub fn build(self) -> DiskBackend {
        weir_state::native::register_reader(FORMAT, Arc::new(RocksReader));
        let budget = self.memory_budget_bytes.max(8 << 20) as usize;
        let cache = Cache::new_lru_cache(budget);
        let wbm = WriteBufferManager::new_write_buffer_manager_with_cache(
            budget / 2,
            false,
            cache.clone(),
        );
        DiskBackend(Arc::new(Shared {
            workdir: WorkDir::new(self.dir.clone()),
            cfg: self,
            cache,
            wbm,
        }))
    }
}

/// What every instance of one backend shares.
pub(crate) struct Shared {
    pub(crate) cfg: DiskBackendConfig,
    pub(crate) cache: Cache,
    pub(crate) wbm: WriteBufferManager,
    pub(crate) workdir: WorkDir,
}

impl Shared {
    /// Options of an instance and of each of its column families.
    pub(crate) fn options(&self) -> Options {
        let budget = self.cfg.memory_budget_bytes.max(8 << 20) as usize;
        let mut t = BlockBasedOptions::default();
        t.set_block_cache(&self.cache);
        // Index and filter blocks in the cache too: otherwise they grow with the state.
        t.set_cache_index_and_filter_blocks(true);
        t.set_pin_l0_filter_and_index_blocks_in_cache(true);
        t.set_bloom_filter(10.0, false);
        t.set_optimize_filters_for_memory(true);
        let mut o = Options::default();
        o.create_if_missing(true);
        o.create_missing_column_families(true);
        o.set_block_based_table_factory(&t);
        o.set_write_buffer_manager(&self.wbm);
        // One memtable is at most an eighth of the budget; the manager flushes before the sum
        // of all memtables passes half of it.
        o.set_write_buffer_size((budget / 8).clamp(1 << 20, 64 << 20));
        o.set_max_write_buffer_number(3);
        o.set_compression_type(DBCompressionType::Lz4);
        o.set_max_background_jobs(2);
        // Checkpoints copy the MANIFEST whole: keep it short.
        o.set_max_manifest_file_size(1 << 20);
        o.set_keep_log_file_num(2);
        o.set_max_log_file_size(1 << 20);
        o
    }
}

/// Keyed state in RocksDB instances (one per operator subtask) within a memory budget, with
/// incremental native checkpoints.
#[derive(Clone)]
pub struct DiskBackend(Arc<Shared>);

impl std::fmt::Debug for DiskBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskBackend")
            .field("cfg", &self.0.cfg)
            .finish()
    }
}

impl Default for DiskBackend {
    fn default() -> Self {
        DiskBackendConfig::default().build()
    }
}

impl DiskBackend {
    /// Bytes in the shared block cache (memtables included, as the write-buffer manager
    /// charges them to it).
    pub fn cache_usage_bytes(&self) -> usize {
        self.0.cache.get_usage()
    }
    /// Bytes of memtables.
    pub fn memtable_usage_bytes(&self) -> usize {
        self.0.wbm.get_usage()
    }
    /// The current job's working directory, if a store was opened.
    pub fn working_dir(&self) -> Option<PathBuf> {
        self.0.workdir.current()
    }
}

impl StateBackend for DiskBackend {
    fn name(&self) -> &'static str {
        "disk"
    }
    fn table_kind(&self) -> TableKind {
        TableKind::Bytes(Arc::new(Factory(self.0.clone())))
    }
    fn job_ended(&self) {
        self.0.workdir.job_ended();
    }
}

struct Factory(Arc<Shared>);

impl KvStoreFactory for Factory {
    fn open(&self, uid: &str, subtask: usize) -> Result<Box<dyn KvStore>, String> {
        Ok(Box::new(kv::DiskKv::open(self.0.clone(), uid, subtask)?))
    }
    fn native_format(&self) -> Option<&str> {
        Some(FORMAT)
    }
    fn open_native(
        &self,
        uid: &str,
        subtask: usize,
        snap: &NativeSnapshot,
        files: &dyn FileSource,
    ) -> Result<Box<dyn KvStore>, String> {
        Ok(Box::new(kv::DiskKv::restore(
            self.0.clone(),
            uid,
            subtask,
            snap,
            files,
        )?))
    }
}

/// Makes `--state-backend disk[:DIR]` (with `--state-memory`) build a [`DiskBackend`], and
/// native snapshots readable by every backend. Call it before parsing options.
pub fn register() {
    weir_state::native::register_reader(FORMAT, Arc::new(RocksReader));
    weir_state::registry::register_backend(
        "disk",
        Arc::new(|spec: &BackendSpec| {
            let cfg = DiskBackendConfig {
                dir: spec
                    .arg
                    .as_deref()
                    .filter(|d| !d.is_empty())
                    .map(PathBuf::from),
                memory_budget_bytes: spec
                    .memory_budget_bytes
                    .unwrap_or(DEFAULT_MEMORY_BUDGET_BYTES),
            };
            Ok(Arc::new(cfg.build()) as Arc<dyn StateBackend>)
        }),
    );
}
