//! One operator subtask's RocksDB instance as a [`KvStore`]: a column family per table, and
//! its checkpoints — materialized (a RocksDB checkpoint: new SST files are uploaded) or a
//! changelog on top of the last materialized one (only the changed entries are uploaded).
//!
//! A checkpoint is one of:
//!
//! - **materialized**: flush, then a RocksDB checkpoint (hard links of the SST files, a copy of
//!   the MANIFEST). It becomes the *base*: its files are kept linked in a directory of the
//!   store, and from then on the store logs every write and deletion with its value (the
//!   write log, [`crate::changelog::WriteLog`]).
//! - **changelog**: the base's files (uploaded by an earlier checkpoint, so referenced, not
//!   uploaded) plus the changelog pieces since the base, each holding the last value (or the
//!   deletion) of every key written between two checkpoints. At the barrier the store only
//!   swaps out the write log and links files; the piece is made from the log (no read of
//!   RocksDB) and written later, off the task thread, by the snapshot's [`NativeFinish`],
//!   which the checkpoint coordinator runs before uploading. Only that new piece is uploaded.
//!   The memtables are not flushed: reads keep finding recent writes there.
//!
//! A checkpoint materializes when there is no base, when the write log overflowed its memory
//! bound, when an earlier piece was not written, when the pieces since the base reach
//! `changelog_materialize_percent` of the base's size or [`PIECES_MAX`] files, or when no
//! checkpoint on the current base was confirmed complete for [`UNCONFIRMED_MAX`] checkpoints.
//! Restoring applies the pieces in order on top of the base.
use crate::changelog::{self, is_piece, piece_name, WriteLog};
use crate::workdir::{instance_id, next_id, remove};
use crate::{Shared, FORMAT};
use rocksdb::checkpoint::Checkpoint;
use rocksdb::{DBWithThreadMode, FlushOptions, MultiThreaded, Options, ReadOptions, WriteOptions};
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use weir_state::bytes::KvStore;
use weir_state::native::{fetch_file, FileSource, NativeFile, NativeFinish, NativeSnapshot};

/// RocksDB with column families created through `&self`, so that a snapshot can be read from
/// another thread while the store goes on.
pub(crate) type Rdb = DBWithThreadMode<MultiThreaded>;

/// At most this many changelog pieces on one base: restores fetch and apply every one.
pub const PIECES_MAX: usize = 100;

/// A checkpoint materializes when none of the last this many taken on the current base was
/// confirmed complete (a safety net: it makes a self-contained snapshot again).
pub const UNCONFIRMED_MAX: u32 = 10;

/// Checkpoint ids remembered per base, to recognize a completion notification as one of its.
const IDS_KEPT: usize = 16;

/// An open instance and its directory: closed, then the directory deleted, when the last
/// holder lets go (the store, or a changelog piece still being read from a snapshot of it).
pub(crate) struct Instance {
    db: Option<Rdb>,
    dir: PathBuf,
}

impl Instance {
    pub(crate) fn db(&self) -> &Rdb {
        self.db.as_ref().expect("open until dropped")
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        drop(self.db.take());
        remove(&self.dir);
    }
}

/// A changelog piece of the current base.
struct Piece {
    name: String,
    /// Set when its writer has run: its length, or why it is not usable by later checkpoints.
    written: Arc<OnceLock<Result<u64, String>>>,
}

/// The last materialized snapshot, which changelog checkpoints build on.
struct Base {
    /// Its files, as listed in its snapshot (paths set for files restored from storage).
    files: Vec<NativeFile>,
    /// Their total length.
    bytes: u64,
    /// Hard links of its files not in storage yet, and of its pieces: every later snapshot
    /// links them into its own directory, so each is self-contained until uploaded.
    dir: PathBuf,
    /// Its SST links are deleted: a checkpoint that uses them completed, so storage has them
    /// and the coordinator references them from then on.
    released: bool,
    /// Pieces since the base, in order.
    pieces: Vec<Piece>,
    /// Ids of the last snapshots taken on it.
    ids: VecDeque<u64>,
    /// Snapshots taken on it since one of them was confirmed complete.
    unconfirmed: u32,
}

