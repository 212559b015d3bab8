//! Changelog checkpoints of the disk backend, on real RocksDB and the real checkpoint format:
//! a materialized checkpoint, then checkpoints that add changelog pieces to it. Every restore
//! path must give exactly the live state at the checkpoint (compared with a model); damaged
//! pieces are detected; the write log's bound and the changelog's share of the base fall back to
//! materializing; retention keeps every file a retained checkpoint needs.
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use weir_rocksdb::{DiskBackend, DiskBackendConfig, CHANGELOG_PIECE_PREFIX};
use weir_runtime::checkpoint::format::{
    checkpoint_dir, load_checkpoint, load_latest, retain, write_checkpoint, LoadedCheckpoint,
    Manifest, SnapshotCompression, Uploads, SHARED_DIR,
};
use weir_runtime::checkpoint::storage::{CheckpointStorage, LocalStorage, StorageFiles};
use weir_runtime::checkpoint::{Deferred, NativeSnapshot, OperatorSnapshot, SubtaskId};
use weir_state::{KeyedStateStore, MemoryBackend, StateBackend, ValueState};
use weir_types::keygroup::{key_group, key_group_range};
use weir_types::ManualClock;

const MAX_P: usize = 128;

/// The live state as the test wrote it: table "v" (`u64` values) and table "late" (`String`
/// values, registered only after the first checkpoint).
#[derive(Clone, Default, Debug, PartialEq)]
struct Model {
    v: BTreeMap<u64, u64>,
    late: BTreeMap<u64, String>,
}

/// The deterministic pseudo-random sequence of the generator.
type Rng = weir::connectors::SplitMix64;

fn store(backend: &dyn StateBackend, subtask: usize, p: usize) -> KeyedStateStore<u64> {
    KeyedStateStore::new(backend, Arc::new(ManualClock::new(0))).with_scope("op", subtask, p, MAX_P)
}

fn disk(work: &std::path::Path, f: impl FnOnce(&mut DiskBackendConfig)) -> DiskBackend {
    let mut cfg = DiskBackendConfig {
        dir: Some(work.to_path_buf()),
        memory_budget_bytes: 64 << 20,
        ..Default::default()
    };
    f(&mut cfg);
    cfg.build()
}

#[derive(Debug, PartialEq, Clone, Copy)]
enum Kind {
    Materialized,
    Changelog,
}

fn kind(n: &NativeSnapshot) -> Kind {
    if n.files
        .iter()
        .any(|f| f.name.starts_with(CHANGELOG_PIECE_PREFIX))
    {
        Kind::Changelog
    } else {
        Kind::Materialized
    }
}

/// How a test drives the coordinator's part of a checkpoint.
#[derive(PartialEq)]
enum Fate {
    /// Written, then completion notified (as the runtime does).
    Completed,
    /// Written, never notified (the notification was lost).
    Unconfirmed,
    /// Abandoned before the coordinator ran anything (another task never acknowledged).
    AbandonedBeforeWrite,
    /// The deferred part ran, then the upload failed (storage error).
    FailedUpload,
}

/// Takes checkpoint `id` of `s` and writes it as the coordinator does (deferred part, upload,
/// manifest), then retains the newest `retained`. Returns the manifest and the kind.
fn checkpoint(
    s: &mut KeyedStateStore<u64>,
    id: u64,
    storage: &LocalStorage,
    uploads: &mut Uploads,
    retained: usize,
    fate: Fate,
) -> Option<(Manifest, Kind)> {
    let snap = s.snapshot(id, true, vec![]).unwrap();
    let native = snap.native.clone().expect("native");
    let k = kind(&native);
    let op = OperatorSnapshot {
        native: snap.native,
        deferred: Deferred::new(snap.deferred),
        ..Default::default()
    };
    match fate {
        Fate::AbandonedBeforeWrite => {
            native.discard_local();
            return None;
        }
        Fate::FailedUpload => {
            let mut op = op;
            op.resolve();
            native.discard_local();
            return None;
        }
        _ => {}
    }
    let snaps = BTreeMap::from([(
        SubtaskId {
            uid: "op".into(),
            subtask: 0,
        },
        op,
    )]);
    let m = write_checkpoint(
        storage,
        &checkpoint_dir(id),
        id,
        0,
        MAX_P,
        &BTreeMap::from([("op".to_string(), 1)]),
        &snaps,
        false,
        uploads,
        SnapshotCompression::default(),
    )
    .unwrap();
    native.discard_local();
    retain(storage, retained).unwrap();
    if fate == Fate::Completed {
        s.checkpoint_complete(id);
    }
    Some((m, k))
}

