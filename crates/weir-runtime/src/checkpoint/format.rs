//! The on-storage layout of a checkpoint, and loading it back.
//!
//! ```text
//! chk-0000000042/
//!   <uid>/<subtask>.state     postcard(OperatorSnapshot), one per operator subtask with state
//!   <uid>/<subtask>/<name>    private files of a native snapshot (RocksDB's MANIFEST, OPTIONS)
//!   _manifest                 JSON, written last: operators, parallelism, files, checksums
//! shared/<uid>/<instance>-<name>
//!                             immutable files of native snapshots (SST files), uploaded once
//!                             and used by every checkpoint whose manifest lists them
//! ```
//!
//! A checkpoint directory without a manifest is incomplete and ignored; a file (state, private
//! or shared) that is missing or whose length or xxh3 does not match the manifest makes the
//! checkpoint corrupted, and loading falls back to the previous retained one. A shared file is
//! deleted once no retained checkpoint or savepoint lists it (reference counting by manifest).
use super::storage::CheckpointStorage;
use super::{NativeSnapshot, OperatorSnapshot, RestoredState, SubtaskId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use weir_types::keygroup::key_group_range;
use weir_types::{Result, WeirError};

/// One state file in a manifest.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FileEntry {
    /// Subtask index.
    pub subtask: usize,
    /// Path relative to the storage root.
    pub path: String,
    /// Length in bytes.
    pub bytes: u64,
    /// xxh3 of the content.
    pub xxh3: u64,
}

/// An operator in a manifest.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct OperatorEntry {
    /// Parallelism when checkpointed.
    pub parallelism: usize,
    /// Its state files.
    pub files: Vec<FileEntry>,
    /// The files of its native snapshots that this checkpoint uses: its own private ones and
    /// shared ones (`shared/…`), which may have been uploaded by earlier checkpoints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub native_files: Vec<FileEntry>,
}

/// The manifest: the checkpoint exists once it is written.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    /// Checkpoint id.
    pub id: u64,
    /// Trigger time, ms since the epoch.
    pub ts_ms: i64,
    /// Key groups of the job.
    pub max_parallelism: usize,
    /// Operators by uid.
    pub operators: BTreeMap<String, OperatorEntry>,
    /// Whether it is a savepoint (kept until deleted by hand).
    #[serde(default)]
    pub savepoint: bool,
    /// Bytes this checkpoint wrote to storage: its state files, private files and the shared
    /// files no earlier checkpoint had uploaded.
    #[serde(default)]
    pub uploaded_bytes: u64,
}

impl Manifest {
    /// Bytes of every file the checkpoint uses (its full size, shared files included).
    pub fn total_bytes(&self) -> u64 {
        self.operators
            .values()
            .flat_map(|o| o.files.iter().chain(&o.native_files))
            .map(|f| f.bytes)
            .sum()
    }

    /// Paths of the shared files it uses.
    pub fn shared_paths(&self) -> impl Iterator<Item = &str> {
        self.operators
            .values()
            .flat_map(|o| o.native_files.iter())
            .map(|f| f.path.as_str())
            .filter(|p| p.starts_with(SHARED_DIR))
    }
}

/// Where shared files of native snapshots live, under the storage root.
pub const SHARED_DIR: &str = "shared/";

/// Shared files that a coordinator uploaded, by (store instance, file name): later
/// checkpoints reference them instead of uploading them again.
#[derive(Debug, Default)]
pub struct Uploads {
    files: HashMap<(String, String), FileEntry>,
}