impl Base {
    /// Why the next checkpoint cannot be a changelog one, if it cannot.
    fn exhausted(&self, percent: u64) -> Option<String> {
        let mut bytes = 0;
        for p in &self.pieces {
            match p.written.get() {
                Some(Ok(n)) => bytes += n,
                Some(Err(e)) => return Some(format!("piece {} is not usable: {e}", p.name)),
                None => return Some(format!("piece {} was never written", p.name)),
            }
        }
        if self.pieces.len() >= PIECES_MAX {
            return Some(format!("{} pieces", self.pieces.len()));
        }
        if bytes * 100 >= self.bytes * percent {
            return Some(format!(
                "the pieces ({bytes} bytes) reached {percent}% of the base ({} bytes)",
                self.bytes
            ));
        }
        if self.unconfirmed >= UNCONFIRMED_MAX {
            return Some(format!(
                "none of the last {} checkpoints was confirmed complete",
                self.unconfirmed
            ));
        }
        None
    }
}

pub(crate) struct DiskKv {
    shared: Arc<Shared>,
    db: Arc<Instance>,
    instance: String,
    /// Column family names by table id.
    names: Vec<String>,
    ids: HashMap<String, u32>,
    /// Files this instance was restored from, which checkpoint storage has already.
    known: HashMap<String, NativeFile>,
    /// State is checkpointed: no write-ahead log.
    write: WriteOptions,
    cf_options: Options,
    /// The base of changelog checkpoints, if any.
    base: Option<Base>,
    /// Writes since the last checkpoint, while a base exists and the bound holds.
    log: Option<WriteLog>,
    /// The next piece's sequence number (piece names never repeat within an instance).
    next_piece: u64,
}

fn safe(uid: &str) -> String {
    uid.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// Whether this backend opens snapshots of `format` (its own, and the version before
/// changelog pieces).
pub(crate) fn opens(format: &str) -> bool {
    format == FORMAT || format == crate::FORMAT_V1
}

/// Downloads a snapshot's files, checked: RocksDB's into `dir`, changelog pieces into
/// `pieces_dir`. Returns the pieces' paths in order.
pub(crate) fn fetch_snapshot(
    snap: &NativeSnapshot,
    files: &dyn FileSource,
    dir: &Path,
    pieces_dir: &Path,
) -> Result<Vec<PathBuf>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let mut pieces = Vec::new();
    for f in &snap.files {
        if is_piece(&f.name) {
            if pieces.is_empty() {
                std::fs::create_dir_all(pieces_dir)
                    .map_err(|e| format!("creating {}: {e}", pieces_dir.display()))?;
            }
            let to = pieces_dir.join(&f.name);
            fetch_file(f, files, &to)?;
            pieces.push(to);
        } else {
            fetch_file(f, files, &dir.join(&f.name))?;
        }
    }
    pieces.sort();
    Ok(pieces)
}

fn link(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::hard_link(from, to)
        .map_err(|e| format!("linking {} to {}: {e}", from.display(), to.display()))
}

impl DiskKv {
    fn dir_for(
        shared: &Shared,
        uid: &str,
        subtask: usize,
        instance: &str,
    ) -> Result<PathBuf, String> {
        Ok(shared
            .workdir
            .get()?
            .join("db")
            .join(format!("{}-{subtask}-{instance}", safe(uid))))
    }

    fn with_db(shared: Arc<Shared>, db: Instance, instance: String, existing: Vec<String>) -> Self {
        let mut write = WriteOptions::default();
        write.disable_wal(true);
        let cf_options = shared.options();
        let mut kv = DiskKv {
            shared,
            db: Arc::new(db),
            instance,
            names: Vec::new(),
            ids: HashMap::new(),
            known: HashMap::new(),
            write,
            cf_options,
            base: None,
            log: None,
            next_piece: 0,
        };
        for name in existing.into_iter().filter(|n| n != "default") {
            kv.ids.insert(name.clone(), kv.names.len() as u32);
            kv.names.push(name);
        }
        kv
    }

    /// A new, empty instance.
    pub(crate) fn open(shared: Arc<Shared>, uid: &str, subtask: usize) -> Result<Self, String> {
        let instance = instance_id();
        let dir = Self::dir_for(&shared, uid, subtask, &instance)?;
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let db = Rdb::open(&shared.options(), &dir)
            .map_err(|e| format!("opening RocksDB in {}: {e}", dir.display()))?;
        let db = Instance { db: Some(db), dir };
        Ok(Self::with_db(shared, db, instance, Vec::new()))
    }

