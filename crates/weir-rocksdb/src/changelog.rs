//! The changelog of the disk backend's checkpoints: which keys changed since the last
//! checkpoint (the dirty set, bounded in memory), and the pieces it becomes — files of the
//! current values and deletions of those keys, which a checkpoint adds to an earlier
//! materialized snapshot instead of uploading the SST files that compactions rewrote.
//!
//! A piece, `weir-changelog-<sequence>` (the sequence orders the pieces of one instance):
//!
//! ```text
//! "WEIRCL01"
//! records: 1 varint(len) table-name       following records are in that table
//!          2 varint(len) key varint(len) value   the key's value
//!          3 varint(len) key                     the key is deleted
//! end:     0 u64-LE(number of 2 and 3 records)
//! ```
//!
//! Keys and values are raw, in the layout of [`weir_state::bytes`] (the key starts with its key
//! group). Lengths and checksums are in the checkpoint's manifest like any native file's; the
//! end record catches a piece cut short locally.
use crate::kv::Rdb;
use rocksdb::{Options, WriteBatch, WriteOptions};
use std::collections::HashSet;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use xxhash_rust::xxh3::Xxh3DefaultBuilder;

/// Names of changelog pieces start with it (RocksDB's files never do).
pub const PIECE_PREFIX: &str = "weir-changelog-";
const MAGIC: &[u8; 8] = b"WEIRCL01";
const TABLE: u8 = 1;
const PUT: u8 = 2;
const DELETE: u8 = 3;
const END: u8 = 0;

/// Whether a native file is a changelog piece.
pub(crate) fn is_piece(name: &str) -> bool {
    name.starts_with(PIECE_PREFIX)
}

/// The name of piece `seq` (zero-padded: names sort in sequence order).
pub(crate) fn piece_name(seq: u64) -> String {
    format!("{PIECE_PREFIX}{seq:012}")
}

/// What one tracked key costs in memory, beyond its bytes: the boxed slice (16 bytes), the
/// allocation's rounding and header, and the hash table's slot and control byte at its load
/// factor, rounded up.
pub(crate) const ENTRY_OVERHEAD: u64 = 64;

/// Keys written or deleted since the last checkpoint, by table id. Its estimated memory counts
/// in a total shared by every store of the backend, which the backend bounds.
pub(crate) struct DirtySet {
    pub(crate) tables: Vec<HashSet<Box<[u8]>, Xxh3DefaultBuilder>>,
    bytes: u64,
    /// Keys noted, over every table.
    count: usize,
    total: Arc<AtomicU64>,
}

impl DirtySet {
    pub(crate) fn new(total: Arc<AtomicU64>) -> Self {
        DirtySet {
            tables: Vec::new(),
            bytes: 0,
            count: 0,
            total,
        }
    }

    /// Notes `key` of `table`; returns the backend's total after it.
    #[inline]
    pub(crate) fn insert(&mut self, table: u32, key: &[u8]) -> u64 {
        let t = table as usize;
        if self.tables.len() <= t {
            self.tables.resize_with(t + 1, Default::default);
        }
        let set = &mut self.tables[t];
        if set.contains(key) {
            return self.total.load(Ordering::Relaxed);
        }
        set.insert(key.into());
        self.count += 1;
        let cost = key.len() as u64 + ENTRY_OVERHEAD;
        self.bytes += cost;
        self.total.fetch_add(cost, Ordering::Relaxed) + cost
    }

    /// Keys noted, over every table.
    pub(crate) fn count(&self) -> usize {
        self.count
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.tables.iter().all(|t| t.is_empty())
    }

    pub(crate) fn keys(&self) -> usize {
        self.tables.iter().map(|t| t.len()).sum()
    }
}

impl Drop for DirtySet {
    fn drop(&mut self) {
        self.total.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

fn varint(w: &mut impl Write, mut v: u64) -> std::io::Result<()> {
    let mut buf = [0u8; 10];
    let mut n = 0;
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            buf[n] = b;
            n += 1;
            break;
        }
        buf[n] = b | 0x80;
        n += 1;
    }
    w.write_all(&buf[..n])
}

