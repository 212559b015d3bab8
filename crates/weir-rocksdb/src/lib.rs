//! The disk state backend: keyed state in RocksDB, for state larger than memory.
//!
//! Each keyed operator subtask gets its own RocksDB instance, with one column family per state
//! (table), in a working directory of the job (a temporary directory unless one is given),
//! deleted when the job ends. Every instance of the backend shares one block cache and one
//! write-buffer manager charged to that cache, both sized from `memory_budget_bytes`: memtables
//! plus cached blocks (data, index and filter blocks) stay within the budget whatever the size
//! of the state, which lives on disk.
//!
//! Checkpoints are native and incremental ([`weir_state::native`]), of two kinds.
//! A *materialized* checkpoint flushes the memtables and makes a RocksDB checkpoint (hard links
//! of the SST files, a copy of the small MANIFEST); the checkpoint coordinator then uploads
//! only the SST files that no earlier checkpoint uploaded. Compactions rewrite SST files, so
//! such a checkpoint can upload a large part of the state even when few keys changed. A
//! *changelog* checkpoint (the default after a materialized one) references the last
//! materialized checkpoint's files and adds a changelog piece: the last value (or the
//! deletion) of each key written since the previous checkpoint, taken from a log of the writes
//! kept in memory and written off the task thread. It uploads only that piece, about the size
//! of the changed entries, and does not flush the memtables. A checkpoint materializes again
//! when the pieces since the last materialization reach
//! [`DiskBackendConfig::changelog_materialize_percent`] of its size (or 100 pieces), or when the
//! writes between two checkpoints do not fit in [`DiskBackendConfig::changelog_bytes_max`]
//! (see `kv.rs` for every case). Restoring applies
//! the pieces in order on top of the materialized files.
//!
//! Savepoints are canonical. A native snapshot restores as the instance itself at the same
//! parallelism; otherwise it is read through [`RocksReader`] (also registered for other
//! backends) by key-group range, pieces applied.
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

mod changelog;
mod kv;
mod reader;
mod workdir;

pub use changelog::PIECE_PREFIX as CHANGELOG_PIECE_PREFIX;
pub use kv::{PIECES_MAX, UNCONFIRMED_MAX};
pub use reader::RocksReader;

use rocksdb::{BlockBasedOptions, Cache, DBCompressionType, Options, WriteBufferManager};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use weir_state::bytes::{KvStore, KvStoreFactory};
use weir_state::native::{FileSource, NativeSnapshot};
use weir_state::registry::BackendSpec;
use weir_state::{StateBackend, TableKind};
use workdir::WorkDir;

/// The native snapshot format: a RocksDB checkpoint of one instance, one column family per
/// table, keys and values in the layout of [`weir_state::bytes`], plus changelog pieces
/// (files named [`CHANGELOG_PIECE_PREFIX`]`<sequence>`) applied in sequence order on top.
pub const FORMAT: &str = "rocksdb-v2";

/// The format before changelog pieces (a RocksDB checkpoint alone), still read and opened.
/// A new name for the new format makes a build that does not know pieces refuse such a
/// snapshot instead of restoring it without them.
pub const FORMAT_V1: &str = "rocksdb-v1";

/// The default memory budget: 256 MiB.
pub const DEFAULT_MEMORY_BUDGET_BYTES: u64 = 256 << 20;

/// Settings of the disk backend; [`DiskBackendConfig::build`] makes it.
#[derive(Clone, Debug)]
pub struct DiskBackendConfig {
    /// Where the working files go: a directory per job is made under it (default: the system's
    /// temporary directory). Directories left by processes that no longer run are deleted.
    pub dir: Option<PathBuf>,
    /// Memory for the whole backend (every instance of the process): the shared block cache,
    /// which also accounts for the memtables (half of it at most, through the write-buffer
    /// manager), and the changelog's write logs ([`DiskBackendConfig::changelog_bytes_max`]),
    /// which the cache leaves room for. At least 8 MiB is used.
    pub memory_budget_bytes: u64,
    /// Changelog checkpoints (default): after a materialized checkpoint, checkpoints upload
    /// only the entries changed since the previous one (see the crate docs). `false`: every
    /// checkpoint materializes (uploads the SST files that are new since the previous one).
    pub changelog: bool,
    /// The memory for the writes (keys and values) since the last checkpoint, over every
    /// instance of the backend, part of `memory_budget_bytes` (default: an eighth of it). An
    /// instance whose log passes it stops logging, and its next checkpoint materializes.
    pub changelog_bytes_max: Option<u64>,
    /// A checkpoint materializes once the changelog pieces since the last materialized one
    /// total this percentage of its size (default 400): the bound on what a restore applies
    /// on top of it, and on the extra storage the pieces take. A materialization flushes the
    /// memtables while the task waits and sends later reads to SST files, so with most keys
    /// changing every second (pieces of half the base) it should not come every second.
    pub changelog_materialize_percent: u64,
}

