//! The generator: determinism, splits, ratios and distributions, files.
use std::collections::{BTreeMap, HashMap, HashSet};
use weir::prelude::*;
use weir_nexmark::files::{self, Format};
use weir_nexmark::generator::{Kind, DEFAULT_BASE_TIME_MS};
use weir_nexmark::{Event, NexmarkConfig, NexmarkSource};

fn sorted_json(events: &[Event]) -> Vec<String> {
    let mut v: Vec<String> = events
        .iter()
        .map(|e| serde_json::to_string(e).unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn same_seed_same_events_and_event_n_is_a_pure_function() {
    let cfg = NexmarkConfig::new(3_000).seed(7);
    let a = cfg.all_events().unwrap();
    assert_eq!(a, cfg.all_events().unwrap());
    for n in [0u64, 1, 4, 49, 50, 1234, 2999] {
        assert_eq!(cfg.event(n), a[n as usize], "event {n}");
    }
    let b = cfg.clone().seed(8).all_events().unwrap();
    assert_ne!(a, b, "another seed gives other events");
    // The structure (kinds, ids, times) does not depend on the seed; the random fields do.
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.event_type(), y.event_type());
        assert_eq!(x.date_time(), y.date_time());
    }
}

#[test]
fn parallel_splits_generate_the_same_events_once_each() {
    let cfg = NexmarkConfig::new(4_000).seed(3).rate(500);
    let want = sorted_json(&cfg.all_events().unwrap());
    for (p, splits) in [(1, None), (2, None), (3, Some(5))] {
        let env = StreamEnv::new().with_parallelism(p);
        let out = CollectSink::new();
        let mut src = NexmarkSource::new(cfg.clone());
        if let Some(s) = splits {
            src = src.splits(s);
        }
        // A rebalance makes the events cross a channel: their serialized form round-trips.
        src.stream(&env)
            .rebalance()
            .map(|e: Event| e)
            .sink(out.clone());
        env.execute("nexmark splits").unwrap();
        let recs = out.records();
        assert!(
            recs.iter().all(|r| r.ts == r.value.date_time()),
            "timestamps"
        );
        let got: Vec<Event> = recs.into_iter().map(|r| r.value).collect();
        assert_eq!(sorted_json(&got), want, "p={p} splits={splits:?}");
    }
}

#[test]
fn proportions_ids_and_times_follow_the_event_numbers() {
    let cfg = NexmarkConfig::new(50_000).rate(2_000);
    let events = cfg.all_events().unwrap();
    let (mut persons, mut auctions, mut bids) = (0, 0, 0);
    for (n, e) in events.iter().enumerate() {
        let n = n as u64;
        assert_eq!(
            e.date_time(),
            DEFAULT_BASE_TIME_MS + (n * 1000 / 2000) as i64
        );
        match (e, cfg.kind(n)) {
            (Event::Person(p), Kind::Person) => {
                assert_eq!(p.id, 1000 + persons, "person ids count up");
                persons += 1;
            }
            (Event::Auction(a), Kind::Auction) => {
                assert_eq!(a.id, 1000 + auctions, "auction ids count up");
                assert!(a.expires > a.date_time);
                assert!((10..15).contains(&a.category));
                assert!(a.reserve > a.initial_bid);
                // Sellers exist already, or are at most 10 ahead.
                assert!(a.seller < 1000 + persons + 10);
                auctions += 1;
            }
            (Event::Bid(b), Kind::Bid) => {
                assert!(b.auction < 1000 + auctions + 10);
                assert!(b.bidder < 1000 + persons + 10);
                bids += 1;
            }
            (e, k) => panic!("event {n} is {e:?}, expected a {k:?}"),
        }
    }
    assert_eq!((persons, auctions, bids), (1_000, 3_000, 46_000));
}

