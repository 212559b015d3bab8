//! Where checkpoints live. Every file is written whole (write to a temporary name, then rename)
//! and carries a checksum in the manifest.
use std::path::{Path, PathBuf};
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
}