/// Applies `n` random changes to `s` and `model`: new keys, overwrites, deletions, in both
/// tables ("late" only once registered).
fn change(
    s: &mut KeyedStateStore<u64>,
    model: &mut Model,
    rng: &mut Rng,
    n: usize,
    keys: u64,
    late: bool,
) {
    let v: ValueState<u64> = ValueState::register(s, "v").unwrap();
    let l: Option<ValueState<String>> = late.then(|| ValueState::register(s, "late").unwrap());
    for _ in 0..n {
        let k = rng.next_u64() % keys;
        s.set_current_key(k);
        match (rng.next_u64() % 10, &l) {
            (0..=1, _) => {
                v.take(s);
                model.v.remove(&k);
            }
            (2, Some(l)) => {
                l.take(s);
                model.late.remove(&k);
            }
            (3..=4, Some(l)) => {
                let x = format!("late-{}", rng.next_u64() % 1000);
                l.set(s, x.clone());
                model.late.insert(k, x);
            }
            _ => {
                let x = rng.next_u64();
                v.set(s, x);
                model.v.insert(k, x);
            }
        }
    }
}

/// Every key of `0..keys` in `s` (subtask `subtask` of `p`) matches `model`: present with the
/// model's value if the subtask owns its key group, absent otherwise.
fn check(s: &mut KeyedStateStore<u64>, model: &Model, keys: u64, subtask: usize, p: usize) {
    let range = key_group_range(subtask, p, MAX_P);
    let v: ValueState<u64> = ValueState::register(s, "v").unwrap();
    let l: ValueState<String> = ValueState::register(s, "late").unwrap();
    for k in 0..keys {
        let mine = range.contains(&key_group(&k, MAX_P));
        s.set_current_key(k);
        let want_v = model.v.get(&k).copied().filter(|_| mine);
        assert_eq!(v.get(s), want_v, "table v, key {k}, subtask {subtask}/{p}");
        let want_l = model.late.get(&k).cloned().filter(|_| mine);
        assert_eq!(
            l.get(s),
            want_l,
            "table late, key {k}, subtask {subtask}/{p}"
        );
    }
}

/// Restores `loaded` in every way: natively at parallelism 1, through the reader at
/// parallelism 2 into the disk backend, and into the memory backend; each must equal `model`.
fn check_restores(
    backend: &DiskBackend,
    st: &LocalStorage,
    loaded: &LoadedCheckpoint,
    model: &Model,
    keys: u64,
) {
    let files = StorageFiles(Arc::new(st.clone()));
    let r = loaded.restore_for("op", 0, 1).unwrap();
    let mut s = store(backend, 0, 1);
    s.restore_native(&r.native, &files).unwrap();
    check(&mut s, model, keys, 0, 1);
    drop(s);
    for sub in 0..2 {
        let r = loaded.restore_for("op", sub, 2).unwrap();
        let mut s = store(backend, sub, 2);
        s.restore_native(&r.native, &files).unwrap();
        check(&mut s, model, keys, sub, 2);
    }
    let mut s = store(&MemoryBackend, 0, 1);
    s.restore_native(&r.native, &files).unwrap();
    check(&mut s, model, keys, 0, 1);
    assert_eq!(s.total_entries(), model.v.len() + model.late.len());
}

fn storage(dir: &std::path::Path) -> LocalStorage {
    LocalStorage::new(dir).unwrap()
}

/// Every shared file in storage, and every shared file the retained manifests list.
fn shared_files(st: &LocalStorage) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut present = BTreeSet::new();
    for owner in st.list(SHARED_DIR.trim_end_matches('/')).unwrap() {
        for name in st.list(&format!("{SHARED_DIR}{owner}")).unwrap() {
            present.insert(format!("{SHARED_DIR}{owner}/{name}"));
        }
    }
    let mut listed = BTreeSet::new();
    for dir in weir_runtime::checkpoint::format::list_checkpoints(st).unwrap() {
        let m = load_checkpoint(st, &dir).unwrap().manifest;
        listed.extend(m.shared_paths().map(String::from));
    }
    (present, listed)
}

