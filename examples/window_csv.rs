//! Conformance harness for window semantics: reads `key,event_time_ms,value` lines, windows them
//! per key with Flink's semantics, and writes one line per firing:
//! `key,window_start_ms,window_end_ms,count,sum,min,max`.
//!
//!     window_csv --input events.csv --output out.csv [--late-output late.csv]
//!                --window tumbling:SIZE | sliding:SIZE:SLIDE | session:GAP
//!                [--out-of-orderness D] [--allowed-lateness L] [--early-fire-every E]
//!                [--parallelism P] [--bad-lines fail|dead-letter:FILE]
//!
//! Durations take ms, s or min suffixes. Watermarks: bounded out-of-orderness D, emitted after
//! every record (wm = max_ts − D − 1). The file is read in order by one subtask; P is the
//! parallelism of the window operator and does not change the results.
use anyhow::{bail, Context};
use clap::Parser;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use weir::prelude::*;
use weir::windows::{Session, Sliding, TimeWindow, Tumbling};
use weir::{parse_duration_ms, AggregateFunction};

#[derive(Parser)]
#[command(about = "Window a CSV of key,event_time_ms,value with Flink's semantics")]
struct Cli {
    /// Input CSV: key,event_time_ms,value per line.
    #[arg(long)]
    input: PathBuf,
    /// Output CSV: key,window_start_ms,window_end_ms,count,sum,min,max per firing.
    #[arg(long)]
    output: PathBuf,
    /// Records too late for every window, verbatim.
    #[arg(long)]
    late_output: Option<PathBuf>,
    /// tumbling:SIZE | sliding:SIZE:SLIDE | session:GAP
    #[arg(long)]
    window: String,
    /// Bounded out-of-orderness of the watermark.
    #[arg(long, default_value = "0ms")]
    out_of_orderness: String,
    /// How long after its end a window still accepts late records (and fires again).
    #[arg(long, default_value = "0ms")]
    allowed_lateness: String,
    /// Emit early results every E of event time before a window closes.
    #[arg(long)]
    early_fire_every: Option<String>,
    /// Parallelism of the window operator.
    #[arg(long, short = 'p', default_value_t = 1)]
    parallelism: usize,
    /// `fail` (default): a malformed line fails the run; `dead-letter:FILE`: it goes to FILE.
    #[arg(long, default_value = "fail")]
    bad_lines: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Event {
    key: String,
    ts: i64,
    value: i64,
    raw: String,
}

fn parse_line(line: String) -> Result<Option<Event>, String> {
    let mut r = csv::ReaderBuilder::new()
        .has_headers(false)
        .trim(csv::Trim::All)
        .from_reader(line.as_bytes());
    let rec = match r.records().next() {
        Some(Ok(rec)) => rec,
        Some(Err(e)) => return Err(e.to_string()),
        None => return Err("empty line".into()),
    };
    if rec.len() != 3 {
        return Err(format!(
            "expected 3 fields (key,event_time_ms,value), found {}",
            rec.len()
        ));
    }
    let ts = rec[1]
        .parse::<i64>()
        .map_err(|e| format!("event_time_ms '{}': {e}", &rec[1]))?;
    let value = rec[2]
        .parse::<i64>()
        .map_err(|e| format!("value '{}': {e}", &rec[2]))?;
    Ok(Some(Event {
        key: rec[0].to_string(),
        ts,
        value,
        raw: line,
    }))
}

/// count, sum, min, max (sum wraps like Java's long).
#[derive(Clone, Copy)]
struct Stats;
impl AggregateFunction<Event, (u64, i64, i64, i64), (u64, i64, i64, i64)> for Stats {
    fn create_accumulator(&self) -> (u64, i64, i64, i64) {
        (0, 0, i64::MAX, i64::MIN)
    }
    fn add(&self, a: &mut (u64, i64, i64, i64), e: Event) {
        a.0 += 1;
        a.1 = a.1.wrapping_add(e.value);
        a.2 = a.2.min(e.value);
        a.3 = a.3.max(e.value);
    }
    fn get_result(&self, a: &(u64, i64, i64, i64)) -> (u64, i64, i64, i64) {
        *a
    }
    fn merge(&self, a: &mut (u64, i64, i64, i64), b: (u64, i64, i64, i64)) {
        a.0 += b.0;
        a.1 = a.1.wrapping_add(b.1);
        a.2 = a.2.min(b.2);
        a.3 = a.3.max(b.3);
    }
}

type Row = (String, i64, i64, u64, i64, i64, i64);

#[allow(clippy::ptr_arg)] // the window function receives the key as &K
fn row(key: &String, w: &TimeWindow, s: (u64, i64, i64, i64)) -> Row {
    (key.clone(), w.start, w.end, s.0, s.1, s.2, s.3)
}

fn main() -> anyhow::Result<()> {
    weir::init_logging();
    let cli = Cli::parse();
    let d = parse_duration_ms(&cli.out_of_orderness)?;
    let lateness = parse_duration_ms(&cli.allowed_lateness)?;
    let early = cli
        .early_fire_every
        .as_deref()
        .map(parse_duration_ms)
        .transpose()?;
    if early == Some(0) {
        // Flink's ContinuousEventTimeTrigger.of(0) fails the job (division by zero).
        bail!("--early-fire-every must be at least 1ms");
    }
    let dead_letters = match cli.bad_lines.as_str() {
        "fail" => None,
        s => match s.strip_prefix("dead-letter:") {
            Some(f) if !f.is_empty() => Some(PathBuf::from(f)),
            _ => bail!("--bad-lines takes fail or dead-letter:FILE, not '{s}'"),
        },
    };
    if !cli.input.is_file() {
        bail!("input {} is not a readable file", cli.input.display());
    }
    let env = StreamEnv::new().with_parallelism(cli.parallelism.max(1));
    let policy = if dead_letters.is_some() {
        BadRecordPolicy::DeadLetter
    } else {
        BadRecordPolicy::Fail
    };
    let lines = env.source(FileSource::text(&cli.input)).set_parallelism(1);
    let parsed = lines
        .try_map(policy, |l: String| {
            // A header line is allowed.
            if l.trim_start().starts_with("key,event_time_ms") {
                return Ok(None);
            }
            parse_line(l)
        })
        .name("parse")
        .set_parallelism(1);
    if let Some(path) = &dead_letters {
        parsed
            .dead_letters()
            .sink(FileSink::json_lines(path))
            .set_parallelism(1);
    }
    let events = parsed
        .flat_map(|e: Option<Event>| e)
        .set_parallelism(1)
        .assign_timestamps(
            WatermarkStrategy::bounded_out_of_orderness(millis(d as u64))
                .with_timestamps(|e: &Event, _| e.ts)
                .per_record(),
        )
        .set_parallelism(1);
    let late = OutputTag::<Event>::new("late");
    let keyed = events.key_by(|e: &Event| e.key.clone());
    let spec: Vec<&str> = cli.window.split(':').collect();
    let ms = |s: &str| -> anyhow::Result<i64> {
        let v = parse_duration_ms(s).with_context(|| format!("in --window {}", cli.window))?;
        if v <= 0 {
            bail!(
                "window sizes, slides and gaps must be positive (--window {})",
                cli.window
            );
        }
        Ok(v)
    };
    let lateness_d = millis(lateness as u64);
    macro_rules! finish {
        ($w:expr) => {{
            let mut w = $w.allowed_lateness(lateness_d);
            if cli.late_output.is_some() {
                w = w.side_output_late_data(&late);
            }
            if let Some(e) = early {
                w = w.early_fire_every(millis(e as u64));
            }
            w.aggregate_with(Stats, row)
        }};
    }
    let out: DataStream<Row> = match spec.as_slice() {
        ["tumbling", size] => finish!(keyed.window(Tumbling::event_time(ms(size)?))),
        ["sliding", size, slide] => {
            finish!(keyed.window(Sliding::event_time(ms(size)?, ms(slide)?)))
        }
        ["session", gap] => finish!(keyed.window(Session::<Event>::event_time(ms(gap)?))),
        _ => bail!(
            "--window takes tumbling:SIZE, sliding:SIZE:SLIDE or session:GAP, not '{}'",
            cli.window
        ),
    };
    if let Some(p) = &cli.late_output {
        out.side_output(&late)
            .sink(FileSink::lines(p, |e: &Event| e.raw.clone()))
            .set_parallelism(1);
    }
    out.sink(FileSink::csv(&cli.output)).set_parallelism(1);
    let r = env.execute("window_csv")?;
    let dropped = r.metrics.counter_sum("window", "late_records_dropped");
    eprintln!(
        "window_csv: {} records in {:.2?}; late records: {}",
        r.metrics.counter_sum("parse", "records_in"),
        r.elapsed,
        if cli.late_output.is_some() {
            "written".to_string()
        } else {
            format!("{dropped} dropped")
        }
    );
    Ok(())
}
