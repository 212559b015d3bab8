//! The Nexmark queries on Weir's DataStream API, with the semantics of the nexmark/nexmark
//! Flink SQL suite (`nexmark-flink/src/main/resources/queries/q*.sql`).
//!
//! Each query is a function from the event stream (timestamps and watermarks assigned, as
//! [`crate::NexmarkSource::stream`] or [`crate::files`] give it) to a stream of serde rows whose
//! fields are the columns of the suite's result table, so that any sink can take them.
//!
//! | query | what | Weir building blocks |
//! |---|---|---|
//! | [`q0`] | pass-through of bids | `flat_map` |
//! | [`q1`] | bid prices in euros | `flat_map` |
//! | [`q2`] | bids on every 123rd auction | `flat_map` |
//! | [`q3`] | sellers in OR/ID/CA of category-10 auctions | keyed co-process (incremental join) |
//! | [`q4`] | average winning price per category | keyed co-process + keyed process |
//! | [`q5`] | hot auctions per sliding window | keyed process (incremental top per bucket of auctions), then tumbling windows |
//! | [`q6`] | average winning price of a seller's last 11 auctions | keyed co-process + keyed process |
//! | [`q7`] | highest bids per tumbling window | `window_all` + interval join |
//! | [`q8`] | new people who opened an auction in the same window | tumbling window join |
//! | [`q9`] | winning bid of every auction | keyed co-process |
//! | [`q11`] | bids per bidder session | session windows |
//! | [`q12`] | bids per bidder per processing-time window | processing-time windows |
//! | [`q13`] | bids joined to a bounded side table | side table loaded in `open` |
//! | [`q14`] | bids with computed columns and a filter | `flat_map` |
use crate::model::{Auction, Bid, Event, Person};
use serde::{Deserialize, Serialize};
use weir::DataStream;

mod q0;
mod q1;
mod q11;
mod q12;
mod q13;
mod q14;
mod q2;
mod q3;
mod q4;
mod q5;
mod q6;
mod q7;
mod q8;
mod q9;
mod winning;

pub use q0::q0;
pub use q1::{q1, Q1Row};
pub use q11::{q11, BidderWindowCount};
pub use q12::q12;
pub use q13::{q13, Q13Row};
pub use q14::{q14, Q14Row};
pub use q2::{q2, Q2Row};
pub use q3::{q3, Q3Row};
pub use q4::{q4, Q4Row};
pub use q5::{q5, Q5Row};
pub use q6::{q6, Q6Row, Q6_ROWS};
pub use q7::q7;
pub use q8::{q8, Q8Row};
pub use q9::{q9, Q9Row};
pub use winning::{auction_lifecycle, is_better_bid, Lifecycle};

/// Windows of q5, q7, q8, q12 (10 s) and the session gap of q11.
pub const WINDOW_MS: i64 = 10_000;
/// The slide of q5's windows.
pub const SLIDE_MS: i64 = 2_000;

/// The bids of an event stream.
pub fn bids(events: &DataStream<Event>) -> DataStream<Bid> {
    events.flat_map(Event::into_bid).name("bids")
}

/// The auctions of an event stream.
pub fn auctions(events: &DataStream<Event>) -> DataStream<Auction> {
    events.flat_map(Event::into_auction).name("auctions")
}

/// The people of an event stream.
pub fn persons(events: &DataStream<Event>) -> DataStream<Person> {
    events.flat_map(Event::into_person).name("persons")
}

/// An exact decimal with three digits after the point, held in thousandths: Flink's
/// `DECIMAL(23, 3)` of `0.908 * price`. It serializes as a number (`123.456`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Decimal3(pub i64);

impl Decimal3 {
    /// `0.908 · cents`, exactly (the suite's dollar-to-euro rate).
    pub fn euros_of(cents: i64) -> Self {
        Decimal3(cents * 908)
    }
}

impl std::fmt::Display for Decimal3 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let a = self.0.unsigned_abs();
        write!(f, "{sign}{}.{:03}", a / 1000, a % 1000)
    }
}

// As a float: below 2^53 thousandths (9·10^12) the nearest double prints back as the same three
// decimals and reads back to the same thousandths.
impl Serialize for Decimal3 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.0 as f64 / 1000.0)
    }
}

impl<'de> Deserialize<'de> for Decimal3 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Decimal3((f64::deserialize(d)? * 1000.0).round() as i64))
    }
}

#[cfg(test)]
mod tests {
    use super::Decimal3;

    #[test]
    fn decimals_print_and_read_back_exactly() {
        for cents in [0i64, 1, 7, 100, 12_345, 99_999_999, 100_000_000] {
            let d = Decimal3::euros_of(cents);
            let json = serde_json::to_string(&d).unwrap();
            assert_eq!(serde_json::from_str::<Decimal3>(&json).unwrap(), d);
            let shown = d.to_string();
            assert_eq!(
                json.trim_end_matches('0').trim_end_matches('.'),
                shown.trim_end_matches('0').trim_end_matches('.'),
                "{cents}"
            );
        }
        assert_eq!(Decimal3::euros_of(12_345).to_string(), "11209.260");
        assert_eq!(Decimal3(-1).to_string(), "-0.001");
    }
}
