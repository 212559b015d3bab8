//! Where checkpoints live. Every file is written whole (write to a temporary name, then rename)
//! and carries a checksum in the manifest.
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, RwLock};
use weir_state::native::FileSource;
use weir_types::{Result, WeirError};

/// A place to keep checkpoint files: a local directory, or an object store.
pub trait CheckpointStorage: Send + Sync + std::fmt::Debug {
    /// Writes `bytes` at `path` (relative), replacing it whole.
    fn put(&self, path: &str, bytes: &[u8]) -> Result<()>;
    /// Reads `path`.
    fn get(&self, path: &str) -> Result<Vec<u8>>;
    /// The names directly under `prefix` (directories or files), sorted.
    fn list(&self, prefix: &str) -> Result<Vec<String>>;
    /// Deletes everything under `prefix`.
    fn delete_prefix(&self, prefix: &str) -> Result<()>;
    /// A human-readable location, for logs.
    fn describe(&self) -> String;
    /// Deletes the file `path` (nothing if missing).
    fn delete(&self, path: &str) -> Result<()> {
        self.delete_prefix(path)
    }
    /// Writes the local file `from` at `path`; returns its length and xxh3. Stores should
    /// stream it (state files can be large); the default reads it whole.
    fn put_file(&self, path: &str, from: &Path) -> Result<(u64, u64)> {
        let bytes = std::fs::read(from)
            .map_err(|e| WeirError::io(format!("reading {}", from.display()), e))?;
        self.put(path, &bytes)?;
        Ok((bytes.len() as u64, xxhash_rust::xxh3::xxh3_64(&bytes)))
    }
    /// Copies `path` to the local file `to`; returns its length and xxh3.
    fn get_file(&self, path: &str, to: &Path) -> Result<(u64, u64)> {
        let bytes = self.get(path)?;
        std::fs::write(to, &bytes)
            .map_err(|e| WeirError::io(format!("writing {}", to.display()), e))?;
        Ok((bytes.len() as u64, xxhash_rust::xxh3::xxh3_64(&bytes)))
    }
    /// The length and xxh3 of `path` (verifying a checkpoint).
    fn checksum(&self, path: &str) -> Result<(u64, u64)> {
        let bytes = self.get(path)?;
        Ok((bytes.len() as u64, xxhash_rust::xxh3::xxh3_64(&bytes)))
    }
}

/// Builds a storage from a location URL (`s3://bucket/prefix`).
pub type StorageConstructor = Arc<dyn Fn(&str) -> Result<Arc<dyn CheckpointStorage>> + Send + Sync>;

fn registry() -> &'static RwLock<BTreeMap<String, StorageConstructor>> {
    static R: OnceLock<RwLock<BTreeMap<String, StorageConstructor>>> = OnceLock::new();
    R.get_or_init(Default::default)
}

/// Makes checkpoint locations `SCHEME://…` build their storage with `ctor` (given the whole
/// URL). Storage crates call it (`weir_object_store::register()` adds `s3`), so that the
/// runtime and the API crate do not depend on their clients at compile time.
pub fn register_storage(scheme: &str, ctor: StorageConstructor) {
    registry()
        .write()
        .expect("storage registry")
        .insert(scheme.to_ascii_lowercase(), ctor);
}

/// The storage at `location` (`--checkpoint-dir`): `SCHEME://…` for a registered scheme,
/// `file://DIR` or a plain path for a local directory.
pub fn storage_from_location(location: &str) -> Result<Arc<dyn CheckpointStorage>> {
    let Some((scheme, rest)) = location.split_once("://") else {
        return Ok(Arc::new(LocalStorage::new(location)?));
    };
    if scheme == "file" {
        return Ok(Arc::new(LocalStorage::new(rest)?));
    }
    let ctor = registry()
        .read()
        .expect("storage registry")
        .get(&scheme.to_ascii_lowercase())
        .cloned();
    match ctor {
        Some(c) => c(location),
        None => {
            let mut known = vec!["file".to_string()];
            known.extend(registry().read().expect("storage registry").keys().cloned());
            let hint = if scheme == "s3" {
                " ('s3' is in the weir-object-store crate: call weir_object_store::register() before parsing options)"
            } else {
                ""
            };
            Err(WeirError::Config(format!(
                "unknown checkpoint storage scheme '{scheme}://' in {location} (available: {}, or a local path){hint}",
                known.join(", ")
            )))
        }
    }
}

/// Copies `from` to `to` in blocks, hashing as it goes: (length, xxh3).
fn copy_hashing(from: &mut impl Read, to: Option<&mut dyn Write>) -> std::io::Result<(u64, u64)> {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    let mut to = to;
    loop {
        let k = from.read(&mut buf)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        if let Some(w) = to.as_mut() {
            w.write_all(&buf[..k])?;
        }
        n += k as u64;
    }
    Ok((n, h.digest()))
}

