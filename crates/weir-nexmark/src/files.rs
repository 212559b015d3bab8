//! Generated events in files, for Weir and Apache Flink to read the same input.
//!
//! - **JSON lines**: one event per line in the nexmark/nexmark suite's one-table layout,
//!   `{"event_type":2,"person":null,"auction":null,"bid":{"auction":…,"dateTime":…}}`, in event
//!   order (so in time order).
//! - **CSV**: a directory with `person.csv`, `auction.csv` and `bid.csv`, no header, the model's
//!   fields in declaration order.
//!
//! Times are integers, ms since the epoch. The crate README has the Flink DDL for both.
//! With `parts > 1`, event `n` goes to part `n mod parts` (`events-0.jsonl`, …, or
//! `person-0.csv`, …): each part is in time order, and an engine can read them in parallel.
use crate::generator::NexmarkConfig;
use crate::model::{Auction, Bid, Event, Person};
use serde::Serialize;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;
use weir::connectors::FileSource;
use weir::{DataStream, StreamEnv, WatermarkStrategy};

/// How generated events are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One file (per part) of JSON lines with the `event_type` discriminator.
    Json,
    /// A person, an auction and a bid file (per part), CSV.
    Csv,
}

/// What was written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Written {
    /// People written.
    pub persons: u64,
    /// Auctions written.
    pub auctions: u64,
    /// Bids written.
    pub bids: u64,
    /// The files, in part order.
    pub files: Vec<PathBuf>,
}

fn io(what: &str, path: &Path, e: impl std::fmt::Display) -> String {
    format!("{what} {}: {e}", path.display())
}

fn create(path: &Path) -> Result<BufWriter<File>, String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| io("creating", dir, e))?;
    }
    let f = File::create(path).map_err(|e| io("creating", path, e))?;
    Ok(BufWriter::with_capacity(1 << 20, f))
}

fn csv_writer(path: &Path) -> Result<csv::Writer<BufWriter<File>>, String> {
    Ok(csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(create(path)?))
}

/// The file names of a format: `out` itself for one JSON part, else numbered parts in `out`
/// (a directory for CSV, a directory of `events-i.jsonl` for several JSON parts).
pub fn part_paths(format: Format, out: &Path, parts: usize) -> Vec<Vec<PathBuf>> {
    (0..parts.max(1))
        .map(|i| match (format, parts) {
            (Format::Json, 0 | 1) => vec![out.to_path_buf()],
            (Format::Json, _) => vec![out.join(format!("events-{i}.jsonl"))],
            (Format::Csv, 0 | 1) => ["person", "auction", "bid"]
                .iter()
                .map(|k| out.join(format!("{k}.csv")))
                .collect(),
            (Format::Csv, _) => ["person", "auction", "bid"]
                .iter()
                .map(|k| out.join(format!("{k}-{i}.csv")))
                .collect(),
        })
        .collect()
}

enum PartWriter {
    Json(BufWriter<File>),
    Csv(Box<[csv::Writer<BufWriter<File>>; 3]>),
}

fn csv_row<T: Serialize>(w: &mut csv::Writer<BufWriter<File>>, v: &T) -> Result<(), String> {
    w.serialize(v).map_err(|e| format!("writing CSV: {e}"))
}

