//! Query 5, hot items: the auctions with the most bids in each sliding window of 10 s every 2 s.
//!
//! Flink SQL: counts per auction and `HOP(…, INTERVAL '2' SECOND, INTERVAL '10' SECOND)` window,
//! joined to the maximum count of the same window on `num >= maxn`, selecting `auction, num`
//! (every auction tied for the maximum).
//!
//! Weir: an incremental top-N in two keyed stages, so that closing a window costs the number of
//! tied auctions, not the number of auctions that had a bid in it.
//!
//! 1. **Per bucket of auctions** ([`BUCKETS`] buckets, keyed by a hash of the auction id): a
//!    [`KeyedProcessFunction`] keeps, per open window, the count of every auction of the bucket
//!    and their maximum (one [`BucketCounts`] state entry per bucket, so that a bid is one state
//!    access), and per window (state namespace = the window's end) the bucket's running maximum
//!    with the auctions tied at it ([`LocalTop`]). A bid adds 1 to its auction's count in each of the five
//!    windows it falls in; when the new count reaches the maximum, the top is updated (counts only
//!    grow within a window, so the maximum only grows). An event-time timer at the window's last
//!    millisecond emits the bucket's top; a second one, half a slide later, drops the window's
//!    counts (off the path of the result: dropping a map of a frozen snapshot copies it).
//! 2. **Per window** (keyed by the window's end): 2 s tumbling windows, which hold exactly the
//!    buckets' tops of one sliding window, keep the highest count and every auction that has it.
//!
//! All of it is Weir keyed state and timers: checkpointed, restorable at any parallelism (the
//! buckets are keys). The rows are the same as Flink's, also on ties: every auction of the
//! window with the maximum count is some bucket's top.
use super::{bids, SLIDE_MS, WINDOW_MS};
use crate::model::{Bid, Event};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use weir::prelude::*;
use weir::windows::Tumbling;
use weir::{AggregateFunction, DataStream};

/// An auction with the most bids in a window, and how many.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Q5Row {
    /// The auction.
    pub auction: i64,
    /// Its bids in the window.
    pub num: i64,
}

/// How many buckets the auctions are counted in (the keys of the first stage). More buckets:
/// smaller maps (cheaper to copy on write while a snapshot holds them) and more (small) tops per
/// window; the key groups spread them over the subtasks.
pub const BUCKETS: u64 = 1024;

/// The windows a bid falls in.
const WINDOWS: usize = (WINDOW_MS / SLIDE_MS) as usize;

