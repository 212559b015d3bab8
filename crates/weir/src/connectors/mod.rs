//! Built-in sources and sinks that need no external system.
//!
//! Sources: [`Datagen`] (deterministic, seeded, rate-limitable generator), [`Collection`],
//! [`FileSource`] (text, CSV and JSON lines, with per-line positions and bad-record policies).
//! Sinks: [`Stdout`], [`FileSink`], [`CollectSink`] (for tests), [`DiscardSink`].
mod collect;
mod collection;
mod datagen;
mod file;
mod rolling;
mod stdout;

pub use crate::operators::{Sink, SinkSnapshot, SinkWriter};
pub use collect::{CollectSink, DiscardSink};
pub use collection::Collection;
pub use datagen::{BenchEvent, Datagen, SensorReading, SplitMix64};
pub use file::{FileFormat, FileSink, FileSource};
pub use rolling::RollingFileSink;
pub use stdout::Stdout;