    /// An instance made from a native snapshot's files (fetched and checked), its changelog
    /// pieces applied in order.
    pub(crate) fn restore(
        shared: Arc<Shared>,
        uid: &str,
        subtask: usize,
        snap: &NativeSnapshot,
        files: &dyn FileSource,
    ) -> Result<Self, String> {
        if !opens(&snap.format) {
            return Err(format!(
                "cannot open a '{}' snapshot as RocksDB",
                snap.format
            ));
        }
        let instance = instance_id();
        let dir = Self::dir_for(&shared, uid, subtask, &instance)?;
        let pieces_dir = PathBuf::from(format!("{}.changelog", dir.display()));
        let fetched = fetch_snapshot(snap, files, &dir, &pieces_dir);
        let pieces = match fetched {
            Ok(p) => p,
            Err(e) => {
                remove(&dir);
                remove(&pieces_dir);
                return Err(e);
            }
        };
        let opts = shared.options();
        let opened = DBWithThreadMode::<MultiThreaded>::list_cf(&opts, &dir)
            .map_err(|e| format!("reading the restored RocksDB in {}: {e}", dir.display()))
            .and_then(|cfs| {
                Rdb::open_cf_with_opts(&opts, &dir, cfs.iter().map(|n| (n, opts.clone())))
                    .map(|db| (db, cfs))
                    .map_err(|e| format!("opening the restored RocksDB in {}: {e}", dir.display()))
            });
        let (db, mut cfs) = match opened {
            Ok(x) => x,
            Err(e) => {
                remove(&dir);
                remove(&pieces_dir);
                return Err(e);
            }
        };
        // From here on, dropping the instance deletes its directory.
        let db = Instance { db: Some(db), dir };
        let applied = changelog::apply_pieces(db.db(), &pieces, &opts);
        remove(&pieces_dir);
        cfs.extend(applied?);
        let mut kv = Self::with_db(shared, db, instance, cfs);
        kv.known = snap
            .files
            .iter()
            .filter(|f| f.shared && !is_piece(&f.name))
            .map(|f| (f.name.clone(), f.clone()))
            .collect();
        Ok(kv)
    }

    fn db(&self) -> &Rdb {
        self.db.db()
    }

    fn fail(&self, what: &str, e: rocksdb::Error) -> ! {
        panic!("RocksDB {what} in {}: {e}", self.db.dir.display())
    }

    /// Logs a write (`None`: a deletion) for the next changelog piece (if logging), within
    /// the bound.
    #[inline]
    fn log(&mut self, table: u32, key: &[u8], value: Option<&[u8]>) {
        if let Some(log) = &mut self.log {
            if !log.push(table, key, value, self.shared.changelog_bytes_max) {
                tracing::debug!(
                    "{}: the changelog's writes passed {} bytes: the next checkpoint materializes",
                    self.instance,
                    self.shared.changelog_bytes_max
                );
                self.log = None;
            }
        }
    }

    /// A new directory for a snapshot's files.
    fn snapshot_dir(&self, id: u64) -> Result<PathBuf, String> {
        let label = if id == u64::MAX {
            "final".to_string()
        } else {
            id.to_string()
        };
        let root = self.shared.workdir.get()?.join("snapshots");
        std::fs::create_dir_all(&root).map_err(|e| format!("creating {}: {e}", root.display()))?;
        Ok(root.join(format!("{}-{label}-{}", self.instance, next_id())))
    }

    fn snapshot_of(&self, files: Vec<NativeFile>, dir: &Path) -> NativeSnapshot {
        NativeSnapshot {
            format: FORMAT.to_string(),
            instance: self.instance.clone(),
            key_groups: (0, 0),
            max_parallelism: 0,
            tables: Vec::new(),
            files,
            local_dir: Some(dir.to_string_lossy().into_owned()),
        }
    }

    /// A materialized checkpoint (flush, RocksDB checkpoint), which becomes the base.
    fn materialize(&mut self, id: u64) -> Result<NativeSnapshot, String> {
        // Whatever happens, changes from here on are relative to a new base, or untracked.
        if let Some(old) = self.base.take() {
            remove(&old.dir);
        }
        self.log = None;
        let db = self.db();
        // No write-ahead log: the memtables must be in SST files before the hard links.
        let mut fo = FlushOptions::default();
        fo.set_wait(true);
        let cfs: Vec<_> = self.names.iter().filter_map(|n| db.cf_handle(n)).collect();
        let refs: Vec<_> = cfs.iter().collect();
        db.flush_cfs_opt(&refs, &fo)
            .map_err(|e| format!("flushing {}: {e}", self.db.dir.display()))?;
        drop(refs);
        drop(cfs);
        let dir = self.snapshot_dir(id)?;
        Checkpoint::new(db)
            .and_then(|c| c.create_checkpoint(&dir))
            .map_err(|e| format!("RocksDB checkpoint of {}: {e}", self.db.dir.display()))?;
        let mut files = Vec::new();
        let rd = std::fs::read_dir(&dir).map_err(|e| format!("listing {}: {e}", dir.display()))?;
        for e in rd {
            let e = e.map_err(|e| format!("listing {}: {e}", dir.display()))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let bytes = e
                .metadata()
                .map_err(|err| format!("{}: {err}", e.path().display()))?
                .len();
            let shared = name.ends_with(".sst");
            let known = self.known.get(&name).filter(|k| shared && k.bytes == bytes);
            files.push(NativeFile {
                shared,
                bytes,
                path: known.and_then(|k| k.path.clone()),
                xxh3: known.map_or(0, |k| k.xxh3),
                name,
            });
        }
        files.sort_by(|a, b| a.name.cmp(&b.name));
        if self.shared.cfg.changelog {
            match self.keep_base(id, &dir, &files) {
                Ok(base) => {
                    self.base = Some(base);
                    self.log = Some(WriteLog::new(self.shared.changelog_total.clone()));
                }
                Err(e) => tracing::warn!(
                    "{}: keeping checkpoint {id} as the changelog's base: {e}; the next checkpoint materializes again",
                    self.instance
                ),
            }
        }
        Ok(self.snapshot_of(files, &dir))
    }

