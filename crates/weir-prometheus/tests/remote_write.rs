//! The remote-write sink against a real Prometheus (`scripts/services start prometheus`) and
//! against a scripted receiver for error injection.
mod common;

use common::*;
use std::collections::HashMap;
use std::time::Duration;
use weir::operators::{Sink, SinkWriter};
use weir::prelude::*;
use weir::Record;
use weir_prometheus::{
    HeaderMap, MetricSample, OnError, PrometheusSink, PrometheusStreamExt, RequestSigner,
};

fn series_key(s: &MetricSample) -> String {
    format!(
        "{}{{{}}}",
        s.name,
        s.labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{v}\""))
            .collect::<Vec<_>>()
            .join(",")
    )
}

fn expected(samples: &[MetricSample]) -> HashMap<String, Vec<(i64, f64)>> {
    let mut m: HashMap<String, Vec<(i64, f64)>> = HashMap::new();
    for s in samples {
        m.entry(series_key(s)).or_default().push((s.ts_ms, s.value));
    }
    for v in m.values_mut() {
        v.sort_by_key(|p| p.0);
    }
    m
}

/// `n_series` series × `per_series` samples 1 s apart, ending a minute ago.
fn samples(test: &str, n_series: usize, per_series: usize) -> Vec<MetricSample> {
    let base = now_ms() - 60_000 - per_series as i64 * 1000;
    let mut v = Vec::new();
    for i in 0..per_series {
        for s in 0..n_series {
            v.push(
                MetricSample::new(
                    "weir_it_value",
                    base + i as i64 * 1000,
                    (s * 1000 + i) as f64,
                )
                .with_label("test", test)
                .with_label("run", run_id())
                .with_label("series", format!("s{s}"))
                .with_label("kind", if s % 2 == 0 { "even" } else { "odd" }),
            );
        }
    }
    v
}

