//! The Nexmark generator: event number `n` ↦ one [`Event`], a pure function of the
//! configuration and `n`.
//!
//! The model is the one of Beam's Nexmark generator, which the nexmark/nexmark Flink suite
//! also uses:
//!
//! - Event `n` is a person, an auction or a bid by `n mod 50` (1 : 3 : 46 by default): the
//!   first of every 50 is a person, the next 3 auctions, the other 46 bids. Ids follow from `n`:
//!   person ids and auction ids count from 1000 in event order.
//! - Event time is `base_time_ms + ⌊n · 1000 / rate⌋`: the configured rate (events per second)
//!   spaces events in event time, whatever the speed of generation.
//! - Hot keys: a bid goes to the hot auction (the first of the latest batch of 100 auctions) with
//!   probability `1 − 1/hot_auction_ratio` (½ by default), else to one of the auctions still
//!   likely open; a bidder is the hot bidder (the second of the latest 100 people) with
//!   probability `1 − 1/hot_bidders_ratio` (¾), else one of the `num_active_people` latest people;
//!   a seller is the hot seller (the first of the latest 100 people) with probability
//!   `1 − 1/hot_sellers_ratio` (¾). Random choices may name up to 10 people or auctions that do
//!   not exist yet, as in the original.
//! - Prices are `round(100 · 10^(6u))` cents for a uniform `u` (log-uniform, $1 to $1M); an
//!   auction's reserve is its initial bid plus such a price; an auction closes after a uniform
//!   1 ms to twice the event time in which `num_in_flight_auctions` more auctions are created.
//! - Strings: names from fixed lists, random lowercase words, and an `extra` padding field that
//!   brings each event to the configured average size (±20 %).
//!
//! Each event's random choices come from a generator seeded by `(seed, n)` alone, so splits of
//! the event numbers (subtask `i` of `p` taking `n ≡ i mod p`) produce disjoint parts of the
//! same sequence at any parallelism.
use crate::model::{Auction, Bid, Event, Person};
use std::sync::Arc;
use weir::connectors::{Datagen, SplitMix64};
use weir::{DataStream, Source, SourceReader, StreamEnv, WatermarkStrategy};

/// The first person id.
pub const FIRST_PERSON_ID: i64 = 1000;
/// The first auction id.
pub const FIRST_AUCTION_ID: i64 = 1000;
/// The first category id (categories are `10..10 + NUM_CATEGORIES`).
pub const FIRST_CATEGORY_ID: i64 = 10;
/// How many categories.
pub const NUM_CATEGORIES: u64 = 5;
/// The event time of event 0 unless configured (2023-11-14T22:13:20Z), fixed so that runs
/// repeat exactly.
pub const DEFAULT_BASE_TIME_MS: i64 = 1_700_000_000_000;

/// Hot sellers, bidders and auctions are the first (or second) of batches of this many.
const HOT_BATCH: i64 = 100;
/// Random person and auction ids may run this far ahead of the last one created.
const ID_LEAD: u64 = 10;
const MIN_STRING_LEN: u64 = 3;

const US_STATES: [&str; 6] = ["AZ", "CA", "ID", "OR", "WA", "WY"];
const US_CITIES: [&str; 10] = [
    "Phoenix",
    "Los Angeles",
    "San Francisco",
    "Boise",
    "Portland",
    "Bend",
    "Redmond",
    "Seattle",
    "Kent",
    "Cheyenne",
];
const FIRST_NAMES: [&str; 11] = [
    "Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah", "Deiter", "Walter",
];
const LAST_NAMES: [&str; 9] = [
    "Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones", "Noris",
];

/// What to generate: the defaults are Beam's `NexmarkConfiguration` defaults (100 000 events
/// at 10 000 events/s, ratios 1:3:46, hot ratios 2/4/4, 1000 active people, 100 auctions in
/// flight, 200/500/100-byte people/auctions/bids).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NexmarkConfig {
    /// Seeds every event's random choices (with its number).
    pub seed: u64,
    /// How many events (`None`: unbounded).
    pub events: Option<u64>,
    /// Events per second of event time (Beam's `firstEventRate`).
    pub rate_per_s: u64,
    /// Event time of event 0, ms since the epoch.
    pub base_time_ms: i64,
    /// People in every `person + auction + bid` events.
    pub person_proportion: u64,
    /// Auctions in every `person + auction + bid` events.
    pub auction_proportion: u64,
    /// Bids in every `person + auction + bid` events.
    pub bid_proportion: u64,
    /// A bid is for the hot auction with probability `1 − 1/hot_auction_ratio`.
    pub hot_auction_ratio: u64,
    /// An auction's seller is the hot seller with probability `1 − 1/hot_sellers_ratio`.
    pub hot_sellers_ratio: u64,
    /// A bidder is the hot bidder with probability `1 − 1/hot_bidders_ratio`.
    pub hot_bidders_ratio: u64,
    /// Random sellers and bidders are among this many latest people.
    pub num_active_people: u64,
    /// Random auctions (of bids) are among this many latest auctions; it also sets how long
    /// auctions stay open.
    pub num_in_flight_auctions: u64,
    /// Average size of a person, bytes (sets the `extra` padding).
    pub avg_person_bytes: u64,
    /// Average size of an auction, bytes.
    pub avg_auction_bytes: u64,
    /// Average size of a bid, bytes.
    pub avg_bid_bytes: u64,
}

