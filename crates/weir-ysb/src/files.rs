//! Event and table files that Weir and Apache Flink both read.
//!
//! Events: CSV lines `user_id,page_id,ad_id,ad_type,event_type,event_time,ip`, in event order,
//! in one file, or in `parts` files `PATH/events-i.csv` (event `n` in part `n mod parts`, each
//! in time order, so engines read them in parallel). The join table: `ad_id,campaign_id` lines.
use crate::{AdEvent, YsbConfig};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;
use weir::prelude::*;

fn io(what: &str, p: &Path, e: impl std::fmt::Display) -> String {
    format!("{what} {}: {e}", p.display())
}

/// Writes the events of `cfg` to `out` (a file when `parts` is 1, else a directory of parts).
/// Returns the files written.
pub fn write_events(cfg: &YsbConfig, out: &Path, parts: usize) -> Result<Vec<PathBuf>, String> {
    let parts = parts.max(1);
    let paths: Vec<PathBuf> = if parts == 1 {
        vec![out.to_path_buf()]
    } else {
        std::fs::create_dir_all(out).map_err(|e| io("creating", out, e))?;
        (0..parts)
            .map(|i| out.join(format!("events-{i}.csv")))
            .collect()
    };
    let mut ws = paths
        .iter()
        .map(|p| {
            File::create(p)
                .map(|f| {
                    csv::WriterBuilder::new()
                        .has_headers(false)
                        .from_writer(BufWriter::with_capacity(1 << 20, f))
                })
                .map_err(|e| io("creating", p, e))
        })
        .collect::<Result<Vec<_>, _>>()?;
    for n in 0..cfg.events {
        let w = &mut ws[(n % parts as u64) as usize];
        w.serialize(cfg.event(n))
            .map_err(|e| io("writing", out, e))?;
    }
    for (w, p) in ws.iter_mut().zip(&paths) {
        w.flush().map_err(|e| io("writing", p, e))?;
    }
    Ok(paths)
}

/// Writes the ad → campaign table of `cfg` (`ad_id,campaign_id` lines).
pub fn write_ads(cfg: &YsbConfig, path: &Path) -> Result<(), String> {
    let f = File::create(path).map_err(|e| io("creating", path, e))?;
    let mut w = BufWriter::new(f);
    for i in 0..cfg.ads() {
        writeln!(w, "{},{}", cfg.ad_id(i), cfg.campaign_of(i))
            .map_err(|e| io("writing", path, e))?;
    }
    w.flush().map_err(|e| io("writing", path, e))
}

/// Reads an ad → campaign table written by [`write_ads`].
pub fn read_ads(path: &Path) -> Result<hashbrown::HashMap<i64, i64>, String> {
    let mut r = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_path(path)
        .map_err(|e| io("reading", path, e))?;
    r.deserialize::<(i64, i64)>()
        .map(|x| x.map_err(|e| io("reading", path, e)))
        .collect()
}

/// The events of a file or directory of parts (one split per file), timestamped by
/// `event_time`, watermarks `delay_ms` behind per file.
///
/// Lines are read as text and split by [`parse_line`] (the fields are never quoted), which
/// does less than `FileSource::csv`'s general CSV parsing and serde deserialization.
pub fn read_events(env: &StreamEnv, path: &Path, delay_ms: u64) -> DataStream<AdEvent> {
    env.source(FileSource::<String>::text(path))
        .name("ad_events")
        .assign_timestamps(
            WatermarkStrategy::bounded_out_of_orderness(Duration::from_millis(delay_ms))
                .with_timestamps(|l: &String, _| field(l, 5).parse().unwrap_or(i64::MIN)),
        )
        .flat_map(|l: String| parse_line(&l))
        .name("parse")
}

fn field(line: &str, i: usize) -> &str {
    line.split(',').nth(i).unwrap_or("")
}

/// One event line (`user_id,page_id,ad_id,ad_type,event_type,event_time,ip`, no quoting, as
/// [`write_events`] writes them); `None` if it is not one.
pub fn parse_line(line: &str) -> Option<AdEvent> {
    let mut f = line.split(',');
    let mut next = || f.next();
    Some(AdEvent {
        user_id: next()?.parse().ok()?,
        page_id: next()?.parse().ok()?,
        ad_id: next()?.parse().ok()?,
        ad_type: next()?.to_string(),
        event_type: next()?.to_string(),
        event_time: next()?.parse().ok()?,
        ip: next()?.to_string(),
    })
}

/// Every event of a file or directory of parts, parsed as it is read, in file order (for the
/// limit loop; panics on an unreadable file).
pub fn events_iter(path: &Path) -> impl Iterator<Item = AdEvent> {
    let mut files = if path.is_dir() {
        std::fs::read_dir(path)
            .expect("listing the events directory")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect::<Vec<_>>()
    } else {
        vec![path.to_path_buf()]
    };
    files.sort();
    files.into_iter().flat_map(|f| {
        let r = std::io::BufReader::with_capacity(
            1 << 20,
            File::open(&f).unwrap_or_else(|e| panic!("reading {}: {e}", f.display())),
        );
        std::io::BufRead::lines(r)
            .map(|l| parse_line(&l.expect("a readable line")).expect("a valid event line"))
    })
}
