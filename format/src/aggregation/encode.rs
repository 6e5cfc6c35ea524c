//! Writing aggregates.

use std::hash::BuildHasher;

use bytes::{BufMut, Bytes, BytesMut};
use foldhash::fast::RandomState;
use hashbrown::HashTable;
use md5::{Digest, Md5};

use super::size::{delimited_len, record_body_len};
use super::{DIGEST_LEN, FRAMING_LEN, MAGIC};

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
    partition_keys: KeyTable,
    explicit_hash_keys: KeyTable,
    /// The `records` fields, encoded as they are added (tag, length, `Record` body each).
    records: Vec<u8>,
    count: usize,
    /// Sum of the user records' data lengths (for statistics).
    data_len: usize,
}

/// A finished aggregate still missing its MD5 trailer (see
/// [`AggregateBuilder::finish_unsealed`]).
///
/// ```
/// use kinesis_format::{AggregateBuilder, Deaggregated, Unsealed, deaggregate};
///
/// let mut builder = AggregateBuilder::new();
/// let mut unsealed = Vec::new();
/// for shard in 0..8 {
///     builder.add(&format!("key-{shard}"), None, b"one");
///     builder.add(&format!("key-{shard}"), None, b"two");
///     unsealed.push(builder.finish_unsealed());
/// }
/// let framed_len = unsealed[0].framed_len();
/// let alone: Vec<_> = unsealed.iter().cloned().map(Unsealed::seal).collect();
/// // Eight MD5s side by side: the same bytes as sealing each alone.
/// let sealed = Unsealed::seal_all(unsealed);
/// assert_eq!(sealed, alone);
/// assert_eq!(sealed[0].len(), framed_len);
/// assert!(matches!(deaggregate(&sealed[7]), Deaggregated::Aggregated(r) if r.len() == 2));
/// ```
#[derive(Debug, Clone)]
pub struct Unsealed {
    /// Magic and body, with room for the digest.
    bytes: BytesMut,
}

impl Unsealed {
    /// The length it will have once sealed.
    pub fn framed_len(&self) -> usize {
        self.bytes.len() + DIGEST_LEN
    }

    /// Appends the MD5 of the body.
    pub fn seal(self) -> Bytes {
        let digest: [u8; DIGEST_LEN] = Md5::digest(self.body()).into();
        self.sealed_with(digest)
    }

    /// Seals every aggregate, in order, computing their MD5s several at a time, side by side
    /// (for large aggregates, about a third of the cost of sealing each alone).
    pub fn seal_all(aggregates: Vec<Unsealed>) -> Vec<Bytes> {
        let bodies: Vec<&[u8]> = aggregates.iter().map(Unsealed::body).collect();
        let digests = crate::md5_lanes::digest_each(&bodies);
        aggregates
            .into_iter()
            .zip(digests)
            .map(|(aggregate, digest)| aggregate.sealed_with(digest))
            .collect()
    }

    fn body(&self) -> &[u8] {
        &self.bytes[MAGIC.len()..]
    }

    fn sealed_with(mut self, digest: [u8; DIGEST_LEN]) -> Bytes {
        self.bytes.put_slice(&digest);
        self.bytes.freeze()
    }
}

/// Protobuf tags (field number << 3 | wire type) of the fields the builder writes.
const PARTITION_KEY_TABLE: u8 = 1 << 3 | 2;
const EXPLICIT_HASH_KEY_TABLE: u8 = 2 << 3 | 2;
const RECORDS: u8 = 3 << 3 | 2;
const RECORD_PARTITION_KEY_INDEX: u8 = 1 << 3;
const RECORD_EXPLICIT_HASH_KEY_INDEX: u8 = 2 << 3;
const RECORD_DATA: u8 = 3 << 3 | 2;

