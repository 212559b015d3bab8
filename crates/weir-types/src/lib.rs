//! Weir's shared vocabulary, used by every other crate.
//!
//! - [`Record`]: a value with its event timestamp, the unit that flows through a job;
//! - [`Watermark`] and [`WatermarkStatus`]: event-time progress and idleness;
//! - [`Data`] and [`Key`]: what a record or a key must be able to do (cross threads, be
//!   serialized, be hashed stably), because channels will cross the network and state will be
//!   checkpointed;
//! - [`keygroup`]: key → key group → subtask, the unit of state redistribution;
//! - [`codec`]: the byte format of records inside exchange buffers;
//! - [`WeirError`] and [`Position`]: errors that name the operator, the subtask and the record;
//! - [`metrics`]: named counters and gauges per operator subtask.
#![deny(missing_docs)]

pub mod clock;
pub mod codec;
mod data;
mod error;
mod keybytes;
pub mod keygroup;
pub mod metrics;
mod record;

pub use clock::{Clock, ManualClock, SystemClock};
pub use data::{Data, Key};
pub use error::{BoxError, ErrorKind, Position, Result, WeirError};
pub use keybytes::encode_into;
pub use record::{drain_each, Record, Watermark, WatermarkStatus, NO_TIMESTAMP};
