//! Reads a RocksDB native snapshot entry by entry, by key-group range: restoring at another
//! parallelism, or into another backend.
use crate::workdir::{next_id, remove};
use crate::FORMAT;
use rocksdb::{BlockBasedOptions, Cache, ColumnFamilyDescriptor, Options, ReadOptions, DB};
use std::ops::Range;
use weir_state::native::{fetch_all, FileSource, NativeReader, NativeSnapshot};

/// The [`NativeReader`] of [`FORMAT`]: fetches the snapshot's files into a temporary
/// directory, opens them read-only with a small cache, and scans each column family over the
/// key groups asked for (keys start with their key group, big-endian, so that is one range).
pub struct RocksReader;

impl NativeReader for RocksReader {
    fn read(
        &self,
        snap: &NativeSnapshot,
        files: &dyn FileSource,
        key_groups: Range<u32>,
        f: &mut dyn FnMut(&str, &[u8], &[u8]) -> Result<(), String>,
    ) -> Result<(), String> {
        if snap.format != FORMAT {
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
        struct Cleanup(std::path::PathBuf);
        impl Drop for Cleanup {
            fn drop(&mut self) {
                remove(&self.0);
            }
        }
        let _cleanup = Cleanup(dir.clone());
        fetch_all(snap, files, &dir)?;
        let mut t = BlockBasedOptions::default();
        t.set_block_cache(&Cache::new_lru_cache(8 << 20));
        let mut opts = Options::default();
        opts.set_block_based_table_factory(&t);
        let cfs = DB::list_cf(&opts, &dir)
            .map_err(|e| format!("reading the snapshot in {}: {e}", dir.display()))?;
        let db = DB::open_cf_descriptors_read_only(
            &opts,
            &dir,
            cfs.iter()
                .map(|n| ColumnFamilyDescriptor::new(n, opts.clone())),
            false,
        )
        .map_err(|e| format!("opening the snapshot in {}: {e}", dir.display()))?;
        let start = (key_groups.start as u16).to_be_bytes();
        for name in cfs.iter().filter(|n| *n != "default") {
            let cf = db.cf_handle(name).expect("listed");
            let mut ro = ReadOptions::default();
            ro.fill_cache(false);
            ro.set_readahead_size(2 << 20);
            let mut it = db.raw_iterator_cf_opt(cf, ro);
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
