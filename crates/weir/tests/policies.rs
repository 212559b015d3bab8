//! Bad input under each policy: file sources (CSV, JSON lines) and `try_map`, failing with
//! the position, dropping with a count, or dead-lettering with the raw bytes.
mod common;

use common::*;
use std::path::{Path, PathBuf};
use weir::prelude::*;
use weir::{Position, WeirError};

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
struct Row {
    id: u64,
    name: String,
    score: i64,
}

fn row(id: u64, name: &str, score: i64) -> Row {
    Row {
        id,
        name: name.into(),
        score,
    }
}

#[derive(Clone, Copy, Debug)]
enum Format {
    Csv,
    Json,
}

const BAD_CSV: &str = "3,carol,notanumber";
const BAD_JSON: &str = r#"{"id": 3, "name": "carol", "score": }"#;

/// Writes 4 records whose 3rd (on line 4: a blank line comes first) is malformed.
fn input(dir: &Path, f: Format) -> (PathBuf, &'static str) {
    let (name, lines, bad) = match f {
        Format::Csv => (
            "in.csv",
            vec!["1,alice,10", "", "2,bob,20", BAD_CSV, "4,dave,40"],
            BAD_CSV,
        ),
        Format::Json => (
            "in.jsonl",
            vec![
                r#"{"id": 1, "name": "alice", "score": 10}"#,
                "",
                r#"{"id": 2, "name": "bob", "score": 20}"#,
                BAD_JSON,
                r#"{"id": 4, "name": "dave", "score": 40}"#,
            ],
            BAD_JSON,
        ),
    };
    let path = dir.join(name);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    (path, bad)
}

fn source(env: &StreamEnv, path: &Path, f: Format) -> DataStream<Row> {
    match f {
        Format::Csv => env.source(FileSource::<Row>::csv(path)),
        Format::Json => env.source(FileSource::<Row>::json_lines(path)),
    }
}

fn good_rows() -> Vec<Row> {
    vec![row(1, "alice", 10), row(2, "bob", 20), row(4, "dave", 40)]
}

fn fail_names_operator_subtask_and_line(f: Format) {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = input(dir.path(), f);
    let env = StreamEnv::new().with_parallelism(1);
    let out = CollectSink::new();
    source(&env, &path, f).sink(out.clone());
    let e = run(&env, "fail").unwrap_err();
    let text = e.to_string();
    match &e {
        WeirError::Record {
            operator,
            subtask,
            position,
            ..
        } => {
            assert_eq!(operator, "filesource", "{text}");
            assert_eq!(subtask, "0/1");
            assert_eq!(
                position,
                &Some(Position::Line {
                    file: path.display().to_string(),
                    line: 4
                })
            );
        }
        other => panic!("expected a record error, got {other:?}"),
    }
    assert!(text.contains("'filesource'"), "{text}");
    assert!(text.contains("0/1"), "{text}");
    assert!(
        text.contains(&format!("{}:4", path.display())),
        "names file:line: {text}"
    );
}

#[test]
fn csv_fail_names_operator_subtask_and_line() {
    fail_names_operator_subtask_and_line(Format::Csv);
}

#[test]
fn json_fail_names_operator_subtask_and_line() {
    fail_names_operator_subtask_and_line(Format::Json);
}

fn drop_counts(f: Format) {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = input(dir.path(), f);
    let env = StreamEnv::new().with_parallelism(1);
    let out = CollectSink::new();
    source(&env, &path, f)
        .on_bad_record(BadRecordPolicy::Drop)
        .sink(out.clone());
    let r = run(&env, "drop").unwrap();
    assert_eq!(sorted(&out), good_rows());
    assert_eq!(r.metrics.counter_sum("filesource", "records_dropped"), 1);
    assert_eq!(r.metrics.counter_sum("", "records_dropped"), 1);
}

#[test]
fn csv_drop_is_counted() {
    drop_counts(Format::Csv);
}

#[test]
fn json_drop_is_counted() {
    drop_counts(Format::Json);
}

fn dead_letter_keeps_raw_bytes(f: Format) {
    let dir = tempfile::tempdir().unwrap();
    let (path, bad) = input(dir.path(), f);
    let env = StreamEnv::new().with_parallelism(1);
    let out = CollectSink::new();
    let dl = CollectSink::new();
    let s = source(&env, &path, f).on_bad_record(BadRecordPolicy::DeadLetter);
    s.sink(out.clone());
    s.dead_letters().sink(dl.clone());
    let r = run(&env, "dead letters").unwrap();
    assert_eq!(sorted(&out), good_rows());
    let dls = dl.values();
    assert_eq!(dls.len(), 1, "{dls:?}");
    let d = &dls[0];
    assert_eq!(d.operator, "filesource");
    assert_eq!(d.subtask, 0);
    assert_eq!(
        d.position,
        Some(Position::Line {
            file: path.display().to_string(),
            line: 4
        })
    );
    assert_eq!(d.raw, bad.as_bytes());
    assert!(!d.error.is_empty());
    if let Format::Csv = f {
        assert!(d.error.contains("field 3"), "{}", d.error);
    }
    assert_eq!(r.metrics.counter_sum("", "records_dead_lettered"), 1);
    assert_eq!(r.metrics.counter_sum("", "records_dropped"), 0);
}

#[test]
fn csv_dead_letter_has_raw_bytes_error_and_position() {
    dead_letter_keeps_raw_bytes(Format::Csv);
}