impl Default for NexmarkConfig {
    fn default() -> Self {
        NexmarkConfig {
            seed: 0,
            events: Some(100_000),
            rate_per_s: 10_000,
            base_time_ms: DEFAULT_BASE_TIME_MS,
            person_proportion: 1,
            auction_proportion: 3,
            bid_proportion: 46,
            hot_auction_ratio: 2,
            hot_sellers_ratio: 4,
            hot_bidders_ratio: 4,
            num_active_people: 1000,
            num_in_flight_auctions: 100,
            avg_person_bytes: 200,
            avg_auction_bytes: 500,
            avg_bid_bytes: 100,
        }
    }
}

/// Which kind event `n` is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A new person.
    Person,
    /// A new auction.
    Auction,
    /// A bid.
    Bid,
}

impl NexmarkConfig {
    /// The defaults with `events` events.
    pub fn new(events: u64) -> Self {
        NexmarkConfig {
            events: Some(events),
            ..Self::default()
        }
    }
    /// Sets the seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
    /// Sets the rate (events per second of event time).
    pub fn rate(mut self, events_per_s: u64) -> Self {
        self.rate_per_s = events_per_s;
        self
    }
    /// Sets the event time of event 0.
    pub fn base_time_ms(mut self, ms: i64) -> Self {
        self.base_time_ms = ms;
        self
    }
    /// Generates events forever.
    pub fn unbounded(mut self) -> Self {
        self.events = None;
        self
    }

