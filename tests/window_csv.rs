//! The `window_csv` conformance harness on small, hand-checked cases. Every expected output
//! below was worked out by hand from Flink's window semantics and confirmed against Apache
//! Flink 2.3 with the reference job (scripts/flink-reference/WindowCsv.java); the random
//! comparison lives in scripts/window-conformance.
//!
//! Watermark: after every record, max_ts − D − 1. A window fires when the watermark reaches
//! its end − 1, is cleaned up when it reaches end − 1 + L, and a record is late when every
//! window it belongs to is cleaned up.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `target/<profile>/examples/window_csv`, built by `cargo test` before the tests run.
fn window_csv() -> PathBuf {
    let mut p = std::env::current_exe().unwrap();
    p.pop();
    if p.ends_with("deps") {
        p.pop();
    }
    let p = p.join("examples").join("window_csv");
    assert!(p.exists(), "example binary {} not built", p.display());
    p
}

struct Run {
    out: Vec<String>,
    late: Vec<String>,
}

fn sorted_lines(path: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

fn exec(dir: &Path, input: &str, args: &[&str]) -> Output {
    let inp = dir.join("in.csv");
    std::fs::write(&inp, input).unwrap();
    Command::new(window_csv())
        .arg("--input")
        .arg(&inp)
        .arg("--output")
        .arg(dir.join("out.csv"))
        .arg("--late-output")
        .arg(dir.join("late.csv"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap()
}

/// Runs window_csv on `input` with `args` (plus input, output and late output files).
fn run(input: &str, args: &[&str]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let o = exec(dir.path(), input, args);
    assert!(
        o.status.success(),
        "window_csv {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    Run {
        out: sorted_lines(&dir.path().join("out.csv")),
        late: sorted_lines(&dir.path().join("late.csv")),
    }
}

fn sorted(v: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

/// Checks the output at parallelism 1 and 4 (the window operator's parallelism must not change
/// the result).
fn check(input: &str, args: &[&str], out: &[&str], late: &[&str]) {
    for p in ["1", "4"] {
        let mut a = args.to_vec();
        a.extend(["--parallelism", p]);
        let r = run(input, &a);
        assert_eq!(r.out, sorted(out), "output of {a:?}");
        assert_eq!(r.late, sorted(late), "late output of {a:?}");
    }
}

#[test]
fn tumbling_windows_and_a_late_record() {
    // a,25 moves the watermark to 24: [0,10) fires and is cleaned up, so a,2 is late.
    check(
        "key,event_time_ms,value\na,1,5\na,3,2\nb,12,1\na,25,7\na,2,9\n",
        &["--window", "tumbling:10"],
        &["a,0,10,2,7,2,5", "b,10,20,1,1,1,1", "a,20,30,1,7,7,7"],
        &["a,2,9"],
    );
}

#[test]
fn sliding_windows_whose_size_is_not_a_multiple_of_the_slide() {
    // Size 10, slide 4: a record at t is in the windows starting at floor(t/4)*4, −4, −8 that
    // still contain t; −3 is in [−12,−2), [−8,2) and [−4,6).
    check(
        "a,-3,10\na,5,1\na,9,2\na,13,4\n",
        &["--window", "sliding:10:4"],
        &[
            "a,-12,-2,1,10,10,10",
            "a,-8,2,1,10,10,10",
            "a,-4,6,2,11,1,10",
            "a,0,10,2,3,1,2",
            "a,4,14,3,7,1,4",
            "a,8,18,2,6,2,4",
            "a,12,22,1,4,4,4",
        ],
        &[],
    );
}

#[test]
fn sliding_windows_with_gaps_drop_records_between_windows() {
    // Size 3, slide 5: windows [0,3), [5,8), ...; a record at 4 belongs to no window. It is
    // on time, so it is dropped without going to the late output; a,1 after the watermark
    // passed 2 + L is late.
    check(
        "a,0,1\na,4,2\na,6,3\na,20,4\na,1,5\n",
        &["--window", "sliding:3:5", "--allowed-lateness", "2ms"],
        &["a,0,3,1,1,1,1", "a,5,8,1,3,3,3", "a,20,23,1,4,4,4"],
        &["a,1,5"],
    );
}

#[test]
fn allowed_lateness_fires_the_window_again_then_late_records_go_to_the_side_output() {
    // L = 5: [0,10) fires at watermark 11, fires again for a,3 (watermark 11 < 9 + 5) and is
    // cleaned up at watermark 15, after which a,5 is late.
    check(
        "a,1,1\na,12,2\na,3,3\na,16,4\na,5,5\n",
        &["--window", "tumbling:10", "--allowed-lateness", "5ms"],
        &["a,0,10,1,1,1,1", "a,0,10,2,4,1,3", "a,10,20,2,6,2,4"],
        &["a,5,5"],
    );
}

#[test]
fn out_of_orderness_keeps_records_on_time() {
    // D = 5: a,12 only moves the watermark to 6, so a,3 still counts in [0,10).
    check(
        "a,1,1\na,12,2\na,3,3\na,30,4\na,4,9\n",
        &["--window", "tumbling:10", "--out-of-orderness", "5ms"],
        &["a,0,10,2,4,1,3", "a,10,20,1,2,2,2", "a,30,40,1,4,4,4"],
        &["a,4,9"],
    );
}

#[test]
fn a_late_record_bridges_two_sessions() {
    // Gap 5, L = 20. [0,5) and [8,13) have fired; a,4 opens [4,9), which touches both: they
    // merge into [0,13), which fires at once because the watermark (19) is past its end. At
    // watermark 49 everything up to [20,25) is cleaned up, so a,2 is late.
    check(
        "a,0,1\na,8,2\na,20,3\na,4,4\na,50,5\na,2,6\n",
        &["--window", "session:5", "--allowed-lateness", "20ms"],
        &[
            "a,0,5,1,1,1,1",
            "a,8,13,1,2,2,2",
            "a,0,13,3,7,1,4",
            "a,20,25,1,3,3,3",
            "a,50,55,1,5,5,5",
        ],
        &["a,2,6"],
    );
}

#[test]
fn sessions_merge_on_time_and_keys_with_one_record() {
    // Gap 3: [0,3) and [2,5) overlap, [5,8) touches [0,5): they merge into [0,8); a,4 arrives
    // out of order but within D; duplicate timestamps count twice; b has one record.
    check(
        "a,0,1\na,2,2\nb,3,7\na,5,4\na,4,3\na,4,3\na,20,5\n",
        &["--window", "session:3", "--out-of-orderness", "2ms"],
        &["a,0,8,5,13,1,4", "b,3,6,1,7,7,7", "a,20,23,1,5,5,5"],
        &[],
    );
}

#[test]
fn early_firing_every_e_that_does_not_divide_the_window() {
    // ContinuousEventTimeTrigger(4) on [0,10): first fire time 1 − 1 % 4 + 4 = 4, then 8, then
    // the end (9). [10,20) only fires at the end of input, when the final watermark walks its
    // timers 12, 16, 19: three identical firings.
    check(
        "a,1,1\na,6,2\na,9,3\na,11,4\n",
        &["--window", "tumbling:10", "--early-fire-every", "4ms"],
        &[
            "a,0,10,2,3,1,2",
            "a,0,10,3,6,1,3",
            "a,0,10,3,6,1,3",
            "a,10,20,1,4,4,4",
            "a,10,20,1,4,4,4",
            "a,10,20,1,4,4,4",
        ],
        &[],
    );
}

#[test]
fn early_firing_rounds_negative_times_toward_zero_as_java() {
    // Flink computes the first fire time as ts − ts % E with Java's truncating %: for −7 and
    // E = 4 that is −4 + 4 = 0, past the window's last ms (−1), so [−10,0) fires once; floor
    // rounding would fire at −4 too.
    check(
        "a,-7,1\n",
        &["--window", "tumbling:10", "--early-fire-every", "4ms"],
        &["a,-10,0,1,1,1,1"],
        &[],
    );
}

#[test]
fn parallelism_does_not_change_the_result() {
    // A few hundred records over 23 keys, out of order, some late; sessions with lateness and
    // early firing.
    let mut input = String::new();
    let mut x: u64 = 12345;
    let mut t: i64 = -50;
    for _ in 0..400 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let r = (x >> 33) as i64;
        t += r % 4;
        let ts = t - (r / 7) % 30;
        input.push_str(&format!("k{},{},{}\n", (r / 100) % 23, ts, r % 50 - 25));
    }
    for window in ["tumbling:7", "sliding:10:3", "session:4"] {
        let args = [
            "--window",
            window,
            "--out-of-orderness",
            "3ms",
            "--allowed-lateness",
            "5ms",
            "--early-fire-every",
            "3ms",
        ];
        let p1 = run(&input, &[&args[..], &["-p", "1"]].concat());
        let p4 = run(&input, &[&args[..], &["-p", "4"]].concat());
        assert!(p1.out.len() > 50, "{window}: {} lines", p1.out.len());
        assert!(!p1.late.is_empty(), "{window}: some records are late");
        assert_eq!(p1.out, p4.out, "{window}");
        assert_eq!(p1.late, p4.late, "{window}");
    }
}

#[test]
fn a_malformed_line_fails_the_run_and_names_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let o = exec(
        dir.path(),
        "a,1,5\na,3,2\nx,notanumber,3\na,25,7\n",
        &["--window", "tumbling:10"],
    );
    assert!(!o.status.success(), "a malformed line fails the run");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("in.csv:3"), "names the line: {err}");
    assert!(err.contains("notanumber"), "{err}");
}

#[test]
fn dead_letter_takes_malformed_lines_and_the_run_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let dead = dir.path().join("dead.jsonl");
    let o = exec(
        dir.path(),
        "a,1,5\na,3,2\nx,notanumber,3\na,25,7\nonly,two\n",
        &[
            "--window",
            "tumbling:10",
            "--bad-lines",
            &format!("dead-letter:{}", dead.display()),
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        sorted_lines(&dir.path().join("out.csv")),
        sorted(&["a,0,10,2,7,2,5", "a,20,30,1,7,7,7"])
    );
    let dl = std::fs::read_to_string(&dead).unwrap();
    let lines: Vec<&str> = dl.lines().collect();
    assert_eq!(lines.len(), 2, "{dl}");
    assert!(
        lines[0].contains("notanumber") && lines[0].contains("\"line\":3"),
        "{dl}"
    );
    assert!(lines[1].contains("\"line\":5"), "{dl}");
}

#[test]
fn window_bounds_wrap_like_java_longs_at_the_ends_of_the_timeline() {
    // Flink computes window bounds in Java longs: next to i64::MAX the end (start + size)
    // wraps to near i64::MIN, and so does the last ms (end − 1), so the window fires at the
    // next watermark and is cleaned up with it; a,MAX−3 then finds it late and, being ahead of
    // the watermark, is dropped without going to the late output. (Weir used to panic here.)
    check(
        "a,9223372036854775800,1\na,9223372036854775804,2\n",
        &["--window", "tumbling:10"],
        &["a,9223372036854775800,-9223372036854775806,1,1,1,1"],
        &[],
    );
    // Next to i64::MIN the start wraps to near i64::MAX instead.
    check(
        "a,-9223372036854775806,1\na,0,2\n",
        &["--window", "tumbling:10"],
        &[
            "a,9223372036854775806,-9223372036854775800,1,1,1,1",
            "a,0,10,1,2,2,2",
        ],
        &[],
    );
    check(
        "a,9223372036854775800,1\n",
        &["--window", "sliding:10:3"],
        &[
            "a,9223372036854775791,9223372036854775801,1,1,1,1",
            "a,9223372036854775794,9223372036854775804,1,1,1,1",
            "a,9223372036854775797,9223372036854775807,1,1,1,1",
            "a,9223372036854775800,-9223372036854775806,1,1,1,1",
        ],
        &[],
    );
    // A session's end is ts + gap in Java longs too (Weir used to saturate at i64::MAX).
    check(
        "a,9223372036854775800,1\n",
        &["--window", "session:10"],
        &["a,9223372036854775800,-9223372036854775806,1,1,1,1"],
        &[],
    );
}

#[test]
fn the_late_record_check_adds_the_lateness_in_java_longs() {
    // Size 3, slide 5: a,3 falls between windows. Flink calls a record in no window late when
    // ts + L <= watermark; with L = i64::MAX the sum wraps negative, so a,3 goes to the late
    // output (Weir used to saturate and drop it).
    check(
        "a,0,1\na,100,2\na,3,3\n",
        &[
            "--window",
            "sliding:3:5",
            "--allowed-lateness",
            "9223372036854775807ms",
        ],
        &["a,0,3,1,1,1,1", "a,100,103,1,2,2,2"],
        &["a,3,3"],
    );
}

#[test]
fn zero_intervals_are_rejected() {
    // Flink fails on them too: ContinuousEventTimeTrigger.of(0) divides by zero on the first
    // record; window assigners reject a zero size, slide or gap.
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["--window", "tumbling:10", "--early-fire-every", "0ms"][..],
        &["--window", "tumbling:0"][..],
        &["--window", "sliding:10:0"][..],
        &["--window", "session:0s"][..],
    ] {
        let o = exec(dir.path(), "a,1,1\n", args);
        assert!(!o.status.success(), "{args:?} must fail");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !err.contains("panicked"),
            "{args:?}: a clean error, not a panic: {err}"
        );
    }
}
