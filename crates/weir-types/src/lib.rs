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

/// Asks the CPU to bring the cache line at `p` in, without waiting for it and without reading
/// it: code that knows which entries it will use next issues these for several of them, so
/// that their memory latencies overlap. A no-op on targets without a prefetch instruction.
#[inline(always)]
pub fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults and reads nothing the program sees, whatever `p` is.
    unsafe {
        std::arch::x86_64::_mm_prefetch(p as *const i8, std::arch::x86_64::_MM_HINT_T0);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
