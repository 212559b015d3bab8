//! The `iot_metrics` example as a user runs it: on stdout (no external system), and into a
//! real Prometheus and PostgreSQL (`scripts/services`), killed with SIGKILL and restored.
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
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

/// The variable `var` of service `name`: from the environment (`scripts/test` exports them),
/// else from `scripts/services start NAME`, once per test binary.
fn service_var(name: &str, var: &str) -> String {
    if let Ok(v) = std::env::var(var) {
        return v;
    }
    static STARTED: OnceLock<Mutex<HashMap<String, HashMap<String, String>>>> = OnceLock::new();
    let mut started = STARTED.get_or_init(Default::default).lock().unwrap();
    let vars = started.entry(name.to_string()).or_insert_with(|| {
        let out = Command::new(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/services"))
            .args(["start", name])
            .stderr(Stdio::inherit())
            .output()
            .expect("running scripts/services");
        assert!(out.status.success(), "scripts/services start {name} failed");
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    });
    vars[var].clone()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Every raw sample of series matching `selector` stored in the last 2 hours, keyed by the
/// series without the labels in `ignore`.
fn stored(selector: &str, ignore: &[&str]) -> BTreeMap<String, Vec<(i64, String)>> {
    let url = format!(
        "{}/api/v1/query",
        service_var("prometheus", "PROMETHEUS_URL")
    );
    let text = reqwest::blocking::Client::new()
        .get(url)
        .query(&[
            ("query", format!("{selector}[2h]")),
            ("time", format!("{}", now_ms() as f64 / 1000.0 + 60.0)),
        ])
        .send()
        .unwrap()
        .text()
        .unwrap();
    let resp: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(resp["status"], "success", "{resp}");
    let mut out = BTreeMap::new();
    for s in resp["data"]["result"].as_array().unwrap() {
        let labels: BTreeMap<&str, &str> = s["metric"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| !ignore.contains(&k.as_str()))
            .map(|(k, v)| (k.as_str(), v.as_str().unwrap()))
            .collect();
        let values = s["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    (p[0].as_f64().unwrap() * 1000.0).round() as i64,
                    p[1].as_str().unwrap().to_string(),
                )
            })
            .collect();
        out.insert(format!("{labels:?}"), values);
    }
    out
}

fn run_ok(args: &[&str]) -> String {
    let out = Command::new(example("iot_metrics"))
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        out.status.success(),
        "iot_metrics {args:?} failed: {stderr}"
    );
    stderr
}

