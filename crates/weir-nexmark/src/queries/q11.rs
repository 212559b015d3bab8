//! Query 11, user sessions: how many bids each bidder made in each session (a gap of 10 s
//! without bids ends a session).
//!
//! Flink SQL: `SELECT B.bidder, count(*) AS bid_count, SESSION_START(B.dateTime, INTERVAL '10'
//! SECOND) AS starttime, SESSION_END(B.dateTime, INTERVAL '10' SECOND) AS endtime FROM bid B
//! GROUP BY B.bidder, SESSION(B.dateTime, INTERVAL '10' SECOND)`: a session runs from its first
//! bid to its last bid plus the gap.
use super::{bids, WINDOW_MS};
use crate::model::{Bid, Event};
use serde::{Deserialize, Serialize};
use weir::windows::{Count, Session, TimeWindow};
use weir::DataStream;

/// A bidder's bids in a window (q11: a session, q12: a processing-time window).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BidderWindowCount {
    /// The bidder.
    pub bidder: i64,
    /// Bids in the window.
    pub bid_count: i64,
    /// The window's start, ms.
    pub starttime: i64,
    /// The window's end, ms (exclusive; for a session, the last bid plus the gap).
    pub endtime: i64,
}

/// Per bidder and session (gap 10 s), the number of bids.
pub fn q11(events: &DataStream<Event>) -> DataStream<BidderWindowCount> {
    bids(events)
        .key_by(|b: &Bid| b.bidder)
        .window(Session::event_time(WINDOW_MS))
        .aggregate_with(Count, |bidder: &i64, w: &TimeWindow, n: u64| {
            BidderWindowCount {
                bidder: *bidder,
                bid_count: n as i64,
                starttime: w.start,
                endtime: w.end,
            }
        })
        .name("q11")
}
