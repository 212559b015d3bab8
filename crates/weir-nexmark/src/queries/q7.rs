//! Query 7, highest bid: the bids at the highest price of each 10 s tumbling window.
//!
//! Flink SQL: `SELECT B.auction, B.price, B.bidder, B.dateTime, B.extra FROM bid B JOIN (SELECT
//! MAX(price) AS maxprice, window_end AS dateTime FROM TABLE(TUMBLE(TABLE bid,
//! DESCRIPTOR(dateTime), INTERVAL '10' SECOND)) GROUP BY window_start, window_end) B1 ON B.price
//! = B1.maxprice WHERE B.dateTime BETWEEN B1.dateTime - INTERVAL '10' SECOND AND B1.dateTime`.
//!
//! The `BETWEEN` includes the window's end, so a bid at exactly the end of a window at that
//! window's top price is reported with it too (it belongs to the next window). Weir computes the
//! maximum with `window_all` and joins it to the bids, keyed by price, with an interval join over
//! `[end − 10 s, end]`. Only candidate bids enter the join (see [`Candidates`]): a bid below
//! the highest price already seen in its window cannot be at the window's top price, so the
//! join buffers a few bids per window instead of all of them (without this, its state was every
//! bid of the last 14 s, all copied by every checkpoint). Flink's plan for the SQL buffers every
//! bid in its join. The rows are bids with the suite's sink columns `auction, bidder, price,
//! dateTime, extra` (the suite's SELECT lists `price` before `bidder`, which puts them in each
//! other's columns; Weir keeps each in its own).
use super::{bids, WINDOW_MS};
use crate::model::{Bid, Event};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use weir::functions::{Collector, FnResult, ProcessContext, ProcessFunction};
use weir::windows::{TimeWindow, Tumbling};
use weir::DataStream;

/// The top price of a window.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct WindowMax {
    price: i64,
    window_end: i64,
}

/// Passes on the bids that can still be at the top price of a window they join: the bid's own
/// window `[s, s + 10 s)` and, for a bid at exactly `s`, the window that ends at `s` (the SQL's
/// `BETWEEN` includes the end).
///
/// Per subtask it keeps the highest price seen so far in each window still open, and drops a bid
/// priced below it in every window the bid joins. A window's maximum is at least any subtask's
/// running maximum, so no bid of the result is dropped. Bids behind this subtask's watermark
/// for their window pass unfiltered and do not raise the running maximum (the window operator
/// downstream, whose watermark is not ahead of this one, may not count them). The maxima are
/// not checkpointed: after a restore the filter starts empty and passes more bids, never fewer.
#[derive(Clone, Default)]
struct Candidates {
    /// Window end → highest price of the window seen by this subtask.
    max: BTreeMap<i64, i64>,
}

impl ProcessFunction<Bid, Bid> for Candidates {
    fn process_element(
        &mut self,
        b: Bid,
        ctx: &mut ProcessContext<'_>,
        out: &mut Collector<'_, Bid>,
    ) -> FnResult {
        let wm = ctx.current_watermark();
        let ts = b.date_time;
        let end = ts.div_euclid(WINDOW_MS) * WINDOW_MS + WINDOW_MS;
        if end - 1 <= wm {
            out.collect(b);
            return Ok(());
        }
        // Windows that closed more than one window ago join no bid that is not late.
        while let Some((&e, _)) = self.max.first_key_value() {
            if e.saturating_add(WINDOW_MS) > wm {
                break;
            }
            self.max.remove(&e);
        }
        let own = self.max.entry(end).or_insert(i64::MIN);
        let mut keep = b.price >= *own;
        *own = (*own).max(b.price);
        if ts == end - WINDOW_MS {
            keep |= self.max.get(&ts).is_none_or(|m| b.price >= *m);
        }
        if keep {
            out.collect(b);
        }
        Ok(())
    }
}

/// The bids at the top price of each 10 s window (`[start, end]`).
pub fn q7(events: &DataStream<Event>) -> DataStream<Bid> {
    let bids = bids(events);
    // Timestamped at the window's last millisecond, `end − 1`.
    let maxima = bids
        .map(|b: Bid| b.price)
        .window_all(Tumbling::event_time(WINDOW_MS))
        .reduce_with(
            |a: i64, b: i64| a.max(b),
            |_: &(), w: &TimeWindow, price: i64| WindowMax {
                price,
                window_end: w.end,
            },
        )
        .name("q7_max");
    // bid.ts ∈ [max.ts + 1 − WINDOW_MS, max.ts + 1] = [end − WINDOW_MS, end]
    let candidates = bids.process(Candidates::default()).name("q7_candidates");
    maxima
        .key_by(|m: &WindowMax| m.price)
        .interval_join(&candidates.key_by(|b: &Bid| b.price))
        .between_ms(1 - WINDOW_MS, 1)
        .process(|_: &WindowMax, b: &Bid| b.clone())
        .name("q7")
}
