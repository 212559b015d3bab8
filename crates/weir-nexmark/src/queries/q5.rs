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
//!    [`KeyedProcessFunction`] keeps one [`Bucket`] state entry per bucket (one state access
//!    per bid): per auction, its counts in a small array of consecutive windows
//!    ([`AuctionCounts`]: one map probe per bid, then five adds in a row, one per window the bid
//!    falls in), and per open window the bucket's running top ([`WindowTop`]: the maximum and
//!    the auctions tied at it). Counts only grow within a window, so the maximum only grows and
//!    the top changes only when a count reaches it. An event-time timer at the window's last
//!    millisecond emits the bucket's top; a second one, half a slide later, drops the auctions
//!    whose windows are all closed (off the path of the result); closed windows' counts are
//!    dropped from the front of an auction's array by its next bid.
//! 2. **Per window** (keyed by the window's end): 2 s tumbling windows, which hold exactly the
//!    buckets' tops of one sliding window, keep the highest count and every auction that has it.
//!
//! All of it is Weir keyed state and timers: checkpointed, restorable at any parallelism (the
//! buckets are keys). The rows are the same as Flink's, also on ties: every auction of the
//! window with the maximum count is some bucket's top.
use super::{SLIDE_MS, WINDOW_MS};
use crate::model::Event;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use weir::prelude::*;
use weir::windows::Tumbling;
use weir::{AggregateFunction, DataStream};

/// The columns of a bid that q5 reads (Flink's planner likewise pushes the projection to the
/// scan): what crosses the key-by edge, 16 bytes instead of a whole bid with its padding.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct BidAt {
    auction: i64,
    date_time: i64,
}

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

/// Windows an auction's counts hold inline: the open windows a bid can fall in span about 7
/// (from the oldest window the watermark has not closed to the newest holding the latest bid,
/// 4 s of out-of-orderness + 10 s of window, by 2 s); more spill into the bucket's [`Spill`].
const CAP: usize = 8;

/// Windows `lo + CAP, …` of the auctions whose open windows span more than [`CAP`] (input far
/// ahead of the watermark; usually empty), without trailing zeros. Kept beside the counts so
/// that [`AuctionCounts`] is `Copy`: the first write to a bucket after a checkpoint barrier
/// copies its count map (copy-on-write), and a map of `Copy` entries is copied (and dropped)
/// as one block of memory, not entry by entry.
type Spill = IdMap<Vec<u32>>;

/// An auction's bids in the windows `lo, lo + 1, …` (a window's index is its end / the slide):
/// one map entry per auction and bucket for all its open windows, so that a bid is one map
/// probe and five adds in a row. Windows the watermark has closed are dropped from the front
/// lazily, by the auction's next bid.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct AuctionCounts {
    /// The index of the window of `c[0]`.
    lo: i64,
    /// The highest window index with a bid of the auction (the entry goes when it closes).
    hi: i64,
    c: [u32; CAP],
    /// How many windows after `c` the auction has in the bucket's [`Spill`] (0: none).
    spilled: u32,
}

impl AuctionCounts {
    fn new(lo: i64, hi: i64) -> Self {
        AuctionCounts {
            lo,
            hi,
            c: [0; CAP],
            spilled: 0,
        }
    }

    /// Makes room for the windows `first..=last` of auction `id`, dropping those below `open`
    /// (closed).
    #[inline]
    fn fit(&mut self, spill: &mut Spill, id: i64, open: i64, first: i64, last: i64) {
        if open > self.lo {
            self.advance(spill, id, open);
        }
        if first < self.lo {
            self.lower(spill, id, first);
        }
        let need = (last - self.lo + 1) as usize;
        if need > CAP + self.spilled as usize {
            spill.entry(id).or_default().resize(need - CAP, 0);
            self.spilled = (need - CAP) as u32;
        }
        self.hi = self.hi.max(last);
    }

    /// The count of the window `lo + i` of auction `id`.
    #[inline]
    fn slot<'a>(&'a mut self, spill: &'a mut Spill, id: i64, i: usize) -> &'a mut u32 {
        if i < CAP {
            &mut self.c[i]
        } else {
            &mut spill.get_mut(&id).expect("fitted")[i - CAP]
        }
    }