/// Writes the events of `cfg` (which must be bounded) to `out` in `format`, in `parts` parts.
pub fn write_events(
    cfg: &NexmarkConfig,
    format: Format,
    out: &Path,
    parts: usize,
) -> Result<Written, String> {
    cfg.validate()?;
    let count = cfg
        .events
        .ok_or("set a number of events to write them to files")?;
    let paths = part_paths(format, out, parts);
    let mut writers = Vec::with_capacity(paths.len());
    for p in &paths {
        writers.push(match format {
            Format::Json => PartWriter::Json(create(&p[0])?),
            Format::Csv => PartWriter::Csv(Box::new([
                csv_writer(&p[0])?,
                csv_writer(&p[1])?,
                csv_writer(&p[2])?,
            ])),
        });
    }
    let mut written = Written {
        files: paths.iter().flatten().cloned().collect(),
        ..Written::default()
    };
    let mut line = Vec::with_capacity(1024);
    let n_parts = writers.len() as u64;
    for n in 0..count {
        let e = cfg.event(n);
        match &e {
            Event::Person(_) => written.persons += 1,
            Event::Auction(_) => written.auctions += 1,
            Event::Bid(_) => written.bids += 1,
        }
        match &mut writers[(n % n_parts) as usize] {
            PartWriter::Json(w) => {
                line.clear();
                serde_json::to_writer(&mut line, &e).map_err(|e| format!("JSON: {e}"))?;
                line.push(b'\n');
                w.write_all(&line)
                    .map_err(|x| format!("writing events: {x}"))?;
            }
            PartWriter::Csv(ws) => match &e {
                Event::Person(p) => csv_row(&mut ws[0], p)?,
                Event::Auction(a) => csv_row(&mut ws[1], a)?,
                Event::Bid(b) => csv_row(&mut ws[2], b)?,
            },
        }
    }
    for w in writers {
        match w {
            PartWriter::Json(mut w) => w.flush().map_err(|e| format!("writing events: {e}"))?,
            PartWriter::Csv(ws) => {
                for mut w in *ws {
                    w.flush().map_err(|e| format!("writing CSV: {e}"))?;
                }
            }
        }
    }
    Ok(written)
}

/// Writes a side table for q13: `rows` lines `i,i` for `i` in `0..rows` (the suite's
/// `SideInputGenerator`).
pub fn write_side_input(path: &Path, rows: u64) -> Result<(), String> {
    let mut w = create(path)?;
    for i in 0..rows {
        writeln!(w, "{i},{i}").map_err(|e| io("writing", path, e))?;
    }
    w.flush().map_err(|e| io("writing", path, e))
}

fn strategy<T: 'static>(delay_ms: u64, ts: fn(&T) -> i64) -> WatermarkStrategy<T> {
    WatermarkStrategy::bounded_out_of_orderness(Duration::from_millis(delay_ms))
        .with_timestamps(move |v: &T, _| ts(v))
}

/// The events of a JSON-lines file (or of every file in a directory: one split each), with
/// timestamps and watermarks (`delay_ms` behind the highest time) per file.
pub fn read_json_lines(
    env: &StreamEnv,
    path: impl AsRef<Path>,
    delay_ms: u64,
) -> DataStream<Event> {
    env.source(FileSource::<Event>::json_lines(path))
        .name("nexmark_json")
        .assign_timestamps(strategy(delay_ms, Event::date_time))
}

/// The events of a CSV directory written by [`write_events`] (one or several parts), with
/// timestamps and watermarks per file. The three kinds are read side by side, so they interleave
/// differently from the generated order (each kind stays in its order).
pub fn read_csv(
    env: &StreamEnv,
    dir: impl AsRef<Path>,
    delay_ms: u64,
) -> Result<DataStream<Event>, String> {
    let dir = dir.as_ref();
    let files = |kind: &str| -> Result<Vec<PathBuf>, String> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| io("listing", dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                    n == format!("{kind}.csv")
                        || (n.starts_with(&format!("{kind}-")) && n.ends_with(".csv"))
                })
            })
            .collect();
        v.sort();
        if v.is_empty() {
            return Err(format!("no {kind}.csv in {}", dir.display()));
        }
        Ok(v)
    };
    let mut streams = Vec::new();
    for p in files("person")? {
        streams.push(
            env.source(FileSource::<Person>::csv(p))
                .assign_timestamps(strategy(delay_ms, |p: &Person| p.date_time))
                .map(Event::Person),
        );
    }
    for p in files("auction")? {
        streams.push(
            env.source(FileSource::<Auction>::csv(p))
                .assign_timestamps(strategy(delay_ms, |a: &Auction| a.date_time))
                .map(Event::Auction),
        );
    }
    for p in files("bid")? {
        streams.push(
            env.source(FileSource::<Bid>::csv(p))
                .assign_timestamps(strategy(delay_ms, |b: &Bid| b.date_time))
                .map(Event::Bid),
        );
    }
    let first = streams.remove(0);
    Ok(first.union(&streams))
}
