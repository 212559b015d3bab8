//! Test helpers: the real services (`scripts/services`), Prometheus queries, and a small HTTP
//! receiver whose answers a test scripts (error injection).
#![allow(dead_code)]
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use weir_prometheus::proto::{self, WriteRequest};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The variable `var` of service `name`: from the environment (`scripts/test` starts the
/// services and exports their variables), else from `scripts/services start NAME`, run once
/// per test binary.
pub fn service_var(name: &str, var: &str) -> String {
    if let Ok(v) = std::env::var(var) {
        return v;
    }
    static STARTED: OnceLock<Mutex<HashMap<String, HashMap<String, String>>>> = OnceLock::new();
    let mut started = STARTED.get_or_init(Default::default).lock().unwrap();
    let vars = started.entry(name.to_string()).or_insert_with(|| {
        let out = std::process::Command::new(repo_root().join("scripts/services"))
            .args(["start", name])
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("running scripts/services");
        assert!(out.status.success(), "scripts/services start {name} failed");
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    });
    vars.get(var)
        .unwrap_or_else(|| panic!("scripts/services start {name} printed no {var}"))
        .clone()
}

pub fn prometheus_url() -> String {
    service_var("prometheus", "PROMETHEUS_URL")
}

pub fn remote_write_url() -> String {
    service_var("prometheus", "PROMETHEUS_REMOTE_WRITE_URL")
}

/// A value unique to this test process, for a `run` label: tests may run again against the
/// same Prometheus, whose series must not mix with this run's.
pub fn run_id() -> String {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| format!("{}-{}", now_ms(), std::process::id()))
        .clone()
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Every raw sample of the series matching `selector` in the last `range`, by series (labels
/// without `__name__` folded in as `name{...}`): `(timestamp ms, value)` in time order.
pub fn query_raw(selector: &str, range: &str) -> HashMap<String, Vec<(i64, f64)>> {
    let url = format!("{}/api/v1/query", prometheus_url());
    let client = reqwest::blocking::Client::new();
    let text = client
        .get(url)
        .query(&[
            ("query", format!("{selector}[{range}]")),
            ("time", format!("{}", now_ms() as f64 / 1000.0 + 60.0)),
        ])
        .send()
        .unwrap()
        .text()
        .unwrap();
    let resp: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(resp["status"], "success", "{resp}");
    let mut out = HashMap::new();
    for series in resp["data"]["result"].as_array().unwrap() {
        let m = series["metric"].as_object().unwrap();
        let mut labels: Vec<(String, String)> = m
            .iter()
            .filter(|(k, _)| *k != "__name__")
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect();
        labels.sort();
        let name = m["__name__"].as_str().unwrap();
        let key = format!(
            "{name}{{{}}}",
            labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{v}\""))
                .collect::<Vec<_>>()
                .join(",")
        );
        let values = series["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                let t = (p[0].as_f64().unwrap() * 1000.0).round() as i64;
                let v: f64 = p[1].as_str().unwrap().parse().unwrap();
                (t, v)
            })
            .collect();
        out.insert(key, values);
    }
    out
}

/// One request the test receiver got.
#[derive(Clone, Debug)]
pub struct Received {
    pub headers: HashMap<String, String>,
    pub body: WriteRequest,
    /// When it arrived (since the receiver started).
    pub at: Duration,
}

/// What the receiver answers: status, extra headers, body.
pub type Reply = (u16, Vec<(String, String)>, String);

type Script = dyn Fn(usize, &WriteRequest) -> Reply + Send + Sync;

/// A remote-write receiver on 127.0.0.1 that answers as `script(request_index, request)` says
/// and keeps every request (decoded) and what it accepted (2xx).
pub struct TestReceiver {
    pub url: String,
    pub requests: Arc<Mutex<Vec<(Received, u16)>>>,
}

impl TestReceiver {
    pub fn start(script: impl Fn(usize, &WriteRequest) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/api/v1/write", listener.local_addr().unwrap());
        let requests: Arc<Mutex<Vec<(Received, u16)>>> = Arc::default();
        let script: Arc<Script> = Arc::new(script);
        let start = Instant::now();
        let reqs = requests.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let (reqs, script) = (reqs.clone(), script.clone());
                std::thread::spawn(move || serve(conn, reqs, script, start));
            }
        });
        TestReceiver { url, requests }
    }

    /// Samples the receiver accepted, as (series text, ts, value), in arrival order.
    pub fn accepted(&self) -> Vec<(String, i64, f64)> {
        let mut out = Vec::new();
        for (r, status) in self.requests.lock().unwrap().iter() {
            if (200..300).contains(status) {
                for ts in &r.body.timeseries {
                    let name = ts.labels.iter().map(|l| format!("{}={}", l.name, l.value));
                    let key = name.collect::<Vec<_>>().join(",");
                    for s in &ts.samples {
                        out.push((key.clone(), s.timestamp, s.value));
                    }
                }
            }
        }
        out
    }

    pub fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

fn serve(
    conn: TcpStream,
    reqs: Arc<Mutex<Vec<(Received, u16)>>>,
    script: Arc<Script>,
    start: Instant,
) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut conn = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut headers = HashMap::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let len: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let req = proto::decode(&body).expect("a valid snappy protobuf WriteRequest");
        let index = reqs.lock().unwrap().len();
        let (status, extra, text) = script(index, &req);
        reqs.lock().unwrap().push((
            Received {
                headers,
                body: req,
                at: start.elapsed(),
            },
            status,
        ));
        let mut resp = format!(
            "HTTP/1.1 {status} X\r\ncontent-length: {}\r\ncontent-type: text/plain\r\n",
            text.len()
        );
        for (k, v) in extra {
            resp.push_str(&format!("{k}: {v}\r\n"));
        }
        resp.push_str("\r\n");
        resp.push_str(&text);
        if conn.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}