#[test]
fn json_dead_letter_has_raw_bytes_error_and_position() {
    dead_letter_keeps_raw_bytes(Format::Json);
}

#[test]
fn dead_letters_without_a_consumer_are_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = input(dir.path(), Format::Csv);
    let env = StreamEnv::new().with_parallelism(1);
    source(&env, &path, Format::Csv)
        .on_bad_record(BadRecordPolicy::DeadLetter)
        .sink(DiscardSink::new());
    let e = env.execute("no consumer").unwrap_err();
    assert!(matches!(e, WeirError::Config(_)), "{e}");
    assert!(e.to_string().contains("dead letters"), "{e}");
}

#[test]
fn dead_letters_of_every_file_of_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.csv"), "1,a,1\nx\n2,b,2\n").unwrap();
    std::fs::write(dir.path().join("b.csv"), "y\n3,c,3\n").unwrap();
    let env = StreamEnv::new().with_parallelism(2);
    let out = CollectSink::new();
    let dl = CollectSink::new();
    let s = env
        .source(FileSource::<Row>::csv(dir.path()))
        .on_bad_record(BadRecordPolicy::DeadLetter);
    s.sink(out.clone());
    // Across a channel, to one subtask.
    s.dead_letters()
        .global()
        .sink(dl.clone())
        .set_parallelism(1);
    run(&env, "directory").unwrap();
    assert_eq!(
        sorted(&out),
        vec![row(1, "a", 1), row(2, "b", 2), row(3, "c", 3)]
    );
    let mut got: Vec<(String, u64, Vec<u8>)> = dl
        .values()
        .into_iter()
        .map(|d| match d.position {
            Some(Position::Line { file, line }) => (file, line, d.raw),
            other => panic!("{other:?}"),
        })
        .collect();
    got.sort();
    let f = |n: &str| dir.path().join(n).display().to_string();
    assert_eq!(
        got,
        vec![
            (f("a.csv"), 2, b"x".to_vec()),
            (f("b.csv"), 1, b"y".to_vec())
        ]
    );
}

fn numbers(env: &StreamEnv, policy: BadRecordPolicy) -> DataStream<i64> {
    env.from_collection(vec!["1".to_string(), "2".into(), "x".into(), "4".into()])
        .try_map(policy, |s: String| s.parse::<i64>())
}

#[test]
fn try_map_fail_names_operator_subtask_and_position() {
    let env = StreamEnv::new().with_parallelism(1);
    numbers(&env, BadRecordPolicy::Fail).sink(DiscardSink::new());
    let e = run(&env, "try_map fail").unwrap_err();
    let text = e.to_string();
    assert!(
        matches!(&e, WeirError::Record { operator, position: Some(Position::Offset { split, offset: 2 }), .. }
            if operator == "try_map" && split == "collection"),
        "{e:?}"
    );
    assert!(text.contains("'try_map'"), "{text}");
    assert!(text.contains("0/1"), "{text}");
    assert!(text.contains("collection@2"), "{text}");
    assert!(text.contains("invalid digit"), "{text}");
}

#[test]
fn try_map_drop_is_counted() {
    let env = StreamEnv::new().with_parallelism(1);
    let out = CollectSink::new();
    numbers(&env, BadRecordPolicy::Drop).sink(out.clone());
    let r = run(&env, "try_map drop").unwrap();
    assert_eq!(out.values(), vec![1, 2, 4]);
    assert_eq!(r.metrics.counter_sum("try_map", "records_dropped"), 1);
}

#[test]
fn try_map_dead_letter_has_the_record_as_json() {
    let env = StreamEnv::new().with_parallelism(1);
    let out = CollectSink::new();
    let dl = CollectSink::new();
    let s = numbers(&env, BadRecordPolicy::DeadLetter);
    s.sink(out.clone());
    s.dead_letters()
        .rebalance()
        .sink(dl.clone())
        .set_parallelism(2);
    run(&env, "try_map dead letter").unwrap();
    assert_eq!(out.values(), vec![1, 2, 4]);
    let dls = dl.values();
    assert_eq!(dls.len(), 1);
    assert_eq!(dls[0].operator, "try_map");
    assert_eq!(dls[0].raw, br#""x""#);
    assert!(dls[0].error.contains("invalid digit"), "{}", dls[0].error);
    assert_eq!(
        dls[0].position,
        Some(Position::Offset {
            split: "collection".into(),
            offset: 2
        })
    );
}

#[test]
fn try_map_dead_letters_without_a_consumer_are_a_config_error() {
    let env = StreamEnv::new().with_parallelism(1);
    numbers(&env, BadRecordPolicy::DeadLetter).sink(DiscardSink::new());
    let e = env.execute("no consumer").unwrap_err();
    assert!(matches!(e, WeirError::Config(_)), "{e}");
}

#[test]
fn on_bad_record_on_an_operator_is_a_config_error() {
    let env = weir::StreamEnv::new().with_parallelism(1);
    env.from_collection(vec![1u32])
        .map(|x| x)
        .on_bad_record(weir::BadRecordPolicy::Drop)
        .sink(weir::connectors::DiscardSink::new());
    let err = env.execute("bad").unwrap_err();
    assert!(matches!(err, weir::WeirError::Config(_)), "{err}");
    assert!(
        err.to_string().contains("on_bad_record applies to sources"),
        "{err}"
    );
}
