//! A job whose state is more than 10× the disk backend's memory budget completes, and the
//! resident memory of its process stays within the budget plus 128 MiB (the same job on the
//! memory backend peaks above 800 MiB). The job runs in a child
//! process (this test binary, re-run with `WEIR_RSS_CHILD` set), whose RSS the parent samples
//! from `/proc/<pid>/status`; the child also reports its own high-water mark (`VmHWM`).
use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir::prelude::*;
use weir_rocksdb::DiskBackendConfig;

/// The smallest budget the backend takes.
const BUDGET: u64 = 8 << 20;
const OVERHEAD_MAX: u64 = 128 << 20;
const VALUE_BYTES: usize = 1000;
/// 100 MB of values: 12× the budget.
const KEYS: u64 = 100_000;
const TEST: &str = "state_ten_times_the_budget_stays_within_budget_plus_128_mib";

#[derive(Clone, Default)]
struct Keep {
    v: ValueState<Vec<u8>>,
}

impl KeyedProcessFunction<u64, (u64, Vec<u8>), u64> for Keep {
    fn open(&mut self, s: &mut StateRegistry<'_, u64>) -> FnResult {
        self.v = s.value_state("v")?;
        Ok(())
    }
    fn process_element(
        &mut self,
        e: (u64, Vec<u8>),
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut Collector<'_, u64>,
    ) -> FnResult {
        self.v.set(ctx, e.1);
        if e.0.is_multiple_of(10_000) {
            out.collect(e.0);
        }
        Ok(())
    }
}

fn status_kib(pid: &str, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn child(dir: &str) {
    let dir = std::path::Path::new(dir);
    let backend = DiskBackendConfig {
        dir: Some(dir.join("work")),
        memory_budget_bytes: BUDGET,
        ..Default::default()
    }
    .build();
    let env = StreamEnv::new()
        .with_parallelism(2)
        .with_state_backend(Arc::new(backend))
        .with_checkpointing(dir.join("chk"), Duration::from_secs(2))
        .unwrap();
    let gen = Datagen::new(KEYS, |id, rng| {
        let mut v = Vec::with_capacity(VALUE_BYTES);
        while v.len() < VALUE_BYTES {
            v.extend_from_slice(&rng.next_u64().to_le_bytes());
        }
        (id, v)
    })
    .splits(2);
    let out = CollectSink::new();
    env.source(gen)
        .key_by(|e: &(u64, Vec<u8>)| e.0)
        .process(Keep::default())
        .sink(out.clone());
    let r = env.execute("big state").unwrap();
    assert_eq!(out.values().len() as u64, KEYS / 10_000);
    let storage = weir_runtime::checkpoint::storage::LocalStorage::new(dir.join("chk")).unwrap();
    let m = weir_runtime::checkpoint::format::load_latest(&storage)
        .unwrap()
        .unwrap()
        .manifest;
    println!(
        "state_bytes={} checkpoints={} vm_hwm_kib={}",
        m.total_bytes(),
        r.checkpoints_completed,
        status_kib("self", "VmHWM:").unwrap_or(0)
    );
}

#[test]
fn state_ten_times_the_budget_stays_within_budget_plus_128_mib() {
    if let Ok(dir) = std::env::var("WEIR_RSS_CHILD") {
        child(&dir);
        return;
    }
    if !std::path::Path::new("/proc/self/status").exists() {
        eprintln!("no /proc: skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut c = Command::new(std::env::current_exe().unwrap())
        .args([TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env("WEIR_RSS_CHILD", dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = c.id().to_string();
    let mut rss_max_kib = 0;
    let status = loop {
        if let Some(s) = c.try_wait().unwrap() {
            break s;
        }
        if let Some(r) = status_kib(&pid, "VmRSS:") {
            rss_max_kib = rss_max_kib.max(r);
        }
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "the child takes too long"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = String::new();
    c.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    assert!(status.success(), "child failed: {out}");
    let field = |name: &str| -> u64 {
        out.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {out}"))
    };
    let state = field("state_bytes=");
    let hwm_kib = field("vm_hwm_kib=");
    let peak = (rss_max_kib.max(hwm_kib)) << 10;
    eprintln!(
        "state {} MiB, budget {} MiB, peak RSS {} MiB (sampled {} MiB, VmHWM {} MiB), {:?}",
        state >> 20,
        BUDGET >> 20,
        peak >> 20,
        rss_max_kib >> 10,
        hwm_kib >> 10,
        started.elapsed()
    );
    assert!(state >= 10 * BUDGET, "state {state} is not 10× the budget");
    assert!(
        peak <= BUDGET + OVERHEAD_MAX,
        "peak RSS {} MiB over the budget {} MiB + 128 MiB",
        peak >> 20,
        BUDGET >> 20
    );
}
