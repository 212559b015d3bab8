//! The changelog of the disk backend's checkpoints: the writes since the last checkpoint (the
//! write log, bounded in memory), and the pieces it becomes — files of the last value (or the
//! deletion) of each key written, which a checkpoint adds to an earlier materialized snapshot
//! instead of uploading the SST files that compactions rewrote.
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
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

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

/// Bytes of a logged write besides its key and value: table id, key length, value length.
const RECORD_HEADER: usize = 12;
/// The value length of a logged deletion.
const DELETED: u32 = u32::MAX;

/// Every write (put or deletion) since the last checkpoint, in order, with its value: what the
/// next changelog piece is made of, with no read of the store. Bounded in bytes: its buffer's
/// capacity counts in a total shared by every store of the backend, which the backend bounds.
pub(crate) struct WriteLog {
    /// Records: table id (u32 LE), key length (u32 LE), value length (u32 LE, [`DELETED`] for
    /// a deletion), key, value.
    buf: Vec<u8>,
    records: usize,
    /// Bytes added to `total` (the buffer's capacity when last counted).
    accounted: u64,
    total: Arc<AtomicU64>,
}

impl WriteLog {
    pub(crate) fn new(total: Arc<AtomicU64>) -> Self {
        WriteLog {
            buf: Vec::new(),
            records: 0,
            accounted: 0,
            total,
        }
    }

    /// Logs a write of `key` in `table` (`None`: a deletion). Returns whether the backend's
    /// logs still fit in `bytes_max`.
    #[inline]
    pub(crate) fn push(
        &mut self,
        table: u32,
        key: &[u8],
        value: Option<&[u8]>,
        bytes_max: u64,
    ) -> bool {
        let vlen = value.map_or(0, |v| v.len());
        if key.len() >= DELETED as usize || vlen >= DELETED as usize {
            // Not representable: the caller stops logging (the checkpoint materializes).
            return false;
        }
        self.buf.reserve(RECORD_HEADER + key.len() + vlen);
        self.buf.extend_from_slice(&table.to_le_bytes());
        self.buf
            .extend_from_slice(&(key.len() as u32).to_le_bytes());
        self.buf
            .extend_from_slice(&value.map_or(DELETED, |v| v.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(key);
        if let Some(v) = value {
            self.buf.extend_from_slice(v);
        }
        self.records += 1;
        let cap = self.buf.capacity() as u64;
        if cap > self.accounted {
            // Counted when the buffer grows (doubling), not on every write.
            let add = cap - self.accounted;
            self.accounted = cap;
            self.total.fetch_add(add, Ordering::Relaxed) + add <= bytes_max
        } else {
            true
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Writes logged.
    pub(crate) fn records(&self) -> usize {
        self.records
    }

    /// The logged writes, in order: `(table, key, value)`.
    fn iter(&self) -> impl Iterator<Item = (u32, &[u8], Option<&[u8]>)> {
        let mut at = 0;
        let b = &self.buf;
        std::iter::from_fn(move || {
            if at >= b.len() {
                return None;
            }
            let u = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
            let (table, klen, vlen) = (u(at), u(at + 4) as usize, u(at + 8));
            let k = at + RECORD_HEADER;
            let v = k + klen;
            let (value, next) = if vlen == DELETED {
                (None, v)
            } else {
                (Some(&b[v..v + vlen as usize]), v + vlen as usize)
            };
            at = next;
            Some((table, &b[k..v], value))
        })
    }

    /// Writes the last logged write of each key to a piece (newest first). `names`: the
    /// tables' names by id.
    pub(crate) fn write_to<W: Write>(
        &self,
        names: &[String],
        w: &mut PieceWriter<W>,
    ) -> Result<(), String> {
        let writes: Vec<(u32, &[u8], Option<&[u8]>)> = self.iter().collect();
        let mut seen: hashbrown::HashSet<(u32, &[u8])> =
            hashbrown::HashSet::with_capacity(writes.len());
        let io = |e: std::io::Error| format!("writing a changelog piece: {e}");
        let mut table = None;
        for &(t, key, value) in writes.iter().rev() {
            if !seen.insert((t, key)) {
                continue; // an older write of a key written again later
            }
            if table != Some(t) {
                let name = names.get(t as usize).ok_or_else(|| {
                    format!("a changelog write names table {t}, which is unknown")
                })?;
                w.table(name).map_err(io)?;
                table = Some(t);
            }
            match value {
                Some(v) => w.put(key, v).map_err(io)?,
                None => w.delete(key).map_err(io)?,
            }
        }
        Ok(())
    }
}

impl Drop for WriteLog {
    fn drop(&mut self) {
        self.total.fetch_sub(self.accounted, Ordering::Relaxed);
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

    #[test]
    fn a_write_log_keeps_each_keys_last_write_and_counts_its_memory() {
        let total = Arc::new(AtomicU64::new(0));
        let mut log = WriteLog::new(total.clone());
        assert!(log.is_empty());
        let max = u64::MAX;
        assert!(log.push(0, b"a", Some(b"1"), max));
        assert!(log.push(0, b"b", Some(b"1"), max));
        assert!(log.push(1, b"a", Some(b"x"), max)); // same key, another table
        assert!(log.push(0, b"a", Some(b"2"), max));
        assert!(log.push(0, b"b", None, max)); // deleted after its put
        assert!(log.push(0, b"c", None, max));
        assert!(log.push(0, b"c", Some(b""), max)); // put (empty value) after its deletion
        assert_eq!(log.records(), 7);
        let counted = total.load(Ordering::Relaxed);
        assert!(counted >= 7 * RECORD_HEADER as u64 + 13, "{counted}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(piece_name(1));
        let names = vec!["t0".to_string(), "t1".to_string()];
        write_piece_file(&path, |w| log.write_to(&names, w)).unwrap();
        let mut got = Vec::new();
        read_piece(&path, &mut |t, k, v| {
            got.push((t.to_string(), k.to_vec(), v.map(|v| v.to_vec())));
            Ok(())
        })
        .unwrap();
        got.sort();
        assert_eq!(
            got,
            vec![
                ("t0".into(), b"a".to_vec(), Some(b"2".to_vec())),
                ("t0".into(), b"b".to_vec(), None),
                ("t0".into(), b"c".to_vec(), Some(Vec::new())),
                ("t1".into(), b"a".to_vec(), Some(b"x".to_vec())),
            ]
        );
        drop(log);
        assert_eq!(total.load(Ordering::Relaxed), 0);
        // Over the bound: the push says so.
        let mut small = WriteLog::new(total.clone());
        assert!(!small.push(0, &[0u8; 100], Some(&[0u8; 100]), 64));
    }
}