/// Fills in where each file of `n` is in storage, uploading what is not there yet: shared
/// files once (then referenced), private files into checkpoint directory `dir`. Returns the
/// bytes written.
fn upload_native(
    storage: &dyn CheckpointStorage,
    dir: &str,
    sid: &SubtaskId,
    n: &mut NativeSnapshot,
    uploads: &Uploads,
    used: &mut Uploads,
) -> Result<u64> {
    let mut written = 0;
    for f in &mut n.files {
        let key = (n.instance.clone(), f.name.clone());
        if f.path.is_some() {
            // Restored from storage and unchanged since: already there.
        } else if let Some(u) = uploads.files.get(&key).filter(|_| f.shared) {
            f.path = Some(u.path.clone());
            f.bytes = u.bytes;
            f.xxh3 = u.xxh3;
        } else {
            let local = n.local_dir.as_deref().ok_or_else(|| {
                WeirError::Internal(format!(
                    "native snapshot of {}#{}: file {} is neither uploaded nor local",
                    sid.uid, sid.subtask, f.name
                ))
            })?;
            let path = if f.shared {
                format!("{SHARED_DIR}{}/{}-{}", safe(&sid.uid), n.instance, f.name)
            } else {
                format!("{dir}/{}/{}/{}", safe(&sid.uid), sid.subtask, f.name)
            };
            let (bytes, xxh3) =
                storage.put_file(&path, &std::path::Path::new(local).join(&f.name))?;
            written += bytes;
            f.path = Some(path);
            f.bytes = bytes;
            f.xxh3 = xxh3;
        }
        if f.shared {
            used.files.insert(
                key,
                FileEntry {
                    subtask: sid.subtask,
                    path: f.path.clone().expect("set above"),
                    bytes: f.bytes,
                    xxh3: f.xxh3,
                },
            );
        }
    }
    n.local_dir = None;
    Ok(written)
}

/// The directory name of checkpoint `id`.
pub fn checkpoint_dir(id: u64) -> String {
    format!("chk-{id:010}")
}

fn safe(uid: &str) -> String {
    uid.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// How a state file (`*.state`: an [`OperatorSnapshot`]) is stored. Reading takes either:
/// a file starting with the Snappy frame format's stream identifier is decompressed first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SnapshotCompression {
    /// The encoded snapshot as it is.
    None,
    /// The Snappy frame format (`snap`): checksummed 64 KiB blocks. Heap state typically
    /// shrinks 3–4× (small integers, repeated layouts), so a checkpoint writes that much less
    /// to disk or object storage, for about 2 ms of the asynchronous part's CPU per MB.
    #[default]
    Snappy,
}

impl SnapshotCompression {
    /// `none` or `snappy`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "none" => Ok(SnapshotCompression::None),
            "snappy" => Ok(SnapshotCompression::Snappy),
            other => Err(WeirError::Config(format!(
                "--checkpoint-compression takes none or snappy, not '{other}'"
            ))),
        }
    }
}

/// The Snappy frame format's stream identifier, which every compressed state file starts with.
const SNAPPY_STREAM: &[u8] = b"\xff\x06\x00\x00sNaPpY";

/// The bytes of a state file holding `encoded` (an encoded [`OperatorSnapshot`]).
fn state_file(encoded: Vec<u8>, compression: SnapshotCompression) -> Result<Vec<u8>> {
    match compression {
        SnapshotCompression::None => Ok(encoded),
        SnapshotCompression::Snappy => {
            use std::io::Write;
            let mut enc =
                snap::write::FrameEncoder::new(Vec::with_capacity(encoded.len() / 3 + 64));
            enc.write_all(&encoded)
                .map_err(|e| WeirError::Internal(format!("compressing a snapshot: {e}")))?;
            enc.into_inner()
                .map_err(|e| WeirError::Internal(format!("compressing a snapshot: {e}")))
        }
    }
}

/// Decodes a state file, compressed ([`SnapshotCompression::Snappy`]) or not.
pub fn decode_state_file(bytes: &[u8]) -> std::result::Result<OperatorSnapshot, String> {
    if bytes.starts_with(SNAPPY_STREAM) {
        use std::io::Read;
        let mut raw = Vec::with_capacity(bytes.len().saturating_mul(3));
        let unpacked = snap::read::FrameDecoder::new(bytes).read_to_end(&mut raw);
        match unpacked {
            Ok(_) => return OperatorSnapshot::decode(&raw).map_err(|e| e.to_string()),
            // (An uncompressed snapshot could in principle start with the same bytes.)
            Err(e) => {
                return OperatorSnapshot::decode(bytes)
                    .map_err(|_| format!("decompressing (snappy): {e}"))
            }
        }
    }
    OperatorSnapshot::decode(bytes).map_err(|e| e.to_string())
}

