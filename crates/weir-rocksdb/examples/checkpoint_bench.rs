//! Checkpoint duration and size, memory backend against disk backend, full against
//! incremental: one operator subtask's keyed state (`--keys` keys of `--value-bytes`
//! incompressible bytes) is checkpointed, then `--change-percent` of the keys change before each
//! of `--rounds` further checkpoints. Each checkpoint is taken as the runtime does: the
//! synchronous snapshot at the barrier (a copy-on-write freeze of the heap backend; a flush and
//! hard links of the disk backend), then the coordinator's part (serializing deferred state,
//! writing and uploading into a local checkpoint directory) and retention of 1.
//!
//!     cargo run --release -p weir-rocksdb --example checkpoint_bench -- \
//!         [--keys 1000000] [--value-bytes 100] [--rounds 5] [--change-percent 1] \
//!         [--budget-mib 256] [--dir DIR] [--storage DIR|s3://bucket/prefix]
//!
//! `--storage` puts the checkpoints elsewhere than in `DIR` (an `s3://` URL needs
//! `AWS_ENDPOINT_URL` and the other `AWS_*` variables, as `weir_object_store` reads them).
//! `--no-changelog` makes every checkpoint of the disk backend materialize (as before
//! changelog checkpoints); `--materialize-percent P` sets when the disk backend materializes
//! again (default: the backend's, 400: once its changelog since the last materialization is 4x
//! its size).
//!
//! `--backends disk` (or `memory`) runs one backend only (default: `memory,disk`).
//!
//! Prints one row per checkpoint: backend, round, sync ms, write ms, size (every file the
//! checkpoint references), uploaded, uploaded as a percentage of round 0's size (the full
//! state), the SST files in the live RocksDB instance that were not there at the previous
//! round (flushes and compactions since: what a materialized checkpoint uploads; `-` for the
//! memory backend), and the kind: `full` (memory backend), `materialized` (disk: new SST files
//! uploaded) or `changelog` (disk: a changelog piece uploaded, the rest referenced).
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;
use weir_rocksdb::DiskBackendConfig;
use weir_runtime::checkpoint::format::{
    checkpoint_dir, retain, write_checkpoint, SnapshotCompression, Uploads,
};
use weir_runtime::checkpoint::storage::storage_from_location;
use weir_runtime::checkpoint::{Deferred, OperatorSnapshot, SubtaskId};
use weir_state::{KeyedStateStore, MemoryBackend, StateBackend, ValueState};
use weir_types::ManualClock;

