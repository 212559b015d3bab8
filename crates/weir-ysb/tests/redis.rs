//! YSB against a real Redis (`REDIS_URL`, exported by scripts/test; else started with
//! `scripts/services start redis`): the counts stored per campaign and window equal a count
//! computed independently from the generator, by the job and by the loop of the Redis mode.
use hashbrown::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use weir::prelude::*;
use weir_ysb::redis_sink::{key, limit_to_redis, RedisSink};
use weir_ysb::{counts, files, YsbConfig};

fn redis_url() -> String {
    if let Ok(v) = std::env::var("REDIS_URL") {
        return v;
    }
    let out = std::process::Command::new(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/services"),
    )
    .args(["start", "redis"])
    .stderr(std::process::Stdio::inherit())
    .output()
    .expect("running scripts/services");
    assert!(out.status.success(), "scripts/services start redis failed");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("REDIS_URL="))
        .expect("REDIS_URL printed")
        .to_string()
}

#[test]
fn counts_in_redis_equal_an_independent_count() {
    // 60,000 events at 2,000 per second of event time: 30 s, 3 windows of 10 s
    let cfg = YsbConfig {
        rate_per_s: 2_000,
        ..YsbConfig::new(60_000, 100)
    };
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events");
    files::write_events(&cfg, &input, 2).unwrap();
    let mut expect: HashMap<(i64, i64), u64> = HashMap::new();
    for n in 0..cfg.events {
        if let Some(k) = cfg.counted(n) {
            *expect.entry(k).or_default() += 1;
        }
    }
    assert!(expect.len() > 200, "several windows per campaign");

    let url = redis_url();
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut con = client.get_connection().unwrap();
    let _: () = redis::cmd("FLUSHDB").query(&mut con).unwrap();

    let env = StreamEnv::new().with_parallelism(2);
    let events = files::read_events(&env, &input, 1000);
    counts(&events, Arc::new(cfg.ad_table()), true).sink(RedisSink::new(url.clone()));
    env.execute("ysb-redis").unwrap();

    let check = |con: &mut redis::Connection, who: &str| {
        let keys: Vec<String> = redis::cmd("KEYS").arg("ysb:*").query(con).unwrap();
        assert_eq!(keys.len(), expect.len(), "{who}");
        for ((campaign, window), n) in &expect {
            let (seen, updated): (u64, i64) = redis::cmd("HMGET")
                .arg(key(*campaign, *window))
                .arg("seen_count")
                .arg("time_updated")
                .query(con)
                .unwrap();
            assert_eq!(seen, *n, "{who}: campaign {campaign}, window {window}");
            assert!(updated > 1_600_000_000_000, "a wall-clock time: {updated}");
        }
    };
    check(&mut con, "the job");

    // The hand-written loop of the Redis mode (the benchmark's limit) leaves the same counts.
    let _: () = redis::cmd("FLUSHDB").query(&mut con).unwrap();
    let table = cfg.ad_table();
    let counted = limit_to_redis(files::events_iter(&input), &table, &url).unwrap();
    assert_eq!(counted.len(), expect.len());
    check(&mut con, "the loop");
    assert!(
        limit_to_redis(files::events_iter(&input), &table, "redis://127.0.0.1:1")
            .unwrap_err()
            .contains("redis://127.0.0.1:1")
    );
}