/// Writes checkpoint `id`'s state files (stored as `compression` says; uploading native
/// snapshots' files not in `uploads` yet), then its manifest, under `dir`. `uploads` then holds
/// the shared files this checkpoint uses.
#[allow(clippy::too_many_arguments)]
pub fn write_checkpoint(
    storage: &dyn CheckpointStorage,
    dir: &str,
    id: u64,
    ts_ms: i64,
    max_parallelism: usize,
    parallelism: &BTreeMap<String, usize>,
    snapshots: &BTreeMap<SubtaskId, OperatorSnapshot>,
    savepoint: bool,
    uploads: &mut Uploads,
    compression: SnapshotCompression,
) -> Result<Manifest> {
    let mut operators: BTreeMap<String, OperatorEntry> = parallelism
        .iter()
        .map(|(u, p)| {
            (
                u.clone(),
                OperatorEntry {
                    parallelism: *p,
                    ..Default::default()
                },
            )
        })
        .collect();
    let mut uploaded_bytes = 0;
    let mut used = Uploads::default();
    for (sid, snap) in snapshots {
        // A copy only where something is filled in: deferred serialization (the coordinator
        // has usually run it already, its asynchronous part) or uploaded native files.
        let mut written = std::borrow::Cow::Borrowed(snap);
        if snap.deferred.0.is_some() {
            written.to_mut().resolve();
        }
        if written.is_empty() {
            continue;
        }
        if written.native.is_some() {
            let n = written.to_mut().native.as_mut().expect("native");
            uploaded_bytes += upload_native(storage, dir, sid, n, uploads, &mut used)?;
        }
        let entry = operators.entry(sid.uid.clone()).or_default();
        for f in written.native.iter().flat_map(|n| &n.files) {
            entry.native_files.push(FileEntry {
                subtask: sid.subtask,
                path: f.path.clone().expect("uploaded"),
                bytes: f.bytes,
                xxh3: f.xxh3,
            });
        }
        let bytes = postcard::to_allocvec(&*written)
            .map_err(|e| WeirError::Internal(format!("encoding a snapshot: {e}")))?;
        let bytes = state_file(bytes, compression)?;
        let path = format!("{dir}/{}/{}.state", safe(&sid.uid), sid.subtask);
        storage.put(&path, &bytes)?;
        uploaded_bytes += bytes.len() as u64;
        entry.files.push(FileEntry {
            subtask: sid.subtask,
            path,
            bytes: bytes.len() as u64,
            xxh3: xxhash_rust::xxh3::xxh3_64(&bytes),
        });
    }
    let manifest = Manifest {
        id,
        ts_ms,
        max_parallelism,
        operators,
        savepoint,
        uploaded_bytes,
    };
    let mut json =
        serde_json::to_vec_pretty(&manifest).map_err(|e| WeirError::Internal(e.to_string()))?;
    // The manifest checks itself too: a last line with the xxh3 of the JSON above it.
    let sum = xxhash_rust::xxh3::xxh3_64(&json);
    json.extend_from_slice(format!("\nxxh3:{sum:016x}\n").as_bytes());
    storage.put(&format!("{dir}/_manifest"), &json)?;
    if savepoint {
        // A savepoint is canonical but for finished tasks: the latest checkpoint's shared files
        // stay in use (and retained) for the next one.
        uploads.files.extend(used.files);
    } else {
        *uploads = used;
    }
    Ok(manifest)
}

