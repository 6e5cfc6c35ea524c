//! Checks shared by the producer tests: what was read back equals what was put.

use std::collections::HashMap;

use bytes::Bytes;
use kpl::PutOutcome;

use crate::TestStream;
use crate::read::all_records;

/// A user record that was put, with the producer's result for it.
#[derive(Clone, Debug)]
pub struct Put {
    /// Partition key.
    pub partition_key: String,
    /// Data.
    pub data: Bytes,
    /// The producer's success result.
    pub outcome: PutOutcome,
}

/// What [`verify_stream`] read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadBack {
    /// User records delivered, as a KCL consumer would deliver them.
    pub delivered: usize,
    /// Sub-records of aggregates stored on a shard that does not own all of their hash keys,
    /// which the Java KCL drops whole (its issue 343). The producer re-sent every one of them.
    pub filtered: usize,
}

/// Reads the whole stream back as the Java KCL would (an aggregate with any sub-record outside
/// its shard's range is dropped whole) and checks: the multiset of (partition key, data) equals
/// what was put; no raw record lies outside its shard's range; every result's shard, sequence and
/// sub-sequence number point at exactly that record.
pub async fn verify_stream(stream: &TestStream, puts: &[Put]) -> ReadBack {
    let mut by_position: HashMap<(String, u64), (String, String, Bytes)> = HashMap::new();
    let mut filtered = 0;
    for (shard, range, records) in all_records(stream).await {
        // Aggregates (by sequence number) with a sub-record this shard does not own.
        let misplaced: std::collections::HashSet<String> = records
            .iter()
            .filter(|r| r.aggregated && !range.contains(r.hash_key()))
            .map(|r| r.sequence_number.clone())
            .collect();
        for r in records {
            if !range.contains(r.hash_key()) {
                assert!(
                    r.aggregated,
                    "raw user record {:?} (hash key {}) stored on {} which owns {range:?}; the producer said {:?}",
                    r.partition_key,
                    r.hash_key(),
                    shard.shard_id(),
                    puts.iter()
                        .find(|p| p.partition_key == r.partition_key)
                        .map(|p| &p.outcome)
                );
            }
            if r.aggregated && misplaced.contains(&r.sequence_number) {
                filtered += 1;
                continue;
            }
            let previous = by_position.insert(
                (r.sequence_number.clone(), r.sub_sequence_number),
                (r.shard_id.clone(), r.partition_key.clone(), r.data.clone()),
            );
            assert!(previous.is_none(), "two user records at one position");
        }
    }
    let mut expected: Vec<(&str, &Bytes)> = puts
        .iter()
        .map(|p| (p.partition_key.as_str(), &p.data))
        .collect();
    let mut got: Vec<(&str, &Bytes)> = by_position
        .values()
        .map(|(_, k, d)| (k.as_str(), d))
        .collect();
    expected.sort();
    got.sort();
    assert_eq!(
        got.len(),
        expected.len(),
        "read back {} user records, put {}",
        got.len(),
        expected.len()
    );
    assert!(
        got == expected,
        "read-back multiset differs from what was put"
    );
    for p in puts {
        let o = &p.outcome;
        let at = by_position
            .get(&(o.sequence_number().to_owned(), o.sub_sequence_number()))
            .unwrap_or_else(|| {
                panic!(
                    "no record read at {}/{}",
                    o.sequence_number(),
                    o.sub_sequence_number()
                )
            });
        assert_eq!(at.0, o.shard_id(), "result names the wrong shard");
        assert_eq!(
            (at.1.as_str(), &at.2),
            (p.partition_key.as_str(), &p.data),
            "result points at another record"
        );
    }
    ReadBack {
        delivered: by_position.len(),
        filtered,
    }
}
