//! Connected vehicles → Prometheus. A generator of N vehicles (default 10 000) sends speed,
//! battery and engine temperature several times a second, plus a status event every 2 s, with
//! duplicates and out-of-order arrivals. The job
//!
//! 1. deduplicates (per vehicle, by sequence number),
//! 2. enriches each event with the vehicle's make, model, region and owner (a PostgreSQL table
//!    with `--postgres URL`, through async I/O with a cache; a built-in table otherwise),
//! 3. (a) per region and model, 10 s tumbling event-time windows: count, avg, max and an
//!    approximate p95 of speed, battery and engine temperature;
//!    (b) per vehicle, a state machine (parked / driving / charging / fault) fed in event-time
//!    order, emitting the current state and the time spent in each state as gauges every 10 s
//!    of event time,
//! 4. writes the samples to Prometheus with remote write (`--prometheus-url`), or prints them
//!    in the text format.
//!
//! All output is driven by event time, so a bounded run (`--events-per-vehicle E --start-ms
//! T`) writes the same samples every time, killed and restored or not.
//!
//!     cargo run --release --features connectors --example iot_metrics -- --vehicles 1000 --duration 20
//!     cargo run --release --features connectors --example iot_metrics -- --prometheus-url http://127.0.0.1:9090/api/v1/write
use clap::Parser;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use weir::prelude::*;
use weir::windows::{TimeWindow, Tumbling};
use weir::AggregateFunction;
use weir_postgres::{enrich, MissingRow, PgLookup};
use weir_prometheus::{MetricSample, PrometheusSink, PrometheusStreamExt};

#[derive(Parser)]
#[command(
    about = "Connected vehicles: dedup, enrich, windowed fleet metrics and per-vehicle state, to Prometheus"
)]
struct Cli {
    #[command(flatten)]
    weir: EnvOptions,
    /// Number of vehicles.
    #[arg(long, default_value_t = 10_000)]
    vehicles: u32,
    /// Remote-write URL (e.g. http://127.0.0.1:9090/api/v1/write); stdout when absent.
    #[arg(long)]
    prometheus_url: Option<String>,
    /// Real-time mode: generate for this many seconds of processing time (events carry the
    /// wall-clock time, at 4 events per vehicle per second), then stop. Absent: run until
    /// Ctrl-C (which cancels the job and exits 0). With --events-per-vehicle: stop (cancel) the
    /// job if it runs longer than this.
    #[arg(long)]
    duration: Option<u64>,
    /// Bounded, deterministic mode: every vehicle sends E events (4 per second of event time)
    /// from --start-ms on, as fast as the job goes; the job ends once every window has fired.
    #[arg(long)]
    events_per_vehicle: Option<u32>,
    /// Event time of the first event (ms since the epoch) in the bounded mode; default: now
    /// rounded down to 10 s (Prometheus refuses samples more than about an hour old).
    #[arg(long)]
    start_ms: Option<i64>,
    /// Look vehicles up in PostgreSQL (table `vehicles`, created and filled by the job if
    /// missing; 1 vehicle in 100 is left out to show the missing-row policy).
    #[arg(long)]
    postgres: Option<String>,
    /// A label `run=VALUE` on every series (to tell runs apart in one Prometheus).
    #[arg(long)]
    run_label: Option<String>,
    /// Events per second in the bounded mode (default: as fast as the job goes).
    #[arg(long)]
    rate: Option<f64>,
    /// Samples per remote-write request.
    #[arg(long, default_value_t = 2_000)]
    samples_per_request: usize,
}

/// Time between two events of a vehicle.
const EVENT_EVERY_MS: i64 = 250;
/// Every n-th event of a vehicle is a status event.
const STATUS_EVERY: u32 = 8;
/// Window size and gauge period.
const PERIOD_MS: i64 = 10_000;
/// Most an event arrives late (network delay), and the watermark's bound.
const MAX_DELAY_MS: i64 = 1_000;
const OUT_OF_ORDERNESS_MS: u64 = 3_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum State {
    Parked,
    Driving,
    Charging,
    Fault,
}

