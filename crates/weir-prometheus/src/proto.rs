//! The Prometheus remote-write 1.0 messages (`prometheus/prompb/remote.proto` and
//! `types.proto`), written by hand with `prost` derives: no `protoc` at build time. Only what a
//! writer of float samples needs: exemplars, native histograms and metadata are left out (a
//! receiver ignores fields it is not sent).
use prost::Message;

/// `prometheus.WriteRequest`: the body of one remote-write request (before snappy).
#[derive(Clone, PartialEq, Message)]
pub struct WriteRequest {
    /// The series and their samples.
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

/// `prometheus.TimeSeries`: labels sorted by name (`__name__` among them) and samples in
/// timestamp order.
#[derive(Clone, PartialEq, Message)]
pub struct TimeSeries {
    /// Sorted by name, names unique.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    /// In increasing timestamp order.
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
}

/// `prometheus.Label`.
#[derive(Clone, PartialEq, Eq, Hash, Message)]
pub struct Label {
    /// The label name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// The label value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `prometheus.Sample`: a value at a timestamp in milliseconds since the epoch.
#[derive(Clone, PartialEq, Message)]
pub struct Sample {
    /// The value.
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Milliseconds since the Unix epoch.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// Encodes a request as protobuf and compresses it with snappy's block (raw) format, as the
/// remote-write protocol requires (not the framed format).
pub fn encode(req: &WriteRequest) -> Vec<u8> {
    let pb = req.encode_to_vec();
    snap::raw::Encoder::new()
        .compress_vec(&pb)
        .expect("snappy compression of an in-memory buffer cannot fail")
}

/// Decompresses and decodes a request (for receivers and tests).
pub fn decode(body: &[u8]) -> Result<WriteRequest, String> {
    let pb = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| format!("snappy: {e}"))?;
    WriteRequest::decode(pb.as_slice()).map_err(|e| format!("protobuf: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_wire_format() {
        let req = WriteRequest {
            timeseries: vec![TimeSeries {
                labels: vec![Label {
                    name: "__name__".into(),
                    value: "up".into(),
                }],
                samples: vec![Sample {
                    value: 1.0,
                    timestamp: 1000,
                }],
            }],
        };
        // Hand-checked bytes: field 1 (len) { field 1 (len) label { 1: "__name__", 2: "up" },
        // field 2 (len) sample { 1: double 1.0, 2: varint 1000 } }.
        let pb = req.encode_to_vec();
        assert_eq!(
            pb,
            [
                0x0a, 0x1e, 0x0a, 0x0e, 0x0a, 0x08, b'_', b'_', b'n', b'a', b'm', b'e', b'_', b'_',
                0x12, 0x02, b'u', b'p', 0x12, 0x0c, 0x09, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f, 0x10, 0xe8,
                0x07
            ]
        );
        assert_eq!(decode(&encode(&req)).unwrap(), req);
    }
}
