//! One operator subtask's RocksDB instance as a [`KvStore`]: a column family per table.
use crate::workdir::{instance_id, next_id, remove};
use crate::{Shared, FORMAT};
use rocksdb::checkpoint::Checkpoint;
use rocksdb::{ColumnFamily, FlushOptions, Options, ReadOptions, WriteOptions, DB};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use weir_state::bytes::KvStore;
use weir_state::native::{fetch_all, FileSource, NativeFile, NativeSnapshot};

pub(crate) struct DiskKv {
    shared: Arc<Shared>,
    /// `None` only while dropping (closed before its directory is deleted).
    db: Option<DB>,
    dir: PathBuf,
    instance: String,
    /// Column family names by table id.
    names: Vec<String>,
    ids: HashMap<String, u32>,
    /// Files this instance was restored from, which checkpoint storage has already.
    known: HashMap<String, NativeFile>,
    /// State is checkpointed: no write-ahead log.
    write: WriteOptions,
    cf_options: Options,
}

fn safe(uid: &str) -> String {
    uid.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
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

    fn with_db(
        shared: Arc<Shared>,
        db: DB,
        dir: PathBuf,
        instance: String,
        existing: Vec<String>,
    ) -> Self {
        let mut write = WriteOptions::default();
        write.disable_wal(true);
        let cf_options = shared.options();
        let mut kv = DiskKv {
            shared,
            db: Some(db),
            dir,
            instance,
            names: Vec::new(),
            ids: HashMap::new(),
            known: HashMap::new(),
            write,
            cf_options,
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
        let db = DB::open(&shared.options(), &dir)
            .map_err(|e| format!("opening RocksDB in {}: {e}", dir.display()))?;
        Ok(Self::with_db(shared, db, dir, instance, Vec::new()))
    }

    /// An instance made from a native snapshot's files (fetched and checked).
    pub(crate) fn restore(
        shared: Arc<Shared>,
        uid: &str,
        subtask: usize,
        snap: &NativeSnapshot,
        files: &dyn FileSource,
    ) -> Result<Self, String> {
        if snap.format != FORMAT {
            return Err(format!(
                "cannot open a '{}' snapshot as RocksDB",
                snap.format
            ));
        }
        let instance = instance_id();
        let dir = Self::dir_for(&shared, uid, subtask, &instance)?;
        if let Err(e) = fetch_all(snap, files, &dir) {
            remove(&dir);
            return Err(e);
        }
        let opts = shared.options();
        let cfs = DB::list_cf(&opts, &dir)
            .map_err(|e| format!("reading the restored RocksDB in {}: {e}", dir.display()))?;
        let db = DB::open_cf_with_opts(&opts, &dir, cfs.iter().map(|n| (n, opts.clone())))
            .map_err(|e| format!("opening the restored RocksDB in {}: {e}", dir.display()))?;
        let mut kv = Self::with_db(shared, db, dir, instance, cfs);
        kv.known = snap
            .files
            .iter()
            .filter(|f| f.shared)
            .map(|f| (f.name.clone(), f.clone()))
            .collect();
        Ok(kv)
    }

    fn db(&self) -> &DB {
        self.db.as_ref().expect("open")
    }

    fn cf(&self, table: u32) -> &ColumnFamily {
        self.db()
            .cf_handle(&self.names[table as usize])
            .expect("a column family per registered table")
    }

    fn fail(&self, what: &str, e: rocksdb::Error) -> ! {
        panic!("RocksDB {what} in {}: {e}", self.dir.display())
    }

    fn checkpoint(&mut self, id: u64) -> Result<NativeSnapshot, String> {
        let db = self.db();
        // No write-ahead log: the memtables must be in SST files before the hard links.
        let mut fo = FlushOptions::default();
        fo.set_wait(true);
        let cfs: Vec<&ColumnFamily> = self.names.iter().filter_map(|n| db.cf_handle(n)).collect();
        db.flush_cfs_opt(&cfs, &fo)
            .map_err(|e| format!("flushing {}: {e}", self.dir.display()))?;
        let label = if id == u64::MAX {
            "final".to_string()
        } else {
            id.to_string()
        };
        let root = self.shared.workdir.get()?.join("snapshots");
        std::fs::create_dir_all(&root).map_err(|e| format!("creating {}: {e}", root.display()))?;
        let dir = root.join(format!("{}-{label}-{}", self.instance, next_id()));
        Checkpoint::new(db)
            .and_then(|c| c.create_checkpoint(&dir))
            .map_err(|e| format!("RocksDB checkpoint of {}: {e}", self.dir.display()))?;
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
        Ok(NativeSnapshot {
            format: FORMAT.to_string(),
            instance: self.instance.clone(),
            key_groups: (0, 0),
            max_parallelism: 0,
            tables: Vec::new(),
            files,
            local_dir: Some(dir.to_string_lossy().into_owned()),
        })
    }
}

impl KvStore for DiskKv {
    fn table(&mut self, name: &str) -> Result<u32, String> {
        if let Some(&id) = self.ids.get(name) {
            return Ok(id);
        }
        let opts = self.cf_options.clone();
        self.db
            .as_mut()
            .expect("open")
            .create_cf(name, &opts)
            .map_err(|e| format!("creating column family '{name}': {e}"))?;
        let id = self.names.len() as u32;
        self.names.push(name.to_string());
        self.ids.insert(name.to_string(), id);
        Ok(id)
    }
    fn get(&self, table: u32, key: &[u8]) -> Option<Vec<u8>> {
        match self.db().get_pinned_cf(self.cf(table), key) {
            Ok(v) => v.map(|v| v.to_vec()),
            Err(e) => self.fail("read", e),
        }
    }
    fn put(&mut self, table: u32, key: &[u8], value: &[u8]) {
        if let Err(e) = self
            .db()
            .put_cf_opt(self.cf(table), key, value, &self.write)
        {
            self.fail("write", e)
        }
    }
    fn delete(&mut self, table: u32, key: &[u8]) {
        if let Err(e) = self.db().delete_cf_opt(self.cf(table), key, &self.write) {
            self.fail("delete", e)
        }
    }
    fn scan(&self, table: u32, f: &mut dyn FnMut(&[u8], &[u8])) {
        // A full scan (snapshot, TTL purge) would evict the working set from the cache.
        let mut ro = ReadOptions::default();
        ro.fill_cache(false);
        ro.set_readahead_size(2 << 20);
        let mut it = self.db().raw_iterator_cf_opt(self.cf(table), ro);
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
        self.db()
            .property_int_value_cf(self.cf(table), "rocksdb.estimate-num-keys")
            .ok()
            .flatten()
            .unwrap_or(0) as usize
    }
    fn native_snapshot(&mut self, id: u64) -> Option<Result<NativeSnapshot, String>> {
        Some(self.checkpoint(id))
    }
}

impl Drop for DiskKv {
    fn drop(&mut self) {
        drop(self.db.take());
        remove(&self.dir);
    }
}
