use crate::operators::{Sink, SinkWriter};
use std::sync::{Arc, Mutex};
use weir_types::metrics::Counter;
use weir_types::{Record, Result};

/// Collects every record in memory, for tests. Clone it before handing it to `sink` and read
/// it after the job ends.
pub struct CollectSink<T> {
    records: Arc<Mutex<Vec<Record<T>>>>,
}

impl<T> Clone for CollectSink<T> {
    fn clone(&self) -> Self {
        CollectSink {
            records: self.records.clone(),
        }
    }
}

impl<T> Default for CollectSink<T> {
    fn default() -> Self {
        CollectSink {
            records: Arc::new(Mutex::new(Vec::new())),
        }
    }
}

impl<T: Clone> CollectSink<T> {
    /// An empty collector.
    pub fn new() -> Self {
        Self::default()
    }
    /// The values received, in arrival order (across subtasks, interleaved).
    pub fn values(&self) -> Vec<T> {
        self.records
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.value.clone())
            .collect()
    }
    /// The records received, with timestamps.
    pub fn records(&self) -> Vec<Record<T>> {
        self.records.lock().unwrap().clone()
    }
    /// How many records arrived.
    pub fn len(&self) -> usize {
        self.records.lock().unwrap().len()
    }
    /// Whether none arrived.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

struct CollectWriter<T> {
    records: Arc<Mutex<Vec<Record<T>>>>,
    local: Vec<Record<T>>,
}

impl<T: Send + Clone + 'static> Sink<T> for CollectSink<T> {
    fn name(&self) -> String {
        "collect".into()
    }
    fn create_writer(&self, _: usize, _: usize) -> Result<Box<dyn SinkWriter<T>>> {
        Ok(Box::new(CollectWriter {
            records: self.records.clone(),
            local: Vec::new(),
        }))
    }
}

impl<T> SinkWriter<T> for CollectWriter<T> {
    fn write(&mut self, rec: Record<T>) -> Result<()> {
        self.local.push(rec);
        if self.local.len() >= 1024 {
            self.flush()?;
        }
        Ok(())
    }
    fn flush(&mut self) -> Result<()> {
        self.records.lock().unwrap().append(&mut self.local);
        Ok(())
    }
}

/// Drops every record, counting them: the end of benchmark pipelines.
#[derive(Clone, Default)]
pub struct DiscardSink {
    count: Counter,
}

impl DiscardSink {
    /// A new discarding sink.
    pub fn new() -> Self {
        Self::default()
    }
    /// Records received so far.
    pub fn count(&self) -> u64 {
        self.count.get()
    }
}

struct DiscardWriter {
    count: Counter,
    local: u64,
}

impl<T: 'static> Sink<T> for DiscardSink {
    fn name(&self) -> String {
        "discard".into()
    }
    fn create_writer(&self, _: usize, _: usize) -> Result<Box<dyn SinkWriter<T>>> {
        Ok(Box::new(DiscardWriter {
            count: self.count.clone(),
            local: 0,
        }))
    }
}

impl<T> SinkWriter<T> for DiscardWriter {
    #[inline]
    fn write(&mut self, rec: Record<T>) -> Result<()> {
        std::hint::black_box(&rec);
        self.local += 1;
        Ok(())
    }
    #[inline]
    fn write_batch(&mut self, batch: &mut Vec<Record<T>>) -> Result<()> {
        std::hint::black_box(batch.as_slice());
        self.local += batch.len() as u64;
        batch.clear();
        Ok(())
    }
    fn flush(&mut self) -> Result<()> {
        self.count.add(std::mem::take(&mut self.local));
        Ok(())
    }
}