    /// Drops the windows below `lo`.
    fn advance(&mut self, spill: &mut Spill, id: i64, lo: i64) {
        let d = lo - self.lo;
        if self.spilled == 0 {
            if d >= CAP as i64 {
                self.c = [0; CAP];
            } else {
                let d = d as usize;
                self.c.copy_within(d.., 0);
                self.c[CAP - d..].fill(0);
            }
        } else {
            let mut all = self.all(spill, id);
            all.drain(..(d.min(all.len() as i64) as usize));
            self.set_all(spill, id, all);
        }
        self.lo = lo;
    }

    /// Adds (empty) windows in front, down to `lo` (a bid behind the auction's earlier ones).
    #[cold]
    fn lower(&mut self, spill: &mut Spill, id: i64, lo: i64) {
        let d = (self.lo - lo) as usize;
        if self.spilled == 0 && d <= CAP && self.c[CAP - d..].iter().all(|&n| n == 0) {
            self.c.copy_within(..CAP - d, d);
            self.c[..d].fill(0);
        } else {
            let mut all = vec![0; d];
            all.extend(self.all(spill, id));
            self.set_all(spill, id, all);
        }
        self.lo = lo;
    }

    fn all(&self, spill: &Spill, id: i64) -> Vec<u32> {
        let mut v = self.c.to_vec();
        if self.spilled > 0 {
            v.extend_from_slice(&spill[&id]);
        }
        v
    }

    fn set_all(&mut self, spill: &mut Spill, id: i64, mut all: Vec<u32>) {
        while all.len() > CAP && all.last() == Some(&0) {
            all.pop();
        }
        all.resize(all.len().max(CAP), 0);
        let ext = all.split_off(CAP);
        self.spilled = ext.len() as u32;
        if ext.is_empty() {
            spill.remove(&id);
        } else {
            spill.insert(id, ext);
        }
        self.c.copy_from_slice(&all);
    }
}

const _: () = assert!(std::mem::size_of::<(i64, AuctionCounts)>() == 64);

/// A bucket's highest count in an open window and the auctions that have it.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct WindowTop {
    /// The window's index (end / slide).
    k: i64,
    max: u32,
    auctions: Vec<i64>,
}

/// A bucket: its auctions' counts and its open windows' tops, one state entry (one state
/// access per bid).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Bucket {
    auctions: IdMap<AuctionCounts>,
    /// Counts of windows past an auction's inline ones.
    spill: Spill,
    /// By window index.
    tops: Vec<WindowTop>,
}

/// A bucket's (or, merged, the window's) highest count in a window and the auctions that have
/// it: what the first stage emits.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct LocalTop {
    window_end: i64,
    num: i64,
    auctions: Vec<i64>,
}

/// Stage 1: per bucket, each auction's count per open window and each window's running top.
#[derive(Clone, Default)]
struct BucketTops {
    state: ValueState<Bucket>,
}

impl KeyedProcessFunction<u32, BidAt, LocalTop> for BucketTops {
    fn open(&mut self, s: &mut StateRegistry<'_, u32>) -> FnResult {
        self.state = s.value_state("q5-bucket")?;
        Ok(())
    }

    fn process_element(
        &mut self,
        bid: BidAt,
        ctx: &mut KeyedContext<'_, u32>,
        _out: &mut Collector<'_, LocalTop>,
    ) -> FnResult {
        // window k is [k·slide − 10 s, k·slide): the bid's are k_t + 1 ..= k_t + 5; a window
        // the watermark has closed (its timer at k·slide − 1 has fired) takes no more bids
        let k_t = bid.date_time.div_euclid(SLIDE_MS);
        let last = k_t + WINDOWS as i64;
        let open = ctx
            .current_watermark()
            .saturating_add(1)
            .div_euclid(SLIDE_MS)
            + 1;
        let first = (k_t + 1).max(open);
        if first > last {
            return Ok(());
        }
        // windows new to the bucket (timers to register)
        let mut created = [0i64; WINDOWS];
        let mut n_created = 0;
        self.state.mutate(ctx, Bucket::default, |b| {
            let Bucket {
                auctions,
                spill,
                tops,
            } = b;
            let a = auctions
                .entry(bid.auction)
                .or_insert_with(|| AuctionCounts::new(open.max(last + 1 - CAP as i64), last));
            a.fit(spill, bid.auction, open, first, last);
            let i0 = tops.partition_point(|w| w.k < first);
            let slot0 = (first - a.lo) as usize;
            for (j, k) in (first..=last).enumerate() {
                let i = i0 + j;
                if i == tops.len() || tops[i].k != k {
                    tops.insert(
                        i,
                        WindowTop {
                            k,
                            max: 0,
                            auctions: Vec::new(),
                        },
                    );
                    created[n_created] = k;
                    n_created += 1;
                }
                let c = a.slot(spill, bid.auction, slot0 + j);
                *c += 1;
                let n = *c;
                // counts only grow: a higher count is alone at the top, an equal one joins it
                let top = &mut tops[i];
                if n >= top.max {
                    if n > top.max {
                        top.max = n;
                        top.auctions.clear();
                    }
                    top.auctions.push(bid.auction);
                }
            }
        });
        for &k in &created[..n_created] {
            let end = k * SLIDE_MS;
            ctx.register_event_time_timer(end - 1);
            ctx.register_event_time_timer(end - 1 + SLIDE_MS / 2);
        }
        Ok(())
    }

