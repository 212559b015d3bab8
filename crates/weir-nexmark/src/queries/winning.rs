//! The winning-bids core of q4, q6 and q9: every auction joined to its valid bids, closed when
//! the watermark passes its `expires`.
//!
//! A bid is valid for an auction when `auction.dateTime ≤ bid.dateTime ≤ auction.expires`
//! (SQL's `BETWEEN`); the winner is the highest price, then the earliest bid (q9's
//! `ORDER BY price DESC, dateTime ASC`), then the smallest bidder and `extra` so that the choice
//! is deterministic. The suite does not check the reserve price (Beam's original does).
//!
//! Keyed by auction id: an auction registers an event-time timer at `expires`; bids of an auction
//! not seen yet (another source split may be behind) wait in buckets by time until the watermark
//! passes them, since an auction opened at or before a bid's time cannot arrive after that.
use crate::model::{Auction, Bid};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use weir::functions::{Collector, FnResult, KeyedCoProcessFunction, KeyedContext, StateRegistry};
use weir::{DataStream, MapState, ValueState};

/// What the core reports about an auction, in this order for each auction.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Lifecycle {
    /// The auction arrived (it may get bids from `date_time` on).
    Opened {
        /// Auction id.
        id: i64,
        /// Its seller.
        seller: i64,
        /// Its opening time, ms.
        date_time: i64,
    },
    /// The watermark passed the auction's `expires`: its winner (if any valid bid came) is final.
    Closed {
        /// The auction.
        auction: Auction,
        /// The winning bid.
        winner: Option<Bid>,
    },
}

/// Whether `b` wins over `than`: higher price, then earlier, then smaller bidder, then `extra`.
pub fn is_better_bid(b: &Bid, than: Option<&Bid>) -> bool {
    let Some(o) = than else { return true };
    let order = b
        .price
        .cmp(&o.price)
        .then(o.date_time.cmp(&b.date_time))
        .then(o.bidder.cmp(&b.bidder))
        .then(o.extra.cmp(&b.extra));
    order == Ordering::Greater
}

/// The bid is within the auction's `[date_time, expires]`.
fn valid(span: (i64, i64), b: &Bid) -> bool {
    b.date_time >= span.0 && b.date_time <= span.1
}

#[derive(Clone, Default)]
struct AuctionCore {
    auction: ValueState<Auction>,
    /// `(date_time, expires)` of the auction, read for every bid.
    span: ValueState<(i64, i64)>,
    best: ValueState<Option<Bid>>,
    /// Bids that came before their auction, by bid time.
    early: MapState<i64, Vec<Bid>>,
}

impl KeyedCoProcessFunction<i64, Auction, Bid, Lifecycle> for AuctionCore {
    fn open(&mut self, s: &mut StateRegistry<'_, i64>) -> FnResult {
        self.auction = s.value_state("auction")?;
        self.span = s.value_state("span")?;
        self.best = s.value_state("best")?;
        self.early = s.map_state("early-bids")?;
        Ok(())
    }

    fn process_element1(
        &mut self,
        a: Auction,
        ctx: &mut KeyedContext<'_, i64>,
        out: &mut Collector<'_, Lifecycle>,
    ) -> FnResult {
        out.collect(Lifecycle::Opened {
            id: a.id,
            seller: a.seller,
            date_time: a.date_time,
        });
        let span = (a.date_time, a.expires);
        let mut best: Option<Bid> = None;
        for (_, bids) in self.early.entries(ctx) {
            for b in bids {
                if valid(span, &b) && is_better_bid(&b, best.as_ref()) {
                    best = Some(b);
                }
            }
        }
        self.early.clear(ctx);
        self.best.set(ctx, best);
        self.span.set(ctx, span);
        ctx.register_event_time_timer(a.expires);
        self.auction.set(ctx, a);
        Ok(())
    }

    fn process_element2(
        &mut self,
        b: Bid,
        ctx: &mut KeyedContext<'_, i64>,
        _: &mut Collector<'_, Lifecycle>,
    ) -> FnResult {
        match self.span.get(ctx) {
            Some(span) => {
                if valid(span, &b) {
                    self.best.mutate(
                        ctx,
                        || None,
                        |best| {
                            if is_better_bid(&b, best.as_ref()) {
                                *best = Some(b);
                            }
                        },
                    );
                }
            }
            None => {
                // Its auction has not come yet, or has closed: keep it until the watermark
                // says no auction it is valid for can come.
                let t = b.date_time;
                let mut bucket = self.early.get(ctx, &t).unwrap_or_default();
                bucket.push(b);
                self.early.put(ctx, t, bucket);
                ctx.register_event_time_timer(t);
            }
        }
        Ok(())
    }

    fn on_timer(
        &mut self,
        ts: i64,
        ctx: &mut KeyedContext<'_, i64>,
        out: &mut Collector<'_, Lifecycle>,
    ) -> FnResult {
        match self.span.get(ctx) {
            Some((_, expires)) if ts >= expires => {
                self.span.take(ctx);
                let winner = self.best.take(ctx).flatten();
                if let Some(auction) = self.auction.take(ctx) {
                    out.collect(Lifecycle::Closed { auction, winner });
                }
            }
            Some(_) => {}
            None => {
                self.early.remove(ctx, &ts);
            }
        }
        Ok(())
    }
}

/// Every auction's `Opened` and then `Closed` (with its winning bid), keyed by auction id.
/// `Closed` comes when the watermark passes `expires`, with timestamp `expires`.
pub fn auction_lifecycle(
    auctions: &DataStream<Auction>,
    bids: &DataStream<Bid>,
) -> DataStream<Lifecycle> {
    auctions
        .key_by(|a: &Auction| a.id)
        .connect(&bids.key_by(|b: &Bid| b.auction))
        .process(AuctionCore::default())
        .name("winning_bids")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bid(price: i64, date_time: i64, bidder: i64) -> Bid {
        Bid {
            auction: 1,
            bidder,
            price,
            date_time,
            extra: String::new(),
        }
    }

    #[test]
    fn the_highest_then_earliest_bid_wins() {
        assert!(is_better_bid(&bid(5, 10, 1), None));
        assert!(is_better_bid(&bid(6, 10, 1), Some(&bid(5, 1, 1))));
        assert!(is_better_bid(&bid(5, 9, 1), Some(&bid(5, 10, 1))));
        assert!(!is_better_bid(&bid(5, 10, 1), Some(&bid(5, 10, 1))));
        assert!(is_better_bid(&bid(5, 10, 1), Some(&bid(5, 10, 2))));
    }
}
