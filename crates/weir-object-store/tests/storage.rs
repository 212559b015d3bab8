//! `ObjectStorage` against a real S3-compatible server on 127.0.0.1: the one named by
//! `S3_ENDPOINT` (scripts/test starts it), or one this test binary starts through
//! `scripts/services start s3`. Without a server the tests fail, they do not skip.
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use weir_object_store::{ObjectStorage, PART_BYTES};
use weir_runtime::checkpoint::format::{
    checkpoint_dir, list_checkpoints, load_checkpoint, load_latest, retain, write_checkpoint,
    SnapshotCompression, Uploads,
};
use weir_runtime::checkpoint::storage::{storage_from_location, CheckpointStorage};
use weir_runtime::checkpoint::{NativeSnapshot, OperatorSnapshot, SubtaskId};
use weir_state::native::NativeFile;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `s3://BUCKET`, with `AWS_*` set from the server's `S3_*` variables.
fn bucket_url() -> &'static str {
    static B: OnceLock<String> = OnceLock::new();
    B.get_or_init(|| {
        weir_object_store::test_server_bucket(
            &repo_root(),
            &format!("{}/weir-services", env!("CARGO_TARGET_TMPDIR")),
        )
    })
}

/// A storage under a prefix of its own.
fn storage(name: &str) -> (Arc<dyn CheckpointStorage>, String) {
    let ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let url = format!("{}/tests/{name}-{}-{ns}", bucket_url(), std::process::id());
    (storage_from_location(&url).unwrap(), url)
}

/// Deterministic bytes that differ between offsets and seeds.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn put_get_list_delete_round_trip_with_a_multipart_file() {
    let (s, url) = storage("round-trip");
    assert!(s.describe().contains(&url), "{}", s.describe());
    assert_eq!(s.list("").unwrap(), Vec::<String>::new());
    s.put("chk-1/op/0.state", b"zero").unwrap();
    s.put("chk-1/op/1.state", b"one").unwrap();
    s.put("chk-1/_manifest", b"m").unwrap();
    s.put("chk-2/_manifest", b"m2").unwrap();
    s.put("top", b"t").unwrap();
    // Names directly under a prefix: "directories" and objects, sorted.
    assert_eq!(s.list("").unwrap(), vec!["chk-1", "chk-2", "top"]);
    assert_eq!(s.list("chk-1").unwrap(), vec!["_manifest", "op"]);
    assert_eq!(s.list("chk-1/op").unwrap(), vec!["0.state", "1.state"]);
    assert_eq!(s.list("nothing").unwrap(), Vec::<String>::new());
    assert_eq!(s.get("chk-1/op/1.state").unwrap(), b"one");
    // Replaced whole.
    s.put("chk-1/op/1.state", b"uno").unwrap();
    assert_eq!(s.get("chk-1/op/1.state").unwrap(), b"uno");
    let missing = s.get("chk-1/op/9.state").unwrap_err().to_string();
    assert!(missing.contains("9.state"), "{missing}");

    // A file of 2.5 parts (> 5 MiB: S3's multipart minimum), streamed up and down.
    let dir = tempfile::tempdir().unwrap();
    let big = pattern(PART_BYTES * 5 / 2 + 123, 1);
    let want = (big.len() as u64, xxhash_rust::xxh3::xxh3_64(&big));
    let local = dir.path().join("big.sst");
    std::fs::write(&local, &big).unwrap();
    assert_eq!(s.put_file("shared/op/a-000001.sst", &local).unwrap(), want);
    assert_eq!(s.checksum("shared/op/a-000001.sst").unwrap(), want);
    let back = dir.path().join("back.sst");
    assert_eq!(s.get_file("shared/op/a-000001.sst", &back).unwrap(), want);
    assert!(
        std::fs::read(&back).unwrap() == big,
        "downloaded content differs"
    );
    // A small file: one PUT.
    std::fs::write(&local, b"small").unwrap();
    assert_eq!(
        s.put_file("shared/op/a-000002.sst", &local).unwrap(),
        (5, xxhash_rust::xxh3::xxh3_64(b"small"))
    );
    assert_eq!(
        s.list("shared/op").unwrap(),
        vec!["a-000001.sst", "a-000002.sst"]
    );
    // An empty file.
    std::fs::write(&local, b"").unwrap();
    assert_eq!(s.put_file("empty", &local).unwrap().0, 0);
    assert_eq!(s.get("empty").unwrap(), b"");

    // Deleting: one file, then a whole prefix (not its neighbours with a longer name).
    s.put("chk-10/_manifest", b"m10").unwrap();
    s.delete("shared/op/a-000002.sst").unwrap();
    s.delete("shared/op/a-000002.sst").unwrap(); // missing: nothing
    assert_eq!(s.list("shared/op").unwrap(), vec!["a-000001.sst"]);
    s.delete_prefix("chk-1").unwrap();
    assert_eq!(
        s.list("").unwrap(),
        vec!["chk-10", "chk-2", "empty", "shared", "top"]
    );
    assert!(s.get("chk-1/_manifest").is_err());
    s.delete_prefix("chk-1").unwrap(); // missing: nothing
    s.delete_prefix("").unwrap();
    assert_eq!(s.list("").unwrap(), Vec::<String>::new());
}

