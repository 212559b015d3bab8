//! Runs the example binaries as a user would and checks what they print.
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `target/<profile>/examples/NAME`, built by `cargo test` before the tests run.
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

fn run(name: &str, args: &[&str]) -> (String, String) {
    let out = Command::new(example(name))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{name} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn word_count_matches_an_independent_count_at_any_parallelism() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    let text = "the cat and the hat\nThe end, the END.\n\nit's the cat's\n";
    std::fs::write(&input, text).unwrap();
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    for w in text
        .split(|c: char| !c.is_alphanumeric() && c != '\'')
        .filter(|w| !w.is_empty())
    {
        *expected.entry(w.to_lowercase()).or_default() += 1;
    }
    for p in ["1", "3"] {
        let output = dir.path().join(format!("out{p}.csv"));
        run(
            "word_count",
            &[
                "--input",
                input.to_str().unwrap(),
                "--output",
                output.to_str().unwrap(),
                "-p",
                p,
            ],
        );
        let got: BTreeMap<String, u64> = std::fs::read_to_string(&output)
            .unwrap()
            .lines()
            .map(|l| {
                let (w, c) = l.rsplit_once(',').unwrap();
                (w.to_string(), c.parse().unwrap())
            })
            .collect();
        assert_eq!(got, expected, "parallelism {p}");
    }
}

#[test]
fn rfid_tracker_reports_moves_and_gone_tags() {
    let (out, _) = run("rfid_tracker", &["--tags", "4", "-p", "2"]);
    let lines: Vec<&str> = out
        .lines()
        .map(|l| l.split_once("> ").map_or(l, |x| x.1))
        .collect();
    for tag in 0..4 {
        let arrived = format!("tag {tag} arrived in the waiting room");
        assert_eq!(
            lines.iter().filter(|l| l.ends_with(&arrived)).count(),
            1,
            "{out}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.contains(&format!("tag {tag} moved waiting room -> treatment"))),
            "{out}"
        );
        assert_eq!(
            lines
                .iter()
                .filter(|l| l.contains(&format!("tag {tag} gone")))
                .count(),
            1,
            "{out}"
        );
    }
    // Odd tags vanish in treatment; even ones reach recovery.
    assert!(
        lines
            .iter()
            .any(|l| l.contains("tag 1 gone: not read for 10 min (last in the treatment")),
        "{out}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("tag 2 moved treatment -> recovery")),
        "{out}"
    );
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("tag 1 moved treatment -> recovery")),
        "{out}"
    );
}

#[test]
fn sensors_emits_one_average_per_sensor_and_period() {
    let (out, _) = run(
        "sensors",
        &["--sensors", "4", "--readings", "80", "-p", "2"],
    );
    // 80 readings of 4 sensors = 20 s of event time, jitter up to 2 s: 5 s periods from
    // [-5 s, 0) to [15 s, 20 s).
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.len() >= 4 * 4 && lines.len() <= 4 * 5, "{out}");
    let mut seen = std::collections::HashSet::new();
    for l in &lines {
        let body = l.split_once("> ").map_or(*l, |x| x.1);
        assert!(
            seen.insert(body.split("avg").next().unwrap().to_string()),
            "duplicate period: {l}"
        );
        let c: f64 = body
            .rsplit("avg ")
            .next()
            .unwrap()
            .trim_end_matches(" °C")
            .parse()
            .unwrap();
        assert!((-20.0..60.0).contains(&c), "a Celsius average: {l}");
    }
}

#[test]
fn ctrl_c_cancels_an_unbounded_job_and_exits_zero() {
    ctrl_c_cancels("sensors", &["--unbounded", "--rate", "2000", "-p", "2"]);
}

#[test]
#[cfg(feature = "connectors")] // iot_metrics is built with `--features connectors`
fn ctrl_c_cancels_a_job_started_in_the_background() {
    // iot_metrics runs its job with `execute_async` and waits on the handle: without a
    // --duration it runs until Ctrl-C, which must cancel the job, not kill the process.
    ctrl_c_cancels("iot_metrics", &["--vehicles", "200", "-p", "1"]);
}

fn ctrl_c_cancels(name: &str, args: &[&str]) {
    let mut child = Command::new(example(name))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The job is running once it has written output (Ctrl-C before the job starts kills the
    // process, as for any program); then keep reading so the pipe never fills.
    let (tx, rx) = std::sync::mpsc::channel();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufRead::read_line(&mut stdout, &mut line);
        let _ = tx.send(());
        let _ = std::io::copy(&mut stdout, &mut std::io::sink());
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("the job writes output");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        child.try_wait().unwrap().is_none(),
        "an unbounded job keeps running"
    );
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "job did not stop after Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(err.contains("cancelled"), "{err}");
}

#[test]
fn hourly_counts_final_results_add_up_to_every_impression() {
    let (out, _) = run(
        "hourly_counts",
        &[
            "--campaigns",
            "3",
            "--impressions",
            "6000",
            "--rate",
            "0",
            "-p",
            "2",
        ],
    );
    let mut last: BTreeMap<(String, String), u64> = BTreeMap::new();
    for l in out.lines() {
        let body = l.split_once("> ").map_or(l, |x| x.1);
        let campaign = body.split_whitespace().nth(1).unwrap().to_string();
        let hour = body.split_whitespace().nth(3).unwrap().to_string();
        let n: u64 = body.rsplit(' ').next().unwrap().parse().unwrap();
        let prev = last.insert((campaign, hour), n);
        assert!(
            prev.is_none_or(|p| p < n),
            "counts only grow and repeat nothing: {l}"
        );
    }
    assert_eq!(last.len(), 6, "3 campaigns x 2 hours: {out}");
    assert_eq!(last.values().sum::<u64>(), 6000);
}
