//! Query 7, highest bid: the bids at the highest price of each 10 s tumbling window.
//!
//! Flink SQL: `SELECT B.auction, B.price, B.bidder, B.dateTime, B.extra FROM bid B JOIN (SELECT
//! MAX(price) AS maxprice, window_end AS dateTime FROM TABLE(TUMBLE(TABLE bid,
//! DESCRIPTOR(dateTime), INTERVAL '10' SECOND)) GROUP BY window_start, window_end) B1 ON B.price
//! = B1.maxprice WHERE B.dateTime BETWEEN B1.dateTime - INTERVAL '10' SECOND AND B1.dateTime`.
//!
//! The `BETWEEN` includes the window's end, so a bid at exactly the end of a window at that
//! window's top price is reported with it too (it belongs to the next window). Weir computes the
//! maximum with `window_all` and joins it to the bids, keyed by price, with an interval join over
//! `[end − 10 s, end]`. The rows are bids with the suite's sink columns `auction, bidder, price,
//! dateTime, extra` (the suite's SELECT lists `price` before `bidder`, which puts them in each
//! other's columns; Weir keeps each in its own).
use super::{bids, WINDOW_MS};
use crate::model::{Bid, Event};
use serde::{Deserialize, Serialize};
use weir::windows::{TimeWindow, Tumbling};
use weir::DataStream;

/// The top price of a window.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct WindowMax {
    price: i64,
    window_end: i64,
}

/// The bids at the top price of each 10 s window (`[start, end]`).
pub fn q7(events: &DataStream<Event>) -> DataStream<Bid> {
    let bids = bids(events);
    // Timestamped at the window's last millisecond, `end − 1`.
    let maxima = bids
        .map(|b: Bid| b.price)
        .window_all(Tumbling::event_time(WINDOW_MS))
        .reduce_with(
            |a: i64, b: i64| a.max(b),
            |_: &(), w: &TimeWindow, price: i64| WindowMax {
                price,
                window_end: w.end,
            },
        )
        .name("q7_max");
    // bid.ts ∈ [max.ts + 1 − WINDOW_MS, max.ts + 1] = [end − WINDOW_MS, end]
    maxima
        .key_by(|m: &WindowMax| m.price)
        .interval_join(&bids.key_by(|b: &Bid| b.price))
        .between_ms(1 - WINDOW_MS, 1)
        .process(|_: &WindowMax, b: &Bid| b.clone())
        .name("q7")
}
