//! `weir-bench WORKLOAD --events N --keys K --parallelism P [--limit] [--check]`
//!
//! Runs one benchmark and prints, as its last line, `WORKLOAD P N K seconds events_per_s` (the
//! Flink harness's format). Details and checksums go to stderr, on lines starting with `# `.
use clap::Parser;
use std::process::ExitCode;
use weir::{EnvOptions, StreamEnv};
use weir_bench::checksum::golden;
use weir_bench::{run_limit, run_weir, Output, Run, Workload};

#[derive(Parser)]
#[command(about = "Weir throughput benchmarks (the Flink harness's workloads and rows)")]
struct Cli {
    /// The workload.
    #[arg(value_enum)]
    workload: Workload,
    /// Number of input events (ids 0..N).
    #[arg(long, short = 'n', default_value_t = 10_000_000)]
    events: u64,
    /// Number of distinct keys K.
    #[arg(long, short = 'k', default_value_t = 1_000_000)]
    keys: u64,
    /// Run the hand-written single-threaded loop (the physical limit) instead of Weir.
    #[arg(long, conflicts_with = "check")]
    limit: bool,
    /// Compute full checksums of Weir's output and of the loop's, and compare them (and with
    /// the Flink harness's golden checksums at N=3,000,000, K=1,000,000, P=1).
    #[arg(long)]
    check: bool,
    /// Weir's options (`--parallelism`, buffer sizes, ...). Parallelism defaults to 1.
    #[command(flatten)]
    weir: EnvOptions,
}

fn line(wl: Workload, p: usize, n: u64, k: u64, r: &Run) -> String {
    format!(
        "{} {} {} {} {:.3} {:.0}",
        wl.name(),
        p,
        n,
        k,
        r.elapsed.as_secs_f64(),
        r.events_per_s(n)
    )
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (wl, n, k) = (cli.workload, cli.events, cli.keys);
    if k == 0 {
        eprintln!("--keys must be at least 1");
        return ExitCode::from(2);
    }
    if cli.limit {
        let r = run_limit(wl, n, k, Output::Discard);
        eprintln!(
            "# {{\"engine\": \"limit\", \"workload\": \"{}\", \"n\": {n}, \"k\": {k}, \"emitted\": {}, \"peak_rss_mib\": {}}}",
            wl.name(),
            r.emitted,
            r.rss_kib.1 / 1024
        );
        println!("{}", line(wl, 1, n, k, &r));
        return ExitCode::SUCCESS;
    }
    let mut opts = cli.weir;
    let p = *opts.parallelism.get_or_insert(1);
    let env = match StreamEnv::from_options(opts) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let output = if cli.check {
        Output::Checksum
    } else {
        Output::Discard
    };
    let r = match run_weir(&env, wl, n, k, output) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let per_entry = r
        .bytes_per_state_entry()
        .map_or("null".to_string(), |b| format!("{b:.0}"));
    eprintln!(
        "# {{\"engine\": \"weir\", \"workload\": \"{}\", \"parallelism\": {p}, \"n\": {n}, \"k\": {k}, \"emitted\": {}, \"peak_rss_mib\": {}, \"rss_growth_mib\": {}, \"state_entries_peak\": {}, \"bytes_per_state_entry\": {per_entry}}}",
        wl.name(),
        r.emitted,
        r.rss_kib.1 / 1024,
        r.rss_kib.1.saturating_sub(r.rss_kib.0) / 1024,
        r.state_entries_peak,
    );
    let mut ok = true;
    if let Some(c) = r.checksum {
        let l = run_limit(wl, n, k, Output::Checksum)
            .checksum
            .expect("checksum run");
        let same = c.comparable(wl, p) == l.comparable(wl, p);
        ok &= same;
        eprintln!("# weir  {c}");
        eprintln!(
            "# limit {l}  {}",
            if same {
                "OK"
            } else {
                "DIFF (weir vs limit loop)"
            }
        );
        if p > 1 && wl == Workload::Dedup {
            eprintln!("# (dedup at p > 1: which row of a key comes first depends on timing; only count and Σk compared)");
        }
        if let (Some(g), 1) = (golden(wl, n, k), p) {
            let same = c.v == g;
            ok &= same;
            eprintln!(
                "# flink golden checksum={g:?}  {}",
                if same { "OK" } else { "DIFF (weir vs golden)" }
            );
        }
    }
    println!("{}", line(wl, p, n, k, &r));
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
