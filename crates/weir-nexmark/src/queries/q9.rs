//! Query 9, winning bids: every auction with its winning bid.
//!
//! Flink SQL: `SELECT id, itemName, …, auction, bidder, price, bid_dateTime, bid_extra FROM
//! (SELECT A.*, B.auction, B.bidder, B.price, B.dateTime AS bid_dateTime, B.extra AS bid_extra,
//! ROW_NUMBER() OVER (PARTITION BY A.id ORDER BY B.price DESC, B.dateTime ASC) AS rownum FROM
//! auction A, bid B WHERE A.id = B.auction AND B.dateTime BETWEEN A.dateTime AND A.expires)
//! WHERE rownum <= 1`.
//!
//! Flink's result is a changelog (the top row changes as bids come); Weir emits each auction once,
//! when the watermark passes its `expires`, which is the final row of Flink's table. Bids equal
//! in price and time are ordered by bidder (Flink picks any).
use super::winning::{auction_lifecycle, Lifecycle};
use super::{auctions, bids};
use crate::model::Event;
use serde::{Deserialize, Serialize};
use weir::DataStream;

/// An auction and its winning bid.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Q9Row {
    /// Auction id.
    pub id: i64,
    /// Item name.
    pub item_name: String,
    /// Item description.
    pub description: String,
    /// Starting price.
    pub initial_bid: i64,
    /// Reserve price.
    pub reserve: i64,
    /// Opening time, ms.
    pub date_time: i64,
    /// Closing time, ms.
    pub expires: i64,
    /// Seller.
    pub seller: i64,
    /// Category.
    pub category: i64,
    /// The auction's padding.
    pub extra: String,
    /// The winning bid's auction (= `id`).
    pub auction: i64,
    /// The winning bidder.
    pub bidder: i64,
    /// The winning price.
    pub price: i64,
    /// The winning bid's time, ms.
    #[serde(rename = "bid_dateTime")]
    pub bid_date_time: i64,
    /// The winning bid's padding.
    #[serde(rename = "bid_extra")]
    pub bid_extra: String,
}

/// Each auction that received a valid bid, with the winner, when it closes.
pub fn q9(events: &DataStream<Event>) -> DataStream<Q9Row> {
    auction_lifecycle(&auctions(events), &bids(events))
        .flat_map(|l: Lifecycle| match l {
            Lifecycle::Closed {
                auction: a,
                winner: Some(b),
            } => Some(Q9Row {
                id: a.id,
                item_name: a.item_name,
                description: a.description,
                initial_bid: a.initial_bid,
                reserve: a.reserve,
                date_time: a.date_time,
                expires: a.expires,
                seller: a.seller,
                category: a.category,
                extra: a.extra,
                auction: b.auction,
                bidder: b.bidder,
                price: b.price,
                bid_date_time: b.date_time,
                bid_extra: b.extra,
            }),
            _ => None,
        })
        .name("q9")
}
