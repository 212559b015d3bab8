//! The Nexmark data model: people register, open auctions, and bid on them.
//!
//! Field names serialize in camelCase, as the columns of the nexmark/nexmark Flink suite
//! (`emailAddress`, `itemName`, `dateTime`, …); every time is milliseconds since the epoch (UTC).
//!
//! An [`Event`] serializes as the suite's one-table row: `{"event_type": 0|1|2, "person": …,
//! "auction": …, "bid": …}` with the two other fields `null`, so a file of events reads in Flink
//! SQL as the suite's `nexmark` table (see the crate README for the DDL).
use serde::ser::SerializeStruct;
use serde::{Deserialize, Serialize};

/// Someone who registered to buy or sell.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Person {
    /// Unique person id (from 1000).
    pub id: i64,
    /// First and last name.
    pub name: String,
    /// A made-up address.
    pub email_address: String,
    /// Four groups of four digits.
    pub credit_card: String,
    /// One of ten US cities.
    pub city: String,
    /// One of six US states (`AZ CA ID OR WA WY`).
    pub state: String,
    /// Registration time, ms.
    pub date_time: i64,
    /// Padding to the configured average size.
    pub extra: String,
}

/// An item put up for auction.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Auction {
    /// Unique auction id (from 1000).
    pub id: i64,
    /// Item name.
    pub item_name: String,
    /// Item description.
    pub description: String,
    /// Starting price, cents.
    pub initial_bid: i64,
    /// Lowest price the seller accepts, cents.
    pub reserve: i64,
    /// Opening time, ms.
    pub date_time: i64,
    /// Closing time, ms (after `date_time`).
    pub expires: i64,
    /// The seller's person id.
    pub seller: i64,
    /// Category (10..=14).
    pub category: i64,
    /// Padding to the configured average size.
    pub extra: String,
}

/// A bid on an auction.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bid {
    /// The auction's id.
    pub auction: i64,
    /// The bidder's person id.
    pub bidder: i64,
    /// Price, cents.
    pub price: i64,
    /// Bid time, ms.
    pub date_time: i64,
    /// Padding to the configured average size.
    pub extra: String,
}

/// One Nexmark event.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Event {
    /// A new person (`event_type` 0).
    Person(Person),
    /// A new auction (`event_type` 1).
    Auction(Auction),
    /// A bid (`event_type` 2).
    Bid(Bid),
}

/// `event_type` of a person.
pub const PERSON: u8 = 0;
/// `event_type` of an auction.
pub const AUCTION: u8 = 1;
/// `event_type` of a bid.
pub const BID: u8 = 2;

impl Event {
    /// The event's time (ms): the person's, auction's or bid's `date_time`.
    pub fn date_time(&self) -> i64 {
        match self {
            Event::Person(p) => p.date_time,
            Event::Auction(a) => a.date_time,
            Event::Bid(b) => b.date_time,
        }
    }
    /// 0 for a person, 1 for an auction, 2 for a bid (the suite's discriminator).
    pub fn event_type(&self) -> u8 {
        match self {
            Event::Person(_) => PERSON,
            Event::Auction(_) => AUCTION,
            Event::Bid(_) => BID,
        }
    }
    /// The person, if it is one.
    pub fn into_person(self) -> Option<Person> {
        match self {
            Event::Person(p) => Some(p),
            _ => None,
        }
    }
    /// The auction, if it is one.
    pub fn into_auction(self) -> Option<Auction> {
        match self {
            Event::Auction(a) => Some(a),
            _ => None,
        }
    }
    /// The bid, if it is one.
    pub fn into_bid(self) -> Option<Bid> {
        match self {
            Event::Bid(b) => Some(b),
            _ => None,
        }
    }
}

/// An event as a row of the suite's table: exactly one of the three is set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventRow {
    /// 0 person, 1 auction, 2 bid.
    pub event_type: u8,
    /// Set when `event_type` is 0.
    pub person: Option<Person>,
    /// Set when `event_type` is 1.
    pub auction: Option<Auction>,
    /// Set when `event_type` is 2.
    pub bid: Option<Bid>,
}

impl TryFrom<EventRow> for Event {
    type Error = String;
    fn try_from(r: EventRow) -> Result<Self, String> {
        match (r.event_type, r.person, r.auction, r.bid) {
            (PERSON, Some(p), None, None) => Ok(Event::Person(p)),
            (AUCTION, None, Some(a), None) => Ok(Event::Auction(a)),
            (BID, None, None, Some(b)) => Ok(Event::Bid(b)),
            (t, p, a, b) => Err(format!(
                "an event row needs event_type 0, 1 or 2 and exactly that field set; got event_type {t} with person {}, auction {}, bid {}",
                set(&p),
                set(&a),
                set(&b)
            )),
        }
    }
}

fn set<T>(o: &Option<T>) -> &'static str {
    if o.is_some() {
        "set"
    } else {
        "null"
    }
}

impl From<Event> for EventRow {
    fn from(e: Event) -> Self {
        let event_type = e.event_type();
        let (mut person, mut auction, mut bid) = (None, None, None);
        match e {
            Event::Person(p) => person = Some(p),
            Event::Auction(a) => auction = Some(a),
            Event::Bid(b) => bid = Some(b),
        }
        EventRow {
            event_type,
            person,
            auction,
            bid,
        }
    }
}

// By hand, to write the row layout without copying the event into an `EventRow`. The field
// order and types are `EventRow`'s, so any serde format reads it back as one.
impl Serialize for Event {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("EventRow", 4)?;
        st.serialize_field("event_type", &self.event_type())?;
        st.serialize_field(
            "person",
            &match self {
                Event::Person(p) => Some(p),
                _ => None,
            },
        )?;
        st.serialize_field(
            "auction",
            &match self {
                Event::Auction(a) => Some(a),
                _ => None,
            },
        )?;
        st.serialize_field(
            "bid",
            &match self {
                Event::Bid(b) => Some(b),
                _ => None,
            },
        )?;
        st.end()
    }
}

impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Event::try_from(EventRow::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bid() -> Event {
        Event::Bid(Bid {
            auction: 1000,
            bidder: 1001,
            price: 1234,
            date_time: 1_700_000_000_000,
            extra: "abc".into(),
        })
    }

    #[test]
    fn an_event_is_a_row_of_the_suite_table() {
        let json = serde_json::to_string(&bid()).unwrap();
        assert_eq!(
            json,
            r#"{"event_type":2,"person":null,"auction":null,"bid":{"auction":1000,"bidder":1001,"price":1234,"dateTime":1700000000000,"extra":"abc"}}"#
        );
        assert_eq!(serde_json::from_str::<Event>(&json).unwrap(), bid());
    }

    #[test]
    fn rows_with_a_wrong_discriminator_are_refused() {
        let json = r#"{"event_type":0,"person":null,"auction":null,"bid":{"auction":1,"bidder":1,"price":1,"dateTime":1,"extra":""}}"#;
        let e = serde_json::from_str::<Event>(json).unwrap_err().to_string();
        assert!(e.contains("event_type 0"), "{e}");
    }
}