    /// Checks the settings; the error says which one is wrong.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("rate", self.rate_per_s),
            ("person proportion", self.person_proportion),
            ("auction proportion", self.auction_proportion),
            ("bid proportion", self.bid_proportion),
            ("hot auction ratio", self.hot_auction_ratio),
            ("hot sellers ratio", self.hot_sellers_ratio),
            ("hot bidders ratio", self.hot_bidders_ratio),
            ("active people", self.num_active_people),
            ("auctions in flight", self.num_in_flight_auctions),
        ];
        match positive.iter().find(|(_, v)| *v == 0) {
            Some((name, _)) => Err(format!("the Nexmark {name} must be at least 1")),
            None => Ok(()),
        }
    }

    fn total_proportion(&self) -> u64 {
        self.person_proportion + self.auction_proportion + self.bid_proportion
    }

    /// Which kind event `n` is.
    pub fn kind(&self, n: u64) -> Kind {
        let r = n % self.total_proportion();
        if r < self.person_proportion {
            Kind::Person
        } else if r < self.person_proportion + self.auction_proportion {
            Kind::Auction
        } else {
            Kind::Bid
        }
    }

    /// The event time of event `n`: `base_time_ms + ⌊n · 1000 / rate⌋`.
    pub fn timestamp(&self, n: u64) -> i64 {
        let offset = (n as u128 * 1000) / self.rate_per_s.max(1) as u128;
        self.base_time_ms
            .saturating_add(offset.min(i64::MAX as u128) as i64)
    }

    /// Event `n`.
    pub fn event(&self, n: u64) -> Event {
        let mut rng = SplitMix64::new(self.seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let ts = self.timestamp(n);
        match self.kind(n) {
            Kind::Person => Event::Person(self.person(n, ts, &mut rng)),
            Kind::Auction => Event::Auction(self.auction(n, ts, &mut rng)),
            Kind::Bid => Event::Bid(self.bid(n, ts, &mut rng)),
        }
    }

    /// Every event, in order (for tests and files; `None` when unbounded).
    pub fn all_events(&self) -> Option<Vec<Event>> {
        self.events
            .map(|count| (0..count).map(|n| self.event(n)).collect())
    }

    /// The (base-0) id of the last person created at or before event `n`.
    fn last_person(&self, n: u64) -> i64 {
        let total = self.total_proportion();
        let (epoch, offset) = (n / total, n % total);
        let offset = offset.min(self.person_proportion - 1);
        (epoch * self.person_proportion + offset) as i64
    }

    /// The (base-0) id of the last auction created at or before event `n`; −1 before the first.
    fn last_auction(&self, n: u64) -> i64 {
        let total = self.total_proportion() as i64;
        let (pp, ap) = (
            self.person_proportion as i64,
            self.auction_proportion as i64,
        );
        let (mut epoch, mut offset) = (n as i64 / total, n as i64 % total);
        if offset < pp {
            // A person: the last auction is in the previous epoch.
            epoch -= 1;
            offset = ap - 1;
        } else if offset >= pp + ap {
            // A bid: the last auction of this epoch.
            offset = ap - 1;
        } else {
            offset -= pp;
        }
        epoch * ap + offset
    }

    /// A random person among the active ones, possibly a few ahead of the last (base 0).
    fn random_person(&self, n: u64, rng: &mut SplitMix64) -> i64 {
        let people = self.last_person(n) + 1;
        let active = people.min(self.num_active_people as i64);
        people - active + rng.below(active as u64 + ID_LEAD) as i64
    }

    /// A random auction among those likely still open, possibly a few ahead (base 0).
    fn random_auction(&self, n: u64, rng: &mut SplitMix64) -> i64 {
        let last = self.last_auction(n);
        let first = (last - self.num_in_flight_auctions as i64).max(0);
        first + rng.below((last - first + 1) as u64 + ID_LEAD) as i64
    }

    fn person(&self, n: u64, ts: i64, rng: &mut SplitMix64) -> Person {
        let name = format!("{} {}", pick(rng, &FIRST_NAMES), pick(rng, &LAST_NAMES));
        let email_address = format!("{}@{}.com", word(rng, 7), word(rng, 5));
        let credit_card = (0..4)
            .map(|_| format!("{:04}", rng.below(10_000)))
            .collect::<Vec<_>>()
            .join(" ");
        let city = pick(rng, &US_CITIES).to_string();
        let state = pick(rng, &US_STATES).to_string();
        let size = 8 + name.len() + email_address.len() + credit_card.len() + city.len() + 2;
        Person {
            id: self.last_person(n) + FIRST_PERSON_ID,
            name,
            email_address,
            credit_card,
            city,
            state,
            date_time: ts,
            extra: padding(rng, size as u64, self.avg_person_bytes),
        }
    }

    fn auction(&self, n: u64, ts: i64, rng: &mut SplitMix64) -> Auction {
        let seller = if rng.below(self.hot_sellers_ratio) > 0 {
            (self.last_person(n) / HOT_BATCH) * HOT_BATCH
        } else {
            self.random_person(n, rng)
        };
        let category = FIRST_CATEGORY_ID + rng.below(NUM_CATEGORIES) as i64;
        let initial_bid = price(rng);
        // Open for a uniform time averaging the event time in which `num_in_flight_auctions`
        // more auctions are created.
        let ahead = self.num_in_flight_auctions * self.total_proportion() / self.auction_proportion;
        let horizon_ms = self.timestamp(n + ahead) - ts;
        let expires = ts + 1 + rng.below((2 * horizon_ms).max(1) as u64) as i64;
        let item_name = word(rng, 20);
        let description = word(rng, 100);
        let reserve = initial_bid + price(rng);
        let size = 8 + item_name.len() + description.len() + 40;
        Auction {
            id: self.last_auction(n) + FIRST_AUCTION_ID,
            item_name,
            description,
            initial_bid,
            reserve,
            date_time: ts,
            expires,
            seller: seller + FIRST_PERSON_ID,
            category,
            extra: padding(rng, size as u64, self.avg_auction_bytes),
        }
    }

    fn bid(&self, n: u64, ts: i64, rng: &mut SplitMix64) -> Bid {
        let auction = if rng.below(self.hot_auction_ratio) > 0 {
            (self.last_auction(n) / HOT_BATCH) * HOT_BATCH
        } else {
            self.random_auction(n, rng)
        };
        let bidder = if rng.below(self.hot_bidders_ratio) > 0 {
            // The second of the batch, so that hot bidders are not hot sellers.
            (self.last_person(n) / HOT_BATCH) * HOT_BATCH + 1
        } else {
            self.random_person(n, rng)
        };
        Bid {
            auction: auction + FIRST_AUCTION_ID,
            bidder: bidder + FIRST_PERSON_ID,
            price: price(rng),
            date_time: ts,
            extra: padding(rng, 32, self.avg_bid_bytes),
        }
    }
}