#[test]
fn samples_come_back_through_promql_with_labels_and_values() {
    let input = samples("roundtrip", 7, 40);
    let sink = PrometheusSink::new(remote_write_url()).max_samples_per_request(25);
    let metrics = sink.metrics();
    let env = StreamEnv::new().with_parallelism(3);
    env.from_collection(input.clone()).write_to_prometheus(sink);
    env.execute("roundtrip").unwrap();
    let m = metrics.snapshot();
    assert_eq!(m.samples_sent, 280, "{m}");
    assert!(m.requests_sent >= 280 / 25, "{m}");
    assert_eq!(m.dropped_total(), 0, "{m}");
    let got = query_raw(
        &format!(r#"weir_it_value{{test="roundtrip",run="{}"}}"#, run_id()),
        "1h",
    );
    assert_eq!(got, expected(&input));
}

#[test]
fn a_restored_writer_isolates_replayed_samples_and_stores_every_valid_one() {
    let url = remote_write_url();
    let base = now_ms() - 600_000;
    let s = |series: &str, i: i64| {
        MetricSample::new("weir_it_replay", base + i * 1000, i as f64)
            .with_label("test", "replay")
            .with_label("run", run_id())
            .with_label("series", series)
    };
    let write = |w: &mut Box<dyn SinkWriter<MetricSample>>, range: std::ops::Range<i64>| {
        for i in range {
            for series in ["a", "b", "c"] {
                w.write(Record {
                    ts: base + i * 1000,
                    value: s(series, i),
                })
                .unwrap();
            }
        }
    };
    // First attempt: 1..=50, checkpoint, 51..=100 written, then the process dies.
    let first = PrometheusSink::new(url.clone()).max_samples_per_request(40);
    let mut w = first.create_writer(0, 1).unwrap();
    write(&mut w, 1..51);
    let state = w.snapshot(1).unwrap().state;
    write(&mut w, 51..101);
    w.finish().unwrap();
    drop(w);
    assert_eq!(first.metrics().snapshot().samples_sent, 300);

    // Restored from checkpoint 1: the source replays 51..=100, then goes on to 150.
    let second = PrometheusSink::new(url).max_samples_per_request(40);
    let mut w = second.create_writer(0, 1).unwrap();
    w.restore(&state).unwrap();
    write(&mut w, 1..151); // 1..=50 are before the checkpoint: skipped by the guard
    w.finish().unwrap();
    let m = second.metrics().snapshot();
    assert_eq!(m.samples_skipped_stale, 150, "{m}");
    // 51..=99 are refused as out of order; 100 equals the newest stored sample, which
    // Prometheus accepts silently; 101..=150 are new.
    assert_eq!(m.samples_replayed, 3 * 49, "{m}");
    assert_eq!(m.samples_sent, 3 * 51, "{m}");
    assert_eq!(m.dropped_total(), 0, "{m}");
    assert!(m.requests_rejected > 0, "{m}");

    let got = query_raw(
        &format!(r#"weir_it_replay{{test="replay",run="{}"}}"#, run_id()),
        "1h",
    );
    assert_eq!(got.len(), 3);
    for v in got.values() {
        let want: Vec<(i64, f64)> = (1..151).map(|i| (base + i * 1000, i as f64)).collect();
        assert_eq!(v, &want);
    }
}

#[test]
fn a_refused_sample_is_dropped_and_counted_and_the_rest_stored() {
    // Prometheus refuses the whole request for one sample too old ("out of bounds"): the sink
    // bisects, stores the others, and counts the refused one.
    let mut input = samples("too_old", 4, 30);
    input.insert(
        17,
        MetricSample::new("weir_it_value", now_ms() - 48 * 3600 * 1000, 1.0)
            .with_label("test", "too_old")
            .with_label("run", run_id())
            .with_label("series", "ancient"),
    );
    let sink = PrometheusSink::new(remote_write_url()).max_samples_per_request(1_000);
    let metrics = sink.metrics();
    let env = StreamEnv::new().with_parallelism(1);
    env.from_collection(input.clone()).write_to_prometheus(sink);
    env.execute("too_old").unwrap();
    let m = metrics.snapshot();
    assert_eq!(m.samples_dropped.get("too_old"), Some(&1), "{m}");
    assert_eq!(m.samples_sent, 120, "{m}");
    let got = query_raw(
        &format!(r#"weir_it_value{{test="too_old",run="{}"}}"#, run_id()),
        "1h",
    );
    input.remove(17);
    assert_eq!(got, expected(&input));
}

#[test]
fn a_receiver_failing_with_500_then_200_gets_every_sample_once() {
    let rx = TestReceiver::start(|i, _| {
        if i < 3 {
            (500, vec![], "try later".into())
        } else {
            (204, vec![], String::new())
        }
    });
    struct Signer;
    impl RequestSigner for Signer {
        fn sign(&self, _url: &str, h: &mut HeaderMap, body: &[u8]) -> Result<(), String> {
            h.insert(
                "x-signature",
                format!("len-{}", body.len()).parse().unwrap(),
            );
            Ok(())
        }
    }
    let input = samples("retry", 5, 20);
    let sink = PrometheusSink::new(rx.url.clone())
        .max_samples_per_request(30)
        .retries(5, Duration::from_millis(10), Duration::from_millis(50))
        .basic_auth("user", "pass")
        .header("X-Scope-OrgID", "tenant-1")
        .signer(Signer);
    let metrics = sink.metrics();
    let env = StreamEnv::new().with_parallelism(2);
    env.from_collection(input.clone()).write_to_prometheus(sink);
    env.execute("retry").unwrap();
    let m = metrics.snapshot();
    assert_eq!(m.requests_retried, 3, "{m}");
    assert_eq!(m.samples_sent, 100, "{m}");
    let mut got: Vec<(String, i64, f64)> = rx.accepted();
    got.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let mut want: Vec<(String, i64, f64)> = input
        .iter()
        .map(|s| {
            let mut l = vec![("__name__".to_string(), s.name.clone())];
            l.extend(s.labels.iter().cloned());
            l.sort();
            let key = l
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",");
            (key, s.ts_ms, s.value)
        })
        .collect();
    want.sort_by(|a, b| a.partial_cmp(b).unwrap());
    assert_eq!(got, want, "every sample exactly once");
    let reqs = rx.requests.lock().unwrap();
    let h = &reqs[0].0.headers;
    assert_eq!(h["content-encoding"], "snappy");
    assert_eq!(h["content-type"], "application/x-protobuf");
    assert_eq!(h["x-prometheus-remote-write-version"], "0.1.0");
    assert_eq!(h["authorization"], "Basic dXNlcjpwYXNz");
    assert_eq!(h["x-scope-orgid"], "tenant-1");
    assert_eq!(h["x-signature"], format!("len-{}", h["content-length"]));
}

#[test]
fn retry_after_of_a_429_is_honoured() {
    let rx = TestReceiver::start(|i, _| {
        if i == 0 {
            (
                429,
                vec![("Retry-After".into(), "2".into())],
                "slow down".into(),
            )
        } else {
            (200, vec![], String::new())
        }
    });
    let sink = PrometheusSink::new(rx.url.clone())
        .bearer_token("t0k3n")
        .retries(3, Duration::from_millis(10), Duration::from_millis(20));
    let metrics = sink.metrics();
    let env = StreamEnv::new().with_parallelism(1);
    env.from_collection(samples("429", 2, 3))
        .write_to_prometheus(sink);
    env.execute("429").unwrap();
    let reqs = rx.requests.lock().unwrap();
    assert_eq!(reqs.len(), 2);
    let gap = reqs[1].0.at - reqs[0].0.at;
    assert!(gap >= Duration::from_secs(2), "waited only {gap:?}");
    assert!(gap < Duration::from_secs(10), "waited {gap:?}");
    assert_eq!(reqs[0].0.headers["authorization"], "Bearer t0k3n");
    assert_eq!(metrics.snapshot().samples_sent, 6);
}

#[test]
fn a_400_is_dropped_and_counted_by_reason() {
    // The receiver refuses any request holding a NaN "bad labels" sample.
    let rx = TestReceiver::start(|_, req| {
        let bad = req
            .timeseries
            .iter()
            .any(|t| t.samples.iter().any(|s| s.value < 0.0));
        if bad {
            (400, vec![], "invalid label set".into())
        } else {
            (204, vec![], String::new())
        }
    });
    let mut input = samples("400", 3, 20);
    for i in [5, 33, 34] {
        input[i].value = -1.0;
    }
    let sink = PrometheusSink::new(rx.url.clone()).max_samples_per_request(16);
    let metrics = sink.metrics();
    let env = StreamEnv::new().with_parallelism(1);
    env.from_collection(input).write_to_prometheus(sink);
    let res = env.execute("400").unwrap();
    let m = metrics.snapshot();
    assert_eq!(m.samples_dropped.get("invalid_labels"), Some(&3), "{m}");
    assert_eq!(m.samples_sent, 57, "{m}");
    assert_eq!(rx.accepted().len(), 57);
    // The same counts are in the job's metrics, next to every other operator's.
    let j = &res.metrics;
    assert_eq!(j.counter_sum("prometheus", "samples_sent"), 57, "{j:?}");
    assert_eq!(j.counter_sum("prometheus", "samples_dropped"), 3);
    assert_eq!(
        j.counter_sum("prometheus", "samples_dropped_invalid_labels"),
        3
    );
    assert_eq!(
        j.counter_sum("prometheus", "requests_sent"),
        m.requests_sent
    );
    assert_eq!(
        j.counter_sum("prometheus", "requests_rejected"),
        m.requests_rejected
    );
    assert!(j.counter_sum("prometheus", "request_latency_us_sum") > 0);
}

#[test]
fn a_400_fails_the_job_under_the_fail_policy() {
    let rx = TestReceiver::start(|_, _| (400, vec![], "nope".into()));
    let sink = PrometheusSink::new(rx.url.clone()).on_rejected(OnError::Fail);
    let env = StreamEnv::new().with_parallelism(1);
    env.from_collection(samples("400fail", 1, 4))
        .write_to_prometheus(sink);
    let err = env.execute("400fail").unwrap_err().to_string();
    assert!(err.contains("HTTP 400: nope"), "{err}");
}

#[test]
fn unauthorized_fails_fast_with_the_servers_message() {
    let rx = TestReceiver::start(|_, _| (401, vec![], "bad credentials for tenant".into()));
    let sink = PrometheusSink::new(rx.url.clone()).retries(
        10,
        Duration::from_secs(1),
        Duration::from_secs(10),
    );
    let env = StreamEnv::new().with_parallelism(1);
    env.from_collection(samples("401", 1, 3))
        .write_to_prometheus(sink);
    let start = std::time::Instant::now();
    let err = env.execute("401").unwrap_err().to_string();
    assert!(
        err.contains("401") && err.contains("bad credentials for tenant"),
        "{err}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "not fast: {:?}",
        start.elapsed()
    );
    assert_eq!(rx.count(), 1, "no retry");
}

#[test]
fn retries_exhausted_drop_or_fail() {
    let rx = TestReceiver::start(|_, _| (503, vec![], "down".into()));
    let sink = PrometheusSink::new(rx.url.clone())
        .retries(2, Duration::from_millis(5), Duration::from_millis(10))
        .on_retries_exhausted(OnError::Drop);
    let metrics = sink.metrics();
    let env = StreamEnv::new().with_parallelism(1);
    env.from_collection(samples("exhausted", 2, 5))
        .write_to_prometheus(sink);
    env.execute("drop").unwrap();
    let m = metrics.snapshot();
    assert_eq!(m.samples_dropped.get("retries_exhausted"), Some(&10), "{m}");
    assert_eq!(m.requests_retried, 2, "{m}");

    let sink = PrometheusSink::new(rx.url.clone()).retries(
        1,
        Duration::from_millis(5),
        Duration::from_millis(10),
    );
    let env = StreamEnv::new().with_parallelism(1);
    env.from_collection(samples("exhausted", 2, 5))
        .write_to_prometheus(sink);
    let err = env.execute("fail").unwrap_err().to_string();
    assert!(
        err.contains("giving up after 1 retries") && err.contains("503"),
        "{err}"
    );
}

#[test]
fn connection_refused_is_retried() {
    // A port nobody listens on: every attempt fails to connect.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let sink = PrometheusSink::new(format!("http://127.0.0.1:{port}/api/v1/write")).retries(
        3,
        Duration::from_millis(5),
        Duration::from_millis(10),
    );
    let metrics = sink.metrics();
    let env = StreamEnv::new().with_parallelism(1);
    env.from_collection(samples("refused", 1, 2))
        .write_to_prometheus(sink);
    let err = env.execute("refused").unwrap_err().to_string();
    assert!(err.contains("giving up after 3 retries"), "{err}");
    assert_eq!(metrics.snapshot().requests_retried, 3);
}

#[test]
fn batches_by_samples_bytes_and_time() {
    let rx = TestReceiver::start(|_, _| (204, vec![], String::new()));
    // By samples: 100 samples, 10 per request.
    let sink = PrometheusSink::new(rx.url.clone()).max_samples_per_request(10);
    let env = StreamEnv::new().with_parallelism(1);
    env.from_collection(samples("batch", 4, 25))
        .write_to_prometheus(sink);
    env.execute("batch").unwrap();
    let sizes: Vec<usize> = rx
        .requests
        .lock()
        .unwrap()
        .iter()
        .map(|(r, _)| r.body.timeseries.iter().map(|t| t.samples.len()).sum())
        .collect();
    assert_eq!(sizes, vec![10; 10]);

    // By bytes: each sample's series is about 100 bytes of labels, so ~1 KiB fits a few.
    let rx = TestReceiver::start(|_, _| (204, vec![], String::new()));
    let sink = PrometheusSink::new(rx.url.clone()).max_bytes_per_request(1024);
    let env = StreamEnv::new().with_parallelism(1);
    env.from_collection(samples("bytes", 20, 2))
        .write_to_prometheus(sink);
    env.execute("bytes").unwrap();
    let reqs = rx.requests.lock().unwrap();
    assert!(reqs.len() >= 4, "{} requests", reqs.len());
    let total: usize = reqs
        .iter()
        .map(|(r, _)| {
            r.body
                .timeseries
                .iter()
                .map(|t| t.samples.len())
                .sum::<usize>()
        })
        .sum();
    assert_eq!(total, 40);
    drop(reqs);

    // By time: a sample waits at most max_delay even when the job goes on.
    let rx = TestReceiver::start(|_, _| (204, vec![], String::new()));
    let sink = PrometheusSink::new(rx.url.clone()).max_delay(Duration::from_millis(200));
    let mut w = sink.create_writer(0, 1).unwrap();
    let s = MetricSample::new("weir_it_time", now_ms(), 1.0);
    w.write(Record {
        ts: s.ts_ms,
        value: s,
    })
    .unwrap();
    w.flush().unwrap();
    std::thread::sleep(Duration::from_millis(2_000));
    assert_eq!(rx.count(), 1, "sent by the timer, before the end of input");
    w.finish().unwrap();
}

/// An HTTPS receiver (Python's `http.server` behind `ssl`) with a certificate for 127.0.0.1
/// signed by a private CA made with `openssl`; returns (url, CA PEM, the server process).
fn tls_receiver(dir: &std::path::Path) -> (String, Vec<u8>, std::process::Child) {
    let sh = |cmd: &str| {
        let st = std::process::Command::new("sh")
            .args(["-c", cmd])
            .current_dir(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "{cmd}");
    };
    sh("openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 1 -subj /CN=weir-test-ca");
    sh("openssl req -newkey rsa:2048 -nodes -keyout srv.key -out srv.csr -subj /CN=127.0.0.1");
    sh("printf 'subjectAltName=IP:127.0.0.1\\nbasicConstraints=CA:FALSE\\n' > ext.cnf && openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out srv.pem -days 1 -extfile ext.cnf");
    let server = r#"
import http.server, ssl, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(204); self.end_headers()
    def log_message(self, *a): pass
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain("srv.pem", "srv.key")
s.socket = ctx.wrap_socket(s.socket, server_side=True)
print(s.server_address[1], flush=True)
s.serve_forever()
"#;
    let mut child = std::process::Command::new("python3")
        .args(["-c", server])
        .current_dir(dir)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let port: u16 = line.trim().parse().expect("the server's port");
    let ca = std::fs::read(dir.join("ca.pem")).unwrap();
    (format!("https://127.0.0.1:{port}/api/v1/write"), ca, child)
}

#[test]
fn tls_with_a_private_ca_and_refusal_of_an_unknown_one() {
    let dir = tempfile::tempdir().unwrap();
    let (url, ca, mut server) = tls_receiver(dir.path());
    let sink = PrometheusSink::new(url.clone()).ca_cert_pem(ca);
    let metrics = sink.metrics();
    let env = StreamEnv::new().with_parallelism(1);
    env.from_collection(samples("tls", 3, 4))
        .write_to_prometheus(sink);
    let ok = env.execute("tls");
    // Without the CA, the server's certificate is not trusted.
    let sink =
        PrometheusSink::new(url).retries(0, Duration::from_millis(1), Duration::from_millis(1));
    let env = StreamEnv::new().with_parallelism(1);
    env.from_collection(samples("tls", 1, 1))
        .write_to_prometheus(sink);
    let refused = env.execute("tls-unknown-ca");
    server.kill().unwrap();
    server.wait().unwrap();
    ok.unwrap();
    assert_eq!(metrics.snapshot().samples_sent, 12);
    let err = refused.unwrap_err().to_string();
    assert!(err.to_lowercase().contains("certificate"), "{err}");
}
