//! Lookups in a real PostgreSQL (`scripts/services start postgres`): the cache, its bounds and
//! time to live, one query per key at a time, and each missing-row policy in a job.
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;
use weir::prelude::*;
use weir_postgres::{enrich, tokio_postgres, MissingRow, PgLookup};

/// `POSTGRES_URL` from the environment (`scripts/test` exports it), else from
/// `scripts/services start postgres`, once per test binary.
fn postgres_url() -> String {
    if let Ok(v) = std::env::var("POSTGRES_URL") {
        return v;
    }
    static URL: OnceLock<Mutex<Option<String>>> = OnceLock::new();
    let mut g = URL.get_or_init(Default::default).lock().unwrap();
    g.get_or_insert_with(|| {
        let out = std::process::Command::new(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/services"),
        )
        .args(["start", "postgres"])
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("running scripts/services");
        assert!(
            out.status.success(),
            "scripts/services start postgres failed"
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("POSTGRES_URL="))
            .expect("POSTGRES_URL printed")
            .to_string()
    })
    .clone()
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    weir::io_runtime::io_runtime().block_on(f)
}

fn sql(statements: &str) {
    let url = postgres_url();
    block_on(async {
        let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        c.batch_execute(statements).await.unwrap();
    })
}

#[derive(Clone, Debug, PartialEq, PartialOrd, Serialize, Deserialize)]
struct Device {
    make: String,
    region: String,
}

fn unknown() -> Device {
    Device {
        make: "unknown".into(),
        region: "unknown".into(),
    }
}

/// A table `name` with devices 1..=5 (device 3 left out).
fn table(name: &str) -> PgLookup<i64, Device> {
    sql(&format!(
        "DROP TABLE IF EXISTS {name};
         CREATE TABLE {name} (device_id BIGINT PRIMARY KEY, make TEXT, region TEXT);
         INSERT INTO {name} VALUES (1, 'acme', 'eu'), (2, 'acme', 'us'), (4, 'globex', 'eu'), (5, 'initech', 'ap');"
    ));
    PgLookup::new(
        postgres_url(),
        format!("SELECT make, region FROM {name} WHERE device_id = $1"),
        |row| {
            Ok(Device {
                make: row.try_get(0)?,
                region: row.try_get(1)?,
            })
        },
    )
}

#[test]
fn lookups_are_cached_bounded_and_expire() {
    // One connection, and a TTL long enough for a busy machine: connection set-up (SCRAM in a
    // debug build) must not eat it.
    let ttl = Duration::from_secs(5);
    let lookup = table("devices_cache").connections(1).cache(2, ttl);
    // Opened now, so the UPDATE below is quick.
    let admin = block_on(async {
        let (c, conn) = tokio_postgres::connect(&postgres_url(), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        c
    });
    let stats = lookup.stats();
    let get = |k: i64| block_on(lookup.get(k)).unwrap();
    assert_eq!(
        get(1),
        Some(Device {
            make: "acme".into(),
            region: "eu".into()
        })
    );
    assert_eq!(get(3), None, "no row");
    assert_eq!(get(1).unwrap().region, "eu");
    assert_eq!(get(3), None);
    assert_eq!(stats.queries.load(Relaxed), 2, "answers from the cache");
    assert_eq!(stats.hits.load(Relaxed), 2);
    assert_eq!(stats.not_found.load(Relaxed), 1);
    // A third key evicts the oldest loaded (1).
    get(2);
    assert_eq!(lookup.cache_ref().len(), 2);
    assert_eq!(stats.evicted.load(Relaxed), 1);
    get(1);
    assert_eq!(
        stats.queries.load(Relaxed),
        4,
        "1 was evicted: queried again"
    );
    // A change in the table is seen once the entry expired.
    let loaded = std::time::Instant::now();
    block_on(admin.batch_execute("UPDATE devices_cache SET region = 'moon' WHERE device_id = 1"))
        .unwrap();
    assert_eq!(get(1).unwrap().region, "eu", "still cached");
    std::thread::sleep(ttl.saturating_sub(loaded.elapsed()) + Duration::from_millis(100));
    assert_eq!(get(1).unwrap().region, "moon", "expired, reloaded");
    assert!(stats.expired.load(Relaxed) >= 1);
}

#[test]
fn concurrent_lookups_of_one_key_share_one_query() {
    let lookup = table("devices_flight").cache(100, Duration::from_secs(60));
    let stats = lookup.stats();
    let results = block_on(async {
        let tasks: Vec<_> = (0..50)
            .map(|i| tokio::spawn(lookup.get(if i % 2 == 0 { 4 } else { 3 })))
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap().unwrap());
        }
        out
    });
    assert_eq!(results.iter().filter(|r| r.is_some()).count(), 25);
    assert_eq!(stats.queries.load(Relaxed), 2, "one query per key");
    assert_eq!(stats.hits.load(Relaxed), 48);
}

