//! # Nexmark on Weir
//!
//! The Nexmark benchmark — an online auction where people register, open auctions and bid —
//! as Beam and the nexmark/nexmark Flink suite define it:
//!
//! - [`model`]: [`Person`], [`Auction`], [`Bid`] and [`Event`] (serde, in the suite's row layout).
//! - [`generator`]: [`NexmarkConfig`] (seed, count, rate, ratios) with `event(n)` a pure function
//!   of the event number, and [`NexmarkSource`], a Weir source with splits, checkpointed
//!   positions and per-split watermarks.
//! - [`files`]: the events as JSON lines or CSV files that Weir and Flink SQL both read
//!   (`nexmark-gen` writes them).
//! - [`queries`]: q0–q9 and q11–q14 on the DataStream API, each a function from the event stream
//!   to a stream of result rows (`nexmark` runs one).
//!
//! ```
//! use weir::prelude::*;
//! use weir_nexmark::{queries, NexmarkConfig, NexmarkSource};
//!
//! let env = StreamEnv::new().with_parallelism(2);
//! let events = NexmarkSource::new(NexmarkConfig::new(5_000).rate(1_000)).stream(&env);
//! let out = CollectSink::new();
//! queries::q5(&events).sink(out.clone());
//! env.execute("nexmark q5").unwrap();
//! assert!(!out.is_empty());
//! ```
#![deny(missing_docs)]

pub mod files;
pub mod generator;
pub mod latency;
pub mod model;
pub mod queries;

pub use generator::{NexmarkConfig, NexmarkSource};
pub use model::{Auction, Bid, Event, EventRow, Person};
