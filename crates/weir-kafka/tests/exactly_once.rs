//! Exactly-once end to end: `kafka_counter` reads a topic and writes another through
//! transactions; it is killed with SIGKILL at random moments while input keeps arriving, and
//! restarted with `--restore latest`; a final `--bounded` run drains the input. A read_committed
//! consumer of the output must see every input record exactly once, and for every key the
//! counts 1..n exactly once.
mod common;
use common::*;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn example(name: &str) -> PathBuf {
    let mut p = std::env::current_exe().unwrap();
    p.pop();
    if p.ends_with("deps") {
        p.pop();
    }
    let p = p.join("examples").join(name);
    assert!(p.exists(), "example binary {} not built", p.display());
    p
}

/// A small deterministic generator (xorshift), seeded from the clock and printed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

#[test]
fn kafka_counter_survives_sigkill_with_exactly_once_output() {
    let input = unique("eos-in");
    let output = unique("eos-out");
    create_topic(&input, 3);
    create_topic(&output, 3);
    let dir = tempfile::tempdir().unwrap();
    let chk = dir.path().join("chk");
    let group = unique("eos-group");
    let seed = std::env::var("WEIR_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("seed {seed} (WEIR_TEST_SEED to repeat)");
    let mut rng = Rng(seed);
    let kills: usize = std::env::var("WEIR_TEST_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6);
    let keys = 13;
    // Input arrives while the job is killed and restarted: 40 batches of 250 records.
    let total = 10_000u64;
    let input2 = input.clone();
    let producer = std::thread::spawn(move || {
        for b in 0..40u64 {
            let recs: Vec<Rec> = (b * 250..(b + 1) * 250)
                .map(|i| Rec {
                    key: Some(format!("k{}", i % keys).into_bytes()),
                    value: format!("k{},{i}", i % keys).into_bytes(),
                    ..Default::default()
                })
                .collect();
            produce(&input2, &recs);
            std::thread::sleep(Duration::from_millis(150));
        }
    });
    // Each run picks its parallelism (2, 3, 1, ...): offsets, keyed state and the sink's
    // transactional ids are redistributed on every restore.
    let args = |bounded: bool, parallelism: usize| {
        let mut a: Vec<String> = [
            "--brokers",
            bootstrap(),
            "--input-topic",
            &input,
            "--output-topic",
            &output,
            "--group",
            &group,
            "--checkpoint-dir",
            chk.to_str().unwrap(),
            "--checkpoint-interval",
            "300ms",
            "--restore",
            "latest",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.push("--parallelism".into());
        a.push(parallelism.to_string());
        if bounded {
            a.push("--bounded".into());
        }
        a
    };
    let started = Instant::now();
    // The hard cases first: the process dies after a checkpoint is durable and before (then
    // after) its transactions are committed; the next run must commit them (write them again).
    for fp in ["abort-before-commit", "abort-after-commit"] {
        std::thread::sleep(Duration::from_millis(300));
        let out = Command::new(example("kafka_counter"))
            .args(args(false, 2))
            .env("WEIR_KAFKA_FAILPOINT", fp)
            .env("RUST_LOG", "weir_kafka=info")
            .stdout(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(&format!("failpoint {fp}")),
            "{fp}: {err}"
        );
        if fp == "abort-after-commit" {
            assert!(
                err.contains("was lost; writing its"),
                "no resend after {fp}: {err}"
            );
        }
        eprintln!("died at failpoint {fp}");
    }
    for k in 0..kills {
        let log = std::fs::File::create(dir.path().join(format!("run-{k}.log"))).unwrap();
        let mut child = Command::new(example("kafka_counter"))
            .args(args(false, [2, 3, 1][k % 3]))
            .env("RUST_LOG", "weir_kafka=debug,weir_runtime=info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        // Odd kills at a random moment (often during recovery and start-up); even kills at a
        // random moment after the run completed a checkpoint of its own (steady state).
        let t0 = Instant::now();
        if k % 2 == 0 {
            let log_path = dir.path().join(format!("run-{k}.log"));
            while t0.elapsed() < Duration::from_secs(30)
                && !std::fs::read_to_string(&log_path)
                    .unwrap_or_default()
                    .contains("complete:")
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            std::thread::sleep(Duration::from_millis(rng.range(0, 1500)));
        } else {
            std::thread::sleep(Duration::from_millis(rng.range(300, 3000)));
        }
        let ms = t0.elapsed().as_millis();
        assert!(
            child.try_wait().unwrap().is_none(),
            "kafka_counter exited before kill {k}"
        );
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        eprintln!("kill {k} after {ms} ms");
        if k == 0 {
            // The run after `abort-after-commit` found that transaction committed; the run
            // before it had lost one and wrote it again (the resend path).
            let log = std::fs::read_to_string(dir.path().join("run-0.log")).unwrap();
            assert!(log.contains("was committed"), "run 0: {log}");
        }
    }
    // The kills hit running jobs: most runs restored a checkpoint and completed new ones.
    let logs: Vec<String> = (0..kills)
        .map(|k| std::fs::read_to_string(dir.path().join(format!("run-{k}.log"))).unwrap())
        .collect();
    let restored = logs
        .iter()
        .filter(|l| l.contains("restoring checkpoint"))
        .count();
    let completed = logs.iter().filter(|l| l.contains("complete:")).count();
    eprintln!("{restored} of {kills} runs restored a checkpoint, {completed} completed one");
    if std::env::var("WEIR_TEST_LOGS").is_ok() {
        for (k, l) in logs.iter().enumerate() {
            eprintln!("--- run {k}:\n{l}");
        }
    }
    assert!(
        restored * 2 >= kills,
        "{restored} of {kills} runs restored a checkpoint"
    );
    // One more run, killed once the source has committed its checkpointed offsets to the
    // group (which it does when a checkpoint completes).
    let mut child = Command::new(example("kafka_counter"))
        .args(args(false, 2))
        .env("RUST_LOG", "weir_kafka=info,weir_runtime=info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("run-extra.log")).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while group_offsets(&group, &input, 3).iter().all(|o| *o <= 0) {
        assert!(Instant::now() < deadline, "no offsets committed to {group}");
        std::thread::sleep(Duration::from_millis(200));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    producer.join().unwrap();
    let out = Command::new(example("kafka_counter"))
        .args(args(true, 2))
        .env("RUST_LOG", "weir_kafka=info,weir_runtime=info")
        .stdout(Stdio::null())
        .output()
        .unwrap();
    std::fs::write(dir.path().join("run-final.log"), &out.stderr).unwrap();
    assert!(
        out.status.success(),
        "final bounded run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "{kills} kills and the final run took {:?}",
        started.elapsed()
    );
    let got = read_all(&output, true);
    let mut seen: HashMap<u64, u32> = HashMap::new();
    let mut counts: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for r in &got {
        let v = r.value_str();
        let f: Vec<&str> = v.split(',').collect();
        assert_eq!(f.len(), 3, "bad output line {v}");
        *seen.entry(f[1].parse().unwrap()).or_default() += 1;
        counts
            .entry(f[0].to_string())
            .or_default()
            .push(f[2].parse().unwrap());
        assert_eq!(r.key.as_deref(), Some(f[0].as_bytes()));
    }
    let lost = (0..total).filter(|i| !seen.contains_key(i)).count();
    if lost > 0 {
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".log"))
            .collect();
        names.sort();
        for n in names {
            let l = std::fs::read_to_string(dir.path().join(&n)).unwrap();
            eprintln!("--- {n}:");
            for line in l.lines().filter(|l| !l.contains("initialized in")) {
                eprintln!("{line}");
            }
        }
    }
    let dup: u32 = seen.values().map(|n| n - 1).sum();
    assert_eq!((lost, dup), (0, 0), "lost and duplicated input records");
    for (k, mut c) in counts {
        c.sort();
        let n = c.len() as u64;
        assert_eq!(c, (1..=n).collect::<Vec<_>>(), "counts of key {k}");
    }
    // The group's offsets never run ahead of the input.
    let committed = group_offsets(&group, &input, 3);
    assert!(
        committed.iter().sum::<i64>() <= total as i64,
        "committed {committed:?}"
    );
    // Uncommitted (aborted) output exists when a kill hit an open transaction: read_uncommitted
    // sees at least as much.
    assert!(read_all(&output, false).len() >= got.len());
}

#[test]
fn kafka_pipeline_generates_windows_and_counts_every_reading_once() {
    let readings = unique("readings");
    let means = unique("means");
    create_topic(&readings, 3);
    create_topic(&means, 2);
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(example("kafka_pipeline"))
            .args(args)
            .stdout(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kafka_pipeline {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let c1 = dir.path().join("c1");
    let c2 = dir.path().join("c2");
    run(&[
        "generate",
        "--brokers",
        bootstrap(),
        "--topic",
        &readings,
        "--sensors",
        "5",
        "--readings",
        "3000",
        "--checkpoint-dir",
        c1.to_str().unwrap(),
        "--checkpoint-interval",
        "200ms",
        "-p",
        "2",
    ]);
    run(&[
        "window",
        "--brokers",
        bootstrap(),
        "--topic",
        &readings,
        "--output-topic",
        &means,
        "--group",
        &unique("pipeline"),
        "--bounded",
        "--checkpoint-dir",
        c2.to_str().unwrap(),
        "--checkpoint-interval",
        "200ms",
        "-p",
        "2",
    ]);
    let out = read_all(&means, true);
    let mut windows = std::collections::HashSet::new();
    let mut total = 0;
    for r in &out {
        let v: serde_json::Value = serde_json::from_slice(r.value.as_deref().unwrap()).unwrap();
        assert!(
            windows.insert((v["sensor"].as_u64().unwrap(), v["start"].as_i64().unwrap())),
            "a window twice: {v}"
        );
        assert_eq!(
            v["end"].as_i64().unwrap() - v["start"].as_i64().unwrap(),
            5000
        );
        total += v["count"].as_u64().unwrap();
    }
    assert_eq!(total, 3000, "every reading in exactly one window");
    assert_eq!(
        windows
            .iter()
            .map(|w| w.0)
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        5
    );
}
