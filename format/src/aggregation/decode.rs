//! Reading aggregates.

use std::sync::Arc;

use bytes::Bytes;
use md5::{Digest, Md5};
use prost::Message;

use super::{DIGEST_LEN, FRAMING_LEN, MAGIC};
use crate::error::HashKeyError;
use crate::hash_key::HashKey;
use crate::proto;

/// One user record taken out of an aggregate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubRecord {
    /// The user record's partition key (shared with the aggregate's other records that use it).
    pub partition_key: Arc<str>,
    /// The user record's explicit hash key, if it had one.
    pub explicit_hash_key: Option<Arc<str>>,
    /// The user record's data: a slice of the aggregate's buffer, not a copy.
    pub data: Bytes,
    /// The record's index in the aggregate, 0..n-1.
    pub sub_sequence_number: u64,
}

impl SubRecord {
    /// The record's hash key: its explicit hash key if it has one, else its partition key's MD5.
    /// Fails only for an explicit hash key that is not a decimal integer below 2^128.
    pub fn hash_key(&self) -> Result<HashKey, HashKeyError> {
        HashKey::for_record(&self.partition_key, self.explicit_hash_key.as_deref())
    }

    /// [`hash_key`](Self::hash_key) of each record, in order, with the MD5s of the partition
    /// keys computed several at a time, side by side (see [`HashKey::from_partition_keys`]).
    pub fn hash_keys(records: &[SubRecord]) -> Vec<Result<HashKey, HashKeyError>> {
        let (at, keys): (Vec<usize>, Vec<&str>) = records
            .iter()
            .enumerate()
            .filter(|(_, r)| r.explicit_hash_key.is_none())
            .map(|(i, r)| (i, &*r.partition_key))
            .unzip();
        // Explicit hash keys parsed, the others filled in below.
        let mut out: Vec<Result<HashKey, HashKeyError>> = records
            .iter()
            .map(|r| {
                r.explicit_hash_key
                    .as_deref()
                    .map_or(Ok(HashKey::MIN), HashKey::parse_explicit)
            })
            .collect();
        for (i, hash) in at.into_iter().zip(HashKey::from_partition_keys(&keys)) {
            out[i] = Ok(hash);
        }
        out
    }
}

/// Why a blob is not an aggregate and must be passed on as one raw user record.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NotAggregated {
    /// Shorter than the 4-byte magic.
    TooShort,
    /// The first four bytes are not `F3 89 9A C2`.
    WrongMagic,
    /// Magic present, but at most 16 bytes follow it: no room for a body and a digest.
    NoBody,
    /// The MD5 trailer does not match the body.
    DigestMismatch,
    /// The body is not a valid `AggregatedRecord` message.
    Malformed(String),
    /// A record indexes past the end of a key table.
    KeyIndexOutOfRange {
        /// The record's position in the aggregate.
        record: usize,
        /// The index it used.
        index: u64,
        /// The table's length.
        table_len: usize,
    },
}

/// What a blob turned out to be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Deaggregated {
    /// A valid aggregate and its user records in order (sub-sequence numbers 0..n-1).
    Aggregated(Vec<SubRecord>),
    /// Not an aggregate: the blob is one raw user record, for the reason given.
    Raw(NotAggregated),
}

/// Classifies a blob and, when it is a valid aggregate, yields its user records.
///
/// Never panics, whatever the input. Record data are slices of `blob`, not copies.
pub fn deaggregate(blob: &Bytes) -> Deaggregated {
    match parse(blob) {
        Ok(records) => Deaggregated::Aggregated(records),
        Err(reason) => Deaggregated::Raw(reason),
    }
}

/// [`deaggregate`] of each blob, in order, with the MD5s of the candidate aggregates computed
/// several at a time, side by side: for a page of aggregates from one GetRecords call, the
/// digest checks cost about a third of what they cost one by one.
pub fn deaggregate_all(blobs: &[Bytes]) -> Vec<Deaggregated> {
    let mut checked: Vec<Result<Bytes, NotAggregated>> = blobs.iter().map(framing).collect();
    let (at, bodies): (Vec<usize>, Vec<&[u8]>) = checked
        .iter()
        .enumerate()
        .filter_map(|(i, framed)| framed.as_deref().ok().map(|body| (i, body)))
        .unzip();
    let digests = crate::md5_lanes::digest_each(&bodies);
    for (i, digest) in at.into_iter().zip(digests) {
        let framed = std::mem::replace(&mut checked[i], Err(NotAggregated::NoBody));
        checked[i] = framed.and_then(|body| check_digest(&blobs[i], body, digest));
    }
    checked
        .into_iter()
        .map(|body| match body.and_then(parse_body) {
            Ok(records) => Deaggregated::Aggregated(records),
            Err(reason) => Deaggregated::Raw(reason),
        })
        .collect()
}