fn load(st: &LocalStorage, id: u64) -> LoadedCheckpoint {
    load_checkpoint(st, &checkpoint_dir(id)).unwrap()
}

#[test]
fn changelog_checkpoints_restore_exactly_the_live_state_every_way() {
    let work = tempfile::tempdir().unwrap();
    let chk = tempfile::tempdir().unwrap();
    let st = storage(chk.path());
    let backend = disk(work.path(), |_| {});
    const KEYS: u64 = 20_000;
    let mut rng = Rng::new(0x1234_5678_9abc_def1);
    let mut s = store(&backend, 0, 1);
    let mut model = Model::default();
    {
        let v: ValueState<u64> = ValueState::register(&mut s, "v").unwrap();
        for k in 0..KEYS {
            s.set_current_key(k);
            v.set(&mut s, k * 3);
            model.v.insert(k, k * 3);
        }
    }
    let mut uploads = Uploads::default();
    let (m1, k1) = checkpoint(&mut s, 1, &st, &mut uploads, 2, Fate::Completed).unwrap();
    assert_eq!(k1, Kind::Materialized, "the first checkpoint materializes");
    let mut models = BTreeMap::from([(1, model.clone())]);
    let mut prev = m1;
    for id in 2..=6u64 {
        // "late" is registered after the base: its column family is only in the pieces.
        change(&mut s, &mut model, &mut rng, 300, KEYS + 500, id >= 3);
        let (m, k) = checkpoint(&mut s, id, &st, &mut uploads, 2, Fate::Completed).unwrap();
        assert_eq!(k, Kind::Changelog, "checkpoint {id}");
        // The only shared file it adds is its piece; the rest it uploads are the small
        // private files (RocksDB's MANIFEST, OPTIONS, CURRENT) and the timers' state file.
        let before: BTreeSet<&str> = prev.shared_paths().collect();
        let added: Vec<&str> = m.shared_paths().filter(|p| !before.contains(p)).collect();
        assert!(
            added.len() == 1 && added[0].contains(CHANGELOG_PIECE_PREFIX),
            "checkpoint {id} adds {added:?}"
        );
        assert!(
            m.uploaded_bytes * 10 < m.total_bytes(),
            "checkpoint {id} uploads {} bytes of {}",
            m.uploaded_bytes,
            m.total_bytes()
        );
        prev = m;
        models.insert(id, model.clone());
        // The two retained checkpoints load (every file present and intact) and restore.
        for keep in [id - 1, id] {
            check_restores(&backend, &st, &load(&st, keep), &models[&keep], KEYS + 500);
        }
        let (present, listed) = shared_files(&st);
        assert_eq!(
            present, listed,
            "retain deletes exactly the unreferenced shared files"
        );
    }
    // Keys changed between two checkpoints and changed back, deleted and written again.
    for k in 0..50 {
        s.set_current_key(k);
        let v: ValueState<u64> = ValueState::register(&mut s, "v").unwrap();
        v.set(&mut s, 7);
        v.take(&mut s);
        v.set(&mut s, 8);
        model.v.insert(k, 8);
    }
    let (_, k) = checkpoint(&mut s, 7, &st, &mut uploads, 2, Fate::Completed).unwrap();
    assert_eq!(k, Kind::Changelog);
    check_restores(&backend, &st, &load(&st, 7), &model, KEYS + 500);

    // A restored store goes on: it materializes first (uploading little: the base's files are
    // already in storage), then writes changelogs again.
    let loaded = load(&st, 7);
    let files = StorageFiles(Arc::new(st.clone()));
    let mut s2 = store(&backend, 0, 1);
    s2.restore_native(&loaded.restore_for("op", 0, 1).unwrap().native, &files)
        .unwrap();
    drop(s);
    let mut uploads = Uploads::default();
    change(&mut s2, &mut model, &mut rng, 200, KEYS + 500, true);
    let (m8, k8) = checkpoint(&mut s2, 8, &st, &mut uploads, 2, Fate::Completed).unwrap();
    assert_eq!(k8, Kind::Materialized);
    assert!(
        m8.uploaded_bytes * 4 < m8.total_bytes(),
        "after a restore, {} of {} bytes uploaded",
        m8.uploaded_bytes,
        m8.total_bytes()
    );
    change(&mut s2, &mut model, &mut rng, 200, KEYS + 500, true);
    let (_, k9) = checkpoint(&mut s2, 9, &st, &mut uploads, 2, Fate::Completed).unwrap();
    assert_eq!(k9, Kind::Changelog);
    check_restores(&backend, &st, &load(&st, 9), &model, KEYS + 500);
}

