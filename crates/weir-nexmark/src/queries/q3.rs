//! Query 3, local item suggestion: who sells in Oregon, Idaho or California in category 10, and
//! which auctions.
//!
//! Flink SQL: `SELECT P.name, P.city, P.state, A.id FROM auction AS A INNER JOIN person AS P ON
//! A.seller = P.id WHERE A.category = 10 AND (P.state = 'OR' OR P.state = 'ID' OR P.state =
//! 'CA')`.
//!
//! An incremental join keyed by person id: a matching person is kept, auctions that come before
//! their seller wait for them. As Flink's regular join, state is not expired (an auction whose
//! seller never matches waits forever); people are unique, so auctions after their seller are
//! emitted and forgotten.
use super::{auctions, persons};
use crate::model::{Auction, Event, Person};
use serde::{Deserialize, Serialize};
use weir::functions::{Collector, FnResult, KeyedCoProcessFunction, KeyedContext, StateRegistry};
use weir::{DataStream, ListState, ValueState};

/// The category q3 looks at.
pub const CATEGORY: i64 = 10;
/// The states q3 looks at.
pub const STATES: [&str; 3] = ["OR", "ID", "CA"];

/// A seller and one of their auctions.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Q3Row {
    /// The seller's name.
    pub name: String,
    /// The seller's city.
    pub city: String,
    /// The seller's state.
    pub state: String,
    /// The auction id.
    pub id: i64,
}

/// `(name, city, state)` of a seller.
type Seller = (String, String, String);

#[derive(Clone, Default)]
struct LocalSellers {
    seller: ValueState<Seller>,
    waiting: ListState<i64>,
}

fn row((name, city, state): &Seller, id: i64) -> Q3Row {
    Q3Row {
        name: name.clone(),
        city: city.clone(),
        state: state.clone(),
        id,
    }
}

impl KeyedCoProcessFunction<i64, Person, Auction, Q3Row> for LocalSellers {
    fn open(&mut self, s: &mut StateRegistry<'_, i64>) -> FnResult {
        self.seller = s.value_state("seller")?;
        self.waiting = s.list_state("waiting-auctions")?;
        Ok(())
    }
    fn process_element1(
        &mut self,
        p: Person,
        ctx: &mut KeyedContext<'_, i64>,
        out: &mut Collector<'_, Q3Row>,
    ) -> FnResult {
        let seller = (p.name, p.city, p.state);
        for id in self.waiting.take(ctx) {
            out.collect(row(&seller, id));
        }
        self.seller.set(ctx, seller);
        Ok(())
    }
    fn process_element2(
        &mut self,
        a: Auction,
        ctx: &mut KeyedContext<'_, i64>,
        out: &mut Collector<'_, Q3Row>,
    ) -> FnResult {
        match self.seller.get(ctx) {
            Some(seller) => out.collect(row(&seller, a.id)),
            None => self.waiting.add(ctx, a.id),
        }
        Ok(())
    }
}

/// Sellers in OR, ID or CA with their category-10 auctions.
pub fn q3(events: &DataStream<Event>) -> DataStream<Q3Row> {
    let people = persons(events).filter(|p: &Person| STATES.contains(&p.state.as_str()));
    let category = auctions(events).filter(|a: &Auction| a.category == CATEGORY);
    people
        .key_by(|p: &Person| p.id)
        .connect(&category.key_by(|a: &Auction| a.seller))
        .process(LocalSellers::default())
        .name("q3")
}