const STATES: [(State, &str); 4] = [
    (State::Parked, "parked"),
    (State::Driving, "driving"),
    (State::Charging, "charging"),
    (State::Fault, "fault"),
];

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Reading {
    Telemetry {
        speed_kmh: f64,
        battery_pct: f64,
        engine_temp_c: f64,
    },
    Status(State),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Event {
    vehicle: u32,
    seq: u32,
    ts_ms: i64,
    reading: Reading,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Vehicle {
    make: String,
    model: String,
    region: String,
    owner: String,
}

const MODELS: [(&str, &str); 8] = [
    ("Voltra", "e-compact"),
    ("Voltra", "e-suv"),
    ("Nordwagen", "city"),
    ("Nordwagen", "estate"),
    ("Kestrel", "van"),
    ("Kestrel", "truck"),
    ("Sora", "hatch"),
    ("Sora", "sedan"),
];
const REGIONS: [&str; 5] = ["eu-west", "eu-north", "us-east", "us-west", "ap-south"];

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The built-in vehicle table (also what the job loads into PostgreSQL).
fn builtin_vehicle(id: u32) -> Vehicle {
    let h = mix(u64::from(id) ^ 0x5eed);
    let (make, model) = MODELS[(h % MODELS.len() as u64) as usize];
    Vehicle {
        make: make.into(),
        model: model.into(),
        region: REGIONS[((h >> 8) % REGIONS.len() as u64) as usize].into(),
        owner: format!("fleet-{}", (h >> 16) % 50),
    }
}

fn unknown_vehicle() -> Vehicle {
    Vehicle {
        make: "unknown".into(),
        model: "unknown".into(),
        region: "unknown".into(),
        owner: "unknown".into(),
    }
}

/// What vehicle `v` does during 10-second block `block`.
fn true_state(v: u32, block: i64) -> State {
    match mix((u64::from(v) << 32) ^ block as u64) % 20 {
        0..=7 => State::Parked,
        8..=15 => State::Driving,
        16..=18 => State::Charging,
        _ => State::Fault,
    }
}

/// Event `n` of vehicle `v` (a pure function: the same event every time it is generated).
fn make_event(v: u32, n: u32, start_ms: i64, vehicles: u32) -> Event {
    let mut rng = SplitMix64::new((u64::from(v) << 32) | u64::from(n));
    let spread = i64::from(v) * EVENT_EVERY_MS / i64::from(vehicles.max(1));
    let sent = start_ms + i64::from(n) * EVENT_EVERY_MS + spread;
    // The event time is when it was measured, up to MAX_DELAY_MS before it was sent.
    let ts_ms = sent - rng.below(MAX_DELAY_MS as u64) as i64;
    let block = (ts_ms - start_ms).div_euclid(PERIOD_MS);
    let state = true_state(v, block);
    let reading = if n.is_multiple_of(STATUS_EVERY) {
        Reading::Status(state)
    } else {
        let phase = (f64::from(n) / 400.0 + f64::from(v)).sin();
        Reading::Telemetry {
            speed_kmh: match state {
                State::Driving => 30.0 + rng.unit() * 90.0,
                _ => 0.0,
            },
            battery_pct: (55.0 + 40.0 * phase + rng.unit()).clamp(0.0, 100.0),
            engine_temp_c: match state {
                State::Driving => 85.0 + rng.unit() * 20.0,
                State::Fault => 121.0 + rng.unit() * 20.0,
                _ => 20.0 + rng.unit() * 15.0,
            },
        }
    };
    Event {
        vehicle: v,
        seq: n,
        ts_ms,
        reading,
    }
}

/// What one generator id sends: its event, and 3 times in 100 a re-send of the vehicle's
/// event of a second before (a duplicate, and late).
fn generated(id: u64, vehicles: u32, start_ms: i64) -> Vec<Event> {
    let v = (id % u64::from(vehicles)) as u32;
    let n = (id / u64::from(vehicles)) as u32;
    let mut out = vec![make_event(v, n, start_ms, vehicles)];
    if n >= 4 && mix(id ^ 0xd0b1e) % 100 < 3 {
        out.push(make_event(v, n - 4, start_ms, vehicles));
    }
    out
}

/// How long (event time) a seen sequence number is remembered. A re-send travels at most
/// MAX_DELAY_MS plus a second behind the original, and is never late, so it arrives before the
/// watermark passes the original's time plus this.
const DEDUP_RETAIN_MS: i64 = 10_000;

/// Drops events already seen: per vehicle, the sequence numbers seen (with their event time),
/// each forgotten by an event-time timer once no re-send can still come.
#[derive(Clone, Default)]
struct Dedup {
    seen: MapState<u32, i64>,
}

impl KeyedProcessFunction<u32, Event, Event> for Dedup {
    fn open(&mut self, s: &mut StateRegistry<'_, u32>) -> FnResult {
        self.seen = s.map_state("seen")?;
        Ok(())
    }
    fn process_element(
        &mut self,
        e: Event,
        ctx: &mut KeyedContext<'_, u32>,
        out: &mut Collector<'_, Event>,
    ) -> FnResult {
        if self.seen.contains(ctx, &e.seq) {
            return Ok(());
        }
        self.seen.put(ctx, e.seq, e.ts_ms);
        // One timer per vehicle and period: it forgets every seq old enough.
        let at = (e.ts_ms + DEDUP_RETAIN_MS).div_euclid(PERIOD_MS) * PERIOD_MS + PERIOD_MS;
        ctx.register_event_time_timer(at);
        // A re-sent event travels with the timestamp of the record it came with: give it its
        // own again.
        let ts = e.ts_ms;
        out.collect_at(e, ts);
        Ok(())
    }
    fn on_timer(
        &mut self,
        ts: i64,
        ctx: &mut KeyedContext<'_, u32>,
        _out: &mut Collector<'_, Event>,
    ) -> FnResult {
        for (seq, t) in self.seen.entries(ctx) {
            if t + DEDUP_RETAIN_MS <= ts {
                self.seen.remove(ctx, &seq);
            }
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Enriched {
    e: Event,
    v: Vehicle,
}

/// An approximate distribution: `BUCKETS` equal buckets over `[0, max)`, the last one open.
const BUCKETS: usize = 64;

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Stat {
    /// In thousandths, as an integer: the sum does not depend on the order of the additions,
    /// so a restored or rescaled run computes the very same averages.
    sum_milli: i64,
    max: f64,
    hist: Vec<u32>,
}

impl Stat {
    fn new() -> Self {
        Stat {
            sum_milli: 0,
            max: f64::MIN,
            hist: vec![0; BUCKETS],
        }
    }
    fn add(&mut self, x: f64, range: f64) {
        self.sum_milli += (x * 1000.0).round() as i64;
        self.max = self.max.max(x);
        let i = ((x / range * BUCKETS as f64) as usize).min(BUCKETS - 1);
        self.hist[i] += 1;
    }
    fn merge(&mut self, o: &Stat) {
        self.sum_milli += o.sum_milli;
        self.max = self.max.max(o.max);
        for (a, b) in self.hist.iter_mut().zip(&o.hist) {
            *a += b;
        }
    }
    /// The upper edge of the bucket holding the q-quantile.
    fn quantile(&self, q: f64, range: f64) -> f64 {
        let total: u64 = self.hist.iter().map(|&c| u64::from(c)).sum();
        let rank = ((q * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &c) in self.hist.iter().enumerate() {
            seen += u64::from(c);
            if seen >= rank {
                return ((i + 1) as f64 * range / BUCKETS as f64).min(self.max);
            }
        }
        self.max
    }
}

const SPEED_RANGE: f64 = 256.0;
const BATTERY_RANGE: f64 = 100.0;
const TEMP_RANGE: f64 = 160.0;

#[derive(Clone, Debug, Serialize, Deserialize)]
struct FleetAcc {
    count: u64,
    speed: Stat,
    battery: Stat,
    temp: Stat,
}

struct FleetStats;
impl AggregateFunction<Enriched, FleetAcc, FleetAcc> for FleetStats {
    fn create_accumulator(&self) -> FleetAcc {
        FleetAcc {
            count: 0,
            speed: Stat::new(),
            battery: Stat::new(),
            temp: Stat::new(),
        }
    }
    fn add(&self, acc: &mut FleetAcc, x: Enriched) {
        if let Reading::Telemetry {
            speed_kmh,
            battery_pct,
            engine_temp_c,
        } = x.e.reading
        {
            acc.count += 1;
            acc.speed.add(speed_kmh, SPEED_RANGE);
            acc.battery.add(battery_pct, BATTERY_RANGE);
            acc.temp.add(engine_temp_c, TEMP_RANGE);
        }
    }
    fn get_result(&self, acc: &FleetAcc) -> FleetAcc {
        acc.clone()
    }
    fn merge(&self, acc: &mut FleetAcc, o: FleetAcc) {
        acc.count += o.count;
        acc.speed.merge(&o.speed);
        acc.battery.merge(&o.battery);
        acc.temp.merge(&o.temp);
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn fleet_samples(key: &(String, String), w: &TimeWindow, acc: FleetAcc) -> Vec<MetricSample> {
    let (region, model) = key;
    let s = |name: &str, v: f64| {
        MetricSample::new(name, w.end, round3(v))
            .with_label("region", region.as_str())
            .with_label("model", model.as_str())
    };
    let mut out = vec![s("iot_telemetry_events", acc.count as f64)];
    if acc.count == 0 {
        return out;
    }
    let n = acc.count as f64;
    for (name, st, range) in [
        ("iot_speed_kmh", &acc.speed, SPEED_RANGE),
        ("iot_battery_pct", &acc.battery, BATTERY_RANGE),
        ("iot_engine_temp_c", &acc.temp, TEMP_RANGE),
    ] {
        out.push(s(&format!("{name}_avg"), st.sum_milli as f64 / 1000.0 / n));
        out.push(s(&format!("{name}_max"), st.max));
        out.push(s(&format!("{name}_p95"), st.quantile(0.95, range)));
    }
    out
}

/// The state machine of one vehicle.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Machine {
    state: State,
    /// Event time up to which time in state is counted.
    at_ms: i64,
    /// Milliseconds spent in each state (index as STATES).
    spent_ms: [i64; 4],
}

fn idx(s: State) -> usize {
    STATES.iter().position(|(x, _)| *x == s).unwrap()
}

impl Machine {
    fn advance(&mut self, to_ms: i64) {
        if to_ms > self.at_ms {
            self.spent_ms[idx(self.state)] += to_ms - self.at_ms;
            self.at_ms = to_ms;
        }
    }
    fn apply(&mut self, e: &Event) {
        self.advance(e.ts_ms);
        self.state = match (&e.reading, self.state) {
            (Reading::Status(s), _) => *s,
            (Reading::Telemetry { engine_temp_c, .. }, _) if *engine_temp_c > 120.0 => State::Fault,
            (Reading::Telemetry { speed_kmh, .. }, State::Parked) if *speed_kmh > 5.0 => {
                State::Driving
            }
            (_, s) => s,
        };
    }
}

/// Feeds each vehicle's events to its state machine in event-time order: events wait in state
/// until the watermark passes the next 10 s boundary, then the machine takes those before the
/// boundary in (time, sequence) order and reports its gauges at the boundary. So what it reports
/// depends only on the events, never on their arrival order or timing.
#[derive(Clone, Default)]
struct VehicleStates {
    pending: ListState<Event>,
    machine: ValueState<Machine>,
}

impl KeyedProcessFunction<u32, Enriched, MetricSample> for VehicleStates {
    fn open(&mut self, s: &mut StateRegistry<'_, u32>) -> FnResult {
        self.pending = s.list_state("pending")?;
        self.machine = s.value_state("machine")?;
        Ok(())
    }
    fn process_element(
        &mut self,
        x: Enriched,
        ctx: &mut KeyedContext<'_, u32>,
        _out: &mut Collector<'_, MetricSample>,
    ) -> FnResult {
        let tick = (x.e.ts_ms.div_euclid(PERIOD_MS) + 1) * PERIOD_MS;
        ctx.register_event_time_timer(tick);
        self.pending.add(ctx, x.e);
        Ok(())
    }
    fn on_timer(
        &mut self,
        tick: i64,
        ctx: &mut KeyedContext<'_, u32>,
        out: &mut Collector<'_, MetricSample>,
    ) -> FnResult {
        let mut events = self.pending.get(ctx);
        events.sort_by_key(|e| (e.ts_ms, e.seq));
        let later = events.split_off(events.partition_point(|e| e.ts_ms < tick));
        self.pending.update(ctx, later);
        let mut m = self.machine.get(ctx).unwrap_or_else(|| Machine {
            state: State::Parked,
            at_ms: events.first().map_or(tick, |e| e.ts_ms),
            spent_ms: [0; 4],
        });
        for e in &events {
            m.apply(e);
        }
        m.advance(tick);
        let id = ctx.current_key().to_string();
        for (s, name) in STATES {
            let g = |metric: &str, v: f64| {
                MetricSample::new(metric, tick, v)
                    .with_label("vehicle_id", id.as_str())
                    .with_label("state", name)
            };
            out.collect(g(
                "iot_vehicle_in_state",
                if m.state == s { 1.0 } else { 0.0 },
            ));
            out.collect(g(
                "iot_vehicle_state_seconds",
                m.spent_ms[idx(s)] as f64 / 1000.0,
            ));
        }
        self.machine.set(ctx, m);
        Ok(())
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Creates and fills the `vehicles` table (1 vehicle in 100 left out), if it has fewer rows.
fn prepare_postgres(url: &str, vehicles: u32) -> anyhow::Result<()> {
    use weir_postgres::tokio_postgres;
    weir::io_runtime::io_runtime().block_on(async {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        client
            .batch_execute(
                "CREATE TABLE IF NOT EXISTS vehicles (vehicle_id INTEGER PRIMARY KEY, make TEXT NOT NULL, model TEXT NOT NULL, region TEXT NOT NULL, owner TEXT NOT NULL)",
            )
            .await?;
        let ids: Vec<i32> = (0..vehicles as i32).filter(|v| v % 100 != 99).collect();
        for chunk in ids.chunks(1000) {
            let mut sql = String::from(
                "INSERT INTO vehicles (vehicle_id, make, model, region, owner) VALUES ",
            );
            for (i, id) in chunk.iter().enumerate() {
                let v = builtin_vehicle(*id as u32);
                if i > 0 {
                    sql.push(',');
                }
                sql.push_str(&format!(
                    "({id}, '{}', '{}', '{}', '{}')",
                    v.make, v.model, v.region, v.owner
                ));
            }
            sql.push_str(" ON CONFLICT (vehicle_id) DO NOTHING");
            client.batch_execute(&sql).await?;
        }
        anyhow::Ok(())
    })
}

fn main() -> anyhow::Result<()> {
    weir::init_logging();
    let cli = Cli::parse();
    let vehicles = cli.vehicles.max(1);
    let env = StreamEnv::from_options(cli.weir)?;
    let bounded = cli.events_per_vehicle.is_some();
    let start_ms = cli
        .start_ms
        .unwrap_or_else(|| now_ms().div_euclid(PERIOD_MS) * PERIOD_MS);
    // None: real time until Ctrl-C.
    let per_vehicle: Option<u64> = match (cli.events_per_vehicle, cli.duration) {
        (Some(e), _) => Some(u64::from(e)),
        (None, d) => d.map(|d| d * 1000 / EVENT_EVERY_MS as u64),
    };
    // Each generated record is an event, sometimes followed by a re-sent older one; its source
    // timestamp is the event's, so watermarks are generated per split inside the source.
    let mut gen = Datagen::new(
        u64::from(vehicles) * per_vehicle.unwrap_or(0),
        move |id, _| generated(id, vehicles, start_ms),
    )
    .with_timestamps(|v: &Vec<Event>| v[0].ts_ms)
    .splits(4);
    if per_vehicle.is_none() {
        gen = gen.unbounded();
    }
    if !bounded {
        // Real time: 4 events per vehicle per second, event time = wall clock.
        gen = gen.rate(f64::from(vehicles) * 1000.0 / EVENT_EVERY_MS as f64);
    } else if let Some(r) = cli.rate {
        gen = gen.rate(r);
    }
    let events = env
        .source(gen)
        .uid("vehicles")
        .name("vehicles")
        .assign_timestamps(WatermarkStrategy::bounded_out_of_orderness(
            Duration::from_millis(OUT_OF_ORDERNESS_MS),
        ))
        .flat_map(|v: Vec<Event>| v)
        .key_by(|e: &Event| e.vehicle)
        .process(Dedup::default())
        .uid("dedup")
        .name("dedup");

    let mut lookup_stats = None;
    let enriched: DataStream<Enriched> = match &cli.postgres {
        Some(url) => {
            prepare_postgres(url, vehicles)?;
            let lookup = PgLookup::new(
                url.clone(),
                "SELECT make, model, region, owner FROM vehicles WHERE vehicle_id = $1",
                |row| {
                    Ok(Vehicle {
                        make: row.try_get(0)?,
                        model: row.try_get(1)?,
                        region: row.try_get(2)?,
                        owner: row.try_get(3)?,
                    })
                },
            )
            .cache(100_000, Duration::from_secs(300))
            .connections(4);
            lookup_stats = Some(lookup.stats());
            enrich(
                &events,
                lookup,
                |e: &Event| e.vehicle as i32,
                MissingRow::Default(unknown_vehicle()),
                AsyncOptions::ordered()
                    .with_capacity(200)
                    .with_timeout_ms(30_000)
                    .with_max_attempts(3),
            )
            .main
            .map(|(e, v)| Enriched { e, v })
        }
        None => events.map(|e: Event| {
            let v = if e.vehicle % 100 == 99 {
                unknown_vehicle()
            } else {
                builtin_vehicle(e.vehicle)
            };
            Enriched { e, v }
        }),
    };

    let fleet = enriched
        .key_by(|x: &Enriched| (x.v.region.clone(), x.v.model.clone()))
        .window(Tumbling::event_time(PERIOD_MS))
        .aggregate_with(FleetStats, fleet_samples)
        .uid("fleet_windows")
        .flat_map(|v: Vec<MetricSample>| v);
    let states = enriched
        .key_by(|x: &Enriched| x.e.vehicle)
        .process(VehicleStates::default())
        .uid("vehicle_states")
        .name("vehicle_states");
    let run_label = cli.run_label.clone();
    let samples = fleet
        .union(&[states])
        .map(move |s: MetricSample| match &run_label {
            Some(r) => s.with_label("run", r.as_str()),
            None => s,
        });

    let mut sink_metrics = None;
    match &cli.prometheus_url {
        Some(url) => {
            let sink = PrometheusSink::new(url.clone())
                .max_samples_per_request(cli.samples_per_request)
                .max_buffered_samples(50_000);
            sink_metrics = Some(sink.metrics());
            samples.write_to_prometheus(sink).uid("prometheus");
        }
        None => {
            samples
                .sink(Stdout::with(|s: &MetricSample| s.to_text()))
                .uid("stdout");
        }
    }

    let handle = env.execute_async("iot_metrics")?;
    // Real time: the generator stops after --duration seconds of events; stop the job if it is
    // still busy long after that. Bounded: --duration, if given, is a hard limit.
    // Until Ctrl-C: no limit.
    let limit = match (bounded, per_vehicle) {
        (true, _) => cli.duration.map(Duration::from_secs),
        (false, Some(n)) => Some(Duration::from_secs(n * EVENT_EVERY_MS as u64 / 1000 + 60)),
        (false, None) => None,
    };
    if let Some(limit) = limit {
        let t0 = std::time::Instant::now();
        while !handle.is_finished() && t0.elapsed() < limit {
            std::thread::sleep(Duration::from_millis(50));
        }
        if !handle.is_finished() {
            eprintln!("iot_metrics: still running after {limit:?}: cancelling");
            handle.cancel();
        }
    }
    let r = handle.join()?;
    let total = r.metrics.counter_sum("dedup", "records_in");
    if r.cancelled {
        eprintln!(
            "iot_metrics: cancelled after {:.2?} ({total} events)",
            r.elapsed
        );
    } else {
        eprintln!(
            "iot_metrics: {} vehicles, {total} events in {:.2?} ({:.0} events/s){}",
            vehicles,
            r.elapsed,
            total as f64 / r.elapsed.as_secs_f64().max(1e-9),
            r.restored_from
                .map(|c| format!(", restored from checkpoint {c}"))
                .unwrap_or_default()
        );
    }
    if let Some(m) = sink_metrics {
        eprintln!("iot_metrics: prometheus: {}", m.snapshot());
    }
    if let Some(s) = lookup_stats {
        use std::sync::atomic::Ordering::Relaxed;
        eprintln!(
            "iot_metrics: postgres lookups: {} queries, {} cache hits, {} without a row",
            s.queries.load(Relaxed),
            s.hits.load(Relaxed),
            s.not_found.load(Relaxed)
        );
    }
    Ok(())
}
