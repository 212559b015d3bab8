//! Each query computed directly over the whole event list, in plain Rust, the way the SQL reads
//! (no streaming, no Weir, no code shared with the queries): the expected results.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use weir_nexmark::{Auction, Bid, Event, Person};

pub fn persons(ev: &[Event]) -> Vec<Person> {
    ev.iter().cloned().filter_map(Event::into_person).collect()
}
pub fn auctions(ev: &[Event]) -> Vec<Auction> {
    ev.iter().cloned().filter_map(Event::into_auction).collect()
}
pub fn bids(ev: &[Event]) -> Vec<Bid> {
    ev.iter().cloned().filter_map(Event::into_bid).collect()
}

/// q1 and q14: `0.908 * price` in thousandths.
pub fn euro_milli(price: i64) -> i64 {
    price * 908
}

/// q2: (auction, price) of bids on auctions divisible by 123.
pub fn q2(ev: &[Event]) -> Vec<(i64, i64)> {
    bids(ev)
        .into_iter()
        .filter(|b| b.auction % 123 == 0)
        .map(|b| (b.auction, b.price))
        .collect()
}

/// q3: (name, city, state, auction id).
pub fn q3(ev: &[Event]) -> Vec<(String, String, String, i64)> {
    let people = persons(ev);
    let mut out = Vec::new();
    for a in auctions(ev) {
        for p in &people {
            if a.seller == p.id
                && a.category == 10
                && (p.state == "OR" || p.state == "ID" || p.state == "CA")
            {
                out.push((p.name.clone(), p.city.clone(), p.state.clone(), a.id));
            }
        }
    }
    out
}

/// Per auction with at least one bid in `[dateTime, expires]`: the auction and its best bid
/// (highest price, then earliest, then smallest bidder, then smallest extra).
pub fn winners(ev: &[Event]) -> Vec<(Auction, Bid)> {
    let mut by_auction: HashMap<i64, Vec<Bid>> = HashMap::new();
    for b in bids(ev) {
        by_auction.entry(b.auction).or_default().push(b);
    }
    let mut out = Vec::new();
    for a in auctions(ev) {
        let mut valid: Vec<Bid> = by_auction
            .get(&a.id)
            .into_iter()
            .flatten()
            .filter(|b| a.date_time <= b.date_time && b.date_time <= a.expires)
            .cloned()
            .collect();
        valid.sort_by(|x, y| {
            y.price
                .cmp(&x.price)
                .then(x.date_time.cmp(&y.date_time))
                .then(x.bidder.cmp(&y.bidder))
                .then(x.extra.cmp(&y.extra))
        });
        if let Some(best) = valid.into_iter().next() {
            out.push((a, best));
        }
    }
    out
}

/// q4: category → truncated average of the auctions' maximum valid bid.
pub fn q4(ev: &[Event]) -> BTreeMap<i64, i64> {
    let mut per: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for (a, b) in winners(ev) {
        per.entry(a.category).or_default().push(b.price);
    }
    per.into_iter()
        .map(|(c, v)| (c, v.iter().sum::<i64>() / v.len() as i64))
        .collect()
}

/// The windows `[start, start + size)` (starts multiples of `slide`) that contain `t`.
fn hop_starts(t: i64, size: i64, slide: i64) -> Vec<i64> {
    let last = t.div_euclid(slide) * slide;
    (0..)
        .map(|k| last - k * slide)
        .take_while(|s| *s > t - size)
        .collect()
}

/// q5: (auction, num) for the auctions with the top count of each 10 s window every 2 s.
pub fn q5(ev: &[Event]) -> Vec<(i64, i64)> {
    let mut counts: BTreeMap<i64, HashMap<i64, i64>> = BTreeMap::new();
    for b in bids(ev) {
        for s in hop_starts(b.date_time, 10_000, 2_000) {
            *counts.entry(s).or_default().entry(b.auction).or_default() += 1;
        }
    }
    let mut out = Vec::new();
    for per_auction in counts.values() {
        let max = per_auction.values().copied().max().unwrap();
        for (a, n) in per_auction {
            if *n >= max {
                out.push((*a, *n));
            }
        }
    }
    out
}

