//! Query 2, selection: the bids on every 123rd auction.
//!
//! Flink SQL: `SELECT auction, price FROM bid WHERE MOD(auction, 123) = 0`.
use crate::model::Event;
use serde::{Deserialize, Serialize};
use weir::DataStream;

/// Which auctions q2 keeps: `auction mod AUCTION_SKIP == 0`.
pub const AUCTION_SKIP: i64 = 123;

/// An auction and a price bid on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Q2Row {
    /// The auction.
    pub auction: i64,
    /// The price bid.
    pub price: i64,
}

/// The bids on auctions whose id is a multiple of 123.
pub fn q2(events: &DataStream<Event>) -> DataStream<Q2Row> {
    events
        .flat_map(|e: Event| match e {
            Event::Bid(b) if b.auction % AUCTION_SKIP == 0 => Some(Q2Row {
                auction: b.auction,
                price: b.price,
            }),
            _ => None,
        })
        .name("q2")
}