fn parse(blob: &Bytes) -> Result<Vec<SubRecord>, NotAggregated> {
    let body = framing(blob)?;
    let digest: [u8; DIGEST_LEN] = Md5::digest(&body).into();
    parse_body(check_digest(blob, body, digest)?)
}

/// The body of a blob framed like an aggregate (magic, body, digest), not yet checked.
fn framing(blob: &Bytes) -> Result<Bytes, NotAggregated> {
    if blob.len() < MAGIC.len() {
        return Err(NotAggregated::TooShort);
    }
    if blob[..MAGIC.len()] != MAGIC {
        return Err(NotAggregated::WrongMagic);
    }
    if blob.len() <= FRAMING_LEN {
        return Err(NotAggregated::NoBody);
    }
    Ok(blob.slice(MAGIC.len()..blob.len() - DIGEST_LEN))
}

/// The body, if `digest` (its MD5) is the blob's trailer.
fn check_digest(
    blob: &Bytes,
    body: Bytes,
    digest: [u8; DIGEST_LEN],
) -> Result<Bytes, NotAggregated> {
    if digest[..] != blob[blob.len() - DIGEST_LEN..] {
        return Err(NotAggregated::DigestMismatch);
    }
    Ok(body)
}

fn parse_body(body: Bytes) -> Result<Vec<SubRecord>, NotAggregated> {
    let message = proto::AggregatedRecord::decode(body)
        .map_err(|e| NotAggregated::Malformed(e.to_string()))?;

    let partition_keys: Vec<Arc<str>> = message
        .partition_key_table
        .into_iter()
        .map(Arc::from)
        .collect();
    let explicit_hash_keys: Vec<Arc<str>> = message
        .explicit_hash_key_table
        .into_iter()
        .map(Arc::from)
        .collect();
    message
        .records
        .into_iter()
        .enumerate()
        .map(|(position, record)| {
            let partition_key = lookup(&partition_keys, record.partition_key_index, position)?;
            let explicit_hash_key = record
                .explicit_hash_key_index
                .map(|index| lookup(&explicit_hash_keys, index, position))
                .transpose()?;
            Ok(SubRecord {
                partition_key,
                explicit_hash_key,
                data: record.data,
                sub_sequence_number: position as u64,
            })
        })
        .collect()
}