fn readings() -> Vec<(i64, f64)> {
    (0..60).map(|i| (i % 6, i as f64)).collect()
}

fn run(policy: MissingRow<Device>, name: &str) -> (Vec<(i64, f64, Device)>, Vec<(i64, f64)>, u64) {
    let lookup = table(name).cache(1000, Duration::from_secs(60));
    let stats = lookup.stats();
    let env = StreamEnv::new().with_parallelism(2);
    let main = CollectSink::new();
    let missing = CollectSink::new();
    let out = enrich(
        &env.from_collection(readings()),
        lookup,
        |r: &(i64, f64)| r.0,
        policy,
        AsyncOptions::unordered()
            .with_capacity(16)
            .with_max_attempts(3),
    );
    out.main
        .map(|((id, v), d): ((i64, f64), Device)| (id, v, d))
        .sink(main.clone());
    out.missing.sink(missing.clone());
    env.execute(name).unwrap();
    let mut m = main.values();
    m.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let mut x = missing.values();
    x.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (m, x, stats.queries.load(Relaxed))
}

#[test]
fn missing_rows_are_dropped_defaulted_or_sent_to_the_side_output() {
    // Keys 0..6: 1, 2, 4, 5 have rows; 0 and 3 do not.
    let found = |m: &[(i64, f64, Device)]| m.iter().filter(|r| r.2.make != "unknown").count();

    let (main, missing, queries) = run(MissingRow::Drop, "devices_drop");
    assert_eq!(main.len(), 40);
    assert_eq!(found(&main), 40);
    assert!(missing.is_empty());
    assert_eq!(queries, 6, "one query per key, then the cache");

    let (main, missing, _) = run(MissingRow::Default(unknown()), "devices_default");
    assert_eq!(main.len(), 60);
    assert_eq!(found(&main), 40);
    assert!(main
        .iter()
        .filter(|r| r.0 == 0 || r.0 == 3)
        .all(|r| r.2 == unknown()));
    assert!(missing.is_empty());
    let by_id: HashMap<i64, String> = main.iter().map(|r| (r.0, r.2.make.clone())).collect();
    assert_eq!(by_id[&5], "initech");

    let (main, missing, _) = run(MissingRow::SideOutput, "devices_side");
    assert_eq!(main.len(), 40);
    assert_eq!(missing.len(), 20);
    assert!(missing.iter().all(|r| r.0 == 0 || r.0 == 3));
}

#[test]
fn a_broken_query_fails_the_job_with_postgres_message() {
    let lookup: PgLookup<i64, Device> = PgLookup::new(
        postgres_url(),
        "SELECT make, region FROM no_such_table WHERE device_id = $1",
        |row| {
            Ok(Device {
                make: row.try_get(0)?,
                region: row.try_get(1)?,
            })
        },
    );
    let env = StreamEnv::new().with_parallelism(1);
    enrich(
        &env.from_collection(vec![(1i64, 1.0f64)]),
        lookup,
        |r: &(i64, f64)| r.0,
        MissingRow::Drop,
        AsyncOptions::ordered()
            .with_max_attempts(2)
            .with_backoff(10, 10),
    )
    .main
    .sink(DiscardSink::new());
    let err = env.execute("broken").unwrap_err().to_string();
    assert!(err.contains("no_such_table"), "{err}");
}