    /// Links the files of the materialized snapshot in `dir` that are not in storage yet into
    /// a directory of the store.
    fn keep_base(&self, id: u64, dir: &Path, files: &[NativeFile]) -> Result<Base, String> {
        let base_dir = self.shared.workdir.get()?.join("base").join(format!(
            "{}-{}",
            self.instance,
            next_id()
        ));
        std::fs::create_dir_all(&base_dir)
            .map_err(|e| format!("creating {}: {e}", base_dir.display()))?;
        for f in files.iter().filter(|f| f.path.is_none()) {
            if let Err(e) = link(&dir.join(&f.name), &base_dir.join(&f.name)) {
                remove(&base_dir);
                return Err(e);
            }
        }
        Ok(Base {
            files: files.to_vec(),
            bytes: files.iter().map(|f| f.bytes).sum(),
            dir: base_dir,
            released: false,
            pieces: Vec::new(),
            ids: VecDeque::from([id]),
            unconfirmed: 1,
        })
    }

    /// A changelog checkpoint: the base's files, the pieces since, and a new piece of the writes
    /// since the last checkpoint, written later by the returned job.
    fn changelog(&mut self, id: u64) -> Result<(NativeSnapshot, Option<NativeFinish>), String> {
        let dir = self.snapshot_dir(id)?;
        let base = self.base.as_mut().expect("a base");
        let mut files = Vec::with_capacity(base.files.len() + base.pieces.len() + 1);
        let linked = (|| {
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("creating {}: {e}", dir.display()))?;
            for f in &base.files {
                if f.path.is_none() && !(base.released && f.shared) {
                    link(&base.dir.join(&f.name), &dir.join(&f.name))?;
                }
                files.push(f.clone());
            }
            for p in &base.pieces {
                link(&base.dir.join(&p.name), &dir.join(&p.name))?;
                files.push(NativeFile {
                    name: p.name.clone(),
                    shared: true,
                    bytes: p
                        .written
                        .get()
                        .and_then(|w| w.as_ref().ok())
                        .copied()
                        .unwrap_or(0),
                    path: None,
                    xxh3: 0,
                });
            }
            Ok::<(), String>(())
        })();
        if let Err(e) = linked {
            remove(&dir);
            return Err(e);
        }
        if base.ids.len() >= IDS_KEPT {
            base.ids.pop_front();
        }
        base.ids.push_back(id);
        base.unconfirmed += 1;
        let fresh = WriteLog::new(self.shared.changelog_total.clone());
        let log = self.log.replace(fresh).expect("logging");
        if log.is_empty() {
            return Ok((self.snapshot_of(files, &dir), None));
        }
        let name = piece_name(self.next_piece);
        self.next_piece += 1;
        let written = Arc::new(OnceLock::new());
        base.pieces.push(Piece {
            name: name.clone(),
            written: written.clone(),
        });
        files.push(NativeFile {
            name: name.clone(),
            shared: true,
            bytes: 0,
            path: None,
            xxh3: 0,
        });
        tracing::debug!(
            "{}: checkpoint {id} is a changelog of {} writes on a base of {} bytes",
            self.instance,
            log.records(),
            base.bytes
        );
        let names = self.names.clone();
        let (snap_dir, base_dir) = (dir.clone(), base.dir.clone());
        let finish: NativeFinish = Box::new(move || {
            let path = snap_dir.join(&name);
            let bytes = changelog::write_piece_file(&path, |w| log.write_to(&names, w));
            // Release the log's memory now.
            drop(log);
            match bytes {
                Err(e) => {
                    let _ = written.set(Err(e.clone()));
                    Err(e)
                }
                Ok(n) => {
                    // Kept for later checkpoints (not needed by this one).
                    let kept = link(&path, &base_dir.join(&name)).map(|_| n);
                    if let Err(e) = &kept {
                        tracing::debug!("keeping changelog piece {name}: {e}");
                    }
                    let _ = written.set(kept);
                    Ok(())
                }
            }
        });
        Ok((self.snapshot_of(files, &dir), Some(finish)))
    }
}

