//! postcard bytes written by a serializer that the compiler can inline: for a `u64` key,
//! [`key_hash`](crate::keygroup::key_hash) becomes a varint store and one xxh3 call instead of
//! a call into postcard's generic writer per field; snapshots encode their entries the same way
//! ([`encode_into`]).
//!
//! The bytes are postcard's, exactly (key groups depend on them: a different byte would move
//! keys between key groups and break restoring state); a randomized test compares the two. What
//! this writer does not handle (a key longer than the stack buffer, a sequence of unknown
//! length, `collect_str`) falls back to postcard itself.
use serde::ser::{self, Serialize};
use std::fmt;

/// Bytes of a key written on the stack, at most `CAP`: small enough that zeroing the buffer
/// costs two stores, large enough for the usual keys (numbers, ids, short names).
pub(crate) const CAP: usize = 64;

/// Writes `key`'s postcard bytes into `buf`; returns how many, or `None` if this writer does
/// not handle the key (the caller uses postcard).
#[inline]
pub(crate) fn write<K: Serialize + ?Sized>(key: &K, buf: &mut [u8; CAP]) -> Option<usize> {
    let mut w = Writer(Fixed { buf, len: 0 });
    key.serialize(&mut w).ok()?;
    Some(w.0.len)
}

/// Appends postcard(`v`) to `out`: the same bytes as `postcard::to_extend`, written by inlined
/// code.
#[inline]
pub fn encode_into<T: Serialize + ?Sized>(v: &T, out: &mut Vec<u8>) {
    let start = out.len();
    if v.serialize(&mut Writer(Grow(&mut *out))).is_err() {
        out.truncate(start);
        let taken = std::mem::take(out);
        *out = postcard::to_extend(v, taken).expect("Data types encode");
    }
}

/// Where the bytes go.
trait Out {
    fn byte(&mut self, b: u8) -> R;
    fn bytes(&mut self, b: &[u8]) -> R;
}

/// A fixed buffer: a write past its end is [`Unhandled`].
struct Fixed<'a> {
    buf: &'a mut [u8; CAP],
    len: usize,
}

impl Out for Fixed<'_> {
    #[inline(always)]
    fn byte(&mut self, b: u8) -> R {
        *self.buf.get_mut(self.len).ok_or(Unhandled)? = b;
        self.len += 1;
        Ok(())
    }
    #[inline(always)]
    fn bytes(&mut self, b: &[u8]) -> R {
        let end = self.len + b.len();
        self.buf
            .get_mut(self.len..end)
            .ok_or(Unhandled)?
            .copy_from_slice(b);
        self.len = end;
        Ok(())
    }
}

/// A growing vector.
struct Grow<'a>(&'a mut Vec<u8>);

impl Out for Grow<'_> {
    #[inline(always)]
    fn byte(&mut self, b: u8) -> R {
        self.0.push(b);
        Ok(())
    }
    #[inline(always)]
    fn bytes(&mut self, b: &[u8]) -> R {
        self.0.extend_from_slice(b);
        Ok(())
    }
}

struct Writer<O>(O);

/// "Not handled here": the caller falls back to postcard.
#[derive(Debug)]
pub(crate) struct Unhandled;

impl fmt::Display for Unhandled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not handled by the inline writer")
    }
}
impl std::error::Error for Unhandled {}
impl ser::Error for Unhandled {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Unhandled
    }
}

type R = Result<(), Unhandled>;

impl<O: Out> Writer<O> {
    #[inline(always)]
    fn byte(&mut self, b: u8) -> R {
        self.0.byte(b)
    }
    #[inline(always)]
    fn bytes(&mut self, b: &[u8]) -> R {
        self.0.bytes(b)
    }
    /// LEB128, as postcard writes every unsigned integer wider than a byte.
    #[inline(always)]
    fn varint(&mut self, mut v: u64) -> R {
        while v >= 0x80 {
            self.byte((v as u8) | 0x80)?;
            v >>= 7;
        }
        self.byte(v as u8)
    }
    /// LEB128 of a 128-bit integer (only `u128` and `i128` need the wide shifts).
    #[inline(always)]
    fn varint128(&mut self, mut v: u128) -> R {
        while v >= 0x80 {
            self.byte((v as u8) | 0x80)?;
            v >>= 7;
        }
        self.byte(v as u8)
    }
    #[inline(always)]
    fn len_prefix(&mut self, n: usize) -> R {
        self.varint(n as u64)
    }
}

