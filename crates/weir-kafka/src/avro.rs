//! Avro values with a schema the user gives, on `apache-avro`'s serde support.
//!
//! [`Avro<T>`] is both a [`Deserializer`] for [`KafkaSource`](crate::KafkaSource) and the
//! encoder behind [`KafkaSink::avro`](crate::KafkaSink::avro). A value is plain Avro binary (no
//! container-file header: one datum per message), or Confluent's wire format with a fixed schema
//! id ([`Avro::confluent`]): byte 0, the id as 4 bytes big-endian, then the datum — what
//! Confluent's serializers write and read, with no registry client (the id is the user's).
//!
//! Encoding goes through `apache_avro::to_value` and is resolved against the schema (so an
//! `Option` becomes a union branch, an `i32` field may be an Avro `long`, a unit variant an
//! enum symbol); decoding reads the datum with the schema and `apache_avro::from_value` turns it
//! into `T`. A message that does not decode — wrong framing, truncated, trailing bytes, or a
//! datum that does not fit `T` — is a bad record of the source, with its raw bytes.
use crate::record::{Deserializer, RawRecord};
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::writer::datum::GenericDatumWriter;
use apache_avro::Schema;
use serde::{de::DeserializeOwned, Serialize};
use std::marker::PhantomData;
use weir::{Result, WeirError};

/// Confluent's magic byte, first in every message of its wire format.
pub const CONFLUENT_MAGIC: u8 = 0;

/// Avro with a schema: decodes (and encodes) `T` through serde.
pub struct Avro<T> {
    schema: Schema,
    /// Confluent's wire format with this schema id, or plain Avro binary.
    schema_id: Option<u32>,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for Avro<T> {
    fn clone(&self) -> Self {
        Avro {
            schema: self.schema.clone(),
            schema_id: self.schema_id,
            _t: PhantomData,
        }
    }
}

impl<T> Avro<T> {
    /// Plain Avro binary with the schema `schema_json` (Avro's JSON schema notation). An invalid
    /// schema is a configuration error.
    pub fn new(schema_json: &str) -> Result<Self> {
        let schema = Schema::parse_str(schema_json)
            .map_err(|e| WeirError::Config(format!("avro schema: {e}")))?;
        Ok(Avro {
            schema,
            schema_id: None,
            _t: PhantomData,
        })
    }
    /// Confluent's wire format (byte 0, `schema_id` big-endian, the datum) with the schema
    /// `schema_json` registered under `schema_id`. Reading, a message with another id is a bad
    /// record: without a registry its writer's schema is unknown.
    pub fn confluent(schema_json: &str, schema_id: u32) -> Result<Self> {
        let mut a = Self::new(schema_json)?;
        a.schema_id = Some(schema_id);
        Ok(a)
    }
    /// The schema.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }
    /// The datum of a message: after Confluent's header if this format has one.
    fn datum<'a>(&self, bytes: &'a [u8]) -> std::result::Result<&'a [u8], String> {
        let Some(id) = self.schema_id else {
            return Ok(bytes);
        };
        if bytes.len() < 5 {
            return Err(format!(
                "not Confluent's Avro wire format: {} bytes, fewer than its 5-byte header",
                bytes.len()
            ));
        }
        if bytes[0] != CONFLUENT_MAGIC {
            return Err(format!(
                "not Confluent's Avro wire format: magic byte {}, expected 0",
                bytes[0]
            ));
        }
        let got = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
        if got != id {
            return Err(format!(
                "Avro schema id {got}, expected {id} (the only schema this reader knows)"
            ));
        }
        Ok(&bytes[5..])
    }
}

impl<T: DeserializeOwned> Avro<T> {
    /// Decodes one message's bytes.
    pub fn decode(&self, bytes: &[u8]) -> std::result::Result<T, String> {
        let mut datum = self.datum(bytes)?;
        let reader = GenericDatumReader::builder(&self.schema)
            .build()
            .map_err(|e| format!("avro schema: {e}"))?;
        let value = reader
            .read_value(&mut datum)
            .map_err(|e| format!("invalid Avro: {e}"))?;
        if !datum.is_empty() {
            return Err(format!(
                "invalid Avro: {} bytes after the datum",
                datum.len()
            ));
        }
        apache_avro::from_value(&value).map_err(|e| format!("Avro value does not fit: {e}"))
    }
}

