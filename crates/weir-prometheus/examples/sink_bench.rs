//! Throughput of the remote-write sink: `--series` distinct series × `--samples-per-series`
//! samples through a Weir job into a remote-write URL, or into a built-in receiver that
//! reads and discards each request (`--discard`). Prints samples/s and the sink's metrics.
//!
//!     cargo run --release -p weir-prometheus --example sink_bench -- --series 1000000 --discard
//!     cargo run --release -p weir-prometheus --example sink_bench -- --series 1000000 \
//!         --url http://127.0.0.1:9090/api/v1/write
use clap::Parser;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use weir::prelude::*;
use weir_prometheus::{MetricSample, PrometheusSink, PrometheusStreamExt};

#[derive(Parser)]
#[command(about = "Remote-write sink throughput")]
struct Cli {
    #[command(flatten)]
    weir: EnvOptions,
    /// Distinct series.
    #[arg(long, default_value_t = 1_000_000)]
    series: u64,
    /// Samples per series (10 s apart).
    #[arg(long, default_value_t = 2)]
    samples_per_series: u64,
    /// Remote-write URL.
    #[arg(long)]
    url: Option<String>,
    /// Write to a built-in receiver that discards what it reads.
    #[arg(long)]
    discard: bool,
    /// Samples per request.
    #[arg(long, default_value_t = 2_000)]
    samples_per_request: usize,
    /// Value of the `run` label (default: the start time).
    #[arg(long)]
    run: Option<String>,
}

/// An HTTP/1.1 receiver on 127.0.0.1 that reads every request whole and answers 204.
fn discarding_receiver(bytes: Arc<AtomicU64>) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/api/v1/write", l.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut conn) = conn else { return };
            let bytes = bytes.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(conn.try_clone().unwrap());
                loop {
                    let mut len = 0usize;
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    loop {
                        line.clear();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let h = line.trim_end();
                        if h.is_empty() {
                            break;
                        }
                        if let Some((k, v)) = h.split_once(':') {
                            if k.eq_ignore_ascii_case("content-length") {
                                len = v.trim().parse().unwrap_or(0);
                            }
                        }
                    }
                    let mut body = vec![0; len];
                    if r.read_exact(&mut body).is_err() {
                        return;
                    }
                    bytes.fetch_add(len as u64, Relaxed);
                    if conn
                        .write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    url
}

fn main() -> anyhow::Result<()> {
    weir::init_logging();
    let cli = Cli::parse();
    let received = Arc::new(AtomicU64::new(0));
    let url = match (&cli.url, cli.discard) {
        (_, true) => discarding_receiver(received.clone()),
        (Some(u), false) => u.clone(),
        (None, false) => anyhow::bail!("--url URL or --discard"),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let run = cli.run.clone().unwrap_or_else(|| now.to_string());
    let series = cli.series.max(1);
    let per = cli.samples_per_series.max(1);
    // Recent enough for Prometheus: the last sample is a minute old.
    let start = now - 60_000 - per as i64 * 10_000;
    let env = StreamEnv::from_options(cli.weir)?;
    let sink = PrometheusSink::new(url.clone())
        .max_samples_per_request(cli.samples_per_request)
        .max_buffered_samples(50_000);
    let metrics = sink.metrics();
    env.source(
        Datagen::new(series * per, move |id, _| {
            let s = id % series;
            let j = id / series;
            MetricSample::new(
                "weir_bench_value",
                start + j as i64 * 10_000,
                (id % 1000) as f64,
            )
            .with_label("run", run.as_str())
            .with_label("instance", format!("host-{}", s % 1000))
            .with_label("series", format!("s{s}"))
        })
        .splits(4),
    )
    .write_to_prometheus(sink);
    let r = env.execute("sink_bench")?;
    let m = metrics.snapshot();
    let secs = r.elapsed.as_secs_f64();
    println!(
        "{} series x {} samples into {}: {} samples in {:.2} s = {:.0} samples/s; {} requests, p50 {} ms, p99 {} ms{}",
        series,
        per,
        if cli.discard { "a discarding receiver" } else { url.as_str() },
        m.samples_sent,
        secs,
        m.samples_sent as f64 / secs,
        m.requests_sent,
        m.latency_quantile_ms(0.5).unwrap_or(0),
        m.latency_quantile_ms(0.99).unwrap_or(0),
        if cli.discard {
            format!(
                ", {:.1} MB compressed ({:.1} bytes/sample)",
                received.load(Relaxed) as f64 / 1e6,
                received.load(Relaxed) as f64 / m.samples_sent.max(1) as f64
            )
        } else {
            String::new()
        }
    );
    println!("sink: {m}");
    Ok(())
}