fn read_varint(r: &mut impl Read) -> std::io::Result<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let mut b = [0u8];
        r.read_exact(&mut b)?;
        v |= u64::from(b[0] & 0x7f) << shift;
        if b[0] & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        "a varint is too long",
    ))
}

/// Writes a piece.
pub(crate) struct PieceWriter<W: Write> {
    w: W,
    records: u64,
}

impl<W: Write> PieceWriter<W> {
    pub(crate) fn new(mut w: W) -> std::io::Result<Self> {
        w.write_all(MAGIC)?;
        Ok(PieceWriter { w, records: 0 })
    }
    pub(crate) fn table(&mut self, name: &str) -> std::io::Result<()> {
        self.w.write_all(&[TABLE])?;
        varint(&mut self.w, name.len() as u64)?;
        self.w.write_all(name.as_bytes())
    }
    pub(crate) fn put(&mut self, key: &[u8], value: &[u8]) -> std::io::Result<()> {
        self.records += 1;
        self.w.write_all(&[PUT])?;
        varint(&mut self.w, key.len() as u64)?;
        self.w.write_all(key)?;
        varint(&mut self.w, value.len() as u64)?;
        self.w.write_all(value)
    }
    pub(crate) fn delete(&mut self, key: &[u8]) -> std::io::Result<()> {
        self.records += 1;
        self.w.write_all(&[DELETE])?;
        varint(&mut self.w, key.len() as u64)?;
        self.w.write_all(key)
    }
    /// Writes the end record; returns the writer.
    pub(crate) fn finish(mut self) -> std::io::Result<W> {
        self.w.write_all(&[END])?;
        self.w.write_all(&self.records.to_le_bytes())?;
        self.w.flush()?;
        Ok(self.w)
    }
}

/// Visits the records of the piece at `path` in order, as `(table, key, Some(value))` for a
/// value and `(table, key, None)` for a deletion.
pub(crate) fn read_piece(
    path: &Path,
    f: &mut dyn FnMut(&str, &[u8], Option<&[u8]>) -> Result<(), String>,
) -> Result<(), String> {
    let what = |e: std::io::Error| format!("changelog piece {}: {e}", path.display());
    let file = std::fs::File::open(path).map_err(what)?;
    let mut r = BufReader::with_capacity(1 << 20, file);
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic).map_err(what)?;
    if &magic != MAGIC {
        return Err(format!(
            "changelog piece {}: not a changelog piece (damaged?)",
            path.display()
        ));
    }
    let mut table: Option<String> = None;
    let (mut key, mut value) = (Vec::new(), Vec::new());
    let mut records = 0u64;
    let bytes = |r: &mut BufReader<std::fs::File>, buf: &mut Vec<u8>| -> std::io::Result<()> {
        let n = read_varint(r)?;
        if n > 1 << 32 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "a length is implausible",
            ));
        }
        buf.resize(n as usize, 0);
        r.read_exact(buf)
    };
    loop {
        let mut kind = [0u8];
        r.read_exact(&mut kind).map_err(what)?;
        match kind[0] {
            TABLE => {
                bytes(&mut r, &mut key).map_err(what)?;
                table = Some(String::from_utf8(key.clone()).map_err(|_| {
                    format!(
                        "changelog piece {}: a table name is not UTF-8",
                        path.display()
                    )
                })?);
            }
            PUT | DELETE => {
                let t = table.as_deref().ok_or_else(|| {
                    format!(
                        "changelog piece {}: an entry before its table",
                        path.display()
                    )
                })?;
                bytes(&mut r, &mut key).map_err(what)?;
                records += 1;
                if kind[0] == PUT {
                    bytes(&mut r, &mut value).map_err(what)?;
                    f(t, &key, Some(&value))?;
                } else {
                    f(t, &key, None)?;
                }
            }
            END => {
                let mut n = [0u8; 8];
                r.read_exact(&mut n).map_err(what)?;
                if u64::from_le_bytes(n) != records {
                    return Err(format!(
                        "changelog piece {}: {records} records where {} were written",
                        path.display(),
                        u64::from_le_bytes(n)
                    ));
                }
                return Ok(());
            }
            other => {
                return Err(format!(
                    "changelog piece {}: unknown record kind {other} (damaged?)",
                    path.display()
                ))
            }
        }
    }
}