/// One operator subtask's snapshot: canonical bytes, and a native snapshot with a shared file
/// of `sst_bytes` (uploaded in parts when large) and a private one.
fn snapshot(
    local: &std::path::Path,
    id: u64,
    sst_bytes: usize,
) -> BTreeMap<SubtaskId, OperatorSnapshot> {
    let dir = local.join(format!("native-{id}"));
    std::fs::create_dir_all(&dir).unwrap();
    let sst = format!("{:06}.sst", id);
    std::fs::write(dir.join(&sst), pattern(sst_bytes, id)).unwrap();
    std::fs::write(dir.join("MANIFEST-1"), format!("manifest {id}")).unwrap();
    let file = |name: &str, shared| NativeFile {
        name: name.into(),
        shared,
        bytes: 0,
        path: None,
        xxh3: 0,
    };
    let native = NativeSnapshot {
        format: "test-v1".into(),
        instance: "inst".into(),
        key_groups: (0, 128),
        max_parallelism: 128,
        tables: vec![],
        files: vec![file(&sst, true), file("MANIFEST-1", false)],
        local_dir: Some(dir.to_string_lossy().into_owned()),
    };
    let snap = OperatorSnapshot {
        keyed: vec![(3, format!("state of {id}").into_bytes())],
        operator: vec![id.to_le_bytes().to_vec()],
        native: Some(native),
        ..Default::default()
    };
    BTreeMap::from([(
        SubtaskId {
            uid: "count".into(),
            subtask: 0,
        },
        snap,
    )])
}

/// Logs written while `f` runs.
fn logs_of<T>(f: impl FnOnce() -> T) -> (T, String) {
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let b2 = buf.clone();
    let sub = tracing_subscriber::fmt()
        .with_writer(move || b2.clone())
        .with_ansi(false)
        .finish();
    let r = tracing::subscriber::with_default(sub, f);
    let text = String::from_utf8_lossy(&buf.0.lock().unwrap()).into_owned();
    (r, text)
}

fn write(
    s: &dyn CheckpointStorage,
    local: &std::path::Path,
    id: u64,
    sst: usize,
    up: &mut Uploads,
) {
    let par = BTreeMap::from([("count".to_string(), 1usize)]);
    write_checkpoint(
        s,
        &checkpoint_dir(id),
        id,
        0,
        128,
        &par,
        &snapshot(local, id, sst),
        false,
        up,
        SnapshotCompression::default(),
    )
    .unwrap();
}