impl Default for DiskBackendConfig {
    fn default() -> Self {
        DiskBackendConfig {
            dir: None,
            memory_budget_bytes: DEFAULT_MEMORY_BUDGET_BYTES,
            changelog: true,
            changelog_bytes_max: None,
            changelog_materialize_percent: 400,
        }
    }
}

impl DiskBackendConfig {
    /// The backend (and the native reader registered for every backend of the process).
    pub fn build(self) -> DiskBackend {
        register_readers();
        let budget = self.memory_budget_bytes.max(8 << 20);
        let changelog_bytes_max = if self.changelog {
            self.changelog_bytes_max
                .unwrap_or(budget / 8)
                .min(budget / 2)
        } else {
            0
        };
        let cache_bytes = (budget - changelog_bytes_max) as usize;
        let cache = Cache::new_lru_cache(cache_bytes);
        let wbm = WriteBufferManager::new_write_buffer_manager_with_cache(
            cache_bytes / 2,
            false,
            cache.clone(),
        );
        // Flushes of different instances in parallel, one per core: a checkpoint waits for
        // every instance's memtables to reach SST files, and a single flush thread would
        // serialize them while the tasks wait.
        if let Ok(mut env) = rocksdb::Env::new() {
            let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
            env.set_high_priority_background_threads(cores as i32);
        }
        DiskBackend(Arc::new(Shared {
            workdir: WorkDir::new(self.dir.clone()),
            cfg: self,
            cache_bytes,
            cache,
            wbm,
            changelog_bytes_max,
            changelog_total: Arc::new(AtomicU64::new(0)),
        }))
    }
}

fn register_readers() {
    for format in [FORMAT, FORMAT_V1] {
        weir_state::native::register_reader(format, Arc::new(RocksReader));
    }
}

/// What every instance of one backend shares.
pub(crate) struct Shared {
    pub(crate) cfg: DiskBackendConfig,
    /// The block cache's capacity: the budget less the changelog's share.
    pub(crate) cache_bytes: usize,
    pub(crate) cache: Cache,
    pub(crate) wbm: WriteBufferManager,
    pub(crate) workdir: WorkDir,
    /// The bound on the changelog's write logs' memory (0 without changelog).
    pub(crate) changelog_bytes_max: u64,
    /// The changelog's write logs' memory now, over every instance.
    pub(crate) changelog_total: Arc<AtomicU64>,
}

impl Shared {
    /// Options of an instance and of each of its column families.
    pub(crate) fn options(&self) -> Options {
        let budget = self.cache_bytes;
        let mut t = BlockBasedOptions::default();
        t.set_block_cache(&self.cache);
        // Index and filter blocks in the cache too: otherwise they grow with the state.
        t.set_cache_index_and_filter_blocks(true);
        t.set_pin_l0_filter_and_index_blocks_in_cache(true);
        t.set_bloom_filter(10.0, false);
        t.set_optimize_filters_for_memory(true);
        // Point reads find their key in a data block by a hash index, not a binary search.
        t.set_data_block_index_type(rocksdb::DataBlockIndexType::BinaryAndHash);
        t.set_data_block_hash_ratio(0.75);
        let mut o = Options::default();
        o.create_if_missing(true);
        o.create_missing_column_families(true);
        o.set_block_based_table_factory(&t);
        o.set_write_buffer_manager(&self.wbm);
        // One memtable is at most an eighth of the budget; the manager flushes before the sum
        // of all memtables passes half of it.
        o.set_write_buffer_size((budget / 8).clamp(1 << 20, 64 << 20));
        o.set_max_write_buffer_number(3);
        // A bloom filter per memtable: a read of a key that is not in the memtable (most of
        // them, right after a checkpoint's flush) skips the skip list's search.
        o.set_memtable_whole_key_filtering(true);
        o.set_memtable_prefix_bloom_ratio(0.05);
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
    /// Estimated memory of the keys changed since the last checkpoint (every instance), which
    /// changelog checkpoints track.
    pub fn changelog_usage_bytes(&self) -> u64 {
        self.0.changelog_total.load(Ordering::Relaxed)
    }
    /// The bound on [`DiskBackend::changelog_usage_bytes`] (0 without changelog checkpoints).
    pub fn changelog_bytes_max(&self) -> u64 {
        self.0.changelog_bytes_max
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
    fn opens_native(&self, format: &str) -> bool {
        kv::opens(format)
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
    register_readers();
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
                ..Default::default()
            };
            Ok(Arc::new(cfg.build()) as Arc<dyn StateBackend>)
        }),
    );
}