/// Applies pieces (in the order given) to `db`: puts and deletes, column families created as
/// needed with `cf_options`, no write-ahead log, in batches. Returns the column families
/// created.
pub(crate) fn apply_pieces(
    db: &Rdb,
    pieces: &[std::path::PathBuf],
    cf_options: &Options,
) -> Result<Vec<String>, String> {
    let mut created = Vec::new();
    let mut wo = WriteOptions::default();
    wo.disable_wal(true);
    for path in pieces {
        let mut batch = WriteBatch::default();
        let mut current: Option<String> = None;
        let flush = |batch: &mut WriteBatch| -> Result<(), String> {
            let b = std::mem::take(batch);
            db.write_opt(b, &wo)
                .map_err(|e| format!("applying changelog piece {}: {e}", path.display()))
        };
        read_piece(path, &mut |table, key, value| {
            if current.as_deref() != Some(table) {
                if db.cf_handle(table).is_none() {
                    // Batched writes name column families that exist.
                    flush(&mut batch)?;
                    db.create_cf(table, cf_options)
                        .map_err(|e| format!("creating column family '{table}': {e}"))?;
                    created.push(table.to_string());
                }
                current = Some(table.to_string());
            }
            let cf = db.cf_handle(table).expect("created above");
            match value {
                Some(v) => batch.put_cf(&cf, key, v),
                None => batch.delete_cf(&cf, key),
            }
            if batch.size_in_bytes() >= 4 << 20 {
                flush(&mut batch)?;
            }
            Ok(())
        })?;
        flush(&mut batch)?;
    }
    Ok(created)
}

/// Writes a piece to `path` through a temporary name (a crash or an error leaves no piece);
/// `fill` writes its records. Returns its length.
pub(crate) fn write_piece_file(
    path: &Path,
    fill: impl FnOnce(&mut PieceWriter<BufWriter<std::fs::File>>) -> Result<(), String>,
) -> Result<u64, String> {
    let tmp = path.with_extension("tmp");
    let what = |e: std::io::Error| format!("writing {}: {e}", tmp.display());
    let result = (|| {
        let file = std::fs::File::create(&tmp).map_err(what)?;
        let mut w = PieceWriter::new(BufWriter::with_capacity(1 << 20, file)).map_err(what)?;
        fill(&mut w)?;
        let file = w
            .finish()
            .map_err(what)?
            .into_inner()
            .map_err(|e| what(e.into_error()))?;
        let len = file.metadata().map_err(what)?.len();
        drop(file);
        std::fs::rename(&tmp, path)
            .map_err(|e| format!("renaming {} to {}: {e}", tmp.display(), path.display()))?;
        Ok(len)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_piece_reads_back_as_written_and_damage_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(piece_name(7));
        let big = vec![7u8; 300];
        let len = write_piece_file(&path, |w| {
            w.table("a").map_err(|e| e.to_string())?;
            w.put(b"k1", b"v1").map_err(|e| e.to_string())?;
            w.delete(b"k2").map_err(|e| e.to_string())?;
            w.table("b").map_err(|e| e.to_string())?;
            w.put(&big, &big).map_err(|e| e.to_string())?;
            Ok(())
        })
        .unwrap();
        assert_eq!(len, std::fs::metadata(&path).unwrap().len());
        let mut got = Vec::new();
        read_piece(&path, &mut |t, k, v| {
            got.push((t.to_string(), k.to_vec(), v.map(|v| v.to_vec())));
            Ok(())
        })
        .unwrap();
        assert_eq!(
            got,
            vec![
                ("a".into(), b"k1".to_vec(), Some(b"v1".to_vec())),
                ("a".into(), b"k2".to_vec(), None),
                ("b".into(), big.clone(), Some(big.clone())),
            ]
        );
        // Cut short: an error, not fewer entries.
        let bytes = std::fs::read(&path).unwrap();
        for cut in [bytes.len() - 1, bytes.len() - 9, 20, 8] {
            std::fs::write(&path, &bytes[..cut]).unwrap();
            assert!(
                read_piece(&path, &mut |_, _, _| Ok(())).is_err(),
                "cut {cut}"
            );
        }
        assert!(piece_name(9) < piece_name(10));
        assert!(is_piece(&piece_name(1)) && !is_piece("000012.sst"));
    }
}