impl AggregateBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty builder with room for `bytes` bytes of encoded records before it reallocates.
    pub fn with_capacity(bytes: usize) -> Self {
        AggregateBuilder {
            records: Vec::with_capacity(bytes),
            ..Self::default()
        }
    }

    /// Makes room for `records` distinct partition keys of `key_bytes` bytes in all, so that a
    /// new builder's key table does not grow (rehash) record by record.
    pub fn reserve_keys(&mut self, records: usize, key_bytes: usize) {
        let t = &mut self.partition_keys;
        t.spans.reserve(records);
        t.encoded.reserve(key_bytes + 2 * records);
        let (spans, encoded, hasher) = (&t.spans, &t.encoded, &t.hasher);
        t.index.reserve(records, |&j| {
            let (offset, len) = spans[j as usize];
            hasher.hash_one(&encoded[offset as usize..(offset + len) as usize])
        });
    }

    /// How many user records have been added.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether no user record has been added.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The sum of the added user records' data lengths.
    pub fn data_len(&self) -> usize {
        self.data_len
    }

    /// The exact length [`finish`](Self::finish) would return now: magic + body + digest.
    pub fn framed_len(&self) -> usize {
        FRAMING_LEN
            + self.partition_keys.encoded.len()
            + self.explicit_hash_keys.encoded.len()
            + self.records.len()
    }

    /// The exact framed length after adding a record with these keys and `data_len` bytes of data.
    pub fn framed_len_with(
        &self,
        partition_key: &str,
        explicit_hash_key: Option<&str>,
        data_len: usize,
    ) -> usize {
        let (pk, ehk) = self.lookup(partition_key, explicit_hash_key);
        self.framed_len() + self.growth(&pk, ehk.as_ref(), data_len)
    }

    /// The exact framed length of an aggregate holding only this record.
    pub fn framed_len_of_one(
        partition_key: &str,
        explicit_hash_key: Option<&str>,
        data_len: usize,
    ) -> usize {
        FRAMING_LEN
            + delimited_len(partition_key.len())
            + explicit_hash_key.map_or(0, |ehk| delimited_len(ehk.len()))
            + delimited_len(record_body_len(0, explicit_hash_key.map(|_| 0), data_len))
    }

    /// Adds a user record and returns its sub-sequence number (its index in the aggregate). The
    /// data is copied in.
    pub fn add(
        &mut self,
        partition_key: &str,
        explicit_hash_key: Option<&str>,
        data: impl AsRef<[u8]>,
    ) -> u64 {
        let (pk, ehk) = self.lookup(partition_key, explicit_hash_key);
        self.insert(pk, ehk, data.as_ref())
    }

    /// Adds a user record only if the aggregate then stays within `max_framed_len` bytes, and
    /// returns its sub-sequence number; otherwise hands the data back and changes nothing. One
    /// key look-up serves both the size check and the insertion.
    pub fn try_add<D: AsRef<[u8]>>(
        &mut self,
        partition_key: &str,
        explicit_hash_key: Option<&str>,
        data: D,
        max_framed_len: usize,
    ) -> Result<u64, D> {
        let (pk, ehk) = self.lookup(partition_key, explicit_hash_key);
        let len = data.as_ref().len();
        if self.framed_len() + self.growth(&pk, ehk.as_ref(), len) > max_framed_len {
            return Err(data);
        }
        Ok(self.insert(pk, ehk, data.as_ref()))
    }

    /// The framed bytes: magic, protobuf body (key tables, then records), MD5 of the body.
    pub fn finish(mut self) -> Bytes {
        self.finish_and_reset()
    }

    /// Like [`finish`](Self::finish), but leaves the builder empty and ready for the next
    /// aggregate, keeping its buffers' capacity (so a reused builder allocates nothing).
    pub fn finish_and_reset(&mut self) -> Bytes {
        self.finish_unsealed().seal()
    }

    /// Writes the aggregate but leaves out its digest, so that the MD5s of many aggregates can be
    /// computed at once with [`Unsealed::seal_all`]. Leaves the builder empty, like
    /// [`finish_and_reset`](Self::finish_and_reset).
    pub fn finish_unsealed(&mut self) -> Unsealed {
        let framed_len = self.framed_len();
        let mut out = BytesMut::with_capacity(framed_len);
        out.put_slice(&MAGIC);
        out.put_slice(&self.partition_keys.encoded);
        out.put_slice(&self.explicit_hash_keys.encoded);
        out.put_slice(&self.records);
        debug_assert_eq!(
            out.len() + DIGEST_LEN,
            framed_len,
            "size accounting drifted"
        );
        self.clear();
        Unsealed { bytes: out }
    }

    /// Empties the builder, keeping its buffers' capacity.
    pub fn clear(&mut self) {
        self.partition_keys.clear();
        self.explicit_hash_keys.clear();
        self.records.clear();
        self.count = 0;
        self.data_len = 0;
    }

    fn lookup<'k>(
        &self,
        partition_key: &'k str,
        explicit_hash_key: Option<&'k str>,
    ) -> (Lookup<'k>, Option<Lookup<'k>>) {
        (
            self.partition_keys.lookup(partition_key),
            explicit_hash_key.map(|ehk| self.explicit_hash_keys.lookup(ehk)),
        )
    }

    /// How many body bytes adding this record would add.
    fn growth(&self, pk: &Lookup<'_>, ehk: Option<&Lookup<'_>>, data_len: usize) -> usize {
        let new_key = |l: &Lookup<'_>| {
            if l.index.is_some() {
                0
            } else {
                delimited_len(l.key.len())
            }
        };
        let pk_index = pk.index.unwrap_or(self.partition_keys.len());
        let ehk_index = ehk.map(|l| l.index.unwrap_or(self.explicit_hash_keys.len()));
        new_key(pk)
            + ehk.map_or(0, new_key)
            + delimited_len(record_body_len(pk_index, ehk_index, data_len))
    }

    fn insert(&mut self, pk: Lookup<'_>, ehk: Option<Lookup<'_>>, data: &[u8]) -> u64 {
        self.data_len += data.len();
        let pk_index = self.partition_keys.intern(pk, PARTITION_KEY_TABLE);
        let ehk_index = ehk.map(|l| self.explicit_hash_keys.intern(l, EXPLICIT_HASH_KEY_TABLE));
        let out = &mut self.records;
        out.push(RECORDS);
        put_varint(out, record_body_len(pk_index, ehk_index, data.len()) as u64);
        out.push(RECORD_PARTITION_KEY_INDEX);
        put_varint(out, pk_index);
        if let Some(i) = ehk_index {
            out.push(RECORD_EXPLICIT_HASH_KEY_INDEX);
            put_varint(out, i);
        }
        out.push(RECORD_DATA);
        put_varint(out, data.len() as u64);
        out.extend_from_slice(data);
        self.count += 1;
        (self.count - 1) as u64
    }
}

