//! `scripts/chaos` against the example `chaos_counter`: SIGKILL it at random moments, restart it
//! with `--restore latest`, and check that the committed output holds every event exactly once
//! with exact per-key counts, on the memory and the disk state backend. Small enough for CI (5
//! kills each, under a minute on a debug build).
//!
//! The same runs with checkpoints in a real S3-compatible server on 127.0.0.1 (`s3://…`): the
//! one named by `S3_ENDPOINT` (scripts/test starts it), or one started here through
//! `scripts/services start s3`; without a server those tests fail, they do not skip.
//!
//! Needs `python3` and the example binary (`cargo build --examples`, or `cargo test`, which
//! builds the examples before running the tests).
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use weir_runtime::checkpoint::format::{list_checkpoints, parse_manifest};
use weir_runtime::checkpoint::storage::storage_from_location;

/// A run that takes longer than this is a hang.
const HANG: Duration = Duration::from_secs(240);

/// `target/<profile>/examples/NAME`.
fn example(name: &str) -> PathBuf {
    let mut p = std::env::current_exe().unwrap();
    p.pop();
    if p.ends_with("deps") {
        p.pop();
    }
    let p = p.join("examples").join(name);
    assert!(
        p.exists(),
        "example binary {} not built: run `cargo build --examples` first",
        p.display()
    );
    p
}

/// `s3://BUCKET` of the test server, with `AWS_*` set (here, and so for the children) from
/// its `S3_*` variables.
fn s3_bucket() -> &'static str {
    static B: OnceLock<String> = OnceLock::new();
    B.get_or_init(|| {
        weir_object_store::test_server_bucket(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")),
            &format!("{}/weir-services", env!("CARGO_TARGET_TMPDIR")),
        )
    })
}

/// Runs `scripts/chaos` with 5 kills on `state_backend` and checks exactly-once output;
/// checkpoints go to the work directory, or to the S3 test server with `s3`.
fn survives_kill_9_exactly_once(state_backend: &str, s3: bool) {
    let kills = 5;
    let work = tempfile::tempdir().unwrap();
    let s3_dir = s3.then(|| {
        format!(
            "{}/chaos/{state_backend}-{}-{}",
            s3_bucket(),
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        )
    });
    let (out_path, err_path) = (work.path().join("stdout"), work.path().join("stderr"));
    // 50 000 events at 10 000/s need 5 s of processing; every run before the 5th kill lasts
    // at most 0.8 s, so the job cannot finish before it has been killed 5 times.
    let mut child = Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/chaos"))
        .arg("--binary")
        .arg(example("chaos_counter"))
        .args(["--kills", &kills.to_string()])
        .args(["--events", "50000", "--keys", "100", "--rate", "10000"])
        .args(["--parallelism", "2", "--interval", "100ms"])
        .args(["--min-ms", "150", "--max-ms", "800", "--seed", "7"])
        .args(["--state-backend", state_backend, "--keep"])
        .args(s3_dir.iter().flat_map(|d| ["--checkpoint-dir", d.as_str()]))
        .stdout(Stdio::from(std::fs::File::create(&out_path).unwrap()))
        .stderr(Stdio::from(std::fs::File::create(&err_path).unwrap()))
        .spawn()
        .expect("python3 runs scripts/chaos");
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > HANG {
            let _ = child.kill();
            panic!(
                "scripts/chaos hung; stderr: {}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = std::fs::read_to_string(&out_path).unwrap();
    let stderr = std::fs::read_to_string(&err_path).unwrap();
    assert!(
        status.success(),
        "scripts/chaos failed ({status}):\n{stdout}\n{stderr}"
    );
    // kills lost duplicated wrong_counts recovery_ms_p50 recovery_ms_max
    let mut lines = stdout.lines();
    assert_eq!(
        lines.next(),
        Some("kills lost duplicated wrong_counts recovery_ms_p50 recovery_ms_max"),
        "{stdout}"
    );
    let v: Vec<u64> = lines
        .next()
        .unwrap_or_else(|| panic!("no result line: {stdout}"))
        .split_whitespace()
        .take(4)
        .map(|x| x.parse().unwrap())
        .collect();
    assert_eq!(v[0], kills, "not killed as often as asked: {stdout}");
    assert_eq!(
        &v[1..],
        &[0, 0, 0],
        "lost, duplicated, wrong counts: {stdout}\n{stderr}"
    );
    let kept = PathBuf::from(
        stderr
            .lines()
            .find_map(|l| l.strip_prefix("work dir: "))
            .unwrap_or_else(|| panic!("no work dir in {stderr}")),
    );
    if let Some(url) = &s3_dir {
        // The checkpoints are in S3 (none in the work directory), with their manifests.
        assert!(!kept.join("chk").exists(), "checkpoints written locally");
        let st = storage_from_location(url).unwrap();
        let dirs = list_checkpoints(&*st).unwrap();
        let newest = dirs
            .first()
            .unwrap_or_else(|| panic!("no checkpoint in {url}"));
        let manifest = parse_manifest(&st.get(&format!("{newest}/_manifest")).unwrap()).unwrap();
        if state_backend == "disk" {
            assert!(
                manifest.shared_paths().next().is_some(),
                "not a native checkpoint: {manifest:?}"
            );
        }
        st.delete_prefix("").unwrap();
        assert!(st.list("").unwrap().is_empty());
    } else if state_backend == "disk" {
        // The checkpoints were native, and no working files are left: each run deleted what
        // the killed one before it left, and the last deleted its own.
        let chk = kept.join("chk");
        let mut dirs: Vec<String> = std::fs::read_dir(&chk)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("chk-"))
            .collect();
        dirs.sort();
        let newest = dirs.last().expect("a checkpoint");
        let manifest = std::fs::read_to_string(chk.join(newest).join("_manifest")).unwrap();
        assert!(
            manifest.contains("\"native_files\"") && manifest.contains("\"shared/"),
            "not a native checkpoint: {manifest}"
        );
    }
    if state_backend == "disk" {
        let left: Vec<_> = std::fs::read_dir(kept.join("state")).unwrap().collect();
        assert!(left.is_empty(), "working files left: {left:?}");
    }
    std::fs::remove_dir_all(&kept).unwrap();
}

#[test]
fn chaos_counter_survives_kill_9_exactly_once() {
    survives_kill_9_exactly_once("memory", false);
}

/// The same on the disk backend (RocksDB, native incremental checkpoints): each kill leaves a
/// working directory behind, and each restore opens the latest checkpoint's files.
#[test]
fn chaos_counter_on_the_disk_backend_survives_kill_9_exactly_once() {
    survives_kill_9_exactly_once("disk", false);
}

/// Checkpoints in S3 (a real server on 127.0.0.1): killed 5 times, exactly-once.
#[test]
fn chaos_counter_checkpointing_to_s3_survives_kill_9_exactly_once() {
    survives_kill_9_exactly_once("memory", true);
}

/// The disk backend's incremental checkpoints in S3: shared SST objects uploaded once,
/// restored from S3 after each kill.
#[test]
fn chaos_counter_on_the_disk_backend_checkpointing_to_s3_survives_kill_9_exactly_once() {
    survives_kill_9_exactly_once("disk", true);
}