fn pick<'a>(rng: &mut SplitMix64, from: &[&'a str]) -> &'a str {
    from[rng.below(from.len() as u64) as usize]
}

/// Log-uniform cents in [100, 10^8): `round(100 · 10^(6u))`.
fn price(rng: &mut SplitMix64) -> i64 {
    (10f64.powf(rng.unit() * 6.0) * 100.0).round() as i64
}

/// Lowercase letters with a space in 13 on average, 3 to `max_len − 1` long before trimming.
fn word(rng: &mut SplitMix64, max_len: u64) -> String {
    let len = MIN_STRING_LEN + rng.below(max_len - MIN_STRING_LEN);
    let s: String = (0..len)
        .map(|_| {
            if rng.below(13) == 0 {
                ' '
            } else {
                (b'a' + rng.below(26) as u8) as char
            }
        })
        .collect();
    s.trim().to_string()
}

/// Letters that bring an event of `size` bytes to `avg` on average (uniform within ±20 %).
fn padding(rng: &mut SplitMix64, size: u64, avg: u64) -> String {
    if size > avg {
        return String::new();
    }
    let want = avg - size;
    let delta = (want as f64 * 0.2).round() as u64;
    let len = want - delta + if delta == 0 { 0 } else { rng.below(2 * delta) };
    letters(rng, len)
}

/// Letters per 64-bit draw in [`letters`]. They are the first base-26 digits of the draw read
/// as a fraction in [0, 1), so any 10 of them together are uniform up to a relative bias of
/// 26^10 / 2^64 < 10^-5 (13 would be the most a draw can hold).
const LETTERS_PER_DRAW: u32 = 10;

/// `len` uniform lowercase letters. A letter is the high word of `r · 26` and `r` becomes the
/// low word (the next base-26 digit of `r / 2^64`), so one draw of the generator makes
/// [`LETTERS_PER_DRAW`] letters: one draw per letter was most of a bid's generation time.
fn letters(rng: &mut SplitMix64, len: u64) -> String {
    let mut s = Vec::with_capacity(len as usize);
    let (mut r, mut left) = (0u64, 0u32);
    for _ in 0..len {
        if left == 0 {
            r = rng.next_u64();
            left = LETTERS_PER_DRAW;
        }
        let m = r as u128 * 26;
        s.push(b'a' + (m >> 64) as u8);
        r = m as u64;
        left -= 1;
    }
    String::from_utf8(s).expect("ASCII letters")
}

/// The generator as a Weir source: each subtask generates its splits' event numbers (split `j`
/// of `S`: `n ≡ j mod S`, ascending), with the event's `date_time` as its timestamp.
/// Positions go into checkpoints (a restore resumes each split where it was).
///
/// ```
/// use weir::prelude::*;
/// use weir_nexmark::{NexmarkConfig, NexmarkSource};
/// let env = StreamEnv::new().with_parallelism(2);
/// let out = CollectSink::new();
/// NexmarkSource::new(NexmarkConfig::new(1000)).stream(&env).sink(out.clone());
/// env.execute("nexmark").unwrap();
/// assert_eq!(out.len(), 1000);
/// ```
pub struct NexmarkSource {
    cfg: Arc<NexmarkConfig>,
    gen: Datagen<Event>,
    watermark_delay_ms: u64,
}

/// The watermark delay of [`NexmarkSource::stream`] unless set: the nexmark/nexmark Flink
/// suite's `WATERMARK FOR dateTime AS dateTime - INTERVAL '4' SECOND`.
pub const DEFAULT_WATERMARK_DELAY_MS: u64 = 4_000;

