//! Every query on a small generated input, at parallelism 1 and 2, against the plain-Rust
//! computation of `oracle`; then edge cases on hand-made events.
mod oracle;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir::prelude::*;
use weir::{Data, ManualClock};
use weir_nexmark::queries::{self, BidderWindowCount, Decimal3};
use weir_nexmark::{Auction, Bid, Event, NexmarkConfig, NexmarkSource, Person};
use weir_runtime::restart::{RestartStrategy, RestoreFrom};

/// 10 000 events over 50 s of event time: 200 people, 600 auctions, 9 200 bids.
fn config() -> NexmarkConfig {
    NexmarkConfig::new(10_000).seed(42).rate(200)
}

fn input() -> Vec<Event> {
    config().all_events().unwrap()
}

/// Runs `query` on the generated events at parallelism `p`; the rows in arrival order.
fn run<T: Data>(p: usize, query: impl Fn(&DataStream<Event>) -> DataStream<T>) -> Vec<T> {
    let env = StreamEnv::new().with_parallelism(p);
    let out = CollectSink::new();
    query(&NexmarkSource::new(config()).stream(&env)).sink(out.clone());
    env.execute("nexmark query").unwrap();
    out.values()
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

/// Runs at parallelism 1 and 2 and compares the sorted rows (as `key`) with `want`.
fn check<T: Data, K: Ord + Debug>(
    name: &str,
    query: impl Fn(&DataStream<Event>) -> DataStream<T>,
    key: impl Fn(T) -> K,
    want: Vec<K>,
    min_rows: usize,
) {
    let want = sorted(want);
    assert!(
        want.len() >= min_rows,
        "{name}: the input gives only {} rows",
        want.len()
    );
    for p in [1, 2] {
        let got = sorted(run(p, &query).into_iter().map(&key).collect());
        assert_eq!(
            got.len(),
            want.len(),
            "{name} at parallelism {p}: row count"
        );
        assert_eq!(got, want, "{name} at parallelism {p}");
    }
}

#[test]
fn q0_passes_bids_through() {
    let ev = input();
    check("q0", queries::q0, |b| b, oracle::bids(&ev), 9_000);
}

#[test]
fn q1_converts_prices() {
    let ev = input();
    let want = oracle::bids(&ev)
        .into_iter()
        .map(|b| {
            (
                b.auction,
                b.bidder,
                oracle::euro_milli(b.price),
                b.date_time,
            )
        })
        .collect();
    check(
        "q1",
        queries::q1,
        |r| (r.auction, r.bidder, r.price.0, r.date_time),
        want,
        9_000,
    );
}

#[test]
fn q2_selects_auctions() {
    let ev = input();
    check(
        "q2",
        queries::q2,
        |r| (r.auction, r.price),
        oracle::q2(&ev),
        20,
    );
}

#[test]
fn q3_joins_local_sellers_incrementally() {
    let ev = input();
    check(
        "q3",
        queries::q3,
        |r| (r.name, r.city, r.state, r.id),
        oracle::q3(&ev),
        10,
    );
}

#[test]
fn q4_averages_winning_prices_per_category() {
    let ev = input();
    let want = oracle::q4(&ev);
    let winners = oracle::winners(&ev).len();
    assert_eq!(want.len(), 5);
    for p in [1, 2] {
        let rows = run(p, queries::q4);
        assert_eq!(rows.len(), winners, "one update per won auction, p={p}");
        let mut last = BTreeMap::new();
        for r in rows {
            last.insert(r.id, r.final_price);
        }
        assert_eq!(last, want, "final average per category, p={p}");
    }
}

#[test]
fn q5_finds_hot_auctions_per_sliding_window() {
    let ev = input();
    check(
        "q5",
        queries::q5,
        |r| (r.auction, r.num),
        oracle::q5(&ev),
        25,
    );
}

#[test]
fn q6_averages_a_sellers_last_auctions() {
    let ev = input();
    check(
        "q6",
        queries::q6,
        |r| (r.seller, r.avg_price),
        oracle::q6(&ev),
        400,
    );
}

#[test]
fn q7_reports_the_highest_bids_per_window() {
    let ev = input();
    check("q7", queries::q7, |b| b, oracle::q7(&ev), 5);
}

#[test]
fn q8_finds_new_sellers_per_window() {
    let ev = input();
    check(
        "q8",
        queries::q8,
        |r| (r.id, r.name, r.stime),
        oracle::q8(&ev),
        5,
    );
}

#[test]
fn q9_finds_every_winning_bid() {
    let ev = input();
    let want = oracle::winners(&ev)
        .into_iter()
        .map(|(a, b)| {
            (
                a.id,
                a.seller,
                a.expires,
                b.bidder,
                b.price,
                b.date_time,
                b.extra,
            )
        })
        .collect();
    check(
        "q9",
        queries::q9,
        |r| {
            assert_eq!(r.id, r.auction);
            (
                r.id,
                r.seller,
                r.expires,
                r.bidder,
                r.price,
                r.bid_date_time,
                r.bid_extra,
            )
        },
        want,
        400,
    );
}

#[test]
fn q11_counts_bids_per_session() {
    let ev = input();
    check(
        "q11",
        queries::q11,
        |r| (r.bidder, r.bid_count, r.starttime, r.endtime),
        oracle::q11(&ev),
        50,
    );
}

#[test]
fn q13_joins_bids_to_a_side_table() {
    let ev = input();
    let dir = tempfile::tempdir().unwrap();
    let side = dir.path().join("side.csv");
    // Auction ids run from 1000 to about 1610: those from 1300 on find no row and are dropped.
    weir_nexmark::files::write_side_input(&side, 1_300).unwrap();
    let table: HashMap<i64, String> = (0..1_300).map(|i| (i, i.to_string())).collect();
    let want = oracle::q13(&ev, &table);
    assert!(
        want.len() < oracle::bids(&ev).len(),
        "some bids find no row"
    );
    let s = side.clone();
    check(
        "q13",
        move |e| queries::q13(e, s.clone()),
        |r| (r.auction, r.bidder, r.price, r.date_time, r.value),
        want,
        1_000,
    );
}

#[test]
fn q14_computes_columns_and_filters() {
    let ev = input();
    check(
        "q14",
        queries::q14,
        |r| {
            (
                r.auction,
                r.bidder,
                r.price.0,
                r.bid_time_type,
                r.date_time,
                r.c_counts,
            )
        },
        oracle::q14(&ev),
        1_000,
    );
}

#[test]
fn q14_classifies_hours_of_the_day() {
    // One bid per hour of a day, all at a price that passes the filter.
    let hour = 3_600_000;
    let events: Vec<Event> = (0..24)
        .map(|h| {
            Event::Bid(Bid {
                auction: 1,
                bidder: 1,
                price: 2_000_000,
                date_time: h * hour + 1,
                extra: "ccc".into(),
            })
        })
        .collect();
    let rows = run_on(1, events, queries::q14);
    let kinds: Vec<String> = rows.iter().map(|r| r.bid_time_type.clone()).collect();
    let want: Vec<&str> = (0..24)
        .map(|h| match h {
            7 | 19 => "otherTime",
            8..=18 => "dayTime",
            _ => "nightTime",
        })
        .collect();
    assert_eq!(kinds, want);
    assert!(rows.iter().all(|r| r.c_counts == 3));
    assert_eq!(rows[0].price, Decimal3(1_816_000_000));
}

/// Runs `query` on hand-made events (one source split, in the given order).
fn run_on<T: Data>(
    p: usize,
    events: Vec<Event>,
    query: impl Fn(&DataStream<Event>) -> DataStream<T>,
) -> Vec<T> {
    let env = StreamEnv::new().with_parallelism(p);
    let out = CollectSink::new();
    let events = env.from_collection(events).assign_timestamps(
        WatermarkStrategy::bounded_out_of_orderness(Duration::from_secs(4))
            .with_timestamps(|e: &Event, _| e.date_time()),
    );
    query(&events).sink(out.clone());
    env.execute("nexmark edge case").unwrap();
    out.values()
}

fn bid(auction: i64, bidder: i64, price: i64, date_time: i64) -> Event {
    Event::Bid(Bid {
        auction,
        bidder,
        price,
        date_time,
        extra: String::new(),
    })
}

fn auction(id: i64, seller: i64, category: i64, date_time: i64, expires: i64) -> Event {
    Event::Auction(Auction {
        id,
        item_name: "item".into(),
        description: "desc".into(),
        initial_bid: 1,
        reserve: 2,
        date_time,
        expires,
        seller,
        category,
        extra: String::new(),
    })
}

#[test]
fn winning_bids_take_bounds_inclusively_and_bids_that_came_before_their_auction() {
    let events = vec![
        // Valid (2000 is in [1000, 5000]) but ahead of its auction in the stream.
        bid(7, 1, 300, 2_000),
        auction(7, 100, 12, 1_000, 5_000),
        bid(7, 2, 900, 999),     // before the auction opened
        bid(7, 3, 100, 1_000),   // at the opening: valid
        bid(7, 4, 300, 5_000),   // at the close, same price as the early bid but later
        bid(7, 5, 1_000, 5_001), // after the close
        bid(8, 6, 50, 5_500),    // an auction that never comes
        bid(7, 7, 10, 9_000),    // after the close, waits and is dropped
    ];
    for p in [1, 2] {
        let q9 = run_on(p, events.clone(), queries::q9);
        assert_eq!(q9.len(), 1, "p={p}");
        assert_eq!(
            (q9[0].id, q9[0].bidder, q9[0].price, q9[0].bid_date_time),
            (7, 1, 300, 2_000),
            "the earliest of the highest valid bids, p={p}"
        );
        let q4 = run_on(p, events.clone(), queries::q4);
        assert_eq!(
            q4.iter().map(|r| (r.id, r.final_price)).collect::<Vec<_>>(),
            vec![(12, 300)]
        );
    }
}

#[test]
fn q6_orders_winners_by_bid_time_across_auctions_of_a_seller() {
    // Seller 100: auction 1 (open 0..10 000) wins at t=9000 with 900; auction 2 (open
    // 1000..2000) wins at t=1500 with 100; auction 3 (open 3000..4000) has no bid. Auction 2
    // closes first but auction 1's winner comes after it in time: averages 100, then 500.
    let events = vec![
        auction(1, 100, 10, 0, 10_000),
        auction(2, 100, 10, 1_000, 2_000),
        bid(2, 1, 100, 1_500),
        auction(3, 100, 10, 3_000, 4_000),
        bid(1, 1, 900, 9_000),
    ];
    for p in [1, 2] {
        let rows = run_on(p, events.clone(), queries::q6);
        let got: Vec<(i64, i64)> = rows.iter().map(|r| (r.seller, r.avg_price)).collect();
        assert_eq!(got, vec![(100, 100), (100, 500)], "p={p}");
    }
    // Over 11 rows: twelve auctions won at 100, 200, …, 1200 in time order.
    let mut events = Vec::new();
    for i in 0..12i64 {
        events.push(auction(10 + i, 5, 10, i * 1_000, i * 1_000 + 500));
        events.push(bid(10 + i, 1, (i + 1) * 100, i * 1_000 + 10));
    }
    let got: Vec<i64> = run_on(2, events, queries::q6)
        .iter()
        .map(|r| r.avg_price)
        .collect();
    let want: Vec<i64> = (1..=12i64)
        .map(|i| {
            let from = (i - 10).max(1);
            (from..=i).map(|k| k * 100).sum::<i64>() / (i - from + 1)
        })
        .collect();
    assert_eq!(got, want);
    assert_eq!(*got.last().unwrap(), 700, "(200 + … + 1200) / 11");
}

#[test]
fn q5_reports_every_tied_auction_as_counts_climb() {
    let mut events = Vec::new();
    // 1 and 2 tie at 3 bids, then 2 pulls ahead in the windows that hold its fourth bid
    for t in [100, 200, 300] {
        events.push(bid(1, 1, 10, t));
    }
    for t in [2_100, 2_200, 2_300, 9_000] {
        events.push(bid(2, 1, 10, t));
    }
    // out of order within the watermark's 4 s
    events.push(bid(3, 1, 10, 12_000));
    events.push(bid(3, 1, 10, 9_500));
    // 60 auctions (in many buckets) tied at 2 bids in the windows after the others
    for a in 1_000..1_060 {
        events.push(bid(a, 1, 10, 20_000 + a));
        events.push(bid(a, 2, 10, 21_500));
    }
    let want = sorted(oracle::q5(&events));
    assert!(want.len() > 60 * 5, "{}", want.len());
    for p in [1, 2] {
        let got = sorted(
            run_on(p, events.clone(), queries::q5)
                .iter()
                .map(|r| (r.auction, r.num))
                .collect(),
        );
        assert_eq!(got, want, "p={p}");
    }
}

#[test]
fn q5_restores_from_a_savepoint_at_another_parallelism() {
    // 20 000 events at 5 000 events/s of event time and of wall-clock time: stopped with a
    // savepoint after about a third, the rest run from it at another parallelism (the generator's
    // 2 splits are its checkpointed positions). The rows of
    // both runs together are the rows of the whole input.
    let cfg = NexmarkConfig::new(20_000).seed(5).rate(5_000);
    let want = sorted(oracle::q5(&cfg.all_events().unwrap()));
    let dir = tempfile::tempdir().unwrap();
    let env = |p: usize| {
        StreamEnv::new()
            .with_parallelism(p)
            .with_checkpointing(dir.path(), Duration::from_secs(3600))
            .unwrap()
            .with_restart_strategy(RestartStrategy::None)
    };
    let e1 = env(2);
    let first = CollectSink::new();
    queries::q5(
        &NexmarkSource::new(cfg.clone())
            .splits(2)
            .rate_limited()
            .stream(&e1),
    )
    .sink(first.clone());
    let h = e1.execute_async("q5 first").unwrap();
    std::thread::sleep(Duration::from_millis(1_300));
    let sp = h.stop_with_savepoint(false).unwrap();
    assert!(h.join().unwrap().cancelled);
    let e2 = env(1).with_restore(RestoreFrom::Dir(sp));
    let second = CollectSink::new();
    queries::q5(&NexmarkSource::new(cfg).splits(2).stream(&e2)).sink(second.clone());
    assert!(e2.execute("q5 second").unwrap().restored_from.is_some());
    let got = sorted(
        first
            .values()
            .into_iter()
            .chain(second.values())
            .map(|r| (r.auction, r.num))
            .collect(),
    );
    assert!(!second.values().is_empty());
    assert_eq!(got, want);
}

#[test]
fn q7_includes_a_bid_at_the_end_of_a_window() {
    let events = vec![
        bid(1, 1, 500, 100),
        bid(1, 2, 400, 9_999),
        // The end of window [0, 10 000): in the next window, but at the first window's top
        // price, so it is reported with the first window too.
        bid(1, 3, 500, 10_000),
        bid(1, 4, 900, 15_000),
    ];
    for p in [1, 2] {
        let got = sorted(
            run_on(p, events.clone(), queries::q7)
                .iter()
                .map(|b| (b.bidder, b.price, b.date_time))
                .collect(),
        );
        assert_eq!(
            got,
            vec![(1, 500, 100), (3, 500, 10_000), (4, 900, 15_000)],
            "p={p}"
        );
    }
}

#[test]
fn q7_keeps_every_bid_at_a_top_price_whatever_comes_first() {
    // q7 drops bids below a window's running maximum before its join: a higher bid of the next
    // window seen first must not hide the boundary bid (10 000) at the first window's top, and
    // ties at a top price all stay.
    let events = vec![
        bid(1, 1, 500, 100),
        bid(1, 5, 900, 12_000),
        bid(1, 3, 500, 10_000),
        bid(1, 6, 300, 11_000),
        bid(1, 2, 400, 9_999),
        bid(1, 7, 900, 13_000),
        bid(1, 8, 500, 5_000),
        bid(1, 9, 100, 19_999),
    ];
    for p in [1, 2, 3] {
        let got = sorted(
            run_on(p, events.clone(), queries::q7)
                .iter()
                .map(|b| (b.bidder, b.price, b.date_time))
                .collect(),
        );
        assert_eq!(
            got,
            vec![
                (1, 500, 100),
                (3, 500, 10_000),
                (5, 900, 12_000),
                (7, 900, 13_000),
                (8, 500, 5_000)
            ],
            "p={p}"
        );
    }
}

#[test]
fn q3_and_q8_match_sellers_who_come_after_or_before_their_auctions() {
    let person = |id: i64, state: &str, date_time: i64| {
        Event::Person(Person {
            id,
            name: format!("p{id}"),
            email_address: String::new(),
            credit_card: String::new(),
            city: "Boise".into(),
            state: state.into(),
            date_time,
            extra: String::new(),
        })
    };
    let events = vec![
        auction(1, 50, 10, 0, 100), // before its seller (a lead id)
        person(50, "ID", 10),
        auction(2, 50, 10, 20, 100),
        auction(3, 50, 11, 30, 100), // another category
        person(51, "WA", 40),        // another state
        auction(4, 51, 10, 50, 100),
        auction(5, 50, 10, 12_000, 13_000), // next window
    ];
    for p in [1, 2] {
        let q3 = sorted(
            run_on(p, events.clone(), queries::q3)
                .into_iter()
                .map(|r| (r.name, r.state, r.id))
                .collect(),
        );
        let id = |a: i64| ("p50".to_string(), "ID".to_string(), a);
        assert_eq!(q3, vec![id(1), id(2), id(5)], "p={p}");
        let q8 = sorted(
            run_on(p, events.clone(), queries::q8)
                .into_iter()
                .map(|r| (r.id, r.stime))
                .collect(),
        );
        assert_eq!(
            q8,
            vec![(50, 0), (51, 0)],
            "once per person and window, p={p}"
        );
    }
}

#[test]
fn q12_totals_per_bidder_equal_the_bids() {
    // Processing time comes from a manual clock, advanced 10 s at a time until every bid has
    // been counted in a fired window (which window a bid lands in depends on when it is
    // processed). The source stays open, so the job is cancelled.
    let want = oracle::bids_per_bidder(&input());
    let total: i64 = want.values().sum();
    for p in [1, 2] {
        let clock = ManualClock::new(1_000_000);
        let env = StreamEnv::new()
            .with_parallelism(p)
            .with_clock(Arc::new(clock.clone()));
        let out = CollectSink::new();
        let events = NexmarkSource::new(config()).keep_open().stream(&env);
        queries::q12(&events).sink(out.clone());
        let job = env.execute_async("q12").unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let sum = |rows: &[BidderWindowCount]| rows.iter().map(|r| r.bid_count).sum::<i64>();
        while sum(&out.values()) < total {
            assert!(Instant::now() < deadline, "the windows did not fire");
            clock.advance(10_000);
            std::thread::sleep(Duration::from_millis(20));
        }
        job.cancel();
        job.join().unwrap();
        let rows = out.values();
        let mut per = BTreeMap::new();
        let mut windows = HashSet::new();
        for r in &rows {
            assert_eq!(r.endtime - r.starttime, 10_000);
            assert_eq!(r.starttime % 10_000, 0);
            assert!(
                windows.insert((r.bidder, r.starttime)),
                "one row per bidder and window"
            );
            *per.entry(r.bidder).or_insert(0) += r.bid_count;
        }
        assert_eq!(per, want, "p={p}");
    }
}