impl<O: Out> ser::Serializer for &mut Writer<O> {
    type Ok = ();
    type Error = Unhandled;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    fn is_human_readable(&self) -> bool {
        false
    }
    #[inline]
    fn serialize_bool(self, v: bool) -> R {
        self.byte(v as u8)
    }
    #[inline]
    fn serialize_i8(self, v: i8) -> R {
        self.byte(v as u8)
    }
    #[inline]
    fn serialize_i16(self, v: i16) -> R {
        self.varint(((v << 1) ^ (v >> 15)) as u16 as u64)
    }
    #[inline]
    fn serialize_i32(self, v: i32) -> R {
        self.varint(((v << 1) ^ (v >> 31)) as u32 as u64)
    }
    #[inline]
    fn serialize_i64(self, v: i64) -> R {
        self.varint(((v << 1) ^ (v >> 63)) as u64)
    }
    #[inline]
    fn serialize_i128(self, v: i128) -> R {
        self.varint128(((v << 1) ^ (v >> 127)) as u128)
    }
    #[inline]
    fn serialize_u8(self, v: u8) -> R {
        self.byte(v)
    }
    #[inline]
    fn serialize_u16(self, v: u16) -> R {
        self.varint(v as u64)
    }
    #[inline]
    fn serialize_u32(self, v: u32) -> R {
        self.varint(v as u64)
    }
    #[inline]
    fn serialize_u64(self, v: u64) -> R {
        self.varint(v)
    }
    #[inline]
    fn serialize_u128(self, v: u128) -> R {
        self.varint128(v)
    }
    #[inline]
    fn serialize_f32(self, v: f32) -> R {
        self.bytes(&v.to_le_bytes())
    }
    #[inline]
    fn serialize_f64(self, v: f64) -> R {
        self.bytes(&v.to_le_bytes())
    }
    #[inline]
    fn serialize_char(self, v: char) -> R {
        let mut b = [0u8; 4];
        self.serialize_str(v.encode_utf8(&mut b))
    }
    #[inline]
    fn serialize_str(self, v: &str) -> R {
        self.len_prefix(v.len())?;
        self.bytes(v.as_bytes())
    }
    #[inline]
    fn serialize_bytes(self, v: &[u8]) -> R {
        self.len_prefix(v.len())?;
        self.bytes(v)
    }
    #[inline]
    fn serialize_none(self) -> R {
        self.byte(0)
    }
    #[inline]
    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> R {
        self.byte(1)?;
        v.serialize(self)
    }
    #[inline]
    fn serialize_unit(self) -> R {
        Ok(())
    }
    #[inline]
    fn serialize_unit_struct(self, _: &'static str) -> R {
        Ok(())
    }
    #[inline]
    fn serialize_unit_variant(self, _: &'static str, idx: u32, _: &'static str) -> R {
        self.varint(idx as u64)
    }
    #[inline]
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, v: &T) -> R {
        v.serialize(self)
    }
    #[inline]
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        idx: u32,
        _: &'static str,
        v: &T,
    ) -> R {
        self.varint(idx as u64)?;
        v.serialize(self)
    }
    #[inline]
    fn serialize_seq(self, len: Option<usize>) -> Result<Self, Unhandled> {
        self.len_prefix(len.ok_or(Unhandled)?)?;
        Ok(self)
    }
    #[inline]
    fn serialize_tuple(self, _: usize) -> Result<Self, Unhandled> {
        Ok(self)
    }
    #[inline]
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self, Unhandled> {
        Ok(self)
    }
    #[inline]
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        idx: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self, Unhandled> {
        self.varint(idx as u64)?;
        Ok(self)
    }
    #[inline]
    fn serialize_map(self, len: Option<usize>) -> Result<Self, Unhandled> {
        self.len_prefix(len.ok_or(Unhandled)?)?;
        Ok(self)
    }
    #[inline]
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self, Unhandled> {
        Ok(self)
    }
    #[inline]
    fn serialize_struct_variant(
        self,
        _: &'static str,
        idx: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self, Unhandled> {
        self.varint(idx as u64)?;
        Ok(self)
    }
    fn collect_str<T: fmt::Display + ?Sized>(self, _: &T) -> R {
        Err(Unhandled)
    }
}

