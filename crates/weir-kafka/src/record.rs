//! What a Kafka source emits: deserializers from a consumed message to the stream's type.
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::marker::PhantomData;

/// A consumed message, borrowed: everything Kafka says about it.
#[derive(Debug, Clone, Copy)]
pub struct RawRecord<'a> {
    /// Its topic.
    pub topic: &'a str,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its timestamp (create or log-append time, ms since the epoch), if it has one.
    pub timestamp: Option<i64>,
    /// Its key.
    pub key: Option<&'a [u8]>,
    /// Its value (`None` for a tombstone).
    pub value: Option<&'a [u8]>,
    /// Its headers, in order.
    pub headers: &'a [(String, Option<Vec<u8>>)],
}

/// A consumed message, owned: what the [`KafkaRecord`] deserializer emits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KafkaRecord {
    /// Its topic.
    pub topic: String,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its timestamp (ms since the epoch), if it has one.
    pub timestamp: Option<i64>,
    /// Its key.
    pub key: Option<Vec<u8>>,
    /// Its value (`None` for a tombstone).
    pub value: Option<Vec<u8>>,
    /// Its headers, in order.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl KafkaRecord {
    /// The value as UTF-8 text (lossy), empty for a tombstone.
    pub fn value_str(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(self.value.as_deref().unwrap_or_default())
    }
    /// The first header named `name`.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_deref())
    }
}

/// Turns a consumed message into a record of the stream. An error sends the message through
/// the source's bad-record policy (fail, drop or dead-letter) with its raw value.
pub trait Deserializer<T>: Send + Sync + 'static {
    /// Whether the headers are needed (they are copied only then).
    fn wants_headers(&self) -> bool {
        false
    }
    /// Decodes one message.
    fn deserialize(&self, rec: &RawRecord<'_>) -> Result<T, String>;
}

/// Everything about the message, bytes untouched: emits [`KafkaRecord`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Raw;

impl Deserializer<KafkaRecord> for Raw {
    fn wants_headers(&self) -> bool {
        true
    }
    fn deserialize(&self, r: &RawRecord<'_>) -> Result<KafkaRecord, String> {
        Ok(KafkaRecord {
            topic: r.topic.to_string(),
            partition: r.partition,
            offset: r.offset,
            timestamp: r.timestamp,
            key: r.key.map(<[u8]>::to_vec),
            value: r.value.map(<[u8]>::to_vec),
            headers: r.headers.to_vec(),
        })
    }
}

/// The value's bytes; a tombstone is a bad record.
#[derive(Debug, Clone, Copy, Default)]
pub struct Bytes;

impl Deserializer<Vec<u8>> for Bytes {
    fn deserialize(&self, r: &RawRecord<'_>) -> Result<Vec<u8>, String> {
        Ok(r.value.ok_or("a tombstone (no value)")?.to_vec())
    }
}

/// The value as UTF-8 text; invalid UTF-8 (or a tombstone) is a bad record.
#[derive(Debug, Clone, Copy, Default)]
pub struct Utf8;

impl Deserializer<String> for Utf8 {
    fn deserialize(&self, r: &RawRecord<'_>) -> Result<String, String> {
        let v = r.value.ok_or("a tombstone (no value)")?;
        std::str::from_utf8(v)
            .map(str::to_string)
            .map_err(|e| format!("value is not UTF-8: {e}"))
    }
}

/// The value as JSON, decoded with serde into `T`; a value that does not decode is a bad record.
pub struct Json<T>(PhantomData<fn() -> T>);

impl<T> Json<T> {
    /// The JSON deserializer of `T`.
    pub fn new() -> Self {
        Json(PhantomData)
    }
}

impl<T> Default for Json<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: DeserializeOwned + 'static> Deserializer<T> for Json<T> {
    fn deserialize(&self, r: &RawRecord<'_>) -> Result<T, String> {
        let v = r.value.ok_or("a tombstone (no value)")?;
        serde_json::from_slice(v).map_err(|e| format!("invalid JSON: {e}"))
    }
}

/// Any function of the raw message.
impl<T, F> Deserializer<T> for F
where
    F: Fn(&RawRecord<'_>) -> Result<T, String> + Send + Sync + 'static,
{
    fn wants_headers(&self) -> bool {
        true
    }
    fn deserialize(&self, r: &RawRecord<'_>) -> Result<T, String> {
        self(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw<'a>(value: Option<&'a [u8]>, headers: &'a [(String, Option<Vec<u8>>)]) -> RawRecord<'a> {
        RawRecord {
            topic: "t",
            partition: 2,
            offset: 7,
            timestamp: Some(1000),
            key: Some(b"k"),
            value,
            headers,
        }
    }

    #[test]
    fn raw_keeps_everything() {
        let h = vec![("h".to_string(), Some(b"v".to_vec()))];
        let r = Raw.deserialize(&raw(Some(b"x"), &h)).unwrap();
        assert_eq!((r.topic.as_str(), r.partition, r.offset), ("t", 2, 7));
        assert_eq!(r.timestamp, Some(1000));
        assert_eq!(r.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(r.value_str(), "x");
        assert_eq!(r.header("h"), Some(&b"v"[..]));
        assert_eq!(r.header("nope"), None);
    }

    #[test]
    fn bytes_utf8_and_json_reject_what_they_cannot_decode() {
        assert_eq!(Utf8.deserialize(&raw(Some(b"ok"), &[])).unwrap(), "ok");
        assert_eq!(Bytes.deserialize(&raw(Some(b"ok"), &[])).unwrap(), b"ok");
        assert!(Bytes.deserialize(&raw(None, &[])).is_err());
        assert!(Utf8
            .deserialize(&raw(Some(&[0xff, 0xfe]), &[]))
            .unwrap_err()
            .contains("UTF-8"));
        assert!(Utf8
            .deserialize(&raw(None, &[]))
            .unwrap_err()
            .contains("tombstone"));
        let j = Json::<(u32, String)>::new();
        assert_eq!(
            j.deserialize(&raw(Some(br#"[1,"a"]"#), &[])).unwrap(),
            (1, "a".into())
        );
        assert!(j
            .deserialize(&raw(Some(b"{"), &[]))
            .unwrap_err()
            .contains("invalid JSON"));
    }

    #[test]
    fn a_function_is_a_deserializer() {
        let f = |r: &RawRecord<'_>| Ok::<_, String>(r.offset * 2);
        assert_eq!(f.deserialize(&raw(None, &[])).unwrap(), 14);
    }
}
