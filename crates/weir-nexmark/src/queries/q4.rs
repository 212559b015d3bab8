//! Query 4, average price for a category: the average winning price of the closed auctions of
//! each category.
//!
//! Flink SQL: `SELECT Q.category, AVG(Q.final) FROM (SELECT MAX(B.price) AS final, A.category
//! FROM auction A, bid B WHERE A.id = B.auction AND B.dateTime BETWEEN A.dateTime AND A.expires
//! GROUP BY A.id, A.category) Q GROUP BY Q.category`.
//!
//! Flink's result is a changelog whose final state has one row per category; Weir emits an
//! updated row for a category each time one of its auctions closes (an upsert stream keyed by
//! `id`), so the last row per category is the final one. `AVG` of a `BIGINT` is a `BIGINT`:
//! the sum divided by the count, truncated.
use super::winning::{auction_lifecycle, Lifecycle};
use super::{auctions, bids};
use crate::model::Event;
use serde::{Deserialize, Serialize};
use weir::functions::{Collector, FnResult, KeyedContext, KeyedProcessFunction, StateRegistry};
use weir::{DataStream, ValueState};

/// A category's average winning price so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Q4Row {
    /// The category.
    pub id: i64,
    /// Average winning price, cents (truncated).
    #[serde(rename = "final")]
    pub final_price: i64,
}

#[derive(Clone, Default)]
struct Average {
    /// (sum, count) of winning prices.
    sum_count: ValueState<(i64, i64)>,
}

impl KeyedProcessFunction<i64, (i64, i64), Q4Row> for Average {
    fn open(&mut self, s: &mut StateRegistry<'_, i64>) -> FnResult {
        self.sum_count = s.value_state("sum-count")?;
        Ok(())
    }
    fn process_element(
        &mut self,
        (category, price): (i64, i64),
        ctx: &mut KeyedContext<'_, i64>,
        out: &mut Collector<'_, Q4Row>,
    ) -> FnResult {
        let (sum, count) = self.sum_count.mutate(
            ctx,
            || (0, 0),
            |(s, c)| {
                *s += price;
                *c += 1;
                (*s, *c)
            },
        );
        out.collect(Q4Row {
            id: category,
            final_price: sum / count,
        });
        Ok(())
    }
}

/// Per category, the running average of winning prices, updated as auctions close.
pub fn q4(events: &DataStream<Event>) -> DataStream<Q4Row> {
    auction_lifecycle(&auctions(events), &bids(events))
        .flat_map(|l: Lifecycle| match l {
            Lifecycle::Closed {
                auction,
                winner: Some(w),
            } => Some((auction.category, w.price)),
            _ => None,
        })
        .key_by(|cp: &(i64, i64)| cp.0)
        .process(Average::default())
        .name("q4")
}