impl NexmarkSource {
    /// A source of the events of `cfg`.
    ///
    /// Panics if the configuration is invalid ([`NexmarkConfig::validate`]).
    pub fn new(cfg: NexmarkConfig) -> Self {
        if let Err(e) = cfg.validate() {
            panic!("{e}");
        }
        let cfg = Arc::new(cfg);
        let c = cfg.clone();
        let gen = Datagen::new(cfg.events.unwrap_or(0), move |n, _| c.event(n))
            .with_timestamps(Event::date_time);
        let gen = if cfg.events.is_none() {
            gen.unbounded()
        } else {
            gen
        };
        NexmarkSource {
            cfg,
            gen,
            watermark_delay_ms: DEFAULT_WATERMARK_DELAY_MS,
        }
    }
    /// The configuration.
    pub fn config(&self) -> &NexmarkConfig {
        &self.cfg
    }
    /// Generates in `n` splits (to restore at another parallelism; one per subtask otherwise).
    pub fn splits(mut self, n: u64) -> Self {
        self.gen = self.gen.splits(n);
        self
    }
    /// Emits at most the configured rate per second of wall-clock time (over all subtasks), so
    /// event time and processing time advance together; otherwise as fast as possible.
    pub fn rate_limited(mut self) -> Self {
        self.gen = self.gen.rate(self.cfg.rate_per_s as f64);
        self
    }
    /// After the last event, stays open without emitting (processing-time tests).
    pub fn keep_open(mut self) -> Self {
        self.gen = self.gen.keep_open();
        self
    }
    /// Watermarks of [`Self::stream`] trail the highest event time by this much.
    pub fn watermark_delay_ms(mut self, ms: u64) -> Self {
        self.watermark_delay_ms = ms;
        self
    }
    /// The events as a stream with event-time timestamps and watermarks generated per split.
    pub fn stream(self, env: &StreamEnv) -> DataStream<Event> {
        let delay = std::time::Duration::from_millis(self.watermark_delay_ms);
        env.source(self)
            .name("nexmark")
            .assign_timestamps(WatermarkStrategy::bounded_out_of_orderness(delay))
    }
}

impl Source<Event> for NexmarkSource {
    fn create_reader(
        &self,
        subtask: usize,
        parallelism: usize,
    ) -> weir::Result<Box<dyn SourceReader<Event>>> {
        self.gen.create_reader(subtask, parallelism)
    }
    fn is_bounded(&self) -> bool {
        self.gen.is_bounded()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_event_numbers() {
        let c = NexmarkConfig::default();
        // 0: person 0; 1-3: auctions 0-2; 4-49: bids; 50: person 1; 51: auction 3.
        assert_eq!(c.kind(0), Kind::Person);
        assert_eq!(c.kind(1), Kind::Auction);
        assert_eq!(c.kind(3), Kind::Auction);
        assert_eq!(c.kind(4), Kind::Bid);
        assert_eq!(c.kind(49), Kind::Bid);
        assert_eq!(
            (c.last_person(0), c.last_person(49), c.last_person(50)),
            (0, 0, 1)
        );
        assert_eq!(c.last_auction(0), -1);
        assert_eq!(
            (c.last_auction(1), c.last_auction(3), c.last_auction(4)),
            (0, 2, 2)
        );
        assert_eq!((c.last_auction(50), c.last_auction(51)), (2, 3));
        assert_eq!(c.timestamp(10_000), DEFAULT_BASE_TIME_MS + 1000);
        assert_eq!(c.clone().rate(3).timestamp(2), DEFAULT_BASE_TIME_MS + 666);
    }

    #[test]
    fn strings_and_prices_stay_in_range() {
        let mut rng = SplitMix64::new(7);
        for _ in 0..10_000 {
            let p = price(&mut rng);
            assert!((100..=100_000_000).contains(&p), "{p}");
            let w = word(&mut rng, 20);
            assert!(w.len() < 20 && !w.starts_with(' ') && !w.ends_with(' '));
            let x = padding(&mut rng, 32, 100);
            assert!((68 - 14..68 + 14).contains(&x.len()), "{}", x.len());
        }
        assert_eq!(padding(&mut rng, 300, 100), "");
    }

    #[test]
    fn padding_letters_are_uniform() {
        let mut rng = SplitMix64::new(11);
        let mut counts = [0u64; 26];
        let mut by_position = [[0u64; 2]; LETTERS_PER_DRAW as usize];
        for _ in 0..20_000 {
            let s = letters(&mut rng, 50);
            assert_eq!(s.len(), 50);
            for (i, b) in s.bytes().enumerate() {
                assert!(b.is_ascii_lowercase(), "{s}");
                counts[(b - b'a') as usize] += 1;
                // Each position within a draw: first half of the alphabet vs second half.
                by_position[i % LETTERS_PER_DRAW as usize][(b >= b'n') as usize] += 1;
            }
        }
        let expected = 20_000.0 * 50.0 / 26.0;
        for (i, c) in counts.iter().enumerate() {
            let dev = (*c as f64 - expected).abs() / expected;
            assert!(
                dev < 0.02,
                "letter {} appears {c} times, expected {expected}",
                i
            );
        }
        for (i, [lo, hi]) in by_position.iter().enumerate() {
            let dev = (*lo as f64 - *hi as f64).abs() / (*lo + *hi) as f64;
            assert!(dev < 0.02, "position {i} in a draw: {lo} a–m vs {hi} n–z");
        }
    }
}