#[test]
fn a_damaged_changelog_piece_is_detected_and_latest_falls_back() {
    let work = tempfile::tempdir().unwrap();
    let chk = tempfile::tempdir().unwrap();
    let st = storage(chk.path());
    let backend = disk(work.path(), |_| {});
    const KEYS: u64 = 5_000;
    let mut rng = Rng::new(99);
    let mut s = store(&backend, 0, 1);
    let mut model = Model::default();
    change(&mut s, &mut model, &mut rng, 5_000, KEYS, false);
    let mut uploads = Uploads::default();
    checkpoint(&mut s, 1, &st, &mut uploads, 3, Fate::Completed).unwrap();
    change(&mut s, &mut model, &mut rng, 100, KEYS, false);
    checkpoint(&mut s, 2, &st, &mut uploads, 3, Fate::Completed).unwrap();
    let model_2 = model.clone();
    change(&mut s, &mut model, &mut rng, 100, KEYS, false);
    checkpoint(&mut s, 3, &st, &mut uploads, 3, Fate::Completed).unwrap();
    let pieces = |id| -> Vec<String> {
        load(&st, id)
            .manifest
            .shared_paths()
            .filter(|p| p.contains(CHANGELOG_PIECE_PREFIX))
            .map(String::from)
            .collect()
    };
    let (p2, p3) = (pieces(2), pieces(3));
    assert_eq!(p2.len(), 1);
    assert_eq!(p3.len(), 2, "checkpoint 3 references 2's piece and its own");
    let newest = p3.iter().find(|p| !p2.contains(p)).unwrap();

    // Damage 3's own piece: 3 is corrupted, `latest` falls back to 2, which restores.
    let path = chk.path().join(newest);
    let good = std::fs::read(&path).unwrap();
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x40;
    std::fs::write(&path, &bad).unwrap();
    let err = load_checkpoint(&st, &checkpoint_dir(3))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("corrupted") && err.contains(newest.as_str()),
        "{err}"
    );
    let latest = load_latest(&st).unwrap().unwrap();
    assert_eq!(latest.manifest.id, 2);
    check_restores(&backend, &st, &latest, &model_2, KEYS);
    std::fs::write(&path, &good).unwrap();

    // Damage found only when the piece is fetched (after loading) fails the restore.
    let loaded = load(&st, 3);
    std::fs::write(&path, &bad).unwrap();
    let files = StorageFiles(Arc::new(st.clone()));
    let r = loaded.restore_for("op", 0, 1).unwrap();
    let err = store(&backend, 0, 1)
        .restore_native(&r.native, &files)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("corrupted"), "{err}");
    let err = store(&MemoryBackend, 0, 1)
        .restore_native(&r.native, &files)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("corrupted"), "{err}");

    // A missing piece that both use: neither loads.
    std::fs::write(&path, &good).unwrap();
    std::fs::remove_file(chk.path().join(&p2[0])).unwrap();
    for id in [2, 3] {
        let err = load_checkpoint(&st, &checkpoint_dir(id))
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing"), "{err}");
    }
    assert_eq!(load_latest(&st).unwrap().unwrap().manifest.id, 1);
}