#[test]
fn hot_keys_and_field_distributions_match_the_model() {
    let cfg = NexmarkConfig::new(100_000).seed(11);
    let events = cfg.all_events().unwrap();
    let n_bids = events.iter().filter(|e| matches!(e, Event::Bid(_))).count() as f64;
    let n_auctions = events
        .iter()
        .filter(|e| matches!(e, Event::Auction(_)))
        .count() as f64;
    let (mut last_person, mut last_auction) = (999i64, 999i64);
    let (mut hot_auction, mut hot_bidder, mut hot_seller) = (0.0, 0.0, 0.0);
    let mut states: HashMap<String, u64> = HashMap::new();
    let mut prices = Vec::new();
    let (mut person_bytes, mut auction_bytes, mut bid_bytes) = (0usize, 0usize, 0usize);
    for e in &events {
        match e {
            Event::Person(p) => {
                last_person = p.id;
                *states.entry(p.state.clone()).or_default() += 1;
                assert_eq!(p.credit_card.len(), 19);
                assert!(p.email_address.ends_with(".com") && p.email_address.contains('@'));
                person_bytes += 8
                    + p.name.len()
                    + p.email_address.len()
                    + p.credit_card.len()
                    + p.city.len()
                    + p.state.len()
                    + p.extra.len();
            }
            Event::Auction(a) => {
                last_auction = a.id;
                let base0 = last_person - 1000;
                if a.seller == 1000 + base0 / 100 * 100 {
                    hot_seller += 1.0;
                }
                auction_bytes += 8 + a.item_name.len() + a.description.len() + 40 + a.extra.len();
            }
            Event::Bid(b) => {
                if b.auction == 1000 + (last_auction - 1000) / 100 * 100 {
                    hot_auction += 1.0;
                }
                if b.bidder == 1000 + (last_person - 1000) / 100 * 100 + 1 {
                    hot_bidder += 1.0;
                }
                prices.push(b.price);
                bid_bytes += 32 + b.extra.len();
            }
        }
    }
    // Hot shares: 1 - 1/ratio, plus the random picks that land on the hot key.
    let share = |x: f64, of: f64| x / of;
    let ha = share(hot_auction, n_bids);
    let hb = share(hot_bidder, n_bids);
    let hs = share(hot_seller, n_auctions);
    assert!((0.49..0.53).contains(&ha), "hot auction share {ha}");
    assert!((0.74..0.77).contains(&hb), "hot bidder share {hb}");
    assert!((0.73..0.78).contains(&hs), "hot seller share {hs}");
    // Six states, uniform.
    assert_eq!(states.len(), 6);
    for (s, c) in &states {
        assert!((280..390).contains(c), "{s}: {c} of 2000");
    }
    // Prices are log-uniform on [100, 10^8): a sixth of them in each decade.
    assert!(prices.iter().all(|p| (100..=100_000_000).contains(p)));
    for decade in 2..8 {
        let (lo, hi) = (10i64.pow(decade), 10i64.pow(decade + 1));
        let f = prices.iter().filter(|p| (lo..hi).contains(*p)).count() as f64 / n_bids;
        assert!((0.155..0.178).contains(&f), "decade {lo}: {f}");
    }
    // Average sizes as configured (200, 500, 100 bytes).
    let avg = |bytes: usize, n: f64| bytes as f64 / n;
    assert!((avg(person_bytes, 2000.0) - 200.0).abs() < 3.0);
    assert!((avg(auction_bytes, n_auctions) - 500.0).abs() < 3.0);
    assert!((avg(bid_bytes, n_bids) - 100.0).abs() < 1.0);
}

#[test]
fn auctions_stay_open_about_as_long_as_it_takes_to_open_100_more() {
    // 100 auctions in flight = 1667 events = 1.667 s at 1000 events/s; lengths are uniform on
    // [1, 2 × that], so they average that.
    let cfg = NexmarkConfig::new(60_000).rate(1_000);
    let lengths: Vec<i64> = cfg
        .all_events()
        .unwrap()
        .into_iter()
        .filter_map(Event::into_auction)
        .map(|a| a.expires - a.date_time)
        .collect();
    let mean = lengths.iter().sum::<i64>() as f64 / lengths.len() as f64;
    assert!((1_600.0..1_740.0).contains(&mean), "mean {mean} ms");
    assert!(lengths.iter().all(|l| (1..=3_334).contains(l)));
}

fn read_back(env: &StreamEnv, events: DataStream<Event>) -> Vec<Event> {
    let out = CollectSink::new();
    events.sink(out.clone());
    env.execute("read back").unwrap();
    out.values()
}

