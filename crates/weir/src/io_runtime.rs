//! The Tokio runtime that runs Weir's asynchronous I/O.
//!
//! Operators run on one OS thread per task and never poll futures themselves: asynchronous work
//! (the futures of [`DataStream::async_map`](crate::DataStream::async_map), and connectors that
//! talk to external systems) runs on this separate multi-threaded runtime, so a CPU-heavy
//! operator never starves I/O and a slow request never blocks a task thread. Results come back
//! to the task through a channel and a [`TaskWaker`](weir_runtime::task::TaskWaker).
//!
//! The runtime is created on first use, has [`IO_WORKER_THREADS`] worker threads named
//! `weir-io`, and lives until the process exits.
use std::sync::OnceLock;
use tokio::runtime::{Builder, Handle, Runtime};

/// Worker threads of the I/O runtime.
pub const IO_WORKER_THREADS: usize = 2;

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

/// The shared I/O runtime, started on first call.
///
/// # Panics
///
/// If the operating system refuses to start its threads.
pub fn io_runtime() -> &'static Runtime {
    RUNTIME.get_or_init(|| {
        Builder::new_multi_thread()
            .worker_threads(IO_WORKER_THREADS)
            .thread_name("weir-io")
            .enable_all()
            .build()
            .expect("weir: cannot start the weir-io Tokio runtime")
    })
}

/// A handle to the shared I/O runtime (for `spawn`), started on first call.
pub fn io_handle() -> Handle {
    io_runtime().handle().clone()
}
