//! Weir's task runtime: one process, many threads.
//!
//! A job is a [`graph::Graph`] of nodes (sources and operators) joined by edges that say how
//! records are partitioned. [`executor::execute`] turns it into tasks:
//!
//! ```text
//!   node A (p=2) --forward--> node B (p=2) --hash--> node C (p=2)
//!
//!   task [A->B] #0 ──bytes──▶ task [C] #0        chained: direct calls, no copy
//!            ╲            ╱                      across tasks: bounded channels of
//!   task [A->B] #1 ──bytes──▶ task [C] #1        byte buffers, one per (sender, receiver)
//! ```
//!
//! - Forward edges between nodes of equal parallelism are *chained*: the downstream operator is
//!   called directly by the upstream one ([`output::Output`]), in the same thread.
//! - Other edges become channels ([`channel`]): records are encoded into buffers bounded in
//!   bytes and records, and each channel holds a bounded number of buffers, so a slow consumer
//!   back-pressures its producers with memory bounded.
//! - Each task runs on its own OS thread ([`task`]); blocking I/O and async calls run elsewhere
//!   (a separate async runtime), so CPU-heavy operators do not starve I/O. Watermarks, status
//!   and end-of-input travel in-band behind at most a channel's few buffers.
//! - Event time: sources generate watermarks per split ([`source`], [`watermark`]); a task's
//!   watermark is the minimum over its active input channels.
#![deny(missing_docs)]

pub mod channel;
pub mod checkpoint;
pub mod context;
pub mod executor;
pub mod graph;
pub mod operator;
pub mod output;
pub mod priority;
pub mod restart;
pub mod source;
pub mod task;
pub mod two_input;
pub mod watermark;

pub use context::{
    BadRecordPolicy, CancelToken, DeadLetter, JobConfig, OperatorContext, PositionKind, TaskShared,
};
pub use executor::{execute, execute_with, JobControl, JobResult};
pub use operator::{OneInputOperator, TwoInputOperator};
pub use output::{Control, Output, VecOutput};
pub use source::{Poll, Source, SourceOutput, SourceReader};
pub use watermark::{WatermarkEmit, WatermarkStrategy};
