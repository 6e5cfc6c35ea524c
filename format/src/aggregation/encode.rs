//! Writing aggregates.

use std::collections::HashMap;

use bytes::{BufMut, Bytes, BytesMut};
use md5::{Digest, Md5};
use prost::Message;

use super::size::{delimited_len, record_body_len};
use super::{DIGEST_LEN, FRAMING_LEN, MAGIC};
use crate::proto;

/// Builds one aggregated record from user records, knowing its exact framed length at every step.
///
/// Keys go into the partition-key and explicit-hash-key tables once each, in first-seen order, so
/// the bytes equal those of the reference aggregators for the same records in the same order.
/// The builder does not validate keys: check them first with
/// [`validate_partition_key`](crate::validate_partition_key) and
/// [`HashKey::parse_explicit`](crate::HashKey::parse_explicit).
///
/// ```
/// use bytes::Bytes;
/// use kinesis_format::{AggregateBuilder, Deaggregated, deaggregate};
///
/// let mut builder = AggregateBuilder::new();
/// let limit = 51_200;
/// for i in 0..10 {
///     let data = Bytes::from(format!("record {i}"));
///     let key = format!("key-{}", i % 3);
///     // Ask before adding: never build an aggregate over the limit.
///     assert!(builder.framed_len_with(&key, None, data.len()) <= limit);
///     builder.add(&key, None, data);
/// }
/// let blob = builder.finish();
/// let Deaggregated::Aggregated(records) = deaggregate(&blob) else { panic!("not an aggregate") };
/// assert_eq!(records.len(), 10);
/// assert_eq!(&records[4].data[..], b"record 4");
/// ```
#[derive(Debug, Default, Clone)]
pub struct AggregateBuilder {
    partition_keys: Vec<String>,
    partition_key_index: HashMap<String, u64>,
    explicit_hash_keys: Vec<String>,
    explicit_hash_key_index: HashMap<String, u64>,
    records: Vec<proto::Record>,
    /// Exact length of the protobuf body so far.
    body_len: usize,
    /// Sum of the user records' data lengths (for statistics).
    data_len: usize,
}

impl AggregateBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many user records have been added.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether no user record has been added.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The sum of the added user records' data lengths.
    pub fn data_len(&self) -> usize {
        self.data_len
    }

    /// The exact length [`finish`](Self::finish) would return now: magic + body + digest.
    pub fn framed_len(&self) -> usize {
        FRAMING_LEN + self.body_len
    }

    /// The exact framed length after adding a record with these keys and `data_len` bytes of data.
    pub fn framed_len_with(
        &self,
        partition_key: &str,
        explicit_hash_key: Option<&str>,
        data_len: usize,
    ) -> usize {
        self.framed_len() + self.growth(partition_key, explicit_hash_key, data_len)
    }

    /// Adds a user record and returns its sub-sequence number (its index in the aggregate).
    pub fn add(
        &mut self,
        partition_key: &str,
        explicit_hash_key: Option<&str>,
        data: Bytes,
    ) -> u64 {
        self.body_len += self.growth(partition_key, explicit_hash_key, data.len());
        self.data_len += data.len();
        let partition_key_index = intern(
            &mut self.partition_keys,
            &mut self.partition_key_index,
            partition_key,
        );
        let explicit_hash_key_index = explicit_hash_key.map(|ehk| {
            intern(
                &mut self.explicit_hash_keys,
                &mut self.explicit_hash_key_index,
                ehk,
            )
        });
        self.records.push(proto::Record {
            partition_key_index,
            explicit_hash_key_index,
            data,
            tags: Vec::new(),
        });
        (self.records.len() - 1) as u64
    }

    /// The framed bytes: magic, protobuf body, MD5 of the body.
    pub fn finish(self) -> Bytes {
        let framed_len = self.framed_len();
        let message = proto::AggregatedRecord {
            partition_key_table: self.partition_keys,
            explicit_hash_key_table: self.explicit_hash_keys,
            records: self.records,
        };
        let mut out = BytesMut::with_capacity(framed_len);
        out.put_slice(&MAGIC);
        message.encode_raw(&mut out);
        let digest: [u8; DIGEST_LEN] = Md5::digest(&out[MAGIC.len()..]).into();
        out.put_slice(&digest);
        debug_assert_eq!(out.len(), framed_len, "size accounting drifted from prost");
        out.freeze()
    }

    /// How many body bytes adding this record would add.
    fn growth(
        &self,
        partition_key: &str,
        explicit_hash_key: Option<&str>,
        data_len: usize,
    ) -> usize {
        let mut growth = 0;
        let partition_key_index = match self.partition_key_index.get(partition_key) {
            Some(&index) => index,
            None => {
                growth += delimited_len(partition_key.len());
                self.partition_keys.len() as u64
            }
        };
        let explicit_hash_key_index =
            explicit_hash_key.map(|ehk| match self.explicit_hash_key_index.get(ehk) {
                Some(&index) => index,
                None => {
                    growth += delimited_len(ehk.len());
                    self.explicit_hash_keys.len() as u64
                }
            });
        growth
            + delimited_len(record_body_len(
                partition_key_index,
                explicit_hash_key_index,
                data_len,
            ))
    }
}

/// The index of `key` in `table`, appending it first if it is new.
fn intern(table: &mut Vec<String>, index: &mut HashMap<String, u64>, key: &str) -> u64 {
    if let Some(&i) = index.get(key) {
        return i;
    }
    let i = table.len() as u64;
    table.push(key.to_owned());
    index.insert(key.to_owned(), i);
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_builder_is_just_framing() {
        let builder = AggregateBuilder::new();
        assert_eq!(builder.framed_len(), 20);
        let blob = builder.finish();
        assert_eq!(&blob[..4], &MAGIC);
        // MD5 of nothing.
        assert_eq!(
            &blob[4..],
            &[
                0xd4, 0x1d, 0x8c, 0xd9, 0x8f, 0x00, 0xb2, 0x04, 0xe9, 0x80, 0x09, 0x98, 0xec, 0xf8,
                0x42, 0x7e
            ]
        );
    }

    #[test]
    fn keys_are_tabled_once_in_first_seen_order() {
        let mut builder = AggregateBuilder::new();
        for (pk, ehk) in [
            ("b", None),
            ("a", Some("7")),
            ("b", Some("7")),
            ("c", Some("8")),
        ] {
            builder.add(pk, ehk, Bytes::from_static(b"x"));
        }
        assert_eq!(builder.partition_keys, ["b", "a", "c"]);
        assert_eq!(builder.explicit_hash_keys, ["7", "8"]);
        let indices: Vec<_> = builder
            .records
            .iter()
            .map(|r| (r.partition_key_index, r.explicit_hash_key_index))
            .collect();
        assert_eq!(
            indices,
            [(0, None), (1, Some(0)), (0, Some(0)), (2, Some(1))]
        );
    }

    #[test]
    fn size_accounting_crosses_varint_boundaries() {
        let mut builder = AggregateBuilder::new();
        // Data lengths around 127/128 and 16383/16384 bytes change the length varints' widths.
        for len in [
            0usize, 1, 126, 127, 128, 129, 16_382, 16_383, 16_384, 16_385,
        ] {
            let predicted = builder.framed_len_with("k", None, len);
            builder.add("k", None, Bytes::from(vec![7u8; len]));
            assert_eq!(builder.framed_len(), predicted);
        }
        let predicted = builder.framed_len();
        assert_eq!(builder.finish().len(), predicted);
    }
}
