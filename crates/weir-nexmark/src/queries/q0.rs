//! Query 0, pass-through: every bid unchanged (the cost of reading and writing events).
//!
//! Flink SQL: `SELECT auction, bidder, price, dateTime, extra FROM bid`.
use crate::model::{Bid, Event};
use weir::DataStream;

/// Every bid, as is.
pub fn q0(events: &DataStream<Event>) -> DataStream<Bid> {
    events.flat_map(Event::into_bid).name("q0")
}
