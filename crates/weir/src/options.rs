//! Job options from flags, environment variables and a config file.
use clap::Args;
use std::path::PathBuf;
use weir_types::WeirError;

/// The standard options of every Weir job binary. Precedence: flag, then environment variable
/// (`WEIR_…`), then the config file (`--config`, TOML with the same names in snake case), then
/// the default.
///
/// Flatten it into your own clap parser to add job-specific flags:
///
/// ```
/// #[derive(clap::Parser)]
/// struct Cli {
///     #[command(flatten)]
///     weir: weir::EnvOptions,
///     #[arg(long, default_value_t = 100)]
///     sensors: u64,
/// }
/// ```
#[derive(Args, Debug, Clone, Default, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EnvOptions {
    /// Default parallelism of operators.
    #[arg(long, short = 'p', env = "WEIR_PARALLELISM")]
    pub parallelism: Option<usize>,
    /// Number of key groups: the upper bound of keyed parallelism, fixed for the life of state.
    #[arg(long, env = "WEIR_MAX_PARALLELISM")]
    pub max_parallelism: Option<usize>,
    /// Where checkpoints go: a local directory, or a URL of a registered storage, e.g.
    /// `s3://bucket/prefix` once `weir_object_store::register()` has run.
    #[arg(long, env = "WEIR_CHECKPOINT_DIR")]
    pub checkpoint_dir: Option<PathBuf>,
    /// Checkpoint interval, e.g. `500ms`, `10s`, `1min`.
    #[arg(long, env = "WEIR_CHECKPOINT_INTERVAL")]
    pub checkpoint_interval: Option<String>,
    /// Restore from this checkpoint or savepoint path, or `latest`.
    #[arg(long, env = "WEIR_RESTORE")]
    pub restore: Option<String>,
    /// `exactly-once` (align barriers, default), `unaligned` (exactly-once; barriers overtake
    /// queued records, which are stored with the checkpoint) or `at-least-once`.
    #[arg(long, env = "WEIR_CHECKPOINT_MODE")]
    pub checkpoint_mode: Option<String>,
    /// Completed checkpoints kept (default 3).
    #[arg(long, env = "WEIR_CHECKPOINTS_RETAINED")]
    pub checkpoints_retained: Option<usize>,
    /// A checkpoint not complete after this is abandoned (default 10min).
    #[arg(long, env = "WEIR_CHECKPOINT_TIMEOUT")]
    pub checkpoint_timeout: Option<String>,
    /// How long after its trigger a checkpoint's asynchronous part (serializing and writing
    /// state) may run at background priority, on CPU time the tasks leave idle, before it
    /// competes with them (default: the checkpoint interval; `0`: never in the background).
    #[arg(long, env = "WEIR_CHECKPOINT_BACKGROUND")]
    pub checkpoint_background: Option<String>,
    /// How checkpoint state files are stored: `snappy` (compressed, default) or `none`.
    /// Restoring reads either.
    #[arg(long, env = "WEIR_CHECKPOINT_COMPRESSION")]
    pub checkpoint_compression: Option<String>,
    /// `none`, `fixed-delay:ATTEMPTS:DELAY`, `exponential:INITIAL:MAX` or
    /// `failure-rate:N:INTERVAL:DELAY` (default with checkpoints: restart forever, 1 s apart).
    #[arg(long, env = "WEIR_RESTART_STRATEGY")]
    pub restart_strategy: Option<String>,
    /// Restore even if the checkpoint holds state of operators the job no longer has.
    #[arg(long, env = "WEIR_ALLOW_NON_RESTORED_STATE")]
    #[serde(default)]
    pub allow_non_restored_state: bool,
    /// Where keyed state lives: `memory` (default), `memory-bytes`, or `disk[:DIR]` (RocksDB,
    /// in binaries that link `weir-rocksdb`; working files under DIR, default a temporary
    /// directory, deleted when the job ends).
    #[arg(long, env = "WEIR_STATE_BACKEND")]
    pub state_backend: Option<String>,
    /// Memory of a disk state backend (its block cache and write buffers, shared by every
    /// operator subtask), e.g. `256MiB`, `1GiB` (default 256MiB).
    #[arg(long, env = "WEIR_STATE_MEMORY")]
    pub state_memory: Option<String>,
    /// Bytes after which an exchange buffer is sent.
    #[arg(long, env = "WEIR_BUFFER_BYTES_MAX")]
    pub buffer_bytes_max: Option<usize>,
    /// Buffers a channel holds before back-pressure.
    #[arg(long, env = "WEIR_CHANNEL_BUFFERS_MAX")]
    pub channel_buffers_max: Option<usize>,
    /// Interval of periodic watermarks, e.g. `200ms`.
    #[arg(long, env = "WEIR_WATERMARK_INTERVAL")]
    pub watermark_interval: Option<String>,
    /// A TOML file with any of these options.
    #[arg(long, env = "WEIR_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
}

