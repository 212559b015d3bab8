//! Asset tracking with a per-tag state machine: RFID readers in three rooms report tags; a tag
//! moves waiting room → treatment → recovery. Each move is reported; a tag not read for 10
//! minutes of event time is reported gone (an event-time timer per tag, re-armed on every
//! reading).
//!
//!     cargo run --release --example rfid_tracker -- --tags 20
use clap::Parser;
use serde::{Deserialize, Serialize};
use weir::prelude::*;

#[derive(Parser)]
#[command(about = "Follow RFID tags through rooms; report moves and tags gone for 10 minutes")]
struct Cli {
    #[command(flatten)]
    weir: EnvOptions,
    /// Number of tags.
    #[arg(long, default_value_t = 10)]
    tags: u64,
}

const ROOMS: [&str; 3] = ["waiting room", "treatment", "recovery"];
const GONE_AFTER_MS: i64 = 10 * 60 * 1000;

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Reading {
    tag: u64,
    room: u8,
    ts_ms: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
struct Where {
    room: u8,
    since_ms: i64,
    timer_ms: i64,
}

#[derive(Clone, Default)]
struct TrackTag {
    at: ValueState<Where>,
}

fn hhmm(ts: i64) -> String {
    let m = (ts / 60_000) % (24 * 60);
    format!("{:02}:{:02}", m / 60, m % 60)
}

impl KeyedProcessFunction<u64, Reading, String> for TrackTag {
    fn open(&mut self, s: &mut StateRegistry<'_, u64>) -> FnResult {
        self.at = s.value_state("at")?;
        Ok(())
    }
    fn process_element(
        &mut self,
        r: Reading,
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut Collector<'_, String>,
    ) -> FnResult {
        let prev = self.at.get(ctx);
        let timer_ms = r.ts_ms + GONE_AFTER_MS;
        match &prev {
            None => out.collect(format!(
                "{} tag {} arrived in the {}",
                hhmm(r.ts_ms),
                r.tag,
                ROOMS[r.room as usize]
            )),
            Some(p) if p.room != r.room => out.collect(format!(
                "{} tag {} moved {} -> {}",
                hhmm(r.ts_ms),
                r.tag,
                ROOMS[p.room as usize],
                ROOMS[r.room as usize]
            )),
            _ => {}
        }
        if let Some(p) = &prev {
            ctx.delete_event_time_timer(p.timer_ms);
        }
        let since_ms = prev
            .filter(|p| p.room == r.room)
            .map_or(r.ts_ms, |p| p.since_ms);
        self.at.set(
            ctx,
            Where {
                room: r.room,
                since_ms,
                timer_ms,
            },
        );
        ctx.register_event_time_timer(timer_ms);
        Ok(())
    }
    fn on_timer(
        &mut self,
        ts: i64,
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut Collector<'_, String>,
    ) -> FnResult {
        if let Some(w) = self.at.take(ctx) {
            out.collect(format!(
                "{} tag {} gone: not read for 10 min (last in the {} since {})",
                hhmm(ts),
                ctx.current_key(),
                ROOMS[w.room as usize],
                hhmm(w.since_ms)
            ));
        }
        Ok(())
    }
}

fn main() -> anyhow::Result<()> {
    weir::init_logging();
    let cli = Cli::parse();
    let env = StreamEnv::from_options(cli.weir)?;
    let tags = cli.tags.max(1);
    // Each tag is read every 30 s; it spends 5-20 min per room; odd tags vanish in treatment.
    let per_tag = 120u64;
    let readings = Datagen::new(tags * per_tag, move |id, _| {
        let tag = id % tags;
        let n = id / tags;
        let ts_ms = 8 * 3_600_000 + n as i64 * 30_000 + tag as i64 * 1_000;
        let stay = 10 + 2 * (tag % 8); // readings per room
        let room = ((n / stay) as u8).min(2);
        Reading { tag, room, ts_ms }
    })
    .with_timestamps(|r| r.ts_ms);
    env.source(readings)
        .filter(|r: &Reading| !(r.tag % 2 == 1 && r.room == 2))
        .assign_timestamps(WatermarkStrategy::bounded_out_of_orderness(secs(10)))
        .key_by(|r: &Reading| r.tag)
        .process(TrackTag::default())
        .sink(Stdout::with(|s: &String| s.clone()));
    env.execute("rfid tracker")?;
    Ok(())
}
