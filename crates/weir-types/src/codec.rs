//! The byte format of exchange buffers.
//!
//! Records leave a task as bytes: each is the event timestamp (8 bytes, little endian) followed
//! by the postcard encoding of the value. A buffer holds whole records only and is bounded in
//! bytes and in records, so a channel of N buffers is bounded in both.
use crate::{Data, Record, WeirError};

/// A batch of encoded records.
#[derive(Debug, Default, Clone)]
pub struct Buffer {
    /// Concatenated encoded records.
    pub bytes: Vec<u8>,
    /// How many records `bytes` holds.
    pub records: u32,
}

impl Buffer {
    /// An empty buffer with room for `bytes` bytes.
    pub fn with_capacity(bytes: usize) -> Self {
        Buffer {
            bytes: Vec::with_capacity(bytes),
            records: 0,
        }
    }
    /// Whether it holds no record.
    pub fn is_empty(&self) -> bool {
        self.records == 0
    }
    /// Appends one record.
    #[inline]
    pub fn push<T: Data>(&mut self, rec: &Record<T>) {
        self.bytes.extend_from_slice(&rec.ts.to_le_bytes());
        postcard::serialize_with_flavor(&rec.value, AppendVec(&mut self.bytes))
            .expect("records of a Data type serialize");
        self.records += 1;
    }
    /// Decodes every record, in order.
    pub fn decode<T: Data>(&self) -> impl Iterator<Item = Result<Record<T>, WeirError>> + '_ {
        let mut rest: &[u8] = &self.bytes;
        let mut left = self.records;
        std::iter::from_fn(move || {
            if left == 0 {
                return None;
            }
            left -= 1;
            if rest.len() < 8 {
                return Some(Err(WeirError::Internal("truncated exchange buffer".into())));
            }
            let ts = i64::from_le_bytes(rest[..8].try_into().unwrap());
            match postcard::take_from_bytes::<T>(&rest[8..]) {
                Ok((value, tail)) => {
                    rest = tail;
                    Some(Ok(Record { ts, value }))
                }
                Err(e) => {
                    left = 0;
                    Some(Err(WeirError::Internal(format!(
                        "undecodable exchange buffer: {e}"
                    ))))
                }
            }
        })
    }
}

/// A batch of records on a channel: the records themselves between tasks of one process (no
/// encoding, no decoding), or their bytes (what crosses a process boundary, and what a
/// checkpoint stores).
pub enum Batch {
    /// Encoded records.
    Encoded(Buffer),
    /// A `Vec<Record<T>>` of the channel's type.
    Typed {
        /// The records, boxed as `Vec<Record<T>>`.
        records: Box<dyn std::any::Any + Send>,
        /// How many.
        len: u32,
        /// Their size as [`record_bytes`] counts it.
        bytes: usize,
    },
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Batch::Encoded(b) => {
                write!(f, "Encoded({} records, {} bytes)", b.records, b.bytes.len())
            }
            Batch::Typed { len, bytes, .. } => write!(f, "Typed({len} records, {bytes} bytes)"),
        }
    }
}

impl Batch {
    /// The records of `v` as a typed batch.
    pub fn typed<T: Data>(v: Vec<Record<T>>, bytes: usize) -> Self {
        Batch::Typed {
            len: v.len() as u32,
            records: Box::new(v),
            bytes,
        }
    }
    /// Its size in bytes: encoded, or as [`record_bytes`] counts records in memory.
    pub fn bytes(&self) -> usize {
        match self {
            Batch::Encoded(b) => b.bytes.len(),
            Batch::Typed { bytes, .. } => *bytes,
        }
    }
    /// How many records it holds.
    pub fn records(&self) -> u32 {
        match self {
            Batch::Encoded(b) => b.records,
            Batch::Typed { len, .. } => *len,
        }
    }
    /// Appends its records to `out` (decoding them if encoded).
    pub fn into_records<T: Data>(self, out: &mut Vec<Record<T>>) -> Result<(), WeirError> {
        match self {
            Batch::Encoded(b) => {
                out.reserve(b.records as usize);
                for r in b.decode::<T>() {
                    out.push(r?);
                }
                Ok(())
            }
            Batch::Typed { records, .. } => {
                let mut v = records.downcast::<Vec<Record<T>>>().map_err(|_| {
                    WeirError::Internal(format!(
                        "a channel of {} received another type",
                        std::any::type_name::<T>()
                    ))
                })?;
                if out.is_empty() {
                    std::mem::swap(out, &mut *v);
                } else {
                    out.append(&mut v);
                }
                Ok(())
            }
        }
    }
    /// A copy of its encoded form (records of type `T`), leaving it as it is.
    pub fn encoded_copy<T: Data>(&self) -> Result<Buffer, WeirError> {
        match self {
            Batch::Encoded(b) => Ok(b.clone()),
            Batch::Typed { records, .. } => {
                let v = records.downcast_ref::<Vec<Record<T>>>().ok_or_else(|| {
                    WeirError::Internal(format!(
                        "a channel of {} holds another type",
                        std::any::type_name::<T>()
                    ))
                })?;
                let mut b = Buffer::default();
                for r in v {
                    b.push(r);
                }
                Ok(b)
            }
        }
    }
    /// Its encoded form (records of type `T`).
    pub fn encode<T: Data>(self) -> Result<Buffer, WeirError> {
        match self {
            Batch::Encoded(b) => Ok(b),
            typed => {
                let mut v: Vec<Record<T>> = Vec::new();
                typed.into_records(&mut v)?;
                let mut b = Buffer::default();
                for r in &v {
                    b.push(r);
                }
                Ok(b)
            }
        }
    }
}

/// The bytes a record takes in a typed batch, for the channels' byte bounds: its size in
/// memory, plus, for values that own heap memory (strings, vectors, maps), their encoded size
/// as an estimate of that memory.
#[inline]
pub fn record_bytes<T: Data>(rec: &Record<T>) -> usize {
    let inline = std::mem::size_of::<Record<T>>();
    if std::mem::needs_drop::<T>() {
        inline
            + postcard::serialize_with_flavor::<T, postcard::ser_flavors::Size, usize>(
                &rec.value,
                Default::default(),
            )
            .unwrap_or(0)
    } else {
        inline
    }
}

/// Postcard output appended to a `Vec` a slice at a time. (`postcard::to_extend` goes through
/// `Extend<u8>` one byte at a time: about twice the instructions for the same bytes.)
struct AppendVec<'a>(&'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for AppendVec<'_> {
    type Output = ();
    #[inline(always)]
    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }
    #[inline(always)]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        // Varints and small fields: byte pushes beat a call to memcpy.
        if data.len() <= 16 {
            for &b in data {
                self.0.push(b);
            }
        } else {
            self.0.extend_from_slice(data);
        }
        Ok(())
    }
    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut b = Buffer::default();
        let recs = vec![
            Record::new(5, ("a".to_string(), 1u64)),
            Record::untimed(("bc".to_string(), 2)),
        ];
        for r in &recs {
            b.push(r);
        }
        let back: Vec<Record<(String, u64)>> = b.decode().collect::<Result<_, _>>().unwrap();
        assert_eq!(back, recs);
    }

    #[test]
    fn bytes_are_the_timestamp_then_postcard() {
        let mut b = Buffer::default();
        let v = ("abc".to_string(), 300u64, -5i64, 1.5f64);
        b.push(&Record::new(-2, v.clone()));
        let mut want = (-2i64).to_le_bytes().to_vec();
        want.extend(postcard::to_allocvec(&v).unwrap());
        assert_eq!(b.bytes, want);
    }
}