impl KvStore for DiskKv {
    fn table(&mut self, name: &str) -> Result<u32, String> {
        if let Some(&id) = self.ids.get(name) {
            return Ok(id);
        }
        self.db()
            .create_cf(name, &self.cf_options)
            .map_err(|e| format!("creating column family '{name}': {e}"))?;
        let id = self.names.len() as u32;
        self.names.push(name.to_string());
        self.ids.insert(name.to_string(), id);
        Ok(id)
    }
    fn get(&self, table: u32, key: &[u8]) -> Option<Vec<u8>> {
        let cf = self
            .db()
            .cf_handle(&self.names[table as usize])
            .expect("a column family per registered table");
        match self.db().get_pinned_cf(&cf, key) {
            Ok(v) => v.map(|v| v.to_vec()),
            Err(e) => self.fail("read", e),
        }
    }
    fn put(&mut self, table: u32, key: &[u8], value: &[u8]) {
        self.log(table, key, Some(value));
        let db = self.db.db();
        let cf = db
            .cf_handle(&self.names[table as usize])
            .expect("a column family per registered table");
        if let Err(e) = db.put_cf_opt(&cf, key, value, &self.write) {
            self.fail("write", e)
        }
    }
    fn delete(&mut self, table: u32, key: &[u8]) {
        self.log(table, key, None);
        let db = self.db.db();
        let cf = db
            .cf_handle(&self.names[table as usize])
            .expect("a column family per registered table");
        if let Err(e) = db.delete_cf_opt(&cf, key, &self.write) {
            self.fail("delete", e)
        }
    }
    fn scan(&self, table: u32, f: &mut dyn FnMut(&[u8], &[u8])) {
        // A full scan (snapshot, TTL purge) would evict the working set from the cache.
        let mut ro = ReadOptions::default();
        ro.fill_cache(false);
        ro.set_readahead_size(2 << 20);
        let cf = self
            .db()
            .cf_handle(&self.names[table as usize])
            .expect("a column family per registered table");
        let mut it = self.db().raw_iterator_cf_opt(&cf, ro);
        it.seek_to_first();
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            f(k, v);
            it.next();
        }
        if let Err(e) = it.status() {
            self.fail("scan", e)
        }
    }
    fn len(&self, table: u32) -> usize {
        let cf = self
            .db()
            .cf_handle(&self.names[table as usize])
            .expect("a column family per registered table");
        self.db()
            .property_int_value_cf(&cf, "rocksdb.estimate-num-keys")
            .ok()
            .flatten()
            .unwrap_or(0) as usize
    }
    fn native_snapshot(
        &mut self,
        id: u64,
    ) -> Option<Result<(NativeSnapshot, Option<NativeFinish>), String>> {
        if self.shared.cfg.changelog {
            let why = match (&self.base, &self.log) {
                (None, _) => Some("there is no base".to_string()),
                (Some(_), None) => Some("the write log overflowed its bound".to_string()),
                (Some(b), Some(_)) => b.exhausted(self.shared.cfg.changelog_materialize_percent),
            };
            match why {
                None => match self.changelog(id) {
                    Ok(s) => return Some(Ok(s)),
                    Err(e) => tracing::warn!(
                        "{}: checkpoint {id} could not be a changelog ({e}); materializing",
                        self.instance
                    ),
                },
                Some(why) => {
                    tracing::debug!("{}: checkpoint {id} materializes: {why}", self.instance)
                }
            }
        }
        Some(self.materialize(id).map(|s| (s, None)))
    }
    fn checkpoint_complete(&mut self, id: u64) {
        let Some(base) = &mut self.base else { return };
        if !base.ids.contains(&id) {
            return;
        }
        base.unconfirmed = 0;
        if !base.released {
            // Storage has the base's SST files now, and the coordinator references them.
            base.released = true;
            for f in base.files.iter().filter(|f| f.shared && f.path.is_none()) {
                let _ = std::fs::remove_file(base.dir.join(&f.name));
            }
        }
    }
}

impl Drop for DiskKv {
    fn drop(&mut self) {
        if let Some(b) = self.base.take() {
            remove(&b.dir);
        }
        // The instance closes and its directory goes when the last holder drops it.
    }
}
