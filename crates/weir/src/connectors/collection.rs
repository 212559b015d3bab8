use std::sync::Arc;
use weir_runtime::{Poll, PositionKind, Source, SourceOutput, SourceReader};
use weir_types::{Data, Result, NO_TIMESTAMP};

/// A bounded source over a vector, read in order by one subtask.
pub struct Collection<T> {
    items: Arc<Vec<T>>,
}

impl<T> Collection<T> {
    /// A source emitting `items` in order.
    pub fn new(items: Vec<T>) -> Self {
        Collection {
            items: Arc::new(items),
        }
    }
}

struct Reader<T> {
    items: Arc<Vec<T>>,
    next: usize,
    split: Option<usize>,
}

impl<T: Data + Sync> Source<T> for Collection<T> {
    fn create_reader(
        &self,
        _subtask: usize,
        _parallelism: usize,
    ) -> Result<Box<dyn SourceReader<T>>> {
        Ok(Box::new(Reader {
            items: self.items.clone(),
            next: 0,
            split: None,
        }))
    }
    fn max_parallelism(&self) -> Option<usize> {
        Some(1)
    }
}

impl<T: Data> SourceReader<T> for Reader<T> {
    fn poll(&mut self, out: &mut SourceOutput<T>) -> Result<Poll> {
        let split = *self
            .split
            .get_or_insert_with(|| out.add_split("collection", PositionKind::Offset));
        let end = (self.next + 1024).min(self.items.len());
        while self.next < end {
            out.set_position(split, self.next as u64);
            out.collect(split, self.items[self.next].clone(), NO_TIMESTAMP)?;
            self.next += 1;
        }
        if self.next == self.items.len() {
            out.finish_split(split)?;
            Ok(Poll::Finished)
        } else {
            Ok(Poll::Ready)
        }
    }

    fn snapshot(&mut self) -> Result<Vec<Vec<u8>>> {
        Ok(vec![
            postcard::to_allocvec(&(self.next as u64)).expect("encodes")
        ])
    }

    fn restore(&mut self, entries: &[Vec<u8>]) -> Result<()> {
        if let Some(e) = entries.first() {
            let next: u64 = postcard::from_bytes(e)
                .map_err(|x| weir_types::WeirError::Config(format!("collection position: {x}")))?;
            self.next = (next as usize).min(self.items.len());
        }
        Ok(())
    }
}
