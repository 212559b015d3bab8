//! The cost of a restore: N series get samples 1, 2, 3 (a checkpoint after 1); a writer
//! restored from that checkpoint replays 2 and 3 and adds 4. Prometheus refuses every sample
//! 2 as out of order (3 is an exact duplicate of the newest, which it accepts), so the sink
//! isolates N refused samples by bisection. Prints the time it took and the sink's counters.
//!
//!     PROMETHEUS_REMOTE_WRITE_URL=http://127.0.0.1:9090/api/v1/write \
//!         cargo run --release -p weir-prometheus --example replay_bench -- 10000
use weir::operators::{Sink, SinkWriter};
use weir::Record;
use weir_prometheus::{MetricSample, PrometheusSink};

fn main() -> anyhow::Result<()> {
    let url = std::env::var("PROMETHEUS_REMOTE_WRITE_URL")
        .map_err(|_| anyhow::anyhow!("set PROMETHEUS_REMOTE_WRITE_URL"))?;
    let n: i64 = std::env::args().nth(1).map_or(Ok(10_000), |a| a.parse())?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let base = now - 300_000;
    let run = now.to_string();
    let write = |w: &mut Box<dyn SinkWriter<MetricSample>>, k: i64| -> weir::Result<()> {
        for s in 0..n {
            let m = MetricSample::new("weir_replay_bench", base + k * 10_000, k as f64)
                .with_label("run", run.as_str())
                .with_label("series", s.to_string());
            w.write(Record {
                ts: m.ts_ms,
                value: m,
            })?;
        }
        Ok(())
    };
    let first = PrometheusSink::new(url.clone());
    let mut w = first.create_writer(0, 1)?;
    write(&mut w, 1)?;
    let state = w.snapshot(1)?.state;
    write(&mut w, 2)?;
    write(&mut w, 3)?;
    w.finish()?;
    let restored = PrometheusSink::new(url);
    let mut w = restored.create_writer(0, 1)?;
    w.restore(&state)?;
    let t = std::time::Instant::now();
    for k in 2..=4 {
        write(&mut w, k)?;
    }
    w.finish()?;
    let m = restored.metrics().snapshot();
    println!(
        "restore of {n} series with 2 samples each to replay: {:.2?} ({} refused samples isolated, {:.0}/s); {m}",
        t.elapsed(),
        m.samples_replayed,
        m.samples_replayed as f64 / t.elapsed().as_secs_f64()
    );
    Ok(())
}
