//! Query 5, hot items: the auctions with the most bids in each sliding window of 10 s every 2 s.
//!
//! Flink SQL: counts per auction and `HOP(…, INTERVAL '2' SECOND, INTERVAL '10' SECOND)` window,
//! joined to the maximum count of the same window on `num >= maxn`, selecting `auction, num`
//! (every auction tied for the maximum).
//!
//! Weir: sliding windows per auction count the bids (by 2 s slices, as Flink SQL's window
//! aggregation does: a bid adds to one count, a window sums its five); their results (timestamped at their
//! window's last millisecond) go, keyed by window, into tumbling windows of the slide, which
//! contain exactly the counts of one sliding window and keep the auctions with the top count.
use super::{bids, SLIDE_MS, WINDOW_MS};
use crate::model::{Bid, Event};
use serde::{Deserialize, Serialize};
use weir::windows::{Count, Sliding, TimeWindow, Tumbling};
use weir::{AggregateFunction, DataStream};

/// An auction with the most bids in a window, and how many.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Q5Row {
    /// The auction.
    pub auction: i64,
    /// Its bids in the window.
    pub num: i64,
}

/// The bids of one auction in one window.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct AuctionCount {
    auction: i64,
    num: i64,
    window_end: i64,
}

/// Keeps the highest count and every auction that has it.
struct Top;

impl AggregateFunction<AuctionCount, (i64, Vec<i64>), (i64, Vec<i64>)> for Top {
    fn create_accumulator(&self) -> (i64, Vec<i64>) {
        (0, Vec::new())
    }
    fn add(&self, acc: &mut (i64, Vec<i64>), c: AuctionCount) {
        if c.num > acc.0 {
            *acc = (c.num, vec![c.auction]);
        } else if c.num == acc.0 {
            acc.1.push(c.auction);
        }
    }
    fn get_result(&self, acc: &(i64, Vec<i64>)) -> (i64, Vec<i64>) {
        acc.clone()
    }
    fn merge(&self, acc: &mut (i64, Vec<i64>), (num, auctions): (i64, Vec<i64>)) {
        for auction in auctions {
            self.add(
                acc,
                AuctionCount {
                    auction,
                    num,
                    window_end: 0,
                },
            );
        }
    }
}

/// For each 10 s window (every 2 s), the auctions with the most bids.
pub fn q5(events: &DataStream<Event>) -> DataStream<Q5Row> {
    bids(events)
        .key_by(|b: &Bid| b.auction)
        .window(Sliding::event_time(WINDOW_MS, SLIDE_MS))
        .with_slicing()
        .aggregate_with(Count, |auction: &i64, w: &TimeWindow, n: u64| {
            AuctionCount {
                auction: *auction,
                num: n as i64,
                window_end: w.end,
            }
        })
        .name("q5_counts")
        .key_by(|c: &AuctionCount| c.window_end)
        .window(Tumbling::event_time(SLIDE_MS))
        .aggregate(Top)
        .flat_map(|(num, auctions): (i64, Vec<i64>)| {
            auctions
                .into_iter()
                .map(move |auction| Q5Row { auction, num })
        })
        .name("q5")
}
