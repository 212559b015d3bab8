//! Query 6, average selling price by seller: for each auction won, the average winning price of
//! the seller's last auctions.
//!
//! Flink SQL: `SELECT Q.seller, AVG(Q.price) OVER (PARTITION BY Q.seller ORDER BY Q.dateTime
//! ROWS BETWEEN 10 PRECEDING AND CURRENT ROW) FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY
//! A.id, A.seller ORDER BY B.price DESC) AS rownum FROM (SELECT A.id, A.seller, B.price,
//! B.dateTime FROM auction AS A, bid AS B WHERE A.id = B.auction AND B.dateTime BETWEEN
//! A.dateTime AND A.expires) WHERE rownum <= 1) AS Q` — which Flink's streaming mode refuses (an
//! OVER window cannot consume the retractions of the top-1); its batch mode runs it.
//!
//! Weir computes what that query means: each auction's winning bid (as in q9), and per seller,
//! in the order of the winning bids' times (then auction id), the average (truncated) of the
//! price of that winner and of the 10 before it ([`Q6_ROWS`] in all; Beam's original averages the
//! last 10). A winner is emitted once its order is final: the watermark has passed its time and
//! every auction of the seller opened at or before it has closed.
use super::winning::{auction_lifecycle, Lifecycle};
use super::{auctions, bids};
use crate::model::Event;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use weir::functions::{Collector, FnResult, KeyedContext, KeyedProcessFunction, StateRegistry};
use weir::{DataStream, MapState, ValueState};

/// How many winning prices the average covers: the current one and the 10 preceding.
pub const Q6_ROWS: usize = 11;

/// A seller's average winning price over their latest auctions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Q6Row {
    /// The seller.
    pub seller: i64,
    /// Average of the last [`Q6_ROWS`] winning prices, cents (truncated).
    pub avg_price: i64,
}

/// A winner waiting for its turn: `(bid time, auction id, price)`.
type Pending = (i64, i64, i64);

#[derive(Clone, Default)]
struct SellerAverage {
    /// Auctions opened and not closed yet: id → opening time.
    open: MapState<i64, i64>,
    /// Winners not emitted yet, sorted.
    pending: ValueState<Vec<Pending>>,
    /// The last `Q6_ROWS` winning prices emitted.
    last: ValueState<VecDeque<i64>>,
}

impl SellerAverage {
    /// Emits the pending winners whose time is at most `up_to` and before every open auction.
    fn flush(&self, up_to: i64, ctx: &mut KeyedContext<'_, i64>, out: &mut Collector<'_, Q6Row>) {
        let Some(mut pending) = self.pending.get(ctx) else {
            return;
        };
        let first_open = self
            .open
            .entries(ctx)
            .into_iter()
            .map(|(_, opened)| opened)
            .min()
            .unwrap_or(i64::MAX);
        let ready = pending
            .iter()
            .take_while(|p| p.0 <= up_to && p.0 < first_open)
            .count();
        if ready == 0 {
            return;
        }
        let seller = *ctx.current_key();
        let mut last = self.last.get(ctx).unwrap_or_default();
        for &(_, _, price) in &pending[..ready] {
            last.push_back(price);
            if last.len() > Q6_ROWS {
                last.pop_front();
            }
            out.collect(Q6Row {
                seller,
                avg_price: last.iter().sum::<i64>() / last.len() as i64,
            });
        }
        self.last.set(ctx, last);
        pending.drain(..ready);
        if pending.is_empty() {
            self.pending.take(ctx);
        } else {
            self.pending.set(ctx, pending);
        }
    }
}

impl KeyedProcessFunction<i64, Lifecycle, Q6Row> for SellerAverage {
    fn open(&mut self, s: &mut StateRegistry<'_, i64>) -> FnResult {
        self.open = s.map_state("open-auctions")?;
        self.pending = s.value_state("pending-winners")?;
        self.last = s.value_state("last-prices")?;
        Ok(())
    }

    fn process_element(
        &mut self,
        l: Lifecycle,
        ctx: &mut KeyedContext<'_, i64>,
        out: &mut Collector<'_, Q6Row>,
    ) -> FnResult {
        match l {
            Lifecycle::Opened { id, date_time, .. } => self.open.put(ctx, id, date_time),
            Lifecycle::Closed { auction, winner } => {
                self.open.remove(ctx, &auction.id);
                if let Some(w) = winner {
                    let p = (w.date_time, auction.id, w.price);
                    self.pending.mutate(ctx, Vec::new, |v| {
                        let at = v.partition_point(|q| *q < p);
                        v.insert(at, p);
                    });
                    ctx.register_event_time_timer(w.date_time);
                }
                let wm = ctx.current_watermark();
                self.flush(wm, ctx, out);
            }
        }
        Ok(())
    }

    fn on_timer(
        &mut self,
        ts: i64,
        ctx: &mut KeyedContext<'_, i64>,
        out: &mut Collector<'_, Q6Row>,
    ) -> FnResult {
        self.flush(ts, ctx, out);
        Ok(())
    }
}

/// Per seller, for each won auction in the order of the winning bids, the average winning price
/// of it and the seller's 10 previous won auctions.
pub fn q6(events: &DataStream<Event>) -> DataStream<Q6Row> {
    auction_lifecycle(&auctions(events), &bids(events))
        .key_by(|l: &Lifecycle| match l {
            Lifecycle::Opened { seller, .. } => *seller,
            Lifecycle::Closed { auction, .. } => auction.seller,
        })
        .process(SellerAverage::default())
        .name("q6")
}