    fn on_timer(
        &mut self,
        ts: i64,
        ctx: &mut KeyedContext<'_, u32>,
        out: &mut Collector<'_, LocalTop>,
    ) -> FnResult {
        if (ts + 1).rem_euclid(SLIDE_MS) == 0 {
            // the window ending at ts + 1 is closed: its top
            let k = (ts + 1).div_euclid(SLIDE_MS);
            let top = self.state.mutate(ctx, Bucket::default, |b| {
                let i = b.tops.partition_point(|w| w.k < k);
                (i < b.tops.len() && b.tops[i].k == k).then(|| b.tops.remove(i))
            });
            if let Some(top) = top {
                out.collect_at(
                    LocalTop {
                        window_end: ts + 1,
                        num: i64::from(top.max),
                        auctions: top.auctions,
                    },
                    ts,
                );
            }
        } else {
            // half a slide later (off the result's path): auctions whose windows are all
            // closed go (the windows up to k are)
            let k = (ts + 1 - SLIDE_MS / 2).div_euclid(SLIDE_MS);
            let empty = self.state.mutate(ctx, Bucket::default, |b| {
                b.auctions.retain(|_, a| a.hi > k);
                if !b.spill.is_empty() {
                    let Bucket {
                        auctions, spill, ..
                    } = b;
                    spill.retain(|id, _| auctions.contains_key(id));
                }
                b.auctions.is_empty() && b.tops.is_empty()
            });
            if empty {
                self.state.clear(ctx);
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
    events
        .flat_map(|e: Event| {
            e.into_bid().map(|b| BidAt {
                auction: b.auction,
                date_time: b.date_time,
            })
        })
        .name("bids")
        .key_by(|b: &BidAt| bucket(b.auction))
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Random bids against a map of (window, count): every open window's count is the same,
    /// through windows dropped from the front, added in front, and spans wider than [`CAP`].
    #[test]
    fn auction_counts_match_a_map() {
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut rnd = |n: i64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as i64
        };
        for _ in 0..200 {
            let mut open = rnd(20) - 10;
            let mut a: Option<AuctionCounts> = None;
            let mut spill = Spill::default();
            let id = rnd(1000);
            let mut want = BTreeMap::new();
            for _ in 0..300 {
                open += rnd(3) / 2;
                // a bid whose windows start at or after the first open one, up to 12 windows on
                let k_t = open - 1 + rnd(12);
                let last = k_t + WINDOWS as i64;
                let first = (k_t + 1).max(open);
                if first > last {
                    continue;
                }
                let a = a.get_or_insert_with(|| {
                    AuctionCounts::new(open.max(last + 1 - CAP as i64), last)
                });
                a.fit(&mut spill, id, open, first, last);
                for k in first..=last {
                    *a.slot(&mut spill, id, (k - a.lo) as usize) += 1;
                    *want.entry(k).or_insert(0u32) += 1;
                }
                assert!(a.lo <= open || a.lo <= first);
                assert_eq!(a.spilled as usize, spill.get(&id).map_or(0, |e| e.len()));
                assert!(spill
                    .get(&id)
                    .is_none_or(|e| e.last().is_some_and(|&n| n > 0)));
                for (&k, &n) in want.range(open..) {
                    assert_eq!(
                        *a.slot(&mut spill, id, (k - a.lo) as usize),
                        n,
                        "window {k}"
                    );
                }
                assert_eq!(a.hi, *want.keys().last().unwrap());
            }
        }
    }
}
