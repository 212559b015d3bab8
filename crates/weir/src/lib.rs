//! # Weir
//!
//! A stateful stream processor: typed streams of records, transformed by operators that run in
//! parallel, keep keyed state, react to event time and timers, and end in sinks.
//!
//! ```no_run
//! use weir::prelude::*;
//!
//! fn main() -> weir::Result<()> {
//!     let env = StreamEnv::from_args()?;
//!     env.source(Datagen::sensors(1_000, 10_000))
//!         .assign_timestamps(WatermarkStrategy::bounded_out_of_orderness(secs(5)).with_timestamps(|r: &SensorReading, _| r.ts_ms))
//!         .map(|r| SensorReading { temperature: (r.temperature - 32.0) * 5.0 / 9.0, ..r })
//!         .sink(Stdout::new());
//!     env.execute("sensors")?;
//!     Ok(())
//! }
//! ```
//!
//! - [`StreamEnv`]: the job's settings and entry point; [`EnvOptions`] are its flags.
//! - [`DataStream`]: `map`, `filter`, `filter_map`, `flat_map`, `try_map`, `process`, `union`,
//!   `connect`, `key_by`, partitioning, side outputs, `assign_timestamps`, `sink`.
//! - [`KeyedStream`]: `process` with keyed state and timers, `reduce`, keyed `connect`.
//! - [`functions`]: the traits user code implements, and their contexts.
//! - [`connectors`]: built-in sources and sinks that need no external system.
#![deny(missing_docs)]

pub mod connectors;
mod env;
pub mod functions;
pub mod io_runtime;
pub mod joins;
pub mod operators;
mod options;
mod stream;
mod stream_async;
pub mod windows;

pub use env::{init_logging, JobHandle, StreamEnv};
pub use options::{parse_duration_ms, EnvOptions};
pub use stream::{BroadcastStream, ConnectedStreams, DataStream, KeyedStream, OutputTag};
pub use stream_async::{AsyncMode, AsyncOptions};
pub use weir_runtime::OperatorContext;
pub use weir_runtime::{
    BadRecordPolicy, DeadLetter, JobResult, Poll, PositionKind, Source, SourceOutput, SourceReader,
    WatermarkStrategy,
};
pub use weir_state::{
    AggregateFunction, AggregatingState, ListState, MapState, ReducingState, StateAccess, StateTtl,
    ValueState,
};
pub use weir_types::metrics;
pub use weir_types::metrics::MetricsSnapshot;
pub use weir_types::{
    BoxError, Clock, Data, Key, ManualClock, Position, Record, SystemClock, WeirError,
};

/// Result with [`WeirError`].
pub type Result<T, E = WeirError> = std::result::Result<T, E>;

/// A `Duration` of `s` seconds.
pub fn secs(s: u64) -> std::time::Duration {
    std::time::Duration::from_secs(s)
}

/// A `Duration` of `ms` milliseconds.
pub fn millis(ms: u64) -> std::time::Duration {
    std::time::Duration::from_millis(ms)
}

/// Everything a job usually needs.
pub mod prelude {
    pub use crate::connectors::*;
    pub use crate::functions::*;
    pub use crate::{
        millis, secs, BadRecordPolicy, DataStream, DeadLetter, EnvOptions, KeyedStream, ListState,
        MapState, OutputTag, ReducingState, StateAccess, StateTtl, StreamEnv, ValueState,
        WatermarkStrategy,
    };
    pub use crate::{AsyncMode, AsyncOptions};
}
