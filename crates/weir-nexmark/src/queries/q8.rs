//! Query 8, monitor new users: people who registered and opened an auction in the same 10 s
//! tumbling window.
//!
//! Flink SQL: people grouped by `id, name` per `TUMBLE(…, INTERVAL '10' SECOND)` joined to
//! sellers grouped per the same windows, on `P.id = A.seller` and equal windows, selecting
//! `P.id, P.name, P.starttime`.
//!
//! Weir: the auctions are first reduced to one per seller and window (the SQL's `GROUP BY`), then
//! window-joined to the people on the same tumbling windows, so each person appears once per
//! window.
use super::{auctions, persons, WINDOW_MS};
use crate::model::{Auction, Event, Person};
use serde::{Deserialize, Serialize};
use weir::windows::{window_start, Tumbling};
use weir::DataStream;

/// A new person who opened an auction in the window where they registered.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Q8Row {
    /// The person.
    pub id: i64,
    /// Their name.
    pub name: String,
    /// The window's start, ms.
    pub stime: i64,
}

/// People who registered and opened an auction within the same 10 s window.
pub fn q8(events: &DataStream<Event>) -> DataStream<Q8Row> {
    // One record per seller and window, timestamped inside that window (its last millisecond).
    let sellers = auctions(events)
        .map(|a: Auction| a.seller)
        .key_by(|s: &i64| *s)
        .window(Tumbling::event_time(WINDOW_MS))
        .reduce(|a: i64, _| a)
        .name("q8_sellers");
    persons(events)
        .join(&sellers, |p: &Person| p.id, |s: &i64| *s)
        .window(Tumbling::event_time(WINDOW_MS))
        .apply(|p: &Person, _: &i64| Q8Row {
            id: p.id,
            name: p.name.clone(),
            stime: window_start(p.date_time, 0, WINDOW_MS),
        })
        .name("q8")
}
