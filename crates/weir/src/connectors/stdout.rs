use crate::operators::{Sink, SinkWriter};
use std::io::Write;
use std::sync::Arc;
use weir_types::{Record, Result, WeirError};

/// Prints each record on a line of standard output; with parallelism > 1 each line starts with
/// the subtask (`2> ...`), as in Flink.
pub struct Stdout<T> {
    fmt: Arc<dyn Fn(&T) -> String + Send + Sync>,
}

impl<T: std::fmt::Debug> Stdout<T> {
    /// Prints with `Debug`.
    pub fn new() -> Self {
        Stdout {
            fmt: Arc::new(|t| format!("{t:?}")),
        }
    }
}

impl<T: std::fmt::Debug> Default for Stdout<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Stdout<T> {
    /// Prints with a formatter of your own.
    pub fn with(f: impl Fn(&T) -> String + Send + Sync + 'static) -> Self {
        Stdout { fmt: Arc::new(f) }
    }
}

struct StdoutWriter<T> {
    fmt: Arc<dyn Fn(&T) -> String + Send + Sync>,
    prefix: String,
    buf: Vec<u8>,
}

impl<T: 'static> Sink<T> for Stdout<T> {
    fn name(&self) -> String {
        "stdout".into()
    }
    fn create_writer(&self, subtask: usize, parallelism: usize) -> Result<Box<dyn SinkWriter<T>>> {
        let prefix = if parallelism > 1 {
            format!("{}> ", subtask + 1)
        } else {
            String::new()
        };
        Ok(Box::new(StdoutWriter {
            fmt: self.fmt.clone(),
            prefix,
            buf: Vec::new(),
        }))
    }
}

impl<T> SinkWriter<T> for StdoutWriter<T> {
    fn write(&mut self, rec: Record<T>) -> Result<()> {
        self.buf.extend_from_slice(self.prefix.as_bytes());
        self.buf
            .extend_from_slice((self.fmt)(&rec.value).as_bytes());
        self.buf.push(b'\n');
        if self.buf.len() >= 64 * 1024 {
            self.flush()?;
        }
        Ok(())
    }
    fn flush(&mut self) -> Result<()> {
        if !self.buf.is_empty() {
            let mut out = std::io::stdout().lock();
            match out.write_all(&self.buf).and_then(|_| out.flush()) {
                Ok(()) => {}
                // A closed pipe (`| head`) ends output quietly.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                Err(e) => return Err(WeirError::io("writing to stdout", e)),
            }
            self.buf.clear();
        }
        Ok(())
    }
}
