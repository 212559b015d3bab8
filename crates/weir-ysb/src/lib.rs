//! The Yahoo streaming benchmark (YSB) on Weir: ad events are filtered to views, joined
//! ad → campaign through a static table, and counted per campaign in 10 s tumbling event-time
//! windows; the counts go to Redis every second ([`redis_sink`], as the original benchmark
//! does) or stay in the job.
//!
//! - [`YsbConfig::event`]: the `n`-th ad event, a pure function of the seed and `n`.
//! - [`files`]: events as CSV (one file, or parts), the ad → campaign table as CSV; Apache Flink
//!   reads the same files (`scripts/flink-extra/ysb.py`).
//! - [`counts`]: the job; [`EverySecond`]: its trigger in the Redis mode.
//! - [`limit`]: the same work as a single-threaded loop (the limit).
#![deny(missing_docs)]

pub mod files;
pub mod redis_sink;
mod trigger;

pub use trigger::EverySecond;

use hashbrown::HashMap;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use weir::windows::{Count, TimeWindow, Tumbling};
use weir::DataStream;

/// The window length: 10 s, as the original benchmark.
pub const WINDOW_MS: i64 = 10_000;
/// Ad types, as the original generator's.
pub const AD_TYPES: [&str; 5] = ["banner", "modal", "sponsored-search", "mail", "mobile"];
/// Event types: one in three is a view.
pub const EVENT_TYPES: [&str; 3] = ["view", "click", "purchase"];

/// One ad event (the original's JSON fields; ids are integers instead of UUID strings).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdEvent {
    /// The user.
    pub user_id: i64,
    /// The page.
    pub page_id: i64,
    /// The ad (see [`YsbConfig::ad_id`]).
    pub ad_id: i64,
    /// One of [`AD_TYPES`].
    pub ad_type: String,
    /// One of [`EVENT_TYPES`].
    pub event_type: String,
    /// Event time, ms since the epoch.
    pub event_time: i64,
    /// The user's address.
    pub ip: String,
}

/// The generated data: `campaigns` campaigns of `ads_per_campaign` ads each, and `events` ad
/// events at `rate_per_s` per second of event time from `base_time_ms`.
#[derive(Clone, Debug)]
pub struct YsbConfig {
    /// How many events.
    pub events: u64,
    /// Campaigns (the window keys).
    pub campaigns: u64,
    /// Ads per campaign (the original: 10).
    pub ads_per_campaign: u64,
    /// Seed of the random choices.
    pub seed: u64,
    /// Events per second of event time.
    pub rate_per_s: u64,
    /// Event time of event 0.
    pub base_time_ms: i64,
}

impl YsbConfig {
    /// `events` events over `campaigns` campaigns of 10 ads, 100,000 events per second of event
    /// time from 2023-11-14T22:13:20Z (a multiple of the window).
    pub fn new(events: u64, campaigns: u64) -> Self {
        YsbConfig {
            events,
            campaigns,
            ads_per_campaign: 10,
            seed: 0,
            rate_per_s: 100_000,
            base_time_ms: 1_700_000_000_000,
        }
    }
    /// How many ads.
    pub fn ads(&self) -> u64 {
        self.campaigns * self.ads_per_campaign
    }
    /// The id of ad `i` (0-based): a scrambled 63-bit number, so the join is a real lookup.
    pub fn ad_id(&self, i: u64) -> i64 {
        (mix(i ^ 0x05EE_DAD5) >> 1) as i64
    }
    /// The campaign of ad `i`.
    pub fn campaign_of(&self, i: u64) -> i64 {
        (i / self.ads_per_campaign) as i64
    }
    /// The static join table: ad id → campaign id.
    pub fn ad_table(&self) -> HashMap<i64, i64> {
        (0..self.ads())
            .map(|i| (self.ad_id(i), self.campaign_of(i)))
            .collect()
    }
    /// Event `n`'s time.
    pub fn event_time(&self, n: u64) -> i64 {
        self.base_time_ms + (n as u128 * 1000 / self.rate_per_s as u128) as i64
    }
    /// The ad index of event `n` (uniform over the ads).
    fn ad_index(&self, r: &mut Rng) -> u64 {
        r.below(self.ads())
    }
    /// The `n`-th event.
    pub fn event(&self, n: u64) -> AdEvent {
        let mut r = Rng(mix(self.seed ^ n.wrapping_mul(0xD6E8_FEB8_6659_FD93)));
        let ad = self.ad_index(&mut r);
        let ip = r.next();
        AdEvent {
            user_id: r.below(1_000_000) as i64,
            page_id: r.below(10_000) as i64,
            ad_id: self.ad_id(ad),
            ad_type: AD_TYPES[r.below(5) as usize].to_string(),
            event_type: EVENT_TYPES[r.below(3) as usize].to_string(),
            event_time: self.event_time(n),
            ip: format!(
                "{}.{}.{}.{}",
                ip & 255,
                (ip >> 8) & 255,
                (ip >> 16) & 255,
                (ip >> 24) & 255
            ),
        }
    }
    /// What event `n` counts for: `(campaign, window start)` if it is a view.
    pub fn counted(&self, n: u64) -> Option<(i64, i64)> {
        let e = self.event(n);
        (e.event_type == "view").then(|| {
            let mut r = Rng(mix(self.seed ^ n.wrapping_mul(0xD6E8_FEB8_6659_FD93)));
            let ad = self.ad_index(&mut r);
            (self.campaign_of(ad), window_start(e.event_time))
        })
    }
}

