//! The working directory of a job: made on first use, deleted when the job ends; directories
//! that killed processes left behind are deleted when the next one starts.
//!
//! ```text
//! <base>/weir-state-<pid>-<n>/
//!   db/<uid>-<subtask>-<instance>/     a live RocksDB instance (deleted when it closes)
//!   snapshots/<instance>-<checkpoint>/ a checkpoint's hard links, until uploaded
//!   base/<instance>-<n>/               links of the files of the last materialized checkpoint
//!                                      not yet known to be in storage, and the changelog
//!                                      pieces since (the store's, until the next one)
//!   read/<instance>-<n>/               files fetched to read a snapshot (rescaling)
//! ```
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

const PREFIX: &str = "weir-state-";

/// A number unique in the process.
pub(crate) fn next_id() -> u64 {
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// An id unique across processes and time: names a store instance, whose files' names are
/// unique only within it.
pub(crate) fn instance_id() -> String {
    static PROCESS: OnceLock<u64> = OnceLock::new();
    let p = PROCESS.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let mut seed = std::process::id().to_le_bytes().to_vec();
        seed.extend_from_slice(&nanos.to_le_bytes());
        xxhash_rust::xxh3::xxh3_64(&seed)
    });
    format!("{p:016x}{:06x}", next_id())
}

pub(crate) struct WorkDir {
    base: Option<PathBuf>,
    current: Mutex<Option<PathBuf>>,
}

impl WorkDir {
    pub(crate) fn new(base: Option<PathBuf>) -> Self {
        WorkDir {
            base,
            current: Mutex::new(None),
        }
    }

    /// The job's directory, made if needed.
    pub(crate) fn get(&self) -> Result<PathBuf, String> {
        let mut cur = self.current.lock().expect("workdir");
        if let Some(p) = &*cur {
            return Ok(p.clone());
        }
        let base = self.base.clone().unwrap_or_else(std::env::temp_dir);
        std::fs::create_dir_all(&base).map_err(|e| format!("creating {}: {e}", base.display()))?;
        clean_stale(&base);
        let p = base.join(format!("{PREFIX}{}-{}", std::process::id(), next_id()));
        std::fs::create_dir_all(&p).map_err(|e| format!("creating {}: {e}", p.display()))?;
        *cur = Some(p.clone());
        Ok(p)
    }

    pub(crate) fn current(&self) -> Option<PathBuf> {
        self.current.lock().expect("workdir").clone()
    }

    /// Deletes the job's directory.
    pub(crate) fn job_ended(&self) {
        if let Some(p) = self.current.lock().expect("workdir").take() {
            remove(&p);
        }
    }
}

pub(crate) fn remove(p: &Path) {
    if let Err(e) = std::fs::remove_dir_all(p) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!("could not delete {}: {e}", p.display());
        }
    }
}

/// Deletes `weir-state-<pid>-<n>` directories of processes that no longer run (Linux only:
/// elsewhere nothing says whether a pid is alive).
fn clean_stale(base: &Path) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(rd) = std::fs::read_dir(base) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new("/proc").join(pid.to_string()).exists() {
            tracing::info!("deleting {}, left by process {pid}", e.path().display());
            remove(&e.path());
        }
    }
}