/// Parses a manifest and checks its own checksum line.
pub fn parse_manifest(raw: &[u8]) -> std::result::Result<Manifest, String> {
    let text = std::str::from_utf8(raw).map_err(|_| "the manifest is not UTF-8".to_string())?;
    let (json, tail) = text
        .rsplit_once("\nxxh3:")
        .ok_or("the manifest has no checksum line (truncated?)")?;
    let sum = u64::from_str_radix(tail.trim(), 16)
        .map_err(|_| "the manifest's checksum line is damaged".to_string())?;
    if xxhash_rust::xxh3::xxh3_64(json.as_bytes()) != sum {
        return Err("the manifest does not match its checksum (damaged)".into());
    }
    serde_json::from_str(json).map_err(|e| format!("unreadable manifest: {e}"))
}

/// A checkpoint read back and verified.
#[derive(Clone, Debug)]
pub struct LoadedCheckpoint {
    /// Its manifest.
    pub manifest: Manifest,
    /// Its directory.
    pub dir: String,
    /// Every operator subtask's snapshot.
    pub snapshots: BTreeMap<SubtaskId, OperatorSnapshot>,
}

impl LoadedCheckpoint {
    /// The state of operator `uid` for subtask `subtask` of `parallelism`: the key groups it
    /// owns (from whichever old subtasks held them) and every non-keyed entry.
    pub fn restore_for(
        &self,
        uid: &str,
        subtask: usize,
        parallelism: usize,
    ) -> Option<RestoredState> {
        let range = key_group_range(subtask, parallelism, self.manifest.max_parallelism);
        let mut out = RestoredState {
            checkpoint_id: self.manifest.id,
            ..Default::default()
        };
        let mut any = false;
        for (sid, snap) in self.snapshots.range(
            SubtaskId {
                uid: uid.to_string(),
                subtask: 0,
            }..,
        ) {
            if sid.uid != uid {
                break;
            }
            any = true;
            out.keyed.extend(
                snap.keyed
                    .iter()
                    .filter(|(kg, _)| range.contains(&(*kg as usize)))
                    .cloned(),
            );
            out.native.extend(
                snap.native
                    .iter()
                    .filter(|n| {
                        (n.key_groups.0 as usize) < range.end
                            && range.start < n.key_groups.1 as usize
                    })
                    .cloned(),
            );
            out.operator.extend(snap.operator.iter().cloned());
        }
        out.keyed.sort_by_key(|(kg, _)| *kg);
        any.then_some(out)
    }

    /// Everything two-phase sinks pre-committed in this checkpoint.
    pub fn pending_commits(&self) -> Vec<(String, Vec<u8>)> {
        self.snapshots
            .iter()
            .flat_map(|(sid, s)| {
                s.pending_commit
                    .iter()
                    .map(|p| (sid.uid.clone(), p.clone()))
            })
            .collect()
    }
}

/// Reads and verifies checkpoint directory `dir`.
pub fn load_checkpoint(storage: &dyn CheckpointStorage, dir: &str) -> Result<LoadedCheckpoint> {
    let raw = storage.get(&format!("{dir}/_manifest")).map_err(|e| {
        WeirError::Config(format!(
            "checkpoint {dir} has no manifest (incomplete): {e}"
        ))
    })?;
    let manifest =
        parse_manifest(&raw).map_err(|e| WeirError::Config(format!("checkpoint {dir}: {e}")))?;
    let mut snapshots = BTreeMap::new();
    for (uid, op) in &manifest.operators {
        for f in &op.files {
            let bytes = storage.get(&f.path)?;
            if bytes.len() as u64 != f.bytes || xxhash_rust::xxh3::xxh3_64(&bytes) != f.xxh3 {
                return Err(WeirError::Config(format!(
                    "checkpoint {dir} is corrupted: {} has {} bytes and a checksum that do not match the manifest",
                    f.path,
                    bytes.len()
                )));
            }
            let snap = decode_state_file(&bytes)
                .map_err(|e| WeirError::Config(format!("checkpoint {dir}: {}: {e}", f.path)))?;
            snapshots.insert(
                SubtaskId {
                    uid: uid.clone(),
                    subtask: f.subtask,
                },
                snap,
            );
        }
    }
    // Native files (shared ones included): present and intact, read in full (streamed).
    for f in manifest.operators.values().flat_map(|o| &o.native_files) {
        match storage.checksum(&f.path) {
            Ok((bytes, xxh3)) if bytes == f.bytes && xxh3 == f.xxh3 => {}
            Ok((bytes, _)) => {
                return Err(WeirError::Config(format!(
                    "checkpoint {dir} is corrupted: {} has {bytes} bytes and a checksum that do not match the manifest",
                    f.path
                )))
            }
            Err(e) => {
                return Err(WeirError::Config(format!(
                    "checkpoint {dir} is corrupted: {} is missing or unreadable: {e}",
                    f.path
                )))
            }
        }
    }
    Ok(LoadedCheckpoint {
        manifest,
        dir: dir.to_string(),
        snapshots,
    })
}