/// q6: (seller, avg) for each won auction: per seller in order of the winning bid's time (then
/// auction id), the truncated average of that price and the 10 before.
pub fn q6(ev: &[Event]) -> Vec<(i64, i64)> {
    let mut per: BTreeMap<i64, Vec<(i64, i64, i64)>> = BTreeMap::new();
    for (a, b) in winners(ev) {
        per.entry(a.seller)
            .or_default()
            .push((b.date_time, a.id, b.price));
    }
    let mut out = Vec::new();
    for (seller, mut rows) in per {
        rows.sort();
        for i in 0..rows.len() {
            let from = i.saturating_sub(10);
            let window = &rows[from..=i];
            let avg = window.iter().map(|r| r.2).sum::<i64>() / window.len() as i64;
            out.push((seller, avg));
        }
    }
    out
}

/// q7: bids at the top price of a 10 s window, with time in `[start, start + 10 s]`.
pub fn q7(ev: &[Event]) -> Vec<Bid> {
    let all = bids(ev);
    let mut max: BTreeMap<i64, i64> = BTreeMap::new();
    for b in &all {
        let s = b.date_time.div_euclid(10_000) * 10_000;
        let m = max.entry(s).or_insert(i64::MIN);
        *m = (*m).max(b.price);
    }
    let mut out = Vec::new();
    for (s, m) in max {
        for b in &all {
            if b.price == m && s <= b.date_time && b.date_time <= s + 10_000 {
                out.push(b.clone());
            }
        }
    }
    out
}

/// q8: (id, name, window start) of people who opened an auction in their window.
pub fn q8(ev: &[Event]) -> Vec<(i64, String, i64)> {
    let w = |t: i64| t.div_euclid(10_000) * 10_000;
    let sellers: HashSet<(i64, i64)> = auctions(ev)
        .iter()
        .map(|a| (a.seller, w(a.date_time)))
        .collect();
    persons(ev)
        .into_iter()
        .filter(|p| sellers.contains(&(p.id, w(p.date_time))))
        .map(|p| (p.id, p.name, w(p.date_time)))
        .collect()
}

/// q11: (bidder, count, start, end) per session with a 10 s gap.
pub fn q11(ev: &[Event]) -> Vec<(i64, i64, i64, i64)> {
    let mut times: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for b in bids(ev) {
        times.entry(b.bidder).or_default().push(b.date_time);
    }
    let mut out = Vec::new();
    for (bidder, mut ts) in times {
        ts.sort();
        let (mut start, mut last, mut n) = (ts[0], ts[0], 0);
        for t in ts {
            if t > last + 10_000 {
                out.push((bidder, n, start, last + 10_000));
                (start, n) = (t, 0);
            }
            last = t;
            n += 1;
        }
        out.push((bidder, n, start, last + 10_000));
    }
    out
}

/// q12's totals: bids per bidder.
pub fn bids_per_bidder(ev: &[Event]) -> BTreeMap<i64, i64> {
    let mut m = BTreeMap::new();
    for b in bids(ev) {
        *m.entry(b.bidder).or_insert(0) += 1;
    }
    m
}

/// q13: (auction, bidder, price, dateTime, value) for bids whose `auction mod 10000` is a key of
/// `side`.
pub fn q13(ev: &[Event], side: &HashMap<i64, String>) -> Vec<(i64, i64, i64, i64, String)> {
    bids(ev)
        .into_iter()
        .filter_map(|b| {
            side.get(&(b.auction % 10_000))
                .map(|v| (b.auction, b.bidder, b.price, b.date_time, v.clone()))
        })
        .collect()
}

/// q14: (auction, bidder, euro thousandths, type, dateTime, c count) of bids priced strictly
/// between 1 000 000 and 50 000 000 euros.
pub fn q14(ev: &[Event]) -> Vec<(i64, i64, i64, String, i64, i64)> {
    let mut out = Vec::new();
    for b in bids(ev) {
        let p = euro_milli(b.price);
        if p <= 1_000_000_000 || p >= 50_000_000_000 {
            continue;
        }
        let hour = (b.date_time / 3_600_000) % 24;
        let kind = match hour {
            8..=18 => "dayTime",
            0..=6 | 20..=23 => "nightTime",
            _ => "otherTime",
        };
        let c = b.extra.chars().filter(|c| *c == 'c').count() as i64;
        out.push((b.auction, b.bidder, p, kind.to_string(), b.date_time, c));
    }
    out
}