#[test]
fn a_corrupted_object_makes_restore_fall_back_to_the_previous_checkpoint() {
    let (s, _) = storage("corrupt");
    let local = tempfile::tempdir().unwrap();
    let mut up = Uploads::default();
    write(&*s, local.path(), 1, PART_BYTES + 1000, &mut up);
    write(&*s, local.path(), 2, 2000, &mut up);
    write(&*s, local.path(), 3, 3000, &mut up);
    // An incomplete checkpoint (no manifest) does not exist.
    s.put("chk-0000000004/count/0.state", b"half written")
        .unwrap();
    assert_eq!(load_latest(&*s).unwrap().unwrap().manifest.id, 3);
    let c3 = load_checkpoint(&*s, &checkpoint_dir(3)).unwrap();
    assert_eq!(c3.manifest.operators["count"].native_files.len(), 2);

    // A state file of checkpoint 3 damaged in place (same length, one byte changed).
    let state = format!("{}/count/0.state", checkpoint_dir(3));
    let mut bytes = s.get(&state).unwrap();
    bytes[0] ^= 0x55;
    s.put(&state, &bytes).unwrap();
    let e = load_checkpoint(&*s, &checkpoint_dir(3))
        .unwrap_err()
        .to_string();
    assert!(e.contains("corrupted") && e.contains("0.state"), "{e}");
    let (latest, logs) = logs_of(|| load_latest(&*s).unwrap().unwrap());
    assert_eq!(latest.manifest.id, 2);
    assert!(
        logs.contains("skipping checkpoint chk-0000000003") && logs.contains("falling back"),
        "the fall-back is not said: {logs}"
    );
    assert_eq!(
        latest.snapshots.values().next().unwrap().keyed[0].1,
        b"state of 2"
    );

    // A shared file of checkpoint 2 truncated: it falls back to 1, whose big (multipart)
    // shared file is verified by streaming it.
    let shared = &load_checkpoint(&*s, &checkpoint_dir(2))
        .unwrap()
        .manifest
        .operators["count"]
        .native_files
        .iter()
        .find(|f| f.path.starts_with("shared/"))
        .unwrap()
        .path
        .clone();
    let bytes = s.get(shared).unwrap();
    s.put(shared, &bytes[..bytes.len() - 1]).unwrap();
    let (latest, logs) = logs_of(|| load_latest(&*s).unwrap().unwrap());
    assert_eq!(latest.manifest.id, 1);
    assert!(
        logs.contains("chk-0000000002") && logs.contains(shared.as_str()),
        "{logs}"
    );
    // And the big one damaged too: nothing intact is left.
    let big = latest.manifest.operators["count"]
        .native_files
        .iter()
        .find(|f| f.path.starts_with("shared/"))
        .unwrap()
        .clone();
    assert!(big.bytes > PART_BYTES as u64);
    let mut bytes = s.get(&big.path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    s.put(&big.path, &bytes).unwrap();
    assert!(load_latest(&*s).unwrap().is_none());
    s.delete_prefix("").unwrap();
}

#[test]
fn retention_deletes_old_checkpoints_and_unreferenced_shared_objects() {
    let (s, _) = storage("retain");
    let local = tempfile::tempdir().unwrap();
    let mut up = Uploads::default();
    for id in 1..=4 {
        write(&*s, local.path(), id, 1000 + id as usize, &mut up);
        retain(&*s, 2).unwrap();
    }
    assert_eq!(
        list_checkpoints(&*s).unwrap(),
        vec![checkpoint_dir(4), checkpoint_dir(3)]
    );
    // Each checkpoint here has its own shared file: the two retained ones' are left.
    assert_eq!(
        s.list("shared/count").unwrap(),
        vec!["inst-000003.sst", "inst-000004.sst"]
    );
    assert_eq!(load_latest(&*s).unwrap().unwrap().manifest.id, 4);
    s.delete_prefix("").unwrap();
}

#[test]
fn an_unknown_scheme_or_a_bad_url_is_a_clear_error() {
    bucket_url();
    let e = storage_from_location("gs://b/p").unwrap_err().to_string();
    assert!(
        e.contains("unknown checkpoint storage scheme 'gs://'"),
        "{e}"
    );
    assert!(e.contains("s3"), "{e}");
    let _ = ObjectStorage::s3_from_env("s3://weir/some/prefix").unwrap();
}

/// Called from a thread that is inside another tokio runtime (an async operator's, say), and
/// dropped there: neither blocks that runtime's way nor panics.
#[test]
fn usable_and_droppable_inside_another_tokio_runtime() {
    let (s, _) = storage("in-runtime");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async move {
        s.put("a/b", b"x").unwrap();
        assert_eq!(s.get("a/b").unwrap(), b"x");
        assert_eq!(s.list("a").unwrap(), vec!["b"]);
        s.delete_prefix("").unwrap();
        drop(s);
    });
}
