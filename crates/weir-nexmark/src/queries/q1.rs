//! Query 1, currency conversion: each bid's price in euros.
//!
//! Flink SQL: `SELECT auction, bidder, 0.908 * price AS price, dateTime, extra FROM bid`; the
//! price is a `DECIMAL(23, 3)`, here an exact [`Decimal3`].
use super::Decimal3;
use crate::model::{Bid, Event};
use serde::{Deserialize, Serialize};
use weir::DataStream;

/// A bid with its price in euros.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Q1Row {
    /// The auction.
    pub auction: i64,
    /// The bidder.
    pub bidder: i64,
    /// `0.908 · price`.
    pub price: Decimal3,
    /// Bid time, ms.
    pub date_time: i64,
    /// The bid's padding.
    pub extra: String,
}

/// Each bid with its price converted at 0.908.
pub fn q1(events: &DataStream<Event>) -> DataStream<Q1Row> {
    events
        .flat_map(|e: Event| {
            e.into_bid().map(|b: Bid| Q1Row {
                auction: b.auction,
                bidder: b.bidder,
                price: Decimal3::euros_of(b.price),
                date_time: b.date_time,
                extra: b.extra,
            })
        })
        .name("q1")
}