/// The checkpoint directories under the storage root, newest first.
pub fn list_checkpoints(storage: &dyn CheckpointStorage) -> Result<Vec<String>> {
    let mut v: Vec<String> = storage
        .list("")?
        .into_iter()
        .filter(|n| n.starts_with("chk-"))
        .collect();
    v.sort();
    v.reverse();
    Ok(v)
}

/// The id of checkpoint directory `dir` (`chk-N`), if it is one.
pub fn checkpoint_id(dir: &str) -> Option<u64> {
    dir.strip_prefix("chk-")?.parse().ok()
}

/// The newest checkpoint that is complete and intact; older ones are tried when a newer one is
/// incomplete or corrupted, and each such fall-back is logged.
pub fn load_latest(storage: &dyn CheckpointStorage) -> Result<Option<LoadedCheckpoint>> {
    load_latest_where(storage, |_| true)
}

/// As [`load_latest`], among the checkpoints whose id satisfies `keep`.
pub fn load_latest_where(
    storage: &dyn CheckpointStorage,
    keep: impl Fn(u64) -> bool,
) -> Result<Option<LoadedCheckpoint>> {
    for dir in list_checkpoints(storage)? {
        if !checkpoint_id(&dir).is_some_and(&keep) {
            continue;
        }
        match load_checkpoint(storage, &dir) {
            Ok(c) => return Ok(Some(c)),
            Err(e) => tracing::warn!(
                "skipping checkpoint {dir} in {}: {e}; falling back to the previous one",
                storage.describe()
            ),
        }
    }
    Ok(None)
}