/// The bucket of an auction: a multiplicative hash (auction ids are consecutive, and the hot
/// auctions are every 100th: a plain modulo would put them all in one bucket).
fn bucket(auction: i64) -> u32 {
    ((auction as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as u32 % BUCKETS as u32
}

/// A hasher for the i64 auction ids of a count map (SipHash is most of a lookup's cost here).
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_i64(&mut self, v: i64) {
        self.0 = (v as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type IdMap<V> = HashMap<i64, V, BuildHasherDefault<IdHasher>>;

/// The bids of a bucket's auctions in one window, and the highest of those counts.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct WindowCounts {
    end: i64,
    counts: IdMap<i64>,
    max: i64,
}

/// A bucket's open windows (usually 5 or 6; more when some input is far ahead of the
/// watermark), by end: one state entry per bucket, so that a bid costs one state access.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct BucketCounts {
    windows: Vec<WindowCounts>,
}

/// A bucket's (or, merged, the window's) highest count in a window and the auctions that have it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct LocalTop {
    window_end: i64,
    num: i64,
    auctions: Vec<i64>,
}

impl LocalTop {
    /// Adds auctions with `num` bids: a higher count replaces the top, an equal one joins it.
    fn add(&mut self, num: i64, auctions: impl IntoIterator<Item = i64>) {
        if num > self.num {
            self.num = num;
            self.auctions.clear();
        }
        if num == self.num {
            self.auctions.extend(auctions);
        }
    }
}

/// Stage 1: per bucket and window, the count of each auction and the running top.
#[derive(Clone, Default)]
struct BucketTops {
    counts: ValueState<BucketCounts>,
    top: ValueState<LocalTop, i64>,
}

impl KeyedProcessFunction<u32, Bid, LocalTop> for BucketTops {
    fn open(&mut self, s: &mut StateRegistry<'_, u32>) -> FnResult {
        // the top is namespaced by the window's end (the registry's shorthands have none)
        self.counts = s.value_state("window-counts")?;
        self.top = ValueState::register(s.store(), "window-top")?;
        Ok(())
    }

    fn process_element(
        &mut self,
        bid: Bid,
        ctx: &mut KeyedContext<'_, u32>,
        _out: &mut Collector<'_, LocalTop>,
    ) -> FnResult {
        let t = bid.date_time;
        let watermark = ctx.current_watermark();
        // the windows [end − 10 s, end) holding t: ends are multiples of the slide in (t, t + 10 s];
        // a window the watermark has closed takes no more bids (no allowed lateness)
        let last_end = t.div_euclid(SLIDE_MS) * SLIDE_MS + WINDOW_MS;
        // (a watermark below t is no bound: clamped there, it cannot overflow)
        let open_after = watermark.max(t - WINDOW_MS) + 1;
        let first_end = (last_end - WINDOW_MS + SLIDE_MS)
            .max(open_after.div_euclid(SLIDE_MS) * SLIDE_MS + SLIDE_MS);
        if first_end > last_end {
            return Ok(());
        }
        // windows created (timers to register) and windows whose top the bid reached
        let mut created = [0i64; WINDOWS];
        let mut tops = [(0i64, 0i64); WINDOWS];
        let (mut n_created, mut n_tops) = (0, 0);
        self.counts.mutate(ctx, BucketCounts::default, |b| {
            let mut end = first_end;
            while end <= last_end {
                let i = match b.windows.binary_search_by_key(&end, |w| w.end) {
                    Ok(i) => i,
                    Err(i) => {
                        b.windows.insert(
                            i,
                            WindowCounts {
                                end,
                                ..WindowCounts::default()
                            },
                        );
                        created[n_created] = end;
                        n_created += 1;
                        i
                    }
                };
                let w = &mut b.windows[i];
                let c = w.counts.entry(bid.auction).or_insert(0);
                *c += 1;
                if *c >= w.max {
                    w.max = *c;
                    tops[n_tops] = (end, *c);
                    n_tops += 1;
                }
                end += SLIDE_MS;
            }
        });
        for &end in &created[..n_created] {
            ctx.register_event_time_timer(end - 1);
            ctx.register_event_time_timer(end - 1 + SLIDE_MS / 2);
        }
        for &(end, num) in &tops[..n_tops] {
            self.top.mutate_in(
                ctx,
                &end,
                || LocalTop {
                    window_end: end,
                    ..LocalTop::default()
                },
                // top.num is the old maximum: a higher count is alone at the top (the others
                // have less), an equal one joins the tied auctions
                |top| top.add(num, [bid.auction]),
            );
        }
        Ok(())
    }

    fn on_timer(
        &mut self,
        ts: i64,
        ctx: &mut KeyedContext<'_, u32>,
        out: &mut Collector<'_, LocalTop>,
    ) -> FnResult {
        let rem = (ts + 1).rem_euclid(SLIDE_MS);
        if rem == 0 {
            // the window ending at ts + 1 is closed: its top, the counts stay for now
            let end = ts + 1;
            if let Some(top) = self.top.take_in(ctx, &end) {
                out.collect_at(top, ts);
            }
        } else {
            // half a slide later: the counts of the window that ended then go
            let end = ts + 1 - SLIDE_MS / 2;
            let empty = self.counts.mutate(ctx, BucketCounts::default, |b| {
                b.windows.retain(|w| w.end != end);
                b.windows.is_empty()
            });
            if empty {
                self.counts.clear(ctx);
            }
        }
        Ok(())
    }
}

/// Stage 2: the buckets' tops of one window, merged.
struct Top;

impl AggregateFunction<LocalTop, (i64, Vec<i64>), (i64, Vec<i64>)> for Top {
    fn create_accumulator(&self) -> (i64, Vec<i64>) {
        (0, Vec::new())
    }
    fn add(&self, acc: &mut (i64, Vec<i64>), t: LocalTop) {
        merge_top(acc, t.num, t.auctions);
    }
    fn get_result(&self, acc: &(i64, Vec<i64>)) -> (i64, Vec<i64>) {
        acc.clone()
    }
    fn merge(&self, acc: &mut (i64, Vec<i64>), (num, auctions): (i64, Vec<i64>)) {
        merge_top(acc, num, auctions);
    }
}

fn merge_top(acc: &mut (i64, Vec<i64>), num: i64, auctions: Vec<i64>) {
    if num > acc.0 {
        *acc = (num, auctions);
    } else if num == acc.0 {
        acc.1.extend(auctions);
    }
}

/// For each 10 s window (every 2 s), the auctions with the most bids.
pub fn q5(events: &DataStream<Event>) -> DataStream<Q5Row> {
    bids(events)
        .key_by(|b: &Bid| bucket(b.auction))
        .process(BucketTops::default())
        .name("q5_bucket_tops")
        .key_by(|t: &LocalTop| t.window_end)
        .window(Tumbling::event_time(SLIDE_MS))
        .aggregate(Top)
        .flat_map(|(num, auctions): (i64, Vec<i64>)| {
            auctions
                .into_iter()
                .map(move |auction| Q5Row { auction, num })
        })
        .name("q5")
}