/// Compound parts: every element in order, nothing between or after.
macro_rules! compound {
    ($tr:ident, $method:ident $(, $key:ident)?) => {
        impl<O: Out> ser::$tr for &mut Writer<O> {
            type Ok = ();
            type Error = Unhandled;
            #[inline]
            fn $method<T: Serialize + ?Sized>(&mut self, $($key: &'static str,)? v: &T) -> R {
                v.serialize(&mut **self)
            }
            #[inline]
            fn end(self) -> R {
                Ok(())
            }
        }
    };
}
compound!(SerializeSeq, serialize_element);
compound!(SerializeTuple, serialize_element);
compound!(SerializeTupleStruct, serialize_field);
compound!(SerializeTupleVariant, serialize_field);
compound!(SerializeStruct, serialize_field, _name);
compound!(SerializeStructVariant, serialize_field, _name);

impl<O: Out> ser::SerializeMap for &mut Writer<O> {
    type Ok = ();
    type Error = Unhandled;
    #[inline]
    fn serialize_key<T: Serialize + ?Sized>(&mut self, k: &T) -> R {
        k.serialize(&mut **self)
    }
    #[inline]
    fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> R {
        v.serialize(&mut **self)
    }
    #[inline]
    fn end(self) -> R {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;
    use std::collections::BTreeMap;

    #[derive(Serialize)]
    enum E {
        Unit,
        New(i32),
        Tup(u8, String),
        Rec { a: Option<u64>, b: f32 },
    }

    #[derive(Serialize)]
    struct S {
        id: u64,
        name: String,
        tags: Vec<i16>,
        e: E,
        m: BTreeMap<String, i64>,
        c: char,
        t: (bool, u128, i128, f64, ()),
    }

    #[derive(Serialize)]
    struct Wrapped(u32);

    /// Serialized through `collect_str`: the inline writer falls back to postcard.
    struct Displayed(u32);
    impl Serialize for Displayed {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_str(&self.0)
        }
    }

    fn same<K: Serialize + ?Sized>(k: &K) {
        let want = postcard::to_allocvec(k).unwrap();
        let mut buf = [0u8; CAP];
        match write(k, &mut buf) {
            Some(n) => assert_eq!(&buf[..n], &want[..]),
            None => assert!(want.len() > CAP, "fell back on a short key"),
        }
        let mut grown = vec![0xAB];
        encode_into(k, &mut grown);
        assert_eq!(&grown[1..], &want[..]);
        assert_eq!(grown[0], 0xAB);
    }

    /// A small deterministic generator (splitmix64), so the test needs no dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        /// Values spread over every varint length, both signs.
        fn wide(&mut self) -> u64 {
            let bits = self.next() % 65;
            if bits == 64 {
                self.next()
            } else {
                self.next() & ((1u64 << bits) - 1)
            }
        }
    }

    #[test]
    fn writes_postcard_bytes_exactly() {
        let mut r = Rng(7);
        for i in 0..20_000 {
            let w = r.wide();
            same(&w);
            same(&(w as u32));
            same(&(w as u16));
            same(&(w as u8));
            same(&(w as i64));
            same(&(w as i32));
            same(&(w as i16));
            same(&(w as i8));
            same(&((w as u128) << (r.next() % 64)));
            same(&(((w as i128) << (r.next() % 64)) * if i % 2 == 0 { 1 } else { -1 }));
            same(&f64::from_bits(r.next()));
            same(&f32::from_bits(r.next() as u32));
            same(&char::from_u32((w % 0x11_0000) as u32).unwrap_or('x'));
            let len = (r.next() % 300) as usize;
            let s: String = (0..len)
                .map(|_| char::from_u32((r.next() % 0x800) as u32).unwrap_or('é'))
                .collect();
            same(&s);
            same(s.as_str());
            same(&(w, s.clone()));
            same(&Some(w));
            same(&None::<u64>);
            same(&Wrapped(w as u32));
            let e = match i % 4 {
                0 => E::Unit,
                1 => E::New(w as i32),
                2 => E::Tup(w as u8, s.clone()),
                _ => E::Rec {
                    a: (i % 3 == 0).then_some(w),
                    b: w as f32,
                },
            };
            same(&S {
                id: w,
                name: s.chars().take(20).collect(),
                tags: (0..(w % 20)).map(|x| x as i16 - 7).collect(),
                e,
                m: (0..(w % 4)).map(|x| (x.to_string(), -(x as i64))).collect(),
                c: 'ß',
                t: (i % 2 == 0, w as u128, -(w as i128), w as f64, ()),
            });
        }
        same(&());
        // collect_str: not written inline; encode_into and key_hash fall back to postcard.
        let d = Displayed(12345);
        let want = postcard::to_allocvec(&d).unwrap();
        assert_eq!(write(&d, &mut [0u8; CAP]), None);
        let mut grown = vec![1, 2];
        encode_into(&d, &mut grown);
        assert_eq!(&grown[2..], &want[..]);
        assert_eq!(grown[..2], [1, 2]);
        assert_eq!(
            crate::keygroup::key_hash(&d),
            xxhash_rust::xxh3::xxh3_64(&want)
        );
        same(&vec![0u8; 300]);
        same(&"z".repeat(62));
        same(&"z".repeat(63));
    }
}