/// SplitMix64's finalizer: a bijection of `u64` that mixes well.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = mix(self.0);
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        ((self.next() as u128 * n as u128) >> 64) as u64
    }
}

/// The start of the 10 s window holding `t`.
pub fn window_start(t: i64) -> i64 {
    t - t.rem_euclid(WINDOW_MS)
}

/// A view, after the join: its campaign and time.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct CampaignView {
    /// The campaign.
    pub campaign_id: i64,
    /// The event's time.
    pub event_time: i64,
}

/// The views of a campaign in a window (so far, or final).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct WindowCount {
    /// The campaign.
    pub campaign_id: i64,
    /// The window's start (ms since the epoch).
    pub window_start: i64,
    /// Views so far.
    pub count: u64,
}

/// The benchmark's job: views → campaign (through `table`) → per campaign, 10 s tumbling
/// event-time windows of counts. With `every_second`, each window also emits its count every
/// second of processing time while it changes ([`EverySecond`], for the Redis mode); without,
/// once when the watermark passes its end.
pub fn counts(
    events: &DataStream<AdEvent>,
    table: Arc<HashMap<i64, i64>>,
    every_second: bool,
) -> DataStream<WindowCount> {
    let views = events
        .filter(|e: &AdEvent| e.event_type == "view")
        .name("views")
        .flat_map(move |e: AdEvent| {
            table.get(&e.ad_id).map(|&campaign_id| CampaignView {
                campaign_id,
                event_time: e.event_time,
            })
        })
        .name("join_campaign");
    let windows = views
        .key_by(|v: &CampaignView| v.campaign_id)
        .window(Tumbling::event_time(WINDOW_MS));
    let windows = if every_second {
        windows.trigger(EverySecond::new(1000))
    } else {
        windows
    };
    windows
        .aggregate_with(Count, |k: &i64, w: &TimeWindow, count: u64| WindowCount {
            campaign_id: *k,
            window_start: w.start,
            count,
        })
        .name("campaign_windows")
}

/// `[rows, Σcount, Σcampaign·count, Σ(window_start/1000)·count]` over final window counts: the
/// checksum both engines print.
pub fn checksum<'a>(rows: impl IntoIterator<Item = &'a WindowCount>) -> [i128; 4] {
    let mut s = [0i128; 4];
    for r in rows {
        let c = r.count as i128;
        s[0] += 1;
        s[1] += c;
        s[2] += r.campaign_id as i128 * c;
        s[3] += (r.window_start / 1000) as i128 * c;
    }
    s
}

/// The job's work as a hand-written single-threaded loop over parsed events: filter, look up,
/// count per (campaign, window) in a hash map. Returns the final counts.
pub fn limit(
    events: impl Iterator<Item = AdEvent>,
    table: &HashMap<i64, i64>,
) -> HashMap<(i64, i64), u64> {
    let mut counts: HashMap<(i64, i64), u64> = HashMap::new();
    for e in events {
        if e.event_type != "view" {
            continue;
        }
        if let Some(&c) = table.get(&e.ad_id) {
            *counts.entry((c, window_start(e.event_time))).or_default() += 1;
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_back() {
        let c = YsbConfig::new(10, 100);
        for n in 0..10 {
            let e = c.event(n);
            let line = format!(
                "{},{},{},{},{},{},{}",
                e.user_id, e.page_id, e.ad_id, e.ad_type, e.event_type, e.event_time, e.ip
            );
            assert_eq!(files::parse_line(&line), Some(e));
        }
        assert_eq!(files::parse_line("1,2,x"), None);
    }

    #[test]
    fn generator_is_deterministic_and_spread() {
        let c = YsbConfig::new(30_000, 100);
        assert_eq!(c.event(17), c.event(17));
        let table = c.ad_table();
        assert_eq!(table.len(), 1000, "ad ids are distinct");
        let views = (0..30_000).filter(|&n| c.counted(n).is_some()).count();
        assert!((9_000..11_000).contains(&views), "{views}");
        for n in 0..1000 {
            let e = c.event(n);
            let expect =
                (e.event_type == "view").then(|| (table[&e.ad_id], window_start(e.event_time)));
            assert_eq!(c.counted(n), expect);
        }
        assert_eq!(c.event_time(100_000), c.base_time_ms + 1000);
    }
}
