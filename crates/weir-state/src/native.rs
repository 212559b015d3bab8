//! Native snapshots: a disk backend's own files (e.g. RocksDB's SST files) as a checkpoint of
//! its keyed state, instead of the canonical key-group blocks of [`crate::snapshot`].
//!
//! A native snapshot is cheap to take (flush, then hard-link the immutable files) and cheap to
//! upload: files that earlier checkpoints uploaded are referenced again, not copied
//! (incremental checkpoints). It restores natively only into the same backend at the same key
//! groups; anything else (another parallelism, another backend) reads it back entry by entry
//! through the [`NativeReader`] its format registered, and loads the entries as a canonical
//! restore would.
//!
//! Some of a snapshot's files may be written after the barrier, off the task thread: the store
//! returns a [`NativeFinish`] with the snapshot, which runs in the snapshot's deferred job
//! before the upload (the disk backend writes its changelog pieces so). A format may consist of
//! more than one kind of file (the disk backend's: a RocksDB checkpoint plus changelog pieces);
//! only its own store and reader interpret them.
//!
//! Entries are exchanged raw, in the byte layout of [`crate::bytes`]: key
//! `[key group u16 BE][postcard key][postcard namespace]`, value
//! `[written_ms i64 LE][postcard value]`.
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;
use std::sync::{Arc, OnceLock, RwLock};

/// One file of a native snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NativeFile {
    /// Its name in the store's directory (`000012.sst`, `MANIFEST-000005`, `CURRENT`).
    pub name: String,
    /// Immutable and content-stable under its name for the life of the store: uploaded once,
    /// then referenced by every later checkpoint that still uses it (RocksDB's SST files).
    /// Other files (the manifest, options) are private to each checkpoint.
    pub shared: bool,
    /// Length in bytes.
    pub bytes: u64,
    /// Where it is in checkpoint storage, once uploaded (relative to the storage root).
    pub path: Option<String>,
    /// xxh3 of the content, once uploaded (0 before).
    pub xxh3: u64,
}

/// A backend's native snapshot of one operator subtask's keyed state (timers excepted: they are
/// in the canonical blocks next to it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NativeSnapshot {
    /// The file format, which names the [`NativeReader`] that can read it (`rocksdb-v1`).
    pub format: String,
    /// A unique id of the store instance that made the files: with a file name, it identifies
    /// a shared file's content (names repeat across instances, never within one).
    pub instance: String,
    /// The key groups of the subtask that took it, `start..end`.
    pub key_groups: (u32, u32),
    /// The job's number of key groups (raw keys start with their key group).
    pub max_parallelism: u32,
    /// Every table: `(name, stored value type)`, checked on restore as in canonical blocks.
    pub tables: Vec<(String, String)>,
    /// Its files.
    pub files: Vec<NativeFile>,
    /// A local directory that holds the files until they are uploaded. Whoever holds the
    /// snapshot owns it (the checkpoint coordinator deletes it once uploaded or abandoned).
    pub local_dir: Option<String>,
}

impl NativeSnapshot {
    /// The key groups it holds, as a range.
    pub fn key_group_range(&self) -> Range<u32> {
        self.key_groups.0..self.key_groups.1
    }

    /// Deletes the local directory, if any (once uploaded, or when abandoned).
    pub fn discard_local(&self) {
        if let Some(d) = &self.local_dir {
            if let Err(e) = std::fs::remove_dir_all(d) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!("could not delete the local snapshot {d}: {e}");
                }
            }
        }
    }
}

/// Copies files out of checkpoint storage (implemented by the runtime over its storage).
pub trait FileSource: Send + Sync {
    /// Copies `path` to the local file `to`; returns its length and xxh3.
    fn fetch(&self, path: &str, to: &Path) -> Result<(u64, u64), String>;
}

/// Work that completes a native snapshot after the barrier, off the task thread, before its
/// files are uploaded: e.g. writing a changelog piece into its local directory from a
/// point-in-time view of the store. The checkpoint coordinator runs it (through the snapshot's
/// deferred job); until then the files it writes do not exist.
pub type NativeFinish = Box<dyn FnOnce() -> Result<(), String> + Send>;

/// Downloads every file of `snap` into `dir` (created), checking lengths and checksums.
pub fn fetch_all(snap: &NativeSnapshot, files: &dyn FileSource, dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    for f in &snap.files {
        fetch_file(f, files, &dir.join(&f.name))?;
    }
    Ok(())
}

/// Downloads one file of a snapshot to `to`, checking its length and checksum.
pub fn fetch_file(f: &NativeFile, files: &dyn FileSource, to: &Path) -> Result<(), String> {
    let path = f
        .path
        .as_deref()
        .ok_or_else(|| format!("native file {} was never uploaded", f.name))?;
    let (bytes, xxh3) = files.fetch(path, to)?;
    if bytes != f.bytes || xxh3 != f.xxh3 {
        return Err(format!(
            "{path} has {bytes} bytes and a checksum that do not match the checkpoint ({} bytes): corrupted",
            f.bytes
        ));
    }
    Ok(())
}

/// Reads a native format back as entries: for restores that cannot open the files natively
/// (another parallelism, another backend).
pub trait NativeReader: Send + Sync {
    /// Visits every entry of `snap` whose key group is in `key_groups`, as
    /// `(table, raw key, raw value)`, in key order per table.
    fn read(
        &self,
        snap: &NativeSnapshot,
        files: &dyn FileSource,
        key_groups: Range<u32>,
        f: &mut dyn FnMut(&str, &[u8], &[u8]) -> Result<(), String>,
    ) -> Result<(), String>;
}

fn readers() -> &'static RwLock<HashMap<String, Arc<dyn NativeReader>>> {
    static R: OnceLock<RwLock<HashMap<String, Arc<dyn NativeReader>>>> = OnceLock::new();
    R.get_or_init(Default::default)
}

/// Makes `format` readable by every backend of this process (a disk backend's crate calls it).
pub fn register_reader(format: &str, reader: Arc<dyn NativeReader>) {
    readers()
        .write()
        .expect("reader registry")
        .insert(format.to_string(), reader);
}

/// The reader of `format`, if its crate registered one.
pub fn reader(format: &str) -> Option<Arc<dyn NativeReader>> {
    readers()
        .read()
        .expect("reader registry")
        .get(format)
        .cloned()
}