impl EnvOptions {
    /// Fills unset options from the config file, if one is named.
    pub fn resolve(mut self) -> Result<Self, WeirError> {
        if let Some(path) = self.config.clone() {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| WeirError::io(format!("reading config file {}", path.display()), e))?;
            let file: EnvOptions = toml::from_str(&text)
                .map_err(|e| WeirError::Config(format!("config file {}: {e}", path.display())))?;
            macro_rules! fill {
                ($($f:ident),*) => { $( if self.$f.is_none() { self.$f = file.$f; } )* };
            }
            fill!(
                parallelism,
                max_parallelism,
                checkpoint_dir,
                checkpoint_interval,
                restore,
                state_backend,
                state_memory,
                buffer_bytes_max,
                channel_buffers_max,
                watermark_interval,
                checkpoint_mode,
                checkpoints_retained,
                checkpoint_timeout,
                checkpoint_background,
                checkpoint_compression,
                restart_strategy
            );
        }
        Ok(self)
    }
}

/// Parses `512KiB`, `64MiB`, `1GiB` (also `KB`/`MB`/`GB` as powers of 1000; a bare number is
/// bytes).
pub fn parse_bytes(s: &str) -> Result<u64, WeirError> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| WeirError::Config(format!("not a size: '{s}'")))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => {
            return Err(WeirError::Config(format!(
                "unknown size unit '{other}' in '{s}' (B, KiB, MiB, GiB, KB, MB, GB)"
            )))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| WeirError::Config(format!("size too large: '{s}'")))
}

/// Parses `500ms`, `10s`, `2min`, `1h` (a bare number is ms).
pub fn parse_duration_ms(s: &str) -> Result<i64, WeirError> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: i64 = num
        .parse()
        .map_err(|_| WeirError::Config(format!("not a duration: '{s}'")))?;
    let mult = match unit.trim() {
        "" | "ms" => 1,
        "s" => 1000,
        "min" | "m" => 60_000,
        "h" => 3_600_000,
        other => {
            return Err(WeirError::Config(format!(
                "unknown duration unit '{other}' in '{s}' (ms, s, min, h)"
            )))
        }
    };
    Ok(n * mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("500ms").unwrap(), 500);
        assert_eq!(parse_duration_ms("10s").unwrap(), 10_000);
        assert_eq!(parse_duration_ms("2min").unwrap(), 120_000);
        assert_eq!(parse_duration_ms("7").unwrap(), 7);
        assert!(parse_duration_ms("5 weeks").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_bytes("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("1000").unwrap(), 1000);
        assert_eq!(parse_bytes("2MB").unwrap(), 2_000_000);
        assert!(parse_bytes("3 parsecs").is_err());
    }

    #[test]
    fn config_file_fills_unset_options_only() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("job.toml");
        std::fs::write(&p, "parallelism = 3\nmax_parallelism = 64\n").unwrap();
        let o = EnvOptions {
            parallelism: Some(2),
            config: Some(p),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(o.parallelism, Some(2), "the flag wins");
        assert_eq!(o.max_parallelism, Some(64), "the file fills the rest");
    }
}