#[test]
fn overflowing_the_write_log_bound_falls_back_to_materializing() {
    let work = tempfile::tempdir().unwrap();
    let chk = tempfile::tempdir().unwrap();
    let st = storage(chk.path());
    // 64 KiB: under a thousand keys.
    let backend = disk(work.path(), |c| c.changelog_bytes_max = Some(64 << 10));
    assert_eq!(backend.changelog_bytes_max(), 64 << 10);
    const KEYS: u64 = 20_000;
    let mut rng = Rng::new(7);
    let mut s = store(&backend, 0, 1);
    let mut model = Model::default();
    change(&mut s, &mut model, &mut rng, 20_000, KEYS, false);
    assert_eq!(
        backend.changelog_usage_bytes(),
        0,
        "no base: nothing tracked"
    );
    let mut uploads = Uploads::default();
    let mut kinds = Vec::new();
    let mut id = 0;
    let mut round = |s: &mut KeyedStateStore<u64>, model: &mut Model, n: usize| {
        change(s, model, &mut rng, n, KEYS, true);
        id += 1;
        let (_, k) = checkpoint(s, id, &st, &mut uploads, 1, Fate::Completed).unwrap();
        kinds.push(k);
        check_restores(&backend, &st, &load(&st, id), model, KEYS);
        backend.changelog_usage_bytes()
    };
    round(&mut s, &mut model, 0);
    let used = round(&mut s, &mut model, 300);
    assert_eq!(used, 0, "the write log went into the piece");
    // Too many keys for the bound: tracking stops, the checkpoint materializes.
    round(&mut s, &mut model, 5_000);
    // And tracking starts again from it.
    round(&mut s, &mut model, 300);
    assert_eq!(
        kinds,
        [
            Kind::Materialized,
            Kind::Changelog,
            Kind::Materialized,
            Kind::Changelog
        ]
    );
    drop(s);
    assert_eq!(backend.changelog_usage_bytes(), 0);
}

#[test]
fn the_changelog_materializes_at_its_share_of_the_base_and_after_lost_checkpoints() {
    let work = tempfile::tempdir().unwrap();
    let chk = tempfile::tempdir().unwrap();
    let st = storage(chk.path());
    let backend = disk(work.path(), |c| c.changelog_materialize_percent = 4);
    const KEYS: u64 = 20_000;
    let mut rng = Rng::new(3);
    let mut s = store(&backend, 0, 1);
    let mut model = Model::default();
    change(&mut s, &mut model, &mut rng, 40_000, KEYS, false);
    let mut uploads = Uploads::default();
    let mut kinds = Vec::new();
    for id in 1..=12u64 {
        // About 1% of the keys each time: a piece is about 1% of the base.
        change(&mut s, &mut model, &mut rng, 200, KEYS, id > 5);
        let (_, k) = checkpoint(&mut s, id, &st, &mut uploads, 1, Fate::Completed).unwrap();
        kinds.push(k);
        check_restores(&backend, &st, &load(&st, id), &model, KEYS);
    }
    use Kind::{Changelog as C, Materialized as M};
    let first_again = kinds.iter().skip(1).position(|k| *k == M).unwrap() + 1;
    assert!(
        (3..=6).contains(&first_again),
        "materialized again once the pieces reach 4% of the base: {kinds:?}"
    );
    assert_eq!(kinds[0], M);
    assert!(kinds.iter().filter(|k| **k == C).count() >= 8, "{kinds:?}");

    // Checkpoints that never complete: an abandoned one (its piece never written) makes the
    // next materialize; one whose upload failed (its piece written, not uploaded) does not:
    // the next uploads that piece too.
    let mut id = 12;
    let mut step = |s: &mut KeyedStateStore<u64>, model: &mut Model, fate: Fate| {
        change(s, model, &mut rng, 100, KEYS, true);
        id += 1;
        let done = checkpoint(s, id, &st, &mut uploads, 1, fate);
        if let Some((_, k)) = &done {
            check_restores(&backend, &st, &load(&st, id), model, KEYS);
            Some(*k)
        } else {
            None
        }
    };
    let _ = step(&mut s, &mut model, Fate::Completed);
    assert_eq!(step(&mut s, &mut model, Fate::AbandonedBeforeWrite), None);
    assert_eq!(step(&mut s, &mut model, Fate::Completed), Some(M));
    assert_eq!(step(&mut s, &mut model, Fate::Completed), Some(C));
    assert_eq!(step(&mut s, &mut model, Fate::FailedUpload), None);
    assert_eq!(step(&mut s, &mut model, Fate::Completed), Some(C));
    // Completions never notified: materialized again after `UNCONFIRMED_MAX` on one base.
    let mut unconfirmed = Vec::new();
    for _ in 0..weir_rocksdb::UNCONFIRMED_MAX + 1 {
        unconfirmed.push(step(&mut s, &mut model, Fate::Unconfirmed).unwrap());
    }
    assert!(unconfirmed.contains(&M), "{unconfirmed:?}");
    assert_eq!(step(&mut s, &mut model, Fate::Completed), Some(C));
}
