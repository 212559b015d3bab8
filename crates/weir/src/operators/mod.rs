//! The operators behind the stream API. Each implements the runtime's operator traits.
pub(crate) mod async_io;
pub(crate) mod basic;
pub(crate) mod co;
pub(crate) mod keyed;
pub(crate) mod sink;
pub(crate) mod timestamps;

pub use sink::{Sink, SinkSnapshot, SinkWriter};