/// Appends `value` as a base-128 varint.
fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// A key looked up in a [`KeyTable`]: its hash, and its index when already present.
struct Lookup<'k> {
    key: &'k str,
    hash: u64,
    index: Option<u64>,
}

/// A key table in first-seen order, kept encoded (tag, length, key per entry), with a hash
/// index into it: a key is stored once and never allocated on its own.
#[derive(Debug, Default, Clone)]
struct KeyTable {
    encoded: Vec<u8>,
    /// Where each key's bytes are in `encoded`: (offset, length), by index.
    spans: Vec<(u32, u32)>,
    index: HashTable<u32>,
    hasher: RandomState,
}

impl KeyTable {
    fn len(&self) -> u64 {
        self.spans.len() as u64
    }

    fn clear(&mut self) {
        self.encoded.clear();
        self.spans.clear();
        self.index.clear();
    }

    fn key(&self, i: u32) -> &[u8] {
        let (offset, len) = self.spans[i as usize];
        &self.encoded[offset as usize..(offset + len) as usize]
    }

    fn lookup<'k>(&self, key: &'k str) -> Lookup<'k> {
        let hash = self.hasher.hash_one(key.as_bytes());
        let index = self
            .index
            .find(hash, |&i| self.key(i) == key.as_bytes())
            .map(|&i| u64::from(i));
        Lookup { key, hash, index }
    }

    /// The index of a looked-up key, appending it (with `tag`) first if it is new.
    fn intern(&mut self, lookup: Lookup<'_>, tag: u8) -> u64 {
        if let Some(i) = lookup.index {
            return i;
        }
        let i = self.spans.len() as u32;
        self.encoded.push(tag);
        put_varint(&mut self.encoded, lookup.key.len() as u64);
        // Aggregates are far below 4 GiB (Kinesis records are at most 10 MiB).
        self.spans
            .push((self.encoded.len() as u32, lookup.key.len() as u32));
        self.encoded.extend_from_slice(lookup.key.as_bytes());
        let (spans, encoded, hasher) = (&self.spans, &self.encoded, &self.hasher);
        self.index.insert_unique(lookup.hash, i, |&j| {
            let (offset, len) = spans[j as usize];
            hasher.hash_one(&encoded[offset as usize..(offset + len) as usize])
        });
        u64::from(i)
    }

    #[cfg(test)]
    fn keys(&self) -> Vec<&str> {
        (0..self.spans.len() as u32)
            .map(|i| std::str::from_utf8(self.key(i)).expect("keys are strings"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto;
    use prost::Message;

    #[test]
    fn reserving_keys_changes_nothing_but_room() {
        let build = |reserve: bool| {
            let mut b = AggregateBuilder::with_capacity(64);
            if reserve {
                b.reserve_keys(100, 300);
            }
            for i in 0..300 {
                b.add(&format!("k{}", i % 70), None, b"data");
            }
            b.finish()
        };
        assert_eq!(build(true), build(false));
    }

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
        assert_eq!(builder.partition_keys.keys(), ["b", "a", "c"]);
        assert_eq!(builder.explicit_hash_keys.keys(), ["7", "8"]);
        let blob = builder.finish();
        let body = &blob[MAGIC.len()..blob.len() - DIGEST_LEN];
        let message = proto::AggregatedRecord::decode(body).expect("valid protobuf");
        assert_eq!(message.partition_key_table, ["b", "a", "c"]);
        assert_eq!(message.explicit_hash_key_table, ["7", "8"]);
        let indices: Vec<_> = message
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
    fn a_reset_builder_writes_what_a_fresh_one_writes() {
        let fill = |b: &mut AggregateBuilder, keys: &[&str]| {
            for (i, k) in keys.iter().enumerate() {
                b.add(k, (i % 2 == 0).then_some("42"), vec![i as u8; i * 3]);
            }
        };
        let mut reused = AggregateBuilder::new();
        fill(&mut reused, &["a", "b", "a", "c"]);
        let first = reused.finish_and_reset();
        assert!(reused.is_empty());
        assert_eq!(reused.framed_len(), FRAMING_LEN);
        // Keys of the previous aggregate must not leak into the next one's tables.
        fill(&mut reused, &["c", "d"]);
        let mut fresh = AggregateBuilder::new();
        fill(&mut fresh, &["c", "d"]);
        assert_eq!(reused.finish_and_reset(), fresh.finish());
        let mut again = AggregateBuilder::new();
        fill(&mut again, &["a", "b", "a", "c"]);
        assert_eq!(first, again.finish());
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