/// Checkpoint storage as a [`FileSource`] for restoring native snapshots.
#[derive(Clone)]
pub struct StorageFiles(pub Arc<dyn CheckpointStorage>);

impl std::fmt::Debug for StorageFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StorageFiles({})", self.0.describe())
    }
}

impl FileSource for StorageFiles {
    fn fetch(&self, path: &str, to: &Path) -> std::result::Result<(u64, u64), String> {
        self.0.get_file(path, to).map_err(|e| e.to_string())
    }
}

/// Checkpoints in a local directory.
#[derive(Debug, Clone)]
pub struct LocalStorage {
    root: PathBuf,
}

impl LocalStorage {
    /// Checkpoints under `root` (created if missing).
    pub fn new(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        std::fs::create_dir_all(&root).map_err(|e| {
            WeirError::io(
                format!("creating checkpoint directory {}", root.display()),
                e,
            )
        })?;
        Ok(LocalStorage { root })
    }
}

impl CheckpointStorage for LocalStorage {
    fn put(&self, path: &str, bytes: &[u8]) -> Result<()> {
        let full = self.root.join(path);
        if let Some(dir) = full.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| WeirError::io(format!("creating {}", dir.display()), e))?;
        }
        let tmp = full.with_extension("inprogress");
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &full)?;
            if let Some(dir) = full.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        };
        write().map_err(|e| WeirError::io(format!("writing {}", full.display()), e))
    }
    fn get(&self, path: &str) -> Result<Vec<u8>> {
        let full = self.root.join(path);
        std::fs::read(&full).map_err(|e| WeirError::io(format!("reading {}", full.display()), e))
    }
    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let dir = self.root.join(prefix);
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(WeirError::io(format!("listing {}", dir.display()), e)),
        };
        let mut v: Vec<String> = rd
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        Ok(v)
    }
    fn delete_prefix(&self, prefix: &str) -> Result<()> {
        let p = self.root.join(prefix);
        match std::fs::remove_dir_all(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(WeirError::io(format!("deleting {}", p.display()), e)),
        }
    }
    fn describe(&self) -> String {
        self.root.display().to_string()
    }
    fn delete(&self, path: &str) -> Result<()> {
        let p = self.root.join(path);
        match std::fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(WeirError::io(format!("deleting {}", p.display()), e)),
        }
    }
    fn put_file(&self, path: &str, from: &Path) -> Result<(u64, u64)> {
        let full = self.root.join(path);
        if let Some(dir) = full.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| WeirError::io(format!("creating {}", dir.display()), e))?;
        }
        let tmp = full.with_extension("inprogress");
        let write = || -> std::io::Result<(u64, u64)> {
            let mut src = std::fs::File::open(from)?;
            let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
            let r = copy_hashing(&mut src, Some(&mut f))?;
            f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            std::fs::rename(&tmp, &full)?;
            if let Some(dir) = full.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(r)
        };
        write().map_err(|e| {
            WeirError::io(
                format!("copying {} to {}", from.display(), full.display()),
                e,
            )
        })
    }
    fn get_file(&self, path: &str, to: &Path) -> Result<(u64, u64)> {
        let full = self.root.join(path);
        let copy = || -> std::io::Result<(u64, u64)> {
            let mut src = std::fs::File::open(&full)?;
            let mut f = std::io::BufWriter::new(std::fs::File::create(to)?);
            let r = copy_hashing(&mut src, Some(&mut f))?;
            f.flush()?;
            Ok(r)
        };
        copy().map_err(|e| {
            WeirError::io(format!("copying {} to {}", full.display(), to.display()), e)
        })
    }
    fn checksum(&self, path: &str) -> Result<(u64, u64)> {
        let full = self.root.join(path);
        std::fs::File::open(&full)
            .and_then(|mut f| copy_hashing(&mut f, None))
            .map_err(|e| WeirError::io(format!("reading {}", full.display()), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_pick_their_storage_by_scheme() {
        let dir = std::env::temp_dir().join(format!("weir-storage-loc-{}", std::process::id()));
        let plain = storage_from_location(&dir.to_string_lossy()).unwrap();
        plain.put("a/b", b"x").unwrap();
        let file = storage_from_location(&format!("file://{}", dir.display())).unwrap();
        assert_eq!(file.get("a/b").unwrap(), b"x");
        let e = storage_from_location("s3://bucket/p")
            .unwrap_err()
            .to_string();
        assert!(e.contains("weir_object_store::register()"), "{e}");
        register_storage(
            "mem-test",
            Arc::new(move |url: &str| {
                let rest = url.split_once("://").unwrap().1.to_string();
                let s: Arc<dyn CheckpointStorage> =
                    Arc::new(LocalStorage::new(std::env::temp_dir().join(rest))?);
                Ok(s)
            }),
        );
        let named = format!("weir-storage-loc-{}", std::process::id());
        let custom = storage_from_location(&format!("MEM-TEST://{named}")).unwrap();
        assert_eq!(custom.get("a/b").unwrap(), b"x");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