#[test]
fn json_and_csv_files_read_back_as_the_generated_events() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = NexmarkConfig::new(2_000).seed(5).rate(100);
    let want = sorted_json(&cfg.all_events().unwrap());

    let json = dir.path().join("events.jsonl");
    let w = files::write_events(&cfg, Format::Json, &json, 1).unwrap();
    assert_eq!((w.persons, w.auctions, w.bids), (40, 120, 1840));
    let text = std::fs::read_to_string(&json).unwrap();
    let first = text.lines().next().unwrap();
    assert!(
        first.starts_with(r#"{"event_type":0,"person":{"id":1000,"name":"#),
        "{first}"
    );
    assert!(first.ends_with(r#","auction":null,"bid":null}"#), "{first}");
    let env = StreamEnv::new().with_parallelism(2);
    let got = read_back(&env, files::read_json_lines(&env, &json, 0));
    assert_eq!(sorted_json(&got), want, "JSON lines");

    let csv = dir.path().join("csv");
    files::write_events(&cfg, Format::Csv, &csv, 1).unwrap();
    let bid_line = std::fs::read_to_string(csv.join("bid.csv")).unwrap();
    let fields: Vec<&str> = bid_line.lines().next().unwrap().split(',').collect();
    assert_eq!(fields.len(), 5, "auction,bidder,price,dateTime,extra");
    let env = StreamEnv::new().with_parallelism(2);
    let got = read_back(&env, files::read_csv(&env, &csv, 0).unwrap());
    assert_eq!(sorted_json(&got), want, "CSV");

    // Parts: event n in part n mod 3, each part in time order.
    let parts = dir.path().join("parts");
    let w = files::write_events(&cfg, Format::Json, &parts, 3).unwrap();
    assert_eq!(w.files.len(), 3);
    for f in &w.files {
        let times: Vec<i64> = std::fs::read_to_string(f)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<Event>(l).unwrap().date_time())
            .collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]));
    }
    let env = StreamEnv::new().with_parallelism(3);
    let got = read_back(&env, files::read_json_lines(&env, &parts, 0));
    assert_eq!(sorted_json(&got), want, "JSON parts");
}

#[test]
fn the_generator_binary_writes_files_and_a_side_table() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("csv");
    let side = dir.path().join("side.csv");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_nexmark-gen"))
        .args([
            "--events", "500", "--seed", "9", "--rate", "50", "--format", "csv",
        ])
        .arg("--out")
        .arg(&out)
        .arg("--side-input")
        .arg(&side)
        .args(["--side-input-rows", "3"])
        .status()
        .unwrap();
    assert!(status.success());
    let cfg = NexmarkConfig::new(500).seed(9).rate(50);
    let bids: Vec<String> = cfg
        .all_events()
        .unwrap()
        .into_iter()
        .filter_map(Event::into_bid)
        .map(|b| {
            format!(
                "{},{},{},{},{}",
                b.auction, b.bidder, b.price, b.date_time, b.extra
            )
        })
        .collect();
    let file: Vec<String> = std::fs::read_to_string(out.join("bid.csv"))
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(file, bids);
    assert_eq!(std::fs::read_to_string(side).unwrap(), "0,0\n1,1\n2,2\n");
}

#[test]
fn an_invalid_configuration_is_refused_with_its_setting() {
    let cfg = NexmarkConfig {
        hot_bidders_ratio: 0,
        ..NexmarkConfig::new(10)
    };
    assert_eq!(
        cfg.validate().unwrap_err(),
        "the Nexmark hot bidders ratio must be at least 1"
    );
    assert!(files::write_events(&cfg.clone().unbounded(), Format::Json, "x".as_ref(), 1).is_err());
    let unique: HashSet<Event> = NexmarkConfig::new(1000)
        .all_events()
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(unique.len(), 1000);
    let mut kinds = BTreeMap::new();
    for e in NexmarkConfig::new(100).all_events().unwrap() {
        *kinds.entry(e.event_type()).or_insert(0) += 1;
    }
    assert_eq!(kinds, BTreeMap::from([(0, 2), (1, 6), (2, 92)]));
}