/// Deletes complete checkpoints beyond the newest `retained` (savepoints are kept), and
/// incomplete ones older than the newest complete one; then the shared files that no remaining
/// checkpoint or savepoint lists. Returns the shared files deleted.
///
/// Only the coordinator calls it, between checkpoints: no upload is in progress then.
pub fn retain(storage: &dyn CheckpointStorage, retained: usize) -> Result<usize> {
    let mut complete = 0;
    let mut referenced: HashSet<String> = HashSet::new();
    for dir in list_checkpoints(storage)? {
        let manifest = storage
            .get(&format!("{dir}/_manifest"))
            .ok()
            .and_then(|m| parse_manifest(&m).ok());
        match manifest {
            Some(m) if m.savepoint => referenced.extend(m.shared_paths().map(String::from)),
            Some(m) => {
                complete += 1;
                if complete > retained.max(1) {
                    storage.delete_prefix(&dir)?;
                } else {
                    referenced.extend(m.shared_paths().map(String::from));
                }
            }
            None if complete > 0 => storage.delete_prefix(&dir)?,
            None => {}
        }
    }
    for dir in storage.list("")? {
        if dir.starts_with("savepoint-") {
            if let Some(m) = storage
                .get(&format!("{dir}/_manifest"))
                .ok()
                .and_then(|m| parse_manifest(&m).ok())
            {
                referenced.extend(m.shared_paths().map(String::from));
            }
        }
    }
    let mut deleted = 0;
    for owner in storage.list(SHARED_DIR.trim_end_matches('/'))? {
        for name in storage.list(&format!("{SHARED_DIR}{owner}"))? {
            let path = format!("{SHARED_DIR}{owner}/{name}");
            if !referenced.contains(&path) {
                storage.delete(&path)?;
                deleted += 1;
            }
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::storage::LocalStorage;
    use weir_state::native::NativeFile;

    #[test]
    fn a_damaged_manifest_is_detected_and_skipped() {
        let dir = std::env::temp_dir().join(format!("weir-manifest-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let st = LocalStorage::new(&dir).unwrap();
        let p: BTreeMap<String, usize> = [("op".to_string(), 1)].into();
        let mut snaps = BTreeMap::new();
        snaps.insert(
            SubtaskId {
                uid: "op".into(),
                subtask: 0,
            },
            OperatorSnapshot {
                operator: vec![vec![1, 2, 3]],
                ..Default::default()
            },
        );
        write_checkpoint(
            &st,
            &checkpoint_dir(1),
            1,
            10,
            128,
            &p,
            &snaps,
            false,
            &mut Uploads::default(),
            SnapshotCompression::default(),
        )
        .unwrap();
        write_checkpoint(
            &st,
            &checkpoint_dir(2),
            2,
            20,
            128,
            &p,
            &snaps,
            false,
            &mut Uploads::default(),
            SnapshotCompression::default(),
        )
        .unwrap();
        assert_eq!(load_latest(&st).unwrap().unwrap().manifest.id, 2);
        // Flip a digit of a field no file checksum covers: the manifest's own checksum catches it.
        let path = dir.join(checkpoint_dir(2)).join("_manifest");
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("\"ts_ms\": 20", "\"ts_ms\": 21");
        std::fs::write(&path, text).unwrap();
        assert!(load_checkpoint(&st, &checkpoint_dir(2))
            .unwrap_err()
            .to_string()
            .contains("checksum"));
        assert_eq!(
            load_latest(&st).unwrap().unwrap().manifest.id,
            1,
            "falls back to the previous one"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn state_files_are_read_compressed_or_not() {
        let dir = std::env::temp_dir().join(format!("weir-compress-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let st = LocalStorage::new(&dir).unwrap();
        let p: BTreeMap<String, usize> = [("op".to_string(), 1)].into();
        let sid = SubtaskId {
            uid: "op".into(),
            subtask: 0,
        };
        // Heap-state-like bytes: small integers in repeated layouts.
        let keyed: Vec<(u32, Vec<u8>)> = (0..16u32)
            .map(|kg| {
                (
                    kg,
                    (0..20_000u32)
                        .flat_map(|i| [(i % 7) as u8, 0, 0, 1])
                        .collect(),
                )
            })
            .collect();
        let snap = OperatorSnapshot {
            keyed,
            operator: vec![vec![1, 2, 3]],
            ..Default::default()
        };
        let snaps = BTreeMap::from([(sid.clone(), snap.clone())]);
        let mut sizes = Vec::new();
        for (id, c) in [
            (1, SnapshotCompression::None),
            (2, SnapshotCompression::Snappy),
        ] {
            let m = write_checkpoint(
                &st,
                &checkpoint_dir(id),
                id,
                0,
                128,
                &p,
                &snaps,
                false,
                &mut Uploads::default(),
                c,
            )
            .unwrap();
            let f = &m.operators["op"].files[0];
            let raw = st.get(&f.path).unwrap();
            assert_eq!(
                raw.starts_with(SNAPPY_STREAM),
                c == SnapshotCompression::Snappy
            );
            sizes.push(f.bytes);
            let back = load_checkpoint(&st, &checkpoint_dir(id)).unwrap();
            let got = &back.snapshots[&sid];
            assert_eq!(got.keyed, snap.keyed, "{c:?}");
            assert_eq!(got.operator, snap.operator, "{c:?}");
        }
        assert!(
            sizes[1] * 3 < sizes[0],
            "compressed {} of {} bytes",
            sizes[1],
            sizes[0]
        );
        // A damaged compressed file: a clear error (the manifest's checksum is bypassed here).
        let f = st
            .get(&format!("{}/op/0.state", checkpoint_dir(2)))
            .unwrap();
        let mut bad = f.clone();
        let n = bad.len();
        bad[n / 2] ^= 0x55;
        let e = decode_state_file(&bad).unwrap_err();
        assert!(e.contains("snappy"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A native snapshot of files `names` (each `len` bytes of `fill`) in a fresh local dir.
    fn native(dir: &std::path::Path, names: &[(&str, u8)]) -> NativeSnapshot {
        let local = dir.join(format!("local-{}", names.len()));
        std::fs::create_dir_all(&local).unwrap();
        let mut files = Vec::new();
        for (n, fill) in names {
            std::fs::write(local.join(n), vec![*fill; 1000]).unwrap();
            files.push(NativeFile {
                name: n.to_string(),
                shared: n.ends_with(".sst"),
                bytes: 1000,
                path: None,
                xxh3: 0,
            });
        }
        NativeSnapshot {
            format: "test".into(),
            instance: "i1".into(),
            key_groups: (0, 128),
            max_parallelism: 128,
            tables: vec![],
            files,
            local_dir: Some(local.to_string_lossy().into_owned()),
        }
    }

    fn write(
        s: &LocalStorage,
        id: u64,
        n: NativeSnapshot,
        uploads: &mut Uploads,
    ) -> Result<Manifest> {
        let snaps = BTreeMap::from([(
            SubtaskId {
                uid: "op".into(),
                subtask: 0,
            },
            OperatorSnapshot {
                native: Some(n),
                ..Default::default()
            },
        )]);
        let p = BTreeMap::from([("op".to_string(), 1)]);
        write_checkpoint(
            s,
            &checkpoint_dir(id),
            id,
            0,
            128,
            &p,
            &snaps,
            false,
            uploads,
            SnapshotCompression::default(),
        )
    }

    #[test]
    fn shared_files_are_uploaded_once_and_deleted_when_no_checkpoint_uses_them() {
        let root = tempfile_dir("shared");
        let s = LocalStorage::new(root.join("chk")).unwrap();
        let mut up = Uploads::default();
        let m1 = write(
            &s,
            1,
            native(&root, &[("1.sst", 1), ("2.sst", 2), ("MANIFEST", 9)]),
            &mut up,
        )
        .unwrap();
        assert_eq!(m1.total_bytes(), 3000 + m1.operators["op"].files[0].bytes);
        assert!(
            m1.uploaded_bytes > 3000,
            "all three files and the state file"
        );
        // 1.sst was compacted away; 2.sst is still used; 3.sst is new.
        let m2 = write(
            &s,
            2,
            native(&root, &[("2.sst", 2), ("3.sst", 3), ("MANIFEST", 8)]),
            &mut up,
        )
        .unwrap();
        let state_file = m2.operators["op"].files[0].bytes;
        assert_eq!(
            m2.uploaded_bytes,
            2000 + state_file,
            "3.sst and the private file only"
        );
        let used2: Vec<&str> = m2.shared_paths().collect();
        assert_eq!(used2.len(), 2);
        assert!(used2.iter().any(|p| p.ends_with("i1-2.sst")));
        // Both retained: nothing deleted. One retained: 1.sst goes with checkpoint 1.
        assert_eq!(retain(&s, 2).unwrap(), 0);
        assert_eq!(retain(&s, 1).unwrap(), 1);
        assert!(s.get("shared/op/i1-1.sst").is_err());
        assert!(s.get("shared/op/i1-2.sst").is_ok());
        let loaded = load_checkpoint(&s, &checkpoint_dir(2)).unwrap();
        let n = loaded
            .snapshots
            .values()
            .next()
            .unwrap()
            .native
            .clone()
            .unwrap();
        assert!(n.local_dir.is_none() && n.files.iter().all(|f| f.path.is_some()));
        // An orphan (an upload whose checkpoint never completed) is deleted too.
        s.put("shared/op/orphan.sst", b"x").unwrap();
        assert_eq!(retain(&s, 1).unwrap(), 1);
        // A damaged shared file makes its checkpoint corrupted.
        s.put("shared/op/i1-3.sst", &[0u8; 1000]).unwrap();
        let err = load_checkpoint(&s, &checkpoint_dir(2))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("corrupted") && err.contains("i1-3.sst"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn a_savepoint_keeps_the_shared_files_it_lists() {
        let root = tempfile_dir("savepoint");
        let s = LocalStorage::new(root.join("chk")).unwrap();
        let mut up = Uploads::default();
        write(&s, 1, native(&root, &[("1.sst", 1), ("M", 9)]), &mut up).unwrap();
        // A drained savepoint (finished tasks' final snapshots are native) uses 1.sst too.
        let snaps = BTreeMap::from([(
            SubtaskId {
                uid: "op".into(),
                subtask: 0,
            },
            OperatorSnapshot {
                native: Some(native(&root, &[("1.sst", 1), ("M", 9)])),
                ..Default::default()
            },
        )]);
        let p = BTreeMap::from([("op".to_string(), 1)]);
        let sp = "savepoint-0000000002";
        let m = write_checkpoint(
            &s,
            sp,
            2,
            0,
            128,
            &p,
            &snaps,
            true,
            &mut up,
            SnapshotCompression::default(),
        )
        .unwrap();
        assert_eq!(m.shared_paths().collect::<Vec<_>>(), ["shared/op/i1-1.sst"]);
        // Checkpoint 3 no longer uses 1.sst, and checkpoint 1 is deleted: the savepoint keeps it.
        write(&s, 3, native(&root, &[("2.sst", 2), ("M", 8)]), &mut up).unwrap();
        assert_eq!(retain(&s, 1).unwrap(), 0);
        assert!(s.get(&format!("{}/_manifest", checkpoint_dir(1))).is_err());
        assert!(s.get("shared/op/i1-1.sst").is_ok());
        load_checkpoint(&s, sp).unwrap();
        // Once the savepoint is deleted by hand, so is the file.
        s.delete_prefix(sp).unwrap();
        assert_eq!(retain(&s, 1).unwrap(), 1);
        assert!(s.get("shared/op/i1-1.sst").is_err());
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn deferred_state_is_serialized_when_the_checkpoint_is_written() {
        let root = tempfile_dir("deferred");
        let s = LocalStorage::new(&root).unwrap();
        let snaps = BTreeMap::from([(
            SubtaskId {
                uid: "op".into(),
                subtask: 0,
            },
            OperatorSnapshot {
                keyed: vec![(7, vec![7])],
                deferred: crate::checkpoint::Deferred::new(Box::new(|| vec![(3, vec![1, 2])])),
                ..Default::default()
            },
        )]);
        let p = BTreeMap::from([("op".to_string(), 1)]);
        let dir = checkpoint_dir(1);
        write_checkpoint(
            &s,
            &dir,
            1,
            0,
            128,
            &p,
            &snaps,
            false,
            &mut Uploads::default(),
            SnapshotCompression::default(),
        )
        .unwrap();
        let loaded = load_checkpoint(&s, &dir).unwrap();
        let snap = loaded.snapshots.values().next().unwrap();
        assert_eq!(snap.keyed, vec![(3, vec![1, 2]), (7, vec![7])]);
        let _ = std::fs::remove_dir_all(&root);
    }

    fn tempfile_dir(name: &str) -> std::path::PathBuf {
        let d =
            std::env::temp_dir().join(format!("weir-format-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