fn stdout_lines(args: &[&str]) -> Vec<String> {
    let out = Command::new(example("iot_metrics"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut v: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.split_once("> ").map_or(l, |x| x.1).to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn bounded_run_on_stdout_is_deterministic_at_any_parallelism() {
    let args = [
        "--vehicles",
        "100",
        "--events-per-vehicle",
        "120",
        "--start-ms",
        "1700000000000",
    ];
    let p1 = stdout_lines(&[&args[..], &["-p", "1"]].concat());
    let p3 = stdout_lines(&[&args[..], &["-p", "3"]].concat());
    assert_eq!(p1, p3);
    // 100 vehicles × 8 gauges at every 10 s tick they were seen in (30 s of events: 3 to 5
    // ticks), and fleet windows per region and model.
    let gauges = p1.iter().filter(|l| l.contains("vehicle_id=")).count();
    assert!((100 * 8 * 3..=100 * 8 * 5).contains(&gauges), "{gauges}");
    assert!(p1
        .iter()
        .any(|l| l.starts_with("iot_speed_kmh_p95{model=") && l.contains("region=")));
    // Vehicle 99 is not in the built-in table: it is enriched as "unknown".
    assert!(p1
        .iter()
        .any(|l| l.contains(r#"model="unknown",region="unknown""#)));
    // Time in states adds up to the time observed: at each tick, the four states' seconds
    // of a vehicle sum to the time since its first event.
    let secs: Vec<f64> = p1
        .iter()
        .filter(|l| l.contains(r#"vehicle_id="7""#) && l.starts_with("iot_vehicle_state_seconds"))
        .filter(|l| l.ends_with(" 1700000020000"))
        .map(|l| l.split(' ').nth(1).unwrap().parse().unwrap())
        .collect();
    assert_eq!(secs.len(), 4);
    let total: f64 = secs.iter().sum();
    assert!((20.0..=21.0).contains(&total), "{secs:?}");
}

#[test]
fn killed_and_restored_run_stores_the_same_samples_in_prometheus() {
    let url = service_var("prometheus", "PROMETHEUS_REMOTE_WRITE_URL");
    let tag = format!("{}", now_ms());
    // Recent event time: Prometheus refuses samples much older than its newest ones.
    let start = ((now_ms() - 20 * 60_000) / 10_000 * 10_000).to_string();
    let common = [
        "--vehicles",
        "300",
        "--events-per-vehicle",
        "200",
        "--start-ms",
        start.as_str(),
        "--prometheus-url",
        url.as_str(),
        "--samples-per-request",
        "500",
        "-p",
        "2",
    ];
    let clean_label = format!("clean-{tag}");
    run_ok(&[&common[..], &["--run-label", clean_label.as_str()]].concat());

    let chaos_label = format!("chaos-{tag}");
    let dir = tempfile::tempdir().unwrap();
    let chk = dir.path().join("chk");
    let chaos_args: Vec<&str> = [
        &common[..],
        &[
            "--run-label",
            chaos_label.as_str(),
            "--rate",
            "10000",
            "--checkpoint-dir",
            chk.to_str().unwrap(),
            "--checkpoint-interval",
            "300ms",
            "--restore",
            "latest",
        ],
    ]
    .concat();
    // Up to two SIGKILLs, each once the attempt has completed a checkpoint and written samples
    // after it (so the restored attempt replays samples Prometheus already has), then a run to
    // the end.
    let count_stored = || -> u64 {
        let url = format!(
            "{}/api/v1/query",
            service_var("prometheus", "PROMETHEUS_URL")
        );
        let q = format!(r#"sum(count_over_time(iot_vehicle_in_state{{run="{chaos_label}"}}[2h]))"#);
        let text = reqwest::blocking::Client::new()
            .get(url)
            .query(&[("query", q)])
            .send()
            .unwrap()
            .text()
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["data"]["result"][0]["value"][1]
            .as_str()
            .map_or(0, |s| s.parse().unwrap())
    };
    let checkpoints = || -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&chk)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().to_string())
                    .filter(|n| n.starts_with("chk-"))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    let mut kills = 0;
    let mut stored_before_last = 0;
    let t0 = Instant::now();
    let last = loop {
        if kills > 0 {
            stored_before_last = stored(&format!(r#"{{run="{chaos_label}"}}"#), &["run"])
                .values()
                .map(|v| v.len())
                .sum();
        }
        let mut child = Command::new(example("iot_metrics"))
            .args(&chaos_args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if kills < 2 {
            let before = checkpoints();
            let started = Instant::now();
            // (newest checkpoint of this attempt, samples stored when it was first seen)
            let mut seen: Option<(String, u64)> = None;
            let killed = loop {
                if child.try_wait().unwrap().is_some() {
                    break false;
                }
                std::thread::sleep(Duration::from_millis(100));
                let now = checkpoints();
                let newest = now.last().filter(|c| !before.contains(c)).cloned();
                let stored = count_stored();
                let ready = match (&seen, newest) {
                    (Some((c, n)), Some(new)) if *c == new => stored > *n,
                    (_, Some(new)) => {
                        seen = Some((new, stored));
                        false
                    }
                    _ => false,
                };
                if ready || started.elapsed() > Duration::from_secs(30) {
                    child.kill().unwrap(); // SIGKILL
                    child.wait().unwrap();
                    break true;
                }
            };
            if killed {
                kills += 1;
                continue;
            }
            // It ended before it could be killed: that is the last attempt.
            let out = child.wait_with_output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr).to_string();
            assert!(out.status.success(), "{stderr}");
            break stderr;
        }
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{stderr}");
        break stderr;
    };
    assert!(t0.elapsed() < Duration::from_secs(300));
    assert!(kills >= 1, "the job ended before it could be killed");
    assert!(last.contains("restored from checkpoint"), "{last}");
    eprintln!("last attempt: {last}");
    // The last attempt sent at least what was missing. When it replayed samples written after
    // its checkpoint, Prometheus accepted the exact duplicates of each series' newest sample
    // and refused the older ones as out of order, which the sink isolated and counted: then it
    // sent more. When the kill came before anything after the checkpoint was sent, exactly as
    // many.
    let counter = |what: &str| -> u64 {
        last.split(what)
            .next()
            .and_then(|s| s.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no '{what}' in {last}"))
    };
    let sent = counter(" samples in ");
    let replayed = counter(" replayed duplicates");
    let chaos_label_selector = format!(r#"{{run="{chaos_label}"}}"#);
    let total: usize = stored(&chaos_label_selector, &["run"])
        .values()
        .map(|v| v.len())
        .sum();
    assert!(
        sent + replayed >= (total - stored_before_last) as u64,
        "the restored attempt sent less than was missing: {sent} sent, {replayed} replayed, {} missing",
        total - stored_before_last
    );

    let clean = stored(&format!(r#"{{run="{clean_label}"}}"#), &["run"]);
    let chaos = stored(&format!(r#"{{run="{chaos_label}"}}"#), &["run"]);
    let samples: usize = clean.values().map(|v| v.len()).sum();
    assert!(
        clean.len() > 2_000 && samples > 10_000,
        "{} series, {samples} samples",
        clean.len()
    );
    if clean != chaos {
        let missing: Vec<_> = clean
            .keys()
            .filter(|k| chaos.get(*k) != clean.get(*k))
            .take(3)
            .collect();
        panic!(
            "the restored run stored other samples: {} vs {} series; first differences: {missing:?}",
            clean.len(),
            chaos.len()
        );
    }
}

#[test]
fn enrichment_from_postgres_gives_the_same_output_as_the_builtin_table() {
    let pg = service_var("postgres", "POSTGRES_URL");
    let args = [
        "--vehicles",
        "120",
        "--events-per-vehicle",
        "60",
        "--start-ms",
        "1700000000000",
        "-p",
        "2",
    ];
    let builtin = stdout_lines(&args);
    let out = Command::new(example("iot_metrics"))
        .args([&args[..], &["--postgres", pg.as_str()]].concat())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let mut from_pg: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.split_once("> ").map_or(l, |x| x.1).to_string())
        .collect();
    from_pg.sort();
    assert_eq!(from_pg, builtin);
    // 120 vehicles: one query per vehicle (more only if a lookup timed out and was retried),
    // the cache answers the rest; vehicle 99 has no row.
    let line = stderr
        .lines()
        .find(|l| l.contains("postgres lookups"))
        .expect("lookup stats");
    let n = |what: &str| -> u64 {
        let i = line.find(what).unwrap();
        line[..i]
            .trim_end()
            .rsplit([' ', ':'])
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(n(" queries") >= 120, "{line}");
    assert!(n(" cache hits") > 5_000, "{line}");
    assert!(n(" without a row") >= 1, "{line}");
}