fn lookup(table: &[Arc<str>], index: u64, record: usize) -> Result<Arc<str>, NotAggregated> {
    usize::try_from(index)
        .ok()
        .and_then(|i| table.get(i))
        .cloned()
        .ok_or(NotAggregated::KeyIndexOutOfRange {
            record,
            index,
            table_len: table.len(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AggregateBuilder;

    fn sample() -> Bytes {
        let mut builder = AggregateBuilder::new();
        builder.add("alpha", None, Bytes::from_static(b"one"));
        builder.add("beta", Some("12345"), Bytes::from_static(b"two"));
        builder.add("alpha", None, Bytes::from_static(b""));
        builder.finish()
    }

    #[test]
    fn hash_keys_of_many_match_each_alone() {
        let mut builder = AggregateBuilder::new();
        for i in 0..40 {
            let explicit = match i % 5 {
                0 => Some("12345"),
                1 => Some("not-a-number"),
                _ => None,
            };
            builder.add(&format!("k{}", i % 7), explicit, b"x");
        }
        let Deaggregated::Aggregated(records) = deaggregate(&builder.finish()) else {
            panic!("not an aggregate")
        };
        let alone: Vec<_> = records.iter().map(SubRecord::hash_key).collect();
        assert_eq!(SubRecord::hash_keys(&records), alone);
        assert!(alone.iter().any(Result::is_err) && alone.iter().any(Result::is_ok));
    }

    #[test]
    fn decodes_records_in_order_with_sub_sequence_numbers() {
        let Deaggregated::Aggregated(records) = deaggregate(&sample()) else {
            panic!("sample should be an aggregate")
        };
        let got: Vec<_> = records
            .iter()
            .map(|r| {
                (
                    &*r.partition_key,
                    r.explicit_hash_key.as_deref(),
                    &r.data[..],
                    r.sub_sequence_number,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("alpha", None, &b"one"[..], 0),
                ("beta", Some("12345"), &b"two"[..], 1),
                ("alpha", None, &b""[..], 2)
            ]
        );
        assert_eq!(records[1].hash_key(), Ok(HashKey(12345)));
        assert_eq!(
            records[0].hash_key(),
            Ok(HashKey::from_partition_key("alpha"))
        );
    }

    #[test]
    fn data_is_a_slice_of_the_input_not_a_copy() {
        let blob = sample();
        let Deaggregated::Aggregated(records) = deaggregate(&blob) else {
            panic!("sample should be an aggregate")
        };
        let range = blob.as_ptr_range();
        assert!(range.contains(&records[0].data.as_ptr()));
    }

    #[test]
    fn classifies_each_kind_of_raw_blob() {
        let good = sample();
        let raw = |b: &[u8]| deaggregate(&Bytes::copy_from_slice(b));
        assert_eq!(raw(b""), Deaggregated::Raw(NotAggregated::TooShort));
        assert_eq!(raw(&MAGIC[..3]), Deaggregated::Raw(NotAggregated::TooShort));
        assert_eq!(
            raw(b"hello world, plain text"),
            Deaggregated::Raw(NotAggregated::WrongMagic)
        );
        let mut no_body = MAGIC.to_vec();
        no_body.extend([0u8; 16]);
        assert_eq!(raw(&no_body), Deaggregated::Raw(NotAggregated::NoBody));

        let mut corrupt_digest = good.to_vec();
        *corrupt_digest.last_mut().unwrap() ^= 1;
        assert_eq!(
            raw(&corrupt_digest),
            Deaggregated::Raw(NotAggregated::DigestMismatch)
        );

        let mut corrupt_body = good.to_vec();
        corrupt_body[5] ^= 0x40;
        assert_eq!(
            raw(&corrupt_body),
            Deaggregated::Raw(NotAggregated::DigestMismatch)
        );
    }

    fn frame(body: &[u8]) -> Bytes {
        let mut blob = MAGIC.to_vec();
        blob.extend_from_slice(body);
        blob.extend_from_slice(&<[u8; 16]>::from(Md5::digest(body)));
        Bytes::from(blob)
    }

    #[test]
    fn well_framed_garbage_is_malformed() {
        // Field 3 (records) claims 100 bytes but none follow.
        let blob = frame(&[0x1a, 100]);
        assert!(matches!(
            deaggregate(&blob),
            Deaggregated::Raw(NotAggregated::Malformed(_))
        ));
    }

    #[test]
    fn key_index_past_the_table_is_raw() {
        let message = proto::AggregatedRecord {
            partition_key_table: vec!["only".into()],
            explicit_hash_key_table: vec![],
            records: vec![proto::Record {
                partition_key_index: 1,
                explicit_hash_key_index: None,
                data: Bytes::from_static(b"x"),
                tags: vec![],
            }],
        };
        assert_eq!(
            deaggregate(&frame(&message.encode_to_vec())),
            Deaggregated::Raw(NotAggregated::KeyIndexOutOfRange {
                record: 0,
                index: 1,
                table_len: 1
            })
        );
    }

    #[test]
    fn tags_are_accepted_and_ignored() {
        let message = proto::AggregatedRecord {
            partition_key_table: vec!["k".into()],
            explicit_hash_key_table: vec![],
            records: vec![proto::Record {
                partition_key_index: 0,
                explicit_hash_key_index: None,
                data: Bytes::from_static(b"x"),
                tags: vec![proto::Tag {
                    key: "t".into(),
                    value: None,
                }],
            }],
        };
        let Deaggregated::Aggregated(records) = deaggregate(&frame(&message.encode_to_vec()))
        else {
            panic!("tagged aggregate should decode")
        };
        assert_eq!(&records[0].data[..], b"x");
    }
}
