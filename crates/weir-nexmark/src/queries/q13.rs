//! Query 13, bounded side input join: bids enriched from a static table.
//!
//! Flink SQL: `SELECT B.auction, B.bidder, B.price, B.dateTime, S.value FROM (SELECT *,
//! PROCTIME() AS p_time FROM bid) B JOIN side_input FOR SYSTEM_TIME AS OF B.p_time AS S ON
//! mod(B.auction, 10000) = S.key`, where `side_input` is a CSV file of `key,value` lines (the
//! suite writes `i,i` for `i` in `0..n`: [`crate::files::write_side_input`]).
//!
//! A lookup join: every subtask loads the whole file when it opens (as Flink's file lookup source
//! caches the table), then each bid either finds its row or is dropped (inner join).
use crate::model::{Bid, Event};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use weir::functions::{Collector, FnResult, ProcessContext, ProcessFunction};
use weir::DataStream;

/// The side table is looked up by `auction mod SIDE_KEYS`.
pub const SIDE_KEYS: i64 = 10_000;

/// A bid with its side-table value.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Q13Row {
    /// The auction.
    pub auction: i64,
    /// The bidder.
    pub bidder: i64,
    /// The price.
    pub price: i64,
    /// Bid time, ms.
    pub date_time: i64,
    /// The side table's value for `auction mod 10000`.
    pub value: String,
}

/// Reads a side table: CSV lines `key,value` (no header).
pub fn read_side_table(path: &std::path::Path) -> Result<HashMap<i64, String>, String> {
    let mut r = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_path(path)
        .map_err(|e| format!("reading the side input {}: {e}", path.display()))?;
    let mut table = HashMap::new();
    for (i, row) in r.deserialize::<(i64, String)>().enumerate() {
        let (k, v) = row.map_err(|e| format!("{}:{}: {e}", path.display(), i + 1))?;
        table.insert(k, v);
    }
    Ok(table)
}

#[derive(Clone)]
struct SideJoin {
    path: Arc<PathBuf>,
    table: Arc<HashMap<i64, String>>,
}

impl ProcessFunction<Bid, Q13Row> for SideJoin {
    fn open(&mut self, _: &mut ProcessContext<'_>) -> FnResult {
        self.table = Arc::new(read_side_table(&self.path)?);
        Ok(())
    }
    fn process_element(
        &mut self,
        b: Bid,
        _: &mut ProcessContext<'_>,
        out: &mut Collector<'_, Q13Row>,
    ) -> FnResult {
        if let Some(value) = self.table.get(&(b.auction % SIDE_KEYS)) {
            out.collect(Q13Row {
                auction: b.auction,
                bidder: b.bidder,
                price: b.price,
                date_time: b.date_time,
                value: value.clone(),
            });
        }
        Ok(())
    }
}

/// Bids joined to the side table in the CSV file `side_input` on `auction mod 10000 = key`.
pub fn q13(events: &DataStream<Event>, side_input: impl Into<PathBuf>) -> DataStream<Q13Row> {
    events
        .flat_map(Event::into_bid)
        .process(SideJoin {
            path: Arc::new(side_input.into()),
            table: Arc::default(),
        })
        .name("q13")
}