fn value(k: u64, v: u64, len: usize) -> Vec<u8> {
    let mut x = (k.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ v.wrapping_mul(0xD1B5_4A32_D192_ED03)) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

struct Args {
    keys: u64,
    value_bytes: usize,
    rounds: u64,
    change_percent: u64,
    budget_mib: u64,
    dir: Option<std::path::PathBuf>,
    storage: Option<String>,
    changelog: bool,
    materialize_percent: u64,
    backends: String,
}

fn args() -> Args {
    let mut a = Args {
        keys: 1_000_000,
        value_bytes: 100,
        rounds: 5,
        change_percent: 1,
        budget_mib: 256,
        dir: None,
        storage: None,
        changelog: true,
        materialize_percent: DiskBackendConfig::default().changelog_materialize_percent,
        backends: "memory,disk".into(),
    };
    let mut v: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = v.iter().position(|f| f == "--no-changelog") {
        v.remove(i);
        a.changelog = false;
    }
    for w in v.chunks(2) {
        let val = w.get(1).cloned().unwrap_or_default();
        let n = || val.parse::<u64>().expect("a number");
        match w[0].as_str() {
            "--materialize-percent" => a.materialize_percent = n(),
            "--backends" => a.backends = val.clone(),
            "--keys" => a.keys = n(),
            "--value-bytes" => a.value_bytes = n() as usize,
            "--rounds" => a.rounds = n(),
            "--change-percent" => a.change_percent = n().clamp(1, 100),
            "--budget-mib" => a.budget_mib = n(),
            "--dir" => a.dir = Some(val.into()),
            "--storage" => a.storage = Some(val),
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

/// The SST files of the live instances under `db` (path, length).
fn live_ssts(db: &std::path::Path) -> BTreeMap<std::path::PathBuf, u64> {
    let mut out = BTreeMap::new();
    for inst in std::fs::read_dir(db).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(inst.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if f.file_name().to_string_lossy().ends_with(".sst") {
                out.insert(f.path(), f.metadata().map_or(0, |m| m.len()));
            }
        }
    }
    out
}

fn main() {
    weir_object_store::register();
    let a = args();
    let root = match &a.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("weir-checkpoint-bench-{}", std::process::id())),
    };
    println!(
        "{} keys x {} B, {}% changed per round, budget {} MiB, changelog {}",
        a.keys,
        a.value_bytes,
        a.change_percent,
        a.budget_mib,
        if a.changelog {
            format!("on (materialize at {}%)", a.materialize_percent)
        } else {
            "off".into()
        }
    );
    println!(
        "backend  round  sync_ms  write_ms  size_MiB  uploaded_MiB  uploaded_%  new_sst_MiB  kind"
    );
    let disk_backend = DiskBackendConfig {
        dir: Some(root.join("work")),
        memory_budget_bytes: a.budget_mib << 20,
        changelog: a.changelog,
        changelog_materialize_percent: a.materialize_percent,
        ..Default::default()
    }
    .build();
    let disk: Arc<dyn StateBackend> = Arc::new(disk_backend.clone());
    for (name, backend) in [
        ("memory", Arc::new(MemoryBackend) as Arc<dyn StateBackend>),
        ("disk", disk.clone()),
    ] {
        if !a.backends.split(',').any(|b| b == name) {
            continue;
        }
        let chk = match &a.storage {
            Some(base) => format!("{}/chk-{name}", base.trim_end_matches('/')),
            None => root
                .join(format!("chk-{name}"))
                .to_string_lossy()
                .into_owned(),
        };
        let storage = storage_from_location(&chk).unwrap();
        storage.delete_prefix("").unwrap();
        let storage = &*storage;
        let mut s: KeyedStateStore<u64> =
            KeyedStateStore::new(&*backend, Arc::new(ManualClock::new(0)))
                .with_scope("op", 0, 1, 128);
        let v: ValueState<Vec<u8>> = ValueState::register(&mut s, "v").unwrap();
        let t = Instant::now();
        for k in 0..a.keys {
            s.set_current_key(k);
            v.set(&mut s, value(k, 0, a.value_bytes));
        }
        eprintln!("{name}: loaded in {:?}", t.elapsed());
        let mut uploads = Uploads::default();
        let mut full_bytes = 0u64;
        let mut ssts = BTreeMap::new();
        for round in 0..=a.rounds {
            if round > 0 {
                let step = 100 / a.change_percent;
                let t = Instant::now();
                for k in (round % step..a.keys).step_by(step as usize) {
                    s.set_current_key(k);
                    v.set(&mut s, value(k, round, a.value_bytes));
                }
                eprintln!("{name}: round {round} changes written in {:?}", t.elapsed());
            }
            let id = round + 1;
            let t = Instant::now();
            let snap = s.snapshot(id, true, vec![]).unwrap();
            let sync = t.elapsed();
            let native = snap.native.clone();
            let snaps = BTreeMap::from([(
                SubtaskId {
                    uid: "op".into(),
                    subtask: 0,
                },
                OperatorSnapshot {
                    native: snap.native,
                    // Serialized in `write_checkpoint`: the asynchronous part.
                    deferred: Deferred::new(snap.deferred),
                    ..Default::default()
                },
            )]);
            let t = Instant::now();
            let m = write_checkpoint(
                storage,
                &checkpoint_dir(id),
                id,
                0,
                128,
                &BTreeMap::from([("op".to_string(), 1)]),
                &snaps,
                false,
                &mut uploads,
                SnapshotCompression::default(),
            )
            .unwrap();
            retain(storage, 1).unwrap();
            let write = t.elapsed();
            let kind = match &native {
                None => "full",
                Some(n)
                    if n.files
                        .iter()
                        .any(|f| f.name.starts_with(weir_rocksdb::CHANGELOG_PIECE_PREFIX)) =>
                {
                    "changelog"
                }
                Some(_) => "materialized",
            };
            if let Some(n) = native {
                n.discard_local();
            }
            // As after a completed checkpoint: the heap backend merges its copy-on-write delta,
            // the disk backend may release local links of files now in storage.
            s.checkpoint_complete(id);
            if round == 0 {
                full_bytes = m.total_bytes().max(1);
            }
            let new_sst = match (name, disk_backend.working_dir()) {
                ("disk", Some(w)) => {
                    let now = live_ssts(&w.join("db"));
                    let new: u64 = now
                        .iter()
                        .filter(|(p, _)| !ssts.contains_key(*p))
                        .map(|(_, b)| b)
                        .sum();
                    ssts = now;
                    format!("{:.1}", new as f64 / (1 << 20) as f64)
                }
                _ => "-".into(),
            };
            println!(
                "{name:7}  {round:5}  {:7.0}  {:8.0}  {:8.1}  {:12.1}  {:10.2}  {new_sst:>11}  {kind}",
                sync.as_secs_f64() * 1e3,
                write.as_secs_f64() * 1e3,
                m.total_bytes() as f64 / (1 << 20) as f64,
                m.uploaded_bytes as f64 / (1 << 20) as f64,
                m.uploaded_bytes as f64 * 100.0 / full_bytes as f64
            );
        }
        storage.delete_prefix("").unwrap();
    }
    disk.job_ended();
    if a.dir.is_none() {
        let _ = std::fs::remove_dir_all(&root);
    }
}
