//! Incremental checkpoints at the level of one operator subtask's store and the checkpoint
//! format: what is uploaded, what restores, and what is detected when shared files are damaged.
use std::collections::BTreeMap;
use std::sync::Arc;
use weir_rocksdb::DiskBackendConfig;
use weir_runtime::checkpoint::format::{
    checkpoint_dir, load_checkpoint, load_latest, write_checkpoint, Manifest, SnapshotCompression,
    Uploads,
};
use weir_runtime::checkpoint::storage::{LocalStorage, StorageFiles};
use weir_runtime::checkpoint::{OperatorSnapshot, SubtaskId};
use weir_state::{KeyedStateStore, MemoryBackend, StateBackend, ValueState};
use weir_types::ManualClock;

const MAX_P: usize = 128;

/// 100 incompressible bytes for key `k` in version `v`.
fn value(k: u64, v: u64) -> Vec<u8> {
    let mut x = (k.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ v.wrapping_mul(0xD1B5_4A32_D192_ED03)) | 1;
    (0..100)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn store(backend: &dyn StateBackend, subtask: usize, p: usize) -> KeyedStateStore<u64> {
    KeyedStateStore::new(backend, Arc::new(ManualClock::new(0))).with_scope("op", subtask, p, MAX_P)
}

/// Takes checkpoint `id` of `s` (subtask 0 of 1) and writes it as the coordinator would.
fn checkpoint(
    s: &mut KeyedStateStore<u64>,
    id: u64,
    storage: &LocalStorage,
    uploads: &mut Uploads,
) -> Manifest {
    let snap = s.snapshot(id, true, vec![]).unwrap();
    let native = snap.native.clone();
    assert!(native.is_some(), "the disk backend snapshots natively");
    let mut snaps = BTreeMap::new();
    snaps.insert(
        SubtaskId {
            uid: "op".into(),
            subtask: 0,
        },
        OperatorSnapshot {
            keyed: (snap.deferred)(),
            native: snap.native,
            ..Default::default()
        },
    );
    let parallelism = BTreeMap::from([("op".to_string(), 1)]);
    let m = write_checkpoint(
        storage,
        &checkpoint_dir(id),
        id,
        0,
        MAX_P,
        &parallelism,
        &snaps,
        false,
        uploads,
        SnapshotCompression::default(),
    )
    .unwrap();
    native.unwrap().discard_local();
    m
}

/// Fills `keys` keys, checkpoints (1), changes every 100th key, checkpoints (2).
fn two_checkpoints(
    backend: &dyn StateBackend,
    keys: u64,
    storage: &LocalStorage,
) -> (Manifest, Manifest) {
    let mut s = store(backend, 0, 1);
    let v: ValueState<Vec<u8>> = ValueState::register(&mut s, "v").unwrap();
    for k in 0..keys {
        s.set_current_key(k);
        v.set(&mut s, value(k, 0));
    }
    let mut uploads = Uploads::default();
    let m1 = checkpoint(&mut s, 1, storage, &mut uploads);
    for k in (0..keys).step_by(100) {
        s.set_current_key(k);
        v.set(&mut s, value(k, 1));
    }
    let m2 = checkpoint(&mut s, 2, storage, &mut uploads);
    (m1, m2)
}

fn check_values(s: &mut KeyedStateStore<u64>, keys: impl Iterator<Item = u64>) -> usize {
    let v: ValueState<Vec<u8>> = ValueState::register(s, "v").unwrap();
    let mut n = 0;
    for k in keys {
        s.set_current_key(k);
        let want = value(k, u64::from(k.is_multiple_of(100)));
        assert_eq!(v.get(s), Some(want), "key {k}");
        n += 1;
    }
    n
}

#[test]
fn after_one_percent_of_keys_changed_a_checkpoint_uploads_under_five_percent() {
    let work = tempfile::tempdir().unwrap();
    let chk = tempfile::tempdir().unwrap();
    let storage = LocalStorage::new(chk.path()).unwrap();
    let backend = DiskBackendConfig {
        dir: Some(work.path().to_path_buf()),
        ..Default::default()
    }
    .build();
    const KEYS: u64 = 200_000;
    let (m1, m2) = two_checkpoints(&backend, KEYS, &storage);
    eprintln!(
        "checkpoint 1: {} bytes, {} uploaded; checkpoint 2: {} bytes, {} uploaded",
        m1.total_bytes(),
        m1.uploaded_bytes,
        m2.total_bytes(),
        m2.uploaded_bytes
    );
    assert!(m1.total_bytes() > KEYS * 100, "the state is all there");
    assert!(
        m1.uploaded_bytes >= m1.total_bytes() * 9 / 10,
        "the first is full"
    );
    assert!(
        m2.uploaded_bytes * 20 <= m2.total_bytes(),
        "incremental: {} of {} bytes uploaded",
        m2.uploaded_bytes,
        m2.total_bytes()
    );

    // Restores: natively into the disk backend, through the reader into the memory backend
    // and into the disk backend at parallelism 2.
    let loaded = load_checkpoint(&storage, &checkpoint_dir(2)).unwrap();
    let files = StorageFiles(Arc::new(storage.clone()));
    let r = loaded.restore_for("op", 0, 1).unwrap();
    assert_eq!(r.native.len(), 1);
    let mut s = store(&backend, 0, 1);
    s.restore_native(&r.native, &files).unwrap();
    s.restore_blocks(&r.keyed).unwrap();
    assert_eq!(check_values(&mut s, 0..KEYS), KEYS as usize);
    drop(s);

    let mut s = store(&MemoryBackend, 0, 1);
    s.restore_native(&r.native, &files).unwrap();
    assert_eq!(check_values(&mut s, 0..KEYS), KEYS as usize);
    assert_eq!(s.total_entries(), KEYS as usize);

    let mut total = 0;
    for sub in 0..2 {
        let r = loaded.restore_for("op", sub, 2).unwrap();
        let mut s = store(&backend, sub, 2);
        s.restore_native(&r.native, &files).unwrap();
        let range = weir_types::keygroup::key_group_range(sub, 2, MAX_P);
        let mine = (0..KEYS)
            .filter(|k| range.contains(&weir_types::keygroup::key_group(k, MAX_P)))
            .collect::<Vec<_>>();
        total += check_values(&mut s, mine.into_iter());
        // Keys of the other subtask are not there.
        let v: ValueState<Vec<u8>> = ValueState::register(&mut s, "v").unwrap();
        let other = (0..KEYS)
            .find(|k| !range.contains(&weir_types::keygroup::key_group(k, MAX_P)))
            .unwrap();
        s.set_current_key(other);
        assert_eq!(v.get(&mut s), None);
    }
    assert_eq!(total, KEYS as usize);
}

#[test]
fn corrupted_or_missing_shared_files_are_detected() {
    let work = tempfile::tempdir().unwrap();
    let chk = tempfile::tempdir().unwrap();
    let storage = LocalStorage::new(chk.path()).unwrap();
    let backend = DiskBackendConfig {
        dir: Some(work.path().to_path_buf()),
        ..Default::default()
    }
    .build();
    let (m1, m2) = two_checkpoints(&backend, 20_000, &storage);
    let shared = |m: &Manifest| -> Vec<String> { m.shared_paths().map(String::from).collect() };
    let (s1, s2) = (shared(&m1), shared(&m2));
    let only_2 = s2.iter().find(|p| !s1.contains(p)).expect("a new file");
    let both = s2.iter().find(|p| s1.contains(p)).expect("a reused file");

    // Damage the file only checkpoint 2 uses: 2 is corrupted, `latest` falls back to 1.
    let p = chk.path().join(only_2);
    let mut bytes = std::fs::read(&p).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&p, &bytes).unwrap();
    let err = load_checkpoint(&storage, &checkpoint_dir(2))
        .unwrap_err()
        .to_string();
    assert!(err.contains("corrupted") && err.contains(only_2), "{err}");
    assert_eq!(load_latest(&storage).unwrap().unwrap().manifest.id, 1);

    // Damage found only at download (after loading) fails the restore, naming the file.
    let loaded = load_checkpoint(&storage, &checkpoint_dir(1)).unwrap();
    let r = loaded.restore_for("op", 0, 1).unwrap();
    let p = chk.path().join(both);
    let good = std::fs::read(&p).unwrap();
    let mut bad = good.clone();
    bad[10] ^= 1;
    std::fs::write(&p, &bad).unwrap();
    let files = StorageFiles(Arc::new(storage.clone()));
    let mut s = store(&backend, 0, 1);
    let err = s.restore_native(&r.native, &files).unwrap_err().to_string();
    assert!(err.contains("corrupted"), "{err}");

    // A missing shared file: neither checkpoint loads.
    std::fs::remove_file(&p).unwrap();
    let err = load_checkpoint(&storage, &checkpoint_dir(1))
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing"), "{err}");
    assert!(load_latest(&storage).unwrap().is_none());
}