impl<T: Serialize> Avro<T> {
    /// Encodes one value (with Confluent's header if this format has one). A value the schema
    /// does not accept is an error.
    pub fn encode(&self, v: &T) -> std::result::Result<Vec<u8>, String> {
        let value = apache_avro::to_value(v)
            .and_then(|x| x.resolve(&self.schema))
            .map_err(|e| format!("Avro encoding: {e}"))?;
        let mut out = Vec::new();
        if let Some(id) = self.schema_id {
            out.push(CONFLUENT_MAGIC);
            out.extend_from_slice(&id.to_be_bytes());
        }
        // Resolved against the schema just above: no second validation.
        GenericDatumWriter::builder(&self.schema)
            .validate(false)
            .build()
            .and_then(|w| w.write_value_ref(&mut out, &value))
            .map_err(|e| format!("Avro encoding: {e}"))?;
        Ok(out)
    }
}

impl<T: DeserializeOwned + 'static> Deserializer<T> for Avro<T> {
    fn deserialize(&self, r: &RawRecord<'_>) -> std::result::Result<T, String> {
        self.decode(r.value.ok_or("a tombstone (no value)")?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    const SCHEMA: &str = r#"{
        "type": "record", "name": "Order", "namespace": "weir.test",
        "fields": [
            {"name": "id", "type": "long"},
            {"name": "qty", "type": "int"},
            {"name": "amount", "type": "double"},
            {"name": "customer", "type": "string"},
            {"name": "note", "type": ["null", "string"], "default": null},
            {"name": "tags", "type": {"type": "array", "items": "string"}},
            {"name": "status", "type": {"type": "enum", "name": "Status",
                                        "symbols": ["OPEN", "PAID"]}}
        ]}"#;

    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
    #[allow(clippy::upper_case_acronyms)]
    enum Status {
        OPEN,
        PAID,
    }

    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
    struct Order {
        id: i64,
        qty: u32,
        amount: f64,
        customer: String,
        note: Option<String>,
        tags: Vec<String>,
        status: Status,
    }

    fn order(i: i64) -> Order {
        Order {
            id: i,
            qty: 3,
            amount: 2.5,
            customer: format!("c{i}"),
            note: (i % 2 == 0).then(|| "gift".to_string()),
            tags: vec!["a".into(), "b".into()],
            status: if i % 2 == 0 {
                Status::OPEN
            } else {
                Status::PAID
            },
        }
    }

    #[test]
    fn plain_round_trip() {
        let a = Avro::<Order>::new(SCHEMA).unwrap();
        for i in 0..4 {
            let bytes = a.encode(&order(i)).unwrap();
            assert_eq!(a.decode(&bytes).unwrap(), order(i));
        }
        // Avro binary: the first field is the zig-zag varint of the id.
        assert_eq!(a.encode(&order(1)).unwrap()[0], 2);
    }

    #[test]
    fn confluent_round_trip_and_header() {
        let a = Avro::<Order>::confluent(SCHEMA, 42).unwrap();
        let bytes = a.encode(&order(7)).unwrap();
        assert_eq!(&bytes[..5], &[0, 0, 0, 0, 42]);
        let plain = Avro::<Order>::new(SCHEMA).unwrap();
        assert_eq!(&bytes[5..], &plain.encode(&order(7)).unwrap()[..]);
        assert_eq!(a.decode(&bytes).unwrap(), order(7));
        let other = Avro::<Order>::confluent(SCHEMA, 43).unwrap();
        assert!(other.decode(&bytes).unwrap_err().contains("schema id 42"));
        let mut bad = bytes.clone();
        bad[0] = 1;
        assert!(a.decode(&bad).unwrap_err().contains("magic byte 1"));
        assert!(a.decode(&[0, 0]).unwrap_err().contains("5-byte header"));
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let a = Avro::<Order>::new(SCHEMA).unwrap();
        let good = a.encode(&order(2)).unwrap();
        assert!(a.decode(&good[..good.len() - 3]).is_err());
        let mut longer = good.clone();
        longer.push(0);
        assert!(a.decode(&longer).unwrap_err().contains("after the datum"));
        assert!(a.decode(b"not avro at all").is_err());
        assert!(a.decode(&[0xff; 16]).is_err());
        assert!(a.decode(&[]).is_err());
    }

    #[test]
    fn values_the_schema_refuses_and_bad_schemas() {
        assert!(matches!(
            Avro::<Order>::new("{not json"),
            Err(WeirError::Config(_))
        ));
        let a = Avro::<(i32, i32)>::new(SCHEMA).unwrap();
        assert!(a.encode(&(1, 2)).unwrap_err().contains("Avro encoding"));
    }
}
