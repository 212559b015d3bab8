//! Query 14, calculation: bids with a computed price, time-of-day class and character count,
//! filtered on the computed price.
//!
//! Flink SQL: `SELECT auction, bidder, 0.908 * price AS price, CASE WHEN HOUR(dateTime) >= 8
//! AND HOUR(dateTime) <= 18 THEN 'dayTime' WHEN HOUR(dateTime) <= 6 OR HOUR(dateTime) >= 20 THEN
//! 'nightTime' ELSE 'otherTime' END AS bidTimeType, dateTime, extra, count_char(extra, 'c') AS
//! c_counts FROM bid WHERE 0.908 * price > 1000000 AND 0.908 * price < 50000000`. Hours are in
//! UTC (the suite's timestamps are UTC; a file-based Flink run needs
//! `table.local-time-zone = UTC`).
use super::Decimal3;
use crate::model::Event;
use serde::{Deserialize, Serialize};
use weir::DataStream;

/// A bid with computed columns.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Q14Row {
    /// The auction.
    pub auction: i64,
    /// The bidder.
    pub bidder: i64,
    /// `0.908 · price`.
    pub price: Decimal3,
    /// `dayTime` (8:00–18:59 UTC), `nightTime` (up to 6:59 and from 20:00) or `otherTime`.
    pub bid_time_type: String,
    /// Bid time, ms.
    pub date_time: i64,
    /// The bid's padding.
    pub extra: String,
    /// How many `c` are in `extra`.
    #[serde(rename = "c_counts")]
    pub c_counts: i64,
}

/// The hour of the day (UTC) of `ms`.
pub fn hour_utc(ms: i64) -> i64 {
    ms.div_euclid(3_600_000).rem_euclid(24)
}

/// q14's class of an hour of the day.
pub fn bid_time_type(hour: i64) -> &'static str {
    if (8..=18).contains(&hour) {
        "dayTime"
    } else if hour <= 6 || hour >= 20 {
        "nightTime"
    } else {
        "otherTime"
    }
}

/// Bids whose euro price is strictly between 1 000 000 and 50 000 000, with computed columns.
pub fn q14(events: &DataStream<Event>) -> DataStream<Q14Row> {
    events
        .flat_map(|e: Event| {
            let b = e.into_bid()?;
            let price = Decimal3::euros_of(b.price);
            if !(price > Decimal3(1_000_000_000) && price < Decimal3(50_000_000_000)) {
                return None;
            }
            Some(Q14Row {
                auction: b.auction,
                bidder: b.bidder,
                price,
                bid_time_type: bid_time_type(hour_utc(b.date_time)).to_string(),
                date_time: b.date_time,
                c_counts: b.extra.bytes().filter(|&c| c == b'c').count() as i64,
                extra: b.extra,
            })
        })
        .name("q14")
}
