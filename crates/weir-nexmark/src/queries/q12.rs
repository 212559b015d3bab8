//! Query 12, processing-time windows: how many bids each bidder makes per 10 s of processing
//! time.
//!
//! Flink SQL: `SELECT bidder, count(*) AS bid_count, window_start AS starttime, window_end AS
//! endtime FROM TABLE(TUMBLE(TABLE B, DESCRIPTOR(p_time), INTERVAL '10' SECOND)) GROUP BY bidder,
//! window_start, window_end` with `p_time = PROCTIME()`.
//!
//! Which window a bid falls in depends on when it is processed, so only totals repeat from run to
//! run. Windows still open when bounded input ends are not emitted (Weir drops pending
//! processing-time timers at the end of input).
use super::{bids, BidderWindowCount, WINDOW_MS};
use crate::model::{Bid, Event};
use weir::windows::{Count, TimeWindow, Tumbling};
use weir::DataStream;

/// Per bidder and 10 s processing-time window, the number of bids.
pub fn q12(events: &DataStream<Event>) -> DataStream<BidderWindowCount> {
    bids(events)
        .key_by(|b: &Bid| b.bidder)
        .window(Tumbling::processing_time(WINDOW_MS))
        .aggregate_with(Count, |bidder: &i64, w: &TimeWindow, n: u64| {
            BidderWindowCount {
                bidder: *bidder,
                bid_count: n as i64,
                starttime: w.start,
                endtime: w.end,
            }
        })
        .name("q12")
}
