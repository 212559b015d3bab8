//! Reads a RocksDB native snapshot entry by entry, by key-group range: restoring at another
//! parallelism, or into another backend.
use crate::changelog::apply_pieces;
use crate::kv::{fetch_snapshot, Rdb};
use crate::workdir::{next_id, remove};
use rocksdb::{BlockBasedOptions, Cache, ColumnFamilyDescriptor, Options, ReadOptions};
use std::ops::Range;
use std::path::PathBuf;
use weir_state::native::{FileSource, NativeReader, NativeSnapshot};

/// The [`NativeReader`] of [`crate::FORMAT`] (and [`crate::FORMAT_V1`]): fetches the
/// snapshot's files into a temporary directory, opens them with a small cache (read-only, or,
/// when the snapshot has changelog pieces, read-write to apply them in order first), and scans
/// each column family over the key groups asked for (keys start with their key group,
/// big-endian, so that is one range).
pub struct RocksReader;

impl NativeReader for RocksReader {
    fn read(
        &self,
        snap: &NativeSnapshot,
        files: &dyn FileSource,
        key_groups: Range<u32>,
        f: &mut dyn FnMut(&str, &[u8], &[u8]) -> Result<(), String>,
    ) -> Result<(), String> {
        if !crate::kv::opens(&snap.format) {
            return Err(format!(
                "cannot read a '{}' snapshot as RocksDB",
                snap.format
            ));
        }
        let dir = std::env::temp_dir().join(format!(
            "weir-state-{}-read-{}-{}",
            std::process::id(),
            snap.instance,
            next_id()
        ));
        let pieces_dir = PathBuf::from(format!("{}.changelog", dir.display()));
        struct Cleanup(Vec<PathBuf>);
        impl Drop for Cleanup {
            fn drop(&mut self) {
                for d in &self.0 {
                    remove(d);
                }
            }
        }
        let _cleanup = Cleanup(vec![dir.clone(), pieces_dir.clone()]);
        let pieces = fetch_snapshot(snap, files, &dir, &pieces_dir)?;
        let mut t = BlockBasedOptions::default();
        t.set_block_cache(&Cache::new_lru_cache(8 << 20));
        let mut opts = Options::default();
        opts.set_block_based_table_factory(&t);
        let mut cfs = Rdb::list_cf(&opts, &dir)
            .map_err(|e| format!("reading the snapshot in {}: {e}", dir.display()))?;
        let db = if pieces.is_empty() {
            Rdb::open_cf_descriptors_read_only(
                &opts,
                &dir,
                cfs.iter()
                    .map(|n| ColumnFamilyDescriptor::new(n, opts.clone())),
                false,
            )
            .map_err(|e| format!("opening the snapshot in {}: {e}", dir.display()))?
        } else {
            // The pieces are written into this private copy, then it is read as one.
            opts.set_disable_auto_compactions(true);
            opts.set_write_buffer_size(8 << 20);
            let db = Rdb::open_cf_descriptors(
                &opts,
                &dir,
                cfs.iter()
                    .map(|n| ColumnFamilyDescriptor::new(n, opts.clone())),
            )
            .map_err(|e| format!("opening the snapshot in {}: {e}", dir.display()))?;
            cfs.extend(apply_pieces(&db, &pieces, &opts)?);
            remove(&pieces_dir);
            db
        };
        let start = (key_groups.start as u16).to_be_bytes();
        for name in cfs.iter().filter(|n| *n != "default") {
            let cf = db.cf_handle(name).expect("listed");
            let mut ro = ReadOptions::default();
            ro.fill_cache(false);
            ro.set_readahead_size(2 << 20);
            let mut it = db.raw_iterator_cf_opt(&cf, ro);
            it.seek(start);
            while let (Some(k), Some(v)) = (it.key(), it.value()) {
                if k.len() < 2 || u16::from_be_bytes([k[0], k[1]]) as u32 >= key_groups.end {
                    break;
                }
                f(name, k, v)?;
                it.next();
            }
            it.status()
                .map_err(|e| format!("reading {name} in {}: {e}", dir.display()))?;
        }
        Ok(())
    }
}
